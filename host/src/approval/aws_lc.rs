//! SSHSIG verification through AWS-LC's FIPS module (the FIPS build).
//! `ssh-key` has parsed the armored signature and the public key; the
//! hash of the message, the signed blob's hash and the signature check are
//! the module's. The blob is OpenSSH's (PROTOCOL.sshsig):
//!
//! ```text
//! "SSHSIG" || string(namespace) || string(reserved) || string(hash_alg) || string(H(message))
//! ```
//!
//! ECDSA's SSH signature is `mpint r || mpint s`; the module takes the
//! fixed-width `r || s` of the curve's field size.

use aws_lc_rs::signature::{self, UnparsedPublicKey};
use ssh_key::public::KeyData;
use ssh_key::{Algorithm, EcdsaCurve, HashAlg, SshSig};

use crate::crypto::{Sha, sha};

/// Why a signature does not verify (the caller says it to people).
#[derive(Debug)]
pub struct Bad;

/// Checks `sig` over `message` with `key` (the signature's own key, as
/// `ssh-key` parsed it).
pub fn verify(key: &KeyData, sig: &SshSig, message: &[u8]) -> Result<(), Bad> {
    let blob = signed_data(sig, message)?;
    let s = sig.signature();
    let bytes = s.as_bytes();
    let checked = match (key, s.algorithm()) {
        (KeyData::Ed25519(k), Algorithm::Ed25519) => {
            UnparsedPublicKey::new(&signature::ED25519, k.0).verify(&blob, bytes)
        }
        (KeyData::Ecdsa(k), Algorithm::Ecdsa { curve }) if curve == k.curve() => {
            let (alg, width): (&'static signature::EcdsaVerificationAlgorithm, usize) = match curve
            {
                EcdsaCurve::NistP256 => (&signature::ECDSA_P256_SHA256_FIXED, 32),
                EcdsaCurve::NistP384 => (&signature::ECDSA_P384_SHA384_FIXED, 48),
                EcdsaCurve::NistP521 => (&signature::ECDSA_P521_SHA512_FIXED, 66),
            };
            let fixed = fixed_rs(bytes, width)?;
            UnparsedPublicKey::new(alg, k.as_sec1_bytes()).verify(&blob, &fixed)
        }
        (KeyData::Rsa(k), Algorithm::Rsa { hash: Some(hash) }) => {
            let params = match hash {
                HashAlg::Sha256 => &signature::RSA_PKCS1_2048_8192_SHA256,
                HashAlg::Sha512 => &signature::RSA_PKCS1_2048_8192_SHA512,
                _ => return Err(Bad),
            };
            let n = k.n.as_positive_bytes().ok_or(Bad)?;
            let e = k.e.as_positive_bytes().ok_or(Bad)?;
            signature::RsaPublicKeyComponents { n, e }.verify(params, &blob, bytes)
        }
        _ => return Err(Bad),
    };
    checked.map_err(|_| Bad)
}

/// The blob the signer signed, with H(message) from the module.
fn signed_data(sig: &SshSig, message: &[u8]) -> Result<Vec<u8>, Bad> {
    let hash = match sig.hash_alg() {
        HashAlg::Sha256 => sha(Sha::Sha256, message),
        HashAlg::Sha512 => sha(Sha::Sha512, message),
        _ => return Err(Bad),
    };
    let mut out = b"SSHSIG".to_vec();
    for field in [
        sig.namespace().as_bytes(),
        sig.reserved(),
        sig.hash_alg().as_str().as_bytes(),
        &hash,
    ] {
        string(&mut out, field)?;
    }
    Ok(out)
}

/// SSH's `string`: a big-endian u32 length, then the bytes.
fn string(out: &mut Vec<u8>, bytes: &[u8]) -> Result<(), Bad> {
    let len = u32::try_from(bytes.len()).map_err(|_| Bad)?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
    Ok(())
}

/// `mpint r || mpint s` (SSH's ECDSA signature blob) as the fixed-width
/// `r || s`, each left-padded to `width` bytes.
fn fixed_rs(blob: &[u8], width: usize) -> Result<Vec<u8>, Bad> {
    let mut rest = blob;
    let mut out = Vec::with_capacity(2 * width);
    for _ in 0..2 {
        let len = rest
            .get(..4)
            .map(|l| u32::from_be_bytes([l[0], l[1], l[2], l[3]]) as usize)
            .ok_or(Bad)?;
        let value = rest.get(4..4 + len).ok_or(Bad)?;
        rest = &rest[4 + len..];
        // An mpint is positive here: a leading zero only marks the sign.
        let value = match value.iter().position(|b| *b != 0) {
            Some(i) => &value[i..],
            None => &[][..],
        };
        if value.len() > width {
            return Err(Bad);
        }
        out.resize(out.len() + width - value.len(), 0);
        out.extend_from_slice(value);
    }
    if !rest.is_empty() {
        return Err(Bad);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{KeyPair, RsaKeyPair};
    use ssh_key::{Mpint, Signature};

    /// The INTEGERs of a DER SEQUENCE (PKCS#1's RSAPublicKey: n, e).
    fn der_integers(der: &[u8]) -> Vec<Vec<u8>> {
        fn item(b: &[u8]) -> (u8, &[u8], &[u8]) {
            let (tag, first) = (b[0], b[1] as usize);
            let (len, at) = match first < 0x80 {
                true => (first, 2),
                false => {
                    let n = first & 0x7f;
                    let len = b[2..2 + n].iter().fold(0, |a, x| a << 8 | *x as usize);
                    (len, 2 + n)
                }
            };
            (tag, &b[at..at + len], &b[at + len..])
        }
        let (tag, mut body, _) = item(der);
        assert_eq!(tag, 0x30);
        let mut out = Vec::new();
        while !body.is_empty() {
            let (tag, value, rest) = item(body);
            assert_eq!(tag, 0x02);
            out.push(value.to_vec());
            body = rest;
        }
        out
    }

    /// rsa-sha2-256, which ssh-keygen never makes for SSHSIG (it signs
    /// with rsa-sha2-512): a signature the module made over the blob
    /// verifies; another message, or the same bytes claimed as
    /// rsa-sha2-512, do not.
    #[test]
    fn rsa_sha2_256_verifies_and_a_claimed_algorithm_must_be_the_real_one() {
        let pair = RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        let ints = der_integers(pair.public_key().as_ref());
        let key = KeyData::Rsa(ssh_key::public::RsaPublicKey {
            n: Mpint::from_positive_bytes(&ints[0]).unwrap(),
            e: Mpint::from_positive_bytes(&ints[1]).unwrap(),
        });
        let sshsig = |hash: HashAlg, bytes: Vec<u8>| {
            let alg = Algorithm::Rsa { hash: Some(hash) };
            SshSig::new(
                key.clone(),
                "defops-wasm",
                HashAlg::Sha512,
                Signature::new(alg, bytes).unwrap(),
            )
            .unwrap()
        };
        let message = b"the fix's bytes";
        let blob = signed_data(&sshsig(HashAlg::Sha256, vec![0; 256]), message).unwrap();
        let mut sig = vec![0; pair.public_modulus_len()];
        pair.sign(
            &signature::RSA_PKCS1_SHA256,
            &SystemRandom::new(),
            &blob,
            &mut sig,
        )
        .unwrap();
        assert!(verify(&key, &sshsig(HashAlg::Sha256, sig.clone()), message).is_ok());
        assert!(verify(&key, &sshsig(HashAlg::Sha256, sig.clone()), b"another").is_err());
        assert!(verify(&key, &sshsig(HashAlg::Sha512, sig), message).is_err());
    }

    #[test]
    fn mpints_become_fixed_width() {
        // r = 0x00 0x80.. (sign byte), s = 0x01: widths of 3.
        let blob = [0, 0, 0, 3, 0, 0x80, 1, 0, 0, 0, 1, 1];
        assert_eq!(fixed_rs(&blob, 3).unwrap(), vec![0, 0x80, 1, 0, 0, 1]);
        assert!(fixed_rs(&blob, 1).is_err());
        assert!(fixed_rs(&blob[..6], 3).is_err());
        let mut trailing = blob.to_vec();
        trailing.push(0);
        assert!(fixed_rs(&trailing, 3).is_err());
    }
}
