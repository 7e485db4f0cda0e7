//! SIGKILL under load: every message that got a 250 is delivered after restart.

mod common;

use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

#[test]
fn sigkill_during_accept_and_delivery_loses_nothing() {
    const N: usize = 5000;
    let dir = tempfile::tempdir().unwrap();
    let sink = PySink::start(dir.path(), &[]);
    let mut keel = Keel::start(&Conf {
        rest: format!(
            "[[route]]\ndomain = \"*\"\nsmarthost = \"127.0.0.1:{}\"\n[retry]\nintervals = [\"1s\"]\nmax_age = \"1h\"\n",
            sink.port
        ),
        ..Conf::default()
    });
    let acked = dir.path().join("acked.txt");
    let mut inject = Proc::spawn(
        "inject.py",
        Command::new(python())
            .arg(peers_dir().join("inject.py"))
            .args(["--port", &keel.smtp_port.to_string()])
            .args([
                "--count",
                &N.to_string(),
                "--threads",
                "10",
                "--size",
                "3000",
            ])
            .args(["--deadline", "240", "--tag", "crash"])
            .arg("--acked")
            .arg(&acked)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let acked_count = || {
        std::fs::read_to_string(&acked)
            .map(|s| s.lines().count())
            .unwrap_or(0)
    };
    // Kill while both accepting and delivering are in full swing.
    assert!(wait_until(Duration::from_secs(120), || acked_count() >= N / 3));
    keel.kill9();
    let at_kill = acked_count();
    std::thread::sleep(Duration::from_millis(500));
    keel.launch();
    let end = Instant::now() + Duration::from_secs(240);
    while inject.child.try_wait().ok().flatten().is_none() {
        assert!(Instant::now() < end, "injection did not finish");
        std::thread::sleep(Duration::from_millis(100));
    }
    let acked_ids: HashSet<String> = std::fs::read_to_string(&acked)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(acked_ids.len(), N, "every message was eventually accepted");
    let mut delivered = HashSet::new();
    wait_until(Duration::from_secs(180), || {
        delivered = sink
            .records()
            .iter()
            .filter_map(|r| r["message_id"].as_str().map(str::to_string))
            .collect();
        acked_ids.is_subset(&delivered)
    });
    let lost: Vec<&String> = acked_ids.difference(&delivered).collect();
    let total = sink.records().len();
    println!(
        "killed after {at_kill} acks; acked {} delivered {} unique ({} total, {} duplicates); lost {}",
        acked_ids.len(),
        delivered.len(),
        total,
        total - delivered.len(),
        lost.len()
    );
    assert!(
        lost.is_empty(),
        "lost {} acknowledged messages, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
}
