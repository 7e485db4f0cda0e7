//! Which custom headers a request may add, and what their values may contain.
//!
//! Keel writes the headers that identify, route, structure or authenticate a message itself
//! (From, To, Date, Message-ID, MIME-Version, Content-*, DKIM-Signature, List-Unsubscribe...):
//! a request that could set them could forge the sender, break the MIME structure, or make the
//! one-click unsubscribe point somewhere else. Those names are refused outright rather than
//! silently dropped, so the client learns its header had no effect. Values are static text
//! (not templates) and may not contain line breaks — a CR or LF in a value is exactly how a
//! header injection adds a field of its own.

use crate::error::FieldError;

/// Header names a request may not set (compared case-insensitively), because Keel writes them
/// or because they belong to the transport.
pub const RESERVED_HEADERS: &[&str] = &[
    "from",
    "sender",
    "to",
    "cc",
    "bcc",
    "reply-to",
    "subject",
    "date",
    "message-id",
    "in-reply-to",
    "references",
    "mime-version",
    "return-path",
    "received",
    "dkim-signature",
    "domainkey-signature",
    "authentication-results",
    "arc-seal",
    "arc-message-signature",
    "arc-authentication-results",
    "list-unsubscribe",
    "list-unsubscribe-post",
    "delivered-to",
    "resent-from",
    "resent-sender",
    "resent-to",
    "resent-cc",
    "resent-bcc",
    "resent-date",
    "resent-message-id",
];

/// Prefixes a request may not use: MIME structure, and Keel's own control headers (which
/// SMTP submission strips before delivery; a campaign sets the same things with its fields).
pub const RESERVED_PREFIXES: &[&str] = &["content-", "x-keel-"];

/// Most custom headers in one request.
pub const MAX_HEADERS: usize = 50;
/// Longest custom header value, in octets. Values are folded when written, but a value this
/// long is already unusual; the cap keeps one request's header block small.
pub const MAX_HEADER_VALUE: usize = 2000;
/// Longest header name (RFC 5322 sets no limit; 76 keeps `Name: ` within a folded line).
pub const MAX_HEADER_NAME: usize = 76;

/// Checks one custom header. `field` is the value's path, e.g. `headers.X-Campaign-Code`.
pub fn check_header(field: &str, name: &str, value: &str) -> Result<(), FieldError> {
    check_header_name(field, name)?;
    check_header_value(field, value)
}

/// RFC 5322 §3.6.8: a field name is printable US-ASCII without `:`; plus Keel's reservations.
pub fn check_header_name(field: &str, name: &str) -> Result<(), FieldError> {
    if name.is_empty() || name.len() > MAX_HEADER_NAME {
        return Err(FieldError::new(
            field,
            format!("a header name must have 1 to {MAX_HEADER_NAME} characters"),
        ));
    }
    if !name.bytes().all(|b| (33..=126).contains(&b) && b != b':') {
        return Err(FieldError::new(
            field,
            format!(
                "invalid header name {name:?}: printable ASCII without spaces or ':' (RFC 5322)"
            ),
        ));
    }
    let lower = name.to_ascii_lowercase();
    if RESERVED_HEADERS.contains(&lower.as_str())
        || RESERVED_PREFIXES.iter().any(|p| lower.starts_with(p))
    {
        return Err(FieldError::new(
            field,
            format!(
                "the header {name:?} is written by Keel and cannot be set by a request \
                 (use the request's own fields for From, Reply-To, Subject and the body)"
            ),
        ));
    }
    Ok(())
}

/// A header value: no CR, LF or other control characters except TAB; bounded length.
pub fn check_header_value(field: &str, value: &str) -> Result<(), FieldError> {
    if let Some(c) = value.chars().find(|&c| c.is_control() && c != '\t') {
        let what = match c {
            '\r' | '\n' => "a line break (header injection)".to_string(),
            other => format!("the control character {other:?}"),
        };
        return Err(FieldError::new(field, format!("the value contains {what}")));
    }
    if value.len() > MAX_HEADER_VALUE {
        return Err(FieldError::new(
            field,
            format!("the value is longer than {MAX_HEADER_VALUE} octets"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn custom_headers_pass() {
        assert!(check_header("headers.X-Campaign-Code", "X-Campaign-Code", "bf26").is_ok());
        assert!(check_header("headers.Precedence", "Precedence", "bulk").is_ok());
        assert!(check_header("headers.X-Tab", "X-Tab", "a\tb").is_ok());
    }

    #[test]
    fn keel_managed_and_malformed_names_are_refused() {
        for name in [
            "From",
            "to",
            "DATE",
            "Message-ID",
            "MIME-Version",
            "DKIM-Signature",
            "List-Unsubscribe",
            "list-unsubscribe-post",
            "Content-Type",
            "Content-Transfer-Encoding",
            "X-Keel-Tenant",
            "Bcc",
            "X Bad",
            "X:Bad",
            "",
            "Ünicode",
        ] {
            let field = format!("headers.{name}");
            let e = check_header(&field, name, "v").unwrap_err();
            assert_eq!(e.field, field);
        }
    }

    #[test]
    fn line_breaks_in_values_are_injection() {
        for value in ["a\r\nBcc: x@y.example", "a\nb", "a\rb", "a\0b"] {
            let e = check_header("headers.X-A", "X-A", value).unwrap_err();
            assert_eq!(e.field, "headers.X-A");
        }
        let e = check_header("headers.X-A", "X-A", "a\r\nb").unwrap_err();
        assert!(e.message.contains("header injection"));
        assert!(check_header("headers.X-A", "X-A", &"v".repeat(2001)).is_err());
    }
}
