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
    /// The path as the operator gave it, made absolute and normalised.
    pub path: VPath,
    /// The same directory with symlinks resolved, to detect overlaps.
    pub canonical: PathBuf,
    pub access: Access,
    /// The handle every access under this grant goes through.
    pub dir: Dir,
    /// The device (file system) it lives on.
    pub dev: u64,
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
}

impl Grants {
    /// Opens every granted directory. Relative paths are taken from the
    /// current directory.
    pub fn open(specs: &[(PathBuf, Access)]) -> Result<Grants, GrantError> {
        let mut grants: Vec<Grant> = Vec::new();
        for (raw, access) in specs {
            let shown = raw.display().to_string();
            let absolute = std::path::absolute(raw).map_err(|e| GrantError::Invalid {
                path: shown.clone(),
                why: e.to_string(),
            })?;
            let path = VPath::from_operator_path(&absolute).map_err(|why| GrantError::Invalid {
                path: shown.clone(),
                why,
            })?;
            // The one ambient open: everything below goes through this handle.
            let dir =
                Dir::open_ambient_dir(path.as_str(), ambient_authority()).map_err(|source| {
                    GrantError::Open {
                        path: path.to_string(),
                        source,
                    }
                })?;
            let canonical =
                std::fs::canonicalize(path.as_str()).map_err(|source| GrantError::Open {
                    path: path.to_string(),
                    source,
                })?;
            if let Some(same) = grants.iter().find(|g| g.path == path) {
                if same.access != *access {
                    return Err(GrantError::Conflict {
                        path: path.to_string(),
                    });
                }
                continue;
            }
            let dev = std::os::unix::fs::MetadataExt::dev(&std::fs::metadata(&canonical).map_err(
                |source| GrantError::Open {
                    path: path.to_string(),
                    source,
                },
            )?);
            grants.push(Grant {
                path,
                canonical,
                access: *access,
                dir,
                dev,
            });
        }
        Ok(Grants { grants })
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

    /// True when `dir` lies inside a granted directory or contains one
    /// (after resolving symlinks). Used to keep the state directory apart.
    pub fn overlaps(&self, dir: &Path) -> Option<&Grant> {
        self.grants
            .iter()
            .find(|g| dir.starts_with(&g.canonical) || g.canonical.starts_with(dir))
    }
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
