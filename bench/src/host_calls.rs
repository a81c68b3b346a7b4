//! Case 7: the deadline and the off-switch over host calls.
//!
//! - the time of one host call on an adversarial tree: `metadata` of a
//!   path as deep as PATH_MAX allows, of a chain of 39 symlinks each
//!   leading down 800 directories and back, and of 39 absolute symlinks
//!   each naming the next 1,900 directories down (as `run --dry-run` of
//!   the `fsops` test guest, less the same run on a shallow path);
//! - the time from `--timeout 1s` to exit, and from `pause` to exit, with
//!   the guest inside such calls (the `hostile` guest's `stat-loop`).
//!
//! Run alone with `defops-bench --only host-calls`.

use std::ffi::CString;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::{Env, defops, fresh_dir, median, ms};

/// `depth` nested directories `d` under `base`, made relative to each other
/// (the full path is longer than mkdir accepts).
fn deep_dirs(base: &Path, depth: usize) {
    let c = |s: &str| CString::new(s).unwrap();
    let base = c(base.to_str().unwrap());
    // SAFETY: plain syscalls on descriptors this function owns.
    unsafe {
        let mut fd = libc::open(base.as_ptr(), libc::O_DIRECTORY | libc::O_RDONLY);
        assert!(fd >= 0);
        for _ in 0..depth {
            libc::mkdirat(fd, c("d").as_ptr(), 0o755);
            let next = libc::openat(fd, c("d").as_ptr(), libc::O_DIRECTORY | libc::O_RDONLY);
            assert!(next >= 0);
            libc::close(fd);
            fd = next;
        }
        libc::close(fd);
    }
}

/// The chain `l0` -> down `depth`, back up, `l1` -> ... -> `l38` -> down.
fn link_chain(grant: &Path, depth: usize) -> String {
    let down = vec!["d"; depth].join("/");
    let up = vec![".."; depth].join("/");
    for i in 0..39 {
        let target = match i {
            38 => down.clone(),
            _ => format!("{down}/{up}/l{}", i + 1),
        };
        std::os::unix::fs::symlink(target, grant.join(format!("l{i}"))).unwrap();
    }
    grant.join("l0").display().to_string()
}

/// 39 absolute links in the directory `depth` levels down, each naming the
/// next by its full path (every hop walks down from `/` again).
fn absolute_chain(grant: &Path, depth: usize) -> String {
    let deep = format!("{}/{}", grant.display(), vec!["d"; depth].join("/"));
    for i in 0..39 {
        let link = match i {
            0 => grant.join("l0").display().to_string(),
            _ => format!("{deep}/l{i}"),
        };
        let target = match i {
            38 => deep.clone(),
            _ => format!("{deep}/l{}", i + 1),
        };
        std::os::unix::fs::symlink(target, link).unwrap();
    }
    grant.join("l0").display().to_string()
}

fn stat_once(env: &Env, state: &Path, grant: &Path, path: &str) -> Duration {
    let fsops = env.guests.join("fsops.wasm");
    let started = Instant::now();
    let out = defops(env, state)
        .args(["run", fsops.to_str().unwrap(), "--allow"])
        .arg(grant)
        .args(["--dry-run", "--timeout", "24h", "-p"])
        .arg(format!("ops=stat {path}"))
        .output()
        .unwrap();
    let took = started.elapsed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

/// Starts a run of the hostile guest calling `metadata(path)` forever and
/// returns once it is in its loop (its first progress message).
fn start_loop(
    env: &Env,
    state: &Path,
    grant: &Path,
    path: &str,
    extra: &[&str],
) -> std::process::Child {
    let hostile = env.guests.join("hostile.wasm");
    let mut child = defops(env, state)
        .args(["run", hostile.to_str().unwrap(), "--allow"])
        .arg(grant)
        .args(["--json", "-p", "mode=stat-loop", "-p"])
        .arg(format!("path={path}"))
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        // Drained so the run never blocks on a full pipe.
        while let Some(Ok(_)) = lines.next() {}
    });
    child
}

fn wait(child: &mut std::process::Child) -> Duration {
    let started = Instant::now();
    child.wait().unwrap();
    started.elapsed()
}

pub fn run(env: &Env, reps: usize, line: &mut dyn FnMut(String)) {
    let dir = env.work.join("host-calls");
    fresh_dir(&dir);
    let grant = dir.join("grant");
    let state = dir.join("state");
    fs::create_dir_all(&grant).unwrap();
    deep_dirs(&grant, 2000);
    let chain = link_chain(&grant, 800);
    let grant2 = dir.join("grant2");
    fs::create_dir_all(&grant2).unwrap();
    deep_dirs(&grant2, 1900);
    let absolute = absolute_chain(&grant2, 1900);
    let deepest = format!("{}/{}", grant.display(), vec!["d"; 1950].join("/"));
    let shallow = format!("{}/d", grant.display());
    let times = |path: &str| -> Duration {
        median(
            (0..reps)
                .map(|_| stat_once(env, &state, &grant, path))
                .collect(),
        )
    };
    // Warm: the component is compiled once, before anything is timed.
    stat_once(env, &state, &grant, &shallow);
    let base = times(&shallow);
    for (name, grant, path) in [
        ("a path 1950 directories deep (~4 KiB)", &grant, &deepest),
        (
            "39 symlinks, each 800 directories down and back",
            &grant,
            &chain,
        ),
        (
            "39 absolute symlinks, each 1900 directories down",
            &grant2,
            &absolute,
        ),
    ] {
        let t = median(
            (0..reps)
                .map(|_| stat_once(env, &state, grant, path))
                .collect(),
        );
        line(format!(
            "| one host call: metadata of {name} | {} | the same run on a shallow path: {} | {} for the call | within the deadline's slice: {} |",
            ms(t),
            ms(base),
            ms(t.saturating_sub(base)),
            if t.saturating_sub(base) < Duration::from_millis(250) {
                "met"
            } else {
                "MISSED"
            }
        ));
    }
    // From the deadline to exit, the guest inside such calls.
    let mut over = Vec::new();
    for _ in 0..reps {
        let started = Instant::now();
        let mut child = start_loop(
            env,
            &state,
            &grant,
            &chain,
            &["--dry-run", "--timeout", "1s"],
        );
        child.wait().unwrap();
        over.push(started.elapsed());
    }
    let over = median(over);
    line(format!(
        "| --timeout 1s, guest in long host calls | exit after {} | | | ends within 1 s of the deadline: {} |",
        ms(over),
        if over < Duration::from_secs(2) + Duration::from_millis(500) {
            "met"
        } else {
            "MISSED"
        }
    ));
    // From pause to exit (a real run: the pause watcher runs only then).
    let mut stops = Vec::new();
    for _ in 0..reps {
        let mut child = start_loop(
            env,
            &state,
            &grant,
            &chain,
            &[
                "--timeout",
                "10m",
                "--no-dry-run-first",
                "--reason",
                "bench",
            ],
        );
        std::thread::sleep(Duration::from_millis(1500));
        let out = defops(env, &state)
            .args(["pause", "--reason", "bench"])
            .output()
            .unwrap();
        assert!(out.status.success());
        let t = wait(&mut child);
        let _ = defops(env, &state).args(["resume"]).output();
        stops.push(t);
    }
    let stop = median(stops);
    line(format!(
        "| pause, guest in long host calls | exit {} after `pause` returned | | | under 1 s: {} |",
        ms(stop),
        if stop < Duration::from_secs(1) {
            "met"
        } else {
            "MISSED"
        }
    ));
    let _ = fs::remove_dir_all(&dir);
}
