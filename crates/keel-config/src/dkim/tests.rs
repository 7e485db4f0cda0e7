//! `[[dkim]]`: values, path resolution, and each error with its line, column and key.

use std::path::{Path, PathBuf};

use keel_dkim::{Algorithm, keygen};

use crate::{Config, ConfigError};

/// A config directory holding `keys/ed.pem` (a fresh Ed25519 key) and `junk.pem`.
struct Dir {
    dir: tempfile::TempDir,
}

impl Dir {
    fn new() -> Dir {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("keys")).expect("mkdir");
        let key = keygen(Algorithm::Ed25519, "acme.example", "s1").expect("keygen");
        std::fs::write(dir.path().join("keys/ed.pem"), key.pem).expect("write");
        std::fs::write(dir.path().join("junk.pem"), "not a key\n").expect("write");
        Dir { dir }
    }

    /// Writes `text` as keel.toml in the directory and loads it.
    fn load(&self, text: &str) -> Result<Config, Vec<ConfigError>> {
        let path = self.dir.path().join("keel.toml");
        std::fs::write(&path, text).expect("write config");
        Config::load(&path).map_err(|e| e.0)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

fn rsa1024() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../keel-dkim/tests/data/rsa1024.pem")
        .display()
        .to_string()
}

#[test]
fn relative_key_is_relative_to_the_config_file_and_names_are_normalised() {
    let d = Dir::new();
    let config = d
        .load(
            "[[dkim]]\ndomain = \"Acme.Example.\"\nselector = \"S1\"\nkey = \"keys/ed.pem\"\n\n\
             [[dkim]]\ndomain = \"bücher.example\"\nselector = \"s2\"\nkey = \"keys/ed.pem\"\n",
        )
        .unwrap_or_else(|e| panic!("{e:#?}"));
    assert_eq!(config.dkim.len(), 2);
    assert_eq!(config.dkim[0].domain, "acme.example");
    assert_eq!(config.dkim[0].selector, "s1");
    assert_eq!(config.dkim[0].key_path, d.path("keys/ed.pem"));
    assert_eq!(config.dkim[1].domain, "xn--bcher-kva.example");
}

#[test]
fn absolute_key_path_is_kept_and_default_is_no_keys() {
    let d = Dir::new();
    let abs = d.path("keys/ed.pem");
    let text = format!(
        "[[dkim]]\ndomain = \"a.example\"\nselector = \"s1\"\nkey = \"{}\"\n",
        abs.display()
    );
    let config = Config::parse(&text, "keel.toml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.dkim[0].key_path, abs);
    assert!(Config::default().dkim.is_empty());
    assert!(
        Config::parse("", "keel.toml")
            .expect("empty")
            .dkim
            .is_empty()
    );
}

#[test]
fn each_problem_is_reported_at_its_key() {
    let d = Dir::new();
    let text = format!(
        "[[dkim]]\n\
         domain = \"acme example\"\n\
         selector = \"s1\"\n\
         key = \"keys/ed.pem\"\n\
         \n\
         [[dkim]]\n\
         domain = \"acme.example\"\n\
         selector = \"s_1\"\n\
         key = \"missing.pem\"\n\
         \n\
         [[dkim]]\n\
         domain = \"acme.example\"\n\
         selector = \"s2\"\n\
         key = \"junk.pem\"\n\
         \n\
         [[dkim]]\n\
         domain = \"acme.example\"\n\
         selector = \"s3\"\n\
         key = \"{}\"\n\
         \n\
         [[dkim]]\n\
         selector = \"s4\"\n\
         colour = \"blue\"\n",
        rsa1024()
    );
    let errors = d.load(&text).expect_err("must fail");
    let found: Vec<(usize, usize, &str)> = errors
        .iter()
        .map(|e| (e.line, e.column, e.key.as_str()))
        .collect();
    assert_eq!(
        found,
        [
            (2, 10, "dkim[0].domain"),
            (8, 12, "dkim[1].selector"),
            (9, 7, "dkim[1].key"),
            (14, 7, "dkim[2].key"),
            (19, 7, "dkim[3].key"),
            (21, 1, "dkim[4]"),
            (23, 1, "dkim[4].colour"),
        ],
        "{errors:#?}"
    );
    let msg = |i: usize| errors[i].message.as_str();
    assert!(msg(0).contains("not a DNS name"), "{}", msg(0));
    assert!(msg(2).contains("cannot read the file"), "{}", msg(2));
    assert!(msg(2).contains("resolved to"), "{}", msg(2));
    assert!(msg(3).contains("not a PEM file"), "{}", msg(3));
    assert!(msg(4).contains("1024 bits"), "{}", msg(4));
    assert!(msg(5).contains("missing `domain`"), "{}", msg(5));
    assert!(msg(5).contains("`key`"), "{}", msg(5));
    assert!(msg(6).starts_with("unknown key `colour`"), "{}", msg(6));
    // The rendering an operator sees.
    let expected = format!(
        "keel.toml:19:7: dkim[3].key: unusable key {:?}: RSA key has 1024 bits; DKIM keys must \
         have at least 2048 (RFC 8301)",
        rsa1024()
    );
    assert!(errors[4].to_string().ends_with(&expected), "{}", errors[4]);
}

#[test]
fn duplicate_selector_for_a_domain_names_the_first_line() {
    let d = Dir::new();
    let errors = d
        .load(
            "[[dkim]]\ndomain = \"acme.example\"\nselector = \"s1\"\nkey = \"keys/ed.pem\"\n\n\
             [[dkim]]\ndomain = \"ACME.example.\"\nselector = \"S1\"\nkey = \"keys/ed.pem\"\n",
        )
        .expect_err("duplicate");
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(
        (errors[0].line, errors[0].key.as_str()),
        (8, "dkim[1].selector")
    );
    assert!(errors[0].message.contains("already configured at line 1"));
}

#[test]
fn dkim_must_be_an_array_of_tables() {
    let errors = Config::parse("[dkim]\ndomain = \"a.example\"\n", "keel.toml").expect_err("table");
    assert_eq!(errors.0.len(), 1);
    assert_eq!(errors.0[0].key, "dkim");
    assert!(errors.0[0].message.contains("write [[dkim]]"));
}
