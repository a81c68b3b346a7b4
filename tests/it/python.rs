//! Python fixes end to end: a script from `new --lang python`, inspected,
//! dry-run, run, run again and rolled back; hostile scripts; manifests in
//! the PEP 723 block; approvals over the script's bytes. (The example
//! fixes' Python twins are in `python_twins.rs`, the escape table through
//! Python in `escapes.rs`.)

use std::process::Command;

use crate::util::{Out, Tree};

/// Runs the script `name` (written into the tree from `source`) with the
/// grant read-write.
fn script(t: &Tree, name: &str, source: &str, extra: &[&str]) -> Out {
    t.write(name, source);
    t.warm_python();
    let path = t.path(name);
    t.run(&path, extra)
}

#[test]
fn a_new_python_fix_runs_end_to_end() {
    let t = Tree::new();
    t.warm_python();
    t.write("grant/app.conf", "a = 1\n");
    t.defops()
        .args(&["new", "add-line", "--lang", "python", "--dir", &t.p("")])
        .output()
        .assert_code(0);
    // Never overwritten.
    t.defops()
        .args(&["new", "add-line", "--lang", "python", "--dir", &t.p("")])
        .output()
        .assert_code(2)
        .assert_stderr("exists");
    let fix = t.path("add-line.py");
    let inspect = t
        .defops()
        .args(&["inspect", fix.to_str().unwrap(), "--json"])
        .output();
    inspect.assert_code(0);
    let r = &inspect.lines()[0];
    assert_eq!(r["language"], "python");
    assert_eq!(r["manifest"]["name"], "add-line");
    assert!(
        r["imports"]["sockets"]
            .as_array()
            .is_some_and(|s| !s.is_empty())
    );
    assert!(
        r["runtime"]["sha256"]
            .as_str()
            .is_some_and(|s| s.len() == 64)
    );
    let file = format!("file={}", t.p("grant/app.conf"));
    let args = ["-p", file.as_str(), "-p", "line=b = 2"];
    let before = t.snapshot("");
    let dry = t.run(&fix, &[&args[..], &["--dry-run"]].concat());
    dry.assert_code(0);
    assert_eq!(dry.summary()["idempotent"], true);
    assert_eq!(t.snapshot(""), before);
    let real = t.run(&fix, &args);
    real.assert_code(0);
    assert_eq!(t.read("grant/app.conf"), "a = 1\nb = 2\n");
    // The journal names the script and the runtime.
    let run_id = real.summary()["run_id"].as_str().unwrap().to_string();
    let header = t.header(&run_id);
    assert_eq!(header["fix"]["language"], "python");
    assert!(header["fix"]["runtime"]["digest"].is_string());
    // The retrospective shows the script that ran.
    let report = t.defops().args(&["report", &run_id]).output();
    report.assert_code(0);
    assert!(
        report.stdout.contains("## The script") && report.stdout.contains("def apply() -> str:"),
        "{}",
        report.stdout
    );
    let again = t.run(&fix, &args);
    again.assert_code(0);
    assert_eq!(again.summary()["outcome"], "not-needed");
    t.verify_and_roll_back(&run_id);
    assert_eq!(t.read("grant/app.conf"), "a = 1\n");
}

/// Each hostile script is stopped or refused with a clear message, and
/// nothing is committed.
#[test]
fn hostile_scripts_are_stopped_and_change_nothing() {
    const APPLIES: &str = "import defops\ndef check():\n    return defops.applies('x')\n";
    let cases: &[(&str, &str, i32, &str)] = &[
        (
            "loop",
            "def apply():\n    while True:\n        pass\n",
            4,
            "deadline",
        ),
        (
            "recursion",
            "def apply():\n    def f(n):\n        return f(n + 1)\n    f(0)\n",
            1,
            "RecursionError",
        ),
        (
            "memory",
            "def apply():\n    x = []\n    while True:\n        x.append(bytearray(1 << 24))\n",
            4,
            "memory",
        ),
        (
            "output",
            "def apply():\n    while True:\n        print('y' * 65536)\n",
            4,
            "output",
        ),
        (
            "system",
            "import os\ndef apply():\n    os.system('touch /tmp/pwned')\n",
            1,
            "system",
        ),
        (
            "socket",
            "import socket\ndef apply():\n    socket.socket().connect(('127.0.0.1', 22))\n",
            1,
            "No module named 'socket'",
        ),
        (
            "passwd",
            "def apply():\n    return open('/etc/passwd').read()\n",
            1,
            "Error",
        ),
        (
            "ctypes",
            "import ctypes\ndef apply():\n    pass\n",
            1,
            "a fix can import defops and",
        ),
        (
            "raise-check",
            "def check():\n    raise ValueError('bad precondition')\n",
            1,
            "fix.py\", line 5",
        ),
        (
            "raise-apply",
            "def apply():\n    defops.write_text(defops.param('f'), 'x')\n    raise KeyError('boom')\n",
            1,
            "KeyError: 'boom'",
        ),
        ("syntax", "def apply(:\n    pass\n", 1, "SyntaxError"),
        (
            "rebind",
            "def apply():\n    import sys\n    defops.write_text = lambda *a: None\n    sys.modules['defops'].write_text(defops.param('f'), 'x')\n    from wit_world.imports import fs\n    fs.write('/etc/pwned', b'x')\n",
            3,
            "denied",
        ),
        ("no-apply", "", 1, "defines no apply() function"),
    ];
    let t = Tree::new();
    t.write("grant/f", "kept\n");
    let f = format!("f={}", t.p("grant/f"));
    for (name, body, code, needle) in cases {
        let before = t.snapshot("grant");
        let out = script(
            &t,
            "fix.py",
            &format!("{APPLIES}{body}"),
            &["-p", &f, "--timeout", "3s", "--max-output", "1MiB"],
        );
        assert_eq!(out.code, *code, "{name}: {}\n{}", out.stderr, out.stdout);
        assert!(
            out.stderr.contains(needle) || out.stdout.contains(needle),
            "{name}: {needle:?} not in {}\n{}",
            out.stderr,
            out.stdout
        );
        assert_eq!(t.snapshot("grant"), before, "{name} changed the grant");
    }
    assert!(!std::path::Path::new("/tmp/pwned").exists());
}

/// A script's compiled code is kept in the cache and what later runs
/// start from: only from a file of one name that no one else can write,
/// whose lines name the key it was kept under and the digest of the code.
/// Anything else there is compiled over; a script that does not compile
/// keeps nothing; the compiler's warnings are said on every run.
#[test]
fn a_script_s_compiled_code_is_kept_and_only_its_own_is_used() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let t = Tree::new();
    t.warm_python();
    let source = |who: &str| {
        format!(
            "import defops\nPATTERN = '\\d'\ndef check():\n    print('this is {who}')\n    return defops.not_needed('x')\n"
        )
    };
    // Two scripts of the same file name, so each one's code would pass
    // for the other's inside the runtime.
    t.write("a/fix.py", &source("A"));
    t.write("b/fix.py", &source("B"));
    let kept = || -> std::collections::BTreeSet<std::path::PathBuf> {
        std::fs::read_dir(t.path("state/cache"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("script-")
            })
            .collect()
    };
    let says = |dir: &str, who: &str| -> serde_json::Value {
        let out = t.run(&t.path(&format!("{dir}/fix.py")), &["--dry-run"]);
        out.assert_code(0);
        assert!(
            out.stdout.contains(&format!("this is {who}")),
            "{dir}/fix.py did not run {who}'s code: {}",
            out.stdout
        );
        // The compiler's warning, whether it compiled this time or not.
        assert!(
            out.stdout.contains("SyntaxWarning") || out.stderr.contains("SyntaxWarning"),
            "{}",
            out.stdout
        );
        let run_id = out.summary()["run_id"].as_str().unwrap().to_string();
        t.header(&run_id)["fix"]["script_code"]["from"].clone()
    };
    assert_eq!(says("a", "A"), "compiled");
    let a_code = kept().into_iter().next().expect("A's code kept");
    let a_kept = std::fs::read(&a_code).unwrap();
    says("b", "B");
    let b_code = kept()
        .into_iter()
        .find(|p| *p != a_code)
        .expect("B's code kept apart from A's");
    assert_eq!(std::fs::metadata(&a_code).unwrap().mode() & 0o777, 0o600);
    // A later run uses the kept file and does not write it again.
    let ino = std::fs::metadata(&a_code).unwrap().ino();
    assert_eq!(says("a", "A"), "cache");
    assert_eq!(std::fs::metadata(&a_code).unwrap().ino(), ino);
    // The file's lines: format, key, digest of the code.
    let lines = |bytes: &[u8]| -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        let mut l = bytes.splitn(4, |b| *b == b'\n');
        let (format, key, _, code) = (l.next(), l.next(), l.next(), l.next());
        (
            format.unwrap().to_vec(),
            key.unwrap().to_vec(),
            code.unwrap().to_vec(),
        )
    };
    let (format, a_key, _) = lines(&a_kept);
    let (_, _, b_bytes) = lines(&std::fs::read(&b_code).unwrap());
    let file_of = |key: &[u8], code: &[u8]| {
        let mut f = [
            &format[..],
            key,
            blake3::hash(code).to_hex().as_bytes(),
            code,
        ]
        .join(&b'\n');
        f.truncate(f.len());
        f
    };
    let plant = |bytes: &[u8], mode: u32| {
        let _ = std::fs::remove_file(&a_code);
        std::fs::write(&a_code, bytes).unwrap();
        std::fs::set_permissions(&a_code, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    // What runs is the kept code: B's, kept under A's key, runs B.
    plant(&file_of(&a_key, &b_bytes), 0o600);
    assert_eq!(says("a", "B"), "cache");
    // B's file as it is (its own key), in A's place: compiled over.
    plant(&std::fs::read(&b_code).unwrap(), 0o600);
    assert_eq!(says("a", "A"), "compiled");
    assert_eq!(std::fs::read(&a_code).unwrap(), a_kept);
    let others = [
        // The code changed after its digest was taken.
        {
            let mut f = file_of(&a_key, &b_bytes);
            let last = f.len() - 1;
            f[last] ^= 1;
            (f, 0o600)
        },
        // Writable by others.
        (file_of(&a_key, &b_bytes), 0o666),
        // Over the size kept, read no further than its size.
        (Vec::new(), 0o600),
    ];
    for (i, (bytes, mode)) in others.into_iter().enumerate() {
        plant(&bytes, mode);
        if i == 2 {
            std::fs::File::options()
                .write(true)
                .open(&a_code)
                .unwrap()
                .set_len(1 << 30)
                .unwrap();
        }
        assert_eq!(says("a", "A"), "compiled", "case {i}");
        assert_eq!(std::fs::read(&a_code).unwrap(), a_kept, "case {i}");
    }
    // Not code at all, under a right digest (only its owner could have
    // written that): handed over, and the runtime compiles the script.
    plant(&file_of(&a_key, b"not a code object"), 0o600);
    assert_eq!(says("a", "A"), "cache");
    plant(&a_kept, 0o600);
    // A second name: not used.
    std::fs::hard_link(&a_code, t.path("another-name")).unwrap();
    plant(&file_of(&a_key, &b_bytes), 0o600);
    std::fs::remove_file(t.path("another-name")).unwrap();
    std::fs::hard_link(&a_code, t.path("another-name")).unwrap();
    assert_eq!(says("a", "A"), "compiled");
    // A directory in its place: compiled, and the journal says it was not
    // kept.
    std::fs::remove_file(&a_code).unwrap();
    std::fs::remove_file(t.path("another-name")).unwrap();
    std::fs::create_dir(&a_code).unwrap();
    let out = t.run(&t.path("a/fix.py"), &["--dry-run"]);
    out.assert_code(0);
    let run_id = out.summary()["run_id"].as_str().unwrap().to_string();
    let code = &t.header(&run_id)["fix"]["script_code"];
    assert_eq!(code["from"], "compiled");
    assert!(code["not_kept"].is_string(), "{code}");
    std::fs::remove_dir(&a_code).unwrap();
    assert_eq!(says("a", "A"), "compiled");
    assert_eq!(std::fs::read(&a_code).unwrap(), a_kept);
    // A script that does not compile: the usual error, nothing kept.
    let before = kept();
    t.write("c/fix.py", "def check(:\n    pass\n");
    let c = t.run(&t.path("c/fix.py"), &["--dry-run"]);
    assert_eq!(c.code, 1, "{}", c.stderr);
    assert!(
        c.stderr.contains("SyntaxError") || c.stdout.contains("SyntaxError"),
        "{}",
        c.stdout
    );
    assert_eq!(kept(), before);
}

#[test]
fn a_missing_param_of_a_script_is_refused_before_anything_is_written() {
    let t = Tree::new();
    t.defops()
        .args(&["new", "add-line", "--lang", "python", "--dir", &t.p("")])
        .output()
        .assert_code(0);
    let fresh = t.p("fresh-state");
    let file = format!("file={}", t.p("grant/app.conf"));
    let out = t
        .defops()
        .env("DEFOPS_STATE_DIR", &fresh)
        .args(&[
            "run",
            &t.p("add-line.py"),
            "--allow",
            &t.p("grant"),
            "--dry-run",
            "-p",
            &file,
        ])
        .output();
    out.assert_code(2)
        .assert_stderr("add-line needs --param line=...");
    assert!(!t.path("fresh-state").exists(), "{}", out.stderr);
}

#[test]
fn manifest_errors_in_the_metadata_block_name_the_script_s_line() {
    let t = Tree::new();
    let fix = "import defops\ndef check():\n    return defops.applies('x')\ndef apply():\n    return ''\n";
    let block = |body: &str| format!("# /// script\n# [tool.defops]\n{body}# ///\n{fix}");
    let cases = [
        (
            block(
                "# name = \"x\"\n# version = \"0.1.0\"\n# description = \"d\"\n# colour = \"blue\"\n",
            ),
            "line 6",
        ),
        (block("# name = \"x\n"), "line 3"),
        (
            format!("{}# /// script\n# ///\n", block("# name = \"x\"\n")),
            "line 10",
        ),
    ];
    for (source, line) in cases {
        let out = script(&t, "bad.py", &source, &["--dry-run"]);
        out.assert_code(2).assert_stderr(line);
    }
    // No block: inspect says so (and the verdict is not OK).
    t.write("plain.py", fix);
    let out = t.defops().args(&["inspect", &t.p("plain.py")]).output();
    out.assert_code(1);
    assert!(
        out.stdout.contains("no `# /// script` block"),
        "{}",
        out.stdout
    );
}

#[test]
fn an_approved_script_runs_and_a_changed_one_is_refused() {
    let t = Tree::new();
    t.warm_python();
    t.write("grant/f", "kept\n");
    t.defops()
        .args(&["new", "add-line", "--lang", "python", "--dir", &t.p("")])
        .output()
        .assert_code(0);
    let key = t.p("alice");
    assert!(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "alice", "-f", &key])
            .status()
            .unwrap()
            .success()
    );
    let public = std::fs::read_to_string(format!("{key}.pub")).unwrap();
    t.write(
        "allowed_signers",
        &format!("alice@example.com {}", public.trim()),
    );
    let fix = t.p("add-line.py");
    t.defops()
        .args(&["approve", &fix, "--key", &key])
        .output()
        .assert_code(0);
    assert!(t.exists("add-line.py.sig"));
    let file = format!("file={}", t.p("grant/f"));
    let signers = t.p("allowed_signers");
    let args = [
        "-p",
        file.as_str(),
        "-p",
        "line=x",
        "--require-approval",
        "--allowed-signers",
        signers.as_str(),
    ];
    t.run(std::path::Path::new(&fix), &args).assert_code(0);
    // One byte more: the signature no longer covers the script.
    let mut source = t.read("add-line.py");
    source.push(' ');
    t.write("add-line.py", &source);
    let before = t.snapshot("grant");
    t.run(std::path::Path::new(&fix), &args).assert_code(3);
    assert_eq!(t.snapshot("grant"), before);
}

/// The runtime: missing, or made for another release, is one line naming
/// where it was looked for or what it is, exit 2, before anything runs.
#[test]
fn a_missing_or_foreign_runtime_is_named() {
    let t = Tree::new();
    t.write("fix.py", "import defops\n");
    let fix = t.p("fix.py");
    let missing = t
        .defops()
        .env("DEFOPS_PYTHON_RUNTIME", &t.p("nowhere/python.wasm"))
        .args(&["run", &fix, "--allow", &t.p("grant"), "--dry-run"])
        .output();
    missing
        .assert_code(2)
        .assert_stderr(&format!("looked at {}", t.p("nowhere/python.wasm")));
    // The same runtime, tagged for another release.
    let mut bytes = std::fs::read(crate::util::python_runtime()).unwrap();
    let tag = b"defops-python-runtime 2";
    let at = bytes.len() - tag.len();
    assert_eq!(&bytes[at..], tag);
    *bytes.last_mut().unwrap() = b'9';
    std::fs::write(t.path("other.wasm"), &bytes).unwrap();
    let foreign = t
        .defops()
        .env("DEFOPS_PYTHON_RUNTIME", &t.p("other.wasm"))
        .args(&["run", &fix, "--allow", &t.p("grant"), "--dry-run"])
        .output();
    foreign
        .assert_code(2)
        .assert_stderr("not the \"defops-python-runtime 2\"");
}

/// FIPS mode covers a Python run: the script's digest and the runtime's
/// are SHA-256, like every other digest of the run.
#[test]
fn fips_mode_names_the_script_and_the_runtime_by_sha256() {
    let t = Tree::new();
    t.warm_python();
    let fips = t.config(
        "fips.toml",
        "fips = true\nfips-accept-unvalidated = true\n[dry-run-first]\nrequired = false\n",
    );
    let source = "import defops\ndef check():\n    return defops.applies('x')\ndef apply():\n    defops.write_text(defops.param('f'), 'y')\n";
    t.write("fix.py", source);
    let f = format!("f={}", t.p("grant/f"));
    let out = t.run(&t.path("fix.py"), &["-p", &f, "--config", &fips]);
    out.assert_code(0);
    let run_id = out.summary()["run_id"].as_str().unwrap().to_string();
    let header = t.header(&run_id);
    let sha256 = |bytes: &[u8]| {
        let out = Command::new("sha256sum")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(bytes)?;
                c.wait_with_output()
            })
            .unwrap();
        String::from_utf8_lossy(&out.stdout)[..64].to_string()
    };
    assert_eq!(header["hash_alg"], "sha256");
    assert_eq!(header["fix"]["digest"], sha256(source.as_bytes()).as_str());
    let runtime = std::fs::read(crate::util::python_runtime()).unwrap();
    assert_eq!(
        header["fix"]["runtime"]["digest"],
        sha256(&runtime).as_str()
    );
}
