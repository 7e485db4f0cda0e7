//! Warm-up of new egress addresses: a daily cap per source for its first days of use.
//!
//! A new sending IP with no reputation is throttled or blocked by mailbox providers if it
//! starts at full volume. `[[egress.source]] warmup = ["1000/day", "5000/day", ...]` gives one
//! cap per day since the source's first use (UTC days), unlimited after the list. A source at
//! its cap is skipped when a pool picks a source, so its traffic overflows to the pool's other
//! sources; when every source of a pool is capped, new jobs wait for the next day.
//!
//! The first-use day and today's count persist in a small JSON file next to the spool
//! (written at most every sweep and at shutdown), so a restart keeps the schedule; a crash can
//! lose the last few seconds of counts, which only lets those few messages count twice.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use keel_config::EgressSource;
use serde::{Deserialize, Serialize};

/// Days since the Unix epoch, UTC.
pub fn today() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| (d.as_secs() / 86_400) as i64)
}

/// Time until the next UTC midnight.
pub fn until_tomorrow() -> Duration {
    let secs = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Duration::from_secs(86_400 - secs % 86_400)
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
struct SourceState {
    first_use: i64,
    day: i64,
    count: u64,
}

/// The warm-up state of every source.
#[derive(Debug, Default)]
pub struct Warmup {
    state: HashMap<String, SourceState>,
    path: Option<PathBuf>,
    dirty: bool,
}

impl Warmup {
    /// Loads the state file (a missing or unreadable file starts fresh, with a warning for the
    /// latter).
    pub fn load(path: PathBuf) -> Warmup {
        let state = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(path = %path.display(), error = %e,
                    "egress warm-up state is unreadable; starting the schedules afresh");
                HashMap::new()
            }),
            Err(_) => HashMap::new(),
        };
        Warmup {
            state,
            path: Some(path),
            dirty: false,
        }
    }

    /// The state file for a spool directory: beside it, not inside it.
    pub fn path_for(spool_dir: &Path) -> PathBuf {
        let parent = spool_dir
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        parent.join("egress-warmup.json")
    }

    /// The cap in force for `source` on `day` (`None`: unlimited).
    pub fn cap(&self, source: &EgressSource, day: i64) -> Option<u64> {
        if source.warmup.is_empty() {
            return None;
        }
        let first = self.state.get(&source.name).map_or(day, |s| s.first_use);
        let index = (day - first).max(0) as usize;
        source.warmup.get(index).map(|rate| {
            // A step is written per day; scale other periods to a day's worth.
            let per_day = 86_400f64 / rate.per.as_secs_f64().max(1.0);
            (f64::from(rate.count) * per_day) as u64
        })
    }

    /// Whether `source` may take another message on `day`.
    pub fn allows(&self, source: &EgressSource, day: i64) -> bool {
        match self.cap(source, day) {
            None => true,
            Some(cap) => self
                .state
                .get(&source.name)
                .filter(|s| s.day == day)
                .is_none_or(|s| s.count < cap),
        }
    }

    /// Counts one message for `source` on `day` (only sources with a schedule are tracked).
    pub fn count(&mut self, source: &EgressSource, day: i64) {
        if source.warmup.is_empty() {
            return;
        }
        let s = self
            .state
            .entry(source.name.clone())
            .or_insert_with(|| SourceState {
                first_use: day,
                day,
                count: 0,
            });
        if s.day != day {
            s.day = day;
            s.count = 0;
        }
        s.count += 1;
        self.dirty = true;
    }

    /// Writes the state file if it changed (atomically: temp file, then rename).
    pub fn save(&mut self) {
        let Some(path) = &self.path else { return };
        if !self.dirty {
            return;
        }
        let tmp = path.with_extension("json.tmp");
        let bytes = serde_json::to_vec(&self.state).unwrap_or_default();
        let written = std::fs::write(&tmp, bytes).and_then(|_| std::fs::rename(&tmp, path));
        match written {
            Ok(()) => self.dirty = false,
            Err(e) => tracing::warn!(path = %path.display(), error = %e,
                "cannot save the egress warm-up state"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_config::Rate;

    fn source(steps: &[u32]) -> EgressSource {
        EgressSource {
            name: "ip".into(),
            bind: None,
            ehlo: None,
            warmup: steps
                .iter()
                .map(|&count| Rate {
                    count,
                    per: Duration::from_secs(86_400),
                })
                .collect(),
        }
    }

    #[test]
    fn daily_caps_step_up_then_end() {
        let src = source(&[2, 3]);
        let mut w = Warmup::default();
        let day0 = 20_000;
        assert_eq!(w.cap(&src, day0), Some(2));
        for _ in 0..2 {
            assert!(w.allows(&src, day0));
            w.count(&src, day0);
        }
        assert!(!w.allows(&src, day0));
        // The next day the second step applies and the count starts over.
        assert_eq!(w.cap(&src, day0 + 1), Some(3));
        assert!(w.allows(&src, day0 + 1));
        for _ in 0..3 {
            w.count(&src, day0 + 1);
        }
        assert!(!w.allows(&src, day0 + 1));
        // After the schedule: unlimited.
        assert_eq!(w.cap(&src, day0 + 2), None);
        assert!(w.allows(&src, day0 + 2));
    }

    #[test]
    fn unscheduled_sources_are_never_capped_or_tracked() {
        let src = source(&[]);
        let mut w = Warmup::default();
        w.count(&src, 1);
        assert!(w.allows(&src, 1));
        assert!(w.state.is_empty());
    }

    #[test]
    fn state_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.json");
        let src = source(&[1]);
        let mut w = Warmup::load(path.clone());
        w.count(&src, 7);
        w.save();
        let w2 = Warmup::load(path);
        assert!(!w2.allows(&src, 7));
        assert_eq!(
            Warmup::path_for(Path::new("keel-data/spool")),
            Path::new("keel-data/egress-warmup.json")
        );
    }
}
