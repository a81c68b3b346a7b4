//! Saved plans: `run --dry-run --save-plan FILE` writes one, `run --plan
//! FILE` reads it back, checks its kind, format and digest, and refuses it
//! when it was made for another run.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{CanonicalPlan, FORMAT, GrantFor, KIND, MadeFor, visible};
use crate::digest::Alg;
use crate::grants::Grants;

/// The largest saved plan read.
const MAX_PLAN_FILE: u64 = 256 << 20;

/// A saved plan: the canonical form, its digest, and a note of the dry-run
/// that made it (not digested).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanFile {
    pub kind: String,
    pub format: u64,
    pub digest: String,
    pub plan: CanonicalPlan,
    pub made: Made,
}

/// Which dry-run made a plan, when, of what (for people; not digested).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Made {
    pub dry_run: String,
    pub time: String,
    pub fix: String,
    pub fix_name: String,
    /// `planned` or `not-needed`.
    pub outcome: String,
    pub idempotent: Option<bool>,
}

/// Why a saved plan cannot be used. The first three are bad input (exit 2),
/// the rest refusals (exit 3).
#[derive(Debug, thiserror::Error)]
pub enum PlanFileError {
    /// The file cannot be read.
    #[error(
        "cannot read the plan {path}: {source}; name the file `run --dry-run --save-plan` wrote"
    )]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Not a saved plan (bad JSON, missing or unknown fields, too large).
    #[error("{path} is not a saved plan ({why}); make one with `run --dry-run --save-plan {path}`")]
    Corrupt { path: PathBuf, why: String },
    /// A plan of another format version.
    #[error(
        "{path} is a plan of format {found}, this defops-wasm reads format {FORMAT}; make the plan again with this version"
    )]
    Version { path: PathBuf, found: String },
    /// The digest does not match the content: edited after it was saved.
    #[error(
        "refused: the plan {path} was changed after it was saved (its digest {claimed}… does not match its content, {actual}…); make and review a new plan"
    )]
    Tampered {
        path: PathBuf,
        claimed: String,
        actual: String,
    },
    /// Made for something else than this run.
    #[error(
        "refused: the plan {path} was made for {what}; make and review a plan for this run with `--dry-run --save-plan`"
    )]
    OtherRun { path: PathBuf, what: String },
}

impl PlanFileError {
    pub fn exit(&self) -> crate::exit::Exit {
        use crate::exit::Exit;
        match self {
            PlanFileError::Read { .. }
            | PlanFileError::Corrupt { .. }
            | PlanFileError::Version { .. } => Exit::Usage,
            PlanFileError::Tampered { .. } | PlanFileError::OtherRun { .. } => Exit::Refused,
        }
    }
}

impl PlanFile {
    /// A plan file for `plan`, made by the dry-run `made`.
    pub fn new(plan: CanonicalPlan, made: Made) -> Result<PlanFile, String> {
        Ok(PlanFile {
            kind: KIND.into(),
            format: FORMAT,
            digest: plan.digest()?,
            plan,
            made,
        })
    }

    /// Reads and checks a saved plan: its kind, its format, and that its
    /// digest is that of its content.
    pub fn read(path: &Path) -> Result<PlanFile, PlanFileError> {
        use std::io::Read;
        let read = |source| PlanFileError::Read {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(read)?;
        if !file.metadata().map_err(read)?.is_file() {
            return Err(PlanFileError::Corrupt {
                path: path.to_path_buf(),
                why: "not a regular file".into(),
            });
        }
        let mut text = String::new();
        file.take(MAX_PLAN_FILE + 1)
            .read_to_string(&mut text)
            .map_err(|e| PlanFileError::Corrupt {
                path: path.to_path_buf(),
                why: e.to_string(),
            })?;
        if text.len() as u64 > MAX_PLAN_FILE {
            return Err(PlanFileError::Corrupt {
                path: path.to_path_buf(),
                why: format!("larger than {} MiB", MAX_PLAN_FILE >> 20),
            });
        }
        let value: Value = serde_json::from_str(&text).map_err(|e| PlanFileError::Corrupt {
            path: path.to_path_buf(),
            why: e.to_string(),
        })?;
        PlanFile::from_value(value, path)
    }

    /// Checks a saved plan given as JSON (`path` names it in errors).
    pub fn from_value(value: Value, path: &Path) -> Result<PlanFile, PlanFileError> {
        let corrupt = |why: String| PlanFileError::Corrupt {
            path: path.to_path_buf(),
            why,
        };
        if value["kind"] != json!(KIND) {
            return Err(corrupt(format!("no \"kind\": \"{KIND}\"")));
        }
        let version = |v: &Value| (v != &json!(FORMAT)).then(|| v.to_string());
        if let Some(found) = version(&value["format"]).or_else(|| version(&value["plan"]["format"]))
        {
            return Err(PlanFileError::Version {
                path: path.to_path_buf(),
                found,
            });
        }
        let file: PlanFile = serde_json::from_value(value).map_err(|e| corrupt(e.to_string()))?;
        let actual = file.plan.digest().map_err(corrupt)?;
        if actual != file.digest {
            return Err(PlanFileError::Tampered {
                path: path.to_path_buf(),
                claimed: file.digest.chars().take(16).collect(),
                actual: actual[..16].to_string(),
            });
        }
        Ok(file)
    }

    /// Refuses a plan made with another algorithm, for another fix, other
    /// grants, other params or another host than `now`.
    pub fn check_made_for(
        &self,
        path: &Path,
        alg: Alg,
        now: &MadeFor,
    ) -> Result<(), PlanFileError> {
        let plan = &self.plan.made_for;
        let what = if self.plan.hash_alg != alg.name() {
            Some(format!(
                "{} digests, and this run uses {} (the configuration's `fips`)",
                self.plan.hash_alg,
                alg.name()
            ))
        } else if plan.fix_digest != now.fix_digest {
            Some(format!(
                "another fix (digest {}…; this fix is {}…)",
                short(&plan.fix_digest),
                short(&now.fix_digest)
            ))
        } else if plan.grants != now.grants {
            Some(format!(
                "other grants ({}; this run grants {})",
                grants_text(&plan.grants),
                grants_text(&now.grants)
            ))
        } else if plan.params != now.params {
            Some(format!(
                "other params ({})",
                params_difference(&plan.params, &now.params)
            ))
        } else if plan.host != now.host {
            Some(format!(
                "the host {:?}, and this is {:?}",
                plan.host, now.host
            ))
        } else {
            None
        };
        match what {
            None => Ok(()),
            Some(what) => Err(PlanFileError::OtherRun {
                path: path.to_path_buf(),
                what,
            }),
        }
    }

    /// The file's bytes: pretty JSON, for people to read.
    pub fn to_text(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).unwrap_or_default();
        text.push('\n');
        text
    }
}

fn short(d: &str) -> &str {
    &d[..d.len().min(16)]
}

fn grants_text(grants: &[GrantFor]) -> String {
    if grants.is_empty() {
        return "nothing".into();
    }
    grants
        .iter()
        .map(|g| format!("{} {}", g.access, visible(&g.path)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn params_difference(plan: &BTreeMap<String, String>, now: &BTreeMap<String, String>) -> String {
    let names: std::collections::BTreeSet<&String> = plan.keys().chain(now.keys()).collect();
    names
        .into_iter()
        .filter(|n| plan.get(*n) != now.get(*n))
        .map(|n| {
            let show = |v: Option<&String>| v.map_or("not given".to_string(), |v| format!("{v:?}"));
            format!(
                "{n}: the plan has {}, this run {}",
                show(plan.get(n)),
                show(now.get(n))
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Why a plan cannot be saved there.
#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    /// Inside (or around) a grant: the fix could rewrite its own review.
    #[error(
        "--save-plan {path}: it is inside the granted directory {grant}, where a fix could change its own plan; save it elsewhere"
    )]
    InsideGrant { path: PathBuf, grant: String },
    /// The directory does not exist or the file cannot be written.
    #[error("--save-plan {path}: {source}; choose a file in an existing directory")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Where a plan would be saved, checked before the fix runs: its directory
/// exists and lies outside every grant.
pub fn check_save_path(path: &Path, grants: &Grants) -> Result<PathBuf, SaveError> {
    let io = |source| SaveError::Io {
        path: path.to_path_buf(),
        source,
    };
    let absolute = std::path::absolute(path).map_err(io)?;
    let name = absolute.file_name().ok_or_else(|| {
        io(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a file name",
        ))
    })?;
    let dir = absolute.parent().unwrap_or(Path::new("/"));
    let canonical_dir = std::fs::canonicalize(dir).map_err(io)?;
    let target = canonical_dir.join(name);
    // By name, and by identity (a bind mount shows a grant's directory
    // under another path), as for the state directory.
    let inside = grants
        .overlaps(&target)
        .map(|g| g.path.to_string())
        .or_else(|| crate::state_dir::inside_by_identity(&canonical_dir, grants));
    if let Some(grant) = inside {
        return Err(SaveError::InsideGrant {
            path: path.to_path_buf(),
            grant,
        });
    }
    Ok(target)
}

/// Writes `file` to `target` (from [`check_save_path`]) atomically: a
/// temporary file in the same directory, synced, renamed over it.
pub fn save(target: &Path, file: &PlanFile) -> Result<(), SaveError> {
    let io = |source| SaveError::Io {
        path: target.to_path_buf(),
        source,
    };
    let dir = target.parent().unwrap_or(Path::new("/"));
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        target.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ));
    let written = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&tmp)?;
        f.write_all(file.to_text().as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, target)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.map_err(io)
}
