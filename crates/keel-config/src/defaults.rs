//! What Keel does when a key is absent.
//!
//! Kept in one place so the reference in the crate docs, the `Default`
//! impls and the tests that compare them cannot drift apart.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use ipnet::IpNet;

const fn minutes(n: u64) -> Duration {
    Duration::from_secs(n * 60)
}

/// `smtp.listen`: loopback only, on an unprivileged port, so a fresh
/// install neither needs root nor accepts mail from the network.
pub const SMTP_LISTEN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 2525));
/// `smtp.max_message_size`: 25 MiB, a common provider limit.
pub const MAX_MESSAGE_SIZE: u64 = 25 * 1024 * 1024;
/// `smtp.max_recipients`: per transaction.
pub const MAX_RECIPIENTS: usize = 1000;
/// `smtp.relay_networks`: only the local host may relay (`127.0.0.0/8`,
/// `::1/128`). `new_assert` checks the prefixes at compile time.
pub const RELAY_NETWORKS: [IpNet; 2] = [
    IpNet::new_assert(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 0)), 8),
    IpNet::new_assert(IpAddr::V6(Ipv6Addr::LOCALHOST), 128),
];
/// `smtp.max_connections`: concurrent inbound sessions.
pub const MAX_CONNECTIONS: usize = 1000;
/// `smtp.max_connections_per_ip`: enough for a busy submission client's connection pool,
/// few enough that one host cannot take every session slot.
pub const MAX_CONNECTIONS_PER_IP: usize = 50;
/// `smtp.max_auth_failures`: failed AUTH attempts per client address in
/// [`AUTH_FAILURE_WINDOW`] before it is cut off; slows password guessing to a crawl while a
/// person mistyping a password a few times is not locked out.
pub const MAX_AUTH_FAILURES: usize = 5;
/// The window `smtp.max_auth_failures` counts in.
pub const AUTH_FAILURE_WINDOW: Duration = minutes(5);

/// `smtp.timeouts.command` (RFC 5321 §4.5.3.2.7, server timeout: 5 minutes).
pub const SMTP_COMMAND_TIMEOUT: Duration = minutes(5);
/// `smtp.timeouts.data_block` (RFC 5321 §4.5.3.2.5: 3 minutes).
pub const SMTP_DATA_BLOCK_TIMEOUT: Duration = minutes(3);
/// `smtp.timeouts.data_done` (RFC 5321 §4.5.3.2.6: 10 minutes).
pub const SMTP_DATA_DONE_TIMEOUT: Duration = minutes(10);
/// `smtp.timeouts.greeting`: the wait for the client's first command.
pub const SMTP_GREETING_TIMEOUT: Duration = minutes(5);

/// `smtp.timeouts.session`: the whole of one SMTP session. Long enough for a submission
/// client to send many messages on one connection, short enough that a client trickling
/// bytes (slowloris) cannot hold a session slot for ever; it reconnects after the `421`.
pub const SMTP_SESSION_TIMEOUT: Duration = minutes(30);
/// `smtp.timeouts.message`: the whole of one message's DATA (or each BDAT chunk), however
/// steadily the bytes arrive; a 25 MiB message needs only ~30 KB/s to make it.
pub const SMTP_MESSAGE_TIMEOUT: Duration = minutes(15);
/// `smtp.max_connection_rate_per_ip`: new connections per client address (bucket of this
/// size, refilled evenly). Clients in `relay_networks` are not limited.
pub const MAX_CONNECTION_RATE_PER_IP: crate::units::Rate = crate::units::Rate {
    count: 300,
    per: Duration::from_secs(60),
};

const GB: u64 = 1024 * 1024 * 1024;
const MB: u64 = 1024 * 1024;
/// `smtp.backpressure.disk_free_*`: slow below 2 GiB free, defer below 1 GiB, refuse below
/// 500 MiB, leaving room for the queue's own progress records and the event log.
pub const BACKPRESSURE_DISK_FREE: crate::backpressure::Thresholds =
    crate::backpressure::Thresholds {
        slow: Some(2 * GB),
        defer: Some(GB),
        refuse: Some(500 * MB),
    };
/// `smtp.backpressure.memory_*` (resident set size of the daemon).
pub const BACKPRESSURE_MEMORY: crate::backpressure::Thresholds = crate::backpressure::Thresholds {
    slow: Some(4 * GB),
    defer: Some(6 * GB),
    refuse: Some(8 * GB),
};
/// `smtp.backpressure.queued_*` (live messages in the spool).
pub const BACKPRESSURE_QUEUED: crate::backpressure::Thresholds = crate::backpressure::Thresholds {
    slow: Some(500_000),
    defer: Some(1_000_000),
    refuse: Some(2_000_000),
};
/// `smtp.backpressure.tarpit`: how long MAIL replies are held in the slow stage.
pub const BACKPRESSURE_TARPIT: Duration = Duration::from_secs(1);

/// `http.listen`: loopback only; the HTTP API is not meant to face the
/// network without a proxy in front.
pub const HTTP_LISTEN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8025));
/// `spool.dir`, relative to the daemon's working directory.
pub const SPOOL_DIR: &str = "keel-data/spool";
/// `log.dir`, relative to the daemon's working directory.
pub const LOG_DIR: &str = "keel-data/log";
/// `log.rotate_size`: big enough that a busy node rotates a few times an hour, small enough
/// that one segment compresses in about a second.
pub const LOG_ROTATE_SIZE: u64 = 256 * 1024 * 1024;
/// `log.rotate_interval`: one file per UTC day on a quiet node.
pub const LOG_ROTATE_INTERVAL: Duration = Duration::from_secs(24 * 60 * 60);
/// `log.retention`: a month of history for "what happened to my mail" questions.
pub const LOG_RETENTION: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// `delivery.port`: the SMTP port of MX hosts.
pub const DELIVERY_PORT: u16 = 25;
/// `delivery.max_connections_per_destination`.
pub const MAX_CONNECTIONS_PER_DESTINATION: usize = 32;
/// `delivery.max_messages_per_connection`.
pub const MAX_MESSAGES_PER_CONNECTION: usize = 100;
/// `delivery.max_recipients_per_transaction`.
pub const MAX_RECIPIENTS_PER_TRANSACTION: usize = 100;
/// `delivery.connect_timeout`.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// `delivery.idle_timeout`.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// `delivery.timeouts.greeting` (RFC 5321 §4.5.3.2.1: 5 minutes).
pub const CLIENT_GREETING_TIMEOUT: Duration = minutes(5);
/// `delivery.timeouts.ehlo` (not in the RFC; same as the other commands).
pub const CLIENT_EHLO_TIMEOUT: Duration = minutes(5);
/// `delivery.timeouts.mail` (RFC 5321 §4.5.3.2.2: 5 minutes).
pub const CLIENT_MAIL_TIMEOUT: Duration = minutes(5);
/// `delivery.timeouts.rcpt` (RFC 5321 §4.5.3.2.3: 5 minutes).
pub const CLIENT_RCPT_TIMEOUT: Duration = minutes(5);
/// `delivery.timeouts.data` (RFC 5321 §4.5.3.2.4: 2 minutes).
pub const CLIENT_DATA_TIMEOUT: Duration = minutes(2);
/// `delivery.timeouts.data_block` (RFC 5321 §4.5.3.2.5: 3 minutes).
pub const CLIENT_DATA_BLOCK_TIMEOUT: Duration = minutes(3);
/// `delivery.timeouts.data_done` (RFC 5321 §4.5.3.2.6: 10 minutes).
pub const CLIENT_DATA_DONE_TIMEOUT: Duration = minutes(10);

/// `retry.intervals`: doubling back-off, then hourly.
pub const RETRY_INTERVALS: [Duration; 5] = [
    minutes(5),
    minutes(10),
    minutes(20),
    minutes(40),
    minutes(60),
];
/// `retry.max_age`: give up and bounce after three days.
pub const RETRY_MAX_AGE: Duration = Duration::from_secs(3 * 24 * 60 * 60);

/// Used for `smtp.hostname` when the system's name cannot be found.
pub const FALLBACK_HOSTNAME: &str = "localhost";

/// The system's host name, for `smtp.hostname`.
///
/// Read from `/proc/sys/kernel/hostname` (Linux) or `/etc/hostname`, whichever
/// gives a valid host name first; `"localhost"` otherwise. Reading files
/// avoids `unsafe` FFI to `gethostname(2)`.
pub fn system_hostname() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .map(|text| text.trim().to_owned())
        .find(|name| crate::addr::is_valid_hostname(name))
        .unwrap_or_else(|| FALLBACK_HOSTNAME.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_hostname_is_always_a_valid_name() {
        assert!(crate::addr::is_valid_hostname(&system_hostname()));
    }
}
