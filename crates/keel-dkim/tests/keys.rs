//! Key loading (errors an operator can act on; keys made by OpenSSL, not only by us) and the
//! choice of key for a From domain.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use keel_dkim::{DkimError, DkimKeyConfig, KeyProblem, KeyType, MessageProblem, Signers};

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn config(domain: &str, selector: &str, key_path: PathBuf) -> DkimKeyConfig {
    DkimKeyConfig {
        domain: domain.into(),
        selector: selector.into(),
        key_path,
    }
}

/// Loads one key file and returns the error, checking that its text names the file.
fn load_error(path: PathBuf) -> DkimError {
    let err = Signers::load(&[config("acme.example", "s1", path.clone())])
        .expect_err("key must be rejected");
    let text = err.to_string();
    assert!(
        text.contains(&path.display().to_string()),
        "error does not name the file: {text}"
    );
    err
}

fn problem(path: PathBuf) -> KeyProblem {
    match load_error(path) {
        DkimError::Key { problem, .. } => problem,
        other => panic!("expected a key error, got {other:?}"),
    }
}

#[test]
fn unreadable_files() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        problem(dir.path().join("missing.pem")),
        KeyProblem::Unreadable(_)
    ));
    assert!(matches!(
        problem(dir.path().to_path_buf()),
        KeyProblem::Unreadable(_)
    ));
    let msg = load_error(dir.path().join("missing.pem")).to_string();
    assert!(msg.contains("cannot read the file"), "{msg}");
}

#[test]
fn not_pem() {
    let dir = tempfile::tempdir().unwrap();
    for (name, content) in [
        ("empty.pem", &b""[..]),
        ("text.pem", b"this is not a key\n"),
        ("der.pem", &[0x30, 0x82, 0x01, 0x00, 0x02][..]),
        (
            "truncated.pem",
            b"-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n",
        ),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        let p = problem(path);
        assert!(matches!(p, KeyProblem::NotPem(_)), "{name}: {p:?}");
    }
}

#[test]
fn not_pkcs8_gives_the_conversion_command() {
    for file in ["rsa-pkcs1.pem", "ec-sec1.pem"] {
        let err = load_error(data(file));
        let text = err.to_string();
        assert!(text.contains("not a PKCS#8 key"), "{text}");
        assert!(text.contains("openssl pkcs8 -topk8 -nocrypt"), "{text}");
    }
    assert!(
        load_error(data("rsa-pkcs1.pem"))
            .to_string()
            .contains("BEGIN RSA PRIVATE KEY")
    );
}

#[test]
fn encrypted_key() {
    assert!(matches!(
        problem(data("encrypted.pem")),
        KeyProblem::Encrypted
    ));
}

#[test]
fn rsa_size_limits() {
    assert!(matches!(
        problem(data("rsa1024.pem")),
        KeyProblem::RsaTooSmall { bits: 1024 }
    ));
    let text = load_error(data("rsa1024.pem")).to_string();
    assert!(
        text.contains("1024 bits") && text.contains("at least 2048"),
        "{text}"
    );
    assert!(matches!(
        problem(data("rsa5120.pem")),
        KeyProblem::RsaTooLarge { bits: 5120 }
    ));
}

#[test]
fn unsupported_key_types_are_named() {
    let ec = problem(data("ec-p256.pem"));
    assert!(
        matches!(&ec, KeyProblem::UnknownKeyType(t) if t.contains("EC")),
        "{ec}"
    );
    let ed448 = problem(data("ed448.pem"));
    assert!(
        matches!(&ed448, KeyProblem::UnknownKeyType(t) if t.contains("Ed448")),
        "{ed448}"
    );
    assert!(
        ed448
            .to_string()
            .contains("use RSA (2048 bits or more) or Ed25519")
    );
}

#[test]
fn one_key_per_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("two.pem");
    let both = format!("{}{}", ed_key().pem, rsa_key().pem);
    std::fs::write(&path, both).unwrap();
    assert!(matches!(problem(path), KeyProblem::SeveralKeys(2)));
}

#[test]
fn bad_config_entries() {
    let key = data("rsa3072.pem");
    for (domain, selector) in [("acme example", "s1"), ("acme.example", "s_1"), ("", "s1")] {
        let err = Signers::load(&[config(domain, selector, key.clone())]).unwrap_err();
        assert!(
            matches!(err, DkimError::Config(_)),
            "{domain:?}/{selector:?}: {err}"
        );
    }
    let err = Signers::load(&[
        config("acme.example", "s1", key.clone()),
        config("ACME.example.", "S1", data("ed25519-openssl.pem")),
    ])
    .unwrap_err();
    assert!(err.to_string().contains("configured twice"), "{err}");
}

/// Keys written by OpenSSL (PKCS#8 v1 Ed25519 without public key, RSA-3072) load, sign, and
/// verify in dkimpy.
#[test]
fn openssl_keys_sign_and_verify() {
    let signers = Signers::load(&[
        config("acme.example", "big", data("rsa3072.pem")),
        config("acme.example", "ed", data("ed25519-openssl.pem")),
    ])
    .unwrap();
    let types: Vec<KeyType> = signers.keys().iter().map(|k| k.key_type).collect();
    assert_eq!(types, [KeyType::Rsa { bits: 3072 }, KeyType::Ed25519]);

    let read = |f: &str| std::fs::read_to_string(data(f)).unwrap().trim().to_string();
    let records = [
        (
            "big._domainkey.acme.example".to_string(),
            format!("v=DKIM1; k=rsa; p={}", read("rsa3072.pub.b64")),
        ),
        (
            "ed._domainkey.acme.example".to_string(),
            format!("v=DKIM1; k=ed25519; p={}", read("ed25519-openssl.pub.b64")),
        ),
    ];
    let message = b"From: a@acme.example\r\nTo: b@example.net\r\nSubject: interop\r\n\r\nhi\r\n";
    let header = signers.sign(message).unwrap().unwrap();
    assert_eq!(header.matches("DKIM-Signature:").count(), 2);
    dkimpy(&prepend(&header, message), &records).expect("dkimpy verifies OpenSSL keys");
}

fn signed_by(signers: &Signers, from: &str) -> Option<(String, String)> {
    let message = format!("From: {from}\r\nSubject: x\r\n\r\nbody\r\n");
    let header = signers.sign(message.as_bytes()).unwrap()?;
    Some((tag(&header, "d").unwrap(), tag(&header, "s").unwrap()))
}

#[test]
fn most_specific_configured_domain_wins() {
    let f = fixture(&[
        ("acme.example", "main", ed_key()),
        ("news.acme.example", "news", ed_key()),
        ("other.example", "o", ed_key()),
    ]);
    let s = &f.signers;
    let pair = |d: &str, sel: &str| Some((d.to_string(), sel.to_string()));
    assert_eq!(signed_by(s, "a@acme.example"), pair("acme.example", "main"));
    assert_eq!(
        signed_by(s, "a@ACME.Example."),
        pair("acme.example", "main")
    );
    assert_eq!(
        signed_by(s, "a@shop.acme.example"),
        pair("acme.example", "main")
    );
    assert_eq!(
        signed_by(s, "a@news.acme.example"),
        pair("news.acme.example", "news")
    );
    assert_eq!(
        signed_by(s, "Name <a@x.y.news.acme.example>"),
        pair("news.acme.example", "news")
    );
    // Label boundaries, not string suffixes.
    assert_eq!(signed_by(s, "a@notacme.example"), None);
    assert_eq!(signed_by(s, "a@acme.example.evil"), None);
    // No key for the From domain at all.
    assert_eq!(signed_by(s, "a@example.net"), None);
    assert_eq!(signed_by(s, "a@example"), None);
}

#[test]
fn idn_domains_meet_in_a_label_form() {
    let f = fixture(&[("bücher.example", "s1", ed_key())]);
    let expected = Some(("xn--bcher-kva.example".to_string(), "s1".to_string()));
    assert_eq!(signed_by(&f.signers, "a@xn--bcher-kva.example"), expected);
    assert_eq!(signed_by(&f.signers, "a@Bücher.example"), expected);
}

#[test]
fn messages_that_cannot_be_signed_safely() {
    let f = fixture(&[("acme.example", "s1", ed_key())]);
    let err = |m: &str| match f.signers.sign(m.as_bytes()) {
        Err(DkimError::Message(p)) => p,
        other => panic!("{m:?}: expected a message error, got {other:?}"),
    };
    assert_eq!(err("Subject: no from\r\n\r\nx\r\n"), MessageProblem::NoFrom);
    assert_eq!(
        err("From: a@acme.example\r\nFrom: b@acme.example\r\n\r\nx\r\n"),
        MessageProblem::SeveralFrom(2)
    );
    assert_eq!(
        err("From: a@acme.example, b@evil.example\r\n\r\nx\r\n"),
        MessageProblem::MixedFromDomains("acme.example".into(), "evil.example".into())
    );
    assert_eq!(
        err("From: nobody\r\n\r\nx\r\n"),
        MessageProblem::NoFromAddress
    );
}

#[test]
fn keys_are_reported_without_secrets() {
    let f = fixture(&[
        ("Acme.Example", "S1", rsa_key()),
        ("acme.example", "e1", ed_key()),
    ]);
    let keys = f.signers.keys();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0].domain, "acme.example");
    assert_eq!(keys[0].selector, "s1");
    assert_eq!(keys[0].key_type, KeyType::Rsa { bits: 2048 });
    assert_eq!(keys[1].key_type, KeyType::Ed25519);
    let debug = format!("{:?}", f.signers);
    assert!(
        debug.contains("acme.example") && !debug.contains("PRIVATE"),
        "{debug}"
    );
}
