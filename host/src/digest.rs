//! The one digest algorithm of a process: blake3 by default, SHA-256 in
//! FIPS mode (`fips = true` in the configuration). It hashes the fix, the
//! journal's chain, the before-images' names and the content digests in
//! recorded states. A journal names its algorithm in its header
//! (`hash_alg`); verifying and rolling back use the one it names. SHA-256
//! comes from the build's crypto provider (`crypto`): AWS-LC's FIPS module
//! in the FIPS build.

use std::sync::OnceLock;

/// A digest algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alg {
    Blake3,
    Sha256,
}

impl Alg {
    pub fn name(self) -> &'static str {
        match self {
            Alg::Blake3 => "blake3",
            Alg::Sha256 => "sha256",
        }
    }

    /// The algorithm a journal header names (`None`: blake3, as before
    /// headers named one).
    pub fn parse(name: Option<&str>) -> Result<Alg, String> {
        match name {
            None | Some("blake3") => Ok(Alg::Blake3),
            Some("sha256") => Ok(Alg::Sha256),
            Some(other) => Err(format!("unknown hash algorithm {other:?}")),
        }
    }

    pub fn hasher(self) -> Hasher {
        match self {
            Alg::Blake3 => Hasher::Blake3(Box::new(blake3::Hasher::new())),
            Alg::Sha256 => Hasher::Sha256(Box::default()),
        }
    }

    /// The digest of `bytes`, lowercase hex (64 characters either way).
    pub fn hex(self, bytes: &[u8]) -> String {
        let mut h = self.hasher();
        h.update(bytes);
        h.hex()
    }

    /// Whether the digest of `parts` (one after the other) is `hex`
    /// (lowercase), without allocating: what a verifier runs per line.
    pub fn matches_hex(self, parts: &[&[u8]], hex: &[u8]) -> bool {
        fn same(digest: &[u8], hex: &[u8]) -> bool {
            const DIGITS: &[u8; 16] = b"0123456789abcdef";
            hex.len() == digest.len() * 2
                && digest.iter().zip(hex.chunks_exact(2)).all(|(b, h)| {
                    h[0] == DIGITS[usize::from(b >> 4)] && h[1] == DIGITS[usize::from(b & 15)]
                })
        }
        match self {
            Alg::Blake3 => {
                let mut h = blake3::Hasher::new();
                for p in parts {
                    h.update(p);
                }
                same(h.finalize().as_bytes(), hex)
            }
            Alg::Sha256 => {
                let mut h = crate::crypto::Sha256Hasher::new();
                for p in parts {
                    h.update(p);
                }
                same(&h.finish(), hex)
            }
        }
    }
}

/// An incremental digest.
pub enum Hasher {
    Blake3(Box<blake3::Hasher>),
    Sha256(Box<crate::crypto::Sha256Hasher>),
}

impl Hasher {
    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Blake3(h) => {
                h.update(bytes);
            }
            Hasher::Sha256(h) => h.update(bytes),
        }
    }

    pub fn hex(self) -> String {
        match self {
            Hasher::Blake3(h) => h.finalize().to_hex().to_string(),
            Hasher::Sha256(h) => {
                let d = h.finish();
                let mut s = String::with_capacity(64);
                for b in d {
                    s.push_str(&format!("{b:02x}"));
                }
                s
            }
        }
    }
}

/// How a fix is named to a person, everywhere (build, embed, approve, run,
/// inspect, status, report, refusals): `sha256:` and the SHA-256 of its
/// bytes in hex. The same in FIPS mode and out of it, and what
/// `sha256sum FIX.wasm` prints.
pub fn fix_id(bytes: &[u8]) -> String {
    fix_id_of(&Alg::Sha256.hex(bytes))
}

/// [`fix_id`] from a SHA-256 already in hex.
pub fn fix_id_of(sha256_hex: &str) -> String {
    format!("sha256:{sha256_hex}")
}

static CURRENT: OnceLock<Alg> = OnceLock::new();

/// Chooses the process's algorithm, once, before anything is hashed.
/// Choosing again the same is fine; choosing another is refused.
pub fn choose(alg: Alg) -> Result<(), String> {
    match CURRENT.get_or_init(|| alg) {
        a if *a == alg => Ok(()),
        a => Err(format!(
            "this process already uses {}, not {}",
            a.name(),
            alg.name()
        )),
    }
}

/// The process's algorithm (blake3 unless chosen otherwise).
pub fn current() -> Alg {
    CURRENT.get().copied().unwrap_or(Alg::Blake3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_answers() {
        assert_eq!(
            Alg::Sha256.hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            Alg::Blake3.hex(b"abc"),
            "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85"
        );
        let mut h = Alg::Sha256.hasher();
        h.update(b"a");
        h.update(b"bc");
        assert_eq!(h.hex(), Alg::Sha256.hex(b"abc"));
    }
}
