//! Fault suite, receiver and DNS part: a scripted misbehaving receiver (`tests/peers/badmx.py`)
//! and a DNS server that never answers (`tests/peers/dns.py`). For each fault Keel must record
//! a transient failure with a reply that says what went wrong, stay up (it still answers SMTP),
//! and deliver the message once the destination behaves. Also the open-relay matrix from an
//! unauthorised client over a real socket.
//!
//! Every wait is bounded and every process is stopped by PID (the harness's `Proc`).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

/// Short timeouts so a silent receiver costs seconds, and a one-second retry.
fn delivery_conf(route_port: u16) -> String {
    delivery_conf_with(route_port, "2s")
}

fn delivery_conf_with(route_port: u16, data_done: &str) -> String {
    format!(
        "[delivery]\nconnect_timeout = \"2s\"\n\
         timeouts = {{ greeting = \"2s\", ehlo = \"2s\", mail = \"2s\", rcpt = \"2s\", \
         data = \"2s\", data_block = \"2s\", data_done = \"{data_done}\" }}\n\n\
         [[route]]\ndomain = \"*\"\nsmarthost = \"127.0.0.1:{route_port}\"\n\n\
         [retry]\nintervals = [\"1s\"]\nmax_age = \"1h\"\n"
    )
}

/// `tests/peers/badmx.py`: misbehaves on its first `bad` connections, then accepts mail.
struct BadMx {
    _proc: Proc,
    port: u16,
    out: PathBuf,
    stats: PathBuf,
}

impl BadMx {
    fn start(dir: &Path, mode: &str, bad: u32) -> BadMx {
        let port = free_port();
        let out = dir.join(format!("badmx-{port}.jsonl"));
        let stats = dir.join(format!("badmx-{port}.stats"));
        let mut cmd = Command::new(python());
        cmd.arg(peers_dir().join("badmx.py"))
            .args(["--port", &port.to_string(), "--mode", mode])
            .args(["--bad", &bad.to_string()])
            .arg("--out")
            .arg(&out)
            .arg("--stats")
            .arg(&stats)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let proc = Proc::spawn("badmx.py", &mut cmd);
        // Wait on the stats file rather than a probe connection, which would use up a "bad" one.
        assert!(
            wait_until(Duration::from_secs(20), || stats.exists()),
            "badmx.py did not start"
        );
        BadMx {
            _proc: proc,
            port,
            out,
            stats,
        }
    }

    fn records(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    fn connections(&self) -> u64 {
        std::fs::read_to_string(&self.stats)
            .ok()
            .and_then(|s| serde_json::from_str::<Value>(&s).ok())
            .and_then(|v| v["connections"].as_u64())
            .unwrap_or(0)
    }
}

/// Submits one message (with `body_kb` KiB of body) and returns once Keel answered 250.
fn submit(keel: &Keel, rcpt: &str, message_id: &str, body_kb: usize) {
    let (mut c, greeting) = SmtpClient::connect(keel.smtp_port);
    assert!(greeting.starts_with("220"), "{greeting}");
    c.cmd("EHLO client.test");
    assert!(c.cmd("MAIL FROM:<a@src.test>").starts_with("250"));
    assert!(c.cmd(&format!("RCPT TO:<{rcpt}>")).starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    let mut msg = format!("Message-ID: <{message_id}>\r\nSubject: fault\r\n\r\n");
    for _ in 0..body_kb * 16 {
        msg.push_str(&"b".repeat(62));
        msg.push_str("\r\n");
    }
    msg.push_str(".\r\n");
    c.send_raw(msg.as_bytes());
    let r = c.reply();
    assert!(r.starts_with("250 2.0.0"), "{r}");
    assert!(c.cmd("QUIT").starts_with("221"));
}

/// The daemon is still running and serving SMTP.
fn assert_alive(keel: &mut Keel) {
    let p = keel.proc.as_mut().expect("keel running");
    assert!(
        matches!(p.child.try_wait(), Ok(None)),
        "keel exited; stderr:\n{}",
        keel.stderr()
    );
    let (mut c, greeting) = SmtpClient::connect(keel.smtp_port);
    assert!(greeting.starts_with("220 keel.test"), "{greeting}");
    assert!(c.cmd("NOOP").starts_with("250"));
    assert!(c.cmd("QUIT").starts_with("221"));
    assert!(!keel.stderr().contains("panicked"), "{}", keel.stderr());
}

/// Runs one receiver fault: the message must fail transiently (each failure's reply checked by
/// `check`), then be delivered exactly once when badmx turns good. Returns the failures.
fn receiver_fault(mode: &str, bad: u32, body_kb: usize, check: impl Fn(&Value)) -> Vec<Value> {
    let dir = tempfile::tempdir().unwrap();
    let mx = BadMx::start(dir.path(), mode, bad);
    let mut keel = Keel::start(&Conf {
        rest: delivery_conf(mx.port),
        ..Conf::default()
    });
    let started = Instant::now();
    let id = format!("{mode}@src.test");
    submit(&keel, "rcpt@dest.test", &id, body_kb);
    let delivered = keel.wait_events("Delivery", 1, Duration::from_secs(40));
    assert_eq!(
        delivered.len(),
        1,
        "{mode}: not delivered; events {:?}; stderr:\n{}",
        keel.events(),
        keel.stderr()
    );
    let took = started.elapsed();
    let failures = keel.events_of("TransientFailure");
    for f in &failures {
        let r = &f["response"];
        let code = r["code"].as_u64().unwrap();
        assert!(code == 0 || (400..500).contains(&code), "{mode}: {f}");
        assert!(r["enhanced"].as_str().unwrap().starts_with("4."), "{f}");
        // A reply text for people: bounded, printable.
        let text = r["text"].as_str().unwrap();
        assert!(!text.is_empty() && text.len() < 1024, "{mode}: {text}");
        check(f);
    }
    assert!(keel.events_of("Bounce").is_empty(), "{mode}: bounced");
    // Delivered once: nothing more arrives.
    std::thread::sleep(Duration::from_millis(1500));
    let recs = mx.records();
    assert_eq!(recs.len(), 1, "{mode}: {recs:?}");
    assert_eq!(recs[0]["message_id"], format!("<{id}>"));
    assert_eq!(keel.events_of("Delivery").len(), 1);
    assert_alive(&mut keel);
    println!(
        "{mode}: {} transient failure(s) [{}], delivered at attempt {} after {:.1} s, \
         {} connection(s) to the receiver",
        failures.len(),
        failures
            .iter()
            .map(|f| f["response"]["text"].as_str().unwrap_or("").to_string())
            .collect::<Vec<_>>()
            .join(" | "),
        delivered[0]["attempt"],
        took.as_secs_f64(),
        mx.connections()
    );
    failures
}

fn text(f: &Value) -> String {
    f["response"]["text"]
        .as_str()
        .unwrap_or("")
        .to_ascii_lowercase()
}

#[test]
fn receiver_drops_the_connection_mid_data() {
    // 256 KiB of body: the receiver resets the connection after two lines of it.
    let failures = receiver_fault("drop-mid-data", 1, 256, |f| {
        assert_eq!(f["response"]["enhanced"], "4.4.1");
        let t = text(f);
        assert!(t.contains("data"), "{t}");
        assert!(
            t.contains("reset") || t.contains("closed") || t.contains("broken pipe"),
            "{t}"
        );
    });
    assert_eq!(failures.len(), 1);
}

#[test]
fn receiver_never_greets() {
    let failures = receiver_fault("no-greeting", 1, 1, |f| {
        assert_eq!(f["response"]["enhanced"], "4.4.2");
        assert!(text(f).contains("greeting: timed out"), "{f}");
    });
    assert_eq!(failures.len(), 1);
}

#[test]
fn receiver_answers_garbage() {
    let failures = receiver_fault("garbage", 1, 1, |f| {
        assert_eq!(f["response"]["enhanced"], "4.5.0");
        assert!(
            text(f).contains("greeting: not an smtp reply (invalid response code)"),
            "{f}"
        );
    });
    assert_eq!(failures.len(), 1);
}

#[test]
fn receiver_sends_a_10kb_reply_line() {
    let failures = receiver_fault("long-line", 1, 1, |f| {
        assert_eq!(f["response"]["enhanced"], "4.5.0");
        assert!(
            text(f).contains("mail: reply longer than 4096 octets"),
            "{f}"
        );
    });
    assert_eq!(failures.len(), 1);
}

#[test]
fn receiver_greets_with_421_then_accepts() {
    let failures = receiver_fault("greeting-421", 1, 1, |f| {
        assert_eq!(f["response"]["code"], 421);
        assert_eq!(f["response"]["enhanced"], "4.3.2");
        assert!(text(f).contains("service not available"), "{f}");
    });
    assert_eq!(failures.len(), 1);
}

/// Every connection offers STARTTLS and then breaks (`mode`): opportunistic TLS must not make
/// delivery impossible, so Keel reconnects in plain text within the same attempt.
fn starttls_fault(mode: &str) {
    let dir = tempfile::tempdir().unwrap();
    let mx = BadMx::start(dir.path(), mode, 0);
    let mut keel = Keel::start(&Conf {
        rest: delivery_conf(mx.port),
        ..Conf::default()
    });
    let started = Instant::now();
    submit(&keel, "rcpt@dest.test", &format!("{mode}@src.test"), 1);
    let delivered = keel.wait_events("Delivery", 1, Duration::from_secs(30));
    assert_eq!(delivered.len(), 1, "{mode}: stderr:\n{}", keel.stderr());
    let took = started.elapsed();
    assert_eq!(delivered[0]["attempt"], 1);
    assert!(keel.events_of("TransientFailure").is_empty());
    let recs = mx.records();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0]["tls"], false);
    assert_eq!(
        mx.connections(),
        2,
        "one TLS try, one plain-text connection"
    );
    assert!(
        keel.stderr()
            .contains("STARTTLS handshake failed; retrying without TLS"),
        "{}",
        keel.stderr()
    );
    assert_alive(&mut keel);
    println!(
        "{mode}: delivered at attempt 1 in plain text after {:.1} s, {} connections",
        took.as_secs_f64(),
        mx.connections()
    );
}

#[test]
fn broken_starttls_falls_back_to_plain_text() {
    starttls_fault("starttls-broken");
}

#[test]
fn stalled_starttls_handshake_falls_back_to_plain_text() {
    // The handshake times out after `timeouts.ehlo` (2 s here).
    starttls_fault("starttls-stall");
}

#[test]
fn large_message_to_a_slow_receiver_is_not_cut_off() {
    // 12 MiB to a receiver that takes ~8 s to read it (64 KiB per 40 ms): every chunk is
    // accepted well within `data_block` (2 s), the whole body is not, and that is fine
    // (RFC 5321 §4.5.3.2.5 times each send, not the message).
    let dir = tempfile::tempdir().unwrap();
    let mx = BadMx::start(dir.path(), "slow-reader", 0);
    let mut keel = Keel::start(&Conf {
        rest: delivery_conf_with(mx.port, "30s"),
        ..Conf::default()
    });
    submit(&keel, "rcpt@dest.test", "slow@src.test", 12 * 1024);
    let started = Instant::now();
    let delivered = keel.wait_events("Delivery", 1, Duration::from_secs(60));
    assert_eq!(
        delivered.len(),
        1,
        "events {:?}; stderr:\n{}",
        keel.events_of("TransientFailure"),
        keel.stderr()
    );
    assert_eq!(delivered[0]["attempt"], 1);
    assert!(keel.events_of("TransientFailure").is_empty());
    let recs = mx.records();
    assert_eq!(recs.len(), 1);
    assert!(recs[0]["size"].as_u64().unwrap() > 12 * 1024 * 1024);
    assert_alive(&mut keel);
    println!(
        "slow-reader: 12 MiB delivered at attempt 1 in {:.1} s with data_block = 2 s",
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn mx_lookup_timeout_is_transient_then_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let sink = PySink::start(dir.path(), &[]);
    let zone_path = |port: u16| dir.path().join(format!("zone-{port}.json"));
    let dns = Dns::start(dir.path(), &json!({ "slow.test.": [["TIMEOUT"]] }));
    let mut keel = Keel::start(&Conf {
        rest: format!(
            "[dns]\nnameservers = [\"127.0.0.1:{}\"]\n\n[delivery]\nport = {}\n\
             connect_timeout = \"2s\"\n\n[retry]\nintervals = [\"1s\"]\nmax_age = \"1h\"\n",
            dns.port, sink.port
        ),
        ..Conf::default()
    });
    let started = Instant::now();
    submit(&keel, "user@slow.test", "dns-timeout@src.test", 1);
    // The resolver gives up after its timeout (5 s) and retry (2 attempts).
    let failures = keel.wait_events("TransientFailure", 1, Duration::from_secs(60));
    assert!(!failures.is_empty(), "stderr:\n{}", keel.stderr());
    let waited = started.elapsed();
    let r = &failures[0]["response"];
    assert_eq!(r["code"], 451);
    assert_eq!(r["enhanced"], "4.4.3");
    assert!(
        r["text"]
            .as_str()
            .unwrap()
            .contains("MX lookup for slow.test failed"),
        "{r}"
    );
    assert!(keel.events_of("Bounce").is_empty());
    assert_alive(&mut keel);
    // DNS answers again: the message goes out at a later attempt.
    let tmp = dir.path().join("zone.tmp");
    let zone = json!({
        "slow.test.": [["MX", 10, "mx.slow.test."]],
        "mx.slow.test.": [["A", "127.0.0.1"]],
    });
    std::fs::write(&tmp, zone.to_string()).unwrap();
    std::fs::rename(&tmp, zone_path(dns.port)).unwrap();
    let delivered = keel.wait_events("Delivery", 1, Duration::from_secs(60));
    assert_eq!(delivered.len(), 1, "stderr:\n{}", keel.stderr());
    assert_eq!(delivered[0]["site"], "mx.slow.test");
    assert_eq!(sink.wait_count(1, Duration::from_secs(30)).len(), 1);
    assert!(keel.events_of("Bounce").is_empty());
    println!(
        "dns timeout: first TransientFailure after {:.1} s ({}), {} failure(s) before the \
         zone answered, delivered at attempt {} after {:.1} s",
        waited.as_secs_f64(),
        r["text"].as_str().unwrap_or(""),
        keel.events_of("TransientFailure").len(),
        delivered[0]["attempt"],
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn open_relay_matrix_refuses_every_trick() {
    // Loopback is not a relay network here, and nobody authenticates.
    let mut keel = Keel::start(&Conf {
        smtp: "relay_networks = [\"192.0.2.0/24\"]".into(),
        ..Conf::default()
    });
    // `ingress.rs` covers the basic forms; these are the other routing tricks, aimed at the
    // server's own name and at addresses that look local.
    let tricks = [
        "user%elsewhere.test@keel.test",
        "user%elsewhere.test@[127.0.0.1]",
        "@keel.test,@relay.test:user@elsewhere.test",
        "@keel.test:user%elsewhere.test@keel.test",
        "\"user@elsewhere.test\"@keel.test",
        "\"user%elsewhere.test\"@keel.test",
        "elsewhere.test!user@keel.test",
        "a!b@elsewhere.test",
        "elsewhere.test!user",
        "user@KEEL.TEST",
        "user@keel.test.",
        "user@Elsewhere.Test",
        "user@elsewhere.test..",
        "user@[192.0.2.1]",
        "user@[IPv6:::1]",
        "user@[ipv6:2001:db8::1]",
        "user@[IPv6:::ffff:127.0.0.1]",
        "postmaster@[127.0.0.1]",
    ];
    let mut codes = Vec::new();
    // One session each: refusals count towards the session's error limit.
    for rcpt in tricks {
        let (mut c, _) = SmtpClient::connect(keel.smtp_port);
        assert!(c.cmd("EHLO c.test").starts_with("250"));
        assert!(c.cmd("MAIL FROM:<a@src.test>").starts_with("250"), "{rcpt}");
        let r = c.cmd(&format!("RCPT TO:<{rcpt}>"));
        assert!(r.starts_with('5'), "{rcpt}: {r}");
        codes.push(format!("{rcpt} → {}", r.trim_end()));
        let d = c.cmd("DATA");
        assert!(d.starts_with("554 5.5.1"), "{rcpt}: DATA {d}");
        assert!(c.cmd("QUIT").starts_with("221"), "{rcpt}");
    }
    // Nothing was queued: no Reception (the event log is written within a moment).
    std::thread::sleep(Duration::from_millis(1000));
    assert!(
        keel.events_of("Reception").is_empty(),
        "{:?}",
        keel.events()
    );
    assert_alive(&mut keel);
    println!(
        "open-relay matrix: {} addresses refused, 0 queued\n  {}",
        tricks.len(),
        codes.join("\n  ")
    );
}
