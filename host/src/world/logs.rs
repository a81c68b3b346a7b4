//! `defops:fix/logs`: scans of the granted logs, run by the host. What each
//! call read is kept for the journal, so a reviewer sees what the fix's
//! decision was based on.

use serde_json::json;

use super::defops::fix::logs::{GrepResult, Host, LogMatch};
use super::{Denial, RunState};
use crate::logs::{self, MAX_MATCHES, MAX_TAIL, Scan};
use crate::overlay::FsError;

/// The most log reads a run records (the last record then counts the
/// rest).
const MAX_LOG_READS: usize = 1000;

impl RunState {
    fn note_read(
        &mut self,
        call: &'static str,
        glob: &str,
        pattern: Option<&str>,
        result: &Result<Scan, FsError>,
    ) {
        let record = match result {
            Ok(scan) => {
                let mut r = json!({
                    "call": call, "glob": glob, "pattern": pattern, "files": scan.files,
                    "matches": scan.total, "bytes": scan.bytes,
                });
                // A tail's `total` is the lines it returned.
                if call == "tail" {
                    r["lines"] = json!(scan.total);
                }
                r
            }
            Err(e) => {
                json!({"call": call, "glob": glob, "pattern": pattern, "error": e.to_string()})
            }
        };
        if let Err(FsError::Denied(reason)) = result {
            self.denials.push(Denial {
                call,
                path: glob.to_string(),
                reason: reason.clone(),
            });
        }
        // Bounded like the denials: past the bound, the last record
        // counts the reads not recorded.
        if self.log_reads.len() + 1 < MAX_LOG_READS {
            self.log_reads.push(record);
            return;
        }
        let dropped = match self.log_reads.last() {
            Some(last) if last["call"] == "more" => last["count"].as_u64().unwrap_or(0),
            _ => 0,
        } + 1;
        let summary = json!({
            "call": "more", "glob": "", "count": dropped,
            "error": format!("{dropped} more log reads not recorded (a run records at most {})", MAX_LOG_READS - 1),
        });
        match self.log_reads.last_mut() {
            Some(last) if last["call"] == "more" => *last = summary,
            _ => self.log_reads.push(summary),
        }
    }
}

impl Host for RunState {
    fn grep(
        &mut self,
        glob: String,
        pattern: String,
        max_matches: u32,
    ) -> Result<GrepResult, FsError> {
        self.not_aborted()?;
        let result = logs::compile(&pattern).and_then(|re| {
            self.logs.grep(
                &glob,
                &re,
                max_matches.min(MAX_MATCHES) as usize,
                &self.until,
            )
        });
        self.note_read("grep", &glob, Some(&pattern), &result);
        let scan = result?;
        Ok(GrepResult {
            total: scan.total,
            truncated: scan.truncated,
            files: scan.files,
            matches: scan
                .found
                .into_iter()
                .map(|f| LogMatch {
                    file: f.file,
                    line_number: f.line_number,
                    offset: f.offset,
                    line: f.line,
                    captures: f.captures,
                })
                .collect(),
        })
    }

    fn count(&mut self, glob: String, pattern: String) -> Result<u64, FsError> {
        self.not_aborted()?;
        let result =
            logs::compile(&pattern).and_then(|re| self.logs.grep(&glob, &re, 0, &self.until));
        self.note_read("count", &glob, Some(&pattern), &result);
        result.map(|scan| scan.total)
    }

    fn tail(&mut self, glob: String, lines: u32) -> Result<Vec<String>, FsError> {
        self.not_aborted()?;
        let result = self
            .logs
            .tail(&glob, lines.min(MAX_TAIL) as usize, &self.until);
        let (scan, last) = match result {
            Ok((scan, last)) => (Ok(scan), last),
            Err(e) => (Err(e), Vec::new()),
        };
        self.note_read("tail", &glob, None, &scan);
        scan.map(|_| last)
    }
}
