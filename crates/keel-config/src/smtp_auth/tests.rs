//! The TLS and AUTH keys of `[smtp]`: values, defaults, and each error with its line, column
//! and key.

use std::path::PathBuf;

use argon2::password_hash::PasswordHasher as _;
use argon2::{Algorithm, Argon2, Params, Version};

use crate::{Config, ConfigError, TlsFiles};

/// A real argon2id PHC string (tiny parameters: validation never runs the hash).
fn phc(password: &str) -> String {
    let params = Params::new(8, 1, 1, None).expect("params");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_with_salt(password.as_bytes(), b"0123456789abcdef")
        .expect("hash")
        .to_string()
}

/// A directory with `cert.pem` and `key.pem` (rcgen, self-signed) and `junk.pem`.
struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new() -> Files {
        let dir = tempfile::tempdir().expect("tempdir");
        let cert = rcgen::generate_simple_self_signed(vec!["mx.test".to_string()]).expect("cert");
        std::fs::write(dir.path().join("cert.pem"), cert.cert.pem()).expect("write");
        std::fs::write(dir.path().join("key.pem"), cert.signing_key.serialize_pem())
            .expect("write");
        std::fs::write(dir.path().join("junk.pem"), "not pem at all\n").expect("write");
        Files { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}

fn parse(text: &str) -> Result<Config, Vec<ConfigError>> {
    Config::parse(text, "keel.toml").map_err(|e| e.0)
}

fn parse_ok(text: &str) -> Config {
    parse(text).unwrap_or_else(|e| panic!("unexpected errors: {e:#?}"))
}

/// The one error in `text`, as (line, column, key, message).
fn only_error(text: &str) -> (usize, usize, String, String) {
    let errors = parse(text).expect_err("expected errors");
    assert_eq!(errors.len(), 1, "expected one error, got: {errors:#?}");
    let e = &errors[0];
    (e.line, e.column, e.key.clone(), e.message.clone())
}

#[test]
fn defaults() {
    let c = Config::default();
    assert_eq!(c.smtp.tls, None);
    assert!(c.smtp.tls_listen.is_empty());
    assert!(c.smtp.users.is_empty());
    assert!(!c.smtp.auth_plaintext_loopback);
    assert_eq!(c.smtp.max_auth_failures, 5);
    assert_eq!(c.smtp.max_connections_per_ip, 50);
}

#[test]
fn tls_users_and_limits_parse() {
    let f = Files::new();
    let text = format!(
        "[smtp]\ntls_cert = \"{}\"\ntls_key = \"{}\"\ntls_listen = [\"127.0.0.1:4650\"]\n\
         max_auth_failures = 3\nmax_connections_per_ip = 7\n\n\
         [[smtp.user]]\nname = \"campaigns\"\npassword_hash = \"{}\"\ntenant = \"acme\"\n\n\
         [[smtp.user]]\nname = \"alerts\"\npassword_hash = \"{}\"\n",
        f.path("cert.pem"),
        f.path("key.pem"),
        phc("one"),
        phc("two"),
    );
    let c = parse_ok(&text);
    assert_eq!(
        c.smtp.tls,
        Some(TlsFiles {
            cert: PathBuf::from(f.path("cert.pem")),
            key: PathBuf::from(f.path("key.pem")),
        })
    );
    assert_eq!(c.smtp.tls_listen, vec!["127.0.0.1:4650".parse().unwrap()]);
    assert_eq!(c.smtp.max_auth_failures, 3);
    assert_eq!(c.smtp.max_connections_per_ip, 7);
    let users: Vec<(&str, Option<&str>)> = c
        .smtp
        .users
        .iter()
        .map(|u| (u.name.as_str(), u.tenant.as_deref()))
        .collect();
    assert_eq!(users, [("campaigns", Some("acme")), ("alerts", None)]);
    assert_eq!(c.smtp.users[0].password_hash, phc("one"));
    // The hash stays out of debug output.
    assert!(!format!("{:?}", c.smtp.users[0]).contains("argon2"));
}

#[test]
fn plaintext_loopback_alone_allows_users() {
    let c = parse_ok(&format!(
        "[smtp]\nauth_plaintext_loopback = true\n[[smtp.user]]\nname = \"u\"\npassword_hash = \"{}\"\n",
        phc("pw")
    ));
    assert!(c.smtp.auth_plaintext_loopback);
    assert_eq!(c.smtp.users.len(), 1);
    assert_eq!(c.smtp.tls, None);
}

#[test]
fn cert_without_key_and_key_without_cert() {
    let f = Files::new();
    let (line, column, key, message) =
        only_error(&format!("[smtp]\ntls_cert = \"{}\"\n", f.path("cert.pem")));
    assert_eq!((line, column, key.as_str()), (2, 12, "smtp.tls_cert"));
    assert_eq!(
        message,
        "`tls_cert` needs `tls_key` (the certificate's private key, PEM)"
    );
    let (line, _, key, message) =
        only_error(&format!("[smtp]\n\ntls_key = \"{}\"\n", f.path("key.pem")));
    assert_eq!((line, key.as_str()), (3, "smtp.tls_key"));
    assert!(
        message.starts_with("`tls_key` needs `tls_cert`"),
        "{message}"
    );
}

#[test]
fn unreadable_or_wrong_pem_files() {
    let f = Files::new();
    let missing = f.path("missing.pem");
    let (line, column, key, message) = only_error(&format!(
        "[smtp]\ntls_cert = \"{missing}\"\ntls_key = \"{}\"\n",
        f.path("key.pem")
    ));
    assert_eq!((line, column, key.as_str()), (2, 12, "smtp.tls_cert"));
    assert!(
        message.starts_with(&format!("cannot read {missing:?}: ")),
        "{message}"
    );
    // A key where the certificate should be, and junk where the key should be.
    let errors = parse(&format!(
        "[smtp]\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
        f.path("key.pem"),
        f.path("junk.pem")
    ))
    .expect_err("errors");
    let got: Vec<(usize, &str)> = errors.iter().map(|e| (e.line, e.key.as_str())).collect();
    assert_eq!(got, [(2, "smtp.tls_cert"), (3, "smtp.tls_key")]);
    assert!(
        errors[0]
            .message
            .starts_with("no certificate (-----BEGIN CERTIFICATE-----) in"),
        "{}",
        errors[0].message
    );
    assert!(
        errors[1].message.starts_with("no usable private key"),
        "{}",
        errors[1].message
    );
}

#[test]
fn tls_listen_needs_tls_and_does_not_clash() {
    let (line, column, key, message) = only_error("[smtp]\ntls_listen = [\"127.0.0.1:4650\"]\n");
    assert_eq!((line, column, key.as_str()), (2, 14, "smtp.tls_listen"));
    assert_eq!(
        message,
        "implicit-TLS listeners need a certificate: set `tls_cert` and `tls_key`"
    );
    let f = Files::new();
    let (line, _, key, message) = only_error(&format!(
        "[smtp]\nlisten = \"127.0.0.1:2525\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\ntls_listen = \"127.0.0.1:2525\"\n",
        f.path("cert.pem"),
        f.path("key.pem")
    ));
    assert_eq!((line, key.as_str()), (5, "smtp.tls_listen"));
    assert_eq!(
        message,
        "address 127.0.0.1:2525 is already used by smtp.listen"
    );
}

#[test]
fn users_without_any_way_to_authenticate() {
    let (line, column, key, message) = only_error(&format!(
        "[smtp]\nlisten = \"127.0.0.1:2525\"\n\n[[smtp.user]]\nname = \"u\"\npassword_hash = \"{}\"\n",
        phc("pw")
    ));
    assert_eq!((line, column, key.as_str()), (4, 1, "smtp.user[0]"));
    assert!(
        message.starts_with("users are configured but AUTH is never offered"),
        "{message}"
    );
}

const LOOPBACK: &str = "[smtp]\nauth_plaintext_loopback = true\n";

#[test]
fn bad_password_hashes() {
    for (hash, start) in [
        ("hunter2", "not a PHC password hash"),
        (
            "$argon2id$v=19$m=19456",
            "the password hash has no salt or no hash value",
        ),
        (
            "$pbkdf2-sha256$i=1000$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g",
            "unsupported password hash algorithm \"pbkdf2-sha256\"",
        ),
        (
            "$argon2id$v=19$m=1,t=1,p=1$MDEyMzQ1Njc4OWFiY2RlZg$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g",
            "invalid argon2 parameters",
        ),
    ] {
        let text = format!("{LOOPBACK}[[smtp.user]]\nname = \"u\"\npassword_hash = \"{hash}\"\n");
        let (line, column, key, message) = only_error(&text);
        assert_eq!(
            (line, column, key.as_str()),
            (5, 17, "smtp.user[0].password_hash"),
            "{hash}"
        );
        assert!(message.starts_with(start), "{hash}: {message}");
        assert!(
            message.ends_with("generate one with `keel passwd`"),
            "{message}"
        );
    }
}

#[test]
fn duplicate_and_empty_user_names() {
    let pw = phc("pw");
    let text = format!(
        "{LOOPBACK}[[smtp.user]]\nname = \"u\"\npassword_hash = \"{pw}\"\n\
         [[smtp.user]]\nname = \"u\"\npassword_hash = \"{pw}\"\n\
         [[smtp.user]]\nname = \"\"\npassword_hash = \"{pw}\"\ntenant = \"a\\u0007\"\n"
    );
    let errors = parse(&text).expect_err("errors");
    let got: Vec<(usize, usize, &str, &str)> = errors
        .iter()
        .map(|e| (e.line, e.column, e.key.as_str(), e.message.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (
                7,
                8,
                "smtp.user[1].name",
                "duplicate user \"u\" (first defined at line 4)"
            ),
            (
                10,
                8,
                "smtp.user[2].name",
                "the user name must not be empty"
            ),
            (
                12,
                10,
                "smtp.user[2].tenant",
                "the tenant \"a\\u{7}\" contains control characters"
            ),
        ]
    );
}

#[test]
fn user_missing_and_unknown_keys() {
    let (line, column, key, message) =
        only_error(&format!("{LOOPBACK}\n[[smtp.user]]\nname = \"u\"\n"));
    assert_eq!((line, column, key.as_str()), (4, 1, "smtp.user[0]"));
    assert!(
        message.starts_with("missing key `password_hash`"),
        "{message}"
    );
    let (line, column, key, message) = only_error(&format!(
        "{LOOPBACK}[[smtp.user]]\nname = \"u\"\npassword_hash = \"{}\"\npassword = \"x\"\n",
        phc("pw")
    ));
    assert_eq!(
        (line, column, key.as_str()),
        (6, 1, "smtp.user[0].password")
    );
    assert!(message.starts_with("unknown key `password`"), "{message}");
}

#[test]
fn limits_must_be_positive() {
    let errors =
        parse("[smtp]\nmax_auth_failures = 0\nmax_connections_per_ip = -3\n").expect_err("errors");
    let got: Vec<(usize, &str, &str)> = errors
        .iter()
        .map(|e| (e.line, e.key.as_str(), e.message.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (2, "smtp.max_auth_failures", "must be at least 1, got 0"),
            (
                3,
                "smtp.max_connections_per_ip",
                "must be at least 1, got -3"
            ),
        ]
    );
    let (_, _, key, message) = only_error("[smtp]\nauth_plaintext_loopback = \"yes\"\n");
    assert_eq!(key, "smtp.auth_plaintext_loopback");
    assert!(
        message.starts_with("invalid type: string \"yes\""),
        "{message}"
    );
}

#[test]
fn check_password_hash_is_usable_alone() {
    assert!(crate::check_password_hash(&phc("pw")).is_ok());
    assert!(crate::check_password_hash("").is_err());
}
