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
    let loaded = journal::load_without(&path, expect_head, super::UNUSED).map_err(|e| {
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
    match in_state_dir(&path, state_dir) {
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

/// Whether `path` is a journal only this user's defops-wasm wrote: a
/// regular file inside the state directory, owned by this user and
/// writable by nobody else.
fn in_state_dir(path: &Path, state_dir: &Path) -> Result<(), String> {
    let real = std::fs::canonicalize(path).map_err(|e| format!("cannot resolve it: {e}"))?;
    let state = std::fs::canonicalize(state_dir).map_err(|e| e.to_string())?;
    if !real.starts_with(&state) {
        return Err(format!(
            "it is outside the state directory {}",
            state.display()
        ));
    }
    let meta = std::fs::symlink_metadata(&real).map_err(|e| e.to_string())?;
    let me = rustix::process::geteuid().as_raw();
    if !meta.is_file() || meta.uid() != me || meta.mode() & 0o022 != 0 {
        return Err("it is not a file only this user can write".into());
    }
    Ok(())
}
