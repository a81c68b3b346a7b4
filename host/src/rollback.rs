//! `defops-wasm rollback RUN`: undo a run's effects, newest first.
//!
//! The journal is verified and trusted first (see [`trusted_journal`]).
//! Then the inverse of every effect in force is planned on an overlay of
//! the run's grants, exactly as a fix would plan, and committed by the same
//! executor as a run, journaled as a run of its own; the recorded
//! modification times are restored last, and the tree is looked at again.
//!
//! # Invariants
//!
//! 1. An effect whose journal has a `done` record was applied: it is in
//!    force, never guessed away from the disk. Only the effects after the
//!    last `done` of a run cut off without an outcome (the crash window;
//!    after a power loss several may be there) are decided from the disk,
//!    in order ([`in_force`]). The one exception: once an earlier rollback
//!    of the same run started changing the disk and did not finish (it
//!    undid the newest first), the effects still in force are the most
//!    that undo cleanly, one found in its before-state taken as undone by
//!    it and one put back halfway finished.
//! 2. Every effect in force is either restored or named as drift (path and
//!    attribute, expected and found). With any drift nothing changes
//!    without `--force` (exit 3), and the drift is journaled.
//! 3. `rolled-back` (and `nothing-to-undo`) with exit 0 is said only when
//!    the tree is back: after the commit every path the run touched is
//!    observed again, by its name before the run, and compared with its
//!    recorded before-state and modification time ([`tree_back`]); a
//!    difference is outcome `not-restored`, exit 2, naming the paths.
//! 4. Modification times are recorded and restored under the names paths
//!    had before the run, so paths reached through renames get theirs back
//!    too (a renamed directory, its parent, the files beneath it).
//! 5. A journal outside the state directory, or one not written by this
//!    user alone, is acted on only with `--expect-head` matching its head;
//!    its header is used only after that ([`trusted_journal`]).
//! 6. Once a rollback of a run brought the tree back, rolling it back
//!    again changes nothing.
//! 7. A rollback undoes only its own run: while a later real run that
//!    touched one of its paths is in force (not rolled back), or a run in
//!    the state directory is not counted, it refuses naming them, and any
//!    drift, and changes nothing unless `--force`. The disk cannot tell
//!    the later run's changes from the run's, nor a crashed run's last
//!    effects from the later run's. "Later" is the order the lock gave
//!    ([`others`]). A directory a later run changed entries of keeps its
//!    time.

mod in_force;
mod inverse;
mod others;
mod tree_back;
mod trusted_journal;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;

use serde_json::{Value, json};

use crate::commit;
use crate::exit::Exit;
use crate::grants::{Access, Grants, VPath};
use crate::journal::{self, Journal, Objects, Verdict};
use crate::output::Printer;
use crate::overlay::{FsError, Overlay, OverlayLimits};
use crate::plan::State;
use crate::policy::RunLock;
use crate::run::{Stop, hostname, new_run_id, now_secs, rfc3339, user};

use in_force::Effects;
use inverse::{Images, Step, Undo, missing_directory, undo};
use tree_back::Mtimes;

/// The fields of a journal's records rollback never reads: not built
/// when it loads one (the chain is verified over them all the same).
const UNUSED: &[&str] = &["diff", "hash", "prev"];

/// What the operator asked for.
pub struct RollbackRequest {
    pub run: String,
    pub dry_run: bool,
    pub force: bool,
    /// The run's head as recorded elsewhere: required for a journal from
    /// outside the state directory.
    pub expect_head: Option<String>,
    pub state_dir: PathBuf,
    /// `--config`: FIPS mode applies to rollbacks too.
    pub config: Option<PathBuf>,
}

/// One path whose state is not what the run left.
#[derive(Debug)]
struct Drift {
    path: String,
    attribute: &'static str,
    /// `None`: a directory (a path below it needs one).
    expected: Option<State>,
    found: State,
}

impl Drift {
    fn expected_text(&self) -> String {
        match &self.expected {
            Some(s) => s.shown_for(self.attribute),
            None => "a directory".into(),
        }
    }

    fn expected_json(&self) -> Value {
        match &self.expected {
            Some(s) => json!(s),
            None => json!({"kind": "dir"}),
        }
    }
}

/// A state as the journal records it (`None`: none recorded).
fn state(v: &Value) -> Option<State> {
    use serde::Deserialize;
    let Value::Object(m) = v else { return None };
    // A file's, by far the most common, read directly; any other through
    // its deserializer.
    let int = |k: &str| m.get(k).and_then(Value::as_u64);
    let small = |k: &str| int(k).and_then(|n| u32::try_from(n).ok());
    if m.len() == 6
        && m.get("kind").and_then(Value::as_str) == Some("file")
        && let (Some(size), Some(digest), Some(mode), Some(uid), Some(gid)) = (
            int("size"),
            m.get("digest").and_then(Value::as_str),
            small("mode"),
            small("uid"),
            small("gid"),
        )
    {
        return Some(State::File {
            size,
            digest: digest.to_string(),
            mode,
            uid,
            gid,
        });
    }
    State::deserialize(v).ok()
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

/// The run's grants, opened again from its header.
fn grants_of(header: &Value) -> Result<Grants, Stop> {
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
    Grants::open(&specs).map_err(|e| Stop::new(Exit::Usage, format!("the run's grant: {e}")))
}

/// Refuses a journal that is not a real run's.
fn check_kind(header: &Value, original: &str) -> Result<(), Stop> {
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
    Ok(())
}

/// The inverse plan, and the drift found while making it.
struct Planned {
    overlay: Overlay,
    drifts: Vec<Drift>,
    undone: usize,
}

/// Plans the inverse of every effect in force, newest first, on a fresh
/// overlay from `overlay`.
fn plan_inverse(
    effects: &Effects<'_>,
    origins: &[Vec<Option<VPath>>],
    overlay: &dyn Fn() -> Overlay,
    images: &Images<'_>,
    mtimes: &Mtimes,
    earlier_started: bool,
    force: bool,
) -> Result<Planned, Stop> {
    let undo_first = |n: usize, drifts: Vec<Drift>| {
        undo_newest_first(
            &effects.intents[..n],
            origins,
            UndoAll {
                effects,
                images,
                mtimes,
                may_be_undone: earlier_started,
                force,
            },
            overlay(),
            drifts,
        )
    };
    // After an unfinished rollback (which undid the newest effects first),
    // the first j are still in force for some j, the j-th maybe halfway
    // undone: the most that undo cleanly, an effect in its before-state
    // skipped.
    let candidates: Vec<usize> = if earlier_started {
        // The effect the run stopped at was never applied: what stands at
        // its paths now is not the run's, and none from it on is in force.
        match effects.stopped(&overlay())? {
            Some((k, drifts)) if !drifts.is_empty() => return undo_first(k, drifts),
            Some((k, _)) => (0..=k).rev().collect(),
            None => (0..=effects.intents.len()).rev().collect(),
        }
    } else {
        // The effects in force: all with a `done` record, then those of
        // the crash window the disk shows applied: the most that undo
        // cleanly.
        match effects.window_candidates(&overlay())? {
            Ok(c) => c.into_iter().map(|j| effects.done_count + j).collect(),
            Err(drifts) => return undo_first(effects.done_count, drifts),
        }
    };
    let mut first = None;
    for n in candidates {
        match undo_first(n, Vec::new()) {
            Ok(attempt) if attempt.drifts.is_empty() => return Ok(attempt),
            other => {
                first.get_or_insert(other);
            }
        }
    }
    first.expect("at least one candidate")
}

/// What undoing needs besides the overlay.
#[derive(Clone, Copy)]
struct UndoAll<'a> {
    effects: &'a Effects<'a>,
    images: &'a Images<'a>,
    mtimes: &'a Mtimes,
    may_be_undone: bool,
    force: bool,
}

/// Plans the inverse of `intents` (the first of the run's), newest first.
fn undo_newest_first(
    intents: &[&Value],
    origins: &[Vec<Option<VPath>>],
    with: UndoAll<'_>,
    mut overlay: Overlay,
    mut drifts: Vec<Drift>,
) -> Result<Planned, Stop> {
    let mut undone = 0;
    // The paths named as drift so far: each is named once.
    let mut named: HashSet<String> = drifts.iter().map(|d| d.path.clone()).collect();
    let paths: Vec<VPath> = intents
        .iter()
        .flat_map(|i| in_force::paths_of(i).into_iter().map(|(key, _)| &i[key]))
        .filter_map(|p| vpath(p).ok())
        .collect();
    overlay.look_ahead(&paths);
    for (intent, names) in intents.iter().zip(origins).rev() {
        let time = |k: usize| {
            names
                .get(k)
                .and_then(Option::as_ref)
                .and_then(|p| with.mtimes.get(p.as_str()).copied())
        };
        let how = Undo {
            after: with.effects.after(intent, "after"),
            after_to: with.effects.after(intent, "after_to"),
            mtime: time(0),
            mtime_to: time(1),
            may_be_undone: with.may_be_undone,
            force: with.force,
        };
        match undo(intent, &how, &mut overlay, with.images) {
            Ok(Step::Undone) => undone += 1,
            Ok(Step::Skipped) => {}
            Ok(Step::Drifted(d)) => {
                for d in d {
                    if named.insert(d.path.clone()) {
                        drifts.push(d);
                    }
                }
            }
            // Undoing older effects may be impossible once a newer one
            // drifted (a directory not empty): the drift is the news.
            Err(_) if !drifts.is_empty() => break,
            // A directory it needs is gone (removed since the run): named.
            Err(e) => match missing_directory(intent, &overlay)? {
                Some(d) => {
                    drifts.push(d);
                    break;
                }
                None => return Err(e),
            },
        }
    }
    Ok(Planned {
        overlay,
        drifts,
        undone,
    })
}

/// Why the rollback may not go ahead without `--force`: later runs in
/// force on its paths, runs that cannot be counted or verified, an order
/// of runs that cannot be told, what it puts back leading out, drift. All
/// are named together, so `--force` is chosen knowing all of it. With the
/// refusal, what the outcome record's `refused_for` says (the first), and
/// the reasons alone.
fn held_back(
    original: &str,
    others: Option<&others::Others>,
    escapes: &[crate::overlay::Escape],
    drifts: &[Drift],
    out: &Printer,
) -> Option<(Stop, &'static str, String)> {
    let (mut parts, mut todo, mut why) = (Vec::new(), Vec::new(), None);
    let note = |what: &str, l: &str| out.note(&format!("{what}{}", crate::escape::line(l)));
    // Runs with the first of its paths each touched.
    let named = |runs: &[(String, String)]| -> Vec<String> {
        runs.iter()
            .map(|(run, path)| format!("{run} ({path})"))
            .collect()
    };
    if let Some(others) = others {
        others.skipped.iter().for_each(|id| {
            note(
                "cannot be read, and older than the run: not counted: run ",
                id,
            )
        });
        if let Some((newest, _)) = others.later.last() {
            // The disk shows their changes, or theirs over the run's:
            // undoing the run now would undo them too, or decide its last
            // effects from what they left.
            let list = named(&others.later);
            list.iter().for_each(|l| note("changed since by run ", l));
            parts.push(format!(
                "{} later run(s) not rolled back changed its paths, or meant to: {}",
                list.len(),
                list.join("; ")
            ));
            todo.push(format!(
                "roll them back first, newest first (`defops-wasm rollback {newest}`)"
            ));
            why.get_or_insert("later-runs");
        }
        if !others.uncounted.is_empty() {
            others
                .uncounted
                .iter()
                .for_each(|id| note("not counted: run ", id));
            parts.push(format!(
                "{} run(s) in the state directory are not this user's alone ({}), so whether they changed its paths cannot be told",
                others.uncounted.len(),
                others.uncounted.join(", ")
            ));
            todo.push(
                "make their run directories and journals this user's alone again (chmod go-w, one name)"
                    .to_string(),
            );
            why.get_or_insert("uncounted-runs");
        }
        if !others.unverified.is_empty() {
            others
                .unverified
                .iter()
                .for_each(|id| note("cannot be verified: run ", id));
            parts.push(format!(
                "{} journal(s) in the state directory cannot be read or fail verification ({}), so whether those runs changed its paths cannot be told",
                others.unverified.len(),
                others.unverified.join(", ")
            ));
            todo.push(format!(
                "look at them (`defops-wasm journal verify {}`), and move one damaged beyond use out of the state directory's runs/",
                others.unverified[0]
            ));
            why.get_or_insert("unverified-runs");
        }
        if !others.later_rollbacks.is_empty() {
            let list = named(&others.later_rollbacks);
            list.iter()
                .for_each(|l| note("changed since by rollback ", l));
            parts.push(format!(
                "{} later rollback(s) of other runs, forced past it, changed its paths: {}",
                list.len(),
                list.join("; ")
            ));
            why.get_or_insert("later-runs");
        }
        if !others.ambiguous.is_empty() {
            let list = named(&others.ambiguous);
            list.iter()
                .for_each(|l| note("maybe changed since by run ", l));
            parts.push(format!(
                "{} run(s) not rolled back changed its paths and have a sequence number another journal has too (a lock file restored or edited, a run directory copied), so whether they came after it cannot be told: {}",
                list.len(),
                list.join("; ")
            ));
            todo.push("roll back first those that came after it (their time in `defops-wasm journal list`)".into());
            why.get_or_insert("order-unknown");
        }
    }
    if !escapes.is_empty() {
        let list: Vec<String> = escapes.iter().map(|e| e.why.clone()).collect();
        list.iter().for_each(|l| note("would lead out: ", l));
        parts.push(format!(
            "what it puts back would lead outside the grants: {}",
            list.join("; ")
        ));
        why.get_or_insert("leads-out");
    }
    if !drifts.is_empty() {
        let list = drift_list(drifts);
        list.iter().for_each(|l| note("drift: ", l));
        parts.push(format!(
            "{} path(s) changed since the run: {}",
            list.len(),
            list.join("; ")
        ));
        why.get_or_insert("drift");
    }
    let why = why?;
    let what_to_do = match todo.is_empty() {
        true => "--force overrides".to_string(),
        false => format!(
            "{}; or --force to roll it back anyway, over all of this",
            todo.join("; ")
        ),
    };
    let reasons = parts.join("; ");
    let message =
        format!("refusing to roll back {original}: {reasons}; nothing was changed ({what_to_do})");
    Some((Stop::new(Exit::Refused, message), why, reasons))
}

fn drift_list(drifts: &[Drift]) -> Vec<String> {
    drifts
        .iter()
        .map(|d| {
            format!(
                "{} ({}: expected {}, found {})",
                d.path,
                d.attribute,
                d.expected_text(),
                d.found.shown_for(d.attribute)
            )
        })
        .collect()
}

pub fn rollback(req: RollbackRequest, out: &Printer) -> Result<Exit, Stop> {
    let started = std::time::Instant::now();
    let mut phases = crate::phases::Phases::since(crate::phases::process_start());
    phases.lap("parse");
    let started_at = now_secs();
    // The FIPS build checks its module before the journal is read; FIPS
    // mode (`fips = true`) is entered as for a run: refused on a build
    // without the module unless the configuration accepts that.
    crate::crypto::module_status().map_err(|e| Stop::new(Exit::Usage, e))?;
    let config = crate::config::Config::load(req.config.as_deref())
        .map_err(|e| Stop::new(Exit::Usage, e))?;
    if config.fips {
        config
            .apply_crypto()
            .map_err(|e| Stop::new(Exit::Usage, e))?;
    }
    // Found, not made: it is made (and checked against the run's grants)
    // once the journal names them.
    let state_dir =
        crate::state_dir::checked(&req.state_dir).map_err(|e| Stop::new(Exit::Usage, e))?;
    phases.lap("config");
    let (loaded, trusted) =
        trusted_journal::load(&state_dir, &req.run, req.expect_head.as_deref())?;
    phases.lap("load journal");
    let header = loaded.header().clone();
    // The run's own algorithm: its states and before-images are named by it.
    let alg = crate::journal::header_alg(&PathBuf::from(&req.run), &header)
        .map_err(|e| Stop::new(Exit::Refused, e))?;
    if config.fips && alg != crate::digest::Alg::Sha256 {
        return Err(Stop::new(
            Exit::Usage,
            format!(
                "FIPS mode (fips = true) rolls back only SHA-256 journals, and run {} was journaled with {}; nothing was changed. Roll it back with a configuration without fips = true (--config)",
                header["run_id"].as_str().unwrap_or("?"),
                alg.name()
            ),
        ));
    }
    if alg == crate::digest::Alg::Sha256 && crate::crypto::VALIDATED && !config.fips {
        crate::crypto::enter_fips_mode(false).map_err(|e| Stop::new(Exit::Usage, e))?;
    }
    crate::digest::choose(alg).map_err(|e| Stop::new(Exit::Usage, e))?;
    let original = header["run_id"].as_str().unwrap_or_default().to_string();
    check_kind(&header, &original)?;
    let grants = grants_of(&header)?;
    let state_dir =
        crate::state_dir::prepare(&state_dir, &grants).map_err(|e| Stop::new(Exit::Usage, e))?;
    let grants = Arc::new(grants);
    let objects = Objects::open(&state_dir)
        .map_err(|e| Stop::new(Exit::Usage, format!("cannot open the object store: {e}")))?;
    let run_id = new_run_id();
    let lock = match req.dry_run {
        true => None,
        false => Some(
            RunLock::take(&state_dir, &format!("rollback {run_id} of {original}"))
                .map_err(|e| Stop::new(Exit::Refused, e))?,
        ),
    };
    phases.lap("guards");
    let mut effects = Effects::read(&loaded);
    phases.lap("effects");
    let earlier = others::read(&state_dir, &original, &header, &effects.intents);
    phases.lap("other runs");

    out.start(&json!({
        "type": "start",
        "run_id": run_id,
        "rollback_of": original,
        "dry_run": req.dry_run,
        "grants": header["grants"],
    }));

    // The names, before the run, of every intent's paths.
    let origins = in_force::origins(&effects.intents)?;
    let mut mtimes = tree_back::recorded_mtimes(&effects.intents);
    // A directory a later run changed entries of has that run's time: the
    // one it has now is put back after the rollback's own changes in it.
    mtimes.retain(|path, time| {
        use std::os::unix::fs::MetadataExt;
        if !earlier.later_dirs.contains(path) {
            return true;
        }
        std::fs::symlink_metadata(path)
            .map(|m| *time = (m.mtime(), m.mtime_nsec() as u32))
            .is_ok()
    });
    // A run killed between writing a temporary file and renaming it over
    // its target leaves that file behind: removing it is the undo's first
    // step, planned and journaled like the rest (a directory the run made
    // can then be removed).
    let orphans = match &earlier.complete {
        Some(_) => Vec::new(),
        None => find_orphans(&grants, &original, &effects, &earlier.unfinished_writes),
    };
    // The run's own leftover tells where it stopped: on the disk, or as
    // a cut-off rollback of it found it before removing it.
    let own = format!(".defops-tmp-{original}-");
    effects.stopped_at = orphans
        .iter()
        .filter(|o| o.ours)
        .filter_map(|o| o.path.file_name().strip_prefix(&own)?.parse().ok())
        .chain(earlier.stopped_at)
        .min();
    phases.lap("origins");
    let overlay = || {
        let mut ov = Overlay::new(
            grants.clone(),
            OverlayLimits {
                max_read: 1 << 30,
                max_plan_bytes: u64::MAX,
            },
        );
        ov.set_restoring();
        for o in orphans.iter().filter(|o| o.ours) {
            // What cannot be removed (a file with a second name, a
            // directory with something put in it since) is named below,
            // as is what is not the run's.
            let _ = match o.stat.kind {
                crate::disk::Kind::Dir => ov.remove_dir(&o.path),
                _ => ov.remove_file(&o.path),
            };
        }
        ov
    };
    let Planned {
        overlay,
        mut drifts,
        undone,
    } = match &earlier.complete {
        // Already back: nothing is in force any more.
        Some(_) => Planned {
            overlay: overlay(),
            drifts: Vec::new(),
            undone: 0,
        },
        None => plan_inverse(
            &effects,
            &origins,
            &overlay,
            &Images::new(&objects),
            &mtimes,
            earlier.started,
            req.force,
        )?,
    };
    // A leftover that could not be planned away (something put in it
    // since) is not the run's to remove, nor to leave unsaid.
    let mut orphans_planned = 0;
    for o in &orphans {
        if drifts.iter().any(|d| d.path == o.path.as_str()) {
            continue;
        }
        let found = match overlay.state(&o.path) {
            Ok(State::Absent) => {
                orphans_planned += 1;
                continue;
            }
            Ok(found) => found,
            // Not to be read through the plan (a second name, or larger
            // than a rollback reads): named as it was seen.
            Err(_) => seen_as(&o.stat),
        };
        drifts.push(Drift {
            path: o.path.to_string(),
            attribute: "presence",
            expected: Some(State::Absent),
            found,
        });
    }
    phases.lap("inverse plan");
    // What the rollback puts back must not lead out either: a link it
    // restores, or a directory it moves back with a link made in it since,
    // can lead outside the grants now that the tree has changed around it.
    let escapes = overlay.escapes(&|| false).map_err(|e| {
        Stop::new(
            Exit::Refused,
            format!("cannot check the rollback's plan: {e}"),
        )
    })?;
    // Not the rollback's doing, so not refused: a link that leads out where
    // it stands now, and one the run removed or moved away that led out
    // then (it is put back as it was).
    let now = Overlay::new(
        grants.clone(),
        OverlayLimits {
            max_read: 1 << 20,
            max_plan_bytes: 0,
        },
    );
    let led_out = match escapes.is_empty() {
        true => HashSet::new(),
        false => led_out_at_the_run(&effects.intents),
    };
    let escapes: Vec<_> = escapes
        .into_iter()
        .filter(|e| {
            let Some(target) = &e.target else {
                return true;
            };
            // Where the link is now (a directory moved back carries it).
            let here = overlay.physical(&e.path).unwrap_or_else(|| e.path.clone());
            let here_already = now.read_link(&here).is_ok_and(|t| t == *target)
                && now.escape(&here, target).is_some();
            !here_already && !led_out.contains(&(e.path.as_str(), target.as_str()))
        })
        .collect();
    phases.lap("containment");
    // Refused: journaled all the same (header, drift, outcome), so
    // monitoring and the report see the attempt. What other runs say
    // matters only while the run has effects in force.
    let in_force = earlier.complete.is_none() && !effects.intents.is_empty();
    let mut refusal = held_back(
        &original,
        in_force.then_some(&earlier),
        &escapes,
        &drifts,
        out,
    );
    // With --force, what it goes past is said and journaled all the same.
    let overridden = match req.force {
        true => refusal.take().map(|(_, why, reasons)| (reasons, why)),
        false => None,
    };
    if let Some((reasons, _)) = &overridden {
        out.note(&format!(
            "--force: {} {original} over: {}",
            if req.dry_run {
                "would roll back"
            } else {
                "rolling back"
            },
            crate::escape::line(reasons)
        ));
    }
    let refusal = refusal.map(|(stop, why, _)| (stop, why));
    let plan = overlay.into_plan();
    let planned_in = started.elapsed();
    // A refused rollback changes nothing: no plan is shown as if it would.
    if refusal.is_none() {
        out.plan(&plan, req.dry_run);
    }
    phases.lap("print");

    let mut journal = Journal::create(&state_dir, &run_id)
        .map_err(|e| Stop::new(Exit::Usage, format!("cannot write the journal: {e}")))?;
    let jerr = |e: std::io::Error| Stop::new(Exit::Usage, format!("cannot write the journal: {e}"));
    let mut own_header = json!({
        "type": "header",
        "format": journal::FORMAT,
        "kind": "rollback",
        "run_id": run_id,
        "rollback_of": original,
        "original_head": match &loaded.verdict { Verdict::Intact { head, .. } | Verdict::TornTail { head, .. } => json!(head), Verdict::Bad { .. } => Value::Null },
        "head_anchored": trusted == trusted_journal::Trusted::Anchored,
        "time": rfc3339(started_at),
        "grants": header["grants"],
        "dry_run": req.dry_run,
        "force": req.force,
        "host": hostname(),
        "user": user(),
        "version": env!("CARGO_PKG_VERSION"),
        "hash_alg": crate::digest::current().name(),
        "crypto": crate::crypto::describe(),
    });
    if let Some(lock) = &lock {
        own_header["sequence"] = json!(lock.sequence());
    }
    journal.append(own_header).map_err(jerr)?;
    if let Some((message, why)) = &overridden {
        // Said of a rollback that went ahead: what it went past.
        journal
            .append(json!({"type": "overridden", "reason": why, "reasons": message}))
            .map_err(jerr)?;
    }
    for d in &drifts {
        journal
            .append(json!({"type": "drift", "path": d.path, "attribute": d.attribute, "expected": d.expected_json(), "found": d.found}))
            .map_err(jerr)?;
    }
    if let Some((stop, why)) = refusal {
        journal
            .append(json!({
                "type": "outcome",
                "outcome": "refused",
                "refused_for": why,
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
    if let Some(id) = &earlier.complete {
        summary["rolled_back_by"] = json!(id);
    }
    if orphans_planned > 0 && !req.dry_run {
        summary["temporary_files_removed"] = json!(orphans_planned);
    }
    phases.lap("journal");
    let committed = match req.dry_run || plan.effects.is_empty() {
        true => Ok(()),
        false => {
            let kept = kept_by_run(&loaded, &state_dir, trusted, &effects.intents);
            commit::commit(
                &grants,
                &plan,
                &run_id,
                &mut journal,
                None,
                kept.as_ref(),
                None,
            )
            .map(|_| ())
        }
    };
    phases.lap("apply");
    let exit = match committed {
        Ok(()) if req.dry_run && !plan.effects.is_empty() => {
            summary["outcome"] = json!("planned");
            Exit::Success
        }
        Ok(()) => {
            // Restored and looked at again, unless a rollback before this
            // one brought the tree back (then nothing is touched).
            let not_back = match earlier.complete.is_some() || req.dry_run {
                true => Vec::new(),
                false => {
                    let before = tree_back::before_run(&effects.intents, &origins);
                    tree_back::look_again(&grants, &before, &mtimes)
                }
            };
            if not_back.is_empty() {
                summary["outcome"] = json!(match plan.effects.is_empty() {
                    true => "nothing-to-undo",
                    false => "rolled-back",
                });
                Exit::Success
            } else {
                let list: Vec<String> = not_back.iter().map(|d| d.to_string()).collect();
                summary["outcome"] = json!("not-restored");
                summary["error"] = json!(format!(
                    "the tree is not as it was before {original}: {} path(s) differ: {}; look at them, then restore them by hand or run `defops-wasm rollback {original} --force`",
                    list.len(),
                    list.join("; ")
                ));
                Exit::Usage
            }
        }
        Err(e) => {
            let drift = matches!(e, commit::CommitError::Drift { .. });
            summary["outcome"] = json!(if drift { "refused" } else { "error" });
            summary["changed"] = json!(e.applied());
            summary["error"] = json!(format!(
                "rollback stopped: {e}; run `defops-wasm rollback {original}` again once the cause is fixed"
            ));
            if drift { Exit::Refused } else { Exit::Usage }
        }
    };
    phases.lap("look again");
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
    phases.lap("record");
    let mut timings = phases.to_json();
    // Kept from earlier summaries: up to the plan, and after it.
    timings["plan"] = json!(planned_in.as_secs_f64() * 1e3);
    timings["commit"] = json!((started.elapsed() - planned_in).as_secs_f64() * 1e3);
    summary["timings_ms"] = timings;
    summary["head"] = json!(journal.head());
    summary["journal"] = json!(journal.path().display().to_string());
    summary["elapsed_ms"] = json!(started.elapsed().as_secs_f64() * 1e3);
    out.summary(&summary);
    phases.lap("output");
    phases.log("rollback");
    crate::drop_later((loaded, plan, origins, mtimes));
    Ok(exit)
}

fn fs_stop(e: FsError) -> Stop {
    Stop::new(Exit::Refused, format!("cannot plan the rollback: {e}"))
}

/// The files the run kept for its rollback (see [`commit::Kept`]): only
/// for a journal in this state directory's `runs/`, never one given from
/// elsewhere.
fn kept_by_run(
    loaded: &journal::Loaded,
    state_dir: &std::path::Path,
    trusted: trusted_journal::Trusted,
    intents: &[&Value],
) -> Option<commit::Kept> {
    let run_dir = loaded.path.parent()?;
    let ours = trusted == trusted_journal::Trusted::StateDir
        || std::fs::canonicalize(run_dir)
            .ok()
            .and_then(|d| Some(d.parent()? == std::fs::canonicalize(state_dir.join("runs")).ok()?))
            .unwrap_or(false);
    ours.then(|| commit::Kept::of(run_dir, intents)).flatten()
}

/// What `lstat` showed of a path, as a state (a file's content unread).
fn seen_as(st: &crate::disk::Stat) -> State {
    let (mode, uid, gid) = (st.mode, st.uid, st.gid);
    match st.kind {
        crate::disk::Kind::File => State::File {
            size: st.size,
            digest: String::new(),
            mode,
            uid,
            gid,
        },
        crate::disk::Kind::Dir => State::Dir { mode, uid, gid },
        _ => State::Other,
    }
}

/// An effect whose file or directory is made beside its target, as
/// `.defops-tmp-RUN-N`, and renamed into place.
fn made_beside(intent: &Value) -> bool {
    matches!(intent["op"].as_str(), Some("write" | "create-dir"))
}

/// An effect without a `done` record whose new file or directory was
/// made beside its target (`.defops-tmp-RUN-N`), of the run or of a
/// rollback of it cut off.
#[derive(Clone)]
pub(crate) struct Pending {
    pub run: String,
    pub path: String,
    pub n: u64,
    /// The state the effect was to leave at `path`.
    pub after: Option<State>,
}

/// A `.defops-tmp-RUN-N` found beside a pending effect's target.
struct Orphan {
    path: VPath,
    stat: crate::disk::Stat,
    /// What the effect could have left there: an empty directory for a
    /// new one; for a write, a file of one name, the mode it is made with
    /// (0600) or the one planned, and the planned content or fewer bytes
    /// (cut short; the content is not kept to compare them with).
    /// Anything else is not the run's to remove.
    ours: bool,
}

/// The temporary files and directories a killed run, or a rollback of it
/// cut off, left. Only an effect without a `done` record can have left one
/// (a `done` follows its rename), so for a run that finished no directory
/// is listed. Each directory written in is listed once, not asked about
/// every effect's name.
fn find_orphans(
    grants: &Grants,
    run_id: &str,
    effects: &in_force::Effects<'_>,
    unfinished: &[Pending],
) -> Vec<Orphan> {
    use std::collections::BTreeMap;
    let own = effects
        .intents
        .iter()
        .filter(|i| made_beside(i))
        .filter_map(|i| {
            Some(Pending {
                run: run_id.to_string(),
                path: i["path"].as_str()?.to_string(),
                n: i["n"].as_u64()?,
                after: state(&i["after"]),
            })
        })
        .filter(|p| !effects.is_done(p.n));
    let mut names: BTreeMap<VPath, BTreeMap<String, Option<State>>> = BTreeMap::new();
    for p in own.chain(unfinished.iter().cloned()) {
        if let Some(parent) = VPath::parse(&p.path).ok().and_then(|p| p.parent()) {
            names
                .entry(parent)
                .or_default()
                .insert(format!(".defops-tmp-{}-{}", p.run, p.n), p.after);
        }
    }
    let mut found = Vec::new();
    for (parent, names) in &names {
        let Some(grant) = grants.find(parent) else {
            continue;
        };
        let Ok(entries) =
            crate::disk::locate(grant, parent).and_then(|d| d.read_dir(&mut || Ok(())))
        else {
            continue;
        };
        for (name, _) in entries {
            let Ok(name) = name else { continue };
            let Some(after) = names.get(&name) else {
                continue;
            };
            let path = parent.join(&name);
            let Ok(loc) = crate::disk::locate(grant, &path) else {
                continue;
            };
            let Ok(Some(stat)) = loc.lstat() else {
                continue;
            };
            let ours = match (stat.kind, after) {
                (crate::disk::Kind::Dir, Some(State::Dir { .. })) => true,
                (
                    crate::disk::Kind::File,
                    Some(State::File {
                        size, digest, mode, ..
                    }),
                ) => {
                    stat.nlink == 1
                        && (stat.mode & !0o600 == 0 || stat.mode == *mode)
                        && (stat.size < *size
                            || stat.size == *size
                                && loc.read_file(*size, &mut || Ok(())).is_ok_and(|bytes| {
                                    crate::digest::current().hex(&bytes) == *digest
                                }))
                }
                _ => false,
            };
            found.push(Orphan { path, stat, ours });
        }
    }
    found
}

/// The symlinks (path, target) the run removed or moved away that led
/// outside the grants then (their intents say so).
fn led_out_at_the_run<'a>(intents: &[&'a Value]) -> HashSet<(&'a str, &'a str)> {
    intents
        .iter()
        .filter(|i| i["link_led_out"] == json!(true) && i["before"]["kind"] == "symlink")
        .filter_map(|i| {
            let at = match i["op"].as_str() {
                Some("remove-file") => &i["path"],
                Some("rename") => &i["from"],
                _ => return None,
            };
            Some((at.as_str()?, i["before"]["target"].as_str()?))
        })
        .collect()
}
