//! SIGKILL loop under load: the daemon is killed at random moments while it accepts and
//! delivers, and restarted, `KEEL_FAULT_CYCLES` times (3 here; `bench/faults.sh` runs 10).
//! At the end every message that got a 250 must have been delivered: lost must be 0.
//! Duplicates are allowed by the durability contract (progress written in the last second
//! before a kill may be lost) and are counted.
//!
//! `KEEL_FAULT_MESSAGES` sets the load (default 2,500 per cycle, so injection outlasts the
//! kills: about a second of load between two kills).

mod common;

use std::collections::{HashMap, HashSet};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A small xorshift generator seeded from the clock: random kill moments without a crate.
/// The seed is printed so a failing run can be told apart.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform in [lo, hi) milliseconds.
    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.next() % (hi - lo))
    }
}

#[test]
fn repeated_sigkill_under_load_loses_nothing() {
    let cycles = env_or("KEEL_FAULT_CYCLES", 3);
    let n = env_or("KEEL_FAULT_MESSAGES", 2500 * cycles.max(1));
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        | 1;
    let mut rng = Rng(seed);
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
    let deadline = 120 + 30 * cycles;
    let mut inject = Proc::spawn(
        "inject.py",
        Command::new(python())
            .arg(peers_dir().join("inject.py"))
            .args(["--port", &keel.smtp_port.to_string()])
            .args([
                "--count",
                &n.to_string(),
                "--threads",
                "10",
                "--size",
                "3000",
            ])
            .args(["--deadline", &deadline.to_string(), "--tag", "loop"])
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
    let delivered_count = || sink.records().len();
    let started = Instant::now();
    let mut kills = Vec::new();
    for cycle in 0..cycles {
        // Let load resume (a few acks since the last start), then kill at a random moment.
        let before = acked_count();
        wait_until(Duration::from_secs(30), || {
            acked_count() >= (before + 20).min(n)
        });
        std::thread::sleep(rng.millis(100, 1200));
        let (a, d) = (acked_count(), delivered_count());
        let under_load = a < n;
        keel.kill9();
        kills.push((a, d));
        println!(
            "cycle {}: SIGKILL with {a} acked, {d} delivered{}",
            cycle + 1,
            if under_load {
                " (injecting)"
            } else {
                " (injection over: delivery only)"
            }
        );
        std::thread::sleep(rng.millis(50, 500));
        keel.launch();
    }
    let end = Instant::now() + Duration::from_secs(deadline as u64 + 30);
    while inject.child.try_wait().ok().flatten().is_none() {
        assert!(Instant::now() < end, "injection did not finish");
        std::thread::sleep(Duration::from_millis(100));
    }
    let acked_ids: HashSet<String> = std::fs::read_to_string(&acked)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    let mut counts: HashMap<String, usize> = HashMap::new();
    wait_until(Duration::from_secs(180), || {
        counts.clear();
        for r in sink.records() {
            if let Some(id) = r["message_id"].as_str() {
                *counts.entry(id.to_string()).or_default() += 1;
            }
        }
        acked_ids.iter().all(|id| counts.contains_key(id))
    });
    let lost: Vec<&String> = acked_ids
        .iter()
        .filter(|id| !counts.contains_key(*id))
        .collect();
    let total: usize = counts.values().sum();
    let duplicates = total - counts.len();
    println!(
        "SIGKILL loop (seed {seed}): {cycles} kills in {:?}; {n} messages, {} acked, {} delivered \
         ({total} deliveries, {duplicates} duplicates); lost {}",
        started.elapsed(),
        acked_ids.len(),
        counts.len(),
        lost.len()
    );
    assert_eq!(acked_ids.len(), n, "every message was eventually accepted");
    assert!(
        lost.is_empty(),
        "lost {} acknowledged messages, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
}
