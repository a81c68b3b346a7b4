//! The log-read capability: `--allow-log GLOB` grants read-only access to
//! the log files a glob matches, and the host scans them for the fix.
//!
//! A scan streams each file through fixed buffers (never the whole file in
//! memory, never a mapping of it: a log truncated under a mapping would
//! kill the process), decompressing `.gz` files on the way, and returns
//! what it found oldest file first. Two threads share the work: a large
//! file is cut into two byte ranges, several files are taken in turn
//! (`scan.rs`). The `regex` crate matches in linear time, so no pattern
//! can hang the host, and a scan also stops at the run's deadline.

mod scan;

use std::io;
use std::path::PathBuf;

use regex::bytes::{Regex, RegexBuilder};

use crate::disk::{self, Kind};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;

use crate::grants::{Access, Grant, GrantError, Grants, VPath};
use crate::overlay::FsError;

pub use crate::policy::Until;

/// A matching line returned to the fix is cut at this length.
const LINE_SHOWN: usize = 4096;
/// The most matches one `grep` returns.
pub const MAX_MATCHES: u32 = 10_000;
/// The most lines one `tail` returns.
pub const MAX_TAIL: u32 = 10_000;
/// The longest pattern accepted, and the compiled size limit.
const MAX_PATTERN: usize = 4096;
const REGEX_SIZE_LIMIT: usize = 8 << 20;

/// The granted logs: a directory and a file-name pattern each.
#[derive(Debug, Default)]
pub struct LogGrants {
    dirs: Grants,
    patterns: Vec<LogGlob>,
}

/// One `--allow-log` glob.
#[derive(Debug)]
struct LogGlob {
    /// Its directory as the operator spelled it (through links, maybe).
    spelled: VPath,
    /// The granted directory it is: the canonical path of its grant.
    dir: VPath,
    /// The file-name pattern.
    pattern: String,
}

impl LogGrants {
    /// Opens the directory of every `--allow-log` glob.
    pub fn open(globs: &[String]) -> Result<LogGrants, GrantError> {
        let mut specs = Vec::new();
        let mut patterns = Vec::new();
        for glob in globs {
            let invalid = |why: &str| GrantError::Invalid {
                path: glob.clone(),
                why: why.to_string(),
            };
            // `absolute` drops a last `.`: `DIR/.` would become the file
            // `DIR`.
            if matches!(glob.rsplit('/').next(), Some("." | "..")) || glob.ends_with('/') {
                return Err(invalid(
                    "the glob names a directory, not files; add a pattern like DIR/*.log",
                ));
            }
            let absolute = std::path::absolute(glob).map_err(|e| invalid(&e.to_string()))?;
            let text = absolute.to_str().ok_or_else(|| invalid("not UTF-8"))?;
            let (dir, pattern) = text
                .rsplit_once('/')
                .ok_or_else(|| invalid("no directory"))?;
            if dir.contains(['*', '?']) {
                return Err(invalid(
                    "wildcards are allowed in the file name only, e.g. /var/log/app/*.log*",
                ));
            }
            if pattern.is_empty() {
                return Err(invalid("the glob names no file; add a pattern like *.log"));
            }
            let dir = if dir.is_empty() { "/" } else { dir };
            specs.push((PathBuf::from(dir), Access::ReadOnly));
            let vdir = VPath::parse(dir).map_err(|why| invalid(&why))?;
            patterns.push((vdir, pattern.to_string()));
        }
        // Each glob's directory as the grant it opened (by the handle's
        // identity: one directory named twice is one grant): one spelled
        // through a link is read there, and a fix may name it either way.
        let (dirs, each) = Grants::open_each(&specs)?;
        let patterns = patterns
            .into_iter()
            .zip(each)
            .map(|((spelled, pattern), dir)| LogGlob {
                spelled,
                dir,
                pattern,
            })
            .collect();
        Ok(LogGrants { dirs, patterns })
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// The granted directories, opened (their paths resolved).
    pub fn dirs(&self) -> &Grants {
        &self.dirs
    }

    /// The granted globs, for the journal and the operator: each as
    /// spelled, with the glob it is in the directory it leads to when that
    /// differs.
    pub fn globs(&self) -> Vec<(String, Option<String>)> {
        self.patterns
            .iter()
            .map(|g| {
                let resolved = (g.dir != g.spelled).then(|| in_dir(&g.dir, &g.pattern));
                (in_dir(&g.spelled, &g.pattern), resolved)
            })
            .collect()
    }

    /// The files a fix's glob names, oldest first. Each must match a
    /// granted glob too.
    /// Each as (the name the glob matched, the granted file to read: itself,
    /// or where its symlink leads).
    pub fn expand(&self, glob: &str) -> Result<Vec<(VPath, VPath)>, FsError> {
        let denied = |why: String| FsError::Denied(format!("{glob}: {why}"));
        let (dir, pattern) = glob
            .rsplit_once('/')
            .ok_or_else(|| denied("not an absolute glob".into()))?;
        if dir.contains(['*', '?']) {
            return Err(FsError::InvalidInput(format!(
                "{glob}: wildcards are allowed in the file name only"
            )));
        }
        let dir = VPath::parse(if dir.is_empty() { "/" } else { dir }).map_err(denied)?;
        let under = |name: &str| in_dir(&dir, name);
        // The granted directory, named as the operator spelled it or by
        // its canonical path.
        let real = self
            .patterns
            .iter()
            .find(|g| g.spelled == dir || g.dir == dir)
            .map(|g| &g.dir);
        let granted: Vec<&String> = self
            .patterns
            .iter()
            .filter(|g| Some(&g.dir) == real)
            .map(|g| &g.pattern)
            .collect();
        let Some(grant) = self
            .dirs
            .iter()
            .find(|g| Some(&g.path) == real)
            .filter(|_| !granted.is_empty())
        else {
            return Err(denied(format!(
                "{dir} holds no granted log (grant one with --allow-log)"
            )));
        };
        let entries = disk::locate(grant, &grant.path)
            .and_then(|loc| loc.read_dir(&mut || Ok(())))
            .map_err(|e| FsError::Io(format!("{glob}: {e}")))?;
        let mut wanted: Vec<(String, Kind)> = Vec::new();
        for (name, kind) in entries {
            match name {
                Ok(name) if wildcard(pattern, &name) => wanted.push((name, kind)),
                Ok(_) => {}
                // Never skipped silently: a log the glob would name but no
                // string can address.
                Err(bytes) if wildcard(pattern, &String::from_utf8_lossy(&bytes)) => {
                    return Err(denied(format!(
                        "{} is not UTF-8 and cannot be read by a fix",
                        under(&disk::escaped(&bytes))
                    )));
                }
                Err(_) => {}
            }
        }
        // A glob that reaches past the granted ones is refused, not trimmed.
        if let Some((name, _)) = wanted
            .iter()
            .find(|(n, _)| !granted.iter().any(|g| wildcard(g, n)))
        {
            return Err(denied(format!(
                "{} is not a granted log (--allow-log)",
                under(name)
            )));
        }
        if !pattern.contains(['*', '?']) && !granted.iter().any(|g| wildcard(g, pattern)) {
            return Err(denied(format!(
                "{} is not a granted log (--allow-log)",
                under(pattern)
            )));
        }
        if !pattern.contains(['*', '?']) && wanted.is_empty() {
            return Err(FsError::NotFound(under(pattern)));
        }
        let mut files: Vec<(String, VPath)> = Vec::new();
        for (name, kind) in wanted {
            match kind {
                Kind::File => files.push((name.clone(), grant.path.join(&name))),
                Kind::Symlink => files.push((name.clone(), self.follow(grant, &dir, &name)?)),
                _ => {}
            }
        }
        // Oldest first: app.log.3.gz, app.log.2.gz, app.log.1, app.log.
        files.sort_by(|(a, _), (b, _)| rotation(b).cmp(&rotation(a)).then_with(|| a.cmp(b)));
        Ok(files
            .into_iter()
            .map(|(name, read)| (dir.join(&name), read))
            .collect())
    }

    /// Where the symlinked log `dir/name` leads, resolved by the kernel's
    /// rules (every component, every link on the way): a granted log (a
    /// file matching an `--allow-log` glob, in that glob's directory,
    /// compared by their real paths), or a denial naming both. Container
    /// logs (`/var/log/containers/*.log` -> `/var/log/pods/...`) are such
    /// links; their targets need a grant of their own.
    fn follow(&self, grant: &Grant, dir: &VPath, name: &str) -> Result<VPath, FsError> {
        let link = dir.join(name);
        let denied = |why: String| FsError::Denied(format!("{link}: {why}"));
        let target = rustix::fs::readlinkat(grant.dir.as_fd(), name, Vec::new())
            .map_err(|e| FsError::Io(format!("{link}: {e}")))?;
        let target = std::path::PathBuf::from(std::ffi::OsStr::from_bytes(target.as_bytes()));
        let real = std::fs::canonicalize(std::path::Path::new(grant.path.as_str()).join(&target))
            .map_err(|e| {
            denied(format!(
                "a symlink to {}, which cannot be followed ({e})",
                target.display()
            ))
        })?;
        let found = real
            .parent()
            .zip(real.file_name().and_then(|n| n.to_str()))
            .and_then(|(parent, file)| {
                self.dirs
                    .iter()
                    .filter(|g| std::path::Path::new(g.path.as_str()) == parent)
                    .find(|g| {
                        self.patterns
                            .iter()
                            .any(|l| l.dir == g.path && wildcard(&l.pattern, file))
                    })
                    .map(|g| g.path.join(file))
            });
        found.ok_or_else(|| {
            denied(format!(
                "a symlink to {}, which is not a granted log (grant it with --allow-log)",
                real.display()
            ))
        })
    }

    /// Opens one log for reading: `path` the name the glob matched,
    /// `read` the granted file it leads to.
    fn open_file(&self, path: &VPath, read: &VPath) -> Result<scan::Log, FsError> {
        let shown = self.shown(path, read);
        let grant = self
            .dirs
            .find(read)
            .ok_or_else(|| FsError::Denied(format!("{shown}: not a granted log")))?;
        // A link to a granted log directory: a directory, not a log.
        if grant.path == *read {
            return Err(FsError::Denied(format!("{shown}: a directory, not a log")));
        }
        let (file, stat) = disk::locate(grant, read)
            .and_then(|loc| loc.open_file())
            .map_err(|e| match e.kind() {
                io::ErrorKind::PermissionDenied => FsError::Denied(format!("{shown}: {e}")),
                io::ErrorKind::NotFound => FsError::NotFound(shown.clone()),
                _ => FsError::Io(format!("{shown}: {e}")),
            })?;
        Ok(scan::Log {
            path: path.clone(),
            file,
            size: stat.size,
            gz: read.as_str().ends_with(".gz"),
        })
    }
}

impl LogGrants {
    /// How a log is named to the fix: as the fix named it (`path`), and
    /// where it leads when it is a link to another log (`read`); a file of
    /// a directory named through a link is not one.
    fn shown(&self, path: &VPath, read: &VPath) -> String {
        let plain = path == read
            || self.patterns.iter().any(|g| {
                path.parent().as_ref() == Some(&g.spelled) && g.dir.join(path.file_name()) == *read
            });
        match plain {
            true => path.to_string(),
            false => format!("{path} (a link to {read})"),
        }
    }
}

/// The rotation number of a log name: `app.log.3.gz` is 3, `app.log` 0.
fn rotation(name: &str) -> u64 {
    let base = name.strip_suffix(".gz").unwrap_or(name);
    base.rsplit_once('.')
        .and_then(|(_, n)| n.parse().ok())
        .unwrap_or(0)
}

/// `*` matches any run of characters, `?` one character.
pub fn wildcard(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    // Iterative matching with one backtrack point (linear-ish, no recursion).
    let (mut i, mut j, mut star, mut mark) = (0, 0, None, 0);
    while j < n.len() {
        if i < p.len() && (p[i] == '?' || p[i] == n[j]) {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == '*' {
            star = Some(i);
            mark = j;
            i += 1;
        } else if let Some(s) = star {
            i = s + 1;
            mark += 1;
            j = mark;
        } else {
            return false;
        }
    }
    p[i..].iter().all(|c| *c == '*')
}

/// Compiles a fix's pattern, or says why it is not one.
pub fn compile(pattern: &str) -> Result<Regex, FsError> {
    if pattern.len() > MAX_PATTERN {
        return Err(FsError::InvalidInput(format!(
            "the pattern is longer than {MAX_PATTERN} bytes"
        )));
    }
    RegexBuilder::new(pattern)
        .multi_line(true)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| {
            let why = e
                .to_string()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
            FsError::InvalidInput(format!("invalid pattern {pattern:?}: {why}"))
        })
}

/// One matching line.
pub struct Found {
    pub file: String,
    pub line_number: u64,
    pub offset: u64,
    pub line: String,
    pub captures: Vec<Option<String>>,
}

/// What a scan read and found.
#[derive(Default)]
pub struct Scan {
    pub files: Vec<String>,
    pub total: u64,
    pub bytes: u64,
    pub found: Vec<Found>,
    pub truncated: bool,
}

impl LogGrants {
    /// Counts (and, up to `keep`, returns) the lines of the files `glob`
    /// names that match `re`.
    pub fn grep(
        &self,
        glob: &str,
        re: &Regex,
        keep: usize,
        until: &Until,
    ) -> Result<Scan, FsError> {
        // The files are opened a group at a time: a glob over thousands of
        // rotated logs never holds more than a group's descriptors.
        const GROUP: usize = 32;
        let files = self.expand(glob)?;
        let mut scan = Scan::default();
        for group in files.chunks(GROUP) {
            let logs = group
                .iter()
                .map(|(path, read)| self.open_file(path, read))
                .collect();
            let part = scan::grep(logs, re, keep.saturating_sub(scan.found.len()), until)?;
            scan.files.extend(part.files);
            scan.total += part.total;
            scan.bytes += part.bytes;
            scan.found.extend(part.found);
        }
        scan.truncated = scan.total > scan.found.len() as u64 && keep > 0;
        Ok(scan)
    }

    /// The last `n` lines of the files `glob` names, read in order.
    pub fn tail(
        &self,
        glob: &str,
        n: usize,
        until: &Until,
    ) -> Result<(Scan, Vec<String>), FsError> {
        let mut scan = Scan::default();
        let mut last: std::collections::VecDeque<String> =
            std::collections::VecDeque::with_capacity(n.min(1024));
        let any = compile("").expect("the empty pattern compiles");
        let mut buf = Vec::new();
        for (path, read) in self.expand(glob)? {
            let log = self.open_file(&path, &read)?;
            let meter = scan::Meter::new(log.size);
            scan::advise_sequential(&log);
            let span = scan::Span::ALL;
            let reader = scan::reader(&log, span, &meter);
            let check = || until.check();
            let counts =
                scan::scan_lines(reader, span, &any, true, &check, &mut buf, |_, _, line| {
                    if n > 0 {
                        if last.len() == n {
                            last.pop_front();
                        }
                        last.push_back(
                            String::from_utf8_lossy(&line[..line.len().min(LINE_SHOWN)])
                                .into_owned(),
                        );
                    }
                    true
                })
                .map_err(|e| scan_error(&path, e, until))?;
            scan.bytes += counts.bytes;
            scan.files.push(path.to_string());
        }
        // What a tail found: the lines it returns.
        scan.total = last.len() as u64;
        Ok((scan, last.into_iter().collect()))
    }
}

/// `dir/name` as text (one slash under `/`); `name` may be a pattern, or
/// anything a fix asked for.
fn in_dir(dir: &VPath, name: &str) -> String {
    format!("{}/{name}", dir.as_str().trim_end_matches('/'))
}

/// `glob` with its directory resolved (links, `.`), as a log grant of it
/// would read it now; unchanged where the directory cannot be resolved.
pub fn canonical_glob(glob: &str) -> String {
    let Some((dir, pattern)) = glob.rsplit_once('/') else {
        return glob.to_string();
    };
    match std::fs::canonicalize(if dir.is_empty() { "/" } else { dir }) {
        Ok(d) => format!(
            "{}/{pattern}",
            d.display().to_string().trim_end_matches('/')
        ),
        Err(_) => glob.to_string(),
    }
}

/// What a log read found, for people, from its record: `3 matching
/// lines in 2 files`, or for `tail` `the last 3 lines of 2 files` (its
/// record's `lines`; a record written before tails counted them has none).
pub fn found(r: &serde_json::Value) -> String {
    let files = r["files"].as_array().map_or(0, Vec::len);
    let files = match files {
        1 => "1 file".to_string(),
        n => format!("{n} files"),
    };
    match (r["call"].as_str(), r["lines"].as_u64()) {
        (Some("tail"), Some(1)) => format!("the last line of {files}"),
        (Some("tail"), Some(n)) => format!("the last {n} lines of {files}"),
        (Some("tail"), None) => format!("the last lines of {files}"),
        _ => match r["matches"].as_u64().unwrap_or(0) {
            1 => format!("1 matching line in {files}"),
            n => format!("{n} matching lines in {files}"),
        },
    }
}

fn scan_error(path: &VPath, e: io::Error, until: &Until) -> FsError {
    match e.kind() {
        io::ErrorKind::TimedOut | io::ErrorKind::Interrupted => until
            .stop()
            .unwrap_or_else(|| FsError::Io(format!("{path}: {e}"))),
        _ => FsError::Io(format!("{path}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A glob must name files in a directory: one that names the
    /// directory itself is refused, not read as a file of its parent.
    #[test]
    fn a_glob_naming_a_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        for glob in [
            format!("{d}/."),
            format!("{d}/"),
            format!("{d}/.."),
            format!("{d}/*/a.log"),
        ] {
            let e = LogGrants::open(std::slice::from_ref(&glob))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(&glob) && (e.contains("names a directory") || e.contains("wildcards")),
                "{glob}: {e}"
            );
        }
        let ok = LogGrants::open(&[format!("{d}/*.log")]).unwrap();
        assert_eq!(ok.globs(), [(format!("{d}/*.log"), None)]);
    }

    #[test]
    fn wildcards_and_rotation_order() {
        assert!(wildcard("app.log*", "app.log.2.gz"));
        assert!(wildcard("*.log", "x.log"));
        assert!(!wildcard("*.log", "x.log.1"));
        assert!(wildcard("a?c", "abc"));
        let mut names = vec!["app.log", "app.log.1", "app.log.10.gz", "app.log.2.gz"];
        names.sort_by(|a, b| rotation(b).cmp(&rotation(a)).then_with(|| a.cmp(b)));
        assert_eq!(
            names,
            ["app.log.10.gz", "app.log.2.gz", "app.log.1", "app.log"]
        );
    }
}
