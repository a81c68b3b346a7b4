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
use crate::config::Config;
use crate::exit::Exit;
use crate::grants::{Access, Grants};
use crate::journal::{Journal, Objects};
use crate::manifest::Manifest;
use crate::output::Printer;
use crate::overlay::{Overlay, OverlayLimits};
use crate::plan::{Op, Plan, State};
use crate::policy::RunLock;
use crate::sandbox::{GuestEnd, Limiter, Limits, OutputBudget, Sandbox};
use crate::world::RunState;

mod dry_run_first;

pub use dry_run_first::quote;
use dry_run_first::{Reviewed, dry_run_gate};

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
    /// Whether the operator named the state directory (then the suggested
    /// dry-run command names it too).
    pub state_dir_given: bool,
    /// `--config`.
    pub config: Option<PathBuf>,
    /// `--outside-window --on-call NAME`: who watches a run outside the
    /// change window.
    pub on_call: Option<String>,
    /// `--no-dry-run-first --reason TEXT`.
    pub no_dry_run_first: Option<String>,
    /// `--require-approval`.
    pub require_approval: bool,
    /// `--allowed-signers FILE`.
    pub allowed_signers: Option<PathBuf>,
    /// `--signature FILE` (default: FIX.wasm.sig).
    pub signature: Option<PathBuf>,
    /// `--save-plan FILE` (dry-runs): where to save the plan.
    pub save_plan: Option<PathBuf>,
    /// `--plan FILE` (real runs): the saved plan this run must make.
    pub plan: Option<PathBuf>,
    /// `--accept-new-plan --reason TEXT`: commit a plan that differs from
    /// the dry-run's.
    pub accept_new_plan: Option<String>,
    /// The scheduled instance that started this run (`schedule exec`),
    /// recorded in the journal header.
    pub scheduled: Option<String>,
    /// Which `schedule add` of that name (its generation).
    pub scheduled_generation: Option<String>,
    /// The SHA-256 the fix must have (a promoted schedule's): checked on
    /// the bytes this run reads, so a fix swapped after the promotion was
    /// checked is refused, not run.
    pub expect_sha256: Option<String>,
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
    // Not a digest: std's randomly keyed hasher, over the time and the pid.
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(now.as_nanos());
    h.write_u32(std::process::id());
    // Milliseconds first, so ids sort in time order within a second too.
    let rand = format!("{:016x}", h.finish());
    format!(
        "{}-{:03}{}",
        utc_stamp(now.as_secs() as i64),
        now.subsec_millis(),
        &rand[..3]
    )
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
    let uid = rustix::process::geteuid().as_raw();
    let name = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .ok()
        .filter(|n| !n.is_empty())
        .or_else(|| passwd_name(uid))
        .unwrap_or_default();
    let mut v = json!({"name": name, "uid": uid});
    if let Ok(sudo) = std::env::var("SUDO_USER") {
        v["sudo_user"] = json!(sudo);
    }
    v
}

/// The name of `uid` in /etc/passwd.
fn passwd_name(uid: u32) -> Option<String> {
    let text = std::fs::read_to_string("/etc/passwd").ok()?;
    text.lines().find_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        (f.nth(1)?.parse::<u32>().ok()? == uid).then(|| name.to_string())
    })
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
    run_summarized(req, out).map(|(exit, _)| exit)
}

/// [`run`], also returning the summary it printed (what `schedule exec`
/// decides its next step from).
pub fn run_summarized(req: RunRequest, out: &Printer) -> Result<(Exit, serde_json::Value), Stop> {
    let started = Instant::now();
    let mut phases = crate::phases::Phases::since(crate::phases::process_start());
    phases.lap("parse");
    let started_at = now_secs();
    let run_id = new_run_id();
    // The configuration first: in FIPS mode the crypto module is checked
    // before anything else is read.
    let config = Config::load(req.config.as_deref()).map_err(|e| Stop::new(Exit::Usage, e))?;
    config
        .apply_crypto()
        .map_err(|e| Stop::new(Exit::Usage, e))?;
    phases.lap("config");
    let grants = Grants::open(&req.grants).map_err(|e| Stop::new(Exit::Usage, e))?;
    let logs = crate::logs::LogGrants::open(&req.logs)
        .map_err(|e| Stop::new(Exit::Usage, format!("--allow-log: {e}")))?;
    // The fix is read, and what its manifest says of the parameters
    // checked, before anything is written: a missing or misspelt --param
    // leaves no state directory and no compiled fix.
    let fix = crate::sandbox::FixFile::read(&req.fix).map_err(|e| Stop::new(Exit::Usage, e))?;
    if let Some(expected) = &req.expect_sha256 {
        fix.expect_sha256(expected)
            .map_err(|e| Stop::new(Exit::Refused, e))?;
    }
    let manifest = check_manifest(&req, &fix)?;
    let state_dir = crate::state_dir::prepare(&req.state_dir, &grants)
        .map_err(|e| Stop::new(Exit::Usage, e))?;
    crate::state_dir::check_log_grants(&state_dir, &logs).map_err(|e| Stop::new(Exit::Usage, e))?;
    // The grants within what it declares: after what the state directory
    // refuses (the graver), before the fix is compiled.
    if let Some(m) = &manifest {
        check_manifest_grants(&req, m, &grants)?;
    }
    // A saved plan is read and checked, and where one will be saved is
    // checked, before the fix runs.
    let save_target = req
        .save_plan
        .as_deref()
        .map(|p| crate::binding::check_save_path(p, &grants))
        .transpose()
        .map_err(|e| Stop::new(Exit::Usage, e))?;
    let saved_plan = req
        .plan
        .as_ref()
        .map(|p| crate::binding::PlanFile::read(p).map(|f| Reviewed::from_file(p.clone(), f)))
        .transpose()
        .map_err(|e| Stop::new(e.exit(), e))?;
    phases.lap("grants");
    let grants = Arc::new(grants);
    let names = crate::policy::fix_names(&req.fix, manifest.as_ref().map(|m| m.name.as_str()));
    // The guards a real run passes before anything is loaded: the
    // off-switch, then the change window.
    let mut policy = serde_json::Map::new();
    if !req.dry_run {
        refuse_if_paused(&state_dir, &names)?;
        policy.insert(
            "window".into(),
            window_gate(&config, req.on_call.as_deref())?,
        );
    }

    let fix_name = manifest
        .as_ref()
        .map(|m| m.name.clone())
        .unwrap_or_else(|| names[0].clone());
    // The approval and the dry-run before it are checked on the bytes read,
    // before they are compiled: a refused run compiles nothing.
    let approval = match req.dry_run {
        true => None,
        false => check_approval(&req, &config, fix.bytes())?,
    };

    let mut grants_json: Vec<_> = grants
        .iter()
        .map(|g| json!({"path": g.path, "access": g.access}))
        .collect();
    grants_json.extend(logs.globs().into_iter().map(|(g, resolved)| {
        let mut g = json!({"path": g, "access": "log"});
        if let Some(resolved) = resolved {
            g["resolved"] = json!(resolved);
        }
        g
    }));
    let dry_run_key =
        crate::policy::dry_run_key(fix.digest(), &grants_json, &req.params, &hostname());
    let made_for =
        crate::binding::MadeFor::new(fix.digest(), &grants_json, &req.params, &hostname());
    if let (Some(saved), Some(path)) = (&saved_plan, &req.plan) {
        saved
            .file
            .check_made_for(path, crate::digest::current(), &made_for)
            .map_err(|e| Stop::new(e.exit(), e))?;
    }
    // The plan this run is held to, or why there is none.
    let mut reviewed: Result<Reviewed, String> = Err(String::new());
    if !req.dry_run {
        let (record, found) = dry_run_gate(
            &req,
            &config,
            &state_dir,
            &dry_run_key,
            &fix_name,
            &|| crate::digest::fix_id_of(&crate::digest::Alg::Sha256.hex(fix.bytes())),
            saved_plan,
        )?;
        policy.insert("dry_run_first".into(), record);
        reviewed = found;
    }
    phases.lap("guards");
    let sandbox = Sandbox::new()
        .map_err(|e| Stop::new(Exit::Usage, format!("cannot start wasmtime: {e:#}")))?;
    phases.lap("engine");
    let loaded = sandbox
        .load(fix, Some(&state_dir.join("cache")))
        .map_err(|e| {
            let exit = match e {
                crate::sandbox::LoadError::Imports { .. } => Exit::Refused,
                _ => Exit::Usage,
            };
            Stop::new(exit, e)
        })?;
    let loaded_in = started.elapsed();
    phases.lap("load fix");
    tracing::info!(fix = %fix_name, dry_run = req.dry_run, "loaded");
    let fix_sha256 = loaded.sha256();
    // A real run holds the lock from before the fix plans until the commit
    // is done, so two never interleave.
    let lock = match req.dry_run {
        true => None,
        false => Some(
            RunLock::take(&state_dir, &format!("run {run_id}"))
                .map_err(|e| Stop::new(Exit::Refused, e))?,
        ),
    };

    // From here a pause stops the run: host calls fail, the guest is
    // dropped, a commit stops between two changes.
    let abort = crate::policy::Abort::default();
    let _watch = (!req.dry_run)
        .then(|| crate::policy::watch_pauses(&state_dir, &names, abort.clone(), sandbox.waker()));
    out.start(&json!({
        "type": "start",
        "run_id": run_id,
        "fix": req.fix.display().to_string(),
        "fix_id": crate::digest::fix_id_of(&fix_sha256),
        "digest": loaded.digest,
        "hash_alg": crate::digest::current().name(),
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
    // From here, as the sandbox's own timer: loading the fix does not count.
    let until = crate::policy::Until::new(req.limits.deadline, abort.clone());
    let state = RunState {
        wasi: wasi.build(),
        table: wasmtime::component::ResourceTable::new(),
        overlay: Overlay::new(
            grants.clone(),
            OverlayLimits {
                max_read: req.limits.max_memory,
                max_plan_bytes: req.limits.max_memory.saturating_mul(4),
            },
        )
        .with_until(until.clone()),
        params: req.params.clone(),
        dry_run: req.dry_run,
        hostname: hostname(),
        messages: Vec::new(),
        denials: Default::default(),
        limiter: Limiter::new(req.limits.max_memory),
        output: output.clone(),
        on_message: sink,
        logs: Arc::new(logs),
        log_reads: Vec::new(),
        until,
        second_pass: None,
        pass: 1,
        second_from: None,
        flip_precondition: req.flip_precondition,
        flipped: None,
        script: loaded.script.clone(),
    };
    phases.lap("guards");
    let (state, end) = sandbox.execute(&loaded, state, &req.limits);
    tracing::info!(?end, "the fix returned");
    phases.lap("execute");
    let ran_in = started.elapsed() - loaded_in;
    let fix_output = output.take();
    // What came from a dry-run's idempotency pass (the second `apply`) is
    // marked as such, on the screen, in JSON and in the journal.
    let from = state.second_from.unwrap_or(crate::world::PassStart {
        denials: usize::MAX,
        log_reads: usize::MAX,
        output: usize::MAX,
    });
    let pass_of = |i: usize, start: usize| if i >= start { 2u8 } else { 1 };
    let split = from.output.min(fix_output.len());
    let outputs = [(&fix_output[..split], 1u8), (&fix_output[split..], 2)];
    for (bytes, pass) in outputs {
        out.fix_output(bytes, pass);
    }
    let denials = state.denials.records();
    for (i, d) in denials.iter().enumerate() {
        out.denial(d, pass_of(i, from.denials));
    }
    let denied = state.denials.total();
    let second_pass = state.second_pass;
    // How a Python fix's script was compiled: from the cache, ahead in
    // this run (then kept), or only inside the sandbox (neither).
    let script_code = state.script.as_ref().map(|s| match &s.code_digest {
        Some(digest) => {
            let mut code = json!({
                "digest": digest,
                "from": if s.code.is_empty() { "compiled" } else { "cache" },
            });
            if let Some(why) = &s.not_kept {
                code["not_kept"] = json!(why);
            }
            code
        }
        None => json!({"digest": null, "from": "compiled in check"}),
    });
    let flipped = state.flipped;
    let plan = state.overlay.into_plan();

    let canonical = dry_run_first::canonical_plan(&end, flipped.is_some(), &plan, made_for);
    let binding = (!req.dry_run).then(|| {
        dry_run_first::bind(
            reviewed.as_ref().map_err(String::as_str),
            canonical.as_ref().map(|(c, d)| (c, d.as_str())),
            !plan.effects.is_empty(),
            req.accept_new_plan.as_deref(),
        )
    });
    if let Some(b) = &binding {
        policy.insert("plan".into(), b.record.clone());
    }

    phases.lap("plan");
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
            "name": fix_name,
            "sha256": fix_sha256,
            "manifest": manifest,
            "digest": loaded.digest,
            "size": loaded.size,
            "language": if loaded.script.is_some() { "python" } else { "wasm" },
            // A script is kept whole (it is small), so the report shows
            // exactly what ran.
            "script_object": match &loaded.script {
                Some(_) => Some(objects.put(&loaded.bytes).map_err(journal_error)?),
                None => None,
            },
            "runtime": loaded.runtime.as_ref().map(|r| json!({
                "path": r.path.display().to_string(),
                "digest": r.digest,
                "sha256": r.sha256,
            })),
            "script_code": script_code,
        },
        "grants": grants_json,
        "params": req.params,
        "dry_run": req.dry_run,
        "host": hostname(),
        "user": user(),
        "version": env!("CARGO_PKG_VERSION"),
        "hash_alg": crate::digest::current().name(),
        "crypto": crate::crypto::describe(),
        "policy": policy,
        "approval": approval,
        "scheduled": req.scheduled,
        "schedule_generation": req.scheduled_generation,
    })];
    if let Some(lock) = &lock {
        records[0]["sequence"] = json!(lock.sequence());
    }
    records.extend(
        state
            .messages
            .iter()
            .map(|m| json!({"type": "message", "level": m.level, "text": m.text, "pass": m.pass})),
    );
    records.extend(denials.iter().enumerate().map(|(i, d)| {
        json!({"type": "denied", "call": d.call, "path": d.path, "reason": d.reason, "pass": pass_of(i, from.denials)})
    }));
    for (i, read) in state.log_reads.iter().enumerate() {
        let mut r = read.clone();
        r["pass"] = json!(pass_of(i, from.log_reads));
        out.log_read(&r);
        r["type"] = json!("logs");
        records.push(r);
    }
    for (bytes, pass) in outputs {
        if !bytes.is_empty() {
            records.push(
                json!({"type": "output", "text": String::from_utf8_lossy(bytes), "pass": pass}),
            );
        }
    }
    if let Some((c, digest)) = &canonical {
        records.push(json!({"type": "plan", "digest": digest, "effects": c.effects.len()}));
    }
    if let Some(b) = binding.as_ref().filter(|b| !b.differences.is_empty()) {
        // A run with nothing to write (the reviewed plan was applied
        // already) journals the difference without alarming anyone.
        if b.record["nothing_to_commit"] != json!(true) {
            out.plan_differences(&b.title, &b.differences);
        }
        records.extend(
            b.differences
                .iter()
                .take(crate::binding::MAX_SHOWN)
                .map(|d| d.to_json()),
        );
    }
    for r in records {
        journal.append(r).map_err(journal_error)?;
    }
    let refusal = binding.as_ref().and_then(|b| b.refusal.clone());

    let mut summary = json!({
        "type": "summary",
        "run_id": run_id,
        "dry_run": req.dry_run,
        "scheduled": req.scheduled,
        "fix_id": crate::digest::fix_id_of(&fix_sha256),
        "digest": loaded.digest,
        "changed": 0,
        "unchanged": plan.unchanged,
        "denied": denied,
    });
    phases.lap("journal");

    if let Some((_, digest)) = &canonical {
        summary["plan_digest"] = json!(digest);
    }
    let exit = match end {
        GuestEnd::NotNeeded(why) => {
            summary["outcome"] = json!("not-needed");
            summary["check"] = json!({"applies": false, "reason": why});
            match &refusal {
                None => Exit::Success,
                Some(r) => {
                    summary["outcome"] = json!("refused");
                    summary["error"] = json!(r);
                    Exit::Refused
                }
            }
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
        GuestEnd::Aborted { phase, reason } => {
            summary["outcome"] = json!("aborted");
            summary["phase"] = json!(phase.to_string());
            summary["error"] = json!(format!("aborted in {phase}: {reason}; nothing was changed"));
            Exit::Paused
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
            out.plan(&plan, req.dry_run || refusal.is_some());
            if let Some(r) = &refusal {
                // Nothing was committed: what was planned is not a change.
                summary["planned"] = json!(plan.effects.len());
                summary["changed"] = json!(0);
                summary["outcome"] = json!("refused");
                summary["error"] = json!(r);
                Exit::Refused
            } else if req.dry_run {
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
                    (&objects, config.keep_replaced),
                    &abort,
                    &mut summary,
                )
            }
        }
    };
    phases.lap(if req.dry_run { "journal" } else { "commit" });
    if let Some(check) = summary
        .get("check")
        .filter(|c| c["applies"] == json!(false))
    {
        journal
            .append(json!({"type": "check", "applies": false, "reason": check["reason"]}))
            .map_err(journal_error)?;
    }
    // A successful dry-run's plan: saved when asked, and recorded below for
    // the real run that follows.
    let mut exit = exit;
    let reviewed_plan = match (&canonical, req.dry_run && exit == Exit::Success) {
        (Some((c, _)), true) => {
            let made = crate::binding::Made {
                dry_run: run_id.clone(),
                time: rfc3339(started_at),
                fix: req.fix.display().to_string(),
                fix_name: fix_name.clone(),
                outcome: summary["outcome"].as_str().unwrap_or_default().to_string(),
                idempotent: summary["idempotent"].as_bool(),
            };
            dry_run_first::save_plan(c, made, save_target.as_deref(), &mut summary, &mut exit)
        }
        _ => None,
    };
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
    } else if let (Some(file), Exit::Success) = (&reviewed_plan, exit) {
        // What a real run of the same must follow, and the plan it is held to.
        crate::policy::record_dry_run(&state_dir, &dry_run_key, &run_id, started_at, file)
            .map_err(|e| {
                Stop::new(
                    Exit::Usage,
                    format!(
                        "cannot record the dry-run in {}: {e}; nothing was changed. Check the state directory (--state-dir), then run the dry-run again",
                        state_dir.join("dry-runs").display()
                    ),
                )
            })?;
    }
    phases.lap("record");
    summary["head"] = json!(journal.head());
    summary["journal"] = json!(journal.path().display().to_string());
    summary["elapsed_ms"] = json!(started.elapsed().as_secs_f64() * 1e3);
    let mut timings = phases.to_json();
    // Kept from earlier summaries: the time until the fix was loaded (all
    // the phases up to `load fix`) and the sandbox's run.
    timings["load"] = json!(loaded_in.as_secs_f64() * 1e3);
    timings["run"] = json!(ran_in.as_secs_f64() * 1e3);
    summary["timings_ms"] = timings;
    out.summary(&summary);
    phases.lap("output");
    phases.log("run");
    crate::keep_until_exit((sandbox, loaded));
    Ok((exit, summary))
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
        if let Some(d) = plan.diff(n, true) {
            rec["diff"] = json!(d);
        }
        journal.append_batched(rec)?;
    }
    Ok(())
}

fn commit_plan(
    grants: &Grants,
    plan: &Plan,
    run_id: &str,
    journal: &mut Journal,
    (objects, keep_replaced): (&Objects, bool),
    abort: &crate::policy::Abort,
    summary: &mut serde_json::Value,
) -> Exit {
    // With `keep-replaced`, the files the run replaces are kept for its
    // rollback, when they can be (see `Kept`); without, the rollback
    // writes them back from the objects.
    let replaces = keep_replaced
        && plan
            .effects
            .iter()
            .any(|e| matches!(e.op, Op::Write { .. }) && matches!(e.before, State::File { .. }));
    let kept = match replaces {
        true => commit::Kept::make(journal.dir())
            .inspect_err(|e| tracing::debug!("the replaced files are not kept: {e}"))
            .ok(),
        false => None,
    };
    match commit::commit(
        grants,
        plan,
        run_id,
        journal,
        Some(objects),
        kept.as_ref(),
        Some(abort),
    ) {
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
                CommitError::Aborted { .. } => {
                    summary["outcome"] = json!("aborted");
                    Exit::Paused
                }
                CommitError::Io { .. } | CommitError::Journal(_) => {
                    summary["outcome"] = json!("error");
                    Exit::Usage
                }
            }
        }
    }
}

/// The change window for a real run: open, or overridden by someone on
/// call; the record for the journal header.
fn window_gate(config: &Config, on_call: Option<&str>) -> Result<serde_json::Value, Stop> {
    let Some(window) = &config.window else {
        return Ok(json!({"configured": false}));
    };
    let now = window.at(jiff::Timestamp::now());
    let mut record =
        json!({"configured": true, "open": now.open, "why": now.why, "local": now.local});
    if now.open {
        return Ok(record);
    }
    match on_call {
        Some(name) => {
            record["override"] = json!({"on_call": name});
            Ok(record)
        }
        None => Err(Stop::new(
            Exit::Refused,
            format!(
                "refused: outside the change window ({}; now {}{}). Dry-runs are allowed; if someone watches this run, pass --outside-window --on-call NAME",
                now.why,
                now.local,
                now.until
                    .map(|u| format!("; it opens {u}"))
                    .unwrap_or_default()
            ),
        )),
    }
}

/// Refuses a real run while a pause covers `names`.
fn refuse_if_paused(state: &std::path::Path, names: &[String]) -> Result<(), Stop> {
    match crate::policy::paused_for(state, names) {
        None => Ok(()),
        Some(p) => Err(Stop::new(
            Exit::Paused,
            format!(
                "refused: {}; {} lifts it (dry-runs are still allowed)",
                crate::policy::describe_pause(&p),
                crate::policy::resume_command(&p)
            ),
        )),
    }
}

/// The embedded manifest, checked against the request's params: the
/// required given, none it does not declare.
fn check_manifest(
    req: &RunRequest,
    fix_file: &crate::sandbox::FixFile,
) -> Result<Option<Manifest>, Stop> {
    let fix = req.fix.display();
    let text = match fix_file.manifest_text() {
        None => return Ok(None),
        Some(Err(e)) => return Err(Stop::new(Exit::Usage, format!("{fix}: {e}"))),
        Some(Ok(t)) => t,
    };
    let m = Manifest::parse(&text).map_err(|e| {
        Stop::new(
            Exit::Usage,
            match fix_file.is_script() {
                true => format!("{fix}: the [tool.defops] metadata is invalid: {e}; fix the `# /// script` block"),
                false => format!("{fix}: the embedded manifest is invalid: {e}; rebuild the fix"),
            },
        )
    })?;
    refuse_undeclared_params(&m, &req.params, &fix.to_string())?;
    let missing = m.missing_params(&req.params);
    if !missing.is_empty() {
        return Err(Stop::new(
            Exit::Usage,
            format!(
                "{} needs {}; see `defops-wasm inspect {fix}`",
                m.name,
                missing
                    .iter()
                    .map(|p| format!("--param {p}=..."))
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
        ));
    }
    Ok(Some(m))
}

/// Every grant within what the manifest `m` declares.
fn check_manifest_grants(req: &RunRequest, m: &Manifest, grants: &Grants) -> Result<(), Stop> {
    // The grants in the canonical form the sandbox enforces (symlinks and
    // `..` resolved when they were opened), like the manifest's paths.
    let canonical = |access: Access| -> Vec<PathBuf> {
        grants
            .iter()
            .filter(|g| g.access == access)
            .map(|g| PathBuf::from(g.path.as_str()))
            .collect()
    };
    let (rw, ro) = (canonical(Access::ReadWrite), canonical(Access::ReadOnly));
    let logs: Vec<&str> = req.logs.iter().map(String::as_str).collect();
    let (rw, ro): (Vec<&std::path::Path>, Vec<&std::path::Path>) = (
        rw.iter().map(PathBuf::as_path).collect(),
        ro.iter().map(PathBuf::as_path).collect(),
    );
    crate::manifest::check_grants(m, &req.params, &rw, &ro, &logs).map_err(|problems| {
        Stop::new(
            Exit::Refused,
            format!(
                "refused: the grants go beyond what {} {} declares: {}; grant less, or have the manifest reviewed",
                m.name,
                m.version,
                problems.join("; ")
            ),
        )
    })?;
    Ok(())
}

/// A `--param` the manifest does not declare is a typo or a fix of another
/// version: refused before the fix runs, so it never runs with a default
/// instead.
fn refuse_undeclared_params(
    m: &Manifest,
    params: &BTreeMap<String, String>,
    fix: &str,
) -> Result<(), Stop> {
    let undeclared = m.undeclared_params(params);
    if undeclared.is_empty() {
        return Ok(());
    }
    Err(Stop::new(
        Exit::Usage,
        format!(
            "{} {} does not declare {}; it declares {}. Check the spelling; see `defops-wasm inspect {fix}`",
            m.name,
            m.version,
            undeclared
                .iter()
                .map(|k| format!("--param {k}"))
                .collect::<Vec<_>>()
                .join(", "),
            match m.params.is_empty() {
                true => "no params".to_string(),
                false => m
                    .params
                    .iter()
                    .map(|p| p.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            }
        ),
    ))
}

/// A reviewer's signature, when the request or the configuration requires
/// one; the record for the journal header.
fn check_approval(
    req: &RunRequest,
    config: &Config,
    fix: &[u8],
) -> Result<Option<serde_json::Value>, Stop> {
    if !req.require_approval && !config.approval.required {
        return Ok(None);
    }
    let signers_path = req
        .allowed_signers
        .clone()
        .or_else(|| config.approval.allowed_signers.clone())
        .ok_or_else(|| {
            Stop::new(
                Exit::Usage,
                "--require-approval needs --allowed-signers FILE (or allowed-signers in the [approval] section of the configuration)",
            )
        })?;
    let signers_text = crate::regular_file::read_to_string(&signers_path).map_err(|e| {
        Stop::new(
            Exit::Usage,
            format!(
                "cannot read the allowed signers {}: {e}",
                signers_path.display()
            ),
        )
    })?;
    let signers = crate::approval::parse_allowed_signers(&signers_text)
        .map_err(|e| Stop::new(Exit::Usage, format!("{}: {e}", signers_path.display())))?;
    let sig_path = req
        .signature
        .clone()
        .unwrap_or_else(|| crate::review::signature_path(&req.fix));
    let sig = match crate::regular_file::read_to_string(&sig_path) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Stop::new(
                Exit::Refused,
                format!(
                    "refused: no approval: {} does not exist; a reviewer signs the fix with `defops-wasm approve {} --key KEY` (or `ssh-keygen -Y sign -f KEY -n defops-wasm {}`)",
                    sig_path.display(),
                    req.fix.display(),
                    req.fix.display()
                ),
            ));
        }
        Err(e) => {
            return Err(Stop::new(
                Exit::Usage,
                format!("cannot read {}: {e}", sig_path.display()),
            ));
        }
    };
    let approval = crate::approval::verify(
        fix,
        &sig,
        &sig_path.display().to_string(),
        &signers,
        now_secs(),
    )
    .map_err(|e| {
        Stop::new(
            Exit::Refused,
            format!("refused: not approved: {e} ({})", sig_path.display()),
        )
    })?;
    let mut record = json!(approval);
    record["signature"] = json!(sig_path.display().to_string());
    record["allowed_signers"] = json!(signers_path.display().to_string());
    Ok(Some(record))
}
