//! What the operator granted, and how a fix's path is checked against it.
//!
//! A fix names files by the absolute path the operator knows
//! (`/var/lib/app/app.conf`). [`VPath::parse`] refuses anything that is not a
//! plain absolute path; [`Grants::find`] maps it to the grant that covers it
//! (the longest matching prefix). Symlinks are resolved by the overlay, one
//! component at a time, so a symlink can never lead a path out of the grants
//! unnoticed; cap-std underneath refuses it again if the disk changed between
//! our look and the kernel's.
//!
//! [`Grants::open`] holds the one place that opens ambient paths: each granted
//! directory is opened once, with `Dir::open_ambient_dir`, and everything else
//! is relative to those handles.
//!
//! A grant is known by its **canonical** path: the one the kernel reached
//! when the handle was opened (symlinks and `..` resolved), read back from
//! the handle itself. Every check — overlap, nesting, the manifest, the
//! plan's containment — uses that form, so a grant spelled through a symlink
//! or with `..` names exactly the directory the sandbox enforces. A path the
//! operator spelled differently (through a symlinked ancestor, `/var/run` for
//! `/run`) stays usable by the fix as an alias of the canonical one.

use std::fmt;
use std::path::{Component, Path, PathBuf};

use cap_std::ambient_authority;
use cap_std::fs::Dir;
use serde::Serialize;

/// The longest path a fix may name, in bytes (Linux `PATH_MAX`).
pub const MAX_PATH: usize = 4096;
/// The longest path component, in bytes (Linux `NAME_MAX`).
pub const MAX_NAME: usize = 255;

/// Read-only or read-write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Access {
    ReadOnly,
    ReadWrite,
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Access::ReadOnly => "read-only",
            Access::ReadWrite => "read-write",
        })
    }
}

/// A granted directory.
#[derive(Debug)]
pub struct Grant {
    /// The canonical path of the directory the handle is open on.
    pub path: VPath,
    /// The operator's spelling (absolute, without `..`), when it differs
    /// from the canonical path: fix paths under it are translated.
    pub alias: Option<VPath>,
    pub access: Access,
    /// The handle every access under this grant goes through.
    pub dir: Dir,
    /// The device (file system) it lives on.
    pub dev: u64,
    /// Its inode: with `dev`, the directory's identity.
    pub ino: u64,
}

/// Why a grant could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    /// The path does not exist, is not a directory or cannot be opened.
    #[error("cannot open granted directory {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The path is not usable (relative and no current directory, `..`, NUL).
    #[error("invalid granted path {path:?}: {why}")]
    Invalid { path: String, why: String },
    /// The same directory granted twice with different access.
    #[error("{path} is granted both read-only and read-write; grant it once")]
    Conflict { path: String },
}

/// The set of grants of one run.
#[derive(Debug, Default)]
pub struct Grants {
    grants: Vec<Grant>,
    /// The symlinks the operator's spellings of the grants went through
    /// (where they are, canonical): a plan may not change them, or the
    /// same spelling would name another directory next time.
    named_through: Vec<VPath>,
    /// Mount points strictly inside a grant (bind mounts, other file
    /// systems), from `/proc/self/mountinfo`: a change never crosses one,
    /// so a directory mounted there under another name is never changed
    /// through it.
    mounts: Vec<VPath>,
    /// The whole mount table (read when there are grants), to tell where a
    /// directory lies within its file system.
    table: Vec<Mount>,
}

/// A mount: where it shows (its point) the directory `root` of its file
/// system. A bind mount of a subdirectory has that subdirectory as root.
#[derive(Clone, Debug)]
pub struct Mount {
    /// The mount's ID (what `statx` gives as `stx_mnt_id`).
    pub id: u64,
    /// The file system's device, as the table names it (`major:minor`).
    pub device: String,
    pub point: PathBuf,
    pub root: PathBuf,
}

impl Grants {
    /// Opens every granted directory. Relative paths are taken from the
    /// current directory; symlinks and `..` are resolved by the kernel.
    pub fn open(specs: &[(PathBuf, Access)]) -> Result<Grants, GrantError> {
        Grants::open_each(specs).map(|(grants, _)| grants)
    }

    /// Like [`Grants::open`], with the canonical path of the grant each
    /// spec became (one directory named twice is one grant).
    pub fn open_each(specs: &[(PathBuf, Access)]) -> Result<(Grants, Vec<VPath>), GrantError> {
        let mut grants: Vec<Grant> = Vec::new();
        let mut each: Vec<VPath> = Vec::new();
        let mut named_through: Vec<VPath> = Vec::new();
        for (raw, access) in specs {
            let shown = raw.display().to_string();
            let invalid = |why: String| GrantError::Invalid {
                path: shown.clone(),
                why,
            };
            let absolute = std::path::absolute(raw).map_err(|e| invalid(e.to_string()))?;
            if absolute.as_os_str().as_encoded_bytes().contains(&0) {
                return Err(invalid("the path contains a NUL byte".into()));
            }
            let open_error = |source| GrantError::Open {
                path: shown.clone(),
                source,
            };
            // The one ambient open: everything below goes through this handle.
            let dir = Dir::open_ambient_dir(&absolute, ambient_authority()).map_err(open_error)?;
            let st = rustix::fs::fstat(&dir).map_err(|e| open_error(e.into()))?;
            let canonical = handle_path(&dir, &absolute, &st).map_err(open_error)?;
            let path = VPath::from_operator_path(&canonical).map_err(invalid)?;
            // The operator's spelling is an alias only when it has no `..`:
            // `a/link/..` is not `a` to the kernel.
            let alias = (!absolute
                .components()
                .any(|c| matches!(c, Component::ParentDir)))
            .then(|| VPath::from_operator_path(&absolute).ok())
            .flatten()
            .filter(|a| *a != path);
            named_through.extend(
                symlinks_on_the_way(&absolute)
                    .iter()
                    .filter_map(|p| VPath::from_operator_path(p).ok()),
            );
            if let Some(same) = grants
                .iter_mut()
                .find(|g| g.path == path || (g.dev, g.ino) == (st.st_dev, st.st_ino))
            {
                if same.access != *access {
                    return Err(GrantError::Conflict {
                        path: path.to_string(),
                    });
                }
                same.alias = same.alias.take().or(alias);
                each.push(same.path.clone());
                continue;
            }
            each.push(path.clone());
            grants.push(Grant {
                path,
                alias,
                access: *access,
                dir,
                dev: st.st_dev,
                ino: st.st_ino,
            });
        }
        // No grant, no mount point inside one (a run without log grants
        // need not read the mount table).
        let table = match grants.is_empty() {
            true => Vec::new(),
            false => mount_table(),
        };
        let mounts = table
            .iter()
            .filter_map(|m| VPath::parse(m.point.to_str()?).ok())
            .filter(|m| {
                grants
                    .iter()
                    .any(|g| m.starts_with(&g.path) && *m != g.path)
            })
            .collect();
        let grants = Grants {
            grants,
            named_through,
            mounts,
            table,
        };
        Ok((grants, each))
    }

    /// The mount point strictly inside `path`'s grant that `path` is at or
    /// below, if any: changes there would reach whatever is mounted.
    pub fn mounted_at_or_above(&self, path: &VPath) -> Option<&VPath> {
        let grant = self.find(path)?;
        self.mounts
            .iter()
            .find(|m| **m != grant.path && m.starts_with(&grant.path) && path.starts_with(m))
    }

    /// A mount point at or below `path`, if any (renaming `path` would move
    /// it).
    pub fn mount_at_or_below(&self, path: &VPath) -> Option<&VPath> {
        self.mounts.iter().find(|m| m.starts_with(path))
    }

    /// The mount points inside the grants.
    pub fn mounts(&self) -> impl Iterator<Item = &VPath> {
        self.mounts.iter()
    }

    /// True when a read-write grant holds a mount point: a directory of it
    /// may then be reachable under a second name at another depth.
    pub fn has_mounts_inside(&self, grant: &Grant) -> bool {
        self.mounts
            .iter()
            .any(|m| m.starts_with(&grant.path) && *m != grant.path)
    }

    /// A symlink an operator's spelling of a grant went through that lies
    /// at `path` or below it, if any.
    pub fn names_a_grant(&self, path: &VPath) -> Option<&VPath> {
        self.named_through.iter().find(|l| l.starts_with(path))
    }

    /// `path` with an operator's spelling of a grant (an alias) replaced by
    /// the grant's canonical path; unchanged otherwise.
    pub fn canonical(&self, path: VPath) -> VPath {
        let alias = self
            .grants
            .iter()
            .filter_map(|g| Some((g.alias.as_ref()?, &g.path)))
            .filter(|(a, _)| path.starts_with(a))
            .max_by_key(|(a, _)| a.depth());
        match alias {
            Some((a, canonical)) => path.rebase(a, canonical),
            None => path,
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &Grant> {
        self.grants.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.grants.is_empty()
    }

    /// The grant covering `path` (the longest prefix), if any.
    pub fn find(&self, path: &VPath) -> Option<&Grant> {
        self.grants
            .iter()
            .filter(|g| path.starts_with(&g.path))
            .max_by_key(|g| g.path.depth())
    }

    /// True when `path` is a strict ancestor of some grant (`/var` for a
    /// grant of `/var/lib/app`): it may be walked through, never opened.
    pub fn is_above_a_grant(&self, path: &VPath) -> bool {
        self.grants
            .iter()
            .any(|g| g.path.starts_with(path) && g.path.depth() > path.depth())
    }

    /// An absolute symlink target (`/` and what follows) with an operator's
    /// spelling of a grant replaced by the canonical path, as the kernel
    /// would resolve it. Returned without the leading `/`.
    pub fn canonical_target(&self, target: &str) -> String {
        let rest = target.trim_start_matches('/');
        for g in &self.grants {
            let Some(alias) = &g.alias else { continue };
            let a = &alias.as_str()[1..];
            if let Some(tail) = rest.strip_prefix(a)
                && (tail.is_empty() || tail.starts_with('/'))
            {
                return format!("{}{tail}", &g.path.as_str()[1..]);
            }
        }
        rest.to_string()
    }

    /// True when `dir` (canonical) lies inside a granted directory or
    /// contains one. Used to keep the state directory apart.
    pub fn overlaps(&self, dir: &Path) -> Option<&Grant> {
        self.grants.iter().find(|g| {
            let granted = Path::new(g.path.as_str());
            dir.starts_with(granted) || granted.starts_with(dir)
        })
    }

    /// The grant whose directory is `(dev, ino)`, if any: a grant known by
    /// its identity, whatever name reaches it.
    pub fn by_identity(&self, dev: u64, ino: u64) -> Option<&Grant> {
        self.grants.iter().find(|g| (g.dev, g.ino) == (dev, ino))
    }

    /// True when `path` is a grant's directory or one of its ancestors.
    pub fn is_grant_or_above(&self, path: &VPath) -> Option<&Grant> {
        self.grants.iter().find(|g| g.path.starts_with(path))
    }
}

impl Grants {
    /// Where the directory `dir` (canonical) lies within its file system:
    /// the file system's device, and the root of the mount that shows it
    /// followed by the rest of its path. Two directories of one file
    /// system are one inside the other exactly when these paths are,
    /// whatever bind mounts show them as. `None` without a mount table.
    pub fn within_file_system(&self, dir: &Path) -> Option<(String, PathBuf)> {
        // The mount that shows `dir`, by its ID (a mount hidden under
        // another at a shorter path is still in the table); without
        // `STATX_MNT_ID` (Linux before 5.8), the deepest mount point over
        // it, of those at one point the last (the one on top).
        let by_id = rustix::fs::statx(
            rustix::fs::CWD,
            dir,
            rustix::fs::AtFlags::empty(),
            rustix::fs::StatxFlags::MNT_ID,
        )
        .ok()
        .filter(|x| x.stx_mask & rustix::fs::StatxFlags::MNT_ID.bits() != 0)
        .map(|x| x.stx_mnt_id);
        let m = match by_id {
            Some(id) => self.table.iter().find(|m| m.id == id)?,
            None => self
                .table
                .iter()
                .filter(|m| dir.starts_with(&m.point))
                .max_by_key(|m| m.point.components().count())?,
        };
        Some((
            m.device.clone(),
            m.root.join(dir.strip_prefix(&m.point).ok()?),
        ))
    }

    /// The mounts whose points lie strictly inside the directory `dir`
    /// (canonical): their file systems are reached through it too.
    pub fn mounts_inside(&self, dir: &Path) -> impl Iterator<Item = &Mount> {
        self.table
            .iter()
            .filter(move |m| m.point.starts_with(dir) && m.point != dir)
    }

    /// True when there are grants but no mount table to place them by.
    pub fn lacks_mount_table(&self) -> bool {
        !self.grants.is_empty() && self.table.is_empty()
    }
}

/// This process's mount table (empty when `/proc/self/mountinfo` cannot
/// be read).
fn mount_table() -> Vec<Mount> {
    // Sized up front: a file under /proc says it is empty, and reading it
    // from an empty buffer starts with a 32-byte read.
    let mut text = String::with_capacity(64 << 10);
    let read = std::fs::File::open("/proc/self/mountinfo")
        .and_then(|mut f| std::io::Read::read_to_string(&mut f, &mut text));
    if read.is_err() {
        return Vec::new();
    }
    text.lines()
        .filter_map(|l| {
            let mut fields = l.split(' ');
            let id = fields.next()?.parse().ok()?;
            let mut fields = fields.skip(1);
            let (device, root, point) = (fields.next()?, fields.next()?, fields.next()?);
            Some(Mount {
                id,
                device: device.to_string(),
                point: PathBuf::from(unescape_octal(point)),
                root: PathBuf::from(unescape_octal(root)),
            })
        })
        .collect()
}

/// mountinfo's escapes: `\040` for a space, and so on.
fn unescape_octal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = b[i + 1..i + 4]
                .iter()
                .fold(0u32, |v, c| v * 8 + u32::from(c - b'0'));
            out.push(v as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The symlinks the kernel follows to resolve `path`, each where it lies
/// (its directory resolved): at most 40, as the kernel.
fn symlinks_on_the_way(path: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut cur = PathBuf::from("/");
    let mut todo: Vec<std::ffi::OsString> = path
        .components()
        .rev()
        .map(|c| c.as_os_str().to_owned())
        .collect();
    while let Some(c) = todo.pop() {
        match c.to_str() {
            Some("/") => cur = PathBuf::from("/"),
            Some("" | ".") => {}
            Some("..") => {
                cur.pop();
            }
            _ => {
                let next = cur.join(&c);
                match std::fs::read_link(&next) {
                    Ok(target) if out.len() < 40 => {
                        out.push(next);
                        if target.is_absolute() {
                            cur = PathBuf::from("/");
                        }
                        todo.extend(target.components().rev().map(|c| c.as_os_str().to_owned()));
                    }
                    _ => cur = next,
                }
            }
        }
    }
    out
}

/// The path of the directory `dir` is open on, as the kernel knows it:
/// read back from `/proc/self/fd`, or (without `/proc`) the canonical form
/// of `asked` checked to be the same directory.
fn handle_path(dir: &Dir, asked: &Path, st: &rustix::fs::Stat) -> std::io::Result<PathBuf> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::MetadataExt;
    let fd_link = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
    let path = match std::fs::read_link(&fd_link) {
        Ok(p) if p.is_absolute() => p,
        _ => std::fs::canonicalize(asked)?,
    };
    let now = std::fs::metadata(&path)?;
    if (now.dev(), now.ino()) != (st.st_dev, st.st_ino) {
        return Err(std::io::Error::other(
            "the directory changed while it was being opened; try again",
        ));
    }
    Ok(path)
}

/// A validated absolute path: `/` followed by plain components, never `.`,
/// `..`, empty components, a trailing slash or a NUL byte.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct VPath(String);

impl VPath {
    /// The root, `/`.
    pub fn root() -> VPath {
        VPath("/".to_string())
    }

    /// Checks a path that came from a fix. The error says what is wrong.
    pub fn parse(raw: &str) -> Result<VPath, String> {
        if raw.is_empty() {
            return Err("the path is empty".into());
        }
        if raw.contains('\0') {
            return Err("the path contains a NUL byte".into());
        }
        if raw.len() > MAX_PATH {
            return Err(format!("the path is longer than {MAX_PATH} bytes"));
        }
        if !raw.starts_with('/') {
            return Err("the path is not absolute; name files by their full path".into());
        }
        if raw == "/" {
            return Ok(VPath::root());
        }
        if raw.ends_with('/') {
            return Err("the path ends with a slash; name the file or directory without it".into());
        }
        for name in raw[1..].split('/') {
            check_name(name)?;
        }
        Ok(VPath(raw.to_string()))
    }

    fn from_operator_path(path: &Path) -> Result<VPath, String> {
        let mut out = VPath::root();
        for c in path.components() {
            match c {
                Component::RootDir => {}
                Component::Normal(n) => {
                    let n = n.to_str().ok_or("the path is not valid UTF-8")?;
                    check_name(n)?;
                    out = out.join(n);
                }
                Component::CurDir => {}
                Component::ParentDir => {
                    out = out.parent().unwrap_or_else(VPath::root);
                }
                Component::Prefix(_) => return Err("unsupported path prefix".into()),
            }
        }
        Ok(out)
    }

    /// A bound for range queries over ordered maps of paths; not a valid
    /// path in itself.
    pub(crate) fn range_bound(s: String) -> VPath {
        VPath(s)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The number of components (0 for `/`).
    pub fn depth(&self) -> usize {
        if self.0 == "/" {
            0
        } else {
            self.0.matches('/').count()
        }
    }

    pub fn is_root(&self) -> bool {
        self.0 == "/"
    }

    /// Component-wise prefix test: `/a/b` starts with `/a`, not with `/a/b2`.
    pub fn starts_with(&self, base: &VPath) -> bool {
        if base.is_root() {
            return true;
        }
        self.0 == base.0
            || (self.0.starts_with(&base.0) && self.0.as_bytes().get(base.0.len()) == Some(&b'/'))
    }

    /// `self` with one more component. `name` must be a valid name.
    pub fn join(&self, name: &str) -> VPath {
        debug_assert!(check_name(name).is_ok(), "bad name {name:?}");
        if self.is_root() {
            VPath(format!("/{name}"))
        } else {
            VPath(format!("{}/{name}", self.0))
        }
    }

    /// The parent, or `None` for `/`.
    pub fn parent(&self) -> Option<VPath> {
        if self.is_root() {
            return None;
        }
        let cut = self.0.rfind('/').unwrap_or(0);
        Some(if cut == 0 {
            VPath::root()
        } else {
            VPath(self.0[..cut].to_string())
        })
    }

    /// The last component (empty for `/`).
    pub fn file_name(&self) -> &str {
        &self.0[self.0.rfind('/').map_or(0, |i| i + 1)..]
    }

    /// The components after `base` (which `self` must start with), as a
    /// relative path: `"."` when equal.
    pub fn relative_to(&self, base: &VPath) -> &str {
        debug_assert!(self.starts_with(base));
        if self.0 == base.0 {
            "."
        } else if base.is_root() {
            &self.0[1..]
        } else {
            &self.0[base.0.len() + 1..]
        }
    }

    /// `self` with its `from` prefix replaced by `to`.
    pub fn rebase(&self, from: &VPath, to: &VPath) -> VPath {
        let rest = self.relative_to(from);
        if rest == "." {
            return to.clone();
        }
        // One allocation: `rest` is made of valid names already.
        match to.is_root() {
            true => VPath(format!("/{rest}")),
            false => VPath(format!("{}/{rest}", to.0)),
        }
    }

    /// The components, in order.
    pub fn names(&self) -> impl DoubleEndedIterator<Item = &str> {
        self.0.split('/').filter(|n| !n.is_empty())
    }
}

impl fmt::Display for VPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn check_name(name: &str) -> Result<(), String> {
    match name {
        "" => Err("the path contains an empty component (\"//\")".into()),
        "." => Err("the path contains \".\"; name files by their plain path".into()),
        ".." => Err("the path contains \"..\"; name files by their plain path".into()),
        n if n.len() > MAX_NAME => Err(format!("a path component is longer than {MAX_NAME} bytes")),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_refuses_every_trick() {
        for bad in [
            "", "relative", "./x", "/a/../b", "/a/./b", "/a//b", "/a/", "/a/b/", "/a\0b", "..",
            "/..",
        ] {
            assert!(VPath::parse(bad).is_err(), "{bad:?} was accepted");
        }
        let long = format!("/{}", "a".repeat(MAX_NAME + 1));
        assert!(VPath::parse(&long).is_err());
        let deep = "/a".repeat(MAX_PATH);
        assert!(VPath::parse(&deep).is_err());
        assert!(VPath::parse("/var/lib/app.conf").is_ok());
        assert!(VPath::parse("/").is_ok());
    }

    #[test]
    fn prefix_is_component_wise() {
        let a = VPath::parse("/var/lib/app").unwrap();
        assert!(VPath::parse("/var/lib/app/x").unwrap().starts_with(&a));
        assert!(VPath::parse("/var/lib/app").unwrap().starts_with(&a));
        assert!(!VPath::parse("/var/lib/app2").unwrap().starts_with(&a));
        assert!(a.starts_with(&VPath::root()));
    }

    #[test]
    fn parent_join_rebase() {
        let p = VPath::parse("/a/b/c").unwrap();
        assert_eq!(p.parent().unwrap().as_str(), "/a/b");
        assert_eq!(VPath::parse("/a").unwrap().parent().unwrap(), VPath::root());
        assert_eq!(p.file_name(), "c");
        assert_eq!(p.relative_to(&VPath::parse("/a").unwrap()), "b/c");
        let moved = p.rebase(&VPath::parse("/a/b").unwrap(), &VPath::parse("/z").unwrap());
        assert_eq!(moved.as_str(), "/z/c");
        assert_eq!(p.depth(), 3);
    }
}
