//! `defops-wasm rollback RUN`: undo a run's effects, newest first.
//!
//! The journal is verified first. Then the inverse of every effect is
//! planned on an overlay of the run's grants, exactly as a fix would plan:
//! an effect whose path is in its recorded after-state is undone, one whose
//! path is back in its before-state is skipped (never applied, or undone
//! already), and anything else is drift. Drift is reported, path and
//! attribute, before anything changes, and refuses the rollback unless
//! `--force`. The inverse plan is committed by the same executor as a run,
//! journaled as a run of its own, and the recorded modification times are
//! restored last.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use serde_json::{Value, json};

use crate::commit;
use crate::exit::Exit;
use crate::grants::{Access, Grants, VPath};
use crate::journal::{self, Journal, Loaded, Objects, Verdict};
use crate::output::Printer;
use crate::overlay::{Exact, FsError, Overlay, OverlayLimits};
use crate::plan::State;
use crate::policy::RunLock;
use crate::run::{Stop, hostname, new_run_id, now_secs, rfc3339, user};

/// What the operator asked for.
pub struct RollbackRequest {
    pub run: String,
    pub dry_run: bool,
    pub force: bool,
    pub state_dir: PathBuf,
}

/// One path whose state is neither what the run left nor what it found.
#[derive(Debug)]
struct Drift {
    path: String,
    attribute: &'static str,
    expected: State,
    found: State,
}

fn state(v: &Value) -> Option<State> {
    serde_json::from_value(v.clone()).ok()
}

fn vpath(v: &Value) -> Result<VPath, Stop> {
    let s = v.as_str().unwrap_or_default();
    VPath::parse(s).map_err(|why| {
        Stop::new(
            Exit::Refused,
            format!("the journal names a bad path {s:?}: {why}"),
        )
    })
}

/// Loads and verifies the journal of `run`.
pub fn load_verified(state_dir: &std::path::Path, run: &str) -> Result<Loaded, Stop> {
    let path = journal::locate(state_dir, run).map_err(|e| Stop::new(Exit::Usage, e))?;
    let loaded = journal::load(&path, None).map_err(|e| Stop::new(Exit::Usage, e))?;
    if let Verdict::Bad { seq, why } = &loaded.verdict {
        return Err(Stop::new(
            Exit::Refused,
            journal::JournalError::Tampered {
                path: path.clone(),
                seq: *seq,
                why: why.clone(),
            },
        ));
    }
    Ok(loaded)
}

pub fn rollback(req: RollbackRequest, out: &Printer) -> Result<Exit, Stop> {
    let started = std::time::Instant::now();
    let started_at = now_secs();
    let state_dir = crate::state_dir::prepare(&req.state_dir, &Grants::default())
        .map_err(|e| Stop::new(Exit::Usage, e))?;
    let loaded = load_verified(&state_dir, &req.run)?;
    let header = loaded.header().clone();
    // The run's own algorithm: its states and before-images are named by it.
    let alg = crate::journal::header_alg(&PathBuf::from(&req.run), &header)
        .map_err(|e| Stop::new(Exit::Refused, e))?;
    crate::digest::choose(alg).map_err(|e| Stop::new(Exit::Usage, e))?;
    let original = header["run_id"].as_str().unwrap_or_default().to_string();
    if header["kind"] != "run" {
        return Err(Stop::new(
            Exit::Usage,
            format!("{original} is a rollback itself; to redo the change, run the fix again"),
        ));
    }
    if header["dry_run"] == json!(true) {
        return Err(Stop::new(
            Exit::Usage,
            format!(
                "{original} was a dry-run: it changed nothing, so there is nothing to roll back"
            ),
        ));
    }
    let specs: Vec<(PathBuf, Access)> = header["grants"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|g| g["access"] != "log")
        .map(|g| {
            let access = if g["access"] == "read-only" {
                Access::ReadOnly
            } else {
                Access::ReadWrite
            };
            (
                PathBuf::from(g["path"].as_str().unwrap_or_default()),
                access,
            )
        })
        .collect();
    let grants = Grants::open(&specs)
        .map_err(|e| Stop::new(Exit::Usage, format!("the run's grant: {e}")))?;
    let state_dir =
        crate::state_dir::prepare(&state_dir, &grants).map_err(|e| Stop::new(Exit::Usage, e))?;
    let grants = Arc::new(grants);
    let objects = Objects::open(&state_dir)
        .map_err(|e| Stop::new(Exit::Usage, format!("cannot open the object store: {e}")))?;
    let run_id = new_run_id();
    let _lock = match req.dry_run {
        true => None,
        false => Some(
            RunLock::take(&state_dir, &format!("rollback {run_id} of {original}"))
                .map_err(|e| Stop::new(Exit::Refused, e))?,
        ),
    };

    out.start(&json!({
        "type": "start",
        "run_id": run_id,
        "rollback_of": original,
        "dry_run": req.dry_run,
        "grants": header["grants"],
    }));

    // Plan the inverse on an overlay, newest effect first.
    let mut overlay = Overlay::new(
        grants.clone(),
        OverlayLimits {
            max_read: 1 << 30,
            max_plan_bytes: u64::MAX,
        },
    );
    overlay.set_restoring();
    let done: BTreeMap<u64, &Value> = loaded
        .of("done")
        .filter_map(|r| Some((r["n"].as_u64()?, r)))
        .collect();
    let intents: Vec<&Value> = loaded
        .of("intent")
        .filter(|r| r["planned"] != json!(true))
        .collect();
    let mut drifts = Vec::new();
    let mut undone = 0;
    // The effects were applied in order, and rollbacks undo them newest
    // first, so without drift the tree is "the first j effects applied" for
    // one j: the largest j whose last applied effect shows its after-state
    // and whose next effect still shows its before-state.
    let mut intents = intents;
    let mtimes = recorded_mtimes(&intents);
    intents.sort_by_key(|i| i["n"].as_u64());
    let after_of = |i: &Value, key: &str| {
        let n = i["n"].as_u64().unwrap_or(u64::MAX);
        done.get(&n)
            .and_then(|d| state(&d[key]))
            .or_else(|| state(&i[key]))
    };
    let shows = |i: &Value, which: Which| -> Result<bool, Stop> {
        let (main, to) = match which {
            Which::Before => (state(&i["before"]), state(&i["before_to"])),
            Which::After => (after_of(i, "after"), after_of(i, "after_to")),
        };
        if i["op"] == "rename" {
            let from_now = overlay.state(&vpath(&i["from"])?).map_err(fs_stop)?;
            let to_now = overlay.state(&vpath(&i["to"])?).map_err(fs_stop)?;
            let from_expected = if which == Which::After {
                Some(State::Absent)
            } else {
                main
            };
            return Ok(Some(from_now) == from_expected && Some(to_now) == to);
        }
        let path = vpath(&i[if i["op"] == "symlink" { "link" } else { "path" }])?;
        Ok(Some(overlay.state(&path).map_err(fs_stop)?) == main)
    };
    let mut applied = intents.len();
    for j in (0..=intents.len()).rev() {
        let last_applied = j == 0 || shows(intents[j - 1], Which::After)?;
        let next_pending = j == intents.len() || shows(intents[j], Which::Before)?;
        if last_applied && next_pending {
            applied = j;
            break;
        }
    }
    for intent in intents[..applied].iter().rev() {
        let pick = |key: &str| after_of(intent, key);
        match undo(
            intent,
            pick("after"),
            pick("after_to"),
            &mut overlay,
            &objects,
            &mtimes,
            req.force,
        ) {
            Ok(Step::Undone) => undone += 1,
            Ok(Step::Skipped) => {}
            Ok(Step::Drifted(d)) => {
                for d in d {
                    if !drifts.iter().any(|x: &Drift| x.path == d.path) {
                        drifts.push(d);
                    }
                }
            }
            // Undoing older effects may be impossible once a newer one
            // drifted (a directory not empty): the drift is the news.
            Err(_) if !drifts.is_empty() => break,
            Err(e) => return Err(e),
        }
    }
    // Refused for drift: journaled all the same (header, drift, outcome),
    // so monitoring and the report see the attempt.
    let mut refusal = None;
    if !drifts.is_empty() && !req.force {
        let list: Vec<String> = drifts
            .iter()
            .map(|d| {
                format!(
                    "{} ({}: expected {}, found {})",
                    d.path, d.attribute, d.expected, d.found
                )
            })
            .collect();
        for l in &list {
            out.note(&format!("drift: {}", crate::escape::line(l)));
        }
        refusal = Some(Stop::new(
            Exit::Refused,
            format!(
                "refusing to roll back {original}: {} path(s) changed since the run: {}; nothing was changed (--force overrides)",
                list.len(),
                list.join("; ")
            ),
        ));
    }
    let plan = overlay.into_plan();
    let planned_in = started.elapsed();
    out.plan(&plan, req.dry_run);

    let mut journal = Journal::create(&state_dir, &run_id)
        .map_err(|e| Stop::new(Exit::Usage, format!("cannot write the journal: {e}")))?;
    let jerr = |e: std::io::Error| Stop::new(Exit::Usage, format!("cannot write the journal: {e}"));
    journal
        .append(json!({
            "type": "header",
            "format": journal::FORMAT,
            "kind": "rollback",
            "run_id": run_id,
            "rollback_of": original,
            "original_head": match &loaded.verdict { Verdict::Intact { head, .. } | Verdict::TornTail { head, .. } => json!(head), Verdict::Bad { .. } => Value::Null },
            "time": rfc3339(started_at),
            "grants": header["grants"],
            "dry_run": req.dry_run,
            "force": req.force,
            "host": hostname(),
            "user": user(),
            "version": env!("CARGO_PKG_VERSION"),
            "hash_alg": crate::digest::current().name(),
        }))
        .map_err(jerr)?;
    for d in &drifts {
        journal
            .append(json!({"type": "drift", "path": d.path, "attribute": d.attribute, "expected": d.expected, "found": d.found}))
            .map_err(jerr)?;
    }
    if let Some(stop) = refusal {
        journal
            .append(json!({
                "type": "outcome",
                "outcome": "refused",
                "changed": 0,
                "exit_code": stop.exit.code(),
                "error": stop.message,
                "time": rfc3339(now_secs()),
            }))
            .map_err(jerr)?;
        journal.sync().map_err(jerr)?;
        return Err(stop);
    }
    let mut summary = json!({
        "type": "summary",
        "run_id": run_id,
        "rollback_of": original,
        "dry_run": req.dry_run,
        "undone": undone,
        "changed": plan.effects.len(),
        "unchanged": plan.unchanged,
    });
    // A run killed between writing a temporary file and renaming it over
    // its target leaves that file behind: it goes, as part of the undo.
    let orphans = match req.dry_run {
        true => 0,
        false => remove_orphans(&grants, &original, &intents),
    };
    if orphans > 0 {
        summary["temporary_files_removed"] = json!(orphans);
    }
    let exit = if plan.effects.is_empty() {
        if orphans > 0 {
            restore_mtimes(&grants, &non_file_mtimes(&mtimes, &intents));
        }
        summary["outcome"] = json!("nothing-to-undo");
        Exit::Success
    } else if req.dry_run {
        summary["outcome"] = json!("planned");
        Exit::Success
    } else {
        match commit::commit(&grants, &plan, &run_id, &mut journal, None, None) {
            Ok(_) => {
                restore_mtimes(&grants, &non_file_mtimes(&mtimes, &intents));
                summary["outcome"] = json!("rolled-back");
                Exit::Success
            }
            Err(e) => {
                summary["outcome"] = json!(if matches!(e, commit::CommitError::Drift { .. }) {
                    "refused"
                } else {
                    "error"
                });
                summary["changed"] = json!(e.applied());
                summary["error"] = json!(format!(
                    "rollback stopped: {e}; run `defops-wasm rollback {original}` again once the cause is fixed"
                ));
                if matches!(e, commit::CommitError::Drift { .. }) {
                    Exit::Refused
                } else {
                    Exit::Usage
                }
            }
        }
    };
    summary["exit_code"] = json!(exit.code());
    let mut outcome = json!({
        "type": "outcome",
        "outcome": summary["outcome"],
        "changed": summary["changed"],
        "exit_code": exit.code(),
        "time": rfc3339(now_secs()),
    });
    if let Some(e) = summary.get("error") {
        outcome["error"] = e.clone();
    }
    journal.append(outcome).map_err(jerr)?;
    journal.sync().map_err(jerr)?;
    summary["timings_ms"] = json!({
        "plan": planned_in.as_secs_f64() * 1e3,
        "commit": (started.elapsed() - planned_in).as_secs_f64() * 1e3,
    });
    summary["head"] = json!(journal.head());
    summary["journal"] = json!(journal.path().display().to_string());
    summary["elapsed_ms"] = json!(started.elapsed().as_secs_f64() * 1e3);
    out.summary(&summary);
    Ok(exit)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Which {
    Before,
    After,
}

enum Step {
    Undone,
    Skipped,
    Drifted(Vec<Drift>),
}

fn fs_stop(e: FsError) -> Stop {
    Stop::new(Exit::Refused, format!("cannot plan the rollback: {e}"))
}

/// Plans the inverse of one intent on the overlay.
fn undo(
    intent: &Value,
    after: Option<State>,
    after_to: Option<State>,
    ov: &mut Overlay,
    objects: &Objects,
    mtimes: &Mtimes,
    force: bool,
) -> Result<Step, Stop> {
    let op = intent["op"].as_str().unwrap_or_default();
    let before = state(&intent["before"]).unwrap_or(State::Absent);
    let after = after.unwrap_or(State::Absent);
    let content = |key: &str| -> Result<Vec<u8>, Stop> {
        let hash = intent[key].as_str().unwrap_or_default();
        objects.get(hash).map_err(|e| Stop::new(Exit::Usage, e))
    };
    if op == "rename" {
        let (from, to) = (vpath(&intent["from"])?, vpath(&intent["to"])?);
        let before_to = state(&intent["before_to"]).unwrap_or(State::Absent);
        let after_to = after_to.unwrap_or_else(|| before.clone());
        let (now_from, now_to) = (
            ov.state(&from).map_err(fs_stop)?,
            ov.state(&to).map_err(fs_stop)?,
        );
        if now_from == before && now_to == before_to {
            return Ok(Step::Skipped);
        }
        if !(force || now_to == after_to && now_from == State::Absent) {
            let mut d = Vec::new();
            if let Some(attribute) = after_to.difference(&now_to) {
                d.push(Drift {
                    path: to.to_string(),
                    attribute,
                    expected: after_to,
                    found: now_to,
                });
            }
            if let Some(attribute) = State::Absent.difference(&now_from) {
                d.push(Drift {
                    path: from.to_string(),
                    attribute,
                    expected: State::Absent,
                    found: now_from,
                });
            }
            return Ok(Step::Drifted(d));
        }
        ov.rename(&to, &from).map_err(fs_stop)?;
        restore(ov, &to, &before_to, mtimes, || content("object_to"))?;
        return Ok(Step::Undone);
    }
    let path = vpath(&intent[if op == "symlink" { "link" } else { "path" }])?;
    let now = ov.state(&path).map_err(fs_stop)?;
    if now == before {
        return Ok(Step::Skipped);
    }

    if now != after && !force {
        let attribute = after.difference(&now).unwrap_or("state");
        return Ok(Step::Drifted(vec![Drift {
            path: path.to_string(),
            attribute,
            expected: after,
            found: now,
        }]));
    }
    match op {
        "set-mode" | "set-owner" => restore_meta(ov, &path, &before)?,
        _ => {
            // Remove what the run created or left, then put back what was there.
            match now {
                State::Absent => {}
                State::Dir { .. } if matches!(before, State::Dir { .. }) => {}
                State::Dir { .. } => ov.remove_dir(&path).map_err(fs_stop)?,
                State::File { .. } if matches!(before, State::File { .. }) => {}
                _ => ov.remove_file(&path).map_err(fs_stop)?,
            }
            restore(ov, &path, &before, mtimes, || content("object"))?;
        }
    }
    Ok(Step::Undone)
}

/// Puts `before` back at `path` (absent there now, or a file to overwrite).
fn restore(
    ov: &mut Overlay,
    path: &VPath,
    before: &State,
    mtimes: &Mtimes,
    content: impl FnOnce() -> Result<Vec<u8>, Stop>,
) -> Result<(), Stop> {
    match before {
        State::Absent | State::Other => return Ok(()),
        State::File { mode, uid, gid, .. } => {
            let exact = Exact {
                mode: *mode,
                uid: *uid,
                gid: *gid,
                mtime: mtimes.get(path.as_str()).copied(),
            };
            return ov.restore_file(path, content()?, exact).map_err(fs_stop);
        }
        State::Dir { .. } => ov.create_dir(path).map_err(fs_stop)?,
        State::Symlink { target, .. } => ov.symlink(target, path).map_err(fs_stop)?,
    }
    restore_meta(ov, path, before)
}

fn restore_meta(ov: &mut Overlay, path: &VPath, before: &State) -> Result<(), Stop> {
    match before {
        State::File { mode, uid, gid, .. } | State::Dir { mode, uid, gid } => {
            ov.set_mode(path, *mode).map_err(fs_stop)?;
            ov.set_owner(path, *uid, *gid).map_err(fs_stop)
        }
        State::Symlink { uid, gid, .. } => ov.set_owner(path, *uid, *gid).map_err(fs_stop),
        State::Absent | State::Other => Ok(()),
    }
}

/// Original modification times by path, as the run recorded them before
/// its first change.
type Mtimes = BTreeMap<String, (i64, u32)>;

/// The earliest recorded mtime of each path.
fn recorded_mtimes(intents: &[&Value]) -> Mtimes {
    let mut times = Mtimes::new();
    for intent in intents {
        for (path, t) in intent["mtimes"].as_object().into_iter().flatten() {
            if let (Some(s), Some(ns)) = (t[0].as_i64(), t[1].as_u64()) {
                times.entry(path.clone()).or_insert((s, ns as u32));
            }
        }
    }
    times
}

/// The recorded times of everything but files (which get theirs back as
/// they are rewritten): directories whose entries changed, and symlinks.
fn non_file_mtimes(times: &Mtimes, intents: &[&Value]) -> Mtimes {
    let files: std::collections::HashSet<&str> = intents
        .iter()
        .filter(|i| i["before"]["kind"] == "file" && i["op"] != "rename")
        .filter_map(|i| i["path"].as_str())
        .collect();
    times
        .iter()
        .filter(|(p, _)| !files.contains(p.as_str()))
        .map(|(p, t)| (p.clone(), *t))
        .collect()
}

/// Sets back the recorded modification times of directories and symlinks
/// (files restored by the rollback got theirs as they were written).
fn restore_mtimes(grants: &Grants, times: &Mtimes) {
    for (path, (s, ns)) in times {
        let Ok(p) = VPath::parse(path) else { continue };
        if let Some(g) = grants.find(&p)
            && let Ok(loc) = crate::disk::locate(g, &p)
            && let Ok(Some(st)) = loc.lstat()
            && st.kind != crate::disk::Kind::File
        {
            let _ = loc.set_mtime(*s, *ns);
        }
    }
}

/// Removes the temporary files (`.defops-tmp-RUN-N`, next to each write's
/// target) a killed run left; how many there were.
fn remove_orphans(grants: &Grants, run_id: &str, intents: &[&Value]) -> usize {
    let mut removed = 0;
    for i in intents.iter().filter(|i| i["op"] == "write") {
        let (Some(path), Some(n)) = (i["path"].as_str(), i["n"].as_u64()) else {
            continue;
        };
        let Some(parent) = VPath::parse(path).ok().and_then(|p| p.parent()) else {
            continue;
        };
        let Ok(tmp) = VPath::parse(&format!("{parent}/.defops-tmp-{run_id}-{n}")) else {
            continue;
        };
        let Some(loc) = grants
            .find(&tmp)
            .and_then(|g| crate::disk::locate(g, &tmp).ok())
        else {
            continue;
        };
        if let Ok(Some(st)) = loc.lstat()
            && st.kind == crate::disk::Kind::File
            && loc.remove_file().is_ok()
        {
            removed += 1;
        }
    }
    removed
}
