//! Review: manifests (validation, embedding), `inspect`, grants within the
//! manifest, and SSH-signed approvals checked against real ssh-keygen.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::util::{Out, Tree, fix, guest};

fn manifests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("tests/manifests")
}

fn inspect(t: &Tree, args: &[&str]) -> Out {
    let mut all = vec!["inspect"];
    all.extend_from_slice(args);
    t.defops().args(&all).output()
}

#[test]
fn every_bad_manifest_is_refused_with_its_line_and_nothing_written() {
    let t = Tree::new();
    let target = t.path("fix.wasm");
    std::fs::copy(guest("fsops"), &target).unwrap();
    let original = std::fs::read(&target).unwrap();
    let mut cases = 0;
    for entry in std::fs::read_dir(manifests_dir()).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let expect = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{} lacks its # expect: line", path.display()));
        let out = t
            .defops()
            .args(&["embed", target.to_str().unwrap(), path.to_str().unwrap()])
            .output();
        out.assert_code(2).assert_stderr(expect);
        assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
        assert_eq!(
            std::fs::read(&target).unwrap(),
            original,
            "{}",
            path.display()
        );
        cases += 1;
    }
    assert!(cases >= 10, "only {cases} cases");
}

fn sha256sum(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8(out.stdout).unwrap()[..64].to_string()
}

#[test]
fn inspect_shows_each_example_fix_and_its_real_imports() {
    let t = Tree::new();
    for name in [
        "config-set",
        "rename-to-backup",
        "stale-locks",
        "quarantine-on-log",
    ] {
        let out = inspect(&t, &[fix(name).to_str().unwrap(), "--json"]);
        out.assert_code(0);
        let r = out.summary_of("inspect");
        assert_eq!(r["consistent"], true, "{name}: {r}");
        assert_eq!(r["manifest"]["name"], name);
        assert_eq!(r["digests"]["sha256"], sha256sum(&fix(name)), "{name}");
        let b3 = blake3_of(&fix(name));
        assert_eq!(r["digests"]["blake3"], b3, "{name}");
        assert_eq!(r["imports"]["files"][0], "defops:fix/fs@0.1.0");
        let logs = r["imports"]["logs"].as_array().unwrap().len();
        assert_eq!(logs > 0, name == "quarantine-on-log", "{name}: {r}");
        assert!(r["imports"]["refused"].as_array().unwrap().is_empty());
        // The same for people.
        let human = inspect(&t, &[fix(name).to_str().unwrap()]);
        human.assert_code(0);
        assert!(
            human
                .stdout
                .contains("verdict   the manifest and the imports agree")
        );
        assert!(human.stdout.contains(&format!("manifest  {name} 0.1.0")));
    }
}

fn blake3_of(path: &Path) -> String {
    blake3::hash(&std::fs::read(path).unwrap())
        .to_hex()
        .to_string()
}

#[test]
fn inspect_flags_a_manifest_that_disagrees_with_the_imports() {
    let t = Tree::new();
    // fsops reads logs (grep, count, tail) but this manifest declares none.
    t.write(
        "liar.toml",
        "name = \"liar\"\nversion = \"1.0.0\"\ndescription = \"says it only edits files\"\nread-write = [\"/srv\"]\n",
    );
    let liar = t.p("liar.wasm");
    t.defops()
        .args(&[
            "embed",
            guest("fsops").to_str().unwrap(),
            &t.p("liar.toml"),
            "-o",
            &liar,
        ])
        .output()
        .assert_code(0);
    let out = inspect(&t, &[&liar, "--json"]);
    out.assert_code(1);
    let r = out.summary_of("inspect");
    assert_eq!(r["consistent"], false);
    let problems = r["problems"].to_string();
    assert!(
        problems.contains("imports the logs interface but declares no logs"),
        "{problems}"
    );
    let human = inspect(&t, &[&liar]);
    assert!(human.stdout.contains("DISAGREE"), "{}", human.stdout);

    // No manifest at all, and imports the runner refuses.
    let bare = inspect(&t, &[guest("sockets").to_str().unwrap(), "--json"]);
    bare.assert_code(1);
    let r = bare.summary_of("inspect");
    let problems = r["problems"].to_string();
    assert!(problems.contains("no embedded manifest"), "{problems}");
    assert!(problems.contains("wasi:sockets"), "{problems}");
    assert!(!r["imports"]["refused"].as_array().unwrap().is_empty());

    inspect(&t, &[&t.p("missing.wasm")])
        .assert_code(2)
        .assert_stderr("missing.wasm");
}

#[test]
fn inspect_old_new_shows_what_a_reviewer_must_look_at_again() {
    let t = Tree::new();
    let old = fix("config-set");
    let same = inspect(&t, &[old.to_str().unwrap(), old.to_str().unwrap()]);
    same.assert_code(0);
    assert!(same.stdout.contains("the same binary"), "{}", same.stdout);

    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("fixes/config-set/manifest.toml");
    let mut text = std::fs::read_to_string(manifest).unwrap();
    text = text.replace("version = \"0.1.0\"", "version = \"0.2.0\"");
    text = text.replace(
        "read-write = [\"${file:dir}\"]",
        "read-write = [\"${file:dir}\"]\nread-only = [\"/etc/app\"]",
    );
    text.push_str(
        "\n[[param]]\nname = \"backup\"\ndescription = \"keep a copy\"\ndefault = \"yes\"\n",
    );
    t.write("new.toml", &text);
    let new = t.p("new.wasm");
    t.defops()
        .args(&["embed", old.to_str().unwrap(), &t.p("new.toml"), "-o", &new])
        .output()
        .assert_code(0);
    let out = inspect(&t, &[old.to_str().unwrap(), &new]);
    out.assert_code(1);
    for line in [
        "~ version: \"0.1.0\" -> \"0.2.0\"",
        "+ read-only: /etc/app",
        "+ params: backup (default \"yes\")",
    ] {
        assert!(out.stdout.contains(line), "{line:?} in\n{}", out.stdout);
    }
    let json = inspect(&t, &[old.to_str().unwrap(), &new, "--json"]);
    let d = json.summary_of("inspect-diff");
    assert_eq!(d["same_binary"], false);
    assert_eq!(d["changes"].as_array().unwrap().len(), 3, "{d}");
}

#[test]
fn grants_beyond_the_manifest_are_refused_naming_the_difference() {
    let t = Tree::new();
    t.write("grant/sub/app.conf", "max_conn = 1\n");
    let before = t.snapshot("");
    let file = t.p("grant/sub/app.conf");
    // config-set declares read-write on the file's directory: grant/sub.
    let wide = t.set_max_conn(&file, "5", &[]);
    wide.assert_code(3).assert_stderr(&format!(
        "--allow {} is not within what the manifest declares read-write ({})",
        t.p("grant"),
        t.p("grant/sub")
    ));
    let ro = t.set_max_conn(
        &t.p("grant/sub/app.conf"),
        "5",
        &["--allow-ro", &t.p("ro"), "--dry-run"],
    );
    ro.assert_code(3).assert_stderr("--allow-ro");
    let glob = format!("{}/*.log", t.p("ro"));
    let logs = t.set_max_conn(&file, "5", &["--allow-log", &glob, "--dry-run"]);
    logs.assert_code(3).assert_stderr(&format!(
        "--allow-log {glob} is not within the logs the manifest declares (nothing)"
    ));
    assert_eq!(t.snapshot(""), before);
    // Exactly what it declares: fine.
    t.run_in(
        "grant/sub",
        &fix("config-set"),
        &[
            "-p",
            &format!("file={file}"),
            "-p",
            "key=max_conn",
            "-p",
            "value=5",
        ],
    )
    .assert_code(0);
    assert_eq!(t.read("grant/sub/app.conf"), "max_conn = 5\n");
}

/// A reviewer's key pair made by ssh-keygen: (private key path, public key
/// line).
fn keypair(t: &Tree, name: &str, kind: &str) -> (String, String) {
    let key = t.p(name);
    let mut cmd = Command::new("ssh-keygen");
    cmd.args(["-q", "-t", kind, "-N", "", "-C", name, "-f", &key]);
    if kind == "ecdsa" {
        cmd.args(["-b", "256"]);
    }
    assert!(cmd.status().unwrap().success());
    let public = std::fs::read_to_string(format!("{key}.pub")).unwrap();
    (key, public.trim().to_string())
}

fn ssh_sign(key: &str, namespace: &str, file: &str) {
    let _ = std::fs::remove_file(format!("{file}.sig"));
    let ok = Command::new("ssh-keygen")
        .args(["-q", "-Y", "sign", "-f", key, "-n", namespace, file])
        .status()
        .unwrap()
        .success();
    assert!(ok, "ssh-keygen -Y sign");
}

fn ssh_verify(signers: &str, who: &str, sig: &str, file: &str) -> bool {
    Command::new("ssh-keygen")
        .args([
            "-Y",
            "verify",
            "-f",
            signers,
            "-I",
            who,
            "-n",
            "defops-wasm",
            "-s",
            sig,
        ])
        .stdin(std::fs::File::open(file).unwrap())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap()
        .success()
}

struct Approved {
    t: Tree,
    fix: String,
    signers: String,
}

impl Approved {
    fn run(&self, extra: &[&str]) -> Out {
        let mut args = vec![
            "-p",
            "key=max_conn",
            "-p",
            "value=9",
            "--require-approval",
            "--allowed-signers",
            &self.signers,
        ];
        let file = format!("file={}", self.t.p("grant/app.conf"));
        args.extend_from_slice(&["-p", &file]);
        args.extend_from_slice(extra);
        self.t.run(Path::new(&self.fix), &args)
    }
}

fn approved_setup(kind: &str, signer_line_options: &str) -> (Approved, String) {
    let t = Tree::new();
    t.write("grant/app.conf", "max_conn = 1\n");
    let fix_path = t.p("config-set.wasm");
    std::fs::copy(fix("config-set"), &fix_path).unwrap();
    let (key, public) = keypair(&t, "alice", kind);
    t.write(
        "allowed_signers",
        &format!("# reviewers\nalice@example.com {signer_line_options}{public}\n"),
    );
    let signers = t.p("allowed_signers");
    (
        Approved {
            t,
            fix: fix_path,
            signers,
        },
        key,
    )
}

#[test]
fn an_approved_fix_runs_and_the_signer_is_journaled() {
    for kind in ["ed25519", "ecdsa", "rsa"] {
        let (a, key) = approved_setup(kind, "");
        // ed25519 through `approve`, the others through ssh-keygen itself.
        if kind == "ed25519" {
            let out =
                a.t.defops()
                    .args(&["approve", &a.fix, "--key", &key])
                    .output();
            out.assert_code(0);
            assert!(out.stdout.contains("approved"), "{}", out.stdout);
            // The fix named as every command names it.
            let id = format!(
                "approved: {}.sig signs sha256:{}",
                a.fix,
                sha256sum(Path::new(&a.fix))
            );
            assert!(out.stdout.contains(&id), "{id} in {}", out.stdout);
        } else {
            ssh_sign(&key, "defops-wasm", &a.fix);
        }
        let sig = format!("{}.sig", a.fix);
        assert!(
            ssh_verify(&a.signers, "alice@example.com", &sig, &a.fix),
            "{kind}: ssh-keygen -Y verify"
        );
        let out = a.run(&[]);
        out.assert_code(0);
        let run_id = out.summary()["run_id"].as_str().unwrap().to_string();
        let show =
            a.t.defops()
                .args(&["journal", "show", &run_id, "--json"])
                .output();
        let header: Value = show.lines().remove(0);
        assert_eq!(header["approval"]["signer"], "alice@example.com", "{kind}");
        assert!(
            header["approval"]["key"]
                .as_str()
                .unwrap()
                .starts_with("SHA256:"),
            "{header}"
        );
        assert_eq!(header["fix"]["manifest"]["name"], "config-set");
        assert_eq!(header["fix"]["sha256"], sha256sum(Path::new(&a.fix)));
        assert_eq!(a.t.read("grant/app.conf"), "max_conn = 9\n");
    }
}

#[test]
fn unapproved_fixes_are_refused_with_the_reason() {
    let (a, key) = approved_setup("ed25519", "");
    let before = a.t.snapshot("grant");
    // No signature: refused before the fix is compiled.
    a.run(&[])
        .assert_code(3)
        .assert_stderr("no approval")
        .assert_stderr("defops-wasm approve");
    assert!(!a.t.path("state/cache").exists());
    // Dry-runs never need one.
    a.run(&["--dry-run"]).assert_code(0);
    // Another key, not in allowed_signers.
    let (mallory, _) = keypair(&a.t, "mallory", "ed25519");
    ssh_sign(&mallory, "defops-wasm", &a.fix);
    a.run(&[])
        .assert_code(3)
        .assert_stderr("is not in the allowed signers file");
    // The right key, the wrong namespace (a git commit signature, say).
    ssh_sign(&key, "git", &a.fix);
    a.run(&[]).assert_code(3).assert_stderr("namespace \"git\"");
    // Signed, then one byte of the component changed (in the manifest's
    // description, so it still loads).
    ssh_sign(&key, "defops-wasm", &a.fix);
    a.run(&["--dry-run"]).assert_code(0);
    let mut bytes = std::fs::read(&a.fix).unwrap();
    let at = bytes
        .windows(4)
        .rposition(|w| w == b"Set ")
        .expect("the description is in the binary");
    bytes[at] = b's';
    std::fs::write(&a.fix, &bytes).unwrap();
    a.run(&[])
        .assert_code(3)
        .assert_stderr("the .wasm changed after it was signed");
    assert!(!ssh_verify(
        &a.signers,
        "alice@example.com",
        &format!("{}.sig", a.fix),
        &a.fix
    ));
    // Without a signers file: a usage error.
    a.t.set_max_conn(&a.t.p("grant/app.conf"), "9", &["--require-approval"])
        .assert_code(2)
        .assert_stderr("--allowed-signers");
    assert_eq!(a.t.snapshot("grant"), before);
}

#[test]
fn an_expired_or_namespace_limited_key_does_not_approve() {
    let (a, key) = approved_setup("ed25519", "valid-before=\"20200101Z\" ");
    ssh_sign(&key, "defops-wasm", &a.fix);
    a.run(&[]).assert_code(3).assert_stderr("expired");
    let (b, key) = approved_setup("ed25519", "namespaces=\"git\" ");
    ssh_sign(&key, "defops-wasm", &b.fix);
    b.run(&[])
        .assert_code(3)
        .assert_stderr("may not sign in the namespace");
}

#[test]
fn the_configuration_can_require_approval_for_every_real_run() {
    let (a, key) = approved_setup("ed25519", "");
    let config = a.t.config(
        "approval.toml",
        &format!(
            "[dry-run-first]\nrequired = false\n[approval]\nrequired = true\nallowed-signers = \"{}\"\n",
            a.signers
        ),
    );
    let file = format!("file={}", a.t.p("grant/app.conf"));
    let args = [
        "-p",
        &file,
        "-p",
        "key=max_conn",
        "-p",
        "value=3",
        "--config",
        &config,
    ];
    a.t.run(Path::new(&a.fix), &args)
        .assert_code(3)
        .assert_stderr("no approval");
    ssh_sign(&key, "defops-wasm", &a.fix);
    a.t.run(Path::new(&a.fix), &args).assert_code(0);
    assert_eq!(a.t.read("grant/app.conf"), "max_conn = 3\n");
}

#[test]
fn fips_mode_uses_sha256_for_every_digest_and_the_chain() {
    let t = Tree::new();
    t.write("grant/app.conf", "max_conn = 1\n");
    let before = t.snapshot("grant");
    let config = t.config(
        "fips.toml",
        "fips = true\nfips-accept-unvalidated = true\n[dry-run-first]\nrequired = false\n",
    );
    let out = t.set_max_conn(&t.p("grant/app.conf"), "2", &["--config", &config]);
    out.assert_code(0);
    assert_eq!(out.summary_of("start")["hash_alg"], "sha256");
    assert_eq!(
        out.summary_of("start")["digest"],
        sha256sum(&fix("config-set"))
    );
    let journal = out.summary()["journal"].as_str().unwrap().to_string();
    let text = std::fs::read_to_string(&journal).unwrap();
    // Every line's hash is the SHA-256 of its body, computed here.
    let mut prev = "0".repeat(64);
    for line in text.lines() {
        let body = format!("{}}}", &line[..line.len() - 75]);
        let hash = &line[line.len() - 66..line.len() - 2];
        let path = t.path("body");
        std::fs::write(&path, &body).unwrap();
        assert_eq!(sha256sum(&path), hash, "{line}");
        let record: Value = serde_json::from_str(line).unwrap();
        assert_eq!(record["prev"], prev.as_str());
        prev = hash.to_string();
    }
    let header: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(header["hash_alg"], "sha256");
    // The before-image is named by its SHA-256.
    for e in std::fs::read_dir(t.path("state/objects")).unwrap() {
        let p = e.unwrap().path();
        assert_eq!(sha256sum(&p), p.file_name().unwrap().to_str().unwrap());
    }
    let run_id = out.summary()["run_id"].as_str().unwrap().to_string();
    t.defops()
        .args(&["journal", "verify", &run_id])
        .output()
        .assert_code(0);
    // Tampering is caught the same way.
    let copy = t.p("state/tampered.jsonl");
    std::fs::write(&copy, text.replacen("max_conn = 2", "max_conn = 3", 1)).unwrap();
    let bad = t.defops().args(&["journal", "verify", &copy]).output();
    bad.assert_code(3);
    // Rollback follows the journal's algorithm, whatever the configuration.
    let back = t.defops().args(&["rollback", &run_id, "--json"]).output();
    back.assert_code(0);
    assert_eq!(t.snapshot("grant"), before);
    let rb = back.summary()["journal"].as_str().unwrap().to_string();
    let rb_header: Value =
        serde_json::from_str(std::fs::read_to_string(rb).unwrap().lines().next().unwrap()).unwrap();
    assert_eq!(rb_header["hash_alg"], "sha256");
    // And the default stays blake3.
    let plain = t.set_max_conn(&t.p("grant/app.conf"), "2", &["--dry-run"]);
    assert_eq!(plain.summary_of("start")["hash_alg"], "blake3");
}

/// ssh-keygen refuses an allowed_signers line that repeats an option (it
/// cannot know which one counts); so does the runner, naming the line, and
/// the run changes nothing.
#[test]
fn a_signer_line_with_a_repeated_option_is_refused_as_ssh_keygen_does() {
    for options in [
        "namespaces=\"git\",namespaces=\"defops-wasm\" ",
        "valid-after=\"20200101Z\",valid-after=\"20100101Z\" ",
        "valid-before=\"20990101Z\",valid-before=\"20980101Z\" ",
    ] {
        let (a, key) = approved_setup("ed25519", options);
        ssh_sign(&key, "defops-wasm", &a.fix);
        let sig = format!("{}.sig", a.fix);
        assert!(
            !ssh_verify(&a.signers, "alice@example.com", &sig, &a.fix),
            "{options}: ssh-keygen accepted the line"
        );
        let before = a.t.snapshot("grant");
        a.run(&[])
            .assert_code(2)
            .assert_stderr("line 2")
            .assert_stderr("given twice");
        assert_eq!(a.t.snapshot("grant"), before, "{options}");
        // The same line with the option once verifies for both.
        let once = options.split(',').next().unwrap().to_string() + " ";
        let (b, key) = approved_setup("ed25519", once.trim_start());
        ssh_sign(&key, "defops-wasm", &b.fix);
        let sig = format!("{}.sig", b.fix);
        let keygen = ssh_verify(&b.signers, "alice@example.com", &sig, &b.fix);
        let ours = b.run(&[]).code == 0;
        assert_eq!(keygen, ours, "{once}: ssh-keygen and the runner disagree");
    }
}
