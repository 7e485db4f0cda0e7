//! Mailbox addresses as Keel accepts them in MAIL FROM and RCPT TO.
//!
//! smtp-proto's parser already strips source routes (`@a,@b:user@c` → `user@c`) and unquotes
//! quoted local parts. What it hands us is checked again here, strictly, because the result is
//! used both for relay decisions and to build the next hop's `RCPT TO`:
//!
//! - the local part must be a dot-atom (no quoting needed to send it on): a quoted local part
//!   such as `"a@b"@c` would otherwise come back unquoted as `a@b@c` and be relayed somewhere
//!   other than where it looked to be going;
//! - the domain is lower-cased and one trailing dot removed, so `USER@Example.COM.` and
//!   `user@example.com` are the same destination for relay checks and queueing;
//! - address literals (`[192.0.2.1]`, `[IPv6:2001:db8::1]`) are parsed into IP addresses.
//!
//! `%` and `!` are legal atext, but old MTAs treat them as routing (`user%other@host`,
//! `host!user`); [`Address::has_routing_chars`] lets the relay policy refuse them from clients
//! that are not allowed to relay.

use std::fmt;
use std::net::IpAddr;

/// The domain part of an address.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Domain {
    /// A DNS name, lower-case, without trailing dot.
    Name(String),
    /// An address literal.
    Literal(IpAddr),
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Domain::Name(n) => f.write_str(n),
            Domain::Literal(IpAddr::V4(ip)) => write!(f, "[{ip}]"),
            Domain::Literal(IpAddr::V6(ip)) => write!(f, "[IPv6:{ip}]"),
        }
    }
}

/// A validated `local@domain` mailbox.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Address {
    pub local: String,
    pub domain: Domain,
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.local, self.domain)
    }
}

/// Why an address was refused; the text goes into the SMTP reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("address must be fully qualified (local@domain)")]
    NotQualified,
    #[error("local part must be an unquoted dot-atom of at most 64 octets")]
    BadLocalPart,
    #[error("domain is not a valid host name or address literal")]
    BadDomain,
}

const MAX_LOCAL: usize = 64;
const MAX_DOMAIN: usize = 255;

impl Address {
    /// Parses an address as returned by smtp-proto's MAIL/RCPT parser.
    pub fn parse(raw: &str) -> Result<Address, AddressError> {
        let (local, domain) = raw.rsplit_once('@').ok_or(AddressError::NotQualified)?;
        if local.is_empty() || domain.is_empty() {
            return Err(AddressError::NotQualified);
        }
        if !is_dot_atom(local) || local.len() > MAX_LOCAL {
            return Err(AddressError::BadLocalPart);
        }
        Ok(Address {
            local: local.to_string(),
            domain: parse_domain(domain)?,
        })
    }

    /// True when the local part holds `%` or `!`, which some MTAs still interpret as routing.
    pub fn has_routing_chars(&self) -> bool {
        self.local.contains(['%', '!'])
    }

    /// The domain as a name (address literals give `None`).
    pub fn domain_name(&self) -> Option<&str> {
        match &self.domain {
            Domain::Name(n) => Some(n),
            Domain::Literal(_) => None,
        }
    }
}

fn is_atext(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&b) || b >= 0x80
}

fn is_dot_atom(s: &str) -> bool {
    !s.starts_with('.')
        && !s.ends_with('.')
        && !s.contains("..")
        && s.bytes().all(|b| b == b'.' || is_atext(b))
}

/// Parses and normalises a domain or address literal.
pub fn parse_domain(raw: &str) -> Result<Domain, AddressError> {
    if let Some(lit) = raw.strip_prefix('[') {
        let inner = lit.strip_suffix(']').ok_or(AddressError::BadDomain)?;
        let ip = match inner.get(..5) {
            Some(tag) if tag.eq_ignore_ascii_case("IPv6:") => inner[5..]
                .parse::<std::net::Ipv6Addr>()
                .map(IpAddr::V6)
                .map_err(|_| AddressError::BadDomain)?,
            _ => inner
                .parse::<std::net::Ipv4Addr>()
                .map(IpAddr::V4)
                .map_err(|_| AddressError::BadDomain)?,
        };
        return Ok(Domain::Literal(ip));
    }
    let name = raw.strip_suffix('.').unwrap_or(raw).to_ascii_lowercase();
    if name.is_empty() || name.len() > MAX_DOMAIN {
        return Err(AddressError::BadDomain);
    }
    for label in name.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b >= 0x80);
        if !ok {
            return Err(AddressError::BadDomain);
        }
    }
    Ok(Domain::Name(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_domain() {
        let a = Address::parse("User.Name@Example.COM.").unwrap();
        assert_eq!(a.local, "User.Name");
        assert_eq!(a.domain, Domain::Name("example.com".into()));
        assert_eq!(a.to_string(), "User.Name@example.com");
    }

    #[test]
    fn literals() {
        let a = Address::parse("x@[127.0.0.1]").unwrap();
        assert_eq!(a.domain, Domain::Literal("127.0.0.1".parse().unwrap()));
        let a = Address::parse("x@[IPv6:::1]").unwrap();
        assert_eq!(a.to_string(), "x@[IPv6:::1]");
        assert!(Address::parse("x@[999.1.1.1]").is_err());
        assert!(Address::parse("x@[1.2.3.4").is_err());
    }

    #[test]
    fn refuses_what_would_need_quoting_or_is_malformed() {
        // What smtp-proto hands over for `"a@b"@c`.
        assert_eq!(
            Address::parse("a@b@c").unwrap_err(),
            AddressError::BadLocalPart
        );
        assert_eq!(
            Address::parse("a b@c").unwrap_err(),
            AddressError::BadLocalPart
        );
        assert_eq!(
            Address::parse(".a@c").unwrap_err(),
            AddressError::BadLocalPart
        );
        assert_eq!(
            Address::parse("postmaster").unwrap_err(),
            AddressError::NotQualified
        );
        assert_eq!(
            Address::parse("a@").unwrap_err(),
            AddressError::NotQualified
        );
        assert_eq!(
            Address::parse("a@-x.com").unwrap_err(),
            AddressError::BadDomain
        );
        assert_eq!(
            Address::parse("a@x..com").unwrap_err(),
            AddressError::BadDomain
        );
    }

    #[test]
    fn routing_chars() {
        assert!(
            Address::parse("user%other@host")
                .unwrap()
                .has_routing_chars()
        );
        assert!(
            Address::parse("host!user@relay")
                .unwrap()
                .has_routing_chars()
        );
        assert!(!Address::parse("plain@host").unwrap().has_routing_chars());
    }
}
