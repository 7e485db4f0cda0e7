//! The TLS and authentication keys of `[smtp]`: `tls_cert`/`tls_key`, `tls_listen`'s
//! dependency on them, and the `[[smtp.user]]` list.
//!
//! These are checked harder than most keys because their mistakes otherwise surface late and
//! far away: a missing key file would only fail at start-up, a mistyped password hash would
//! only show as every login of that user failing. So the certificate and key files are read
//! and must hold PEM of the right kind, and every password hash must be an argon2 PHC string
//! whose parameters argon2 accepts. Whether the key matches the certificate is left to the
//! daemon's start-up (it needs a TLS library to tell).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use argon2::password_hash::phc::PasswordHash;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use toml::Spanned;

use crate::error::InvalidValue;
use crate::raw::RawSmtp;
use crate::validate::Validator;

/// One `[[smtp.user]]` as written. Every key is optional here so that a missing one is
/// reported by validation, at the table's header, along with everything else.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(crate) struct RawUser {
    pub(crate) name: Option<Spanned<String>>,
    pub(crate) password_hash: Option<Spanned<String>>,
    pub(crate) tenant: Option<Spanned<String>>,
}

/// `smtp.tls_cert` and `smtp.tls_key`: the server certificate for STARTTLS and the
/// implicit-TLS listeners.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first. Relative paths are relative to the daemon's working
    /// directory, as written.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// One `[[smtp.user]]`: a client that may authenticate with SMTP AUTH.
#[derive(Clone, PartialEq, Eq)]
pub struct SmtpUser {
    /// The user name to give in AUTH (compared exactly).
    pub name: String,
    /// An argon2 PHC string (`$argon2id$v=19$m=...`), as printed by `keel passwd`.
    pub password_hash: String,
    /// The tenant this user's mail belongs to, if any.
    pub tenant: Option<String>,
}

impl std::fmt::Debug for SmtpUser {
    /// The hash stays out of debug output: it is not the password, but it is what an
    /// offline guessing attack needs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpUser")
            .field("name", &self.name)
            .field("password_hash", &"<redacted>")
            .field("tenant", &self.tenant)
            .finish()
    }
}

impl Validator<'_, '_> {
    /// `tls_cert` and `tls_key`: both or neither, each a readable PEM file of its kind.
    pub(crate) fn smtp_tls(&mut self, raw: &RawSmtp) -> Option<TlsFiles> {
        match (&raw.tls_cert, &raw.tls_key) {
            (None, None) => None,
            (Some(cert), None) => {
                self.error(
                    cert.span(),
                    "smtp.tls_cert",
                    "`tls_cert` needs `tls_key` (the certificate's private key, PEM)",
                );
                None
            }
            (None, Some(key)) => {
                self.error(
                    key.span(),
                    "smtp.tls_key",
                    "`tls_key` needs `tls_cert` (the certificate chain, PEM)",
                );
                None
            }
            (Some(cert), Some(key)) => {
                let cert_ok = self
                    .parse(cert, "smtp.tls_cert", |path| {
                        check_cert_file(Path::new(path))
                    })
                    .is_some();
                let key_ok = self
                    .parse(key, "smtp.tls_key", |path| check_key_file(Path::new(path)))
                    .is_some();
                (cert_ok && key_ok).then(|| TlsFiles {
                    cert: PathBuf::from(cert.get_ref()),
                    key: PathBuf::from(key.get_ref()),
                })
            }
        }
    }

    /// An implicit-TLS listener cannot run without a certificate.
    pub(crate) fn smtp_tls_listen_needs_tls(&mut self, raw: &RawSmtp, tls: bool) {
        if let Some(listen) = &raw.tls_listen
            && !tls
            && !crate::raw::items(listen).is_empty()
        {
            self.error(
                listen.span(),
                "smtp.tls_listen",
                "implicit-TLS listeners need a certificate: set `tls_cert` and `tls_key`",
            );
        }
    }

    /// `[[smtp.user]]`: each with a name and a valid hash, names unique. `auth_possible` is
    /// false when AUTH could never be offered (no TLS, no plaintext opt-in): users are then a
    /// mistake worth reporting rather than silently useless.
    pub(crate) fn smtp_users(&mut self, raw: &RawSmtp, auth_possible: bool) -> Vec<SmtpUser> {
        let Some(list) = &raw.user else {
            return Vec::new();
        };
        if let Some(first) = list.first()
            && !auth_possible
        {
            self.error(
                first.span(),
                "smtp.user[0]",
                "users are configured but AUTH is never offered: set `tls_cert` and `tls_key` \
                 (AUTH is offered after STARTTLS) or `auth_plaintext_loopback = true`",
            );
        }
        let mut first_line: HashMap<String, usize> = HashMap::new();
        let mut users = Vec::new();
        for (i, entry) in list.iter().enumerate() {
            let prefix = format!("smtp.user[{i}]");
            let user = entry.get_ref();
            let missing = match (&user.name, &user.password_hash) {
                (None, None) => Some("empty user: `name` and `password_hash` are required"),
                (None, Some(_)) => Some("missing key `name`: the user name given in AUTH"),
                (Some(_), None) => Some(
                    "missing key `password_hash`: an argon2id PHC string, as printed by `keel passwd`",
                ),
                (Some(_), Some(_)) => None,
            };
            if let Some(message) = missing {
                self.error(entry.span(), &prefix, message);
            }
            let name = user.name.as_ref().and_then(|text| {
                let key = format!("{prefix}.name");
                let name = self.parse(text, &key, |n| identity(n, "user name"))?;
                match first_line.get(&name) {
                    Some(line) => {
                        self.error(
                            text.span(),
                            &key,
                            format!("duplicate user {name:?} (first defined at line {line})"),
                        );
                        None
                    }
                    None => {
                        first_line.insert(name.clone(), self.line_of(text.span().start));
                        Some(name)
                    }
                }
            });
            let hash = user.password_hash.as_ref().and_then(|text| {
                self.parse(
                    text,
                    &format!("{prefix}.password_hash"),
                    check_password_hash,
                )
            });
            let tenant = match &user.tenant {
                None => Some(None),
                Some(text) => self
                    .parse(text, &format!("{prefix}.tenant"), |t| identity(t, "tenant"))
                    .map(Some),
            };
            if let (Some(name), Some(password_hash), Some(tenant)) = (name, hash, tenant) {
                users.push(SmtpUser {
                    name,
                    password_hash,
                    tenant,
                });
            }
        }
        users
    }
}

/// A user or tenant name: non-empty, no control characters (it ends up in logs and headers).
fn identity(text: &str, what: &str) -> Result<String, InvalidValue> {
    if text.is_empty() {
        return Err(InvalidValue(format!("the {what} must not be empty")));
    }
    if text.chars().any(char::is_control) {
        return Err(InvalidValue(format!(
            "the {what} {text:?} contains control characters"
        )));
    }
    Ok(text.to_owned())
}

/// Checks that `text` is an argon2 PHC string argon2 can verify against, and returns it.
pub fn check_password_hash(text: &str) -> Result<String, InvalidValue> {
    let hint = "generate one with `keel passwd`";
    let hash = PasswordHash::new(text)
        .map_err(|e| InvalidValue(format!("not a PHC password hash ({e}); {hint}")))?;
    if argon2::Algorithm::try_from(hash.algorithm.as_str()).is_err() {
        return Err(InvalidValue(format!(
            "unsupported password hash algorithm {:?}: expected argon2id (or argon2i/argon2d); {hint}",
            hash.algorithm.as_str()
        )));
    }
    if hash.salt.is_none() || hash.hash.is_none() {
        return Err(InvalidValue(format!(
            "the password hash has no salt or no hash value; {hint}"
        )));
    }
    argon2::Params::try_from(&hash)
        .map_err(|e| InvalidValue(format!("invalid argon2 parameters ({e}); {hint}")))?;
    Ok(text.to_owned())
}

fn read(path: &Path) -> Result<Vec<u8>, InvalidValue> {
    std::fs::read(path).map_err(|e| InvalidValue(format!("cannot read {:?}: {e}", path.display())))
}

fn check_cert_file(path: &Path) -> Result<(), InvalidValue> {
    let pem = read(path)?;
    match CertificateDer::pem_slice_iter(&pem).next() {
        Some(Ok(_)) => Ok(()),
        Some(Err(e)) => Err(InvalidValue(format!(
            "bad PEM in {:?}: {e}",
            path.display()
        ))),
        None => Err(InvalidValue(format!(
            "no certificate (-----BEGIN CERTIFICATE-----) in {:?}",
            path.display()
        ))),
    }
}

fn check_key_file(path: &Path) -> Result<(), InvalidValue> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map(drop).map_err(|e| {
        InvalidValue(format!(
            "no usable private key (PKCS#8, PKCS#1 or SEC1 PEM) in {:?}: {e}",
            path.display()
        ))
    })
}

#[cfg(test)]
mod tests;
