//! `defops-wasm report RUN`: a blameless retrospective draft from a run's
//! journal, as Markdown to paste into an incident document, or as JSON.

use std::fmt::Write as _;
use std::path::Path;

use serde_json::{Value, json};

use crate::exit::Exit;
use crate::journal::{self, Verdict};
use crate::output::Printer;
use crate::run::Stop;

/// The output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Markdown,
    Json,
}

/// The rollbacks of `run_id` in the state directory, oldest first.
fn rollbacks_of(state: &Path, run_id: &str) -> Vec<Value> {
    journal::list(state)
        .unwrap_or_default()
        .into_iter()
        .filter(|id| id.as_str() > run_id)
        .map(|id| crate::history::row(state, &id))
        .filter(|r| {
            r["kind"] == "rollback" && r["rollback_of"] == run_id && r["dry_run"] != json!(true)
        })
        .collect()
}

/// Everything the report says, as one JSON value.
pub fn facts(state: &Path, run: &str) -> Result<Value, Stop> {
    let path = journal::locate(state, run).map_err(|e| Stop::new(Exit::Usage, e))?;
    let j = journal::load(&path, None).map_err(|e| Stop::new(Exit::Usage, e))?;
    // One pass, moving each record where it belongs (a report of a
    // 10,000-effect run must not copy them all).
    let mut records = j.records.into_iter();
    let h = records.next().unwrap_or(Value::Null);
    let mut by_type: std::collections::HashMap<String, Vec<Value>> = Default::default();
    let mut intents: Vec<Value> = Vec::new();
    let mut done: std::collections::HashMap<u64, Value> = Default::default();
    for mut r in records {
        let ty = r["type"].as_str().unwrap_or_default().to_string();
        match ty.as_str() {
            "intent" => intents.push(r),
            "done" => {
                if let Some(n) = r["n"].as_u64() {
                    done.insert(n, r["after"].take());
                }
            }
            _ => by_type.entry(ty).or_default().push(r),
        }
    }
    let mut of = |ty: &str| by_type.remove(ty).unwrap_or_default();
    let effects: Vec<Value> = intents
        .into_iter()
        .map(|mut e| {
            let n = e["n"].as_u64().unwrap_or(0);
            let planned = e["planned"] == json!(true);
            if let Some(obj) = e.as_object_mut() {
                for k in ["type", "seq", "prev", "hash"] {
                    obj.remove(k);
                }
            }
            e["status"] = json!(match (planned, done.get(&n)) {
                (true, _) => "planned",
                (false, Some(_)) => "done",
                (false, None) => "not applied",
            });
            if let Some(after) = done.remove(&n) {
                e["observed_after"] = after;
            }
            e
        })
        .collect();
    let verdict = match &j.verdict {
        Verdict::Intact { records, head } => {
            json!({"verdict": "intact", "records": records, "head": head})
        }
        Verdict::TornTail { records, head } => {
            json!({"verdict": "torn-tail", "records": records, "head": head})
        }
        Verdict::Bad { seq, why } => json!({"verdict": "bad", "seq": seq, "why": why}),
    };
    let outcome = of("outcome").pop().unwrap_or(Value::Null);
    let run_id = h["run_id"].as_str().unwrap_or_default().to_string();
    let rollbacks = rollbacks_of(state, &run_id);
    // A rollback cut off without an outcome is finished by a later
    // rollback of the same run.
    let finished_by = match (outcome.is_null(), h["rollback_of"].as_str()) {
        (true, Some(of)) => rollbacks_of(state, of)
            .into_iter()
            .filter(|r| r["run_id"].as_str().is_some_and(|id| id > run_id.as_str()))
            .find(|r| {
                matches!(
                    r["outcome"].as_str(),
                    Some("rolled-back" | "nothing-to-undo")
                )
            })
            .map(|r| r["run_id"].clone()),
        _ => None,
    };
    let fix_id = h["fix"]["sha256"].as_str().map(crate::digest::fix_id_of);
    // A Python fix's script, as it ran.
    let script = h["fix"]["script_object"].as_str().and_then(|hash| {
        let bytes = journal::Objects::open(state).ok()?.get(hash).ok()?;
        Some(String::from_utf8_lossy(&bytes).into_owned())
    });
    Ok(json!({
        "script": script,
        "type": "report",
        "run_id": run_id,
        "fix_id": fix_id,
        "journal": path.display().to_string(),
        "verification": verdict,
        "header": h,
        "check": of("check").pop(),
        "idempotency": of("idempotency").pop(),
        "effects": effects,
        "denied": of("denied"),
        "messages": of("message"),
        "logs": of("logs"),
        "output": of("output"),
        "drift": of("drift"),
        "overridden": of("overridden").pop(),
        "plan": of("plan").pop(),
        "plan_differences": of("plan-difference"),
        "outcome": outcome,
        "rollbacks": rollbacks,
        "finished_by": finished_by,
    }))
}

/// `report RUN [--format markdown|json]`.
pub fn report(state: &Path, run: &str, format: Format, out: &Printer) -> Result<Exit, Stop> {
    let f = facts(state, run)?;
    match format {
        Format::Json => out.raw(&f),
        // Each field is escaped where it is put in; the whole once more,
        // keeping the draft's own line breaks.
        Format::Markdown => print!("{}", crate::escape::block(&markdown(&f))),
    }
    Ok(Exit::Success)
}

/// A field on one line, every control escaped: what a fix controls cannot
/// start a line (or a section) of its own.
fn s(v: &Value) -> String {
    match v {
        Value::String(s) => crate::escape::line(s).into_owned(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// A state in words.
fn state(v: &Value) -> String {
    match v["kind"].as_str() {
        Some("absent") => "absent".into(),
        Some("file") => format!(
            "file, {} bytes, mode {:04o}, owner {}:{}",
            v["size"],
            v["mode"].as_u64().unwrap_or(0),
            v["uid"],
            v["gid"]
        ),
        Some("dir") => format!(
            "directory, mode {:04o}, owner {}:{}",
            v["mode"].as_u64().unwrap_or(0),
            v["uid"],
            v["gid"]
        ),
        Some("symlink") => format!("symlink to {}", s(&v["target"])),
        Some(other) => other.to_string(),
        None => "?".into(),
    }
}

/// One effect as a line: `write /path (mode 0644)`.
fn effect_line(e: &Value) -> String {
    let op = e["op"].as_str().unwrap_or("?");
    match op {
        "rename" => format!("rename `{}` → `{}`", s(&e["from"]), s(&e["to"])),
        "symlink" => format!("symlink `{}` → `{}`", s(&e["link"]), s(&e["target"])),
        "set-mode" => format!(
            "chmod `{}` {}{:04o}",
            s(&e["path"]),
            e["before"]["mode"]
                .as_u64()
                .map(|m| format!("{m:04o} → "))
                .unwrap_or_default(),
            e["mode"].as_u64().unwrap_or(0)
        ),
        "set-owner" => format!(
            "chown `{}` {}{}:{}",
            s(&e["path"]),
            match (e["before"]["uid"].as_u64(), e["before"]["gid"].as_u64()) {
                (Some(u), Some(g)) => format!("{u}:{g} → "),
                _ => String::new(),
            },
            e["uid"],
            e["gid"]
        ),
        other => format!("{other} `{}`", s(&e["path"])),
    }
}

/// The draft, in Markdown.
pub fn markdown(f: &Value) -> String {
    let h = &f["header"];
    let o = &f["outcome"];
    let mut m = String::new();
    let rollback = h["kind"] == "rollback";
    let name = if rollback {
        format!("rollback of {}", s(&h["rollback_of"]))
    } else {
        s(&h["fix"]["name"])
    };
    let _ = writeln!(
        m,
        "# Retrospective draft: {name} on {} ({})\n",
        s(&h["host"]),
        s(&h["time"])
    );
    let v = &f["verification"];
    let _ = writeln!(
        m,
        "_Blameless draft written by defops-wasm {} from the journal of run `{}`; the journal is **{}**{}. Edit it before sharing._\n",
        s(&h["version"]),
        s(&f["run_id"]),
        s(&v["verdict"]),
        v["head"]
            .as_str()
            .map(|hd| format!(" (head `{hd}`)"))
            .unwrap_or_default()
    );
    let _ = writeln!(m, "## Summary\n\n| | |\n|---|---|");
    let row = |m: &mut String, k: &str, v: String| {
        let _ = writeln!(m, "| {k} | {} |", v.replace('|', "\\|").replace('\n', " "));
    };
    let man = &h["fix"]["manifest"];
    if !rollback {
        row(
            &mut m,
            "What",
            match man.is_object() {
                true => format!(
                    "`{}` {} — {}",
                    s(&man["name"]),
                    s(&man["version"]),
                    s(&man["description"])
                ),
                false => format!("`{}` (no manifest)", s(&h["fix"]["path"])),
            },
        );
    } else {
        row(
            &mut m,
            "What",
            format!("rollback of run `{}`", s(&h["rollback_of"])),
        );
    }
    row(&mut m, "Where", format!("`{}`", s(&h["host"])));
    // A run or rollback killed or cut off by a crash wrote no outcome.
    let cut_off = o.is_null();
    row(
        &mut m,
        "When",
        match cut_off {
            false => format!("{} → {}", s(&h["time"]), s(&o["time"])),
            true => format!("{} → (no end recorded)", s(&h["time"])),
        },
    );
    let u = &h["user"];
    row(
        &mut m,
        "Who",
        format!(
            "{} (uid {}){}",
            s(&u["name"]),
            u["uid"],
            u["sudo_user"]
                .as_str()
                .map(|x| format!(", via sudo by {x}"))
                .unwrap_or_default()
        ),
    );
    row(
        &mut m,
        "Mode",
        if h["dry_run"] == json!(true) {
            "dry-run (nothing written)".into()
        } else {
            "real run".into()
        },
    );
    let cut_off_outcome = cut_off.then(|| {
        // A journal that fails verification ends where it fails: what
        // came after, an outcome included, cannot be told.
        if v["verdict"] == "bad" {
            return format!(
                "**unknown**: the journal fails verification at record {} ({}), so nothing it says from there on, the outcome included, can be trusted; `defops-wasm journal verify` names the record",
                s(&v["seq"]),
                s(&v["why"])
            );
        }
        let effects: &[Value] = f["effects"].as_array().map_or(&[], Vec::as_slice);
        let done = effects.iter().filter(|e| e["status"] == "done").count();
        let intended = effects.iter().filter(|e| e["status"] != "planned").count();
        let back = f["rollbacks"]
            .as_array()
            .is_some_and(|r| r.iter().any(|r| r["outcome"] == "rolled-back"));
        let next = match rollback {
            _ if back => "it was rolled back since (below)".to_string(),
            true if f["finished_by"].is_string() => format!(
                "rollback `{}` finished it since",
                s(&f["finished_by"])
            ),
            true => format!(
                "`defops-wasm rollback {}` again finishes the rollback",
                s(&h["rollback_of"])
            ),
            false => format!(
                "`defops-wasm rollback {}` undoes what the disk shows applied",
                s(&f["run_id"])
            ),
        };
        let what = match (h["dry_run"] == json!(true), intended) {
            (true, _) => "a dry-run: nothing was changed".to_string(),
            (false, 0) => "no change was journaled, so none was made".to_string(),
            (false, n) if done == n => format!("all {n} change(s) recorded as done; {next}"),
            (false, n) => format!(
                "{done} of {n} change(s) recorded as done, the next perhaps halfway; {next}"
            ),
        };
        format!(
            "**cut off**: no outcome was recorded (the process was killed or the host went down); {what}"
        )
    });
    row(
        &mut m,
        "Outcome",
        match &cut_off_outcome {
            Some(text) => text.clone(),
            None => format!(
                "**{}**, {} change(s){}",
                s(&o["outcome"]),
                s(&o["changed"]),
                o["error"]
                    .as_str()
                    .map(|e| format!(" — {e}"))
                    .unwrap_or_default()
            ),
        },
    );
    // Who computed the digests: for a rollback too (FIPS mode applies to
    // it as to a run).
    row(
        &mut m,
        "Crypto",
        format!(
            "{}; digests {}",
            match h["crypto"].is_object() {
                true => s(&json!(crate::crypto::describe_line(&h["crypto"]))),
                false => "provider not recorded (an older journal)".into(),
            },
            match h["hash_alg"].as_str() {
                Some(a) => s(&json!(a)),
                None => "blake3".into(),
            }
        ),
    );
    if !rollback {
        row(
            &mut m,
            "Fix",
            format!(
                "`{}`, {} bytes, `{}`",
                s(&h["fix"]["path"]),
                s(&h["fix"]["size"]),
                s(&f["fix_id"])
            ),
        );
        row(
            &mut m,
            "Approval",
            match h["approval"].is_object() {
                true => format!(
                    "signed by {} ({}, {})",
                    s(&h["approval"]["signer"]),
                    s(&h["approval"]["key"]),
                    s(&h["approval"]["algorithm"])
                ),
                false => "none required".into(),
            },
        );
        let p = &h["policy"];
        if p.is_object() && !p.as_object().is_some_and(|o| o.is_empty()) {
            let window = &p["window"];
            let w = match (window["configured"] == json!(true), &window["override"]) {
                (false, _) => "no change window configured".to_string(),
                (true, Value::Object(ov)) => format!(
                    "outside the window ({}), run with --outside-window, on call: {}",
                    s(&window["why"]),
                    s(&ov["on_call"])
                ),
                (true, _) => format!("inside the window ({})", s(&window["why"])),
            };
            let d = &p["dry_run_first"];
            let d = match (&d["override"], &d["dry_run"]) {
                (Value::Object(ov), _) => format!("skipped: {}", s(&ov["reason"])),
                (_, Value::String(id)) => format!("followed dry-run `{id}`"),
                _ => "not required".to_string(),
            };
            row(
                &mut m,
                "Guards",
                format!("{w}; dry-run first: {d}{}", plan_binding(&p["plan"])),
            );
        }
        let rbs = f["rollbacks"].as_array().cloned().unwrap_or_default();
        row(
            &mut m,
            "Rolled back",
            match rbs.last() {
                Some(r) => format!(
                    "by run `{}` at {} ({})",
                    s(&r["run_id"]),
                    s(&r["time"]),
                    s(&r["outcome"])
                ),
                None => "no".into(),
            },
        );
    }

    let _ = writeln!(m, "\n## Grants\n");
    for g in h["grants"].as_array().into_iter().flatten() {
        let _ = writeln!(m, "- {} `{}`", s(&g["access"]), s(&g["path"]));
    }
    if !rollback {
        let _ = writeln!(m, "\n## Parameters\n");
        let params = h["params"].as_object().cloned().unwrap_or_default();
        if params.is_empty() {
            let _ = writeln!(m, "(none)");
        }
        for (k, v) in params {
            let _ = writeln!(m, "- `{}` = `{}`", crate::escape::line(&k), s(&v));
        }
        if man.is_object() {
            let _ = writeln!(m, "\n## What the manifest declares\n");
            for (key, label) in [
                ("read-write", "read-write"),
                ("read-only", "read-only"),
                ("logs", "logs"),
            ] {
                let list: Vec<String> = man[key]
                    .as_array()
                    .map(|l| l.iter().map(|x| format!("`{}`", s(x))).collect())
                    .unwrap_or_default();
                if !list.is_empty() {
                    let _ = writeln!(m, "- {label}: {}", list.join(", "));
                }
            }
        }
        if let Some(script) = f["script"].as_str() {
            let _ = writeln!(m, "\n## The script\n\n```python");
            for line in script.trim_end().split('\n') {
                let _ = writeln!(m, "{}", crate::escape::line(line));
            }
            let _ = writeln!(m, "```");
        }
        let _ = writeln!(m, "\n## Precondition\n");
        match f["check"].as_object() {
            Some(c) => {
                let verdict = match (c.get("applies"), c.get("flipped")) {
                    (_, Some(Value::Bool(true))) => "not needed, flipped by --flip-precondition",
                    (Some(Value::Bool(true)), _) => "applies",
                    _ => "not needed",
                };
                let _ = writeln!(
                    m,
                    "`check` said: **{verdict}** — {}",
                    c.get("reason").map(s).unwrap_or_default()
                );
            }
            None => {
                let _ = writeln!(m, "`check` did not finish (see the outcome).");
            }
        }
    }

    let _ = writeln!(m, "\n## Effects, in order\n");
    let effects: &[Value] = f["effects"].as_array().map_or(&[], Vec::as_slice);
    if effects.is_empty() {
        let _ = writeln!(m, "None.");
    }
    for (i, e) in effects.iter().enumerate() {
        let _ = writeln!(
            m,
            "{}. {} — {}; before: {}",
            i + 1,
            effect_line(e),
            s(&e["status"]),
            state(&e["before"])
        );
        if let Some(d) = e["diff"].as_str() {
            let _ = writeln!(m, "\n   ```diff");
            for line in d.split_inclusive('\n') {
                let line = line.strip_suffix('\n').unwrap_or(line);
                let _ = writeln!(m, "   {}", crate::escape::line(line));
            }
            let _ = writeln!(m, "   ```\n");
        }
    }
    if let Some(i) = f["idempotency"].as_object() {
        let _ = writeln!(
            m,
            "\nIdempotency (dry-run): {}",
            match i.get("idempotent") {
                Some(Value::Bool(true)) => "proved: a second apply planned nothing".to_string(),
                _ => format!(
                    "NOT idempotent — {}",
                    i.get("why").map(s).unwrap_or_default()
                ),
            }
        );
    }
    let section = |m: &mut String, title: &str, items: &[String]| {
        if !items.is_empty() {
            let _ = writeln!(m, "\n## {title}\n");
            for it in items {
                let _ = writeln!(m, "- {it}");
            }
        }
    };
    let list = |key: &str| -> &[Value] { f[key].as_array().map_or(&[], Vec::as_slice) };
    section(
        &mut m,
        "Denied by the sandbox",
        &list("denied")
            .iter()
            .map(|d| format!("{} `{}`: {}", s(&d["call"]), s(&d["path"]), s(&d["reason"])))
            .collect::<Vec<_>>(),
    );
    section(
        &mut m,
        "Log reads",
        &list("logs")
            .iter()
            .map(|l| match l["error"].as_str() {
                Some(e) => format!("{} `{}`: {e}", s(&l["call"]), s(&l["glob"])),
                None => format!(
                    "{} `{}`{}: {} ({} bytes)",
                    s(&l["call"]),
                    s(&l["glob"]),
                    l["pattern"]
                        .as_str()
                        .map(|p| format!(" /{p}/"))
                        .unwrap_or_default(),
                    crate::logs::found(l),
                    s(&l["bytes"])
                ),
            })
            .collect::<Vec<_>>(),
    );
    section(
        &mut m,
        "Messages from the fix",
        &list("messages")
            .iter()
            .map(|x| {
                let pass = match x["pass"].as_u64() {
                    Some(2) => crate::output::SECOND_PASS,
                    _ => "",
                };
                format!("{}: {pass}{}", s(&x["level"]), s(&x["text"]))
            })
            .collect::<Vec<_>>(),
    );
    for o in list("output") {
        let title = match o["pass"].as_u64() {
            Some(2) => "Output of the fix (idempotency pass)",
            _ => "Output of the fix",
        };
        let _ = writeln!(m, "\n## {title}\n\n```");
        for line in o["text"].as_str().unwrap_or("").trim_end().split('\n') {
            let _ = writeln!(m, "{}", crate::escape::line(line));
        }
        let _ = writeln!(m, "```");
    }
    section(
        &mut m,
        "Drift found",
        &list("drift")
            .iter()
            .map(|d| {
                format!(
                    "`{}`: {} — expected {}, found {}",
                    s(&d["path"]),
                    s(&d["attribute"]),
                    state(&d["expected"]),
                    state(&d["found"])
                )
            })
            .collect::<Vec<_>>(),
    );
    if let Some(o) = f.get("overridden").filter(|o| !o.is_null()) {
        let _ = writeln!(
            m,
            "\n## Overridden with --force\n\nThe rollback went past what would have refused it ({}): {}",
            s(&o["reason"]),
            s(&o["reasons"])
        );
    }
    let _ = writeln!(m, "\n## Outcome\n");
    if let Some(text) = &cut_off_outcome {
        let _ = writeln!(m, "{text}.");
    } else {
        let _ = writeln!(
            m,
            "**{}** (exit code {}) at {}{}.",
            s(&o["outcome"]),
            s(&o["exit_code"]),
            s(&o["time"]),
            o["result"]
                .as_str()
                .map(|r| format!("; the fix said: {r}"))
                .unwrap_or_default()
        );
    }
    if let Some(e) = o["error"].as_str() {
        let _ = writeln!(m, "\nError: {e}");
    }
    for r in list("rollbacks") {
        let _ = writeln!(
            m,
            "\nRolled back by run `{}` at {}: {}, {} change(s).",
            s(&r["run_id"]),
            s(&r["time"]),
            s(&r["outcome"]),
            s(&r["changed"])
        );
    }
    let _ = writeln!(
        m,
        "\n## To discuss\n\n- What was the situation, and what did we know when we ran this?\n- What went well?\n- What was hard or surprising?\n- Action items (owner, date):\n"
    );
    m
}

/// What the run's plan was held to, for the Guards row (nothing when it
/// was not compared).
fn plan_binding(p: &Value) -> String {
    if p["compared"] != json!(true) {
        return String::new();
    }
    let r = &p["reviewed"];
    let reviewed = match r["file"].as_str() {
        Some(f) => format!("the saved plan `{f}`"),
        None => format!(
            "the plan of dry-run `{}`",
            r["dry_run"].as_str().unwrap_or("?")
        ),
    };
    if p["matches"] == json!(true) {
        return format!("; plan: the same as {reviewed}");
    }
    let n = &p["differences"];
    let how = match (&p["accept_new_plan"], p["nothing_to_commit"] == json!(true)) {
        (Value::Object(a), _) => format!(
            "accepted with --accept-new-plan: {}",
            a["reason"].as_str().unwrap_or("")
        ),
        (_, true) => "nothing to commit".to_string(),
        _ => "refused".to_string(),
    };
    format!("; plan: {n} difference(s) from {reviewed}, {how}")
}
