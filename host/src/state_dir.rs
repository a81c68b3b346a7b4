//! The state directory: the compiled-component cache (and, later, the
//! journals). Never inside a granted directory.

use std::os::unix::fs::DirBuilderExt;
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

/// Creates (mode 0700) and checks the state directory.
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
    let mut planned = std::fs::canonicalize(existing).map_err(create)?;
    planned.extend(missing.iter().rev());
    if let Some(e) = inside(&planned) {
        return Err(e);
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&absolute)
        .map_err(create)?;
    let canonical = std::fs::canonicalize(&absolute).map_err(create)?;
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
