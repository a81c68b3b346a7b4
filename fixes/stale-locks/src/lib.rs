//! `stale-locks`: remove `*.lock` files older than a given age.
//!
//! Params: `dir` (absolute path), `max_age_secs` (default 3600). Only regular
//! files directly in `dir` are considered.

use std::time::{SystemTime, UNIX_EPOCH};

use defops_guest::{Check, Fix, Result, fs, info, param_or, require_param};

struct StaleLocks;

fn stale() -> Result<(String, u64, Vec<String>)> {
    let dir = require_param("dir")?;
    let max_age: u64 = param_or("max_age_secs", 3600)?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() as i64;
    let mut found = Vec::new();
    for entry in fs::read_dir(&dir)? {
        if entry.file_type != fs::FileType::File || !entry.name.ends_with(".lock") {
            continue;
        }
        let age = now - fs::symlink_metadata(&entry.path)?.mtime;
        if age > max_age as i64 {
            found.push(entry.path);
        }
    }
    Ok((dir, max_age, found))
}

impl Fix for StaleLocks {
    fn check() -> Result<Check> {
        let (dir, max_age, found) = stale()?;
        Ok(if found.is_empty() {
            Check::not_needed(format!("no lock file in {dir} is older than {max_age}s"))
        } else {
            Check::applies(format!(
                "{} lock files in {dir} are older than {max_age}s",
                found.len()
            ))
        })
    }

    fn apply() -> Result<String> {
        let (dir, _, found) = stale()?;
        for path in &found {
            info(format!("removing {path}"));
            fs::remove_file(path)?;
        }
        Ok(format!(
            "removed {} stale lock files from {dir}",
            found.len()
        ))
    }
}

defops_guest::export_fix!(StaleLocks);
