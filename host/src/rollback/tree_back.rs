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
            let state = super::state(&i[before]).unwrap_or(State::Absent);
            map.entry(name.clone()).or_insert(state);
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

/// Sets back the recorded modification times of everything that is there.
pub fn restore_mtimes(grants: &Grants, times: &Mtimes) {
    for (path, (s, ns)) in times {
        let Ok(p) = VPath::parse(path) else { continue };
        if let Some(g) = grants.find(&p)
            && let Ok(loc) = crate::disk::locate(g, &p)
            && let Ok(Some(_)) = loc.lstat()
        {
            let _ = loc.set_mtime(*s, *ns);
        }
    }
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

/// Every path whose state or modification time is not what it was before
/// the run.
pub fn differences(
    grants: &Grants,
    before: &BTreeMap<VPath, State>,
    times: &Mtimes,
) -> Vec<NotBack> {
    let mut out = Vec::new();
    for (path, expected) in before {
        let (attribute, found) = match crate::commit::observe(grants, path) {
            Ok((s, _)) => (expected.difference(&s), s.to_string()),
            Err(e) => (Some("presence"), format!("unreadable ({e})")),
        };
        if let Some(attribute) = attribute {
            out.push(NotBack {
                path: path.to_string(),
                attribute,
                expected: expected.to_string(),
                found,
            });
        }
    }
    for (path, &(s, ns)) in times {
        let Ok(p) = VPath::parse(path) else { continue };
        if out.iter().any(|d| d.path == *path) {
            continue;
        }
        let found = grants
            .find(&p)
            .and_then(|g| crate::disk::locate(g, &p).ok())
            .and_then(|loc| loc.lstat().ok().flatten())
            .map(|st| (st.mtime, st.mtime_nsec));
        if found != Some((s, ns)) {
            out.push(NotBack {
                path: path.clone(),
                attribute: "mtime",
                expected: show_time(Some((s, ns))),
                found: show_time(found),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grants::Access;

    #[test]
    fn differences_name_state_and_mtime_and_nothing_when_back() {
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
        assert!(differences(&grants, &before, &times).is_empty());

        // Content, presence and mtime, each named.
        std::fs::write(root.join("gone"), "x").unwrap();
        times.insert(vp("f").to_string(), (1, 2));
        before.insert(vp("f"), State::file(b"b", meta.mode() & 0o7777, 0, 0));
        let found: Vec<String> = differences(&grants, &before, &times)
            .iter()
            .map(|d| format!("{} {}", d.path.rsplit('/').next().unwrap(), d.attribute))
            .collect();
        assert_eq!(found, ["f content", "gone presence"]);
        before.remove(&vp("f"));
        let found = differences(&grants, &before, &times);
        assert_eq!(found.last().unwrap().attribute, "mtime");
        assert!(found.last().unwrap().expected.starts_with("1.000000002"));
    }
}
