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
