//! Errors of this crate.
//!
//! Two audiences: an operator reading a start-up error (`Key`, `Config`: they name the file or
//! the `[[dkim]]` entry and say what to do), and the daemon deciding what to do with one message
//! (`Message`: the message cannot be signed *safely*, e.g. two From fields; `Sign`: the crypto
//! layer failed). None of them carries key material.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong loading keys, signing or generating keys.
#[derive(Debug, thiserror::Error)]
pub enum DkimError {
    /// A key file could not be used. `path` is as configured, so the operator finds the entry.
    #[error("DKIM key {}: {problem}", path.display())]
    Key {
        path: PathBuf,
        #[source]
        problem: KeyProblem,
    },

    /// A `[[dkim]]` entry (or a `keygen` argument) is not valid.
    #[error("DKIM config: {0}")]
    Config(String),

    /// The message cannot be signed safely; it is the message's fault, not the key's.
    #[error("cannot DKIM-sign message: {0}")]
    Message(#[from] MessageProblem),

    /// The signing library failed (should not happen with a key that loaded).
    #[error("DKIM signing failed: {0}")]
    Sign(String),

    /// Key generation failed (randomness or encoding).
    #[error("DKIM key generation failed: {0}")]
    Keygen(String),
}

/// Why a key file was rejected.
#[derive(Debug, thiserror::Error)]
pub enum KeyProblem {
    #[error("cannot read the file: {0}")]
    Unreadable(#[source] io::Error),

    #[error("not a PEM file: {0}")]
    NotPem(String),

    #[error(
        "not a PKCS#8 key (found {found}); convert it with \
         `openssl pkcs8 -topk8 -nocrypt -in OLD.pem -out NEW.pem`"
    )]
    NotPkcs8 { found: &'static str },

    #[error(
        "the key is encrypted (BEGIN ENCRYPTED PRIVATE KEY); store it unencrypted with \
         `openssl pkcs8 -topk8 -nocrypt -in OLD.pem -out NEW.pem` and protect the file instead"
    )]
    Encrypted,

    #[error("the file holds {0} private keys; put exactly one key in each file")]
    SeveralKeys(usize),

    #[error("RSA key has {bits} bits; DKIM keys must have at least 2048 (RFC 8301)")]
    RsaTooSmall { bits: usize },

    /// ring, our only signer, takes RSA moduli up to 4096 bits.
    #[error("RSA key has {bits} bits; the largest supported is 4096 (2048 is the usual DKIM size)")]
    RsaTooLarge { bits: usize },

    #[error("unsupported key type {0}; use RSA (2048 bits or more) or Ed25519")]
    UnknownKeyType(String),

    #[error("malformed key: {0}")]
    Malformed(String),
}

/// Why a message cannot be signed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MessageProblem {
    #[error("no From header field")]
    NoFrom,

    /// RFC 5322 allows exactly one From field. With two, a verifier and we could disagree on
    /// which one counts, so we refuse rather than sign one domain's mail with another's key.
    #[error("{0} From header fields (RFC 5322 allows exactly one)")]
    SeveralFrom(usize),

    #[error("the From header field has no address with a domain")]
    NoFromAddress,

    /// Mailboxes of different domains in one From field: no single key is right.
    #[error("the From header field names mailboxes in different domains ({0} and {1})")]
    MixedFromDomains(String, String),

    #[error("the From domain {0:?} is not a valid domain name")]
    BadFromDomain(String),
}
