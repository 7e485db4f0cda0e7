//! Shared test fixtures: keys made by our own `keygen`, key files in a temp dir, the dkimpy
//! runner (tests/peers/dkim_verify.py at the repository root) and mail-auth's in-process verifier with DNS answered from memory.
#![allow(dead_code)] // each test binary uses a different part

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use keel_dkim::{Algorithm, DkimKeyConfig, GeneratedKey, Signers, keygen};
use mail_auth::common::parse::TxtRecordParser;
use mail_auth::common::verify::DomainKey;
use mail_auth::hickory_resolver::config::{ResolverConfig, ResolverOpts};
use mail_auth::{
    AuthenticatedMessage, DkimResult, MessageAuthenticator, Parameters, ResolverCache, Txt,
};

/// One RSA-2048 and one Ed25519 key per test binary (RSA generation is the slow part).
pub fn rsa_key() -> &'static GeneratedKey {
    static KEY: OnceLock<GeneratedKey> = OnceLock::new();
    KEY.get_or_init(|| keygen(Algorithm::Rsa2048, "acme.example", "rsa1").expect("RSA keygen"))
}

pub fn ed_key() -> &'static GeneratedKey {
    static KEY: OnceLock<GeneratedKey> = OnceLock::new();
    KEY.get_or_init(|| keygen(Algorithm::Ed25519, "ed.example", "ed1").expect("Ed25519 keygen"))
}

/// A DNS record for `selector._domainkey.domain` publishing `key`'s public half.
pub fn record(selector: &str, domain: &str, key: &GeneratedKey) -> (String, String) {
    (
        format!("{selector}._domainkey.{domain}"),
        key.dns_txt.clone(),
    )
}

/// Key files written to a temp dir, the `Signers` loaded from them, and the DNS records
/// that publish their public keys.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub signers: Signers,
    pub records: Vec<(String, String)>,
}

/// `entries`: (domain, selector, key). Writes each key to a file and loads them all.
pub fn fixture(entries: &[(&str, &str, &GeneratedKey)]) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut configs = Vec::new();
    let mut records = Vec::new();
    for (i, (domain, selector, key)) in entries.iter().enumerate() {
        let path = dir.path().join(format!("key{i}.pem"));
        std::fs::write(&path, &key.pem).expect("write key");
        configs.push(DkimKeyConfig {
            domain: domain.to_string(),
            selector: selector.to_string(),
            key_path: path,
        });
        records.push(record(selector, domain, key));
    }
    let signers = Signers::load(&configs).expect("load keys");
    Fixture {
        dir,
        signers,
        records,
    }
}

pub fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".into())
}

fn verify_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/peers/dkim_verify.py")
}

/// Runs dkimpy over `message`. `Ok(())` when every DKIM-Signature verifies, `Err(stderr)` when
/// one does not. Panics if the verifier itself cannot run (dkimpy missing): that must fail the
/// suite, not skip it — scripts/install-test-deps.sh installs it.
pub fn dkimpy(message: &[u8], records: &[(String, String)]) -> Result<(), String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("message.eml");
    std::fs::write(&file, message).expect("write message");
    let output = Command::new(python())
        .arg(verify_script())
        .arg(&file)
        .args(records.iter().map(|(name, txt)| format!("{name}={txt}")))
        .output()
        .expect("run python3 (set PYTHON to override)");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    match output.status.code() {
        Some(0) => Ok(()),
        Some(1) => Err(stderr),
        _ => panic!(
            "dkim_verify.py could not run ({}); run scripts/install-test-deps.sh\n{stderr}",
            output.status
        ),
    }
}

/// A TXT cache that answers from a fixed map, so mail-auth never sends a DNS query.
struct FixedTxt(Mutex<HashMap<Box<str>, Txt>>);

impl ResolverCache<Box<str>, Txt> for FixedTxt {
    fn get<Q>(&self, name: &Q) -> Option<Txt>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.0.lock().ok()?.get(name).cloned()
    }

    fn remove<Q>(&self, name: &Q) -> Option<Txt>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.0.lock().ok()?.remove(name)
    }

    fn insert(&self, key: Box<str>, value: Txt, _valid_until: Instant) {
        if let Ok(mut map) = self.0.lock() {
            map.insert(key, value);
        }
    }
}

/// mail-auth's verdict on every DKIM-Signature of `message`.
pub async fn mail_auth_verify(message: &[u8], records: &[(String, String)]) -> Vec<DkimResult> {
    let mut map = HashMap::new();
    for (name, txt) in records {
        let key = DomainKey::parse(txt.as_bytes()).expect("parse DKIM record");
        let value = Txt::DomainKey(Arc::new(key));
        // mail-auth looks names up fully qualified; store both spellings.
        map.insert(format!("{name}.").into_boxed_str(), value.clone());
        map.insert(name.clone().into_boxed_str(), value);
    }
    let cache = FixedTxt(Mutex::new(map));
    // No name servers at all: a cache miss fails at once instead of reaching the network.
    let authenticator = MessageAuthenticator::new(
        ResolverConfig::from_name_servers(Vec::new()),
        ResolverOpts::default(),
    )
    .expect("resolver");
    let parsed = AuthenticatedMessage::parse(message).expect("parse message");
    authenticator
        .verify_dkim(Parameters::new(&parsed).with_txt_cache(&cache))
        .await
        .iter()
        .map(|o| o.result().clone())
        .collect()
}

/// `header` prepended to `message`, as the daemon will do.
pub fn prepend(header: &str, message: &[u8]) -> Vec<u8> {
    let mut out = header.as_bytes().to_vec();
    out.extend_from_slice(message);
    out
}

/// The value of tag `tag` in a DKIM-Signature field (unfolded, whitespace removed).
pub fn tag(header: &str, tag: &str) -> Option<String> {
    let value = header.split_once(':')?.1;
    let compact: String = value.chars().filter(|c| !c.is_whitespace()).collect();
    compact
        .split(';')
        .find_map(|t| t.strip_prefix(&format!("{tag}=")).map(str::to_string))
}
