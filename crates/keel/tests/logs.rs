//! The event log under rotation, `keel logs`, and `/readyz`, through the real binary:
//! Postfix's smtp-source in, smtp-sink out, a rotate_size small enough to rotate every few
//! dozen events.

mod common;

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// Keel relaying everything to `sink_port`, rotating its event log every `rotate_size`.
fn start_rotating(sink_port: u16, rotate_size: &str) -> Keel {
    // Keys before the first table header of `rest` land in the harness's `[log]`.
    Keel::start(&Conf {
        rest: format!(
            "rotate_size = \"{rotate_size}\"\nmax_files = 10000\n\n\
             [[route]]\ndomain = \"*\"\nsmarthost = \"127.0.0.1:{sink_port}\"\n"
        ),
        ..Conf::default()
    })
}

/// Sends one message to `rcpt` over SMTP and returns its queue id.
fn send(port: u16, rcpt: &str) -> String {
    let (mut c, _) = SmtpClient::connect(port);
    c.cmd("EHLO client.test");
    assert!(c.cmd("MAIL FROM:<probe@src.test>").starts_with("250"));
    assert!(c.cmd(&format!("RCPT TO:<{rcpt}>")).starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    c.send_raw(b"Subject: probe\r\n\r\nprobe\r\n.\r\n");
    let r = c.reply();
    assert!(r.starts_with("250 2.0.0 Ok: queued as "), "{r}");
    c.cmd("QUIT");
    r.trim_end()
        .rsplit(' ')
        .next()
        .unwrap_or_default()
        .to_string()
}

fn delivered(keel: &Keel, id: &str) -> bool {
    keel.events_of("Delivery").iter().any(|e| e["id"] == id)
}

fn live_size(keel: &Keel) -> u64 {
    std::fs::metadata(keel.dir.join("log/events.jsonl"))
        .map(|m| m.len())
        .unwrap_or(0)
}

fn segment_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n != "events.jsonl")
        .collect();
    v.sort();
    v
}

fn keel_logs(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_keel"))
        .arg("logs")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run keel logs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn rotation_under_load_keeps_every_event_line_exactly_once_and_compresses_segments() {
    let tmp = tempfile::tempdir().unwrap();
    let sink = PostfixSink::start(tmp.path());
    // 16 KB segments: about 40 events each.
    let mut keel = start_rotating(sink.port, "16KB");

    // Ready once the spool is recovered and the listeners are bound (the SMTP port answering
    // may come a moment before the flag is set).
    assert!(wait_until(Duration::from_secs(5), || keel
        .http_get("/readyz")
        .0
        == 200));
    let (_, body) = keel.http_get("/readyz");
    assert_eq!(body, r#"{"status":"ready"}"#);
    let (status, _) = keel.http_get("/healthz");
    assert_eq!(status, 200);

    // A first message whose lines will be rotated (and compressed) away by the load.
    let early = send(keel.smtp_port, "needle@dest.test");
    assert!(wait_until(Duration::from_secs(20), || delivered(
        &keel, &early
    )));

    let n = 2000;
    let status = smtp_source(keel.smtp_port, 10, n, 1000, "rcpt@dest.test");
    assert!(status.success(), "smtp-source failed: {status}");
    assert!(
        wait_until(Duration::from_secs(90), || sink.count() > u64::from(n)),
        "sink got {} of {}",
        sink.count(),
        n + 1
    );

    // A last message whose lines stay in the live file: first make room in it, so its two
    // lines cannot trigger a rotation.
    let mut fillers = 0;
    while live_size(&keel) > 12 * 1024 {
        let id = send(keel.smtp_port, "filler@dest.test");
        assert!(wait_until(Duration::from_secs(20), || delivered(
            &keel, &id
        )));
        fillers += 1;
        assert!(fillers < 40, "the live file never rotated");
    }
    let late = send(keel.smtp_port, "needle@dest.test");
    assert!(wait_until(Duration::from_secs(20), || delivered(
        &keel, &late
    )));
    let live = std::fs::read_to_string(keel.dir.join("log/events.jsonl")).unwrap();
    assert!(live.contains(&late) && !live.contains(&early));

    // `keel logs` finds the needle's four lines, from a compressed segment and the live file.
    let cfg = keel.config.display().to_string();
    let (ok, out, err) = keel_logs(&[
        "--config",
        &cfg,
        "--json",
        "--filter",
        "recipient=NEEDLE@dest.test",
    ]);
    assert!(ok, "{err}");
    let found: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("raw JSON lines"))
        .collect();
    let got: Vec<(String, String)> = found
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap().to_owned(),
                e["id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let want: Vec<(String, String)> = [
        ("Reception", &early),
        ("Delivery", &early),
        ("Reception", &late),
        ("Delivery", &late),
    ]
    .iter()
    .map(|(t, id)| (t.to_string(), id.to_string()))
    .collect();
    assert_eq!(got, want, "stderr: {err}");
    // Two filters on different fields must both match; the human format names the event.
    let (ok, out, _) = keel_logs(&[
        "--dir",
        &keel.dir.join("log").display().to_string(),
        "--filter",
        &format!("id={early}"),
        "--filter",
        "type=Delivery",
    ]);
    assert!(ok);
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.contains(" Delivery ") && out.contains("probe@src.test -> needle@dest.test"));

    // Stop: the writer flushes, the archiver compresses what was rotated.
    assert!(keel.terminate(Duration::from_secs(30)).is_some());
    let log_dir = keel.dir.join("log");
    let names = segment_names(&log_dir);
    let compressed = names.iter().filter(|n| n.ends_with(".jsonl.zst")).count();
    assert!(
        compressed >= 50,
        "only {compressed} compressed segments: {names:?}"
    );
    assert!(
        names.iter().all(|n| n.ends_with(".jsonl.zst")),
        "left uncompressed or temporary: {:?}",
        names
            .iter()
            .filter(|n| !n.ends_with(".jsonl.zst"))
            .collect::<Vec<_>>()
    );

    // Every line is whole JSON, and every message has exactly one Reception and one Delivery.
    let lines = event_log_lines(&log_dir);
    let mut per_type: HashMap<String, HashMap<String, usize>> = HashMap::new();
    for l in &lines {
        let e: Value = serde_json::from_str(l).unwrap_or_else(|_| panic!("torn line: {l:?}"));
        let key = format!(
            "{}/{}",
            e["id"].as_str().unwrap(),
            e["recipient"].as_str().unwrap()
        );
        *per_type
            .entry(e["type"].as_str().unwrap().to_owned())
            .or_default()
            .entry(key)
            .or_default() += 1;
    }
    let messages = n as usize + 2 + fillers;
    for kind in ["Reception", "Delivery"] {
        let seen = &per_type[kind];
        assert_eq!(seen.len(), messages, "{kind} events");
        let dups: Vec<_> = seen.iter().filter(|(_, c)| **c != 1).collect();
        assert!(
            dups.is_empty(),
            "{kind} lines logged more than once: {dups:?}"
        );
    }
    let received: HashSet<&String> = per_type["Reception"].keys().collect();
    let delivered: HashSet<&String> = per_type["Delivery"].keys().collect();
    assert_eq!(received, delivered);
}

#[test]
fn follow_tails_the_live_file_across_rotations() {
    let tmp = tempfile::tempdir().unwrap();
    let sink = PostfixSink::start(tmp.path());
    let keel = start_rotating(sink.port, "8KB");
    let log_dir = keel.dir.join("log");
    let out_path = tmp.path().join("follow.jsonl");
    let mut follower = Proc::spawn(
        "keel logs --follow",
        Command::new(env!("CARGO_BIN_EXE_keel"))
            .arg("logs")
            .arg("--dir")
            .arg(&log_dir)
            .args(["--follow", "--json", "--filter", "type=Delivery"])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out_path).unwrap())
            .stderr(Stdio::null()),
    );
    let n = 600;
    let status = smtp_source(keel.smtp_port, 5, n, 500, "tail@dest.test");
    assert!(status.success());
    let count = || {
        std::fs::File::open(&out_path)
            .map(|f| BufReader::new(f).lines().count())
            .unwrap_or(0)
    };
    let end = Instant::now() + Duration::from_secs(60);
    while count() < n as usize && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(100));
    }
    // Nothing more should come.
    std::thread::sleep(Duration::from_millis(500));
    follower.kill9();
    let rotated = segment_names(&log_dir).len();
    assert!(
        rotated >= 20,
        "only {rotated} segments: the test did not exercise rotation"
    );
    let text = std::fs::read_to_string(&out_path).unwrap();
    let ids: Vec<String> = text
        .lines()
        .map(|l| {
            let e: Value = serde_json::from_str(l).unwrap_or_else(|_| panic!("torn: {l:?}"));
            assert_eq!(e["type"], "Delivery");
            e["id"].as_str().unwrap().to_owned()
        })
        .collect();
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(ids.len(), n as usize, "lines followed");
    assert_eq!(unique.len(), n as usize, "each delivery once");
}
