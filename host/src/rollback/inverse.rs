//! The inverse of one effect, planned on the overlay: undone when its
//! path shows the state the effect left, drift otherwise; after a rollback
//! that was cut off, skipped when already undone and finished when undone
//! halfway.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;

use super::{Drift, Stop, fs_stop, in_force, state, vpath};
use crate::exit::Exit;
use crate::grants::VPath;
use crate::journal::Objects;
use crate::overlay::{Exact, Overlay};
use crate::plan::State;

pub(super) enum Step {
    Undone,
    Skipped,
    Drifted(Vec<Drift>),
}

/// How to undo one intent.
pub(super) struct Undo {
    /// The state the effect left (observed in its `done` record, else as
    /// planned), and for a rename the destination's.
    pub(super) after: Option<State>,
    pub(super) after_to: Option<State>,
    /// The recorded mtimes of its path and destination, by their names
    /// before the run.
    pub(super) mtime: Option<(i64, u32)>,
    pub(super) mtime_to: Option<(i64, u32)>,
    /// An unfinished rollback may have undone it already: found in its
    /// before-state, it is skipped. Otherwise it must show its after-state.
    pub(super) may_be_undone: bool,
    pub(super) force: bool,
}

/// The before-images of the object store, each read and checked once:
/// a run that wrote many files alike has one object for all of them.
pub(super) struct Images<'a> {
    objects: &'a Objects,
    read: RefCell<HashMap<String, Arc<Vec<u8>>>>,
}

impl<'a> Images<'a> {
    pub(super) fn new(objects: &'a Objects) -> Images<'a> {
        Images {
            objects,
            read: RefCell::default(),
        }
    }

    fn get(&self, hash: &str) -> Result<Arc<Vec<u8>>, Stop> {
        if let Some(bytes) = self.read.borrow().get(hash) {
            return Ok(bytes.clone());
        }
        let bytes = Arc::new(
            self.objects
                .get(hash)
                .map_err(|e| Stop::new(Exit::Usage, e))?,
        );
        self.read
            .borrow_mut()
            .insert(hash.to_string(), bytes.clone());
        Ok(bytes)
    }
}

/// Plans the inverse of one intent on the overlay.
pub(super) fn undo(
    intent: &Value,
    how: &Undo,
    ov: &mut Overlay,
    images: &Images<'_>,
) -> Result<Step, Stop> {
    let force = how.force;
    let op = intent["op"].as_str().unwrap_or_default();
    let before = state(&intent["before"]).unwrap_or(State::Absent);
    let after = how.after.clone().unwrap_or(State::Absent);
    let content = |key: &str| images.get(intent[key].as_str().unwrap_or_default());
    if op == "rename" {
        let (from, to) = (vpath(&intent["from"])?, vpath(&intent["to"])?);
        let before_to = state(&intent["before_to"]).unwrap_or(State::Absent);
        let after_to = how.after_to.clone().unwrap_or_else(|| before.clone());
        let (now_from, now_to) = (
            ov.state(&from).map_err(fs_stop)?,
            ov.state(&to).map_err(fs_stop)?,
        );
        if how.may_be_undone && now_from == before {
            // Undone by the rollback that was cut off, maybe halfway: the
            // source is back; what the rename replaced maybe not yet.
            if now_to == before_to {
                return Ok(Step::Skipped);
            }
            if now_to == State::Absent {
                restore(ov, &to, &before_to, how.mtime_to, || content("object_to"))?;
                return Ok(Step::Undone);
            }
            if only_meta_differs(&before_to, &now_to) {
                restore_meta(ov, &to, &before_to)?;
                return Ok(Step::Undone);
            }
        }
        if !(force || now_to == after_to && now_from == State::Absent) {
            let mut d = Vec::new();
            if let Some(attribute) = after_to.difference(&now_to) {
                d.push(Drift {
                    path: to.to_string(),
                    attribute,
                    expected: Some(after_to),
                    found: now_to,
                });
            }
            if let Some(attribute) = State::Absent.difference(&now_from) {
                d.push(Drift {
                    path: from.to_string(),
                    attribute,
                    expected: Some(State::Absent),
                    found: now_from,
                });
            }
            return Ok(Step::Drifted(d));
        }
        ov.rename(&to, &from).map_err(fs_stop)?;
        restore(ov, &to, &before_to, how.mtime_to, || content("object_to"))?;
        return Ok(Step::Undone);
    }
    let path = vpath(&intent[in_force::main_key(intent)])?;
    let now = ov.state(&path).map_err(fs_stop)?;
    if how.may_be_undone && now == before {
        return Ok(Step::Skipped);
    }
    // Put back halfway by the rollback that was cut off: the entry is
    // there, its mode or owner not yet.
    if how.may_be_undone && now != after && only_meta_differs(&before, &now) {
        restore_meta(ov, &path, &before)?;
        return Ok(Step::Undone);
    }

    if now != after && !force {
        let attribute = after.difference(&now).unwrap_or("state");
        return Ok(Step::Drifted(vec![Drift {
            path: path.to_string(),
            attribute,
            expected: Some(after),
            found: now,
        }]));
    }
    // A directory the run made is removed: anything put in it since is
    // drift, named entry by entry.
    if matches!(now, State::Dir { .. }) && !matches!(before, State::Dir { .. }) && !force {
        let strangers = entries_drift(ov, &path)?;
        if !strangers.is_empty() {
            return Ok(Step::Drifted(strangers));
        }
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
            restore(ov, &path, &before, how.mtime, || content("object"))?;
        }
    }
    Ok(Step::Undone)
}

/// `found` is `expected` but for its mode or owner.
fn only_meta_differs(expected: &State, found: &State) -> bool {
    matches!(expected.difference(found), Some("mode" | "owner"))
}

/// The first directory above one of the intent's paths that is not one
/// now, as drift.
pub(super) fn missing_directory(intent: &Value, ov: &Overlay) -> Result<Option<Drift>, Stop> {
    for (key, _) in in_force::paths_of(intent) {
        let path = vpath(&intent[key])?;
        let mut above: Vec<VPath> = std::iter::successors(path.parent(), |p| p.parent()).collect();
        above.reverse();
        for dir in above {
            // Above the grants: not the overlay's to say.
            let Ok(found) = ov.state(&dir) else { continue };
            if !matches!(found, State::Dir { .. }) {
                return Ok(Some(Drift {
                    path: dir.to_string(),
                    attribute: if found == State::Absent {
                        "presence"
                    } else {
                        "type"
                    },
                    expected: None,
                    found,
                }));
            }
        }
    }
    Ok(None)
}

/// The entries of directory `path`, each named as drift: the run left it
/// empty (its newer effects are undone on the overlay already).
fn entries_drift(ov: &Overlay, path: &VPath) -> Result<Vec<Drift>, Stop> {
    let mut out = Vec::new();
    for (name, _) in ov.list_dir(path).map_err(fs_stop)? {
        let p = path.join(&name);
        out.push(Drift {
            path: p.to_string(),
            attribute: "presence",
            expected: Some(State::Absent),
            found: ov.state(&p).map_err(fs_stop)?,
        });
    }
    Ok(out)
}

/// Puts `before` back at `path` (absent there now, or a file to overwrite).
fn restore(
    ov: &mut Overlay,
    path: &VPath,
    before: &State,
    mtime: Option<(i64, u32)>,
    content: impl FnOnce() -> Result<Arc<Vec<u8>>, Stop>,
) -> Result<(), Stop> {
    match before {
        State::Absent | State::Other => return Ok(()),
        State::File { mode, uid, gid, .. } => {
            let exact = Exact {
                mode: *mode,
                uid: *uid,
                gid: *gid,
                mtime,
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
        // The owner first: the kernel drops set-user-ID (and set-group-ID)
        // when a file changes owner, so the mode goes back after it.
        State::File { mode, uid, gid, .. } | State::Dir { mode, uid, gid } => {
            ov.set_owner(path, *uid, *gid).map_err(fs_stop)?;
            ov.set_mode(path, *mode).map_err(fs_stop)
        }
        State::Symlink { uid, gid, .. } => ov.set_owner(path, *uid, *gid).map_err(fs_stop),
        State::Absent | State::Other => Ok(()),
    }
}
