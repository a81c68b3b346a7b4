//! What the operator reads: short aligned lines for people, or JSON Lines
//! (`--json`) for programs.
//!
//! JSON Lines on stdout, one object per line, each with a `type`:
//!
//! * `start`: `run_id`, `fix`, `digest` (blake3, or SHA-256 in FIPS mode), `hash_alg`, `size`, `dry_run`,
//!   `grants` (`path`, `access`), `params`, `compile_cache` (`hit`/`miss`).
//! * `message`: `level` (`debug|info|warn|error`), `text` — from the fix.
//! * `output`: `text` — what the fix wrote to stdout/stderr.
//! * `denied`: `call`, `path`, `reason` — a call the sandbox refused.
//! * `plan-difference` (a real run whose plan differs from the reviewed
//!   one): `change` (`only-reviewed|only-new|before-changed`), `path`,
//!   `effect` (the canonical effect, see `binding`), and for a changed
//!   before-state `at`, `what`, `reviewed`, `now`.
//! * `effect`: `op` (`write|create-dir|remove-file|remove-dir|rename|set-mode|set-owner|symlink`),
//!   its paths and arguments, `before` (the expected state), `diff` (text writes).
//! * `summary` (always last): `run_id`, `outcome`
//!   (`planned|applied|not-needed|failed|denied|crashed|limit|refused|error`),
//!   `changed`, `unchanged`, `denied`, `exit_code`, `dry_run`, `digest`,
//!   and when present `check` (`applies`, `reason`), `result`, `phase`, `error`,
//!   `plan_digest` (the plan's canonical digest), `plan_saved` (`--save-plan`).

use std::io::Write;

use serde_json::{Value, json};

use crate::plan::Plan;
use crate::world::{Denial, Message, MessageSink};

/// Prints a run, for people or as JSON Lines.
pub struct Printer {
    json: bool,
    /// `-q`: for people, only the outcome, warnings and errors.
    quiet: bool,
}

fn emit(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

impl Printer {
    pub fn new(json: bool, quiet: bool) -> Printer {
        Printer { json, quiet }
    }

    /// Whether a line of detail for people is left out (`-q`).
    fn hushed(&self) -> bool {
        self.quiet && !self.json
    }

    pub fn is_json(&self) -> bool {
        self.json
    }

    pub fn start(&self, v: &Value) {
        if self.json {
            return emit(&v.to_string());
        }
        if self.hushed() {
            return;
        }
        let digest = v["digest"].as_str().unwrap_or("");
        let mode = if v["dry_run"] == json!(true) {
            "dry-run"
        } else {
            "real run"
        };
        if let Some(of) = v["rollback_of"].as_str() {
            emit(&format!(
                "rollback {} of run {of}  {mode}",
                v["run_id"].as_str().unwrap_or("")
            ));
            return;
        }
        emit(&format!(
            "run {}  {} ({} {}…)  {mode}",
            v["run_id"].as_str().unwrap_or(""),
            v["fix"].as_str().unwrap_or(""),
            v["hash_alg"].as_str().unwrap_or("blake3"),
            &digest[..digest.len().min(12)],
        ));
        for g in v["grants"].as_array().into_iter().flatten() {
            emit(&format!(
                "  grant {:<10} {}",
                g["access"].as_str().unwrap_or(""),
                g["path"].as_str().unwrap_or("")
            ));
        }
    }

    /// Where the fix's messages go, as they arrive.
    pub fn message_sink(&self) -> MessageSink {
        let (json, quiet) = (self.json, self.hushed());
        Box::new(move |m: &Message| {
            if json {
                emit(&json!({"type": "message", "level": m.level, "text": m.text}).to_string());
            } else if quiet && matches!(m.level, "debug" | "info") {
            } else {
                emit(&format!("  {:<5} {}", m.level, m.text));
            }
        })
    }

    pub fn fix_output(&self, bytes: &[u8]) {
        if bytes.is_empty() || self.hushed() {
            return;
        }
        let text = String::from_utf8_lossy(bytes);
        if self.json {
            return emit(&json!({"type": "output", "text": text}).to_string());
        }
        emit("fix output:");
        for line in text.lines() {
            emit(&format!("  | {line}"));
        }
    }

    /// The idempotency pass of a dry-run.
    pub fn idempotency(&self, r: &Value) {
        if self.json {
            return emit(&r.to_string());
        }
        if r["idempotent"] == json!(true) {
            if self.hushed() {
                return;
            }
            return emit("idempotent: yes (a second apply over the plan planned nothing)");
        }
        emit(&format!(
            "NOT idempotent: {}",
            r["why"].as_str().unwrap_or("")
        ));
        for e in r["effects"].as_array().into_iter().flatten() {
            let path = e["path"]
                .as_str()
                .or(e["from"].as_str())
                .or(e["link"].as_str())
                .unwrap_or("");
            emit(&format!("  {:<7} {path}", e["op"].as_str().unwrap_or("")));
        }
    }

    /// A JSON value as one line (JSON mode only).
    pub fn raw(&self, v: &Value) {
        emit(&v.to_string());
    }

    /// A line of its own (e.g. a drifted path).
    pub fn note(&self, text: &str) {
        if self.json {
            return emit(&json!({"type": "note", "text": text}).to_string());
        }
        emit(text);
    }

    /// A log scan the fix made.
    pub fn log_read(&self, r: &Value) {
        if self.json {
            let mut v = r.clone();
            v["type"] = json!("logs");
            return emit(&v.to_string());
        }
        if self.hushed() {
            return;
        }
        let files = r["files"].as_array().map_or(0, Vec::len);
        match r["error"].as_str() {
            Some(e) => emit(&format!(
                "  logs  {} {}: {e}",
                r["call"].as_str().unwrap_or(""),
                r["glob"].as_str().unwrap_or("")
            )),
            None => emit(&format!(
                "  logs  {} {} {}-> {} matching lines in {files} files ({} bytes read)",
                r["call"].as_str().unwrap_or(""),
                r["glob"].as_str().unwrap_or(""),
                r["pattern"]
                    .as_str()
                    .map(|p| format!("/{p}/ "))
                    .unwrap_or_default(),
                r["matches"],
                r["bytes"],
            )),
        }
    }

    pub fn denial(&self, d: &Denial) {
        if self.json {
            let mut v = serde_json::to_value(d).unwrap_or_default();
            v["type"] = json!("denied");
            return emit(&v.to_string());
        }
        emit(&format!("  denied {} {}", d.call, d.reason));
    }

    /// How a real run's plan differs from the reviewed one: a heading, then
    /// one line per difference (at most [`crate::binding::MAX_SHOWN`]).
    pub fn plan_differences(&self, title: &str, diffs: &[crate::binding::Difference]) {
        let shown = crate::binding::MAX_SHOWN;
        let more = diffs.len().saturating_sub(shown);
        if self.json {
            for d in diffs.iter().take(shown) {
                emit(&d.to_json().to_string());
            }
        } else {
            emit(title);
            for d in diffs.iter().take(shown) {
                emit(&format!("  {d}"));
            }
        }
        if more > 0 {
            self.note(&format!("  ... and {more} more difference(s) not shown"));
        }
    }

    pub fn plan(&self, plan: &Plan, dry_run: bool) {
        if self.json {
            for e in &plan.effects {
                let mut v = serde_json::to_value(e).unwrap_or_default();
                v["type"] = json!("effect");
                v["planned"] = json!(dry_run);
                if let Some(d) = e.text_diff(dry_run) {
                    v["diff"] = json!(d);
                }
                emit(&v.to_string());
            }
            return;
        }
        if plan.effects.is_empty() || self.hushed() {
            return;
        }
        emit(if dry_run { "plan:" } else { "changes:" });
        for e in &plan.effects {
            emit(&format!("  {}", e.op));
            if let Some(diff) = e.text_diff(dry_run) {
                for line in diff.lines() {
                    emit(&format!("      {line}"));
                }
            }
        }
    }

    pub fn summary(&self, v: &Value) {
        if self.json {
            emit(&v.to_string());
            if let Some(err) = v["error"].as_str() {
                error_line(err);
            }
            return;
        }
        let s = |k: &str| v[k].as_str().unwrap_or("").to_string();
        let detail = !self.hushed();
        if let Some(check) = v.get("check").filter(|_| detail) {
            let verdict = if check["flipped"] == json!(true) {
                "not needed, flipped by --flip-precondition (apply ran anyway)"
            } else if check["applies"] == json!(true) {
                "applies"
            } else {
                "not needed"
            };
            emit(&format!(
                "check: {verdict} — {}",
                check["reason"].as_str().unwrap_or("")
            ));
        }
        if let Some(r) = v["result"].as_str().filter(|_| detail) {
            emit(&format!("apply: {r}"));
        }
        if detail {
            emit(&format!(
                "changed: {}, unchanged: {}",
                v["changed"], v["unchanged"]
            ));
        }
        let outcome = s("outcome");
        let line = match outcome.as_str() {
            "planned" => {
                "dry-run: nothing was written; run again without --dry-run to apply".to_string()
            }
            "applied" => format!("applied: run {}", s("run_id")),
            "not-needed" => "not needed: nothing to do".to_string(),
            "rolled-back" => format!("rolled back: run {} is undone", s("rollback_of")),
            "nothing-to-undo" => {
                format!("nothing to undo: run {} is not in effect", s("rollback_of"))
            }
            _ => String::new(),
        };
        if !line.is_empty() {
            emit(&line);
        }
        if let (Some(j), Some(h), true) = (v["journal"].as_str(), v["head"].as_str(), detail) {
            emit(&format!("journal: {j}\nhead:    {h}"));
        }
        if let (Some(d), true) = (v["plan_digest"].as_str(), detail) {
            emit(&format!("plan:    {d}"));
        }
        if let Some(path) = v["plan_saved"].as_str() {
            emit(&format!(
                "plan saved to {path}; `run --plan {path}` commits exactly this plan"
            ));
        }
        if let Some(err) = v["error"].as_str() {
            error_line(err);
        }
    }
}

/// One line on stderr: `defops-wasm: error: ...`.
pub fn error_line(message: &str) {
    let _ = writeln!(std::io::stderr().lock(), "defops-wasm: error: {message}");
}
