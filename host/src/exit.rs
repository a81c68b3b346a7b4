//! The exit codes of `defops-wasm`, few and distinct (documented in the
//! README).

/// How the process ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Exit {
    /// The fix applied, was not needed, or the dry-run planned.
    Success = 0,
    /// The fix's `check` or `apply` returned an error or crashed.
    FixFailed = 1,
    /// A bad flag, an unreadable or invalid fix, or a host I/O error.
    Usage = 2,
    /// The sandbox or a safety check said no: a denied path that failed the
    /// fix, a forbidden import, a file changed since the plan was made, a
    /// change window, a missing dry-run.
    Refused = 3,
    /// A limit ended the run: deadline, memory, output, stack or plan size.
    Limit = 4,
    /// The off-switch: a pause kept the run from starting, or stopped it.
    Paused = 5,
    /// A scheduled run skipped because a guard said "not now": outside the
    /// change window (`schedule exec` only; its unit counts it a success).
    Skipped = 6,
}

impl Exit {
    pub fn code(self) -> i32 {
        self as i32
    }
}
