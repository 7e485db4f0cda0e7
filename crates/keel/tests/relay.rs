//! End to end through the real binary: Postfix's smtp-source and Python's smtplib in,
//! Postfix's smtp-sink and aiosmtpd out, with a local DNS server for MX lookups.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use serde_json::json;

fn route_to(port: u16) -> String {
    format!("[[route]]\ndomain = \"*\"\nsmarthost = \"127.0.0.1:{port}\"\n")
}

const FAST_RETRY: &str = "[retry]\nintervals = [\"1s\"]\nmax_age = \"1h\"\n";

#[test]
fn smtp_source_to_smtp_sink_every_message_delivered_once() {
    let keel_dir = tempfile::tempdir().unwrap();
    let sink = PostfixSink::start(keel_dir.path());
    let keel = Keel::start(&Conf {
        rest: route_to(sink.port),
        ..Conf::default()
    });
    let status = smtp_source(keel.smtp_port, 5, 300, 2000, "rcpt@dest.test");
    assert!(status.success(), "smtp-source failed: {status}");
    assert!(
        wait_until(Duration::from_secs(60), || sink.count() >= 300),
        "sink got {} of 300",
        sink.count()
    );
    let receptions = keel.wait_events("Reception", 300, Duration::from_secs(30));
    let deliveries = keel.wait_events("Delivery", 300, Duration::from_secs(30));
    assert_eq!(receptions.len(), 300);
    assert_eq!(deliveries.len(), 300);
    // Nothing more arrives: each message was delivered exactly once.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(sink.count(), 300);
    let ids: HashSet<&str> = deliveries
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 300);
    let d = &deliveries[0];
    assert_eq!(d["sender"], "sender@src.test");
    assert_eq!(d["recipient"], "rcpt@dest.test");
    assert_eq!(d["queue"], "dest.test");
    assert_eq!(d["site"], "127.0.0.1");
    assert_eq!(d["attempt"], 1);
    assert_eq!(d["response"]["code"], 250);
    assert!(
        d["peer"]
            .as_str()
            .unwrap()
            .ends_with(&format!(":{}", sink.port))
    );
    assert!(d["time"].as_str().unwrap().ends_with('Z'));
    assert!(d["size"].as_u64().unwrap() > 2000);
}

#[test]
fn message_content_arrives_byte_exact_with_a_received_header() {
    let dir = tempfile::tempdir().unwrap();
    let sink = PySink::start(dir.path(), &["--keep-body"]);
    let keel = Keel::start(&Conf {
        rest: route_to(sink.port),
        ..Conf::default()
    });
    let body = "From: a@src.test\r\nTo: b@dest.test\r\nSubject: exact\r\nMessage-ID: <exact@src.test>\r\n\r\n\
                line one\r\n.leading dot\r\n..two dots\r\n\r\nlast line without newline";
    let (mut c, greeting) = SmtpClient::connect(keel.smtp_port);
    assert!(greeting.starts_with("220 keel.test ESMTP"));
    assert!(c.cmd("EHLO client.test").contains("250-PIPELINING"));
    assert!(c.cmd("MAIL FROM:<a@src.test>").starts_with("250 2.1.0"));
    assert!(c.cmd("RCPT TO:<b@dest.test>").starts_with("250 2.1.5"));
    assert!(c.cmd("DATA").starts_with("354"));
    let mut wire = String::new();
    for line in body.split("\r\n") {
        if line.starts_with('.') {
            wire.push('.');
        }
        wire.push_str(line);
        wire.push_str("\r\n");
    }
    wire.push_str(".\r\n");
    c.send_raw(wire.as_bytes());
    let r = c.reply();
    assert!(r.starts_with("250 2.0.0 Ok: queued as "), "{r}");
    let recs = sink.wait_count(1, Duration::from_secs(30));
    assert_eq!(recs.len(), 1);
    let got = recs[0]["body"].as_str().unwrap();
    let (received, rest) = got
        .split_once("\r\n\tby keel.test (Keel) with ESMTP id ")
        .unwrap();
    assert!(received.starts_with("Received: from client.test ([127.0.0.1])"));
    let after = rest.split_once("\r\n").unwrap().1;
    assert!(after.starts_with("\tfor <b@dest.test>; "));
    let original = after.split_once("\r\n").unwrap().1;
    // The body arrives as sent; the missing final CRLF is added on the wire (RFC 5321 4.1.1.4).
    assert_eq!(original, format!("{body}\r\n"));
}

#[test]
fn multi_recipient_message_uses_one_transaction_per_domain() {
    let dir = tempfile::tempdir().unwrap();
    let sink = PySink::start(dir.path(), &[]);
    let keel = Keel::start(&Conf {
        rest: route_to(sink.port),
        ..Conf::default()
    });
    let (mut c, _) = SmtpClient::connect(keel.smtp_port);
    c.cmd("EHLO client.test");
    c.cmd("MAIL FROM:<a@src.test>");
    for r in ["x1@one.test", "x2@one.test", "x3@one.test", "y1@two.test"] {
        assert!(c.cmd(&format!("RCPT TO:<{r}>")).starts_with("250"));
    }
    c.cmd("DATA");
    c.send_raw(b"Subject: multi\r\n\r\nhello\r\n.\r\n");
    assert!(c.reply().starts_with("250"));
    let recs = sink.wait_count(2, Duration::from_secs(30));
    assert_eq!(recs.len(), 2);
    let mut rcpt_sets: Vec<Vec<String>> = recs
        .iter()
        .map(|r| {
            let mut v: Vec<String> = r["rcpt_tos"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_str().unwrap().to_string())
                .collect();
            v.sort();
            v
        })
        .collect();
    rcpt_sets.sort();
    assert_eq!(
        rcpt_sets,
        vec![
            vec!["x1@one.test", "x2@one.test", "x3@one.test"],
            vec!["y1@two.test"]
        ]
    );
}

#[test]
fn many_recipients_are_split_into_transactions() {
    let dir = tempfile::tempdir().unwrap();
    let sink = PySink::start(dir.path(), &[]);
    let keel = Keel::start(&Conf {
        rest: format!(
            "[delivery]\nmax_recipients_per_transaction = 2\n\n{}",
            route_to(sink.port)
        ),
        ..Conf::default()
    });
    let (mut c, _) = SmtpClient::connect(keel.smtp_port);
    c.cmd("EHLO client.test");
    c.cmd("MAIL FROM:<a@src.test>");
    for i in 0..5 {
        assert!(
            c.cmd(&format!("RCPT TO:<r{i}@one.test>"))
                .starts_with("250")
        );
    }
    c.cmd("DATA");
    c.send_raw(b"Subject: split\r\n\r\nhello\r\n.\r\n");
    assert!(c.reply().starts_with("250"));
    let recs = sink.wait_count(3, Duration::from_secs(30));
    let mut sizes: Vec<usize> = recs
        .iter()
        .map(|r| r["rcpt_tos"].as_array().unwrap().len())
        .collect();
    sizes.sort();
    assert_eq!(sizes, [1, 2, 2]);
    assert_eq!(
        keel.wait_events("Delivery", 5, Duration::from_secs(30))
            .len(),
        5
    );
}

#[test]
fn transient_failures_are_retried_then_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let sink = PySink::start(dir.path(), &["--tempfail-first", "2"]);
    let keel = Keel::start(&Conf {
        rest: format!("{}{FAST_RETRY}", route_to(sink.port)),
        ..Conf::default()
    });
    let (mut c, _) = SmtpClient::connect(keel.smtp_port);
    c.cmd("EHLO c.test");
    c.cmd("MAIL FROM:<a@src.test>");
    c.cmd("RCPT TO:<b@dest.test>");
    c.cmd("DATA");
    c.send_raw(b"Subject: retry\r\n\r\nx\r\n.\r\n");
    assert!(c.reply().starts_with("250"));
    let delivered = keel.wait_events("Delivery", 1, Duration::from_secs(30));
    assert_eq!(delivered.len(), 1, "stderr: {}", keel.stderr());
    let transient = keel.events_of("TransientFailure");
    assert_eq!(transient.len(), 2);
    assert_eq!(transient[0]["response"]["code"], 451);
    assert_eq!(transient[0]["response"]["enhanced"], "4.3.0");
    assert_eq!(transient[0]["attempt"], 1);
    assert_eq!(transient[1]["attempt"], 2);
    assert_eq!(delivered[0]["attempt"], 3);
    assert_eq!(sink.records().len(), 1);
}

#[test]
fn permanent_failure_bounces_only_that_recipient() {
    let dir = tempfile::tempdir().unwrap();
    let sink = PySink::start(dir.path(), &["--reject-rcpt", "unknown"]);
    let keel = Keel::start(&Conf {
        rest: format!("{}{FAST_RETRY}", route_to(sink.port)),
        ..Conf::default()
    });
    let (mut c, _) = SmtpClient::connect(keel.smtp_port);
    c.cmd("EHLO c.test");
    c.cmd("MAIL FROM:<a@src.test>");
    c.cmd("RCPT TO:<good@dest.test>");
    c.cmd("RCPT TO:<unknown@dest.test>");
    c.cmd("DATA");
    c.send_raw(b"Subject: bounce\r\n\r\nx\r\n.\r\n");
    assert!(c.reply().starts_with("250"));
    let bounces = keel.wait_events("Bounce", 1, Duration::from_secs(30));
    assert_eq!(bounces.len(), 1);
    assert_eq!(bounces[0]["recipient"], "unknown@dest.test");
    assert_eq!(bounces[0]["response"]["code"], 550);
    assert_eq!(bounces[0]["response"]["enhanced"], "5.1.1");
    let delivered = keel.wait_events("Delivery", 1, Duration::from_secs(30));
    assert_eq!(delivered[0]["recipient"], "good@dest.test");
    // Neither recipient is tried again.
    std::thread::sleep(Duration::from_millis(2500));
    assert!(keel.events_of("TransientFailure").is_empty());
    assert_eq!(sink.records().len(), 1);
}

#[test]
fn destination_down_then_up_delivers_everything() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let keel = Keel::start(&Conf {
        rest: format!("{}{FAST_RETRY}", route_to(port)),
        ..Conf::default()
    });
    let status = smtp_source(keel.smtp_port, 4, 40, 1000, "rcpt@down.test");
    assert!(status.success());
    let failures = keel.wait_events("TransientFailure", 40, Duration::from_secs(30));
    assert!(
        failures.len() >= 40,
        "only {} transient failures",
        failures.len()
    );
    assert!(keel.events_of("Delivery").is_empty());
    let sink = PySink::start_on(dir.path(), port, &[]);
    let recs = sink.wait_count(40, Duration::from_secs(30));
    assert_eq!(recs.len(), 40, "stderr: {}", keel.stderr());
    assert_eq!(
        keel.wait_events("Delivery", 40, Duration::from_secs(30))
            .len(),
        40
    );
}

#[test]
fn messages_expire_after_max_age() {
    let port = free_port();
    let keel = Keel::start(&Conf {
        rest: format!(
            "{}[retry]\nintervals = [\"1s\"]\nmax_age = \"3s\"\n",
            route_to(port)
        ),
        ..Conf::default()
    });
    let (mut c, _) = SmtpClient::connect(keel.smtp_port);
    c.cmd("EHLO c.test");
    c.cmd("MAIL FROM:<a@src.test>");
    c.cmd("RCPT TO:<b@gone.test>");
    c.cmd("DATA");
    c.send_raw(b"Subject: expire\r\n\r\nx\r\n.\r\n");
    assert!(c.reply().starts_with("250"));
    let expired = keel.wait_events("Expiration", 1, Duration::from_secs(30));
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0]["recipient"], "b@gone.test");
    assert!(expired[0]["queue_time_ms"].as_u64().unwrap() >= 3000);
    let attempts = keel.events_of("TransientFailure").len();
    assert!(
        attempts >= 2,
        "expected retries before expiry, saw {attempts}"
    );
    // Expired messages are not tried again.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(keel.events_of("TransientFailure").len(), attempts);
}

#[test]
fn mx_lookup_prefers_lower_preference_and_falls_back() {
    let dir = tempfile::tempdir().unwrap();
    let sink = PySink::start(dir.path(), &[]);
    // mx1 (preferred) has an address where nothing listens; mx2 is the sink.
    let zone = json!({
        "example.test.": [["MX", 10, "mx1.example.test."], ["MX", 20, "mx2.example.test."]],
        "mx1.example.test.": [["A", "127.0.0.9"]],
        "mx2.example.test.": [["A", "127.0.0.1"]],
        "implicit.test.": [["A", "127.0.0.1"]],
        "nullmx.test.": [["MX", 0, "."]],
        "broken.test.": [["SERVFAIL"]],
    });
    let dns = Dns::start(dir.path(), &zone);
    let keel = Keel::start(&Conf {
        rest: format!(
            "[dns]\nnameservers = [\"127.0.0.1:{}\"]\n\n[delivery]\nport = {}\nconnect_timeout = \"2s\"\n\n{FAST_RETRY}",
            dns.port, sink.port
        ),
        ..Conf::default()
    });
    let send = |rcpt: &str| {
        let (mut c, _) = SmtpClient::connect(keel.smtp_port);
        c.cmd("EHLO c.test");
        c.cmd("MAIL FROM:<a@src.test>");
        assert!(c.cmd(&format!("RCPT TO:<{rcpt}>")).starts_with("250"));
        c.cmd("DATA");
        c.send_raw(format!("Subject: to {rcpt}\r\n\r\nx\r\n.\r\n").as_bytes());
        assert!(c.reply().starts_with("250"));
    };
    send("user@example.test");
    send("user@implicit.test");
    send("user@nullmx.test");
    send("user@nxdomain.test");
    send("user@broken.test");
    let delivered = keel.wait_events("Delivery", 2, Duration::from_secs(30));
    assert_eq!(delivered.len(), 2, "stderr: {}", keel.stderr());
    let by_rcpt = |r: &str| {
        keel.events()
            .into_iter()
            .filter(|e| e["recipient"] == r && e["type"] != "Reception")
            .collect::<Vec<_>>()
    };
    assert_eq!(by_rcpt("user@example.test")[0]["site"], "mx2.example.test");
    assert_eq!(by_rcpt("user@implicit.test")[0]["site"], "implicit.test");
    let bounces = keel.wait_events("Bounce", 2, Duration::from_secs(30));
    assert_eq!(bounces.len(), 2);
    let null = by_rcpt("user@nullmx.test");
    assert_eq!(null[0]["type"], "Bounce");
    assert_eq!(null[0]["response"]["enhanced"], "5.1.10");
    let nx = by_rcpt("user@nxdomain.test");
    assert_eq!(nx[0]["type"], "Bounce");
    assert_eq!(nx[0]["response"]["enhanced"], "5.1.2");
    // SERVFAIL: retried, not bounced.
    let mut broken = Vec::new();
    wait_until(Duration::from_secs(20), || {
        broken = by_rcpt("user@broken.test");
        !broken.is_empty()
    });
    assert_eq!(broken[0]["type"], "TransientFailure", "{broken:?}");
    assert_eq!(broken[0]["response"]["enhanced"], "4.4.3");
    assert_eq!(sink.records().len(), 2);
}

#[test]
fn opportunistic_starttls_is_used_when_offered() {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["sink.test".to_string()]).unwrap();
    let cert_path = dir.path().join("sink.crt");
    let key_path = dir.path().join("sink.key");
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let sink = PySink::start(
        dir.path(),
        &[
            "--tls-cert",
            cert_path.to_str().unwrap(),
            "--tls-key",
            key_path.to_str().unwrap(),
        ],
    );
    let keel = Keel::start(&Conf {
        rest: route_to(sink.port),
        ..Conf::default()
    });
    let status = smtp_source(keel.smtp_port, 1, 3, 500, "rcpt@tls.test");
    assert!(status.success());
    let recs = sink.wait_count(3, Duration::from_secs(30));
    assert_eq!(recs.len(), 3, "stderr: {}", keel.stderr());
    assert!(recs.iter().all(|r| r["tls"] == true), "{recs:?}");
}
