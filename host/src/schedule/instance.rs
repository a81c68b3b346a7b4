//! One scheduled fix: a TOML file per instance in the schedule directory
//! (`/etc/defops-wasm/scheduled/NAME.toml`), which is what the unit
//! `defops-wasm-fix@NAME.service` runs.
//!
//! ```toml
//! fix = "/usr/share/defops-wasm/fixes/config-set.wasm"
//! mode = "dry-run"                 # or "real", after `schedule promote`
//! on-calendar = "*:0/15"           # systemd's OnCalendar=
//! allow = ["/var/lib/app"]
//! allow-ro = []
//! allow-log = []
//! timeout = "60s"
//!
//! [params]
//! file = "/var/lib/app/app.conf"
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Where the instance files live unless `--dir` says otherwise.
pub const DEFAULT_DIR: &str = "/etc/defops-wasm/scheduled";

/// The largest instance file read.
const MAX_SIZE: u64 = 1 << 20;

/// What a scheduled run does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Plan only: show what would change, change nothing.
    DryRun,
    /// A dry-run, then (when it planned changes and proved idempotent) the
    /// real run of exactly that plan.
    Real,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::DryRun => "dry-run",
            Mode::Real => "real",
        }
    }
}

/// Who moved an instance from dry-run to real, on which dry-run, and what
/// that dry-run covered: the fix by its SHA-256, and the digest of the
/// grants, log grants, params and timeout ([`Instance::basis`]). A real
/// run happens only while both still hold.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Promoted {
    pub time: String,
    pub by: String,
    pub dry_run: String,
    pub fix_sha256: String,
    pub basis: String,
}

/// The instance file's content.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Instance {
    pub fix: PathBuf,
    pub mode: Mode,
    pub on_calendar: String,
    #[serde(default)]
    pub allow: Vec<PathBuf>,
    #[serde(default)]
    pub allow_ro: Vec<PathBuf>,
    #[serde(default)]
    pub allow_log: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// When `schedule add` wrote it: a dry-run older than this is of an
    /// earlier schedule of the same name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub added: Option<String>,
    /// Unique to this `add`: its dry-runs carry it (`schedule_generation`
    /// in their journal header), so a schedule added again under the same
    /// name does not inherit the old one's dry-runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<String>,
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promoted: Option<Promoted>,
}

/// An instance file that cannot be used; the message names the file (and
/// the line, when there is one) and what to do.
#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    #[error(
        "{0:?} is not a schedule name: use 1 to 64 letters, digits, '-' and '_', starting with a letter or digit"
    )]
    BadName(String),
    #[error(
        "no scheduled fix named {name:?} ({path} does not exist); see `defops-wasm schedule list`"
    )]
    Missing { name: String, path: String },
    #[error("refused: {0}")]
    Untrusted(String),
    #[error("{path}{}: {message}; fix the file or add the schedule again with `defops-wasm schedule add --replace`", line.map(|l| format!(":{l}")).unwrap_or_default())]
    Bad {
        path: String,
        line: Option<usize>,
        message: String,
    },
}

/// Checks a schedule name: it becomes a file name and a systemd instance
/// name, so it is kept to what needs no escaping in either.
pub fn check_name(name: &str) -> Result<(), InstanceError> {
    let ok = (1..=64).contains(&name.len())
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    match ok {
        true => Ok(()),
        false => Err(InstanceError::BadName(name.to_string())),
    }
}

/// The instance file of `name` in `dir`.
pub fn path_of(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.toml"))
}

/// Whether a file or directory could have been changed by someone other
/// than root or the user running: owned by another user, or writable by
/// group or others (a directory above the last may be sticky instead, as
/// /tmp is).
fn untrusted(meta: &std::fs::Metadata, last: bool) -> bool {
    use std::os::unix::fs::MetadataExt;
    let me = rustix::process::geteuid().as_raw();
    let sticky = meta.is_dir() && meta.mode() & 0o1000 != 0 && !last;
    !(meta.uid() == 0 || meta.uid() == me) || (meta.mode() & 0o022 != 0 && !sticky)
}

/// Refuses `path` (a file, opened already) when it or any directory above
/// it could have been changed by someone else: a schedule names what runs
/// as root, with what grants.
pub fn check_trusted(path: &Path, meta: &std::fs::Metadata) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let why = |p: &Path, m: &std::fs::Metadata| {
        format!(
            "{} is owned by uid {} with mode {:04o}: someone else could change what a schedule runs; make it and every directory above it owned by root and not group- or world-writable (chmod go-w)",
            p.display(),
            m.uid(),
            m.mode() & 0o7777
        )
    };
    if untrusted(meta, true) {
        return Err(why(path, meta));
    }
    let mut last = true;
    for dir in path
        .ancestors()
        .skip(1)
        .filter(|d| !d.as_os_str().is_empty())
    {
        let m = std::fs::metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        if untrusted(&m, last) {
            return Err(why(dir, &m));
        }
        last = false;
    }
    Ok(())
}

/// Opens `path` for reading without following a symlink at its end, and
/// checks what was opened (the descriptor, so it cannot be swapped after
/// the check) and every directory above it.
pub fn open_trusted(path: &Path) -> std::io::Result<Result<std::fs::File, String>> {
    use std::os::unix::fs::OpenOptionsExt;
    let flags = rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags.bits() as i32)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Ok(Err(format!("{} is not a regular file", path.display())));
    }
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    Ok(check_trusted(&abs, &meta).map(|()| file))
}

impl Instance {
    /// Reads and checks the instance `name` in `dir`.
    pub fn load(dir: &Path, name: &str) -> Result<Instance, InstanceError> {
        Instance::load_from(dir, name, false)
    }

    /// [`Instance::load`], refusing ([`InstanceError::Untrusted`]) a file
    /// that anyone but root (or the user running) could have written.
    pub fn load_trusted(dir: &Path, name: &str) -> Result<Instance, InstanceError> {
        Instance::load_from(dir, name, true)
    }

    fn load_from(dir: &Path, name: &str, trusted: bool) -> Result<Instance, InstanceError> {
        check_name(name)?;
        let path = path_of(dir, name);
        let shown = path.display().to_string();
        let fail = |message: String| InstanceError::Bad {
            path: shown.clone(),
            line: None,
            message,
        };
        let opened = match trusted {
            true => open_trusted(&path).map(|r| r.map_err(InstanceError::Untrusted)),
            false => crate::regular_file::open(&path).map(Ok),
        };
        let file = match opened {
            Ok(Ok(f)) => f,
            Ok(Err(e)) => return Err(e),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(InstanceError::Missing {
                    name: name.to_string(),
                    path: shown,
                });
            }
            Err(e) => return Err(fail(format!("cannot read it: {e}"))),
        };
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::Read::take(file, MAX_SIZE + 1), &mut text)
            .map_err(|e| fail(format!("cannot read it: {e}")))?;
        if text.len() as u64 > MAX_SIZE {
            return Err(fail(format!("larger than {MAX_SIZE} bytes")));
        }
        Instance::parse(&text).map_err(|(line, message)| InstanceError::Bad {
            path: shown,
            line,
            message,
        })
    }

    /// Parses an instance file's text; on error the line (1-based) and
    /// what is wrong.
    pub fn parse(text: &str) -> Result<Instance, (Option<usize>, String)> {
        let line_of = |at: usize| Some(text[..at.min(text.len())].matches('\n').count() + 1);
        let inst: Instance = toml::from_str(text).map_err(|e| {
            (
                e.span().and_then(|s| line_of(s.start)),
                e.message().trim().replace('\n', " "),
            )
        })?;
        inst.check().map_err(|m| (None, m))?;
        Ok(inst)
    }

    /// What `add` checks too: absolute paths, a usable calendar and
    /// timeout, parameter names as `--param` takes them.
    pub fn check(&self) -> Result<(), String> {
        let absolute = |what: &str, p: &Path| match p.is_absolute() {
            true => Ok(()),
            false => Err(format!("{what} {} is not an absolute path", p.display())),
        };
        absolute("fix", &self.fix)?;
        for p in &self.allow {
            absolute("allow", p)?;
        }
        for p in &self.allow_ro {
            absolute("allow-ro", p)?;
        }
        for g in &self.allow_log {
            absolute("allow-log", Path::new(g))?;
        }
        super::systemd::check_calendar_text(&self.on_calendar)
            .map_err(|e| format!("on-calendar: {e}"))?;
        if let Some(t) = &self.timeout {
            crate::cli::parse_timeout(t).map_err(|e| format!("timeout: {e}"))?;
        }
        for name in self.params.keys() {
            let ok = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if !ok {
                return Err(format!(
                    "params: {name:?} is not a parameter name (letters, digits, _ and -)"
                ));
            }
        }
        Ok(())
    }

    /// The digest of what a promotion covers besides the fix itself: the
    /// grants and log grants (canonical: a link repointed since asks for a
    /// new promotion), params and timeout.
    pub fn basis(&self) -> String {
        let canon = |p: &PathBuf| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone());
        let logs: Vec<String> = self
            .allow_log
            .iter()
            .map(|g| crate::logs::canonical_glob(g))
            .collect();
        let v = serde_json::json!({
            "allow": self.allow.iter().map(canon).collect::<Vec<_>>(),
            "allow_ro": self.allow_ro.iter().map(canon).collect::<Vec<_>>(),
            "allow_log": logs,
            "params": self.params,
            "timeout": self.timeout,
        });
        crate::digest::Alg::Sha256.hex(v.to_string().as_bytes())
    }

    /// The file's text: a header saying what manages it, then the TOML.
    pub fn to_text(&self, name: &str) -> String {
        let body = toml::to_string(self).unwrap_or_default();
        format!(
            "# The scheduled fix {name:?}, run by defops-wasm-fix@{name}.service.\n\
             # Managed with `defops-wasm schedule` (add --replace, promote, demote, remove).\n\n{body}"
        )
    }

    /// The arguments of the `run` this instance makes (after `run`).
    pub fn run_args(&self, dry_run: bool) -> Vec<std::ffi::OsString> {
        let mut argv: Vec<std::ffi::OsString> = vec![self.fix.clone().into()];
        let mut flag = |f: &str, v: std::ffi::OsString| {
            argv.push(f.into());
            argv.push(v);
        };
        for p in &self.allow {
            flag("--allow", p.clone().into());
        }
        for p in &self.allow_ro {
            flag("--allow-ro", p.clone().into());
        }
        for g in &self.allow_log {
            flag("--allow-log", g.into());
        }
        for (k, v) in &self.params {
            flag("--param", format!("{k}={v}").into());
        }
        if let Some(t) = &self.timeout {
            flag("--timeout", t.into());
        }
        if dry_run {
            argv.push("--dry-run".into());
        }
        argv
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Instance {
        Instance {
            fix: "/usr/share/defops-wasm/fixes/config-set.wasm".into(),
            mode: Mode::DryRun,
            on_calendar: "*:0/15".into(),
            allow: vec!["/var/lib/app".into()],
            allow_ro: vec![],
            allow_log: vec![],
            timeout: Some("30s".into()),
            added: Some("2026-12-02T09:00:00Z".into()),
            generation: Some("g1".into()),
            params: [("key".to_string(), "a \"quoted\" value\n".to_string())].into(),
            promoted: Some(Promoted {
                time: "2026-12-02T10:00:00Z".into(),
                by: "root".into(),
                dry_run: "r1".into(),
                fix_sha256: "ab".into(),
                basis: "cd".into(),
            }),
        }
    }

    #[test]
    fn round_trips_through_its_text() {
        let inst = sample();
        assert_eq!(Instance::parse(&inst.to_text("x")).unwrap(), inst);
    }

    #[test]
    fn names() {
        for good in ["a", "config-set", "db_1", &"x".repeat(64)] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", "-a", "a/b", "..", "a.b", "a@b", "a b", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bad_files_name_the_line() {
        let text = "fix = \"/f.wasm\"\nmode = \"sometimes\"\non-calendar = \"daily\"\n";
        let (line, msg) = Instance::parse(text).unwrap_err();
        assert_eq!(line, Some(2), "{msg}");
        let text = "fix = \"f.wasm\"\nmode = \"real\"\non-calendar = \"daily\"\n";
        assert!(Instance::parse(text).unwrap_err().1.contains("absolute"));
        let text = "fix = \"/f.wasm\"\nmode = \"real\"\non-calendar = \"daily\"\nextra = 1\n";
        assert_eq!(Instance::parse(text).unwrap_err().0, Some(4));
    }
}
