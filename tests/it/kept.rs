//! With `keep-replaced`, a run keeps the files it replaces
//! (`runs/RUN/kept`) and its rollback renames them back: the very files come back, inode and extended
//! attributes. A kept file is put back only when it is exactly the
//! before-image; anything else there (changed, a link, a directory) is
//! left where it is and the file is written from the object store.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use crate::util::{Out, Tree};

const NAMES: [&str; 4] = ["a", "b", "c", "d"];

/// The tree's configuration with `keep-replaced = true`.
fn keeping(t: &Tree) {
    t.write(
        "config.toml",
        "[dry-run-first]\nrequired = false\n[rollback]\nkeep-replaced = true\n",
    );
}

fn setup(t: &Tree) {
    keeping(t);
    for n in NAMES {
        t.write(
            &format!("grant/{n}.conf"),
            &format!("# {n}\nmax_conn = 20\n"),
        );
    }
}

fn ino(t: &Tree, rel: &str) -> u64 {
    std::fs::symlink_metadata(t.path(rel)).unwrap().ino()
}

fn inodes(t: &Tree) -> BTreeMap<&'static str, u64> {
    NAMES
        .iter()
        .map(|n| (*n, ino(t, &format!("grant/{n}.conf"))))
        .collect()
}

/// Each file open, so that while these are held no inode number of theirs
/// can be given to another file: an equal number then means the same file.
fn hold(t: &Tree) -> Vec<std::fs::File> {
    NAMES
        .iter()
        .map(|n| std::fs::File::open(t.path(&format!("grant/{n}.conf"))).unwrap())
        .collect()
}

fn run_all(t: &Tree) -> String {
    let out = t.set_max_conn(&t.p("grant/*.conf"), "50", &[]);
    out.assert_code(0);
    out.summary()["run_id"].as_str().unwrap().to_string()
}

fn rollback(t: &Tree, run: &str) -> Out {
    t.defops().args(&["rollback", run, "--json"]).output()
}

fn kept_dir(t: &Tree, run: &str) -> PathBuf {
    t.path(&format!("state/runs/{run}/kept"))
}

/// The kept files, by the name of the file they were (read from their
/// first line, `# NAME`).
fn kept_by_name(t: &Tree, run: &str) -> BTreeMap<String, PathBuf> {
    std::fs::read_dir(kept_dir(t, run))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.symlink_metadata().unwrap().is_file())
        .map(|p| {
            let first = std::fs::read_to_string(&p).unwrap();
            (first.lines().next().unwrap()[2..].to_string(), p)
        })
        .collect()
}

fn user_xattr(path: &std::path::Path) -> Option<Vec<u8>> {
    let mut buf = [0u8; 64];
    let n = rustix::fs::lgetxattr(path, "user.defops-test", &mut buf).ok()?;
    Some(buf[..n].to_vec())
}

#[test]
fn a_rollback_puts_back_the_very_files_the_run_replaced() {
    let t = Tree::new();
    setup(&t);
    // Where the file system takes user attributes, one must come back.
    let tagged = rustix::fs::setxattr(
        t.path("grant/a.conf"),
        "user.defops-test",
        b"tag",
        rustix::fs::XattrFlags::empty(),
    )
    .is_ok();
    let before = t.snapshot("");
    let originals = inodes(&t);
    let _held = hold(&t);
    let run = run_all(&t);

    let kept: BTreeSet<u64> = std::fs::read_dir(kept_dir(&t, &run))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().ino())
        .collect();
    assert_eq!(kept, originals.values().copied().collect());
    let now = inodes(&t);
    assert!(now.values().all(|i| !kept.contains(i)), "{now:?}");

    rollback(&t, &run).assert_code(0);
    assert_eq!(t.snapshot(""), before);
    assert_eq!(inodes(&t), originals);
    if tagged {
        assert_eq!(
            user_xattr(&t.path("grant/a.conf")).as_deref(),
            Some(&b"tag"[..])
        );
    }
    // What the run wrote is where the originals were.
    for (name, p) in kept_by_name(&t, &run) {
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            format!("# {name}\nmax_conn = 50\n")
        );
    }
    // A second rollback changes nothing.
    rollback(&t, &run).assert_code(0);
    assert_eq!(t.snapshot(""), before);
    assert_eq!(inodes(&t), originals);
}

#[test]
fn a_kept_file_that_is_not_the_before_image_is_not_put_back() {
    let t = Tree::new();
    setup(&t);
    t.write("outside/b-twin", "# b\nmax_conn = 20\n");
    let outside = t.snapshot("outside");
    let before = t.snapshot("");
    let originals = inodes(&t);
    let _held = hold(&t);
    let run = run_all(&t);
    let kept = kept_by_name(&t, &run);
    assert_eq!(kept.len(), NAMES.len(), "{kept:?}");

    // a: its content changed in place (as by a process that kept it open),
    // its time put back, so that only its bytes tell.
    let a = &kept["a"];
    let mtime = std::fs::metadata(a).unwrap().modified().unwrap();
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().write(true).open(a).unwrap();
        f.write_all(b"# a\nmax_conn = 21").unwrap();
        f.set_modified(mtime).unwrap();
    }
    // b: a symlink to an identical file outside the grants.
    std::fs::remove_file(&kept["b"]).unwrap();
    std::os::unix::fs::symlink(t.path("outside/b-twin"), &kept["b"]).unwrap();
    // c: a directory.
    std::fs::remove_file(&kept["c"]).unwrap();
    std::fs::create_dir(&kept["c"]).unwrap();
    std::fs::write(kept["c"].join("inside"), "x").unwrap();
    // d: another mode.
    std::fs::set_permissions(
        &kept["d"],
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();

    rollback(&t, &run).assert_code(0);
    assert_eq!(t.snapshot(""), before);
    // The changed ones stayed where they were kept.
    let now = inodes(&t);
    for n in ["a", "d"] {
        assert_eq!(std::fs::metadata(&kept[n]).unwrap().ino(), originals[n]);
        assert_ne!(now[n], originals[n], "{n} was put back");
    }
    assert_eq!(t.snapshot("outside"), outside);
    assert!(kept["b"].symlink_metadata().unwrap().is_symlink());
    assert!(kept["c"].join("inside").exists());
}

#[test]
fn by_default_nothing_is_kept() {
    let t = Tree::new();
    setup(&t);
    t.write("config.toml", "[dry-run-first]\nrequired = false\n");
    let before = t.snapshot("");
    let originals = inodes(&t);
    let _held = hold(&t);
    let run = run_all(&t);
    assert!(!kept_dir(&t, &run).exists());
    rollback(&t, &run).assert_code(0);
    assert_eq!(t.snapshot(""), before);
    let now = inodes(&t);
    assert!(NAMES.iter().all(|n| now[n] != originals[n]), "{now:?}");
}

#[test]
fn a_large_file_is_written_back_not_kept() {
    let t = Tree::new();
    keeping(&t);
    let mut big = String::from("max_conn = 20\n");
    while big.len() <= 1 << 20 {
        big.push_str("# padding padding padding padding padding padding\n");
    }
    t.write("grant/big.conf", &big);
    let before = t.snapshot("");
    let out = t.set_max_conn(&t.p("grant/big.conf"), "50", &["--max-memory", "1GiB"]);
    out.assert_code(0);
    let run = out.summary()["run_id"].as_str().unwrap().to_string();
    let kept = std::fs::read_dir(kept_dir(&t, &run)).map_or(0, |d| d.count());
    assert_eq!(kept, 0);
    rollback(&t, &run).assert_code(0);
    assert_eq!(t.snapshot(""), before);
}

/// With the state directory on another file system, nothing is kept and
/// the rollback writes the files back.
#[test]
fn a_state_directory_on_another_file_system_keeps_nothing() {
    let t = Tree::new();
    let Some(shm) = ["/dev/shm", "/run"]
        .into_iter()
        .map(std::path::Path::new)
        .find(|d| {
            d.metadata()
                .is_ok_and(|m| m.dev() != t.path("grant").metadata().unwrap().dev())
        })
    else {
        eprintln!("skipped: no other file system to put the state directory on");
        return;
    };
    let Ok(other) = tempfile::tempdir_in(shm) else {
        eprintln!("skipped: {} is not writable", shm.display());
        return;
    };
    let state = other.path().join("state");
    setup(&t);
    let before = t.snapshot("");
    let out = t
        .set_max_conn_cmd(&t.p("grant/*.conf"), "50")
        .env("DEFOPS_STATE_DIR", state.to_str().unwrap())
        .output();
    out.assert_code(0);
    let run = out.summary()["run_id"].as_str().unwrap().to_string();
    let kept = state.join("runs").join(&run).join("kept");
    assert_eq!(std::fs::read_dir(&kept).map_or(0, |d| d.count()), 0);
    t.defops()
        .env("DEFOPS_STATE_DIR", state.to_str().unwrap())
        .args(&["rollback", &run, "--json"])
        .output()
        .assert_code(0);
    assert_eq!(t.snapshot(""), before);
}

/// A sequence: two runs on the same files, the later rolled back, the
/// earlier's rollback killed right after its first exchange, then run
/// again: the tree is as before both, to the inode, with nothing left over.
#[test]
fn stacked_runs_and_a_rollback_cut_off_midway_come_back_to_the_very_files() {
    let t = Tree::new();
    setup(&t);
    let before = t.snapshot("");
    let originals = inodes(&t);
    let _held = hold(&t);
    let first = run_all(&t);
    let out = t.set_max_conn(&t.p("grant/*.conf"), "70", &[]);
    out.assert_code(0);
    let second = out.summary()["run_id"].as_str().unwrap().to_string();
    rollback(&t, &second).assert_code(0);
    let killed = t
        .defops()
        .env("DEFOPS_FAILPOINT", "after-exchange")
        .args(&["rollback", &first, "--json"])
        .output();
    assert_eq!(killed.code, -1, "the fail point did not fire: {killed:?}");
    rollback(&t, &first).assert_code(0);
    assert_eq!(t.snapshot(""), before);
    assert_eq!(inodes(&t), originals);
    for n in NAMES {
        let st = std::fs::metadata(t.path(&format!("grant/{n}.conf"))).unwrap();
        assert_eq!(st.nlink(), 1, "{n}");
    }
    let leftovers: Vec<_> = std::fs::read_dir(t.path("grant"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with(".defops"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
