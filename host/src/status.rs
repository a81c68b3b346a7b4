//! `defops-wasm pause|resume|status`: the off-switch and a look at the
//! guards, the last runs and the last attempt of each scheduled fix.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Value, json};

use crate::config::Config;
use crate::exit::Exit;
use crate::grants::Grants;
use crate::output::Printer;
use crate::policy::{self, Paused, Scope};
use crate::run::Stop;

fn state_error(state: &Path, e: impl std::fmt::Display) -> Stop {
    Stop::new(
        Exit::Usage,
        format!(
            "cannot use the state directory {}: {e}; check its permissions or pass --state-dir",
            state.display()
        ),
    )
}

fn scope(fix: Option<&str>) -> Result<Scope, Stop> {
    Scope::parse(fix).map_err(|e| Stop::new(Exit::Usage, e))
}

/// `pause [--reason TEXT] [FIX]`.
pub fn pause(
    state: &Path,
    fix: Option<&str>,
    reason: Option<&str>,
    out: &Printer,
) -> Result<Exit, Stop> {
    let scope = scope(fix)?;
    let empty = Grants::open(&[]).map_err(|e| Stop::new(Exit::Usage, e))?;
    let state = crate::state_dir::prepare(state, &empty).map_err(|e| Stop::new(Exit::Usage, e))?;
    let reason = reason.unwrap_or("(no reason given)");
    let done = policy::pause(&state, &scope, reason).map_err(|e| state_error(&state, e))?;
    let (already, record) = match done {
        Paused::Now(r) => (false, r),
        Paused::Already(r) => (true, r),
    };
    if out.is_json() {
        out.raw(&json!({"type": "pause", "already": already, "pause": record}));
    } else if already {
        out.note(&format!(
            "already paused: {}",
            policy::describe_pause(&record)
        ));
    } else {
        out.note(&format!(
            "paused {}: real runs refuse to start and running ones stop; `defops-wasm resume{}` lifts it",
            scope.describe(),
            fix.map(|f| format!(" {f}")).unwrap_or_default()
        ));
    }
    Ok(Exit::Success)
}

/// `resume [FIX]`.
pub fn resume(state: &Path, fix: Option<&str>, out: &Printer) -> Result<Exit, Stop> {
    let scope = scope(fix)?;
    let state = &crate::state_dir::prepare(state, &Grants::default())
        .map_err(|e| Stop::new(Exit::Usage, e))?;
    let lifted = policy::resume(state, &scope).map_err(|e| state_error(state, e))?;
    let left = policy::pauses(state);
    if out.is_json() {
        out.raw(&json!({"type": "resume", "resumed": lifted, "still_paused": left}));
        return Ok(Exit::Success);
    }
    match &lifted {
        Some(p) => out.note(&format!("resumed: {}", policy::describe_pause(p))),
        None => out.note(&format!("{} was not paused", scope.describe())),
    }
    for p in &left {
        out.note(&format!("still paused: {}", policy::describe_pause(p)));
    }
    Ok(Exit::Success)
}

/// `status`: paused or not, the window now, the last run of each fix.
pub fn status(state: &Path, config: &Config, last: usize, out: &Printer) -> Result<Exit, Stop> {
    let pauses = policy::pauses(state);
    let window = config
        .window
        .as_ref()
        .map(|w| (w.zone().to_string(), w.at(jiff::Timestamp::now())));
    let ids = match crate::journal::list(state) {
        Ok(ids) => ids,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(state_error(state, e)),
    };
    // The newest real run and the newest dry-run of each fix.
    let mut fixes: BTreeMap<String, (Option<Value>, Option<Value>)> = BTreeMap::new();
    for id in ids.iter().rev().take(last) {
        let row = crate::history::row(state, id);
        let name = match row["kind"].as_str() {
            Some("rollback") => "(rollbacks)".to_string(),
            _ => row["name"].as_str().unwrap_or("?").to_string(),
        };
        let slot = fixes.entry(name).or_default();
        let which = match row["dry_run"] == json!(true) {
            true => &mut slot.1,
            false => &mut slot.0,
        };
        if which.is_none() {
            *which = Some(row);
        }
    }
    let dry = config.dry_run_first;
    let scheduled = crate::schedule::attempts(state);
    let report = json!({
        "type": "status",
        "paused": !pauses.is_empty(),
        "pauses": pauses,
        "window": window.as_ref().map(|(zone, now)| json!({"time_zone": zone, "now": now})),
        "dry_run_first": {"required": dry.required, "max_age_secs": dry.max_age.as_secs()},
        "config": config.path.as_ref().map(|p| p.display().to_string()),
        "fixes": fixes.iter().map(|(name, (real, dry))| json!({"fix": name, "last_real": real, "last_dry_run": dry})).collect::<Vec<_>>(),
        "scheduled": scheduled.values().collect::<Vec<_>>(),
        "not_counted": crate::journal::not_own(state),
    });
    if out.is_json() {
        out.raw(&report);
        return Ok(Exit::Success);
    }
    if let Some(ids) = report["not_counted"].as_array().filter(|a| !a.is_empty()) {
        out.note(&format!(
            "not counted: {} run(s) under runs/ that are not this user's or root's alone (owner, mode, or a second name); `defops-wasm check` names them",
            ids.len()
        ));
    }
    match pauses.is_empty() {
        true => out.note("paused:   no"),
        false => {
            for p in &pauses {
                out.note(&format!("paused:   {}", policy::describe_pause(p)));
            }
        }
    }
    match &window {
        None => out.note("window:   none configured (real runs may start at any time)"),
        Some((_, now)) => out.note(&format!(
            "window:   {} ({}); now {}{}",
            if now.open { "open" } else { "closed" },
            now.why,
            now.local,
            now.until
                .as_ref()
                .map(|u| format!("; {} {u}", if now.open { "closes" } else { "opens" }))
                .unwrap_or_default()
        )),
    }
    out.note(&match dry.required {
        true => format!(
            "dry-run first: required, within {}",
            crate::sandbox::humantime(dry.max_age)
        ),
        false => "dry-run first: not required".into(),
    });
    for (name, last) in &scheduled {
        out.note(&format!(
            "scheduled: {name} ({}): {}",
            last["mode"].as_str().unwrap_or("?"),
            crate::schedule::describe_attempt(Some(last))
        ));
    }
    if fixes.is_empty() {
        out.note("runs:     none");
    }
    for (name, (real, dry)) in &fixes {
        let brief = |r: &Option<Value>| match r {
            Some(r) => format!(
                "{} {}{}",
                crate::escape::line(r["run_id"].as_str().unwrap_or("?")),
                crate::escape::line(r["outcome"].as_str().unwrap_or("?")),
                if r["intact"] == json!(true) {
                    ""
                } else {
                    " [NOT INTACT]"
                }
            ),
            None => "-".into(),
        };
        out.note(&format!(
            "{:<20} real: {:<40} dry-run: {}",
            crate::escape::line(name),
            brief(real),
            brief(dry)
        ));
        // The fix the newest of the two ran, as every command names it.
        let newest = [real, dry]
            .into_iter()
            .flatten()
            .max_by(|a, b| a["run_id"].as_str().cmp(&b["run_id"].as_str()));
        if let Some(id) = newest.and_then(|r| r["fix_id"].as_str()) {
            out.note(&format!("{:<20} {id}", ""));
        }
    }
    Ok(Exit::Success)
}
