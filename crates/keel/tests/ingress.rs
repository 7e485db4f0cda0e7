//! The SMTP listener and the command line, over real sockets and real processes.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

#[test]
fn unauthorised_clients_cannot_relay() {
    let keel = Keel::start(&Conf {
        smtp: "relay_networks = [\"192.0.2.0/24\"]".into(),
        ..Conf::default()
    });
    let (mut c, _) = SmtpClient::connect(keel.smtp_port);
    c.cmd("EHLO c.test");
    assert!(c.cmd("MAIL FROM:<a@src.test>").starts_with("250"));
    for rcpt in [
        "user@elsewhere.test",
        "user%other.test@elsewhere.test",
        "@a.test:user@elsewhere.test",
        "\"user@x.test\"@elsewhere.test",
        "USER@ELSEWHERE.TEST.",
        "user@[127.0.0.1]",
    ] {
        let r = c.cmd(&format!("RCPT TO:<{rcpt}>"));
        assert!(r.starts_with('5'), "{rcpt}: {r}");
    }
    let r = c.cmd("RCPT TO:<user@elsewhere.test>");
    assert!(r.starts_with("550 5.7.1"), "{r}");
    assert!(c.cmd("DATA").starts_with("554 5.5.1"));
    assert!(c.cmd("QUIT").starts_with("221"));
}

#[test]
fn protocol_errors_get_specific_replies() {
    let keel = Keel::start(&Conf {
        smtp: "max_message_size = \"10KB\"\nmax_recipients = 2".into(),
        ..Conf::default()
    });
    let (mut c, _) = SmtpClient::connect(keel.smtp_port);
    assert!(c.cmd("MAIL FROM:<a@src.test>").starts_with("503 5.5.1"));
    let ehlo = c.cmd("EHLO c.test");
    for cap in [
        "PIPELINING",
        "SIZE 10240",
        "8BITMIME",
        "SMTPUTF8",
        "ENHANCEDSTATUSCODES",
        "CHUNKING",
    ] {
        assert!(ehlo.contains(cap), "EHLO lacks {cap}: {ehlo}");
    }
    assert!(c.cmd("VRFY root").starts_with("252"));
    assert!(c.cmd("EXPN staff").starts_with("502"));
    assert!(c.cmd("BOGUS").starts_with("500 5.5.1"));
    assert!(
        c.cmd(&format!("NOOP {}", "x".repeat(1200)))
            .starts_with("500 5.5.2")
    );
    assert!(
        c.cmd("MAIL FROM:<a@src.test> SIZE=20000")
            .starts_with("552 5.3.4")
    );
    assert!(c.cmd("MAIL FROM:<a@src.test>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<1@d.test>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<2@d.test>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<3@d.test>").starts_with("452 4.5.3"));
    assert!(c.cmd("DATA").starts_with("354"));
    let mut big = String::new();
    for _ in 0..200 {
        big.push_str(&"z".repeat(98));
        big.push_str("\r\n");
    }
    big.push_str(".\r\n");
    c.send_raw(big.as_bytes());
    assert!(c.reply().starts_with("552 5.3.4"));
    assert!(c.cmd("RSET").starts_with("250"));
}

#[test]
fn idle_clients_are_disconnected() {
    let keel = Keel::start(&Conf {
        smtp: "timeouts = { command = \"1s\" }".into(),
        ..Conf::default()
    });
    let (mut c, _) = SmtpClient::connect(keel.smtp_port);
    c.cmd("EHLO c.test");
    let started = std::time::Instant::now();
    let r = c.reply();
    assert!(r.starts_with("421 4.4.2"), "{r}");
    assert!(started.elapsed() < Duration::from_secs(8));
}

#[test]
fn healthz_answers() {
    let keel = Keel::start(&Conf::default());
    assert!(wait_until(Duration::from_secs(10), || keel
        .http_get("/healthz")
        .0
        == 200));
    let (status, body) = keel.http_get("/healthz");
    assert_eq!(status, 200);
    assert!(body.contains("\"ok\""), "{body}");
}

#[test]
fn check_config_names_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[smtp]\nlisten = \"127.0.0.1:2525\"\nmax_message_size = \"25XB\"\nbogus = 1\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_keel"))
        .arg("check-config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml:3:"), "{err}");
    assert!(err.contains("smtp.max_message_size"), "{err}");
    assert!(err.contains("bad.toml:4:"), "{err}");
    assert!(err.contains("bogus"), "{err}");

    // The same for scripts.
    let out = Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(["check-config", "--json"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], false);
    let lines: Vec<u64> = v["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["line"].as_u64().unwrap())
        .collect();
    assert!(lines.contains(&3) && lines.contains(&4), "{v}");
    assert_eq!(v["errors"][0]["file"], path.display().to_string());

    let good = dir.path().join("good.toml");
    std::fs::write(&good, "[smtp]\nlisten = \"127.0.0.1:2525\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_keel"))
        .arg("check-config")
        .arg(&good)
        .output()
        .unwrap();
    assert!(out.status.success());
}

#[test]
fn a_second_daemon_refuses_the_same_spool() {
    let keel = Keel::start(&Conf::default());
    let other = Keel {
        proc: None,
        dir: keel.dir.clone(),
        smtp_port: free_port(),
        http_port: free_port(),
        config: keel.dir.join("other.toml"),
        _tmp: None,
    };
    other.write_config(&Conf::default());
    let out = Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(["serve", "--config"])
        .arg(&other.config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("spool"), "{err}");
    // The first daemon is unaffected.
    let (_, greeting) = SmtpClient::connect(keel.smtp_port);
    assert!(greeting.starts_with("220"));
}

#[test]
fn sigterm_stops_cleanly_and_restart_resumes_the_queue() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut keel = Keel::start(&Conf {
        rest: format!(
            "[[route]]\ndomain = \"*\"\nsmarthost = \"127.0.0.1:{port}\"\n[retry]\nintervals = [\"1s\"]\nmax_age = \"1h\"\n"
        ),
        ..Conf::default()
    });
    let status = smtp_source(keel.smtp_port, 2, 20, 1000, "r@later.test");
    assert!(status.success());
    keel.wait_events("TransientFailure", 20, Duration::from_secs(30));
    let exit = keel.terminate(Duration::from_secs(20));
    assert!(
        exit.is_some_and(|s| s.success()),
        "did not exit cleanly: {exit:?}"
    );
    let sink = PySink::start_on(dir.path(), port, &[]);
    keel.launch();
    assert_eq!(sink.wait_count(20, Duration::from_secs(30)).len(), 20);
}

#[test]
fn passwd_and_keygen_speak_json() {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(["passwd", "--json"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"a long enough password\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        v["password_hash"]
            .as_str()
            .unwrap()
            .starts_with("$argon2id$")
    );

    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k.pem");
    let out = Command::new(env!("CARGO_BIN_EXE_keel"))
        .args([
            "dkim",
            "keygen",
            "--domain",
            "Example.TEST",
            "--selector",
            "s1",
        ])
        .args(["--algorithm", "ed25519", "--json", "--out"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["dns_name"], "s1._domainkey.example.test");
    assert!(v["dns_txt"].as_str().unwrap().contains("k=ed25519"));
    assert!(key.exists());
}
