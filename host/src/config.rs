//! The host's configuration: `/etc/defops-wasm/config.toml`, or the file
//! `--config` (or `DEFOPS_CONFIG`) names. Validated strictly: an unknown
//! key, a bad value or a bad window is an error naming the file and line.
//!
//! ```toml
//! fips = false            # true: SHA-256 instead of blake3 everywhere
//! # fips-accept-unvalidated = true   # FIPS mode without the FIPS build
//!
//! [change-window]
//! time-zone = "Europe/Berlin"
//! allow = ["Mon-Fri 09:00-16:00"]
//! holidays = ["2026-12-24", "2026-12-25"]
//! freeze = [{ from = "2026-12-19 18:00", to = "2027-01-04", reason = "year-end freeze" }]
//!
//! [dry-run-first]
//! required = true
//! max-age = "24h"
//!
//! [approval]
//! required = true
//! allowed-signers = "/etc/defops-wasm/allowed_signers"
//!
//! [rollback]
//! keep-replaced = true
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::window::Window;

/// Where the configuration is read from unless `--config` says otherwise.
pub const DEFAULT_PATH: &str = "/etc/defops-wasm/config.toml";

/// The largest configuration file read.
const MAX_SIZE: u64 = 1 << 20;

/// The settings, with defaults for what the file leaves out.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file read, if any.
    pub path: Option<PathBuf>,
    /// When real runs may start; `None`: at any time.
    pub window: Option<Window>,
    pub dry_run_first: DryRunFirst,
    pub approval: ApprovalRule,
    /// FIPS mode: SHA-256 for every digest and the journal's chain.
    pub fips: bool,
    /// FIPS mode on a binary built without the FIPS module: approved
    /// algorithms, unvalidated implementation (journaled).
    pub fips_accept_unvalidated: bool,
    /// Real runs keep the files they replace for an exact, rename-only
    /// rollback (`commit::Kept`).
    pub keep_replaced: bool,
}

impl Config {
    /// Chooses the process's digest and, with `fips = true`, enters FIPS
    /// mode (the module's status checked; refused on a binary without the
    /// module unless `fips-accept-unvalidated`). Before anything is read.
    pub fn apply_crypto(&self) -> Result<(), String> {
        if self.fips {
            crate::crypto::enter_fips_mode(self.fips_accept_unvalidated).map_err(
                |e| match &self.path {
                    Some(p) => format!("{}: {e}", p.display()),
                    None => e,
                },
            )?;
        }
        crate::digest::choose(self.digest())
    }

    /// The digest algorithm runs use.
    pub fn digest(&self) -> crate::digest::Alg {
        match self.fips {
            true => crate::digest::Alg::Sha256,
            false => crate::digest::Alg::Blake3,
        }
    }
}

/// Whether every real run needs a reviewer's signature, and whose.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApprovalRule {
    pub required: bool,
    pub allowed_signers: Option<PathBuf>,
}

/// Whether a real run needs a recent successful dry-run of the same fix,
/// grants and params.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DryRunFirst {
    pub required: bool,
    pub max_age: Duration,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            path: None,
            window: None,
            dry_run_first: DryRunFirst {
                required: true,
                max_age: Duration::from_secs(24 * 3600),
            },
            approval: ApprovalRule::default(),
            fips: false,
            fips_accept_unvalidated: false,
            keep_replaced: false,
        }
    }
}

/// A configuration that cannot be used; the message names file and line.
#[derive(Debug, thiserror::Error)]
#[error("{path}{}: {message}; fix the configuration file", line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct ConfigError {
    pub path: String,
    pub line: Option<usize>,
    pub message: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawConfig {
    fips: Option<Spanned<bool>>,
    fips_accept_unvalidated: Option<Spanned<bool>>,
    change_window: Option<RawWindow>,
    dry_run_first: Option<RawDryRunFirst>,
    approval: Option<RawApproval>,
    rollback: Option<RawRollback>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawRollback {
    keep_replaced: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawApproval {
    required: Option<bool>,
    allowed_signers: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawWindow {
    time_zone: Spanned<String>,
    #[serde(default)]
    allow: Vec<Spanned<String>>,
    #[serde(default)]
    holidays: Vec<Spanned<String>>,
    #[serde(default)]
    freeze: Vec<RawFreeze>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawFreeze {
    from: Spanned<String>,
    to: Spanned<String>,
    reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawDryRunFirst {
    required: Option<bool>,
    max_age: Option<Spanned<String>>,
}

impl Config {
    /// Reads `explicit`, or the default file if it exists (defaults if not).
    pub fn load(explicit: Option<&Path>) -> Result<Config, ConfigError> {
        let path = match explicit {
            Some(p) => p.to_path_buf(),
            None if Path::new(DEFAULT_PATH).exists() => PathBuf::from(DEFAULT_PATH),
            None => return Ok(Config::default()),
        };
        let shown = path.display().to_string();
        let fail = |message: String| ConfigError {
            path: shown.clone(),
            line: None,
            message,
        };
        let file =
            crate::regular_file::open(&path).map_err(|e| fail(format!("cannot read it: {e}")))?;
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::Read::take(file, MAX_SIZE + 1), &mut text)
            .map_err(|e| fail(format!("cannot read it: {e}")))?;
        if text.len() as u64 > MAX_SIZE {
            return Err(fail(format!("larger than {MAX_SIZE} bytes")));
        }
        let mut config = Config::parse(&text).map_err(|(line, message)| ConfigError {
            path: shown.clone(),
            line,
            message,
        })?;
        config.path = Some(path);
        Ok(config)
    }

    /// Parses the text of a configuration file; on error the line (1-based)
    /// and what is wrong.
    pub fn parse(text: &str) -> Result<Config, (Option<usize>, String)> {
        let line_of = |at: usize| Some(text[..at.min(text.len())].matches('\n').count() + 1);
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            (
                e.span().and_then(|s| line_of(s.start)),
                e.message().trim().replace('\n', " "),
            )
        })?;
        let bad = |s: &std::ops::Range<usize>, m: String| (line_of(s.start), m);
        let mut config = Config {
            fips: raw.fips.as_ref().is_some_and(|f| *f.get_ref()),
            fips_accept_unvalidated: raw
                .fips_accept_unvalidated
                .as_ref()
                .is_some_and(|f| *f.get_ref()),
            ..Config::default()
        };
        if let Some(a) = &raw.fips_accept_unvalidated
            && !config.fips
        {
            return Err(bad(
                &a.span(),
                "fips-accept-unvalidated only means something with fips = true; remove it or set fips = true".into(),
            ));
        }
        if let Some(d) = raw.dry_run_first {
            if let Some(r) = d.required {
                config.dry_run_first.required = r;
            }
            if let Some(age) = d.max_age {
                config.dry_run_first.max_age = crate::cli::parse_duration(age.get_ref())
                    .map_err(|e| bad(&age.span(), format!("max-age: {e}")))?;
            }
        }
        if let Some(r) = raw.rollback {
            config.keep_replaced = r.keep_replaced.unwrap_or(false);
        }
        if let Some(a) = raw.approval {
            config.approval.required = a.required.unwrap_or(false);
            if let Some(p) = a.allowed_signers {
                if !p.get_ref().starts_with('/') {
                    return Err(bad(
                        &p.span(),
                        format!("allowed-signers: {:?} is not an absolute path", p.get_ref()),
                    ));
                }
                config.approval.allowed_signers = Some(PathBuf::from(p.into_inner()));
            }
            if config.approval.required && config.approval.allowed_signers.is_none() {
                return Err((
                    None,
                    "[approval] required = true needs allowed-signers = \"/path/to/allowed_signers\"".into(),
                ));
            }
        }
        if let Some(w) = raw.change_window {
            let mut window = Window::new(w.time_zone.get_ref())
                .map_err(|e| bad(&w.time_zone.span(), format!("time-zone: {e}")))?;
            for a in &w.allow {
                window
                    .allow(a.get_ref())
                    .map_err(|e| bad(&a.span(), format!("allow: {e}")))?;
            }
            for h in &w.holidays {
                window
                    .holiday(h.get_ref())
                    .map_err(|e| bad(&h.span(), format!("holidays: {e}")))?;
            }
            for f in &w.freeze {
                window
                    .freeze(f.from.get_ref(), f.to.get_ref(), f.reason.as_deref())
                    .map_err(|e| bad(&f.from.span(), format!("freeze: {e}")))?;
            }
            config.window = Some(window);
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_packaged_config_is_the_defaults_and_its_examples_parse() {
        let text = include_str!("../../packaging/config.toml");
        let c = Config::parse(text).unwrap();
        let d = Config::default();
        assert_eq!(
            (
                c.fips,
                c.window.is_none(),
                c.dry_run_first,
                c.approval,
                c.keep_replaced
            ),
            (d.fips, true, d.dry_run_first, d.approval, false)
        );
        // Every commented example, uncommented, is a valid configuration.
        let examples: String = text
            .lines()
            .filter_map(|l| l.strip_prefix('#'))
            .filter(|l| l.starts_with('[') || l.contains(" = "))
            .map(|l| format!("{l}\n"))
            .collect();
        let c = Config::parse(&examples).unwrap_or_else(|e| panic!("{e:?}\n{examples}"));
        assert!(c.window.is_some() && c.dry_run_first.required);
    }

    fn err(text: &str) -> (Option<usize>, String) {
        Config::parse(text).expect_err("should be refused")
    }

    #[test]
    fn defaults_without_a_file() {
        let c = Config::parse("").unwrap();
        assert!(c.window.is_none());
        assert!(c.dry_run_first.required);
        assert_eq!(c.dry_run_first.max_age, Duration::from_secs(86_400));
    }

    #[test]
    fn a_full_file() {
        let c = Config::parse(
            "[change-window]\ntime-zone = \"Europe/Berlin\"\nallow = [\"Mon-Fri 09:00-16:00\", \"Sat 10:00-12:00\"]\n\
             holidays = [\"2026-12-24\"]\n\
             freeze = [{ from = \"2026-12-19 18:00\", to = \"2027-01-04\", reason = \"year end\" }]\n\
             [dry-run-first]\nrequired = false\nmax-age = \"2h\"\n",
        )
        .unwrap();
        assert!(c.window.is_some());
        assert!(!c.dry_run_first.required);
        assert_eq!(c.dry_run_first.max_age, Duration::from_secs(7200));
    }

    #[test]
    fn errors_name_the_line() {
        let (line, m) = err("[change-window]\ntime-zone = \"UTC\"\nalow = []\n");
        assert_eq!(line, Some(3), "{m}");
        assert!(m.contains("unknown field `alow`"), "{m}");

        let (line, m) = err("[dry-run-first]\n\nmax-age = \"soon\"\n");
        assert_eq!(line, Some(3), "{m}");
        assert!(m.contains("max-age"), "{m}");

        let (line, m) = err("[change-window]\ntime-zone = \"Mars/Olympus\"\n");
        assert_eq!(line, Some(2), "{m}");
        assert!(m.contains("Mars/Olympus"), "{m}");

        let (line, m) = err(
            "[change-window]\ntime-zone = \"UTC\"\nallow = [\n  \"Mon-Fri 09:00-16:00\",\n  \"Fun 09:00-10:00\",\n]\n",
        );
        assert_eq!(line, Some(5), "{m}");
        assert!(m.contains("Fun"), "{m}");

        let (line, m) = err("[dry-run-first]\nrequired = \"yes\"\n");
        assert_eq!(line, Some(2), "{m}");

        let (line, _) = err("[change-window\n");
        assert_eq!(line, Some(1));

        let (line, m) = err("[approval]\nrequired = true\nallowed-signers = \"signers\"\n");
        assert_eq!(line, Some(3), "{m}");
        let (_, m) = err("[approval]\nrequired = true\n");
        assert!(m.contains("allowed-signers"), "{m}");

        let (line, m) = err("[windows]\n");
        assert_eq!(line, Some(1), "{m}");
        assert!(m.contains("unknown field `windows`"), "{m}");

        let (line, m) = err("\nfips-accept-unvalidated = true\n");
        assert_eq!(line, Some(2), "{m}");
        assert!(m.contains("with fips = true"), "{m}");

        let (line, m) = err("[change-window]\nallow = []\n");
        assert!(m.contains("time-zone"), "{line:?} {m}");
    }
}
