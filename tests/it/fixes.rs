//! The example fixes: dry-run changes nothing and shows the plan, the real
//! run changes what it should, a second real run changes nothing.

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, SystemTime};

use crate::util::{Tree, fix, guest};

pub const CONF: &str = "# app settings\nmax_conn = 20\n  timeout = 5\n; max_conn = 99\n";

#[test]
fn config_set_dry_run_real_run_then_nothing() {
    let t = Tree::new();
    t.write("grant/app.conf", CONF);
    std::fs::set_permissions(
        t.path("grant/app.conf"),
        std::fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    let file = t.p("grant/app.conf");
    let before = t.snapshot("");

    let dry = t.set_max_conn(&file, "50", &["--dry-run"]);
    dry.assert_code(0);
    assert_eq!(t.snapshot(""), before, "a dry-run changed the disk");
    let s = dry.summary();
    assert_eq!(s["outcome"], "planned");
    assert_eq!(s["changed"], 1);
    let effects = dry.of("effect");
    assert_eq!(effects.len(), 1);
    assert_eq!(effects[0]["op"], "write");
    assert_eq!(effects[0]["path"], file);
    let diff = effects[0]["diff"].as_str().unwrap();
    assert!(diff.contains("-max_conn = 20\n+max_conn = 50"), "{diff}");

    let real = t.set_max_conn(&file, "50", &[]);
    real.assert_code(0);
    assert_eq!(real.summary()["outcome"], "applied");
    assert_eq!(
        t.read("grant/app.conf"),
        "# app settings\nmax_conn = 50\n  timeout = 5\n; max_conn = 99\n"
    );
    assert_eq!(
        t.mode("grant/app.conf"),
        0o640,
        "the atomic replace must keep the mode"
    );

    let again = t.set_max_conn(&file, "50", &[]);
    again.assert_code(0);
    let s = again.summary();
    assert_eq!(s["outcome"], "not-needed");
    assert_eq!(s["changed"], 0);
}

#[test]
fn config_set_appends_a_missing_key_and_keeps_the_rest() {
    let t = Tree::new();
    t.write("grant/app.conf", "# only a comment\n  timeout = 5");
    let file = t.p("grant/app.conf");
    let out = t.set_max_conn(&file, "7", &[]);
    out.assert_code(0);
    assert_eq!(
        t.read("grant/app.conf"),
        "# only a comment\n  timeout = 5\nmax_conn = 7\n"
    );
}

#[test]
fn config_set_human_output_shows_the_diff_and_counts() {
    let t = Tree::new();
    t.write("grant/app.conf", CONF);
    let file = t.p("grant/app.conf");
    let out = t
        .defops()
        .args(&[
            "run",
            fix("config-set").to_str().unwrap(),
            "--allow",
            &t.p("grant"),
            "-p",
            &format!("file={file}"),
            "-p",
            "key=max_conn",
            "-p",
            "value=50",
            "--dry-run",
        ])
        .output();
    out.assert_code(0);
    assert!(out.stdout.contains("-max_conn = 20"), "{}", out.stdout);
    assert!(out.stdout.contains("+max_conn = 50"), "{}", out.stdout);
    assert!(
        out.stdout.contains("changed: 1, unchanged: 0"),
        "{}",
        out.stdout
    );
}

#[test]
fn config_set_missing_param_fails_clearly() {
    let t = Tree::new();
    // The manifest says `file` is required: refused before the fix runs,
    // and before anything is written: no state directory, no compiled fix.
    let fresh = t.p("fresh-state");
    let refused = |extra: &[&str]| {
        let fix = fix("config-set");
        let grant = t.p("grant");
        let args = [
            &["run", fix.to_str().unwrap(), "--allow", grant.as_str()][..],
            extra,
        ]
        .concat();
        t.defops()
            .env("DEFOPS_STATE_DIR", &fresh)
            .args(&args)
            .output()
    };
    refused(&["-p", "key=a", "-p", "value=b"])
        .assert_code(2)
        .assert_stderr("config-set needs --param file=...");
    let out = refused(&[
        "-p", "file=x", "-p", "key=a", "-p", "value=b", "-p", "kye=c",
    ]);
    out.assert_code(2)
        .assert_stderr("does not declare --param kye");
    assert!(!t.path("fresh-state").exists(), "{}", out.stderr);
    let out = t.run(&fix("config-set"), &["-p", "key=a", "-p", "value=b"]);
    out.assert_code(2)
        .assert_stderr("config-set needs --param file=...");
    // A fix without a manifest finds out itself, and says so.
    let copy = t.path("bare.wasm");
    std::fs::copy(guest("hostile"), &copy).unwrap();
    let out = t.run(&copy, &[]);
    out.assert_code(1);
    let err = out.summary()["error"].as_str().unwrap().to_string();
    assert!(
        err.contains("missing parameter: pass --param mode=VALUE"),
        "{err}"
    );
}

#[test]
fn rename_to_backup_dry_run_real_run_then_nothing() {
    let t = Tree::new();
    t.write("grant/data/segment", "payload");
    let path = t.p("grant/data/segment");
    let params = ["-p", &format!("path={path}")];
    let before = t.snapshot("");

    let dry = t.run_in(
        "grant/data",
        &fix("rename-to-backup"),
        &[params[0], params[1], "--dry-run"],
    );
    dry.assert_code(0);
    assert_eq!(t.snapshot(""), before);
    let effects = dry.of("effect");
    assert_eq!(effects.len(), 1);
    assert_eq!(effects[0]["op"], "rename");
    assert_eq!(effects[0]["to"], format!("{path}.backup"));

    t.run_in("grant/data", &fix("rename-to-backup"), &params)
        .assert_code(0);
    assert!(!t.exists("grant/data/segment"));
    assert_eq!(t.read("grant/data/segment.backup"), "payload");

    let again = t.run_in("grant/data", &fix("rename-to-backup"), &params);
    again.assert_code(0);
    assert_eq!(again.summary()["outcome"], "not-needed");
    assert!(
        again.summary()["check"]["reason"]
            .as_str()
            .unwrap()
            .contains("already renamed")
    );
}

#[test]
fn rename_to_backup_renames_a_directory_with_its_content() {
    let t = Tree::new();
    t.write("grant/cache/a", "1");
    t.write("grant/cache/sub/b", "2");
    let path = t.p("grant/cache");
    t.run(&fix("rename-to-backup"), &["-p", &format!("path={path}")])
        .assert_code(0);
    assert_eq!(t.read("grant/cache.backup/sub/b"), "2");
    assert!(!t.exists("grant/cache"));
}

#[test]
fn rename_to_backup_never_overwrites_a_backup() {
    let t = Tree::new();
    t.write("grant/x", "new");
    t.write("grant/x.backup", "old");
    let out = t.run(
        &fix("rename-to-backup"),
        &["-p", &format!("path={}", t.p("grant/x"))],
    );
    out.assert_code(0);
    assert_eq!(out.summary()["outcome"], "not-needed");
    assert_eq!(t.read("grant/x.backup"), "old");
}

pub fn age(t: &Tree, rel: &str, secs: u64) {
    let f = std::fs::File::options()
        .write(true)
        .open(t.path(rel))
        .unwrap();
    f.set_modified(SystemTime::now() - Duration::from_secs(secs))
        .unwrap();
}

#[test]
fn stale_locks_dry_run_real_run_then_nothing() {
    let t = Tree::new();
    for f in ["old1.lock", "old2.lock", "fresh.lock", "old.txt"] {
        t.write(&format!("grant/locks/{f}"), "pid");
    }
    age(&t, "grant/locks/old1.lock", 7200);
    age(&t, "grant/locks/old2.lock", 7200);
    age(&t, "grant/locks/old.txt", 7200);
    let params = [
        "-p",
        &format!("dir={}", t.p("grant/locks")),
        "-p",
        "max_age_secs=600",
    ];
    let before = t.snapshot("");

    let mut dry_args = params.to_vec();
    dry_args.push("--dry-run");
    let dry = t.run_in("grant/locks", &fix("stale-locks"), &dry_args);
    dry.assert_code(0);
    assert_eq!(t.snapshot(""), before);
    let planned: Vec<_> = dry
        .of("effect")
        .iter()
        .map(|e| e["path"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        planned,
        [t.p("grant/locks/old1.lock"), t.p("grant/locks/old2.lock")]
    );

    t.run_in("grant/locks", &fix("stale-locks"), &params)
        .assert_code(0);
    assert!(!t.exists("grant/locks/old1.lock"));
    assert!(!t.exists("grant/locks/old2.lock"));
    assert!(t.exists("grant/locks/fresh.lock"));
    assert!(t.exists("grant/locks/old.txt"));

    let again = t.run_in("grant/locks", &fix("stale-locks"), &params);
    again.assert_code(0);
    assert_eq!(again.summary()["outcome"], "not-needed");
}

#[test]
fn config_set_edits_every_file_a_glob_matches() {
    let t = Tree::new();
    t.write("grant/a.conf", "max_conn = 1\n");
    t.write("grant/b.conf", "max_conn = 50\n");
    t.write("grant/c.txt", "max_conn = 1\n");
    let file = format!("{}/*.conf", t.p("grant"));
    let out = t.set_max_conn(&file, "50", &[]);
    out.assert_code(0);
    assert_eq!(out.summary()["changed"], 1);
    assert_eq!(t.read("grant/a.conf"), "max_conn = 50\n");
    assert_eq!(t.read("grant/c.txt"), "max_conn = 1\n");
    let again = t.set_max_conn(&file, "50", &[]);
    assert_eq!(again.summary()["outcome"], "not-needed");
}

#[test]
fn every_example_fix_is_proved_idempotent_by_its_dry_run() {
    let t = Tree::new();
    t.write("grant/app.conf", CONF);
    t.write("grant/data/seg", "x");
    t.write("grant/locks/a.lock", "1");
    age(&t, "grant/locks/a.lock", 7200);
    let cases: [(&str, &str, Vec<String>); 3] = [
        (
            "config-set",
            "grant",
            vec![
                format!("file={}", t.p("grant/app.conf")),
                "key=max_conn".into(),
                "value=50".into(),
            ],
        ),
        (
            "rename-to-backup",
            "grant/data",
            vec![format!("path={}", t.p("grant/data/seg"))],
        ),
        (
            "stale-locks",
            "grant/locks",
            vec![
                format!("dir={}", t.p("grant/locks")),
                "max_age_secs=60".into(),
            ],
        ),
    ];
    for (name, grant, params) in cases {
        let mut args: Vec<String> = params
            .iter()
            .flat_map(|p| ["-p".to_string(), p.clone()])
            .collect();
        args.push("--dry-run".into());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = t.run_in(grant, &fix(name), &args);
        out.assert_code(0);
        assert_eq!(out.summary()["outcome"], "planned", "{name}");
        assert_eq!(out.summary()["idempotent"], true, "{name}: {}", out.stdout);
    }
}

#[test]
fn a_fix_that_appends_every_time_is_flagged_not_idempotent() {
    let t = Tree::new();
    t.write("grant/log.txt", "first\n");
    let file = format!("file={}", t.p("grant/log.txt"));
    let out = t.run(
        &crate::util::guest("hostile"),
        &["-p", "mode=append", "-p", &file, "--dry-run"],
    );
    out.assert_code(0);
    let s = out.summary();
    assert_eq!(s["idempotent"], false);
    assert_eq!(s["idempotency"]["effects"][0]["path"], t.p("grant/log.txt"));
    // The plan shown is the first pass's only.
    assert_eq!(s["changed"], 1);
    let human = t
        .defops()
        .args(&[
            "run",
            crate::util::guest("hostile").to_str().unwrap(),
            "--allow",
            &t.p("grant"),
            "-p",
            "mode=append",
            "-p",
            &file,
            "--dry-run",
        ])
        .output();
    assert!(human.stdout.contains("NOT idempotent"), "{}", human.stdout);
    assert_eq!(t.read("grant/log.txt"), "first\n");
}

#[test]
fn flip_precondition_runs_the_apply_branch_in_the_overlay_only() {
    let t = Tree::new();
    t.write("grant/app.conf", "max_conn = 50\n");
    let file = t.p("grant/app.conf");
    let before = t.snapshot("");
    // Not needed, so normally apply never runs...
    let normal = t.set_max_conn(&file, "50", &["--dry-run"]);
    assert_eq!(normal.summary()["outcome"], "not-needed");
    // ...flipped, it runs in the overlay and reports what check said.
    let flipped = t.set_max_conn(&file, "50", &["--dry-run", "--flip-precondition"]);
    flipped.assert_code(0);
    let s = flipped.summary();
    assert_eq!(s["outcome"], "planned");
    assert_eq!(s["check"]["flipped"], true);
    assert!(
        s["check"]["reason"]
            .as_str()
            .unwrap()
            .contains("already 50")
    );
    assert_eq!(t.snapshot(""), before);
    // Refused without --dry-run.
    let real = t.set_max_conn(&file, "50", &["--flip-precondition"]);
    real.assert_code(2);
    real.assert_stderr("only with --dry-run");
    assert_eq!(t.snapshot(""), before);
}

#[test]
fn the_atomic_replace_keeps_the_owner() {
    let t = Tree::new();
    t.write("grant/app.conf", CONF);
    let root = std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false);
    if !root {
        eprintln!("skipped: giving a file another owner needs root");
        return;
    }
    std::os::unix::fs::chown(t.path("grant/app.conf"), Some(1234), Some(4321)).unwrap();
    t.set_max_conn(&t.p("grant/app.conf"), "50", &[])
        .assert_code(0);
    let m = std::fs::metadata(t.path("grant/app.conf")).unwrap();
    assert_eq!(
        (
            std::os::unix::fs::MetadataExt::uid(&m),
            std::os::unix::fs::MetadataExt::gid(&m)
        ),
        (1234, 4321)
    );
    assert!(t.read("grant/app.conf").contains("max_conn = 50"));
}
