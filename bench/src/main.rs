//! The benchmark suite. Every goal is a ratio against a comparison run in
//! the same process, interleaved, several repetitions, median.
//!
//!     scripts/bench            # full run (writes target/bench/results.md)
//!     scripts/bench --quick    # a smoke run: small sizes, one repetition
//!     defops-bench SECTION     # one section: start, edits, logs, host-calls
//!
//! Cases:
//! 1. start: `run --dry-run` of config-set on one file, cold (empty compile
//!    cache) and warm, against a bash script doing the same check and diff;
//!    where a warm start's time goes; the peak RSS of a small fix
//!    (`start.rs`).
//! 2. edits: one journaled run of config-set over N config files, against a
//!    bash loop with `cp` backups and `sed -i`, and against a native Rust
//!    loop doing the same atomic replaces with one sync at the end (the
//!    floor: no sandbox, no journal); the rollback of that run; `report`
//!    against `journal show --json`; `journal verify` in MB/s (`edits.rs`).
//! 3. `new` + `build` of a scaffold in a fresh target directory (cold) and
//!    of a second fix in the same one (warm).
//! 4. log scan: counting a fixed string and a regex with a capture group in
//!    a generated log (1 GiB; 64 MiB with --quick), against `grep -c` and
//!    `rg -c`, and in eight rotated logs of that total size (two gzip),
//!    against `zgrep -c` and `rg -z -c`, with peak memory (`logs.rs`).
//! 5. host calls on adversarial trees: one call's time, and the time from
//!    the deadline or a pause to exit with a guest inside such calls
//!    (`host_calls.rs`).
//! 6. a Python fix: its warm dry-run against its Rust twin and bash, its
//!    first use (the runtime compiled), its peak RSS (`python.rs`).

mod edits;
mod host_calls;
mod logs;
mod python;
mod start;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

struct Env {
    bin: PathBuf,
    fixes: PathBuf,
    guests: PathBuf,
    work: PathBuf,
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

#[track_caller]
fn run_ok(cmd: &mut Command) -> Duration {
    let started = Instant::now();
    // Output goes to a pipe, never /dev/null: GNU grep stops at the first
    // match when it sees its output discarded.
    let out = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("spawn");
    let took = started.elapsed();
    assert!(
        out.status.success() || out.status.code() == Some(0),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

const CONF: &str = "# generated\nlisten = 0.0.0.0:8080\nmax_conn = 20\ntimeout = 5\n";

fn fresh_dir(p: &Path) {
    let _ = fs::remove_dir_all(p);
    fs::create_dir_all(p).unwrap();
}

/// A tree of `files` config files, on disk (synced) like any that has
/// been there a while: a case that starts from unwritten files would not
/// pay for freeing their blocks when it replaces them.
fn make_tree(dir: &Path, files: usize) {
    fresh_dir(dir);
    for i in 0..files {
        fs::write(dir.join(format!("site{i:05}.conf")), CONF).unwrap();
    }
    let d = fs::File::open(dir).unwrap();
    // SAFETY: syncfs on a descriptor we own.
    unsafe { libc::syncfs(std::os::fd::AsRawFd::as_raw_fd(&d)) };
}

const BASH_CHECK: &str = r#"f=$1
if grep -q '^max_conn = 50$' "$f"; then echo "not needed"; else
  sed 's/^max_conn = .*/max_conn = 50/' "$f" | diff -u "$f" - || true
fi"#;

const BASH_EDIT: &str = r#"for f in "$1"/*.conf; do
  cp -p "$f" "$f.bak"
  sed -i 's/^max_conn = .*/max_conn = 50/' "$f"
done"#;

/// The floor: the same edits by atomic replace, one sync at the end.
fn native_edit(dir: &Path) -> Duration {
    let started = Instant::now();
    let mut names: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    for p in names {
        let text = fs::read_to_string(&p).unwrap();
        let new: String = text
            .lines()
            .map(|l| {
                if l.starts_with("max_conn =") {
                    "max_conn = 50".to_string()
                } else {
                    l.to_string()
                }
            })
            .map(|l| l + "\n")
            .collect();
        let tmp = p.with_extension("tmp");
        fs::write(&tmp, new).unwrap();
        fs::rename(&tmp, &p).unwrap();
    }
    let d = fs::File::open(dir).unwrap();
    // SAFETY: syncfs on a descriptor we own.
    unsafe { libc::syncfs(std::os::fd::AsRawFd::as_raw_fd(&d)) };
    started.elapsed()
}

fn defops(env: &Env, state: &Path) -> Command {
    let mut c = Command::new(&env.bin);
    c.env("DEFOPS_STATE_DIR", state);
    c
}

fn last_json_line(out: &[u8]) -> serde_json::Value {
    let text = String::from_utf8_lossy(out);
    serde_json::from_str(text.lines().last().unwrap_or("{}")).unwrap_or_default()
}

/// Peak RSS (KiB) of a command, measured in a child of a fresh process.
fn peak_rss(cmd: &[String]) -> u64 {
    let mut c = Command::new(&cmd[0]);
    c.args(&cmd[1..]);
    with_rss(&c).1
}

/// Runs `cmd` as the child of a fresh copy of this program, which reports
/// the child's peak RSS (KiB): the time, the RSS and the output.
fn with_rss(cmd: &Command) -> (Duration, u64, std::process::Output) {
    let mut w = Command::new(std::env::current_exe().unwrap());
    w.arg("--rss-of")
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => w.env(k, v),
            None => w.env_remove(k),
        };
    }
    let started = Instant::now();
    let out = w
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let rss = stderr
        .lines()
        .rev()
        .find_map(|l| {
            l.strip_prefix("rss-kib ")
                .and_then(|n| n.trim().parse().ok())
        })
        .unwrap_or(0);
    (took, rss, out)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--rss-of") {
        let status = Command::new(&args[1]).args(&args[2..]).status().unwrap();
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: getrusage fills the struct we pass.
        unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
        eprintln!("rss-kib {}", ru.ru_maxrss);
        std::process::exit(status.code().unwrap_or(1));
    }
    let quick = args.iter().any(|a| a == "--quick");
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or(root.join("target"));
    let env = Env {
        bin: std::env::var_os("DEFOPS_BIN")
            .map(PathBuf::from)
            .unwrap_or(target.join("release/defops-wasm")),
        fixes: target.join("fixes"),
        guests: target.join("test-guests"),
        work: target.join("bench/work"),
    };
    let (reps, files) = if quick { (1, 500) } else { (3, 10_000) };
    let log_bytes: u64 = if quick { 64 << 20 } else { 1 << 30 };
    fresh_dir(&env.work);
    // The trees are made afresh for every repetition: no dry-run first.
    let config = env.work.join("config.toml");
    fs::write(&config, "[dry-run-first]\nrequired = false\n").unwrap();
    // SAFETY: still one thread; nothing reads the environment concurrently.
    unsafe { std::env::set_var("DEFOPS_CONFIG", &config) };
    let config_set = env.fixes.join("config-set.wasm");
    let mut report = String::new();
    let mut line = |s: String| {
        println!("{s}");
        report.push_str(&s);
        report.push('\n');
    };
    line(format!(
        "machine: {} cores; {} repetitions, medians",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        reps
    ));
    line(String::new());
    line("| case | defops-wasm | comparison | ratio | goal |".into());
    line("|---|---|---|---|---|".into());
    if args.iter().any(|a| a == "host-calls") {
        host_calls::run(&env, reps, &mut line);
        return;
    }
    if args.iter().any(|a| a == "start") {
        start::run(&env, &config_set, reps, &mut line);
        return;
    }
    if args.iter().any(|a| a == "logs") {
        logs::run(&env, reps, log_bytes, &mut line);
        return;
    }
    if args.iter().any(|a| a == "edits") {
        edits::run(&env, &config_set, reps, files, &mut line);
        return;
    }
    if args.iter().any(|a| a == "python") {
        python::run(&env, &root, reps, &mut line);
        return;
    }

    // 1. Start, and the peak RSS of a small fix.
    start::run(&env, &config_set, reps, &mut line);

    // 2. Edits, rollback, report, journal verify.
    edits::run(&env, &config_set, reps, files, &mut line);

    // 3. Scaffold and build: cold (a fresh target directory), then a
    // second fix in the same one.
    let scaffold = env.work.join("scaffold");
    fresh_dir(&scaffold);
    let target_dir = scaffold.join("target");
    let new_build = |name: &str| {
        let dir = scaffold.join(name);
        let started = std::time::Instant::now();
        let ok = Command::new(&env.bin)
            .args(["new", name, "--dir"])
            .arg(&dir)
            .output()
            .unwrap()
            .status
            .success();
        assert!(ok, "defops-wasm new");
        let out = Command::new(&env.bin)
            .args(["build", "-q", "--target-dir"])
            .arg(&target_dir)
            .arg(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        started.elapsed()
    };
    let cold = new_build("first-fix");
    let warm = new_build("second-fix");
    line(format!(
        "| `new` + `build` of a scaffold, cold (fresh target dir) | {} | | | under a minute: {} |",
        secs(cold),
        if cold.as_secs() < 60 { "met" } else { "MISSED" }
    ));
    line(format!(
        "| `new` + `build` of a second fix (warm) | {} | the cold one {} | {:.3}x | under 5 s: {} |",
        secs(warm),
        secs(cold),
        warm.as_secs_f64() / cold.as_secs_f64(),
        if warm.as_secs() < 5 { "met" } else { "MISSED" }
    ));

    // 4. Log scan.
    logs::run(&env, reps, log_bytes, &mut line);

    // 5. Host calls on adversarial trees.
    host_calls::run(&env, reps, &mut line);

    // 6. A Python fix.
    python::run(&env, &root, reps, &mut line);

    let out_dir = target.join("bench");
    fs::create_dir_all(&out_dir).unwrap();
    fs::File::create(out_dir.join("results.md"))
        .unwrap()
        .write_all(report.as_bytes())
        .unwrap();
    let _ = fs::remove_dir_all(&env.work);
}
