//! The wasmtime sandbox: one engine, a linker holding only what a fix may
//! import, the compiled-component cache, and the limits that end a run.
//!
//! A fix gets `defops:fix` and the parts of WASI that Rust's std needs
//! (io, cli, clocks, random, and filesystem with no directory in it, so
//! `std::fs` finds nothing). Never sockets, never http. The import list of a
//! component is checked against that set before linking, so a fix asking for
//! more is refused with every offending import named.

use std::fs;
use std::hash::{Hash, Hasher};
use std::io::{Read as _, Write as _};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wasmtime::component::{Component, HasData, Linker, ResourceTable};
use wasmtime::{Config, Engine, ResourceLimiter, Store, Trap};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream, WasiCli};
use wasmtime_wasi::clocks::WasiClocks;
use wasmtime_wasi::filesystem::WasiFilesystem;
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};
use wasmtime_wasi::random::WasiRandom;

use crate::world::{Applicability, PythonFixPre as FixPre, RunState};

/// Interfaces a fix may import, by `namespace:package/interface` (any
/// version). Everything else is refused before linking.
pub const ALLOWED_IMPORTS: &[&str] = &[
    "defops:fix/types",
    "defops:fix/fs",
    "defops:fix/logs",
    "defops:fix/context",
    "defops:fix/report",
    "wasi:io/error",
    "wasi:io/poll",
    "wasi:io/streams",
    "wasi:cli/environment",
    "wasi:cli/exit",
    "wasi:cli/stdin",
    "wasi:cli/stdout",
    "wasi:cli/stderr",
    "wasi:cli/terminal-input",
    "wasi:cli/terminal-output",
    "wasi:cli/terminal-stdin",
    "wasi:cli/terminal-stdout",
    "wasi:cli/terminal-stderr",
    "wasi:clocks/monotonic-clock",
    "wasi:clocks/wall-clock",
    "wasi:random/random",
    "wasi:random/insecure",
    "wasi:random/insecure-seed",
    "wasi:filesystem/types",
    "wasi:filesystem/preopens",
];

/// How often the epoch advances, in the running thread's CPU time (see
/// `ticks`); a computing fix yields this often so the deadline and a pause
/// can fire.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Limits of one run.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub deadline: Duration,
    pub max_memory: u64,
    pub max_output: u64,
}

/// A limit that ended the run.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error("the fix ran past its deadline of {} (raise it with --timeout)", humantime(*.0))]
    Deadline(Duration),
    #[error("the fix tried to use more than {} of memory (raise it with --max-memory)", fmt_bytes(*.0))]
    Memory(u64),
    #[error("the fix wrote more than {} of output (raise it with --max-output)", fmt_bytes(*.0))]
    Output(u64),
    #[error("the fix recursed too deeply (wasm stack overflow)")]
    Stack,
    #[error("the fix planned too much: {0}")]
    Plan(String),
}

/// A duration as it would be written on the command line: `24h`, `5m`,
/// `90s`, `500ms`.
pub fn humantime(d: Duration) -> String {
    let ms = d.as_millis();
    match ms {
        _ if ms == 0 || !ms.is_multiple_of(1000) => format!("{ms}ms"),
        _ if ms.is_multiple_of(3_600_000) => format!("{}h", ms / 3_600_000),
        _ if ms.is_multiple_of(60_000) => format!("{}m", ms / 60_000),
        _ => format!("{}s", ms / 1000),
    }
}

pub fn fmt_bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 && n.is_multiple_of(1 << 30) => format!("{} GiB", n >> 30),
        n if n >= 1 << 20 && n.is_multiple_of(1 << 20) => format!("{} MiB", n >> 20),
        n if n >= 1 << 10 && n.is_multiple_of(1 << 10) => format!("{} KiB", n >> 10),
        n => format!("{n} bytes"),
    }
}

/// Caps the fix's linear memories.
pub struct Limiter {
    max_memory: u64,
    pub hit: Option<LimitError>,
}

impl Limiter {
    pub fn new(max_memory: u64) -> Limiter {
        Limiter {
            max_memory,
            hit: None,
        }
    }
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired as u64 > self.max_memory {
            let e = LimitError::Memory(self.max_memory);
            self.hit = Some(e.clone());
            return Err(e.into());
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }
}

/// The fix's stdout, stderr and messages share one byte budget; what it
/// writes is kept and shown to the operator after the run.
#[derive(Clone)]
pub struct OutputBudget(Arc<Mutex<Captured>>);

struct Captured {
    bytes: Vec<u8>,
    used: u64,
    max: u64,
    exceeded: bool,
}

impl OutputBudget {
    pub fn new(max: u64) -> OutputBudget {
        OutputBudget(Arc::new(Mutex::new(Captured {
            bytes: Vec::new(),
            used: 0,
            max,
            exceeded: false,
        })))
    }

    /// Counts `n` bytes against the budget.
    pub fn charge(&self, n: usize) -> Result<(), LimitError> {
        let mut c = self.0.lock().unwrap_or_else(|e| e.into_inner());
        c.used += n as u64;
        if c.used > c.max {
            c.exceeded = true;
            return Err(LimitError::Output(c.max));
        }
        Ok(())
    }

    fn capture(&self, data: &[u8]) -> Result<(), LimitError> {
        self.charge(data.len())?;
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .bytes
            .extend_from_slice(data);
        Ok(())
    }

    /// The budget, in bytes.
    pub fn max(&self) -> u64 {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).max
    }

    pub fn exceeded(&self) -> bool {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).exceeded
    }

    /// How many bytes of stdout and stderr are kept so far.
    pub fn captured(&self) -> usize {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).bytes.len()
    }

    /// What the fix wrote to stdout and stderr.
    pub fn take(&self) -> Vec<u8> {
        std::mem::take(&mut self.0.lock().unwrap_or_else(|e| e.into_inner()).bytes)
    }
}

impl IsTerminal for OutputBudget {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for OutputBudget {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(tokio::io::sink())
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for OutputBudget {
    fn write(&mut self, bytes: bytes::Bytes) -> Result<(), StreamError> {
        self.capture(&bytes)
            .map_err(|e| StreamError::Trap(e.into()))
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(64 * 1024)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for OutputBudget {
    async fn ready(&mut self) {}
}

/// Why a component could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} is not a WebAssembly file (it does not start with \\0asm); pass the .wasm the build produced"
    )]
    NotWasm { path: PathBuf },
    #[error(
        "{path} is a core WebAssembly module, not a component; build the fix with `cargo build --target wasm32-wasip2`"
    )]
    CoreModule { path: PathBuf },
    #[error("{path} is not a valid component: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error(
        "{path} imports what defops-wasm never grants: {}; a fix may import only defops:fix, wasi:io, wasi:cli, wasi:clocks, wasi:random and wasi:filesystem (which holds no directories)",
        .imports.join(", ")
    )]
    Imports { path: PathBuf, imports: Vec<String> },
    /// A Python fix whose runtime is missing or of another release.
    #[error("{0}")]
    Runtime(String),
    /// A Python fix that is not UTF-8 text.
    #[error("{path} is not UTF-8 text; a Python fix is a UTF-8 source file")]
    NotText { path: PathBuf },
}

/// What the Python runtime may import beyond a fix: its source, and the
/// sockets its libc asks for (linked, always denied).
const RUNTIME_IMPORTS: &[&str] = &[
    "defops:fix/script",
    "wasi:sockets/network",
    "wasi:sockets/instance-network",
    "wasi:sockets/tcp",
    "wasi:sockets/tcp-create-socket",
    "wasi:sockets/udp",
    "wasi:sockets/udp-create-socket",
    "wasi:sockets/ip-name-lookup",
];

/// `warm`: compiles the Python runtime into the state directory's compile
/// cache (or finds it there), so the first Python fix starts at once.
pub fn warm(
    state_dir: &Path,
    out: &crate::output::Printer,
) -> Result<crate::exit::Exit, crate::run::Stop> {
    use crate::exit::Exit;
    use crate::run::Stop;
    let state = crate::state_dir::prepare(state_dir, &crate::grants::Grants::default())
        .map_err(|e| Stop::new(Exit::Usage, e))?;
    let sandbox = Sandbox::new()
        .map_err(|e| Stop::new(Exit::Usage, format!("cannot start wasmtime: {e:#}")))?;
    let runtime = crate::python::locate_runtime().map_err(|e| Stop::new(Exit::Usage, e))?;
    let started = std::time::Instant::now();
    let (bytes, _, _, hit) = sandbox
        .compile_announced(&runtime, Some(&state.join("cache")), "the Python runtime")
        .map_err(|e| Stop::new(Exit::Usage, e))?;
    crate::python::check_runtime(&bytes, &runtime).map_err(|e| Stop::new(Exit::Usage, e))?;
    let secs = started.elapsed().as_secs_f64();
    match out.is_json() {
        true => out.raw(&serde_json::json!({
            "type": "warm",
            "runtime": runtime.display().to_string(),
            "cache": state.join("cache").display().to_string(),
            "compiled": !hit,
            "seconds": secs,
        })),
        false => out.note(&format!(
            "the Python runtime {} is {} in {}",
            runtime.display(),
            if hit { "already compiled" } else { "compiled" },
            state.join("cache").display()
        )),
    }
    Ok(Exit::Success)
}

/// The identity of the file at `path` (device, inode, size, mtime and
/// ctime in nanoseconds), for naming what is cached about it.
fn runtime_identity(path: &Path) -> Option<String> {
    let m = fs::metadata(path).ok()?;
    Some(format!(
        "{}-{}-{}-{}.{}-{}.{}",
        m.dev(),
        m.ino(),
        m.size(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec()
    ))
}

/// The Python runtime's path and both digests, for `inspect`.
#[derive(Clone, Debug)]
pub struct RuntimeDigests {
    pub path: PathBuf,
    pub blake3: String,
    pub sha256: String,
}

/// The runtime that runs a Python fix.
#[derive(Clone, Debug)]
pub struct Runtime {
    pub path: PathBuf,
    /// Its digest (blake3, or SHA-256 in FIPS mode) and its SHA-256.
    pub digest: String,
    pub sha256: String,
}

/// The largest compiled script the cache keeps (CPython's code objects
/// are a few times their source).
const MAX_SCRIPT_CODE: usize = 16 << 20;

/// The first line of a kept script's code file.
const SCRIPT_CODE_FORMAT: &str = "defops-python-code 1";

/// The cache's key for a script's compiled code (its file is
/// `script-KEY.code`): a digest of what the code depends on, the runtime
/// (CPython's version and `marshal` format), the script's bytes and its
/// file name (in every traceback).
fn script_code_key(runtime: &RuntimeDigests, script: &str, name: &str) -> String {
    let mut h = crate::digest::current().hasher();
    for part in [SCRIPT_CODE_FORMAT, &runtime.sha256, script, name] {
        h.update(part.as_bytes());
        h.update(&[0]);
    }
    h.hex()
}

/// A kept script's code file: the format, the key it was kept under and
/// the digest of the code, a line each, then the code. A file copied from
/// another key, or damaged, is not that code.
fn script_code_file(key: &str, code: &[u8]) -> Vec<u8> {
    let digest = crate::digest::current().hex(code);
    let mut file = format!("{SCRIPT_CODE_FORMAT}\n{key}\n{digest}\n").into_bytes();
    file.extend_from_slice(code);
    file
}

/// The code kept under `key` at `path`: only from a regular file of one
/// name that no one else can write, in a directory no one else can, of
/// at most [`MAX_SCRIPT_CODE`] bytes (its size checked before it is read),
/// whose lines name this format and this key and the digest of what
/// follows them.
fn cached_script_code(path: &Path, key: &str) -> Option<Vec<u8>> {
    if !path.parent().is_some_and(private_dir) {
        return None;
    }
    let file = crate::regular_file::read_own(path, MAX_SCRIPT_CODE as u64 + 512).ok()?;
    let mut lines = file.splitn(4, |b| *b == b'\n');
    let (format, kept_as, digest, code) =
        (lines.next()?, lines.next()?, lines.next()?, lines.next()?);
    let digest_now = crate::digest::current().hex(code);
    (format == SCRIPT_CODE_FORMAT.as_bytes()
        && kept_as == key.as_bytes()
        && digest == digest_now.as_bytes()
        && code.len() <= MAX_SCRIPT_CODE)
        .then(|| code.to_vec())
}

/// A loaded component.
pub struct Loaded {
    pub pre: FixPre<RunState>,
    pub digest: String,
    pub size: u64,
    pub cache_hit: bool,
    /// The fix's bytes: the component compiled, or a Python fix's script
    /// (what a signature is checked against).
    pub bytes: Vec<u8>,
    /// A Python fix: its script, and the runtime that runs it.
    pub script: Option<crate::world::Script>,
    pub runtime: Option<Runtime>,
    /// The SHA-256 of the fix, hex (its `fix_id`), when already known.
    sha256: Option<String>,
}

impl Loaded {
    /// The SHA-256 of the fix, hex.
    pub fn sha256(&self) -> String {
        match &self.sha256 {
            Some(h) => h.clone(),
            None => crate::digest::Alg::Sha256.hex(&self.bytes),
        }
    }
}

/// A fix's file, read once before anything is written: its manifest is
/// checked against the command line from these bytes, and the same bytes
/// are what is loaded (a file swapped in between is never run unchecked).
pub struct FixFile {
    path: PathBuf,
    bytes: Vec<u8>,
    /// The bytes' digest by the run's algorithm (the fix's `digest`).
    digest: String,
    /// A Python fix's source (a `.py` file).
    source: Option<String>,
}

impl FixFile {
    /// Reads the component or script at `path`: a regular file, a
    /// component (not a core module) or UTF-8 text.
    pub fn read(path: &Path) -> Result<FixFile, LoadError> {
        let (bytes, source) = match crate::python::is_script(path) {
            false => (read_component(path)?, None),
            true => {
                let bytes = read_regular(path)?;
                let source = String::from_utf8(bytes.clone()).map_err(|_| LoadError::NotText {
                    path: path.to_path_buf(),
                })?;
                (bytes, Some(source))
            }
        };
        Ok(FixFile {
            path: path.to_path_buf(),
            digest: crate::digest::current().hex(&bytes),
            bytes,
            source,
        })
    }

    /// What a reviewer signs, and what is run.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The bytes' digest, by the run's algorithm.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// The manifest the fix carries: a component's embedded section, or a
    /// script's PEP 723 block.
    pub fn manifest_text(&self) -> Option<Result<String, String>> {
        match &self.source {
            Some(s) => crate::python::manifest_text(s),
            None => crate::manifest::embedded(&self.bytes),
        }
    }

    pub fn is_script(&self) -> bool {
        self.source.is_some()
    }

    /// Refuses a fix whose SHA-256 is not `expected` (hex).
    pub fn expect_sha256(&self, expected: &str) -> Result<(), String> {
        match crate::digest::Alg::Sha256.hex(&self.bytes) == expected {
            true => Ok(()),
            false => Err(format!(
                "refused: the fix {} is not the one promoted (sha256:{expected}): it changed since; nothing was run",
                self.path.display()
            )),
        }
    }
}

fn read_regular(path: &Path) -> Result<Vec<u8>, LoadError> {
    crate::regular_file::read(path).map_err(|source| LoadError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// The bytes of the component at `path`, refused when they are not a
/// component's: its first eight bytes are looked at before the rest is
/// read (a multi-gigabyte log passed by mistake is not read into memory).
fn read_component(path: &Path) -> Result<Vec<u8>, LoadError> {
    let failed = |source| LoadError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut file = crate::regular_file::open(path).map_err(failed)?;
    let mut bytes = Vec::with_capacity(8);
    (&mut file)
        .take(8)
        .read_to_end(&mut bytes)
        .map_err(failed)?;
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(LoadError::NotWasm {
            path: path.to_path_buf(),
        });
    }
    if bytes[4..8] == [1, 0, 0, 0] {
        return Err(LoadError::CoreModule {
            path: path.to_path_buf(),
        });
    }
    file.read_to_end(&mut bytes).map_err(failed)?;
    Ok(bytes)
}

/// The engine and the linker, set up once per process.
pub struct Sandbox {
    engine: Engine,
    linker: Linker<RunState>,
}

struct HasTable;

impl HasData for HasTable {
    type Data<'a> = &'a mut ResourceTable;
}

/// `linker` with WASI's sockets, for the Python runtime only: its libc
/// imports them. They are wasmtime's own with the default context — no
/// TCP, no UDP, no name lookup, every address refused — so a script gets
/// an ordinary PermissionError. A fix component importing them is refused
/// before linking (`ALLOWED_IMPORTS`), and a component is linked without
/// them (linking them cost every run about 0.05 ms).
fn with_sockets(mut linker: Linker<RunState>) -> wasmtime::Result<Linker<RunState>> {
    use wasmtime_wasi::p2::bindings::sockets;
    use wasmtime_wasi::sockets::{WasiSockets, WasiSocketsView};
    let l = &mut linker;
    let so = <RunState as WasiSocketsView>::sockets;
    sockets::tcp::add_to_linker::<RunState, WasiSockets>(l, so)?;
    sockets::udp::add_to_linker::<RunState, WasiSockets>(l, so)?;
    sockets::tcp_create_socket::add_to_linker::<RunState, WasiSockets>(l, so)?;
    sockets::udp_create_socket::add_to_linker::<RunState, WasiSockets>(l, so)?;
    sockets::instance_network::add_to_linker::<RunState, WasiSockets>(l, so)?;
    sockets::ip_name_lookup::add_to_linker::<RunState, WasiSockets>(l, so)?;
    let options = sockets::network::LinkOptions::default();
    sockets::network::add_to_linker::<RunState, WasiSockets>(l, &options, so)?;
    Ok(linker)
}

impl Sandbox {
    pub fn new() -> wasmtime::Result<Sandbox> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        config.max_wasm_stack(1 << 20);
        let engine = Engine::new(&config)?;
        let mut linker: Linker<RunState> = Linker::new(&engine);
        {
            use wasmtime_wasi::p2::bindings::{cli, clocks, filesystem, random};
            use wasmtime_wasi_io::bindings::wasi::io;
            let l = &mut linker;
            io::error::add_to_linker::<RunState, HasTable>(l, |s| &mut s.table)?;
            io::poll::add_to_linker::<RunState, HasTable>(l, |s| &mut s.table)?;
            io::streams::add_to_linker::<RunState, HasTable>(l, |s| &mut s.table)?;
            clocks::wall_clock::add_to_linker::<RunState, WasiClocks>(l, |s| {
                wasmtime_wasi::clocks::WasiClocksView::clocks(s)
            })?;
            clocks::monotonic_clock::add_to_linker::<RunState, WasiClocks>(l, |s| {
                wasmtime_wasi::clocks::WasiClocksView::clocks(s)
            })?;
            random::random::add_to_linker::<RunState, WasiRandom>(l, |s| s.wasi.random())?;
            random::insecure::add_to_linker::<RunState, WasiRandom>(l, |s| s.wasi.random())?;
            random::insecure_seed::add_to_linker::<RunState, WasiRandom>(l, |s| s.wasi.random())?;
            let cli = <RunState as wasmtime_wasi::cli::WasiCliView>::cli;
            cli::exit::add_to_linker::<RunState, WasiCli>(l, cli)?;
            cli::environment::add_to_linker::<RunState, WasiCli>(l, cli)?;
            cli::stdin::add_to_linker::<RunState, WasiCli>(l, cli)?;
            cli::stdout::add_to_linker::<RunState, WasiCli>(l, cli)?;
            cli::stderr::add_to_linker::<RunState, WasiCli>(l, cli)?;
            cli::terminal_input::add_to_linker::<RunState, WasiCli>(l, cli)?;
            cli::terminal_output::add_to_linker::<RunState, WasiCli>(l, cli)?;
            cli::terminal_stdin::add_to_linker::<RunState, WasiCli>(l, cli)?;
            cli::terminal_stdout::add_to_linker::<RunState, WasiCli>(l, cli)?;
            cli::terminal_stderr::add_to_linker::<RunState, WasiCli>(l, cli)?;
            let fs = <RunState as wasmtime_wasi::filesystem::WasiFilesystemView>::filesystem;
            filesystem::types::add_to_linker::<RunState, WasiFilesystem>(l, fs)?;
            filesystem::preopens::add_to_linker::<RunState, WasiFilesystem>(l, fs)?;
        }
        crate::world::PythonFix::add_to_linker::<RunState, wasmtime::component::HasSelf<RunState>>(
            &mut linker,
            |s| s,
        )?;
        Ok(Sandbox { engine, linker })
    }

    /// Compiles (or loads from `cache_dir`) and links a fix read by
    /// [`FixFile::read`].
    pub fn load(&self, fix: FixFile, cache_dir: Option<&Path>) -> Result<Loaded, LoadError> {
        let FixFile {
            path,
            bytes,
            digest,
            source,
        } = fix;
        let path = path.as_path();
        if let Some(source) = source {
            return self.load_script(path, bytes, digest, source, cache_dir);
        }
        let (bytes, digest, component, cache_hit) =
            self.compile_bytes(path, bytes, Some(digest), cache_dir)?;
        let sha256 = self.sha256_memo(&bytes, &digest, cache_dir);
        self.check_imports(path, &component, &[])?;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .and_then(FixPre::new)
            .map_err(|e| LoadError::Invalid {
                path: path.to_path_buf(),
                reason: format!("{e:#}"),
            })?;
        Ok(Loaded {
            pre,
            digest,
            size: bytes.len() as u64,
            cache_hit,
            bytes,
            script: None,
            runtime: None,
            sha256: Some(sha256),
        })
    }

    /// A Python fix: the script is read and hashed; the runtime is found,
    /// checked, compiled once (or loaded from the cache) and linked.
    fn load_script(
        &self,
        path: &Path,
        bytes: Vec<u8>,
        digest: String,
        source: String,
        cache_dir: Option<&Path>,
    ) -> Result<Loaded, LoadError> {
        let runtime = crate::python::locate_runtime().map_err(LoadError::Runtime)?;
        let (runtime_digests, component, cache_hit) = self.load_runtime(&runtime, cache_dir)?;
        self.check_imports(&runtime, &component, RUNTIME_IMPORTS)?;
        let pre = with_sockets(self.linker.clone())
            .and_then(|linker| linker.instantiate_pre(&component))
            .and_then(FixPre::new)
            .map_err(|e| LoadError::Invalid {
                path: runtime.clone(),
                reason: format!("{e:#}"),
            })?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "fix.py".into());
        let (code, keep_code_at) = match cache_dir {
            Some(dir) => {
                let key = script_code_key(&runtime_digests, &digest, &name);
                let at = dir.join(format!("script-{key}.code"));
                match cached_script_code(&at, &key) {
                    Some(code) => (code, None),
                    // Missing, or not what was kept under this key: made
                    // again, in its place.
                    None => (Vec::new(), private_dir(dir).then_some((at, key))),
                }
            }
            None => (Vec::new(), None),
        };
        Ok(Loaded {
            pre,
            digest,
            size: bytes.len() as u64,
            cache_hit,
            script: Some(crate::world::Script {
                source,
                name,
                code_digest: (!code.is_empty()).then(|| crate::digest::current().hex(&code)),
                not_kept: None,
                code: code.into(),
                keep_code_at,
            }),
            runtime: Some(Runtime {
                digest: match crate::digest::current() {
                    crate::digest::Alg::Sha256 => runtime_digests.sha256.clone(),
                    _ => runtime_digests.blake3.clone(),
                },
                sha256: runtime_digests.sha256,
                path: runtime,
            }),
            bytes,
            sha256: None,
        })
    }

    /// The Python runtime, compiled (or from the cache) and checked. Its
    /// digests are kept in the cache under the file's identity (device,
    /// inode, size, mtime, ctime: what changes whenever the file does, and
    /// ctime cannot be set), so a warm run neither reads nor hashes its
    /// 20 MB again.
    fn load_runtime(
        &self,
        runtime: &Path,
        cache_dir: Option<&Path>,
    ) -> Result<(RuntimeDigests, Component, bool), LoadError> {
        let memo = cache_dir
            .zip(runtime_identity(runtime))
            .map(|(dir, id)| dir.join(format!("runtime-{id}.json")));
        // In FIPS mode every digest of a run is computed by the run's own
        // provider (the FIPS module in the FIPS build), never read back.
        if let Some(memo) = memo.as_deref()
            && !crate::crypto::fips_mode()
            && self.trusted(memo)
            && let Some(d) = fs::read(memo)
                .ok()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            && let (Some(blake3), Some(sha256)) = (d["blake3"].as_str(), d["sha256"].as_str())
        {
            let digest = match crate::digest::current() {
                crate::digest::Alg::Sha256 => sha256,
                _ => blake3,
            };
            let artifact = memo.with_file_name(format!("{digest}-{}.cwasm", self.compat_key()));
            if let Some(component) = self.load_cached(&artifact) {
                let digests = RuntimeDigests {
                    path: runtime.to_path_buf(),
                    blake3: blake3.to_string(),
                    sha256: sha256.to_string(),
                };
                return Ok((digests, component, true));
            }
        }
        // The tag first: a runtime of another release is never compiled.
        let head = fs::read(runtime).map_err(|source| LoadError::Read {
            path: runtime.to_path_buf(),
            source,
        })?;
        crate::python::check_runtime(&head, runtime).map_err(LoadError::Runtime)?;
        drop(head);
        let (bytes, _, component, hit) =
            self.compile_announced(runtime, cache_dir, "the Python runtime")?;
        crate::python::check_runtime(&bytes, runtime).map_err(LoadError::Runtime)?;
        let digests = RuntimeDigests {
            path: runtime.to_path_buf(),
            blake3: crate::digest::Alg::Blake3.hex(&bytes),
            sha256: crate::digest::Alg::Sha256.hex(&bytes),
        };
        if let Some(memo) = memo {
            let text = serde_json::json!({"blake3": digests.blake3, "sha256": digests.sha256});
            // A memo that cannot be written only costs speed.
            let _ = store_cached(&memo, text.to_string().as_bytes());
        }
        Ok((digests, component, hit))
    }

    /// A component's SHA-256 (its `fix_id`). Outside FIPS mode its digest
    /// is BLAKE3, and the SHA-256 is kept in the compile cache next to the
    /// compiled fix, under that digest (`DIGEST.sha256`), by the same rule
    /// as the compiled code itself: a warm run reads 64 bytes instead of
    /// hashing the fix a second time.
    fn sha256_memo(&self, bytes: &[u8], digest: &str, cache_dir: Option<&Path>) -> String {
        use crate::digest::Alg;
        if crate::digest::current() == Alg::Sha256 {
            return digest.to_string();
        }
        let memo = cache_dir.map(|d| d.join(format!("{digest}.sha256")));
        if let Some(m) = memo.as_deref().filter(|m| self.trusted(m))
            && let Ok(kept) = crate::regular_file::open(m).and_then(|f| {
                let mut kept = String::new();
                f.take(65).read_to_string(&mut kept).map(|_| kept)
            })
            && kept.len() == 64
            && kept.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return kept;
        }
        let sha256 = Alg::Sha256.hex(bytes);
        if let Some(m) = memo {
            // A memo that cannot be written only costs speed.
            let _ = store_cached(&m, sha256.as_bytes());
        }
        sha256
    }

    /// True for a regular cache file this user owns and nobody else can
    /// write, in a directory that is the same (the compile cache's rule).
    fn trusted(&self, path: &Path) -> bool {
        let is_file = fs::symlink_metadata(path)
            .map(|m| private(&m) && m.is_file())
            .unwrap_or(false);
        is_file && path.parent().is_some_and(private_dir)
    }

    /// [`Sandbox::compile`], saying on stderr that a large component is
    /// being compiled when it is not in the cache yet (tens of seconds).
    fn compile_announced(
        &self,
        path: &Path,
        cache_dir: Option<&Path>,
        what: &str,
    ) -> Result<(Vec<u8>, String, Component, bool), LoadError> {
        let progress = crate::progress::Progress::new(
            "compiling (once; it is cached)",
            0,
            crate::progress::Unit::Items,
        );
        let started = std::time::Instant::now();
        let compiled = self.compile(path, cache_dir)?;
        drop(progress);
        if !compiled.3 {
            eprintln!(
                "defops-wasm: compiled {what} in {:.1} s (cached for the next run)",
                started.elapsed().as_secs_f64()
            );
        }
        Ok(compiled)
    }

    /// The bytes of a component and every interface it imports, whether
    /// allowed or not (for `inspect`).
    pub fn imports(
        &self,
        path: &Path,
        cache_dir: Option<&Path>,
    ) -> Result<(Vec<u8>, Vec<String>), LoadError> {
        let (bytes, _, component, _) = self.compile(path, cache_dir)?;
        let names = component
            .component_type()
            .imports(&self.engine)
            .map(|(name, _)| name.to_string())
            .collect();
        Ok((bytes, names))
    }

    /// A Python fix's script, the imports of the runtime that runs it, and
    /// that runtime (for `inspect`).
    pub fn script_imports(
        &self,
        path: &Path,
        cache_dir: Option<&Path>,
    ) -> Result<(Vec<u8>, Vec<String>, RuntimeDigests), LoadError> {
        let bytes = fs::read(path).map_err(|source| LoadError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let runtime = crate::python::locate_runtime().map_err(LoadError::Runtime)?;
        let (rt_bytes, names) = self.imports(&runtime, cache_dir)?;
        crate::python::check_runtime(&rt_bytes, &runtime).map_err(LoadError::Runtime)?;
        let digests = RuntimeDigests {
            path: runtime,
            blake3: crate::digest::Alg::Blake3.hex(&rt_bytes),
            sha256: crate::digest::Alg::Sha256.hex(&rt_bytes),
        };
        Ok((bytes, names, digests))
    }

    /// Reads and compiles a component (or loads it from the cache).
    fn compile(
        &self,
        path: &Path,
        cache_dir: Option<&Path>,
    ) -> Result<(Vec<u8>, String, Component, bool), LoadError> {
        let bytes = read_component(path)?;
        self.compile_bytes(path, bytes, None, cache_dir)
    }

    /// [`Sandbox::compile`] of the bytes of `path`, read and checked by
    /// [`read_component`] (and their digest, when already known).
    fn compile_bytes(
        &self,
        path: &Path,
        bytes: Vec<u8>,
        digest: Option<String>,
        cache_dir: Option<&Path>,
    ) -> Result<(Vec<u8>, String, Component, bool), LoadError> {
        let digest = digest.unwrap_or_else(|| crate::digest::current().hex(&bytes));
        let cached = cache_dir.map(|d| d.join(format!("{digest}-{}.cwasm", self.compat_key())));
        let mut cache_hit = false;
        let component = match cached.as_deref().and_then(|p| self.load_cached(p)) {
            Some(c) => {
                cache_hit = true;
                c
            }
            None => {
                let c = Component::new(&self.engine, &bytes).map_err(|e| LoadError::Invalid {
                    path: path.to_path_buf(),
                    reason: format!("{:#}", e),
                })?;
                if let (Some(dest), Ok(art)) = (cached.as_deref(), c.serialize()) {
                    // A cache that cannot be written only costs speed.
                    let _ = store_cached(dest, &art);
                }
                c
            }
        };
        tracing::info!(path = %path.display(), %digest, cache_hit, "component ready");
        Ok((bytes, digest, component, cache_hit))
    }

    fn check_imports(
        &self,
        path: &Path,
        component: &Component,
        also: &[&str],
    ) -> Result<(), LoadError> {
        let ty = component.component_type();
        let refused: Vec<String> = ty
            .imports(&self.engine)
            .map(|(name, _)| name)
            .filter(|name| {
                let bare = name.split('@').next().unwrap_or(name);
                !ALLOWED_IMPORTS.contains(&bare) && !also.contains(&bare)
            })
            .map(String::from)
            .collect();
        if refused.is_empty() {
            Ok(())
        } else {
            Err(LoadError::Imports {
                path: path.to_path_buf(),
                imports: refused,
            })
        }
    }

    /// Part of the cache key: artifacts of another wasmtime build or
    /// configuration are never loaded.
    fn compat_key(&self) -> String {
        struct D(crate::digest::Hasher);
        impl Hasher for D {
            fn write(&mut self, bytes: &[u8]) {
                self.0.update(bytes);
            }
            fn finish(&self) -> u64 {
                0
            }
        }
        let mut h = D(crate::digest::current().hasher());
        self.engine.precompile_compatibility_hash().hash(&mut h);
        h.0.hex()[..16].to_string()
    }

    /// Loads a cached artifact, only if the cache directory and the file
    /// belong to us and nobody else can write them.
    fn load_cached(&self, path: &Path) -> Option<Component> {
        if !self.trusted(path) {
            return None;
        }
        // SAFETY: the artifact was written by this program (same engine
        // compatibility hash, in its name) into a directory only this user
        // can write, checked just above.
        unsafe { Component::deserialize_file(&self.engine, path).ok() }
    }

    /// What makes a running fix yield to the host at once (it advances
    /// the epoch), from any thread.
    pub fn waker(&self) -> impl Fn() + Send + 'static {
        let engine = self.engine.clone();
        move || engine.increment_epoch()
    }

    /// Runs `check`, then `apply` when it applies, within the limits.
    pub fn execute(
        &self,
        loaded: &Loaded,
        state: RunState,
        limits: &Limits,
    ) -> (RunState, GuestEnd) {
        let (abort, deadline) = (state.until.abort.clone(), state.until.deadline);
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        store.set_epoch_deadline(1);
        store.epoch_deadline_async_yield_and_update(1);
        let ticker = crate::ticks::Ticks::start(&self.engine, EPOCH_TICK, deadline);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
        let end = match runtime {
            Err(e) => GuestEnd::Host(format!("cannot start the async runtime: {e}")),
            Ok(rt) => rt.block_on(async {
                // Biased, in this order: once the guest yields past its
                // deadline or a pause's grace, it is not resumed to find
                // out (`timeout` polls what it bounds first, and a guest
                // resumed computes until its next tick: 10 ms of CPU
                // time, a second of wall time under a 1% CPU quota).
                tokio::select! {
                    biased;
                    () = tokio::time::sleep_until(deadline.into()) => GuestEnd::Limit {
                        phase: Phase::Apply,
                        limit: LimitError::Deadline(limits.deadline),
                    },
                    // A pause: host calls now fail; a fix that does not
                    // return soon after is dropped wherever it is.
                    () = aborted(&abort) => GuestEnd::Aborted {
                        phase: Phase::Apply,
                        reason: String::new(),
                    },
                    end = drive(&loaded.pre, &mut store) => end,
                }
            }),
        };
        drop(ticker);
        let mut state = store.into_data();
        if let Some(reason) = abort.reason() {
            let phase = match state.overlay_is_applying() {
                true => Phase::Apply,
                false => Phase::Check,
            };
            return (state, GuestEnd::Aborted { phase, reason });
        }
        // Attribute the deadline to the phase that was running.
        let end = match end {
            GuestEnd::Limit { limit, .. } if !state.overlay_is_applying() => GuestEnd::Limit {
                phase: Phase::Check,
                limit,
            },
            other => other,
        };
        let end = state.refine(end);
        (state, end)
    }
}

/// What the idempotency pass of a dry-run found.
#[derive(Debug)]
pub enum SecondPass {
    /// A second `apply` over the planned state planned these (none: the fix
    /// is idempotent).
    Planned(Vec<crate::plan::Effect>),
    /// The second `apply` did not finish.
    Failed(String),
}

/// Where a fix was when it stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Check,
    Apply,
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Phase::Check => "check",
            Phase::Apply => "apply",
        })
    }
}

/// How the guest's part of a run ended.
#[derive(Debug)]
pub enum GuestEnd {
    /// `check` said there is nothing to do.
    NotNeeded(String),
    /// `check` or `apply` returned an error.
    Failed {
        phase: Phase,
        message: String,
    },
    /// `apply` returned; the overlay holds the plan.
    Applied {
        check: String,
        result: String,
    },
    /// The guest trapped (a panic, `exit`, an invalid operation).
    Trapped {
        phase: Phase,
        message: String,
    },
    Limit {
        phase: Phase,
        limit: LimitError,
    },
    /// A pause stopped the run.
    Aborted {
        phase: Phase,
        reason: String,
    },
    /// The host failed (not the fix's fault).
    Host(String),
}

/// How long a fix may take to return after a pause lands before it is
/// stopped wherever it is.
const ABORT_GRACE: Duration = Duration::from_millis(250);

/// Resolves `ABORT_GRACE` after `abort` is triggered.
async fn aborted(abort: &crate::policy::Abort) {
    while abort.reason().is_none() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(ABORT_GRACE).await;
}

async fn drive(pre: &FixPre<RunState>, store: &mut Store<RunState>) -> GuestEnd {
    store
        .data_mut()
        .overlay
        .set_read_only(Some("check runs read-only; make changes in apply"));
    let instance = match pre.instance_pre().instantiate_async(&mut *store).await {
        Ok(i) => i,
        Err(e) => return classify(Phase::Check, e),
    };
    let fix = match crate::world::PythonFix::new(&mut *store, &instance) {
        Ok(f) => f,
        Err(e) => return classify(Phase::Check, e),
    };
    if let Some(end) = compile_script(&instance, store).await {
        return end;
    }
    let check = match fix.call_check(&mut *store).await {
        Ok(Ok(Applicability::Applies(why))) => why,
        // Negative testing: study the branch that would otherwise never run.
        Ok(Ok(Applicability::NotNeeded(why))) if store.data().flip_precondition => {
            store.data_mut().flipped = Some(why.clone());
            why
        }
        Ok(Ok(Applicability::NotNeeded(why))) => return GuestEnd::NotNeeded(why),
        Ok(Err(message)) => {
            return GuestEnd::Failed {
                phase: Phase::Check,
                message,
            };
        }
        Err(e) => return classify(Phase::Check, e),
    };
    store.data_mut().overlay.set_read_only(None);
    match fix.call_apply(&mut *store).await {
        Ok(Ok(result)) => {
            // Containment is a property of the whole plan, checked before
            // anything else looks at it (the idempotency pass included).
            if let Some(message) = store.data_mut().refuse_escapes() {
                return GuestEnd::Failed {
                    phase: Phase::Apply,
                    message,
                };
            }
            if store.data().dry_run {
                // The idempotency proof: apply again over the planned state;
                // an idempotent fix plans nothing more.
                store.data_mut().begin_idempotency_pass();
                let mark = store.data_mut().overlay.begin_second_pass();
                let second = match fix.call_apply(&mut *store).await {
                    Ok(Ok(_)) => None,
                    // The deadline ends the run wherever it passes, as the
                    // timer would have.
                    Err(e) if matches!(e.downcast_ref(), Some(LimitError::Deadline(_))) => {
                        return classify(Phase::Apply, e);
                    }
                    Ok(Err(message)) => Some(format!("the second apply failed: {message}")),
                    Err(e) => Some(format!("the second apply crashed: {}", e.root_cause())),
                };
                let extra = store.data_mut().overlay.end_second_pass(mark);
                store.data_mut().second_pass = Some(match second {
                    None => SecondPass::Planned(extra),
                    Some(why) => SecondPass::Failed(why),
                });
            }
            GuestEnd::Applied { check, result }
        }
        Ok(Err(message)) => GuestEnd::Failed {
            phase: Phase::Apply,
            message,
        },
        Err(e) => classify(Phase::Apply, e),
    }
}

/// A Python fix whose compiled code the cache lacks: the runtime compiles
/// the script now, on the fresh instance, before anything of the script
/// has run (so the code is the runtime's doing alone), and it is kept for
/// the next runs. The instance goes on with that code. A trap (the
/// deadline, memory, a compiler's deep recursion) ends the run as it would
/// have in `check`; a script that does not compile is left to `check` to
/// report, and a runtime without the export compiles in `check` as before.
async fn compile_script(
    instance: &wasmtime::component::Instance,
    store: &mut Store<RunState>,
) -> Option<GuestEnd> {
    let (at, key) = store.data().script.as_ref()?.keep_code_at.clone()?;
    type Compile = wasmtime::component::TypedFunc<(), (Result<Vec<u8>, String>,)>;
    let func: Compile = instance
        .get_typed_func(&mut *store, "compile-script")
        .ok()?;
    match func.call_async(&mut *store, ()).await {
        Ok((Ok(code),)) if code.len() <= MAX_SCRIPT_CODE => {
            let kept = store_cached(&at, &script_code_file(&key, &code));
            if let Err(e) = &kept {
                tracing::debug!("cannot keep the compiled script at {}: {e}", at.display());
            }
            if let Some(script) = store.data_mut().script.as_mut() {
                script.code_digest = Some(crate::digest::current().hex(&code));
                script.not_kept = kept.err().map(|e| format!("{}: {e}", at.display()));
            }
            None
        }
        Ok(_) => None,
        Err(e) => Some(classify(Phase::Check, e)),
    }
}

fn classify(phase: Phase, e: wasmtime::Error) -> GuestEnd {
    if let Some(limit) = e.downcast_ref::<LimitError>() {
        return GuestEnd::Limit {
            phase,
            limit: limit.clone(),
        };
    }
    if let Some(Trap::StackOverflow) = e.downcast_ref::<Trap>() {
        return GuestEnd::Limit {
            phase,
            limit: LimitError::Stack,
        };
    }
    if let Some(exit) = e.downcast_ref::<wasmtime_wasi::I32Exit>() {
        return GuestEnd::Trapped {
            phase,
            message: format!(
                "the fix called exit({}); a fix must return from {phase}",
                exit.0
            ),
        };
    }
    let cause = e.root_cause().to_string();
    let hint = if cause.contains("unreachable") {
        " (a Rust panic; its message is in the fix's output)"
    } else if cause.contains("out of bounds memory access") {
        " (a memory bug in the fix, or its own stack overflowing in deep recursion)"
    } else {
        ""
    };
    GuestEnd::Trapped {
        phase,
        message: format!("the fix crashed in {phase}: {cause}{hint}"),
    }
}

impl RunState {
    fn overlay_is_applying(&self) -> bool {
        self.overlay.is_writable()
    }

    /// Limits seen by the limiter or the output budget win over whatever
    /// error the guest turned them into (a failed allocation, a panic).
    fn refine(&mut self, end: GuestEnd) -> GuestEnd {
        let phase = match &end {
            GuestEnd::Failed { phase, .. }
            | GuestEnd::Trapped { phase, .. }
            | GuestEnd::Limit { phase, .. } => *phase,
            _ => return end,
        };
        if let Some(limit) = self.limiter.hit.clone() {
            return GuestEnd::Limit { phase, limit };
        }
        if self.output.exceeded() && !matches!(end, GuestEnd::Limit { .. }) {
            return GuestEnd::Limit {
                phase,
                limit: LimitError::Output(self.output.max()),
            };
        }
        end
    }
}

/// Owned by this user and writable by nobody else.
fn owned_alone(uid: u32, mode: u32) -> bool {
    uid == rustix::process::geteuid().as_raw() && mode & 0o022 == 0
}

/// [`owned_alone`], and not a symlink.
fn private(m: &fs::Metadata) -> bool {
    owned_alone(m.uid(), m.mode()) && !m.file_type().is_symlink()
}

/// A directory [`private`] to this user.
fn private_dir(dir: &Path) -> bool {
    fs::symlink_metadata(dir).is_ok_and(|m| private(&m) && m.is_dir())
}

/// How old a cache temp file must be to count as left by a process that
/// died while writing it: writing the largest artifact (the Python
/// runtime's, ~60 MB) takes seconds.
const STALE_TEMP: Duration = Duration::from_secs(3600);

/// Removes the temp files of the cache directory `dir` (names `.tmp-*`,
/// regular files [`owned_alone`] with one link) last written more than
/// [`STALE_TEMP`] ago: each has a name of its own, so nothing else would
/// ever reuse or remove one. Done whenever the cache is written (a miss),
/// never on a warm run.
fn sweep_stale_temps(dir: &rustix::fd::OwnedFd) {
    use rustix::fs::{AtFlags, FileType};
    let Ok(entries) = rustix::fs::Dir::read_from(dir) else {
        return;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name.to_bytes().starts_with(b".tmp-") {
            continue;
        }
        let stale = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW).is_ok_and(|st| {
            FileType::from_raw_mode(st.st_mode) == FileType::RegularFile
                && owned_alone(st.st_uid, st.st_mode)
                && st.st_nlink == 1
                && now - st.st_mtime > STALE_TEMP.as_secs() as i64
        });
        if stale {
            let _ = rustix::fs::unlinkat(dir, name, AtFlags::empty());
        }
    }
}

/// Writes `artifact` to `dest` in the cache, atomically: through a temp
/// file of its own (created exclusively, so never through a link and never
/// shared with another process, even one with the same pid in another PID
/// namespace), and only in a directory [`private`] to this user (another
/// user's directory could hold anything under any name). The directory is
/// opened once (not through a link) and checked on that descriptor; the
/// sweep, the temp file and the rename are all relative to it, so they
/// happen in the directory that was checked, whatever its path comes to
/// name meanwhile.
fn store_cached(dest: &Path, artifact: &[u8]) -> std::io::Result<()> {
    use rustix::fs::{AtFlags, Mode, OFlags};
    let dir = dest.parent().expect("cache file has a directory");
    let name = dest.file_name().expect("cache file has a name");
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = rustix::fs::openat(rustix::fs::CWD, dir, flags, Mode::empty())?;
    let st = rustix::fs::fstat(&fd)?;
    if !owned_alone(st.st_uid, st.st_mode) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            "the cache directory is not this user's alone",
        ));
    }
    sweep_stale_temps(&fd);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let create =
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let (tmp, file) = (0..16)
        .map(|n| {
            let tmp = format!(".tmp-{}-{nanos:x}-{n}", std::process::id());
            rustix::fs::openat(&fd, tmp.as_str(), create, Mode::from_raw_mode(0o600))
                .map(|f| (tmp, f))
        })
        .find(|r| !matches!(r, Err(rustix::io::Errno::EXIST)))
        .unwrap_or(Err(rustix::io::Errno::EXIST))?;
    let mut f = fs::File::from(file);
    let written = f
        .write_all(artifact)
        .and_then(|()| f.sync_all())
        .and_then(|()| rustix::fs::renameat(&fd, tmp.as_str(), &fd, name).map_err(Into::into));
    if written.is_err() {
        let _ = rustix::fs::unlinkat(&fd, tmp.as_str(), AtFlags::empty());
    }
    written
}
