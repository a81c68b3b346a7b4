//! Where the cryptography lives: every SHA-256 (and SHA-384/512) and every
//! signature check of the process comes from here. Two providers, chosen
//! when the binary is built:
//!
//! * the default build: RustCrypto's `sha2` for SHA-256 and `ssh-key`
//!   (RustCrypto's `ed25519-dalek`, `p256`/`p384`/`p521`, `rsa`) for SSH
//!   signatures; blake3 for the journal outside FIPS mode (`digest`);
//! * the FIPS build (`--features fips`): `aws-lc-rs` on AWS-LC's FIPS
//!   140-3 module, for every SHA-2 digest and every signature check.
//!   `ssh-key` only parses the armored signature and the public keys.
//!
//! FIPS mode (`fips = true` in the configuration, or a SHA-256 journal
//! being rolled back) is entered once, with [`enter_fips_mode`], before
//! anything else is read: in the FIPS build it checks the module's status
//! first; in the default build it is refused unless the configuration
//! accepts "approved algorithms, unvalidated implementation"
//! (`fips-accept-unvalidated = true`).

use std::sync::OnceLock;

use serde_json::{Value, json};

/// Whether this binary's cryptography is AWS-LC's FIPS module (built in
/// with `--features fips`). Whether that module's version holds a CMVP
/// certificate is [`VALIDATION`]'s to say, not this.
pub const VALIDATED: bool = cfg!(feature = "fips");

/// The module's validation status, as far as this build knows it: AWS-LC
/// FIPS 4.x completed validation testing and was submitted to NIST; the
/// certificate is the CMVP's to list.
pub const VALIDATION: &str = match VALIDATED {
    true => {
        "AWS-LC FIPS 4.x: validation testing completed, submitted to NIST (in process); check the version against the CMVP's lists"
    }
    false => "none: no FIPS module in this build",
};

/// The provider's name, as `version` and journal headers show it.
pub const PROVIDER: &str = match VALIDATED {
    true => "aws-lc-rs",
    false => "RustCrypto sha2 + ssh-key",
};

/// The FIPS mode of this process, once entered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mode {
    /// The operator accepted approved algorithms from an unvalidated
    /// implementation (the default build in FIPS mode).
    pub accepted_unvalidated: bool,
}

static MODE: OnceLock<Mode> = OnceLock::new();

/// Whether FIPS mode is on for this process.
pub fn fips_mode() -> bool {
    MODE.get().is_some()
}

/// Enters FIPS mode, once, before anything is read. In the FIPS build the
/// module's status is checked (its power-on self-tests and integrity test
/// run when it is first used; a failure there aborts the process); in the
/// default build FIPS mode needs `accept_unvalidated`.
pub fn enter_fips_mode(accept_unvalidated: bool) -> Result<(), String> {
    if !VALIDATED && !accept_unvalidated {
        return Err(
            "fips = true, but this defops-wasm is not built on a validated FIPS module: use the FIPS build (`cargo build --release -p defops-host --features fips`), or set fips-accept-unvalidated = true in the configuration to accept approved algorithms from an unvalidated implementation"
                .into(),
        );
    }
    module_status()?;
    let mode = Mode {
        accepted_unvalidated: !VALIDATED,
    };
    MODE.get_or_init(|| mode);
    Ok(())
}

/// The module's status: Ok in the default build (there is no module).
pub fn module_status() -> Result<(), String> {
    #[cfg(feature = "fips")]
    {
        aws_lc_rs::try_fips_mode().map_err(|e| {
            format!(
                "the AWS-LC FIPS module is not in FIPS mode ({e}); nothing was read. This binary cannot run in FIPS mode: rebuild it with --features fips on a supported platform"
            )
        })?;
    }
    Ok(())
}

/// The provider's version: AWS-LC's own (`AWS-LC FIPS 4.2.0`) in the FIPS
/// build; the crates' in the default one.
pub fn version() -> String {
    #[cfg(feature = "fips")]
    {
        format!("AWS-LC FIPS {}", aws_lc_rs::awslc_version())
    }
    #[cfg(not(feature = "fips"))]
    {
        "sha2 0.10, ssh-key 0.6".to_string()
    }
}

/// The `crypto` object of journal headers and `version --json`.
pub fn describe() -> Value {
    let mut v = json!({
        "provider": PROVIDER,
        "version": version(),
        "fips_module": VALIDATED,
        "validation": VALIDATION,
        "fips_mode": fips_mode(),
    });
    #[cfg(feature = "fips")]
    {
        v["fips_module_version"] = json!(aws_lc_rs::fips_version());
    }
    if MODE.get().is_some_and(|m| m.accepted_unvalidated) {
        v["accepted_unvalidated"] = json!(true);
    }
    v
}

/// One line for people: `aws-lc-rs (AWS-LC FIPS 4.2.0), FIPS module
/// (validation in process), FIPS mode`.
pub fn describe_line(crypto: &Value) -> String {
    let s = |k: &str| crypto[k].as_str().unwrap_or("?").to_string();
    let mut line = format!("{} ({})", s("provider"), s("version"));
    // Journals written before `fips_module` said `validated_module`.
    let module = crypto["fips_module"]
        .as_bool()
        .or(crypto["validated_module"].as_bool());
    line.push_str(match module {
        Some(true) => ", FIPS module (validation in process at NIST)",
        _ => ", not a FIPS module",
    });
    line.push_str(match crypto["fips_mode"].as_bool() {
        Some(true) => ", FIPS mode",
        _ => "",
    });
    if crypto["accepted_unvalidated"].as_bool() == Some(true) {
        line.push_str(" (unvalidated implementation accepted by the configuration)");
    }
    line
}

/// A SHA-2 digest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sha {
    Sha256,
    Sha512,
}

/// SHA-256 or SHA-512 of `bytes`, in one go.
pub fn sha(alg: Sha, bytes: &[u8]) -> Vec<u8> {
    let mut h = Sha256Hasher::new_with(alg);
    h.update(bytes);
    h.finish()
}

/// An incremental SHA-2 hasher from the build's provider.
pub struct Sha256Hasher(Inner);

#[cfg(feature = "fips")]
type Inner = aws_lc_rs::digest::Context;

#[cfg(not(feature = "fips"))]
enum Inner {
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

impl Sha256Hasher {
    pub fn new() -> Sha256Hasher {
        Sha256Hasher::new_with(Sha::Sha256)
    }

    fn new_with(alg: Sha) -> Sha256Hasher {
        #[cfg(feature = "fips")]
        {
            Sha256Hasher(aws_lc_rs::digest::Context::new(match alg {
                Sha::Sha256 => &aws_lc_rs::digest::SHA256,
                Sha::Sha512 => &aws_lc_rs::digest::SHA512,
            }))
        }
        #[cfg(not(feature = "fips"))]
        {
            use sha2::Digest;
            Sha256Hasher(match alg {
                Sha::Sha256 => Inner::Sha256(sha2::Sha256::new()),
                Sha::Sha512 => Inner::Sha512(sha2::Sha512::new()),
            })
        }
    }

    pub fn update(&mut self, bytes: &[u8]) {
        #[cfg(feature = "fips")]
        self.0.update(bytes);
        #[cfg(not(feature = "fips"))]
        {
            use sha2::Digest;
            match &mut self.0 {
                Inner::Sha256(h) => h.update(bytes),
                Inner::Sha512(h) => h.update(bytes),
            }
        }
    }

    pub fn finish(self) -> Vec<u8> {
        #[cfg(feature = "fips")]
        {
            self.0.finish().as_ref().to_vec()
        }
        #[cfg(not(feature = "fips"))]
        {
            use sha2::Digest;
            match self.0 {
                Inner::Sha256(h) => h.finalize().to_vec(),
                Inner::Sha512(h) => h.finalize().to_vec(),
            }
        }
    }
}

impl Default for Sha256Hasher {
    fn default() -> Sha256Hasher {
        Sha256Hasher::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn known_answers_from_the_builds_provider() {
        assert_eq!(
            hex(&sha(Sha::Sha256, b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            hex(&sha(Sha::Sha512, b"abc")),
            "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f"
        );
    }

    #[test]
    fn the_provider_names_itself() {
        let d = describe();
        assert_eq!(d["provider"], PROVIDER);
        assert_eq!(d["fips_module"], VALIDATED);
        #[cfg(feature = "fips")]
        assert!(d["version"].as_str().unwrap().starts_with("AWS-LC FIPS "));
    }
}
