//! Rate limiting for traffic shaping: GCRA (the generic cell rate algorithm), on injected time.
//!
//! A rate of `n` per period admits one event every `period / n`, with a burst tolerance of
//! `burst` events: a site left idle may receive that many at once, and never more. Keeping
//! the burst small is what receivers mean by "polite": 3000/h arrives as a steady trickle, not
//! as 3000 messages in the first minute of every hour.

use std::time::Duration;

use keel_config::Rate;
use tokio::time::Instant;

/// One limiter. `None` rate: unlimited.
#[derive(Debug, Clone)]
pub struct Limiter {
    interval: Duration,
    /// How far ahead of now the theoretical arrival time may run (burst tolerance).
    tolerance: Duration,
    /// Theoretical arrival time of the next event.
    tat: Option<Instant>,
}

impl Limiter {
    /// A limiter for `rate` admitting bursts of up to `burst` events (at least 1).
    pub fn new(rate: Rate, burst: u32) -> Self {
        let interval = rate.interval();
        Limiter {
            interval,
            tolerance: interval * burst.saturating_sub(1),
            tat: None,
        }
    }

    /// Takes one event if allowed at `now`; otherwise returns when to try again.
    pub fn try_acquire(&mut self, now: Instant) -> Result<(), Instant> {
        let tat = self.tat.unwrap_or(now).max(now);
        let earliest = tat.checked_sub(self.tolerance).unwrap_or(now);
        if now < earliest {
            return Err(earliest);
        }
        self.tat = Some(tat + self.interval);
        Ok(())
    }

    /// Whether an event would be allowed at `now`, without taking it.
    pub fn check(&self, now: Instant) -> Result<(), Instant> {
        let tat = self.tat.unwrap_or(now).max(now);
        let earliest = tat.checked_sub(self.tolerance).unwrap_or(now);
        if now < earliest {
            Err(earliest)
        } else {
            Ok(())
        }
    }
}

/// An optional limiter: `None` admits everything.
pub fn optional(rate: Option<Rate>, burst: u32) -> Option<Limiter> {
    rate.map(|r| Limiter::new(r, burst))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(count: u32, secs: u64) -> Rate {
        Rate {
            count,
            per: Duration::from_secs(secs),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn spaces_events_evenly() {
        let mut l = Limiter::new(rate(60, 60), 1);
        let t0 = Instant::now();
        assert!(l.try_acquire(t0).is_ok());
        assert_eq!(l.try_acquire(t0), Err(t0 + Duration::from_secs(1)));
        assert!(l.try_acquire(t0 + Duration::from_secs(1)).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn holds_the_rate_over_an_hour_of_simulated_time() {
        // 3000/h, polled as fast as allowed for an hour: 3000 events (±1), never a burst.
        let mut l = Limiter::new(rate(3000, 3600), 1);
        let start = Instant::now();
        let end = start + Duration::from_secs(3600);
        let mut now = start;
        let mut n = 0;
        while now < end {
            match l.try_acquire(now) {
                Ok(()) => n += 1,
                Err(next) => now = next,
            }
        }
        assert!((2999..=3001).contains(&n), "{n}");
    }

    #[tokio::test(start_paused = true)]
    async fn burst_tolerance_after_idle() {
        let mut l = Limiter::new(rate(10, 1), 3);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(l.try_acquire(t0).is_ok());
        }
        assert!(l.try_acquire(t0).is_err());
        // After a long idle period the burst is available again, but not more.
        let later = t0 + Duration::from_secs(60);
        for _ in 0..3 {
            assert!(l.try_acquire(later).is_ok());
        }
        assert!(l.try_acquire(later).is_err());
    }
}
