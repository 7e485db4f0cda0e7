//! Where to deliver a domain's mail: MX lookup (RFC 5321 §5.1) with hickory, or a configured
//! smarthost route.
//!
//! - MX records in preference order (equal preferences in rotating order, to spread load);
//!   each exchange resolved to its addresses; an exchange that does not resolve is skipped.
//! - No MX records but the domain exists: the domain itself is the exchange (implicit MX).
//! - Null MX (a single MX of ".", RFC 7505): the domain accepts no mail — permanent.
//! - NXDOMAIN: permanent. Any other DNS trouble (SERVFAIL, timeout): transient.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ProtocolConfig, ResolverConfig,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;

use crate::events::Response;

/// One host to try, with its addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// MX host name or smarthost (what events call the site).
    pub host: String,
    pub addrs: Vec<IpAddr>,
    pub port: u16,
}

/// Why no target could be found.
#[derive(Debug, Clone)]
pub enum ResolveError {
    /// The domain cannot receive mail (NXDOMAIN, null MX): bounce.
    Permanent(Response),
    /// Try again later.
    Transient(Response),
}

/// DNS for delivery.
pub struct Resolver {
    dns: TokioResolver,
    rotate: AtomicUsize,
}

impl Resolver {
    /// The system resolver, or the given name servers (e.g. a test's local DNS server).
    pub fn new(nameservers: &[SocketAddr]) -> anyhow::Result<Self> {
        let mut builder = if nameservers.is_empty() {
            TokioResolver::builder_tokio()?
        } else {
            let servers = nameservers
                .iter()
                .map(|ns| {
                    let mut udp = ConnectionConfig::new(ProtocolConfig::Udp);
                    udp.port = ns.port();
                    let mut tcp = ConnectionConfig::new(ProtocolConfig::Tcp);
                    tcp.port = ns.port();
                    let mut server = NameServerConfig::udp_and_tcp(ns.ip());
                    server.connections = vec![udp, tcp];
                    server
                })
                .collect();
            TokioResolver::builder_with_config(
                ResolverConfig::from_name_servers(servers),
                TokioRuntimeProvider::default(),
            )
        };
        let opts = builder.options_mut();
        opts.timeout = Duration::from_secs(5);
        opts.attempts = 2;
        opts.ndots = 0;
        Ok(Self {
            dns: builder.build()?,
            rotate: AtomicUsize::new(0),
        })
    }

    /// Targets for a mail domain, best first.
    pub async fn mx_targets(&self, domain: &str, port: u16) -> Result<Vec<Target>, ResolveError> {
        if let Some(lit) = domain.strip_prefix('[').and_then(|d| d.strip_suffix(']')) {
            let ip = lit
                .strip_prefix("IPv6:")
                .unwrap_or(lit)
                .parse::<IpAddr>()
                .map_err(|_| permanent(553, "5.1.2", format!("bad address literal {domain}")))?;
            return Ok(vec![Target {
                host: domain.to_string(),
                addrs: vec![ip],
                port,
            }]);
        }
        let fqdn = format!("{}.", domain.trim_end_matches('.'));
        let mxs = match self.dns.mx_lookup(fqdn.as_str()).await {
            Ok(lookup) => {
                let mut mxs: Vec<(u16, String)> = lookup
                    .answers()
                    .iter()
                    .filter_map(|r| match &r.data {
                        RData::MX(mx) => Some((mx.preference, mx.exchange.to_ascii())),
                        _ => None,
                    })
                    .collect();
                mxs.sort();
                mxs
            }
            Err(e) if e.is_nx_domain() => {
                return Err(permanent(
                    550,
                    "5.1.2",
                    format!("domain {domain} does not exist (NXDOMAIN)"),
                ));
            }
            Err(e) if e.is_no_records_found() => Vec::new(),
            Err(e) => {
                return Err(transient(format!("MX lookup for {domain} failed: {e}")));
            }
        };
        if mxs.len() == 1 && (mxs[0].1 == "." || mxs[0].1.is_empty()) {
            return Err(permanent(
                556,
                "5.1.10",
                format!("domain {domain} accepts no mail (null MX, RFC 7505)"),
            ));
        }
        if mxs.is_empty() {
            // Implicit MX: the domain's own address records.
            return match self.addresses(&fqdn).await {
                Ok(addrs) if !addrs.is_empty() => Ok(vec![Target {
                    host: domain.to_string(),
                    addrs,
                    port,
                }]),
                Ok(_) => Err(permanent(
                    550,
                    "5.1.2",
                    format!("domain {domain} has no MX and no address records"),
                )),
                Err(e) => Err(e),
            };
        }
        let mxs = self.rotate_equal(mxs);
        let mut targets = Vec::with_capacity(mxs.len());
        let mut last_err = None;
        for (_, host) in mxs {
            if host == "." {
                continue;
            }
            match self.addresses(&host).await {
                Ok(addrs) if !addrs.is_empty() => targets.push(Target {
                    host: host.trim_end_matches('.').to_string(),
                    addrs,
                    port,
                }),
                Ok(_) => {}
                Err(e) => last_err = Some(e),
            }
        }
        if targets.is_empty() {
            return Err(match last_err {
                Some(ResolveError::Transient(r)) => ResolveError::Transient(r),
                _ => transient(format!("no MX host of {domain} has an address")),
            });
        }
        Ok(targets)
    }

    /// The target for a smarthost `host:port` (an IP or a name).
    pub async fn host_target(&self, host: &str, port: u16) -> Result<Target, ResolveError> {
        if let Ok(ip) = host.trim_matches(['[', ']']).parse::<IpAddr>() {
            return Ok(Target {
                host: host.to_string(),
                addrs: vec![ip],
                port,
            });
        }
        let fqdn = format!("{}.", host.trim_end_matches('.'));
        match self.addresses(&fqdn).await {
            Ok(addrs) if !addrs.is_empty() => Ok(Target {
                host: host.to_string(),
                addrs,
                port,
            }),
            Ok(_) => Err(transient(format!("smarthost {host} has no address"))),
            // A missing smarthost is a configuration problem, not the recipient's: retry.
            Err(ResolveError::Permanent(r)) | Err(ResolveError::Transient(r)) => {
                Err(transient(r.text))
            }
        }
    }

    async fn addresses(&self, fqdn: &str) -> Result<Vec<IpAddr>, ResolveError> {
        match self.dns.lookup_ip(fqdn).await {
            Ok(ips) => Ok(ips.iter().collect()),
            Err(e) if e.is_nx_domain() => Err(permanent(
                550,
                "5.1.2",
                format!(
                    "host {} does not exist (NXDOMAIN)",
                    fqdn.trim_end_matches('.')
                ),
            )),
            Err(e) if e.is_no_records_found() => Ok(Vec::new()),
            Err(e) => Err(transient(format!(
                "address lookup for {} failed: {e}",
                fqdn.trim_end_matches('.')
            ))),
        }
    }

    /// Rotates each group of equal preference, so equal MX hosts share the load.
    fn rotate_equal(&self, mxs: Vec<(u16, String)>) -> Vec<(u16, String)> {
        let turn = self.rotate.fetch_add(1, Ordering::Relaxed);
        let mut out = Vec::with_capacity(mxs.len());
        let mut i = 0;
        while i < mxs.len() {
            let j = mxs[i..]
                .iter()
                .position(|(p, _)| *p != mxs[i].0)
                .map_or(mxs.len(), |k| i + k);
            let mut group = mxs[i..j].to_vec();
            let len = group.len();
            group.rotate_left(turn % len);
            out.extend(group);
            i = j;
        }
        out
    }
}

fn permanent(code: u16, enhanced: &str, text: String) -> ResolveError {
    ResolveError::Permanent(Response {
        code,
        enhanced: enhanced.into(),
        text,
    })
}

fn transient(text: String) -> ResolveError {
    ResolveError::Transient(Response {
        code: 451,
        enhanced: "4.4.3".into(),
        text,
    })
}
