//! Which journals rollback acts on.
//!
//! A hash chain proves only that its records after the first are
//! consistent with the first: anyone can write a self-consistent chain,
//! and a chain cut short is still one. So a journal is acted on when it
//! comes from where only this user's defops-wasm writes (the state
//! directory: 0700, never inside a grant, the file owned by this user and
//! writable by nobody else), or when its head is the one the operator
//! anchored (`--expect-head`, the head printed at the end of the run).
//! Nothing the header says (grants, hash algorithm) is acted on before
//! that; the chain is checked first only to say what is wrong with it.
//! The file is opened once, and where it is and who owns it are decided on
//! that descriptor: the bytes read are the file judged.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::Stop;
use crate::exit::Exit;
use crate::journal::{self, JournalError, Loaded, Verdict};

/// Why a journal was accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trusted {
    /// It is in the state directory.
    StateDir,
    /// Its head is the anchored one.
    Anchored,
}

/// Loads the journal of `run` and decides whether it may be acted on.
pub fn load(
    state_dir: &Path,
    run: &str,
    expect_head: Option<&str>,
) -> Result<(Loaded, Trusted), Stop> {
    let path = journal::locate(state_dir, run).map_err(|e| Stop::new(Exit::Usage, e))?;
    // Opened once: whether it may be trusted is decided on this descriptor,
    // and these are the bytes read (a name swapped after the check, or
    // before the read, changes nothing).
    let file = crate::regular_file::open(&path).map_err(|e| {
        Stop::new(
            Exit::Usage,
            JournalError::Read {
                path: path.clone(),
                why: e.to_string(),
            },
        )
    })?;
    let opened = file
        .metadata()
        .map_err(|e| Stop::new(Exit::Usage, e.to_string()))?;
    let loaded = journal::load_from(&path, file, expect_head, super::UNUSED).map_err(|e| {
        let exit = match e {
            JournalError::Tampered { .. } => Exit::Refused,
            _ => Exit::Usage,
        };
        Stop::new(exit, e)
    })?;
    let head = match &loaded.verdict {
        Verdict::Bad { seq, why } => {
            return Err(Stop::new(
                Exit::Refused,
                JournalError::Tampered {
                    path: path.clone(),
                    seq: *seq,
                    why: why.clone(),
                },
            ));
        }
        Verdict::Intact { head, .. } | Verdict::TornTail { head, .. } => head.clone(),
    };
    if let Some(expected) = expect_head {
        // A torn tail is not compared by the loader: it is here.
        if head != expected {
            return Err(Stop::new(
                Exit::Refused,
                format!(
                    "refusing to roll back {}: its head is {head}, not the expected {expected}: the journal was cut short, extended or replaced",
                    path.display()
                ),
            ));
        }
        return Ok((loaded, Trusted::Anchored));
    }
    match in_state_dir(&path, &opened, state_dir) {
        Ok(()) => Ok((loaded, Trusted::StateDir)),
        Err(why) => Err(Stop::new(
            Exit::Refused,
            format!(
                "refusing to roll back {}: {why}; its hash chain alone proves nothing (anyone can write a consistent one): give --expect-head HEAD, the head printed at the end of that run",
                path.display()
            ),
        )),
    }
}

/// Whether the journal open at `path` (its metadata `opened`, from the
/// descriptor read) is one only this user's defops-wasm wrote: the very
/// file (same device and inode) at `runs/<id>/journal.jsonl` in the state
/// directory, which [`journal::own_journal`] accepts there.
fn in_state_dir(path: &Path, opened: &std::fs::Metadata, state_dir: &Path) -> Result<(), String> {
    let real = std::fs::canonicalize(path).map_err(|e| format!("cannot resolve it: {e}"))?;
    let runs = std::fs::canonicalize(state_dir)
        .map_err(|e| {
            format!(
                "it is not in the state directory, {}, which cannot be read ({e})",
                state_dir.display()
            )
        })?
        .join("runs");
    let id = real
        .strip_prefix(&runs)
        .ok()
        .filter(|rest| rest.components().count() == 2 && rest.ends_with("journal.jsonl"))
        .and_then(|rest| rest.components().next())
        .ok_or_else(|| format!("it is outside the state directory's {}", runs.display()))?;
    let there = runs.join(id).join("journal.jsonl");
    match journal::own_journal_as(&there) {
        Some(id) if id == (opened.dev(), opened.ino()) && opened.uid() == me() => Ok(()),
        Some(_) => Err("it changed while it was read".into()),
        None => Err("it is not a file only this user can write".into()),
    }
}

fn me() -> u32 {
    rustix::process::geteuid().as_raw()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The decision is about the file read, not whatever the name leads to
    /// when it is looked at: a descriptor of another file (the name swapped
    /// between the read and the check) is refused even though the state
    /// directory's journal is this user's own.
    #[test]
    fn trust_is_decided_on_the_file_that_was_read() {
        let state = tempfile::tempdir().unwrap();
        let run = state.path().join("runs").join("r1");
        std::fs::create_dir_all(&run).unwrap();
        let journal = run.join("journal.jsonl");
        std::fs::write(&journal, "{}\n").unwrap();
        let forged = state.path().join("forged.jsonl");
        std::fs::write(&forged, "{}\n").unwrap();
        let meta = |p: &Path| std::fs::File::open(p).unwrap().metadata().unwrap();
        assert_eq!(
            in_state_dir(&journal, &meta(&journal), state.path()),
            Ok(())
        );
        let why = in_state_dir(&journal, &meta(&forged), state.path()).unwrap_err();
        assert!(why.contains("changed while it was read"), "{why}");
        let why = in_state_dir(&forged, &meta(&forged), state.path()).unwrap_err();
        assert!(why.contains("outside"), "{why}");
        // A second name for it: what it says could be written elsewhere.
        std::fs::hard_link(&journal, state.path().join("other")).unwrap();
        let why = in_state_dir(&journal, &meta(&journal), state.path()).unwrap_err();
        assert!(why.contains("only this user"), "{why}");
        // No state directory at all: said so, not "No such file" of the
        // journal, which is there.
        let gone = state.path().join("no-such-state");
        let why = in_state_dir(&forged, &meta(&forged), &gone).unwrap_err();
        assert!(why.contains("not in the state directory"), "{why}");
        assert!(why.contains("no-such-state"), "{why}");
    }
}
