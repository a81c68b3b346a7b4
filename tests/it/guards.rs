//! The guards: the off-switch, change windows, dry-run before real, and
//! `status`.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::{Out, Tree, fix, guest};

fn config_file(t: &Tree) -> String {
    t.write("grant/app.conf", "max_conn = 20\n");
    t.p("grant/app.conf")
}

#[test]
fn a_pause_refuses_real_runs_but_not_dry_runs_until_resumed() {
    let t = Tree::new();
    let file = config_file(&t);
    let before = t.snapshot("grant");
    let paused = t
        .defops()
        .args(&["pause", "--reason", "database failover in progress"])
        .output();
    paused.assert_code(0);
    assert!(
        paused.stdout.contains("paused every fix"),
        "{}",
        paused.stdout
    );

    let real = t.set_max_conn(&file, "50", &[]);
    real.assert_code(5)
        .assert_stderr("paused by")
        .assert_stderr("database failover in progress")
        .assert_stderr("defops-wasm resume");
    assert_eq!(t.snapshot("grant"), before);
    t.set_max_conn(&file, "50", &["--dry-run"]).assert_code(0);
    // A second pause keeps the first reason.
    let again = t.defops().args(&["pause", "--reason", "other"]).output();
    again.assert_code(0);
    assert!(again.stdout.contains("already paused"), "{}", again.stdout);

    let status = t.defops().args(&["status", "--json"]).output();
    status.assert_code(0);
    let s = status.summary_of("status");
    assert_eq!(s["paused"], true);
    assert_eq!(s["pauses"][0]["reason"], "database failover in progress");
    assert!(s["pauses"][0]["by"]["uid"].is_u64());

    t.defops().args(&["resume"]).output().assert_code(0);
    t.set_max_conn(&file, "50", &[]).assert_code(0);
    assert_eq!(t.read("grant/app.conf"), "max_conn = 50\n");
    // Who paused and who resumed stay on record.
    let log = std::fs::read_to_string(t.path("state/pause/log.jsonl")).unwrap();
    let events: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0]["event"], "pause");
    assert_eq!(events[1]["event"], "resume");
}

#[test]
fn a_pause_of_one_fix_leaves_the_others_running() {
    let t = Tree::new();
    let file = config_file(&t);
    t.write("grant/locks/a.lock", "pid 1\n");
    let old = std::fs::File::options()
        .write(true)
        .open(t.path("grant/locks/a.lock"))
        .unwrap();
    old.set_modified(std::time::SystemTime::now() - Duration::from_secs(7200))
        .unwrap();
    t.defops()
        .args(&["pause", "config-set", "--reason", "bad rollout"])
        .output()
        .assert_code(0);
    t.set_max_conn(&file, "50", &[])
        .assert_code(5)
        .assert_stderr("the fix config-set paused");
    let dir = format!("dir={}", t.p("grant/locks"));
    t.run_in(
        "grant/locks",
        &fix("stale-locks"),
        &["-p", &dir, "-p", "max_age_secs=3600"],
    )
    .assert_code(0);
    assert!(!t.exists("grant/locks/a.lock"));
    // Resuming everything does not lift a pause of one fix.
    let out = t.defops().args(&["resume"]).output();
    out.assert_code(0);
    assert!(out.stdout.contains("was not paused"), "{}", out.stdout);
    assert!(out.stdout.contains("still paused"), "{}", out.stdout);
    t.defops()
        .args(&["resume", "config-set"])
        .output()
        .assert_code(0);
    t.set_max_conn(&file, "50", &[]).assert_code(0);
    t.defops()
        .args(&["pause", "../etc"])
        .output()
        .assert_code(2)
        .assert_stderr("not a fix name");
}

#[test]
fn an_unreadable_pause_record_still_pauses() {
    let t = Tree::new();
    let file = config_file(&t);
    std::fs::create_dir_all(t.path("state/pause")).unwrap();
    std::fs::write(t.path("state/pause/all.json"), "{ torn").unwrap();
    t.set_max_conn(&file, "50", &[])
        .assert_code(5)
        .assert_stderr("cannot be read");
    t.defops().args(&["resume"]).output().assert_code(0);
    t.set_max_conn(&file, "50", &[]).assert_code(0);
}

/// Starts a real run of the hostile guest in `mode` that plans a write to
/// `grant/f` and says "started"; returns once it has.
fn start_hostile(t: &Tree, mode: &str, extra: &[&str]) -> std::process::Child {
    let mut args = vec![
        "run".to_string(),
        guest("hostile").to_str().unwrap().into(),
        "--allow".into(),
        t.p("grant"),
        "--json".into(),
        "--timeout".into(),
        "120s".into(),
        "-p".into(),
        format!("mode={mode}"),
        "-p".into(),
        format!("before={}", t.p("grant/f")),
        "-p".into(),
        "announce=1".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let (child, lines) = t.spawn_until(&args, "\"started\"");
    // Keep reading so the run never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    child
}

#[test]
fn a_pause_stops_a_running_fix_within_a_second() {
    // Computing, sleeping, and waiting between host calls.
    for mode in ["loop", "sleep", "write-then-wait"] {
        let t = Tree::new();
        t.write("grant/keep", "untouched\n");
        let before = t.snapshot("");
        let (go, file) = (
            format!("go={}", t.p("grant/go")),
            format!("file={}", t.p("grant/f")),
        );
        let mut child = start_hostile(&t, mode, &["-p", &go, "-p", &file]);
        t.defops()
            .args(&["pause", "--reason", "stop everything"])
            .output()
            .assert_code(0);
        let paused_at = Instant::now();
        let status = child.wait().unwrap();
        let took = paused_at.elapsed();
        assert_eq!(status.code(), Some(5), "{mode}");
        assert!(
            took < Duration::from_secs(1),
            "{mode}: the run stopped {took:?} after the pause"
        );
        assert_eq!(t.snapshot(""), before, "{mode}");

        let list = t.defops().args(&["journal", "list", "--json"]).output();
        let run = list.lines().pop().unwrap();
        assert_eq!(run["outcome"], "aborted", "{mode}");
        assert_eq!(run["intact"], true);
        let records = t.journal(run["run_id"].as_str().unwrap());
        let outcome = records.last().unwrap();
        assert!(
            outcome["error"]
                .as_str()
                .unwrap()
                .contains("stop everything"),
            "{mode}: {outcome}"
        );
        // The partial run rolls back like any other (here: nothing to undo).
        t.defops()
            .args(&["rollback", run["run_id"].as_str().unwrap(), "--json"])
            .output()
            .assert_code(0);
        assert_eq!(t.snapshot(""), before, "{mode}");
    }
}

#[test]
fn a_pause_during_the_commit_stops_between_changes_and_rolls_back() {
    let t = Tree::new();
    for n in 0..6 {
        t.write(&format!("grant/c{n}.conf"), "max_conn = 20\n");
    }
    let before = t.snapshot("");
    let out = t
        .set_max_conn_cmd(&t.p("grant/*.conf"), "50")
        .env("DEFOPS_FAILPOINT", "pause-before-3")
        .output();
    out.assert_code(5);
    let s = out.summary();
    assert_eq!(s["outcome"], "aborted");
    assert_eq!(s["changed"], 3);
    assert!(s["error"].as_str().unwrap().contains("rollback"), "{s}");
    let changed = (0..6)
        .filter(|n| t.read(&format!("grant/c{n}.conf")) == "max_conn = 50\n")
        .count();
    assert_eq!(changed, 3);
    t.verify_and_roll_back(s["run_id"].as_str().unwrap());
    assert_eq!(t.snapshot(""), before);
}

/// A change window that is closed now: open only three hours from now.
fn closed_window(t: &Tree) -> String {
    let hour = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / 3600
        + 3)
        % 24;
    t.config(
        "window.toml",
        &format!(
            "[change-window]\ntime-zone = \"UTC\"\nallow = [\"daily {hour:02}:00-{:02}:00\"]\n\n[dry-run-first]\nrequired = false\n",
            (hour + 1) % 24
        ),
    )
}

#[test]
fn outside_the_window_only_dry_runs_or_a_watched_override_run() {
    let t = Tree::new();
    let file = config_file(&t);
    let config = closed_window(&t);
    let before = t.snapshot("grant");
    t.set_max_conn(&file, "50", &["--config", &config])
        .assert_code(3)
        .assert_stderr("outside the change window")
        .assert_stderr("it opens")
        .assert_stderr("--outside-window --on-call");
    assert_eq!(t.snapshot("grant"), before);
    t.set_max_conn(&file, "50", &["--config", &config, "--dry-run"])
        .assert_code(0);
    t.set_max_conn(&file, "50", &["--config", &config, "--outside-window"])
        .assert_code(2);
    let out = t.set_max_conn(
        &file,
        "50",
        &[
            "--config",
            &config,
            "--outside-window",
            "--on-call",
            "alice",
        ],
    );
    out.assert_code(0);
    let h = t.header(out.summary()["run_id"].as_str().unwrap());
    assert_eq!(h["policy"]["window"]["open"], false);
    assert_eq!(h["policy"]["window"]["override"]["on_call"], "alice");

    let status = t
        .defops()
        .args(&["status", "--json", "--config", &config])
        .output();
    let s = status.summary_of("status");
    assert_eq!(s["window"]["now"]["open"], false);
    assert_eq!(s["fixes"][0]["fix"], "config-set");
    assert_eq!(s["fixes"][0]["last_real"]["outcome"], "applied");
}

#[test]
fn a_freeze_or_holiday_closes_an_open_window() {
    let t = Tree::new();
    let file = config_file(&t);
    let today = jiff_free_today();
    let open = t.config(
        "open.toml",
        "[change-window]\ntime-zone = \"Europe/Berlin\"\nallow = [\"daily 00:00-24:00\"]\n[dry-run-first]\nrequired = false\n",
    );
    let out = t.set_max_conn(&file, "30", &["--config", &open]);
    out.assert_code(0);
    let h = t.header(out.summary()["run_id"].as_str().unwrap());
    assert_eq!(h["policy"]["window"]["open"], true);
    // Today, wherever the zone puts it, is inside a freeze from yesterday
    // to tomorrow (UTC dates, so ±1 day covers every zone).
    let frozen = t.config(
        "frozen.toml",
        &format!(
            "[change-window]\ntime-zone = \"Pacific/Kiritimati\"\nallow = [\"daily 00:00-24:00\"]\nfreeze = [{{ from = \"{}\", to = \"{}\", reason = \"year-end freeze\" }}]\n",
            today.0, today.1
        ),
    );
    t.set_max_conn(&file, "50", &["--config", &frozen])
        .assert_code(3)
        .assert_stderr("year-end freeze");
    assert_eq!(t.read("grant/app.conf"), "max_conn = 30\n");
}

/// Yesterday and tomorrow as UTC dates, YYYY-MM-DD.
fn jiff_free_today() -> (String, String) {
    let day = |offset: i64| {
        let out = std::process::Command::new("date")
            .args(["-u", "-d", &format!("{offset} day"), "+%Y-%m-%d"])
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    (day(-1), day(1))
}

#[test]
fn a_broken_configuration_names_the_line_and_changes_nothing() {
    let t = Tree::new();
    let file = config_file(&t);
    let before = (t.snapshot("grant"), t.snapshot("outside"));
    for (text, line, needle) in [
        (
            "[change-window]\ntime-zone = \"UTC\"\nalow = [\"Mon 09:00-10:00\"]\n",
            3,
            "unknown field `alow`",
        ),
        (
            "[change-window]\ntime-zone = \"Europe/Atlantis\"\n",
            2,
            "not a time zone",
        ),
        (
            "[change-window]\ntime-zone = \"UTC\"\nallow = [\"weekdays 9-5\"]\n",
            3,
            "allow",
        ),
        ("[dry-run-first]\nmax-age = \"a day\"\n", 2, "max-age"),
        ("[dry-run-first\n", 1, ""),
        ("approvals = true\n", 1, "unknown field `approvals`"),
    ] {
        let config = t.config("bad.toml", text);
        let out = t.set_max_conn(&file, "50", &["--config", &config]);
        out.assert_code(2)
            .assert_stderr(&format!("bad.toml:{line}: "))
            .assert_stderr(needle);
        assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    }
    t.set_max_conn(&file, "50", &["--config", &t.p("missing.toml")])
        .assert_code(2)
        .assert_stderr("missing.toml");
    assert_eq!((t.snapshot("grant"), t.snapshot("outside")), before);
}

/// Runs the dry-run command a refusal suggests, through the shell.
fn run_suggested(t: &Tree, refusal: &Out) -> Out {
    let cmd = refusal
        .stderr
        .split("run it first: ")
        .nth(1)
        .unwrap_or_else(|| panic!("no command in {}", refusal.stderr))
        .trim();
    assert!(cmd.starts_with("defops-wasm run "), "{cmd}");
    t.shell(cmd)
}

#[test]
fn a_real_run_needs_a_dry_run_of_the_same_fix_grants_and_params() {
    let t = Tree::new();
    let file = config_file(&t);
    let strict = t.config("strict.toml", "");
    let before = t.snapshot("grant");
    let refused = t.set_max_conn(&file, "50", &["--config", &strict]);
    refused
        .assert_code(3)
        .assert_stderr("no successful dry-run of config-set")
        .assert_stderr("--dry-run");
    assert_eq!(t.snapshot("grant"), before);
    // Refused before the fix is compiled.
    assert!(!t.path("state/cache").exists());

    // The suggested command is the dry-run that unlocks the real run.
    let dry = run_suggested(&t, &refused);
    dry.assert_code(0);
    assert!(dry.stdout.contains("dry-run"), "{}", dry.stdout);
    let out = t.set_max_conn(&file, "50", &["--config", &strict]);
    out.assert_code(0);
    let h = t.header(out.summary()["run_id"].as_str().unwrap());
    assert_eq!(h["policy"]["dry_run_first"]["required"], true);
    assert!(h["policy"]["dry_run_first"]["dry_run"].is_string());

    // Another param value is another run.
    t.set_max_conn(&file, "60", &["--config", &strict])
        .assert_code(3);
    // Another grant set too.
    t.set_max_conn(
        &file,
        "50",
        &["--config", &strict, "--allow-ro", &t.p("ro")],
    )
    .assert_code(3);
    // Another binary under the same name too.
    let copy = t.path("fix-copy.wasm");
    std::fs::copy(fix("config-set"), &copy).unwrap();
    let params = [
        "-p",
        &format!("file={file}"),
        "-p",
        "key=max_conn",
        "-p",
        "value=70",
        "--config",
        &strict,
    ];
    let mut dry_args = params.to_vec();
    dry_args.push("--dry-run");
    t.run(&copy, &dry_args).assert_code(0);
    std::fs::copy(guest("hostile"), &copy).unwrap();
    t.run(&copy, &params)
        .assert_code(3)
        .assert_stderr("no successful dry-run");
    std::fs::copy(fix("config-set"), &copy).unwrap();
    t.run(&copy, &params).assert_code(0);
    assert_eq!(t.read("grant/app.conf"), "max_conn = 70\n");

    // A failed dry-run does not count.
    let f = format!("file={}", t.p("grant/f"));
    let failing = ["-p", "mode=fail-after-write", "-p", &f, "--config", &strict];
    let mut dry = failing.to_vec();
    dry.push("--dry-run");
    t.run(&guest("hostile"), &dry).assert_code(1);
    t.run(&guest("hostile"), &failing)
        .assert_code(3)
        .assert_stderr("no successful dry-run of hostile");
}

#[test]
fn the_dry_run_requirement_can_be_overridden_with_a_reason_or_expire() {
    let t = Tree::new();
    let file = config_file(&t);
    let strict = t.config("strict.toml", "[dry-run-first]\nmax-age = \"1s\"\n");
    t.set_max_conn(&file, "50", &["--config", &strict, "--no-dry-run-first"])
        .assert_code(2);
    let out = t.set_max_conn(
        &file,
        "50",
        &[
            "--config",
            &strict,
            "--no-dry-run-first",
            "--reason",
            "INC-4711: site down, no time",
        ],
    );
    out.assert_code(0);
    let h = t.header(out.summary()["run_id"].as_str().unwrap());
    assert_eq!(
        h["policy"]["dry_run_first"]["override"]["reason"],
        "INC-4711: site down, no time"
    );
    t.set_max_conn(&file, "60", &["--config", &strict, "--dry-run"])
        .assert_code(0);
    std::thread::sleep(Duration::from_millis(2100));
    t.set_max_conn(&file, "60", &["--config", &strict])
        .assert_code(3)
        .assert_stderr("is older than 1s");
}

#[test]
fn status_shows_the_guards_for_people_too() {
    let t = Tree::new();
    let config = closed_window(&t);
    let out = t.defops().args(&["status", "--config", &config]).output();
    out.assert_code(0);
    assert!(out.stdout.contains("paused:   no"), "{}", out.stdout);
    assert!(out.stdout.contains("window:   closed"), "{}", out.stdout);
    assert!(out.stdout.contains("opens"), "{}", out.stdout);
    assert!(out.stdout.contains("runs:     none"), "{}", out.stdout);
}
