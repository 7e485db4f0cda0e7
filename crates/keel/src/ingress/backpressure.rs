//! Staged back-pressure on SMTP ingress (the Exchange model): when the spool's disk fills,
//! memory grows or the queue backs up, Keel sheds *new* mail in steps instead of failing
//! writes, while delivery keeps running and drains the backlog.
//!
//! A monitor task samples three resources every second — free space on the spool's
//! filesystem (`statvfs`), the daemon's resident memory (`/proc/self/statm`) and live messages
//! in the spool ([`keel_spool::Spool::stats`]) — and maps each against its thresholds
//! (`[smtp.backpressure]`); the worst resource sets the [`Stage`], published through a
//! `tokio::sync::watch` that every session reads without locking:
//!
//! | stage | effect |
//! |---|---|
//! | normal | none |
//! | slow | each MAIL reply is held back by `tarpit` (1 s): senders slow down, nobody is refused |
//! | defer | `452 4.3.1 Insufficient system storage` at MAIL and RCPT; the client retries later |
//! | refuse | `421 4.3.2` at connect |
//!
//! Going up a stage is immediate (a filling disk does not wait); coming down needs
//! [`STEP_DOWN_AFTER`] consecutive calmer samples, so a value hovering at a threshold does not
//! flap the stage every second. Every change is logged, and `/readyz` answers 503 with the
//! stage while it is not normal, so a load balancer moves traffic elsewhere.
//!
//! Cost: one `statvfs`, one small `/proc` read and one spool index lock per second.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use keel_config::{BackpressureConfig, Thresholds};
use keel_spool::Spool;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::readiness::Readiness;

/// How often the monitor samples.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);

/// Consecutive samples calling for a lower stage before the stage is lowered.
pub const STEP_DOWN_AFTER: u32 = 5;

/// How hard ingress is shedding load, mildest first (so `max` picks the worst).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
#[repr(u8)]
pub enum Stage {
    #[default]
    Normal = 0,
    Slow = 1,
    Defer = 2,
    Refuse = 3,
}

impl Stage {
    /// The word logs and `/readyz` use.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Normal => "normal",
            Stage::Slow => "slow",
            Stage::Defer => "defer",
            Stage::Refuse => "refuse",
        }
    }

    /// The inverse of `as u8` (unknown values read as normal).
    pub fn from_u8(v: u8) -> Stage {
        match v {
            1 => Stage::Slow,
            2 => Stage::Defer,
            3 => Stage::Refuse,
            _ => Stage::Normal,
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One measurement. A resource that could not be read is `None` and does not count (a
/// failing `/proc` read must not refuse mail).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sample {
    pub disk_free: Option<u64>,
    pub memory: Option<u64>,
    pub queued: Option<u64>,
}

/// The stage one resource calls for, and why.
fn rising(value: Option<u64>, t: &Thresholds) -> Stage {
    let Some(v) = value else { return Stage::Normal };
    let over = |limit: Option<u64>| limit.is_some_and(|l| v >= l);
    if over(t.refuse) {
        Stage::Refuse
    } else if over(t.defer) {
        Stage::Defer
    } else if over(t.slow) {
        Stage::Slow
    } else {
        Stage::Normal
    }
}

fn falling(value: Option<u64>, t: &Thresholds) -> Stage {
    let Some(v) = value else { return Stage::Normal };
    let under = |limit: Option<u64>| limit.is_some_and(|l| v < l);
    if under(t.refuse) {
        Stage::Refuse
    } else if under(t.defer) {
        Stage::Defer
    } else if under(t.slow) {
        Stage::Slow
    } else {
        Stage::Normal
    }
}

/// The stage a sample calls for: the worst over the three resources, with the resource that
/// set it (for the log).
pub fn stage_for(cfg: &BackpressureConfig, s: &Sample) -> (Stage, &'static str) {
    [
        (falling(s.disk_free, &cfg.disk_free), "disk_free"),
        (rising(s.memory, &cfg.memory), "memory"),
        (rising(s.queued, &cfg.queued), "queued"),
    ]
    .into_iter()
    .max_by_key(|(stage, _)| *stage)
    .unwrap_or((Stage::Normal, "none"))
}

/// The stage over time: up at once, down only after [`STEP_DOWN_AFTER`] calmer samples.
#[derive(Debug, Default)]
pub struct Stager {
    current: Stage,
    calmer: u32,
}

impl Stager {
    pub fn current(&self) -> Stage {
        self.current
    }

    /// Takes the stage a new sample calls for; returns the new stage if it changed.
    pub fn observe(&mut self, wanted: Stage) -> Option<Stage> {
        if wanted > self.current {
            self.current = wanted;
            self.calmer = 0;
            return Some(wanted);
        }
        if wanted == self.current {
            self.calmer = 0;
            return None;
        }
        self.calmer += 1;
        if self.calmer < STEP_DOWN_AFTER {
            return None;
        }
        // Down one step at a time at most to the wanted one: the next step needs its own run.
        self.calmer = 0;
        self.current = Stage::from_u8(self.current as u8 - 1).max(wanted);
        Some(self.current)
    }
}

/// Free bytes for unprivileged writers on the filesystem holding `dir`.
pub fn disk_free(dir: &Path) -> Option<u64> {
    let st = rustix::fs::statvfs(dir).ok()?;
    Some(st.f_bavail.saturating_mul(st.f_frsize))
}

/// This process's resident set size in bytes (Linux; `None` elsewhere).
pub fn resident_memory() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages.saturating_mul(rustix::param::page_size() as u64))
}

/// Samples the resources and publishes the stage until `shutdown`.
pub struct Monitor {
    pub cfg: BackpressureConfig,
    pub spool: Spool,
    pub spool_dir: PathBuf,
    pub readiness: Arc<Readiness>,
}

impl Monitor {
    /// Takes a first sample at once (so a daemon started on a full disk refuses from its first
    /// connection), then spawns the sampling task. The receiver is what sessions read.
    pub fn start(self, shutdown: CancellationToken) -> watch::Receiver<Stage> {
        let mut stager = Stager::default();
        let first = self.sample();
        let (wanted, why) = stage_for(&self.cfg, &first);
        if stager.observe(wanted).is_some() {
            log_change(Stage::Normal, wanted, why, &first);
        }
        self.readiness.set_stage(stager.current());
        let (tx, rx) = watch::channel(stager.current());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SAMPLE_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = shutdown.cancelled() => break,
                }
                let sample = self.sample();
                let (wanted, why) = stage_for(&self.cfg, &sample);
                let before = stager.current();
                if let Some(now) = stager.observe(wanted) {
                    log_change(before, now, why, &sample);
                    self.readiness.set_stage(now);
                    tx.send_replace(now);
                }
            }
        });
        rx
    }

    fn sample(&self) -> Sample {
        Sample {
            disk_free: disk_free(&self.spool_dir),
            memory: resident_memory(),
            queued: Some(self.spool.stats().live_messages),
        }
    }
}

fn log_change(before: Stage, after: Stage, why: &str, s: &Sample) {
    let (free, rss, queued) = (s.disk_free, s.memory, s.queued);
    if after > before {
        tracing::warn!(from = %before, to = %after, resource = why, disk_free = ?free, memory = ?rss, ?queued,
            "ingress back-pressure stage raised");
    } else {
        tracing::info!(from = %before, to = %after, disk_free = ?free, memory = ?rss, ?queued,
            "ingress back-pressure stage lowered");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: u64 = 1024 * 1024;

    fn cfg() -> BackpressureConfig {
        BackpressureConfig {
            disk_free: Thresholds {
                slow: Some(200 * MB),
                defer: Some(100 * MB),
                refuse: Some(50 * MB),
            },
            memory: Thresholds {
                slow: Some(1000 * MB),
                defer: None,
                refuse: Some(3000 * MB),
            },
            queued: Thresholds {
                slow: Some(100),
                defer: Some(200),
                refuse: Some(300),
            },
            tarpit: Duration::from_secs(1),
        }
    }

    fn sample(disk_mb: u64, mem_mb: u64, queued: u64) -> Sample {
        Sample {
            disk_free: Some(disk_mb * MB),
            memory: Some(mem_mb * MB),
            queued: Some(queued),
        }
    }

    #[test]
    fn each_resource_maps_to_its_stage() {
        let c = cfg();
        assert_eq!(stage_for(&c, &sample(500, 10, 0)).0, Stage::Normal);
        // Disk free falls through the thresholds; the threshold itself is still fine.
        assert_eq!(stage_for(&c, &sample(200, 10, 0)).0, Stage::Normal);
        assert_eq!(
            stage_for(&c, &sample(199, 10, 0)),
            (Stage::Slow, "disk_free")
        );
        assert_eq!(stage_for(&c, &sample(99, 10, 0)).0, Stage::Defer);
        assert_eq!(stage_for(&c, &sample(49, 10, 0)).0, Stage::Refuse);
        // Memory and the queue rise through theirs; a stage left out ("none") is skipped.
        assert_eq!(
            stage_for(&c, &sample(500, 1000, 0)),
            (Stage::Slow, "memory")
        );
        assert_eq!(stage_for(&c, &sample(500, 2999, 0)).0, Stage::Slow);
        assert_eq!(stage_for(&c, &sample(500, 3000, 0)).0, Stage::Refuse);
        assert_eq!(
            stage_for(&c, &sample(500, 10, 250)),
            (Stage::Defer, "queued")
        );
        // The worst resource wins.
        assert_eq!(
            stage_for(&c, &sample(150, 10, 301)),
            (Stage::Refuse, "queued")
        );
        // Unreadable resources do not count.
        assert_eq!(stage_for(&c, &Sample::default()).0, Stage::Normal);
    }

    #[test]
    fn stage_rises_at_once_and_falls_after_a_calm_run_one_step_at_a_time() {
        let c = cfg();
        let mut st = Stager::default();
        let mut feed = |s: Sample| st.observe(stage_for(&c, &s).0);
        assert_eq!(feed(sample(500, 10, 0)), None);
        assert_eq!(
            feed(sample(40, 10, 0)),
            Some(Stage::Refuse),
            "straight to refuse"
        );
        // Space comes back: four calm samples change nothing, the fifth steps down once.
        for _ in 0..STEP_DOWN_AFTER - 1 {
            assert_eq!(feed(sample(500, 10, 0)), None);
        }
        assert_eq!(feed(sample(500, 10, 0)), Some(Stage::Defer));
        // A relapse resets the run.
        for _ in 0..STEP_DOWN_AFTER - 1 {
            assert_eq!(feed(sample(500, 10, 0)), None);
        }
        assert_eq!(
            feed(sample(90, 10, 0)),
            None,
            "defer again: no change, run reset"
        );
        for _ in 0..STEP_DOWN_AFTER - 1 {
            assert_eq!(feed(sample(500, 10, 0)), None);
        }
        assert_eq!(feed(sample(500, 10, 0)), Some(Stage::Slow));
        for _ in 0..STEP_DOWN_AFTER - 1 {
            assert_eq!(feed(sample(150, 10, 0)), None, "slow is wanted: stays");
        }
        for _ in 0..STEP_DOWN_AFTER - 1 {
            assert_eq!(feed(sample(500, 10, 0)), None);
        }
        assert_eq!(feed(sample(500, 10, 0)), Some(Stage::Normal));
    }

    #[test]
    fn resources_of_this_process_can_be_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(disk_free(dir.path()).is_some_and(|b| b > 0));
        assert!(resident_memory().is_some_and(|b| b > 1024 * 1024));
        assert_eq!(Stage::from_u8(Stage::Defer as u8), Stage::Defer);
    }
}
