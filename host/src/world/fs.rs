//! `defops:fix/fs`: every call checks its paths, then goes to the overlay.
//! A denial is returned to the fix and also kept for the operator.

use super::defops::fix::fs::Host;
use super::defops::fix::types::{DirEntry, FileKind, Stat as Metadata};
use super::{Denial, RunState};
use crate::disk::Kind;
use crate::grants::VPath;
use crate::overlay::{FsError, Meta};

fn kind(k: Kind) -> FileKind {
    match k {
        Kind::File => FileKind::File,
        Kind::Dir => FileKind::Directory,
        Kind::Symlink => FileKind::Symlink,
        Kind::Other => FileKind::Other,
    }
}

fn metadata(m: Meta) -> Metadata {
    Metadata {
        kind: kind(m.kind),
        size: m.size,
        mode: m.mode,
        uid: m.uid,
        gid: m.gid,
        mtime: m.mtime,
    }
}

impl RunState {
    /// Validates `raw`, runs `f` on it and keeps any denial.
    fn call<T>(
        &mut self,
        call: &'static str,
        raw: &str,
        f: impl FnOnce(&mut Self, &VPath) -> Result<T, FsError>,
    ) -> Result<T, FsError> {
        self.not_aborted()?;
        let result = VPath::parse(raw)
            .map_err(|why| FsError::Denied(format!("{raw:?}: {why}")))
            .and_then(|path| {
                let path = self.overlay.grants().canonical(path);
                f(self, &path)
            });
        if let Err(FsError::Denied(reason)) = &result {
            self.denials.push(Denial {
                call,
                path: raw.to_string(),
                reason: reason.clone(),
            });
        }
        result.map_err(|e| self.until.or_stop(e))
    }

    /// Like [`RunState::call`], for calls with two paths.
    fn call2<T>(
        &mut self,
        call: &'static str,
        a: &str,
        b: &str,
        f: impl FnOnce(&mut Self, &VPath, &VPath) -> Result<T, FsError>,
    ) -> Result<T, FsError> {
        let b = b.to_string();
        self.call(call, a, move |s, a| {
            let b = VPath::parse(&b).map_err(|why| FsError::Denied(format!("{b:?}: {why}")))?;
            let b = s.overlay.grants().canonical(b);
            f(s, a, &b)
        })
    }
}

impl RunState {
    /// Checks the whole plan's containment; each symlink that would lead
    /// out is a denial. The message to end the run with, if any.
    pub fn refuse_escapes(&mut self) -> Option<String> {
        let until = &self.until;
        let escapes = match self.overlay.escapes(&|| until.stop().is_some()) {
            Ok(e) => e,
            // What cannot be checked is refused, like what fails the check.
            Err(e) => {
                self.denials.push(Denial {
                    call: "plan",
                    path: String::new(),
                    reason: format!("the plan could not be checked: {e}"),
                });
                return Some(format!("the plan is refused: it could not be checked: {e}"));
            }
        };
        let first = escapes.first()?.why.clone();
        let n = escapes.len();
        for e in escapes {
            self.denials.push(Denial {
                call: "plan",
                path: e.path.to_string(),
                reason: format!("denied: {}", e.why),
            });
        }
        Some(format!(
            "the plan is refused: {first}{}; nothing was changed",
            match n {
                1 => String::new(),
                n => format!(" (and {} more)", n - 1),
            }
        ))
    }
}

impl Host for RunState {
    fn read(&mut self, path: String) -> Result<Vec<u8>, FsError> {
        self.call("read", &path, |s, p| s.overlay.read(p).map(|c| c.to_vec()))
    }

    fn metadata(&mut self, path: String) -> Result<Metadata, FsError> {
        self.call("metadata", &path, |s, p| {
            s.overlay.metadata(p, true).map(metadata)
        })
    }

    fn symlink_metadata(&mut self, path: String) -> Result<Metadata, FsError> {
        self.call("symlink-metadata", &path, |s, p| {
            s.overlay.metadata(p, false).map(metadata)
        })
    }

    fn list_dir(&mut self, path: String) -> Result<Vec<DirEntry>, FsError> {
        self.call("list-dir", &path, |s, p| {
            let entries = s.overlay.list_dir(p)?;
            Ok(entries
                .into_iter()
                .map(|(name, k)| DirEntry {
                    name,
                    kind: kind(k),
                })
                .collect())
        })
    }

    fn read_link(&mut self, path: String) -> Result<String, FsError> {
        self.call("read-link", &path, |s, p| s.overlay.read_link(p))
    }

    fn write(&mut self, path: String, contents: Vec<u8>) -> Result<(), FsError> {
        self.call("write", &path, |s, p| s.overlay.write(p, contents))
    }

    fn create_dir(&mut self, path: String) -> Result<(), FsError> {
        self.call("create-dir", &path, |s, p| s.overlay.create_dir(p))
    }

    fn remove_file(&mut self, path: String) -> Result<(), FsError> {
        self.call("remove-file", &path, |s, p| s.overlay.remove_file(p))
    }

    fn remove_dir(&mut self, path: String) -> Result<(), FsError> {
        self.call("remove-dir", &path, |s, p| s.overlay.remove_dir(p))
    }

    fn rename(&mut self, from: String, to: String) -> Result<(), FsError> {
        self.call2("rename", &from, &to, |s, a, b| s.overlay.rename(a, b))
    }

    fn set_mode(&mut self, path: String, mode: u32) -> Result<(), FsError> {
        self.call("set-mode", &path, |s, p| s.overlay.set_mode(p, mode))
    }

    fn set_owner(&mut self, path: String, uid: u32, gid: u32) -> Result<(), FsError> {
        self.call("set-owner", &path, |s, p| s.overlay.set_owner(p, uid, gid))
    }

    fn symlink(&mut self, target: String, link: String) -> Result<(), FsError> {
        self.call("symlink", &link, |s, p| s.overlay.symlink(&target, p))
    }
}
