//! What the operator reads: short aligned lines for people, or JSON Lines
//! (`--json`) for programs.
//!
//! Every line for people goes through [`crate::escape`]: no byte a fix
//! controls (its messages, output, file names, symlink targets, diffs)
//! reaches the terminal as a control character. JSON keeps the exact text.
//!
//! JSON Lines on stdout, one object per line, each with a `type`:
//!
//! * `start`: `run_id`, `fix`, `fix_id` (`sha256:<hex>`), `digest` (blake3, or SHA-256 in FIPS
//!   mode), `hash_alg`, `size`, `dry_run`, `grants` (`path`, `access`), `params`,
//!   `compile_cache` (`hit`/`miss`).
//! * `message`: `level` (`debug|info|warn|error`), `text`, `pass` (1, or 2 in a dry-run's
//!   idempotency pass) — from the fix.
//! * `output`: `text`, `pass` — what the fix wrote to stdout/stderr.
//! * `denied`: `call`, `path`, `reason`, `pass` — a call the sandbox refused.
//! * `plan-difference` (a real run whose plan differs from the reviewed
//!   one): `change` (`only-reviewed|only-new|before-changed`), `path`,
//!   `effect` (the canonical effect, see `binding`), and for a changed
//!   before-state `at`, `what`, `reviewed`, `now`.
//! * `effect`: `op` (`write|create-dir|remove-file|remove-dir|rename|set-mode|set-owner|symlink`),
//!   its paths and arguments, `before` (the expected state), `diff` (text writes); every `mode`
//!   (the op's and the states') an octal string such as `"0640"`.
//! * `summary` (always last): `run_id`, `outcome`
//!   (`planned|applied|not-needed|failed|denied|crashed|limit|refused|error`),
//!   `changed`, `unchanged`, `denied`, `exit_code`, `dry_run`, `fix_id`, `digest`,
//!   and when present `check` (`applies`, `reason`), `result`, `phase`, `error`,
//!   `plan_digest` (the plan's canonical digest), `plan_saved` (`--save-plan`).

use std::io::Write;

use serde_json::{Value, json};

use crate::escape;
use crate::plan::{Effect, Plan};
use crate::world::{Denial, Message, MessageSink};

/// Prints a run, for people or as JSON Lines.
pub struct Printer {
    json: bool,
    /// `-q`: for people, only the outcome, warnings and errors.
    quiet: bool,
}

/// One line on stdout; a closed pipe (`| head -1`) is not an error.
pub fn write_line(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// A line (or lines) for people: every control but tab and the line feeds
/// of `text` itself escaped.
fn emit(text: &str) {
    write_line(&escape::block(text));
}

/// One JSON line, safe for a terminal, decoding to exactly `v`.
fn emit_json(v: &Value) {
    write_line(&escape::json(v));
}

/// A string field of `v`, on one line.
fn field(v: &Value) -> std::borrow::Cow<'_, str> {
    escape::line(v.as_str().unwrap_or(""))
}

/// How a message of the idempotency pass is marked for people.
pub const SECOND_PASS: &str = "[idempotency pass] ";

fn pass_mark(pass: u8) -> &'static str {
    match pass {
        2 => SECOND_PASS,
        _ => "",
    }
}

/// Every `mode` of an effect (its own and its states') as an octal string.
pub fn octal_modes(v: &mut Value) {
    let octal = |m: &mut Value| {
        if let Some(n) = m.as_u64() {
            *m = json!(format!("{n:04o}"));
        }
    };
    if let Some(m) = v.get_mut("mode") {
        octal(m);
    }
    for state in ["before", "before_to", "after", "after_to"] {
        if let Some(m) = v.get_mut(state).and_then(|s| s.get_mut("mode")) {
            octal(m);
        }
    }
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
            return emit_json(v);
        }
        if self.hushed() {
            return;
        }
        let mode = if v["dry_run"] == json!(true) {
            "dry-run"
        } else {
            "real run"
        };
        if let Some(of) = v["rollback_of"].as_str() {
            emit(&format!(
                "rollback {} of run {}  {mode}",
                field(&v["run_id"]),
                escape::line(of)
            ));
            return;
        }
        emit(&format!(
            "run {}  {}  {mode}",
            field(&v["run_id"]),
            field(&v["fix"]),
        ));
        emit(&format!("  fix   {}", field(&v["fix_id"])));
        for g in v["grants"].as_array().into_iter().flatten() {
            emit(&format!(
                "  grant {:<10} {}",
                field(&g["access"]),
                field(&g["path"])
            ));
        }
    }

    /// Where the fix's messages go, as they arrive.
    pub fn message_sink(&self) -> MessageSink {
        let (json, quiet) = (self.json, self.hushed());
        Box::new(move |m: &Message| {
            if json {
                emit_json(
                    &json!({"type": "message", "level": m.level, "text": m.text, "pass": m.pass}),
                );
            } else if quiet && matches!(m.level, "debug" | "info") {
            } else {
                emit(&format!(
                    "  {:<5} {}{}",
                    m.level,
                    pass_mark(m.pass),
                    escape::line(&m.text)
                ));
            }
        })
    }

    /// What the fix wrote to stdout/stderr in one pass (2: a dry-run's
    /// idempotency pass).
    pub fn fix_output(&self, bytes: &[u8], pass: u8) {
        if bytes.is_empty() || self.hushed() {
            return;
        }
        if self.json {
            let text = String::from_utf8_lossy(bytes);
            return emit_json(&json!({"type": "output", "text": text, "pass": pass}));
        }
        emit(&format!(
            "fix output{}:",
            match pass {
                2 => " [idempotency pass]",
                _ => "",
            }
        ));
        let bytes = bytes.strip_suffix(b"\n").unwrap_or(bytes);
        for line in bytes.split(|b| *b == b'\n') {
            emit(&format!("  | {}", escape::line_bytes(line)));
        }
    }

    /// The idempotency pass of a dry-run.
    pub fn idempotency(&self, r: &Value) {
        if self.json {
            let mut r = r.clone();
            let effects = r.get_mut("effects").and_then(Value::as_array_mut);
            for e in effects.into_iter().flatten() {
                octal_modes(e);
            }
            return emit_json(&r);
        }
        if r["idempotent"] == json!(true) {
            if self.hushed() {
                return;
            }
            return emit("idempotent: yes (a second apply over the plan planned nothing)");
        }
        emit(&format!("NOT idempotent: {}", field(&r["why"])));
        for e in r["effects"].as_array().into_iter().flatten() {
            let path = e["path"]
                .as_str()
                .or(e["from"].as_str())
                .or(e["link"].as_str())
                .unwrap_or("");
            emit(&format!("  {:<7} {}", field(&e["op"]), escape::line(path)));
        }
    }

    /// A JSON value as one line (JSON mode only).
    pub fn raw(&self, v: &Value) {
        emit_json(v);
    }

    /// A line of its own (e.g. a drifted path). For people, its controls
    /// are escaped but its own line feeds kept: escape a field a fix
    /// controls with [`escape::line`] before putting it in.
    pub fn note(&self, text: &str) {
        if self.json {
            return emit_json(&json!({"type": "note", "text": text}));
        }
        emit(text);
    }

    /// A log scan the fix made.
    pub fn log_read(&self, r: &Value) {
        if self.json {
            let mut v = r.clone();
            v["type"] = json!("logs");
            return emit_json(&v);
        }
        if self.hushed() {
            return;
        }
        let pass = pass_mark(r["pass"].as_u64().unwrap_or(1) as u8);
        match r["error"].as_str() {
            Some(e) => emit(&format!(
                "  logs  {pass}{} {}: {}",
                field(&r["call"]),
                field(&r["glob"]),
                escape::line(e)
            )),
            None => emit(&format!(
                "  logs  {pass}{} {} {}-> {} ({} bytes read)",
                field(&r["call"]),
                field(&r["glob"]),
                r["pattern"]
                    .as_str()
                    .map(|p| format!("/{}/ ", escape::line(p)))
                    .unwrap_or_default(),
                crate::logs::found(r),
                r["bytes"],
            )),
        }
    }

    /// A call the sandbox refused, in `pass` (2: the idempotency pass).
    pub fn denial(&self, d: &Denial, pass: u8) {
        if self.json {
            let mut v = serde_json::to_value(d).unwrap_or_default();
            v["type"] = json!("denied");
            v["pass"] = json!(pass);
            return emit_json(&v);
        }
        emit(&format!(
            "  denied {}{} {}",
            pass_mark(pass),
            d.call,
            escape::line(&d.reason)
        ));
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

    /// The plan's effects, one line (or a few) each. A plan can have many
    /// thousands: they are formatted a block at a time on all cores and
    /// written to stdout in large pieces, in order.
    pub fn plan(&self, plan: &Plan, dry_run: bool) {
        if !self.json && (plan.effects.is_empty() || self.hushed()) {
            return;
        }
        let stdout = std::io::stdout();
        let mut out = std::io::BufWriter::with_capacity(64 << 10, stdout.lock());
        // A closed pipe (`| head -1`) is not an error.
        if !self.json {
            let _ = writeln!(
                out,
                "{}",
                escape::block(if dry_run { "plan:" } else { "changes:" })
            );
        }
        // Asked only of a long plan (the answer reads the cgroup files).
        let workers = match plan.effects.len() < 64 {
            true => 1,
            false => std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .clamp(1, 8),
        };
        const BLOCK: usize = 1024;
        for (b, block) in plan.effects.chunks(BLOCK).enumerate() {
            let per = block.len().div_ceil(workers);
            // The effects from the `start`-th on.
            let text = |start: usize, part: &[Effect]| {
                let mut text = String::new();
                for (k, e) in part.iter().enumerate() {
                    self.effect_lines(e, plan.diff(start + k, dry_run), dry_run, &mut text);
                }
                text
            };
            let parts: Vec<String> = match block.len() < 64 || workers == 1 {
                true => vec![text(b * BLOCK, block)],
                false => {
                    let parts: Vec<&[Effect]> = block.chunks(per).collect();
                    crate::cores::on_cores(parts.len(), |j| text(b * BLOCK + j * per, parts[j]))
                }
            };
            for part in parts {
                let _ = out.write_all(part.as_bytes());
            }
        }
        let _ = out.flush();
    }

    /// The lines of one effect, each ending in a newline.
    fn effect_lines(&self, e: &Effect, diff: Option<String>, dry_run: bool, text: &mut String) {
        use std::fmt::Write as _;
        if self.json {
            let mut v = serde_json::to_value(e).unwrap_or_default();
            v["type"] = json!("effect");
            v["planned"] = json!(dry_run);
            octal_modes(&mut v);
            if let Some(d) = diff {
                v["diff"] = json!(d);
            }
            let _ = writeln!(text, "{}", escape::json(&v));
            return;
        }
        // As `emit` writes them.
        let _ = writeln!(text, "{}", escape::block(&format!("  {e}")));
        if let Some(diff) = diff {
            for l in diff.split_inclusive('\n') {
                let l = l.strip_suffix('\n').unwrap_or(l);
                let _ = writeln!(
                    text,
                    "{}",
                    escape::block(&format!("      {}", escape::line(l)))
                );
            }
        }
    }

    pub fn summary(&self, v: &Value) {
        if self.json {
            let mut v = v.clone();
            let effects = v
                .get_mut("idempotency")
                .and_then(|i| i.get_mut("effects"))
                .and_then(Value::as_array_mut);
            for e in effects.into_iter().flatten() {
                octal_modes(e);
            }
            emit_json(&v);
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
            emit(&format!("check: {verdict} — {}", field(&check["reason"])));
        }
        if let Some(r) = v["result"].as_str().filter(|_| detail) {
            emit(&format!("apply: {}", escape::line(r)));
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
            "applied" => format!("applied: run {}", escape::line(&s("run_id"))),
            "not-needed" => "not needed: nothing to do".to_string(),
            "rolled-back" => format!(
                "rolled back: run {} is undone",
                escape::line(&s("rollback_of"))
            ),
            "nothing-to-undo" => format!(
                "nothing to undo: run {} is not in effect",
                escape::line(&s("rollback_of"))
            ),
            _ => String::new(),
        };
        if !line.is_empty() {
            emit(&line);
        }
        if let (Some(j), Some(h), true) = (v["journal"].as_str(), v["head"].as_str(), detail) {
            emit(&format!("journal: {}", escape::line(j)));
            emit(&format!("head:    {}", escape::line(h)));
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

/// One line on stderr: `defops-wasm: error: ...`, every control in it
/// escaped (line feeds too: it stays one line).
pub fn error_line(message: &str) {
    let _ = writeln!(
        std::io::stderr().lock(),
        "defops-wasm: error: {}",
        escape::line(message)
    );
}
