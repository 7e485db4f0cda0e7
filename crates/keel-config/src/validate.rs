//! From the file as written ([`RawConfig`]) to the checked [`Config`].
//!
//! Every check records its error and carries on with the default, so one
//! pass reports everything wrong with the file; the half-built `Config` is
//! thrown away if anything was reported. Absent keys take the defaults from
//! [`crate::defaults`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use toml::Spanned;

use crate::addr::{self, HostPort, RouteDomain};
use crate::config::{
    Config, DeliveryConfig, DeliveryTimeouts, DnsConfig, HttpConfig, RetryConfig, Route,
    SmtpConfig, SmtpServerTimeouts, SpoolConfig, StartTls,
};
use crate::defaults as d;
use crate::error::InvalidValue;
use crate::location::Reporter;
use crate::raw::{
    self, DurationText, Int, OneOrMany, RawConfig, RawDelivery, RawDir, RawDns, RawHttp, RawRetry,
    RawRouteEntry, RawSize, RawSmtp,
};
use crate::units;

/// Checks and converts a whole file, recording every problem in `reporter`.
pub(crate) fn validate(raw: RawConfig, reporter: &mut Reporter<'_>) -> Config {
    let mut v = Validator {
        reporter,
        listeners: Vec::new(),
    };
    let config = Config {
        smtp: v.smtp(&raw.smtp),
        http: v.http(&raw.http),
        spool: SpoolConfig {
            dir: v.dir(&raw.spool, "spool.dir", d::SPOOL_DIR),
        },
        log: v.log(&raw.log),
        dns: v.dns(&raw.dns),
        delivery: v.delivery(&raw.delivery),
        routes: v.routes(&raw.routes),
        retry: v.retry(&raw.retry),
        shaping: crate::shaping::ShapingConfig::from_delivery(&DeliveryConfig::default()),
        egress: v.egress(&raw.egress),
        dkim: v.dkim(&raw.dkim, raw.config_dir.as_deref()),
        source: None,
    };
    let mut config = config;
    config.shaping = v.shaping(&raw.shaping, &config.delivery);
    v.check_listener_clashes();
    config
}

/// A listen address with where it was configured, for the clash check.
struct Listener {
    addr: SocketAddr,
    span: Range<usize>,
    key: String,
}

pub(crate) struct Validator<'r, 'a> {
    reporter: &'r mut Reporter<'a>,
    listeners: Vec<Listener>,
}

impl Validator<'_, '_> {
    pub(crate) fn error(&mut self, span: Range<usize>, key: &str, message: impl Into<String>) {
        self.reporter.error(span, key, message);
    }

    // ---- sections -------------------------------------------------------

    fn smtp(&mut self, raw: &RawSmtp) -> SmtpConfig {
        let listen = self
            .listen_addrs(raw.listen.as_ref(), "smtp.listen", false)
            .unwrap_or_else(|| vec![d::SMTP_LISTEN]);
        let tls = self.smtp_tls(raw);
        let tls_listen = self
            .listen_addrs(raw.tls_listen.as_ref(), "smtp.tls_listen", true)
            .unwrap_or_default();
        self.smtp_tls_listen_needs_tls(raw, tls.is_some());
        let auth_plaintext_loopback = raw
            .auth_plaintext_loopback
            .as_ref()
            .is_some_and(|b| *b.get_ref());
        let auth_possible = tls.is_some() || raw.tls_cert.is_some() || auth_plaintext_loopback;
        let users = self.smtp_users(raw, auth_possible);
        let t = raw.timeouts.as_ref();
        let mut timeout = |value: Option<&Spanned<DurationText>>, name: &str, default| {
            self.duration(value, &format!("smtp.timeouts.{name}"), default, false)
        };
        let timeouts = SmtpServerTimeouts {
            command: timeout(
                t.and_then(|t| t.command.as_ref()),
                "command",
                d::SMTP_COMMAND_TIMEOUT,
            ),
            data_block: timeout(
                t.and_then(|t| t.data_block.as_ref()),
                "data_block",
                d::SMTP_DATA_BLOCK_TIMEOUT,
            ),
            data_done: timeout(
                t.and_then(|t| t.data_done.as_ref()),
                "data_done",
                d::SMTP_DATA_DONE_TIMEOUT,
            ),
            greeting: timeout(
                t.and_then(|t| t.greeting.as_ref()),
                "greeting",
                d::SMTP_GREETING_TIMEOUT,
            ),
            session: timeout(
                t.and_then(|t| t.session.as_ref()),
                "session",
                d::SMTP_SESSION_TIMEOUT,
            ),
            message: timeout(
                t.and_then(|t| t.message.as_ref()),
                "message",
                d::SMTP_MESSAGE_TIMEOUT,
            ),
        };
        let max_connection_rate_per_ip = match &raw.max_connection_rate_per_ip {
            Some(text) => self
                .parse(text, "smtp.max_connection_rate_per_ip", units::parse_rate)
                .unwrap_or(Some(d::MAX_CONNECTION_RATE_PER_IP)),
            None => Some(d::MAX_CONNECTION_RATE_PER_IP),
        };
        let backpressure = self.backpressure(raw.backpressure.as_ref());
        SmtpConfig {
            listen,
            hostname: match &raw.hostname {
                Some(name) => self.hostname(name),
                None => d::system_hostname(),
            },
            max_message_size: self.size(
                raw.max_message_size.as_ref(),
                "smtp.max_message_size",
                d::MAX_MESSAGE_SIZE,
            ),
            max_recipients: self.count(
                raw.max_recipients.as_ref(),
                "smtp.max_recipients",
                d::MAX_RECIPIENTS,
            ),
            relay_networks: self
                .list(
                    raw.relay_networks.as_ref(),
                    "smtp.relay_networks",
                    true,
                    addr::parse_network,
                )
                .map_or_else(|| d::RELAY_NETWORKS.to_vec(), strip_spans),
            max_connections: self.count(
                raw.max_connections.as_ref(),
                "smtp.max_connections",
                d::MAX_CONNECTIONS,
            ),
            max_connections_per_ip: self.count(
                raw.max_connections_per_ip.as_ref(),
                "smtp.max_connections_per_ip",
                d::MAX_CONNECTIONS_PER_IP,
            ),
            timeouts,
            tls,
            tls_listen,
            users,
            auth_plaintext_loopback,
            max_auth_failures: self.count(
                raw.max_auth_failures.as_ref(),
                "smtp.max_auth_failures",
                d::MAX_AUTH_FAILURES,
            ),
            max_connection_rate_per_ip,
            backpressure,
        }
    }

    fn http(&mut self, raw: &RawHttp) -> HttpConfig {
        let listen = match &raw.listen {
            Some(text) => match addr::parse_listen_addr(text.get_ref()) {
                Ok(addr) => {
                    self.listeners.push(Listener {
                        addr,
                        span: text.span(),
                        key: "http.listen".to_owned(),
                    });
                    addr
                }
                Err(e) => {
                    self.error(text.span(), "http.listen", e.0);
                    d::HTTP_LISTEN
                }
            },
            None => d::HTTP_LISTEN,
        };
        let mut api_tokens = Vec::new();
        for (i, t) in raw.api_tokens.iter().flatten().enumerate() {
            if t.get_ref().len() < 16 {
                self.error(
                    t.span(),
                    &format!("http.api_tokens[{i}]"),
                    "an API token must be at least 16 characters (e.g. `openssl rand -hex 24`)",
                );
            } else {
                api_tokens.push(t.get_ref().clone());
            }
        }
        if let Some(path) = &raw.api_token_file {
            match std::fs::read_to_string(path.get_ref()) {
                Ok(text) => {
                    for (n, line) in text.lines().enumerate() {
                        let token = line.trim();
                        if token.is_empty() || token.starts_with('#') {
                            continue;
                        }
                        if token.len() < 16 {
                            self.error(
                                path.span(),
                                "http.api_token_file",
                                format!(
                                    "line {} of {}: an API token must be at least 16 characters",
                                    n + 1,
                                    path.get_ref()
                                ),
                            );
                        } else {
                            api_tokens.push(token.to_string());
                        }
                    }
                }
                Err(e) => self.error(
                    path.span(),
                    "http.api_token_file",
                    format!("cannot read {:?}: {e}", path.get_ref()),
                ),
            }
        }
        HttpConfig { listen, api_tokens }
    }

    fn dns(&mut self, raw: &RawDns) -> DnsConfig {
        DnsConfig {
            nameservers: self
                .list(
                    raw.nameservers.as_ref(),
                    "dns.nameservers",
                    true,
                    addr::parse_nameserver,
                )
                .map_or_else(Vec::new, strip_spans),
        }
    }

    fn delivery(&mut self, raw: &RawDelivery) -> DeliveryConfig {
        let t = raw.timeouts.as_ref();
        let mut timeout = |value: Option<&Spanned<DurationText>>, name: &str, default| {
            self.duration(value, &format!("delivery.timeouts.{name}"), default, false)
        };
        let timeouts = DeliveryTimeouts {
            greeting: timeout(
                t.and_then(|t| t.greeting.as_ref()),
                "greeting",
                d::CLIENT_GREETING_TIMEOUT,
            ),
            ehlo: timeout(
                t.and_then(|t| t.ehlo.as_ref()),
                "ehlo",
                d::CLIENT_EHLO_TIMEOUT,
            ),
            mail: timeout(
                t.and_then(|t| t.mail.as_ref()),
                "mail",
                d::CLIENT_MAIL_TIMEOUT,
            ),
            rcpt: timeout(
                t.and_then(|t| t.rcpt.as_ref()),
                "rcpt",
                d::CLIENT_RCPT_TIMEOUT,
            ),
            data: timeout(
                t.and_then(|t| t.data.as_ref()),
                "data",
                d::CLIENT_DATA_TIMEOUT,
            ),
            data_block: timeout(
                t.and_then(|t| t.data_block.as_ref()),
                "data_block",
                d::CLIENT_DATA_BLOCK_TIMEOUT,
            ),
            data_done: timeout(
                t.and_then(|t| t.data_done.as_ref()),
                "data_done",
                d::CLIENT_DATA_DONE_TIMEOUT,
            ),
        };
        DeliveryConfig {
            port: self.port(raw.port.as_ref(), "delivery.port", d::DELIVERY_PORT),
            max_connections_per_destination: self.count(
                raw.max_connections_per_destination.as_ref(),
                "delivery.max_connections_per_destination",
                d::MAX_CONNECTIONS_PER_DESTINATION,
            ),
            max_messages_per_connection: self.count(
                raw.max_messages_per_connection.as_ref(),
                "delivery.max_messages_per_connection",
                d::MAX_MESSAGES_PER_CONNECTION,
            ),
            max_recipients_per_transaction: self.count(
                raw.max_recipients_per_transaction.as_ref(),
                "delivery.max_recipients_per_transaction",
                d::MAX_RECIPIENTS_PER_TRANSACTION,
            ),
            connect_timeout: self.duration(
                raw.connect_timeout.as_ref(),
                "delivery.connect_timeout",
                d::CONNECT_TIMEOUT,
                false,
            ),
            timeouts,
            // Zero is meaningful here: don't keep idle connections at all.
            idle_timeout: self.duration(
                raw.idle_timeout.as_ref(),
                "delivery.idle_timeout",
                d::IDLE_TIMEOUT,
                true,
            ),
            starttls: match &raw.starttls {
                None => StartTls::Opportunistic,
                Some(text) => match text.get_ref().as_str() {
                    "opportunistic" => StartTls::Opportunistic,
                    "disabled" => StartTls::Disabled,
                    other => {
                        self.error(
                            text.span(),
                            "delivery.starttls",
                            format!("invalid value {other:?}: expected \"opportunistic\" or \"disabled\""),
                        );
                        StartTls::Opportunistic
                    }
                },
            },
        }
    }

    fn routes(&mut self, raw: &[RawRouteEntry]) -> Vec<Route> {
        // Where each domain was first routed, to name it in a duplicate error.
        let mut seen: HashMap<RouteDomain, usize> = HashMap::new();
        let mut routes = Vec::new();
        for entry in raw {
            let prefix = format!("route[{}]", entry.index);
            let (domain, smarthost) = (entry.route.domain.as_ref(), entry.route.smarthost.as_ref());
            // A missing key is reported at the `[[route]]` header; the key
            // that is present is still checked, for the one pass.
            let missing = match (domain, smarthost) {
                (None, None) => Some("empty route: `domain` and `smarthost` are both required"),
                (None, Some(_)) => Some(
                    "missing key `domain`: the recipient domain this route is for, or \"*\" for all",
                ),
                (Some(_), None) => Some(
                    "missing key `smarthost`: the \"host:port\" to deliver this domain's mail to",
                ),
                (Some(_), Some(_)) => None,
            };
            if let Some(message) = missing {
                self.error(entry.header.clone(), &prefix, message);
            }

            let domain = domain.and_then(|text| {
                let key = format!("{prefix}.domain");
                let parsed = self.parse(text, &key, str::parse::<RouteDomain>)?;
                let line = self.reporter.line_of(text.span().start);
                match seen.get(&parsed) {
                    Some(first) => {
                        self.error(
                            text.span(),
                            &key,
                            format!(
                                "duplicate route for {:?} (first routed at line {first})",
                                parsed.to_string()
                            ),
                        );
                        None
                    }
                    None => {
                        seen.insert(parsed.clone(), line);
                        Some(parsed)
                    }
                }
            });
            let smarthost = smarthost.and_then(|text| {
                self.parse(text, &format!("{prefix}.smarthost"), str::parse::<HostPort>)
            });
            if let (Some(domain), Some(smarthost)) = (domain, smarthost) {
                routes.push(Route { domain, smarthost });
            }
        }
        routes
    }

    fn retry(&mut self, raw: &RawRetry) -> RetryConfig {
        let intervals = match &raw.intervals {
            None => d::RETRY_INTERVALS.to_vec(),
            Some(list) if list.get_ref().is_empty() => {
                self.error(
                    list.span(),
                    "retry.intervals",
                    "must list at least one interval, e.g. [\"5m\", \"1h\"] (the last one repeats)",
                );
                d::RETRY_INTERVALS.to_vec()
            }
            Some(list) => list
                .get_ref()
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    let key = format!("retry.intervals[{i}]");
                    self.duration(Some(item), &key, Duration::ZERO, false)
                })
                .collect(),
        };
        RetryConfig {
            intervals,
            max_age: self.duration(
                raw.max_age.as_ref(),
                "retry.max_age",
                d::RETRY_MAX_AGE,
                false,
            ),
        }
    }

    /// Two listeners on the same address would fail at bind time with a
    /// less helpful message; port 0 (any free port) never clashes.
    fn check_listener_clashes(&mut self) {
        let listeners = std::mem::take(&mut self.listeners);
        for (i, later) in listeners.iter().enumerate() {
            if later.addr.port() == 0 {
                continue;
            }
            if let Some(first) = listeners[..i].iter().find(|l| l.addr == later.addr) {
                self.error(
                    later.span.clone(),
                    &later.key,
                    format!("address {} is already used by {}", later.addr, first.key),
                );
            }
        }
    }

    /// A list of listen addresses (`None` if absent), each remembered for the clash check.
    fn listen_addrs(
        &mut self,
        value: Option<&Spanned<OneOrMany>>,
        key: &str,
        empty_ok: bool,
    ) -> Option<Vec<SocketAddr>> {
        let list = self.list(value, key, empty_ok, addr::parse_listen_addr)?;
        for (addr, span, key) in &list {
            self.listeners.push(Listener {
                addr: *addr,
                span: span.clone(),
                key: key.clone(),
            });
        }
        Some(list.into_iter().map(|(addr, ..)| addr).collect())
    }

    /// The 1-based line of a byte offset, for messages that point at another place.
    pub(crate) fn line_of(&self, offset: usize) -> usize {
        self.reporter.line_of(offset)
    }

    // ---- value kinds ----------------------------------------------------

    /// Runs a string parser, reporting its error at the value.
    pub(crate) fn parse<T>(
        &mut self,
        text: &Spanned<String>,
        key: &str,
        parse: impl FnOnce(&str) -> Result<T, InvalidValue>,
    ) -> Option<T> {
        parse(text.get_ref())
            .map_err(|e| self.error(text.span(), key, e.0))
            .ok()
    }

    /// A string-or-list of values; `None` if absent. Each good item comes
    /// with its span and key for later cross-checks.
    fn list<T>(
        &mut self,
        value: Option<&Spanned<OneOrMany>>,
        key: &str,
        empty_ok: bool,
        parse: impl Fn(&str) -> Result<T, InvalidValue>,
    ) -> Option<Vec<(T, Range<usize>, String)>> {
        let value = value?;
        let items = raw::items(value);
        if items.is_empty() && !empty_ok {
            self.error(value.span(), key, "must list at least one address");
        }
        let mut out = Vec::new();
        for (text, span, suffix) in items {
            let item_key = format!("{key}{suffix}");
            match parse(text) {
                Ok(parsed) => out.push((parsed, span, item_key)),
                Err(e) => self.error(span, &item_key, e.0),
            }
        }
        Some(out)
    }

    pub(crate) fn hostname(&mut self, name: &Spanned<String>) -> String {
        let text = name.get_ref();
        if addr::is_valid_hostname(text) {
            text.strip_suffix('.').unwrap_or(text).to_owned()
        } else {
            let problem = addr::hostname_problem(text);
            self.error(
                name.span(),
                "smtp.hostname",
                format!("invalid host name {text:?}: {problem}"),
            );
            d::FALLBACK_HOSTNAME.to_owned()
        }
    }

    fn dir(&mut self, raw: &RawDir, key: &str, default: &str) -> PathBuf {
        match &raw.dir {
            None => PathBuf::from(default),
            Some(dir) if dir.get_ref().trim().is_empty() => {
                self.error(dir.span(), key, "must not be empty");
                PathBuf::from(default)
            }
            Some(dir) => PathBuf::from(dir.get_ref()),
        }
    }

    /// A byte size, which must be positive: a zero limit would refuse every
    /// message, which is never what was meant.
    pub(crate) fn size(
        &mut self,
        value: Option<&Spanned<RawSize>>,
        key: &str,
        default: u64,
    ) -> u64 {
        let Some(value) = value else { return default };
        let bytes = match value.get_ref() {
            RawSize::Bytes(n) => u64::try_from(*n)
                .map_err(|_| InvalidValue(format!("size must not be negative, got {n}"))),
            RawSize::Text(text) => units::parse_size(text),
        };
        match bytes {
            Ok(0) => self.error(value.span(), key, "must be greater than zero"),
            Ok(bytes) => return bytes,
            Err(e) => self.error(value.span(), key, e.0),
        }
        default
    }

    /// A count such as a connection limit; at least 1, since a zero limit
    /// would make the daemon useless rather than express a policy.
    pub(crate) fn count(
        &mut self,
        value: Option<&Spanned<Int>>,
        key: &str,
        default: usize,
    ) -> usize {
        let Some(value) = value else { return default };
        let Int(n) = *value.get_ref();
        match usize::try_from(n) {
            Ok(n) if n >= 1 => n,
            _ => {
                self.error(value.span(), key, format!("must be at least 1, got {n}"));
                default
            }
        }
    }

    fn port(&mut self, value: Option<&Spanned<Int>>, key: &str, default: u16) -> u16 {
        let Some(value) = value else { return default };
        let Int(n) = *value.get_ref();
        match u16::try_from(n) {
            Ok(port) if port != 0 => port,
            _ => {
                self.error(
                    value.span(),
                    key,
                    format!("must be a port number from 1 to 65535, got {n}"),
                );
                default
            }
        }
    }

    fn duration(
        &mut self,
        value: Option<&Spanned<DurationText>>,
        key: &str,
        default: Duration,
        zero_ok: bool,
    ) -> Duration {
        let Some(value) = value else { return default };
        match units::parse_duration(&value.get_ref().0) {
            Ok(duration) if duration.is_zero() && !zero_ok => {
                self.error(value.span(), key, "must be greater than zero");
                default
            }
            Ok(duration) => duration,
            Err(e) => {
                self.error(value.span(), key, e.0);
                default
            }
        }
    }
}

fn strip_spans<T>(list: Vec<(T, Range<usize>, String)>) -> Vec<T> {
    list.into_iter().map(|(item, ..)| item).collect()
}
