//! Reviewer approval: an SSH signature over the `.wasm` file in the
//! namespace `defops-wasm`, the scheme git uses for signed commits. A
//! reviewer signs with `ssh-keygen -Y sign -f KEY -n defops-wasm fix.wasm`;
//! the runner verifies in-process against an `allowed_signers` file (git's
//! format, see ssh-keygen(1) "ALLOWED SIGNERS"), and the same `.sig`
//! verifies with `ssh-keygen -Y verify`.
//!
//! `ssh-key` parses the armored signature and the keys. The check itself
//! is the build's crypto provider's (`crate::crypto`): in the FIPS build
//! the message's hash and the signature go through AWS-LC's FIPS module
//! (`approval/aws_lc.rs`). In FIPS mode, and always in the FIPS build, a
//! key the module does not approve (RSA under 2048 bits, DSA, security
//! keys) is refused, naming its algorithm and what to sign with instead.

#[cfg(feature = "fips")]
mod aws_lc;

use ssh_key::public::KeyData;
use ssh_key::{HashAlg, PublicKey, SshSig};

/// The signature namespace: a signature made for anything else (git
/// commits, files) never approves a fix.
pub const NAMESPACE: &str = "defops-wasm";

/// One line of an allowed_signers file.
#[derive(Debug, Clone)]
pub struct Signer {
    pub principals: Vec<String>,
    pub namespaces: Option<Vec<String>>,
    /// Seconds since the epoch.
    pub valid_after: Option<i64>,
    pub valid_before: Option<i64>,
    pub key: PublicKey,
    pub line: usize,
}

/// Who approved, as recorded in the journal.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Approval {
    pub signer: String,
    pub key: String,
    pub algorithm: String,
    pub namespace: &'static str,
}

/// Why a signature does not approve a fix.
#[derive(Debug, thiserror::Error)]
pub enum ApprovalError {
    #[error("{0} is not an SSH signature (expected -----BEGIN SSH SIGNATURE-----): {1}")]
    NotASignature(String, String),
    #[error(
        "the signature is for the namespace {found:?}, not {NAMESPACE:?}; sign with `ssh-keygen -Y sign -n {NAMESPACE}`"
    )]
    Namespace { found: String },
    #[error("the signing key {0} is not in the allowed signers file")]
    UnknownKey(String),
    #[error(
        "the signature does not match the fix: the .wasm changed after it was signed (or the signature belongs to another file)"
    )]
    Mismatch,
    #[error(
        "the signing key {key} ({principal}) may not sign in the namespace {NAMESPACE:?} (allowed_signers line {line})"
    )]
    NamespaceNotAllowed {
        key: String,
        principal: String,
        line: usize,
    },
    #[error(
        "the signing key {key} is {algorithm}, which FIPS mode does not approve for signatures; the reviewer signs again with an ECDSA P-256 or P-384, Ed25519, or RSA (2048 bits or more) key"
    )]
    NotApproved { key: String, algorithm: String },
    #[error("the signing key {key} ({principal}) is {why} (allowed_signers line {line})")]
    Expired {
        key: String,
        principal: String,
        why: String,
        line: usize,
    },
}

/// Splits a line into words, keeping double-quoted parts together.
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            c if c.is_whitespace() && !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Splits `a,b="x,y",c` at the commas outside quotes.
fn options(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in s.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    out.push(cur);
    out
}

/// `YYYYMMDD[HHMM[SS]][Z]`: local time unless it ends in `Z`.
fn parse_time(s: &str) -> Result<i64, String> {
    let (digits, utc) = match s.strip_suffix(['Z', 'z']) {
        Some(d) => (d, true),
        None => (s, false),
    };
    let bad = || format!("{s:?} is not a time like 20261231 or 202612311800Z");
    if !digits.chars().all(|c| c.is_ascii_digit()) || ![8, 12, 14].contains(&digits.len()) {
        return Err(bad());
    }
    let n = |r: std::ops::Range<usize>| digits.get(r).map_or(Ok(0), |d| d.parse::<i64>());
    let (y, mo, d) = (
        n(0..4).map_err(|_| bad())?,
        n(4..6).map_err(|_| bad())?,
        n(6..8).map_err(|_| bad())?,
    );
    let (h, mi, sec) = (
        n(8..10).map_err(|_| bad())?,
        n(10..12).map_err(|_| bad())?,
        n(12..14).map_err(|_| bad())?,
    );
    let dt =
        jiff::civil::DateTime::new(y as i16, mo as i8, d as i8, h as i8, mi as i8, sec as i8, 0)
            .map_err(|_| bad())?;
    let tz = match utc {
        true => jiff::tz::TimeZone::UTC,
        false => jiff::tz::TimeZone::system(),
    };
    dt.to_zoned(tz)
        .map(|z| z.timestamp().as_second())
        .map_err(|_| bad())
}

/// Parses an allowed_signers file. Lines with `cert-authority` are
/// refused: certificates are not supported.
pub fn parse_allowed_signers(text: &str) -> Result<Vec<Signer>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let w = words(line);
        let fail = |m: String| format!("line {n}: {m}");
        if w.len() < 3 {
            return Err(fail("expected PRINCIPALS [OPTIONS] KEYTYPE KEY".into()));
        }
        let principals: Vec<String> = w[0].split(',').map(str::to_string).collect();
        let (opts, key_at) = match w[1].starts_with("ssh-") || w[1].starts_with("ecdsa-") {
            true => (None, 1),
            false => (Some(w[1].as_str()), 2),
        };
        let key_text = w[key_at..].join(" ");
        let key = PublicKey::from_openssh(&key_text)
            .map_err(|e| fail(format!("not a public key ({e})")))?;
        let mut signer = Signer {
            principals,
            namespaces: None,
            valid_after: None,
            valid_before: None,
            key,
            line: n,
        };
        let mut seen: Vec<String> = Vec::new();
        for opt in opts.map(options).unwrap_or_default() {
            let (k, v) = opt.split_once('=').unwrap_or((opt.as_str(), ""));
            let k = k.to_ascii_lowercase();
            // As ssh-keygen: an option given twice makes the line invalid
            // (which of the two would count is not for us to guess).
            if seen.contains(&k) {
                return Err(fail(format!(
                    "the option {k:?} is given twice; give it once (ssh-keygen rejects this line too)"
                )));
            }
            seen.push(k.clone());
            match k.as_str() {
                "namespaces" => {
                    signer.namespaces = Some(v.split(',').map(str::to_string).collect())
                }
                "valid-after" => signer.valid_after = Some(parse_time(v).map_err(fail)?),
                "valid-before" => signer.valid_before = Some(parse_time(v).map_err(fail)?),
                "cert-authority" => {
                    return Err(fail(
                        "cert-authority (SSH certificates) is not supported; list the reviewer's key".into(),
                    ));
                }
                other => return Err(fail(format!("unknown option {other:?}"))),
            }
        }
        out.push(signer);
    }
    Ok(out)
}

/// The SHA256 fingerprint of a key, as ssh-keygen prints it: the SHA-256
/// of the key's wire form, hashed by the build's crypto provider (the FIPS
/// module in the FIPS build), shown in ssh-keygen's form by `ssh-key`.
pub fn fingerprint(key: &PublicKey) -> String {
    // Encoding a parsed key does not fail; an empty one would not match.
    let wire = key.to_bytes().unwrap_or_default();
    let digest = crate::crypto::sha(crate::crypto::Sha::Sha256, &wire);
    ssh_key::Fingerprint::Sha256(digest.try_into().unwrap_or([0; 32])).to_string()
}

/// Checks that `signature` (the text of a `.sig` file named `sig_name`) is
/// a valid signature of `wasm` by an allowed signer, at time `now`.
pub fn verify(
    wasm: &[u8],
    signature: &str,
    sig_name: &str,
    signers: &[Signer],
    now: i64,
) -> Result<Approval, ApprovalError> {
    let sig = SshSig::from_pem(signature.trim())
        .map_err(|e| ApprovalError::NotASignature(sig_name.to_string(), e.to_string()))?;
    if sig.namespace() != NAMESPACE {
        return Err(ApprovalError::Namespace {
            found: sig.namespace().to_string(),
        });
    }
    let key = PublicKey::from(sig.public_key().clone());
    let fp = fingerprint(&key);
    let matching: Vec<&Signer> = signers
        .iter()
        .filter(|s| s.key.key_data() == key.key_data())
        .collect();
    if matching.is_empty() {
        return Err(ApprovalError::UnknownKey(fp));
    }
    if crate::crypto::fips_mode() || crate::crypto::VALIDATED {
        approved_in_fips_mode(&key, &sig).map_err(|algorithm| ApprovalError::NotApproved {
            key: fp.clone(),
            algorithm,
        })?;
    }
    check_signature(&key, &sig, wasm)?;
    let mut last_error = None;
    for s in matching {
        let principal = s.principals.join(",");
        if let Some(ns) = &s.namespaces
            && !ns.iter().any(|n| n == NAMESPACE)
        {
            last_error = Some(ApprovalError::NamespaceNotAllowed {
                key: fp.clone(),
                principal,
                line: s.line,
            });
            continue;
        }
        let why = match (s.valid_after, s.valid_before) {
            (Some(a), _) if now < a => Some(format!("not valid before {}", crate::run::rfc3339(a))),
            (_, Some(b)) if now >= b => Some(format!(
                "expired: valid only before {}",
                crate::run::rfc3339(b)
            )),
            _ => None,
        };
        if let Some(why) = why {
            last_error = Some(ApprovalError::Expired {
                key: fp.clone(),
                principal,
                why,
                line: s.line,
            });
            continue;
        }
        return Ok(Approval {
            signer: principal,
            key: fp,
            algorithm: key.algorithm().to_string(),
            namespace: NAMESPACE,
        });
    }
    Err(last_error.expect("at least one matching signer"))
}

/// The signature check, by the build's provider.
fn check_signature(key: &PublicKey, sig: &SshSig, wasm: &[u8]) -> Result<(), ApprovalError> {
    #[cfg(feature = "fips")]
    {
        aws_lc::verify(key.key_data(), sig, wasm).map_err(|_| ApprovalError::Mismatch)
    }
    #[cfg(not(feature = "fips"))]
    {
        key.verify(NAMESPACE, wasm, sig)
            .map_err(|_| ApprovalError::Mismatch)
    }
}

/// Whether the FIPS module approves `key` and the signature's algorithms
/// (FIPS 186-5: ECDSA on P-256, P-384, P-521; EdDSA on Ed25519; RSA with
/// PKCS#1 v1.5 and a modulus of 2048 bits or more; SHA-256 or SHA-512
/// for the message); if not, the algorithm as a person names it.
fn approved_in_fips_mode(key: &PublicKey, sig: &SshSig) -> Result<(), String> {
    let sig_alg = sig.signature().algorithm();
    match key.key_data() {
        KeyData::Ed25519(_) | KeyData::Ecdsa(_) => {}
        KeyData::Rsa(rsa) => {
            let bits = rsa_bits(rsa.n.as_positive_bytes().unwrap_or_default());
            if bits < 2048 {
                return Err(format!("RSA with a {bits}-bit modulus (under 2048 bits)"));
            }
            if !matches!(sig_alg, ssh_key::Algorithm::Rsa { hash: Some(_) }) {
                return Err(format!("RSA signed with {} (SHA-1)", sig_alg.as_str()));
            }
        }
        KeyData::Dsa(_) => return Err("DSA (ssh-dss)".into()),
        KeyData::SkEcdsaSha2NistP256(_) | KeyData::SkEd25519(_) => {
            return Err(format!("a security key ({})", key.algorithm().as_str()));
        }
        other => return Err(other.algorithm().as_str().to_string()),
    }
    match sig.hash_alg() {
        HashAlg::Sha256 | HashAlg::Sha512 => Ok(()),
        other => Err(format!("a message hashed with {}", other.as_str())),
    }
}

/// The size of an RSA modulus in bits, from its big-endian bytes.
fn rsa_bits(n: &[u8]) -> usize {
    let n = match n.iter().position(|b| *b != 0) {
        Some(i) => &n[i..],
        None => return 0,
    };
    n.len() * 8 - n[0].leading_zeros() as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_are_ssh_keygens() {
        let key = PublicKey::from_openssh(KEY).unwrap();
        assert_eq!(
            fingerprint(&key),
            key.fingerprint(HashAlg::Sha256).to_string()
        );
        assert!(fingerprint(&key).starts_with("SHA256:"));
    }

    #[test]
    fn rsa_sizes_in_bits() {
        assert_eq!(rsa_bits(&[]), 0);
        assert_eq!(rsa_bits(&[0, 0x80, 0]), 16);
        assert_eq!(rsa_bits(&[0x01; 128]), 1017);
        assert_eq!(rsa_bits(&[0xff; 256]), 2048);
    }

    const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILM+rvN+ot98qgEN796jTiQfZfG1KaT0PtFDJ/XFSqti user@example.com";

    #[test]
    fn allowed_signers_lines() {
        let text = format!(
            "# reviewers\nalice@example.com {KEY}\nbob,carol namespaces=\"git,defops-wasm\",valid-before=\"20300101Z\" {KEY}\n"
        );
        let s = parse_allowed_signers(&text).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].principals, vec!["alice@example.com"]);
        assert_eq!(s[1].principals, vec!["bob", "carol"]);
        assert_eq!(
            s[1].namespaces.as_deref(),
            Some(&["git".to_string(), "defops-wasm".to_string()][..])
        );
        assert_eq!(s[1].valid_before, Some(1_893_456_000));
        assert_eq!(s[1].line, 3);
        let bad = parse_allowed_signers("alice ssh-ed25519 AAAAnotakey\n").unwrap_err();
        assert!(bad.starts_with("line 1: not a public key"), "{bad}");
        let ca = parse_allowed_signers(&format!("*@corp cert-authority {KEY}")).unwrap_err();
        assert!(ca.contains("cert-authority"), "{ca}");
        let opt = parse_allowed_signers(&format!("a valid-after=\"tomorrow\" {KEY}")).unwrap_err();
        assert!(opt.contains("tomorrow"), "{opt}");
    }

    #[test]
    fn a_repeated_option_is_refused_with_its_line() {
        for opts in [
            "namespaces=\"git\",namespaces=\"defops-wasm\"",
            "valid-after=\"20200101\",valid-after=\"20300101\"",
            "valid-before=\"20300101\",VALID-BEFORE=\"20200101\"",
        ] {
            let text = format!("# reviewers\nalice {KEY}\nbob {opts} {KEY}\n");
            let e = parse_allowed_signers(&text).unwrap_err();
            assert!(e.starts_with("line 3: "), "{opts}: {e}");
            assert!(e.contains("given twice"), "{opts}: {e}");
        }
    }
}
