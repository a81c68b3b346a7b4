//! Rules about when a change may happen: one real run or rollback at a time
//! per state directory, the off-switch (`pause`/`resume`), and the record of
//! dry-runs a real run must follow. Change windows are in `window`.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Held while a real run or a rollback changes the disk.
pub struct RunLock {
    _file: File,
    sequence: u64,
}

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "another run or rollback is changing this host ({holder}); wait for it to finish, then run again"
    )]
    Busy { holder: String },
    #[error("cannot take the lock {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl RunLock {
    /// Takes `<state>/lock` at once, or fails naming who holds it. The
    /// lock also keeps the number of the last change taken under it (see
    /// [`RunLock::sequence`]).
    pub fn take(state: &Path, what: &str) -> Result<RunLock, LockError> {
        let path = state.join("lock");
        let io = |source| LockError::Io {
            path: path.display().to_string(),
            source,
        };
        let mut file = OpenOptions::new()
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io)?;
        match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.lines().next().unwrap_or_default().trim();
                return Err(LockError::Busy {
                    holder: if holder.is_empty() {
                        "unknown".into()
                    } else {
                        holder.to_string()
                    },
                });
            }
            Err(e) => return Err(io(e.into())),
        }
        let mut was = String::new();
        let _ = file.read_to_string(&mut was);
        // Without one (a lock made by an older version, removed, or cut
        // while written), the highest any journal here records; with one,
        // no less than the newest journals record (a lock file restored
        // from a backup).
        let last = match was
            .lines()
            .find_map(|l| l.strip_prefix(LAST_CHANGE)?.trim().parse::<u64>().ok())
            .filter(|n| *n < MAX_SEQUENCE)
        {
            Some(n) => n.max(crate::journal::highest_sequence(state, 16)),
            None => crate::journal::highest_sequence(state, usize::MAX),
        };
        let sequence = last + 1;
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        writeln!(file, "pid {}, {what}", std::process::id()).map_err(io)?;
        writeln!(file, "{LAST_CHANGE}{sequence}").map_err(io)?;
        // Durable before the journal that records it: after a power loss
        // the next number is never one already given.
        file.sync_data().map_err(io)?;
        Ok(RunLock {
            _file: file,
            sequence,
        })
    }

    /// This change's place among the real runs and rollbacks of the state
    /// directory: one more than the last one's, taken under the lock, so in
    /// the order they changed the disk (run ids are made before the lock is
    /// taken, and a clock can go back). Journaled as the header's
    /// `sequence`.
    pub fn sequence(&self) -> u64 {
        self.sequence
    }
}

/// The lock file's line that keeps the last sequence number.
const LAST_CHANGE: &str = "last change ";

/// Past any count of changes: a larger number was written by hand, and is
/// not believed (the journals give the count back).
pub const MAX_SEQUENCE: u64 = 1 << 53;

// ---------------------------------------------------------------------------
// The off-switch.

/// What a pause covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every fix.
    All,
    /// One fix, by name (its file name without `.wasm`).
    Fix(String),
}

impl Scope {
    /// `None`: everything; a name: that fix.
    pub fn parse(name: Option<&str>) -> Result<Scope, String> {
        let Some(name) = name else {
            return Ok(Scope::All);
        };
        let name = name.strip_suffix(".wasm").unwrap_or(name);
        let ok = !name.is_empty()
            && name.len() <= 128
            && !name.starts_with('.')
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        match ok {
            true => Ok(Scope::Fix(name.to_string())),
            false => Err(format!(
                "{name:?} is not a fix name (letters, digits, '-', '_' and '.', as in config-set)"
            )),
        }
    }

    fn file_name(&self) -> String {
        match self {
            Scope::All => "all.json".into(),
            Scope::Fix(name) => format!("fix-{name}.json"),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Scope::All => "every fix".into(),
            Scope::Fix(name) => format!("the fix {name}"),
        }
    }
}

/// The largest pause record read.
const MAX_PAUSE_RECORD: u64 = 64 << 10;

fn pause_dir(state: &Path) -> std::path::PathBuf {
    state.join("pause")
}

/// What `pause` did.
pub enum Paused {
    /// Newly paused; the record written.
    Now(serde_json::Value),
    /// Already paused; the record in force.
    Already(serde_json::Value),
}

/// Pulls the off-switch for `scope`, recording who, when and why.
pub fn pause(state: &Path, scope: &Scope, reason: &str) -> std::io::Result<Paused> {
    let dir = pause_dir(state);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)?;
    let path = dir.join(scope.file_name());
    if let Some(existing) = read_pause(&path) {
        return Ok(Paused::Already(existing));
    }
    let record = serde_json::json!({
        "scope": match scope { Scope::All => "all", Scope::Fix(_) => "fix" },
        "fix": match scope { Scope::All => None, Scope::Fix(n) => Some(n) },
        "reason": reason,
        "by": crate::run::user(),
        "host": crate::run::hostname(),
        "time": crate::run::rfc3339(crate::run::now_secs()),
    });
    let tmp = dir.join(format!(".tmp-{}", std::process::id()));
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    writeln!(f, "{record}")?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    log_event(&dir, "pause", &record)?;
    Ok(Paused::Now(record))
}

/// Lifts the pause of `scope`; the record that was in force, if any.
pub fn resume(state: &Path, scope: &Scope) -> std::io::Result<Option<serde_json::Value>> {
    let dir = pause_dir(state);
    let path = dir.join(scope.file_name());
    let Some(record) = read_pause(&path) else {
        return Ok(None);
    };
    std::fs::remove_file(&path)?;
    let mut event = serde_json::json!({
        "by": crate::run::user(),
        "time": crate::run::rfc3339(crate::run::now_secs()),
        "paused": record,
    });
    event["scope"] = record["scope"].clone();
    log_event(&dir, "resume", &event)?;
    Ok(Some(record))
}

/// Every pause in force, the global one first.
pub fn pauses(state: &Path) -> Vec<serde_json::Value> {
    let dir = pause_dir(state);
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n == "all.json" || (n.starts_with("fix-") && n.ends_with(".json")))
        .collect();
    names.sort_by_key(|n| (n != "all.json", n.clone()));
    names
        .iter()
        .filter_map(|n| read_pause(&dir.join(n)))
        .collect()
}

/// The pause that stops a fix known by `names` (its file name, its
/// manifest's name), the global one first, if any.
pub fn paused_for(state: &Path, names: &[String]) -> Option<serde_json::Value> {
    let dir = pause_dir(state);
    read_pause(&dir.join(Scope::All.file_name())).or_else(|| {
        names.iter().find_map(|n| {
            Scope::parse(Some(n))
                .ok()
                .and_then(|s| read_pause(&dir.join(s.file_name())))
        })
    })
}

/// The names a fix is paused by: its file's (without `.wasm`) and its
/// manifest's.
pub fn fix_names(fix: &Path, manifest: Option<&str>) -> Vec<String> {
    let stem = fix
        .file_stem()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut names = vec![stem];
    if let Some(m) = manifest
        && !names.iter().any(|n| n == m)
    {
        names.push(m.to_string());
    }
    names
}

/// The command that lifts the pause record `p`.
pub fn resume_command(p: &serde_json::Value) -> String {
    match p["fix"].as_str() {
        Some(f) => format!("`defops-wasm resume {}`", crate::escape::line(f)),
        None => "`defops-wasm resume`".into(),
    }
}

/// One line describing a pause record.
pub fn describe_pause(p: &serde_json::Value) -> String {
    let who = p["by"]["sudo_user"]
        .as_str()
        .or(p["by"]["name"].as_str())
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .unwrap_or_else(|| format!("uid {}", p["by"]["uid"]));
    let what = match p["fix"].as_str() {
        Some(f) => format!("the fix {f}"),
        None => "every fix".into(),
    };
    // One line, whatever the record says.
    crate::escape::line(&format!(
        "{what} paused by {who} at {}: {}",
        p["time"].as_str().unwrap_or("?"),
        p["reason"].as_str().unwrap_or("(no reason given)")
    ))
    .into_owned()
}

/// A pause record, or `None` when there is none. A record that exists but
/// cannot be read still pauses (the off-switch fails closed).
fn read_pause(path: &Path) -> Option<serde_json::Value> {
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags((rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK).bits() as i32)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => return Some(unreadable(path, &e.to_string())),
    };
    let mut text = String::new();
    if let Err(e) = file.take(MAX_PAUSE_RECORD).read_to_string(&mut text) {
        return Some(unreadable(path, &e.to_string()));
    }
    match serde_json::from_str::<serde_json::Value>(&text) {
        Ok(v) if v.is_object() => Some(v),
        _ => Some(unreadable(path, "not a pause record")),
    }
}

fn unreadable(path: &Path, why: &str) -> serde_json::Value {
    serde_json::json!({
        "scope": "unknown",
        "reason": format!("{} cannot be read ({why}); remove it or run `defops-wasm resume`", path.display()),
        "by": {"name": "unknown"},
    })
}

fn log_event(dir: &Path, event: &str, record: &serde_json::Value) -> std::io::Result<()> {
    let mut line = record.clone();
    line["event"] = serde_json::json!(event);
    let mut f = OpenOptions::new()
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .append(true)
        .create(true)
        .mode(0o600)
        .open(dir.join("log.jsonl"))?;
    writeln!(f, "{line}")?;
    f.sync_data()
}

/// Set when a pause lands during a real run: host calls then fail with
/// `aborted`, the guest is stopped, and a commit stops before its next
/// effect.
#[derive(Clone, Default)]
pub struct Abort(Arc<AbortInner>);

#[derive(Default)]
struct AbortInner {
    set: AtomicBool,
    reason: Mutex<String>,
}

impl Abort {
    pub fn trigger(&self, reason: String) {
        *self.0.reason.lock().unwrap_or_else(|e| e.into_inner()) = reason;
        self.0.set.store(true, Ordering::SeqCst);
    }

    /// Why the run must stop, once it must.
    pub fn reason(&self) -> Option<String> {
        match self.0.set.load(Ordering::SeqCst) {
            true => Some(
                self.0
                    .reason
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone(),
            ),
            false => None,
        }
    }
}

/// When the host's own work for a run must stop: the run's deadline
/// (`--timeout`), or a pause. Every host call checks it on entry, and long
/// work (path resolution, directory listings, log scans, diffs) checks it
/// as it goes, so none runs on past either by more than a slice.
#[derive(Clone)]
pub struct Until {
    pub deadline: std::time::Instant,
    /// The `--timeout` the deadline was set from, for the message.
    pub limit: Duration,
    pub abort: Abort,
}

impl Until {
    /// A deadline `limit` from now.
    pub fn new(limit: Duration, abort: Abort) -> Until {
        Until {
            deadline: std::time::Instant::now() + limit,
            limit,
            abort,
        }
    }

    /// Never: for work that has no deadline of its own (rollback, tests).
    pub fn never() -> Until {
        Until::new(crate::units::MAX_AGE, Abort::default())
    }

    /// The reason to stop now, if there is one: the pause first.
    pub fn stop(&self) -> Option<crate::overlay::FsError> {
        use crate::overlay::FsError;
        if let Some(why) = self.abort.reason() {
            return Some(FsError::Aborted(format!("the run was stopped: {why}")));
        }
        (std::time::Instant::now() >= self.deadline).then_some(FsError::Deadline(self.limit))
    }

    /// What a host call's failure `e` ends as: the limit that may have
    /// cut it short when one has been reached (the deadline's one signal
    /// makes a system call on a FUSE file system that honours interrupts
    /// fail with EINTR), so the run ends as that limit, not as the fix's
    /// own failure. A denial and the plan-size limit are themselves.
    pub fn or_stop(&self, e: crate::overlay::FsError) -> crate::overlay::FsError {
        use crate::overlay::FsError;
        match e {
            FsError::Denied(_) | FsError::PlanLimit(_) => e,
            e => self.stop().unwrap_or(e),
        }
    }

    /// Like [`Until::stop`], as an `io::Error` for loops that read.
    pub fn check(&self) -> std::io::Result<()> {
        if std::time::Instant::now() >= self.deadline {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "deadline",
            ));
        }
        match self.abort.reason() {
            Some(why) => Err(std::io::Error::new(std::io::ErrorKind::Interrupted, why)),
            None => Ok(()),
        }
    }
}

/// How often a running fix looks for a pause.
pub const PAUSE_POLL: Duration = Duration::from_millis(50);

/// Watches for a pause of a fix known by `names` while a real run goes on;
/// triggers `abort` when one lands. From then on, calls `wake` at once and
/// at every poll (the sandbox's epoch: a computing guest yields, so its
/// runtime sees the pause and, after the grace, stops it, however little
/// CPU the process gets). Stops when dropped.
pub fn watch_pauses(
    state: &Path,
    names: &[String],
    abort: Abort,
    wake: impl Fn() + Send + 'static,
) -> crate::periodic::Periodic {
    let (state, names) = (state.to_path_buf(), names.to_vec());
    crate::periodic::Periodic::start(PAUSE_POLL, move || {
        if abort.reason().is_none() {
            match paused_for(&state, &names) {
                Some(p) => abort.trigger(describe_pause(&p)),
                None => return true,
            }
        }
        wake();
        true
    })
}

// ---------------------------------------------------------------------------
// Dry-run before real.

/// What identifies "the same run": fix digest, grants, params and host.
pub fn dry_run_key(
    digest: &str,
    grants: &[serde_json::Value],
    params: &std::collections::BTreeMap<String, String>,
    host: &str,
) -> String {
    let mut grants: Vec<String> = grants.iter().map(|g| g.to_string()).collect();
    grants.sort();
    let key =
        serde_json::json!({"digest": digest, "grants": grants, "params": params, "host": host});
    crate::digest::current().hex(key.to_string().as_bytes())[..32].to_string()
}

/// Notes a successful dry-run and the plan it showed, so a real run of the
/// same can follow it and be held to that plan: `<state>/dry-runs/KEY.json`
/// = `{"run_id", "time", "plan_digest", "plan"}` (`plan` a saved plan, as
/// `--save-plan` writes).
///
/// The record is never absent or half-written while it is replaced: the
/// new one is written whole into a spare file, `.KEY.spare`, which is then
/// swapped with the record in one step (`renameat2(RENAME_EXCHANGE)`). The
/// spare then holds the record before, and is written over by the next
/// dry-run, so replacing a record makes no new file. Writers hold the
/// directory's lock from the write to the swap; readers hold it shared
/// (`last_dry_run`), so no reader sees a spare being written over.
pub fn record_dry_run(
    state: &Path,
    key: &str,
    run_id: &str,
    time: i64,
    plan: &crate::binding::PlanFile,
) -> std::io::Result<()> {
    use rustix::fs::{FlockOperation, RenameFlags};
    use rustix::io::Errno;
    let dir = state.join("dry-runs");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)?;
    let dir = open_dir(&dir)?;
    rustix::fs::flock(&dir, FlockOperation::LockExclusive)?;
    let record = serde_json::json!({
        "run_id": run_id,
        "time": time,
        "plan_digest": plan.digest,
        "plan": plan,
    })
    .to_string();
    let (spare, dest) = (format!(".{key}.spare"), format!("{key}.json"));
    // Only a file is swapped out: anything else there (a directory) would
    // become the spare, and every dry-run after fail on it.
    match rustix::fs::statat(&dir, &dest, rustix::fs::AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st)
            if rustix::fs::FileType::from_raw_mode(st.st_mode)
                != rustix::fs::FileType::RegularFile =>
        {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{dest} is not a file; remove it"),
            ));
        }
        _ => {}
    }
    let mut f = spare_file(&dir, &spare)?;
    f.write_all(record.as_bytes())?;
    // Cut to the new length after the write, never to zero before it:
    // ext4 flushes a file cut to zero when it is closed, and this record,
    // like the dry-run's journal, is not synced. After a crash it may be
    // empty (a real run is refused, and says why, until the next dry-run)
    // or still the one before, which a real run checks like any other (its
    // age, the plan it is held to).
    f.set_len(record.len() as u64)?;
    drop(f);
    match rustix::fs::renameat_with(&dir, &spare, &dir, &dest, RenameFlags::EXCHANGE) {
        Ok(()) => Ok(()),
        // No record yet (ENOENT), or a file system that cannot swap: a
        // rename over it, atomic too.
        Err(Errno::NOENT | Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP) => {
            rustix::fs::renameat(&dir, &spare, &dir, &dest).map_err(Into::into)
        }
        Err(e) => Err(e.into()),
    }
}

/// The directory at `path`, opened (not through a link) to lock it and to
/// name files in it.
fn open_dir(path: &Path) -> std::io::Result<rustix::fd::OwnedFd> {
    use rustix::fs::{Mode, OFlags};
    rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(Into::into)
}

/// The spare file `name` in `dir`, opened for writing from its start: the
/// one there if it is a regular file of this user's alone (as a record
/// must be to be believed), else a fresh one made in its place.
fn spare_file(dir: &rustix::fd::OwnedFd, name: &str) -> std::io::Result<File> {
    use rustix::fs::{AtFlags, FileType, Mode, OFlags};
    let flags = OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    if let Ok(fd) = rustix::fs::openat(dir, name, flags, Mode::empty()) {
        let st = rustix::fs::fstat(&fd)?;
        if FileType::from_raw_mode(st.st_mode) == FileType::RegularFile
            && st.st_uid == rustix::process::geteuid().as_raw()
            && st.st_nlink == 1
            && st.st_mode & 0o022 == 0
        {
            return Ok(File::from(fd));
        }
    }
    match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) | Err(rustix::io::Errno::NOENT) => {}
        Err(e) => return Err(e.into()),
    }
    let fd = rustix::fs::openat(
        dir,
        name,
        flags | OFlags::CREATE | OFlags::EXCL,
        Mode::from_raw_mode(0o600),
    )?;
    Ok(File::from(fd))
}

/// A dry-run a real run can follow.
#[derive(Debug)]
pub struct DryRun {
    pub run_id: String,
    /// Seconds since the epoch.
    pub time: i64,
    /// The digest it recorded for its plan (`None` before plans were
    /// recorded).
    pub plan_digest: Option<String>,
    /// The plan it showed, as a saved plan (unchecked).
    pub plan: Option<serde_json::Value>,
}

/// The last successful dry-run of `key`: none when there is no record,
/// and why when there is one that cannot be read or is not a record (cut
/// short by a crash, someone else's, damaged). A run must not take that
/// for no dry-run: the operator did one and expects to be held to it.
pub fn last_dry_run(state: &Path, key: &str) -> Result<Option<DryRun>, String> {
    let dir = state.join("dry-runs");
    let path = dir.join(format!("{key}.json"));
    let bad = |why: String| format!("{}: {why}", path.display());
    let read = || {
        let dir = open_dir(&dir)?;
        // Shared: the writer swapping a record in holds it alone.
        rustix::fs::flock(&dir, rustix::fs::FlockOperation::LockShared)?;
        crate::regular_file::read_own_record(&path)
    };
    let text = match read() {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(bad(e.to_string())),
    };
    let mut v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| bad(format!("not a dry-run record ({e})")))?;
    let (Some(run_id), Some(time)) = (v["run_id"].as_str(), v["time"].as_i64()) else {
        return Err(bad("not a dry-run record (no run_id or time)".into()));
    };
    Ok(Some(DryRun {
        run_id: run_id.to_string(),
        time,
        plan_digest: v["plan_digest"].as_str().map(str::to_string),
        plan: v.get_mut("plan").map(serde_json::Value::take),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::binding::{CanonicalPlan, Made, MadeFor, PlanFile};
    use std::collections::BTreeMap;

    /// A host call's failure past the deadline, or once paused, ends the
    /// run as that limit; before it, it is the fix's to handle; a denial
    /// and the plan-size limit stay what they are.
    #[test]
    fn a_call_that_fails_past_a_limit_ends_as_that_limit() {
        use crate::overlay::FsError;
        let interrupted = || FsError::Io("Interrupted system call".into());
        let passed = Until::new(Duration::ZERO, Abort::default());
        assert!(matches!(
            passed.or_stop(interrupted()),
            FsError::Deadline(d) if d == Duration::ZERO
        ));
        assert!(matches!(
            passed.or_stop(FsError::Denied("x".into())),
            FsError::Denied(_)
        ));
        assert!(matches!(
            passed.or_stop(FsError::PlanLimit("x".into())),
            FsError::PlanLimit(_)
        ));
        let ahead = Until::new(Duration::from_secs(3600), Abort::default());
        assert!(matches!(ahead.or_stop(interrupted()), FsError::Io(_)));
        let abort = Abort::default();
        abort.trigger("db failover".into());
        let paused = Until::new(Duration::from_secs(3600), abort);
        assert!(matches!(paused.or_stop(interrupted()), FsError::Aborted(_)));
    }

    /// Nothing wakes a running fix until a pause lands; from then on, the
    /// watcher wakes it at once and at every poll, so a fix that gets
    /// little CPU yields, and its runtime sees the pause and, after the
    /// grace, stops it.
    #[test]
    fn the_pause_watcher_wakes_the_fix_once_a_pause_lands() {
        use std::sync::atomic::AtomicU32;
        let state = tempfile::tempdir().unwrap();
        let (abort, wakes) = (Abort::default(), Arc::new(AtomicU32::new(0)));
        let woken = wakes.clone();
        let watch = watch_pauses(state.path(), &["fix".into()], abort.clone(), move || {
            woken.fetch_add(1, Ordering::SeqCst);
        });
        std::thread::sleep(PAUSE_POLL * 4);
        assert_eq!(wakes.load(Ordering::SeqCst), 0, "woken with no pause");
        assert!(abort.reason().is_none());
        pause(state.path(), &Scope::Fix("fix".into()), "test").unwrap();
        let since = std::time::Instant::now();
        while wakes.load(Ordering::SeqCst) < 3 {
            assert!(since.elapsed() < Duration::from_secs(30), "not woken");
            std::thread::sleep(PAUSE_POLL / 5);
        }
        assert!(abort.reason().unwrap().contains("test"));
        drop(watch);
        let after = wakes.load(Ordering::SeqCst);
        std::thread::sleep(PAUSE_POLL * 3);
        assert_eq!(wakes.load(Ordering::SeqCst), after, "woken after the drop");
    }

    /// A directory where the record goes is named and left, not swapped
    /// out to become a spare that every later dry-run fails on.
    #[test]
    fn a_directory_at_the_record_is_refused_by_name() {
        let state = tempfile::tempdir().unwrap();
        let record = state.path().join("dry-runs/k.json");
        std::fs::create_dir_all(&record).unwrap();
        let e = record_dry_run(state.path(), "k", "run-1", 1, &plan_file(1)).unwrap_err();
        assert!(e.to_string().contains("k.json is not a file"), "{e}");
        assert!(record.is_dir());
        assert!(!state.path().join("dry-runs/.k.spare").exists());
    }

    /// A plan file of one of several sizes, so that a record cut short or
    /// made of two would show.
    fn plan_file(n: usize) -> PlanFile {
        let params = BTreeMap::from([("pad".to_string(), "x".repeat(n % 5 * 20_000))]);
        let plan = CanonicalPlan {
            format: crate::binding::FORMAT,
            hash_alg: "blake3".into(),
            made_for: MadeFor::new(&"ab".repeat(32), &[], &params, "web-1"),
            effects: vec![],
        };
        let made = Made {
            dry_run: format!("run-{n}"),
            time: "2026-12-04T00:00:00Z".into(),
            fix: "ab".repeat(32),
            fix_name: "fix".into(),
            outcome: "planned".into(),
            idempotent: Some(true),
        };
        PlanFile::new(plan, made).unwrap()
    }

    /// While dry-runs (three writers at once) replace the record of one key
    /// again and again, a real run reading it always finds a whole record:
    /// never none, never one it cannot read, and always one whose digest is
    /// that of its plan. Replacing a record leaves one spare beside it.
    #[test]
    fn a_record_being_replaced_is_always_there_and_whole() {
        let state = tempfile::tempdir().unwrap();
        let state = state.path();
        record_dry_run(state, "k", "run-0", 0, &plan_file(0)).unwrap();
        let done = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (1..=3)
            .map(|w| {
                let state = state.to_path_buf();
                std::thread::spawn(move || {
                    for i in 0..200 {
                        let n = w * 1000 + i;
                        let id = format!("run-{n}");
                        record_dry_run(&state, "k", &id, n as i64, &plan_file(n)).unwrap();
                    }
                })
            })
            .collect();
        let reader = {
            let (state, done) = (state.to_path_buf(), done.clone());
            std::thread::spawn(move || {
                let mut reads = 0;
                while !done.load(Ordering::Relaxed) || reads < 100 {
                    let found = last_dry_run(&state, "k").unwrap().expect("a record");
                    let plan: PlanFile = serde_json::from_value(found.plan.unwrap()).unwrap();
                    assert_eq!(plan.made.dry_run, found.run_id);
                    assert_eq!(Some(plan.plan.digest().unwrap()), found.plan_digest);
                    reads += 1;
                }
                reads
            })
        };
        for w in writers {
            w.join().unwrap();
        }
        done.store(true, Ordering::Relaxed);
        assert!(reader.join().unwrap() >= 100);
        let mut names: Vec<_> = std::fs::read_dir(state.join("dry-runs"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, [".k.spare", "k.json"]);
    }

    /// A spare that is not this user's file alone (a hard link to another
    /// file, a link, a FIFO) is never written through: a fresh one is made.
    #[test]
    fn a_planted_spare_is_replaced_not_written_through() {
        let state = tempfile::tempdir().unwrap();
        let dir = state.path().join("dry-runs");
        std::fs::create_dir(&dir).unwrap();
        let precious = state.path().join("precious");
        std::fs::write(&precious, "keep\n").unwrap();
        let spare = dir.join(".k.spare");
        for plant in 0..3 {
            let _ = std::fs::remove_file(&spare);
            match plant {
                0 => std::fs::hard_link(&precious, &spare).unwrap(),
                1 => std::os::unix::fs::symlink(&precious, &spare).unwrap(),
                _ => rustix::fs::mknodat(
                    rustix::fs::CWD,
                    &spare,
                    rustix::fs::FileType::Fifo,
                    rustix::fs::Mode::from_raw_mode(0o600),
                    0,
                )
                .unwrap(),
            }
            record_dry_run(state.path(), "k", "run-1", 1, &plan_file(1)).unwrap();
            assert_eq!(std::fs::read_to_string(&precious).unwrap(), "keep\n");
            let found = last_dry_run(state.path(), "k").unwrap().unwrap();
            assert_eq!(found.run_id, "run-1");
        }
    }
}
