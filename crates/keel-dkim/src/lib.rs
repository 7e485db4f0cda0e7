//! DKIM signing for Keel (RFC 6376; Ed25519 per RFC 8463).
//!
//! The daemon loads the `[[dkim]]` keys once into [`Signers`], shares it between tasks, and
//! calls [`Signers::sign`] on each outgoing message; the returned `DKIM-Signature` field(s) are
//! prepended to the message before it is spooled or transmitted. [`keygen`] makes a new key and
//! the DNS record that publishes it.
//!
//! ```toml
//! [[dkim]]
//! domain = "acme.example"   # signs From: acme.example and its subdomains (most specific wins)
//! selector = "s1"
//! key = "keys/acme.pem"     # unencrypted PKCS#8 PEM, RSA 2048-4096 bits or Ed25519
//! ```
//!
//! What is signed: the present ones of [`SIGNED_HEADERS`] (From always), relaxed/relaxed
//! canonicalisation, the whole body (no `l=`), `t=` now, no expiry. Crypto is ring's, through
//! mail-auth; this crate owns key loading, key selection and the message checks around it.
//!
//! ```
//! use keel_dkim::{Algorithm, DkimKeyConfig, Signers, keygen};
//!
//! let key = keygen(Algorithm::Ed25519, "acme.example", "s1")?;
//! let dir = std::env::temp_dir().join(format!("keel-dkim-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir).unwrap();
//! let path = dir.join("acme.pem");
//! std::fs::write(&path, &key.pem).unwrap();
//! // Publish `key.dns_txt` as a TXT record at `key.dns_name` (s1._domainkey.acme.example).
//!
//! let signers = Signers::load(&[DkimKeyConfig {
//!     domain: "acme.example".into(),
//!     selector: "s1".into(),
//!     key_path: path,
//! }])?;
//! let message = b"From: news@acme.example\r\nTo: a@b.example\r\nSubject: hi\r\n\r\nHello\r\n";
//! let header = signers.sign(message)?.expect("acme.example has a key");
//! assert!(header.starts_with("DKIM-Signature: v=1; a=ed25519-sha256; s=s1; d=acme.example;"));
//!
//! // No key for the From domain: nothing to prepend.
//! assert_eq!(signers.sign(b"From: x@other.example\r\n\r\nHi\r\n")?, None);
//! # std::fs::remove_dir_all(&dir).unwrap();
//! # Ok::<(), keel_dkim::DkimError>(())
//! ```
#![forbid(unsafe_code)]

mod domain;
mod error;
mod key;
mod keygen;
mod sign;

pub use error::{DkimError, KeyProblem, MessageProblem};
pub use key::{KeyType, check_key_file};
pub use keygen::{Algorithm, GeneratedKey, keygen};
pub use sign::{DkimKeyConfig, KeyInfo, SIGNED_HEADERS, Signers};

/// Checks a signing domain as [`Signers::load`] does and returns its canonical form (lowercase
/// A-labels, no trailing dot), so a configuration loader can report a bad name at its own key
/// and detect duplicates the way the signer will see them.
pub fn normalize_domain(input: &str) -> Result<String, String> {
    domain::normalize_name(input, "domain")
}

/// Checks a selector as [`Signers::load`] does and returns its canonical form.
pub fn normalize_selector(input: &str) -> Result<String, String> {
    domain::normalize_name(input, "selector")
}
