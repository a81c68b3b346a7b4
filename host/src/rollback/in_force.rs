//! Which effects of a run are in force, from its journal first.
//!
//! An effect with a `done` record was applied: it is in force, whatever
//! the disk shows now. A run that wrote its `outcome` stopped where its
//! `done` records stop. Only a run cut off without an outcome leaves a
//! window: the effects after its last `done` record (one after a kill,
//! several after a power loss, since `done` records are synced at the end).
//! They were applied in order, so the disk shows "the first j of them
//! applied" for one j, and that j is the only thing read from the disk.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::{Drift, Stop, fs_stop, state, vpath};
use crate::grants::VPath;
use crate::journal::Loaded;
use crate::overlay::Overlay;
use crate::plan::State;

/// A run's effects as its journal tells them.
pub struct Effects<'a> {
    /// Every intent of the real run, by `n`.
    pub intents: Vec<&'a Value>,
    done: BTreeMap<u64, &'a Value>,
    /// How many intents (from the first) have a `done` record.
    pub done_count: usize,
    /// The run wrote its outcome: nothing after the last `done` was applied.
    pub finished: bool,
    /// The effect whose new file or directory the run left beside its
    /// target (`.defops-tmp-RUN-N`, not renamed into place): the run
    /// stopped there, so that effect was not applied, nor any after it.
    pub stopped_at: Option<u64>,
}

impl<'a> Effects<'a> {
    pub fn read(loaded: &'a Loaded) -> Effects<'a> {
        // One pass over the records.
        let mut done = BTreeMap::new();
        let mut intents = Vec::new();
        let mut finished = false;
        for r in &loaded.records {
            match r["type"].as_str() {
                Some("done") => {
                    if let Some(n) = r["n"].as_u64() {
                        done.insert(n, r);
                    }
                }
                Some("intent") if r["planned"] != json!(true) => intents.push(r),
                Some("outcome") => finished = true,
                _ => {}
            }
        }
        // Journaled in order already, as a rule.
        if !intents.is_sorted_by_key(|i| i["n"].as_u64()) {
            intents.sort_by_key(|i| i["n"].as_u64());
        }
        // Effects are applied in order: a `done` for n means all before it.
        let done_count = match done.keys().next_back() {
            Some(last) => intents
                .iter()
                .take_while(|i| i["n"].as_u64().is_some_and(|n| n <= *last))
                .count(),
            None => 0,
        };
        Effects {
            intents,
            done,
            done_count,
            finished,
            stopped_at: None,
        }
    }

    /// The effects after the last `done` record that may have been applied.
    pub fn window(&self) -> &[&'a Value] {
        match self.finished {
            true => &[],
            false => &self.intents[self.done_count..],
        }
    }

    /// Whether effect `n` has a `done` record: then it was applied in
    /// full (for a write, its temporary file renamed into place).
    pub fn is_done(&self, n: u64) -> bool {
        self.done.contains_key(&n)
    }

    /// The state effect `i` left at `key` (`after`, `after_to`): as
    /// observed in its `done` record, else as planned.
    pub fn after(&self, i: &Value, key: &str) -> Option<State> {
        let n = i["n"].as_u64().unwrap_or(u64::MAX);
        self.done
            .get(&n)
            .and_then(|d| state(&d[key]))
            .or_else(|| state(&i[key]))
    }

    /// How many of the window's effects the disk may show applied, most
    /// first: every j where the last of the first j shows its after-state
    /// and the next its before-state. (A directory's state says nothing of
    /// its entries, so more than one j can pass; undoing tells them apart.)
    /// None: the paths of the window's first effect changed since, named
    /// as drift.
    ///
    /// Where the run left an effect's new file beside its target
    /// ([`Effects::stopped_at`]), that effect was not applied: its paths
    /// must show their before-state (else they changed since, and are
    /// named as drift, whatever stands there now), and none after it is
    /// counted.
    pub fn window_candidates(&self, ov: &Overlay) -> Result<Result<Vec<usize>, Vec<Drift>>, Stop> {
        let window = self.window();
        let stopped = match self.stopped(ov)? {
            Some((_, drifts)) if !drifts.is_empty() => return Ok(Err(drifts)),
            Some((k, _)) if k >= self.done_count && !window.is_empty() => Some(k - self.done_count),
            _ => None,
        };
        let mut out = Vec::new();
        for j in (0..=stopped.unwrap_or(window.len())).rev() {
            let last_applied = j == 0 || self.shows(ov, window[j - 1], Which::After)?;
            let next_pending = j == window.len() || self.shows(ov, window[j], Which::Before)?;
            if last_applied && next_pending {
                out.push(j);
            }
        }
        if !out.is_empty() {
            return Ok(Ok(out));
        }
        Ok(Err(Self::drift_of(ov, window[0])?))
    }

    /// The index among the intents of the effect the run stopped at
    /// ([`Effects::stopped_at`]), with how its paths differ from their
    /// before-state now: it was never applied, so any difference is not
    /// the run's.
    pub fn stopped(&self, ov: &Overlay) -> Result<Option<(usize, Vec<Drift>)>, Stop> {
        let Some(k) = self
            .stopped_at
            .and_then(|n| self.intents.iter().position(|i| i["n"].as_u64() == Some(n)))
        else {
            return Ok(None);
        };
        let drifts = match self.shows(ov, self.intents[k], Which::Before)? {
            true => Vec::new(),
            false => Self::drift_of(ov, self.intents[k])?,
        };
        Ok(Some((k, drifts)))
    }

    /// How the paths of intent `i` differ from its before-state now.
    fn drift_of(ov: &Overlay, i: &Value) -> Result<Vec<Drift>, Stop> {
        let mut drifts = Vec::new();
        for (key, expected) in paths_of(i) {
            let path = vpath(&i[key])?;
            let expected = state(&i[expected]).unwrap_or(State::Absent);
            let found = ov.state(&path).map_err(fs_stop)?;
            if let Some(attribute) = expected.difference(&found) {
                drifts.push(Drift {
                    path: path.to_string(),
                    attribute,
                    expected: Some(expected),
                    found,
                });
            }
        }
        Ok(drifts)
    }

    fn shows(&self, ov: &Overlay, i: &Value, which: Which) -> Result<bool, Stop> {
        let (main, to) = match which {
            Which::Before => (state(&i["before"]), state(&i["before_to"])),
            Which::After => (self.after(i, "after"), self.after(i, "after_to")),
        };
        let now = |p: &Value| -> Result<State, Stop> { ov.state(&vpath(p)?).map_err(fs_stop) };
        if i["op"] == "rename" {
            let from_expected = match which {
                Which::After => Some(State::Absent),
                Which::Before => main,
            };
            return Ok(Some(now(&i["from"])?) == from_expected && Some(now(&i["to"])?) == to);
        }
        Ok(Some(now(&i[main_key(i)])?) == main)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Which {
    Before,
    After,
}

/// The field naming the path an intent is about.
pub fn main_key(i: &Value) -> &'static str {
    match i["op"].as_str() {
        Some("symlink") => "link",
        Some("rename") => "from",
        _ => "path",
    }
}

/// The path fields of an intent with the field of their before-state.
pub fn paths_of(i: &Value) -> Vec<(&'static str, &'static str)> {
    let mut v = vec![(main_key(i), "before")];
    if i["op"] == "rename" {
        v.push(("to", "before_to"));
    }
    v
}

/// The names, before the run, of each intent's paths (`None`: made by the
/// run itself), in the order of [`paths_of`].
pub fn origins(intents: &[&Value]) -> Result<Vec<Vec<Option<VPath>>>, Stop> {
    let mut renames: Vec<(VPath, VPath)> = Vec::new();
    let mut out = Vec::with_capacity(intents.len());
    for i in intents {
        let mut these = Vec::new();
        for (key, _) in paths_of(i) {
            these.push(crate::commit::origin(&vpath(&i[key])?, &renames));
        }
        if i["op"] == "rename" {
            renames.push((vpath(&i["from"])?, vpath(&i["to"])?));
        }
        out.push(these);
    }
    Ok(out)
}
