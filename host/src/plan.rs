//! The plan: what a fix would change, each effect with the state it expects
//! to find. The overlay produces it, `--dry-run` shows it, the commit applies
//! it and refuses when the disk no longer matches.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::escape;
use crate::grants::VPath;

/// The state of one path, enough to tell whether it changed: kind, content
/// digest, permission bits and owner. Modification times are not compared.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum State {
    Absent,
    File {
        size: u64,
        /// The content's digest (blake3, or SHA-256 in FIPS mode).
        #[serde(alias = "blake3")]
        digest: String,
        mode: u32,
        uid: u32,
        gid: u32,
    },
    Dir {
        mode: u32,
        uid: u32,
        gid: u32,
    },
    Symlink {
        target: String,
        uid: u32,
        gid: u32,
    },
    /// A socket, FIFO or device: never touched.
    Other,
}

impl State {
    pub fn file(content: &[u8], mode: u32, uid: u32, gid: u32) -> State {
        State::File {
            size: content.len() as u64,
            digest: crate::digest::current().hex(content),
            mode,
            uid,
            gid,
        }
    }

    /// The first attribute in which `self` (expected) and `found` differ,
    /// named for the operator: presence, type, content, mode or owner.
    /// As [`Display`](fmt::Display), with what tells two states apart
    /// when `attribute` (from [`State::difference`]) is one the short form
    /// does not show: a file's content by the start of its digest.
    pub fn shown_for(&self, attribute: &str) -> String {
        match self {
            State::File { digest, .. } if attribute == "content" => {
                let start = digest.get(..12).unwrap_or(digest);
                format!("{self}, content {start}")
            }
            _ => self.to_string(),
        }
    }

    pub fn difference(&self, found: &State) -> Option<&'static str> {
        use State::*;
        match (self, found) {
            (a, b) if a == b => None,
            (Absent, _) | (_, Absent) => Some("presence"),
            (
                File {
                    digest: a,
                    size: sa,
                    ..
                },
                File {
                    digest: b,
                    size: sb,
                    ..
                },
            ) if a != b || sa != sb => Some("content"),
            (Symlink { target: a, .. }, Symlink { target: b, .. }) if a != b => {
                Some("symlink target")
            }
            (File { mode: a, .. }, File { mode: b, .. })
            | (Dir { mode: a, .. }, Dir { mode: b, .. })
                if a != b =>
            {
                Some("mode")
            }
            (File { .. }, File { .. })
            | (Dir { .. }, Dir { .. })
            | (Symlink { .. }, Symlink { .. }) => Some("owner"),
            _ => Some("type"),
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            State::Absent => f.write_str("absent"),
            State::File {
                size,
                mode,
                uid,
                gid,
                ..
            } => {
                write!(f, "file, {size} bytes, mode {mode:04o}, owner {uid}:{gid}")
            }
            State::Dir { mode, uid, gid } => {
                write!(f, "directory, mode {mode:04o}, owner {uid}:{gid}")
            }
            State::Symlink { target, .. } => write!(f, "symlink to {}", escape::line(target)),
            State::Other => f.write_str("special file"),
        }
    }
}

/// One change to the file system.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Op {
    /// Replace (or create) a file atomically with this content and metadata.
    Write {
        path: VPath,
        #[serde(skip)]
        content: Arc<Vec<u8>>,
        mode: u32,
        uid: u32,
        gid: u32,
        /// Set by rollback: the modification time to give the file.
        #[serde(skip_serializing_if = "Option::is_none")]
        mtime: Option<(i64, u32)>,
    },
    CreateDir {
        path: VPath,
        mode: u32,
    },
    RemoveFile {
        path: VPath,
    },
    RemoveDir {
        path: VPath,
    },
    Rename {
        from: VPath,
        to: VPath,
    },
    SetMode {
        path: VPath,
        mode: u32,
    },
    SetOwner {
        path: VPath,
        uid: u32,
        gid: u32,
    },
    Symlink {
        target: String,
        link: VPath,
    },
}

impl Op {
    /// The path the effect is about (for a rename, its source).
    pub fn path(&self) -> &VPath {
        match self {
            Op::Write { path, .. }
            | Op::CreateDir { path, .. }
            | Op::RemoveFile { path }
            | Op::RemoveDir { path }
            | Op::SetMode { path, .. }
            | Op::SetOwner { path, .. } => path,
            Op::Rename { from, .. } => from,
            Op::Symlink { link, .. } => link,
        }
    }

    /// The rename destination, if any.
    pub fn second_path(&self) -> Option<&VPath> {
        match self {
            Op::Rename { to, .. } => Some(to),
            _ => None,
        }
    }

    /// The op's name in JSON: `write`, `create-dir`, `remove-file`,
    /// `remove-dir`, `rename`, `set-mode`, `set-owner`, `symlink`.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Write { .. } => "write",
            Op::CreateDir { .. } => "create-dir",
            Op::RemoveFile { .. } => "remove-file",
            Op::RemoveDir { .. } => "remove-dir",
            Op::Rename { .. } => "rename",
            Op::SetMode { .. } => "set-mode",
            Op::SetOwner { .. } => "set-owner",
            Op::Symlink { .. } => "symlink",
        }
    }

    /// The short verb shown in plans.
    pub fn verb(&self) -> &'static str {
        match self {
            Op::Write { .. } => "write",
            Op::CreateDir { .. } => "mkdir",
            Op::RemoveFile { .. } => "remove",
            Op::RemoveDir { .. } => "rmdir",
            Op::Rename { .. } => "rename",
            Op::SetMode { .. } => "chmod",
            Op::SetOwner { .. } => "chown",
            Op::Symlink { .. } => "symlink",
        }
    }
}

impl fmt::Display for Op {
    /// The op alone (paths escaped for a terminal); an [`Effect`] shows
    /// metadata changes as before → after.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = self.verb();
        let p = |p: &VPath| escape::line(p.as_str()).into_owned();
        match self {
            Op::Write {
                path,
                content,
                mode,
                ..
            } => {
                write!(
                    f,
                    "{verb:<7} {} ({} bytes, mode {mode:04o})",
                    p(path),
                    content.len()
                )
            }
            Op::CreateDir { path, mode } => write!(f, "{verb:<7} {} (mode {mode:04o})", p(path)),
            Op::RemoveFile { path } | Op::RemoveDir { path } => write!(f, "{verb:<7} {}", p(path)),
            Op::Rename { from, to } => write!(f, "{verb:<7} {} -> {}", p(from), p(to)),
            Op::SetMode { path, mode } => write!(f, "{verb:<7} {} {mode:04o}", p(path)),
            Op::SetOwner { path, uid, gid } => write!(f, "{verb:<7} {} {uid}:{gid}", p(path)),
            Op::Symlink { target, link } => {
                write!(f, "{verb:<7} {} -> {}", p(link), escape::line(target))
            }
        }
    }
}

impl State {
    /// The permission bits, for a file or a directory.
    pub fn mode(&self) -> Option<u32> {
        match self {
            State::File { mode, .. } | State::Dir { mode, .. } => Some(*mode),
            _ => None,
        }
    }

    /// The owner, for anything that has one.
    pub fn owner(&self) -> Option<(u32, u32)> {
        match self {
            State::File { uid, gid, .. }
            | State::Dir { uid, gid, .. }
            | State::Symlink { uid, gid, .. } => Some((*uid, *gid)),
            _ => None,
        }
    }
}

/// `0666 → 0640`, or `→ 0640` when the mode before is not known.
fn mode_change(before: Option<u32>, after: u32) -> String {
    match before {
        Some(b) => format!("{b:04o} → {after:04o}"),
        None => format!("→ {after:04o}"),
    }
}

impl fmt::Display for Effect {
    /// One line of a plan: the op, with metadata shown before → after
    /// (`chmod /p 0666 → 0640`, `chown /p 0:0 → 1000:1000`); paths and
    /// symlink targets escaped for a terminal.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = self.op.verb();
        let p = |p: &VPath| escape::line(p.as_str()).into_owned();
        match &self.op {
            Op::SetMode { path, mode } => write!(
                f,
                "{verb:<7} {} {}",
                p(path),
                mode_change(self.before.mode(), *mode)
            ),
            Op::SetOwner { path, uid, gid } => {
                let before = match self.before.owner() {
                    Some((u, g)) => format!("{u}:{g} "),
                    None => String::new(),
                };
                write!(f, "{verb:<7} {} {before}→ {uid}:{gid}", p(path))
            }
            Op::Write {
                path,
                content,
                mode,
                ..
            } => match self.before.mode() {
                Some(b) if b != *mode => write!(
                    f,
                    "{verb:<7} {} ({} bytes, mode {})",
                    p(path),
                    content.len(),
                    mode_change(Some(b), *mode)
                ),
                _ => self.op.fmt(f),
            },
            _ => self.op.fmt(f),
        }
    }
}

/// An effect: the change and the state it expects to find first.
#[derive(Clone, Debug, Serialize)]
pub struct Effect {
    #[serde(flatten)]
    pub op: Op,
    /// The state of [`Op::path`] before this effect.
    pub before: State,
    /// For a rename, the state of the destination before it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub before_to: Option<State>,
    /// When the path held a file before: its content (the before-image
    /// journaled ahead of the change, and the old side of diffs).
    #[serde(skip)]
    pub before_content: Option<Arc<Vec<u8>>>,
    /// For a rename over an existing file: that file's content.
    #[serde(skip)]
    pub before_to_content: Option<Arc<Vec<u8>>>,
    /// The identity of the file at the path when the plan read it from
    /// disk: if it is unchanged at commit, so is the content.
    #[serde(skip)]
    pub before_identity: Option<crate::disk::Identity>,
    /// For an effect that removes or moves a symlink: whether it led
    /// outside the read-write grants just before (journaled, so a rollback
    /// that puts it back can tell what it restores from what it adds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link_led_out: Option<bool>,
}

impl Effect {
    /// The state this effect should leave its path in (for a rename: the
    /// destination's), as planned. `uid`/`gid` are those of new files.
    pub fn planned_after(&self, uid: u32, gid: u32) -> (State, Option<State>) {
        let keep = |f: &dyn Fn(&mut State)| {
            let mut s = self.before.clone();
            f(&mut s);
            s
        };
        match &self.op {
            Op::Write {
                content,
                mode,
                uid,
                gid,
                ..
            } => (State::file(content, *mode, *uid, *gid), None),
            Op::CreateDir { mode, .. } => (
                State::Dir {
                    mode: *mode,
                    uid,
                    gid,
                },
                None,
            ),
            Op::RemoveFile { .. } | Op::RemoveDir { .. } => (State::Absent, None),
            Op::Rename { .. } => (State::Absent, Some(self.before.clone())),
            Op::SetMode { mode, .. } => (
                keep(&|s| {
                    if let State::File { mode: m, .. } | State::Dir { mode: m, .. } = s {
                        *m = *mode;
                    }
                }),
                None,
            ),
            Op::SetOwner { uid: u, gid: g, .. } => (
                keep(&|s| {
                    if let State::File { mode, .. } = s {
                        *mode = mode_after_chown(*mode);
                    }
                    if let State::File { uid, gid, .. }
                    | State::Dir { uid, gid, .. }
                    | State::Symlink { uid, gid, .. } = s
                    {
                        (*uid, *gid) = (*u, *g);
                    }
                }),
                None,
            ),
            Op::Symlink { target, .. } => (
                State::Symlink {
                    target: target.clone(),
                    uid,
                    gid,
                },
                None,
            ),
        }
    }

    /// Every path this effect changes.
    pub fn paths(&self) -> impl Iterator<Item = &VPath> {
        std::iter::once(self.op.path()).chain(self.op.second_path())
    }

    /// A unified diff for a write of text over text (or a new text file);
    /// `None` for anything else.
    pub fn text_diff(&self, planned: bool) -> Option<String> {
        let Op::Write { path, content, .. } = &self.op else {
            return None;
        };
        let empty = Vec::new();
        let old = self.before_content.as_deref().unwrap_or(&empty);
        if old.len() > MAX_DIFF_INPUT || content.len() > MAX_DIFF_INPUT {
            return None;
        }
        let old = as_text(old)?;
        let new = as_text(content)?;
        // The names in the header on one line each, whatever the path
        // holds (the `path` of the effect keeps it exactly).
        let name = escape::line(path.as_str());
        let old_name = if matches!(self.before, State::Absent) {
            "/dev/null".to_string()
        } else {
            name.to_string()
        };
        let new_name = format!("{name} ({})", if planned { "planned" } else { "new" });
        Some(bounded_diff(old, new, &old_name, &new_name))
    }
}

/// A regular file's mode after its owner changes: the kernel drops
/// set-user-ID, and set-group-ID when the file is group-executable.
pub fn mode_after_chown(mode: u32) -> u32 {
    let mut mode = mode & !0o4000;
    if mode & 0o2010 == 0o2010 {
        mode &= !0o2000;
    }
    mode
}

/// Files larger than this get no diff (shown, journaled or reported).
const MAX_DIFF_INPUT: usize = 1 << 20;
/// The most lines one diff shows; the rest is cut, and the diff says so.
pub const MAX_DIFF_LINES: usize = 2000;
/// The longest one diff may take: the difference of two texts grows with
/// the square of the changed lines, so a slower one is cut (the lines past
/// the cut are shown as removed and added whole), and says so.
pub const DIFF_TIME: Duration = Duration::from_millis(250);
/// All the diffs of one process together take at most this long; after
/// it, diffs are not computed (and each says so), so a plan of many large
/// rewrites cannot keep the host busy.
pub const DIFF_TIME_TOTAL: Duration = Duration::from_secs(2);

/// Milliseconds spent on diffs by this process.
static DIFF_SPENT_MS: AtomicU64 = AtomicU64::new(0);

/// A unified diff of `old` and `new`, at most [`MAX_DIFF_LINES`] lines and
/// [`DIFF_TIME`] of work; a cut diff ends with a line saying why.
fn bounded_diff(old: &str, new: &str, old_name: &str, new_name: &str) -> String {
    let spent = Duration::from_millis(DIFF_SPENT_MS.load(Ordering::Relaxed));
    let left = DIFF_TIME_TOTAL.saturating_sub(spent);
    if left.is_zero() {
        return format!(
            "--- {old_name}\n+++ {new_name}\n[diff not computed: this run's diffs took their {} already]\n",
            crate::units::human(DIFF_TIME_TOTAL)
        );
    }
    let limit = DIFF_TIME.min(left);
    let start = Instant::now();
    let diff = similar::TextDiff::configure()
        .algorithm(similar::Algorithm::Myers)
        .timeout(limit)
        .diff_lines(old, new);
    let timed_out = start.elapsed() >= limit;
    let text = diff
        .unified_diff()
        .context_radius(3)
        .header(old_name, new_name)
        .to_string();
    DIFF_SPENT_MS.fetch_add(start.elapsed().as_millis() as u64, Ordering::Relaxed);
    cut(text, timed_out.then_some(limit))
}

/// Cuts `text` after [`MAX_DIFF_LINES`] lines; either cut is said plainly.
fn cut(text: String, timed_out: Option<Duration>) -> String {
    let mut out = match text.match_indices('\n').nth(MAX_DIFF_LINES - 1) {
        Some((i, _)) => {
            let mut t = text[..=i].to_string();
            t.push_str(&format!("[diff cut after {MAX_DIFF_LINES} lines]\n"));
            t
        }
        None => text,
    };
    if let Some(limit) = timed_out {
        out.push_str(&format!(
            "[diff cut at its time limit of {}: past the cut, lines are shown removed and added whole]\n",
            crate::units::human(limit)
        ));
    }
    out
}

fn as_text(bytes: &[u8]) -> Option<&str> {
    if bytes.contains(&0) {
        return None;
    }
    std::str::from_utf8(bytes).ok()
}

/// The whole plan of a run.
#[derive(Debug, Default)]
pub struct Plan {
    pub effects: Vec<Effect>,
    /// Mutations the fix asked for that would change nothing.
    pub unchanged: usize,
    diffs: Diffs,
}

impl Plan {
    pub fn new(effects: Vec<Effect>, unchanged: usize) -> Plan {
        Plan {
            effects,
            unchanged,
            diffs: Diffs::default(),
        }
    }

    /// Effect `i`'s diff ([`Effect::text_diff`]). A complete plan's diff is
    /// shown, then journaled: a short one is computed once, for the
    /// flavour (planned or not) first asked for, and kept.
    pub fn diff(&self, i: usize, planned: bool) -> Option<String> {
        let effect = &self.effects[i];
        let (flavour, kept) = self.diffs.0.get_or_init(|| {
            let kept = (0..self.effects.len()).map(|_| OnceLock::new()).collect();
            (planned, kept)
        });
        let Some(cell) = kept.get(i).filter(|_| *flavour == planned) else {
            return effect.text_diff(planned);
        };
        if let Some(diff) = cell.get() {
            return diff.clone();
        }
        let diff = effect.text_diff(planned);
        if diff.as_ref().is_none_or(|d| d.len() <= KEEP_DIFF) {
            let _ = cell.set(diff.clone());
        }
        diff
    }
}

/// The diffs of a plan kept so far, by effect, for one flavour.
#[derive(Default)]
struct Diffs(OnceLock<(bool, Vec<OnceLock<Option<String>>>)>);

impl fmt::Debug for Diffs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Diffs")
    }
}

/// Longer diffs are computed again rather than kept (a plan of many large
/// rewrites would hold them all).
const KEEP_DIFF: usize = 4 << 10;

#[cfg(test)]
mod tests {
    use super::*;

    fn write(old: &str, new: String) -> Effect {
        Effect {
            op: Op::Write {
                path: VPath::parse("/srv/app.conf").unwrap(),
                content: Arc::new(new.into_bytes()),
                mode: 0o644,
                uid: 0,
                gid: 0,
                mtime: None,
            },
            before: State::file(old.as_bytes(), 0o644, 0, 0),
            before_to: None,
            before_content: Some(Arc::new(old.as_bytes().to_vec())),
            before_to_content: None,
            before_identity: None,
            link_led_out: None,
        }
    }

    /// A plan's diff is the effect's, whichever flavour, kept or not.
    #[test]
    fn a_plans_diffs_are_the_effects_own() {
        let long: String = (0..2000).map(|i| format!("line {i}\n")).collect();
        let plan = Plan::new(
            vec![
                write("a = 1\n", "a = 2\n".into()),
                write("", long.clone()),
                write("x\n", "y\n".into()),
            ],
            0,
        );
        for _ in 0..2 {
            for (i, e) in plan.effects.iter().enumerate() {
                for planned in [false, true] {
                    assert_eq!(plan.diff(i, planned), e.text_diff(planned), "effect {i}");
                }
            }
        }
        assert!(plan.diff(0, false).unwrap().contains("(new)"));
        assert!(plan.diff(0, true).unwrap().contains("(planned)"));
        // Short diffs of the first flavour asked are kept; a long one is not.
        let (flavour, kept) = plan.diffs.0.get().unwrap();
        assert!(!flavour);
        assert!(kept[0].get().is_some() && kept[2].get().is_some());
        assert!(kept[1].get().is_none());
    }
}
