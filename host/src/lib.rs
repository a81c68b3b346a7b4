//! defops-wasm runs WebAssembly fixes against a production host, inside a
//! sandbox that grants only what the operator allowed, and shows or commits
//! the plan of what the fix changes.
//!
//! The modules follow the data, one guarantee each:
//!
//! * [`cli`]: the command line.
//! * [`grants`]: what was granted; path validation; the one ambient open.
//! * [`sandbox`]: wasmtime engine, linker, import allowlist, limits, cache;
//!   [`ticks`], its clock.
//! * [`world`]: the `defops:fix` WIT world's host side.
//! * [`logs`]: the log-read capability and the streaming scanner.
//! * [`overlay`]: the fix's view: planned mutations over the real tree.
//! * [`plan`]: effects and the states they expect.
//! * [`binding`]: a plan's canonical form and digest; saved plans; the reviewed plan binds the real run.
//! * [`commit`]: the one executor that applies a plan.
//! * [`disk`]: the only code that touches files under a grant.
//! * [`journal`]: the hash-chained record of every run, and the object store.
//! * [`policy`]: the lock that keeps two changes apart, the off-switch, dry-run-first.
//! * [`config`], [`window`]: the configuration file and change windows.
//! * [`status`]: `defops-wasm pause|resume|status`.
//! * [`run`]: `defops-wasm run`, tying them together.
//! * [`rollback`]: `defops-wasm rollback`, the inverse plan through the same commit.
//! * [`history`]: `defops-wasm journal list|show|verify`.
//!
//! ```no_run
//! use defops_host::grants::VPath;
//! assert!(VPath::parse("/var/lib/app/../../etc/shadow").is_err());
//! ```

pub mod approval;
pub mod binding;
pub mod cli;
pub mod commit;
pub mod config;
pub mod cores;
pub mod crypto;
pub mod digest;
pub mod disk;
pub mod escape;
pub mod exit;
pub mod fuzzing;
pub mod grants;
pub mod history;
pub mod journal;
pub mod logs;
pub mod manifest;
pub mod monitor;
pub mod output;
pub mod overlay;
pub mod periodic;
pub mod phases;
pub mod plan;
pub mod policy;
pub mod progress;
pub mod python;
pub mod regular_file;
pub mod report;
pub mod review;
pub mod rollback;
pub mod run;
pub mod sandbox;
pub mod scaffold;
pub mod schedule;
pub mod state_dir;
pub mod status;
pub mod ticks;
pub mod units;
pub mod window;
pub mod world;

/// Keeps `value` until the process exits, its destructor never run: for
/// what a command builds once and uses to its end (the engine, the linker,
/// the compiled fix). Torn down piece by piece (the code's unwind tables
/// unregistered, its mappings unmapped) they cost a warm dry-run a tenth
/// of its time, while the kernel frees the whole address space at exit
/// anyway. Never for anything whose drop has an effect outside the process
/// (a buffer to flush, a lock to release, a file to remove), and only in a
/// process that makes a bounded number of them (a run makes one; `schedule
/// exec`, a dry-run then the real run, two).
pub fn keep_until_exit<T>(value: T) {
    std::mem::forget(value);
}

/// Drops `value` on a thread of its own: a command that built a large
/// structure (a journal of many records, their plan) need not wait for it
/// to be freed before it ends, and a process that ends does not wait for
/// that thread. Dropped here when no thread can be had.
pub fn drop_later<T: Send + 'static>(value: T) {
    let _ = std::thread::Builder::new()
        .name("drop".into())
        .spawn(move || drop(value));
}

/// `f` over `items`, the results in order: the second half on a thread of
/// its own, started on another core, when there are at least `from` items
/// (on this one otherwise, or when no thread can be had). For work that
/// waits on system calls, so two halves run at once on two cores.
pub fn in_two_halves<T: Sync, R: Send>(
    items: &[T],
    from: usize,
    f: impl Fn(&[T]) -> Vec<R> + Sync,
) -> Vec<R> {
    if items.len() < from.max(2) {
        return f(items);
    }
    let (first, second) = items.split_at(items.len() / 2);
    let halves = [first, second];
    cores::on_cores(2, |i| f(halves[i]))
        .into_iter()
        .flatten()
        .collect()
}
