//! Is the tree back? After a rollback's commit, every path the run touched
//! is looked at again, by the name it had before the run, and compared
//! with the state and modification time the run's journal recorded for it
//! before its first change.

use std::collections::BTreeMap;

use serde_json::Value;

use super::in_force::paths_of;
use crate::grants::{Grants, VPath};
use crate::plan::State;

/// Modification times by the name a path had before the run.
pub type Mtimes = BTreeMap<String, (i64, u32)>;

/// The state of every path the run touched, before its first change, by
/// the name it had then: the before-state of the first effect that reached
/// it. (A path reached only below something the run made has no such
/// state: it did not exist.)
pub fn before_run(intents: &[&Value], origins: &[Vec<Option<VPath>>]) -> BTreeMap<VPath, State> {
    let mut map = BTreeMap::new();
    for (i, names) in intents.iter().zip(origins) {
        for ((_, before), name) in paths_of(i).into_iter().zip(names) {
            let Some(name) = name else { continue };
            if !map.contains_key(name) {
                let state = super::state(&i[before]).unwrap_or(State::Absent);
                map.insert(name.clone(), state);
            }
        }
    }
    map
}

/// The earliest recorded mtime of each path (recorded under its name before
/// the run).
pub fn recorded_mtimes(intents: &[&Value]) -> Mtimes {
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

/// A path not as it was before the run.
#[derive(Debug)]
pub struct NotBack {
    pub path: String,
    pub attribute: &'static str,
    pub expected: String,
    pub found: String,
}

impl std::fmt::Display for NotBack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({}: expected {}, found {})",
            self.path, self.attribute, self.expected, self.found
        )
    }
}

fn show_time(t: Option<(i64, u32)>) -> String {
    match t {
        Some((s, ns)) => format!("{s}.{ns:09}"),
        None => "nothing there".into(),
    }
}

/// Sets back the recorded modification time of everything that is there,
/// then names every path whose state or modification time is not what it
/// was before the run: states first, then times, each in path order.
///
/// In path order (directory by directory, each opened once per run of
/// paths; a long list is looked at in two runs, on two threads): per path
/// one `lstat`, the content read when it is a file the run found there,
/// and a time set only where it is not the recorded one (then looked at
/// again).
pub fn look_again(
    grants: &Grants,
    before: &BTreeMap<VPath, State>,
    times: &Mtimes,
) -> Vec<NotBack> {
    let mut paths: BTreeMap<VPath, Recorded<'_>> = before
        .iter()
        .map(|(p, s)| (p.clone(), (Some(s), None)))
        .collect();
    for (path, t) in times {
        if let Ok(p) = VPath::parse(path) {
            paths.entry(p).or_default().1 = Some(*t);
        }
    }
    let paths: Vec<_> = paths.iter().collect();
    let seen = look_all(grants, &paths);
    let (mut states, mut mtimes) = (Vec::new(), Vec::new());
    for ((path, (expected, time)), seen) in paths.into_iter().zip(seen) {
        if let Some(expected) = expected {
            let (attribute, found) = match &seen {
                Ok((s, _)) => {
                    let attribute = expected.difference(s);
                    (attribute, s.shown_for(attribute.unwrap_or_default()))
                }
                Err(e) => (Some("presence"), format!("unreadable ({e})")),
            };
            if let Some(attribute) = attribute {
                states.push(NotBack {
                    path: path.to_string(),
                    attribute,
                    expected: expected.shown_for(attribute),
                    found,
                });
                continue;
            }
        }
        let Some(time) = time else { continue };
        let found = seen.ok().and_then(|(_, t)| t);
        if found != Some(*time) {
            mtimes.push(NotBack {
                path: path.to_string(),
                attribute: "mtime",
                expected: show_time(Some(*time)),
                found: show_time(found),
            });
        }
    }
    states.append(&mut mtimes);
    states
}

/// A path's state and its time before the run, when recorded.
type Recorded<'a> = (Option<&'a State>, Option<(i64, u32)>);

/// What [`look`] found.
type Seen = std::io::Result<(State, Option<(i64, u32)>)>;

/// [`look`] at every path, in order: on two threads when there are many
/// (each takes a run of neighbouring paths, so a directory is still
/// opened once per run), on this one otherwise.
fn look_all(grants: &Grants, paths: &[(&VPath, &Recorded<'_>)]) -> Vec<Seen> {
    crate::in_two_halves(paths, PARALLEL_FROM, |run| {
        let mut cache = crate::disk::DirCache::default();
        run.iter()
            .map(|(path, (_, time))| look(grants, &mut cache, path, *time))
            .collect()
    })
}

/// Below this many paths, looking at them on a second thread costs more
/// than it saves.
const PARALLEL_FROM: usize = 256;

/// The state of `path` and its modification time, after setting it back
/// to `time` when it differs.
fn look(
    grants: &Grants,
    cache: &mut crate::disk::DirCache,
    path: &VPath,
    time: Option<(i64, u32)>,
) -> Seen {
    use std::io::ErrorKind;
    let grant = grants.find(path).ok_or_else(|| {
        std::io::Error::new(
            ErrorKind::PermissionDenied,
            "outside the granted directories",
        )
    })?;
    let loc = match cache.locate(grant, path) {
        Ok(loc) => loc,
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
            return Ok((State::Absent, None));
        }
        Err(e) => return Err(e),
    };
    let Some(mut st) = loc.lstat()? else {
        return Ok((State::Absent, None));
    };
    if let Some((s, ns)) = time
        && (st.mtime, st.mtime_nsec) != (s, ns)
        && loc.set_mtime(s, ns).is_ok()
    {
        st = loc.lstat()?.ok_or(ErrorKind::NotFound)?;
    }
    Ok((loc.state_with(&st)?, Some((st.mtime, st.mtime_nsec))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grants::Access;

    #[test]
    fn look_again_sets_times_back_and_names_state_and_mtime() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        std::fs::write(root.join("f"), "a").unwrap();
        let grants = Grants::open(&[(root.clone(), Access::ReadWrite)]).unwrap();
        let vp = |n: &str| VPath::parse(&format!("{}/{n}", root.display())).unwrap();
        let meta = std::fs::symlink_metadata(root.join("f")).unwrap();
        use std::os::unix::fs::MetadataExt;
        let f = State::file(b"a", meta.mode() & 0o7777, meta.uid(), meta.gid());
        let mut before = BTreeMap::from([(vp("f"), f), (vp("gone"), State::Absent)]);
        let mut times = Mtimes::from([(
            vp("f").to_string(),
            (meta.mtime(), meta.mtime_nsec() as u32),
        )]);
        assert!(look_again(&grants, &before, &times).is_empty());

        // Content, presence and mtime, each named.
        std::fs::write(root.join("gone"), "x").unwrap();
        times.insert(vp("f").to_string(), (1, 2));
        before.insert(vp("f"), State::file(b"b", meta.mode() & 0o7777, 0, 0));
        let found: Vec<String> = look_again(&grants, &before, &times)
            .iter()
            .map(|d| format!("{} {}", d.path.rsplit('/').next().unwrap(), d.attribute))
            .collect();
        assert_eq!(found, ["f content", "gone presence"]);
        // The recorded time is set back where it differs; one that cannot
        // be (nothing there) is named.
        assert_eq!(
            std::fs::symlink_metadata(root.join("f"))
                .unwrap()
                .mtime_nsec(),
            2
        );
        before.remove(&vp("f"));
        times.insert(vp("none").to_string(), (3, 4));
        let found = look_again(&grants, &before, &times);
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(found[1].attribute, "mtime");
        assert!(found[1].expected.starts_with("3.000000004"));
        assert_eq!(found[1].found, "nothing there");
    }

    /// A restored file swapped for a hard link to a file outside the
    /// grant: named, and the outside file's time is left alone.
    #[test]
    fn a_hard_link_out_keeps_its_time() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let base = std::fs::canonicalize(dir.path()).unwrap();
        let (root, outside) = (base.join("grant"), base.join("outside"));
        std::fs::create_dir(&root).unwrap();
        std::fs::write(&outside, "secret").unwrap();
        let was = std::fs::symlink_metadata(&outside).unwrap();
        std::fs::hard_link(&outside, root.join("f")).unwrap();
        let grants = Grants::open(&[(root.clone(), Access::ReadWrite)]).unwrap();
        let f = VPath::parse(&format!("{}/f", root.display())).unwrap();
        let before = BTreeMap::from([(f.clone(), State::file(b"a", 0o644, 0, 0))]);
        let times = Mtimes::from([(f.to_string(), (7, 8))]);
        let found = look_again(&grants, &before, &times);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].found.contains("hard links"), "{found:?}");
        let now = std::fs::symlink_metadata(&outside).unwrap();
        assert_eq!(
            (now.mtime(), now.mtime_nsec()),
            (was.mtime(), was.mtime_nsec())
        );
    }

    /// A list long enough to be looked at on two threads: what differs is
    /// named in path order from both halves, and times are set back in both.
    #[test]
    fn a_long_list_is_looked_at_in_order_on_two_threads() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        let n = PARALLEL_FROM * 2;
        let name = |i: usize| format!("d{}/f{i:04}", i % 3);
        for d in 0..3 {
            std::fs::create_dir(root.join(format!("d{d}"))).unwrap();
        }
        for i in 0..n {
            std::fs::write(root.join(name(i)), "a").unwrap();
        }
        let grants = Grants::open(&[(root.clone(), Access::ReadWrite)]).unwrap();
        let vp = |n: &str| VPath::parse(&format!("{}/{n}", root.display())).unwrap();
        let meta = std::fs::symlink_metadata(root.join(name(0))).unwrap();
        let a = State::file(b"a", meta.mode() & 0o7777, meta.uid(), meta.gid());
        let b = State::file(b"b", meta.mode() & 0o7777, meta.uid(), meta.gid());
        // Every 50th file was "b" before the run, and every file had the
        // time (7, i) then.
        let before: BTreeMap<VPath, State> = (0..n)
            .map(|i| {
                (
                    vp(&name(i)),
                    if i % 50 == 0 { b.clone() } else { a.clone() },
                )
            })
            .collect();
        let times: Mtimes = (0..n)
            .map(|i| (vp(&name(i)).to_string(), (7, i as u32)))
            .collect();
        let found: Vec<String> = look_again(&grants, &before, &times)
            .iter()
            .map(|d| {
                format!(
                    "{} {}",
                    d.path
                        .strip_prefix(&format!("{}/", root.display()))
                        .unwrap(),
                    d.attribute
                )
            })
            .collect();
        let mut expected: Vec<String> = (0..n)
            .filter(|i| i % 50 == 0)
            .map(|i| format!("{} content", name(i)))
            .collect();
        expected.sort();
        assert_eq!(found, expected);
        for i in (0..n).filter(|i| i % 50 != 0) {
            let m = std::fs::symlink_metadata(root.join(name(i))).unwrap();
            assert_eq!((m.mtime(), m.mtime_nsec()), (7, i as i64), "{}", name(i));
        }
    }
}
