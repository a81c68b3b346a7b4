//! The state directory: the journals, the before-images and the
//! compiled-component cache. Never inside a granted directory, and never
//! where anyone but this user and root could replace what it names: the
//! journals, the cache and the lock are found again by path under it, so
//! a directory above it that someone else can rename from would let them
//! point those paths at another directory (see [`walk`]).

use std::collections::VecDeque;
use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat};

use crate::grants::Grants;

/// Why the state directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StateDirError {
    #[error("cannot create the state directory {path}: {source}; choose another with --state-dir")]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the state directory {path} overlaps the granted directory {grant}; a fix could reach its own records. Choose another with --state-dir"
    )]
    InsideGrant { path: PathBuf, grant: String },
    #[error(
        "--allow-log: the log directory {dir} is within the state directory {path}, where a fix could read every run's records (journals, before-images, compiled code); grant logs outside it, or choose another state directory with --state-dir"
    )]
    LogsInside { path: PathBuf, dir: String },
    #[error("no state directory: HOME is not set; pass --state-dir or set DEFOPS_STATE_DIR")]
    NoHome,
    #[error("the state directory {path} is not safe: {why}")]
    Unsafe { path: PathBuf, why: String },
}

/// The default: `/var/lib/defops-wasm` for root, else
/// `$XDG_STATE_HOME/defops-wasm` (`~/.local/state/defops-wasm`).
pub fn default_path() -> Result<PathBuf, StateDirError> {
    if rustix::process::geteuid().is_root() {
        return Ok(PathBuf::from("/var/lib/defops-wasm"));
    }
    if let Some(x) = std::env::var_os("XDG_STATE_HOME").filter(|x| !x.is_empty()) {
        return Ok(PathBuf::from(x).join("defops-wasm"));
    }
    let home = std::env::var_os("HOME").ok_or(StateDirError::NoHome)?;
    Ok(PathBuf::from(home).join(".local/state/defops-wasm"))
}

/// The state directory's path checked ([`walk`], [`check_contents`]) and
/// resolved: for every command, those that only read it too. Not made,
/// unless the directory it would be made in is shared (sticky, like
/// `/tmp`): then anyone could put a link in its place before it is read,
/// so it is made now, as [`prepare`] makes it. Refused as for [`prepare`].
pub fn checked(path: &Path) -> Result<PathBuf, StateDirError> {
    let (at, walked, resolved) = Asked::walk(path)?;
    let shared = rustix::fs::fstat(&walked.fd).is_ok_and(|st| others_write(&st));
    let fd = match (walked.missing.is_empty(), shared) {
        (true, _) => walked.fd,
        (false, false) => return Ok(resolved),
        (false, true) => at.make(walked)?,
    };
    check_contents(&fd, &resolved).map_err(|why| at.unsafe_because(why))?;
    Ok(resolved)
}

/// Checks the state directory's path ([`walk`]) and what it holds
/// ([`check_contents`]), makes what is missing of it (mode 0700, relative
/// to its parent's descriptor, never through a link, nothing inside a
/// directory that is not this user's), and checks that it is outside the
/// grants, by path before anything is made and by identity. Its path,
/// resolved.
pub fn prepare(path: &Path, grants: &Grants) -> Result<PathBuf, StateDirError> {
    let (at, walked, planned) = Asked::walk(path)?;
    need_mount_table(&at.absolute, grants)?;
    if let Some(g) = grants.overlaps(&planned) {
        return Err(StateDirError::InsideGrant {
            path: at.absolute.clone(),
            grant: g.path.to_string(),
        });
    }
    // What is to be made below a grant's directory (a bind mount shows
    // it under another name) would be inside it too.
    if !walked.missing.is_empty()
        && let Some(g) = inside_by_identity(&walked.dir, grants).or_else(|| {
            grants
                .iter()
                .find(|g| {
                    nested_in_file_system(grants, &walked.dir, Path::new(g.path.as_str()))
                        .is_some_and(|(in_grant, _)| in_grant)
                })
                .map(|g| g.path.to_string())
        })
    {
        return Err(StateDirError::InsideGrant {
            path: at.absolute.clone(),
            grant: g,
        });
    }
    if !grants.is_empty() {
        placeable(
            grants,
            &walked.dir,
            grants.iter().map(|g| Path::new(g.path.as_str())),
        )?;
    }
    let fd = at.make(walked)?;
    check_contents(&fd, &planned).map_err(|why| at.unsafe_because(why))?;
    if let Some(g) = overlaps_by_identity(&planned, grants) {
        return Err(StateDirError::InsideGrant {
            path: at.absolute.clone(),
            grant: g,
        });
    }
    Ok(planned)
}

/// The state directory as asked for, for its errors.
struct Asked<'a> {
    path: &'a Path,
    absolute: PathBuf,
}

impl<'a> Asked<'a> {
    /// Walks `path`: the walk and the path it resolves to (what is missing
    /// included).
    fn walk(path: &'a Path) -> Result<(Asked<'a>, Walked, PathBuf), StateDirError> {
        let absolute = std::path::absolute(path).map_err(|source| StateDirError::Create {
            path: path.to_path_buf(),
            source,
        })?;
        let at = Asked { path, absolute };
        let walked = walk(&at.absolute).map_err(|why| at.unsafe_because(why))?;
        let mut resolved = walked.dir.clone();
        resolved.extend(&walked.missing);
        Ok((at, walked, resolved))
    }

    fn unsafe_because(&self, why: String) -> StateDirError {
        StateDirError::Unsafe {
            path: self.absolute.clone(),
            why,
        }
    }

    /// Makes what `walked` found missing ([`make_below`]).
    fn make(&self, walked: Walked) -> Result<OwnedFd, StateDirError> {
        make_below(walked.fd, &walked.dir, &walked.missing).map_err(|e| match e {
            Made::Io(source) => StateDirError::Create {
                path: self.path.to_path_buf(),
                source,
            },
            Made::Unsafe(why) => self.unsafe_because(why),
        })
    }
}

/// A path walked: the deepest directory of it that exists (resolved: no
/// links, no `..`) and its descriptor, and the names still to be made
/// below it.
struct Walked {
    dir: PathBuf,
    fd: OwnedFd,
    missing: Vec<OsString>,
}

/// One component of a path still to be walked.
enum Part {
    Root,
    Up,
    Name(OsString),
}

fn parts(p: &Path) -> impl Iterator<Item = Part> + '_ {
    p.components().filter_map(|c| match c {
        Component::RootDir | Component::Prefix(_) => Some(Part::Root),
        Component::CurDir => None,
        Component::ParentDir => Some(Part::Up),
        Component::Normal(n) => Some(Part::Name(n.to_owned())),
    })
}

/// Walks `path` (absolute) from `/` one component at a time, each opened
/// relative to the descriptor of the one before (never by name from the
/// top again), following links by hand, and checks each as it is met:
/// every directory is owned by this user or root, and none that the walk
/// goes on below can be written by anyone else unless it is sticky (then
/// only an entry's owner may move it, and that owner is checked next);
/// every link is owned by this user or root (what it names is walked in
/// turn); the last directory, if it is the whole path, can be written by
/// no one else at all. So what was walked is what the path names, and
/// stays so: no one but this user and root can change any of it. This is
/// the rule `sshd` applies to the directories above a user's keys. Why
/// not, in words naming what and what to do.
fn walk(path: &Path) -> Result<Walked, String> {
    let me = rustix::process::geteuid().as_raw();
    let dir_flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let root = rustix::fs::open("/", dir_flags, Mode::empty()).map_err(|e| format!("/: {e}"))?;
    let root_stat = rustix::fs::fstat(&root).map_err(|e| format!("/: {e}"))?;
    owned(&root_stat, Path::new("/"), me)?;
    // The directories walked so far, from `/`.
    let mut stack: Vec<(PathBuf, OwnedFd, Stat)> = vec![(PathBuf::from("/"), root, root_stat)];
    let mut todo: VecDeque<Part> = parts(path).collect();
    let mut links = 0;
    while let Some(part) = todo.pop_front() {
        let name = match part {
            Part::Root => {
                stack.truncate(1);
                continue;
            }
            Part::Up => {
                if stack.len() > 1 {
                    stack.pop();
                }
                continue;
            }
            Part::Name(name) => name,
        };
        let (at, fd, st) = stack.last().expect("the root stays");
        let next = at.join(&name);
        // Going on below `at`: no one else may replace what is in it.
        if others_write(st) && !sticky(st) {
            return Err(writable(at, st));
        }
        let found = match rustix::fs::statat(fd, name.as_os_str(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(found) => found,
            Err(rustix::io::Errno::NOENT) => {
                let mut missing = vec![name];
                for p in todo {
                    match p {
                        Part::Name(n) => missing.push(n),
                        Part::Root | Part::Up => {
                            return Err(format!(
                                "it goes through {}, which does not exist yet, and then up or back to /; give it without `..`",
                                next.display()
                            ));
                        }
                    }
                }
                let (dir, fd, _) = stack.pop().expect("the root stays");
                return Ok(Walked { dir, fd, missing });
            }
            Err(e) => return Err(format!("{}: {e}", next.display())),
        };
        match FileType::from_raw_mode(found.st_mode) {
            FileType::Symlink => {
                if found.st_uid != me && found.st_uid != 0 {
                    return Err(format!(
                        "the link {} is owned by uid {}, who could point it elsewhere; give the state directory's own path with --state-dir",
                        next.display(),
                        found.st_uid
                    ));
                }
                links += 1;
                if links > 40 {
                    return Err(format!("{}: too many links on the way", path.display()));
                }
                let target = rustix::fs::readlinkat(fd, name.as_os_str(), Vec::new())
                    .map_err(|e| format!("{}: {e}", next.display()))?;
                let target = PathBuf::from(std::ffi::OsStr::from_bytes(target.as_bytes()));
                for p in parts(&target).collect::<Vec<_>>().into_iter().rev() {
                    todo.push_front(p);
                }
            }
            FileType::Directory => {
                let opened = rustix::fs::openat(fd, name.as_os_str(), dir_flags, Mode::empty())
                    .map_err(|e| changed(&next, e))?;
                let st = rustix::fs::fstat(&opened).map_err(|e| changed(&next, e))?;
                owned(&st, &next, me)?;
                stack.push((next, opened, st));
            }
            _ => return Err(format!("{} is not a directory", next.display())),
        }
    }
    let (dir, fd, st) = stack.pop().expect("the root stays");
    if others_write(&st) {
        return Err(match sticky(&st) {
            true => format!(
                "{} is shared (mode {:04o}): anyone can put things in it; choose a directory of your own below it with --state-dir",
                dir.display(),
                st.st_mode & 0o7777
            ),
            false => writable(&dir, &st),
        });
    }
    Ok(Walked {
        dir,
        fd,
        missing: Vec::new(),
    })
}

fn changed(path: &Path, e: rustix::io::Errno) -> String {
    format!(
        "{}: {e} (it changed while being checked); look at what changes it, then try again",
        path.display()
    )
}

/// A directory on the way is owned by this user or root.
fn owned(st: &Stat, path: &Path, me: u32) -> Result<(), String> {
    match st.st_uid == me || st.st_uid == 0 {
        true => Ok(()),
        false => Err(format!(
            "{} is owned by uid {}, who could replace what is in it; the state directory and every directory above it must belong to you or root (--state-dir)",
            path.display(),
            st.st_uid
        )),
    }
}

fn sticky(st: &Stat) -> bool {
    st.st_mode & 0o1000 != 0
}

/// Someone other than the owner can write it: its group or others. (A
/// group is never taken to hold only the owner: an ACL shows its mask in
/// the group bits, and a process can hold a group no file lists.)
fn others_write(st: &Stat) -> bool {
    st.st_mode & 0o022 != 0
}

fn writable(path: &Path, st: &Stat) -> String {
    format!(
        "{} can be written by others (mode {:04o}), who could replace what is in it; if nothing else needs to write there, run `chmod go-w {}`, else choose another state directory with --state-dir",
        path.display(),
        st.st_mode & 0o7777,
        path.display()
    )
}

/// How making the missing directories failed.
enum Made {
    Io(std::io::Error),
    Unsafe(String),
}

/// Makes `missing` below the directory `fd`, each relative to the
/// descriptor of the one above it and never through a link, and checks
/// each (made now or found there meanwhile) before anything is made in it.
/// The state directory's descriptor.
fn make_below(mut fd: OwnedFd, dir: &Path, missing: &[OsString]) -> Result<OwnedFd, Made> {
    let me = rustix::process::geteuid().as_raw();
    let dir_flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let mut path = dir.to_path_buf();
    for name in missing {
        path.push(name);
        match rustix::fs::mkdirat(&fd, name.as_os_str(), Mode::from_raw_mode(0o700)) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(Made::Io(e.into())),
        }
        fd = rustix::fs::openat(&fd, name.as_os_str(), dir_flags, Mode::empty()).map_err(|e| {
            Made::Unsafe(format!(
                "{} is not a directory ({e}); look at what put it there",
                path.display()
            ))
        })?;
        let st = rustix::fs::fstat(&fd).map_err(|e| Made::Io(e.into()))?;
        owned(&st, &path, me).map_err(Made::Unsafe)?;
        if others_write(&st) {
            return Err(Made::Unsafe(writable(&path, &st)));
        }
    }
    Ok(fd)
}

/// What the state directory holds that this program writes into: each, if
/// there, is this user's or root's, not a link, and (a directory) written
/// by no one else. A directory once shared keeps what others made in it
/// when its own mode is fixed. (The compile cache checks its own directory
/// on its descriptor, and is only not used when others could write it.)
fn check_contents(fd: &OwnedFd, dir: &Path) -> Result<(), String> {
    let me = rustix::process::geteuid().as_raw();
    for name in ["runs", "objects", "pause", "dry-runs", "scheduled", "lock"] {
        let Ok(st) = rustix::fs::statat(fd, name, AtFlags::SYMLINK_NOFOLLOW) else {
            continue;
        };
        let path = dir.join(name);
        match FileType::from_raw_mode(st.st_mode) {
            FileType::Symlink => {
                return Err(format!(
                    "{} is a link; remove it (the state directory's own entries are never links)",
                    path.display()
                ));
            }
            FileType::Directory | FileType::RegularFile => {
                owned(&st, &path, me)?;
                if others_write(&st) {
                    return Err(writable(&path, &st));
                }
                if FileType::from_raw_mode(st.st_mode) == FileType::RegularFile && st.st_nlink != 1
                {
                    return Err(format!(
                        "{} has {} names (hard links): what is written to it lands elsewhere too; remove it",
                        path.display(),
                        st.st_nlink
                    ));
                }
            }
            _ => return Err(format!("{} is not a directory or a file", path.display())),
        }
    }
    Ok(())
}

/// An existing state directory that passes [`walk`] and
/// [`check_contents`]: its path, resolved.
pub fn safe(dir: &Path) -> Option<PathBuf> {
    let walked = walk(&std::path::absolute(dir).ok()?).ok()?;
    (walked.missing.is_empty() && check_contents(&walked.fd, &walked.dir).is_ok())
        .then_some(walked.dir)
}

/// Refuses log grants whose directory is the state directory `state` or
/// lies inside it, by path or by identity (a bind mount shows it under
/// other names): a fix reads logs there through the host.
pub fn check_log_grants(state: &Path, logs: &crate::logs::LogGrants) -> Result<(), StateDirError> {
    need_mount_table(state, logs.dirs())?;
    if !logs.is_empty() {
        placeable(
            logs.dirs(),
            state,
            logs.dirs().iter().map(|g| Path::new(g.path.as_str())),
        )?;
    }
    let Some(state_id) = identity(state) else {
        return Ok(());
    };
    let inside = logs.dirs().iter().find(|g| {
        let dir = Path::new(g.path.as_str());
        (g.dev, g.ino) == state_id
            || dir.starts_with(state)
            || ancestry(dir).contains(&state_id)
            || nested_in_file_system(logs.dirs(), state, dir).is_some_and(|(_, inside)| inside)
    });
    match inside {
        None => Ok(()),
        Some(g) => Err(StateDirError::LogsInside {
            path: state.to_path_buf(),
            dir: g.path.to_string(),
        }),
    }
}

/// The grant the state directory overlaps by identity, whatever the names
/// (a bind mount shows the same directories under other paths): it is
/// inside a grant (see [`inside_by_identity`]), or a grant is inside it.
fn overlaps_by_identity(state: &Path, grants: &Grants) -> Option<String> {
    if let Some(g) = inside_by_identity(state, grants) {
        return Some(g);
    }
    let state_id = identity(state)?;
    grants
        .iter()
        .find(|g| {
            ancestry(Path::new(g.path.as_str())).contains(&state_id)
                || nested_in_file_system(grants, state, Path::new(g.path.as_str()))
                    .is_some_and(|(state_in_dir, dir_in_state)| state_in_dir || dir_in_state)
        })
        .map(|g| g.path.to_string())
}

/// Whether the state directory lies inside `dir`, and whether `dir` lies
/// inside it, within their file systems (see
/// [`Grants::within_file_system`]), whichever mounts show them: a bind
/// mount of a directory of the state directory (or of a grant) elsewhere
/// has none of the other's identities among its ancestors. The state
/// directory holds, besides its own place, every file system mounted
/// inside it (from its root). `(false, false)` when nothing can be placed.
fn nested_in_file_system(grants: &Grants, state: &Path, dir: &Path) -> Option<(bool, bool)> {
    let (dd, d) = grants.within_file_system(dir)?;
    let (sd, s) = grants.within_file_system(state)?;
    let state_in_dir = sd == dd && s.starts_with(&d);
    // A file system mounted inside the state directory is its: a grant
    // inside what is mounted there, or holding it, reaches the state.
    let dir_in_state = (sd == dd && d.starts_with(&s))
        || grants
            .mounts_inside(state)
            .any(|m| m.device == dd && (d.starts_with(&m.root) || m.root.starts_with(&d)));
    Some((state_in_dir, dir_in_state))
}

/// Refuses what cannot be placed within its file system: a directory
/// whose mount the table does not list (in a chroot, the mounts outside
/// it are left out of the table) would pass for apart from any other.
fn placeable<'a>(
    grants: &Grants,
    state: &'a Path,
    dirs: impl IntoIterator<Item = &'a Path>,
) -> Result<(), StateDirError> {
    let unplaced = std::iter::once(state)
        .chain(dirs)
        .find(|d| grants.within_file_system(d).is_none());
    match unplaced {
        None => Ok(()),
        Some(d) => Err(StateDirError::Unsafe {
            path: state.to_path_buf(),
            why: format!(
                "the mount that shows {} is not in the mount table (/proc/self/mountinfo; in a chroot, mounts outside it are left out), so it cannot be kept apart from the grants; run where the whole mount table is seen",
                d.display()
            ),
        }),
    }
}

/// Refuses grants that cannot be placed: without a mount table, a bind
/// mount of a directory of the state directory would pass for another.
fn need_mount_table(path: &Path, grants: &Grants) -> Result<(), StateDirError> {
    match grants.lacks_mount_table() {
        false => Ok(()),
        true => Err(StateDirError::Unsafe {
            path: path.to_path_buf(),
            why: "the mount table (/proc/self/mountinfo) cannot be read, so the grants cannot be kept apart from it; mount /proc and run again".into(),
        }),
    }
}

/// The grant `dir` lies inside by identity: one of its directories is a
/// grant's directory, or a mount point inside a grant shows it (a fix could
/// reach it through that).
pub fn inside_by_identity(dir: &Path, grants: &Grants) -> Option<String> {
    let chain = ancestry(dir);
    if let Some(g) = grants.iter().find(|g| chain.contains(&(g.dev, g.ino))) {
        return Some(g.path.to_string());
    }
    grants.mounts().find_map(|m| {
        let id = identity(Path::new(m.as_str()))?;
        chain
            .contains(&id)
            .then(|| grants.find(m).map(|g| g.path.to_string()))
            .flatten()
    })
}

/// A directory's device and inode.
fn identity(p: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()))
}

/// The identities of `p` and of every directory above it.
fn ancestry(p: &Path) -> Vec<(u64, u64)> {
    p.ancestors().filter_map(identity).collect()
}
