//! FIPS mode and the crypto provider: the configuration's `fips = true` on
//! this build (validated module with `--features fips`, refused without it
//! unless `fips-accept-unvalidated`), the provider in `version --json`, the
//! journal header, `report` and `inspect`, and reviewers' signatures made
//! by `ssh-keygen` with every key type FIPS 186-5 approves (through the
//! module in the FIPS build) and refused with one it does not. Every test
//! here runs in both builds (`scripts/test-fips` runs the FIPS one); what
//! differs between them is asserted by `cfg!(feature = "fips")`.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::util::{Out, Tree, fix};

const FIPS_BUILD: bool = cfg!(feature = "fips");

/// A FIPS-mode configuration this build accepts: the FIPS build needs
/// nothing more; the default one the operator's acceptance.
fn fips_config(t: &Tree) -> String {
    t.config(
        "fips.toml",
        "fips = true\nfips-accept-unvalidated = true\n[dry-run-first]\nrequired = false\n",
    )
}

fn keygen(t: &Tree, name: &str, kind: &str, bits: Option<u32>) -> (String, String) {
    let key = t.p(name);
    let mut cmd = Command::new("ssh-keygen");
    cmd.args(["-q", "-t", kind, "-N", "", "-C", name, "-f", &key]);
    if let Some(b) = bits {
        cmd.args(["-b", &b.to_string()]);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "ssh-keygen -t {kind}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let public = std::fs::read_to_string(format!("{key}.pub")).unwrap();
    (key, public.trim().to_string())
}

fn sign(key: &str, file: &str) {
    let _ = std::fs::remove_file(format!("{file}.sig"));
    let out = Command::new("ssh-keygen")
        .args(["-q", "-Y", "sign", "-f", key, "-n", "defops-wasm", file])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ssh-keygen -Y sign: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A tree with config-set copied in, `app.conf` to change, and one
/// reviewer's key of `kind` in allowed_signers, the fix signed with it.
struct Signed {
    t: Tree,
    fix: String,
    signers: String,
    config: String,
    key: String,
}

impl Signed {
    fn new(kind: &str, bits: Option<u32>) -> Signed {
        let t = Tree::new();
        t.write("grant/app.conf", "max_conn = 1\n");
        let fix_path = t.p("config-set.wasm");
        std::fs::copy(fix("config-set"), &fix_path).unwrap();
        let (key, public) = keygen(&t, "alice", kind, bits);
        t.write("allowed_signers", &format!("alice@example.com {public}\n"));
        sign(&key, &fix_path);
        let signers = t.p("allowed_signers");
        let config = fips_config(&t);
        Signed {
            t,
            fix: fix_path,
            signers,
            config,
            key,
        }
    }

    fn run(&self) -> Out {
        let file = format!("file={}", self.t.p("grant/app.conf"));
        self.t.run(
            Path::new(&self.fix),
            &[
                "-p",
                &file,
                "-p",
                "key=max_conn",
                "-p",
                "value=9",
                "--require-approval",
                "--allowed-signers",
                &self.signers,
                "--config",
                &self.config,
            ],
        )
    }
}

/// The `crypto` object every build writes: provider, version, validated.
fn assert_provider(crypto: &Value, fips_mode: bool) {
    assert_eq!(crypto["fips_module"], FIPS_BUILD, "{crypto}");
    assert!(crypto["validation"].is_string(), "{crypto}");
    assert_eq!(crypto["fips_mode"], fips_mode, "{crypto}");
    let version = crypto["version"].as_str().unwrap_or_default();
    if FIPS_BUILD {
        assert_eq!(crypto["provider"], "aws-lc-rs");
        assert!(version.starts_with("AWS-LC FIPS "), "{crypto}");
        assert!(crypto.get("accepted_unvalidated").is_none(), "{crypto}");
    } else {
        assert_eq!(crypto["provider"], "RustCrypto sha2 + ssh-key");
        assert_eq!(
            crypto["accepted_unvalidated"].as_bool(),
            fips_mode.then_some(true),
            "{crypto}"
        );
    }
}

#[test]
fn fips_version_json_names_the_provider_and_the_mode() {
    let t = Tree::new();
    let out = t.defops().args(&["version", "--json"]).output();
    out.assert_code(0);
    let v: Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(v["type"], "version");
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    assert_provider(&v["crypto"], false);
    // With a FIPS-mode configuration, FIPS mode is on.
    let config = fips_config(&t);
    let out = t
        .defops()
        .args(&["version", "--json", "--config", &config])
        .output();
    out.assert_code(0);
    let v: Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_provider(&v["crypto"], true);
    // For people: the same facts, one per line.
    let text = t.defops().args(&["version", "--config", &config]).output();
    text.assert_code(0);
    assert!(text.stdout.contains("fips mode   yes"), "{}", text.stdout);
    let validated = match FIPS_BUILD {
        true => "fips module yes",
        false => "fips module no",
    };
    assert!(text.stdout.contains(validated), "{}", text.stdout);
    // `--version` is as it was.
    let plain = t.defops().args(&["--version"]).output();
    assert_eq!(
        plain.stdout.trim(),
        format!("defops-wasm {}", env!("CARGO_PKG_VERSION"))
    );
}

/// Without the module, `fips = true` alone is refused before anything is
/// read (exit 2, one line naming both ways out) and changes nothing; the
/// FIPS build runs it.
#[test]
fn fips_config_without_the_module_needs_the_operators_acceptance() {
    let t = Tree::new();
    t.write("grant/app.conf", "max_conn = 1\n");
    let before = t.snapshot("grant");
    let bare = t.config(
        "bare.toml",
        "fips = true\n[dry-run-first]\nrequired = false\n",
    );
    let out = t.set_max_conn(&t.p("grant/app.conf"), "2", &["--config", &bare]);
    if FIPS_BUILD {
        out.assert_code(0);
        let run_id = out.summary()["run_id"].as_str().unwrap().to_string();
        assert_provider(&t.header(&run_id)["crypto"], true);
        return;
    }
    out.assert_code(2)
        .assert_stderr("not built on a validated FIPS module")
        .assert_stderr("--features fips")
        .assert_stderr("fips-accept-unvalidated = true");
    assert_eq!(out.stderr.trim().lines().count(), 1, "{}", out.stderr);
    assert_eq!(t.snapshot("grant"), before);
    assert!(
        !t.path("state/runs").exists() || t.path("state/runs").read_dir().unwrap().count() == 0
    );
    t.defops()
        .args(&["version", "--config", &bare])
        .output()
        .assert_code(2)
        .assert_stderr("fips-accept-unvalidated");
    // Accepted: the run goes ahead and its journal says so.
    let out = t.set_max_conn(&t.p("grant/app.conf"), "2", &["--config", &fips_config(&t)]);
    out.assert_code(0);
    let run_id = out.summary()["run_id"].as_str().unwrap().to_string();
    let header = t.header(&run_id);
    assert_eq!(header["hash_alg"], "sha256");
    assert_provider(&header["crypto"], true);
    // The key means nothing without fips = true: refused, naming its line.
    let stray = t.config("stray.toml", "fips-accept-unvalidated = true\n");
    t.set_max_conn(&t.p("grant/app.conf"), "3", &["--config", &stray])
        .assert_code(2)
        .assert_stderr("stray.toml:1:")
        .assert_stderr("with fips = true");
}

/// The provider is in every run's and rollback's header, and `report` and
/// `inspect` show it.
#[test]
fn fips_provider_is_journaled_and_shown_by_report_and_inspect() {
    let t = Tree::new();
    t.write("grant/app.conf", "max_conn = 1\n");
    let out = t.set_max_conn(&t.p("grant/app.conf"), "2", &["--config", &fips_config(&t)]);
    out.assert_code(0);
    let run_id = out.summary()["run_id"].as_str().unwrap().to_string();
    assert_provider(&t.header(&run_id)["crypto"], true);
    let report = t.defops().args(&["report", &run_id]).output();
    report.assert_code(0);
    let row = report
        .stdout
        .lines()
        .find(|l| l.starts_with("| Crypto |"))
        .unwrap_or_else(|| panic!("no Crypto row: {}", report.stdout))
        .to_string();
    let provider = match FIPS_BUILD {
        true => "aws-lc-rs (AWS-LC FIPS ",
        false => "RustCrypto sha2 + ssh-key (sha2 0.10, ssh-key 0.6)",
    };
    assert!(row.contains(provider), "{row}");
    assert!(row.contains("FIPS mode"), "{row}");
    assert!(row.contains("digests sha256"), "{row}");
    // A rollback (of a SHA-256 journal) records its provider too.
    let back = t.defops().args(&["rollback", &run_id, "--json"]).output();
    back.assert_code(0);
    let rb = back.summary()["journal"].as_str().unwrap().to_string();
    let rb_header: Value =
        serde_json::from_str(std::fs::read_to_string(rb).unwrap().lines().next().unwrap()).unwrap();
    assert_eq!(
        rb_header["crypto"]["provider"],
        t.header(&run_id)["crypto"]["provider"]
    );
    assert_eq!(rb_header["crypto"]["fips_module"], FIPS_BUILD);
    // inspect names who computed the SHA-256 it shows.
    let fix = fix("config-set");
    let inspect = t
        .defops()
        .args(&["inspect", fix.to_str().unwrap(), "--json"])
        .output();
    let v: Value = serde_json::from_str(inspect.stdout.lines().last().unwrap()).unwrap();
    assert_provider(&v["crypto"], false);
    let text = t
        .defops()
        .args(&["inspect", fix.to_str().unwrap()])
        .output();
    assert!(
        text.stdout.contains(&format!("sha256 by {provider}")),
        "{}",
        text.stdout
    );
}

/// Signatures `ssh-keygen` makes with every approved key type verify in
/// FIPS mode (through the module in the FIPS build), the signer is
/// journaled, and a fix changed after signing is refused.
#[test]
fn fips_mode_verifies_ssh_keygen_ecdsa_rsa_and_ed25519_signatures() {
    for (kind, bits, algorithm) in [
        ("ecdsa", Some(256), "ecdsa-sha2-nistp256"),
        ("ecdsa", Some(384), "ecdsa-sha2-nistp384"),
        ("ecdsa", Some(521), "ecdsa-sha2-nistp521"),
        ("rsa", Some(3072), "ssh-rsa"),
        ("rsa", Some(2048), "ssh-rsa"),
        ("ed25519", None, "ssh-ed25519"),
    ] {
        let s = Signed::new(kind, bits);
        let out = s.run();
        out.assert_code(0);
        assert_eq!(
            s.t.read("grant/app.conf"),
            "max_conn = 9\n",
            "{kind} {bits:?}"
        );
        // The message hashed with SHA-256 instead of ssh-keygen's SHA-512.
        s.t.write("grant/app.conf", "max_conn = 1\n");
        std::fs::remove_file(format!("{}.sig", s.fix)).unwrap();
        let signed = Command::new("ssh-keygen")
            .args(["-q", "-Y", "sign", "-O", "hashalg=sha256", "-f", &s.key])
            .args(["-n", "defops-wasm", &s.fix])
            .status()
            .unwrap();
        assert!(signed.success(), "ssh-keygen -Y sign -O hashalg=sha256");
        s.run().assert_code(0);
        assert_eq!(
            s.t.read("grant/app.conf"),
            "max_conn = 9\n",
            "{kind} sha256"
        );
        let run_id = out.summary()["run_id"].as_str().unwrap().to_string();
        let header = s.t.header(&run_id);
        assert_eq!(header["approval"]["signer"], "alice@example.com");
        assert_eq!(
            header["approval"]["algorithm"], algorithm,
            "{kind} {bits:?}"
        );
        // The key's fingerprint (hashed by the provider) is ssh-keygen's.
        let listed = Command::new("ssh-keygen")
            .args(["-l", "-E", "sha256", "-f", &format!("{}.pub", s.key)])
            .output()
            .unwrap();
        let listed = String::from_utf8_lossy(&listed.stdout).to_string();
        assert_eq!(
            header["approval"]["key"].as_str(),
            listed.split_whitespace().nth(1),
            "{listed}"
        );
        assert_eq!(header["hash_alg"], "sha256");
        assert_provider(&header["crypto"], true);
        // The same key's signature of another fix does not approve this one.
        let other = s.t.p("other.wasm");
        std::fs::copy(fix("rename-to-backup"), &other).unwrap();
        sign(&s.key, &other);
        std::fs::copy(format!("{other}.sig"), format!("{}.sig", s.fix)).unwrap();
        let before = s.t.snapshot("grant");
        s.run()
            .assert_code(3)
            .assert_stderr("the signature does not match the fix");
        assert_eq!(s.t.snapshot("grant"), before, "{kind} {bits:?}");
    }
}

/// A key the module does not approve (RSA-1024; DSA where this OpenSSH
/// still makes one) is refused in FIPS mode, naming the algorithm and what
/// to sign with instead (exit 3), and nothing changes; ssh-keygen itself
/// verifies the same signature.
#[test]
fn fips_mode_refuses_rsa_1024_and_dsa_naming_the_algorithm() {
    let dsa = Command::new("ssh-keygen")
        .args(["-q", "-t", "dsa", "-N", "", "-f"])
        .arg(std::env::temp_dir().join(format!("defops-dsa-probe-{}", std::process::id())))
        .output()
        .is_ok_and(|o| o.status.success());
    let _ = std::fs::remove_file(
        std::env::temp_dir().join(format!("defops-dsa-probe-{}", std::process::id())),
    );
    let _ = std::fs::remove_file(
        std::env::temp_dir().join(format!("defops-dsa-probe-{}.pub", std::process::id())),
    );
    let mut cases = vec![("rsa", Some(1024), "RSA with a 1024-bit modulus")];
    match dsa {
        true => cases.push(("dsa", None, "DSA (ssh-dss)")),
        false => eprintln!("this ssh-keygen makes no DSA keys: only RSA-1024 is tried"),
    }
    for (kind, bits, named) in cases {
        let s = Signed::new(kind, bits);
        let keygen_ok = Command::new("ssh-keygen")
            .args([
                "-Y",
                "verify",
                "-f",
                &s.signers,
                "-I",
                "alice@example.com",
                "-n",
                "defops-wasm",
                "-s",
                &format!("{}.sig", s.fix),
            ])
            .stdin(std::fs::File::open(&s.fix).unwrap())
            .output()
            .unwrap()
            .status
            .success();
        assert!(keygen_ok, "ssh-keygen -Y verify of the {kind} signature");
        let before = s.t.snapshot("grant");
        let out = s.run();
        out.assert_code(3)
            .assert_stderr(named)
            .assert_stderr("FIPS mode does not approve")
            .assert_stderr("ECDSA P-256 or P-384, Ed25519, or RSA (2048 bits or more)");
        assert_eq!(out.stderr.trim().lines().count(), 1, "{}", out.stderr);
        assert_eq!(s.t.snapshot("grant"), before, "{kind}");
    }
}

#[test]
fn fips_mode_applies_to_rollbacks_too() {
    let t = Tree::new();
    t.write("grant/app.conf", "max_conn = 1\n");
    // A blake3 run, then a rollback under a FIPS-mode configuration:
    // refused, nothing changed.
    let out = t.set_max_conn(&t.p("grant/app.conf"), "2", &[]);
    out.assert_code(0);
    let blake3_run = out.summary()["run_id"].as_str().unwrap().to_string();
    let fips = fips_config(&t);
    let before = t.snapshot("grant");
    t.defops()
        .args(&["rollback", &blake3_run, "--config", &fips])
        .output()
        .assert_code(2)
        .assert_stderr("rolls back only SHA-256 journals");
    assert_eq!(t.snapshot("grant"), before);
    t.defops()
        .args(&["rollback", &blake3_run])
        .output()
        .assert_code(0);

    // A FIPS run rolled back with `fips = true` but without the acceptance
    // on the default build: refused as a run would be.
    let out = t.set_max_conn(&t.p("grant/app.conf"), "3", &["--config", &fips]);
    out.assert_code(0);
    let fips_run = out.summary()["run_id"].as_str().unwrap().to_string();
    let bare = t.config("bare-fips.toml", "fips = true\n");
    let refused = t
        .defops()
        .args(&["rollback", &fips_run, "--config", &bare])
        .output();
    match FIPS_BUILD {
        true => {
            refused.assert_code(0);
        }
        false => {
            refused
                .assert_code(2)
                .assert_stderr("fips-accept-unvalidated");
            assert_eq!(t.read("grant/app.conf"), "max_conn = 3\n");
            let back = t
                .defops()
                .args(&["rollback", &fips_run, "--config", &fips, "--json"])
                .output();
            back.assert_code(0);
            let rb = back.summary()["journal"].as_str().unwrap().to_string();
            let header: Value =
                serde_json::from_str(std::fs::read_to_string(rb).unwrap().lines().next().unwrap())
                    .unwrap();
            assert_eq!(header["crypto"]["accepted_unvalidated"], true, "{header}");
            assert_eq!(header["crypto"]["fips_mode"], true, "{header}");
        }
    }
    assert_eq!(t.read("grant/app.conf"), "max_conn = 1\n");
}
