//! The plan a real run is held to: the one its dry-run showed, or the one
//! saved with `--save-plan` and named with `--plan`. The comparison and its
//! record for the journal header (`policy.plan`).

use std::path::PathBuf;

use serde_json::{Value, json};

use super::Stop;
use crate::binding::{CanonicalPlan, Difference, PlanFile};
use crate::exit::Exit;
use crate::policy::DryRun;

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
