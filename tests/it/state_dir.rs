//! The state directory's path: no one but this user and root may be able
//! to change what it names. Journals, before-images, the compile cache and
//! the lock are found again by path under it, so another user who could
//! rename a directory above it (or a link on the way to it) could point
//! those paths at a directory of their choosing.
//!
//! Generated: seeded chains of directories (and sometimes a link) with
//! random owners (this user or uid 65534) and modes. The oracle is an
//! attack on the real disk: after the command, uid 65534 tries to rename
//! every directory and link on the way and to write into the state
//! directory. `DEFOPS_GEN_SEEDS` / `DEFOPS_GEN_SEED` as in `plangen`.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use defops_host::fuzzing::Rng;

use crate::plangen::seeds;

const OTHER: u32 = 65534;

/// One directory or link as made: owner and mode (a group-writable one's
/// group is this user's own when `group_mine`, else the other user's).
#[derive(Debug, Clone, Copy)]
struct Made {
    other: bool,
    mode: u32,
    group_mine: bool,
}

impl Made {
    /// Half the time one the rule accepts, so that a weakness deep in a
    /// chain is reached through clean directories above it.
    fn random(rng: &mut Rng) -> Made {
        const CLEAN: [u32; 3] = [0o755, 0o711, 0o1777];
        const ANY: [u32; 8] = [0o755, 0o755, 0o711, 0o777, 0o1777, 0o775, 0o750, 0o700];
        match rng.below(2) {
            0 => Made {
                other: false,
                mode: CLEAN[rng.below(CLEAN.len())],
                group_mine: false,
            },
            _ => Made {
                other: rng.below(4) == 0,
                mode: ANY[rng.below(ANY.len())],
                group_mine: rng.below(3) == 0,
            },
        }
    }

    /// Made as described; a group-writable one's group is the other
    /// user's, so the attack can use it.
    fn apply(&self, p: &Path) {
        let uid = if self.other { OTHER } else { me() };
        let gid = if self.mode & 0o020 != 0 && !self.group_mine {
            OTHER
        } else {
            0
        };
        std::os::unix::fs::chown(p, Some(uid), Some(gid)).unwrap();
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(self.mode)).unwrap();
    }

    /// What the documented rule accepts: owned by this user or root, and
    /// written by no one else (a sticky directory above the state
    /// directory excepted).
    /// (A group is never taken to hold the owner alone: an ACL shows its
    /// mask in the group bits.)
    fn clean(&self, is_state: bool) -> bool {
        let others_write = self.mode & 0o022 != 0;
        let sticky = self.mode & 0o1000 != 0;
        !self.other && (!others_write || (sticky && !is_state))
    }
}

fn me() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// Every path under `dir`: kind, mode and owner.
fn listing(dir: &Path) -> BTreeMap<PathBuf, (bool, u32, u32)> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                todo.push(p.clone());
            }
            out.insert(p, (m.is_dir(), m.mode(), m.uid()));
        }
    }
    out
}

/// As uid 65534: renames each of `ways` (directories and links on the way
/// to the state directory) if it can, first taking write access to any
/// parent it owns, then tries to write into `state`. What it managed.
fn attack(ways: &[PathBuf], state: &Path) -> Option<String> {
    const SCRIPT: &str = r#"
state=$1; shift
take() { [ "$(stat -c %u "$1")" = 65534 ] && chmod u+rwx "$1" 2>/dev/null; }
for d in "$@"; do
  take "$(dirname "$d")"
  if mv -T -- "$d" "$d.taken" 2>/dev/null; then echo "renamed $d"; exit 0; fi
done
take "$state"
if mkdir -- "$state/taken" 2>/dev/null; then echo "wrote into $state"; exit 0; fi
exit 1
"#;
    let out = Command::new("sh")
        .args(["-c", SCRIPT, "attack"])
        .arg(state)
        .args(ways)
        .uid(OTHER)
        .gid(OTHER)
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[test]
fn a_state_directory_someone_else_could_swap_is_refused_and_nothing_is_made() {
    let exe = env!("CARGO_BIN_EXE_defops-wasm");
    let (mut accepted, mut refused) = (0, 0);
    for seed in seeds(96) {
        let mut rng = Rng::new(seed.wrapping_mul(0x2545_F491_4F6C_DD1D));
        let base = tempfile::tempdir().unwrap();
        std::fs::set_permissions(base.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        // base/d0/d1/.. (made), then the state directory (made or not).
        let mut chain: Vec<(PathBuf, Made)> = Vec::new();
        let mut at = base.path().to_path_buf();
        for i in 0..1 + rng.below(3) {
            at = at.join(format!("d{i}"));
            std::fs::create_dir(&at).unwrap();
            chain.push((at.clone(), Made::random(&mut rng)));
        }
        // The state directory: made, not yet made, or a link someone put
        // where it is to be, to a directory of root's.
        let state = at.join("state");
        let (mut state_made, mut state_link) = (None, None);
        match rng.below(4) {
            0 | 1 => {
                std::fs::create_dir(&state).unwrap();
                state_made = Some(Made::random(&mut rng));
            }
            2 => {
                let elsewhere = base.path().join("elsewhere");
                std::fs::create_dir(&elsewhere).unwrap();
                std::os::unix::fs::symlink(&elsewhere, &state).unwrap();
                let other = rng.below(2) == 0;
                let uid = if other { OTHER } else { me() };
                std::os::unix::fs::lchown(&state, Some(uid), Some(uid)).unwrap();
                state_link = Some(other);
            }
            _ => {}
        }
        // Sometimes the path given goes through a link `via` beside a
        // directory of the chain, leading to the next one.
        let mut given = state.clone();
        let (mut link, mut hop_link) = (None, None);
        if chain.len() > 1 && rng.below(3) == 0 {
            let j = rng.below(chain.len() - 1);
            // Often in a sticky directory, where its owner may move it.
            if rng.below(2) == 0 {
                chain[j].1 = Made {
                    other: false,
                    mode: 0o1777,
                    group_mine: false,
                };
            }
            let via = chain[j].0.join("via");
            let other = rng.below(2) == 0;
            let uid = if other { OTHER } else { me() };
            // Sometimes by way of a second link, in a shared directory,
            // that the first one's target goes through.
            let hop = (rng.below(2) == 0).then(|| {
                let shared = base.path().join("shared");
                std::fs::create_dir(&shared).unwrap();
                std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
                let hop = shared.join("hop");
                std::os::unix::fs::symlink(&chain[j + 1].0, &hop).unwrap();
                let other = rng.below(2) == 0;
                let uid = if other { OTHER } else { me() };
                std::os::unix::fs::lchown(&hop, Some(uid), Some(uid)).unwrap();
                (hop, other)
            });
            let target = match &hop {
                Some((hop, _)) => hop.clone(),
                None => chain[j + 1].0.clone(),
            };
            std::os::unix::fs::symlink(&target, &via).unwrap();
            std::os::unix::fs::lchown(&via, Some(uid), Some(uid)).unwrap();
            given = via.join(state.strip_prefix(&chain[j + 1].0).unwrap());
            link = Some((via, other));
            hop_link = hop;
        }
        for (p, m) in &chain {
            m.apply(p);
        }
        if let Some(m) = state_made {
            m.apply(&state);
        }
        let case = format!(
            "seed {seed} (DEFOPS_GEN_SEED={seed} DEFOPS_GEN_SEEDS=1 replays it): {:?}, state {state_made:?}, state a link (true: the other user's) {state_link:?}, a link on the way (true: the other user's) {link:?} (through {hop_link:?})",
            chain
                .iter()
                .map(|(p, m)| format!("{} {m:?}", p.file_name().unwrap().to_string_lossy()))
                .collect::<Vec<_>>()
        );

        let before = listing(base.path());
        let out = Command::new(exe)
            .arg("--state-dir")
            .arg(&given)
            .args(["pause", "--reason", "generated"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let clean = chain.iter().all(|(_, m)| m.clean(false))
            && state_made.is_none_or(|m| m.clean(true))
            && link.as_ref().is_none_or(|(_, other)| !other)
            && state_link != Some(true)
            && hop_link.as_ref().is_none_or(|(_, other)| !other);
        if out.status.success() {
            accepted += 1;
            let written = std::fs::read_dir(&state).map(|mut d| d.next().is_some());
            assert!(written.unwrap_or(false), "{case}: nothing paused");
            // Whatever it accepted, the other user cannot swap.
            let mut ways: Vec<PathBuf> = chain.iter().map(|(p, _)| p.clone()).collect();
            ways.push(state.clone());
            ways.extend(link.iter().chain(&hop_link).map(|(l, _)| l.clone()));
            if let Some(how) = attack(&ways, &state) {
                panic!("{case}: accepted a state directory uid {OTHER} could take: {how}");
            }
        } else {
            refused += 1;
            assert!(!clean, "{case}: refused a clean chain: {stderr}");
            assert_eq!(out.status.code(), Some(2), "{case}: {stderr}");
            assert_eq!(stderr.trim().lines().count(), 1, "{case}: {stderr}");
            assert!(stderr.contains("is not safe"), "{case}: {stderr}");
            assert_eq!(listing(base.path()), before, "{case}: changed the disk");
        }
    }
    assert!(
        accepted > 0 && refused > 0,
        "accepted {accepted}, refused {refused}: the generator must reach both"
    );
}

#[test]
fn a_run_under_a_directory_anyone_can_write_is_refused_before_anything_is_written() {
    let t = crate::util::Tree::new();
    t.write("grant/app.conf", "max_conn = 20\n");
    let shared = t.path("outside/shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
    let before = t.snapshot("");
    let out = t
        .defops()
        .env("DEFOPS_STATE_DIR", shared.join("state").to_str().unwrap())
        .args(&[
            "run",
            crate::util::fix("config-set").to_str().unwrap(),
            "--allow",
            &t.p("grant"),
            "--dry-run",
            "-p",
            &format!("file={}", t.p("grant/app.conf")),
            "-p",
            "key=max_conn",
            "-p",
            "value=50",
        ])
        .output();
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains(&format!(
            "{} can be written by others (mode 0777)",
            shared.display()
        )) && out.stderr.contains("chmod go-w"),
        "{out:?}"
    );
    assert_eq!(t.snapshot(""), before);
    assert!(!shared.join("state").exists());
}

/// The state directory's name taken in turn by a directory and a link of
/// the other user's (swapped atomically, in a loop, while the command
/// checks the path): every attempt is refused, and nothing lands where the
/// link points.
#[test]
fn a_name_swapped_between_a_directory_and_a_link_while_it_is_checked_is_never_taken() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let base = tempfile::tempdir().unwrap();
    std::fs::set_permissions(base.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let shared = base.path().join("pub");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let victim = base.path().join("victim");
    std::fs::create_dir(&victim).unwrap();
    let stop = AtomicBool::new(false);
    let swaps = std::thread::scope(|scope| {
        let swapper = scope.spawn(|| {
            // This thread alone becomes the other user.
            rustix::thread::set_thread_res_gid(
                rustix::process::Gid::from_raw(OTHER),
                rustix::process::Gid::from_raw(OTHER),
                rustix::process::Gid::from_raw(OTHER),
            )
            .unwrap();
            let other = rustix::process::Uid::from_raw(OTHER);
            rustix::thread::set_thread_res_uid(other, other, other).unwrap();
            std::fs::create_dir(shared.join("X")).unwrap();
            std::os::unix::fs::symlink(&victim, shared.join("Xl")).unwrap();
            let mut swaps = 0u64;
            while !stop.load(Ordering::Relaxed) {
                rustix::fs::renameat_with(
                    rustix::fs::CWD,
                    shared.join("X"),
                    rustix::fs::CWD,
                    shared.join("Xl"),
                    rustix::fs::RenameFlags::EXCHANGE,
                )
                .unwrap();
                swaps += 1;
            }
            swaps
        });
        while !shared.join("Xl").exists() && !swapper.is_finished() {
            std::thread::yield_now();
        }
        for _ in 0..150 {
            let out = Command::new(env!("CARGO_BIN_EXE_defops-wasm"))
                .arg("--state-dir")
                .arg(shared.join("X"))
                .args(["pause", "--reason", "race"])
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "taken: {stderr}");
            assert!(stderr.contains("is not safe"), "{stderr}");
        }
        stop.store(true, Ordering::Relaxed);
        swapper.join().unwrap()
    });
    assert!(swaps > 0);
    assert_eq!(std::fs::read_dir(&victim).unwrap().count(), 0);
}

/// A state directory once shared keeps what others made in it when its
/// own mode is fixed: a directory of the other user's, or a link, among
/// its entries is refused (nothing written through it); a `..` after a
/// directory that does not exist is refused before anything is made.
#[test]
fn what_a_once_shared_state_directory_still_holds_is_refused() {
    let exe = env!("CARGO_BIN_EXE_defops-wasm");
    let base = tempfile::tempdir().unwrap();
    let state = base.path().join("state");
    let pause = |state: &Path| {
        Command::new(exe)
            .arg("--state-dir")
            .arg(state)
            .args(["pause", "--reason", "x"])
            .output()
            .unwrap()
    };
    std::fs::create_dir(&state).unwrap();
    std::fs::create_dir(state.join("pause")).unwrap();
    std::os::unix::fs::chown(state.join("pause"), Some(OTHER), Some(OTHER)).unwrap();
    let out = pause(&state);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("pause is owned by uid 65534"), "{stderr}");
    assert_eq!(std::fs::read_dir(state.join("pause")).unwrap().count(), 0);

    std::fs::remove_dir(state.join("pause")).unwrap();
    let elsewhere = base.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, state.join("pause")).unwrap();
    let out = pause(&state);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("pause is a link"), "{stderr}");
    assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);

    // A lock with a second name: what is written to it lands there too.
    std::fs::remove_file(state.join("pause")).unwrap();
    std::fs::write(elsewhere.join("precious"), "keep\n").unwrap();
    std::fs::hard_link(elsewhere.join("precious"), state.join("lock")).unwrap();
    let out = pause(&state);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("lock has 2 names"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(elsewhere.join("precious")).unwrap(),
        "keep\n"
    );
    std::fs::remove_file(state.join("lock")).unwrap();

    // Commands that only read it, or remove from it, are refused too.
    let victim = base.path().join("victim");
    std::fs::create_dir(&victim).unwrap();
    std::fs::write(victim.join("web1.json"), "{}\n").unwrap();
    std::os::unix::fs::symlink(&victim, state.join("scheduled")).unwrap();
    let units = base.path().join("units");
    let instances = base.path().join("instances");
    std::fs::create_dir(&units).unwrap();
    std::fs::create_dir(&instances).unwrap();
    std::fs::write(instances.join("web1.toml"), "").unwrap();
    for args in [
        &["status"][..],
        &["journal", "list"],
        &["check"],
        &[
            "schedule",
            "remove",
            "web1",
            "--dir",
            instances.to_str().unwrap(),
            "--unit-dir",
            units.to_str().unwrap(),
        ],
    ] {
        let out = Command::new(exe)
            .arg("--state-dir")
            .arg(&state)
            .args(args)
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert_ne!(out.status.code(), Some(0), "{args:?}: {said}");
        assert!(said.contains("scheduled is a link"), "{args:?}: {said}");
    }
    assert!(victim.join("web1.json").exists());
    assert!(instances.join("web1.toml").exists());

    let before = listing(base.path());
    let out = pause(&base.path().join("new/../state2"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("does not exist yet"), "{stderr}");
    assert_eq!(listing(base.path()), before);
}

/// A state directory that does not exist yet, where anyone could make it
/// (a sticky directory): a command that only reads it makes it all the
/// same (so no one can put a link there before it reads), and a rollback
/// refused for a run it cannot find makes nothing.
#[test]
fn a_missing_state_directory_in_a_shared_directory_is_made_by_a_reader_only() {
    let exe = env!("CARGO_BIN_EXE_defops-wasm");
    let base = tempfile::tempdir().unwrap();
    std::fs::set_permissions(base.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let shared = base.path().join("pub");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let out = Command::new(exe)
        .arg("--state-dir")
        .arg(shared.join("state"))
        .args(["journal", "list"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let m = std::fs::symlink_metadata(shared.join("state")).unwrap();
    assert!(m.is_dir());
    assert_eq!((m.uid(), m.mode() & 0o7777), (me(), 0o700));

    let private = base.path().join("private");
    std::fs::create_dir(&private).unwrap();
    let out = Command::new(exe)
        .arg("--state-dir")
        .arg(private.join("state"))
        .args(["rollback", "20260101T000000Z-000000"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(!private.join("state").exists());
}

/// A run directory someone else made under `runs/` while it was writable
/// by others, holding a journal with a consistent chain (anyone can write
/// one): no command counts it as a run of this host's, and rollback
/// refuses it.
#[test]
fn a_run_someone_else_planted_under_runs_is_not_one_of_ours() {
    let t = crate::util::Tree::new();
    t.write("grant/app.conf", "max_conn = 20\n");
    let dry = t.set_max_conn(&t.p("grant/app.conf"), "50", &["--dry-run"]);
    assert_eq!(dry.code, 0, "{dry:?}");
    let real_id = dry.summary()["run_id"].as_str().unwrap().to_string();
    // The planted run: a copy of a real journal (a consistent chain), in a
    // directory of the other user's.
    let planted = t.path("state/runs/20991231T000000Z-abcdef");
    std::fs::create_dir(&planted).unwrap();
    std::fs::copy(
        t.path(&format!("state/runs/{real_id}/journal.jsonl")),
        planted.join("journal.jsonl"),
    )
    .unwrap();
    std::os::unix::fs::chown(&planted, Some(OTHER), Some(OTHER)).unwrap();
    let list = t.defops().args(&["journal", "list"]).output();
    assert_eq!(list.code, 0, "{list:?}");
    assert!(list.stdout.contains(&real_id), "{list:?}");
    assert!(!list.stdout.contains("20991231T000000Z"), "{list:?}");
    // Not counted, and said so: monitoring warns rather than count fewer
    // runs in silence (an operator's `chmod 664` of a journal, too).
    let check = t.defops().args(&["check"]).output();
    assert_eq!(check.code, 1, "{check:?}");
    assert!(
        check.stdout.contains("DEFOPS WARNING")
            && check.stdout.contains("20991231T000000Z-abcdef")
            && !check.stdout.contains(&real_id),
        "{check:?}"
    );
    let status = t.defops().args(&["status"]).output();
    assert!(
        status.stdout.contains("not counted: 1 run(s)"),
        "{status:?}"
    );
    let back = t
        .defops()
        .args(&["rollback", "20991231T000000Z-abcdef"])
        .output();
    assert_eq!(back.code, 3, "{back:?}");
    assert!(back.stderr.contains("only this user can write"), "{back:?}");
}
