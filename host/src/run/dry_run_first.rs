//! Dry-run before real, and the plan the dry-run showed binds the real run:
//! the gate, the plan a real run is held to (the one its dry-run showed, or
//! the one saved with `--save-plan` and named with `--plan`), the
//! comparison and its record for the journal header (`policy.plan`).

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::{RunRequest, Stop, now_secs, rfc3339};
use crate::binding::{CanonicalPlan, Difference, PlanFile};
use crate::config::Config;
use crate::exit::Exit;
use crate::grants::Access;
use crate::plan::Plan;
use crate::policy::DryRun;
use crate::sandbox::GuestEnd;

/// Where the reviewed plan comes from.
pub enum Source {
    /// The dry-run the dry-run-first gate found (same key, recent enough).
    DryRun(String),
    /// `--plan FILE`: exactly this plan, no override.
    File(PathBuf),
}

/// A reviewed plan, its digest checked against its content.
pub struct Reviewed {
    pub source: Source,
    pub file: PlanFile,
}

impl Reviewed {
    /// The plan a dry-run recorded in the dry-run index; refused (exit 3)
    /// when there is none this version can read.
    pub fn from_dry_run(d: &DryRun, again: &str) -> Result<Reviewed, Stop> {
        let refuse = |why: String| {
            Stop::new(
                Exit::Refused,
                format!(
                    "refused: the dry-run {} recorded no plan this run can be held to ({why}); run it again: {again}",
                    d.run_id
                ),
            )
        };
        let value = d
            .plan
            .clone()
            .ok_or_else(|| refuse("it was made before plans were recorded".into()))?;
        let path = PathBuf::from(format!("the record of dry-run {}", d.run_id));
        let file = PlanFile::from_value(value, &path).map_err(|e| refuse(e.to_string()))?;
        if d.plan_digest.as_deref() != Some(file.digest.as_str()) {
            return Err(refuse("its digest does not match the index".into()));
        }
        Ok(Reviewed {
            source: Source::DryRun(d.run_id.clone()),
            file,
        })
    }

    /// A saved plan named with `--plan`.
    pub fn from_file(path: PathBuf, file: PlanFile) -> Reviewed {
        Reviewed {
            source: Source::File(path),
            file,
        }
    }

    /// Whether exactly this plan is required (no override, an empty new
    /// plan refused too).
    fn exact(&self) -> bool {
        matches!(self.source, Source::File(_))
    }

    fn describe(&self) -> String {
        match &self.source {
            Source::DryRun(id) => format!("the plan dry-run {id} showed"),
            Source::File(p) => format!("the saved plan {}", p.display()),
        }
    }

    fn record(&self) -> Value {
        let mut v = json!({"digest": self.file.digest});
        match &self.source {
            Source::DryRun(id) => v["dry_run"] = json!(id),
            Source::File(p) => {
                v["file"] = json!(p.display().to_string());
                v["dry_run"] = json!(self.file.made.dry_run);
            }
        }
        v
    }
}

/// What the comparison decided, for the journal and the operator.
pub struct Binding {
    /// `policy.plan` in the journal header.
    pub record: Value,
    /// How the new plan differs (empty when it matches).
    pub differences: Vec<Difference>,
    /// The heading of the differences, for people.
    pub title: String,
    /// Why the run must not commit, when it must not.
    pub refusal: Option<String>,
}

/// Holds the run's plan (`new`, `None` when the fix did not finish
/// planning) to the reviewed one. `commits` says whether the new plan
/// would change anything; `accept` is `--accept-new-plan --reason`.
pub fn bind(
    reviewed: Result<&Reviewed, &str>,
    new: Option<(&CanonicalPlan, &str)>,
    commits: bool,
    accept: Option<&str>,
) -> Binding {
    let accepted = |used: bool| {
        accept.map(|reason| json!({"reason": reason, "by": super::user(), "used": used}))
    };
    let mut binding = Binding {
        record: json!({"compared": false}),
        differences: Vec::new(),
        title: String::new(),
        refusal: None,
    };
    let reviewed = match reviewed {
        Ok(r) => r,
        Err(why) => {
            binding.record["why"] = json!(why);
            if let Some(a) = accepted(false) {
                binding.record["accept_new_plan"] = a;
            }
            return binding;
        }
    };
    binding.record["reviewed"] = reviewed.record();
    let Some((new, digest)) = new else {
        binding.record["why"] = json!("the fix did not finish planning; nothing is committed");
        return binding;
    };
    let matches = digest == reviewed.file.digest;
    binding.differences = match matches {
        true => Vec::new(),
        false => crate::binding::differences(&reviewed.file.plan, new),
    };
    binding.record = json!({
        "compared": true,
        "reviewed": reviewed.record(),
        "planned": digest,
        "matches": matches,
        "differences": binding.differences.len(),
    });
    if matches {
        if let Some(a) = accepted(false) {
            binding.record["accept_new_plan"] = a;
        }
        return binding;
    }
    let n = binding.differences.len();
    binding.title = format!(
        "this run's plan differs from {} ({n} difference{}):",
        reviewed.describe(),
        if n == 1 { "" } else { "s" }
    );
    if !reviewed.exact() && !commits {
        // Nothing would be written: nothing unreviewed can happen.
        binding.record["nothing_to_commit"] = json!(true);
        return binding;
    }
    if !reviewed.exact()
        && let Some(a) = accepted(true)
    {
        binding.record["accept_new_plan"] = a;
        return binding;
    }
    binding.refusal = Some(match &reviewed.source {
        Source::File(p) => format!(
            "refused: this run's plan differs from the saved plan {} ({n} difference(s) shown above); nothing was changed. Make and review a new plan with --dry-run --save-plan",
            p.display()
        ),
        Source::DryRun(id) => format!(
            "refused: this run's plan differs from the plan dry-run {id} showed ({n} difference(s) shown above); nothing was changed. Dry-run again to review the new plan, or pass --accept-new-plan --reason TEXT to run it as it is now"
        ),
    });
    binding
}

/// Dry-run before real: a successful dry-run of the same fix digest,
/// grants and params on this host, recent enough, or a saved plan
/// (`--plan`); the record for the journal header, and the plan the run is
/// held to (or why there is none).
pub(super) fn dry_run_gate(
    req: &RunRequest,
    config: &Config,
    state: &std::path::Path,
    key: &str,
    fix_name: &str,
    fix_id: &dyn Fn() -> String,
    saved: Option<Reviewed>,
) -> Result<(serde_json::Value, Result<Reviewed, String>), Stop> {
    let rule = config.dry_run_first;
    if let Some(saved) = saved {
        // A saved plan is a reviewed dry-run, and a stricter one: the run
        // must make exactly that plan.
        let made = &saved.file.made;
        let record = json!({"required": rule.required, "plan_file": req.plan.as_ref().map(|p| p.display().to_string()), "dry_run": made.dry_run, "time": made.time});
        return Ok((record, Ok(saved)));
    }
    if let Some(reason) = &req.no_dry_run_first {
        return Ok((
            json!({"override": {"reason": reason}}),
            Err("--no-dry-run-first: the run follows no dry-run".into()),
        ));
    }
    let max_age = rule.max_age.as_secs() as i64;
    let age_text = crate::sandbox::humantime(rule.max_age);
    let last = crate::policy::last_dry_run(state, key).map_err(|why| {
        Stop::new(
            Exit::Refused,
            format!(
                "refused: the record of the last dry-run of {fix_name} with these grants and params cannot be read ({why}); run the dry-run again: {}, or pass --no-dry-run-first --reason TEXT to follow none",
                dry_run_command(req)
            ),
        )
    })?;
    let recent = last.as_ref().filter(|d| now_secs() - d.time <= max_age);
    if let Some(d) = recent {
        let record =
            json!({"required": rule.required, "dry_run": d.run_id, "time": rfc3339(d.time)});
        let found = Reviewed::from_dry_run(d, &dry_run_command(req))?;
        return Ok((record, Ok(found)));
    }
    if !rule.required {
        return Ok((
            json!({"required": false}),
            Err(format!(
                "dry-run first is off and there is no dry-run of these grants and params on this host in the last {age_text} to compare with"
            )),
        ));
    }
    let fix_id = fix_id();
    let why = match last {
        Some(d) => format!(
            "the last dry-run of {fix_name} ({fix_id}) with these grants and params ({}, {}) is older than {age_text}",
            d.run_id,
            rfc3339(d.time)
        ),
        None => format!(
            "no successful dry-run of {fix_name} ({fix_id}) with these grants and params on this host in the last {age_text}"
        ),
    };
    Err(Stop::new(
        Exit::Refused,
        format!("refused: {why}; run it first: {}", dry_run_command(req)),
    ))
}

/// The command line of a dry-run with the same fix, grants and params.
fn dry_run_command(req: &RunRequest) -> String {
    let mut words = vec![
        "defops-wasm".to_string(),
        "run".into(),
        quote(&req.fix.display().to_string()),
    ];
    for (path, access) in &req.grants {
        let flag = match access {
            Access::ReadWrite => "--allow",
            Access::ReadOnly => "--allow-ro",
        };
        words.push(format!("{flag} {}", quote(&path.display().to_string())));
    }
    for glob in &req.logs {
        words.push(format!("--allow-log {}", quote(glob)));
    }
    for (k, v) in &req.params {
        words.push(format!("--param {}", quote(&format!("{k}={v}"))));
    }
    if req.state_dir_given {
        words.push(format!(
            "--state-dir {}",
            quote(&req.state_dir.display().to_string())
        ));
    }
    words.push("--dry-run".into());
    words.join(" ")
}

/// `s` quoted for a POSIX shell when it needs to be.
pub fn quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-./=:,@+%".contains(&b));
    match plain {
        true => s.to_string(),
        false => format!("'{}'", s.replace('\'', "'\\''")),
    }
}

/// The canonical form of the run's plan and its digest, when the fix
/// finished planning (a flipped dry-run's plan is not one a real run would
/// make).
pub(super) fn canonical_plan(
    end: &GuestEnd,
    flipped: bool,
    plan: &Plan,
    made_for: crate::binding::MadeFor,
) -> Option<(CanonicalPlan, String)> {
    if flipped || !matches!(end, GuestEnd::Applied { .. } | GuestEnd::NotNeeded(_)) {
        return None;
    }
    let uid = rustix::process::geteuid().as_raw();
    let gid = rustix::process::getegid().as_raw();
    let c = crate::binding::canonical(plan, made_for, crate::digest::current(), uid, gid);
    c.digest().ok().map(|d| (c, d))
}

/// A successful dry-run's plan as a saved plan, written to `target` when
/// `--save-plan` asked for it (a failure to save fails the dry-run).
pub(super) fn save_plan(
    plan: &CanonicalPlan,
    made: crate::binding::Made,
    target: Option<&Path>,
    summary: &mut Value,
    exit: &mut Exit,
) -> Option<PlanFile> {
    let file = PlanFile::new(plan.clone(), made).ok()?;
    if let Some(target) = target {
        match crate::binding::save(target, &file) {
            Ok(()) => summary["plan_saved"] = json!(target.display().to_string()),
            Err(e) => {
                summary["outcome"] = json!("error");
                summary["error"] = json!(format!("the plan was not saved: {e}"));
                *exit = Exit::Usage;
                return None;
            }
        }
    }
    Some(file)
}
