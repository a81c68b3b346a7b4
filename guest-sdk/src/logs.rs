//! The logs the operator granted (`--allow-log`), scanned by the host:
//! streaming, rotated and `.gz` files included, oldest first. Patterns use
//! the Rust `regex` syntax (linear time; no backreferences).
//!
//! ```no_run
//! use defops_guest::logs;
//!
//! # fn f() -> defops_guest::Result<()> {
//! let hits = logs::grep("/var/log/app/app.log*", r"checksum mismatch in segment (\S+)")
//!     .max(100)
//!     .run()?;
//! for m in hits.iter() {
//!     defops_guest::info(format!("{}:{}: segment {}", m.file, m.line_number, m.capture(1).unwrap_or("?")));
//! }
//! # Ok(())
//! # }
//! ```

use crate::bindings::defops::fix::logs as wit;
use crate::fs::Error;

/// One matching line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Match {
    /// The file it is in.
    pub file: String,
    /// 1-based line number in that file.
    pub line_number: u64,
    /// Byte offset of the line in the (decompressed) file.
    pub offset: u64,
    /// The line, without its newline (cut at 4 KiB).
    pub line: String,
    captures: Vec<Option<String>>,
}

impl Match {
    /// Capture group `i` (1 is the first group), if it matched (cut at
    /// 4 KiB, like the line).
    pub fn capture(&self, i: usize) -> Option<&str> {
        i.checked_sub(1)
            .and_then(|i| self.captures.get(i))
            .and_then(|c| c.as_deref())
    }
}

/// The result of a [`grep`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Matches {
    matches: Vec<Match>,
    /// Matching lines in all files (more than returned when truncated).
    pub total: u64,
    /// True when more lines matched than were returned.
    pub truncated: bool,
    /// The files read, oldest first.
    pub files: Vec<String>,
}

impl Matches {
    /// The returned matches, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &Match> {
        self.matches.iter()
    }

    /// How many were returned.
    pub fn len(&self) -> usize {
        self.matches.len()
    }

    /// True when nothing matched.
    pub fn is_empty(&self) -> bool {
        self.matches.is_empty()
    }
}

impl IntoIterator for Matches {
    type Item = Match;
    type IntoIter = std::vec::IntoIter<Match>;

    fn into_iter(self) -> Self::IntoIter {
        self.matches.into_iter()
    }
}

/// A grep to run: [`grep`], then optionally [`Grep::max`], then
/// [`Grep::run`].
#[derive(Clone, Debug)]
pub struct Grep {
    glob: String,
    pattern: String,
    max: u32,
}

/// Lines of the logs `glob` names that match `pattern`.
pub fn grep(glob: impl Into<String>, pattern: impl Into<String>) -> Grep {
    Grep {
        glob: glob.into(),
        pattern: pattern.into(),
        max: 1000,
    }
}

impl Grep {
    /// Return at most `n` matches (default 1000, at most 10,000); `total`
    /// still counts them all.
    pub fn max(mut self, n: u32) -> Grep {
        self.max = n;
        self
    }

    /// Runs the scan.
    pub fn run(self) -> Result<Matches, Error> {
        let r = wit::grep(&self.glob, &self.pattern, self.max)?;
        Ok(Matches {
            total: r.total,
            truncated: r.truncated,
            files: r.files,
            matches: r
                .matches
                .into_iter()
                .map(|m| Match {
                    file: m.file,
                    line_number: m.line_number,
                    offset: m.offset,
                    line: m.line,
                    captures: m.captures,
                })
                .collect(),
        })
    }
}

/// How many lines of the logs `glob` names match `pattern`.
pub fn count(glob: &str, pattern: &str) -> Result<u64, Error> {
    Ok(wit::count(glob, pattern)?)
}

/// The last `lines` lines of the logs `glob` names (at most 10,000).
pub fn tail(glob: &str, lines: u32) -> Result<Vec<String>, Error> {
    Ok(wit::tail(glob, lines)?)
}
