//! Journals from elsewhere: a hash chain proves only that its records
//! agree with its first. Rollback acts on a journal from outside the state
//! directory only with the head the operator anchored (`--expect-head`),
//! and a self-consistent forgery fails against that head.

use serde_json::Value;

use crate::mutations::ops;
use crate::util::{Out, Tree};

/// A real run writing `grant/f` (was "1") and `grant/g`: its run id,
/// journal and head.
fn a_run(t: &Tree) -> (String, std::path::PathBuf, String) {
    t.write("grant/f", "1");
    let out = ops(
        t,
        &[
            format!("write {} 2", t.p("grant/f")),
            format!("write {} new", t.p("grant/g")),
        ],
        &[],
    );
    out.assert_code(0);
    let s = out.summary();
    let text = |k: &str| s[k].as_str().unwrap().to_string();
    (text("run_id"), text("journal").into(), text("head"))
}

fn rollback(t: &Tree, run: &str, extra: &[&str]) -> Out {
    let mut args = vec!["rollback", run, "--json"];
    args.extend_from_slice(extra);
    t.defops().args(&args).output()
}

/// Another valid-looking head: the last digit changed.
fn wrong(head: &str) -> String {
    let mut h = head.to_string();
    let last = if h.ends_with('0') { "1" } else { "0" };
    h.replace_range(63.., last);
    h
}

#[test]
fn a_journal_from_outside_the_state_directory_needs_its_anchored_head() {
    let t = Tree::new();
    let (_, journal, head) = a_run(&t);
    std::fs::create_dir(t.path("elsewhere")).unwrap();
    std::fs::copy(&journal, t.path("elsewhere/journal.jsonl")).unwrap();
    let copy = t.p("elsewhere/journal.jsonl");
    let before = t.snapshot("");

    let bare = rollback(&t, &copy, &[]);
    bare.assert_code(3);
    bare.assert_stderr("outside the state directory")
        .assert_stderr("--expect-head");
    assert_eq!(
        t.snapshot(""),
        before,
        "a refused rollback changed the disk"
    );

    let wrong_head = rollback(&t, &copy, &["--expect-head", &wrong(&head)]);
    wrong_head.assert_code(3);
    wrong_head.assert_stderr(&wrong(&head));
    assert_eq!(
        t.snapshot(""),
        before,
        "a refused rollback changed the disk"
    );

    let anchored = rollback(&t, &copy, &["--expect-head", &head]);
    anchored.assert_code(0);
    assert_eq!(anchored.summary()["outcome"], "rolled-back");
    assert_eq!(t.read("grant/f"), "1");
    assert!(!t.exists("grant/g"));
    // The rollback's journal says the head was anchored.
    let rb = anchored.summary()["run_id"].as_str().unwrap().to_string();
    let show = t
        .defops()
        .args(&["journal", "show", &rb, "--json"])
        .output();
    assert_eq!(show.lines()[0]["head_anchored"], true);
}

/// Rewrites record `seq` of a journal with `edit` and recomputes the chain
/// from there, as anyone can (docs/JOURNAL.md); returns the new head.
fn forge(path: &std::path::Path, seq: usize, edit: impl Fn(&mut Value)) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let mut prev = defops_host::journal::GENESIS.to_string();
    let mut out = String::new();
    for (i, line) in text.lines().enumerate() {
        let mut r: Value = serde_json::from_str(line).unwrap();
        if i == seq {
            edit(&mut r);
        }
        r["prev"] = Value::String(prev.clone());
        let line = defops_host::journal::encode(&r);
        prev = line[line.len() - 67..line.len() - 3].to_string();
        out.push_str(&line);
    }
    std::fs::write(path, out).unwrap();
    prev
}

#[test]
fn a_forged_self_consistent_journal_fails_against_the_anchored_head() {
    let t = Tree::new();
    let (run, journal, head) = a_run(&t);
    let g = t.p("grant/g");
    // The forgery: the second write's intent now names another path.
    let lines = std::fs::read_to_string(&journal).unwrap();
    let seq = lines
        .lines()
        .position(|l| l.contains("\"type\":\"intent\"") && l.contains(&g))
        .unwrap();
    let forged_head = forge(&journal, seq, |r| {
        r["path"] = Value::String(t.p("grant/h"));
    });
    assert_ne!(forged_head, head);
    // The chain alone cannot tell.
    t.defops()
        .args(&["journal", "verify", &run])
        .output()
        .assert_code(0);
    let before = t.snapshot("grant");
    let out = rollback(&t, &run, &["--expect-head", &head]);
    out.assert_code(3);
    out.assert_stderr(&forged_head);
    assert_eq!(
        t.snapshot("grant"),
        before,
        "a refused rollback changed the disk"
    );
    // The same journal elsewhere: refused as well.
    std::fs::create_dir(t.path("elsewhere")).unwrap();
    std::fs::copy(&journal, t.path("elsewhere/journal.jsonl")).unwrap();
    let copy = t.p("elsewhere/journal.jsonl");
    rollback(&t, &copy, &["--expect-head", &head]).assert_code(3);
    rollback(&t, &copy, &[]).assert_code(3);
    assert_eq!(
        t.snapshot("grant"),
        before,
        "a refused rollback changed the disk"
    );
}
