//! Escape attempts through every fs function: each must be denied, and the
//! outside tree (and the grant) must be byte-identical afterwards.
//!
//! The fsops guest runs with `ignore_errors=1`, so it succeeds and its plan
//! is committed: a call that slipped through would reach the disk.

use std::collections::BTreeMap;

use crate::util::{Out, Tree, guest};

/// A tree with every kind of way out planted inside the grant.
fn hostile_tree() -> Tree {
    let t = Tree::new();
    t.write("grant/sub/inner.txt", "inner\n");
    t.write("grant/emptydir/.keep", "");
    t.symlink(&t.p("outside"), "grant/link-out");
    t.symlink("../outside", "grant/rel-out");
    t.symlink(&t.p("outside/secret"), "grant/file-link-out");
    t.symlink("sub/../../outside/secret", "grant/sneaky-rel");
    t.symlink("sub", "grant/link-in");
    std::fs::hard_link(t.path("outside/secret"), t.path("grant/hard")).unwrap();
    t
}

fn all(t: &Tree) -> BTreeMap<String, String> {
    t.snapshot("")
}

/// Runs one op line with the grant read-write and `ro/` read-only, through
/// the Rust fsops guest.
fn op(t: &Tree, line: &str, extra: &[&str]) -> Out {
    op_with(&guest("fsops"), t, line, extra)
}

/// [`op`] through `fix` (the Rust guest or its Python twin).
fn op_with(fix: &std::path::Path, t: &Tree, line: &str, extra: &[&str]) -> Out {
    let ro = t.p("ro");
    let ops = format!("ops={line}");
    let mut args = vec![
        "--allow-ro",
        ro.as_str(),
        "-p",
        ops.as_str(),
        "-p",
        "ignore_errors=1",
    ];
    args.extend_from_slice(extra);
    t.run(fix, &args)
}

#[track_caller]
fn assert_denied(t: &Tree, line: &str, extra: &[&str]) {
    assert_denied_with(&guest("fsops"), t, line, extra)
}

#[track_caller]
fn assert_denied_with(fix: &std::path::Path, t: &Tree, line: &str, extra: &[&str]) {
    let before = all(t);
    let out = op_with(fix, t, line, extra);
    let messages = out.messages();
    assert!(
        messages.iter().any(|m| m.contains("-> denied:")),
        "{line:?} was not denied: {messages:?}\n{}",
        out.stderr
    );
    let s = out.summary();
    assert!(s["denied"].as_u64().unwrap() >= 1, "{line:?}: {s}");
    assert_eq!(s["changed"], 0, "{line:?} planned a change: {s}");
    assert!(
        !out.of("denied").is_empty(),
        "{line:?}: denial not reported"
    );
    assert_eq!(all(t), before, "{line:?} changed the disk");
}

/// Every fs function, with `{}` where the attacking path goes.
const CALLS: &[&str] = &[
    "read {}",
    "stat {}",
    "lstat {}",
    "ls {}",
    "readlink {}",
    "write {} pwned",
    "mkdir {}",
    "rm {}",
    "rmdir {}",
    "chmod {} 777",
    "chown {} 0 0",
    "mv {} GRANT/moved",
    "mv GRANT/sub/inner.txt {}",
    "ln GRANT/sub {}",
];

#[test]
fn path_tricks_are_denied_through_every_call() {
    path_tricks_through(&guest("fsops"), &hostile_tree());
}

/// The same table through the Python runtime's `defops` module.
#[test]
fn path_tricks_are_denied_through_every_python_call() {
    let t = hostile_tree();
    t.warm_python();
    path_tricks_through(&crate::util::python_guest("fsops"), &t);
}

fn path_tricks_through(fix: &std::path::Path, t: &Tree) {
    let g = t.p("grant");
    let o = t.p("outside");
    let long_name = format!("{g}/{}", "a".repeat(300));
    let long_path = format!("{g}{}", "/a".repeat(2100));
    let attacks = [
        format!("{g}/../outside/secret"),
        format!("{g}/sub/../../outside/secret"),
        format!("{o}/secret"),
        format!("{o}/dir"),
        "/etc/passwd".to_string(),
        "relative/path".to_string(),
        format!("{g}/link-out/secret"),
        format!("{g}/link-out/dir/file"),
        format!("{g}/rel-out/secret"),
        format!("{g}/sub/"),
        format!("{g}/sub/inner.txt/"),
        format!("{g}/sub\\0/inner.txt"),
        format!("{g}/sub/inner.txt\\0"),
        format!("{g}//sub"),
        format!("{g}/./sub"),
        long_name,
        long_path,
        g.clone(),
        "/".to_string(),
    ];
    for attack in &attacks {
        for call in CALLS {
            let line = call.replace("{}", attack).replace("GRANT", &g);
            // Reading the grant root itself is fine; changing it is not.
            if attack == &g
                && ["read", "stat", "lstat", "ls", "readlink"]
                    .iter()
                    .any(|c| call.starts_with(c))
            {
                continue;
            }
            assert_denied_with(fix, t, &line, &[]);
        }
    }
}

#[test]
fn symlinks_out_are_denied_when_followed() {
    let t = hostile_tree();
    let g = t.p("grant");
    for line in [
        format!("read {g}/file-link-out"),
        format!("stat {g}/file-link-out"),
        format!("read {g}/sneaky-rel"),
        format!("ls {g}/link-out"),
        format!("ls {g}/rel-out"),
        format!("write {g}/file-link-out pwned"),
        format!("chmod {g}/file-link-out 777"),
        format!("write {g}/link-out/new pwned"),
        format!("mkdir {g}/link-out/newdir"),
        format!("mv {g}/sub/inner.txt {g}/link-out/stolen"),
        format!("ln {} {g}/newlink", t.p("outside/secret")),
        format!("ln ../outside {g}/newlink"),
        format!("ln sub/../../outside {g}/newlink"),
    ] {
        assert_denied(&t, &line, &[]);
    }
}

#[test]
fn a_hard_link_to_an_outside_file_is_never_read_or_changed() {
    let t = hostile_tree();
    let g = t.p("grant");
    for call in [
        "read",
        "stat",
        "lstat",
        "write {} pwned",
        "rm",
        "chmod {} 600",
        "chown {} 0 0",
        "mv {} GRANT/x",
    ] {
        let line = if call.contains("{}") {
            call.replace("{}", &format!("{g}/hard"))
                .replace("GRANT", &g)
        } else {
            format!("{call} {g}/hard")
        };
        assert_denied(&t, &line, &[]);
    }
    // Replacing it by a rename is a mutation of it too.
    assert_denied(&t, &format!("mv {g}/sub/inner.txt {g}/hard"), &[]);
}

#[test]
fn writes_under_a_read_only_grant_are_denied() {
    let t = hostile_tree();
    let g = t.p("grant");
    let r = t.p("ro");
    for line in [
        format!("write {r}/file pwned"),
        format!("write {r}/new pwned"),
        format!("mkdir {r}/d"),
        format!("rm {r}/file"),
        format!("chmod {r}/file 777"),
        format!("chown {r}/file 0 0"),
        format!("mv {r}/file {g}/stolen"),
        format!("mv {g}/sub/inner.txt {r}/file"),
        format!("mv {g}/sub/inner.txt {r}/new"),
        format!("ln {g}/sub {r}/link"),
    ] {
        assert_denied(&t, &line, &[]);
    }
    // Reading it is fine.
    let out = op(&t, &format!("read {r}/file"), &[]);
    assert!(
        out.messages()[0].ends_with("-> ok read-only file\n"),
        "{:?}",
        out.messages()
    );
}

#[test]
fn writes_during_check_are_denied() {
    let t = hostile_tree();
    let g = t.p("grant");
    for line in [
        format!("write {g}/new x"),
        format!("mkdir {g}/d"),
        format!("rm {g}/sub/inner.txt"),
        format!("mv {g}/sub/inner.txt {g}/x"),
        format!("chmod {g}/sub/inner.txt 600"),
        format!("ln sub {g}/l"),
    ] {
        assert_denied(&t, &line, &["-p", "phase=check"]);
    }
}

#[test]
fn a_denial_that_fails_the_fix_exits_refused() {
    let t = hostile_tree();
    let ops = format!("ops=read {}/secret", t.p("outside"));
    let out = t.run(&guest("fsops"), &["-p", &ops]);
    out.assert_code(3);
    assert_eq!(out.summary()["outcome"], "denied");
}

#[test]
fn symlinks_that_stay_inside_are_followed() {
    let t = hostile_tree();
    let g = t.p("grant");
    let out = op(
        &t,
        &format!("read {g}/link-in/inner.txt; ls {g}/link-in; write {g}/link-in/new.txt hello"),
        &[],
    );
    out.assert_code(0);
    assert_eq!(out.summary()["denied"], 0, "{:?}", out.messages());
    assert_eq!(t.read("grant/sub/new.txt"), "hello");
}

#[test]
fn a_symlink_the_fix_creates_is_resolved_like_any_other() {
    let t = hostile_tree();
    let g = t.p("grant");
    // Inside: allowed, and written through to the real directory.
    let out = op(
        &t,
        &format!("ln sub {g}/mine; write {g}/mine/through.txt ok"),
        &[],
    );
    assert_eq!(out.summary()["denied"], 0, "{:?}", out.messages());
    assert_eq!(t.read("grant/sub/through.txt"), "ok");
    // Writing to the link itself is refused (it would replace the link).
    assert_denied(&t, &format!("write {g}/mine x"), &[]);
}

/// In the style of the Linux openat2 `rename_attack` selftest: while fixes
/// plan and commit writes into `grant/sub`, another thread keeps swapping
/// that directory with a symlink to the outside tree (RENAME_EXCHANGE).
/// Runs may fail (the disk changed under them); nothing may ever land
/// outside. 10,000 swaps by default; DEFOPS_RACE_ROUNDS for more.
#[test]
fn swapping_a_directory_for_a_symlink_mid_run_never_escapes() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    let rounds: u64 = std::env::var("DEFOPS_RACE_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(10_000);
    let t = Tree::new();
    t.write("grant/sub/seed", "seed");
    t.symlink(&t.p("outside"), "grant/link");
    let outside_before = t.snapshot("outside");
    let grant_dir = std::fs::File::open(t.path("grant")).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let swaps = Arc::new(AtomicU64::new(0));
    let swapper = {
        let (stop, swaps) = (stop.clone(), swaps.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                rustix::fs::renameat_with(
                    &grant_dir,
                    "sub",
                    &grant_dir,
                    "link",
                    rustix::fs::RenameFlags::EXCHANGE,
                )
                .expect("RENAME_EXCHANGE");
                swaps.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let g = t.p("grant");
    let lines: Vec<String> = (0..40)
        .map(|i| format!("write {g}/sub/f{i} pwned; read {g}/sub/seed; mkdir {g}/sub/d{i}; mv {g}/sub/f{i} {g}/sub/d{i}/g"))
        .collect();
    let ops = format!("ops={}", lines.join(";"));
    let mut runs = 0;
    let mut applied = 0;
    while swaps.load(Ordering::Relaxed) < rounds || runs < 10 {
        let out = t.run(&guest("fsops"), &["-p", &ops, "-p", "ignore_errors=1"]);
        runs += 1;
        applied += u64::from(out.code == 0 && out.summary()["outcome"] == "applied");
        assert_eq!(
            t.snapshot("outside"),
            outside_before,
            "run {runs} wrote outside the grant"
        );
    }
    stop.store(true, Ordering::Relaxed);
    swapper.join().unwrap();
    assert_eq!(t.snapshot("outside"), outside_before);
    eprintln!(
        "{} swaps over {runs} runs ({applied} applied); nothing outside changed",
        swaps.load(Ordering::Relaxed)
    );
}

#[test]
fn magic_links_and_device_names_lead_nowhere() {
    let t = hostile_tree();
    let g = t.p("grant");
    let o = t.p("outside");
    t.symlink("/proc/self/root", "grant/proc-root");
    t.symlink("/proc/self/fd", "grant/proc-fd");
    t.symlink("/proc/self/cwd", "grant/proc-cwd");
    t.symlink("/dev/null", "grant/devnull");
    // Magic links and devices, named directly or through a planted link.
    for path in [
        format!("/proc/self/root{o}/secret"),
        "/proc/self/cwd".to_string(),
        "/proc/self/fd/0".to_string(),
        "/proc/self/environ".to_string(),
        "/dev/stdin".to_string(),
        "/dev/null".to_string(),
        format!("{g}/proc-root{o}/secret"),
        format!("{g}/proc-fd/0"),
        format!("{g}/proc-cwd/x"),
        format!("{g}/devnull"),
        "C:\\\\Windows\\\\win.ini".to_string(),
        "\\\\?\\\\C:\\\\x".to_string(),
        "CON".to_string(),
        "NUL".to_string(),
    ] {
        for call in ["read {}", "write {} pwned", "stat {}", "ls {}"] {
            assert_denied(&t, &call.replace("{}", &path), &[]);
        }
    }
    // Names that mean something to Windows are plain names here: they stay
    // inside the grant, and nothing outside changes.
    let outside = t.snapshot("outside");
    let names = ["CON", "NUL.txt", "aux", "..\\\\outside\\\\secret", "C:"];
    let ops: Vec<String> = names
        .iter()
        .map(|n| format!("write {g}/{n} plain"))
        .collect();
    let out = op(&t, &ops.join(";"), &[]);
    out.assert_code(0);
    assert_eq!(out.summary()["changed"], names.len(), "{}", out.stdout);
    for n in ["CON", "NUL.txt", "aux", "..\\outside\\secret", "C:"] {
        assert_eq!(t.read(&format!("grant/{n}")), "plain", "{n}");
    }
    assert_eq!(t.snapshot("outside"), outside);
}
