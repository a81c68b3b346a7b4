//! The state directory: the journals, the before-images and the
//! compiled-component cache. Never inside a granted directory, and never
//! where anyone but this user and root could replace what it names: the
//! journals, the cache and the lock are found again by path under it, so
//! a directory above it that someone else can rename from would let them
//! point those paths at another directory (see [`check_chain`]).

use std::path::{Path, PathBuf};

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

/// Checks the state directory's path ([`check_links`], [`check_chain`]),
/// makes what is missing of it (mode 0700, never through a link), checks
/// it again and that it is outside the grants. Its path, resolved.
pub fn prepare(path: &Path, grants: &Grants) -> Result<PathBuf, StateDirError> {
    let create = |source| StateDirError::Create {
        path: path.to_path_buf(),
        source,
    };
    let absolute = std::path::absolute(path).map_err(create)?;
    // Checked before anything is created: the nearest existing ancestor,
    // with symlinks resolved, plus the components still to be made.
    let inside = |dir: &Path| {
        grants.overlaps(dir).map(|g| StateDirError::InsideGrant {
            path: absolute.clone(),
            grant: g.path.to_string(),
        })
    };
    let mut existing = absolute.as_path();
    let mut missing = Vec::new();
    while !existing.exists() {
        missing.push(existing.file_name().unwrap_or_default().to_owned());
        existing = existing.parent().unwrap_or(Path::new("/"));
    }
    let found = std::fs::canonicalize(existing).map_err(create)?;
    // Nothing is created under a directory someone else could swap.
    let unsafe_at = |dir: &Path, whole: bool| {
        check_chain(dir, whole).map_err(|why| StateDirError::Unsafe {
            path: absolute.clone(),
            why,
        })
    };
    check_links(&absolute).map_err(|why| StateDirError::Unsafe {
        path: absolute.clone(),
        why,
    })?;
    unsafe_at(&found, missing.is_empty())?;
    let mut planned = found.clone();
    planned.extend(missing.iter().rev());
    if let Some(e) = inside(&planned) {
        return Err(e);
    }
    make_below(&found, &missing).map_err(create)?;
    let canonical = std::fs::canonicalize(&absolute).map_err(create)?;
    unsafe_at(&canonical, true)?;
    if let Some(e) = inside(&canonical) {
        return Err(e);
    }
    if let Some(g) = overlaps_by_identity(&canonical, grants) {
        return Err(StateDirError::InsideGrant {
            path: absolute,
            grant: g,
        });
    }
    Ok(canonical)
}

/// Makes `missing` (innermost first) below `found`, mode 0700, each
/// relative to a descriptor of the one above it and never through a link:
/// a link put in the way of one is refused, not followed.
fn make_below(found: &Path, missing: &[std::ffi::OsString]) -> std::io::Result<()> {
    use rustix::fs::{Mode, OFlags};
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let mut dir = rustix::fs::open(found, flags, Mode::empty())?;
    for name in missing.iter().rev() {
        match rustix::fs::mkdirat(&dir, name.as_os_str(), Mode::from_raw_mode(0o700)) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(e.into()),
        }
        dir = rustix::fs::openat(&dir, name.as_os_str(), flags, Mode::empty()).map_err(
            |e| match e {
                rustix::io::Errno::LOOP => std::io::Error::other(format!(
                    "{} is a symbolic link where a directory was to be made",
                    name.to_string_lossy()
                )),
                e => e.into(),
            },
        )?;
    }
    Ok(())
}

/// Checks that only this user and root can change what `dir` (absolute,
/// without symlinks) names: every directory from `/` down to it is owned
/// by one of them, and none above it can be written by anyone else unless
/// it is sticky (then no one else can rename or remove what they do not
/// own, and what is below it is owned by one of them). With `whole`, `dir`
/// is the state directory itself, which no one else may write at all.
/// This is the rule `sshd` applies to the directories above a user's
/// keys. Why not, in words naming the directory and what to do.
pub fn check_chain(dir: &Path, whole: bool) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let me = rustix::process::geteuid().as_raw();
    let chain: Vec<&Path> = dir.ancestors().collect();
    for (depth, d) in chain.iter().rev().enumerate() {
        let m = std::fs::symlink_metadata(d).map_err(|e| format!("{}: {e}", d.display()))?;
        if !m.is_dir() {
            return Err(format!(
                "{} is not a directory (it changed while being checked); try again",
                d.display()
            ));
        }
        if m.uid() != me && m.uid() != 0 {
            return Err(format!(
                "{} is owned by uid {}, who could replace what is in it; choose a state directory (--state-dir) whose every parent belongs to you or root",
                d.display(),
                m.uid()
            ));
        }
        let last = depth + 1 == chain.len();
        let others_write = m.mode() & 0o022 != 0;
        let sticky = m.mode() & 0o1000 != 0;
        let mode = m.mode() & 0o7777;
        if others_write && last && whole && sticky {
            return Err(format!(
                "{} is shared (mode {mode:04o}): anyone can put things in it; choose a directory of your own below it with --state-dir",
                d.display(),
            ));
        }
        if others_write && ((last && whole) || !sticky) {
            return Err(format!(
                "{} can be written by others (mode {mode:04o}), who could replace what is in it; run `chmod go-w {}` or choose another state directory with --state-dir",
                d.display(),
                d.display()
            ));
        }
    }
    Ok(())
}

/// Checks every symlink met on the way to `path` (absolute), as the
/// kernel would follow them, those in the links' own targets too: each
/// must belong to this user or root and stand in a directory that passes
/// [`check_chain`], or someone else could point it elsewhere. (Where the
/// path ends up is checked as the resolved path.) Stops at the first
/// component that is not there: the rest is to be made.
fn check_links(path: &Path) -> Result<(), String> {
    use std::collections::VecDeque;
    use std::os::unix::fs::MetadataExt;
    use std::path::Component;
    /// A component, owned: a link's target is read as the walk goes.
    enum Part {
        Root,
        Up,
        Name(std::ffi::OsString),
    }
    let parts = |p: &Path| -> Vec<Part> {
        p.components()
            .filter_map(|c| match c {
                Component::RootDir | Component::Prefix(_) => Some(Part::Root),
                Component::CurDir => None,
                Component::ParentDir => Some(Part::Up),
                Component::Normal(n) => Some(Part::Name(n.to_owned())),
            })
            .collect()
    };
    let me = rustix::process::geteuid().as_raw();
    // `at` is always resolved: no links in it.
    let mut at = PathBuf::from("/");
    let mut todo: VecDeque<Part> = parts(path).into();
    let mut links = 0;
    while let Some(part) = todo.pop_front() {
        let name = match part {
            Part::Root => {
                at = PathBuf::from("/");
                continue;
            }
            Part::Up => {
                at.pop();
                continue;
            }
            Part::Name(name) => name,
        };
        let next = at.join(&name);
        let m = match std::fs::symlink_metadata(&next) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(format!("{}: {e}", next.display())),
        };
        if !m.file_type().is_symlink() {
            at = next;
            continue;
        }
        links += 1;
        if links > 40 {
            return Err(format!("{}: too many links on the way", path.display()));
        }
        if m.uid() != me && m.uid() != 0 {
            return Err(format!(
                "the link {} is owned by uid {}, who could point it elsewhere; give the state directory's own path with --state-dir",
                next.display(),
                m.uid()
            ));
        }
        check_chain(&at, false)?;
        let target = std::fs::read_link(&next).map_err(|e| format!("{}: {e}", next.display()))?;
        for p in parts(&target).into_iter().rev() {
            todo.push_front(p);
        }
    }
    Ok(())
}

/// An existing state directory that passes [`check_links`] and
/// [`check_chain`].
pub fn is_safe(dir: &Path) -> bool {
    std::path::absolute(dir).is_ok_and(|a| check_links(&a).is_ok())
        && std::fs::canonicalize(dir).is_ok_and(|c| check_chain(&c, true).is_ok())
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
        .find(|g| ancestry(Path::new(g.path.as_str())).contains(&state_id))
        .map(|g| g.path.to_string())
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
