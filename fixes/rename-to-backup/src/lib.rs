//! `rename-to-backup`: rename `path` to `path.backup` — the classic
//! idempotent first step before replacing something.
//!
//! Param: `path`. Applies when `path` exists and `path.backup` does not.

use defops_guest::{Check, Fix, Result, fs, require_param};

struct RenameToBackup;

/// Whether the path itself exists (a symlink counts, dangling or not).
fn present(path: &str) -> Result<bool> {
    match fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == fs::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e.into()),
    }
}

fn paths() -> Result<(String, String)> {
    let path = require_param("path")?;
    let backup = format!("{path}.backup");
    Ok((path, backup))
}

impl Fix for RenameToBackup {
    fn check() -> Result<Check> {
        let (path, backup) = paths()?;
        Ok(match (present(&path)?, present(&backup)?) {
            (true, false) => Check::applies(format!("{path} exists and {backup} does not")),
            (false, true) => {
                Check::not_needed(format!("already renamed: {backup} exists, {path} does not"))
            }
            (false, false) => Check::not_needed(format!("{path} does not exist")),
            (true, true) => {
                Check::not_needed(format!("{backup} already exists; not overwriting it"))
            }
        })
    }

    fn apply() -> Result<String> {
        let (path, backup) = paths()?;
        // Idempotent: applying again (as the dry-run's second pass does)
        // finds the work done.
        if !present(&path)? && present(&backup)? {
            return Ok(format!("{path} is already {backup}"));
        }
        fs::rename(&path, &backup)?;
        Ok(format!("renamed {path} to {backup}"))
    }
}

defops_guest::export_fix!(RenameToBackup);
