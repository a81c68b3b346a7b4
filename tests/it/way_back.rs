//! The way back, over generated plans (`plangen.rs`): stopped at every
//! fail point of its commit, cut by a power loss, rolled back halfway, or
//! followed by a change of the host, a run rolls back to exactly the tree
//! it found, or the rollback refuses naming what changed and changes
//! nothing.

use std::collections::BTreeSet;
use std::path::Path;

use defops_host::fuzzing::Rng;

use crate::plangen::{Case, Snapshot, change_one_path, seeds};
use crate::util::{Out, Tree};

/// Every fail point of a commit of effects with these `ops`.
fn fail_points(ops: &[String]) -> Vec<String> {
    let mut points = vec!["after-objects".to_string(), "after-intents".to_string()];
    for (n, op) in ops.iter().enumerate() {
        for p in ["before-done", "after-done", "enospc-at", "pause-before"] {
            points.push(format!("{p}-{n}"));
        }
        // A write's new file, or a new directory, made next to its target,
        // not renamed yet.
        if op == "write" || op == "create-dir" {
            points.push(format!("before-rename-{n}"));
        }
    }
    points.push("after-sync".to_string());
    points
}

/// The `op` of every effect a `--json` output lists.
fn ops_of(out: &Out) -> Vec<String> {
    out.lines()
        .iter()
        .filter(|l| l["type"] == "effect")
        .map(|l| l["op"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// The one run in `t`'s state directory.
fn only_run(t: &Tree) -> String {
    let runs: Vec<String> = std::fs::read_dir(t.path("state/runs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(runs.len(), 1, "{runs:?}");
    runs[0].clone()
}

fn rollback(t: &Tree, run: &str) -> Out {
    rollback_with(t, run, &[])
}

fn rollback_with(t: &Tree, run: &str, extra: &[&str]) -> Out {
    t.defops()
        .args(&["rollback", run, "--json"])
        .args(extra)
        .output()
}

/// The fail point stopped the run the way it says.
#[track_caller]
fn assert_stopped(out: &Out, point: &str, case: &Case) {
    let how = if point.starts_with("enospc") {
        out.code == 2
            && out.summary()["error"]
                .as_str()
                .unwrap()
                .contains("No space")
    } else if point.starts_with("pause") {
        out.code == 5 && out.summary()["outcome"] == "aborted"
    } else {
        // Killed: no exit code.
        out.code == -1
    };
    assert!(
        how,
        "{point}: the fail point did not fire: {out:?}\n{}",
        case.describe()
    );
}

/// Runs `case` stopped at `point`, rolls it back, and checks the tree is
/// exactly as before, and that a second rollback changes nothing.
/// With `keep_done`, the journal then loses every record after its first
/// `keep_done` `done` records, as a power loss may lose what was not
/// synced.
fn stop_and_roll_back(case: &Case, point: &str, keep_done: Option<usize>) {
    let t = Tree::new();
    case.build(&t);
    let before = Snapshot::of(&t);
    let out = case.run(&t, Some(point), &[]);
    assert_stopped(&out, point, case);
    let run = only_run(&t);
    if let Some(keep) = keep_done {
        lose_done_records(&t.path(&format!("state/runs/{run}/journal.jsonl")), keep);
    }
    let back = rollback(&t, &run);
    assert_eq!(
        back.code,
        0,
        "{point}: rollback failed: {back:?}\n{}",
        case.describe()
    );
    let after = Snapshot::of(&t);
    assert!(
        after == before,
        "{point}: the tree is not back:\n{}{}",
        before.diff(&after),
        case.describe()
    );
    let again = rollback(&t, &run);
    again.assert_code(0);
    assert_eq!(again.summary()["outcome"], "nothing-to-undo");
    assert_eq!(again.summary()["changed"], 0);
    assert!(
        Snapshot::of(&t) == before,
        "{point}: a second rollback changed the tree"
    );
}

/// Cuts a journal after its first `keep` `done` records (a prefix of a
/// chain is a chain).
fn lose_done_records(journal: &Path, keep: usize) {
    let text = std::fs::read_to_string(journal).unwrap();
    let mut out = String::new();
    let mut done = 0;
    for line in text.split_inclusive('\n') {
        if line.contains("\"type\":\"done\"") {
            done += 1;
        }
        if done > keep || line.contains("\"type\":\"outcome\"") {
            break;
        }
        out.push_str(line);
    }
    std::fs::write(journal, out).unwrap();
}

/// The effects of `case`'s plan (their `op`s), from a dry-run.
fn effects_of(case: &Case) -> Vec<String> {
    let probe = Tree::new();
    case.build(&probe);
    let dry = case.run(&probe, None, &["--dry-run"]);
    assert_eq!(dry.code, 0, "dry-run: {dry:?}\n{}", case.describe());
    let ops = ops_of(&dry);
    assert_eq!(
        Some(ops.len() as u64),
        dry.summary()["changed"].as_u64(),
        "{}",
        case.describe()
    );
    assert!(!ops.is_empty(), "{}", case.describe());
    ops
}

/// Every generated plan, stopped at every fail point of its commit, rolls
/// back to exactly the tree it found; a second rollback changes nothing.
#[test]
fn generated_plans_roll_back_from_every_fail_point() {
    let (mut plans, mut runs) = (0, 0);
    for seed in seeds(8) {
        let case = Case::generate(seed);
        let points = fail_points(&effects_of(&case));
        // Two at a time: each is three processes, mostly waiting on disk.
        std::thread::scope(|s| {
            for half in points.chunks(points.len().div_ceil(2)) {
                let case = &case;
                s.spawn(move || half.iter().for_each(|p| stop_and_roll_back(case, p, None)));
            }
        });
        runs += points.len();
        plans += 1;
    }
    eprintln!("crash matrix: {plans} generated plans, {runs} plan x fail point runs rolled back");
}

/// A power loss keeps the intents (synced before the first change) but
/// may lose the `done` records after them (synced at the end) while their
/// effects are on the disk: rollback reads those from the disk, several
/// in order.
#[test]
fn a_power_loss_that_lost_done_records_rolls_back_from_the_disk() {
    let mut runs = 0;
    for seed in seeds(4) {
        let case = Case::generate(seed);
        let effects = effects_of(&case).len();
        let mut rng = Rng::new(seed ^ 0x9A55);
        let mut cuts = vec![("after-sync".to_string(), 0)];
        for _ in 0..3 {
            let n = rng.below(effects);
            cuts.push((format!("after-done-{n}"), rng.below(n + 1)));
        }
        for (point, keep) in cuts {
            stop_and_roll_back(&case, &point, Some(keep));
            runs += 1;
        }
    }
    eprintln!("power loss: {runs} runs with lost done records rolled back");
}

/// A rollback cut off at any fail point of its own commit is finished by
/// the next one: the tree is back, and a third changes nothing.
#[test]
fn a_rollback_cut_off_is_finished_by_the_next_one() {
    let mut runs = 0;
    for seed in seeds(3) {
        let case = Case::generate(seed);
        let probe = Tree::new();
        case.build(&probe);
        case.run(&probe, None, &[]).assert_code(0);
        let dry = probe
            .defops()
            .args(&["rollback", &only_run(&probe), "--dry-run", "--json"])
            .output();
        dry.assert_code(0);
        let inverse = ops_of(&dry);
        assert_eq!(
            Some(inverse.len() as u64),
            dry.summary()["changed"].as_u64()
        );
        let mut points = vec!["after-intents".to_string(), "after-sync".to_string()];
        for (n, op) in inverse.iter().enumerate() {
            points.push(format!("before-done-{n}"));
            points.push(format!("after-done-{n}"));
            if op == "write" || op == "create-dir" {
                points.push(format!("before-rename-{n}"));
            }
        }
        for point in points {
            let t = Tree::new();
            case.build(&t);
            let before = Snapshot::of(&t);
            case.run(&t, None, &[]).assert_code(0);
            let run = only_run(&t);
            let cut = t
                .defops()
                .env("DEFOPS_FAILPOINT", &point)
                .args(&["rollback", &run, "--json"])
                .output();
            assert_eq!(
                cut.code, -1,
                "{point}: the fail point did not fire: {cut:?}"
            );
            let back = rollback(&t, &run);
            assert_eq!(
                back.code,
                0,
                "{point}: the next rollback failed: {back:?}\n{}",
                case.describe()
            );
            let after = Snapshot::of(&t);
            assert!(
                after == before,
                "{point}: the tree is not back:\n{}{}",
                before.diff(&after),
                case.describe()
            );
            let again = rollback(&t, &run);
            again.assert_code(0);
            assert_eq!(again.summary()["outcome"], "nothing-to-undo");
            runs += 1;
        }
    }
    eprintln!("rollbacks cut off: {runs} finished by the next one");
}

/// A host changed after a complete run makes rollback refuse, name the
/// path and change nothing; `check` is then not OK.
#[test]
fn a_host_changed_after_a_complete_run_is_drift_never_undone() {
    let mut cases = 0;
    for seed in seeds(24) {
        let case = Case::generate(seed);
        let t = Tree::new();
        case.build(&t);
        case.run(&t, None, &[]).assert_code(0);
        let run = only_run(&t);
        let mut rng = Rng::new(seed ^ 0xD1F7);
        let (what, names) = change_one_path(&t, &case, &mut rng);
        let changed = Snapshot::of(&t);
        let back = rollback(&t, &run);
        let said = format!("{}{}", back.stdout, back.stderr);
        assert_eq!(
            back.code,
            3,
            "{what}: rollback did not refuse: {back:?}\n{}",
            case.describe()
        );
        let g = t.p("grant");
        assert!(
            names.iter().any(|n| said.contains(&format!("{g}/{n} ("))),
            "{what}: the refusal names none of {names:?}: {said}\n{}",
            case.describe()
        );
        let after = Snapshot::of(&t);
        assert!(
            after == changed,
            "{what}: a refused rollback changed the disk:\n{}",
            changed.diff(&after)
        );
        let check = t.defops().args(&["check"]).output();
        assert_ne!(check.code, 0, "{what}: check said OK: {}", check.stdout);
        assert!(!check.stdout.contains("DEFOPS OK"), "{}", check.stdout);
        cases += 1;
    }
    eprintln!("host changed after the run: {cases} generated plans refused");
}

/// One run of a sequence: the files it meant to change (its intents), the
/// grant's contents before it, and whether a rollback of it succeeded.
struct Step {
    id: String,
    touched: BTreeSet<usize>,
    before: Vec<Option<String>>,
    back: bool,
}

/// The contents of `grant/f0`..`grant/fN`.
fn contents(t: &Tree, files: usize) -> Vec<Option<String>> {
    (0..files)
        .map(|i| std::fs::read_to_string(t.path(&format!("grant/f{i}"))).ok())
        .collect()
}

/// The run directories in `t`'s state directory, oldest first.
fn runs_of(t: &Tree) -> Vec<String> {
    let mut runs: Vec<String> = std::fs::read_dir(t.path("state/runs"))
        .map(|d| {
            d.map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect()
        })
        .unwrap_or_default();
    runs.sort();
    runs
}

/// Sequences of real runs on a few shared files, some killed at a fail
/// point of their commit, and rollbacks of any of them in any order. The
/// invariant, held against a model of the disk: a rollback undoes only its
/// own run. While a later run that touched the same files is in force (not
/// rolled back), rolling back an earlier one refuses (exit 3), names that
/// run and changes nothing: the disk cannot tell the earlier run's last
/// effects from the later run's, nor undo one without the other. Otherwise
/// it succeeds and puts back exactly what its run found, leaving every
/// other file as it was.
#[test]
fn a_rollback_never_undoes_a_later_run() {
    const FILES: usize = 3;
    let (mut rollbacks, mut refused, mut cuts) = (0, 0, 0);
    for seed in seeds(6) {
        let mut rng = Rng::new(seed ^ 0x5E0);
        let t = Tree::new();
        for i in 0..FILES {
            t.write(&format!("grant/f{i}"), "0");
        }
        let mut steps: Vec<Step> = Vec::new();
        let mut log = Vec::new();
        for _ in 0..12 {
            let now = contents(&t, FILES);
            if steps.is_empty() || rng.below(3) != 0 {
                // A run writing a few files, killed at a fail point at times.
                let mut ops = Vec::new();
                let mut touched = BTreeSet::new();
                for (i, was) in now.iter().enumerate() {
                    if rng.below(2) == 0 {
                        let value = rng.below(3).to_string();
                        if was.as_deref() != Some(value.as_str()) {
                            touched.insert(i);
                        }
                        ops.push(format!("write {}/f{i} {value}", t.p("grant")));
                    }
                }
                if ops.is_empty() {
                    continue;
                }
                let point = match rng.below(3) {
                    0 if !touched.is_empty() => {
                        let n = rng.below(touched.len());
                        Some(match rng.below(3) {
                            0 => "after-intents".to_string(),
                            1 => format!("before-done-{n}"),
                            _ => format!("after-done-{n}"),
                        })
                    }
                    _ => None,
                };
                let id = fsops_lines(&t, &ops, point.as_deref());
                log.push(format!("run {id} {ops:?} killed at {point:?}"));
                steps.push(Step {
                    id,
                    touched,
                    before: now,
                    back: false,
                });
            } else {
                let a = rng.below(steps.len());
                let later: Vec<&Step> = steps[a + 1..]
                    .iter()
                    .filter(|b| !b.back && !b.touched.is_disjoint(&steps[a].touched))
                    .collect();
                let blocked = !steps[a].back && !later.is_empty();
                // Now and then the rollback is cut off itself (when it has
                // anything to change): the next one finishes it.
                let cut = match !blocked && !steps[a].back && rng.below(4) == 0 {
                    true => ["after-intents", "before-done-0", "after-done-0"][rng.below(3)],
                    false => "",
                };
                let out = t
                    .defops()
                    .env("DEFOPS_FAILPOINT", cut)
                    .args(&["rollback", &steps[a].id, "--json"])
                    .output();
                log.push(format!(
                    "rollback {} cut at {cut:?} -> {}",
                    steps[a].id, out.code
                ));
                let after = contents(&t, FILES);
                if out.code == -1 && !cut.is_empty() {
                    // Halfway: whatever the disk shows is where the next
                    // run starts; the run is still in force.
                    cuts += 1;
                    continue;
                }
                if blocked {
                    assert_eq!(out.code, 3, "seed {seed}: {log:?}: {out:?}");
                    assert_eq!(
                        after, now,
                        "seed {seed}: a refused rollback changed the disk"
                    );
                    let said = format!("{}{}", out.stdout, out.stderr);
                    for b in later {
                        assert!(
                            said.contains(&b.id),
                            "seed {seed}: {} not named: {said}",
                            b.id
                        );
                    }
                    refused += 1;
                } else {
                    assert_eq!(out.code, 0, "seed {seed}: {log:?}: {out:?}");
                    for i in 0..FILES {
                        let want = match steps[a].touched.contains(&i) && !steps[a].back {
                            true => &steps[a].before[i],
                            false => &now[i],
                        };
                        assert_eq!(&after[i], want, "seed {seed}: f{i} after {log:?}");
                    }
                    steps[a].back = true;
                    rollbacks += 1;
                }
            }
        }
    }
    eprintln!(
        "sequences: {rollbacks} rollbacks done, {refused} refused for a later run, {cuts} cut off"
    );
    assert!(rollbacks > 0 && refused > 0 && cuts > 0);
}

/// Runs `fsops` with `ops` (paths relative to the grant) in `t`: its id.
fn fsops(t: &Tree, ops: &[&str], failpoint: Option<&str>) -> String {
    let g = t.p("grant");
    let lines: Vec<String> = ops
        .iter()
        .map(|o| {
            let mut words: Vec<String> = o.split(' ').map(str::to_string).collect();
            // `ln TARGET LINK`: the target as given.
            if words[0] != "ln" {
                words[1] = format!("{g}/{}", words[1]);
            }
            if words[0] == "mv" || words[0] == "ln" {
                words[2] = format!("{g}/{}", words[2]);
            }
            words.join(" ")
        })
        .collect();
    fsops_lines(t, &lines, failpoint)
}

/// Runs `fsops` with `lines` (absolute paths) in `t`, killed at
/// `failpoint` when given: the run's id.
fn fsops_lines(t: &Tree, lines: &[String], failpoint: Option<&str>) -> String {
    let known = runs_of(t);
    let mut cmd = t.defops();
    if let Some(p) = failpoint {
        cmd = cmd.env("DEFOPS_FAILPOINT", p);
    }
    let fsops = crate::util::guest("fsops");
    let ops = format!("ops={}", lines.join(";"));
    let g = t.p("grant");
    let out = cmd
        .args(&[
            "run",
            fsops.to_str().unwrap(),
            "--allow",
            &g,
            "--json",
            "-p",
            &ops,
        ])
        .output();
    assert_eq!(
        out.code,
        if failpoint.is_some() { -1 } else { 0 },
        "{ops}: {out:?}"
    );
    runs_of(t)
        .into_iter()
        .find(|r| !known.contains(r))
        .expect("the run has a journal")
}

/// Which run is later is the order they changed the disk, not their ids: a
/// run whose id was made first (it started first and loaded its fix
/// slowly) but that changed the disk after is later. Simulated by giving
/// the later run's directory an id that sorts first.
#[test]
fn a_later_run_is_later_by_when_it_changed_the_disk_not_by_its_id() {
    let t = Tree::new();
    t.write("grant/f", "0");
    let a = fsops(&t, &["write f 1"], Some("after-intents"));
    let b = fsops(&t, &["write f 1"], None);
    let early = "20000101T000000Z-000aaa";
    std::fs::rename(
        t.path(&format!("state/runs/{b}")),
        t.path(&format!("state/runs/{early}")),
    )
    .unwrap();
    let back = rollback(&t, &a);
    assert_eq!(back.code, 3, "{back:?}");
    assert!(back.stderr.contains(early), "{}", back.stderr);
    assert_eq!(
        t.read("grant/f"),
        "1",
        "a refused rollback changed the disk"
    );
    // The lock keeps the last number; without the lock file, the journals
    // give it back.
    let seq = |id: &str| t.header(id)["sequence"].as_u64().unwrap();
    assert!(seq(early) > seq(&a), "{} {}", seq(early), seq(&a));
    std::fs::remove_file(t.path("state/lock")).unwrap();
    let c = fsops(&t, &["write g 1"], None);
    assert_eq!(seq(&c), seq(early) + 2, "the refused rollback took one too");
}

/// What a later run did that the rollback does not undo does not hold it
/// back: a mode changed on a directory above the run's file, a file added
/// next to it. Its directory's modification time is then the later run's,
/// and stays.
#[test]
fn a_later_run_beside_the_paths_neither_blocks_nor_loses_its_directory_time() {
    let t = Tree::new();
    t.write("grant/d/f", "0");
    let a = fsops(&t, &["write d/f 1"], None);
    std::thread::sleep(std::time::Duration::from_millis(20));
    fsops(&t, &["chmod d 700", "write d/new 1"], None);
    let time = |p: &str| std::fs::metadata(t.path(p)).unwrap().modified().unwrap();
    let dir_time = time("grant/d");
    let back = rollback(&t, &a);
    assert_eq!(back.code, 0, "{back:?}");
    assert_eq!(t.read("grant/d/f"), "0");
    assert_eq!(t.read("grant/d/new"), "1");
    assert_eq!(t.mode("grant/d") & 0o777, 0o700);
    assert_eq!(
        time("grant/d"),
        dir_time,
        "the later run's directory time was undone"
    );
}

/// A refusal names everything that holds the rollback back at once: the
/// later run and the drift a hand edit made, so `--force` is never chosen
/// without seeing the drift. `check` then says why it was refused.
#[test]
fn a_refusal_names_later_runs_and_drift_together() {
    let t = Tree::new();
    t.write("grant/d/f", "0");
    t.write("grant/e", "0");
    let a = fsops(&t, &["write d/f 1", "write e 1"], None);
    let b = fsops(&t, &["mv d d2", "mkdir d", "write d/f 1"], None);
    t.write("grant/e", "hand edit");
    let back = rollback(&t, &a);
    assert_eq!(back.code, 3, "{back:?}");
    let err = back.summary()["error"].as_str().unwrap().to_string();
    assert!(err.contains(&b), "{err}");
    assert!(
        err.contains(&format!("{} (content", t.p("grant/e"))),
        "{err}"
    );
    assert!(err.contains(&format!("defops-wasm rollback {b}")), "{err}");
    assert!(
        !back.stdout.contains("changes:"),
        "a refused rollback shows a plan: {}",
        back.stdout
    );
    assert_eq!(t.read("grant/e"), "hand edit");
    let check = t.defops().args(&["check"]).output();
    assert!(
        check
            .stdout
            .contains("a later run on the same paths was not rolled back"),
        "{}",
        check.stdout
    );
}

/// A run directory that is not this user's alone is not counted, so
/// whether that run changed the same paths cannot be told: the rollback is
/// refused, naming it, until it is this user's again.
#[test]
fn a_run_that_is_not_counted_holds_a_rollback_back() {
    let t = Tree::new();
    t.write("grant/f", "0");
    let a = fsops(&t, &["write f 1"], None);
    let b = fsops(&t, &["write g 1"], None);
    let journal = t.path(&format!("state/runs/{b}/journal.jsonl"));
    let backup = t.path("journal-backup");
    std::fs::hard_link(&journal, &backup).unwrap();
    let back = rollback(&t, &a);
    assert_eq!(back.code, 3, "{back:?}");
    assert!(back.stderr.contains(&b), "{}", back.stderr);
    assert_eq!(t.read("grant/f"), "1");
    std::fs::remove_file(&backup).unwrap();
    rollback(&t, &a).assert_code(0);
    assert_eq!(t.read("grant/f"), "0");
}

/// Every reason is named with the others: a link the rollback would put
/// back leading out, and the later run that made it so.
#[test]
fn leading_out_is_named_with_the_later_run() {
    let t = Tree::new();
    t.write("grant/c/f", "1");
    std::fs::create_dir(t.path("grant/a")).unwrap();
    let a = fsops(&t, &["mv c a/b"], None);
    // Inside the grant from a/b; outside once a/b is c again.
    let b = fsops(&t, &["ln ../../z a/b/l", "write a/b/f B"], None);
    let back = rollback(&t, &a);
    assert_eq!(back.code, 3, "{back:?}");
    assert!(back.stderr.contains(&b), "{}", back.stderr);
    assert!(
        back.stderr.contains("outside the grants"),
        "{}",
        back.stderr
    );
    assert_eq!(t.read("grant/a/b/f"), "B");
}

/// A later run whose journal fails verification cannot tell what it
/// changed: the rollback is refused, naming it, not taken as if it had
/// changed nothing.
#[test]
fn a_later_journal_that_fails_verification_holds_a_rollback_back() {
    let t = Tree::new();
    t.write("grant/f", "0");
    let a = fsops(&t, &["write f 1"], Some("after-intents"));
    let b = fsops(&t, &["write f 1"], None);
    let journal = t.path(&format!("state/runs/{b}/journal.jsonl"));
    let text = std::fs::read_to_string(&journal).unwrap();
    let last = text.trim_end().rsplit('\n').next().unwrap();
    let damaged = last.replace("\"outcome\":\"applied\"", "\"outcome\":\"applies\"");
    assert_ne!(damaged, last);
    std::fs::write(&journal, text.replace(last, &damaged)).unwrap();
    let back = rollback(&t, &a);
    assert_eq!(back.code, 3, "{back:?}");
    assert!(back.stderr.contains(&b), "{}", back.stderr);
    assert!(back.stderr.contains("fail verification"), "{}", back.stderr);
    assert_eq!(t.read("grant/f"), "1");
}

/// The lock file keeps the count, synced, and a count that went back (the
/// lock file restored from a backup) is caught up by the newest journals; a
/// number written by hand past any count is not believed. A number given
/// twice all the same (a run directory copied) leaves whether a run with it
/// on the same paths is later untold, and the rollback says so rather than
/// guess.
#[test]
fn the_count_of_changes_does_not_go_back_and_a_repeated_one_holds_a_rollback_back() {
    let t = Tree::new();
    t.write("grant/f", "0");
    let seq = |id: &str| t.header(id)["sequence"].as_u64().unwrap();
    fsops(&t, &["write z 1"], None);
    let lock = std::fs::read_to_string(t.path("state/lock")).unwrap();
    fsops(&t, &["write y 1"], None);
    let a = fsops(&t, &["write f 1"], Some("after-intents"));
    std::fs::write(t.path("state/lock"), &lock).unwrap();
    let b = fsops(&t, &["write f 1"], None);
    assert_eq!(seq(&b), seq(&a) + 1);
    let back = rollback(&t, &a);
    assert_eq!(back.code, 3, "{back:?}");
    assert!(back.stderr.contains(&b), "{}", back.stderr);
    assert_eq!(t.read("grant/f"), "1");
    // A copy of b's run directory under an id that sorts first: the same
    // number twice.
    let copy = "20000101T000000Z-000bbb";
    std::fs::create_dir(t.path(&format!("state/runs/{copy}"))).unwrap();
    std::fs::copy(
        t.path(&format!("state/runs/{b}/journal.jsonl")),
        t.path(&format!("state/runs/{copy}/journal.jsonl")),
    )
    .unwrap();
    let back = rollback(&t, &a);
    assert_eq!(back.code, 3, "{back:?}");
    assert!(back.stderr.contains(copy), "{}", back.stderr);
    assert!(
        back.stderr.contains("sequence number another"),
        "{}",
        back.stderr
    );
    assert_eq!(t.read("grant/f"), "1");
    // A stray journal that is not this user's alone does not move it.
    let junk = t.path("state/runs/zzz-junk");
    std::fs::create_dir(&junk).unwrap();
    std::fs::write(
        junk.join("journal.jsonl"),
        "{\"type\":\"header\",\"sequence\":9007199254740990}\n",
    )
    .unwrap();
    std::fs::set_permissions(
        junk.join("journal.jsonl"),
        std::os::unix::fs::PermissionsExt::from_mode(0o666),
    )
    .unwrap();
    let d = fsops(&t, &["write w 1"], None);
    assert!(seq(&d) < 1000, "{}", seq(&d));
    std::fs::remove_dir_all(&junk).unwrap();
    // Past any count: found again from the journals.
    std::fs::write(t.path("state/lock"), "last change 18446744073709551615\n").unwrap();
    let c = fsops(&t, &["write x 1"], None);
    let highest = runs_of(&t)
        .iter()
        .filter_map(|id| t.header(id)["sequence"].as_u64())
        .max();
    assert_eq!(Some(seq(&c)), highest);
    assert!(seq(&c) > seq(&b));
}

/// A later run that only changed an entry's mode, or whose change was never
/// applied, did not change its directory's time: the rollback puts back
/// the one before the run.
#[test]
fn only_applied_changes_of_entries_keep_a_later_directory_time() {
    let t = Tree::new();
    t.write("grant/d/x", "x");
    t.write("grant/e/x", "x");
    let time = |p: &str| std::fs::metadata(t.path(p)).unwrap().modified().unwrap();
    let (d_was, e_was) = (time("grant/d"), time("grant/e"));
    std::thread::sleep(std::time::Duration::from_millis(20));
    let a = fsops(&t, &["write d/f A", "write e/f A"], None);
    fsops(&t, &["chmod d/x 600"], None);
    fsops(&t, &["write e/g 1"], Some("after-intents"));
    let back = rollback(&t, &a);
    assert_eq!(back.code, 0, "{back:?}");
    assert_eq!(time("grant/d"), d_was);
    assert_eq!(time("grant/e"), e_was);
}

/// A journal damaged past reading holds a rollback back only if it could
/// be later: one last written before the run's own last record cannot be.
#[test]
fn an_unreadable_journal_written_before_the_run_does_not_hold_it_back() {
    let t = Tree::new();
    t.write("grant/f", "0");
    let x = fsops(&t, &["write x 1"], None);
    let journal = t.path(&format!("state/runs/{x}/journal.jsonl"));
    let len = std::fs::metadata(&journal).unwrap().len() as usize;
    // Zeros where its records were (a power loss on some file systems),
    // dated when it was written.
    let written = std::fs::metadata(&journal).unwrap().modified().unwrap();
    std::fs::write(&journal, vec![0u8; len]).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&journal)
        .unwrap()
        .set_modified(written)
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    let a = fsops(&t, &["write f 1"], None);
    let back = rollback(&t, &a);
    back.assert_code(0);
    assert!(
        back.stdout.contains("older than the run: not counted"),
        "{}",
        back.stdout
    );
    assert_eq!(t.read("grant/f"), "0");
    // Written after it: it could be later.
    let a = fsops(&t, &["write f 1"], None);
    std::fs::File::options()
        .write(true)
        .open(&journal)
        .unwrap()
        .set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(1))
        .unwrap();
    let back = rollback(&t, &a);
    assert_eq!(back.code, 3, "{back:?}");
    assert!(back.stderr.contains(&x), "{}", back.stderr);
    assert!(
        back.stderr.contains("move one damaged beyond use"),
        "{}",
        back.stderr
    );
    // A later run's, damaged and dated back (`touch -d`): its id is later.
    std::fs::remove_dir_all(t.path(&format!("state/runs/{x}"))).unwrap();
    let b = fsops(&t, &["write g 1"], None);
    let later = t.path(&format!("state/runs/{b}/journal.jsonl"));
    std::fs::write(&later, b"\0").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&later)
        .unwrap()
        .set_modified(std::time::SystemTime::UNIX_EPOCH)
        .unwrap();
    let back = rollback(&t, &a);
    assert_eq!(back.code, 3, "{back:?}");
    assert!(back.stderr.contains(&b), "{}", back.stderr);
}

/// `--force` goes past what held the rollback back, and says so: printed,
/// and journaled as an `overridden` record naming the later run.
#[test]
fn force_says_and_journals_what_it_went_past() {
    let t = Tree::new();
    t.write("grant/f", "0");
    let a = fsops(&t, &["write f 1"], None);
    let b = fsops(&t, &["write f 2"], None);
    let back = rollback_with(&t, &a, &["--force"]);
    assert_eq!(back.code, 0, "{back:?}");
    assert_eq!(t.read("grant/f"), "0");
    assert!(
        back.stdout.contains("--force: rolling back"),
        "{}",
        back.stdout
    );
    let id = back.summary()["run_id"].as_str().unwrap().to_string();
    let overridden: Vec<_> = t
        .journal(&id)
        .into_iter()
        .filter(|r| r["type"] == "overridden")
        .collect();
    assert_eq!(overridden.len(), 1, "{overridden:?}");
    assert_eq!(overridden[0]["reason"], "later-runs");
    assert!(overridden[0]["reasons"].as_str().unwrap().contains(&b));
    let show = t.defops().args(&["journal", "show", &id]).output();
    assert!(
        show.stdout.contains("forced  past later-runs"),
        "{}",
        show.stdout
    );
    let report = t.defops().args(&["report", &id]).output();
    assert!(
        report.stdout.contains("Overridden with --force"),
        "{}",
        report.stdout
    );
}

/// A rollback of an earlier run forced past a later one changed the later
/// one's paths: rolling back the later one names it.
#[test]
fn a_forced_rollback_of_an_earlier_run_is_named_as_a_later_change() {
    let t = Tree::new();
    t.write("grant/f", "0");
    let c = fsops(&t, &["write f 1"], None);
    let a = fsops(&t, &["write f 2"], None);
    let forced = rollback_with(&t, &c, &["--force"]);
    forced.assert_code(0);
    let r = forced.summary()["run_id"].as_str().unwrap().to_string();
    let back = rollback(&t, &a);
    assert_eq!(back.code, 3, "{back:?}");
    assert!(back.stderr.contains(&r), "{}", back.stderr);
    assert_eq!(t.read("grant/f"), "0");
}
