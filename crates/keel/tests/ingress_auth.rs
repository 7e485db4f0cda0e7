//! TLS and authentication on SMTP ingress, through the real binary with real clients:
//! Python's smtplib (`tests/peers/submit.py`: STARTTLS, implicit TLS, AUTH PLAIN and LOGIN)
//! and, for the STARTTLS command-injection case, a raw socket upgraded with rustls.
//!
//! Every daemon here has `relay_networks` outside loopback, so a test client on 127.0.0.1 may
//! relay only after AUTH. Passwords are hashed with `keel passwd`, so a successful login also
//! proves its output verifies.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use common::*;
use serde_json::Value;

const USER: &str = "campaigns";
const PASSWORD: &str = "correct horse battery";

/// Runs `keel passwd` with `input` on stdin: (exit success, stdout, stderr).
fn keel_passwd(input: &str) -> (bool, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_keel"))
        .arg("passwd")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run keel passwd");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("keel passwd output");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A self-signed certificate for 127.0.0.1 (what the clients connect to) and keel.test.
struct Cert {
    cert: PathBuf,
    key: PathBuf,
    der: Vec<u8>,
}

impl Cert {
    fn new(dir: &Path) -> Cert {
        let c = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "keel.test".into()])
            .expect("certificate");
        let cert = dir.join("keel-cert.pem");
        let key = dir.join("keel-key.pem");
        std::fs::write(&cert, c.cert.pem()).expect("write cert");
        std::fs::write(&key, c.signing_key.serialize_pem()).expect("write key");
        Cert {
            cert,
            key,
            der: c.cert.der().to_vec(),
        }
    }
}

/// A daemon with TLS (STARTTLS and an implicit-TLS listener), one user, and mail for every
/// domain routed to an aiosmtpd sink.
struct Setup {
    keel: Keel,
    sink: PySink,
    cert: Cert,
    tls_port: u16,
    _dir: tempfile::TempDir,
}

impl Setup {
    fn start(extra_smtp: &str) -> Setup {
        let dir = tempfile::tempdir().expect("tempdir");
        let cert = Cert::new(dir.path());
        let (ok, hash, err) = keel_passwd(&format!("{PASSWORD}\n"));
        assert!(ok, "keel passwd failed: {err}");
        let hash = hash.trim().to_string();
        let sink = PySink::start(dir.path(), &["--keep-body"]);
        let tls_port = free_port();
        let smtp = format!(
            "relay_networks = [\"192.0.2.0/24\"]\n\
             tls_cert = \"{}\"\ntls_key = \"{}\"\ntls_listen = [\"127.0.0.1:{tls_port}\"]\n\
             {extra_smtp}\n\
             [[smtp.user]]\nname = \"{USER}\"\npassword_hash = \"{hash}\"\ntenant = \"acme\"\n",
            cert.cert.display(),
            cert.key.display(),
        );
        let keel = Keel::start(&Conf {
            smtp,
            rest: format!(
                "[[route]]\ndomain = \"*\"\nsmarthost = \"127.0.0.1:{}\"\n",
                sink.port
            ),
        });
        assert!(
            wait_port(tls_port, Duration::from_secs(10)),
            "no implicit-TLS listener; stderr:\n{}",
            keel.stderr()
        );
        Setup {
            keel,
            sink,
            cert,
            tls_port,
            _dir: dir,
        }
    }

    /// One smtplib session (`tests/peers/submit.py`) with these extra arguments.
    fn submit(&self, port: u16, args: &[&str]) -> Value {
        let out = Command::new(python())
            .arg(peers_dir().join("submit.py"))
            .args(["--port", &port.to_string()])
            .args(["--cafile", self.cert.cert.to_str().expect("utf-8 path")])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run submit.py");
        let stdout = String::from_utf8_lossy(&out.stdout);
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
            panic!(
                "submit.py printed no JSON ({e}): {stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }
}

fn code(step: &Value) -> u64 {
    step[0].as_u64().unwrap_or(0)
}

/// The AUTH keyword's parameters in smtplib's EHLO feature map.
fn auth_mechanisms(features: &Value) -> &str {
    features["auth"].as_str().unwrap_or("").trim()
}

fn text(step: &Value) -> &str {
    step[1].as_str().unwrap_or("")
}

#[test]
fn starttls_then_auth_plain_relays_to_the_sink() {
    let s = Setup::start("");
    let r = s.submit(
        s.keel.smtp_port,
        &[
            "--starttls",
            "--user",
            USER,
            "--password",
            PASSWORD,
            "--sender",
            "news@src.test",
            "--to",
            "reader@elsewhere.test",
            "--message-id",
            "<starttls@src.test>",
        ],
    );
    // Before TLS: STARTTLS offered, AUTH not; after: the reverse.
    assert!(r["features_before"].get("starttls").is_some(), "{r}");
    assert!(r["features_before"].get("auth").is_none(), "{r}");
    assert!(r["features"].get("starttls").is_none(), "{r}");
    assert_eq!(auth_mechanisms(&r["features"]), "PLAIN LOGIN", "{r}");
    assert_eq!(
        r["starttls"],
        serde_json::json!([220, "2.0.0 Ready to start TLS"])
    );
    assert!(r["tls"].as_str().unwrap_or("").starts_with("TLSv1."), "{r}");
    assert_eq!(code(&r["auth"]), 235, "{r}");
    assert_eq!(text(&r["auth"]), "2.7.0 Authentication successful");
    assert_eq!(code(&r["rcpt"][0]), 250, "{r}");
    assert_eq!(code(&r["data"]), 250, "{r}");

    let recs = s.sink.wait_count(1, Duration::from_secs(30));
    assert_eq!(recs.len(), 1, "stderr: {}", s.keel.stderr());
    assert_eq!(recs[0]["message_id"], "<starttls@src.test>");
    let body = recs[0]["body"].as_str().unwrap_or("");
    assert!(
        body.contains("\tby keel.test (Keel) with ESMTPSA id "),
        "{body}"
    );

    // Encrypted but not authenticated: no relaying.
    let r = s.submit(
        s.keel.smtp_port,
        &[
            "--starttls",
            "--sender",
            "news@src.test",
            "--to",
            "reader@elsewhere.test",
        ],
    );
    assert_eq!(code(&r["rcpt"][0]), 550, "{r}");
    assert!(text(&r["rcpt"][0]).starts_with("5.7.1 "), "{r}");
}

#[test]
fn auth_login_over_the_implicit_tls_listener() {
    let s = Setup::start("");
    let r = s.submit(
        s.tls_port,
        &[
            "--implicit-tls",
            "--user",
            USER,
            "--password",
            PASSWORD,
            "--mech",
            "LOGIN",
            "--sender",
            "news@src.test",
            "--to",
            "reader@elsewhere.test",
            "--message-id",
            "<implicit@src.test>",
        ],
    );
    assert!(r["tls"].as_str().unwrap_or("").starts_with("TLSv1."), "{r}");
    // Already encrypted: AUTH from the first EHLO, and no STARTTLS.
    assert_eq!(auth_mechanisms(&r["features_before"]), "PLAIN LOGIN", "{r}");
    assert!(r["features_before"].get("starttls").is_none(), "{r}");
    assert_eq!(code(&r["auth"]), 235, "{r}");
    assert_eq!(code(&r["data"]), 250, "{r}");
    let recs = s.sink.wait_count(1, Duration::from_secs(30));
    assert_eq!(recs.len(), 1, "stderr: {}", s.keel.stderr());
    let body = recs[0]["body"].as_str().unwrap_or("");
    assert!(body.contains(" with ESMTPSA id "), "{body}");
}

#[test]
fn auth_needs_tls_and_the_right_password() {
    let s = Setup::start("");
    // Plain text, loopback, no opt-in: AUTH is neither offered nor accepted.
    let (mut c, greeting) = SmtpClient::connect(s.keel.smtp_port);
    assert!(greeting.starts_with("220 keel.test"), "{greeting}");
    let ehlo = c.cmd("EHLO client.test");
    assert!(ehlo.contains("250-STARTTLS"), "{ehlo}");
    assert!(!ehlo.contains("AUTH"), "{ehlo}");
    let plain = base64::engine::general_purpose::STANDARD.encode(format!("\0{USER}\0{PASSWORD}"));
    let r = c.cmd(&format!("AUTH PLAIN {plain}"));
    assert_eq!(
        r,
        "538 5.7.11 Encryption required for requested authentication mechanism\r\n"
    );
    // Unauthenticated, not in relay_networks: 550 5.7.1.
    assert!(c.cmd("MAIL FROM:<a@src.test>").starts_with("250"));
    let r = c.cmd("RCPT TO:<b@elsewhere.test>");
    assert!(r.starts_with("550 5.7.1"), "{r}");
    assert!(c.cmd("QUIT").starts_with("221"));

    // Over TLS, a wrong password and an unknown user get the same 535.
    for (user, password) in [(USER, "wrong password"), ("nobody", PASSWORD)] {
        let r = s.submit(
            s.keel.smtp_port,
            &["--starttls", "--user", user, "--password", password],
        );
        assert_eq!(code(&r["auth"]), 535, "{r}");
        assert_eq!(text(&r["auth"]), "5.7.8 Authentication credentials invalid");
        assert_eq!(r["closed"], false, "{r}");
    }
    // Passwords never reach the log.
    let log = s.keel.stderr();
    assert!(log.contains("SMTP AUTH failed"), "{log}");
    assert!(
        !log.contains(PASSWORD) && !log.contains("wrong password"),
        "{log}"
    );
}

#[test]
fn repeated_failures_from_one_address_are_cut_off_with_421() {
    let s = Setup::start("max_auth_failures = 3");
    let attempt = |password: &str| {
        s.submit(
            s.keel.smtp_port,
            &["--starttls", "--user", USER, "--password", password],
        )
    };
    for _ in 0..2 {
        let r = attempt("guess");
        assert_eq!(code(&r["auth"]), 535, "{r}");
    }
    let r = attempt("guess");
    assert_eq!(code(&r["auth"]), 421, "{r}");
    assert!(text(&r["auth"]).starts_with("4.7.0 "), "{r}");
    assert_eq!(r["closed"], true, "the connection must be closed: {r}");
    // Blocked now, even with the right password, on a new connection.
    let r = attempt(PASSWORD);
    assert_eq!(code(&r["auth"]), 421, "{r}");
    assert_eq!(r["closed"], true, "{r}");
}

/// A rustls client that trusts only the test certificate.
fn tls_client(cert_der: &[u8]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls_pki_types::CertificateDer::from(cert_der.to_vec()))
        .expect("trust the test certificate");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// Reads plaintext until `until` has arrived; returns everything read.
fn read_until(tcp: &mut TcpStream, until: &str) -> String {
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    // One byte at a time, so nothing after `until` (the TLS handshake) is consumed.
    while !String::from_utf8_lossy(&got).contains(until) {
        match tcp.read(&mut byte) {
            Ok(1) => got.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// Reads one SMTP reply (all its lines) from any stream.
fn read_reply(stream: &mut impl Read) -> String {
    let mut out = String::new();
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match stream.read(&mut byte) {
            Ok(1) => line.push(byte[0]),
            _ => return out,
        }
        if byte[0] == b'\n' {
            let l = String::from_utf8_lossy(&line).into_owned();
            line.clear();
            let last = l.as_bytes().get(3) != Some(&b'-');
            out.push_str(&l);
            if last {
                return out;
            }
        }
    }
}

#[test]
fn plaintext_injected_after_starttls_is_never_executed() {
    // CVE-2011-0411: commands pipelined (or injected by a man in the middle) behind STARTTLS
    // in plain text must not be executed in the encrypted session.
    let s = Setup::start("");
    let mut tcp = TcpStream::connect(("127.0.0.1", s.keel.smtp_port)).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert!(read_until(&mut tcp, "\r\n").starts_with("220 "));
    tcp.write_all(b"EHLO client.test\r\nSTARTTLS\r\nRSET\r\nMAIL FROM:<evil@src.test>\r\n")
        .unwrap();
    let plain = read_until(&mut tcp, "220 2.0.0 Ready to start TLS\r\n");
    assert!(
        plain.ends_with("250 HELP\r\n220 2.0.0 Ready to start TLS\r\n"),
        "{plain}"
    );
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").expect("name");
    let conn = rustls::ClientConnection::new(tls_client(&s.cert.der), name).expect("client");
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    // Inside TLS the session starts over: the injected MAIL was not executed (no 503 for a
    // nested MAIL, no 250), and the EHLO from before the handshake is forgotten.
    tls.write_all(b"MAIL FROM:<a@src.test>\r\n").unwrap();
    let r = read_reply(&mut tls);
    assert_eq!(r, "503 5.5.1 Send EHLO or HELO first\r\n");
    tls.write_all(b"EHLO client.test\r\n").unwrap();
    let ehlo = read_reply(&mut tls);
    assert!(ehlo.contains("250-AUTH PLAIN LOGIN\r\n"), "{ehlo}");
    assert!(!ehlo.contains("STARTTLS"), "{ehlo}");
    tls.write_all(b"QUIT\r\n").unwrap();
    assert!(read_reply(&mut tls).starts_with("221"));

    // Plaintext sent after the 220 goes into the handshake, which fails: no reply to it, and
    // the connection is closed.
    let mut tcp = TcpStream::connect(("127.0.0.1", s.keel.smtp_port)).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    read_until(&mut tcp, "\r\n");
    tcp.write_all(b"EHLO client.test\r\nSTARTTLS\r\n").unwrap();
    read_until(&mut tcp, "220 2.0.0 Ready to start TLS\r\n");
    tcp.write_all(b"MAIL FROM:<evil@src.test>\r\n").unwrap();
    let mut rest = Vec::new();
    let _ = tcp.read_to_end(&mut rest);
    let rest = String::from_utf8_lossy(&rest);
    assert!(!rest.contains("250") && !rest.contains("503"), "{rest:?}");
}

#[test]
fn connections_per_address_are_limited() {
    let keel = Keel::start(&Conf {
        smtp: "max_connections_per_ip = 2".into(),
        ..Conf::default()
    });
    let (a, ga) = SmtpClient::connect(keel.smtp_port);
    let (_b, gb) = SmtpClient::connect(keel.smtp_port);
    assert!(ga.starts_with("220") && gb.starts_with("220"));
    let (_c, gc) = SmtpClient::connect(keel.smtp_port);
    assert_eq!(
        gc,
        "421 4.7.0 keel.test Too many connections from your address\r\n"
    );
    // A slot frees up when a session ends.
    drop(a);
    assert!(wait_until(Duration::from_secs(10), || {
        SmtpClient::connect(keel.smtp_port).1.starts_with("220")
    }));
}

#[test]
fn plaintext_auth_on_loopback_only_when_opted_in() {
    let dir = tempfile::tempdir().unwrap();
    let sink = PySink::start(dir.path(), &["--keep-body"]);
    let (ok, hash, _) = keel_passwd(PASSWORD);
    assert!(ok);
    let keel = Keel::start(&Conf {
        smtp: format!(
            "relay_networks = []\nauth_plaintext_loopback = true\n\
             [[smtp.user]]\nname = \"{USER}\"\npassword_hash = \"{}\"\n",
            hash.trim()
        ),
        rest: format!(
            "[[route]]\ndomain = \"*\"\nsmarthost = \"127.0.0.1:{}\"\n",
            sink.port
        ),
    });
    let out = Command::new(python())
        .arg(peers_dir().join("submit.py"))
        .args(["--port", &keel.smtp_port.to_string()])
        .args(["--user", USER, "--password", PASSWORD])
        .args(["--sender", "app@src.test", "--to", "someone@elsewhere.test"])
        .output()
        .expect("run submit.py");
    let r: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(r["tls"], Value::Null, "{r}");
    assert_eq!(code(&r["auth"]), 235, "{r}");
    assert_eq!(code(&r["data"]), 250, "{r}");
    let recs = sink.wait_count(1, Duration::from_secs(30));
    assert_eq!(recs.len(), 1);
    let body = recs[0]["body"].as_str().unwrap_or("");
    assert!(body.contains(" with ESMTPA id "), "{body}");
}

#[test]
fn keel_passwd_hashes_what_check_config_accepts() {
    let (ok, out, err) = keel_passwd("s3cret\r\n");
    assert!(ok, "{err}");
    let hash = out.trim();
    assert!(hash.starts_with("$argon2id$v=19$"), "{out}");
    assert_eq!(out.lines().count(), 1);
    assert!(!out.contains("s3cret"));
    for empty in ["", "\n", "\r\n"] {
        let (ok, out, err) = keel_passwd(empty);
        assert!(!ok, "{empty:?} was accepted: {out}");
        assert!(err.contains("refusing an empty password"), "{err}");
    }

    let dir = tempfile::tempdir().unwrap();
    let config = |hash: &str| {
        let path = dir.path().join("keel.toml");
        std::fs::write(
            &path,
            format!(
                "[smtp]\nauth_plaintext_loopback = true\n\n[[smtp.user]]\nname = \"u\"\n\
                 password_hash = \"{hash}\"\n"
            ),
        )
        .unwrap();
        Command::new(env!("CARGO_BIN_EXE_keel"))
            .arg("check-config")
            .arg(&path)
            .output()
            .unwrap()
    };
    assert!(config(hash).status.success());
    let out = config("$argon2id$not-a-hash");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("keel.toml:6:17: smtp.user[0].password_hash: not a PHC password hash"),
        "{err}"
    );
}
