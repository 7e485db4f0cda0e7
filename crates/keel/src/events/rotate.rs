//! When the live event log is rotated: by size, and at wall-clock boundaries.
//!
//! Time rotation is aligned to multiples of `rotate_interval` since the Unix epoch rather
//! than to when the daemon started, so `1d` gives one file per UTC day and `1h` one per
//! hour, whatever the restarts. The live file remembers the period its first line was
//! written in; once the clock is in a later period the file is rotated (an empty file never
//! is). The decisions are pure functions of sizes and times, so they are tested without
//! waiting for clocks.

use std::time::{Duration, SystemTime};

use keel_config::LogConfig;

/// The rotation limits of `[log]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub size: Option<u64>,
    pub interval: Option<Duration>,
}

impl Policy {
    pub fn from_config(cfg: &LogConfig) -> Policy {
        Policy {
            size: cfg.rotate_size,
            interval: cfg.rotate_interval,
        }
    }

    /// The index of the interval period `t` falls in; `None` without time rotation.
    pub fn period(&self, t: SystemTime) -> Option<u64> {
        let interval = u64::try_from(self.interval?.as_millis()).ok()?.max(1);
        Some(unix_ms(t) / interval)
    }

    /// Whether a live file of `size` bytes, whose first line was written in period
    /// `file_period`, must be rotated before anything more is written at `now`.
    pub fn due(&self, size: u64, file_period: Option<u64>, now: SystemTime) -> bool {
        if size == 0 {
            return false;
        }
        let by_size = self.size.is_some_and(|limit| size >= limit);
        let by_time = match (file_period, self.period(now)) {
            (Some(file), Some(current)) => current > file,
            _ => false,
        };
        by_size || by_time
    }

    /// How long from `now` until the next period boundary (a little after it, so the
    /// writer wakes up in the new period); `None` without time rotation.
    pub fn until_boundary(&self, now: SystemTime) -> Option<Duration> {
        let interval = u64::try_from(self.interval?.as_millis()).ok()?.max(1);
        let now_ms = unix_ms(now);
        let next = (now_ms / interval)
            .saturating_add(1)
            .saturating_mul(interval);
        Some(Duration::from_millis(next - now_ms + 1))
    }
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 86_400_000;

    fn at(ms: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
    }

    fn policy(size: Option<u64>, interval_ms: Option<u64>) -> Policy {
        Policy {
            size,
            interval: interval_ms.map(Duration::from_millis),
        }
    }

    #[test]
    fn size_rotation_waits_for_the_limit_and_never_rotates_an_empty_file() {
        let p = policy(Some(1000), None);
        assert!(!p.due(0, None, at(0)));
        assert!(!p.due(999, None, at(0)));
        assert!(p.due(1000, None, at(0)));
        assert!(p.due(5000, Some(0), at(10 * DAY)));
        assert_eq!(p.until_boundary(at(0)), None);
    }

    #[test]
    fn daily_rotation_happens_at_midnight_utc() {
        let p = policy(None, Some(DAY));
        let day = 20_000u64; // some day after the epoch
        let noon = day * DAY + DAY / 2;
        let period = p.period(at(noon));
        assert_eq!(period, Some(day));
        assert!(!p.due(10, period, at(noon)));
        assert!(!p.due(10, period, at((day + 1) * DAY - 1)));
        assert!(p.due(10, period, at((day + 1) * DAY)));
        assert!(
            !p.due(0, period, at((day + 5) * DAY)),
            "empty: nothing to rotate"
        );
        // Wakes up just after midnight.
        assert_eq!(
            p.until_boundary(at(noon)),
            Some(Duration::from_millis(DAY / 2 + 1))
        );
        assert_eq!(
            p.until_boundary(at((day + 1) * DAY)),
            Some(Duration::from_millis(DAY + 1))
        );
    }

    #[test]
    fn either_limit_rotates() {
        let p = policy(Some(100), Some(1000));
        assert!(p.due(100, Some(0), at(10)));
        assert!(p.due(1, Some(0), at(1000)));
        assert!(!p.due(99, Some(0), at(999)));
        assert_eq!(policy(None, None).period(at(5)), None);
    }
}
