//! The Python example fixes (fixes/python/NAME.py) are twins of the Rust
//! ones (fixes/NAME): on the same tree with the same params they plan the
//! same (effects with their before-states, modes and diffs, messages,
//! counts, the check's verdict and reason, the idempotency verdict), leave
//! the same tree after a real run, find nothing to do on a second run, and
//! roll back to the tree they started from.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use crate::fixes::{CONF, age};
use crate::logs::logs_tree;
use crate::util::{Out, Tree, fix, python_fix, python_runtime};

/// What differs between any two runs, or between a Rust fix and its Python
/// twin by construction: ids, times, the fix's path, size and digests (the
/// plan's digest too: it binds the plan to the fix that made it), the
/// journal. Everything else on a JSON line must be equal.
const RUN_SPECIFIC: &[&str] = &[
    "run_id",
    "rollback_of",
    "time",
    "fix",
    "fix_id",
    "digest",
    "plan_digest",
    "size",
    "compile_cache",
    "journal",
    "head",
    "elapsed_ms",
    "timings_ms",
];

/// `defops-wasm run FIX --json ARGS EXTRA` in `t`.
fn run(t: &Tree, fix: &Path, args: &[String], extra: &[&str]) -> Out {
    t.warm_python();
    t.defops()
        .args(&["run", fix.to_str().unwrap(), "--json"])
        .args(args)
        .args(extra)
        .output()
}

/// A run's JSON Lines without [`RUN_SPECIFIC`].
fn comparable(out: &Out) -> Vec<Value> {
    out.lines()
        .into_iter()
        .map(|mut line| {
            if let Some(fields) = line.as_object_mut() {
                for k in RUN_SPECIFIC {
                    fields.remove(*k);
                }
            }
            line
        })
        .collect()
}

/// Asserts two runs printed the same, line by line and field by field.
#[track_caller]
fn assert_same_output(what: &str, rust: &Out, python: &Out) {
    assert_eq!(
        rust.code, python.code,
        "{what}: exit codes differ\nRust: {rust:?}\nPython: {python:?}"
    );
    let (r, p) = (comparable(rust), comparable(python));
    for (i, (r, p)) in r.iter().zip(&p).enumerate() {
        assert_eq!(r, p, "{what}: line {i} differs");
    }
    assert_eq!(
        r.len(),
        p.len(),
        "{what}: line counts differ\nRust: {r:#?}\nPython: {p:#?}"
    );
}

/// The header of a run's journal.
fn journal_header(out: &Out) -> Value {
    let journal = out.summary()["journal"].as_str().unwrap().to_string();
    let text = std::fs::read_to_string(&journal).unwrap();
    let header: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(header["type"], "header", "{journal}");
    header
}

/// Asserts both fixes declared the same manifest, and that the Python one
/// ran on the runtime the binary finds next to its target directory.
#[track_caller]
fn assert_same_manifest(rust: &Out, python: &Out) {
    let (r, p) = (journal_header(rust), journal_header(python));
    assert_eq!(r["fix"]["manifest"], p["fix"]["manifest"]);
    assert_eq!(p["fix"]["language"], "python");
    let used = Path::new(p["fix"]["runtime"]["path"].as_str().unwrap());
    assert_eq!(
        used.canonicalize().unwrap(),
        python_runtime().canonicalize().unwrap(),
        "the binary ran another runtime than the one the tests built"
    );
}

/// A snapshot entry without its mtime.
fn without_mtime(entry: &str) -> &str {
    entry.rsplit_once(" mtime=").map_or(entry, |(rest, _)| rest)
}

/// Asserts both real runs left the same tree: every entry the same but
/// the mtimes of what they created or replaced, and what one left as it
/// was the other left as it was, mtime and all.
#[track_caller]
fn assert_same_tree(
    before: &BTreeMap<String, String>,
    rust: &BTreeMap<String, String>,
    python: &BTreeMap<String, String>,
) {
    let strip = |s: &BTreeMap<String, String>| -> BTreeMap<String, String> {
        s.iter()
            .map(|(k, v)| (k.clone(), without_mtime(v).to_string()))
            .collect()
    };
    assert_eq!(
        strip(rust),
        strip(python),
        "the trees after the runs differ"
    );
    for (path, was) in before {
        assert_eq!(
            rust.get(path) == Some(was),
            python.get(path) == Some(was),
            "{path}: one twin left it as it was, the other did not\nbefore: {was}\nRust: {:?}\nPython: {:?}",
            rust.get(path),
            python.get(path)
        );
    }
}

/// Rolls back a run that applied something, asserts the tree is back,
/// and returns what rollback printed.
fn roll_back(t: &Tree, real: &Out, before: &BTreeMap<String, String>) -> Option<Out> {
    if real.summary()["outcome"] != "applied" {
        assert_eq!(
            &t.snapshot(""),
            before,
            "a run that applied nothing changed the disk"
        );
        return None;
    }
    let run_id = real.summary()["run_id"].as_str().unwrap().to_string();
    let out = t.defops().args(&["rollback", &run_id, "--json"]).output();
    out.assert_code(0);
    assert_eq!(&t.snapshot(""), before, "rollback did not restore the tree");
    Some(out)
}

/// What the Python twin printed, for the assertions of each case.
struct Twin {
    dry: Out,
    real: Out,
}

/// Runs the Rust fix `name` and its Python twin with `args` on `t`: both
/// dry-runs, then each real run, a second run and a rollback in turn,
/// asserting at every step that the twins agree and the tree is as it
/// should be. Returns the Python twin's dry and real runs.
fn assert_twins(t: &Tree, name: &str, args: &[String]) -> Twin {
    let (rust, python) = (fix(name), python_fix(name));
    let before = t.snapshot("");

    let dry_r = run(t, &rust, args, &["--dry-run"]);
    let dry_p = run(t, &python, args, &["--dry-run"]);
    assert_same_output(&format!("{name} dry-run"), &dry_r, &dry_p);
    assert_eq!(t.snapshot(""), before, "{name}: a dry-run changed the disk");
    assert_same_manifest(&dry_r, &dry_p);

    let real_r = run(t, &rust, args, &[]);
    let after_r = t.snapshot("");
    let again_r = run(t, &rust, args, &[]);
    let back_r = roll_back(t, &real_r, &before);

    let real_p = run(t, &python, args, &[]);
    let after_p = t.snapshot("");
    let again_p = run(t, &python, args, &[]);
    assert_same_output(&format!("{name} real run"), &real_r, &real_p);
    assert_same_tree(&before, &after_r, &after_p);
    assert_same_output(&format!("{name} second run"), &again_r, &again_p);
    let back_p = roll_back(t, &real_p, &before);
    match (back_r, back_p) {
        (Some(r), Some(p)) => assert_same_output(&format!("{name} rollback"), &r, &p),
        (None, None) => {}
        _ => panic!("{name}: only one twin's run was rolled back"),
    }

    // After a run that did its work (or found none), there is none left.
    if real_p.code == 0 {
        let s = again_p.summary();
        assert_eq!(s["outcome"], "not-needed", "{name}: {}", again_p.stdout);
        assert_eq!(s["changed"], 0);
        assert!(again_p.of("effect").is_empty(), "{}", again_p.stdout);
    }
    Twin {
        dry: dry_p,
        real: real_p,
    }
}

fn params(pairs: &[(&str, String)]) -> Vec<String> {
    pairs
        .iter()
        .flat_map(|(k, v)| ["-p".to_string(), format!("{k}={v}")])
        .collect()
}

fn allow(t: &Tree, grant: &str) -> Vec<String> {
    vec!["--allow".into(), t.p(grant)]
}

fn config_set_args(t: &Tree, file: &str, value: &str) -> Vec<String> {
    let mut args = allow(t, "grant");
    args.extend(params(&[
        ("file", file.to_string()),
        ("key", "max_conn".into()),
        ("value", value.into()),
    ]));
    args
}

#[test]
fn config_set_twins_edit_a_file_in_place() {
    let t = Tree::new();
    t.write("grant/app.conf", CONF);
    std::fs::set_permissions(
        t.path("grant/app.conf"),
        std::os::unix::fs::PermissionsExt::from_mode(0o640),
    )
    .unwrap();
    let twin = assert_twins(
        &t,
        "config-set",
        &config_set_args(&t, &t.p("grant/app.conf"), "50"),
    );
    let s = twin.dry.summary();
    assert_eq!(
        (s["outcome"].as_str(), s["changed"].as_u64()),
        (Some("planned"), Some(1))
    );
    assert_eq!(s["idempotent"], true);
    let effect = &twin.dry.of("effect")[0];
    assert_eq!(effect["mode"], "0640");
    assert!(
        effect["diff"]
            .as_str()
            .unwrap()
            .contains("-max_conn = 20\n+max_conn = 50"),
        "{effect}"
    );
    assert_eq!(
        twin.real.messages(),
        [format!("{}: max_conn was 20", t.p("grant/app.conf"))]
    );
}

#[test]
fn config_set_twins_append_a_missing_key() {
    let t = Tree::new();
    t.write("grant/app.conf", "# only a comment\n  timeout = 5");
    t.write("grant/crlf.conf", "max_conn=1\r\n\tmax_conn = 2\r\n");
    for file in ["grant/app.conf", "grant/crlf.conf"] {
        let twin = assert_twins(&t, "config-set", &config_set_args(&t, &t.p(file), "7"));
        assert_eq!(twin.real.summary()["outcome"], "applied", "{file}");
    }
}

#[test]
fn config_set_twins_expand_a_glob_alike() {
    let t = Tree::new();
    t.write("grant/a.conf", "max_conn = 1\n");
    t.write("grant/b.conf", "max_conn = 50\n");
    t.write("grant/c.txt", "max_conn = 1\n");
    t.write("grant/d.conf", "# none yet\n");
    t.write("grant/dir.conf/x", "a directory is never matched\n");
    t.symlink("a.conf", "grant/link.conf");
    let glob = format!("{}/*.conf", t.p("grant"));
    let twin = assert_twins(&t, "config-set", &config_set_args(&t, &glob, "50"));
    let s = twin.dry.summary();
    assert_eq!(
        s["check"]["reason"], "2 of 3 files need max_conn = 50",
        "{}",
        twin.dry.stdout
    );
    assert_eq!(
        (s["changed"].as_u64(), s["unchanged"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(
        twin.real.summary()["result"],
        "set max_conn = 50 in 3 files"
    );

    // Every file already right: not needed, in the same words.
    let glob = format!("{}/b*.conf", t.p("grant"));
    let twin = assert_twins(&t, "config-set", &config_set_args(&t, &glob, "50"));
    assert_eq!(twin.dry.summary()["outcome"], "not-needed");

    // A glob that matches nothing fails both, naming it.
    let glob = format!("{}/*.ini", t.p("grant"));
    let args = config_set_args(&t, &glob, "50");
    let (r, p) = (
        run(&t, &fix("config-set"), &args, &["--dry-run"]),
        run(&t, &python_fix("config-set"), &args, &["--dry-run"]),
    );
    assert_same_output("a glob that matches nothing", &r, &p);
    assert_eq!(
        p.summary()["error"],
        format!("check failed: no file matches {glob}"),
        "{p:?}"
    );
}

#[test]
fn rename_to_backup_twins() {
    let t = Tree::new();
    t.write("grant/data/segment", "payload");
    let mut args = allow(&t, "grant/data");
    args.extend(params(&[("path", t.p("grant/data/segment"))]));
    let twin = assert_twins(&t, "rename-to-backup", &args);
    assert_eq!(twin.dry.of("effect")[0]["op"], "rename");

    // A directory, with what it holds.
    t.write("grant/cache/a", "1");
    t.write("grant/cache/sub/b", "2");
    let mut args = allow(&t, "grant");
    args.extend(params(&[("path", t.p("grant/cache"))]));
    assert_twins(&t, "rename-to-backup", &args);

    // A dangling symlink is there too, and is moved.
    t.symlink("nowhere", "grant/dangling");
    let mut args = allow(&t, "grant");
    args.extend(params(&[("path", t.p("grant/dangling"))]));
    let twin = assert_twins(&t, "rename-to-backup", &args);
    assert_eq!(twin.dry.summary()["outcome"], "planned");

    // Never over a backup; and nothing to do when there is nothing.
    t.write("grant/x", "new");
    t.write("grant/x.backup", "old");
    for path in ["grant/x", "grant/absent"] {
        let mut args = allow(&t, "grant");
        args.extend(params(&[("path", t.p(path))]));
        let twin = assert_twins(&t, "rename-to-backup", &args);
        assert_eq!(twin.dry.summary()["outcome"], "not-needed", "{path}");
    }
}

#[test]
fn stale_locks_twins() {
    let t = Tree::new();
    for f in ["old1.lock", "old2.lock", "fresh.lock", "old.txt"] {
        t.write(&format!("grant/locks/{f}"), "pid");
    }
    for f in ["old1.lock", "old2.lock", "old.txt"] {
        age(&t, &format!("grant/locks/{f}"), 7200);
    }
    std::fs::create_dir(t.path("grant/locks/dir.lock")).unwrap();
    t.symlink("old1.lock", "grant/locks/link.lock");
    let mut args = allow(&t, "grant/locks");
    args.extend(params(&[
        ("dir", t.p("grant/locks")),
        ("max_age_secs", "600".into()),
    ]));
    let twin = assert_twins(&t, "stale-locks", &args);
    let planned: Vec<_> = twin
        .dry
        .of("effect")
        .iter()
        .map(|e| e["path"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        planned,
        [t.p("grant/locks/old1.lock"), t.p("grant/locks/old2.lock")]
    );

    // The default age (an hour) and a limit nothing is past.
    for extra in [vec![], params(&[("max_age_secs", "86400".into())])] {
        let mut args = allow(&t, "grant/locks");
        args.extend(params(&[("dir", t.p("grant/locks"))]));
        args.extend(extra);
        assert_twins(&t, "stale-locks", &args);
    }
}

fn quarantine_args(t: &Tree, extra: &[(&str, String)]) -> Vec<String> {
    let glob = format!("{}/db.log*", t.p("logs"));
    let mut args = allow(t, "grant");
    args.extend(["--allow-log".to_string(), glob.clone()]);
    args.extend(params(&[
        ("log", glob),
        ("data_dir", t.p("grant/data")),
        ("quarantine_dir", t.p("grant/quarantine")),
    ]));
    args.extend(params(extra));
    args
}

#[test]
fn quarantine_on_log_twins() {
    let t = logs_tree();
    for seg in ["seg-a", "seg-b", "seg-c"] {
        t.write(&format!("grant/data/{seg}"), seg);
    }
    // Below the threshold, at it, and with the default one.
    for threshold in ["4", "3"] {
        let args = quarantine_args(&t, &[("threshold", threshold.into())]);
        let twin = assert_twins(&t, "quarantine-on-log", &args);
        let want = if threshold == "4" {
            "not-needed"
        } else {
            "planned"
        };
        assert_eq!(twin.dry.summary()["outcome"], want, "threshold {threshold}");
    }
    let twin = assert_twins(&t, "quarantine-on-log", &quarantine_args(&t, &[]));
    let moved: Vec<_> = twin
        .dry
        .of("effect")
        .iter()
        .filter(|e| e["op"] == "rename")
        .map(|e| e["from"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(moved, [t.p("grant/data/seg-a"), t.p("grant/data/seg-b")]);

    // The quarantine directory exists already: only the moves.
    std::fs::create_dir(t.path("grant/quarantine")).unwrap();
    let twin = assert_twins(&t, "quarantine-on-log", &quarantine_args(&t, &[]));
    assert!(twin.dry.of("effect").iter().all(|e| e["op"] == "rename"));
}

#[test]
fn quarantine_on_log_twins_on_leader_and_follower() {
    let t = logs_tree();
    t.write("grant/data/seg-a", "a");
    for role in ["follower\n", " leader \n"] {
        t.write("ro/role", role);
        let mut args = quarantine_args(&t, &[("leader_file", t.p("ro/role"))]);
        args.extend(["--allow-ro".to_string(), t.p("ro")]);
        let twin = assert_twins(&t, "quarantine-on-log", &args);
        if role.starts_with('f') {
            assert_eq!(
                twin.dry.summary()["check"]["reason"],
                format!("{} says \"follower\", not leader", t.p("ro/role"))
            );
        } else {
            assert_eq!(twin.real.summary()["outcome"], "applied");
        }
    }
}

#[test]
fn bad_params_fail_both_twins_alike() {
    let t = logs_tree();
    t.write("grant/data/seg-a", "a");
    for threshold in ["x", "-1", "", " 3", "1_0", "18446744073709551616"] {
        let args = quarantine_args(&t, &[("threshold", threshold.into())]);
        let (r, p) = (
            run(&t, &fix("quarantine-on-log"), &args, &["--dry-run"]),
            run(&t, &python_fix("quarantine-on-log"), &args, &["--dry-run"]),
        );
        assert_same_output(&format!("threshold={threshold:?}"), &r, &p);
        assert_eq!(r.code, 1, "{threshold:?}: {r:?}");
        let error = r.summary()["error"].as_str().unwrap().to_string();
        assert!(
            error.starts_with("check failed: parameter threshold="),
            "{error}"
        );
    }
    // Keys and values config-set will not write.
    t.write("grant/app.conf", CONF);
    for (key, value) in [
        ("a=b", "1"),
        ("#x", "1"),
        (" \t", "1"),
        ("a\nb", "1"),
        ("k", "1\n2"),
    ] {
        let mut args = allow(&t, "grant");
        args.extend(params(&[
            ("file", t.p("grant/app.conf")),
            ("key", key.into()),
            ("value", value.into()),
        ]));
        let (r, p) = (
            run(&t, &fix("config-set"), &args, &["--dry-run"]),
            run(&t, &python_fix("config-set"), &args, &["--dry-run"]),
        );
        assert_same_output(&format!("key={key:?} value={value:?}"), &r, &p);
        assert_eq!(r.code, 1, "{key:?}: {r:?}");
    }
    // Quoted as Rust's {:?} quotes: escapes and control characters too.
    for max_age in ["1h", "\"1\"\\\u{1}"] {
        let mut args = allow(&t, "grant");
        args.extend(params(&[
            ("dir", t.p("grant")),
            ("max_age_secs", max_age.into()),
        ]));
        let (r, p) = (
            run(&t, &fix("stale-locks"), &args, &["--dry-run"]),
            run(&t, &python_fix("stale-locks"), &args, &["--dry-run"]),
        );
        assert_same_output(&format!("max_age_secs={max_age:?}"), &r, &p);
        assert_eq!(r.code, 1, "{r:?}");
    }

    // A leading + is a number to both.
    let args = quarantine_args(&t, &[("threshold", "+3".into())]);
    let twin = assert_twins(&t, "quarantine-on-log", &args);
    assert_eq!(twin.dry.summary()["outcome"], "planned");
}

/// Lines a generated config file is made of: settings, comments, lookalikes,
/// odd spacing (Unicode spaces both twins trim, the separator `\x1c` both
/// keep) and a stray `\r`.
const CONFIG_LINES: &[&str] = &[
    "max_conn = 20",
    "max_conn = 50",
    "  max_conn=1",
    "\tmax_conn =  50 ",
    "# max_conn = 3",
    "  ; max_conn = 4",
    "max_conn",
    "max_conn_x = 1",
    "timeout = 5",
    "",
    "   ",
    "max_conn = a = b",
    "\u{a0}max_conn = 7",
    "\u{2003}max_conn\u{3000}= 8",
    "\u{1c}max_conn = 9",
    "max_conn = 20\r",
    "max_conn =",
];

/// Generated config files, set with generated values: the twins plan the
/// same diff, messages and verdicts for each. `DEFOPS_TWIN_CASES` sets how
/// many (default 40); a failure names its seed.
#[test]
fn config_set_twins_agree_on_generated_files() {
    let cases: u64 = std::env::var("DEFOPS_TWIN_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    let t = Tree::new();
    let file = t.p("grant/app.conf");
    for seed in 0..cases {
        let mut rng = crate::composition::Rng::new(seed);
        let mut text = String::new();
        for _ in 0..rng.below(6) {
            text.push_str(rng.pick::<&str>(CONFIG_LINES));
            text.push_str(rng.pick::<&str>(&["\n", "\n", "\r\n"]));
        }
        if rng.below(3) == 0 {
            text.push_str(rng.pick::<&str>(CONFIG_LINES));
        }
        let value = *rng.pick(&["50", "20", "", "a b"]);
        t.write("grant/app.conf", &text);
        let args = config_set_args(&t, &file, value);
        let (r, p) = (
            run(&t, &fix("config-set"), &args, &["--dry-run"]),
            run(&t, &python_fix("config-set"), &args, &["--dry-run"]),
        );
        assert_same_output(
            &format!("seed {seed}: file {text:?}, value {value:?}"),
            &r,
            &p,
        );
        r.assert_code(0);
    }
}
