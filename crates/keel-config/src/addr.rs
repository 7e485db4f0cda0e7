//! Addresses, networks and host names.
//!
//! Parsing happens once, at load time, so the daemon never has to deal with
//! a malformed address at bind or connect time. Listen addresses and name
//! servers must be IP literals: resolving names would make loading depend
//! on DNS, and a listener bound to "whatever the name resolved to at boot"
//! is a classic source of surprises. Smarthosts may be host names, because
//! relays are commonly addressed by name and resolved per connection.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use ipnet::IpNet;

use crate::error::InvalidValue;

/// The SMTP port used when a smarthost gives none.
pub const DEFAULT_SMTP_PORT: u16 = 25;

/// The DNS port used when a name server gives none.
pub const DEFAULT_DNS_PORT: u16 = 53;

/// Parses a listen address: an IP literal with a port (`"127.0.0.1:2525"`,
/// `"[::1]:2525"`). Port 0 is allowed and means "any free port", which
/// tests rely on.
pub fn parse_listen_addr(text: &str) -> Result<SocketAddr, InvalidValue> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let reason = if text.parse::<IpAddr>().is_ok() {
        "a port is required"
    } else {
        "expected \"ip:port\" (host names are not allowed here)"
    };
    Err(InvalidValue(format!(
        "invalid address {text:?}: {reason}, e.g. \"127.0.0.1:2525\" or \"[::1]:2525\""
    )))
}

/// Parses a relay network: a CIDR (`"10.0.0.0/8"`, `"2001:db8::/32"`) or a
/// single IP address, which stands for just that host.
///
/// Host bits are cleared (`"10.1.2.3/8"` becomes `10.0.0.0/8`): the intent
/// is unambiguous and matching is by prefix anyway.
pub fn parse_network(text: &str) -> Result<IpNet, InvalidValue> {
    if let Ok(net) = text.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(IpNet::from(ip));
    }
    Err(InvalidValue(format!(
        "invalid network {text:?}: expected a CIDR such as \"10.0.0.0/8\" or \"2001:db8::/32\", or a single IP address"
    )))
}

/// Parses a DNS name server: `"ip"` (port 53) or `"ip:port"` / `"[ipv6]:port"`.
pub fn parse_nameserver(text: &str) -> Result<SocketAddr, InvalidValue> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, DEFAULT_DNS_PORT));
    }
    Err(InvalidValue(format!(
        "invalid name server {text:?}: expected an IP address with an optional port, e.g. \"192.0.2.53\" or \"192.0.2.53:5353\""
    )))
}

/// True if `name` is a syntactically valid DNS host name (LDH labels of
/// 1–63 characters, at most 253 in all, an optional trailing dot).
///
/// An all-numeric last label is rejected so that a mistyped IPv4 address
/// such as `300.1.1.1` is not taken for a host name.
pub fn is_valid_hostname(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    let label_ok = |label: &str| {
        (1..=63).contains(&label.len())
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    let numeric_tld = name
        .rsplit('.')
        .next()
        .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()));
    !name.is_empty() && name.len() <= 253 && name.split('.').all(label_ok) && !numeric_tld
}

/// Why a host name was rejected, phrased for the operator.
pub(crate) fn hostname_problem(name: &str) -> String {
    if !name.is_ascii() {
        "internationalized names must be written in their ASCII (\"xn--\") form".to_owned()
    } else {
        "expected a host name made of letters, digits, hyphens and dots".to_owned()
    }
}

/// A host and port to connect to, as given for a smarthost.
///
/// `host` is an IP address in canonical form (IPv6 without brackets) or a
/// lower-case host name without a trailing dot. A host name is resolved to
/// addresses (A/AAAA) at connect time; no MX lookup is done for it.
///
/// Parsing accepts `"host"`, `"host:port"` and `"[ipv6]:port"`; brackets
/// around a host name or IPv4 address (`"[relay.example.com]:587"`, the
/// Postfix spelling) are tolerated and dropped.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostPort {
    /// IP literal or lower-case host name.
    pub host: String,
    /// TCP port; 25 when the config gives none.
    pub port: u16,
}

impl HostPort {
    /// The host as an IP address, if it is one (so no DNS lookup is needed).
    pub fn ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }
}

/// Writes `host:port`, bracketing IPv6 addresses (`[::1]:25`), so the
/// output parses back to the same value.
impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Parses `"host"`, `"host:port"`, `"[ipv6]"` or `"[ipv6]:port"`; the
/// port defaults to 25.
impl FromStr for HostPort {
    type Err = InvalidValue;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let fail = |reason: &str| {
            InvalidValue(format!(
                "invalid host {text:?}: {reason}; expected \"host\", \"host:port\" or \"[ipv6]:port\""
            ))
        };
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (inside, after) = rest.split_once(']').ok_or_else(|| fail("missing \"]\""))?;
            let port = match after {
                "" => None,
                _ => Some(
                    after
                        .strip_prefix(':')
                        .ok_or_else(|| fail("expected \":\" after \"]\""))?,
                ),
            };
            // Brackets are required around IPv6 but, as in Postfix's
            // `relayhost = [mail.example.com]:587`, also tolerated around a
            // host name or IPv4 address (we never do MX lookups for a
            // smarthost, so they change nothing).
            let host = match inside.parse::<Ipv6Addr>() {
                Ok(ip) => ip.to_string(),
                Err(_) => parse_host(inside).map_err(|reason| fail(&reason))?,
            };
            (host, port)
        } else {
            let (host, port) = match text.matches(':').count() {
                0 => (text, None),
                1 => text
                    .split_once(':')
                    .map(|(h, p)| (h, Some(p)))
                    .unwrap_or((text, None)),
                _ if text.parse::<Ipv6Addr>().is_ok() => {
                    return Err(fail(
                        "an IPv6 address must be in brackets, e.g. \"[2001:db8::1]:25\"",
                    ));
                }
                _ => return Err(fail("too many \":\"")),
            };
            (parse_host(host).map_err(|reason| fail(&reason))?, port)
        };
        let port = match port {
            None => DEFAULT_SMTP_PORT,
            Some(p) => match p.parse::<u16>() {
                Ok(0) | Err(_) => return Err(fail("the port must be a number from 1 to 65535")),
                Ok(port) => port,
            },
        };
        Ok(Self { host, port })
    }
}

/// An IPv4 address in canonical form, or a host name in lower case
/// without its trailing dot.
fn parse_host(host: &str) -> Result<String, String> {
    if let Ok(ip) = host.parse::<Ipv4Addr>() {
        Ok(ip.to_string())
    } else if is_valid_hostname(host) {
        let host = host.strip_suffix('.').unwrap_or(host);
        Ok(host.to_ascii_lowercase())
    } else if host.is_empty() {
        Err("the host is missing".to_owned())
    } else {
        Err(hostname_problem(host))
    }
}

/// Which recipient domains a route applies to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RouteDomain {
    /// Exactly this domain (lower case, no trailing dot). Subdomains are
    /// not included: `example.com` does not match `mail.example.com`.
    Exact(String),
    /// `"*"`: every domain without a more specific route.
    Any,
}

impl RouteDomain {
    /// True if mail for `domain` (any case, optional trailing dot) takes
    /// this route.
    pub fn matches(&self, domain: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Exact(exact) => {
                let domain = domain.strip_suffix('.').unwrap_or(domain);
                exact.eq_ignore_ascii_case(domain)
            }
        }
    }
}

impl fmt::Display for RouteDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(domain) => f.write_str(domain),
            Self::Any => f.write_str("*"),
        }
    }
}

/// Parses `"*"` or a domain name, normalizing to lower case without a
/// trailing dot so that lookups and duplicate checks compare like with like.
impl FromStr for RouteDomain {
    type Err = InvalidValue;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text == "*" {
            return Ok(Self::Any);
        }
        if text.contains('*') {
            return Err(InvalidValue(format!(
                "invalid domain {text:?}: only a lone \"*\" is supported as a wildcard; list subdomains as routes of their own"
            )));
        }
        if !is_valid_hostname(text) {
            return Err(InvalidValue(format!(
                "invalid domain {text:?}: {}",
                hostname_problem(text)
            )));
        }
        let domain = text.strip_suffix('.').unwrap_or(text);
        Ok(Self::Exact(domain.to_ascii_lowercase()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hp(text: &str) -> Result<(String, u16), String> {
        text.parse::<HostPort>()
            .map(|h| (h.host, h.port))
            .map_err(|e| e.0)
    }

    #[test]
    fn host_port_forms() {
        assert_eq!(hp("127.0.0.1:2526"), Ok(("127.0.0.1".into(), 2526)));
        assert_eq!(
            hp("relay.Example.NET"),
            Ok(("relay.example.net".into(), 25))
        );
        assert_eq!(
            hp("relay.example.net.:587"),
            Ok(("relay.example.net".into(), 587))
        );
        assert_eq!(hp("[2001:db8::1]:2525"), Ok(("2001:db8::1".into(), 2525)));
        assert_eq!(hp("[::1]"), Ok(("::1".into(), 25)));
        assert_eq!(
            hp("[Relay.example.com]:587"),
            Ok(("relay.example.com".into(), 587))
        );
        assert_eq!(hp("[192.0.2.1]"), Ok(("192.0.2.1".into(), 25)));
        let v6: HostPort = "[::1]:2525".parse().expect("valid");
        assert_eq!(v6.to_string(), "[::1]:2525");
        assert_eq!(v6.ip(), Some(IpAddr::V6(Ipv6Addr::LOCALHOST)));
    }

    #[test]
    fn host_port_rejects() {
        for bad in [
            "",
            ":25",
            "host:",
            "host:0",
            "host:70000",
            "host:x",
            "::1",
            "::1:25",
            "[::1",
            "[::1]25",
            "[bad host]:25",
            "bad_host:25",
            "300.1.1.1",
            "a:b:c",
            "-x.example",
        ] {
            assert!(hp(bad).is_err(), "{bad:?} should be rejected");
        }
        assert!(hp("::1").unwrap_err().contains("must be in brackets"));
    }

    #[test]
    fn listen_addresses_need_ip_and_port() {
        assert_eq!(parse_listen_addr("[::1]:25").map(|a| a.port()), Ok(25));
        assert!(
            parse_listen_addr("127.0.0.1")
                .unwrap_err()
                .0
                .contains("a port is required")
        );
        assert!(
            parse_listen_addr("localhost:25")
                .unwrap_err()
                .0
                .contains("host names are not allowed")
        );
    }

    #[test]
    fn networks_accept_cidr_or_ip() {
        assert_eq!(
            parse_network("10.1.2.3/8").map(|n| n.to_string()),
            Ok("10.0.0.0/8".into())
        );
        assert_eq!(
            parse_network("192.0.2.1").map(|n| n.to_string()),
            Ok("192.0.2.1/32".into())
        );
        assert_eq!(
            parse_network("::1").map(|n| n.to_string()),
            Ok("::1/128".into())
        );
        assert!(parse_network("10.0.0.0/33").is_err());
        assert!(parse_network("example.com").is_err());
    }

    #[test]
    fn nameservers_default_to_port_53() {
        assert_eq!(parse_nameserver("192.0.2.53").map(|a| a.port()), Ok(53));
        assert_eq!(parse_nameserver("[::1]:5353").map(|a| a.port()), Ok(5353));
        assert!(parse_nameserver("ns.example.com").is_err());
    }

    #[test]
    fn route_domains_normalize() {
        assert_eq!(
            "Example.COM.".parse(),
            Ok(RouteDomain::Exact("example.com".into()))
        );
        assert_eq!("*".parse(), Ok(RouteDomain::Any));
        assert!("*.example.com".parse::<RouteDomain>().is_err());
        assert!("exa mple.com".parse::<RouteDomain>().is_err());
        assert!(
            "bücher.de"
                .parse::<RouteDomain>()
                .unwrap_err()
                .0
                .contains("xn--")
        );
        assert!(RouteDomain::Exact("example.com".into()).matches("EXAMPLE.com."));
        assert!(!RouteDomain::Exact("example.com".into()).matches("mail.example.com"));
    }
}
