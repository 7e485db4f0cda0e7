//! Keel's configuration: one TOML file, loaded into checked, typed structs.
//!
//! ```no_run
//! # use std::path::Path;
//! match keel_config::Config::load(Path::new("keel.toml")) {
//!     Ok(config) => println!("SMTP on {:?}", config.smtp.listen),
//!     Err(errors) => eprintln!("{errors}"), // one `file:line:col: key: message` per line
//! }
//! ```
//!
//! Loading reads the file, parses the TOML, rejects unknown keys, converts
//! every value (addresses, sizes, durations, networks) and checks it. All
//! problems found are reported together, each with its line, column and
//! dotted key:
//!
//! ```text
//! keel.toml:12:20: smtp.max_message_size: invalid size "25XB": expected a number with an optional unit (KB, MB, GB), e.g. "25MB"
//! keel.toml:31:1: route[1]: missing key `smarthost`: the "host:port" to deliver this domain's mail to
//! ```
//!
//! Unknown keys are errors. A TOML syntax error stops parsing, so it is
//! reported alone; everything else (unknown keys, values of the wrong TOML
//! type, values that don't parse or are out of range, duplicate routes,
//! clashing listen addresses) is collected and reported in one pass, sorted
//! by position.
//!
//! # Reference
//!
//! Every key is optional. An empty file (or [`Config::default`]) gives
//! exactly this configuration; the unit tests check that this block and the
//! built-in defaults agree.
//!
//! ```toml
//! [smtp]
//! # Addresses to accept SMTP on: one "ip:port" string or a list of them.
//! # IP literals only (no host names); port 0 picks a free port.
//! listen = "127.0.0.1:2525"
//! # Name used in the 220 greeting and the EHLO reply. Default: the system
//! # host name (/proc/sys/kernel/hostname, else /etc/hostname, else
//! # "localhost").
//! # hostname = "mta.example.com"
//! # Largest message accepted (advertised with SIZE). A size is an integer
//! # number of bytes or a string "<n>KB", "<n>MB" or "<n>GB"; units are
//! # binary (KB = 1024, MB = 1024 * 1024, GB = 1024^3), case-insensitive,
//! # with KiB/MiB/GiB and K/M/G accepted as synonyms. Must be > 0.
//! max_message_size = "25MB"
//! # Most RCPT TO accepted per transaction. Integer >= 1.
//! max_recipients = 1000
//! # Clients allowed to relay (send to any domain): CIDRs or bare IPs, v4 or
//! # v6. Host bits are ignored ("10.1.2.3/8" means 10.0.0.0/8). An IPv4-mapped
//! # IPv6 client (::ffff:a.b.c.d) is matched as its IPv4 form. An empty list
//! # means no client may relay.
//! relay_networks = ["127.0.0.0/8", "::1/128"]
//! # Most concurrent inbound sessions. Integer >= 1. Past it: 421 4.3.2.
//! max_connections = 1000
//! # Most concurrent sessions from one client address (IPv6: one /64).
//! # Integer >= 1. Past it: 421 4.7.0.
//! max_connections_per_ip = 50
//!
//! # TLS: a PEM certificate chain (leaf first) and its PEM private key,
//! # both or neither; each file must exist and hold PEM of its kind. Paths
//! # as for spool.dir. With them, STARTTLS (RFC 3207) is offered.
//! # tls_cert = "/etc/keel/tls/cert.pem"
//! # tls_key = "/etc/keel/tls/key.pem"
//! # Extra listeners speaking TLS from the first byte ("port 465", RFC
//! # 8314); needs tls_cert/tls_key. Same form as `listen`, may be empty.
//! tls_listen = []
//!
//! # SMTP AUTH (PLAIN, LOGIN) is offered when users are configured, and only
//! # on an encrypted session -- unless this is true, which also offers it in
//! # plain text to clients connecting over loopback (local submission).
//! auth_plaintext_loopback = false
//! # Failed AUTH attempts from one client address (IPv6: one /64) in five
//! # minutes after which further AUTH is refused with 421 4.7.0 and the
//! # connection closed, until the window passes. Integer >= 1.
//! max_auth_failures = 5
//! # New connections per client address (IPv6: one /64), e.g. "60/min", or
//! # "none"; more get 421 4.7.0. Clients in relay_networks are exempt.
//! max_connection_rate_per_ip = "300/min"
//! # Users, zero or more, names unique. An authenticated client may relay.
//! # password_hash: an argon2 PHC string; `keel passwd` reads a password on
//! # stdin and prints one. tenant (optional): whom this user's mail is for.
//! # [[smtp.user]]
//! # name = "campaigns"
//! # password_hash = "$argon2id$v=19$m=19456,t=2,p=1$...$..."
//! # tenant = "acme"
//!
//! # How long the server waits for the client (RFC 5321 section 4.5.3.2).
//! # Durations are humantime strings: "30s", "5m", "1h 30m", "3d"; each > 0.
//! # (Equivalent to `timeouts = { command = "5m", ... }` inside [smtp].)
//! [smtp.timeouts]
//! command = "5m"      # for each command
//! data_block = "3m"   # for each chunk of message data
//! data_done = "10m"   # bound on our processing after the final "."
//! greeting = "5m"     # for the client's first command after our greeting
//! session = "30m"     # for the whole session (slow clients get 421 4.4.2)
//! message = "15m"     # for the whole of one message's DATA (or BDAT chunk)
//!
//! # Staged back-pressure: sampled every second; the worst resource sets the
//! # stage. slow: MAIL replies held back by `tarpit`; defer: 452 4.3.1 at
//! # MAIL/RCPT; refuse: 421 4.3.2 at connect. Delivery keeps running. Each
//! # threshold may be "none". Disk: free space on the spool's filesystem.
//! [smtp.backpressure]
//! disk_free_slow = "2GB"
//! disk_free_defer = "1GB"
//! disk_free_refuse = "500MB"
//! memory_slow = "4GB"       # resident memory of the daemon
//! memory_defer = "6GB"
//! memory_refuse = "8GB"
//! queued_slow = 500000      # live messages in the spool
//! queued_defer = 1000000
//! queued_refuse = 2000000
//! tarpit = "1s"
//!
//! [http]
//! # Address of the HTTP API: one "ip:port".
//! listen = "127.0.0.1:8025"
//! # Bearer tokens for the admin API (`Authorization: Bearer <token>`), each at
//! # least 16 characters. Empty: only clients on loopback may use it.
//! api_tokens = []
//! # A file with more tokens, one per line ('#' comments), e.g. kept out of
//! # the main config by a secrets manager. Relative to the working directory.
//! # api_token_file = "/etc/keel/api-tokens"
//!
//! [spool]
//! # Directory of queued messages. A relative path is relative to the
//! # daemon's working directory (not to this file) and is kept as written.
//! dir = "keel-data/spool"
//!
//! [log]
//! # Directory of the JSON-lines event logs. Relative paths as for spool.dir.
//! dir = "keel-data/log"
//! # The live log is <dir>/events.jsonl. It is rotated -- renamed to
//! # events-<UTC time>.jsonl, then compressed to .jsonl.zst in the background
//! # -- once it holds rotate_size bytes, and whenever the clock passes a
//! # multiple of rotate_interval (UTC: "1d" rotates at midnight, "1h" on the
//! # hour; an empty file is not rotated). Each may be "none"; the interval is
//! # at least 1s. A size is as for smtp.max_message_size.
//! rotate_size = "256MB"
//! rotate_interval = "1d"
//! # Rotated segments older than this are deleted; "none" keeps them.
//! retention = "30d"
//! # At most this many rotated segments are kept, the oldest deleted first
//! # (integer >= 1). Default: no count limit.
//! # max_files = 200
//!
//! [dns]
//! # Name servers for MX/A/AAAA lookups: "ip" (port 53) or "ip:port" /
//! # "[ipv6]:port". Empty: use the system resolver (/etc/resolv.conf).
//! nameservers = []
//!
//! [delivery]
//! # TCP port of MX hosts (routes give their own). 1-65535.
//! port = 25
//! # Most simultaneous connections to one destination host. >= 1.
//! max_connections_per_destination = 32
//! # Most messages sent over one connection before closing it. >= 1.
//! max_messages_per_connection = 100
//! # Most recipients in one outbound transaction; more recipients of one
//! # domain are sent in several transactions. >= 1.
//! max_recipients_per_transaction = 100
//! # Time allowed for the TCP connect. > 0.
//! connect_timeout = "30s"
//! # How long an idle outbound connection is kept for reuse. "0s" closes
//! # connections as soon as their queue is empty.
//! idle_timeout = "10s"
//! # "opportunistic": use STARTTLS when offered, without verifying the
//! # certificate, falling back to plain text; "disabled": never.
//! starttls = "opportunistic"
//!
//! # How long we wait for the remote server (RFC 5321 section 4.5.3.2).
//! # Each > 0.
//! [delivery.timeouts]
//! greeting = "5m"     # for the 220 greeting
//! ehlo = "5m"         # for the EHLO/HELO reply (not in the RFC)
//! mail = "5m"         # for the MAIL FROM reply
//! rcpt = "5m"         # for each RCPT TO reply
//! data = "2m"         # for the 354 reply to DATA
//! data_block = "3m"   # for each chunk of data to be sent
//! data_done = "10m"   # for the reply after the final "."
//!
//! # Static routes: zero or more [[route]] tables, each with both keys.
//! # Mail for `domain` goes to `smarthost` instead of the domain's MX.
//! #
//! # domain: an exact domain, matched case-insensitively (stored lower case,
//! #   trailing dot removed; subdomains are not included), or "*" for every
//! #   domain without an exact route. Each domain may be routed only once.
//! # smarthost: "host", "host:port" or "[ipv6]:port"; the port defaults to
//! #   25. The host may be a name (resolved with A/AAAA at connect time, no MX
//! #   lookup) or an IP. Postfix-style brackets around a name are accepted.
//! #
//! # [[route]]
//! # domain = "example.com"
//! # smarthost = "127.0.0.1:2526"
//!
//! [retry]
//! # Wait before each retry of a temporarily failed delivery; after the
//! # list runs out the last interval repeats. Non-empty, each > 0.
//! intervals = ["5m", "10m", "20m", "40m", "1h"]
//! # Bounce a message still undelivered this long after it arrived. > 0.
//! max_age = "3d"
//!
//! # Traffic shaping, per (egress source, site); a site is a destination's MX
//! # host set. Rates: "<n>/s", "<n>/min", "<n>/h", "<n>/day" or "none".
//! [shaping.default]
//! # These two default to delivery.max_connections_per_destination and
//! # delivery.max_messages_per_connection.
//! max_connections = 32
//! max_messages_per_connection = 100
//! max_message_rate = "none"
//! max_connection_rate = "none"
//!
//! [shaping]
//! # Reply rules file (format documented in the built-in one,
//! # crates/keel-config/reply-rules.toml); default: the built-in rules for the largest
//! # providers. A relative path is relative to the working directory.
//! # reply_rules = "/etc/keel/reply-rules.toml"
//! # Adaptive shaping: halve a site's connections (and rate) on throttling
//! # replies, recover step by step while it accepts mail again.
//! adaptive = true
//! # Most jobs handed to one ready queue; more wait in the scheduled queue
//! # (with a Delayed event).
//! max_ready = 10000
//! # ... and at most this many message bytes (one job always goes).
//! max_ready_bytes = "512MB"
//!
//! # Rules override the defaults for matching sites, in file order (later
//! # wins). Each needs exactly one of `domain` (recipient domain) or
//! # `mx_suffix` (any MX host name of the site ends with it), plus any of the
//! # four limit keys above.
//! # [[shaping.rule]]
//! # mx_suffix = ".google.com"
//! # max_connections = 10
//! # max_message_rate = "3000/h"
//!
//! # Egress sources: the local address and EHLO name outbound connections use.
//! # Without any, one implicit source "default" (no bind, EHLO smtp.hostname).
//! # [[egress.source]]
//! # name = "ip1"
//! # bind = "192.0.2.10"
//! # ehlo = "mta1.example.com"
//! # warmup = ["1000/day", "5000/day"]   # daily caps for the first days of use
//!
//! # Pools spread mail over sources by weight; messages use the pool named in
//! # their X-Keel-Pool header, else "default" (implicitly: every source,
//! # weight 1).
//! # [[egress.pool]]
//! # name = "default"
//! # sources = [{ name = "ip1", weight = 2 }]
//!
//! # DKIM signing keys: zero or more [[dkim]] tables, each with all three
//! # keys. Mail whose From domain is `domain`, or a subdomain of it, is
//! # signed (the most specific configured domain wins; several selectors for
//! # one domain all sign, e.g. an RSA and an Ed25519 key). `keel dkim keygen`
//! # writes a key and prints the DNS TXT record to publish.
//! # domain: a DNS name (IDN allowed; stored as lowercase A-labels).
//! # selector: a DNS label sequence; the key is looked up by verifiers at
//! #   <selector>._domainkey.<domain>. Each (domain, selector) pair once.
//! # key: an unencrypted PKCS#8 PEM private key, RSA 2048-4096 bits or
//! #   Ed25519. A relative path is relative to THIS FILE's directory (not to
//! #   the working directory). The key is read and checked when the config is
//! #   loaded, so `keel check-config` reports a bad key at its line.
//! #
//! # [[dkim]]
//! # domain = "acme.example"
//! # selector = "s1"
//! # key = "keys/acme.pem"
//! ```
//!
//! # Modules
//!
//! * [`units`]: size and duration parsing, usable on their own for
//!   command-line flags.
//! * The address parsers ([`HostPort`], [`RouteDomain`],
//!   [`parse_listen_addr`], [`parse_network`], [`parse_nameserver`]) are
//!   exported for the same reason.
#![forbid(unsafe_code)]

mod addr;
mod backpressure;
mod config;
pub mod defaults;
mod dkim;
mod error;
mod load;
mod location;
mod log;
mod raw;
mod reply_rules;
mod shaping;
mod smtp_auth;
pub mod units;
mod validate;

#[cfg(test)]
mod tests;

use std::path::Path;

pub use addr::{
    DEFAULT_DNS_PORT, DEFAULT_SMTP_PORT, HostPort, RouteDomain, is_valid_hostname,
    parse_listen_addr, parse_nameserver, parse_network,
};
pub use backpressure::{BackpressureConfig, Thresholds};
pub use config::{
    Config, DeliveryConfig, DeliveryTimeouts, DnsConfig, HttpConfig, LogConfig, RetryConfig, Route,
    SmtpConfig, SmtpServerTimeouts, SpoolConfig, StartTls,
};
pub use error::{ConfigError, ConfigErrors, InvalidValue};
/// One `[[dkim]]` entry as the signer takes it (re-exported so callers need not name keel-dkim).
pub use keel_dkim::DkimKeyConfig;
pub use reply_rules::{
    BUILTIN_REPLY_RULES, Pattern, ReplyRule, RuleAction, load_reply_rules, parse_reply_rules,
};
pub use shaping::{
    DEFAULT_EGRESS, EgressConfig, EgressPool, EgressSource, Limits, ShapingConfig, ShapingRule,
    SiteMatch,
};
pub use smtp_auth::{SmtpUser, TlsFiles, check_password_hash};
pub use units::Rate;

impl Config {
    /// Reads, parses and validates the config file at `path`.
    ///
    /// On success `source` is `Some(path)`. On failure every problem found
    /// is returned; an unreadable file gives a single error with line 0.
    pub fn load(path: &Path) -> Result<Self, ConfigErrors> {
        load::load(path)
    }

    /// Parses and validates config text. `file` names it in error messages
    /// only; `source` is left `None`.
    pub fn parse(text: &str, file: &str) -> Result<Self, ConfigErrors> {
        load::parse(text, file)
    }
}
