//! Progress of long work (a commit or rollback of many effects, a log
//! scan) on stderr, when it is a terminal and neither `--json` nor `-q` was
//! given; nothing otherwise. At most ten updates a second, one line,
//! cleared when done.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Allows progress lines (they still need stderr to be a terminal).
pub fn enable(on: bool) {
    ENABLED.store(on && std::io::stderr().is_terminal(), Ordering::Relaxed);
}

/// One piece of long work.
pub struct Progress {
    label: &'static str,
    total: u64,
    unit: Unit,
    started: Instant,
    last: Option<Instant>,
    shown: bool,
}

/// What is counted.
#[derive(Clone, Copy)]
pub enum Unit {
    Items,
    Bytes,
}

const EVERY: Duration = Duration::from_millis(100);
/// Work shorter than this shows nothing.
const QUIET_FOR: Duration = Duration::from_millis(300);

impl Progress {
    pub fn new(label: &'static str, total: u64, unit: Unit) -> Progress {
        Progress {
            label,
            total,
            unit,
            started: Instant::now(),
            last: None,
            shown: false,
        }
    }

    /// `done` of `total` finished.
    pub fn set(&mut self, done: u64) {
        if !ENABLED.load(Ordering::Relaxed) {
            return;
        }
        let now = Instant::now();
        if now.duration_since(self.started) < QUIET_FOR
            || self.last.is_some_and(|l| now.duration_since(l) < EVERY)
        {
            return;
        }
        self.last = Some(now);
        self.shown = true;
        let text = match self.unit {
            _ if self.total == 0 => format!("{done}"),
            Unit::Items => format!("{done}/{}", self.total),
            Unit::Bytes => format!(
                "{} of {}",
                crate::sandbox::fmt_bytes(done),
                crate::sandbox::fmt_bytes(self.total)
            ),
        };
        let pct = (done * 100).checked_div(self.total).unwrap_or(100);
        let _ = write!(
            std::io::stderr().lock(),
            "\r\x1b[2K{} {text} ({pct}%)",
            self.label
        );
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if self.shown {
            let _ = write!(std::io::stderr().lock(), "\r\x1b[2K");
        }
    }
}
