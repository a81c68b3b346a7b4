//! `defops-wasm check`: a monitoring plugin in the Nagios/Icinga
//! convention. One line, `DEFOPS OK|WARNING|CRITICAL|UNKNOWN - summary`,
//! perfdata after `|`, and the exit code 0/1/2/3.
//!
//! - CRITICAL: a journal fails verification; or the last real run of a fix
//!   failed or was aborted after changing something (or was cut off by a
//!   crash) and has not been rolled back; or a rollback ended without the
//!   tree back (`not-restored`, `error`) and none succeeded since.
//! - WARNING: paused; the last real run of a fix failed without changing
//!   anything; a rollback refused (drift, a later run on the same paths,
//!   runs not counted) and none succeeded since; the last attempt of a
//!   scheduled fix failed or was refused
//!   (a skip because paused or outside the change window is not a
//!   failure).
//! - UNKNOWN: the state directory cannot be read.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use crate::exit::Exit;
use crate::output::Printer;
use crate::run::Stop;

/// The plugin's states, with their exit codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Level {
    Ok = 0,
    Warning = 1,
    Critical = 2,
    Unknown = 3,
}

impl Level {
    fn name(self) -> &'static str {
        match self {
            Level::Ok => "OK",
            Level::Warning => "WARNING",
            Level::Critical => "CRITICAL",
            Level::Unknown => "UNKNOWN",
        }
    }
}

fn good(outcome: &str) -> bool {
    matches!(outcome, "applied" | "not-needed")
}

/// Seconds since the epoch of an RFC 3339 UTC time (`2026-11-28T01:02:03Z`).
fn epoch(t: &str) -> Option<i64> {
    t.parse::<jiff::Timestamp>().ok().map(|ts| ts.as_second())
}

/// `check [--warn-age DUR] [--last N]`. Never fails: whatever goes wrong is
/// UNKNOWN.
pub fn check(state: &Path, warn_age: Duration, last: usize, out: &Printer) -> Result<Exit, Stop> {
    let (level, problems, perf) = match assess(state, warn_age, last) {
        Ok(r) => r,
        Err(why) => (Level::Unknown, vec![why], Vec::new()),
    };
    let summary = match problems.first() {
        None => "all runs fine, not paused".to_string(),
        Some(first) if problems.len() == 1 => first.clone(),
        Some(first) => format!("{first} (and {} more)", problems.len() - 1),
    };
    let perfdata: Vec<String> = perf.iter().map(|(k, v)| format!("{k}={v}")).collect();
    if out.is_json() {
        out.raw(&json!({
            "type": "check",
            "status": level.name(),
            "exit_code": level as i32,
            "problems": problems,
            "perfdata": perf.iter().cloned().collect::<BTreeMap<_, _>>(),
        }));
    } else {
        crate::output::write_line(&format!(
            "DEFOPS {} - {}{}",
            level.name(),
            crate::escape::line(&summary.replace('|', "/")),
            if perfdata.is_empty() {
                String::new()
            } else {
                format!(" | {}", perfdata.join(" "))
            }
        ));
        // Long output: every problem on its own line.
        if problems.len() > 1 {
            for p in &problems {
                crate::output::write_line(&crate::escape::line(&p.replace('|', "/")));
            }
        }
    }
    // The plugin convention's codes, which happen to be these exits.
    Ok(match level {
        Level::Ok => Exit::Success,
        Level::Warning => Exit::FixFailed,
        Level::Critical => Exit::Usage,
        Level::Unknown => Exit::Refused,
    })
}

type Assessment = (Level, Vec<String>, Vec<(String, u64)>);

fn assess(state: &Path, warn_age: Duration, last: usize) -> Result<Assessment, String> {
    let meta = std::fs::metadata(state)
        .map_err(|e| format!("cannot read the state directory {}: {e}", state.display()))?;
    if !meta.is_dir() {
        return Err(format!("{} is not a directory", state.display()));
    }
    let ids = match crate::journal::list(state) {
        Ok(ids) => ids,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(format!("cannot list the runs in {}: {e}", state.display())),
    };
    let start = ids.len().saturating_sub(last);
    let rows: Vec<Value> = ids[start..]
        .iter()
        .map(|id| crate::history::row(state, id))
        .collect();
    let now = crate::run::now_secs();
    let mut level = Level::Ok;
    let mut problems: Vec<(Level, String)> = Vec::new();
    let mut raise = |l: Level, p: String, level: &mut Level| {
        *level = (*level).max(l);
        problems.push((l, p));
    };
    let not_own = crate::journal::not_own(state);
    if !not_own.is_empty() {
        raise(
            Level::Warning,
            format!(
                "{} run(s) under {}/runs are not counted: not this user's or root's alone (owner, mode, or a second name): {}; look at them, then restore their owner and `chmod go-w`, or move them out",
                not_own.len(),
                state.display(),
                not_own.join(", ")
            ),
            &mut level,
        );
    }
    let mut bad_journals = 0u64;
    for r in &rows {
        if matches!(r["verdict"].as_str(), Some("bad" | "unreadable")) {
            bad_journals += 1;
            raise(
                Level::Critical,
                format!(
                    "the journal of run {} fails verification; run `defops-wasm journal verify {}`",
                    r["run_id"].as_str().unwrap_or("?"),
                    r["run_id"].as_str().unwrap_or("?")
                ),
                &mut level,
            );
        }
    }
    // Successful rollbacks, drifted ones and ones that left the tree not
    // as it was, by the run they undo.
    let mut undone: BTreeMap<String, String> = BTreeMap::new();
    let mut drifted: BTreeMap<String, (String, String)> = BTreeMap::new();
    let mut not_back: BTreeMap<String, (String, String)> = BTreeMap::new();
    for r in rows
        .iter()
        .filter(|r| r["kind"] == "rollback" && r["dry_run"] != json!(true))
    {
        let of = r["rollback_of"].as_str().unwrap_or("").to_string();
        let id = r["run_id"].as_str().unwrap_or("").to_string();
        match r["outcome"].as_str() {
            Some("rolled-back" | "nothing-to-undo") => {
                drifted.remove(&of);
                not_back.remove(&of);
                undone.insert(of, id);
            }
            Some("refused") => {
                drifted.insert(
                    of,
                    (id, r["refused_for"].as_str().unwrap_or("drift").to_string()),
                );
            }
            Some(other @ ("not-restored" | "error")) => {
                not_back.insert(of, (id, other.to_string()));
            }
            _ => {}
        }
    }
    // The last real run of each fix.
    let mut latest: BTreeMap<String, &Value> = BTreeMap::new();
    let (mut real, mut dry, mut running, mut failed) = (0u64, 0u64, 0u64, 0u64);
    for r in rows.iter().filter(|r| r["kind"] == "run") {
        if r["dry_run"] == json!(true) {
            dry += 1;
            continue;
        }
        real += 1;
        latest.insert(r["name"].as_str().unwrap_or("?").to_string(), r);
    }
    for (name, r) in &latest {
        let outcome = r["outcome"].as_str().unwrap_or("?");
        let id = r["run_id"].as_str().unwrap_or("?");
        if good(outcome) || undone.contains_key(id) {
            continue;
        }
        let age = r["time"].as_str().and_then(epoch).map(|t| now - t);
        if outcome == "incomplete" && age.is_some_and(|a| a < warn_age.as_secs() as i64) {
            running += 1;
            continue;
        }
        failed += 1;
        let changed = r["changed"].as_u64().unwrap_or(0);
        if outcome == "incomplete" || changed > 0 {
            raise(
                Level::Critical,
                format!(
                    "the last run of {name} ({id}) is {outcome} with {} change(s) in place, not rolled back; `defops-wasm rollback {id}`",
                    if outcome == "incomplete" {
                        "some".to_string()
                    } else {
                        changed.to_string()
                    }
                ),
                &mut level,
            );
        } else {
            raise(
                Level::Warning,
                format!("the last run of {name} ({id}) {outcome}; nothing was changed"),
                &mut level,
            );
        }
    }
    for (of, (id, why)) in &drifted {
        // Said as it was then: what held it back may be dealt with since.
        let because = match why.as_str() {
            "later-runs" => "a later run on the same paths was not rolled back",
            "uncounted-runs" => "runs in the state directory were not counted",
            "unverified-runs" => "journals in the state directory failed verification",
            "order-unknown" => "the order of the runs could not be told",
            "leads-out" => "what it puts back would have led outside the grants",
            _ => "of drift",
        };
        raise(
            Level::Warning,
            format!(
                "the rollback {id} of run {of} was refused because {because}; see `defops-wasm report {id}`, then roll it back again"
            ),
            &mut level,
        );
    }
    for (of, (id, outcome)) in &not_back {
        raise(
            Level::Critical,
            format!(
                "the rollback {id} of run {of} ended {outcome}: the tree is not as it was; see `defops-wasm report {id}`"
            ),
            &mut level,
        );
    }
    let scheduled = crate::schedule::attempts(state);
    let mut scheduled_failed = 0u64;
    for (name, r) in scheduled
        .iter()
        .filter(|(_, r)| !crate::schedule::attempt_ok(r))
    {
        scheduled_failed += 1;
        raise(
            Level::Warning,
            format!(
                "the scheduled fix {name} last ended {}; see `journalctl -u defops-wasm-fix@{name}` and `defops-wasm schedule list`",
                crate::schedule::describe_attempt(Some(r))
            ),
            &mut level,
        );
    }
    let pauses = crate::policy::pauses(state);
    for p in &pauses {
        raise(Level::Warning, crate::policy::describe_pause(p), &mut level);
    }
    problems.sort_by_key(|p| std::cmp::Reverse(p.0));
    let perf = vec![
        ("runs".to_string(), real),
        ("dry_runs".to_string(), dry),
        ("failed".to_string(), failed),
        ("running".to_string(), running),
        ("bad_journals".to_string(), bad_journals),
        ("drifted_rollbacks".to_string(), drifted.len() as u64),
        ("paused".to_string(), u64::from(!pauses.is_empty())),
        ("scheduled".to_string(), scheduled.len() as u64),
        ("scheduled_failed".to_string(), scheduled_failed),
    ];
    Ok((level, problems.into_iter().map(|(_, p)| p).collect(), perf))
}
