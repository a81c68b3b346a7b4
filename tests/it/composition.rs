//! The containment promises under composition: generated sequences of fs
//! calls, run as real fixes against real trees, checked by an oracle that
//! asks the kernel, not the host.
//!
//! Invariants, after every run:
//! - nothing outside the grants changed;
//! - nothing in the read-only grant changed — same names, same inodes, same
//!   content, mode, owner and mtimes (it is nested in the read-write one, so
//!   renaming an ancestor would otherwise reach it);
//! - every symlink the run created or moved resolves, by the kernel's own
//!   resolution, inside the read-write grant and outside the read-only one,
//!   or does not resolve at all;
//! - a run that did not succeed changed nothing.
//!
//! `DEFOPS_GEN_CASES` sets how many sequences run (default below); a
//! failure prints the seed and the ops, so it replays with
//! `DEFOPS_GEN_SEED`.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::util::{Tree, fix, guest};

const DEFAULT_CASES: u64 = 1000;

/// A small, seeded generator (xorshift64*): the same seed, the same cases.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Names the generated calls use, relative to `grant/`: what the starting
/// tree holds, plus names it does not.
const NAMES: &[&str] = &[
    "a",
    "a/x",
    "a/x/deep",
    "a/ro",
    "a/ro/f",
    "a/ro/sub",
    "a/ro/sub/g",
    "a/f",
    "b",
    "b/y",
    "b/f",
    "c",
    "c/z",
    "f1",
    "l1",
    "l2",
    "n1",
    "n2",
    "a/n3",
    "b/y/n4",
    "l1/n5",
    "a/x/n6",
];

/// Symlink targets, relative or absolute (`@` is the tree's root).
const TARGETS: &[&str] = &[
    "f",
    "x",
    "x/deep",
    "..",
    "../..",
    "../../outside/secret",
    "../outside",
    "../../outside",
    "../../../outside",
    "l1/../..",
    "l1/../../outside",
    "l2/../../..",
    "x/../../..",
    "y/../../outside/secret",
    "../a/ro",
    "../a/ro/f",
    "ro",
    "ro/f",
    "../b",
    "../../grant/b",
    "deep/../../../outside",
    ".",
    "n1",
    "n1/..",
    "@/outside/secret",
    "@/outside",
    "@/grant/a",
    "@/grant/a/ro/f",
    "@/grant/b/../../outside",
    "/etc/passwd",
    "/proc/self/root",
];

/// Directories to move things into: deeper and shallower than where the
/// names start.
const PLACES: &[&str] = &["", "c/z", "b/y", "a/x/deep", "c", "n1", "n2"];

/// One or a few generated calls, as fsops lines. Besides single calls, the
/// shapes that change what an earlier call meant: a symlink made, then it
/// or a directory above it moved; an ancestor of the read-only grant moved,
/// written through, moved back.
fn calls(rng: &mut Rng, g: &str, root: &str) -> Vec<String> {
    match rng.below(8) {
        0 => {
            let dir = format!("{g}/{}", rng.pick(&["n1", "n2", "c/z/w", "a/x/q"]));
            let target = rng.pick(TARGETS).replace('@', root);
            let place = rng.pick(PLACES);
            let name = rng.pick(&["m1", "m2"]);
            vec![
                format!("mkdir {dir}"),
                format!("ln {target} {dir}/l"),
                format!("mv {dir} {g}/{place}/{name}").replace("//", "/"),
            ]
        }
        1 => {
            let link = format!("{g}/{}", rng.pick(&["n1", "a/n3", "b/y/n4"]));
            let target = rng.pick(TARGETS).replace('@', root);
            let to = format!("{g}/{}/m3", rng.pick(PLACES)).replace("//", "/");
            vec![format!("ln {target} {link}"), format!("mv {link} {to}")]
        }
        2 => {
            let via = format!("{g}/{}", rng.pick(&["n1", "c/z/m4"]));
            vec![
                format!("mv {g}/a {via}"),
                format!(
                    "write {via}/ro/{} changed",
                    rng.pick(&["f", "sub/g", "new"])
                ),
                format!("mv {via} {g}/a"),
            ]
        }
        _ => vec![call(rng, g, root)],
    }
}

/// One generated call, as an fsops line.
fn call(rng: &mut Rng, g: &str, root: &str) -> String {
    let p = |rng: &mut Rng| format!("{g}/{}", rng.pick(NAMES));
    match rng.below(10) {
        0 => format!("mkdir {}", p(rng)),
        1 => format!("write {} v{}", p(rng), rng.below(3)),
        2 => format!("rm {}", p(rng)),
        3 => format!("rmdir {}", p(rng)),
        4 => format!("chmod {} {}", p(rng), rng.pick(&["600", "644", "755"])),
        5 | 6 => format!("mv {} {}", p(rng), p(rng)),
        _ => {
            let target = rng.pick(TARGETS).replace('@', root);
            format!("ln {target} {}", p(rng))
        }
    }
}

/// The starting tree: `grant/` (read-write) with `grant/a/ro` (read-only)
/// nested in it, symlinks inside, and `outside/`.
fn starting_tree(rng: &mut Rng) -> Tree {
    let t = Tree::new();
    for f in ["a/f", "a/ro/f", "a/ro/sub/g", "b/f", "f1"] {
        t.write(&format!("grant/{f}"), &format!("{f} {}\n", rng.below(100)));
    }
    for d in ["a/x/deep", "b/y", "c/z"] {
        std::fs::create_dir_all(t.path(&format!("grant/{d}"))).unwrap();
    }
    t.symlink("a", "grant/l1");
    // Links already there whose meaning a plan can change: one dangling
    // until `n1` exists, one that climbs out once `c/z` is a symlink.
    t.symlink("n1/../../outside/secret", "grant/p1");
    t.symlink("c/z/../../f1", "grant/p2");
    let l2 = ["b/y", "a/x/deep", "c"][rng.below(3)];
    t.symlink(l2, "grant/l2");
    t
}

/// What the oracle compares: every path under `dir` with its kind,
/// content, mode, owner, mtime and inode.
fn identity_snapshot(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    fn walk(p: &Path, rel: String, out: &mut BTreeMap<String, String>) {
        let Ok(m) = p.symlink_metadata() else { return };
        let what = if m.file_type().is_symlink() {
            format!("link {:?}", std::fs::read_link(p).unwrap())
        } else if m.is_file() {
            format!("file {:?}", std::fs::read(p).unwrap())
        } else {
            "dir".to_string()
        };
        out.insert(
            rel.clone(),
            format!(
                "{what} ino={} mode={:o} owner={}:{} mtime={}.{}",
                m.ino(),
                m.mode() & 0o7777,
                m.uid(),
                m.gid(),
                m.mtime(),
                m.mtime_nsec()
            ),
        );
        if m.is_dir() {
            let mut names: Vec<_> = std::fs::read_dir(p)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            names.sort();
            for n in names {
                let child = format!("{rel}/{}", n.to_string_lossy());
                walk(&p.join(&n), child, out);
            }
        }
    }
    walk(dir, String::new(), &mut out);
    out
}

/// Every symlink under `dir`, with its target.
fn symlinks(dir: &Path) -> BTreeMap<PathBuf, PathBuf> {
    let mut out = BTreeMap::new();
    fn walk(p: &Path, out: &mut BTreeMap<PathBuf, PathBuf>) {
        let Ok(m) = p.symlink_metadata() else { return };
        if m.file_type().is_symlink() {
            out.insert(p.to_path_buf(), std::fs::read_link(p).unwrap());
        } else if m.is_dir() {
            for e in std::fs::read_dir(p).unwrap() {
                walk(&e.unwrap().path(), out);
            }
        }
    }
    walk(dir, &mut out);
    out
}

/// Where the kernel takes a symlink: the path it resolves to, or — when
/// only the last name is missing — the file a write through it would
/// create. `None` when it does not resolve (a missing directory on the
/// way, a loop).
fn kernel_destination(link: &Path) -> Option<PathBuf> {
    if let Ok(p) = std::fs::canonicalize(link) {
        return Some(p);
    }
    let mut at = link.to_path_buf();
    for _ in 0..40 {
        let target = std::fs::read_link(&at).ok()?;
        let joined = at.parent().unwrap().join(&target);
        let name = joined.file_name()?.to_owned();
        if name == ".." || name == "." {
            return None;
        }
        // The directory part is resolved by the kernel itself.
        let dir = std::fs::canonicalize(joined.parent()?).ok()?;
        let next = dir.join(name);
        match next.symlink_metadata() {
            Ok(m) if m.file_type().is_symlink() => at = next,
            Ok(_) => return Some(next),
            Err(_) => return Some(next),
        }
    }
    None
}

struct Case {
    seed: u64,
    ops: Vec<String>,
}

fn generate(seed: u64, t: &Tree) -> Case {
    let mut rng = Rng::new(seed);
    let g = t.p("grant");
    let root = t.p("");
    let root = root.trim_end_matches('/');
    let n = 2 + rng.below(8);
    let ops = (0..n).flat_map(|_| calls(&mut rng, &g, root)).collect();
    Case { seed, ops }
}

/// How a case ended, when it kept every invariant.
#[derive(Debug, PartialEq, Eq)]
enum Ended {
    /// Applied, every call allowed.
    Applied,
    /// Applied, with calls denied one by one.
    AppliedDenied,
    /// The whole plan refused.
    Refused,
}

/// Runs one case and checks every invariant; the failure, if any. The
/// cases of one test share `state` (and so the compiled guest).
fn check_case(seed: u64, fixed: Option<&[&str]>, state: &Path) -> Result<Ended, String> {
    let mut rng = Rng::new(seed ^ 0xA5A5);
    let t = starting_tree(&mut rng);
    std::fs::remove_dir(t.path("state")).unwrap();
    std::os::unix::fs::symlink(state, t.path("state")).unwrap();
    let case = match fixed {
        Some(ops) => Case {
            seed,
            ops: ops
                .iter()
                .map(|o| {
                    o.replace("@G", &t.p("grant"))
                        .replace('@', t.p("").trim_end_matches('/'))
                })
                .collect(),
        },
        None => generate(seed, &t),
    };
    let (grant, ro, outside) = (t.path("grant"), t.path("grant/a/ro"), t.path("outside"));
    let before_all = identity_snapshot(&t.path(""));
    let before_ro = identity_snapshot(&ro);
    let before_out = identity_snapshot(&outside);
    let before_links = symlinks(&grant);
    let inside = |dest: &Option<PathBuf>| {
        let rw = std::fs::canonicalize(&grant).unwrap();
        let ro = std::fs::canonicalize(&ro).unwrap();
        dest.as_ref()
            .is_none_or(|d| d.starts_with(&rw) && !d.starts_with(&ro))
    };
    let led_inside: BTreeMap<&PathBuf, bool> = before_links
        .keys()
        .map(|l| (l, inside(&kernel_destination(l))))
        .collect();

    // The read-only grant is named directly or through a symlink above it:
    // either way the same directory is protected.
    let ro_spelling = ["grant/a/ro", "grant/l1/ro"][rng.below(2)];
    let ops = format!("ops={}", case.ops.join(";"));
    let out = t.run(
        &guest("fsops"),
        &[
            "--allow-ro",
            &t.p(ro_spelling),
            "-p",
            &ops,
            "-p",
            "ignore_errors=1",
        ],
    );
    let fail = |why: String| {
        Err(format!(
            "seed {}: {why}\nops:\n  {}\nexit {}\nstdout: {}\nstderr: {}",
            case.seed,
            case.ops.join("\n  "),
            out.code,
            out.stdout,
            out.stderr
        ))
    };
    let mut after_all = identity_snapshot(&t.path(""));
    after_all.retain(|k, _| !k.starts_with("/state"));
    let mut before_all = before_all;
    before_all.retain(|k, _| !k.starts_with("/state"));
    if identity_snapshot(&outside) != before_out {
        return fail("something outside the grants changed".into());
    }
    if identity_snapshot(&ro) != before_ro {
        return fail("the read-only grant changed".into());
    }
    match out.code {
        0 => {}
        3 => {
            if after_all != before_all {
                return fail("a refused run changed the tree".into());
            }
            return Ok(Ended::Refused);
        }
        other => return fail(format!("unexpected exit {other}")),
    }
    let rw = std::fs::canonicalize(&grant).unwrap();
    let ro_real = std::fs::canonicalize(&ro).unwrap();
    for (link, target) in symlinks(&grant) {
        // A link the run did not touch may keep leading where it led, even
        // outside; one that led inside (or nowhere) must still.
        if before_links.get(&link) == Some(&target) {
            if led_inside[&link] && !inside(&kernel_destination(&link)) {
                return fail(format!(
                    "{} -> {} led inside before the run and now leads to {:?}",
                    link.display(),
                    target.display(),
                    kernel_destination(&link)
                ));
            }
            continue;
        }
        if let Some(dest) = kernel_destination(&link) {
            if !dest.starts_with(&rw) {
                return fail(format!(
                    "{} -> {} resolves to {}, outside the read-write grant",
                    link.display(),
                    target.display(),
                    dest.display()
                ));
            }
            if dest.starts_with(&ro_real) {
                return fail(format!(
                    "{} -> {} resolves to {}, inside the read-only grant",
                    link.display(),
                    target.display(),
                    dest.display()
                ));
            }
        }
    }
    Ok(match out.summary()["denied"].as_u64() {
        Some(0) => Ended::Applied,
        _ => Ended::AppliedDenied,
    })
}

/// Sequences the review found by hand, kept as the first cases: the
/// generator must reach their class, these make sure it is in every run.
const FOUND: &[&[&str]] = &[
    // A link inside, then moved deeper: its `..` now climbs out.
    &[
        "mkdir @G/n1",
        "ln ../b @G/n1/l",
        "mkdir @G/c/z/w",
        "mv @G/n1 @G/c/z/w/n1",
    ],
    &["ln ../outside @G/a/l", "mv @G/a/l @G/l3"],
    &["ln .. @G/a/up", "mv @G/a @G/n2"],
    // `..` after a component that is itself a symlink.
    &["ln x/deep @G/a/s", "ln s/../../../outside/secret @G/a/t"],
    &["ln l1/../../outside/secret @G/b/t"],
    // Renaming an ancestor of the read-only grant, writing through the new
    // name, renaming back.
    &["mv @G/a @G/n1", "write @G/n1/ro/f changed", "mv @G/n1 @G/a"],
    &["mv @G/a @G/n1", "mkdir @G/n1/ro/new", "mv @G/n1 @G/a"],
    &["mv @G/a/ro @G/n1"],
    // A link into the read-only grant.
    &["ln ro/f @G/a/w"],
    // Links already in the tree, led out by what the plan builds on their
    // way: a directory where a dangling walk was cut, a symlink where a
    // walk passes.
    &["mkdir @G/n1"],
    &["rmdir @G/c/z", "ln ../.. @G/c/z"],
];

#[test]
fn found_sequences_keep_every_invariant() {
    let state = tempfile::tempdir().unwrap();
    for (i, ops) in FOUND.iter().enumerate() {
        if let Err(e) = check_case(i as u64, Some(ops), state.path()) {
            panic!("{e}");
        }
    }
}

#[test]
fn generated_sequences_keep_every_invariant() {
    let state = tempfile::tempdir().unwrap();
    if let Ok(seed) = std::env::var("DEFOPS_GEN_SEED") {
        let seed = seed.parse().expect("DEFOPS_GEN_SEED is a number");
        check_case(seed, None, state.path()).unwrap_or_else(|e| panic!("{e}"));
        return;
    }
    let cases = std::env::var("DEFOPS_GEN_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(DEFAULT_CASES);
    let base = std::env::var("DEFOPS_GEN_BASE")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1000u64);
    let mut ended = BTreeMap::new();
    let mut failures = Vec::new();
    for seed in base..base + cases {
        match check_case(seed, None, state.path()) {
            Ok(e) => *ended.entry(format!("{e:?}")).or_insert(0u64) += 1,
            Err(e) => failures.push(e),
        }
    }
    eprintln!("{cases} sequences: {ended:?}");
    assert!(
        failures.is_empty(),
        "{} of {cases} sequences broke an invariant; the first:\n{}",
        failures.len(),
        failures[0]
    );
    // A generator that only ever produces one kind of case tests little:
    // each kind must be common.
    for kind in ["Applied", "AppliedDenied", "Refused"] {
        let n = ended.get(kind).copied().unwrap_or(0);
        assert!(n * 50 > cases, "degenerate cases: {ended:?}");
    }
}

/// `fsops` with OPS (`@` is the tree's root) and more arguments, allowing
/// `grant/` read-write.
fn fsops(t: &Tree, ops: &[&str], extra: &[&str]) -> crate::util::Out {
    let root = t.p("");
    let ops: Vec<String> = ops
        .iter()
        .map(|o| o.replace('@', root.trim_end_matches('/')))
        .collect();
    let ops = format!("ops={}", ops.join(";"));
    let mut args = vec!["-p", ops.as_str()];
    args.extend_from_slice(extra);
    t.run(&guest("fsops"), &args)
}

#[test]
fn a_read_only_grant_given_through_a_symlink_protects_the_real_directory() {
    let t = Tree::new();
    t.write("grant/data/f", "kept\n");
    t.symlink("data", "grant/ldata");
    let before = t.snapshot("");
    let out = fsops(
        &t,
        &["write @/grant/data/f changed", "mkdir @/grant/data/new"],
        &["--allow-ro", &t.p("grant/ldata")],
    );
    out.assert_code(3).assert_stderr("is granted read-only");
    assert_eq!(t.snapshot(""), before);
    // The journal names the directory the sandbox enforced.
    let start = &out.of("start")[0];
    let canonical = std::fs::canonicalize(t.path("grant/data")).unwrap();
    assert!(
        start["grants"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["path"] == canonical.to_str().unwrap() && g["access"] == "read-only"),
        "{start}"
    );
}

#[test]
fn a_grant_spelled_through_a_symlinked_ancestor_is_usable_by_that_name() {
    let t = Tree::new();
    t.write("real/app/app.conf", "max_conn = 1\n");
    t.symlink("real", "alias");
    let file = t.p("alias/app/app.conf");
    let out = t.run_in(
        "alias/app",
        &crate::util::fix("config-set"),
        &[
            "-p",
            &format!("file={file}"),
            "-p",
            "key=max_conn",
            "-p",
            "value=7",
        ],
    );
    out.assert_code(0);
    assert_eq!(t.read("real/app/app.conf"), "max_conn = 7\n");
    let run_id = out.summary()["run_id"].as_str().unwrap().to_string();
    t.verify_and_roll_back(&run_id);
    assert_eq!(t.read("real/app/app.conf"), "max_conn = 1\n");
}

#[test]
fn grants_are_checked_against_the_manifest_in_canonical_form() {
    let t = Tree::new();
    t.write("grant/app/app.conf", "max_conn = 1\n");
    t.symlink(&t.p("outside"), "grant/app/out");
    let before = t.snapshot("");
    let file = t.p("grant/app/app.conf");
    // Both spellings name outside/, not grant/app/, which the fix declares.
    for grant in [
        t.p("grant/app/out"),
        format!("{}/../../outside", t.p("grant/app")),
    ] {
        t.defops()
            .args(&[
                "run",
                crate::util::fix("config-set").to_str().unwrap(),
                "--allow",
                &grant,
                "--dry-run",
                "-p",
                &format!("file={file}"),
                "-p",
                "key=max_conn",
                "-p",
                "value=5",
            ])
            .output()
            .assert_code(3)
            .assert_stderr("is not within what the manifest declares read-write");
    }
    assert_eq!(t.snapshot(""), before);
}

/// A read-only grant bind-mounted into the read-write one is the same
/// directory under another name: refused at the plan (so a dry-run shows
/// it) and at the commit. Needs the right to mount (root, as in CI).
#[test]
fn a_read_only_grant_reached_under_another_name_is_never_changed() {
    let t = Tree::new();
    t.write("grant/a/ro/f", "kept\n");
    std::fs::create_dir(t.path("grant/b")).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["--bind", &t.p("grant/a/ro"), &t.p("grant/b")])
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("skipped: cannot bind-mount here (not root?)");
        return;
    }
    struct Unmount(String);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(t.p("grant/b"));
    let before = t.snapshot("");
    let ro = t.p("grant/a/ro");
    for ops in [
        &["write @/grant/b/f changed"][..],
        &["mkdir @/grant/b/new"],
        &["chmod @/grant/b 700"],
        &["mkdir @/grant/n", "write @/grant/b/g new"],
    ] {
        for mode in [&["--dry-run"][..], &[]] {
            let mut extra = vec!["--allow-ro", ro.as_str()];
            extra.extend_from_slice(mode);
            fsops(&t, ops, &extra)
                .assert_code(3)
                .assert_stderr("is a mount point inside the grant");
            assert_eq!(t.snapshot(""), before, "{ops:?} {mode:?}");
        }
    }
}

/// Mounts `src` on `dest` (a bind mount) for the life of the guard; `None`
/// where mounting is not allowed (not root).
pub(crate) struct Bind(String);

impl Bind {
    /// A fresh tmpfs (mode 0700) on `dest`.
    fn tmpfs(dest: &str) -> Option<Bind> {
        std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "mode=0700", "tmpfs", dest])
            .status()
            .is_ok_and(|s| s.success())
            .then(|| Bind(dest.to_string()))
    }

    pub(crate) fn new(src: &str, dest: &str) -> Option<Bind> {
        std::process::Command::new("mount")
            .args(["--bind", src, dest])
            .status()
            .is_ok_and(|s| s.success())
            .then(|| Bind(dest.to_string()))
    }
}

impl Drop for Bind {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

/// The layout of a deploy (`current -> releases/7`), both granted: the
/// symlink the operator named a grant through cannot be repointed, and a
/// link through it is judged by where the kernel will take it.
#[test]
fn a_grant_named_through_a_symlink_in_a_grant_keeps_its_meaning() {
    let t = Tree::new();
    std::fs::create_dir_all(t.path("grant/releases/7")).unwrap();
    t.symlink("releases/7", "grant/current");
    let before = t.snapshot("");
    let cur = t.p("grant/current");
    for ops in [
        &[
            "ln . @/grant/self",
            "rm @/grant/self/current",
            "ln . @/grant/self/current",
        ][..],
        &["mv @/grant/releases @/grant/r2"],
        &["ln @/grant/current/../../../../etc/passwd @/grant/evil"],
    ] {
        let out = fsops(&t, ops, &["--allow", &cur]);
        out.assert_code(3);
        assert_eq!(t.snapshot(""), before, "{ops:?}");
    }
}

/// Bind mounts inside a read-write grant: a read-only directory, file or
/// the grant itself reached through them is never changed, and a link made
/// in such a grant is refused (it could lead elsewhere through the mount).
#[test]
fn bind_mounts_inside_a_grant_are_never_crossed_by_a_change() {
    let t = Tree::new();
    t.write("grant/ro/sub/f", "kept\n");
    t.write("grant/bf", "");
    std::fs::create_dir_all(t.path("grant/b")).unwrap();
    std::fs::create_dir_all(t.path("grant/z")).unwrap();
    let Some(_b) = Bind::new(&t.p("grant/ro/sub"), &t.p("grant/b")) else {
        eprintln!("skipped: cannot bind-mount here (not root?)");
        return;
    };
    let _f = Bind::new(&t.p("grant/ro/sub/f"), &t.p("grant/bf")).unwrap();
    let _z = Bind::new(&t.p("grant"), &t.p("grant/z")).unwrap();
    let ro = t.p("grant/ro");
    let before = t.snapshot("grant/ro");
    for ops in [
        &["write @/grant/b/f pwned"][..],
        &["mkdir @/grant/b/n"],
        &["chmod @/grant/bf 600"],
        &["mv @/grant/z/ro @/grant/z/ro2"],
        &["mv @/grant/b @/grant/b2"],
        &["mkdir @/grant/d", "ln ../ro @/grant/d/l"],
    ] {
        for mode in [&["--dry-run"][..], &[]] {
            let mut extra = vec!["--allow-ro", ro.as_str()];
            extra.extend_from_slice(mode);
            fsops(&t, ops, &extra).assert_code(3);
            assert_eq!(t.snapshot("grant/ro"), before, "{ops:?} {mode:?}");
        }
    }
}

/// What the kernel does on its own — drop set-user-ID on chown, give a
/// set-group-ID directory's group to what is made in it — is in the plan,
/// so the commit finds what the plan expects and applies every effect.
#[test]
fn the_plan_knows_what_the_kernel_does_on_its_own() {
    use std::os::unix::fs::PermissionsExt;
    let t = Tree::new();
    t.write("grant/f", "run\n");
    std::fs::create_dir(t.path("grant/d")).unwrap();
    for ops in [
        &[
            "chmod @/grant/f 4755",
            "chown @/grant/f 1 1",
            "chmod @/grant/f 644",
        ][..],
        &[
            "chown @/grant/d 0 1234",
            "chmod @/grant/d 2775",
            "mkdir @/grant/d/n",
            "write @/grant/d/x y",
            "chmod @/grant/d/n 700",
        ],
    ] {
        fsops(&t, ops, &["--dry-run"]).assert_code(0);
        let out = fsops(&t, ops, &[]);
        out.assert_code(0);
        assert_eq!(out.summary()["outcome"], "applied", "{ops:?}");
    }
    let m = |p: &str| std::fs::metadata(t.path(p)).unwrap();
    assert_eq!(m("grant/f").permissions().mode() & 0o7777, 0o644);
    assert_eq!((m("grant/d/n").gid(), m("grant/d/x").gid()), (1234, 1234));
    assert_eq!(m("grant/d/n").permissions().mode() & 0o7777, 0o700);
}

/// The state directory reached through a bind mount of a grant's parent,
/// or shown by a mount inside a grant, is the grant's (or readable from
/// it): refused before anything runs, as a state directory inside a grant
/// is — a fix could otherwise rewrite the compile cache or read the
/// before-images of other runs.
#[test]
fn a_state_directory_a_grant_reaches_by_identity_is_refused() {
    let t = Tree::new();
    std::fs::create_dir_all(t.path("srv/G/st")).unwrap();
    std::fs::create_dir_all(t.path("alias")).unwrap();
    let Some(_alias) = Bind::new(&t.p("srv"), &t.p("alias")) else {
        eprintln!("skipped: cannot bind-mount here (not root?)");
        return;
    };
    let run = |state: &str, grant: &str| {
        t.defops()
            .env("DEFOPS_STATE_DIR", state)
            .args(&[
                "run",
                guest("fsops").to_str().unwrap(),
                "--allow",
                grant,
                "--dry-run",
            ])
            .output()
    };
    run(&t.p("alias/G/st"), &t.p("srv/G"))
        .assert_code(2)
        .assert_stderr("overlaps the granted directory");
    std::fs::create_dir_all(t.path("grant/st")).unwrap();
    let _shown = Bind::new(&t.p("state"), &t.p("grant/st")).unwrap();
    run(&t.p("state"), &t.p("grant"))
        .assert_code(2)
        .assert_stderr("overlaps the granted directory");
    // A directory of the state directory shown elsewhere, granted: none
    // of the state directory's identities is above it.
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(t.path("state2/cache")).unwrap();
    std::fs::set_permissions(t.path("state2"), std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::set_permissions(
        t.path("state2/cache"),
        std::fs::Permissions::from_mode(0o700),
    )
    .unwrap();
    std::fs::create_dir_all(t.path("cache-shown")).unwrap();
    let _cache = Bind::new(&t.p("state2/cache"), &t.p("cache-shown")).unwrap();
    run(&t.p("state2"), &t.p("cache-shown"))
        .assert_code(2)
        .assert_stderr("overlaps the granted directory");
    // The state directory in a directory of a grant shown elsewhere.
    std::fs::create_dir_all(t.path("srv/G/sub")).unwrap();
    std::fs::create_dir_all(t.path("sub-shown")).unwrap();
    let _sub = Bind::new(&t.p("srv/G/sub"), &t.p("sub-shown")).unwrap();
    run(&t.p("sub-shown/st"), &t.p("srv/G"))
        .assert_code(2)
        .assert_stderr("overlaps the granted directory");
    assert!(!t.path("srv/G/sub/st").exists());
    // A file system mounted inside the state directory, shown elsewhere.
    std::fs::create_dir_all(t.path("fs-shown")).unwrap();
    let _fs = Bind::tmpfs(&t.p("state2/cache")).unwrap();
    let _fs_shown = Bind::new(&t.p("state2/cache"), &t.p("fs-shown")).unwrap();
    run(&t.p("state2"), &t.p("fs-shown"))
        .assert_code(2)
        .assert_stderr("overlaps the granted directory");
    // A directory of it shown by a mount that covers another mount at a
    // longer path: the mount that shows it counts, not the longest path.
    for d in ["state2/runs/R", "covered/R", "unrelated"] {
        std::fs::create_dir_all(t.path(d)).unwrap();
    }
    std::fs::set_permissions(
        t.path("state2/runs"),
        std::fs::Permissions::from_mode(0o700),
    )
    .unwrap();
    std::fs::set_permissions(
        t.path("state2/runs/R"),
        std::fs::Permissions::from_mode(0o700),
    )
    .unwrap();
    let _hidden = Bind::new(&t.p("unrelated"), &t.p("covered/R")).unwrap();
    let _over = Bind::new(&t.p("state2/runs"), &t.p("covered")).unwrap();
    run(&t.p("state2"), &t.p("covered/R"))
        .assert_code(2)
        .assert_stderr("overlaps the granted directory");
    // A directory from elsewhere mounted into the state directory (its
    // objects on a bigger disk, say): granting what holds it is refused,
    // a sibling of it is not.
    for d in ["big/objects", "big/other", "state2/objects"] {
        std::fs::create_dir_all(t.path(d)).unwrap();
    }
    for d in ["state2/objects", "big/objects"] {
        std::fs::set_permissions(t.path(d), std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    let _objects = Bind::new(&t.p("big/objects"), &t.p("state2/objects")).unwrap();
    for grant in ["big", "big/objects"] {
        run(&t.p("state2"), &t.p(grant))
            .assert_code(2)
            .assert_stderr("overlaps the granted directory");
    }
    let sibling = run(&t.p("state2"), &t.p("big/other"));
    assert!(!sibling.stderr.contains("overlaps"), "{}", sibling.stderr);
}

/// Without a mount table the grants cannot be placed within their file
/// systems: a run with grants is refused, not let through on names alone.
#[test]
fn without_a_mount_table_a_run_with_grants_is_refused() {
    let t = Tree::new();
    t.write("grant/app.conf", "max_conn = 20\n");
    let script = format!(
        "mount -t tmpfs tmpfs /proc && exec {} run {} --allow {} --dry-run -p file={} -p key=max_conn -p value=50",
        env!("CARGO_BIN_EXE_defops-wasm"),
        fix("config-set").display(),
        t.p("grant"),
        t.p("grant/app.conf"),
    );
    let out = std::process::Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .env("DEFOPS_STATE_DIR", t.path("state"))
        .env("DEFOPS_CONFIG", t.path("config.toml"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("unshare failed") || stderr.contains("mount: ") {
        eprintln!("skipped: cannot hide /proc here: {stderr}");
        return;
    }
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("mount table"), "{stderr}");
    assert_eq!(t.read("grant/app.conf"), "max_conn = 20\n");
}

/// In a chroot the table leaves out the mounts outside it, the one that
/// holds the state directory among them: such a run is refused, not let
/// through because nothing could be compared.
#[test]
fn a_run_whose_mounts_the_table_leaves_out_is_refused() {
    let t = Tree::new();
    let root = t.path("root");
    std::fs::create_dir_all(&root).unwrap();
    let script = r#"set -e
R="$1"
mkdir -p "$R/usr" "$R/proc" "$R/bin" "$R/state" "$R/data" "$R/fix"
ln -sfn usr/lib "$R/lib"
ln -sfn usr/lib64 "$R/lib64"
chmod 700 "$R/state"
mount --rbind /usr "$R/usr"
mount -t proc proc "$R/proc"
touch "$R/bin/dw"
mount --bind "$2" "$R/bin/dw"
cp "$3" "$R/fix/f.wasm"
echo 'max_conn = 20' > "$R/data/app.conf"
exec chroot "$R" /bin/dw --state-dir /state run /fix/f.wasm --allow /data --dry-run -p file=/data/app.conf -p key=max_conn -p value=50
"#;
    let out = std::process::Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", script, "sh"])
        .arg(&root)
        .arg(env!("CARGO_BIN_EXE_defops-wasm"))
        .arg(fix("config-set"))
        .env_remove("DEFOPS_STATE_DIR")
        .env_remove("DEFOPS_CONFIG")
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    // The binary ran (it said something of its own), or the set-up failed.
    if !stderr.contains("defops-wasm") && !stdout.contains("dry-run") {
        eprintln!("skipped: cannot run in a chroot here: {stderr}");
        return;
    }
    assert_eq!(out.status.code(), Some(2), "{stderr}{stdout}");
    assert!(stderr.contains("not in the mount table"), "{stderr}");
}

/// A log grant in the state directory, by path, through a symlink or by
/// a bind mount's identity, is refused before anything runs: a fix would
/// read every run's records through it (journals, before-images, compiled
/// code). Logs beside it are granted as ever.
#[test]
fn a_log_grant_inside_the_state_directory_is_refused() {
    let t = Tree::new();
    t.write("grant/app.conf", "max_conn = 20\n");
    t.write("logs/app.log", "ok\n");
    let file = t.p("grant/app.conf");
    t.set_max_conn(&file, "50", &["--dry-run"]).assert_code(0);
    std::os::unix::fs::symlink(t.path("state/objects"), t.path("alias")).unwrap();
    let mut globs = vec![
        t.p("state/objects/*"),
        t.p("state/*"),
        t.p("state/cache/*.cwasm"),
        t.p("alias/*"),
    ];
    std::fs::create_dir_all(t.path("shown")).unwrap();
    std::fs::create_dir_all(t.path("objects-shown")).unwrap();
    let bind = Bind::new(&t.p("state"), &t.p("shown"));
    let objects = Bind::new(&t.p("state/objects"), &t.p("objects-shown"));
    if bind.is_some() && objects.is_some() {
        globs.push(t.p("shown/objects/*"));
        // A directory of it shown elsewhere.
        globs.push(t.p("objects-shown/*"));
    }
    for glob in &globs {
        let before = t.snapshot("");
        t.set_max_conn(&file, "50", &["--dry-run", "--allow-log", glob])
            .assert_code(2)
            .assert_stderr("within the state directory");
        assert_eq!(t.snapshot(""), before, "{glob}");
    }
    // Beside it: past this check, to config-set's manifest (which
    // declares no logs).
    t.set_max_conn(
        &file,
        "50",
        &["--dry-run", "--allow-log", &t.p("logs/*.log")],
    )
    .assert_code(3)
    .assert_stderr("not within the logs the manifest declares");
}

/// A replaced file keeps its POSIX ACL and extended attributes: an atomic
/// replace never widens who may read it.
#[test]
fn a_write_keeps_the_file_s_acl_and_extended_attributes() {
    let t = Tree::new();
    t.write("grant/f", "secret\n");
    let f = t.p("grant/f");
    let acl = std::process::Command::new("setfacl")
        .args(["-m", "u:1000:rw,g::-,m::rw", &f])
        .status()
        .is_ok_and(|s| s.success());
    let tag = std::process::Command::new("setfattr")
        .args(["-n", "user.tag", "-v", "kept", &f])
        .status()
        .is_ok_and(|s| s.success());
    if !acl && !tag {
        eprintln!("skipped: no setfacl/setfattr or no xattr support here");
        return;
    }
    let attrs = || {
        let out = std::process::Command::new("getfattr")
            .args(["-d", "-m", "-", "--absolute-names", &f])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let before = attrs();
    let out = fsops(&t, &["write @/grant/f changed"], &[]);
    out.assert_code(0);
    assert_eq!(t.read("grant/f"), "changed");
    assert_eq!(attrs(), before, "the write dropped attributes");
    let run_id = out.summary()["run_id"].as_str().unwrap().to_string();
    t.verify_and_roll_back(&run_id);
    assert_eq!(attrs(), before, "the rollback dropped attributes");
}

/// Rollback after a run whose plan moved a directory, or removed a link,
/// when a later run made what it puts back lead outside: refused (exit 3,
/// nothing changed) unless --force. And a set-user-ID file's owner change
/// is undone with its mode intact.
#[test]
fn what_a_rollback_puts_back_is_held_to_the_same_rules() {
    use std::os::unix::fs::PermissionsExt;
    let t = Tree::new();
    std::fs::create_dir_all(t.path("grant/a/b")).unwrap();
    std::fs::create_dir_all(t.path("grant/d")).unwrap();
    t.symlink("n/../../outside/secret", "grant/p");
    let first = fsops(&t, &["mv @/grant/d @/grant/a/b/d", "rm @/grant/p"], &[]);
    first.assert_code(0);
    // Later: dangling at its depth, so allowed; and `n` made.
    fsops(
        &t,
        &["ln ../../outside/secret @/grant/a/b/d/l", "mkdir @/grant/n"],
        &[],
    )
    .assert_code(0);
    let before = t.snapshot("");
    let id = first.summary()["run_id"].as_str().unwrap().to_string();
    t.defops()
        .args(&["rollback", &id])
        .output()
        .assert_code(3)
        .assert_stderr("would lead outside the grants");
    assert_eq!(t.snapshot(""), before);

    // What led out before the run is put back as it was: a link the run
    // removed. (A plan may not move such a link: a moved link is held to
    // the rule whatever it did before.)
    t.symlink(&t.p("outside"), "grant/out2");
    let removed = fsops(&t, &["rm @/grant/out2"], &[]);
    removed.assert_code(0);
    let id = removed.summary()["run_id"].as_str().unwrap().to_string();
    t.verify_and_roll_back(&id);
    assert!(t.exists("grant/out2"));

    t.write("grant/tool", "#!/bin/sh\n");
    std::fs::set_permissions(
        t.path("grant/tool"),
        std::fs::Permissions::from_mode(0o4755),
    )
    .unwrap();
    let chown = fsops(&t, &["chown @/grant/tool 1000 1000"], &[]);
    chown.assert_code(0);
    let id = chown.summary()["run_id"].as_str().unwrap().to_string();
    t.verify_and_roll_back(&id);
    let m = std::fs::metadata(t.path("grant/tool")).unwrap();
    assert_eq!((m.permissions().mode() & 0o7777, m.uid()), (0o4755, 0));
}

/// A name that is not UTF-8 somewhere in a grant does not refuse every plan
/// that makes a directory (the walk over links already in the tree passes
/// such a directory over); in a directory the plan moves it still does.
#[test]
fn a_name_that_is_not_utf8_elsewhere_does_not_block_a_plan() {
    use std::os::unix::ffi::OsStrExt;
    let t = Tree::new();
    std::fs::create_dir_all(t.path("grant/other")).unwrap();
    std::fs::create_dir_all(t.path("grant/moving")).unwrap();
    let odd = std::ffi::OsStr::from_bytes(b"caf\xe9.conf");
    std::fs::write(t.path("grant/other").join(odd), "x").unwrap();
    std::fs::write(t.path("grant/moving").join(odd), "x").unwrap();
    fsops(&t, &["mkdir @/grant/new"], &[]).assert_code(0);
    let before = t.snapshot("grant");
    fsops(&t, &["mv @/grant/moving @/grant/moved"], &[]).assert_code(3);
    assert_eq!(t.snapshot("grant"), before);
}
