//! DKIM key generation: a PKCS#8 PEM private key and the DNS TXT record that publishes it.
//!
//! **Ed25519** comes from ring. **RSA** cannot: ring only signs and verifies with RSA. RSA keys
//! are generated with the pure-Rust `rsa` crate (0.10, constant-time crypto-bigint arithmetic),
//! fed by ring's `SystemRandom`, and used for *generation only*: the key is written out as
//! PKCS#8 and every signature is made by ring after loading it back. The RUSTSEC-2023-0071
//! ("Marvin") advisory against `rsa` concerns timing of RSA *decryption* in 0.9; neither
//! decryption nor signing with `rsa` happens here. (mail-auth's own `generate` feature would pull
//! in `rsa` 0.9 and writes PKCS#1, so we do not use it.)
//!
//! Cost: RSA-2048 generation is a random prime search — tens of milliseconds optimised, up to a
//! second unoptimised, varying from run to run. Ed25519 generation is microseconds.

use std::fmt;
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{Ed25519KeyPair, KeyPair};
use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};

use crate::domain::normalize_name;
use crate::error::DkimError;
use crate::key::parse_pem_key;

/// Key type to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// RSA with a 2048-bit modulus: verified by every receiver.
    Rsa2048,
    /// Ed25519 (RFC 8463): small and fast, but not verified everywhere yet; pair it with RSA.
    Ed25519,
}

impl FromStr for Algorithm {
    type Err = DkimError;

    /// Accepts `rsa`, `rsa2048`, `rsa-2048` and `ed25519` (any case), for the CLI.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "rsa" | "rsa2048" | "rsa-2048" => Ok(Algorithm::Rsa2048),
            "ed25519" => Ok(Algorithm::Ed25519),
            _ => Err(DkimError::Config(format!(
                "unknown key algorithm {s:?} (expected rsa or ed25519)"
            ))),
        }
    }
}

/// A new key and how to publish it.
#[derive(Clone)]
pub struct GeneratedKey {
    /// The private key, PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`): save it as the `key` file.
    pub pem: String,
    /// Where the public key goes in DNS, e.g. `s1._domainkey.acme.example` (no trailing dot).
    pub dns_name: String,
    /// The TXT record's value, e.g. `v=DKIM1; k=rsa; p=MIIB...`, as one string. An RSA-2048
    /// record is longer than the 255 octets one DNS character-string can hold: publish it with
    /// [`GeneratedKey::zone_record`], or let the DNS provider's UI split it.
    pub dns_txt: String,
}

impl fmt::Debug for GeneratedKey {
    /// Leaves the private key out, so it cannot end up in a log by accident.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GeneratedKey")
            .field("pem", &"<private key>")
            .field("dns_name", &self.dns_name)
            .field("dns_txt", &self.dns_txt)
            .finish()
    }
}

impl GeneratedKey {
    /// A zone-file line (RFC 1035 master format) for the record, the TXT value split into
    /// quoted character-strings of at most 255 octets:
    /// `s1._domainkey.acme.example. IN TXT ( "v=DKIM1; k=rsa; p=..." "..." )`.
    pub fn zone_record(&self) -> String {
        let chunks: Vec<String> = self
            .dns_txt
            .as_bytes()
            .chunks(255)
            // The value is ASCII (tags and base64), so byte chunks are valid UTF-8.
            .map(|c| format!("\"{}\"", String::from_utf8_lossy(c)))
            .collect();
        format!("{}. IN TXT ( {} )", self.dns_name, chunks.join(" "))
    }
}

/// Generates a key for `domain`/`selector` (both validated and normalised as in
/// [`crate::Signers::load`]). The private key is loaded back through the same path as a
/// configured key before it is returned, so a generated key always loads.
pub fn keygen(
    algorithm: Algorithm,
    domain: &str,
    selector: &str,
) -> Result<GeneratedKey, DkimError> {
    let domain = normalize_name(domain, "domain").map_err(DkimError::Config)?;
    let selector = normalize_name(selector, "selector").map_err(DkimError::Config)?;
    let (pem, dns_txt) = match algorithm {
        Algorithm::Rsa2048 => generate_rsa(2048)?,
        Algorithm::Ed25519 => generate_ed25519()?,
    };
    parse_pem_key(pem.as_bytes())
        .map_err(|e| DkimError::Keygen(format!("generated key does not load: {e}")))?;
    Ok(GeneratedKey {
        pem,
        dns_name: format!("{selector}._domainkey.{domain}"),
        dns_txt,
    })
}

fn generate_rsa(bits: usize) -> Result<(String, String), DkimError> {
    let failed = |what: &str, e: &dyn fmt::Display| DkimError::Keygen(format!("{what}: {e}"));
    let mut rng = RingRng(SystemRandom::new());
    let key = rsa::PrivateKey::new(&mut rng, bits).map_err(|e| failed("RSA", &e))?;
    let pem = key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| failed("PKCS#8 encoding", &e))?;
    // RFC 6376 §3.6.1: for k=rsa, p= is the base64 of the DER SubjectPublicKeyInfo (what
    // `openssl rsa -pubout` prints and every verifier accepts).
    let spki = key
        .to_public_key()
        .to_public_key_der()
        .map_err(|e| failed("public key encoding", &e))?;
    let txt = format!("v=DKIM1; k=rsa; p={}", BASE64.encode(spki.as_bytes()));
    Ok((pem.to_string(), txt))
}

fn generate_ed25519() -> Result<(String, String), DkimError> {
    let rng = SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng)
        .map_err(|e| DkimError::Keygen(format!("Ed25519: {e}")))?;
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
        .map_err(|e| DkimError::Keygen(format!("Ed25519: {e}")))?;
    // RFC 8463 §4.2: for k=ed25519, p= is the base64 of the raw 32-byte public key.
    let txt = format!(
        "v=DKIM1; k=ed25519; p={}",
        BASE64.encode(pair.public_key().as_ref())
    );
    Ok((pem_encode("PRIVATE KEY", pkcs8.as_ref()), txt))
}

/// RFC 7468 textual encoding: base64 in 64-character lines between BEGIN/END labels.
fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = BASE64.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// ring's operating-system RNG behind the `rand_core` traits the `rsa` crate takes, so that all
/// key material in Keel comes from one source.
struct RingRng(SystemRandom);

impl rsa::rand_core::TryRng for RingRng {
    type Error = ring::error::Unspecified;

    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        let mut b = [0u8; 4];
        self.0.fill(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        let mut b = [0u8; 8];
        self.0.fill(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        self.0.fill(dst)
    }
}

impl rsa::rand_core::TryCryptoRng for RingRng {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ed25519_key_and_record() {
        let k = keygen(Algorithm::Ed25519, "Acme.Example.", "S1").unwrap();
        assert_eq!(k.dns_name, "s1._domainkey.acme.example");
        let p = k.dns_txt.strip_prefix("v=DKIM1; k=ed25519; p=").unwrap();
        assert_eq!(BASE64.decode(p).unwrap().len(), 32);
        assert!(k.pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        assert!(!format!("{k:?}").contains("BEGIN"));
    }

    #[test]
    fn zone_record_splits_long_values() {
        let k = GeneratedKey {
            pem: String::new(),
            dns_name: "s1._domainkey.acme.example".into(),
            dns_txt: format!("v=DKIM1; k=rsa; p={}", "A".repeat(392)),
        };
        let z = k.zone_record();
        assert!(z.starts_with("s1._domainkey.acme.example. IN TXT ( \"v=DKIM1; k=rsa; p=AAA"));
        let strings: Vec<&str> = z.split('"').skip(1).step_by(2).collect();
        assert_eq!(strings.len(), 2);
        assert!(strings.iter().all(|s| s.len() <= 255));
        assert_eq!(strings.concat(), k.dns_txt);
    }

    #[test]
    fn bad_names_and_algorithms_are_config_errors() {
        assert!(matches!(
            keygen(Algorithm::Ed25519, "acme example", "s1"),
            Err(DkimError::Config(_))
        ));
        assert!(matches!(
            keygen(Algorithm::Ed25519, "acme.example", "s_1"),
            Err(DkimError::Config(_))
        ));
        assert_eq!("RSA".parse::<Algorithm>().unwrap(), Algorithm::Rsa2048);
        assert_eq!("ed25519".parse::<Algorithm>().unwrap(), Algorithm::Ed25519);
        assert!("dsa".parse::<Algorithm>().is_err());
    }
}
