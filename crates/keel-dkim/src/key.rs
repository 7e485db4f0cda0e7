//! Loading DKIM private keys: one unencrypted PKCS#8 PEM file per key, RSA or Ed25519.
//!
//! The key type is read from the PKCS#8 algorithm identifier rather than guessed by trial
//! parsing, so an operator who points at an EC or Ed448 key is told its type instead of a
//! generic "malformed key". RSA keys are size-checked before ring sees them, so the error names
//! the actual bit count; ring then does the real (validating) parse and keeps the key — no other
//! crate ever holds RSA private-key material for signing.
//!
//! Cost: one file read and one key parse per configured key, at start-up only.

use std::path::Path;

use mail_auth::common::crypto::{DkimKey, Ed25519Key, RsaKey, Sha256};
use rsa::pkcs1::{RsaPrivateKey, UintRef};
use rsa::pkcs8::{ObjectIdentifier, PrivateKeyInfoRef};
use rustls_pki_types::pem::SectionKind;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::error::{DkimError, KeyProblem};

/// rsaEncryption (RFC 8017).
const OID_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
/// id-Ed25519 (RFC 8410).
const OID_ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");

/// The smallest RSA modulus we sign with (RFC 8301 makes 1024 the floor; 2048 is what receivers
/// such as Gmail and Microsoft expect today).
pub(crate) const RSA_MIN_BITS: usize = 2048;
/// ring's limit for RSA private keys.
pub(crate) const RSA_MAX_BITS: usize = 4096;

/// The algorithm family of a loaded key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    /// RSA with the modulus size in bits; signs as `rsa-sha256`.
    Rsa { bits: usize },
    /// Ed25519; signs as `ed25519-sha256` (RFC 8463).
    Ed25519,
}

/// A private key ready for signing, and what kind it is.
pub(crate) struct LoadedKey {
    pub(crate) key: DkimKey,
    pub(crate) key_type: KeyType,
}

/// Reads and checks the key file at `path` without keeping the key: what `keel check-config`
/// and the configuration loader use to report a bad key at its `[[dkim]]` entry. Accepts
/// exactly what [`crate::Signers::load`] accepts.
pub fn check_key_file(path: &Path) -> Result<KeyType, DkimError> {
    load_key_file(path).map(|loaded| loaded.key_type)
}

/// Reads and parses the key file at `path`; errors name the file.
pub(crate) fn load_key_file(path: &Path) -> Result<LoadedKey, DkimError> {
    let wrap = |problem| DkimError::Key {
        path: path.to_path_buf(),
        problem,
    };
    let pem = std::fs::read(path).map_err(|e| wrap(KeyProblem::Unreadable(e)))?;
    parse_pem_key(&pem).map_err(wrap)
}

/// Parses a PEM document holding exactly one unencrypted PKCS#8 private key.
pub(crate) fn parse_pem_key(pem: &[u8]) -> Result<LoadedKey, KeyProblem> {
    let der = pkcs8_der_from_pem(pem)?;
    parse_pkcs8(&der)
}

fn pkcs8_der_from_pem(pem: &[u8]) -> Result<Vec<u8>, KeyProblem> {
    let mut reader = pem;
    let mut pkcs8 = Vec::new();
    let mut other_keys: Vec<&'static str> = Vec::new();
    loop {
        match rustls_pki_types::pem::from_buf(&mut reader) {
            Ok(None) => break,
            Ok(Some((SectionKind::PrivateKey, der))) => pkcs8.push(der),
            Ok(Some((SectionKind::RsaPrivateKey, _))) => {
                other_keys.push("a PKCS#1 RSA key, BEGIN RSA PRIVATE KEY")
            }
            Ok(Some((SectionKind::EcPrivateKey, _))) => {
                other_keys.push("a SEC1 EC key, BEGIN EC PRIVATE KEY")
            }
            // Certificates or public keys next to the key are harmless.
            Ok(Some(_)) => {}
            Err(e) => return Err(KeyProblem::NotPem(e.to_string())),
        }
    }
    // The PEM reader skips labels it does not know, such as encrypted PKCS#8.
    let encrypted = contains(pem, b"-----BEGIN ENCRYPTED PRIVATE KEY-----");
    let total = pkcs8.len() + other_keys.len() + usize::from(encrypted);
    if total > 1 {
        return Err(KeyProblem::SeveralKeys(total));
    }
    if let Some(der) = pkcs8.pop() {
        return Ok(der);
    }
    if encrypted {
        return Err(KeyProblem::Encrypted);
    }
    if let Some(found) = other_keys.pop() {
        return Err(KeyProblem::NotPkcs8 { found });
    }
    Err(KeyProblem::NotPem(
        "no \"-----BEGIN PRIVATE KEY-----\" block found".into(),
    ))
}

fn parse_pkcs8(der: &[u8]) -> Result<LoadedKey, KeyProblem> {
    let info = PrivateKeyInfoRef::try_from(der)
        .map_err(|e| KeyProblem::Malformed(format!("not a valid PKCS#8 structure: {e}")))?;
    let oid = info.algorithm.oid;
    if oid == OID_RSA {
        let rsa = RsaPrivateKey::<UintRef<'_>>::try_from(info.private_key)
            .map_err(|e| KeyProblem::Malformed(format!("not a valid RSA private key: {e}")))?;
        let bits = bit_length(rsa.modulus.as_bytes());
        if bits < RSA_MIN_BITS {
            return Err(KeyProblem::RsaTooSmall { bits });
        }
        if bits > RSA_MAX_BITS {
            return Err(KeyProblem::RsaTooLarge { bits });
        }
        let key =
            RsaKey::<Sha256>::from_key_der(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(der)))
                .map_err(|e| KeyProblem::Malformed(format!("RSA key rejected: {e}")))?;
        Ok(LoadedKey {
            key: DkimKey::Rsa(key),
            key_type: KeyType::Rsa { bits },
        })
    } else if oid == OID_ED25519 {
        // "maybe_unchecked" accepts PKCS#8 v1 (no embedded public key) as written by
        // `openssl genpkey -algorithm ed25519`, as well as v2 as written by ring and `keygen`.
        let key = Ed25519Key::from_pkcs8_maybe_unchecked_der(der)
            .map_err(|e| KeyProblem::Malformed(format!("Ed25519 key rejected: {e}")))?;
        Ok(LoadedKey {
            key: DkimKey::Ed25519(key),
            key_type: KeyType::Ed25519,
        })
    } else {
        Err(KeyProblem::UnknownKeyType(describe_oid(&oid)))
    }
}

/// Bit length of a big-endian unsigned integer.
fn bit_length(be: &[u8]) -> usize {
    match be.iter().position(|&b| b != 0) {
        // `top` indexes the first non-zero byte, which `position` just found.
        Some(top) => (be.len() - top) * 8 - be[top].leading_zeros() as usize,
        None => 0,
    }
}

fn describe_oid(oid: &ObjectIdentifier) -> String {
    let name = match oid.to_string().as_str() {
        "1.2.840.10045.2.1" => "EC (ECDSA)",
        "1.3.101.110" => "X25519",
        "1.3.101.111" => "X448",
        "1.3.101.113" => "Ed448",
        "1.2.840.113549.1.1.10" => "RSASSA-PSS",
        "1.2.840.10040.4.1" => "DSA",
        _ => return format!("(algorithm OID {oid})"),
    };
    format!("{name} (algorithm OID {oid})")
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bit_length_counts_from_the_top_bit() {
        assert_eq!(bit_length(&[]), 0);
        assert_eq!(bit_length(&[0, 0]), 0);
        assert_eq!(bit_length(&[1]), 1);
        assert_eq!(bit_length(&[0, 0x80, 0]), 16);
        assert_eq!(bit_length(&[0x7f; 256]), 2047);
        assert_eq!(bit_length(&[0xc0; 256]), 2048);
    }

    #[test]
    fn pem_without_a_key_is_not_pem() {
        let err = parse_pem_key(b"hello").err().map(|e| e.to_string());
        assert!(err.unwrap().contains("not a PEM file"));
    }

    #[test]
    fn encrypted_pkcs8_is_named() {
        let pem =
            b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n";
        assert!(matches!(parse_pem_key(pem), Err(KeyProblem::Encrypted)));
    }

    #[test]
    fn garbage_der_is_malformed() {
        let pem = b"-----BEGIN PRIVATE KEY-----\nAAECAwQF\n-----END PRIVATE KEY-----\n";
        assert!(matches!(parse_pem_key(pem), Err(KeyProblem::Malformed(_))));
    }
}
