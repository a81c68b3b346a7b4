//! Rollback restores the exact prior state: content, mode, owner, mtime,
//! symlink targets and presence; refuses drift; survives a crash at every
//! write-ahead boundary.

use crate::mutations::{every_mutation, ops, setup};
use crate::util::{Out, Tree, fix, guest};

fn rollback(t: &Tree, run: &str, extra: &[&str]) -> Out {
    let mut args = vec!["rollback", run, "--json"];
    args.extend_from_slice(extra);
    t.defops().args(&args).output()
}

fn run_id(out: &Out) -> String {
    out.summary()["run_id"].as_str().unwrap().to_string()
}

#[test]
fn config_set_round_trip() {
    let t = Tree::new();
    t.write("grant/app.conf", "# c\nmax_conn = 20\n");
    std::fs::set_permissions(
        t.path("grant/app.conf"),
        std::os::unix::fs::PermissionsExt::from_mode(0o640),
    )
    .unwrap();
    let before = t.snapshot("");
    let out = t.set_max_conn(&t.p("grant/app.conf"), "50", &[]);
    out.assert_code(0);
    assert_ne!(t.snapshot(""), before);
    rollback(&t, &run_id(&out), &[]).assert_code(0);
    assert_eq!(t.snapshot(""), before);
}

#[test]
fn rename_to_backup_of_a_directory_round_trip() {
    let t = Tree::new();
    t.write("grant/cache/a", "1");
    t.write("grant/cache/sub/b", "2");
    let before = t.snapshot("");
    let out = t.run(
        &fix("rename-to-backup"),
        &["-p", &format!("path={}", t.p("grant/cache"))],
    );
    out.assert_code(0);
    rollback(&t, &run_id(&out), &[]).assert_code(0);
    assert_eq!(t.snapshot(""), before);
}

#[test]
fn stale_locks_round_trip() {
    let t = Tree::new();
    t.write("grant/locks/old.lock", "pid 1");
    t.write("grant/locks/keep.txt", "x");
    let f = std::fs::File::options()
        .write(true)
        .open(t.path("grant/locks/old.lock"))
        .unwrap();
    f.set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(7200))
        .unwrap();
    let before = t.snapshot("");
    let out = t.run_in(
        "grant/locks",
        &fix("stale-locks"),
        &[
            "-p",
            &format!("dir={}", t.p("grant/locks")),
            "-p",
            "max_age_secs=60",
        ],
    );
    out.assert_code(0);
    assert!(!t.exists("grant/locks/old.lock"));
    rollback(&t, &run_id(&out), &[]).assert_code(0);
    assert_eq!(t.snapshot(""), before);
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

/// Every mutation kind, plus (as root) a change of owner and a removed
/// symlink that pointed outside the grants.
fn all_kinds(t: &Tree) -> Vec<String> {
    let g = t.p("grant");
    let mut lines = every_mutation(&g);
    lines.push(format!("rm {g}/outlink"));
    lines.push(format!("write {g}/ro-mode.txt changed"));
    if is_root() {
        lines.push(format!("chown {g}/tree2/x/y.txt 1234 4321"));
    }
    lines
}

fn all_kinds_setup(t: &Tree) {
    setup(t);
    t.symlink(&t.p("outside/secret"), "grant/outlink");
    t.write("grant/ro-mode.txt", "original");
    std::fs::set_permissions(
        t.path("grant/ro-mode.txt"),
        std::os::unix::fs::PermissionsExt::from_mode(0o400),
    )
    .unwrap();
}

#[test]
fn every_mutation_kind_round_trip_and_a_second_rollback_changes_nothing() {
    let t = Tree::new();
    all_kinds_setup(&t);
    let before = t.snapshot("");
    let out = ops(&t, &all_kinds(&t), &[]);
    out.assert_code(0);
    let run = run_id(&out);

    let dry = rollback(&t, &run, &["--dry-run"]);
    dry.assert_code(0);
    assert_eq!(dry.summary()["outcome"], "planned");
    assert_ne!(
        t.snapshot(""),
        before,
        "a dry-run rollback changed the disk"
    );

    let back = rollback(&t, &run, &[]);
    back.assert_code(0);
    assert_eq!(back.summary()["outcome"], "rolled-back");
    assert_eq!(t.snapshot(""), before);

    let again = rollback(&t, &run, &[]);
    again.assert_code(0);
    assert_eq!(again.summary()["outcome"], "nothing-to-undo");
    assert_eq!(again.summary()["changed"], 0);
    assert_eq!(t.snapshot(""), before);
}

#[test]
fn rollback_takes_a_journal_path_and_is_journaled_itself() {
    let t = Tree::new();
    t.write("grant/f", "1");
    let out = ops(&t, &[format!("write {} 2", t.p("grant/f"))], &[]);
    let journal = out.summary()["journal"].as_str().unwrap().to_string();
    let back = rollback(&t, &journal, &[]);
    back.assert_code(0);
    assert_eq!(t.read("grant/f"), "1");
    let rb = back.summary()["run_id"].as_str().unwrap().to_string();
    let show = t
        .defops()
        .args(&["journal", "show", &rb, "--json"])
        .output();
    show.assert_code(0);
    let header = &show.lines()[0];
    assert_eq!(header["kind"], "rollback");
    assert_eq!(header["rollback_of"], run_id(&out));
}

#[test]
fn drift_is_refused_naming_the_path_and_attribute() {
    type Drifter = fn(&Tree);
    let cases: [(&str, Drifter); 5] = [
        ("content", |t| t.write("grant/d/b", "someone else's edit")),
        // Only the content differs, not the size: the message still shows
        // two different states.
        ("content", |t| {
            let n = t.read("grant/d/b").len();
            t.write("grant/d/b", &"\u{1}".repeat(n))
        }),
        ("mode", |t| {
            std::fs::set_permissions(
                t.path("grant/d/b"),
                std::os::unix::fs::PermissionsExt::from_mode(0o666),
            )
            .unwrap()
        }),
        ("type", |t| {
            std::fs::remove_file(t.path("grant/d/b")).unwrap();
            std::fs::create_dir(t.path("grant/d/b")).unwrap();
        }),
        ("presence", |t| {
            std::fs::remove_file(t.path("grant/d/b")).unwrap()
        }),
    ];
    for (attribute, drift) in cases {
        let t = Tree::new();
        setup(&t);
        let out = ops(&t, &every_mutation(&t.p("grant")), &[]);
        out.assert_code(0);
        drift(&t);
        let after_drift = t.snapshot("");
        let back = rollback(&t, &run_id(&out), &[]);
        back.assert_code(3);
        let err = back.summary()["error"].as_str().unwrap().to_string();
        assert!(
            err.contains(&format!("{} ({attribute}", t.p("grant/d/b"))),
            "{attribute}: {err}"
        );
        assert!(err.contains("nothing was changed"), "{err}");
        let named = err
            .split(&format!("{} ({attribute}: expected ", t.p("grant/d/b")))
            .nth(1)
            .and_then(|rest| rest.split(')').next())
            .unwrap();
        let (expected, found) = named.split_once(", found ").unwrap();
        assert_ne!(expected, found, "{attribute}: {err}");
        assert_eq!(
            t.snapshot(""),
            after_drift,
            "{attribute}: a refused rollback changed the disk"
        );
    }
}

#[test]
fn owner_drift_is_refused() {
    if !is_root() {
        eprintln!("skipped: changing an owner needs root");
        return;
    }
    let t = Tree::new();
    t.write("grant/f", "1");
    let out = ops(&t, &[format!("write {} 2", t.p("grant/f"))], &[]);
    std::os::unix::fs::chown(t.path("grant/f"), Some(4242), None).unwrap();
    let back = rollback(&t, &run_id(&out), &[]);
    back.assert_code(3);
    assert!(back.summary()["error"].as_str().unwrap().contains("(owner"));
}

#[test]
fn force_rolls_back_over_drift() {
    let t = Tree::new();
    t.write("grant/f", "1");
    let out = ops(&t, &[format!("write {} 2", t.p("grant/f"))], &[]);
    t.write("grant/f", "3");
    rollback(&t, &run_id(&out), &[]).assert_code(3);
    rollback(&t, &run_id(&out), &["--force"]).assert_code(0);
    assert_eq!(t.read("grant/f"), "1");
}

#[test]
fn bad_input_is_refused_clearly_and_changes_nothing() {
    let t = Tree::new();
    t.write("grant/f", "1");
    let out = ops(&t, &[format!("write {} 2", t.p("grant/f"))], &[]);
    let run = run_id(&out);
    let journal = std::path::PathBuf::from(out.summary()["journal"].as_str().unwrap());
    t.write("grant/not-a-journal.jsonl", "hello\n");
    let before = t.snapshot("");

    let missing = rollback(&t, "20200101T000000Z-abcdef", &[]);
    missing.assert_code(2);
    missing.assert_stderr("no run 20200101T000000Z-abcdef");

    let bogus = rollback(&t, &t.p("grant/not-a-journal.jsonl"), &[]);
    bogus.assert_code(2);
    bogus.assert_stderr("is not a defops-wasm journal");

    // A journal from a newer format.
    let text = std::fs::read_to_string(&journal).unwrap();
    let newer = t.path("state/newer.jsonl");
    std::fs::write(&newer, text.replacen("\"format\":2", "\"format\":99", 1)).unwrap();
    let out = rollback(&t, newer.to_str().unwrap(), &[]);
    out.assert_code(2);
    out.assert_stderr("format 99");

    // A before-image missing from the object store.
    for e in std::fs::read_dir(t.path("state/objects")).unwrap() {
        std::fs::remove_file(e.unwrap().path()).unwrap();
    }
    let out = rollback(&t, &run, &[]);
    out.assert_code(2);
    out.assert_stderr("missing from the object store");
    assert_eq!(t.snapshot(""), before);
}

#[test]
fn a_dry_run_cannot_be_rolled_back_and_says_why() {
    let t = Tree::new();
    t.write("grant/f", "1");
    let out = ops(&t, &[format!("write {} 2", t.p("grant/f"))], &["--dry-run"]);
    let back = rollback(&t, &run_id(&out), &[]);
    back.assert_code(2);
    back.assert_stderr("was a dry-run");
}

/// The ids of the runs and rollbacks in `t`'s state directory.
fn runs_in(t: &Tree) -> Vec<String> {
    std::fs::read_dir(t.path("state/runs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect()
}

/// `rollback RUN`, killed at the fail point `point`.
fn rollback_killed_at(t: &Tree, run: &str, point: &str) {
    let killed = t
        .defops()
        .into_command()
        .env("DEFOPS_FAILPOINT", point)
        .args(["rollback", run])
        .output()
        .unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&killed.status),
        Some(9),
        "{point}: the fail point did not fire"
    );
}

/// The `.defops-tmp-*` names in `t`'s grant.
fn leftovers(t: &Tree) -> Vec<String> {
    std::fs::read_dir(t.path("grant"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".defops-tmp-"))
        .collect()
}

/// Runs fsops with `ops_line` in `t`'s grant, killed at the fail point
/// `point`.
fn run_killed_at(t: &Tree, point: &str, ops_line: &str) {
    let killed = t
        .defops()
        .into_command()
        .env("DEFOPS_FAILPOINT", point)
        .args([
            "run",
            guest("fsops").to_str().unwrap(),
            "--allow",
            &t.p("grant"),
            "--json",
            "-p",
            ops_line,
        ])
        .output()
        .unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&killed.status),
        Some(9),
        "{point}: the fail point did not fire: {}",
        String::from_utf8_lossy(&killed.stderr)
    );
}

/// Kills the real binary at every write-ahead boundary of a run with every
/// kind of effect; after each, the journal verifies (intact or torn tail)
/// and rollback restores the pre-run tree.
#[test]
fn crash_at_every_write_ahead_boundary_then_rollback_restores() {
    let probe = Tree::new();
    all_kinds_setup(&probe);
    let dry = ops(&probe, &all_kinds(&probe), &["--dry-run"]);
    let effects = dry.summary()["changed"].as_u64().unwrap();
    let mut points = vec![
        "after-objects".to_string(),
        "after-intents".to_string(),
        // A replaced file exchanged out, not yet moved to `kept`.
        "after-exchange".to_string(),
    ];
    for n in 0..effects {
        points.push(format!("before-done-{n}"));
        points.push(format!("after-done-{n}"));
    }
    // A write's new file (in `kept/`, with replaced files kept) or a new
    // directory made, not yet renamed into place.
    let listed = dry.lines().into_iter().filter(|l| l["type"] == "effect");
    let made = |e: &serde_json::Value| e["op"] == "write" || e["op"] == "create-dir";
    for (n, _) in listed.enumerate().filter(|(_, e)| made(e)) {
        points.push(format!("before-rename-{n}"));
    }
    points.push("after-sync".to_string());
    for point in &points {
        let t = Tree::new();
        // With replaced files kept: every point, and the exchange's own.
        t.write(
            "config.toml",
            "[dry-run-first]\nrequired = false\n[rollback]\nkeep-replaced = true\n",
        );
        all_kinds_setup(&t);
        let before = t.snapshot("");
        let ops_line = format!("ops={}", all_kinds(&t).join(";"));
        run_killed_at(&t, point, &ops_line);
        let runs: Vec<_> = std::fs::read_dir(t.path("state/runs"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(runs.len(), 1);
        let journal = runs[0].join("journal.jsonl");
        let verify = t
            .defops()
            .args(&["journal", "verify", journal.to_str().unwrap()])
            .output();
        assert!(verify.code == 0 || verify.code == 1, "{point}: {verify:?}");
        let back = rollback(&t, journal.to_str().unwrap(), &[]);
        assert_eq!(back.code, 0, "{point}: {back:?}");
        assert_eq!(
            t.snapshot(""),
            before,
            "{point}: rollback did not restore the tree"
        );
    }
    assert!(points.len() >= 20, "{} crash points", points.len());
}

#[test]
fn a_second_real_run_while_one_holds_the_lock_fails_at_once() {
    let t = Tree::new();
    t.write("grant/f", "original\n");
    let (mut holder, _lines) = t.start_waiting_run();
    // A real run and a rollback are refused while the first one runs...
    let second = ops(&t, &[format!("write {} x", t.p("grant/g"))], &[]);
    second.assert_code(3);
    assert!(
        second
            .stderr
            .contains("another run or rollback is changing this host"),
        "{}",
        second.stderr
    );
    assert!(!t.exists("grant/g"));
    // ...a dry-run is not.
    ops(&t, &[format!("write {} x", t.p("grant/g"))], &["--dry-run"]).assert_code(0);
    t.write("grant/go", "");
    assert!(holder.wait().unwrap().success());
    // Afterwards the lock is free again.
    ops(&t, &[format!("write {} x", t.p("grant/g"))], &[]).assert_code(0);
}

/// A rollback of hundreds of files plans and looks again on two threads:
/// drift anywhere in it (an edit, a removal, a file replaced by a link
/// out) is still named, path and attribute, and changes nothing; forced,
/// every file is put back as it was and nothing is followed out.
#[test]
fn drift_anywhere_in_a_long_rollback_is_named() {
    let t = Tree::new();
    for i in 0..400 {
        t.write(&format!("grant/c{i:03}.conf"), "max_conn = 1\n");
    }
    t.write("outside/secret", "keep\n");
    let before = t.snapshot("");
    let out = t.set_max_conn(&format!("{}/*.conf", t.p("grant")), "3", &[]);
    out.assert_code(0);
    assert_eq!(out.summary()["changed"], 400);
    // Each effect is shown with its own diff (formatted in parts on
    // several threads, each diff computed once and journaled as shown).
    let effects: Vec<_> = out
        .lines()
        .into_iter()
        .filter(|l| l["type"] == "effect")
        .collect();
    assert_eq!(effects.len(), 400);
    for e in &effects {
        let path = e["path"].as_str().unwrap();
        let diff = e["diff"].as_str().unwrap();
        assert!(diff.starts_with(&format!("--- {path}\n")), "{path}: {diff}");
    }
    let show = t
        .defops()
        .args(&["journal", "show", &run_id(&out), "--json"])
        .output();
    let journaled: std::collections::BTreeMap<String, String> = show
        .lines()
        .into_iter()
        .filter(|r| r["type"] == "intent")
        .map(|r| {
            (
                r["path"].as_str().unwrap().into(),
                r["diff"].as_str().unwrap().into(),
            )
        })
        .collect();
    let shown: std::collections::BTreeMap<String, String> = effects
        .iter()
        .map(|e| {
            (
                e["path"].as_str().unwrap().into(),
                e["diff"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(journaled, shown, "the journaled diffs are the ones shown");
    t.write("grant/c007.conf", "someone else's edit\n");
    std::fs::remove_file(t.path("grant/c300.conf")).unwrap();
    std::fs::remove_file(t.path("grant/c399.conf")).unwrap();
    t.symlink(&t.p("outside/secret"), "grant/c399.conf");
    let after_drift = t.snapshot("");
    let back = rollback(&t, &run_id(&out), &[]);
    back.assert_code(3);
    let err = back.summary()["error"].as_str().unwrap().to_string();
    for (path, attribute) in [("c007", "content"), ("c300", "presence"), ("c399", "type")] {
        assert!(
            err.contains(&format!(
                "{} ({attribute}",
                t.p(&format!("grant/{path}.conf"))
            )),
            "{path}: {err}"
        );
    }
    assert!(err.contains("3 path(s) changed"), "{err}");
    assert_eq!(
        t.snapshot(""),
        after_drift,
        "a refused rollback changed the disk"
    );

    rollback(&t, &run_id(&out), &["--force"]).assert_code(0);
    let mut now = t.snapshot("");
    let mut was = before.clone();
    // Content, mode and kind are back; a forced restore of what drifted
    // cannot give it its old time back on every path, so times are left out.
    for m in [&mut now, &mut was] {
        for v in m.values_mut() {
            *v = v.split(" mtime=").next().unwrap().to_string();
        }
    }
    assert_eq!(now, was);
    assert_eq!(t.read("outside/secret"), "keep\n");
}

/// A run killed between writing a file's new content next to it and
/// renaming it into place leaves `.defops-tmp-RUN-N`; its rollback removes
/// that file and says so. A file of that name for an effect that was done
/// is not the run's (its own was renamed into place): it is left alone.
#[test]
fn a_run_killed_before_a_rename_leaves_a_temporary_file_its_rollback_removes() {
    let t = Tree::new();
    t.write("grant/a", "1");
    t.write("grant/b", "1");
    let before = t.snapshot("grant");
    let ops_line = format!("ops=write {g}/a 2;write {g}/b 2", g = t.p("grant"));
    run_killed_at(&t, "before-rename-1", &ops_line);
    let temporary = leftovers(&t);
    assert_eq!(temporary.len(), 1, "{temporary:?}");
    let (run_id, n) = temporary[0]["..defops-tmp-".len() - 1..]
        .rsplit_once('-')
        .unwrap();
    assert_eq!(n, "1");
    assert_eq!(t.read("grant/a"), "2");
    // The retrospective says what a run without an outcome did.
    let report = t.defops().args(&["report", run_id]).output();
    report.assert_code(0);
    assert!(
        report.stdout.contains("| Outcome | **cut off**")
            && report.stdout.contains("1 of 2 change(s) recorded as done")
            && report.stdout.contains("(no end recorded)"),
        "{}",
        report.stdout
    );
    // Anything but the file the run left under that name is not removed:
    // named, and nothing changes.
    let left = format!("grant/{}", temporary[0]);
    std::fs::remove_file(t.path(&left)).unwrap();
    t.symlink(&t.p("outside/secret"), &left);
    let refused = rollback(&t, run_id, &[]);
    refused.assert_code(3).assert_stderr(&temporary[0]);
    assert_eq!(t.read("grant/a"), "2");
    assert!(t.path(&left).is_symlink());
    std::fs::remove_file(t.path(&left)).unwrap();
    // A second name of a file elsewhere; a file larger than a rollback
    // reads (sparse here).
    std::fs::hard_link(t.path("outside/secret"), t.path(&left)).unwrap();
    let refused = rollback(&t, run_id, &[]);
    refused.assert_code(3).assert_stderr(&temporary[0]);
    std::fs::remove_file(t.path(&left)).unwrap();
    assert_eq!(t.read("outside/secret"), "outside secret\n");
    std::fs::File::create(t.path(&left))
        .unwrap()
        .set_len((1 << 30) + 1)
        .unwrap();
    let refused = rollback(&t, run_id, &[]);
    refused.assert_code(3).assert_stderr(&temporary[0]);
    assert_eq!(t.read("grant/a"), "2");
    std::fs::remove_file(t.path(&left)).unwrap();
    // Not what the run wrote there: other content, or more of it.
    for other in ["3", "22"] {
        t.write(&left, other);
        let refused = rollback(&t, run_id, &[]);
        refused.assert_code(3).assert_stderr(&temporary[0]);
        assert_eq!(t.read(&left), other);
    }
    // Cut short (a crash before its data reached the disk): the run's.
    t.write(&left, "");
    let planted = format!("grant/.defops-tmp-{run_id}-0");
    t.write(&planted, "someone else's");
    let back = rollback(&t, run_id, &[]);
    back.assert_code(0);
    assert_eq!(back.summary()["temporary_files_removed"], 1, "{back:?}");
    assert!(!t.path(&format!("grant/{}", temporary[0])).exists());
    assert_eq!(t.read(&planted), "someone else's");
    std::fs::remove_file(t.path(&planted)).unwrap();
    // The directory's time is the removal's, just now.
    let (mut after, mut before) = (t.snapshot("grant"), before);
    after.remove("/");
    before.remove("/");
    assert_eq!(after, before);
}

/// A new directory is made beside its place and renamed into it with its
/// mode already set, so a run killed in between leaves no directory of the
/// wrong mode where the plan put one: only `.defops-tmp-RUN-N`, which the
/// rollback removes.
#[test]
fn a_run_killed_before_a_new_directory_is_renamed_into_place_rolls_back() {
    let t = Tree::new();
    let before = t.snapshot("grant");
    let g = t.p("grant");
    run_killed_at(
        &t,
        "before-rename-0",
        &format!("ops=mkdir {g}/d;write {g}/d/f x"),
    );
    let temporary = leftovers(&t);
    assert_eq!(temporary.len(), 1, "{temporary:?}");
    // Nothing else was made.
    assert_eq!(std::fs::read_dir(t.path("grant")).unwrap().count(), 1);
    assert!(t.path(&format!("grant/{}", temporary[0])).is_dir());
    let run_id = runs_in(&t).remove(0);
    let dry = rollback(&t, &run_id, &["--dry-run"]);
    dry.assert_code(0);
    assert!(t.path(&format!("grant/{}", temporary[0])).is_dir());
    let back = rollback(&t, &run_id, &[]);
    back.assert_code(0);
    assert_eq!(back.summary()["temporary_files_removed"], 1, "{back:?}");
    assert_eq!(t.snapshot("grant"), before);
}

/// Where the file system cannot rename without replacing (strace refuses
/// `RENAME_NOREPLACE` here, as some file systems do), a new directory is
/// made in place (mkdir replaces nothing), never renamed over one made
/// meanwhile; its mode is still exact under a strict umask.
#[test]
fn without_rename_noreplace_a_new_directory_is_made_in_place() {
    if !crate::util::strace_can_trace() {
        eprintln!("skipped: no strace that can trace here, to inject the failure");
        return;
    }
    let t = Tree::new();
    let before = t.snapshot("grant");
    let g = t.p("grant");
    let out = t
        .defops_under(&[
            "sh",
            "-c",
            "umask 077; exec strace -f -o /dev/null -e trace=renameat2 -e inject=renameat2:error=EINVAL \"$@\"",
            "sh",
        ])
        .args(&["run", guest("fsops").to_str().unwrap(), "--allow", &g])
        .args(&["--json", "-p", &format!("ops=mkdir {g}/d;chmod {g}/d 775")])
        .output();
    out.assert_code(0);
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(t.path("grant/d")).unwrap().permissions(),
    );
    assert_eq!(mode & 0o7777, 0o775);
    assert_eq!(leftovers(&t), Vec::<String>::new());
    rollback(&t, &run_id(&out), &[]).assert_code(0);
    assert_eq!(t.snapshot("grant"), before);

    // A directory someone makes there while the rename is refused stays
    // theirs: the run fails, and nothing of it is left.
    let run = t
        .defops_under(&[
            "strace",
            "-f",
            "-o",
            "/dev/null",
            "-e",
            "trace=renameat2",
            "-e",
            "inject=renameat2:error=EINVAL:delay_enter=1500000",
        ])
        .args(&["run", guest("fsops").to_str().unwrap(), "--allow", &g])
        .args(&["--json", "-p", &format!("ops=mkdir {g}/d")])
        .into_command()
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let made = || !leftovers(&t).is_empty();
    while !made() && started.elapsed().as_secs() < 60 {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(made(), "the run never made its directory");
    std::fs::create_dir(t.path("grant/d")).unwrap();
    std::fs::set_permissions(
        t.path("grant/d"),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let theirs = std::fs::metadata(t.path("grant/d")).unwrap();
    let out = run.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let now = std::fs::metadata(t.path("grant/d")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!((now.ino(), now.mode()), (theirs.ino(), theirs.mode()));
    assert!(!made());
}

/// The report of a run without an outcome: all its changes done and rolled
/// back since, it says so; of a journal that fails verification, it does
/// not guess.
#[test]
fn the_report_of_a_run_without_an_outcome_says_what_is_known() {
    let t = Tree::new();
    t.write("grant/a", "1");
    t.write("grant/b", "1");
    let ops_line = format!("ops=write {g}/a 2;write {g}/b 2", g = t.p("grant"));
    run_killed_at(&t, "after-done-1", &ops_line);
    let killed_run = runs_in(&t).remove(0);
    let report = |of: &str| {
        let out = t.defops().args(&["report", of]).output();
        out.assert_code(0);
        let outcome = out.stdout.lines().find(|l| l.starts_with("| Outcome |"));
        outcome.unwrap_or_default().to_string()
    };
    let line = report(&killed_run);
    assert!(
        line.contains("**cut off**") && line.contains("all 2 change(s) recorded as done;"),
        "{line}"
    );
    rollback(&t, &killed_run, &[]).assert_code(0);
    let line = report(&killed_run);
    assert!(line.contains("it was rolled back since"), "{line}");

    // A rollback cut off, finished by the next (which may find nothing
    // left to undo): its report says by which.
    for cut_at in ["after-done-0", "after-sync"] {
        let t2 = Tree::new();
        t2.write("grant/a", "1");
        t2.write("grant/b", "1");
        let g = t2.p("grant");
        let run = ops(
            &t2,
            &[format!("write {g}/a 2"), format!("write {g}/b 2")],
            &[],
        );
        let first = run_id(&run);
        rollback_killed_at(&t2, &first, cut_at);
        let cut = runs_in(&t2).into_iter().find(|id| *id != first).unwrap();
        let finished = rollback(&t2, &first, &[]);
        finished.assert_code(0);
        let out = t2.defops().args(&["report", &cut]).output();
        let line = out.stdout.lines().find(|l| l.starts_with("| Outcome |"));
        assert!(
            line.is_some_and(|l| l.contains("**cut off**")
                && l.contains(&format!(
                    "rollback `{}` finished it since",
                    run_id(&finished)
                ))),
            "{cut_at}: {}",
            out.stdout
        );
    }

    // A record changed without its hash: the rest cannot be told.
    let journal = t.path(&format!("state/runs/{killed_run}/journal.jsonl"));
    let text = std::fs::read_to_string(&journal).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    let changed = lines[1].replacen("{\"", "{ \"", 1);
    lines[1] = &changed;
    let copy = t.path("tampered.jsonl");
    std::fs::write(&copy, lines.join("\n") + "\n").unwrap();
    let line = report(copy.to_str().unwrap());
    assert!(
        line.contains("**unknown**") && !line.contains("cut off"),
        "{line}"
    );
}

/// The run's own leftover shows where it stopped: the effect it belongs to
/// was not applied. A directory made by hand where that effect would have
/// put one is not the run's: named, never removed.
#[test]
fn a_directory_made_by_hand_where_a_killed_run_would_have_put_one_is_not_removed() {
    let t = Tree::new();
    let g = t.p("grant");
    run_killed_at(&t, "before-rename-0", &format!("ops=mkdir {g}/d"));
    let run_id = runs_in(&t).remove(0);
    assert_eq!(leftovers(&t).len(), 1);
    std::fs::create_dir(t.path("grant/d")).unwrap();
    let before = t.snapshot("grant");
    let refused = rollback(&t, &run_id, &[]);
    refused.assert_code(3).assert_stderr(&format!("{g}/d"));
    assert_eq!(t.snapshot("grant"), before);
    // Past the refusal, only the leftover goes.
    let forced = rollback(&t, &run_id, &["--force"]);
    assert!(t.path("grant/d").is_dir(), "{forced:?}");
    assert!(leftovers(&t).is_empty(), "{forced:?}");
}

/// The same after a rollback of the run was cut off, before or after it
/// removed the leftover: the next rollback still knows where the run
/// stopped, from the disk or from the cut-off rollback's journal.
#[test]
fn a_rollback_cut_off_still_knows_where_the_run_stopped() {
    for cut_at in ["after-intents", "after-done-0"] {
        let t = Tree::new();
        let g = t.p("grant");
        run_killed_at(
            &t,
            "before-rename-1",
            &format!("ops=write {g}/a hello;mkdir {g}/d"),
        );
        let run = runs_in(&t).remove(0);
        rollback_killed_at(&t, &run, cut_at);
        std::fs::create_dir(t.path("grant/d")).unwrap();
        let refused = rollback(&t, &run, &[]);
        refused.assert_code(3).assert_stderr(&format!("{g}/d"));
        assert!(t.path("grant/d").is_dir(), "{cut_at}");
        // Once it is gone, the rollback finishes.
        std::fs::remove_dir(t.path("grant/d")).unwrap();
        rollback(&t, &run, &[]).assert_code(0);
        assert!(!t.path("grant/a").exists(), "{cut_at}");
        assert!(leftovers(&t).is_empty(), "{cut_at}");
    }
}
