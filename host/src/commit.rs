//! The one executor that applies a plan to the disk, write-ahead.
//!
//! For a plan of any size the durability is batched, so the number of syncs
//! does not grow with the number of effects:
//!
//! 1. Every effect whose path the plan has not touched earlier is checked
//!    against the disk (from descriptors). If anything changed since the fix
//!    planned, nothing is written at all.
//! 2. The before-images (content of every file about to be replaced or
//!    removed) go to the object store: one sync of its file system.
//! 3. One intent record per effect goes to the journal: one sync.
//! 4. Each effect is checked again and applied (a file atomically: temporary
//!    file in the same directory, then rename); a `done` record with the
//!    observed after-state is appended as it completes.
//! 5. One sync of each file system the grants live on, then one of the
//!    journal.
//!
//! Rollback is this same executor fed the inverse plan.

use std::collections::{HashMap, HashSet};
use std::io;

use serde_json::{Value, json};

use crate::disk::{self, Loc};
use crate::grants::{Access, Grants, VPath};
use crate::journal::{Journal, Objects};
use crate::plan::{Effect, Op, Plan, State};
use crate::policy::Abort;

/// Where a run keeps the files it replaces (`runs/RUN/kept/N` for its
/// effect N, on the file system of the grants), so that its rollback
/// renames them back rather than writing them again: an exchange of two
/// names, whatever the size, and the very file (its inode, and with it
/// its extended attributes) comes back. The object store keeps its copy
/// all the same: a kept file is put back only when it is exactly the
/// before-image (content, mode, owner, time, and the extended attributes
/// a written rollback would give it), which a process that held it open
/// could have changed. After a rollback, the names hold what the run
/// wrote. Only with `[rollback] keep-replaced = true`.
pub struct Kept {
    dir: std::os::fd::OwnedFd,
    dev: u64,
    /// For a rollback: the kept file of the first write to each path.
    /// Empty for a run's (`Kept::of` makes none without an entry): a run
    /// keeps, a rollback puts back.
    by_path: HashMap<VPath, String>,
}

impl Kept {
    /// A run's, made in its journal's directory `run_dir`.
    pub fn make(run_dir: &std::path::Path) -> io::Result<Kept> {
        use std::os::unix::fs::DirBuilderExt;
        let path = run_dir.join("kept");
        std::fs::DirBuilder::new().mode(0o700).create(&path)?;
        Kept::open(&path, HashMap::new())
    }

    /// What the run whose journal is in `run_dir` kept, by the paths its
    /// writes replaced (`intents`); `None` when it kept nothing.
    pub fn of(run_dir: &std::path::Path, intents: &[&Value]) -> Option<Kept> {
        // A run that kept nothing has no `kept/`: its intents are not read.
        let mut kept = Kept::open(&run_dir.join("kept"), HashMap::new()).ok()?;
        let by_path = &mut kept.by_path;
        for i in intents {
            if i["op"] == "write"
                && i["before"]["kind"] == "file"
                && let (Some(path), Some(n)) = (i["path"].as_str(), i["n"].as_u64())
                && let Ok(path) = VPath::parse(path)
            {
                by_path.entry(path).or_insert_with(|| n.to_string());
            }
        }
        (!by_path.is_empty()).then_some(kept)
    }

    fn open(path: &std::path::Path, by_path: HashMap<VPath, String>) -> io::Result<Kept> {
        use rustix::fs::{Mode, OFlags};
        let dir = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        #[allow(clippy::unnecessary_cast)]
        let dev = rustix::fs::fstat(&dir)?.st_dev as u64;
        Ok(Kept { dir, dev, by_path })
    }

    /// Where the file at `path` (on device `dev`) is kept by a run, or
    /// found by its rollback: only on the same file system.
    fn slot<'a>(&'a self, dev: u64, name: &'a str) -> Option<disk::Slot<'a>> {
        use std::os::fd::AsFd;
        (dev == self.dev).then(|| disk::Slot {
            dir: self.dir.as_fd(),
            name,
        })
    }
}

/// Why a commit stopped.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// The disk no longer matches the state the plan expects.
    #[error(
        "{path} changed since the plan was made ({attribute}): expected {}, found {}",
        expected.shown_for(attribute),
        found.shown_for(attribute)
    )]
    Drift {
        path: VPath,
        attribute: &'static str,
        expected: Box<State>,
        found: Box<State>,
        /// Effects applied before this one.
        applied: usize,
    },
    /// The file system refused an operation.
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: VPath,
        #[source]
        source: io::Error,
        applied: usize,
    },
    /// The journal or the object store could not be written.
    #[error("cannot write the journal: {0}")]
    Journal(#[source] io::Error),
    /// A pause landed; the effects before this one are applied and synced.
    #[error("aborted: {reason}")]
    Aborted { reason: String, applied: usize },
}

impl CommitError {
    /// How many effects reached the disk before the commit stopped.
    pub fn applied(&self) -> usize {
        match self {
            CommitError::Drift { applied, .. }
            | CommitError::Io { applied, .. }
            | CommitError::Aborted { applied, .. } => *applied,
            CommitError::Journal(_) => 0,
        }
    }
}

/// What a commit did.
#[derive(Debug, Default)]
pub struct Committed {
    pub applied: usize,
    /// fsync/syncfs calls made, for the record (constant per commit).
    pub syncs: usize,
}

/// A place where a test can have the process killed: set
/// `DEFOPS_FAILPOINT` to `after-objects`, `after-intents`, `before-done-N`
/// (effect N applied, its done record not written), `after-done-N` or
/// `after-sync`, or `before-rename-N` (effect N's new file written next to
/// its target, or in `kept/`, not yet renamed into place). The process then
/// dies by SIGKILL at that point.
/// `pause-before-N` instead acts as if a pause landed right before effect N,
/// `pause-while-checking` as if one landed while the plan is checked (before
/// anything is journaled), `enospc-at-N` as if the disk were full when effect
/// N is applied.
pub fn failpoint(name: &str) {
    if failpoint_is(name) {
        let _ =
            rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
    }
}

/// [`failpoint`] `before-rename-N` for the new file or directory made as
/// `made` (`.defops-tmp-RUN-N`, or `N` in `kept/`), the name compared
/// without being formatted.
pub fn failpoint_before_rename(made: &str) {
    let n = made.rsplit('-').next().unwrap_or("");
    let named = failpoint_set().is_some_and(|set| set.strip_prefix("before-rename-") == Some(n));
    if named {
        failpoint(failpoint_set().unwrap_or_default());
    }
}

fn failpoint_is(name: &str) -> bool {
    failpoint_set() == Some(name)
}

fn failpoint_set() -> Option<&'static str> {
    // Read once: a commit asks several times per effect.
    static SET: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    SET.get_or_init(|| std::env::var("DEFOPS_FAILPOINT").ok())
        .as_deref()
}

fn locate<'g>(grants: &'g Grants, path: &VPath) -> io::Result<Loc<'g>> {
    let grant = grants.find(path).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::PermissionDenied,
            "outside the granted directories",
        )
    })?;
    disk::locate(grant, path)
}

/// The name `path` had before the plan's first effect, given the renames
/// the plan made before naming it (oldest first); `None` when what it names
/// did not exist then: it sits where a renamed directory used to be.
pub fn origin(path: &VPath, renames: &[(VPath, VPath)]) -> Option<VPath> {
    let mut p = path.clone();
    for (from, to) in renames.iter().rev() {
        if p.starts_with(to) {
            p = p.rebase(to, from);
        } else if p.starts_with(from) {
            return None;
        }
    }
    Some(p)
}

/// Where a change to `path` is made: like [`locate`], refusing a read-only
/// grant's directory (by identity) on the way, whatever its name.
fn locate_for_change<'g>(grants: &'g Grants, path: &VPath) -> io::Result<Loc<'g>> {
    // Without a read-only grant there is nothing to meet on the way.
    if grants.iter().all(|g| g.access != Access::ReadOnly) {
        return locate(grants, path);
    }
    let grant = grants.find(path).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::PermissionDenied,
            "outside the granted directories",
        )
    })?;
    disk::locate_for_change(grant, path, &|dev, ino| {
        grants
            .by_identity(dev, ino)
            .is_some_and(|g| g.access == Access::ReadOnly && g.path != grant.path)
    })
}

/// The state of `path` now, and its metadata when it exists.
pub(crate) fn observe(grants: &Grants, path: &VPath) -> io::Result<(State, Option<disk::Stat>)> {
    match locate(grants, path) {
        Ok(loc) => {
            let st = loc.lstat()?;
            Ok((loc.state()?, st))
        }
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            Ok((State::Absent, None))
        }
        Err(e) => Err(e),
    }
}

/// The identity of what is at `path` now (no content read).
fn identity_of(grants: &Grants, path: &VPath) -> Option<disk::Identity> {
    Some(locate(grants, path).ok()?.lstat().ok()??.identity)
}

/// Checks `path` is in state `expected` now; returns its metadata.
fn check(
    grants: &Grants,
    path: &VPath,
    expected: &State,
    applied: usize,
) -> Result<Option<disk::Stat>, CommitError> {
    let (found, mtime) = observe(grants, path).map_err(|source| CommitError::Io {
        op: "check",
        path: path.clone(),
        source,
        applied,
    })?;
    match expected.difference(&found) {
        None => Ok(mtime),
        Some(attribute) => Err(CommitError::Drift {
            path: path.clone(),
            attribute,
            expected: Box::new(expected.clone()),
            found: Box::new(found),
            applied,
        }),
    }
}

fn expectations(effect: &Effect) -> impl Iterator<Item = (&VPath, &State)> {
    std::iter::once((effect.op.path(), &effect.before))
        .chain(effect.op.second_path().zip(effect.before_to.as_ref()))
}

/// Applies `plan`, journaling ahead of every change.
pub fn commit(
    grants: &Grants,
    plan: &Plan,
    run_id: &str,
    journal: &mut Journal,
    objects: Option<&Objects>,
    kept: Option<&Kept>,
    abort: Option<&Abort>,
) -> Result<Committed, CommitError> {
    let jerr = CommitError::Journal;
    let mut syncs = 0;
    let uid = rustix::process::geteuid().as_raw();
    let gid = rustix::process::getegid().as_raw();

    // 1. Everything the plan expects of paths it has not yet touched must
    //    hold before the first change. The original mtimes of every path
    //    and directory involved are kept (under the path they had before the
    //    plan's renames) so a rollback can restore them.
    let mut touched: HashSet<&VPath> = HashSet::new();
    // Paths verified in full just now, by identity: if that is unchanged
    // right before the change, the content is too.
    let mut verified: HashMap<&VPath, disk::Identity> = HashMap::new();
    let mut above_touched: HashSet<VPath> = HashSet::new();
    let mut renames: Vec<(VPath, VPath)> = Vec::new();
    let mut times: Vec<serde_json::Map<String, Value>> = Vec::with_capacity(plan.effects.len());
    let mut timed: HashSet<VPath> = HashSet::new();
    // Nothing changes on the disk in this step: one lstat per path serves
    // both its identity and its mtime.
    let mut stats: HashMap<VPath, Option<disk::Stat>> = HashMap::new();
    let mut stat_of = |p: &VPath| -> Option<disk::Stat> {
        *stats
            .entry(p.clone())
            .or_insert_with(|| locate(grants, p).ok()?.lstat().ok()?)
    };
    for effect in &plan.effects {
        // Checking a large plan takes a while: a pause stops it here, before
        // anything is journaled or changed.
        let paused = abort.and_then(Abort::reason).or_else(|| {
            failpoint_is("pause-while-checking").then(|| "paused by a fail point".to_string())
        });
        if let Some(reason) = paused {
            return Err(CommitError::Aborted { reason, applied: 0 });
        }
        for (path, expected) in expectations(effect) {
            let fresh = !touched.contains(path)
                && !above_touched.contains(path)
                && !std::iter::successors(path.parent(), |a| a.parent())
                    .any(|a| touched.contains(&a));
            if !fresh {
                continue;
            }
            // Unchanged since the plan read it (same identity): no need to
            // read it again. Anything else is compared in full.
            if path == effect.op.path()
                && let Some(id) = effect.before_identity
                && stat_of(path).map(|s| s.identity) == Some(id)
            {
                verified.insert(path, id);
                continue;
            }
            if let Some(st) = check(grants, path, expected, 0)? {
                verified.insert(path, st.identity);
            }
        }
        let mut t = serde_json::Map::new();
        for path in effect.paths() {
            for p in std::iter::once(path.clone()).chain(path.parent()) {
                // Something the plan made itself has no time before it.
                let Some(origin) = origin(&p, &renames) else {
                    continue;
                };
                if grants.find(&origin).is_some()
                    && timed.insert(origin.clone())
                    && let Some(st) = stat_of(&origin)
                {
                    t.insert(origin.to_string(), json!([st.mtime, st.mtime_nsec]));
                }
            }
        }
        times.push(t);
        for path in effect.paths() {
            touched.insert(path);
            above_touched.extend(std::iter::successors(path.parent(), |p| p.parent()));
        }
        if let Op::Rename { from, to } = &effect.op {
            renames.push((from.clone(), to.clone()));
        }
    }

    // 2. Before-images, one sync. (A rollback stores none: what it
    //    replaces is the run's own output, which running the fix again
    //    reproduces; its intents still come first.)
    let mut stored = Vec::with_capacity(plan.effects.len());
    for effect in &plan.effects {
        let put = |c: &Option<std::sync::Arc<Vec<u8>>>| match (c, objects) {
            (Some(c), Some(o)) => o.put(c).map(Some),
            _ => Ok(None),
        };
        stored.push((
            put(&effect.before_content).map_err(jerr)?,
            put(&effect.before_to_content).map_err(jerr)?,
        ));
    }
    if let Some(o) = objects
        && stored.iter().any(|(a, b)| a.is_some() || b.is_some())
    {
        o.sync().map_err(jerr)?;
        syncs += 1;
    }
    tracing::info!(syncs, "before-images durable");
    failpoint("after-objects");

    // 3. Intents, one sync.
    for (n, effect) in plan.effects.iter().enumerate() {
        let (after, after_to) = effect.planned_after(uid, gid);
        let mut rec = serde_json::to_value(effect).unwrap_or_default();
        rec["type"] = json!("intent");
        rec["n"] = json!(n);
        rec["after"] = json!(after);
        if let Some(a) = after_to {
            rec["after_to"] = json!(a);
        }
        let (obj, obj_to) = &stored[n];
        if let Some(o) = obj {
            rec["object"] = json!(o);
        }
        if let Some(o) = obj_to {
            rec["object_to"] = json!(o);
        }
        if !times[n].is_empty() {
            rec["mtimes"] = Value::Object(std::mem::take(&mut times[n]));
        }
        if let Some(d) = plan.diff(n, false) {
            rec["diff"] = json!(d);
        }
        // Written in large pieces: nothing is changed before the sync.
        journal.append_batched(rec).map_err(jerr)?;
    }
    journal.sync().map_err(jerr)?;
    syncs += 1;
    failpoint("after-intents");

    // 4. The changes, each checked again right before it is made. A pause
    //    stops the commit between two changes; what was done is synced.
    let mut devices: Vec<u64> = Vec::new();
    let mut progress = crate::progress::Progress::new(
        "applying changes",
        plan.effects.len() as u64,
        crate::progress::Unit::Items,
    );
    tracing::info!(
        effects = plan.effects.len(),
        syncs,
        "intents durable; applying"
    );
    for (n, effect) in plan.effects.iter().enumerate() {
        progress.set(n as u64);
        let paused = abort.and_then(Abort::reason).or_else(|| {
            failpoint_is(&format!("pause-before-{n}")).then(|| "paused by a fail point".to_string())
        });
        if let Some(reason) = paused {
            sync_changes(grants, &devices, journal, &mut syncs).map_err(jerr)?;
            return Err(CommitError::Aborted { reason, applied: n });
        }
        for (path, expected) in expectations(effect) {
            let unchanged = verified
                .get(path)
                .is_some_and(|id| identity_of(grants, path) == Some(*id));
            if !unchanged && let Err(e) = check(grants, path, expected, n) {
                // What was applied before it is made durable first.
                let _ = sync_changes(grants, &devices, journal, &mut syncs);
                return Err(e);
            }
        }
        for p in effect.paths() {
            verified.remove(p);
            if let Some(g) = grants.find(p)
                && !devices.contains(&g.dev)
            {
                devices.push(g.dev);
            }
        }
        let tmp = format!(".defops-tmp-{run_id}-{n}");
        let written = match failpoint_is(&format!("enospc-at-{n}")) {
            true => Err((effect.op.path(), io::Error::from_raw_os_error(28))),
            false => apply(grants, effect, &tmp, kept, n),
        };
        let written = match written {
            Ok(w) => w,
            Err((path, source)) => {
                // What was done before this one is made durable, as after
                // a pause: the journal's done records must hold after a
                // crash too.
                let _ = sync_changes(grants, &devices, journal, &mut syncs);
                return Err(CommitError::Io {
                    op: effect.op.verb(),
                    path: path.clone(),
                    source,
                    applied: n,
                });
            }
        };
        failpoint(&format!("before-done-{n}"));
        let observed = |p: &VPath| observe(grants, p).map(|(s, _)| s).unwrap_or(State::Absent);
        // A written file's after-state is known from what was written and
        // the temporary file's descriptor; anything else is looked at.
        let after = written.unwrap_or_else(|| observed(effect.op.path()));
        let mut done = json!({"type": "done", "n": n, "after": after});
        if let Some(to) = effect.op.second_path() {
            done["after_to"] = json!(observed(to));
        }
        journal.append(done).map_err(jerr)?;
        failpoint(&format!("after-done-{n}"));
    }

    // 5. One sync per file system the changes are on, then the journal.
    sync_changes(grants, &devices, journal, &mut syncs).map_err(jerr)?;
    tracing::info!(applied = plan.effects.len(), syncs, "commit done");
    Ok(Committed {
        applied: plan.effects.len(),
        syncs,
    })
}

/// Syncs the file systems on `devices`, then the journal.
fn sync_changes(
    grants: &Grants,
    devices: &[u64],
    journal: &mut Journal,
    syncs: &mut usize,
) -> io::Result<()> {
    // The files the changes replaced are freed before the sync.
    disk::drain_released();
    for dev in devices {
        if let Some(g) = grants.iter().find(|g| g.dev == *dev) {
            disk::sync_fs(&g.dir)?;
            *syncs += 1;
        }
    }
    failpoint("after-sync");
    journal.sync()?;
    *syncs += 1;
    Ok(())
}

/// Applies one effect (not synced: the commit syncs once at the end). For
/// a write, returns the state of the file as written.
fn apply<'a>(
    grants: &Grants,
    effect: &'a Effect,
    tmp: &str,
    kept: Option<&Kept>,
    n: usize,
) -> Result<Option<State>, (&'a VPath, io::Error)> {
    let path = effect.op.path();
    let at = |p: &'a VPath| locate_for_change(grants, p).map_err(|e| (p, e));
    let loc = at(path)?;
    let done = match &effect.op {
        Op::Write {
            content,
            mode,
            uid,
            gid,
            mtime,
            ..
        } => {
            let file = disk::FileSpec {
                content,
                mode: *mode,
                uid: *uid,
                gid: *gid,
                mtime: *mtime,
            };
            let dev = grants.find(path).map_or(u64::MAX, |g| g.dev);
            // A rollback: the file the run kept, when it is this one.
            if let Some(k) = kept
                && let Some(name) = k.by_path.get(path)
                && let Some(slot) = k.slot(dev, name)
                && let Some(st) = loc.put_back(slot, &file).map_err(|e| (path, e))?
            {
                return Ok(Some(State::file(content, st.mode, st.uid, st.gid)));
            }
            // A run: the file replaced is kept.
            let name = n.to_string();
            let keep = kept
                .filter(|k| k.by_path.is_empty() && matches!(effect.before, State::File { .. }))
                .and_then(|k| k.slot(dev, &name));
            let st = loc.replace_file(&file, tmp, keep).map_err(|e| (path, e))?;
            return Ok(Some(State::file(content, st.mode, st.uid, st.gid)));
        }
        Op::CreateDir { mode, .. } => loc.create_dir(*mode, tmp),
        Op::RemoveFile { .. } => loc.remove_file(),
        Op::RemoveDir { .. } => loc.remove_dir(),
        Op::SetMode { mode, .. } => loc.set_mode(*mode),
        Op::SetOwner { uid, gid, .. } => loc.set_owner(*uid, *gid),
        Op::Symlink { target, .. } => loc.symlink(target),
        Op::Rename { to, .. } => {
            let dest = at(to)?;
            let no_replace = effect.before_to == Some(State::Absent);
            loc.rename_to(&dest, no_replace)
        }
    };
    done.map(|()| None).map_err(|e| (path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> VPath {
        VPath::parse(s).unwrap()
    }

    #[test]
    fn origins_follow_renames_back_and_new_things_have_none() {
        let renames = vec![(p("/g/d"), p("/g/e")), (p("/g/e/x"), p("/g/e/y"))];
        // Reached through both renames.
        assert_eq!(origin(&p("/g/e/y/f"), &renames), Some(p("/g/d/x/f")));
        assert_eq!(origin(&p("/g/e"), &renames), Some(p("/g/d")));
        // Where a renamed directory used to be: made since.
        assert_eq!(origin(&p("/g/d/f"), &renames), None);
        assert_eq!(origin(&p("/g/e/x"), &renames), None);
        // Untouched.
        assert_eq!(origin(&p("/g/other"), &renames), Some(p("/g/other")));
        // Renamed and renamed back.
        let back = vec![(p("/g/d"), p("/g/e")), (p("/g/e"), p("/g/d"))];
        assert_eq!(origin(&p("/g/d/f"), &back), Some(p("/g/d/f")));
        assert_eq!(origin(&p("/g/e/f"), &back), None);
    }
}
