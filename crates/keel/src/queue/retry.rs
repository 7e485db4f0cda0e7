//! Retry and expiry arithmetic, on injected time so it is tested without waiting.

use std::time::Duration;

/// When to try again after `attempts` failed attempts: the `attempts`-th interval, the last
/// interval repeating. `None` if the message expires before that (the caller expires it then).
///
/// `age` is how old the message is now; `max_age` its lifetime.
pub fn next_delay(
    intervals: &[Duration],
    attempts: u32,
    age: Duration,
    max_age: Duration,
) -> RetryDecision {
    if age >= max_age {
        return RetryDecision::Expire;
    }
    let idx = (attempts.max(1) as usize - 1).min(intervals.len().saturating_sub(1));
    let delay = intervals
        .get(idx)
        .copied()
        .unwrap_or(Duration::from_secs(300));
    let left = max_age - age;
    if delay >= left {
        // Wake exactly at expiry, so an expired message is reported on time rather than at its
        // next (possibly hours later) retry.
        RetryDecision::ExpireAt(left)
    } else {
        RetryDecision::RetryIn(delay)
    }
}

/// What to do with a message that has recipients left after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryDecision {
    RetryIn(Duration),
    /// It will expire before the next interval ends: expire it after this long.
    ExpireAt(Duration),
    Expire,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(n: u64) -> Duration {
        Duration::from_secs(60 * n)
    }

    #[test]
    fn intervals_step_then_repeat() {
        let iv = [m(5), m(10), m(20)];
        let max = m(60 * 24);
        assert_eq!(next_delay(&iv, 1, m(0), max), RetryDecision::RetryIn(m(5)));
        assert_eq!(next_delay(&iv, 2, m(5), max), RetryDecision::RetryIn(m(10)));
        assert_eq!(
            next_delay(&iv, 3, m(15), max),
            RetryDecision::RetryIn(m(20))
        );
        assert_eq!(
            next_delay(&iv, 9, m(100), max),
            RetryDecision::RetryIn(m(20))
        );
    }

    #[test]
    fn expiry() {
        let iv = [m(30)];
        assert_eq!(
            next_delay(&iv, 1, m(50), m(60)),
            RetryDecision::ExpireAt(m(10))
        );
        assert_eq!(next_delay(&iv, 1, m(60), m(60)), RetryDecision::Expire);
        assert_eq!(next_delay(&iv, 1, m(61), m(60)), RetryDecision::Expire);
    }
}
