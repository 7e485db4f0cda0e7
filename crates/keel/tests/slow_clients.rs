//! Ingress defence against slow and greedy clients, over real sockets: the session and
//! per-message deadlines (`421 4.4.2`), the per-client connection rate (`421 4.7.0`), and
//! thousands of idle connections that must not keep a legitimate client from being served.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;

/// Resident memory of a process, from `/proc/<pid>/status` (kB → MiB).
fn rss_mib(pid: i32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// A complete transaction; returns the final reply and how long it took.
fn send_one(port: u16) -> (String, Duration) {
    let start = Instant::now();
    let (mut c, greeting) = SmtpClient::connect(port);
    assert!(greeting.starts_with("220"), "{greeting}");
    assert!(c.cmd("EHLO legit.test").starts_with("250"));
    assert!(c.cmd("MAIL FROM:<a@src.test>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<b@dest.test>").starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    c.send_raw(b"Subject: hello\r\nMessage-ID: <legit@src.test>\r\n\r\nbody\r\n.\r\n");
    let r = c.reply();
    let took = start.elapsed();
    let _ = c.cmd("QUIT");
    (r, took)
}

#[test]
fn trickling_clients_hit_the_message_and_session_deadlines() {
    let keel = Keel::start(&Conf {
        smtp: "timeouts = { session = \"4s\", message = \"2s\", command = \"30s\", data_block = \"30s\" }".into(),
        ..Conf::default()
    });
    // A client trickling its message one byte every 200 ms: each read is well within
    // data_block, but the message as a whole gets 2 s.
    let (mut c, _) = SmtpClient::connect(keel.smtp_port);
    c.cmd("EHLO slow.test");
    assert!(c.cmd("MAIL FROM:<a@src.test>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<b@dest.test>").starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    let start = Instant::now();
    let mut closed = false;
    for _ in 0..100 {
        std::thread::sleep(Duration::from_millis(200));
        if c.try_send_raw(b"x").is_err() {
            closed = true;
            break;
        }
        if start.elapsed() > Duration::from_secs(3) {
            break;
        }
    }
    let r = c.reply();
    let took = start.elapsed();
    println!("trickled DATA ended after {took:?} (closed while writing: {closed}): {r}");
    assert!(r.starts_with("421 4.4.2"), "{r}");
    assert!(took < Duration::from_secs(4), "message deadline is 2 s");

    // A client that keeps the session busy with NOOPs: each answered, until the session's 4 s.
    let (mut c, _) = SmtpClient::connect(keel.smtp_port);
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < Duration::from_secs(10) {
        last = c.cmd("NOOP");
        if !last.starts_with("250") {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let took = start.elapsed();
    println!("NOOP-busy session ended after {took:?}: {last}");
    assert!(last.starts_with("421 4.4.2"), "{last}");
    assert!(took >= Duration::from_secs(3) && took < Duration::from_secs(6));
}

#[test]
fn connection_rate_per_client_is_limited() {
    // Loopback must not be a relay network here: relay clients are exempt from the rate.
    let keel = Keel::start(&Conf {
        smtp: "relay_networks = [\"192.0.2.0/24\"]\nmax_connection_rate_per_ip = \"5/min\"".into(),
        ..Conf::default()
    });
    let mut replies = Vec::new();
    for _ in 0..7 {
        let (mut c, greeting) = SmtpClient::connect(keel.smtp_port);
        if greeting.starts_with("220") {
            c.cmd("QUIT");
        }
        replies.push(greeting);
    }
    let served = replies.iter().filter(|r| r.starts_with("220")).count();
    // The harness's readiness probe (one connection when keel starts) took a token.
    println!("7 connections at once with 5/min (one used by the start-up probe): {served} served");
    assert_eq!(served, 4, "{replies:?}");
    assert!(replies[4].starts_with("421 4.7.0"), "{}", replies[4]);
    assert!(replies[6].starts_with("421 4.7.0"), "{}", replies[6]);
}

/// Idle connections: `KEEL_IDLE_CONNECTIONS` of them (10,000 by default; it takes under a
/// second) sit after the greeting while a legitimate client completes a transaction. If this
/// process may not open that many files, the count is lowered to fit, with a message.
#[test]
fn idle_connections_do_not_starve_a_legitimate_client() {
    let mut count: usize = std::env::var("KEEL_IDLE_CONNECTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    // This process holds one descriptor per connection too.
    {
        use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
        let l = getrlimit(Resource::Nofile);
        let _ = setrlimit(
            Resource::Nofile,
            Rlimit {
                current: l.maximum,
                maximum: l.maximum,
            },
        );
        let now = getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX);
        let fits = usize::try_from(now.saturating_sub(200)).unwrap_or(usize::MAX);
        if fits < count {
            println!("open-file limit {now}: testing {fits} idle connections instead of {count}");
            count = fits;
        }
    }
    let limit = count + 100;
    let keel = Keel::start(&Conf {
        smtp: format!(
            "max_connections = {limit}\nmax_connections_per_ip = {limit}\nmax_connection_rate_per_ip = \"none\""
        ),
        ..Conf::default()
    });
    let pid = keel.proc.as_ref().map(|p| p.pid()).unwrap_or_default();
    let rss_before = rss_mib(pid);
    let (r, baseline) = send_one(keel.smtp_port);
    assert!(r.starts_with("250"), "{r}");

    let start = Instant::now();
    let mut idle = Vec::with_capacity(count);
    for i in 0..count {
        match TcpStream::connect(("127.0.0.1", keel.smtp_port)) {
            Ok(s) => idle.push(s),
            Err(e) => panic!("connection {i} failed: {e}"),
        }
    }
    let connected = start.elapsed();
    // Make sure Keel has accepted them all and each holds a session (read each greeting).
    let mut greeted = 0;
    for s in &mut idle {
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut buf = [0u8; 64];
        if std::io::Read::read(s, &mut buf).is_ok_and(|n| n >= 3 && buf.starts_with(b"220")) {
            greeted += 1;
        }
    }
    let opened = start.elapsed();
    let rss_idle = rss_mib(pid);
    let (r, loaded) = send_one(keel.smtp_port);
    let rss_after = rss_mib(pid);
    println!(
        "idle connections: {count} connected in {connected:?}, greeted ({greeted}) by {opened:?}; \
         legitimate transaction {baseline:?} before, {loaded:?} with them; \
         keel RSS {rss_before:.1} MiB before, {rss_idle:.1} MiB idle-loaded, {rss_after:.1} MiB after"
    );
    assert_eq!(greeted, count, "every idle connection got its own session");
    assert!(r.starts_with("250"), "{r}");
    assert!(
        loaded < Duration::from_secs(2),
        "served promptly: {loaded:?}"
    );
    let per_conn_kib = (rss_idle - rss_before) * 1024.0 / count as f64;
    println!("≈ {per_conn_kib:.1} KiB per idle connection");
    assert!(
        per_conn_kib < 64.0,
        "idle sessions must stay cheap: {per_conn_kib:.1} KiB each"
    );
    // Idle clients that say nothing still get nothing more than the greeting; close them.
    for mut s in idle.drain(..) {
        let _ = s.write_all(b"QUIT\r\n");
    }
}
