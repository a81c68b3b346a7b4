//! The plan the operator reviewed is the plan that runs.
//!
//! A plan's **canonical form** is what it would do and what it expects to
//! find, and what it was made for — nothing that changes from one run to the
//! next (no times, no run ids):
//!
//! * `format` (1) and `hash_alg`;
//! * `made_for`: the fix's digest, the grants (sorted), the params, the host;
//! * `effects`, in order: `op`, `path` (and `to` for a rename), `before` (and
//!   `before_to`), the state each expects, and `after` (and `after_to`), the
//!   state each leaves. A state is `kind` (`absent`, `file`, `dir`,
//!   `symlink`, `other`) with `size` and `digest` (files), `mode` (octal
//!   text), `uid`/`gid`, `target` (symlinks).
//!
//! Its **digest** is the hash (`hash_alg`) of its canonical JSON bytes
//! (compact, keys sorted: the journal's form). A dry-run and a real run
//! compute it with the same code ([`canonical`]); a real run that follows a
//! dry-run refuses when the two differ, showing [`differences`].
//!
//! A saved plan ([`PlanFile`], `run --dry-run --save-plan FILE`) is that
//! form with its digest and a note of the dry-run that made it (outside the
//! digest). `run --plan FILE` requires exactly that plan.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::digest::Alg;
use crate::plan::{Effect, Plan, State};

mod saved;

pub use saved::{Made, PlanFile, PlanFileError, SaveError, check_save_path, save};

/// The version of the canonical form and of saved plan files.
pub const FORMAT: u64 = 1;

/// What a saved plan file says it is.
pub const KIND: &str = "defops-wasm-plan";

/// How many differences are shown and journaled; the rest are counted.
pub const MAX_SHOWN: usize = 200;

/// What a plan was made for: the same fix, grants, params and host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MadeFor {
    /// The fix's digest (`hash_alg`).
    pub fix_digest: String,
    /// Every grant, log globs too, sorted.
    pub grants: Vec<GrantFor>,
    pub params: BTreeMap<String, String>,
    pub host: String,
}

/// One grant: its path and access (`read-write`, `read-only`, `log`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantFor {
    pub path: String,
    pub access: String,
}

impl MadeFor {
    /// From the run's grants as printed (`path`, `access`), sorted.
    pub fn new(
        fix_digest: &str,
        grants: &[Value],
        params: &BTreeMap<String, String>,
        host: &str,
    ) -> MadeFor {
        let mut grants: Vec<GrantFor> = grants
            .iter()
            .map(|g| GrantFor {
                path: g["path"].as_str().unwrap_or_default().to_string(),
                access: g["access"].as_str().unwrap_or_default().to_string(),
            })
            .collect();
        grants.sort();
        grants.dedup();
        MadeFor {
            fix_digest: fix_digest.to_string(),
            grants,
            params: params.clone(),
            host: host.to_string(),
        }
    }
}

/// A path's state in the canonical form: modes as octal text.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum StateForm {
    Absent,
    File {
        size: u64,
        digest: String,
        mode: String,
        uid: u32,
        gid: u32,
    },
    Dir {
        mode: String,
        uid: u32,
        gid: u32,
    },
    Symlink {
        target: String,
        uid: u32,
        gid: u32,
    },
    Other,
}

fn octal(mode: u32) -> String {
    format!("{mode:04o}")
}

impl From<&State> for StateForm {
    fn from(s: &State) -> StateForm {
        match s.clone() {
            State::Absent => StateForm::Absent,
            State::File {
                size,
                digest,
                mode,
                uid,
                gid,
            } => StateForm::File {
                size,
                digest,
                mode: octal(mode),
                uid,
                gid,
            },
            State::Dir { mode, uid, gid } => StateForm::Dir {
                mode: octal(mode),
                uid,
                gid,
            },
            State::Symlink { target, uid, gid } => StateForm::Symlink { target, uid, gid },
            State::Other => StateForm::Other,
        }
    }
}

impl StateForm {
    /// The first attribute in which `self` (reviewed) and `now` differ.
    pub fn difference(&self, now: &StateForm) -> &'static str {
        use StateForm::*;
        match (self, now) {
            (Absent, _) | (_, Absent) => "presence",
            (File { digest: a, .. }, File { digest: b, .. }) if a != b => "content",
            (Symlink { target: a, .. }, Symlink { target: b, .. }) if a != b => "symlink target",
            (File { mode: a, .. }, File { mode: b, .. })
            | (Dir { mode: a, .. }, Dir { mode: b, .. })
                if a != b =>
            {
                "mode"
            }
            (File { .. }, File { .. })
            | (Dir { .. }, Dir { .. })
            | (Symlink { .. }, Symlink { .. }) => "owner",
            _ => "type",
        }
    }
}

impl fmt::Display for StateForm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StateForm::Absent => f.write_str("absent"),
            StateForm::File {
                size,
                digest,
                mode,
                uid,
                gid,
            } => write!(
                f,
                "file {}…, {size} bytes, mode {mode}, owner {uid}:{gid}",
                &digest[..digest.len().min(12)]
            ),
            StateForm::Dir { mode, uid, gid } => {
                write!(f, "directory, mode {mode}, owner {uid}:{gid}")
            }
            StateForm::Symlink { target, uid, gid } => {
                write!(f, "symlink to {}, owner {uid}:{gid}", visible(target))
            }
            StateForm::Other => f.write_str("special file"),
        }
    }
}

/// One effect in the canonical form.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlannedEffect {
    pub op: String,
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    pub before: StateForm,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before_to: Option<StateForm>,
    pub after: StateForm,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_to: Option<StateForm>,
}

impl PlannedEffect {
    fn new(e: &Effect, uid: u32, gid: u32) -> PlannedEffect {
        let (after, after_to) = e.planned_after(uid, gid);
        PlannedEffect {
            op: e.op.name().to_string(),
            path: e.op.path().to_string(),
            to: e.op.second_path().map(|p| p.to_string()),
            before: StateForm::from(&e.before),
            before_to: e.before_to.as_ref().map(StateForm::from),
            after: StateForm::from(&after),
            after_to: after_to.as_ref().map(StateForm::from),
        }
    }

    /// What it does, without what it expects: effects are matched on this.
    fn action(&self) -> (&str, &str, Option<&str>, &StateForm, Option<&StateForm>) {
        (
            &self.op,
            &self.path,
            self.to.as_deref(),
            &self.after,
            self.after_to.as_ref(),
        )
    }
}

impl fmt::Display for PlannedEffect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.op, visible(&self.path))?;
        match (&self.to, &self.after) {
            (Some(to), _) => write!(f, " -> {}", visible(to)),
            (None, StateForm::Absent) => Ok(()),
            (None, after) => write!(f, ", leaving {after}"),
        }
    }
}

/// Control characters shown visibly (`\t` kept): a path from a fix must not
/// rewrite the operator's terminal.
pub(crate) fn visible(s: &str) -> String {
    s.chars()
        .flat_map(|c| match c {
            '\t' => vec![c],
            c if c.is_control() => c.escape_default().collect(),
            c => vec![c],
        })
        .collect()
}

/// A plan in its canonical form.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CanonicalPlan {
    pub format: u64,
    pub hash_alg: String,
    pub made_for: MadeFor,
    pub effects: Vec<PlannedEffect>,
}

/// The canonical form of `plan` made for `made_for`; `uid`/`gid` own what
/// the plan creates.
pub fn canonical(plan: &Plan, made_for: MadeFor, alg: Alg, uid: u32, gid: u32) -> CanonicalPlan {
    CanonicalPlan {
        format: FORMAT,
        hash_alg: alg.name().to_string(),
        made_for,
        effects: plan
            .effects
            .iter()
            .map(|e| PlannedEffect::new(e, uid, gid))
            .collect(),
    }
}

impl CanonicalPlan {
    /// The digest of the canonical JSON bytes, with the plan's own
    /// algorithm.
    pub fn digest(&self) -> Result<String, String> {
        let alg = Alg::parse(Some(&self.hash_alg))?;
        let value = serde_json::to_value(self).map_err(|e| e.to_string())?;
        Ok(alg.hex(crate::journal::canonical_json(&value).as_bytes()))
    }
}

/// How a new plan differs from the reviewed one: one line each.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Difference {
    /// An effect the reviewed plan has and the new one does not.
    OnlyReviewed(PlannedEffect),
    /// An effect only the new plan has.
    OnlyNew(PlannedEffect),
    /// The same change, expecting something else before it.
    BeforeChanged {
        effect: Box<PlannedEffect>,
        reviewed: StateForm,
        now: StateForm,
        /// `path` or `to`: which of the effect's paths.
        at: String,
        /// The after-state the reviewed effect would have left, when the
        /// changed before-state changes that too.
        reviewed_after: Option<StateForm>,
    },
}

impl Difference {
    /// The JSON Lines form (`type`: `plan-difference`).
    pub fn to_json(&self) -> Value {
        let effect = |e: &PlannedEffect| serde_json::to_value(e).unwrap_or_default();
        let mut v = match self {
            Difference::OnlyReviewed(e) => json!({"change": "only-reviewed", "effect": effect(e)}),
            Difference::OnlyNew(e) => json!({"change": "only-new", "effect": effect(e)}),
            Difference::BeforeChanged {
                effect: e,
                reviewed,
                now,
                at,
                reviewed_after,
            } => {
                let mut v = json!({
                    "change": "before-changed",
                    "effect": effect(e),
                    "at": at,
                    "what": reviewed.difference(now),
                    "reviewed": reviewed,
                    "now": now,
                });
                if let Some(a) = reviewed_after {
                    v["reviewed_after"] = json!(a);
                }
                v
            }
        };
        v["type"] = json!("plan-difference");
        v["path"] = json!(self.path());
        v
    }

    /// The path the line is about.
    pub fn path(&self) -> &str {
        match self {
            Difference::OnlyReviewed(e) | Difference::OnlyNew(e) => &e.path,
            Difference::BeforeChanged { effect, at, .. } => match (at.as_str(), &effect.to) {
                ("to", Some(to)) => to,
                _ => &effect.path,
            },
        }
    }
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Difference::OnlyReviewed(e) => write!(f, "- only in the reviewed plan: {e}"),
            Difference::OnlyNew(e) => write!(f, "+ only in the new plan:      {e}"),
            Difference::BeforeChanged {
                effect,
                reviewed,
                now,
                reviewed_after,
                ..
            } => {
                write!(
                    f,
                    "~ changed before-state:     {} {}: {} (reviewed: {reviewed}; now: {now})",
                    effect.op,
                    visible(self.path()),
                    reviewed.difference(now)
                )?;
                match reviewed_after {
                    Some(_) => write!(f, "; it would now leave {}", effect.after),
                    None => Ok(()),
                }
            }
        }
    }
}

/// How `new` differs from `reviewed`, effect by effect, in plan order:
/// empty when their effects are the same. Effects are aligned on what they
/// do (op, paths, after-states); an effect with the same op and paths that
/// expects another before-state is one `BeforeChanged` line, whatever it
/// would leave.
pub fn differences(reviewed: &CanonicalPlan, new: &CanonicalPlan) -> Vec<Difference> {
    let old: Vec<_> = reviewed.effects.iter().map(PlannedEffect::action).collect();
    let now: Vec<_> = new.effects.iter().map(PlannedEffect::action).collect();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    let mut out = Vec::new();
    for op in
        similar::capture_diff_slices_deadline(similar::Algorithm::Myers, &old, &now, Some(deadline))
    {
        let (o, n) = (op.old_range(), op.new_range());
        match op.tag() {
            similar::DiffTag::Equal => {
                for (a, b) in o.zip(n) {
                    let (a, b) = (&reviewed.effects[a], &new.effects[b]);
                    before_changes(a, b, &mut out);
                }
            }
            _ => {
                let old: Vec<&PlannedEffect> = o.map(|i| &reviewed.effects[i]).collect();
                let now: Vec<&PlannedEffect> = n.map(|i| &new.effects[i]).collect();
                changed_hunk(&old, &now, &mut out);
            }
        }
    }
    out
}

/// A stretch where the plans differ: an effect on the same path with the
/// same op in both, expecting another before-state, is one line (the
/// cause; its after-state may differ as a consequence); the rest are only
/// in one plan.
fn changed_hunk(old: &[&PlannedEffect], now: &[&PlannedEffect], out: &mut Vec<Difference>) {
    let same = |a: &PlannedEffect, b: &PlannedEffect| {
        (&a.op, &a.path, &a.to) == (&b.op, &b.path, &b.to)
            && (a.before != b.before || a.before_to != b.before_to)
    };
    let mut paired = vec![None; old.len()];
    let mut taken = vec![false; now.len()];
    for (i, a) in old.iter().enumerate() {
        if let Some(j) = (0..now.len()).find(|&j| !taken[j] && same(a, now[j])) {
            (paired[i], taken[j]) = (Some(j), true);
        }
    }
    for (i, a) in old.iter().enumerate() {
        match paired[i] {
            Some(j) => before_changes(a, now[j], out),
            None => out.push(Difference::OnlyReviewed((*a).clone())),
        }
    }
    out.extend(
        now.iter()
            .zip(&taken)
            .filter(|(_, t)| !**t)
            .map(|(b, _)| Difference::OnlyNew((*b).clone())),
    );
}

fn before_changes(a: &PlannedEffect, b: &PlannedEffect, out: &mut Vec<Difference>) {
    let reviewed_after = (a.after != b.after).then(|| a.after.clone());
    if a.before != b.before {
        out.push(Difference::BeforeChanged {
            effect: Box::new(b.clone()),
            reviewed: a.before.clone(),
            now: b.before.clone(),
            at: "path".into(),
            reviewed_after: reviewed_after.clone(),
        });
    }
    if a.before_to != b.before_to {
        let absent = StateForm::Absent;
        out.push(Difference::BeforeChanged {
            effect: Box::new(b.clone()),
            reviewed: a.before_to.clone().unwrap_or(absent.clone()),
            now: b.before_to.clone().unwrap_or(absent),
            at: "to".into(),
            reviewed_after: a.before.eq(&b.before).then_some(reviewed_after).flatten(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fuzzing::Rng;
    use crate::grants::VPath;
    use crate::plan::Op;
    use std::path::Path;
    use std::sync::Arc;

    fn made_for() -> MadeFor {
        MadeFor::new(
            &"ab".repeat(32),
            &[json!({"path": "/srv/app", "access": "read-write"})],
            &BTreeMap::from([("key".to_string(), "max_conn".to_string())]),
            "web-1",
        )
    }

    fn path(rng: &mut Rng) -> VPath {
        VPath::parse(&format!(
            "/srv/app/{}",
            ["a", "b", "c", "d/e"][rng.below(4)]
        ))
        .unwrap()
    }

    fn state(rng: &mut Rng) -> State {
        match rng.below(4) {
            0 => State::Absent,
            1 => State::file(
                format!("v{}", rng.below(3)).as_bytes(),
                0o600 + rng.below(2) as u32 * 0o44,
                1000,
                1000 + rng.below(2) as u32,
            ),
            2 => State::Dir {
                mode: 0o755,
                uid: 0,
                gid: rng.below(2) as u32,
            },
            _ => State::Symlink {
                target: ["x", "../y"][rng.below(2)].into(),
                uid: 0,
                gid: 0,
            },
        }
    }

    fn effect(rng: &mut Rng) -> Effect {
        let p = path(rng);
        let op = match rng.below(8) {
            0 => Op::Write {
                path: p,
                content: Arc::new(format!("w{}", rng.below(3)).into_bytes()),
                mode: 0o644,
                uid: 1000,
                gid: 1000,
                mtime: None,
            },
            1 => Op::CreateDir {
                path: p,
                mode: 0o755,
            },
            2 => Op::RemoveFile { path: p },
            3 => Op::RemoveDir { path: p },
            4 => Op::Rename {
                from: p,
                to: path(rng),
            },
            5 => Op::SetMode {
                path: p,
                mode: 0o600,
            },
            6 => Op::SetOwner {
                path: p,
                uid: 1,
                gid: 2,
            },
            _ => Op::Symlink {
                target: "t".into(),
                link: p,
            },
        };
        let before_to = matches!(op, Op::Rename { .. }).then(|| state(rng));
        Effect {
            op,
            before: state(rng),
            before_to,
            before_content: None,
            before_to_content: None,
            before_identity: None,
            link_led_out: None,
        }
    }

    fn plan(effects: Vec<Effect>) -> Plan {
        Plan::new(effects, 0)
    }

    fn canon(p: &Plan) -> CanonicalPlan {
        canonical(p, made_for(), Alg::Blake3, 1000, 1000)
    }

    /// Over random plans and one random change each: the digest changes
    /// exactly when the canonical form does, and then the differences name
    /// something; the same plan always has the same digest.
    #[test]
    fn a_digest_changes_exactly_when_the_plan_does_and_the_difference_says_where() {
        let mut rng = Rng::new(0x05ee_db1d);
        let mut changed = 0;
        for _ in 0..3000 {
            let effects: Vec<Effect> = (0..1 + rng.below(6)).map(|_| effect(&mut rng)).collect();
            let a = canon(&plan(effects.clone()));
            assert_eq!(a.digest(), canon(&plan(effects.clone())).digest());
            let mut other = effects.clone();
            let i = rng.below(other.len());
            match rng.below(4) {
                0 => other[i].before = state(&mut rng),
                1 => other[i] = effect(&mut rng),
                2 => {
                    other.remove(i);
                }
                _ => other.insert(i, effect(&mut rng)),
            }
            let b = canon(&plan(other));
            let diffs = differences(&a, &b);
            if a == b {
                assert_eq!(a.digest(), b.digest());
                assert!(diffs.is_empty(), "{diffs:?}");
            } else {
                changed += 1;
                assert_ne!(a.digest(), b.digest());
                assert!(!diffs.is_empty(), "{a:?}\n{b:?}");
            }
        }
        assert!(changed > 2000, "the generator changed only {changed} plans");
    }

    #[test]
    fn a_changed_before_state_is_one_line_even_when_it_changes_the_after_state() {
        let p = VPath::parse("/srv/app/a").unwrap();
        let write = |before: State| Effect {
            op: Op::Write {
                path: p.clone(),
                content: Arc::new(b"max_conn = 50\n".to_vec()),
                mode: before_mode(&before),
                uid: 0,
                gid: 0,
                mtime: None,
            },
            before,
            before_to: None,
            before_content: None,
            before_to_content: None,
            before_identity: None,
            link_led_out: None,
        };
        fn before_mode(s: &State) -> u32 {
            match s {
                State::File { mode, .. } => *mode,
                _ => 0o644,
            }
        }
        let a = canon(&plan(vec![write(State::file(b"20", 0o644, 0, 0))]));
        let b = canon(&plan(vec![write(State::file(b"30", 0o600, 0, 0))]));
        let diffs = differences(&a, &b);
        assert_eq!(diffs.len(), 1, "{diffs:?}");
        let line = diffs[0].to_string();
        assert!(
            line.starts_with("~ changed before-state:     write /srv/app/a: content"),
            "{line}"
        );
        assert!(line.contains("it would now leave file"), "{line}");
        assert!(diffs[0].to_json()["reviewed_after"].is_object());
    }

    #[test]
    fn op_names_are_the_json_names() {
        let mut rng = Rng::new(3);
        for _ in 0..200 {
            let e = effect(&mut rng);
            assert_eq!(serde_json::to_value(&e.op).unwrap()["op"], e.op.name());
        }
    }

    #[test]
    fn what_a_plan_was_made_for_is_part_of_its_digest() {
        let p = canon(&plan(vec![]));
        let mut q = p.clone();
        q.made_for.host = "web-2".into();
        assert_ne!(p.digest(), q.digest());
        let mut q = p.clone();
        q.made_for.params.insert("value".into(), "1".into());
        assert_ne!(p.digest(), q.digest());
    }

    #[test]
    fn a_saved_plan_reads_back_and_an_edit_is_caught() {
        let mut rng = Rng::new(7);
        let p = canon(&plan((0..4).map(|_| effect(&mut rng)).collect()));
        let made = Made {
            dry_run: "r".into(),
            time: "t".into(),
            fix: "f".into(),
            fix_name: "n".into(),
            outcome: "planned".into(),
            idempotent: Some(true),
        };
        let file = PlanFile::new(p, made).unwrap();
        let v: Value = serde_json::from_str(&file.to_text()).unwrap();
        let back = PlanFile::from_value(v.clone(), Path::new("p.json")).unwrap();
        assert_eq!(back.plan, file.plan);
        let mut edited = v.clone();
        edited["plan"]["effects"][0]["path"] = json!("/etc/shadow");
        assert!(matches!(
            PlanFile::from_value(edited, Path::new("p.json")),
            Err(PlanFileError::Tampered { .. })
        ));
        let mut newer = v;
        newer["format"] = json!(2);
        assert!(matches!(
            PlanFile::from_value(newer, Path::new("p.json")),
            Err(PlanFileError::Version { .. })
        ));
    }
}
