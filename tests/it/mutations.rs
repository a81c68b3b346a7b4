//! Every mutation kind, planned then committed; the overlay shows the fix
//! its own changes as if they were real.

use std::os::unix::fs::MetadataExt;

use crate::util::{Tree, guest};

pub fn ops(t: &Tree, lines: &[String], extra: &[&str]) -> crate::util::Out {
    let ops = format!("ops={}", lines.join(";"));
    let mut args = vec!["-p", ops.as_str()];
    args.extend_from_slice(extra);
    t.run(&guest("fsops"), &args)
}

pub fn every_mutation(g: &str) -> Vec<String> {
    vec![
        format!("mkdir {g}/d"),
        format!("write {g}/d/a hello\\nworld"),
        format!("mv {g}/d/a {g}/d/b"),
        format!("chmod {g}/d/b 600"),
        format!("ln b {g}/d/l"),
        format!("rm {g}/old.txt"),
        format!("rmdir {g}/empty"),
        format!("mv {g}/tree {g}/tree2"),
        format!("write {g}/tree2/x/new.txt n"),
        format!("write {g}/keep.txt same"),
        format!("chmod {g}/keep.txt 644"),
        format!("chown {g}/keep.txt {} {}", rustix_ids().0, rustix_ids().1),
    ]
}

fn rustix_ids() -> (u32, u32) {
    let m = std::fs::metadata("/proc/self").unwrap();
    (m.uid(), m.gid())
}

pub fn setup(t: &Tree) {
    t.write("grant/old.txt", "old");
    std::fs::create_dir(t.path("grant/empty")).unwrap();
    t.write("grant/tree/x/y.txt", "y");
    t.write("grant/keep.txt", "same");
    std::fs::set_permissions(
        t.path("grant/keep.txt"),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
}

#[test]
fn every_mutation_kind_is_planned_then_committed() {
    let t = Tree::new();
    setup(&t);
    let g = t.p("grant");
    let before = t.snapshot("");

    let dry = ops(&t, &every_mutation(&g), &["--dry-run"]);
    dry.assert_code(0);
    assert_eq!(t.snapshot(""), before, "dry-run wrote");
    let s = dry.summary();
    // write+write coalesce? No: they are different files. 9 changes:
    // mkdir, write, rename, chmod, symlink, rm, rmdir, rename, write.
    assert_eq!(s["changed"], 9, "{}", dry.stdout);
    // write same content, chmod to the same mode, chown to the same owner.
    assert_eq!(s["unchanged"], 3);
    let verbs: Vec<_> = dry
        .of("effect")
        .iter()
        .map(|e| e["op"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        verbs,
        [
            "create-dir",
            "write",
            "rename",
            "set-mode",
            "symlink",
            "remove-file",
            "remove-dir",
            "rename",
            "write"
        ]
    );

    let real = ops(&t, &every_mutation(&g), &[]);
    real.assert_code(0);
    assert_eq!(real.summary()["outcome"], "applied");
    assert_eq!(t.read("grant/d/b"), "hello\nworld");
    assert_eq!(t.mode("grant/d/b"), 0o600);
    assert!(!t.exists("grant/d/a"));
    assert_eq!(
        std::fs::read_link(t.path("grant/d/l")).unwrap().to_str(),
        Some("b")
    );
    assert!(!t.exists("grant/old.txt"));
    assert!(!t.exists("grant/empty"));
    assert!(!t.exists("grant/tree"));
    assert_eq!(t.read("grant/tree2/x/y.txt"), "y");
    assert_eq!(t.read("grant/tree2/x/new.txt"), "n");
    assert_eq!(t.mode("grant/d"), 0o755);
    assert_eq!(t.mode("grant/tree2/x/new.txt"), 0o644);
}

#[test]
fn the_fix_sees_its_own_planned_changes() {
    let t = Tree::new();
    setup(&t);
    let g = t.p("grant");
    let out = ops(
        &t,
        &[
            format!("write {g}/new.txt planned"),
            format!("read {g}/new.txt"),
            format!("mv {g}/tree {g}/moved"),
            format!("ls {g}"),
            format!("read {g}/moved/x/y.txt"),
            format!("stat {g}/tree"),
            format!("rm {g}/old.txt"),
            format!("read {g}/old.txt"),
        ],
        &["--dry-run"],
    );
    let m = out.messages();
    assert!(m[1].ends_with("-> ok planned"), "{m:?}");
    assert!(
        m[3].ends_with("-> ok empty,keep.txt,moved,new.txt,old.txt"),
        "{m:?}"
    );
    assert!(m[4].ends_with("-> ok y"), "{m:?}");
    assert!(m[5].contains("-> not found"), "{m:?}");
    assert!(m[7].contains("-> not found"), "{m:?}");
}

#[test]
fn consecutive_writes_to_one_file_are_one_effect() {
    let t = Tree::new();
    let g = t.p("grant");
    let out = ops(
        &t,
        &[
            format!("write {g}/f one"),
            format!("write {g}/f two"),
            format!("write {g}/f three"),
        ],
        &[],
    );
    out.assert_code(0);
    assert_eq!(out.summary()["changed"], 1);
    assert_eq!(t.read("grant/f"), "three");
}

#[test]
fn errors_mirror_the_file_system() {
    let t = Tree::new();
    setup(&t);
    let g = t.p("grant");
    let out = ops(
        &t,
        &[
            format!("read {g}/nope"),
            format!("mkdir {g}/empty"),
            format!("rmdir {g}/tree"),
            format!("write {g}/no/such/dir/f x"),
            format!("read {g}/tree"),
            format!("rm {g}/tree"),
        ],
        &["-p", "ignore_errors=1"],
    );
    let m = out.messages();
    assert!(m[0].contains("-> not found"), "{m:?}");
    assert!(m[1].contains("-> already exists"), "{m:?}");
    assert!(m[2].contains("not empty"), "{m:?}");
    assert!(m[3].contains("-> not found"), "{m:?}");
    assert!(m[4].contains("is a directory"), "{m:?}");
    assert!(m[5].contains("is a directory"), "{m:?}");
    assert_eq!(out.summary()["denied"], 0);
}
