//! What the state directory's other journals say about the run being
//! rolled back: its earlier rollbacks, and the later runs still in force on
//! its paths.
//!
//! "Later" is the order runs and rollbacks changed the disk: the header's
//! `sequence`, taken under the lock ([`crate::policy::RunLock::sequence`]),
//! not the run id (made before the lock is taken, from a clock that can go
//! back). Journals written before there was one sort before every journal
//! with one, by id.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::{Value, json};

use super::in_force::paths_of;
use crate::journal::{self, Verdict};

/// What the other journals say.
#[derive(Default)]
pub struct Others {
    /// The last rollback of the run brought the tree back: its run id.
    pub complete: Option<String>,
    /// A rollback of it started changing the disk since, and did not finish.
    pub started: bool,
    /// Real runs after it, not rolled back since, that touched one of its
    /// paths (see [`Paths::touched_by`]): each with the first such path,
    /// oldest first.
    pub later: Vec<(String, String)>,
    /// The directories whose entries those later runs (all of them, on its
    /// paths or not) changed: their modification times are theirs now, not
    /// the run's to put back.
    pub later_dirs: BTreeSet<String>,
    /// Entries of `runs/` not counted (not this user's alone, see
    /// [`journal::not_own`]): whether they changed the same paths cannot be
    /// told.
    pub uncounted: Vec<String>,
    /// Journals that could be later runs (or rollbacks of them) but whose
    /// header cannot be read or that fail verification: the same.
    pub unverified: Vec<String>,
    /// Journals that cannot be read but are older than the run, by id and
    /// by when they were last written: not counted, said.
    pub skipped: Vec<String>,
    /// Runs in force on its paths (as `later`) whose sequence number
    /// another journal has too (a lock file restored or edited, a run
    /// directory copied): whether they came after it cannot be told.
    pub ambiguous: Vec<(String, String)>,
    /// Rollbacks of other, earlier runs after it (forced past it) that
    /// touched its paths: changes nothing can undo.
    pub later_rollbacks: Vec<(String, String)>,
    /// The writes and directories made without a `done` record of its
    /// rollbacks that did not finish: each may have left its temporary
    /// file or directory.
    pub unfinished_writes: Vec<super::Pending>,
    /// The effect of the run whose leftover (`.defops-tmp-RUN-N`) a
    /// rollback of it planned to remove: the run stopped there.
    pub stopped_at: Option<u64>,
}

/// Reads the state directory's other journals: the real rollbacks of
/// `original` (whose journal header is `header`), and the later real runs
/// still in force. `intents` are `original`'s.
pub fn read(state_dir: &Path, original: &str, header: &Value, intents: &[&Value]) -> Others {
    let mut others = Others {
        uncounted: journal::not_own(state_dir),
        ..Others::default()
    };
    let ids = journal::list(state_dir).unwrap_or_default();
    // A journal from elsewhere (given by path) has no place among these:
    // every run here that has one is taken as later.
    let mine = match ids.iter().any(|id| id == original) {
        true => journal::change_order(header, original),
        false => (false, 0, original.to_string()),
    };
    // A later run wrote all of its journal after the run's last record (it
    // took the lock once the run let it go): one last written before that
    // is not later, header or not.
    let last_written = |p: &Path| std::fs::symlink_metadata(p).and_then(|m| m.modified()).ok();
    let mine_written = match mine.0 {
        true => last_written(&state_dir.join("runs").join(original).join("journal.jsonl")),
        false => None,
    };
    let mut headers = Vec::new();
    // Each sequence number with how many journals have it.
    let mut numbers = std::collections::BTreeMap::new();
    if mine.0 {
        *numbers.entry(mine.1).or_insert(0) += 1;
    }
    for id in ids.into_iter().filter(|id| id != original) {
        let path = state_dir.join("runs").join(&id).join("journal.jsonl");
        // The header alone says what it is: most are not needed.
        let Some(h) = journal::first_record(&path) else {
            // Empty: killed before its header, it changed nothing. Older by
            // its id and last written before the run's last record: not
            // later (a name is not changed by a copy or a `touch`; a time
            // is not by a clock set back between two runs).
            let empty = std::fs::symlink_metadata(&path).is_ok_and(|m| m.len() == 0);
            let before = id.as_str() < original
                && mine_written.is_some_and(|t| last_written(&path).is_some_and(|w| w < t));
            if before {
                others.skipped.push(id);
            } else if !empty {
                others.unverified.push(id);
            }
            continue;
        };
        if h["dry_run"] == json!(true) {
            continue;
        }
        let order = journal::change_order(&h, &id);
        if order.0 {
            *numbers.entry(order.1).or_insert(0) += 1;
        }
        headers.push((order, h, path));
    }
    headers.sort_by(|a, b| a.0.cmp(&b.0));
    let repeated = |order: &(bool, u64, String)| order.0 && numbers[&order.1] > 1;

    // Made when a later run is found: most rollbacks are of the last run.
    let mut paths: Option<Paths> = None;
    // Later runs in force (or maybe later: their number is repeated), with
    // the first path of the run's they touched and the directories whose
    // time they changed.
    let mut later: Vec<(String, Option<String>, BTreeSet<String>, bool)> = Vec::new();
    for (order, h, path) in headers {
        let id = order.2.clone();
        let of = h["rollback_of"].as_str();
        let maybe = repeated(&order);
        let later_run_of = |l: &(String, Option<String>, BTreeSet<String>, bool)| Some(&*l.0) == of;
        let wanted = match h["kind"].as_str() {
            Some("rollback") => {
                of == Some(original) || order > mine || later.iter().any(later_run_of)
            }
            Some("run") => order > mine || maybe,
            _ => false,
        };
        if !wanted {
            continue;
        }
        let Some(loaded) = journal::load_without(&path, None, super::UNUSED)
            .ok()
            .filter(|l| !matches!(l.verdict, Verdict::Bad { .. }))
        else {
            others.unverified.push(id);
            continue;
        };
        let back = loaded.of("outcome").last().is_some_and(|o| {
            matches!(
                o["outcome"].as_str(),
                Some("rolled-back" | "nothing-to-undo")
            )
        });
        if h["kind"] == "run" {
            let paths = paths.get_or_insert_with(|| Paths::of(intents));
            let (touched, dirs) = what_it_touched(&loaded, paths);
            later.push((id, touched, dirs, maybe));
        } else if of != Some(original) {
            if later.iter().any(later_run_of) {
                // A later run's: once it is back, the disk is as it found it.
                if back {
                    later.retain(|l| !later_run_of(l));
                }
            } else {
                // Of an earlier run, after the run (forced past it): a
                // change of its own, which nothing undoes.
                let paths = paths.get_or_insert_with(|| Paths::of(intents));
                let (touched, dirs) = what_it_touched(&loaded, paths);
                others.later_dirs.extend(dirs);
                if let Some(p) = touched {
                    others.later_rollbacks.push((id, p));
                }
            }
        } else if back {
            others.complete = Some(id);
            others.started = false;
        } else if loaded.of("intent").next().is_some() {
            others.complete = None;
            others.started = true;
            let own = format!(".defops-tmp-{original}-");
            let removed = loaded
                .of("intent")
                .filter(|i| matches!(i["op"].as_str(), Some("remove-file" | "remove-dir")))
                .filter_map(|i| {
                    let name = i["path"].as_str()?.rsplit('/').next()?;
                    name.strip_prefix(&own)?.parse::<u64>().ok()
                });
            others.stopped_at = others.stopped_at.into_iter().chain(removed).min();
            let done: BTreeSet<u64> = loaded.of("done").filter_map(|d| d["n"].as_u64()).collect();
            for i in loaded.of("intent").filter(|i| super::made_beside(i)) {
                if let (Some(path), Some(n)) = (i["path"].as_str(), i["n"].as_u64())
                    && !done.contains(&n)
                {
                    others.unfinished_writes.push(super::Pending {
                        run: id.clone(),
                        path: path.to_string(),
                        n,
                        after: super::state(&i["after"]),
                    });
                }
            }
        }
    }
    for (id, touched, dirs, maybe) in later {
        others.later_dirs.extend(dirs);
        match (touched, maybe) {
            (Some(p), false) => others.later.push((id, p)),
            (Some(p), true) => others.ambiguous.push((id, p)),
            (None, _) => {}
        }
    }
    others
}

/// The first path of `paths` an applied or planned change in `loaded`
/// touched, and the directories whose entries its applied changes changed
/// (their time is its).
fn what_it_touched(
    loaded: &journal::Loaded,
    paths: &Paths<'_>,
) -> (Option<String>, BTreeSet<String>) {
    let mut touched = None;
    let mut dirs = BTreeSet::new();
    let done: BTreeSet<u64> = loaded.of("done").filter_map(|d| d["n"].as_u64()).collect();
    for i in loaded.of("intent").filter(|i| i["planned"] != json!(true)) {
        // Applied, and changing entries (not only a mode or owner).
        let dated =
            !meta_only(i["op"].as_str()) && i["n"].as_u64().is_some_and(|n| done.contains(&n));
        for (key, _) in paths_of(i) {
            let Some(p) = i[key].as_str() else { continue };
            if let Some((dir, _)) = p.rsplit_once('/').filter(|_| dated) {
                dirs.insert(if dir.is_empty() { "/" } else { dir }.to_string());
            }
            if touched.is_none() && paths.touched_by(p, i["op"].as_str()) {
                touched = Some(p.to_string());
            }
        }
    }
    (touched, dirs)
}

/// The paths of a run's intents.
struct Paths<'a> {
    all: BTreeSet<&'a str>,
    /// Those an intent made, removed, replaced or moved: not only changed
    /// the mode or owner of.
    structural: BTreeSet<&'a str>,
}

impl<'a> Paths<'a> {
    fn of(intents: &[&'a Value]) -> Paths<'a> {
        let mut paths = Paths {
            all: BTreeSet::new(),
            structural: BTreeSet::new(),
        };
        for i in intents {
            for (key, _) in paths_of(i) {
                let Some(p) = i[key].as_str() else { continue };
                paths.all.insert(p);
                if !meta_only(i["op"].as_str()) {
                    paths.structural.insert(p);
                }
            }
        }
        paths
    }

    /// Whether an effect `op` on `path` touched the run's paths: the same
    /// path; one above one of them, unless it only changed its mode or
    /// owner (what is below stays as it was); or one below a path the run
    /// made, removed or moved (undoing the run would take it along).
    fn touched_by(&self, path: &str, op: Option<&str>) -> bool {
        self.all.contains(path)
            || (!meta_only(op) && below(&self.all, path))
            || above(&self.structural, path)
    }
}

fn meta_only(op: Option<&str>) -> bool {
    matches!(op, Some("set-mode" | "set-owner"))
}

/// Whether one of `paths` is below `path`.
fn below(paths: &BTreeSet<&str>, path: &str) -> bool {
    // The first path after `path/` in order starts with it, if any does.
    let prefix = format!("{}/", path.trim_end_matches('/'));
    paths
        .range(prefix.as_str()..)
        .next()
        .is_some_and(|p| p.starts_with(&prefix))
}

/// Whether one of `paths` is above `path`.
fn above(paths: &BTreeSet<&str>, path: &str) -> bool {
    let mut p = path;
    while let Some(i) = p.rfind('/') {
        p = &p[..i];
        if paths.contains(if p.is_empty() { "/" } else { p }) {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn intent(op: &str, path: &str) -> Value {
        json!({"type": "intent", "op": op, "path": path})
    }

    #[test]
    fn what_a_later_effect_touches() {
        let write = intent("write", "/g/d/f");
        let made = intent("create-dir", "/g/n");
        let chmod = intent("set-mode", "/g/m");
        let renamed = json!({"type": "intent", "op": "rename", "from": "/g/a", "to": "/g/b"});
        let intents = [&write, &made, &chmod, &renamed];
        let paths = Paths::of(&intents);
        let touched = |p: &str, op: &str| paths.touched_by(p, Some(op));
        // The same path, whatever either did.
        assert!(touched("/g/d/f", "set-mode"));
        assert!(touched("/g/m", "write"));
        assert!(touched("/g/b", "remove-file"));
        // Above one: moved or removed, yes; its mode changed, no.
        assert!(touched("/g/d", "rename"));
        assert!(touched("/g", "remove-dir"));
        assert!(!touched("/g/d", "set-mode"));
        assert!(!touched("/", "set-owner"));
        // Below one the run made or moved, yes; below one whose mode it
        // changed, no.
        assert!(touched("/g/n/x", "write"));
        assert!(touched("/g/a/x", "write"));
        assert!(touched("/g/b/x/y", "write"));
        assert!(!touched("/g/m/x", "write"));
        // Neighbours and names that only start alike.
        assert!(!touched("/g/d/e", "write"));
        assert!(!touched("/g/d-x", "write"));
        assert!(!touched("/g/d/f2", "write"));
        assert!(!touched("/g/nn/x", "write"));
    }
}
