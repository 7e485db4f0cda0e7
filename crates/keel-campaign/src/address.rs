//! Addresses and display names as a campaign request gives them.
//!
//! Addresses follow the SMTP-level rules Keel applies to every envelope
//! ([`keel_smtp::Address::parse`]: a dot-atom local part, a valid domain or address literal),
//! because each one becomes a `RCPT TO` or `MAIL FROM` later: an address that would be refused
//! there is refused here, with the field named, instead of turning into a bounce. Display names
//! are free UTF-8 text (mail-builder encodes them per RFC 2047) but may not carry line breaks
//! or other control characters, which is how header injection through a name would work.

use crate::error::FieldError;

/// Longest address accepted: RFC 5321's 256-octet path minus the angle brackets.
pub const MAX_ADDRESS_LEN: usize = 254;
/// Longest display name accepted (characters); longer ones are a mistake, not a name.
pub const MAX_NAME_CHARS: usize = 200;

/// Checks an address and returns its normalised form (domain lowercased, trailing dot removed).
pub fn check_address(field: &str, raw: &str) -> Result<String, FieldError> {
    if raw.is_empty() {
        return Err(FieldError::new(field, "the address is empty"));
    }
    if raw.len() > MAX_ADDRESS_LEN {
        return Err(FieldError::new(
            field,
            format!("the address is longer than {MAX_ADDRESS_LEN} octets"),
        ));
    }
    if raw.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(FieldError::new(
            field,
            "the address contains whitespace or control characters",
        ));
    }
    let address = keel_smtp::Address::parse(raw)
        .map_err(|e| FieldError::new(field, format!("invalid address {raw:?}: {e}")))?;
    if address.has_routing_chars() {
        return Err(FieldError::new(
            field,
            format!("invalid address {raw:?}: `%` and `!` in the local part are refused"),
        ));
    }
    Ok(address.to_string())
}

/// Checks a display name: no control characters (CR and LF above all), bounded length.
pub fn check_display_name(field: &str, name: &str) -> Result<(), FieldError> {
    if let Some(c) = name.chars().find(|c| c.is_control()) {
        return Err(FieldError::new(
            field,
            format!("the name contains the control character {c:?}"),
        ));
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(FieldError::new(
            field,
            format!("the name is longer than {MAX_NAME_CHARS} characters"),
        ));
    }
    Ok(())
}

/// The domain of a checked address.
pub fn domain_of(address: &str) -> &str {
    address.rsplit_once('@').map_or("", |(_, d)| d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_the_domain_and_refuses_what_smtp_would() {
        assert_eq!(
            check_address("x", "Ann@Example.COM.").unwrap(),
            "Ann@example.com"
        );
        for bad in [
            "",
            "ann",
            "@x.example",
            "ann@",
            "a b@x.example",
            "\"quoted\"@x.example",
            "ann@x..example",
            "ann%other@x.example",
            "ann@x.example\r\nBcc: evil@y.example",
        ] {
            let e = check_address("recipients[0].email", bad).unwrap_err();
            assert_eq!(e.field, "recipients[0].email", "{bad:?}");
        }
        let long = format!("{}@{}.example", "a".repeat(64), "b".repeat(190));
        assert!(check_address("x", &long).is_err());
    }

    #[test]
    fn names_may_not_break_lines() {
        assert!(check_display_name("from.name", "ACME — Grüße").is_ok());
        let e = check_display_name("from.name", "ACME\r\nBcc: x@y.example").unwrap_err();
        assert_eq!(e.field, "from.name");
        assert!(check_display_name("from.name", &"x".repeat(201)).is_err());
    }
}
