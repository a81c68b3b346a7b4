//! `defops-wasm journal list|show|verify`: what ran, and proof that the
//! record is intact.

use std::path::Path;

use serde_json::{Value, json};

use crate::exit::Exit;
use crate::journal::{self, Verdict};
use crate::output::Printer;
use crate::run::Stop;

/// What `journal list` shows of one run (from its header and last record).
pub fn row(state: &Path, id: &str) -> Value {
    let path = state.join("runs").join(id).join("journal.jsonl");
    match journal::brief(&path) {
        Ok((h, last, verdict)) => {
            let finished = last["type"] == "outcome";
            let mut row = json!({
                "run_id": id,
                "time": h["time"],
                "kind": h["kind"],
                "fix": h["fix"]["path"],
                "fix_id": h["fix"]["sha256"].as_str().map(crate::digest::fix_id_of),
                "name": h["fix"]["name"],
                "rollback_of": h["rollback_of"],
                "dry_run": h["dry_run"],
                "scheduled": h["scheduled"],
                "outcome": if finished { last["outcome"].clone() } else { json!("incomplete") },
                "changed": if finished { last["changed"].clone() } else { Value::Null },
                "intact": matches!(verdict, Verdict::Intact { .. }),
                "verdict": match verdict {
                    Verdict::Intact { .. } => "intact",
                    Verdict::TornTail { .. } => "torn-tail",
                    Verdict::Bad { .. } => "bad",
                },
            });
            if let Some(why) = last.get("refused_for").filter(|_| finished) {
                row["refused_for"] = why.clone();
            }
            row
        }
        Err(e) => {
            json!({"run_id": id, "error": e.to_string(), "intact": false, "verdict": "unreadable"})
        }
    }
}

/// One line per run, oldest first.
pub fn list(state: &Path, out: &Printer) -> Result<Exit, Stop> {
    let ids = journal::list(state)
        .map_err(|e| Stop::new(Exit::Usage, format!("cannot list {}: {e}", state.display())))?;
    if ids.is_empty() && !out.is_json() {
        out.note(&format!("no runs in {}", state.display()));
    }
    for id in ids {
        let row = row(state, &id);
        if out.is_json() {
            let mut row = row;
            row["type"] = json!("run");
            out.raw(&row);
        } else {
            let what = if row["kind"] == "rollback" {
                format!("rollback of {}", row["rollback_of"].as_str().unwrap_or("?"))
            } else {
                row["fix"].as_str().unwrap_or("?").to_string()
            };
            let what = crate::escape::line(&what);
            out.note(&format!(
                "{}  {:<8} {:<16} {:>3} changed  {}{}",
                id,
                if row["dry_run"] == json!(true) {
                    "dry-run"
                } else {
                    "real"
                },
                row["outcome"].as_str().unwrap_or("?"),
                row["changed"].as_u64().unwrap_or(0),
                what,
                if row["intact"] == json!(true) {
                    ""
                } else {
                    "  [NOT INTACT: run journal verify]"
                },
            ));
        }
    }
    Ok(Exit::Success)
}

/// The records of a run.
pub fn show(state: &Path, run: &str, out: &Printer) -> Result<Exit, Stop> {
    let path = journal::locate(state, run).map_err(|e| Stop::new(Exit::Usage, e))?;
    let j = journal::load(&path, None).map_err(|e| Stop::new(Exit::Usage, e))?;
    for r in &j.records {
        if out.is_json() {
            out.raw(r);
        } else {
            out.note(&describe(r));
        }
    }
    let exit = verdict_exit(&j.verdict);
    if !out.is_json() {
        out.note(&verdict_line(&path, &j.verdict));
    }
    Ok(exit)
}

/// Checks the chain; exit 0 intact, 1 torn tail, 3 tampered.
pub fn verify(
    state: &Path,
    run: &str,
    expect_head: Option<&str>,
    out: &Printer,
) -> Result<Exit, Stop> {
    let path = journal::locate(state, run).map_err(|e| Stop::new(Exit::Usage, e))?;
    let verdict =
        journal::verify_file(&path, expect_head).map_err(|e| Stop::new(Exit::Usage, e))?;
    let exit = verdict_exit(&verdict);
    if out.is_json() {
        let v = match &verdict {
            Verdict::Intact { records, head } => {
                json!({"verdict": "intact", "records": records, "head": head})
            }
            Verdict::TornTail { records, head } => {
                json!({"verdict": "torn-tail", "records": records, "head": head})
            }
            Verdict::Bad { seq, why } => json!({"verdict": "bad", "seq": seq, "why": why}),
        };
        let mut v = v;
        v["type"] = json!("verify");
        v["journal"] = json!(path.display().to_string());
        v["exit_code"] = json!(exit.code());
        out.raw(&v);
    } else if exit == Exit::Success {
        out.note(&verdict_line(&path, &verdict));
    }
    if exit != Exit::Success {
        crate::output::error_line(&verdict_line(&path, &verdict));
    }
    Ok(exit)
}

fn verdict_exit(v: &Verdict) -> Exit {
    match v {
        Verdict::Intact { .. } => Exit::Success,
        Verdict::TornTail { .. } => Exit::FixFailed,
        Verdict::Bad { .. } => Exit::Refused,
    }
}

fn verdict_line(path: &Path, v: &Verdict) -> String {
    match v {
        Verdict::Intact { records, head } => format!("intact: {} records, head {head}", records),
        Verdict::TornTail { records, head } => format!(
            "{}: torn tail: records 0..{} are intact (head {head}); the last line was cut short, as by a crash while writing it",
            path.display(),
            records.saturating_sub(1)
        ),
        Verdict::Bad { seq, why } => format!("{}: bad record at seq {seq}: {why}", path.display()),
    }
}

/// One record as one line; every field a fix (or a tampered journal)
/// controls escaped.
fn describe(r: &Value) -> String {
    let seq = r["seq"].as_u64().unwrap_or(0);
    let s = |k: &str| crate::escape::line(r[k].as_str().unwrap_or("")).into_owned();
    let body = match r["type"].as_str().unwrap_or("") {
        "header" => format!(
            "{} {} of {} at {} by {} on {}{}{}",
            s("kind"),
            s("run_id"),
            crate::escape::line(
                r["fix"]["path"]
                    .as_str()
                    .or(r["rollback_of"].as_str())
                    .unwrap_or("?")
            ),
            s("time"),
            crate::escape::line(r["user"]["name"].as_str().unwrap_or("?")),
            s("host"),
            if r["dry_run"] == json!(true) {
                " (dry-run)"
            } else {
                ""
            },
            // The fix as every command names it.
            r["fix"]["sha256"]
                .as_str()
                .map(|h| format!(", {}", crate::digest::fix_id_of(&crate::escape::line(h))))
                .unwrap_or_default()
        ),
        "message" => format!("message {} {}{}", s("level"), pass_mark(r), s("text")),
        "denied" => format!("denied  {}{} {}", pass_mark(r), s("call"), s("reason")),
        "output" => format!(
            "output  {}{} bytes",
            pass_mark(r),
            r["text"].as_str().unwrap_or("").len()
        ),
        "check" => format!(
            "check   {} — {}",
            if r["applies"] == json!(true) {
                "applies"
            } else {
                "not needed"
            },
            s("reason")
        ),
        "intent" => format!(
            "intent  #{} {} {}{}",
            r["n"],
            s("op"),
            crate::escape::line(
                r["path"]
                    .as_str()
                    .or(r["from"].as_str())
                    .or(r["link"].as_str())
                    .unwrap_or("")
            ),
            if r["planned"] == json!(true) {
                " (planned)"
            } else {
                ""
            }
        ),
        "done" => format!("done    #{}", r["n"]),
        "plan" => format!("plan    {} ({} effects)", s("digest"), r["effects"]),
        "plan-difference" => format!("differs {} {}", s("change"), s("path")),
        "drift" => format!("drift   {} ({})", s("path"), s("attribute")),
        "overridden" => format!("forced  past {}: {}", s("reason"), s("reasons")),
        "outcome" => format!(
            "outcome {} (changed {}, exit {})",
            s("outcome"),
            r["changed"],
            r["exit_code"]
        ),
        other => crate::escape::line(other).into_owned(),
    };
    format!("{seq:>5}  {body}")
}

/// `[idempotency pass] ` for a record of a dry-run's second `apply`.
fn pass_mark(r: &Value) -> &'static str {
    match r["pass"].as_u64() {
        Some(2) => crate::output::SECOND_PASS,
        _ => "",
    }
}
