//! The validated runtime configuration the daemon codes against.
//!
//! Everything here is already checked and converted (addresses parsed,
//! sizes in bytes, durations as [`Duration`]), so code holding a [`Config`]
//! never has to handle a malformed value.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;

use crate::addr::{HostPort, RouteDomain};
use crate::defaults as d;
pub use crate::log::LogConfig;
use crate::shaping::{EgressConfig, ShapingConfig};
use crate::smtp_auth::{SmtpUser, TlsFiles};

/// The whole configuration. See the crate docs for every key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `[smtp]`: the inbound SMTP server.
    pub smtp: SmtpConfig,
    /// `[http]`: the HTTP API.
    pub http: HttpConfig,
    /// `[spool]`: where queued messages live.
    pub spool: SpoolConfig,
    /// `[log]`: where event logs are written.
    pub log: LogConfig,
    /// `[dns]`: how MX and address lookups are done.
    pub dns: DnsConfig,
    /// `[delivery]`: outbound SMTP.
    pub delivery: DeliveryConfig,
    /// `[[route]]`: static routes that bypass MX lookup, in file order.
    pub routes: Vec<Route>,
    /// `[retry]`: the schedule for temporarily failed deliveries.
    pub retry: RetryConfig,
    /// `[shaping]`: per-site delivery limits.
    pub shaping: ShapingConfig,
    /// `[egress]`: source addresses and pools for outbound connections.
    pub egress: EgressConfig,
    /// `[[dkim]]`: signing keys, names normalised, key paths resolved (relative to the
    /// config file's directory), each key checked loadable. In file order.
    pub dkim: Vec<keel_dkim::DkimKeyConfig>,
    /// The file this came from; `None` for the embedded defaults or text
    /// given to [`Config::parse`].
    pub source: Option<PathBuf>,
}

/// `[smtp]`: the inbound SMTP server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpConfig {
    /// Addresses to accept SMTP connections on (never empty).
    pub listen: Vec<SocketAddr>,
    /// Name used in the greeting and EHLO response.
    pub hostname: String,
    /// Largest message accepted, in bytes (advertised with SIZE).
    pub max_message_size: u64,
    /// Most recipients accepted per transaction.
    pub max_recipients: usize,
    /// Clients in these networks may relay to any domain.
    pub relay_networks: Vec<IpNet>,
    /// Most concurrent inbound sessions.
    pub max_connections: usize,
    /// Most concurrent inbound sessions from one client address (an IPv6 client is counted
    /// by its /64, which is what one customer usually gets).
    pub max_connections_per_ip: usize,
    /// How long the server waits for the client.
    pub timeouts: SmtpServerTimeouts,
    /// Certificate and key for STARTTLS and `tls_listen`; `None`: no TLS on ingress.
    pub tls: Option<TlsFiles>,
    /// Addresses for implicit TLS (TLS from the first byte, the "port 465" style); empty
    /// unless `tls` is set.
    pub tls_listen: Vec<SocketAddr>,
    /// Clients that may authenticate (SMTP AUTH); empty: AUTH is not offered.
    pub users: Vec<SmtpUser>,
    /// Offer AUTH without TLS to clients on loopback (explicit opt-in).
    pub auth_plaintext_loopback: bool,
    /// Failed AUTH attempts from one client address within five minutes after which its
    /// connections are closed (`421 4.7.0`) until the window has passed.
    pub max_auth_failures: usize,
    /// New connections per client address (IPv6 by /64); more get `421 4.7.0`. `None`: no
    /// limit. Clients in `relay_networks` are exempt (trusted submitters reconnect often).
    pub max_connection_rate_per_ip: Option<crate::units::Rate>,
    /// `[smtp.backpressure]`: when ingress slows, defers and refuses.
    pub backpressure: crate::backpressure::BackpressureConfig,
}

/// `smtp.timeouts`: how long the server waits for a client (RFC 5321
/// §4.5.3.2 server-side values by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SmtpServerTimeouts {
    /// For each command.
    pub command: Duration,
    /// For each chunk of message data after DATA.
    pub data_block: Duration,
    /// For processing after the final `.` (how long the client is expected
    /// to wait; bounds our own processing before we answer).
    pub data_done: Duration,
    /// For the client's first command after our 220 greeting.
    pub greeting: Duration,
    /// For the whole session, however busy (`421 4.4.2` when it passes).
    pub session: Duration,
    /// For the whole of one message's data (DATA, or one BDAT chunk).
    pub message: Duration,
}

/// `[http]`: the HTTP API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpConfig {
    /// Address the API listens on.
    pub listen: SocketAddr,
    /// Bearer tokens accepted by the admin API; empty: the admin API answers 401 to everyone
    /// except clients on loopback (so a fresh install can be driven from the same host).
    pub api_tokens: Vec<String>,
}

/// `[spool]`: where queued messages live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolConfig {
    /// Spool directory, as written: a relative path is relative to the
    /// daemon's working directory, not to the config file.
    pub dir: PathBuf,
}

/// `[dns]`: how MX and address lookups are done.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DnsConfig {
    /// Name servers to query; empty means use the system resolver
    /// configuration (`/etc/resolv.conf`).
    pub nameservers: Vec<SocketAddr>,
}

/// `[delivery]`: outbound SMTP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryConfig {
    /// TCP port used for MX hosts (routes carry their own port).
    pub port: u16,
    /// Most simultaneous connections to one destination host.
    pub max_connections_per_destination: usize,
    /// Most messages sent over one connection before it is closed.
    pub max_messages_per_connection: usize,
    /// Most recipients in one outbound transaction; a message with more recipients in one
    /// domain is sent in several transactions (receivers commonly refuse past 100).
    pub max_recipients_per_transaction: usize,
    /// Time allowed for the TCP connect.
    pub connect_timeout: Duration,
    /// How long we wait for the remote server.
    pub timeouts: DeliveryTimeouts,
    /// How long an idle connection is kept for reuse; zero closes it as
    /// soon as its queue is empty.
    pub idle_timeout: Duration,
    /// Whether to upgrade connections with STARTTLS.
    pub starttls: StartTls,
}

/// `delivery.timeouts`: how long the client waits for each server reply
/// (RFC 5321 §4.5.3.2 client-side values by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryTimeouts {
    /// For the 220 greeting.
    pub greeting: Duration,
    /// For the EHLO/HELO reply.
    pub ehlo: Duration,
    /// For the MAIL FROM reply.
    pub mail: Duration,
    /// For each RCPT TO reply.
    pub rcpt: Duration,
    /// For the 354 reply to DATA.
    pub data: Duration,
    /// For each chunk of message data to be accepted by the socket.
    pub data_block: Duration,
    /// For the reply after the final `.`.
    pub data_done: Duration,
}

/// `delivery.starttls`: the outbound TLS policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StartTls {
    /// Use STARTTLS when the server offers it, without verifying the
    /// certificate (RFC 7435 opportunistic security); fall back to
    /// plain text if it is not offered.
    Opportunistic,
    /// Never use STARTTLS.
    Disabled,
}

/// `[[route]]`: send mail for `domain` to `smarthost` instead of its MX.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Which recipient domains this route applies to.
    pub domain: RouteDomain,
    /// Where to deliver them.
    pub smarthost: HostPort,
}

/// `[retry]`: the schedule for temporarily failed deliveries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryConfig {
    /// Wait before each retry; the last one repeats. Never empty, no zeros.
    pub intervals: Vec<Duration>,
    /// Bounce a message still undelivered this long after it arrived.
    pub max_age: Duration,
}

impl Default for Config {
    /// The embedded defaults: what an empty config file gives.
    fn default() -> Self {
        Self {
            smtp: SmtpConfig::default(),
            http: HttpConfig::default(),
            spool: SpoolConfig::default(),
            log: LogConfig::default(),
            dns: DnsConfig::default(),
            delivery: DeliveryConfig::default(),
            routes: Vec::new(),
            retry: RetryConfig::default(),
            shaping: ShapingConfig::from_delivery(&DeliveryConfig::default()),
            egress: EgressConfig::default(),
            dkim: Vec::new(),
            source: None,
        }
    }
}

impl Default for SmtpConfig {
    /// The defaults; `hostname` is the system's host name.
    fn default() -> Self {
        Self {
            listen: vec![d::SMTP_LISTEN],
            hostname: d::system_hostname(),
            max_message_size: d::MAX_MESSAGE_SIZE,
            max_recipients: d::MAX_RECIPIENTS,
            relay_networks: d::RELAY_NETWORKS.to_vec(),
            max_connections: d::MAX_CONNECTIONS,
            max_connections_per_ip: d::MAX_CONNECTIONS_PER_IP,
            timeouts: SmtpServerTimeouts::default(),
            tls: None,
            tls_listen: Vec::new(),
            users: Vec::new(),
            auth_plaintext_loopback: false,
            max_auth_failures: d::MAX_AUTH_FAILURES,
            max_connection_rate_per_ip: Some(d::MAX_CONNECTION_RATE_PER_IP),
            backpressure: Default::default(),
        }
    }
}

impl Default for SmtpServerTimeouts {
    fn default() -> Self {
        Self {
            command: d::SMTP_COMMAND_TIMEOUT,
            data_block: d::SMTP_DATA_BLOCK_TIMEOUT,
            data_done: d::SMTP_DATA_DONE_TIMEOUT,
            greeting: d::SMTP_GREETING_TIMEOUT,
            session: d::SMTP_SESSION_TIMEOUT,
            message: d::SMTP_MESSAGE_TIMEOUT,
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: d::HTTP_LISTEN,
            api_tokens: Vec::new(),
        }
    }
}

impl Default for SpoolConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from(d::SPOOL_DIR),
        }
    }
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            port: d::DELIVERY_PORT,
            max_connections_per_destination: d::MAX_CONNECTIONS_PER_DESTINATION,
            max_messages_per_connection: d::MAX_MESSAGES_PER_CONNECTION,
            max_recipients_per_transaction: d::MAX_RECIPIENTS_PER_TRANSACTION,
            connect_timeout: d::CONNECT_TIMEOUT,
            timeouts: DeliveryTimeouts::default(),
            idle_timeout: d::IDLE_TIMEOUT,
            starttls: StartTls::Opportunistic,
        }
    }
}

impl Default for DeliveryTimeouts {
    fn default() -> Self {
        Self {
            greeting: d::CLIENT_GREETING_TIMEOUT,
            ehlo: d::CLIENT_EHLO_TIMEOUT,
            mail: d::CLIENT_MAIL_TIMEOUT,
            rcpt: d::CLIENT_RCPT_TIMEOUT,
            data: d::CLIENT_DATA_TIMEOUT,
            data_block: d::CLIENT_DATA_BLOCK_TIMEOUT,
            data_done: d::CLIENT_DATA_DONE_TIMEOUT,
        }
    }
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            intervals: d::RETRY_INTERVALS.to_vec(),
            max_age: d::RETRY_MAX_AGE,
        }
    }
}

impl Config {
    /// The route for mail to `domain`, if any: an exact match first, then a
    /// `"*"` route. `domain` is matched case-insensitively and a trailing
    /// dot is ignored. `None` means "look up the MX".
    pub fn route_for(&self, domain: &str) -> Option<&Route> {
        let exact = self
            .routes
            .iter()
            .find(|r| matches!(r.domain, RouteDomain::Exact(_)) && r.domain.matches(domain));
        exact.or_else(|| self.routes.iter().find(|r| r.domain == RouteDomain::Any))
    }

    /// True if a client at `ip` may relay (send to any domain).
    ///
    /// An IPv4-mapped IPv6 address (`::ffff:127.0.0.1`, as seen on a dual-stack
    /// socket) is checked as its IPv4 form, so `127.0.0.0/8` covers it.
    pub fn is_relay_client(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            IpAddr::V4(_) => ip,
        };
        self.smtp.relay_networks.iter().any(|net| net.contains(&ip))
    }
}

impl RetryConfig {
    /// How long to wait after failed attempt number `attempt` (1-based)
    /// before trying again: attempt 1 → `intervals[0]`, attempt 2 →
    /// `intervals[1]`, and past the end the last interval repeats.
    /// Attempt 0 is treated like attempt 1.
    ///
    /// A hand-built `RetryConfig` with no intervals (loading never produces
    /// one) falls back to the first default interval rather than panicking.
    pub fn interval_for_attempt(&self, attempt: u32) -> Duration {
        let index = usize::try_from(attempt.saturating_sub(1)).unwrap_or(usize::MAX);
        self.intervals
            .get(index)
            .or(self.intervals.last())
            .copied()
            .unwrap_or(d::RETRY_INTERVALS[0])
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    fn route(domain: RouteDomain, host: &str) -> Route {
        Route {
            domain,
            smarthost: HostPort {
                host: host.into(),
                port: 25,
            },
        }
    }

    #[test]
    fn route_for_prefers_exact_over_wildcard() {
        let mut config = Config {
            routes: vec![
                route(RouteDomain::Any, "catchall"),
                route(RouteDomain::Exact("example.com".into()), "exact"),
            ],
            ..Config::default()
        };
        let host = |domain: &str| config.route_for(domain).map(|r| r.smarthost.host.as_str());
        assert_eq!(host("example.com"), Some("exact"));
        assert_eq!(host("EXAMPLE.COM."), Some("exact"));
        assert_eq!(host("other.org"), Some("catchall"));
        assert_eq!(host("sub.example.com"), Some("catchall"));

        config.routes.remove(0);
        assert_eq!(config.route_for("other.org"), None);
        config.routes.clear();
        assert_eq!(config.route_for("example.com"), None);
    }

    #[test]
    fn relay_clients_v4_v6_and_mapped() {
        let config = Config::default(); // 127.0.0.0/8 and ::1/128
        assert!(config.is_relay_client(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1))));
        assert!(config.is_relay_client(IpAddr::V4(Ipv4Addr::new(127, 9, 8, 7))));
        assert!(!config.is_relay_client(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))));
        assert!(config.is_relay_client(IpAddr::V6(Ipv6Addr::LOCALHOST)));
        assert!(!config.is_relay_client("2001:db8::1".parse().expect("ip")));
        assert!(config.is_relay_client("::ffff:127.0.0.1".parse().expect("ip")));
        assert!(!config.is_relay_client("::ffff:192.0.2.1".parse().expect("ip")));
    }

    #[test]
    fn retry_intervals_repeat_the_last() {
        let retry = RetryConfig {
            intervals: vec![Duration::from_secs(60), Duration::from_secs(120)],
            max_age: Duration::from_secs(3600),
        };
        assert_eq!(retry.interval_for_attempt(0), Duration::from_secs(60));
        assert_eq!(retry.interval_for_attempt(1), Duration::from_secs(60));
        assert_eq!(retry.interval_for_attempt(2), Duration::from_secs(120));
        assert_eq!(retry.interval_for_attempt(3), Duration::from_secs(120));
        assert_eq!(
            retry.interval_for_attempt(u32::MAX),
            Duration::from_secs(120)
        );
        let empty = RetryConfig {
            intervals: Vec::new(),
            max_age: Duration::from_secs(1),
        };
        assert_eq!(empty.interval_for_attempt(1), d::RETRY_INTERVALS[0]);
    }
}
