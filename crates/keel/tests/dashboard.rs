//! The dashboard at `/`, end to end in Debian's headless chromium driven by playwright-core
//! (`tests/browser/dashboard.mjs`; both installed by `scripts/install-test-deps.sh`): the page
//! asks for the API token, shows a suspended domain with its queued message, and its Resume
//! button gets the message delivered.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const TOKEN: &str = "dashboard-test-token-0123456789";

/// A minimal HTTP/1.1 request with the bearer token: (status, body).
fn http(port: u16, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect HTTP");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\
         Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    let status = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/browser")
}

#[test]
fn dashboard_shows_a_suspended_queue_and_resume_delivers_it() {
    let script = browser_dir().join("dashboard.mjs");
    assert!(
        browser_dir().join("node_modules/playwright-core").is_dir()
            && Path::new("/usr/bin/chromium").exists(),
        "playwright-core or chromium missing: run scripts/install-test-deps.sh"
    );

    let dir = tempfile::tempdir().unwrap();
    let sink = PySink::start(dir.path(), &[]);
    let mut keel = Keel::start(&Conf {
        rest: format!(
            "[[route]]\ndomain = \"*\"\nsmarthost = \"127.0.0.1:{}\"\n",
            sink.port
        ),
        ..Conf::default()
    });
    // The harness writes [http] itself: add the token and restart.
    keel.terminate(Duration::from_secs(10));
    let text = std::fs::read_to_string(&keel.config)
        .unwrap()
        .replace("[http]\n", &format!("[http]\napi_tokens = [\"{TOKEN}\"]\n"));
    std::fs::write(&keel.config, text).unwrap();
    keel.launch();

    // The page and its script are open; the data is not.
    let (status, page) = keel.http_get("/");
    assert_eq!(status, 200);
    assert!(page.contains("<script src=\"/app.js\">"), "{page}");
    assert_eq!(keel.http_get("/app.js").0, 200);
    assert_eq!(keel.http_get("/api/v1/stats/throughput").0, 401);

    let (status, body) = http(
        keel.http_port,
        "POST",
        "/api/v1/suspend",
        r#"{"domain":"held.test","reason":"dashboard test"}"#,
    );
    assert_eq!(status, 201, "{body}");
    // Resume takes a whole selector, as a reply rule's (site, source) suspension has: no
    // such suspension here, so "not found" rather than "bad request".
    let (status, body) = http(
        keel.http_port,
        "POST",
        "/api/v1/resume",
        r#"{"site":"mx.example","source":"ip1"}"#,
    );
    assert_eq!(status, 404, "{body}");
    let (mut c, _) = SmtpClient::connect(keel.smtp_port);
    c.cmd("EHLO c.test");
    assert!(c.cmd("MAIL FROM:<a@src.test>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<x@held.test>").starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    c.send_raw(b"Subject: held\r\n\r\nx\r\n.\r\n");
    assert!(c.reply().starts_with("250"));
    c.cmd("QUIT");
    assert!(
        wait_until(Duration::from_secs(10), || {
            let (_, b) = http(keel.http_port, "GET", "/api/v1/queues", "");
            let v: Value = serde_json::from_str(&b).unwrap_or_default();
            v["scheduled"][0]["domain"] == "held.test" && v["scheduled"][0]["parked"] == 1
        }),
        "the message was not parked under the suspension"
    );
    assert!(sink.records().is_empty(), "suspended mail was delivered");

    let shot = std::env::temp_dir().join("keel-dashboard.png");
    let mut cmd = Command::new("node");
    cmd.arg(&script)
        .arg(format!("http://127.0.0.1:{}/", keel.http_port))
        .arg("held.test")
        .arg(&shot)
        .env("KEEL_TOKEN", TOKEN)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut node = Proc::spawn("node dashboard.mjs", &mut cmd);
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Ok(Some(s)) = node.child.try_wait() {
            break s;
        }
        if Instant::now() > deadline {
            node.kill9();
            panic!("the browser test did not finish in 120 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut out = String::new();
    let mut err = String::new();
    if let Some(mut o) = node.child.stdout.take() {
        let _ = o.read_to_string(&mut out);
    }
    if let Some(mut e) = node.child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    assert!(status.success(), "browser test failed:\n{out}\n{err}");
    assert!(out.contains("dashboard: ok"), "{out}\n{err}");

    let recs = sink.wait_count(1, Duration::from_secs(30));
    assert_eq!(recs.len(), 1, "the resumed message reached the sink");
    assert_eq!(keel.events_of("Delivery")[0]["recipient"], "x@held.test");
}
