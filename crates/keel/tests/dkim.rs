//! DKIM signing at SMTP ingress, end to end: keys made by `keel dkim keygen`, configured with a
//! path relative to keel.toml, mail sent through the real daemon to aiosmtpd, and the delivered
//! bytes verified by dkimpy (`tests/peers/dkim_verify.py`, DNS answered from arguments).

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::*;

fn keel_cmd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(args)
        .output()
        .expect("run keel")
}

/// `keel dkim keygen` into `out`; returns (DNS name, TXT value) from what it printed.
fn keygen(domain: &str, selector: &str, algorithm: &str, out: &Path) -> (String, String) {
    let o = keel_cmd(&[
        "dkim",
        "keygen",
        "--domain",
        domain,
        "--selector",
        selector,
        "--algorithm",
        algorithm,
        "--out",
        out.to_str().expect("utf-8 path"),
    ]);
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "keygen failed: {}\n{stdout}",
        String::from_utf8_lossy(&o.stderr)
    );
    let mode = std::fs::metadata(out)
        .expect("key file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "key file mode {mode:o}");
    let name = format!("{selector}._domainkey.{domain}");
    assert!(
        stdout.contains(&format!("{name}. IN TXT ( \"v=DKIM1; k={algorithm}; p=")),
        "{stdout}"
    );
    assert!(stdout.contains(&format!(
        "[[dkim]]\ndomain = \"{domain}\"\nselector = \"{selector}\""
    )));
    let txt = stdout
        .lines()
        .find(|l| l.starts_with("v=DKIM1;"))
        .expect("unsplit TXT value line")
        .to_string();
    // A second run must not overwrite the key.
    let again = keel_cmd(&[
        "dkim",
        "keygen",
        "--domain",
        domain,
        "--selector",
        selector,
        "--out",
        out.to_str().expect("utf-8 path"),
    ]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("never overwritten"));
    (name, txt)
}

/// Runs dkimpy over `message`: Ok when every DKIM-Signature verifies.
fn dkimpy(message: &[u8], records: &[(String, String)], dir: &Path) -> Result<(), String> {
    let file = dir.join(format!("msg-{}.eml", free_port()));
    std::fs::write(&file, message).expect("write message");
    let out = Command::new(python())
        .arg(peers_dir().join("dkim_verify.py"))
        .arg(&file)
        .args(records.iter().map(|(n, t)| format!("{n}={t}")))
        .output()
        .expect("run python3");
    match out.status.code() {
        Some(0) => Ok(()),
        Some(1) => Err(String::from_utf8_lossy(&out.stderr).into_owned()),
        _ => panic!(
            "dkim_verify.py could not run (scripts/install-test-deps.sh installs dkimpy): {}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// Sends one message (already CRLF, no dot-stuffing needed) and returns the reply to DATA.
fn send(port: u16, from: &str, to: &str, message: &str) -> String {
    let (mut c, _) = SmtpClient::connect(port);
    assert!(c.cmd("EHLO client.test").starts_with("250"));
    assert!(c.cmd(&format!("MAIL FROM:<{from}>")).starts_with("250"));
    assert!(c.cmd(&format!("RCPT TO:<{to}>")).starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    c.send_raw(format!("{message}.\r\n").as_bytes());
    let r = c.reply();
    c.cmd("QUIT");
    r
}

fn header_names(message: &str) -> Vec<String> {
    message
        .split("\r\n\r\n")
        .next()
        .unwrap_or("")
        .split("\r\n")
        .filter(|l| !l.starts_with([' ', '\t']))
        .filter_map(|l| l.split_once(':').map(|(n, _)| n.to_ascii_lowercase()))
        .collect()
}

#[test]
fn smtp_mail_is_signed_with_rsa_and_ed25519_and_verifies_with_dkimpy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sink = PySink::start(dir.path(), &["--keep-body"]);

    // The daemon's directory, with the keys next to keel.toml (configured by relative path):
    // start once to get the directory, stop, add the keys, start again.
    let mut keel = Keel::start(&Conf::default());
    assert!(keel.terminate(Duration::from_secs(10)).is_some());
    std::fs::create_dir(keel.dir.join("keys")).expect("mkdir keys");
    let rsa = keygen("acme.test", "s1", "rsa", &keel.dir.join("keys/rsa.pem"));
    let ed = keygen("acme.test", "s2", "ed25519", &keel.dir.join("keys/ed.pem"));
    let records = vec![rsa, ed];
    keel.write_config(&Conf {
        rest: format!(
            "[[route]]\ndomain = \"*\"\nsmarthost = \"127.0.0.1:{}\"\n\n\
             [[dkim]]\ndomain = \"acme.test\"\nselector = \"s1\"\nkey = \"keys/rsa.pem\"\n\n\
             [[dkim]]\ndomain = \"acme.test\"\nselector = \"s2\"\nkey = \"keys/ed.pem\"\n",
            sink.port
        ),
        ..Conf::default()
    });
    let check = keel_cmd(&["check-config", keel.config.to_str().expect("path")]);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    keel.launch();
    // Keys are loaded (and logged) before the listeners bind.
    assert!(
        keel.stderr().contains("DKIM key loaded"),
        "{}",
        keel.stderr()
    );

    // 1. From a subdomain of the signing domain, with a Keel control header that must be
    //    removed before signing, folded headers and a long-ish body.
    let body: String = (0..200)
        .map(|i| format!("line {i}: the quick brown fox   jumps over the lazy dog\t \r\n"))
        .collect();
    let signed = format!(
        "From: \"ACME News\" <news@mail.acme.test>\r\n\
         To: Ann <ann@dest.test>\r\n\
         Subject: Hello Ann,\r\n  a folded subject\r\n\
         Date: Tue, 14 Apr 2026 10:00:00 +0000\r\n\
         Message-ID: <dkim-1@acme.test>\r\n\
         X-Keel-Campaign: spring\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=us-ascii\r\n\
         \r\n{body}"
    );
    // 2. A From domain without a key; 3. no From at all (accepted, unsigned).
    let other = "From: x@other.test\r\nTo: ann@dest.test\r\nSubject: other\r\n\r\nhi\r\n";
    let no_from = "To: ann@dest.test\r\nSubject: no from\r\n\r\nhi\r\n";
    for (from, msg) in [
        ("news@mail.acme.test", signed.as_str()),
        ("x@other.test", other),
        ("x@acme.test", no_from),
    ] {
        let r = send(keel.smtp_port, from, "ann@dest.test", msg);
        assert!(r.starts_with("250 2.0.0"), "{r}");
    }
    let recs = sink.wait_count(3, Duration::from_secs(30));
    assert_eq!(recs.len(), 3, "{}", keel.stderr());
    let by_subject = |s: &str| {
        recs.iter()
            .find(|r| r["subject"].as_str().is_some_and(|x| x.starts_with(s)))
            .and_then(|r| r["body"].as_str())
            .unwrap_or_else(|| panic!("no message with subject {s}"))
            .to_string()
    };

    let delivered = by_subject("Hello Ann");
    let names = header_names(&delivered);
    assert_eq!(
        &names[..3],
        ["received", "dkim-signature", "dkim-signature"],
        "Received first, then our signatures: {names:?}"
    );
    assert!(!names.contains(&"x-keel-campaign".to_string()));
    assert!(
        delivered.contains("a=rsa-sha256; s=s1; d=acme.test;"),
        "{delivered}"
    );
    assert!(delivered.contains("a=ed25519-sha256; s=s2; d=acme.test;"));
    dkimpy(delivered.as_bytes(), &records, dir.path())
        .unwrap_or_else(|e| panic!("dkimpy rejected the delivered message: {e}\n{delivered}"));

    // The verifier can fail: a changed body does not verify.
    let tampered = delivered.replacen("line 7:", "line 8:", 1);
    assert!(dkimpy(tampered.as_bytes(), &records, dir.path()).is_err());

    for unsigned in [by_subject("other"), by_subject("no from")] {
        assert!(!header_names(&unsigned).contains(&"dkim-signature".to_string()));
    }
    assert_eq!(
        keel.wait_events("Delivery", 3, Duration::from_secs(30))
            .len(),
        3
    );
}

#[test]
fn a_bad_key_is_reported_by_check_config_and_stops_the_daemon() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("bad.pem"), "not a key\n").expect("write");
    let config = dir.path().join("keel.toml");
    std::fs::write(
        &config,
        format!(
            "[spool]\ndir = \"{0}/spool\"\n[log]\ndir = \"{0}/log\"\n\n\
             [[dkim]]\ndomain = \"acme.test\"\nselector = \"s1\"\nkey = \"bad.pem\"\n",
            dir.path().display()
        ),
    )
    .expect("write config");
    let check = keel_cmd(&["check-config", config.to_str().expect("path")]);
    assert_eq!(check.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&check.stderr);
    assert!(
        stderr.contains(&format!(
            "{}:9:7: dkim[0].key: unusable key \"bad.pem\"",
            config.display()
        )),
        "{stderr}"
    );
    assert!(stderr.contains("not a PEM file"), "{stderr}");

    let serve = Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(["serve", "--config", config.to_str().expect("path")])
        .output()
        .expect("run keel serve");
    assert!(!serve.status.success());
    assert!(
        String::from_utf8_lossy(&serve.stderr).contains("dkim[0].key"),
        "{}",
        String::from_utf8_lossy(&serve.stderr)
    );
}
