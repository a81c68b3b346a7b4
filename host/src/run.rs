//! `defops-wasm run`: load a fix, run `check` and `apply` against the
//! overlay, show the plan, and commit it unless this is a dry-run.
//!
//! Data flows one way: grants → sandbox → host calls → overlay → plan →
//! commit.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use serde_json::json;

use crate::commit::{self, CommitError};
use crate::exit::Exit;
use crate::grants::{Access, Grants};
use crate::journal::{Journal, Objects};
use crate::output::Printer;
use crate::overlay::{Overlay, OverlayLimits};
use crate::plan::Plan;
use crate::policy::RunLock;
use crate::sandbox::{GuestEnd, Limiter, Limits, OutputBudget, Sandbox};
use crate::world::RunState;

/// What the operator asked for.
pub struct RunRequest {
    pub fix: PathBuf,
    pub grants: Vec<(PathBuf, Access)>,
    /// `--allow-log` globs.
    pub logs: Vec<String>,
    pub params: BTreeMap<String, String>,
    pub dry_run: bool,
    /// Run `apply` even when `check` says not needed (dry-runs only).
    pub flip_precondition: bool,
    pub limits: Limits,
    pub state_dir: PathBuf,
}

/// Ends a run early with a message and an exit code.
#[derive(Debug)]
pub struct Stop {
    pub exit: Exit,
    pub message: String,
}

impl Stop {
    pub fn new(exit: Exit, message: impl std::fmt::Display) -> Stop {
        Stop {
            exit,
            message: message.to_string(),
        }
    }
}

/// A new run id: UTC time and a random suffix, sortable.
pub fn new_run_id() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let mut h = blake3::Hasher::new();
    h.update(&now.as_nanos().to_le_bytes());
    h.update(&std::process::id().to_le_bytes());
    let rand = &h.finalize().to_hex()[..6];
    format!("{}-{rand}", utc_stamp(now.as_secs() as i64))
}

/// `YYYYMMDDTHHMMSSZ` for seconds since the epoch.
pub fn utc_stamp(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

pub fn hostname() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

/// `YYYY-MM-DDTHH:MM:SSZ` for seconds since the epoch.
pub fn rfc3339(secs: i64) -> String {
    let s = utc_stamp(secs);
    format!(
        "{}-{}-{}T{}:{}:{}Z",
        &s[0..4],
        &s[4..6],
        &s[6..8],
        &s[9..11],
        &s[11..13],
        &s[13..15]
    )
}

/// Seconds since the epoch, now.
pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Who runs this: the login name (and the sudo caller), with the uid.
pub fn user() -> serde_json::Value {
    let name = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_default();
    let mut v = json!({"name": name, "uid": rustix::process::geteuid().as_raw()});
    if let Ok(sudo) = std::env::var("SUDO_USER") {
        v["sudo_user"] = json!(sudo);
    }
    v
}

fn journal_error(e: impl std::fmt::Display) -> Stop {
    Stop::new(
        Exit::Usage,
        format!(
            "cannot write the journal: {e}; nothing was changed. Check the state directory (--state-dir)"
        ),
    )
}

/// Runs a fix; prints as it goes; returns the exit status.
pub fn run(req: RunRequest, out: &Printer) -> Result<Exit, Stop> {
    let started = Instant::now();
    let started_at = now_secs();
    let run_id = new_run_id();
    let grants = Grants::open(&req.grants).map_err(|e| Stop::new(Exit::Usage, e))?;
    let logs = crate::logs::LogGrants::open(&req.logs)
        .map_err(|e| Stop::new(Exit::Usage, format!("--allow-log: {e}")))?;
    let state_dir = crate::state_dir::prepare(&req.state_dir, &grants)
        .map_err(|e| Stop::new(Exit::Usage, e))?;
    let grants = Arc::new(grants);

    let sandbox = Sandbox::new()
        .map_err(|e| Stop::new(Exit::Usage, format!("cannot start wasmtime: {e:#}")))?;
    let loaded = sandbox
        .load(&req.fix, Some(&state_dir.join("cache")))
        .map_err(|e| {
            let exit = match e {
                crate::sandbox::LoadError::Imports { .. } => Exit::Refused,
                _ => Exit::Usage,
            };
            Stop::new(exit, e)
        })?;
    let loaded_in = started.elapsed();
    // A real run holds the lock from before the fix plans until the commit
    // is done, so two never interleave.
    let _lock = match req.dry_run {
        true => None,
        false => Some(
            RunLock::take(&state_dir, &format!("run {run_id}"))
                .map_err(|e| Stop::new(Exit::Refused, e))?,
        ),
    };

    let mut grants_json: Vec<_> = grants
        .iter()
        .map(|g| json!({"path": g.path, "access": g.access}))
        .collect();
    grants_json.extend(
        logs.globs()
            .into_iter()
            .map(|g| json!({"path": g, "access": "log"})),
    );
    out.start(&json!({
        "type": "start",
        "run_id": run_id,
        "fix": req.fix.display().to_string(),
        "digest": loaded.digest,
        "size": loaded.size,
        "dry_run": req.dry_run,
        "grants": grants_json,
        "params": req.params,
        "compile_cache": if loaded.cache_hit { "hit" } else { "miss" },
    }));

    let output = OutputBudget::new(req.limits.max_output);
    let mut wasi = wasmtime_wasi::WasiCtx::builder();
    wasi.stdout(output.clone()).stderr(output.clone());
    let sink = out.message_sink();
    let state = RunState {
        wasi: wasi.build(),
        table: wasmtime::component::ResourceTable::new(),
        overlay: Overlay::new(
            grants.clone(),
            OverlayLimits {
                max_read: req.limits.max_memory,
                max_plan_bytes: req.limits.max_memory.saturating_mul(4),
            },
        ),
        params: req.params.clone(),
        dry_run: req.dry_run,
        hostname: hostname(),
        messages: Vec::new(),
        denials: Vec::new(),
        limiter: Limiter::new(req.limits.max_memory),
        output: output.clone(),
        on_message: sink,
        logs: Arc::new(logs),
        log_reads: Vec::new(),
        deadline: started + req.limits.deadline,
        second_pass: None,
        flip_precondition: req.flip_precondition,
        flipped: None,
    };
    let (state, end) = sandbox.execute(&loaded, state, &req.limits);
    let ran_in = started.elapsed() - loaded_in;
    let fix_output = output.take();
    out.fix_output(&fix_output);
    for d in &state.denials {
        out.denial(d);
    }
    let denied = state.denials.len();

    // The journal: what ran, what it said, what it planned or changed.
    let mut journal = Journal::create(&state_dir, &run_id).map_err(journal_error)?;
    let objects = Objects::open(&state_dir).map_err(journal_error)?;
    let mut records = vec![json!({
        "type": "header",
        "format": crate::journal::FORMAT,
        "kind": "run",
        "run_id": run_id,
        "time": rfc3339(started_at),
        "fix": {
            "path": req.fix.display().to_string(),
            "name": req.fix.file_stem().map(|n| n.to_string_lossy().into_owned()),
            "digest": loaded.digest,
            "size": loaded.size,
        },
        "grants": grants_json,
        "params": req.params,
        "dry_run": req.dry_run,
        "host": hostname(),
        "user": user(),
        "version": env!("CARGO_PKG_VERSION"),
        "hash": "blake3",
    })];
    records.extend(
        state
            .messages
            .iter()
            .map(|m| json!({"type": "message", "level": m.level, "text": m.text})),
    );
    records.extend(
        state
            .denials
            .iter()
            .map(|d| json!({"type": "denied", "call": d.call, "path": d.path, "reason": d.reason})),
    );
    for read in &state.log_reads {
        out.log_read(read);
        let mut r = read.clone();
        r["type"] = json!("logs");
        records.push(r);
    }
    if !fix_output.is_empty() {
        records.push(json!({"type": "output", "text": String::from_utf8_lossy(&fix_output)}));
    }
    for r in records {
        journal.append(r).map_err(journal_error)?;
    }
    let second_pass = state.second_pass;
    let flipped = state.flipped;
    let plan = state.overlay.into_plan();

    let mut summary = json!({
        "type": "summary",
        "run_id": run_id,
        "dry_run": req.dry_run,
        "digest": loaded.digest,
        "changed": 0,
        "unchanged": plan.unchanged,
        "denied": denied,
        "timings_ms": {
            "load": loaded_in.as_secs_f64() * 1e3,
            "run": ran_in.as_secs_f64() * 1e3,
        },
    });

    let exit = match end {
        GuestEnd::NotNeeded(why) => {
            summary["outcome"] = json!("not-needed");
            summary["check"] = json!({"applies": false, "reason": why});
            Exit::Success
        }
        GuestEnd::Failed { phase, message } => {
            let exit = if denied > 0 {
                Exit::Refused
            } else {
                Exit::FixFailed
            };
            summary["outcome"] = json!(if denied > 0 { "denied" } else { "failed" });
            summary["phase"] = json!(phase.to_string());
            summary["error"] = json!(format!("{phase} failed: {message}"));
            exit
        }
        GuestEnd::Trapped { phase, message } => {
            summary["outcome"] = json!("crashed");
            summary["phase"] = json!(phase.to_string());
            summary["error"] = json!(message);
            Exit::FixFailed
        }
        GuestEnd::Limit { phase, limit } => {
            summary["outcome"] = json!("limit");
            summary["phase"] = json!(phase.to_string());
            summary["error"] = json!(limit.to_string());
            Exit::Limit
        }
        GuestEnd::Host(message) => {
            summary["outcome"] = json!("error");
            summary["error"] = json!(message);
            Exit::Usage
        }
        GuestEnd::Applied { check, result } => {
            let check_json = match &flipped {
                Some(_) => json!({"applies": false, "reason": check, "flipped": true}),
                None => json!({"applies": true, "reason": check}),
            };
            summary["check"] = check_json.clone();
            summary["result"] = json!(result);
            summary["changed"] = json!(plan.effects.len());
            let mut check_record = check_json;
            check_record["type"] = json!("check");
            journal.append(check_record).map_err(journal_error)?;
            out.plan(&plan, req.dry_run);
            if req.dry_run {
                journal_plan(&mut journal, &plan).map_err(journal_error)?;
                let (idempotent, record) = idempotency(second_pass.as_ref());
                out.idempotency(&record);
                journal.append(record.clone()).map_err(journal_error)?;
                summary["idempotent"] = json!(idempotent);
                if !idempotent {
                    summary["idempotency"] = record;
                }
                summary["outcome"] = json!("planned");
                Exit::Success
            } else {
                commit_plan(
                    &grants,
                    &plan,
                    &run_id,
                    &mut journal,
                    &objects,
                    &mut summary,
                )
            }
        }
    };
    if let Some(check) = summary
        .get("check")
        .filter(|c| c["applies"] == json!(false))
    {
        journal
            .append(json!({"type": "check", "applies": false, "reason": check["reason"]}))
            .map_err(journal_error)?;
    }
    summary["exit_code"] = json!(exit.code());
    let mut outcome = json!({
        "type": "outcome",
        "outcome": summary["outcome"],
        "changed": summary["changed"],
        "unchanged": summary["unchanged"],
        "denied": denied,
        "exit_code": exit.code(),
        "time": rfc3339(now_secs()),
    });
    for key in ["error", "result", "phase"] {
        if let Some(v) = summary.get(key) {
            outcome[key] = v.clone();
        }
    }
    journal.append(outcome).map_err(journal_error)?;
    // A dry-run changed nothing: its record need not cost a sync.
    if !req.dry_run {
        journal.sync().map_err(journal_error)?;
    }
    summary["head"] = json!(journal.head());
    summary["journal"] = json!(journal.path().display().to_string());
    summary["elapsed_ms"] = json!(started.elapsed().as_secs_f64() * 1e3);
    out.summary(&summary);
    Ok(exit)
}

/// Whether a dry-run's fix proved idempotent, and the record saying so.
fn idempotency(second: Option<&crate::sandbox::SecondPass>) -> (bool, serde_json::Value) {
    use crate::sandbox::SecondPass;
    match second {
        Some(SecondPass::Planned(extra)) if extra.is_empty() => {
            (true, json!({"type": "idempotency", "idempotent": true}))
        }
        Some(SecondPass::Planned(extra)) => (
            false,
            json!({
                "type": "idempotency",
                "idempotent": false,
                "why": format!("a second apply over the planned state would change {} more thing(s)", extra.len()),
                "effects": extra,
            }),
        ),
        Some(SecondPass::Failed(why)) => (
            false,
            json!({"type": "idempotency", "idempotent": false, "why": why}),
        ),
        None => (
            false,
            json!({"type": "idempotency", "idempotent": false, "why": "no second apply was made"}),
        ),
    }
}

/// A dry-run's plan, journaled as intents marked planned.
fn journal_plan(journal: &mut Journal, plan: &Plan) -> std::io::Result<()> {
    let uid = rustix::process::geteuid().as_raw();
    let gid = rustix::process::getegid().as_raw();
    for (n, effect) in plan.effects.iter().enumerate() {
        let mut rec = serde_json::to_value(effect).unwrap_or_default();
        rec["type"] = json!("intent");
        rec["n"] = json!(n);
        rec["planned"] = json!(true);
        let (after, after_to) = effect.planned_after(uid, gid);
        rec["after"] = json!(after);
        if let Some(a) = after_to {
            rec["after_to"] = json!(a);
        }
        journal.append(rec)?;
    }
    Ok(())
}

fn commit_plan(
    grants: &Grants,
    plan: &Plan,
    run_id: &str,
    journal: &mut Journal,
    objects: &Objects,
    summary: &mut serde_json::Value,
) -> Exit {
    match commit::commit(grants, plan, run_id, journal, Some(objects)) {
        Ok(done) => {
            summary["outcome"] = json!("applied");
            summary["syncs"] = json!(done.syncs);
            Exit::Success
        }
        Err(e) => {
            let applied = e.applied();
            summary["changed"] = json!(applied);
            summary["error"] = json!(format!(
                "commit stopped: {e} ({applied} of {} effects were applied before it; `defops-wasm rollback {run_id}` undoes them)",
                plan.effects.len()
            ));
            match e {
                CommitError::Drift { .. } => {
                    summary["outcome"] = json!("refused");
                    Exit::Refused
                }
                CommitError::Io { .. } | CommitError::Journal(_) => {
                    summary["outcome"] = json!("error");
                    Exit::Usage
                }
            }
        }
    }
}
