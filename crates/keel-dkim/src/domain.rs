//! Domain names as this crate compares and publishes them.
//!
//! One canonical form everywhere — lowercase A-labels (punycode), no trailing dot — so that the
//! configured `domain = "Bücher.example."` and a From address `x@xn--bcher-kva.example` meet, and
//! so that `d=` and the DNS name printed by `keygen` are what a verifier looks up (RFC 6376 wants
//! A-labels in `d=`).
//!
//! Matching rule (documented on [`crate::Signers`]): a key for `acme.example` signs mail whose
//! From domain is `acme.example` or any name below it (`news.acme.example`); when several
//! configured domains match, the longest (most specific) wins. [`candidates`] yields the From
//! domain and then each parent, most specific first, so the lookup is a few hash probes however
//! many domains are configured.

/// Normalises and validates a configured domain or selector: lowercase A-labels, no trailing
/// dot, RFC 1035 "LDH" labels of 1–63 octets, 253 octets in all. `what` names the field in the
/// error text ("domain", "selector").
pub(crate) fn normalize_name(input: &str, what: &str) -> Result<String, String> {
    let trimmed = input.trim();
    let trimmed = trimmed.strip_suffix('.').unwrap_or(trimmed);
    if trimmed.is_empty() {
        return Err(format!("{what} is empty"));
    }
    let ascii = if trimmed.is_ascii() {
        trimmed.to_ascii_lowercase()
    } else {
        idna::domain_to_ascii(trimmed)
            .map_err(|_| format!("{what} {input:?} is not a valid internationalised name"))?
    };
    if ascii.len() > 253 {
        return Err(format!("{what} {input:?} is longer than 253 octets"));
    }
    for label in ascii.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !ok {
            return Err(format!(
                "{what} {input:?} is not a DNS name (labels of 1-63 letters, digits or inner \
                 hyphens, separated by dots)"
            ));
        }
    }
    Ok(ascii)
}

/// Normalises the domain of a From address for lookup. Lenient on purpose: a From domain we
/// have no key for simply finds no key; only a name that cannot be converted to A-labels is an
/// error (`None`).
pub(crate) fn normalize_from_domain(domain: &str) -> Option<String> {
    let domain = domain.strip_suffix('.').unwrap_or(domain);
    if domain.is_empty() {
        return None;
    }
    if domain.is_ascii() {
        Some(domain.to_ascii_lowercase())
    } else {
        idna::domain_to_ascii(domain).ok()
    }
}

/// `a.b.example`, then `b.example`, then `example`: the names a key could be configured under,
/// most specific first.
pub(crate) fn candidates(domain: &str) -> impl Iterator<Item = &str> {
    std::iter::successors(Some(domain), |d| {
        d.split_once('.').map(|(_, parent)| parent)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_case_trailing_dot_and_idn() {
        assert_eq!(
            normalize_name("Acme.Example.", "domain").unwrap(),
            "acme.example"
        );
        assert_eq!(
            normalize_name("bücher.example", "domain").unwrap(),
            "xn--bcher-kva.example"
        );
        assert_eq!(normalize_name("s1.2024", "selector").unwrap(), "s1.2024");
    }

    #[test]
    fn rejects_non_dns_names() {
        for bad in [
            "",
            ".",
            "a..b",
            "-a.example",
            "a-.example",
            "a b.example",
            "a_b.example",
            "acme.example/x",
        ] {
            assert!(normalize_name(bad, "domain").is_err(), "{bad:?} accepted");
        }
        assert!(normalize_name(&"a".repeat(64), "selector").is_err());
        assert!(normalize_name(&["a"; 130].join("."), "domain").is_err());
    }

    #[test]
    fn from_domain_is_lenient() {
        assert_eq!(
            normalize_from_domain("ACME.example.").as_deref(),
            Some("acme.example")
        );
        assert_eq!(
            normalize_from_domain("bücher.example").as_deref(),
            Some("xn--bcher-kva.example")
        );
        assert_eq!(normalize_from_domain(""), None);
    }

    #[test]
    fn candidates_go_from_specific_to_general() {
        let c: Vec<_> = candidates("a.news.acme.example").collect();
        assert_eq!(
            c,
            [
                "a.news.acme.example",
                "news.acme.example",
                "acme.example",
                "example"
            ]
        );
    }
}
