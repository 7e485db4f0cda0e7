//! `[[dkim]]`: the keys Keel signs outgoing mail with.
//!
//! ```toml
//! [[dkim]]
//! domain = "acme.example"   # signs mail whose From domain is this or a subdomain of it
//! selector = "s1"           # published at s1._domainkey.acme.example
//! key = "keys/acme.pem"     # unencrypted PKCS#8 PEM, RSA 2048-4096 bits or Ed25519
//! ```
//!
//! Keys are checked here, not only at start-up, because a bad key found by `keel serve` would
//! otherwise stop the daemon with nothing pointing at the line to fix: each key file is read and
//! parsed exactly as the signer will (`keel_dkim::check_key_file`), and a problem is reported
//! at that entry's `key`. The daemon loads them again at start-up, so a file changed in between
//! still stops it with a clear error.
//!
//! **Relative key paths are relative to the config file's directory** (unlike `spool.dir` and
//! `log.dir`, which follow the daemon's working directory): a key usually sits next to the
//! config (`/etc/keel/keys/...`), and the daemon's working directory is whatever the service
//! manager chose. Text given to [`Config::parse`](crate::Config::parse) has no directory, so
//! there they are relative to the working directory.

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use keel_dkim::{DkimError, DkimKeyConfig};
use serde::Deserialize;
use toml::Spanned;
use toml::de::DeValue;

use crate::location::{KeyIndex, Reporter};
use crate::validate::Validator;

/// One `[[dkim]]` as written. Every key is optional here so that a missing one is reported by
/// validation, at the table's header, along with everything else.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(crate) struct RawDkim {
    pub(crate) domain: Option<Spanned<String>>,
    pub(crate) selector: Option<Spanned<String>>,
    pub(crate) key: Option<Spanned<String>>,
}

/// A `[[dkim]]` table with where it is.
#[derive(Debug)]
pub(crate) struct RawDkimEntry {
    pub(crate) index: usize,
    pub(crate) header: Range<usize>,
    pub(crate) dkim: RawDkim,
}

/// `dkim` must be an array of tables (`[[dkim]]`); each is checked on its own so every bad
/// entry is reported.
pub(crate) fn entries(
    value: Spanned<DeValue<'_>>,
    index: &KeyIndex,
    reporter: &mut Reporter<'_>,
) -> Vec<RawDkimEntry> {
    let span = value.span();
    match value.into_inner() {
        DeValue::Array(array) => array
            .into_iter()
            .enumerate()
            .filter_map(|(i, element)| {
                let header = element.span();
                let dkim =
                    crate::load::deserialize_collecting::<RawDkim>(element, index, reporter)?;
                Some(RawDkimEntry {
                    index: i,
                    header,
                    dkim,
                })
            })
            .collect(),
        DeValue::Table(_) => {
            reporter.error(
                span,
                "dkim",
                "DKIM keys are an array of tables: write [[dkim]], not [dkim]",
            );
            Vec::new()
        }
        other => {
            let found = other.type_str();
            reporter.error(
                span,
                "dkim",
                format!("expected an array of tables ([[dkim]]), found {found}"),
            );
            Vec::new()
        }
    }
}

impl Validator<'_, '_> {
    /// Every `[[dkim]]` entry: names normalised as the signer will see them, (domain,
    /// selector) pairs unique, key files resolved against `config_dir` and loadable.
    pub(crate) fn dkim(
        &mut self,
        raw: &[RawDkimEntry],
        config_dir: Option<&Path>,
    ) -> Vec<DkimKeyConfig> {
        // (domain, selector) → line of its first entry, for the duplicate message.
        let mut first_line: HashMap<(String, String), usize> = HashMap::new();
        let mut keys = Vec::new();
        for entry in raw {
            let prefix = format!("dkim[{}]", entry.index);
            let d = &entry.dkim;
            let mut missing = Vec::new();
            if d.domain.is_none() {
                missing.push("`domain` (the From domain to sign for)");
            }
            if d.selector.is_none() {
                missing.push("`selector` (the name under _domainkey)");
            }
            if d.key.is_none() {
                missing.push("`key` (the PKCS#8 PEM private key file)");
            }
            if !missing.is_empty() {
                self.error(
                    entry.header.clone(),
                    &prefix,
                    format!("missing {}", missing.join(", ")),
                );
            }
            let domain = d.domain.as_ref().and_then(|text| {
                self.parse(text, &format!("{prefix}.domain"), |t| {
                    keel_dkim::normalize_domain(t).map_err(crate::InvalidValue)
                })
            });
            let selector = d.selector.as_ref().and_then(|text| {
                self.parse(text, &format!("{prefix}.selector"), |t| {
                    keel_dkim::normalize_selector(t).map_err(crate::InvalidValue)
                })
            });
            let key_path = d.key.as_ref().and_then(|text| {
                let key = format!("{prefix}.key");
                let path = resolve(text.get_ref(), config_dir);
                match keel_dkim::check_key_file(&path) {
                    Ok(_) => Some(path),
                    Err(e) => {
                        self.error(text.span(), &key, key_message(text.get_ref(), &path, &e));
                        None
                    }
                }
            });
            let (Some(domain), Some(selector), Some(key_path)) = (domain, selector, key_path)
            else {
                continue;
            };
            let pair = (domain.clone(), selector.clone());
            if let Some(line) = first_line.get(&pair) {
                let span = d
                    .selector
                    .as_ref()
                    .map_or(entry.header.clone(), Spanned::span);
                self.error(
                    span,
                    &format!("{prefix}.selector"),
                    format!(
                        "selector {selector:?} of domain {domain:?} is already configured at line \
                         {line}; use a different selector for a second key"
                    ),
                );
                continue;
            }
            first_line.insert(pair, self.line_of(entry.header.start));
            keys.push(DkimKeyConfig {
                domain,
                selector,
                key_path,
            });
        }
        keys
    }
}

/// A key path as the daemon will open it.
fn resolve(written: &str, config_dir: Option<&Path>) -> PathBuf {
    let path = Path::new(written);
    match config_dir {
        Some(dir) if path.is_relative() => dir.join(path),
        _ => path.to_path_buf(),
    }
}

/// What is wrong with a key, naming the resolved file when it differs from what was written
/// (so "cannot read" points at the file actually tried).
fn key_message(written: &str, resolved: &Path, e: &DkimError) -> String {
    let what = match e {
        DkimError::Key { problem, .. } => problem.to_string(),
        other => other.to_string(),
    };
    if Path::new(written) == resolved {
        format!("unusable key {written:?}: {what}")
    } else {
        format!(
            "unusable key {written:?} (resolved to {:?}): {what}",
            resolved.display().to_string()
        )
    }
}

#[cfg(test)]
mod tests;
