//! Per-client limits on SMTP ingress: concurrent connections per client address, new
//! connections per client address over time, and failed AUTH attempts per client address in
//! a sliding window.
//!
//! All count by [`client_key`]: an IPv4 address as is (an IPv4-mapped IPv6 address as its
//! IPv4 form), an IPv6 address by its /64 — one host, or one customer's network, usually holds
//! a whole /64, so counting single IPv6 addresses would let it rotate past any limit.
//!
//! Both are a mutex around a map, held for a few map operations per connection or per failed
//! AUTH: cheap next to the connection itself. Entries go away when their count drops to zero
//! (connections) or their window has passed (failures, swept as the map grows), so memory
//! follows the number of active or recently failing clients, not every client ever seen.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// The address a client is counted by (see the module docs).
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(Ipv6Addr::from(prefix))
            }
        },
    }
}

/// Raises this process's soft limit on open files to its hard limit. Every SMTP session is a
/// descriptor, and the usual soft default (1024) would make `accept` fail with EMFILE long
/// before `max_connections`; the hard limit is what the administrator allows. A failure is
/// logged, not fatal: Keel still works, with fewer connections.
pub fn raise_nofile_limit() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current.is_some() && limit.current != limit.maximum {
        let raised = Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => {
                tracing::info!(from = ?limit.current, to = ?limit.maximum, "raised the open-file limit")
            }
            Err(e) => {
                tracing::warn!(error = %e, soft = ?limit.current, "cannot raise the open-file limit")
            }
        }
    }
}

/// A poisoned lock only means another thread panicked mid-update of a counter; the counts
/// are still usable, and refusing every client afterwards would be worse.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Concurrent connections per client, capped at `max`.
#[derive(Clone)]
pub struct PerIpConnections {
    max: usize,
    counts: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// One counted connection; dropping it releases the slot.
pub struct ConnectionSlot {
    key: IpAddr,
    counts: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl PerIpConnections {
    pub fn new(max: usize) -> Self {
        Self {
            max,
            counts: Arc::default(),
        }
    }

    /// A slot for a new connection from `ip`, or `None` if the client has `max` already.
    pub fn try_acquire(&self, ip: IpAddr) -> Option<ConnectionSlot> {
        let key = client_key(ip);
        let mut counts = lock(&self.counts);
        let n = counts.entry(key).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(ConnectionSlot {
            key,
            counts: self.counts.clone(),
        })
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        lock(&self.counts).len()
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut counts = lock(&self.counts);
        if let Some(n) = counts.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

/// Failed AUTH attempts per client within `window`; a client with `max` of them is blocked
/// until the oldest leaves the window.
pub struct AuthFailures {
    max: usize,
    window: Duration,
    failures: Mutex<HashMap<IpAddr, VecDeque<Instant>>>,
}

/// Above this many tracked clients, recording a failure first sweeps out expired ones.
const SWEEP_ABOVE: usize = 4096;

impl AuthFailures {
    pub fn new(max: usize, window: Duration) -> Self {
        Self {
            max: max.max(1),
            window,
            failures: Mutex::default(),
        }
    }

    /// True if `ip` has used up its failures for now.
    pub fn is_blocked(&self, ip: IpAddr, now: Instant) -> bool {
        let mut failures = lock(&self.failures);
        let key = client_key(ip);
        let Some(times) = failures.get_mut(&key) else {
            return false;
        };
        expire(times, now, self.window);
        if times.is_empty() {
            failures.remove(&key);
            return false;
        }
        times.len() >= self.max
    }

    /// Records a failure of `ip`; true if the client is now blocked.
    pub fn record(&self, ip: IpAddr, now: Instant) -> bool {
        let mut failures = lock(&self.failures);
        if failures.len() > SWEEP_ABOVE {
            failures.retain(|_, times| {
                expire(times, now, self.window);
                !times.is_empty()
            });
        }
        let times = failures.entry(client_key(ip)).or_default();
        expire(times, now, self.window);
        times.push_back(now);
        // Only the newest `max` matter for the decision; older ones need no memory.
        while times.len() > self.max {
            times.pop_front();
        }
        times.len() >= self.max
    }
}

/// New connections per client (`max_connection_rate_per_ip`): a token bucket per client of
/// `rate.count` tokens, refilled evenly over `rate.per`. So "60/min" lets a client open 60
/// connections at once and then one a second; a client hammering connect gets `421 4.7.0`
/// without costing a session. Full buckets carry no information and are swept as the map
/// grows, so memory follows the clients seen within one period.
pub struct ConnectionRate {
    capacity: f64,
    per_token: Duration,
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

impl ConnectionRate {
    pub fn new(rate: keel_config::Rate) -> Self {
        Self {
            capacity: f64::from(rate.count.max(1)),
            per_token: rate.interval().max(Duration::from_nanos(1)),
            buckets: Mutex::default(),
        }
    }

    /// Takes a token for a new connection from `ip`; false: over the rate, refuse it.
    pub fn allow(&self, ip: IpAddr, now: Instant) -> bool {
        let mut buckets = lock(&self.buckets);
        if buckets.len() > SWEEP_ABOVE {
            buckets.retain(|_, (tokens, at)| self.refilled(*tokens, *at, now) < self.capacity);
        }
        let (tokens, at) = buckets
            .entry(client_key(ip))
            .or_insert((self.capacity, now));
        let available = self.refilled(*tokens, *at, now);
        *at = now.max(*at);
        if available < 1.0 {
            *tokens = available;
            return false;
        }
        *tokens = available - 1.0;
        true
    }

    fn refilled(&self, tokens: f64, at: Instant, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(at);
        (tokens + elapsed.as_secs_f64() / self.per_token.as_secs_f64()).min(self.capacity)
    }
}

fn expire(times: &mut VecDeque<Instant>, now: Instant, window: Duration) {
    while times
        .front()
        .is_some_and(|t| now.saturating_duration_since(*t) >= window)
    {
        times.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("ip")
    }

    #[test]
    fn keys_group_ipv6_by_64_and_unmap_ipv4() {
        assert_eq!(client_key(ip("192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(client_key(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(client_key(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_eq!(
            client_key(ip("2001:db8:1:2:ffff::9")),
            client_key(ip("2001:db8:1:2::1"))
        );
        assert_ne!(
            client_key(ip("2001:db8:1:3::1")),
            client_key(ip("2001:db8:1:2::1"))
        );
    }

    #[test]
    fn connection_slots_are_capped_per_client_and_released() {
        let limit = PerIpConnections::new(2);
        let a = limit.try_acquire(ip("192.0.2.1")).expect("first");
        let _b = limit.try_acquire(ip("::ffff:192.0.2.1")).expect("second");
        assert!(limit.try_acquire(ip("192.0.2.1")).is_none());
        // Another client is unaffected.
        let c = limit.try_acquire(ip("192.0.2.2")).expect("other client");
        drop(a);
        assert!(limit.try_acquire(ip("192.0.2.1")).is_some());
        drop(c);
        assert_eq!(limit.tracked(), 1, "released clients are forgotten");
    }

    #[test]
    fn failures_block_within_the_window_only() {
        let f = AuthFailures::new(3, Duration::from_secs(300));
        let t0 = Instant::now();
        let client = ip("198.51.100.9");
        assert!(!f.record(client, t0));
        assert!(!f.record(client, t0 + Duration::from_secs(10)));
        assert!(!f.is_blocked(client, t0 + Duration::from_secs(20)));
        assert!(f.record(client, t0 + Duration::from_secs(20)));
        assert!(f.is_blocked(client, t0 + Duration::from_secs(299)));
        assert!(!f.is_blocked(ip("198.51.100.10"), t0));
        // The first failure leaves the window: one more try is allowed.
        assert!(!f.is_blocked(client, t0 + Duration::from_secs(300)));
        assert!(f.record(client, t0 + Duration::from_secs(301)));
        // Long after, the client is forgotten.
        assert!(!f.is_blocked(client, t0 + Duration::from_secs(1000)));
        assert!(lock(&f.failures).is_empty());
    }

    #[test]
    fn connection_rate_allows_a_burst_then_the_steady_rate() {
        let rate = keel_config::units::parse_rate("3/s")
            .expect("rate")
            .expect("limited");
        let limit = ConnectionRate::new(rate);
        let t0 = Instant::now();
        let a = ip("192.0.2.1");
        assert!(limit.allow(a, t0));
        assert!(limit.allow(a, t0));
        assert!(limit.allow(a, t0));
        assert!(!limit.allow(a, t0), "burst used up");
        assert!(limit.allow(ip("192.0.2.2"), t0), "other clients unaffected");
        assert!(!limit.allow(a, t0 + Duration::from_millis(300)));
        assert!(
            limit.allow(a, t0 + Duration::from_millis(340)),
            "one token per 333 ms"
        );
        assert!(!limit.allow(a, t0 + Duration::from_millis(400)));
        // Refused attempts do not push the refill back.
        assert!(limit.allow(a, t0 + Duration::from_millis(700)));
        // A long pause refills the burst, no more.
        let later = t0 + Duration::from_secs(60);
        for _ in 0..3 {
            assert!(limit.allow(a, later));
        }
        assert!(!limit.allow(a, later));
        // IPv6 clients count by /64.
        let v6 = ip("2001:db8::1");
        for _ in 0..3 {
            assert!(limit.allow(v6, t0));
        }
        assert!(!limit.allow(ip("2001:db8::2"), t0));
    }

    #[test]
    fn failures_of_one_ipv6_64_count_together() {
        let f = AuthFailures::new(2, Duration::from_secs(300));
        let t0 = Instant::now();
        assert!(!f.record(ip("2001:db8::1"), t0));
        assert!(f.record(ip("2001:db8::2"), t0));
        assert!(f.is_blocked(ip("2001:db8::ffff"), t0));
    }
}
