//! Log reads: plain, rotated and gzip files, oldest first; odd files; bad
//! patterns; globs outside the grants; and quarantine-on-log end to end.

use std::io::Write;

use serde_json::json;

use crate::util::{Out, Tree, fix, guest};

fn gzip(t: &Tree, rel: &str, text: &[u8]) {
    let f = std::fs::File::create(t.path(rel)).unwrap();
    let mut gz = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
    gz.write_all(text).unwrap();
    gz.finish().unwrap();
}

/// Rotated logs: db.log.2.gz (oldest), db.log.1, db.log (newest).
pub fn logs_tree() -> Tree {
    let t = Tree::new();
    std::fs::create_dir_all(t.path("logs")).unwrap();
    gzip(
        &t,
        "logs/db.log.2.gz",
        b"boot\nchecksum mismatch in segment seg-a\n",
    );
    t.write(
        "logs/db.log.1",
        "ok\nchecksum mismatch in segment seg-b\nok\n",
    );
    t.write(
        "logs/db.log",
        "checksum mismatch in segment seg-a\nlast line\n",
    );
    t.write("logs/other.txt", "checksum mismatch in segment seg-z\n");
    t
}

fn ops(t: &Tree, line: &str) -> Out {
    let glob = format!("{}/db.log*", t.p("logs"));
    let ops = format!("ops={line}");
    t.run(
        &guest("fsops"),
        &["--allow-log", &glob, "-p", &ops, "-p", "ignore_errors=1"],
    )
}

fn first(out: &Out) -> String {
    out.messages()
        .first()
        .cloned()
        .unwrap_or_else(|| panic!("no message: {out:?}"))
}

#[test]
fn plain_rotated_and_gzip_logs_oldest_first() {
    let t = logs_tree();
    let out = ops(
        &t,
        &format!(
            r"grep {}/db.log* checksum\smismatch\sin\ssegment\s(\S+)",
            t.p("logs")
        ),
    );
    out.assert_code(0);
    let m = first(&out);
    assert!(
        m.ends_with(
            "-> ok total=3 truncated=false files=db.log.2.gz,db.log.1,db.log \
             hits=db.log.2.gz:2:5:seg-a:34,db.log.1:2:3:seg-b:34,db.log:1:0:seg-a:34"
        ),
        "{m}"
    );
    // What was read is journaled and reported.
    let reads = out.of("logs");
    assert_eq!(reads.len(), 1);
    assert_eq!(reads[0]["matches"], 3);
    assert_eq!(reads[0]["files"].as_array().unwrap().len(), 3);
}

#[test]
fn count_tail_and_truncation() {
    let t = logs_tree();
    let l = t.p("logs");
    let out = ops(
        &t,
        &format!("count {l}/db.log* mismatch; tail {l}/db.log* 3; grep {l}/db.log* mismatch 1"),
    );
    let m = out.messages();
    assert!(m[0].ends_with("-> ok 3"), "{m:?}");
    assert!(
        m[1].ends_with("-> ok ok|checksum mismatch in segment seg-a|last line"),
        "{m:?}"
    );
    assert!(m[2].contains("total=3 truncated=true"), "{m:?}");
    // A tail's record counts the lines it returned, and says so.
    let reads = out.of("logs");
    let calls: Vec<_> = reads.iter().map(|r| (&r["call"], &r["matches"])).collect();
    assert_eq!(
        calls,
        [
            (&json!("count"), &json!(3)),
            (&json!("tail"), &json!(3)),
            (&json!("grep"), &json!(3))
        ]
    );
    let run = out.summary()["run_id"].as_str().unwrap().to_string();
    let report = t.defops().args(&["report", &run]).output();
    report.assert_code(0);
    assert!(
        report
            .stdout
            .contains(&format!("tail `{l}/db.log*`: the last 3 lines of 3 files")),
        "{}",
        report.stdout
    );
    let ops = format!("ops=tail {l}/db.log* 2");
    let text = t
        .defops()
        .args(&[
            "run",
            guest("fsops").to_str().unwrap(),
            "--allow",
            &t.p("grant"),
        ])
        .args(&[
            "--allow-log",
            &format!("{l}/db.log*"),
            "-p",
            &ops,
            "--dry-run",
        ])
        .output();
    text.assert_code(0);
    assert!(
        text.stdout.contains(&format!(
            "logs  tail {l}/db.log* -> the last 2 lines of 3 files"
        )),
        "{}",
        text.stdout
    );
}

/// `lines` lines of 100 bytes; those numbered in `needles` (from 1) say
/// `needle N`. With the hits as fsops prints them: `name:line:offset:N:99`.
fn numbered(name: &str, lines: u64, needles: &[u64]) -> (Vec<u8>, Vec<String>) {
    let mut text = Vec::with_capacity(lines as usize * 100);
    let mut hits = Vec::new();
    for i in 1..=lines {
        let word = if needles.contains(&i) {
            "needle"
        } else {
            "hay---"
        };
        let line = format!("{i:012} {word} {i:012}");
        text.extend_from_slice(format!("{line:-<99}\n").as_bytes());
        if needles.contains(&i) {
            hits.push(format!("{name}:{i}:{}:{i:012}:99", (i - 1) * 100));
        }
    }
    (text, hits)
}

#[test]
fn large_rotated_logs_are_scanned_in_parts_with_the_results_in_order() {
    // Files of 8 MiB and more are cut into ranges scanned on two threads:
    // matches on the lines across the cuts, first and last lines, a gzip
    // file among them; the results as one scan in order would give them.
    let t = Tree::new();
    std::fs::create_dir_all(t.path("logs")).unwrap();
    let mid = 100_000;
    let (old, mut want) = numbered("app.log.2.gz", 1000, &[1, 500]);
    gzip(&t, "logs/app.log.2.gz", &old);
    let (one, hits) = numbered("app.log.1", 2 * mid, &[1, mid, mid + 1, 2 * mid]);
    std::fs::write(t.path("logs/app.log.1"), one).unwrap();
    want.extend(hits);
    // 21 bytes more: the cut is 10 bytes into line `mid + 1`.
    let (mut last, hits) = numbered("app.log", 2 * mid, &[mid + 1, 2 * mid - 1]);
    last.extend_from_slice(b"no newline at the end");
    std::fs::write(t.path("logs/app.log"), last).unwrap();
    want.extend(hits);
    let l = t.p("logs");
    let glob = format!("{l}/app.log*");
    let ops_line = format!(
        r"ops=count {l}/app.log* needle; grep {l}/app.log* needle\s(\d+) 100; grep {l}/app.log* needle\s(\d+) 3; tail {l}/app.log* 2"
    );
    let out = t.run(&guest("fsops"), &["--allow-log", &glob, "-p", &ops_line]);
    out.assert_code(0);
    let m = out.messages();
    assert!(m[0].ends_with(&format!("-> ok {}", want.len())), "{m:?}");
    let files = "files=app.log.2.gz,app.log.1,app.log";
    assert!(
        m[1].ends_with(&format!(
            "-> ok total={} truncated=false {files} hits={}",
            want.len(),
            want.join(",")
        )),
        "{m:?}"
    );
    assert!(
        m[2].ends_with(&format!(
            "-> ok total={} truncated=true {files} hits={}",
            want.len(),
            want[..3].join(",")
        )),
        "{m:?}"
    );
    assert!(m[3].ends_with("no newline at the end"), "{m:?}");
    let reads = out.of("logs");
    let bytes = 1000 * 100 + 2 * 2 * mid * 100 + 21;
    assert_eq!(reads[0]["bytes"], bytes, "{reads:?}");
}

#[test]
fn odd_files_empty_binary_huge_line_and_no_match() {
    let t = Tree::new();
    std::fs::create_dir_all(t.path("logs")).unwrap();
    t.write("logs/empty.log", "");
    std::fs::write(
        t.path("logs/binary.log"),
        b"\x00\xff\xfe needle \x01\n\xc3\x28 needle\n",
    )
    .unwrap();
    let mut huge = vec![b'x'; 10 << 20];
    huge.extend_from_slice(b" needle\n");
    std::fs::write(t.path("logs/huge.log"), &huge).unwrap();
    let l = t.p("logs");
    let glob = format!("{l}/*.log");
    let ops_line = format!(
        "count {l}/empty.log needle; count {l}/binary.log needle; grep {l}/huge.log needle; count {l}/nothing-*.log x; count {l}/missing.log x"
    );
    let out = t.run(
        &guest("fsops"),
        &[
            "--allow-log",
            &glob,
            "-p",
            &format!("ops={ops_line}"),
            "-p",
            "ignore_errors=1",
        ],
    );
    out.assert_code(0);
    let m = out.messages();
    assert!(m[0].ends_with("-> ok 0"), "{m:?}");
    assert!(m[1].ends_with("-> ok 2"), "{m:?}");
    // The 10 MB line matches once; the line handed back is cut at 4 KiB.
    assert!(
        m[2].contains("total=1") && m[2].ends_with(":-:4096"),
        "{m:?}"
    );
    assert!(
        m[3].ends_with("-> ok 0"),
        "a glob that matches nothing: {m:?}"
    );
    assert!(m[4].contains("-> not found:"), "a missing file: {m:?}");
}

#[test]
fn bad_and_pathological_patterns() {
    let t = logs_tree();
    let long = "a".repeat(100_000);
    t.write("logs/db.log.3", &format!("{long}\n"));
    let l = t.p("logs");
    let out = ops(
        &t,
        &format!(
            r"count {l}/db.log* (unclosed; count {l}/db.log* (a*)*q; count {l}/db.log* (x+x+)+y"
        ),
    );
    out.assert_code(0);
    let m = out.messages();
    assert!(m[0].contains("-> invalid input: invalid pattern"), "{m:?}");
    assert!(m[1].ends_with("-> ok 0"), "{m:?}");
    assert!(m[2].ends_with("-> ok 0"), "{m:?}");
}

/// A glob spelled through a linked directory (`/var/log/app` a link to
/// another disk) grants that directory: a fix reads it by either name,
/// and a link inside it to a granted log is followed; what the directory
/// holds outside the pattern stays denied.
#[test]
fn a_log_glob_through_a_linked_directory_reads_the_directory_it_leads_to() {
    let t = logs_tree();
    std::os::unix::fs::symlink(t.path("logs"), t.path("linked")).unwrap();
    std::os::unix::fs::symlink("db.log.1", t.path("logs/db.log.3")).unwrap();
    let (linked, real) = (t.p("linked"), t.p("logs"));
    let line = format!(
        "count {linked}/db.log* mismatch; count {real}/db.log* mismatch; \
         tail {linked}/db.log.3 1; count {linked}/other.txt mismatch"
    );
    let out = t.run(
        &guest("fsops"),
        &[
            "--allow-log",
            &format!("{linked}/db.log*"),
            "-p",
            &format!("ops={line}"),
            "-p",
            "ignore_errors=1",
        ],
    );
    out.assert_code(0);
    let m = out.messages();
    // db.log.3 leads to db.log.1 and is counted as itself.
    assert!(m[0].ends_with("-> ok 4"), "{m:?}");
    assert!(m[1].ends_with("-> ok 4"), "{m:?}");
    assert!(m[2].ends_with("-> ok ok"), "{m:?}");
    assert!(m[3].contains("-> denied:"), "{m:?}");
    let reads = out.of("logs");
    assert_eq!(
        reads[0]["files"],
        json!([
            format!("{linked}/db.log.3"),
            format!("{linked}/db.log.2.gz"),
            format!("{linked}/db.log.1"),
            format!("{linked}/db.log"),
        ])
    );
    // The grant is journaled as it was spelled, and where it led.
    assert_eq!(
        out.of("start")[0]["grants"][1],
        json!({
            "access": "log",
            "path": format!("{linked}/db.log*"),
            "resolved": format!("{real}/db.log*"),
        })
    );
    // An error names the log as the fix did, not where the directory leads.
    std::fs::hard_link(t.path("logs/db.log"), t.path("db.log.second")).unwrap();
    let out = t.run(
        &guest("fsops"),
        &[
            "--allow-log",
            &format!("{linked}/db.log"),
            "-p",
            &format!("ops=tail {linked}/db.log 1"),
            "-p",
            "ignore_errors=1",
        ],
    );
    let m = first(&out);
    assert!(m.contains(&format!("-> denied: {linked}/db.log: ")), "{m}");
    // A link in one granted log directory to another is not a log.
    std::fs::create_dir(t.path("logs/pods")).unwrap();
    std::os::unix::fs::symlink("pods", t.path("logs/pol")).unwrap();
    let out = t.run(
        &guest("fsops"),
        &[
            "--allow-log",
            &format!("{real}/po*"),
            "--allow-log",
            &format!("{real}/pods/*"),
            "-p",
            &format!("ops=tail {real}/pol 1"),
            "-p",
            "ignore_errors=1",
        ],
    );
    let m = first(&out);
    assert!(
        m.ends_with(&format!(
            "-> denied: {real}/pol (a link to {real}/pods): a directory, not a log"
        )),
        "{m}"
    );
}

/// A dry-run through a linked log directory counts for the real run only
/// while the link leads where it did: repointed, the real run is refused
/// (exit 3) until a dry-run of the new directory, or the link is put back.
#[test]
fn a_dry_run_through_a_linked_log_directory_binds_the_real_run_to_it() {
    let t = logs_tree();
    std::fs::create_dir(t.path("logs2")).unwrap();
    t.write("logs2/db.log", "checksum mismatch elsewhere\n");
    let strict = t.config("strict.toml", "");
    let linked = t.p("linked");
    let point = |to: &str| {
        let _ = std::fs::remove_file(t.path("linked"));
        std::os::unix::fs::symlink(t.path(to), t.path("linked")).unwrap();
    };
    let ops = format!("ops=count {linked}/db.log* mismatch");
    let glob = format!("{linked}/db.log*");
    let args = ["--allow-log", &glob, "-p", &ops, "--config", &strict];
    let dry: Vec<&str> = args.iter().copied().chain(["--dry-run"]).collect();
    point("logs");
    t.run(&guest("fsops"), &dry).assert_code(0);
    point("logs2");
    t.run(&guest("fsops"), &args)
        .assert_code(3)
        .assert_stderr("no successful dry-run of fsops");
    point("logs");
    t.run(&guest("fsops"), &args).assert_code(0);
}

/// One directory granted under two names that are not links (a bind
/// mount): one grant, read by either name.
#[test]
fn a_log_directory_granted_under_two_names_is_one_grant() {
    let t = logs_tree();
    std::fs::create_dir(t.path("bound")).unwrap();
    let (real, bound) = (t.p("logs"), t.p("bound"));
    let Some(_bind) = crate::composition::Bind::new(&real, &bound) else {
        eprintln!("skipped: cannot bind-mount here (not root)");
        return;
    };
    let line = format!("count {real}/db.log mismatch; count {bound}/db.log* mismatch");
    let out = t.run(
        &guest("fsops"),
        &[
            "--allow-log",
            &format!("{real}/db.log"),
            "--allow-log",
            &format!("{bound}/db.log*"),
            "-p",
            &format!("ops={line}"),
        ],
    );
    out.assert_code(0);
    let m = out.messages();
    assert!(m[0].ends_with("-> ok 1"), "{m:?}");
    assert!(m[1].ends_with("-> ok 3"), "{m:?}");
}

#[test]
fn logs_outside_the_grants_are_denied() {
    let t = logs_tree();
    let l = t.p("logs");
    for line in [
        format!("count {l}/other.txt mismatch"),
        format!("count {}/secret x", t.p("outside")),
        format!("count {l}/../outside/secret x"),
        "count /etc/passwd* root".to_string(),
        format!("tail {l}/*.txt 1"),
    ] {
        let out = ops(&t, &line);
        let m = first(&out);
        assert!(m.contains("-> denied:"), "{line}: {m}");
        assert!(out.summary()["denied"].as_u64().unwrap() >= 1, "{line}");
    }
    // Without --allow-log, nothing is readable, and the fs grants do not count.
    let ops_line = format!("ops=count {l}/db.log x");
    let out = t.run(
        &guest("fsops"),
        &["--allow-ro", &l, "-p", &ops_line, "-p", "ignore_errors=1"],
    );
    assert!(first(&out).contains("-> denied:"), "{out:?}");
}

#[test]
fn a_missing_log_dir_is_a_clear_usage_error() {
    let t = Tree::new();
    let out = t.run(
        &guest("fsops"),
        &[
            "--allow-log",
            &format!("{}/*.log", t.p("nope")),
            "-p",
            "ops=",
        ],
    );
    out.assert_code(2);
    out.assert_stderr("--allow-log");
}

fn quarantine(t: &Tree, extra: &[&str]) -> Out {
    let glob = format!("{}/db.log*", t.p("logs"));
    let mut args = vec![
        "--allow-log".to_string(),
        glob.clone(),
        "-p".into(),
        format!("log={glob}"),
        "-p".into(),
        format!("data_dir={}", t.p("grant/data")),
        "-p".into(),
        format!("quarantine_dir={}", t.p("grant/quarantine")),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    t.run(&fix("quarantine-on-log"), &args)
}

#[test]
fn quarantine_on_log_end_to_end() {
    let t = logs_tree();
    for seg in ["seg-a", "seg-b", "seg-c"] {
        t.write(&format!("grant/data/{seg}"), seg);
    }
    let before = t.snapshot("");

    // Below the threshold: not needed.
    let out = quarantine(&t, &["-p", "threshold=4"]);
    out.assert_code(0);
    assert_eq!(out.summary()["outcome"], "not-needed");

    // The dry-run plans exactly the named segments.
    let dry = quarantine(&t, &["-p", "threshold=3", "--dry-run"]);
    dry.assert_code(0);
    let moved: Vec<String> = dry
        .of("effect")
        .iter()
        .filter(|e| e["op"] == "rename")
        .map(|e| e["from"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(moved, [t.p("grant/data/seg-a"), t.p("grant/data/seg-b")]);
    assert_eq!(t.snapshot(""), before);

    // At the threshold: moves them, and the journal says what the logs said.
    let real = quarantine(&t, &["-p", "threshold=3"]);
    real.assert_code(0);
    assert!(t.exists("grant/quarantine/seg-a") && t.exists("grant/quarantine/seg-b"));
    assert!(t.exists("grant/data/seg-c"));
    let journal = real.summary()["journal"].as_str().unwrap().to_string();
    let text = std::fs::read_to_string(&journal).unwrap();
    assert!(text.contains(r#""type":"logs""#), "{text}");

    // Idempotent: nothing left to move.
    let again = quarantine(&t, &["-p", "threshold=3"]);
    assert_eq!(again.summary()["outcome"], "not-needed");

    // Rollback restores them.
    let run = real.summary()["run_id"].as_str().unwrap().to_string();
    t.defops().args(&["rollback", &run]).output().assert_code(0);
    assert_eq!(t.snapshot(""), before);
}

#[test]
fn quarantine_on_log_only_on_the_leader() {
    let t = logs_tree();
    t.write("grant/data/seg-a", "a");
    t.write("ro/role", "follower\n");
    let role = format!("leader_file={}", t.p("ro/role"));
    let ro = t.p("ro");
    let out = quarantine(&t, &["--allow-ro", &ro, "-p", &role]);
    out.assert_code(0);
    assert_eq!(out.summary()["outcome"], "not-needed");
    assert!(
        out.summary()["check"]["reason"]
            .as_str()
            .unwrap()
            .contains("not leader")
    );
    t.write("ro/role", "leader\n");
    let out = quarantine(&t, &["--allow-ro", &ro, "-p", &role]);
    assert_eq!(out.summary()["outcome"], "applied");
}

/// Many rotated logs under a low limit of open files: they are opened a
/// group at a time, so the count is the one a file-by-file scan gives.
#[test]
fn a_glob_over_many_files_under_a_low_open_file_limit() {
    let t = Tree::new();
    std::fs::create_dir_all(t.path("logs")).unwrap();
    for i in 1..=150 {
        t.write(&format!("logs/app.log.{i}"), &format!("ok\nneedle {i}\n"));
    }
    let (fsops, glob) = (guest("fsops"), format!("{}/app.log*", t.p("logs")));
    let out = t.shell(&format!(
        "ulimit -n 64; defops-wasm run {} --allow {} --allow-log '{glob}' --dry-run --json -p 'ops=count {glob} needle' -p ignore_errors=1",
        fsops.display(),
        t.p("grant"),
    ));
    out.assert_code(0);
    assert!(first(&out).ends_with("-> ok 150"), "{out:?}");
}

/// A pattern that matches across lines over a million short lines: each
/// line is searched once (it was quadratic, and ran far past the deadline).
#[test]
fn a_pattern_across_lines_stays_linear() {
    let t = Tree::new();
    std::fs::create_dir_all(t.path("logs")).unwrap();
    std::fs::write(t.path("logs/short.log"), b"a\n".repeat(1 << 20)).unwrap();
    let glob = format!("{}/short.log", t.p("logs"));
    let count = |pattern: &str| {
        let ops = format!("ops=count {glob} {pattern}");
        let out = t.run(
            &guest("fsops"),
            &[
                "--allow-log",
                &glob,
                "--dry-run",
                "--timeout",
                "60s",
                "-p",
                &ops,
            ],
        );
        out.assert_code(0);
        first(&out)
    };
    let n = count(r"a\n(?s:.)*\z");
    assert!(n.ends_with("-> ok 0"), "{n}");
    let n = count(r"a\n(?s:.)*|^a$");
    assert!(n.ends_with(&format!("-> ok {}", 1 << 20)), "{n}");
}

/// A capture is cut at 4 KiB like the line: a fix cannot hold whole
/// over-long lines in memory through its captures.
#[test]
fn captures_are_cut_like_lines() {
    let t = Tree::new();
    std::fs::create_dir_all(t.path("logs")).unwrap();
    let long = format!("start {} end\n", "x".repeat(100_000));
    std::fs::write(t.path("logs/long.log"), long.repeat(3)).unwrap();
    let glob = format!("{}/long.log", t.p("logs"));
    let out = t.run(
        &guest("fsops"),
        &[
            "--allow-log",
            &glob,
            "--dry-run",
            "-p",
            &format!(r"ops=grep {glob} start\s(x+)"),
        ],
    );
    out.assert_code(0);
    let hits = first(&out);
    // file:line:offset:capture:... for each of the three lines.
    assert_eq!(
        hits.matches(&"x".repeat(4096)).count(),
        3,
        "{}",
        &hits[..200]
    );
    assert!(
        !hits.contains(&"x".repeat(4097 * 2)),
        "a capture was not cut"
    );
}
