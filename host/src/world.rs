//! The host side of the `defops:fix` WIT world: the one `bindgen!` call and
//! the state a fix's store carries. The generated traits are implemented in
//! the submodules named after the interfaces.

mod context;
mod fs;
mod logs;
mod report;
mod script;

use std::collections::BTreeMap;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::overlay::{FsError, Overlay};
use crate::sandbox::{Limiter, OutputBudget};

wasmtime::component::bindgen!({
    path: "../wit",
    // The superset world: a Rust fix imports what `fix` has; the Python
    // runtime also imports `script`.
    world: "defops:fix/python-fix",
    imports: { default: trappable },
    exports: { default: async },
    trappable_error_type: {
        "defops:fix/types.error" => FsError,
    },
});

pub use defops::fix::report::Level;

/// A message the fix reported.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Message {
    pub level: &'static str,
    pub text: String,
    /// 1, or 2 during a dry-run's idempotency pass (the second `apply`).
    pub pass: u8,
}

/// A Python fix's script, as the runtime gets it.
#[derive(Clone, Debug)]
pub struct Script {
    pub source: String,
    pub name: String,
    /// The script as the runtime compiled it for an earlier run, from the
    /// compile cache (empty when there is none).
    pub code: std::sync::Arc<[u8]>,
    /// Where (and under which key) to keep the code the runtime compiles
    /// this time, when the cache has none: the run asks for it before the
    /// script runs.
    pub keep_code_at: Option<(std::path::PathBuf, String)>,
    /// The digest of the compiled code the script ran as, when the host
    /// had it: kept from an earlier run, or compiled ahead in this one.
    pub code_digest: Option<String>,
    /// Why the code compiled ahead in this run could not be kept.
    pub not_kept: Option<String>,
}

/// A call the sandbox refused.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Denial {
    pub call: &'static str,
    pub path: String,
    pub reason: String,
}

/// At most this many denials are kept (shown and journaled) per run ...
pub const MAX_DENIALS: usize = 100;
/// ... and at most this many bytes of them.
pub const MAX_DENIAL_BYTES: usize = 64 << 10;

/// The denials of a run, bounded: a fix that loops over denied paths
/// cannot fill the journal. Past the bounds, denials are counted, and one
/// last record says how many were not recorded.
#[derive(Debug, Default)]
pub struct Denials {
    kept: Vec<Denial>,
    bytes: usize,
    dropped: u64,
}

impl Denials {
    pub fn push(&mut self, d: Denial) {
        let size = d.call.len() + d.path.len() + d.reason.len();
        if self.kept.len() >= MAX_DENIALS || self.bytes + size > MAX_DENIAL_BYTES {
            self.dropped += 1;
            return;
        }
        self.bytes += size;
        self.kept.push(d);
    }

    /// The denials kept so far.
    pub fn len(&self) -> usize {
        self.kept.len()
    }

    /// True when none was made.
    pub fn is_empty(&self) -> bool {
        self.total() == 0
    }

    /// Every denial, recorded or not.
    pub fn total(&self) -> u64 {
        self.kept.len() as u64 + self.dropped
    }

    /// The records to show and journal: the kept denials, then (when some
    /// were dropped) one saying how many.
    pub fn records(&self) -> Vec<Denial> {
        let mut out = self.kept.clone();
        if self.dropped > 0 {
            out.push(Denial {
                call: "more",
                path: String::new(),
                reason: format!(
                    "{} more denials not recorded (a run records at most {MAX_DENIALS}, {} KiB)",
                    self.dropped,
                    MAX_DENIAL_BYTES >> 10
                ),
            });
        }
        out
    }
}

/// Where messages go as they arrive (the operator's terminal or JSON).
pub type MessageSink = Box<dyn FnMut(&Message) + Send>;

/// Everything a fix's store holds.
pub struct RunState {
    pub wasi: WasiCtx,
    pub table: ResourceTable,
    pub overlay: Overlay,
    pub params: BTreeMap<String, String>,
    pub dry_run: bool,
    pub hostname: String,
    pub messages: Vec<Message>,
    pub denials: Denials,
    pub limiter: Limiter,
    pub output: OutputBudget,
    pub on_message: MessageSink,
    /// The granted logs.
    pub logs: std::sync::Arc<crate::logs::LogGrants>,
    /// What the fix read from the logs, for the journal.
    pub log_reads: Vec<serde_json::Value>,
    /// When the run must end (its deadline, or a pause); long host work
    /// (log scans) checks it.
    pub until: crate::logs::Until,
    /// A dry-run's idempotency pass.
    pub second_pass: Option<crate::sandbox::SecondPass>,
    /// Which `apply` runs: 1, or 2 in a dry-run's idempotency pass.
    pub pass: u8,
    /// Where the idempotency pass's denials, log reads and output begin.
    pub second_from: Option<PassStart>,
    /// A Python fix: its source and file name, handed to the runtime.
    pub script: Option<Script>,
    /// `--flip-precondition`: run `apply` even when `check` says not needed.
    pub flip_precondition: bool,
    /// What `check` said when it was flipped.
    pub flipped: Option<String>,
}

/// Where the records of a dry-run's idempotency pass begin: everything at
/// or after these indexes came from the second `apply`.
#[derive(Clone, Copy, Debug, Default)]
pub struct PassStart {
    pub denials: usize,
    pub log_reads: usize,
    /// Bytes of stdout/stderr.
    pub output: usize,
}

impl RunState {
    /// Marks what follows as the idempotency pass's (pass 2).
    pub fn begin_idempotency_pass(&mut self) {
        self.pass = 2;
        self.second_from = Some(PassStart {
            denials: self.denials.len(),
            log_reads: self.log_reads.len(),
            output: self.output.captured(),
        });
    }

    /// `aborted` once a pause has landed: every later host call fails;
    /// past the deadline, every host call ends the run.
    fn not_aborted(&self) -> Result<(), FsError> {
        match self.until.stop() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Like [`RunState::not_aborted`], for calls that cannot return an
    /// error: the fix is stopped instead.
    fn trap_if_aborted(&self) -> wasmtime::Result<()> {
        self.not_aborted().map_err(|e| match e {
            FsError::Deadline(d) => crate::sandbox::LimitError::Deadline(d).into(),
            e => wasmtime::Error::msg(e.to_string()),
        })
    }
}

impl WasiView for RunState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl defops::fix::types::Host for RunState {
    fn convert_error(&mut self, err: FsError) -> wasmtime::Result<defops::fix::types::Error> {
        use defops::fix::types::Error as E;
        Ok(match err {
            FsError::Denied(m) => E::Denied(m),
            FsError::NotFound(m) => E::NotFound(m),
            FsError::AlreadyExists(m) => E::AlreadyExists(m),
            FsError::InvalidInput(m) => E::InvalidInput(m),
            FsError::Io(m) => E::Io(m),
            FsError::Aborted(m) => E::Aborted(m),
            FsError::PlanLimit(m) => return Err(crate::sandbox::LimitError::Plan(m).into()),
            FsError::Deadline(d) => return Err(crate::sandbox::LimitError::Deadline(d).into()),
        })
    }
}
