//! Case 4: log scans. Counting a fixed string and a regex with a capture
//! group (the `fsops` test guest's `count`):
//!
//! - in one generated log (1 GiB; 64 MiB with --quick), against `rg -c`
//!   and `grep -c`;
//! - in eight rotated logs of the same total size (`app.log`,
//!   `app.log.1` ... `app.log.5`, `app.log.6.gz`, `app.log.7.gz`, through
//!   the glob `app.log*`), against `rg -z -c` and `zgrep -c` over the same
//!   files (their per-file counts summed).
//!
//! Every count is checked against the comparisons' (MISMATCH otherwise);
//! the goal is at most ripgrep's time, under 64 MiB peak.
//!
//! Run alone with `defops-bench logs`.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::{Env, fresh_dir, median, peak_rss, run_ok, secs};

/// Application-style log lines; one in 1000 reports a checksum mismatch.
pub fn generate_log(path: &Path, bytes: u64) {
    let mut out = std::io::BufWriter::with_capacity(1 << 20, fs::File::create(path).unwrap());
    let (mut written, mut n) = (0u64, 0u64);
    while written < bytes {
        let line = if n % 1000 == 999 {
            format!(
                "2026-11-25T10:{:02}:{:02}.{:03}Z ERROR store: checksum mismatch in segment seg-{:06} (expected 0x{:08x})\n",
                n / 60 % 60,
                n % 60,
                n % 1000,
                n / 1000,
                n
            )
        } else {
            format!(
                "2026-11-25T10:{:02}:{:02}.{:03}Z INFO http: GET /api/v1/items/{} 200 {}ms\n",
                n / 60 % 60,
                n % 60,
                n % 1000,
                n,
                n % 97
            )
        };
        out.write_all(line.as_bytes()).unwrap();
        written += line.len() as u64;
        n += 1;
    }
    out.flush().unwrap();
}

const PATTERNS: [(&str, &str); 2] = [
    ("fixed string", "checksum mismatch"),
    (
        "regex with a capture",
        r"checksum mismatch in segment (\S+)",
    ),
];

/// The count a `run --json` of fsops printed (its message's last word).
fn said(out: &[u8]) -> String {
    String::from_utf8_lossy(out)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["type"] == "message")
        .and_then(|v| {
            v["text"]
                .as_str()
                .and_then(|t| t.rsplit(' ').next())
                .map(String::from)
        })
        .unwrap_or_default()
}

/// The sum of `file:count` lines (or one bare count).
fn summed(out: &[u8]) -> String {
    String::from_utf8_lossy(out)
        .lines()
        .filter_map(|l| l.rsplit(':').next()?.trim().parse::<u64>().ok())
        .sum::<u64>()
        .to_string()
}

pub fn run(env: &Env, reps: usize, log_bytes: u64, line: &mut dyn FnMut(String)) {
    let logdir = env.work.join("logs");
    fresh_dir(&logdir);
    let state = env.work.join("state-logs");
    let fsops = env.guests.join("fsops.wasm");
    let rg = Command::new("rg").arg("--version").output().is_ok();
    let size = format!("{} MiB", log_bytes >> 20);
    let count_cmd = |grant: &str, glob: &str, pattern: &str| -> Vec<String> {
        vec![
            env.bin.display().to_string(),
            "run".into(),
            fsops.display().to_string(),
            "--allow-log".into(),
            format!("{}/{grant}", logdir.display()),
            "-p".into(),
            format!(
                "ops=count {}/{glob} {}",
                logdir.display(),
                pattern.replace(' ', "\\s")
            ),
            "--state-dir".into(),
            state.display().to_string(),
            "--json".into(),
        ]
    };

    // One file.
    let log = logdir.join("app.log");
    generate_log(&log, log_bytes);
    for (name, pattern) in PATTERNS {
        let ours = count_cmd("*.log", "app.log", pattern);
        let grep = || {
            let mut c = Command::new("grep");
            c.args(["-E", "-c", pattern]).arg(&log);
            c
        };
        let rg_cmd = || {
            let mut c = Command::new("rg");
            c.args(["-c", pattern]).arg(&log);
            c
        };
        let compared = [("grep", grep())]
            .into_iter()
            .chain(rg.then(|| ("rg", rg_cmd())))
            .collect();
        let row = measure(reps, &ours, compared);
        line(row.line(&format!("log scan, {name}, {size}"), "rg -c", "grep -c"));
    }
    fs::remove_file(&log).unwrap();

    // Eight rotated files, two of them gzip, the same total size.
    let mut files: Vec<PathBuf> = Vec::new();
    for i in 0..8 {
        let name = match i {
            0 => "app.log".to_string(),
            i => format!("app.log.{i}"),
        };
        let path = logdir.join(&name);
        generate_log(&path, log_bytes / 8);
        if i >= 6 {
            run_ok(Command::new("gzip").args(["-1", "-f"]).arg(&path));
            files.push(logdir.join(format!("{name}.gz")));
        } else {
            files.push(path);
        }
    }
    for (name, pattern) in PATTERNS {
        let ours = count_cmd("app.log*", "app.log*", pattern);
        let zgrep = || {
            let mut c = Command::new("zgrep");
            c.args(["-E", "-c", pattern]).args(&files);
            c
        };
        let rg_cmd = || {
            let mut c = Command::new("rg");
            c.args(["-z", "-c", pattern]).args(&files);
            c
        };
        let compared = [("zgrep", zgrep())]
            .into_iter()
            .chain(rg.then(|| ("rg", rg_cmd())))
            .collect();
        let row = measure(reps, &ours, compared);
        line(row.line(
            &format!("log scan, {name}, 8 rotated files (2 gzip), {size}"),
            "rg -z -c",
            "zgrep -c",
        ));
    }
    let _ = fs::remove_dir_all(&logdir);
    let _ = fs::remove_dir_all(&state);
}

/// One case's medians: ours, then each comparison's (grep or zgrep, then
/// rg if installed).
struct Row {
    ours: Duration,
    rss: u64,
    theirs: Vec<Duration>,
    checked: String,
}

/// Runs ours and the comparisons interleaved, and checks their counts.
fn measure(reps: usize, ours: &[String], mut compared: Vec<(&str, Command)>) -> Row {
    let out = Command::new(&ours[0]).args(&ours[1..]).output().unwrap();
    let count = said(&out.stdout);
    let mut checked = format!("{count} lines, as {}", {
        let names: Vec<&str> = compared.iter().map(|(n, _)| *n).collect();
        names.join(" and ")
    });
    for (name, cmd) in &mut compared {
        let theirs = summed(&cmd.output().unwrap().stdout);
        if theirs != count {
            checked = format!("MISMATCH: {count} vs {name} {theirs}");
            break;
        }
    }
    let mut a = Vec::new();
    let mut theirs = vec![Vec::new(); compared.len()];
    for _ in 0..reps.max(5) {
        a.push(run_ok(Command::new(&ours[0]).args(&ours[1..])));
        for ((_, cmd), t) in compared.iter_mut().zip(&mut theirs) {
            t.push(run_ok(cmd));
        }
    }
    Row {
        ours: median(a),
        rss: peak_rss(ours),
        theirs: theirs.into_iter().map(median).collect(),
        checked,
    }
}

impl Row {
    fn line(&self, case: &str, rg_name: &str, grep_name: &str) -> String {
        let (a, grep) = (self.ours, self.theirs[0]);
        let ours = format!("{} (peak {:.0} MiB)", secs(a), self.rss as f64 / 1024.0);
        let ratio = |b: Duration| a.as_secs_f64() / b.as_secs_f64();
        match self.theirs.get(1) {
            Some(&rg) => format!(
                "| {case} ({}) | {ours} | {rg_name} {}; {grep_name} {} | {:.2}x rg, {:.2}x {} | at most rg (<= 1x), under 64 MiB: {} |",
                self.checked,
                secs(rg),
                secs(grep),
                ratio(rg),
                ratio(grep),
                grep_name.split(' ').next().unwrap_or(grep_name),
                if a <= rg && self.rss < 64 * 1024 {
                    "met"
                } else {
                    "MISSED"
                }
            ),
            None => format!(
                "| {case} ({}) | {ours} | {grep_name} {} (rg not installed) | {:.2}x {} | at most rg: not measured |",
                self.checked,
                secs(grep),
                ratio(grep),
                grep_name.split(' ').next().unwrap_or(grep_name),
            ),
        }
    }
}
