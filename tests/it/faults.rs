//! Faults: a disk that fills up during a commit, and SIGKILL at random
//! moments of a real run. Nothing half-written stays, the journal says
//! intact or torn tail, and rollback restores the tree exactly.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::util::{Tree, fix, guest};

/// A small tmpfs, unmounted on drop; `None` where mounting is not allowed.
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(at).ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs {
            path: at.to_path_buf(),
        })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Fills `dir`'s file system until fewer than `leave` bytes are free.
fn fill(dir: &Path, leave: u64) {
    let st = rustix::fs::statvfs(dir).unwrap();
    let free = st.f_bavail * st.f_frsize;
    let size = free.saturating_sub(leave);
    std::fs::write(dir.join("filler"), vec![0u8; size as usize]).unwrap();
}

#[test]
fn a_disk_filling_up_mid_commit_stops_cleanly_and_rolls_back() {
    let t = Tree::new();
    let Some(fs) = Tmpfs::mount(&t.path("grant/full"), "1m") else {
        eprintln!("cannot mount a tmpfs here; the enospc fail point covers this");
        return disk_full_by_fail_point(&t);
    };
    let g = fs.path.display().to_string();
    for n in ["a", "b", "c"] {
        std::fs::write(fs.path.join(format!("{n}.conf")), "small = 1\n").unwrap();
    }
    fill(&fs.path, 32 << 10);
    let before = t.snapshot("grant");
    // Larger than what is left, smaller than an argument may be.
    let big = "x".repeat(96 << 10);
    let ops = format!(
        "write {g}/a.conf small\\s=\\s2\\n;write {g}/b.conf {big};write {g}/c.conf small\\s=\\s3\\n"
    );
    let ops = format!("ops={ops}");
    let out = t
        .defops()
        .args(&[
            "run",
            guest("fsops").to_str().unwrap(),
            "--allow",
            &g,
            "--json",
        ])
        .args(&["-p", &ops])
        .output();
    out.assert_code(2);
    let s = out.summary();
    assert_eq!(s["outcome"], "error");
    assert_eq!(s["changed"], 1, "{s}");
    let err = s["error"].as_str().unwrap();
    assert!(err.contains("No space left on device"), "{err}");
    assert!(err.contains("defops-wasm rollback"), "{err}");
    // Nothing half-written: b.conf as it was, no temporary file left.
    assert_eq!(
        std::fs::read_to_string(fs.path.join("b.conf")).unwrap(),
        "small = 1\n"
    );
    let leftovers: Vec<_> = std::fs::read_dir(&fs.path)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".defops-tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    t.verify_and_roll_back(s["run_id"].as_str().unwrap());
    assert_eq!(t.snapshot("grant"), before);
}

fn disk_full_by_fail_point(t: &Tree) {
    for n in ["a", "b", "c"] {
        t.write(&format!("grant/{n}.conf"), "max_conn = 1\n");
    }
    let before = t.snapshot("grant");
    let out = t
        .set_max_conn_cmd(&t.p("grant/*.conf"), "2")
        .env("DEFOPS_FAILPOINT", "enospc-at-1")
        .output();
    out.assert_code(2);
    let run_id = out.summary()["run_id"].as_str().unwrap().to_string();
    t.defops()
        .args(&["rollback", &run_id])
        .output()
        .assert_code(0);
    assert_eq!(t.snapshot("grant"), before);
}

#[test]
fn a_full_state_directory_changes_nothing() {
    let t = Tree::new();
    let Some(fs) = Tmpfs::mount(&t.path("small-state"), "256k") else {
        eprintln!("cannot mount a tmpfs here; skipped");
        return;
    };
    std::fs::create_dir_all(fs.path.join("state")).unwrap();
    fill(&fs.path, 0);
    t.write("grant/app.conf", "max_conn = 1\n");
    let before = t.snapshot("grant");
    let out = t
        .set_max_conn_cmd(&t.p("grant/app.conf"), "2")
        .env("DEFOPS_STATE_DIR", fs.path.join("state").to_str().unwrap())
        .output();
    assert!(out.code == 2 || out.code == 3, "{out:?}");
    out.assert_stderr("No space left on device");
    assert_eq!(t.snapshot("grant"), before);
}

/// A seed from the clock, or `DEFOPS_KILL_SEED` to replay one.
fn seed() -> u64 {
    std::env::var("DEFOPS_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        })
}

#[test]
fn sigkill_at_random_moments_never_loses_the_way_back() {
    const FILES: usize = 150;
    let rounds: usize = std::env::var("DEFOPS_KILL_ROUNDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(12);
    let seed = seed();
    eprintln!("random kills: seed {seed} (DEFOPS_KILL_SEED replays it), {rounds} rounds");
    let mut rng = defops_host::fuzzing::Rng::new(seed);
    let setup = |t: &Tree| {
        for n in 0..FILES {
            t.write(
                &format!("grant/c{n:03}.conf"),
                &format!("# file {n}\nmax_conn = 1\n"),
            );
        }
        t.write("grant/sub/keep", "keep\n");
    };
    let start = |t: &Tree| {
        t.defops()
            .into_command()
            .args([
                "run",
                fix("config-set").to_str().unwrap(),
                "--allow",
                &t.p("grant"),
            ])
            .args([
                "-p",
                &format!("file={}", t.p("grant/*.conf")),
                "-p",
                "key=max_conn",
            ])
            .args(["-p", "value=9"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    // How long a whole run takes here, to spread the kills over it.
    let probe = Tree::new();
    setup(&probe);
    let t0 = Instant::now();
    assert!(start(&probe).wait().unwrap().success());
    let whole = t0.elapsed();
    let (mut before_journal, mut torn, mut intact) = (0, 0, 0);
    for round in 0..rounds {
        let t = Tree::new();
        setup(&t);
        let before = t.snapshot("grant");
        let delay = Duration::from_micros(rng.next_u64() % (whole.as_micros() as u64 + 1));
        let mut child = start(&t);
        std::thread::sleep(delay);
        let _ = child.kill();
        let _ = child.wait();
        let runs: Vec<PathBuf> = std::fs::read_dir(t.path("state/runs"))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        let Some(run) = runs.first() else {
            before_journal += 1;
            assert_eq!(
                t.snapshot("grant"),
                before,
                "round {round}: changed without a journal"
            );
            continue;
        };
        let journal = run.join("journal.jsonl");
        let verify = t
            .defops()
            .args(&["journal", "verify", journal.to_str().unwrap()])
            .output();
        match verify.code {
            0 => intact += 1,
            1 => torn += 1,
            // Killed while writing the header: not a journal yet, and
            // nothing may have changed.
            2 if t.snapshot("grant") == before => {
                before_journal += 1;
                continue;
            }
            other => panic!(
                "round {round} (delay {delay:?}): verify said {other}: {}",
                verify.stderr
            ),
        }
        let back = t
            .defops()
            .args(&["rollback", journal.to_str().unwrap()])
            .output();
        // A journal without an intent changed nothing, and may have no
        // header yet: then there is nothing to roll back.
        if back.code != 0 {
            assert_eq!(
                t.snapshot("grant"),
                before,
                "round {round}: {}",
                back.stderr
            );
            continue;
        }
        assert_eq!(
            t.snapshot("grant"),
            before,
            "round {round} (seed {seed}, delay {delay:?}): rollback did not restore the tree"
        );
    }
    eprintln!(
        "random kills: {rounds} rounds, {before_journal} before the journal, {torn} torn, {intact} intact; 0 lost"
    );
}

/// A real run of many edits under a low limit of open files: the files it
/// replaces are closed in the background only as far as the limit allows,
/// so the commit never runs out of descriptors; its rollback too.
#[test]
fn many_edits_under_a_low_open_file_limit() {
    for limit in [64, 160] {
        let t = Tree::new();
        for i in 0..600 {
            t.write(&format!("grant/c{i:03}.conf"), "max_conn = 1\n");
        }
        let out = t.shell(&format!(
            "ulimit -n {limit}; defops-wasm run {} --allow {} --json -p 'file={}/*.conf' -p key=max_conn -p value=3",
            fix("config-set").display(),
            t.p("grant"),
            t.p("grant"),
        ));
        out.assert_code(0);
        let s = out.summary();
        assert_eq!(s["changed"], 600, "limit {limit}: {out:?}");
        assert_eq!(t.read("grant/c599.conf"), "max_conn = 3\n");
        let run_id = s["run_id"].as_str().unwrap().to_string();
        let back = t.shell(&format!(
            "ulimit -n {limit}; defops-wasm rollback {run_id} --json"
        ));
        back.assert_code(0);
        assert_eq!(t.read("grant/c599.conf"), "max_conn = 1\n");
    }
}
