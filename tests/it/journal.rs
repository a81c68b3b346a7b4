//! The journal: every run writes one, hash-chained; `journal verify` names
//! the first bad record; a torn tail is told apart from tampering.

use serde_json::Value;

use crate::mutations::ops;
use crate::util::{Out, Tree};

/// A real run with several records; returns (journal path, head).
fn journaled_run(t: &Tree) -> (std::path::PathBuf, String) {
    let g = t.p("grant");
    let out = ops(
        t,
        &[
            format!("write {g}/a one"),
            format!("write {g}/b two"),
            format!("mkdir {g}/d"),
        ],
        &[],
    );
    out.assert_code(0);
    let s = out.summary();
    (
        s["journal"].as_str().unwrap().into(),
        s["head"].as_str().unwrap().to_string(),
    )
}

fn verify(t: &Tree, journal: &std::path::Path, extra: &[&str]) -> Out {
    let mut args = vec!["journal", "verify", journal.to_str().unwrap(), "--json"];
    args.extend_from_slice(extra);
    t.defops().args(&args).output()
}

fn lines(journal: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(journal)
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
}

fn write_lines(journal: &std::path::Path, lines: &[String]) {
    std::fs::write(
        journal,
        lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
    )
    .unwrap();
}

#[track_caller]
fn assert_bad(out: &Out, seq: u64, why: &str) {
    out.assert_code(3);
    let v = out.summary_of("verify");
    assert_eq!(v["verdict"], "bad", "{v}");
    assert_eq!(v["seq"], seq, "{v}");
    assert!(v["why"].as_str().unwrap().contains(why), "{v}");
    out.assert_stderr(&format!("seq {seq}"));
}

#[test]
fn every_run_writes_an_intact_journal_with_header_effects_and_outcome() {
    let t = Tree::new();
    let (journal, head) = journaled_run(&t);
    let out = verify(&t, &journal, &["--expect-head", &head]);
    out.assert_code(0);
    let recs: Vec<Value> = lines(&journal)
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let types: Vec<&str> = recs.iter().map(|r| r["type"].as_str().unwrap()).collect();
    assert_eq!(types[0], "header");
    assert_eq!(*types.last().unwrap(), "outcome");
    assert_eq!(types.iter().filter(|t| **t == "intent").count(), 3);
    assert_eq!(types.iter().filter(|t| **t == "done").count(), 3);
    let h = &recs[0];
    for key in [
        "fix", "grants", "params", "dry_run", "host", "user", "version", "time", "run_id",
    ] {
        assert!(!h[key].is_null(), "header lacks {key}: {h}");
    }
    assert_eq!(h["fix"]["digest"].as_str().unwrap().len(), 64);
    // Intents come before their done records.
    let first_done = types.iter().position(|t| *t == "done").unwrap();
    let last_intent = types.iter().rposition(|t| *t == "intent").unwrap();
    assert!(last_intent < first_done);
}

#[test]
fn a_dry_run_journals_its_plan_as_planned() {
    let t = Tree::new();
    t.write("grant/app.conf", "max_conn = 1\n");
    let out = t.set_max_conn(&t.p("grant/app.conf"), "2", &["--dry-run"]);
    let journal = std::path::PathBuf::from(out.summary()["journal"].as_str().unwrap());
    let recs: Vec<Value> = lines(&journal)
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let intents: Vec<&Value> = recs.iter().filter(|r| r["type"] == "intent").collect();
    assert_eq!(intents.len(), 1);
    assert_eq!(intents[0]["planned"], true);
    assert!(!recs.iter().any(|r| r["type"] == "done"));
    assert_eq!(recs.last().unwrap()["outcome"], "planned");
}

#[test]
fn a_flipped_byte_in_any_record_is_named_by_seq() {
    let t = Tree::new();
    let (journal, _) = journaled_run(&t);
    let original = lines(&journal);
    for seq in 0..original.len() {
        let mut l = original.clone();
        // Flip one byte inside the record's run id / text: still JSON, wrong hash.
        let pos = l[seq].find("\"type\":\"").unwrap() + 8;
        let mut bytes = l[seq].clone().into_bytes();
        bytes[pos] ^= 0x20; // e.g. "header" -> "Header"
        l[seq] = String::from_utf8(bytes).unwrap();
        write_lines(&journal, &l);
        let out = verify(&t, &journal, &[]);
        if seq == 0 {
            // A header that is no longer a header: not a journal at all.
            out.assert_code(2);
        } else {
            assert_bad(&out, seq as u64, "hash does not match");
        }
    }
}

#[test]
fn a_deleted_record_is_a_gap() {
    let t = Tree::new();
    let (journal, _) = journaled_run(&t);
    let mut l = lines(&journal);
    l.remove(3);
    write_lines(&journal, &l);
    assert_bad(&verify(&t, &journal, &[]), 3, "gap");
}

#[test]
fn swapped_records_are_out_of_order() {
    let t = Tree::new();
    let (journal, _) = journaled_run(&t);
    let mut l = lines(&journal);
    l.swap(2, 3);
    write_lines(&journal, &l);
    assert_bad(&verify(&t, &journal, &[]), 2, "expected");
}

#[test]
fn a_cut_tail_is_caught_by_the_expected_head() {
    let t = Tree::new();
    let (journal, head) = journaled_run(&t);
    let mut l = lines(&journal);
    l.pop();
    write_lines(&journal, &l);
    // Without the anchored head, a cleanly cut journal still chains.
    verify(&t, &journal, &[]).assert_code(0);
    let out = verify(&t, &journal, &["--expect-head", &head]);
    out.assert_code(3);
    assert!(
        out.summary_of("verify")["why"]
            .as_str()
            .unwrap()
            .contains("cut short")
    );
}

#[test]
fn a_torn_last_line_is_a_torn_tail_not_tampering() {
    let t = Tree::new();
    let (journal, _) = journaled_run(&t);
    let text = std::fs::read_to_string(&journal).unwrap();
    let cut = text.trim_end_matches('\n');
    let cut = &cut[..cut.len() - 20];
    std::fs::write(&journal, cut).unwrap();
    let out = verify(&t, &journal, &[]);
    out.assert_code(1);
    let v = out.summary_of("verify");
    assert_eq!(v["verdict"], "torn-tail");
    out.assert_stderr("torn tail");
}

#[test]
fn a_tampered_journal_is_never_rolled_back() {
    let t = Tree::new();
    let (journal, _) = journaled_run(&t);
    let mut l = lines(&journal);
    l.remove(4);
    write_lines(&journal, &l);
    let before = t.snapshot("");
    let out = t
        .defops()
        .args(&["rollback", journal.to_str().unwrap()])
        .output();
    out.assert_code(3);
    out.assert_stderr("fails verification at seq 4");
    assert_eq!(t.snapshot(""), before);
}

#[test]
fn a_journal_with_its_header_altered_is_refused_as_tampered() {
    let t = Tree::new();
    let (journal, _) = journaled_run(&t);
    let run = journal
        .parent()
        .unwrap()
        .file_name()
        .unwrap()
        .to_str()
        .unwrap();
    let mut l = lines(&journal);
    let header = l[0].replacen("\"dry_run\":false", "\"dry_run\":true", 1);
    assert_ne!(header, l[0], "the header says dry_run:false");
    l[0] = header;
    write_lines(&journal, &l);
    let before = t.snapshot("");
    for args in [vec!["rollback", run], vec!["journal", "verify", run]] {
        let out = t.defops().args(&args).output();
        out.assert_code(3);
        assert!(
            out.stdout.contains("seq 0") || out.stderr.contains("seq 0"),
            "{out:?}"
        );
    }
    assert_eq!(t.snapshot(""), before);
}

#[test]
fn list_and_show_name_every_run() {
    let t = Tree::new();
    let (journal, _) = journaled_run(&t);
    let run = journal
        .parent()
        .unwrap()
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let list = t.defops().args(&["journal", "list", "--json"]).output();
    list.assert_code(0);
    let rows = list.lines();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["run_id"], run);
    assert_eq!(rows[0]["outcome"], "applied");
    assert_eq!(rows[0]["intact"], true);
    let human = t.defops().args(&["journal", "show", &run]).output();
    human.assert_code(0);
    assert!(
        human.stdout.contains("intent  #1 write"),
        "{}",
        human.stdout
    );
    assert!(human.stdout.contains("intact: "), "{}", human.stdout);
    // A run cut off before its outcome (a crash) is listed as incomplete.
    let mut l = lines(&journal);
    l.pop();
    write_lines(&journal, &l);
    let rows = t
        .defops()
        .args(&["journal", "list", "--json"])
        .output()
        .lines();
    assert_eq!(rows[0]["outcome"], "incomplete");
    assert_eq!(rows[0]["intact"], true);
    assert!(rows[0]["changed"].is_null());
}
