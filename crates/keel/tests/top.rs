//! `keel top` against the real daemon: one frame as text (`--once`) and as JSON (`--json`).

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::Value;

fn send(port: u16, rcpts: &[&str]) {
    let (mut c, _) = SmtpClient::connect(port);
    c.cmd("EHLO c.test");
    assert!(c.cmd("MAIL FROM:<a@src.test>").starts_with("250"));
    for r in rcpts {
        assert!(c.cmd(&format!("RCPT TO:<{r}>")).starts_with("250"));
    }
    assert!(c.cmd("DATA").starts_with("354"));
    c.send_raw(b"Subject: top\r\n\r\nx\r\n.\r\n");
    let r = c.reply();
    assert!(r.starts_with("250"), "{r}");
}

#[test]
fn top_once_and_json_show_a_suspended_domain_with_its_mail() {
    let dir = tempfile::tempdir().unwrap();
    let sink = PySink::start(dir.path(), &[]);
    let keel = Keel::start(&Conf {
        rest: format!(
            "[[route]]\ndomain = \"*\"\nsmarthost = \"127.0.0.1:{}\"\n",
            sink.port
        ),
        ..Conf::default()
    });
    let (ok, out, err) = cli(
        &keel,
        &[
            "suspend",
            "--domain",
            "held.test",
            "--reason",
            "top-test-reason",
        ],
    );
    assert!(ok, "{out}{err}");
    send(keel.smtp_port, &["a@held.test", "b@held.test"]);
    send(keel.smtp_port, &["c@held.test"]);
    send(keel.smtp_port, &["u@free.test"]);
    assert_eq!(sink.wait_count(1, Duration::from_secs(30)).len(), 1);

    let (ok, text, err) = cli(&keel, &["top", "--once"]);
    assert!(ok, "{text}{err}");
    assert!(
        !text.contains('\x1b'),
        "--once prints no escape codes:\n{text}"
    );
    assert!(
        text.contains("queued: 2 msgs, 3 rcpts"),
        "header totals:\n{text}"
    );
    let held = text
        .lines()
        .find(|l| l.trim_start().starts_with("held.test"))
        .unwrap_or_else(|| panic!("no held.test row:\n{text}"));
    let cells: Vec<&str> = held.split_whitespace().collect();
    // domain, msgs, rcpts, oldest, next try ("-"), parked.
    assert_eq!(&cells[..3], ["held.test", "2", "3"], "{held}");
    assert_eq!(cells[5], "2", "both messages parked: {held}");
    assert!(text.contains("SUSPENSIONS  1"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.contains("domain=held.test") && l.contains("top-test-reason")),
        "{text}"
    );
    assert!(text.contains("THROUGHPUT"), "{text}");
    assert!(text.contains("spool: 2 live msgs"), "{text}");
    // The delivered message and the ready queue that carried it.
    assert!(text.contains("READY QUEUES"), "{text}");

    let (ok, out, err) = cli(&keel, &["top", "--json"]);
    assert!(ok, "{out}{err}");
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v["messages"], 2, "{v}");
    assert_eq!(v["recipients"], 3, "{v}");
    assert_eq!(v["ready"]["status"], "ready", "{v}");
    assert_eq!(v["spool"]["live_messages"], 2, "{v}");
    let held = v["scheduled"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["domain"] == "held.test")
        .unwrap_or_else(|| panic!("{v}"));
    assert_eq!(held["messages"], 2);
    assert_eq!(v["suspensions"][0]["domain"], "held.test");
    assert_eq!(v["suspensions"][0]["reason"], "top-test-reason");
    // 4 recipients accepted seconds ago are in the last minute's rate.
    let r = v["throughput"]["last_1m"]["received"].as_f64().unwrap();
    assert!(r > 0.0, "{v}");
    let d = v["throughput"]["last_1m"]["delivered"].as_f64().unwrap();
    assert!(d > 0.0, "{v}");

    // Without a terminal the live view refuses clearly instead of scribbling escape codes.
    let (ok, _, err) = cli(&keel, &["top"]);
    assert!(!ok);
    assert!(err.contains("--once"), "{err}");
}

#[test]
fn top_reports_an_unreachable_daemon() {
    let port = free_port();
    let out = Command::new(env!("CARGO_BIN_EXE_keel"))
        .args([
            "top",
            "--once",
            "--api",
            &format!("http://127.0.0.1:{port}"),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot reach"), "{err}");
}
