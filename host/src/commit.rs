//! The one executor that applies a plan to the disk.
//!
//! Before anything is written, every effect whose path the plan has not
//! touched earlier is checked against the disk: if any file changed since the
//! fix planned (someone edited it meanwhile), nothing is applied. Each effect
//! is then checked again right before it is applied, from descriptors, so a
//! change that lands in between stops the commit at that effect.

use std::collections::HashSet;
use std::io;

use crate::disk::{self, Loc};
use crate::grants::{Grants, VPath};
use crate::plan::{Effect, Op, Plan, State};

/// Why a commit stopped.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// The disk no longer matches the state the plan expects.
    #[error(
        "{path} changed since the plan was made ({attribute}): expected {expected}, found {found}"
    )]
    Drift {
        path: VPath,
        attribute: &'static str,
        expected: Box<State>,
        found: Box<State>,
        /// Effects applied before this one.
        applied: usize,
    },
    /// The file system refused an operation.
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: VPath,
        #[source]
        source: io::Error,
        applied: usize,
    },
}

impl CommitError {
    /// How many effects reached the disk before the commit stopped.
    pub fn applied(&self) -> usize {
        match self {
            CommitError::Drift { applied, .. } | CommitError::Io { applied, .. } => *applied,
        }
    }
}

fn locate(grants: &Grants, path: &VPath) -> io::Result<Loc> {
    let grant = grants.find(path).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::PermissionDenied,
            "outside the granted directories",
        )
    })?;
    disk::locate(grant, path)
}

/// Checks `path` is in state `expected` now.
fn check(
    grants: &Grants,
    path: &VPath,
    expected: &State,
    applied: usize,
) -> Result<(), CommitError> {
    let io_err = |source| CommitError::Io {
        op: "check",
        path: path.clone(),
        source,
        applied,
    };
    let found = match locate(grants, path) {
        Ok(loc) => loc.state().map_err(io_err)?,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            State::Absent
        }
        Err(e) => return Err(io_err(e)),
    };
    match expected.difference(&found) {
        None => Ok(()),
        Some(attribute) => Err(CommitError::Drift {
            path: path.clone(),
            attribute,
            expected: Box::new(expected.clone()),
            found: Box::new(found),
            applied,
        }),
    }
}

fn expectations(effect: &Effect) -> impl Iterator<Item = (&VPath, &State)> {
    std::iter::once((effect.op.path(), &effect.before))
        .chain(effect.op.second_path().zip(effect.before_to.as_ref()))
}

/// Applies `plan`; returns the number of effects applied.
pub fn commit(grants: &Grants, plan: &Plan, run_id: &str) -> Result<usize, CommitError> {
    // Everything the plan expects of paths it has not yet touched must hold
    // before the first change.
    let mut touched: HashSet<&VPath> = HashSet::new();
    let mut above_touched: HashSet<VPath> = HashSet::new();
    for effect in &plan.effects {
        for (path, expected) in expectations(effect) {
            let mut ancestors = std::iter::successors(path.parent(), |p| p.parent());
            let fresh = !touched.contains(path)
                && !above_touched.contains(path)
                && !ancestors.any(|a| touched.contains(&a));
            if fresh {
                check(grants, path, expected, 0)?;
            }
        }
        for path in effect.paths() {
            touched.insert(path);
            above_touched.extend(std::iter::successors(path.parent(), |p| p.parent()));
        }
    }

    for (i, effect) in plan.effects.iter().enumerate() {
        for (path, expected) in expectations(effect) {
            check(grants, path, expected, i)?;
        }
        apply(grants, effect, &format!(".defops-tmp-{run_id}-{i}")).map_err(|(path, source)| {
            CommitError::Io {
                op: effect.op.verb(),
                path: path.clone(),
                source,
                applied: i,
            }
        })?;
    }
    Ok(plan.effects.len())
}

/// Applies one effect and syncs the directories it changed.
fn apply<'a>(grants: &Grants, effect: &'a Effect, tmp: &str) -> Result<(), (&'a VPath, io::Error)> {
    let path = effect.op.path();
    let at = |p: &'a VPath| locate(grants, p).map_err(|e| (p, e));
    let loc = at(path)?;
    let done = match &effect.op {
        Op::Write {
            content,
            mode,
            uid,
            gid,
            ..
        } => loc.replace_file(content, *mode, *uid, *gid, tmp),
        Op::CreateDir { mode, .. } => loc.create_dir(*mode),
        Op::RemoveFile { .. } => loc.remove_file(),
        Op::RemoveDir { .. } => loc.remove_dir(),
        Op::SetMode { mode, .. } => loc.set_mode(*mode),
        Op::SetOwner { uid, gid, .. } => loc.set_owner(*uid, *gid),
        Op::Symlink { target, .. } => loc.symlink(target),
        Op::Rename { to, .. } => {
            let dest = at(to)?;
            let no_replace = effect.before_to == Some(State::Absent);
            loc.rename_to(&dest, no_replace)
                .and_then(|()| disk::sync_dir(dest.parent_fd()))
        }
    };
    done.and_then(|()| disk::sync_dir(loc.parent_fd()))
        .map_err(|e| (path, e))
}
