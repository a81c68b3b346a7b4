//! Bad input at the edges: absurd durations and sizes, files that are not
//! files, names that are not UTF-8, symlinked logs, floods of denials.
//! Every one ends with one clear line, a documented exit code, and the
//! disk as it was.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::util::{Cmd, Out, Tree, fix, guest};

/// Runs `cmd`, failing the test (instead of hanging it) if it does not end
/// within a generous bound.
fn bounded(cmd: Cmd) -> Out {
    let mut child = cmd
        .into_command()
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("the command did not end: it hangs");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let o = child.wait_with_output().unwrap();
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

#[track_caller]
fn one_line_error(out: &Out, code: i32, needle: &str) {
    out.assert_code(code).assert_stderr(needle);
    assert_eq!(
        out.stderr.trim_end().lines().count(),
        1,
        "one line on stderr:\n{}",
        out.stderr
    );
    assert!(
        out.stderr.starts_with("defops-wasm: error: "),
        "{}",
        out.stderr
    );
}

/// A parameter that is not UTF-8 is named, on one line, exit 2.
#[test]
fn an_argument_that_is_not_utf8_is_named() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let t = Tree::new();
    let (grant, config_set) = (t.p("grant"), fix("config-set"));
    let args = [
        OsStr::new("run"),
        config_set.as_os_str(),
        OsStr::new("--allow"),
        OsStr::new(&grant),
        OsStr::new("-p"),
        OsStr::from_bytes(b"key=a\xffb"),
    ];
    let out = t.defops().args(&args).output();
    out.assert_code(2);
    assert_eq!(
        out.stderr,
        "defops-wasm: error: argument 6 (\"key=a\u{fffd}b\") is not valid UTF-8, \
         which it must be (see --help)\n"
    );
}

#[test]
fn absurd_durations_and_sizes_are_one_line_usage_errors() {
    let t = Tree::new();
    t.write("grant/app.conf", "max_conn = 1\n");
    let before = t.snapshot("grant");
    let cases: &[(&str, &str, &str)] = &[
        ("--timeout", "0", "more than zero"),
        ("--timeout", "0ms", "more than zero"),
        ("--timeout", "1ns", "unknown unit"),
        ("--timeout", "99999999999999h", "maximum of 24h"),
        ("--timeout", "18446744073709551615s", "maximum of 24h"),
        ("--timeout", "184467440737095516150ms", "maximum of 24h"),
        ("--timeout", "-5s", "not a duration"),
        ("--timeout", "soon", "not a duration"),
        ("--max-memory", "0", "more than zero"),
        ("--max-memory", "99999999999999GiB", "maximum of 4GiB"),
        ("--max-memory", "18446744073709551615", "maximum of 4GiB"),
        ("--max-output", "2GiB", "maximum of 1GiB"),
        ("--max-output", "-1", "not a size"),
    ];
    let fix = fix("config-set");
    for (flag, value, says) in cases {
        let out = bounded(t.defops().args(&[
            "run",
            fix.to_str().unwrap(),
            "--allow",
            &t.p("grant"),
            "--dry-run",
            &format!("{flag}={value}"),
        ]));
        one_line_error(&out, 2, says);
        assert!(out.stderr.contains(flag), "{flag} {value}: {}", out.stderr);
    }
    // The configuration's max-age: the line is named.
    for (value, says) in [
        ("0s", "more than zero"),
        ("99999999999999999999d", "maximum of 366d"),
        ("-1h", "not a duration"),
    ] {
        let cfg = t.config(
            "bad.toml",
            &format!("[dry-run-first]\nrequired = true\nmax-age = \"{value}\"\n"),
        );
        let out = bounded(t.defops().env("DEFOPS_CONFIG", &cfg).args(&["status"]));
        one_line_error(&out, 2, says);
        assert!(out.stderr.contains("bad.toml:3:"), "{}", out.stderr);
    }
    // check is a monitoring plugin: a bad --warn-age is UNKNOWN (3).
    for value in ["0", "1000000d", "-3m", "1.5h"] {
        let out = bounded(t.defops().args(&["check", &format!("--warn-age={value}")]));
        out.assert_code(3);
        assert!(
            out.stdout.starts_with("DEFOPS UNKNOWN - --warn-age"),
            "{value}: {}",
            out.stdout
        );
    }
    assert_eq!(t.snapshot("grant"), before);
}

fn mkfifo(path: &Path) {
    rustix::fs::mkfifoat(
        rustix::fs::CWD,
        path,
        rustix::fs::Mode::from_raw_mode(0o600),
    )
    .unwrap();
}

/// Every file an operator names is refused, by name and kind, when it is
/// not a regular file; none is opened in a way that blocks.
#[test]
fn a_fifo_a_device_or_a_directory_given_as_a_file_is_refused_at_once() {
    let t = Tree::new();
    t.write("grant/app.conf", "max_conn = 1\n");
    mkfifo(&t.path("fifo.wasm"));
    mkfifo(&t.path("fifo.toml"));
    std::fs::create_dir(t.path("dir.wasm")).unwrap();
    let config_set = fix("config-set");
    let real = config_set.to_str().unwrap();
    let (grant, fifo, fifo_toml) = (t.p("grant"), t.p("fifo.wasm"), t.p("fifo.toml"));
    let before = t.snapshot("grant");
    let file_param = format!("file={}/app.conf", grant);
    let run = |fix: &str| strings(&["run", fix, "--allow", &grant, "--dry-run"]);
    let approval = [
        "run",
        real,
        "--allow",
        &grant,
        "--require-approval",
        "--no-dry-run-first",
        "--reason",
        "test",
        "-p",
        "key=max_conn",
        "-p",
        "value=2",
        "-p",
        &file_param,
    ];
    let with = |extra: &[&str]| {
        let mut v: Vec<String> = approval.iter().map(|s| s.to_string()).collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let cases: Vec<(Vec<String>, &str, &str)> = vec![
        (run(&fifo), "FIFO", "fifo.wasm"),
        (run("/dev/zero"), "character device", "/dev/zero"),
        (run(&t.p("dir.wasm")), "directory", "dir.wasm"),
        (strings(&["inspect", &fifo]), "FIFO", "fifo.wasm"),
        (strings(&["inspect", real, &fifo]), "FIFO", "fifo.wasm"),
        (
            strings(&["approve", &fifo, "--key", &fifo]),
            "FIFO",
            "fifo.wasm",
        ),
        (strings(&["embed", &fifo, &fifo_toml]), "FIFO", "fifo.toml"),
        (
            strings(&["approve", real, "--key", &fifo_toml]),
            "FIFO",
            "fifo.toml",
        ),
        (
            strings(&["embed", &fifo, "/dev/null"]),
            "character device",
            "/dev/null",
        ),
        (
            with(&["--allowed-signers", &fifo_toml]),
            "FIFO",
            "fifo.toml",
        ),
        (
            strings(&["--config", &fifo_toml, "status"]),
            "FIFO",
            "fifo.toml",
        ),
        (strings(&["journal", "verify", &fifo]), "FIFO", "fifo.wasm"),
        (strings(&["rollback", &fifo]), "FIFO", "fifo.wasm"),
    ];
    for (args, kind, name) in cases {
        let out = bounded(t.defops().args(&args));
        assert_ne!(out.code, 0, "{args:?}: {out:?}");
        assert!(
            out.stderr.contains(kind) && out.stderr.contains(name),
            "{args:?}: {}",
            out.stderr
        );
    }
    // A signature that is a FIFO, with a real signers file.
    t.write("allowed_signers", "");
    let out = bounded(t.defops().args(&with(&[
        "--allowed-signers",
        &t.p("allowed_signers"),
        "--signature",
        &fifo,
    ])));
    assert!(out.stderr.contains("FIFO"), "{}", out.stderr);
    assert_eq!(t.snapshot("grant"), before);
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn fsops(t: &Tree, ops: &[String], extra: &[&str]) -> Out {
    let ops = format!("ops={}", ops.join(";"));
    let mut args = vec!["-p", ops.as_str(), "-p", "ignore_errors=1", "--dry-run"];
    args.extend_from_slice(extra);
    t.run(&guest("fsops"), &args)
}

/// A name that is not UTF-8 cannot reach a fix (WIT paths are strings):
/// the fix may not list, empty or replace a directory holding one, so a
/// dry-run never plans what the commit cannot do; the operator sees a
/// denial naming the entry, escaped.
#[test]
fn a_directory_holding_a_name_that_is_not_utf8_is_denied_not_half_seen() {
    use std::os::unix::ffi::OsStrExt;
    let t = Tree::new();
    let g = t.p("grant");
    std::fs::create_dir_all(t.path("grant/looks-empty")).unwrap();
    std::fs::create_dir_all(t.path("grant/other")).unwrap();
    t.write("grant/listed/fine.txt", "x\n");
    let bad = std::ffi::OsStr::from_bytes(b"caf\xe9.conf");
    std::fs::write(t.path("grant/looks-empty").join(bad), "hidden\n").unwrap();
    std::fs::write(t.path("grant/listed").join(bad), "hidden\n").unwrap();
    let before = t.snapshot("grant");
    let out = fsops(
        &t,
        &[
            format!("ls {g}/looks-empty"),
            format!("rmdir {g}/looks-empty"),
            format!("mv {g}/other {g}/looks-empty"),
            format!("ls {g}/listed"),
            format!("read {g}/listed/fine.txt"),
        ],
        &[],
    );
    out.assert_code(0);
    let m = out.messages();
    for i in 0..4 {
        assert!(
            m[i].contains("denied") && m[i].contains(r"caf\xe9.conf"),
            "{i}: {m:?}"
        );
    }
    assert!(m[4].contains("-> ok x"), "{m:?}");
    // Nothing planned, so the commit has nothing it could not do.
    assert!(out.of("effect").is_empty(), "{:?}", out.of("effect"));
    // Denied in apply and again in the dry-run's idempotency pass.
    let denied = out.of("denied");
    assert_eq!(denied.len(), 8, "{denied:?}");
    assert!(
        denied
            .iter()
            .all(|d| d["reason"].as_str().unwrap().contains("not UTF-8")),
        "{denied:?}"
    );
    // The same with a real run: refused the same way, the disk unchanged.
    let real = t.run(
        &guest("fsops"),
        &["-p", &format!("ops=rmdir {g}/looks-empty")],
    );
    real.assert_code(3);
    assert_eq!(t.snapshot("grant"), before);
}

/// A fix that loops over denied paths fills neither the journal nor the
/// terminal: the first denials are kept, the rest counted in one record.
#[test]
fn denials_are_bounded_and_the_rest_counted() {
    let t = Tree::new();
    let ops: Vec<String> = (0..600)
        .map(|i| format!("read {}/secret{i}", t.p("outside")))
        .collect();
    // A real run (a dry-run's idempotency pass would deny each twice).
    let ops = format!("ops={}", ops.join(";"));
    let out = t.run(&guest("fsops"), &["-p", &ops, "-p", "ignore_errors=1"]);
    out.assert_code(0);
    let denied = out.of("denied");
    assert_eq!(denied.len(), 101, "100 kept and one summary");
    let last = &denied[100];
    assert_eq!(last["call"], "more");
    assert!(
        last["reason"]
            .as_str()
            .unwrap()
            .starts_with("500 more denials not recorded"),
        "{last}"
    );
    assert_eq!(out.summary()["denied"], 600);
    let run_id = out.summary()["run_id"].as_str().unwrap().to_string();
    let show = t
        .defops()
        .args(&["journal", "show", &run_id, "--json"])
        .output();
    let journaled = show
        .lines()
        .into_iter()
        .filter(|r| r["type"] == "denied")
        .count();
    assert_eq!(journaled, 101);
}

/// Logs that are symlinks (container logs: /var/log/containers/*.log ->
/// /var/log/pods/...) are read when their target, resolved by the kernel's
/// rules, is a granted log; named as denied when it is not; never skipped.
#[test]
fn symlinked_logs_are_read_within_the_grants_and_denied_outside() {
    let t = Tree::new();
    t.write("pods/app/0.log", "boot\nerror: disk full\n");
    t.write("pods/db/0.log", "error: secret table\n");
    t.write("containers/keep", "");
    // Through a symlinked directory, and a relative link.
    t.symlink(&t.p("pods"), "pods-link");
    t.symlink("../pods-link/app/0.log", "containers/app.log");
    let containers = format!("{}/*.log", t.p("containers"));
    let app_pod = format!("{}/*.log", t.p("pods/app"));
    let grep = |globs: &[&str]| {
        let mut args = vec![];
        for g in globs {
            args.extend_from_slice(&["--allow-log", *g]);
        }
        let ops = format!("ops=grep {} error", containers);
        args.extend_from_slice(&["-p", ops.as_str(), "-p", "ignore_errors=1"]);
        t.run(&guest("fsops"), &args)
    };
    // Granted target: read.
    let out = grep(&[&containers, &app_pod]);
    out.assert_code(0);
    let m = out.messages();
    assert!(
        m[0].contains("total=1") && m[0].contains("files=app.log"),
        "{m:?}"
    );
    // The target's directory not granted: denied, naming the link and where it leads.
    let out = grep(&[&containers]);
    let m = out.messages();
    assert!(
        m[0].contains("denied") && m[0].contains("app.log") && m[0].contains("pods/app/0.log"),
        "{m:?}"
    );
    assert_eq!(out.of("denied").len(), 1, "{:?}", out.of("denied"));
    // A link to a file outside every grant, next to a good one: the glob
    // is refused, not trimmed.
    t.symlink(&t.p("pods/db/0.log"), "containers/db.log");
    let out = grep(&[&containers, &app_pod]);
    let m = out.messages();
    assert!(m[0].contains("denied") && m[0].contains("db.log"), "{m:?}");
    // A dangling link is named too.
    std::fs::remove_file(t.path("containers/db.log")).unwrap();
    t.symlink("gone/0.log", "containers/db.log");
    let out = grep(&[&containers, &app_pod]);
    let m = out.messages();
    assert!(
        m[0].contains("db.log") && m[0].contains("cannot be followed"),
        "{m:?}"
    );
}

/// Makes `depth` nested directories `d` under `base` (deeper than a path
/// given to mkdir may be), relative to each other.
fn deep_dirs(base: &Path, depth: usize) {
    use rustix::fs::{Mode, OFlags};
    let mut fd = rustix::fs::open(base, OFlags::DIRECTORY | OFlags::RDONLY, Mode::empty()).unwrap();
    for _ in 0..depth {
        rustix::fs::mkdirat(&fd, "d", Mode::from_raw_mode(0o755)).unwrap();
        fd = rustix::fs::openat(&fd, "d", OFlags::DIRECTORY | OFlags::RDONLY, Mode::empty())
            .unwrap();
    }
}

/// A chain of 39 symlinks, each leading down `depth` directories, back up,
/// and on to the next; the last into the deepest directory.
fn link_chain(t: &Tree, depth: usize) -> String {
    let down = vec!["d"; depth].join("/");
    let up = vec![".."; depth].join("/");
    for i in 0..39 {
        let target = match i {
            38 => down.clone(),
            _ => format!("{down}/{up}/l{}", i + 1),
        };
        t.symlink(&target, &format!("grant/l{i}"));
    }
    t.p("grant/l0")
}

/// A chain of 39 absolute symlinks in a directory `depth` levels deep,
/// each naming the next by its full path: every hop walks down from `/`
/// again. The last leads to the deep directory itself.
fn absolute_chain(t: &Tree, depth: usize) -> String {
    let deep = format!("{}/{}", t.p("grant"), vec!["d"; depth].join("/"));
    for i in 0..39 {
        let link = match i {
            0 => t.p("grant/l0"),
            _ => format!("{deep}/l{i}"),
        };
        let target = match i {
            38 => deep.clone(),
            _ => format!("{deep}/l{}", i + 1),
        };
        std::os::unix::fs::symlink(target, link).unwrap();
    }
    t.p("grant/l0")
}

/// A host call whose work is large (a path as deep as PATH_MAX allows, a
/// chain of symlinks near the kernel's limit through deep directories)
/// stops at the run's deadline: the run ends with the deadline outcome
/// instead of running on inside the host.
#[test]
fn the_deadline_stops_long_host_calls() {
    let t = Tree::new();
    deep_dirs(&t.path("grant"), 800);
    let chain = link_chain(&t, 800);
    let path = format!("path={chain}");
    let out = stat_loop(&t, &path);
    out.assert_code(4);
    assert!(
        out.summary()["error"]
            .as_str()
            .unwrap()
            .contains("deadline"),
        "{}",
        out.stdout
    );
    // The deepest path a fix can give.
    let deep = format!("path={}/{}", t.p("grant"), vec!["d"; 1900].join("/"));
    deep_dirs(&t.path("grant/d").join(vec!["d"; 799].join("/")), 1200);
    let out = stat_loop(&t, &deep);
    out.assert_code(4);
    // Absolute links, each walking 1,900 directories down from `/` again
    // (minutes of work for a resolver that walks from the grant for every
    // component).
    let t = Tree::new();
    deep_dirs(&t.path("grant"), 1900);
    let path = format!("path={}", absolute_chain(&t, 1900));
    let out = stat_loop(&t, &path);
    out.assert_code(4);
}

/// The hostile guest stat-ing `path` (a `path=...` param) in a loop, in a
/// dry-run with a one-second deadline.
fn stat_loop(t: &Tree, path: &str) -> crate::util::Out {
    let hostile = guest("hostile");
    bounded(t.defops().args(&[
        "run",
        hostile.to_str().unwrap(),
        "--allow",
        &t.p("grant"),
        "--dry-run",
        "--json",
        "--timeout",
        "1s",
        "-p",
        "mode=stat-loop",
        "-p",
        path,
    ]))
}

/// The plan's diff of a large file whose every line changes is cut at its
/// time limit and says so, instead of keeping the host busy.
#[test]
fn a_diff_of_every_line_is_cut_and_says_so() {
    let t = Tree::new();
    // Under the 1 MiB a diff is made for, before and after.
    let text: String = (0..40_000).map(|i| format!("line {i}\n")).collect();
    t.write("grant/big.txt", &text);
    let before = t.snapshot("grant");
    let hostile = guest("hostile");
    let file = format!("file={}", t.p("grant/big.txt"));
    let out = bounded(t.defops().args(&[
        "run",
        hostile.to_str().unwrap(),
        "--allow",
        &t.p("grant"),
        "--dry-run",
        "-p",
        "mode=rewrite-every-line",
        "-p",
        &file,
    ]));
    out.assert_code(0);
    let head = &out.stdout[..out.stdout.len().min(2000)];
    assert!(out.stdout.contains("[diff cut after 2000 lines]"), "{head}");
    assert!(out.stdout.contains("[diff cut at its time limit"), "{head}");
    assert_eq!(t.snapshot("grant"), before);
}

/// A pause lands while the guest is inside long host calls: the run ends
/// as paused (exit 5) instead of finishing the host's work first.
#[test]
fn a_pause_stops_a_guest_inside_long_host_calls() {
    let t = Tree::new();
    deep_dirs(&t.path("grant"), 800);
    let chain = link_chain(&t, 800);
    let hostile = guest("hostile");
    let args = [
        "run".to_string(),
        hostile.to_str().unwrap().into(),
        "--allow".into(),
        t.p("grant"),
        "--json".into(),
        "--timeout".into(),
        "10m".into(),
        "-p".into(),
        "mode=stat-loop".into(),
        "-p".into(),
        format!("path={chain}"),
        "-p".into(),
        "announce=1".into(),
    ];
    let (mut child, lines) = t.spawn_until(&args, "\"started\"");
    std::thread::spawn(move || lines.for_each(drop));
    t.defops()
        .args(&["pause", "--reason", "stop the loop"])
        .output()
        .assert_code(0);
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("the paused run kept running");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(5));
}

/// Log reads are journaled like denials: bounded, the rest counted.
#[test]
fn log_reads_are_bounded_and_the_rest_counted() {
    let t = Tree::new();
    let ops: Vec<String> = (0..1100).map(|_| "count /x.log a".to_string()).collect();
    let ops = format!("ops={}", ops.join(";"));
    let out = t.run(&guest("fsops"), &["-p", &ops, "-p", "ignore_errors=1"]);
    out.assert_code(0);
    let reads = out.of("logs");
    assert_eq!(reads.len(), 1000);
    let last = &reads[999];
    assert_eq!(last["call"], "more", "{last}");
    assert_eq!(last["count"], 101, "{last}");
    assert_eq!(out.of("denied").len(), 101);
}

/// A pause that lands while the commit checks a plan stops it before
/// anything is journaled as intended or changed.
#[test]
fn a_pause_while_the_commit_checks_the_plan_changes_nothing() {
    let t = Tree::new();
    for n in 0..3 {
        t.write(&format!("grant/c{n}.conf"), "max_conn = 20\n");
    }
    let before = t.snapshot("grant");
    let out = t
        .set_max_conn_cmd(&t.p("grant/*.conf"), "50")
        .env("DEFOPS_FAILPOINT", "pause-while-checking")
        .output();
    out.assert_code(5);
    let s = out.summary();
    assert_eq!(s["outcome"], "aborted");
    assert_eq!(s["changed"], 0);
    assert_eq!(t.snapshot("grant"), before);
    let show = t
        .defops()
        .args(&["journal", "show", s["run_id"].as_str().unwrap(), "--json"])
        .output();
    assert!(
        show.lines().iter().all(|r| r["type"] != "intent"),
        "{}",
        show.stdout
    );
}
