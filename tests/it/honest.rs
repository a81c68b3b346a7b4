//! Honest review output: a fix controls bytes that reach the operator's
//! terminal (file contents in diffs, messages, output, file names, symlink
//! targets, manifest text). Every human-readable output shows them escaped;
//! `--json` and the journal keep them exactly. And what the operator is
//! told: undeclared params refused, the idempotency pass marked, metadata
//! before → after, one digest form, `inspect OLD NEW`'s exit code.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::util::{Tree, fix, guest};

/// A seeded generator (xorshift64*): the same seed gives the same strings,
/// `DEFOPS_HOSTILE_SEED` replays one.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[self.next() as usize % from.len()]
    }

    /// A string that tries to hide or fake lines on a terminal: ESC
    /// sequences, carriage returns, backspaces, BEL, DEL, C1 controls, bidi
    /// overrides, line separators, between plausible words.
    fn hostile(&mut self, with_newlines: bool) -> String {
        const PIECES: &[&str] = &[
            "\x1b[2K",
            "\x1b[1A",
            "\x1b[31m",
            "\x1b]0;title\x07",
            "\x1bc",
            "\r",
            "\x08\x08\x08",
            "\x07",
            "\x7f",
            "\x0b",
            "\x0c",
            "\x01",
            "\u{9b}2K",
            "\u{85}",
            "\u{9d}0;x\u{9c}",
            "\u{202e}",
            "\u{202a}",
            "\u{2066}",
            "\u{2069}",
            "\u{200f}",
            "\u{61c}",
            "\u{2028}",
            "plan:",
            "applied: run 1",
            "changed: 0",
            " nothing ",
            "\t",
            "ok",
            "é✓",
            "FAKE line",
        ];
        let n = 3 + self.next() % 8;
        let mut s = String::new();
        for _ in 0..n {
            if with_newlines && self.next().is_multiple_of(5) {
                s.push('\n');
            }
            s.push_str(self.pick(PIECES));
        }
        s
    }

    /// Bytes that are not UTF-8 among hostile text.
    fn hostile_bytes(&mut self) -> Vec<u8> {
        let mut b = self.hostile(false).into_bytes();
        for _ in 0..1 + self.next() % 3 {
            let at = self.next() as usize % (b.len() + 1);
            let bad: &[u8] = self.pick(&[
                &b"\xff"[..],
                &b"\xc3"[..],
                &b"\x80\x9b"[..],
                &b"\xed\xa0\x80"[..],
            ]);
            // Only between characters, so the bytes stay what they say.
            let at = (0..=at)
                .rev()
                .find(|i| *i == b.len() || (b[*i] as i8) >= -0x40)
                .unwrap_or(0);
            b.splice(at..at, bad.iter().copied());
        }
        b
    }
}

/// `s` as an argument of the fsops guest (which splits on whitespace and
/// `;` and unescapes `\xHH`).
fn enc(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|&b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'/' | b'.' | b'-' | b'_' => {
                (b as char).to_string()
            }
            _ => format!("\\x{b:02x}"),
        })
        .collect()
}

/// A file name from hostile text: no `/`, not empty, at most 200 bytes.
fn name_of(s: &str) -> String {
    let mut n: String = s.chars().filter(|c| *c != '/' && *c != '\0').collect();
    while n.len() > 200 {
        n.pop();
    }
    format!("n{n}")
}

/// Whether `c` would steer a terminal: a control other than tab and line
/// feed, DEL, a C1 control, a bidi control or a line/paragraph separator.
fn steers(c: char) -> bool {
    (c < ' ' && c != '\t' && c != '\n')
        || ('\u{7f}'..='\u{9f}').contains(&c)
        || matches!(c, '\u{61c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{2028}' | '\u{2029}')
}

/// Asserts a human-readable output is valid UTF-8 with nothing that steers
/// a terminal in it, and that no line the fix wrote passes for a line of
/// the host's own (a line feed in a name or a message is shown as `\n`).
#[track_caller]
fn assert_clean(what: &str, bytes: &[u8]) {
    let text = std::str::from_utf8(bytes).unwrap_or_else(|e| {
        panic!(
            "{what}: not UTF-8 ({e}): {:?}",
            String::from_utf8_lossy(bytes)
        )
    });
    if let Some((i, c)) = text.char_indices().find(|(_, c)| steers(*c)) {
        panic!(
            "{what}: {c:?} at byte {i}, in {:?}",
            &text[i.saturating_sub(80)..(i + 40).min(text.len())]
        );
    }
    if let Some(line) = text.lines().find(|l| l.trim_start().starts_with("FAKE")) {
        panic!("{what}: a line of the fix's stands alone: {line:?} in\n{text}");
    }
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Runs `defops-wasm ARGS` and returns stdout and stderr, raw.
fn raw(t: &Tree, args: &[&str]) -> (i32, Vec<u8>, Vec<u8>) {
    let o = t.defops().into_command().args(args).output().unwrap();
    (o.status.code().unwrap_or(-1), o.stdout, o.stderr)
}

#[track_caller]
fn assert_clean_run(what: &str, t: &Tree, args: &[&str]) -> i32 {
    let (code, out, err) = raw(t, args);
    assert_clean(&format!("{what} stdout"), &out);
    assert_clean(&format!("{what} stderr"), &err);
    code
}

/// A TOML basic string holding exactly `s`.
fn toml_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | ' ' | '.' | ':' | '-' => out.push(c),
            c if (c as u32) <= 0xffff => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push_str(&format!("\\U{:08X}", c as u32)),
        }
    }
    out.push('"');
    out
}

/// fsops with a manifest whose description and param texts are hostile.
fn hostile_manifest_fix(t: &Tree, g: &mut Gen) -> (String, String) {
    let description = g.hostile(true);
    let toml = format!(
        "name = \"fsops\"\nversion = \"0.1.0\"\ndescription = {}\nread-write = [{}]\nlogs = [{}]\n\n\
         [[param]]\nname = \"ops\"\ndescription = {}\nrequired = true\n\n\
         [[param]]\nname = \"ignore_errors\"\ndescription = {}\ndefault = {}\n",
        toml_str(&description),
        toml_str(&t.p("grant")),
        toml_str(&t.p("logs/*.log")),
        toml_str(&g.hostile(true)),
        toml_str(&g.hostile(false)),
        toml_str(&g.hostile(false)),
    );
    t.write("hostile.toml", &toml);
    let wasm = t.p("fsops-hostile.wasm");
    let fsops = guest("fsops");
    t.defops()
        .args(&[
            "embed",
            fsops.to_str().unwrap(),
            &t.p("hostile.toml"),
            "-o",
            &wasm,
        ])
        .output()
        .assert_code(0);
    (wasm, description)
}

fn rounds() -> u64 {
    std::env::var("DEFOPS_HOSTILE_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4)
}

#[test]
fn hostile_bytes_reach_no_terminal_raw_and_json_keeps_them_exactly() {
    let seed0: u64 = std::env::var("DEFOPS_HOSTILE_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed_c0de);
    for round in 0..rounds() {
        let seed = seed0.wrapping_add(round).max(1);
        hostile_round(seed);
    }
}

fn hostile_round(seed: u64) {
    let mut g = Gen(seed);
    let t = Tree::new();
    let gr = t.p("grant");
    t.write("grant/existing.txt", "old line\nkept\n");
    let (fixw, description) = hostile_manifest_fix(&t, &mut g);
    let inspected = t.defops().args(&["inspect", &fixw, "--json"]).output();
    assert_eq!(
        inspected.summary_of("inspect")["manifest"]["description"],
        description.as_str(),
        "seed {seed}: inspect --json keeps the manifest's text exactly"
    );
    let content = format!("{}\nkept\n{}\n", g.hostile(false), g.hostile(true));
    let name = name_of(&g.hostile(true));
    let link = name_of(&g.hostile(true));
    let mut printed = b"out:".to_vec();
    printed.extend(g.hostile_bytes());
    let missing = name_of(&g.hostile(true));
    // Log lines the fix reads (and shows in its messages), and a pattern
    // of its own (shown with each log read).
    let log_line = g.hostile(false);
    t.write(
        "logs/app.log",
        &format!("{log_line}\n{}\n", g.hostile(false)),
    );
    let pattern = g.hostile(false);
    let ops = [
        format!("write {gr}/existing.txt {}", enc(content.as_bytes())),
        format!("write {gr}/{} x", enc(name.as_bytes())),
        format!(
            "ln {gr}/{} {gr}/{}",
            enc(name.as_bytes()),
            enc(link.as_bytes())
        ),
        format!("print {}", enc(&printed)),
        format!("read {gr}/existing.txt"),
        format!("readlink {gr}/{}", enc(link.as_bytes())),
        format!("ls {gr}"),
        format!("tail {} 20", t.p("logs/app.log")),
        format!("grep {} {}", t.p("logs/*.log"), enc(pattern.as_bytes())),
        format!("rm {gr}/{}", enc(missing.as_bytes())),
        format!("chmod {gr}/existing.txt 600"),
    ]
    .join(";");
    let ops = format!("ops={ops}");
    let logs = t.p("logs/*.log");
    let base = [
        "run",
        fixw.as_str(),
        "--allow",
        gr.as_str(),
        "--allow-log",
        logs.as_str(),
        "-p",
        &ops,
    ];
    let with = |extra: &[&'static str]| -> Vec<String> {
        base.iter()
            .copied()
            .chain(extra.iter().copied())
            .map(String::from)
            .collect()
    };
    let ctx = format!("seed {seed} (DEFOPS_HOSTILE_SEED={seed} DEFOPS_HOSTILE_ROUNDS=1)");

    // JSON first: the exact text, in the run's output and the journal.
    let json_args = with(&["-p", "ignore_errors=1", "--dry-run", "--json"]);
    let (code, out, _) = raw(&t, &strs(&json_args));
    assert_eq!(code, 0, "{ctx}: {}", String::from_utf8_lossy(&out));
    // Even raw, the JSON lines steer no terminal: their escapes decode to
    // the exact text.
    assert_clean(&format!("{ctx}: --json"), &out);
    let lines: Vec<Value> = std::str::from_utf8(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let texts: Vec<&str> = lines
        .iter()
        .filter(|l| l["type"] == "message")
        .map(|l| l["text"].as_str().unwrap())
        .collect();
    let read_back = format!("-> ok {content}");
    assert!(
        texts.iter().any(|m| m.ends_with(&read_back)),
        "{ctx}: {texts:?}"
    );
    assert!(texts.iter().any(|m| m.contains(&name)), "{ctx}");
    assert!(
        texts.iter().any(|m| m.contains(&log_line)),
        "{ctx}: the log line read: {texts:?}"
    );
    let diff = lines
        .iter()
        .find(|l| {
            l["type"] == "effect" && l["op"] == "write" && l["path"] == format!("{gr}/existing.txt")
        })
        .and_then(|l| l["diff"].as_str())
        .unwrap_or_else(|| panic!("{ctx}: no diff"));
    // (The diff library breaks lines at a carriage return too.)
    for line in content.split(['\n', '\r']) {
        assert!(diff.contains(line), "{ctx}: {line:?} not in {diff:?}");
    }
    let output = lines.iter().find(|l| l["type"] == "output").unwrap();
    assert_eq!(
        output["text"].as_str().unwrap(),
        format!("{}\n", String::from_utf8_lossy(&printed)),
        "{ctx}"
    );
    let run_id = lines.last().unwrap()["run_id"]
        .as_str()
        .unwrap()
        .to_string();
    let shown = t
        .defops()
        .args(&["journal", "show", &run_id, "--json"])
        .output();
    let journaled: Vec<String> = shown
        .of("message")
        .iter()
        .map(|m| m["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(journaled, texts, "{ctx}: the journal keeps the exact text");

    // For people: nothing that steers a terminal, anywhere.
    let dry = with(&["-p", "ignore_errors=1", "--dry-run"]);
    assert_eq!(assert_clean_run("dry-run", &t, &strs(&dry)), 0, "{ctx}");
    // The host's own diagnostics too (`-vv`: what the fix returned, ...).
    let verbose = with(&["-p", "ignore_errors=1", "--dry-run", "-vv"]);
    assert_eq!(
        assert_clean_run("dry-run -vv", &t, &strs(&verbose)),
        0,
        "{ctx}"
    );
    let real = with(&["-p", "ignore_errors=1"]);
    assert_eq!(assert_clean_run("real run", &t, &strs(&real)), 0, "{ctx}");
    assert_eq!(
        std::fs::read(t.path("grant/existing.txt")).unwrap(),
        content.as_bytes(),
        "{ctx}: the file holds the exact bytes"
    );
    let failing = with(&["-vv"]);
    assert_eq!(
        assert_clean_run("failing run", &t, &strs(&failing)),
        1,
        "{ctx}"
    );
    let runs = t.defops().args(&["journal", "list", "--json"]).output();
    let real_id = runs
        .of("run")
        .iter()
        .find(|r| r["dry_run"] == false && r["outcome"] == "applied")
        .map(|r| r["run_id"].as_str().unwrap().to_string())
        .unwrap();
    for (what, cmd) in [
        ("journal show", vec!["journal", "show", real_id.as_str()]),
        (
            "journal show (dry-run)",
            vec!["journal", "show", run_id.as_str()],
        ),
        ("journal list", vec!["journal", "list"]),
        ("report", vec!["report", real_id.as_str()]),
        ("report (dry-run)", vec!["report", run_id.as_str()]),
        ("inspect", vec!["inspect", fixw.as_str()]),
        ("status", vec!["status"]),
        ("check", vec!["check"]),
    ] {
        assert_clean_run(&format!("{ctx}: {what}"), &t, &cmd);
    }
    let plain = guest("fsops");
    let inspect_diff = ["inspect", fixw.as_str(), plain.to_str().unwrap()];
    assert_clean_run(&format!("{ctx}: inspect OLD NEW"), &t, &inspect_diff);
    assert_eq!(
        assert_clean_run(&format!("{ctx}: rollback"), &t, &["rollback", &real_id]),
        0,
        "{ctx}"
    );
    assert_eq!(t.read("grant/existing.txt"), "old line\nkept\n", "{ctx}");
}

#[test]
fn an_undeclared_param_is_refused_before_the_fix_runs() {
    let t = Tree::new();
    t.write("grant/app.conf", "max_conn = 1\n");
    let before = t.snapshot("grant");
    let out = t.set_max_conn(&t.p("grant/app.conf"), "50", &["-p", "kye=typo"]);
    out.assert_code(2)
        .assert_stderr("does not declare --param kye")
        .assert_stderr("it declares file, key, value");
    assert_eq!(out.summary()["outcome"], "error");
    assert_eq!(t.snapshot("grant"), before);
    let runs = t.defops().args(&["journal", "list", "--json"]).output();
    assert!(
        runs.of("run").is_empty(),
        "the fix never ran: {}",
        runs.stdout
    );
    // A fix without a manifest declares nothing: its params are passed on
    // unchecked, and inspect says so.
    let fsops = guest("fsops");
    let ops = format!("ops=write {} x", t.p("grant/new"));
    let out = t.run(&fsops, &["-p", &ops, "-p", "anything=1"]);
    out.assert_code(0);
    let shown = t
        .defops()
        .args(&["inspect", fsops.to_str().unwrap()])
        .output();
    assert!(
        shown.stdout.contains("any --param is passed on unchecked"),
        "{}",
        shown.stdout
    );
}

#[test]
fn the_idempotency_pass_is_marked_on_screen_in_json_and_in_the_journal() {
    let t = Tree::new();
    let fsops = guest("fsops");
    let ops = format!("ops=write {} x;print hello", t.p("grant/a"));
    let json = t.run(&fsops, &["-p", &ops, "--dry-run"]);
    json.assert_code(0);
    let passes: Vec<(u64, String)> = json
        .of("message")
        .iter()
        .map(|m| {
            (
                m["pass"].as_u64().unwrap(),
                m["text"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        passes.iter().filter(|(p, _)| *p == 1).count(),
        2,
        "{passes:?}"
    );
    assert_eq!(
        passes.iter().filter(|(p, _)| *p == 2).count(),
        2,
        "{passes:?}"
    );
    assert_eq!(passes[0].1, passes[2].1);
    let outputs: Vec<u64> = json
        .of("output")
        .iter()
        .map(|o| o["pass"].as_u64().unwrap())
        .collect();
    assert_eq!(outputs, [1, 2]);
    let run_id = json.summary()["run_id"].as_str().unwrap().to_string();
    let shown = t
        .defops()
        .args(&["journal", "show", &run_id, "--json"])
        .output();
    let journaled: Vec<u64> = shown
        .of("message")
        .iter()
        .map(|m| m["pass"].as_u64().unwrap())
        .collect();
    assert_eq!(journaled, [1, 1, 2, 2]);
    let human = t.defops().args(&["journal", "show", &run_id]).output();
    assert_eq!(
        human.stdout.matches("[idempotency pass]").count(),
        3,
        "{}",
        human.stdout
    );

    let people = t
        .defops()
        .args(&[
            "run",
            fsops.to_str().unwrap(),
            "--allow",
            &t.p("grant"),
            "-p",
            &ops,
            "--dry-run",
        ])
        .output();
    let marked: Vec<&str> = people
        .stdout
        .lines()
        .filter(|l| l.contains("[idempotency pass]"))
        .collect();
    assert_eq!(marked.len(), 3, "{}", people.stdout);
    assert!(marked.iter().any(|l| l.contains("write ")), "{marked:?}");
    assert!(
        people.stdout.contains("fix output [idempotency pass]:"),
        "{}",
        people.stdout
    );
    // A real run has one pass.
    let real = t.run(&fsops, &["-p", &ops]);
    assert!(real.of("message").iter().all(|m| m["pass"] == 1));
}

#[test]
fn metadata_changes_show_before_and_after_and_modes_are_octal_in_json() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let t = Tree::new();
    t.write("grant/f", "x\n");
    let f = t.path("grant/f");
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o666)).unwrap();
    let meta = std::fs::metadata(&f).unwrap();
    let (uid, gid) = (meta.uid(), meta.gid());
    let to = if uid == 0 { 1000 } else { 0 };
    let fsops = guest("fsops");
    let p = t.p("grant/f");
    let ops = format!("ops=chmod {p} 640;chown {p} {to} {to}");
    let human = t
        .defops()
        .args(&[
            "run",
            fsops.to_str().unwrap(),
            "--allow",
            &t.p("grant"),
            "-p",
            &ops,
            "--dry-run",
        ])
        .output();
    human.assert_code(0);
    assert!(
        human.stdout.contains(&format!("chmod   {p} 0666 → 0640")),
        "{}",
        human.stdout
    );
    assert!(
        human
            .stdout
            .contains(&format!("chown   {p} {uid}:{gid} → {to}:{to}")),
        "{}",
        human.stdout
    );
    let json = t.run(&fsops, &["-p", &ops, "--dry-run"]);
    let effects = json.of("effect");
    assert_eq!(effects[0]["op"], "set-mode");
    assert_eq!(effects[0]["mode"], "0640");
    assert_eq!(effects[0]["before"]["mode"], "0666");
    assert_eq!(effects[1]["before"]["mode"], "0640", "{}", effects[1]);
    // The journal keeps numbers (what rollback reads).
    let run_id = json.summary()["run_id"].as_str().unwrap().to_string();
    let shown = t
        .defops()
        .args(&["journal", "show", &run_id, "--json"])
        .output();
    assert_eq!(shown.of("intent")[0]["mode"], 0o640);
    // And a real chmod rolls back.
    let chmod = format!("ops=chmod {p} 640");
    let real = t.run(&fsops, &["-p", &chmod]);
    real.assert_code(0);
    assert_eq!(t.mode("grant/f"), 0o640);
    t.verify_and_roll_back(real.summary()["run_id"].as_str().unwrap());
    assert_eq!(t.mode("grant/f"), 0o666);
}

fn sha256sum(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    let hex = String::from_utf8(out.stdout).unwrap()[..64].to_string();
    format!("sha256:{hex}")
}

#[test]
fn one_digest_form_names_a_fix_everywhere() {
    let t = Tree::new();
    t.write("grant/app.conf", "max_conn = 1\n");
    let cs = fix("config-set");
    let id = sha256sum(&cs);
    let has = |what: &str, text: &str| {
        assert!(text.contains(&id), "{what} lacks {id}: {text}");
    };
    let guard = t.config("guard.toml", "[dry-run-first]\nrequired = true\n");
    let file = format!("file={}", t.p("grant/app.conf"));
    let args = [
        "run",
        cs.to_str().unwrap(),
        "--allow",
        &t.p("grant"),
        "-p",
        &file,
        "-p",
        "key=max_conn",
        "-p",
        "value=5",
    ];
    let refused = t.defops().env("DEFOPS_CONFIG", &guard).args(&args).output();
    refused.assert_code(3);
    has("the dry-run-first refusal", &refused.stderr);
    let dry = t.defops().args(&args).args(&["--dry-run"]).output();
    has("a dry-run", &dry.stdout);
    let json = t.defops().args(&args).args(&["--json"]).output();
    assert_eq!(json.summary_of("start")["fix_id"], id.as_str());
    assert_eq!(json.summary()["fix_id"], id.as_str());
    let run_id = json.summary()["run_id"].as_str().unwrap().to_string();
    has(
        "report",
        &t.defops().args(&["report", &run_id]).output().stdout,
    );
    has("status", &t.defops().args(&["status"]).output().stdout);
    has(
        "inspect",
        &t.defops()
            .args(&["inspect", cs.to_str().unwrap()])
            .output()
            .stdout,
    );
    let inspect = t
        .defops()
        .args(&["inspect", cs.to_str().unwrap(), "--json"])
        .output();
    assert_eq!(inspect.summary_of("inspect")["fix_id"], id.as_str());
    let list = t.defops().args(&["journal", "list", "--json"]).output();
    assert_eq!(list.of("run")[0]["fix_id"], id.as_str());
    // embed names what it wrote the same way.
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("fixes/config-set/manifest.toml");
    let copy = t.p("copy.wasm");
    let embedded = t
        .defops()
        .args(&[
            "embed",
            cs.to_str().unwrap(),
            manifest.to_str().unwrap(),
            "-o",
            &copy,
        ])
        .output();
    assert!(
        embedded.stdout.contains(&sha256sum(Path::new(&copy))),
        "{}",
        embedded.stdout
    );
}

/// `wasm` with a custom section `name` appended: other bytes, the same
/// code, manifest and imports.
fn with_custom_section(wasm: &[u8], name: &str, payload: &[u8]) -> Vec<u8> {
    let mut body = vec![name.len() as u8];
    body.extend_from_slice(name.as_bytes());
    body.extend_from_slice(payload);
    assert!(body.len() < 128);
    let mut out = wasm.to_vec();
    out.push(0);
    out.push(body.len() as u8);
    out.extend(body);
    out
}

#[test]
fn inspect_old_new_exits_1_for_any_change_code_only_included() {
    let t = Tree::new();
    let cs = fix("config-set");
    let old = cs.to_str().unwrap();
    let inspect = |new: &str| t.defops().args(&["inspect", old, new]).output();
    let same = inspect(old);
    same.assert_code(0);
    assert!(same.stdout.contains("the same binary"), "{}", same.stdout);

    let bytes = std::fs::read(&cs).unwrap();
    t.write("code.wasm", "");
    std::fs::write(
        t.path("code.wasm"),
        with_custom_section(&bytes, "note", b"rebuilt"),
    )
    .unwrap();
    let code = inspect(&t.p("code.wasm"));
    code.assert_code(1);
    assert!(
        code.stdout
            .contains("the code changed; the manifest and the imports did not"),
        "{}",
        code.stdout
    );

    // The same manifest on a fix that imports more.
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("fixes/config-set/manifest.toml");
    let other = t.p("imports.wasm");
    t.defops()
        .args(&[
            "embed",
            guest("fsops").to_str().unwrap(),
            manifest.to_str().unwrap(),
            "-o",
            &other,
        ])
        .output()
        .assert_code(0);
    let imports = inspect(&other);
    imports.assert_code(1);
    assert!(
        imports.stdout.contains("+ imports: logs"),
        "{}",
        imports.stdout
    );
    assert!(!imports.stdout.contains("~ version"), "{}", imports.stdout);

    let mut text = std::fs::read_to_string(&manifest).unwrap();
    text = text.replace("version = \"0.1.0\"", "version = \"0.1.1\"");
    t.write("bumped.toml", &text);
    let bumped = t.p("bumped.wasm");
    t.defops()
        .args(&["embed", old, &t.p("bumped.toml"), "-o", &bumped])
        .output()
        .assert_code(0);
    let manifest_changed = inspect(&bumped);
    manifest_changed.assert_code(1);
    assert!(
        manifest_changed.stdout.contains("~ version"),
        "{}",
        manifest_changed.stdout
    );
}

/// Every public item of the guest SDK, by name, from its source: functions,
/// types, traits, modules, macros, public fields and the variants of public
/// enums (the generated bindings are hidden and not part of the API).
fn sdk_items() -> Vec<String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("guest-sdk/src");
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let mut names = Vec::new();
    for entry in std::fs::read_dir(src).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        let (mut macro_next, mut in_enum) = (false, false);
        for line in text.lines() {
            let l = line.trim_start();
            if l.starts_with("#[macro_export]") {
                macro_next = true;
                continue;
            }
            if let Some(rest) = l.strip_prefix("macro_rules! ").filter(|_| macro_next) {
                names.push(format!("{}!", ident(rest)));
                macro_next = false;
                continue;
            }
            if in_enum {
                if line.starts_with('}') {
                    in_enum = false;
                } else if !l.starts_with("//") && !l.starts_with('#') && !ident(l).is_empty() {
                    names.push(ident(l));
                }
                continue;
            }
            for kw in [
                "pub fn ",
                "pub struct ",
                "pub enum ",
                "pub trait ",
                "pub type ",
                "pub mod ",
            ] {
                if let Some(rest) = l.strip_prefix(kw)
                    && ident(rest) != "bindings"
                {
                    names.push(ident(rest));
                    in_enum = kw == "pub enum ";
                }
            }
            if let Some(rest) = l.strip_prefix("pub ")
                && let Some((field, _)) = rest.split_once(':')
                && !field.is_empty()
                && field.chars().all(|c| c.is_alphanumeric() || c == '_')
            {
                names.push(field.to_string());
            }
        }
    }
    names.sort();
    names.dedup();
    names
}

#[test]
fn every_public_item_of_the_sdk_is_in_docs_sdk_md() {
    let doc = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap()
            .join("docs/SDK.md"),
    )
    .unwrap();
    let items = sdk_items();
    assert!(items.len() > 40, "{items:?}");
    let missing: Vec<&String> = items
        .iter()
        .filter(|n| {
            !["`", "::", "fn "]
                .iter()
                .any(|before| doc.contains(&format!("{before}{n}")))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "docs/SDK.md does not describe {missing:?}"
    );
    let readme = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap()
            .join("README.md"),
    )
    .unwrap();
    assert!(readme.contains("docs/SDK.md"));
}
