//! `quarantine-on-log`: when the logs report corrupt segments often enough,
//! move those segment files out of the data directory.
//!
//! Params: `log` (a glob, e.g. `/var/log/db/db.log*`), `data_dir`,
//! `quarantine_dir`, `threshold` (default 1), `pattern` (default
//! `checksum mismatch in segment (\S+)`; its first group names the segment),
//! `leader_file` (optional: then only where that file says `leader`).
//! Applies when at least `threshold` lines match and a named segment is still
//! in `data_dir`; moves each such segment into `quarantine_dir` (created if
//! missing). Segments already moved are skipped, so it is idempotent.

use std::collections::BTreeSet;

use defops_guest::{Check, Fix, Result, fs, info, logs, param, param_or, require_param};

const DEFAULT_PATTERN: &str = r"checksum mismatch in segment (\S+)";

struct QuarantineOnLog;

struct Plan {
    quarantine_dir: String,
    data_dir: String,
    /// Segments named by the logs that are still in the data directory.
    pending: Vec<String>,
    named: usize,
    lines: u64,
    threshold: u64,
}

/// Why the fix does not apply on this host, if it does not.
fn not_leader() -> Result<Option<String>> {
    let Some(file) = param("leader_file") else {
        return Ok(None);
    };
    let role = fs::read_to_string(&file)?;
    Ok((role.trim() != "leader").then(|| format!("{file} says {:?}, not leader", role.trim())))
}

fn plan() -> Result<Plan> {
    let log = require_param("log")?;
    let data_dir = require_param("data_dir")?;
    let quarantine_dir = require_param("quarantine_dir")?;
    let threshold: u64 = param_or("threshold", 1)?;
    let pattern = param("pattern").unwrap_or_else(|| DEFAULT_PATTERN.to_string());
    let hits = logs::grep(&log, &pattern).max(10_000).run()?;
    let mut named = BTreeSet::new();
    for m in hits.iter() {
        let Some(seg) = m.capture(1) else { continue };
        if seg.is_empty() || seg.contains('/') || seg == "." || seg == ".." {
            return Err(format!(
                "{}:{}: {seg:?} is not a segment file name",
                m.file, m.line_number
            )
            .into());
        }
        named.insert(seg.to_string());
    }
    let mut pending = Vec::new();
    for seg in &named {
        if fs::exists(format!("{data_dir}/{seg}"))? {
            pending.push(seg.clone());
        }
    }
    Ok(Plan {
        quarantine_dir,
        data_dir,
        named: named.len(),
        pending,
        lines: hits.total,
        threshold,
    })
}

impl Fix for QuarantineOnLog {
    fn check() -> Result<Check> {
        if let Some(why) = not_leader()? {
            return Ok(Check::not_needed(why));
        }
        let p = plan()?;
        Ok(if p.lines < p.threshold {
            Check::not_needed(format!(
                "{} matching log lines, below the threshold of {}",
                p.lines, p.threshold
            ))
        } else if p.pending.is_empty() {
            Check::not_needed(format!(
                "all {} segments named in the logs are already quarantined",
                p.named
            ))
        } else {
            Check::applies(format!(
                "{} matching log lines name {} segments; {} still in {}",
                p.lines,
                p.named,
                p.pending.len(),
                p.data_dir
            ))
        })
    }

    fn apply() -> Result<String> {
        let p = plan()?;
        fs::create_dir_all(&p.quarantine_dir)?;
        for seg in &p.pending {
            info(format!("quarantining {seg}"));
            fs::rename(
                format!("{}/{seg}", p.data_dir),
                format!("{}/{seg}", p.quarantine_dir),
            )?;
        }
        Ok(format!(
            "moved {} segments to {}",
            p.pending.len(),
            p.quarantine_dir
        ))
    }
}

defops_guest::export_fix!(QuarantineOnLog);
