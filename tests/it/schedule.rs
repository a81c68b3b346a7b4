//! Scheduled fixes: `schedule add|list|promote|demote|remove|exec`, run as
//! the shipped unit runs them (its `ExecStart=` read from the unit file),
//! with the guards a run by hand passes.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::util::{Cmd, Out, Tree, fix, guest};

/// The shipped service template.
fn unit_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/systemd/defops-wasm-fix@.service")
}

/// `defops-wasm schedule ...` with this tree's schedule and unit
/// directories.
fn schedule(t: &Tree) -> Cmd {
    t.defops()
        .env("DEFOPS_SCHEDULE_DIR", &t.p("scheduled"))
        .env("DEFOPS_UNIT_DIR", &t.p("units"))
        .args(&["schedule"])
}

/// The service's command line for instance `name`, as systemd would run
/// it: `ExecStart=` from the unit file, `%i` the instance, the installed
/// binary's path the one under test.
fn exec_start(t: &Tree, name: &str) -> Out {
    let unit = std::fs::read_to_string(unit_file()).unwrap();
    let line = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart= in the unit");
    let words: Vec<String> = line
        .split_whitespace()
        .map(|w| w.replace("%i", name))
        .collect();
    assert_eq!(words[0], "/usr/bin/defops-wasm", "{line}");
    let mut cmd = t
        .defops()
        .env("DEFOPS_SCHEDULE_DIR", &t.p("scheduled"))
        .env("DEFOPS_UNIT_DIR", &t.p("units"))
        .into_command();
    cmd.args(&words[1..]);
    let o = cmd.output().unwrap();
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

fn add_config_set(t: &Tree, name: &str, value: &str, extra: &[&str]) -> Out {
    add_config_set_from(t, &fix("config-set"), name, value, extra)
}

/// `schedule add NAME FIX` of config-set (or a copy of it at `fix`),
/// setting max_conn in grant/app.conf to `value` (every 15 minutes unless
/// `extra` says `--every`).
fn add_config_set_from(t: &Tree, fix: &Path, name: &str, value: &str, extra: &[&str]) -> Out {
    schedule(t)
        .args(&["add", name, fix.to_str().unwrap(), "--allow", &t.p("grant")])
        .args(&["-p", &format!("file={}", t.p("grant/app.conf"))])
        .args(&["-p", "key=max_conn", "-p", &format!("value={value}")])
        .args(match extra.contains(&"--every") {
            true => &[][..],
            false => &["--every", "15min"][..],
        })
        .args(extra)
        .output()
}

/// `name` scheduled from `fix`, dry-run by its unit, promoted, then made
/// real (with `extra` too).
fn promote_as_real(t: &Tree, fix: &Path, name: &str, value: &str, extra: &[&str]) {
    add_config_set_from(t, fix, name, value, &[]).assert_code(0);
    exec_start(t, name).assert_code(0);
    schedule(t).args(&["promote", name]).output().assert_code(0);
    let real = [&["--replace", "--mode", "real"][..], extra].concat();
    add_config_set_from(t, fix, name, value, &real).assert_code(0);
}

/// A copy of config-set in the tree, to be replaced later.
fn copy_of_config_set(t: &Tree) -> PathBuf {
    let copy = t.path("fixes/config-set.wasm");
    std::fs::create_dir_all(copy.parent().unwrap()).unwrap();
    std::fs::copy(fix("config-set"), &copy).unwrap();
    copy
}

fn instance(t: &Tree, name: &str) -> String {
    t.read(&format!("scheduled/{name}.toml"))
}

/// The `scheduled` entry of `status --json`.
fn last_attempt(t: &Tree, name: &str) -> Value {
    let out = t.defops().args(&["status", "--json"]).output();
    out.assert_code(0);
    out.lines()[0]["scheduled"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no attempt of {name}: {}", out.stdout))
}

#[test]
fn round_trip_dry_run_then_promoted_as_the_unit_runs_it() {
    let t = Tree::outside_tmp();
    t.write("grant/app.conf", "max_conn = 10\n");
    add_config_set(&t, "cfg", "50", &[]).assert_code(0);
    // The instance and the drop-ins that give the unit its calendar and
    // its writable paths.
    let inst = instance(&t, "cfg");
    assert!(inst.contains("mode = \"dry-run\""), "{inst}");
    let service = t.read("units/defops-wasm-fix@cfg.service.d/defops-wasm.conf");
    assert!(
        service.contains(&format!("ReadWritePaths={}\n", t.p("grant"))),
        "{service}"
    );
    let timer = t.read("units/defops-wasm-fix@cfg.timer.d/defops-wasm.conf");
    assert!(
        timer.contains("OnCalendar=\nOnCalendar=*-*-* *:00/15:00\n"),
        "{timer}"
    );
    let listed = schedule(&t).args(&["list", "--json"]).output();
    listed.assert_code(0);
    let row = &listed.lines()[0];
    assert_eq!(row["name"], "cfg");
    assert_eq!(row["schedule"]["mode"], "dry-run");
    assert_eq!(row["timer_enabled"], false);
    assert!(row["last"].is_null());

    // No dry-run on record: promote refuses, the file stays dry-run.
    schedule(&t)
        .args(&["promote", "cfg"])
        .output()
        .assert_code(3)
        .assert_stderr("no scheduled dry-run");
    assert_eq!(instance(&t, "cfg"), inst);

    // The unit's command: a dry-run, nothing written.
    exec_start(&t, "cfg").assert_code(0);
    assert_eq!(t.read("grant/app.conf"), "max_conn = 10\n");
    let last = last_attempt(&t, "cfg");
    assert_eq!(last["outcome"], "planned");
    assert_eq!(last["idempotent"], true);
    let dry_id = last["dry_run"].as_str().unwrap().to_string();
    assert_eq!(t.header(&dry_id)["scheduled"], "cfg");

    schedule(&t)
        .args(&["promote", "cfg"])
        .output()
        .assert_code(0);
    let promoted = instance(&t, "cfg");
    assert!(promoted.contains("mode = \"real\""), "{promoted}");
    assert!(promoted.contains(&dry_id), "{promoted}");

    // Real: a dry-run, then exactly that plan, under the dry-run-first
    // guard (the tree's configuration requires none; this one does).
    t.write("config.toml", "[dry-run-first]\nrequired = true\n");
    exec_start(&t, "cfg").assert_code(0);
    assert_eq!(t.read("grant/app.conf"), "max_conn = 50\n");
    let last = last_attempt(&t, "cfg");
    assert_eq!(last["outcome"], "applied");
    let run_id = last["run"].as_str().unwrap().to_string();
    let header = t.header(&run_id);
    assert_eq!(header["scheduled"], "cfg");
    assert_eq!(header["dry_run"], false);
    let plan = &header["policy"]["plan"];
    assert_eq!(
        plan["reviewed"]["dry_run"], last["dry_run"],
        "the real run is held to the plan of the dry-run just before it"
    );
    assert_eq!(plan["matches"], true);
    assert_eq!(
        header["policy"]["dry_run_first"]["dry_run"],
        last["dry_run"]
    );

    // Again: nothing to do, and no real run.
    exec_start(&t, "cfg").assert_code(0);
    let again = last_attempt(&t, "cfg");
    assert_eq!(again["outcome"], "nothing-to-do");
    assert!(again["run"].is_null());
    t.defops().args(&["check"]).output().assert_code(0);

    // The run rolls back like any other.
    t.verify_and_roll_back(&run_id);
    assert_eq!(t.read("grant/app.conf"), "max_conn = 10\n");

    schedule(&t)
        .args(&["demote", "cfg"])
        .output()
        .assert_code(0);
    assert!(instance(&t, "cfg").contains("mode = \"dry-run\""));
    schedule(&t)
        .args(&["remove", "cfg"])
        .output()
        .assert_code(0);
    assert!(!t.exists("scheduled/cfg.toml"));
    assert!(!t.exists("units/defops-wasm-fix@cfg.service.d"));
    assert!(!t.exists("units/defops-wasm-fix@cfg.timer.d"));
    let listed = schedule(&t).args(&["list", "--json"]).output();
    assert_eq!(listed.stdout, "");
}

#[test]
fn promote_needs_the_last_dry_run_good_idempotent_and_of_what_is_scheduled_now() {
    let t = Tree::outside_tmp();
    t.write("grant/app.conf", "max_conn = 10\n");
    add_config_set(&t, "cfg", "50", &[]).assert_code(0);
    exec_start(&t, "cfg").assert_code(0);
    // Other params now: the dry-run on record is not of this schedule.
    add_config_set(&t, "cfg", "60", &["--replace"]).assert_code(0);
    schedule(&t)
        .args(&["promote", "cfg"])
        .output()
        .assert_code(3)
        .assert_stderr("other params");
    // Another fix file under the same path.
    let copy = copy_of_config_set(&t);
    add_config_set_from(&t, &copy, "copy", "70", &[]).assert_code(0);
    exec_start(&t, "copy").assert_code(0);
    std::fs::copy(fix("stale-locks"), &copy).unwrap();
    schedule(&t)
        .args(&["promote", "copy"])
        .output()
        .assert_code(3)
        .assert_stderr("changed since");

    // A fix that is not idempotent: the scheduled dry-run says so (exit 3)
    // and promote refuses.
    let hostile = guest("hostile");
    t.write("grant/log.txt", "first\n");
    schedule(&t)
        .args(&[
            "add",
            "append",
            hostile.to_str().unwrap(),
            "--allow",
            &t.p("grant"),
        ])
        .args(&[
            "-p",
            "mode=append",
            "-p",
            &format!("file={}", t.p("grant/log.txt")),
        ])
        .args(&["--on-calendar", "daily"])
        .output()
        .assert_code(0);
    exec_start(&t, "append")
        .assert_code(3)
        .assert_stderr("not idempotent");
    assert_eq!(t.read("grant/log.txt"), "first\n");
    schedule(&t)
        .args(&["promote", "append"])
        .output()
        .assert_code(3)
        .assert_stderr("not idempotent");
    // `check` warns about a scheduled fix whose last attempt failed.
    let check = t.defops().args(&["check"]).output();
    check.assert_code(1);
    assert!(check.stdout.contains("append"), "{}", check.stdout);
    assert!(
        check.stdout.contains("scheduled_failed=1"),
        "{}",
        check.stdout
    );
}

/// Adds `cfg` (config-set to 50), runs its scheduled dry-run and promotes
/// it.
fn promoted(t: &Tree) {
    add_config_set(t, "cfg", "50", &[]).assert_code(0);
    exec_start(t, "cfg").assert_code(0);
    schedule(t)
        .args(&["promote", "cfg"])
        .output()
        .assert_code(0);
}

#[test]
fn a_paused_host_or_a_closed_window_skips_the_run_and_the_unit_counts_it_a_success() {
    let t = Tree::outside_tmp();
    t.write("grant/app.conf", "max_conn = 10\n");
    promoted(&t);
    t.defops()
        .args(&["pause", "--reason", "db failover"])
        .output()
        .assert_code(0);
    let before = t.snapshot("grant");
    let skipped = exec_start(&t, "cfg");
    skipped
        .assert_code(5)
        .assert_stderr("skipped cfg")
        .assert_stderr("db failover");
    assert!(!skipped.stderr.contains("error"), "{}", skipped.stderr);
    assert_eq!(t.snapshot("grant"), before);
    assert_eq!(last_attempt(&t, "cfg")["outcome"], "skipped-paused");
    // Paused is a warning of its own; the skip is not a failure.
    let check = t.defops().args(&["check"]).output();
    assert!(
        check.stdout.contains("scheduled_failed=0"),
        "{}",
        check.stdout
    );
    t.defops().args(&["resume"]).output().assert_code(0);
    // A fix paused by its manifest's name, under another file name: the
    // same skip.
    let renamed = t.path("fixes/renamed.wasm");
    std::fs::create_dir_all(renamed.parent().unwrap()).unwrap();
    std::fs::copy(fix("config-set"), &renamed).unwrap();
    promote_as_real(&t, &renamed, "renamed", "50", &[]);
    t.defops()
        .args(&["pause", "config-set", "--reason", "db failover"])
        .output()
        .assert_code(0);
    let skipped = exec_start(&t, "renamed");
    skipped
        .assert_code(5)
        .assert_stderr("skipped renamed")
        .assert_stderr("db failover")
        .assert_stderr("`defops-wasm resume config-set` lifts it");
    assert!(!skipped.stderr.contains("error"), "{}", skipped.stderr);
    assert_eq!(last_attempt(&t, "renamed")["outcome"], "skipped-paused");
    assert_eq!(t.snapshot("grant"), before);
    t.defops()
        .args(&["resume", "config-set"])
        .output()
        .assert_code(0);

    // A freeze that covers now: outside the change window, exit 6.
    t.write(
        "config.toml",
        "[change-window]\ntime-zone = \"UTC\"\n\
         freeze = [{ from = \"2000-01-01 00:00\", to = \"2999-01-01\", reason = \"test freeze\" }]\n",
    );
    exec_start(&t, "cfg")
        .assert_code(6)
        .assert_stderr("outside the change window");
    assert_eq!(t.snapshot("grant"), before);
    assert_eq!(last_attempt(&t, "cfg")["outcome"], "skipped-window");
    // The unit maps exactly these two to success.
    let unit = std::fs::read_to_string(unit_file()).unwrap();
    assert!(unit.contains("\nSuccessExitStatus=5 6\n"), "{unit}");
    t.defops().args(&["check"]).output().assert_code(0);
}

#[test]
fn what_cannot_be_scheduled_safely_is_refused_and_nothing_is_written() {
    let t = Tree::outside_tmp();
    t.write("grant/app.conf", "max_conn = 10\n");
    std::fs::create_dir_all(t.path("grant/my dir")).unwrap();
    let fix = fix("config-set");
    let fix = fix.to_str().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["../x".into(), fix.into(), "--every".into(), "1h".into()],
            "not a schedule name",
        ),
        (
            vec!["a".into(), fix.into(), "--every".into(), "7min".into()],
            "does not divide",
        ),
        (
            vec!["a".into(), fix.into(), "--every".into(), "30s".into()],
            "at most every minute",
        ),
        (
            vec![
                "a".into(),
                fix.into(),
                "--on-calendar".into(),
                "every tuesday-ish".into(),
            ],
            "--on-calendar",
        ),
        (
            vec![
                "a".into(),
                fix.into(),
                "--every".into(),
                "1h".into(),
                "--allow".into(),
                tmp.path().to_str().unwrap().into(),
            ],
            "private copy",
        ),
        (
            vec![
                "a".into(),
                fix.into(),
                "--every".into(),
                "1h".into(),
                "--allow".into(),
                t.p("grant/my dir"),
            ],
            "ReadWritePaths",
        ),
        (
            vec!["a".into(), t.p("nope.wasm"), "--every".into(), "1h".into()],
            "give a path that exists",
        ),
        (
            vec![
                "a".into(),
                fix.into(),
                "--every".into(),
                "1h".into(),
                "--allow".into(),
                t.p("grant/app.conf"),
            ],
            "not a directory",
        ),
        (
            vec![
                "a".into(),
                fix.into(),
                "--every".into(),
                "1h".into(),
                "-p".into(),
                "k=1".into(),
                "-p".into(),
                "k=2".into(),
            ],
            "given twice",
        ),
    ];
    for (args, needle) in cases {
        if needle == "--on-calendar" && which("systemd-analyze").is_none() {
            continue;
        }
        let out = schedule(&t).args(&["add"]).args(&args).output();
        out.assert_code(2).assert_stderr(needle);
        assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
        assert!(!t.exists("scheduled"), "{args:?} wrote an instance");
        assert!(!t.exists("units"), "{args:?} wrote a drop-in");
    }

    add_config_set(&t, "cfg", "50", &[]).assert_code(0);
    let inst = instance(&t, "cfg");
    add_config_set(&t, "cfg", "60", &[])
        .assert_code(2)
        .assert_stderr("--replace");
    assert_eq!(instance(&t, "cfg"), inst);
    schedule(&t)
        .args(&["exec", "nope"])
        .output()
        .assert_code(2)
        .assert_stderr("no scheduled fix named");

    // An instance file others can write names what runs as root: refused.
    let file = t.path("scheduled/cfg.toml");
    set_mode(&file, 0o666);
    exec_start(&t, "cfg")
        .assert_code(3)
        .assert_stderr("chmod go-w");
    set_mode(&file, 0o644);
    // A broken instance file names its line.
    std::fs::write(
        &file,
        inst.replace("mode = \"dry-run\"", "mode = \"sometimes\""),
    )
    .unwrap();
    exec_start(&t, "cfg")
        .assert_code(2)
        .assert_stderr("cfg.toml:");
    std::fs::write(&file, &inst).unwrap();

    // An enabled timer is not removed from under systemd.
    let wants = t.path("units/timers.target.wants");
    std::fs::create_dir_all(&wants).unwrap();
    std::os::unix::fs::symlink(
        "/lib/systemd/system/defops-wasm-fix@.timer",
        wants.join("defops-wasm-fix@cfg.timer"),
    )
    .unwrap();
    schedule(&t)
        .args(&["remove", "cfg"])
        .output()
        .assert_code(3)
        .assert_stderr("systemctl disable --now defops-wasm-fix@cfg.timer");
    assert!(t.exists("scheduled/cfg.toml"));
    schedule(&t)
        .args(&["remove", "cfg", "--force"])
        .output()
        .assert_code(0);
    assert!(!t.exists("scheduled/cfg.toml"));
}

fn set_mode(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

#[test]
fn systemd_accepts_the_shipped_units() {
    let Some(analyze) = which("systemd-analyze") else {
        eprintln!(
            "systemd-analyze is not installed; the units are checked by scripts/test-package"
        );
        return;
    };
    // The units as installed, but for the binary's path: an instance of
    // each, offline (no running systemd needed).
    let dir = tempfile::tempdir().unwrap();
    for ext in ["service", "timer"] {
        let text = std::fs::read_to_string(unit_file().with_extension(ext)).unwrap();
        let text = text.replace("/usr/bin/defops-wasm", env!("CARGO_BIN_EXE_defops-wasm"));
        std::fs::write(dir.path().join(format!("defops-wasm-fix@demo.{ext}")), text).unwrap();
    }
    let out = std::process::Command::new(analyze)
        .args(["verify", "--man=no"])
        .arg(dir.path().join("defops-wasm-fix@demo.service"))
        .arg(dir.path().join("defops-wasm-fix@demo.timer"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_real_run_happens_only_for_what_was_promoted() {
    let t = Tree::outside_tmp();
    t.write("grant/app.conf", "max_conn = 10\n");
    // Never real without a promotion.
    add_config_set(&t, "new", "50", &["--mode", "real"])
        .assert_code(3)
        .assert_stderr("schedule promote new");
    assert!(!t.exists("scheduled/new.toml"));

    promoted(&t);
    let file = t.path("scheduled/cfg.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    // Params edited by hand after the promotion: the dry-run runs (so a
    // new promotion has one), the real run does not.
    std::fs::write(&file, text.replace("value = \"50\"", "value = \"9999\"")).unwrap();
    exec_start(&t, "cfg")
        .assert_code(3)
        .assert_stderr("changed since it was promoted");
    assert_eq!(t.read("grant/app.conf"), "max_conn = 10\n");
    assert_eq!(last_attempt(&t, "cfg")["outcome"], "not-promoted");
    // Promoting again on that dry-run lets it run.
    schedule(&t)
        .args(&["promote", "cfg"])
        .output()
        .assert_code(0);
    exec_start(&t, "cfg").assert_code(0);
    assert_eq!(t.read("grant/app.conf"), "max_conn = 9999\n");

    // Another fix under the same path: no real run.
    let copy = copy_of_config_set(&t);
    // A new calendar keeps the promotion (same fix, grants, params).
    promote_as_real(&t, &copy, "copy", "70", &["--every", "6h"]);
    let mut bytes = std::fs::read(&copy).unwrap();
    // A custom section appended: another binary, the same behaviour.
    bytes.extend_from_slice(&[0, 6, 1, b'x', 1, 2, 3, 4]);
    std::fs::write(&copy, &bytes).unwrap();
    exec_start(&t, "copy")
        .assert_code(3)
        .assert_stderr("changed since it was promoted");
    assert_eq!(t.read("grant/app.conf"), "max_conn = 9999\n");
    // A fix anyone could rewrite is not run at all.
    set_mode(&copy, 0o666);
    exec_start(&t, "copy")
        .assert_code(3)
        .assert_stderr("chmod go-w");
}

/// A log grant spelled through a link is promoted as the directory it
/// led to: repointed since, the real run is refused until promoted again.
#[test]
fn a_log_grant_whose_link_was_repointed_since_the_promotion_is_not_run() {
    let t = Tree::outside_tmp();
    std::fs::create_dir_all(t.path("grant/data")).unwrap();
    t.write("logs/db.log", "fine\n");
    t.write("logs2/db.log", "fine\n");
    let point = |to: &str| {
        let _ = std::fs::remove_file(t.path("linked"));
        std::os::unix::fs::symlink(t.path(to), t.path("linked")).unwrap();
    };
    point("logs");
    let glob = format!("{}/db.log*", t.p("linked"));
    schedule(&t)
        .args(&["add", "q", fix("quarantine-on-log").to_str().unwrap()])
        .args(&[
            "--allow",
            &t.p("grant"),
            "--allow-log",
            &glob,
            "--every",
            "15min",
        ])
        .args(&["-p", &format!("log={glob}")])
        .args(&["-p", &format!("data_dir={}", t.p("grant/data"))])
        .args(&["-p", &format!("quarantine_dir={}", t.p("grant/q"))])
        .output()
        .assert_code(0);
    exec_start(&t, "q").assert_code(0);
    schedule(&t).args(&["promote", "q"]).output().assert_code(0);
    point("logs2");
    exec_start(&t, "q")
        .assert_code(3)
        .assert_stderr("changed since it was promoted");
    assert_eq!(last_attempt(&t, "q")["outcome"], "not-promoted");
    // Its dry-run ran on the new directory: promoted again, it runs.
    schedule(&t).args(&["promote", "q"]).output().assert_code(0);
    exec_start(&t, "q").assert_code(0);
}

#[test]
fn attempts_that_cannot_start_are_recorded_and_removal_clears_them() {
    let t = Tree::outside_tmp();
    t.write("grant/app.conf", "max_conn = 10\n");
    add_config_set(&t, "cfg", "50", &[]).assert_code(0);
    exec_start(&t, "cfg").assert_code(0);
    t.defops().args(&["check"]).output().assert_code(0);
    // A broken instance: the attempt fails, and `check` says so.
    let file = t.path("scheduled/cfg.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, text.replace("mode = \"dry-run\"", "mode = 1")).unwrap();
    exec_start(&t, "cfg").assert_code(2);
    assert_eq!(last_attempt(&t, "cfg")["outcome"], "error");
    t.defops().args(&["check"]).output().assert_code(1);
    // A symlink in its place is not followed.
    std::fs::remove_file(&file).unwrap();
    t.write("elsewhere.toml", &text);
    std::os::unix::fs::symlink(t.path("elsewhere.toml"), &file).unwrap();
    exec_start(&t, "cfg").assert_code(2);
    std::fs::remove_file(&file).unwrap();
    std::fs::write(&file, &text).unwrap();
    set_mode(&file, 0o640);
    // A schedule directory others can write: refused.
    set_mode(&t.path("scheduled"), 0o777);
    exec_start(&t, "cfg")
        .assert_code(3)
        .assert_stderr("chmod go-w");
    schedule(&t)
        .args(&["promote", "cfg"])
        .output()
        .assert_code(3);
    set_mode(&t.path("scheduled"), 0o755);
    // Removed: its record goes with it, and `check` is OK again.
    schedule(&t)
        .args(&["remove", "cfg"])
        .output()
        .assert_code(0);
    assert!(!t.exists("state/scheduled/cfg.json"));
    t.defops().args(&["check"]).output().assert_code(0);
    // Added again: the old schedule's dry-runs do not promote the new one.
    add_config_set(&t, "cfg", "50", &[]).assert_code(0);
    schedule(&t)
        .args(&["promote", "cfg"])
        .output()
        .assert_code(3)
        .assert_stderr("older than the schedule itself");
}

#[test]
fn a_real_run_refused_for_a_changed_file_is_not_a_change_in_place() {
    let t = Tree::outside_tmp();
    t.write("grant/app.conf", "max_conn = 10\n");
    t.write("config.toml", "[dry-run-first]\nrequired = true\n");
    t.set_max_conn(&t.p("grant/app.conf"), "50", &["--dry-run"])
        .assert_code(0);
    t.write("grant/app.conf", "max_conn = 11\n");
    let out = t.set_max_conn(&t.p("grant/app.conf"), "50", &[]);
    out.assert_code(3);
    assert_eq!(out.summary()["changed"], 0);
    assert_eq!(t.read("grant/app.conf"), "max_conn = 11\n");
    let check = t.defops().args(&["check"]).output();
    assert!(
        !check.stdout.starts_with("DEFOPS CRITICAL"),
        "{}",
        check.stdout
    );
}

/// The real run reads the fix itself: one swapped after the promotion was
/// checked (here while the run waits for the host's lock) is refused by
/// its digest, not run.
#[test]
fn a_fix_swapped_after_the_promotion_was_checked_is_not_run() {
    use std::os::unix::fs::OpenOptionsExt;
    let t = Tree::outside_tmp();
    t.write("grant/app.conf", "max_conn = 10\n");
    let copy = copy_of_config_set(&t);
    promote_as_real(&t, &copy, "copy", "70", &[]);
    let journals = || {
        std::fs::read_dir(t.path("state/runs"))
            .unwrap()
            .map(|e| e.unwrap().path().join("journal.jsonl"))
            .filter(|j| std::fs::read_to_string(j).is_ok_and(|s| s.contains("\"outcome\"")))
            .count()
    };
    let done_before = journals();
    // Another holds the host's lock: the scheduled real run waits for it
    // after its dry-run and the promotion's check.
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(t.path("state/lock"))
        .unwrap();
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive).unwrap();
    let exec = std::thread::scope(|s| {
        let exec = s.spawn(|| exec_start(&t, "copy"));
        let started = std::time::Instant::now();
        while journals() == done_before && started.elapsed().as_secs() < 60 {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
        let mut bytes = std::fs::read(&copy).unwrap();
        // A custom section appended: another binary, the same behaviour.
        bytes.extend_from_slice(&[0, 6, 1, b'x', 1, 2, 3, 4]);
        std::fs::write(&copy, &bytes).unwrap();
        drop(lock);
        exec.join().unwrap()
    });
    exec.assert_code(3).assert_stderr("is not the one promoted");
    assert_eq!(t.read("grant/app.conf"), "max_conn = 10\n");
}
