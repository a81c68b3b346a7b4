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
}

/// A call the sandbox refused.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Denial {
    pub call: &'static str,
    pub path: String,
    pub reason: String,
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
    pub denials: Vec<Denial>,
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

    /// `aborted` once a pause has landed: every later host call fails.
    fn not_aborted(&self) -> Result<(), FsError> {
        match self.until.abort.reason() {
            Some(why) => Err(FsError::Aborted(format!("the run was stopped: {why}"))),
            None => Ok(()),
        }
    }

    /// Like [`RunState::not_aborted`], for calls that cannot return an
    /// error: the fix is stopped instead.
    fn trap_if_aborted(&self) -> wasmtime::Result<()> {
        self.not_aborted()
            .map_err(|e| wasmtime::Error::msg(e.to_string()))
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
        })
    }
}
