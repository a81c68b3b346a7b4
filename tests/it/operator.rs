//! Operator tooling: `new` + `build`, `report`, `check`, `--json` on every
//! command, completions and man pages.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::util::{Out, Tree, fix, guest};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The target directory scaffold builds share across test runs.
fn scaffold_target() -> String {
    let exe = Path::new(env!("CARGO_BIN_EXE_defops-wasm"));
    exe.parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("scaffold")
        .display()
        .to_string()
}

#[test]
fn a_new_fix_builds_outside_the_repository_and_dry_runs() {
    let t = Tree::new();
    let work = tempfile::tempdir().unwrap();
    assert!(!work.path().starts_with(repo()));
    let dir = work.path().join("add-line");
    let dir_s = dir.to_str().unwrap();
    let made = t
        .defops()
        .args(&["new", "add-line", "--dir", dir_s, "--json"])
        .output();
    made.assert_code(0);
    assert_eq!(made.summary_of("new")["name"], "add-line");
    for f in ["Cargo.toml", "src/lib.rs", "manifest.toml"] {
        assert!(dir.join(f).is_file(), "{f}");
    }
    // Not over an existing fix.
    t.defops()
        .args(&["new", "add-line", "--dir", dir_s])
        .output()
        .assert_code(2)
        .assert_stderr("not empty");
    t.defops()
        .args(&["new", "Bad Name"])
        .output()
        .assert_code(2)
        .assert_stderr("not a fix name");

    let built = t
        .defops()
        .args(&["build", dir_s, "--target-dir", &scaffold_target(), "--json"])
        .output();
    built.assert_code(0);
    let b = built.summary_of("build");
    let wasm = b["fix"].as_str().unwrap().to_string();
    assert_eq!(wasm, dir.join("add-line.wasm").display().to_string());

    // The manifest is in it, and inspect agrees with the imports.
    let inspect = t.defops().args(&["inspect", &wasm, "--json"]).output();
    inspect.assert_code(0);
    assert_eq!(
        inspect.summary_of("inspect")["manifest"]["name"],
        "add-line"
    );
    // build and inspect name the fix the same way.
    assert_eq!(inspect.summary_of("inspect")["fix_id"], b["fix_id"]);
    assert_eq!(
        b["fix_id"],
        format!("sha256:{}", b["sha256"].as_str().unwrap())
    );

    t.write("grant/app.conf", "a = 1\n");
    let file = format!("file={}", t.p("grant/app.conf"));
    let dry = t.run(
        Path::new(&wasm),
        &["-p", &file, "-p", "line=b = 2", "--dry-run"],
    );
    dry.assert_code(0);
    let s = dry.summary();
    assert_eq!(s["outcome"], "planned");
    assert_eq!(s["changed"], 1);
    assert_eq!(s["idempotent"], true, "{}", dry.stdout);
    assert_eq!(t.read("grant/app.conf"), "a = 1\n");

    // A broken manifest fails fast, before cargo.
    std::fs::write(
        dir.join("manifest.toml"),
        "name = \"add-line\"\nversoin = \"1\"\n",
    )
    .unwrap();
    t.defops()
        .args(&["build", dir_s, "--target-dir", &scaffold_target()])
        .output()
        .assert_code(2)
        .assert_stderr("manifest.toml: line 2: unknown field `versoin`");
    t.defops()
        .args(&["build", work.path().to_str().unwrap()])
        .output()
        .assert_code(2)
        .assert_stderr("Cargo.toml");
}

/// Replaces what changes from run to run with placeholders.
fn normalize(text: &str, t: &Tree) -> String {
    let target = Path::new(env!("CARGO_BIN_EXE_defops-wasm"))
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .display()
        .to_string();
    let mut s = text.replace(&target, "<target>");
    s = s.replace(&t.p(""), "<tree>/");
    s = s.replace(&t.p("").trim_end_matches('/').to_string(), "<tree>");
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let re_hash = regex::Regex::new(r"[0-9a-f]{64}").unwrap();
    let re_id = regex::Regex::new(r"\d{8}T\d{6}Z-[0-9a-f]{6}").unwrap();
    let re_time = regex::Regex::new(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z").unwrap();
    let re_size = regex::Regex::new(r"fsops\.wasm`, \d+ bytes").unwrap();
    let re_fp = regex::Regex::new(r"SHA256:[A-Za-z0-9+/]+").unwrap();
    s = re_hash.replace_all(&s, "<hash>").into_owned();
    s = re_id.replace_all(&s, "<run>").into_owned();
    s = re_time.replace_all(&s, "<time>").into_owned();
    s = re_size
        .replace_all(&s, "fsops.wasm`, <n> bytes")
        .into_owned();
    s = re_fp.replace_all(&s, "SHA256:<fp>").into_owned();
    s.replace(&format!("`{}`", host.trim()), "`<host>`")
        .replace(&format!("on {} (", host.trim()), "on <host> (")
        .replace(env!("CARGO_PKG_VERSION"), "<version>")
}

#[test]
fn report_drafts_a_retrospective_with_every_kind_of_record() {
    let t = Tree::new();
    t.write("grant/app.conf", "max_conn = 20\ntimeout = 5\n");
    t.write("grant/old.txt", "old\n");
    t.write("ro/app.log", "ok\nchecksum mismatch in segment s1\nok\n");
    let ops = [
        format!(
            "write {} max_conn\\s=\\s50\\ntimeout\\s=\\s5\\n",
            t.p("grant/app.conf")
        ),
        format!("mkdir {}", t.p("grant/new")),
        format!("chmod {} 600", t.p("grant/app.conf")),
        format!("mv {} {}", t.p("grant/old.txt"), t.p("grant/new/old.txt")),
        format!("ln new/old.txt {}", t.p("grant/link")),
        format!("read {}", t.p("outside/secret")),
        format!("count {} mismatch", t.p("ro/app.log")),
        "print hello from the fix".to_string(),
    ]
    .join(";");
    let (ops_param, log_glob) = (format!("ops={ops}"), t.p("ro/app.log"));
    let out = t
        .defops()
        .env("USER", "oncall")
        .args(&[
            "run",
            guest("fsops").to_str().unwrap(),
            "--allow",
            &t.p("grant"),
            "--allow-log",
            &log_glob,
            "--json",
            "-p",
            &ops_param,
            "-p",
            "ignore_errors=1",
        ])
        .output();
    out.assert_code(0);
    // The JSON Lines of a run, one of each type.
    for ty in [
        "start", "message", "output", "denied", "logs", "effect", "summary",
    ] {
        assert!(!out.of(ty).is_empty(), "no {ty} line: {}", out.stdout);
    }
    let run_id = out.summary()["run_id"].as_str().unwrap().to_string();
    t.defops()
        .args(&["rollback", &run_id])
        .output()
        .assert_code(0);

    let md = t.defops().args(&["report", &run_id]).output();
    md.assert_code(0);
    let got = normalize(&md.stdout, &t);
    let snapshot = repo().join("tests/snapshots/report.md");
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&snapshot, &got).unwrap();
    }
    let want = std::fs::read_to_string(&snapshot).unwrap_or_default();
    assert_eq!(
        got, want,
        "the report differs from tests/snapshots/report.md (UPDATE_SNAPSHOTS=1 rewrites it)"
    );

    let json = t
        .defops()
        .args(&["report", &run_id, "--format", "json"])
        .output();
    json.assert_code(0);
    let r = json.summary_of("report");
    assert_eq!(r["effects"].as_array().unwrap().len(), 5);
    assert_eq!(r["rollbacks"][0]["outcome"], "rolled-back");
    assert_eq!(r["denied"].as_array().unwrap().len(), 1);
}

fn check(t: &Tree, extra: &[&str]) -> Out {
    let mut args = vec!["check"];
    args.extend_from_slice(extra);
    t.defops().args(&args).output()
}

/// The plugin line: `DEFOPS STATE - text | perfdata`.
#[track_caller]
fn assert_line(out: &Out, code: i32, state: &str, needle: &str) {
    out.assert_code(code);
    let first = out.stdout.lines().next().unwrap_or_default();
    let re = regex::Regex::new(&format!(
        r"^DEFOPS {state} - [^|]+ \| runs=\d+ dry_runs=\d+ failed=\d+ running=\d+ bad_journals=\d+ drifted_rollbacks=\d+ paused=[01] scheduled=\d+ scheduled_failed=\d+$"
    ))
    .unwrap();
    assert!(re.is_match(first), "{first:?}");
    assert!(first.contains(needle), "{needle:?} in {first:?}");
}

#[test]
fn check_reports_each_state_with_its_exit_code() {
    let t = Tree::new();
    t.write("grant/app.conf", "max_conn = 1\n");
    let file = t.p("grant/app.conf");
    // Unreadable: no state directory.
    let unknown = t
        .defops()
        .args(&["check", "--state-dir", &t.p("nowhere")])
        .output();
    unknown.assert_code(3);
    assert!(
        unknown
            .stdout
            .starts_with("DEFOPS UNKNOWN - cannot read the state directory")
    );

    t.set_max_conn(&file, "2", &[]).assert_code(0);
    assert_line(&check(&t, &[]), 0, "OK", "all runs fine");

    // Paused: WARNING.
    t.defops()
        .args(&["pause", "--reason", "maintenance"])
        .output()
        .assert_code(0);
    assert_line(&check(&t, &[]), 1, "WARNING", "maintenance");
    t.defops().args(&["resume"]).output().assert_code(0);

    // A run aborted after changing something, not rolled back: CRITICAL.
    for n in 0..3 {
        t.write(&format!("grant/c{n}.conf"), "max_conn = 1\n");
    }
    let aborted = t
        .set_max_conn_cmd(&t.p("grant/c*.conf"), "7")
        .env("DEFOPS_FAILPOINT", "pause-before-1")
        .output();
    aborted.assert_code(5);
    let id = aborted.summary()["run_id"].as_str().unwrap().to_string();
    assert_line(
        &check(&t, &[]),
        2,
        "CRITICAL",
        "aborted with 1 change(s) in place",
    );
    let json = check(&t, &["--json"]);
    let c = json.summary_of("check");
    assert_eq!(c["status"], "CRITICAL");
    assert_eq!(c["perfdata"]["failed"], 1);
    // Rolled back: OK again.
    t.defops().args(&["rollback", &id]).output().assert_code(0);
    assert_line(&check(&t, &[]), 0, "OK", "all runs fine");

    // A rollback that found drift: WARNING.
    let last = t.set_max_conn(&file, "3", &[]);
    last.assert_code(0);
    let last = last.summary()["run_id"].as_str().unwrap().to_string();
    t.write("grant/app.conf", "max_conn = 99\n");
    t.defops()
        .args(&["rollback", &last])
        .output()
        .assert_code(3);
    assert_line(&check(&t, &[]), 1, "WARNING", "refused because of drift");

    // A tampered journal: CRITICAL.
    let journal = t.path(&format!("state/runs/{last}/journal.jsonl"));
    let text = std::fs::read_to_string(&journal).unwrap();
    std::fs::write(&journal, text.replacen("max_conn", "max_CONN", 1)).unwrap();
    assert_line(&check(&t, &[]), 2, "CRITICAL", "fails verification");
}

#[test]
fn every_command_speaks_json_lines_with_a_type() {
    let t = Tree::new();
    t.write("grant/app.conf", "max_conn = 1\n");
    let file = t.p("grant/app.conf");
    let run = t.set_max_conn(&file, "2", &[]);
    let id = run.summary()["run_id"].as_str().unwrap().to_string();
    let fix_path = fix("config-set");
    let f = fix_path.to_str().unwrap();
    let man = t.p("man");
    let manifest = repo().join("fixes/config-set/manifest.toml");
    let manifest = manifest.to_str().unwrap();
    let embedded = t.p("embedded.wasm");
    let key = t.p("key");
    let keygen = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f", &key])
        .status()
        .unwrap();
    assert!(keygen.success());
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["embed", f, manifest, "-o", &embedded], "embed"),
        (vec!["approve", &embedded, "--key", &key], "approve"),
        (vec!["journal", "list"], "run"),
        (vec!["journal", "show", &id], "header"),
        (vec!["journal", "verify", &id], "verify"),
        (vec!["status"], "status"),
        (vec!["pause", "--reason", "x"], "pause"),
        (vec!["resume"], "resume"),
        (vec!["inspect", f], "inspect"),
        (vec!["inspect", f, f], "inspect-diff"),
        (vec!["report", &id], "report"),
        (vec!["check"], "check"),
        (vec!["rollback", &id, "--dry-run"], "summary"),
        (vec!["man", "--dir", &man], "man"),
    ];
    for (args, ty) in cases {
        let mut all = args.clone();
        all.push("--json");
        let out = t.defops().args(&all).output();
        assert!(out.code == 0, "{args:?}: {}", out.stderr);
        let lines: Vec<Value> = out.lines();
        assert!(!lines.is_empty(), "{args:?}");
        for l in &lines {
            assert!(l["type"].is_string(), "{args:?}: {l}");
        }
        assert!(
            lines.iter().any(|l| l["type"] == ty),
            "{args:?}: no {ty} line in {}",
            out.stdout
        );
    }
    // Errors too: one summary line.
    let bad = t
        .defops()
        .args(&["journal", "show", "nope", "--json"])
        .output();
    bad.assert_code(2);
    assert_eq!(bad.summary()["outcome"], "error");
}

#[test]
fn completions_and_man_pages_come_from_the_cli_definition() {
    let t = Tree::new();
    let bash = t.defops().args(&["completions", "bash"]).output();
    bash.assert_code(0);
    assert!(bash.stdout.contains("defops-wasm"));
    assert!(bash.stdout.contains("--allow-ro"));
    // `help` completes the subcommands' own subcommands too (clap's
    // `defer` would lose them).
    for nested in ["journal__subcmd__verify", "schedule__subcmd__promote"] {
        let case = format!("cmd=\"defops__wasm__subcmd__help__subcmd__{nested}\"");
        assert!(
            bash.stdout.contains(&case),
            "no {case} in the bash completions"
        );
    }
    let out = t.defops().args(&["man", "--dir", &t.p("man")]).output();
    out.assert_code(0);
    let run = std::fs::read_to_string(t.path("man/defops-wasm-run.1")).unwrap();
    assert!(
        run.starts_with(".ie") || run.contains(".TH"),
        "{}",
        &run[..80]
    );
    assert!(run.contains("allow\\-ro"), "the run page lists its flags");
    assert!(t.path("man/defops-wasm.1").is_file());
}

#[test]
fn quiet_and_verbose() {
    let t = Tree::new();
    t.write("grant/app.conf", "max_conn = 1\n");
    let file = t.p("grant/app.conf");
    let dry_run = |flag: &str| {
        let (fix, grant, f) = (fix("config-set"), t.p("grant"), format!("file={file}"));
        t.defops()
            .args(&[
                "run",
                fix.to_str().unwrap(),
                "--allow",
                &grant,
                "--dry-run",
                flag,
            ])
            .args(&["-p", &f, "-p", "key=max_conn", "-p", "value=2"])
            .output()
    };
    let quiet = dry_run("-q");
    quiet.assert_code(0);
    assert_eq!(
        quiet.stdout.trim(),
        "dry-run: nothing was written; run again without --dry-run to apply"
    );
    let verbose = dry_run("-v");
    verbose.assert_code(0);
    assert!(
        verbose.stderr.contains("component ready"),
        "{}",
        verbose.stderr
    );
    assert!(verbose.stdout.contains("plan:"));
}

#[test]
fn a_closed_or_full_stdout_is_not_a_crash() {
    let t = Tree::new();
    for args in [vec!["check"], vec!["version"], vec!["status"]] {
        let mut cmd = t.defops().args(&args).into_command();
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let out = cmd.stdout(full).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
    }
}
