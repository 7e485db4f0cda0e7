//! Keel's own control headers in submitted mail.
//!
//! A submitting application can steer a message with `X-Keel-Pool` (egress pool),
//! `X-Keel-Campaign` and `X-Keel-Tenant`. They are read from the header section and removed
//! before the message is stored, so they never reach a recipient.

use memchr::memmem;

/// The control values found in a message.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Controls {
    pub pool: String,
    pub campaign: String,
    pub tenant: String,
}

const NAMES: [&[u8]; 3] = [b"x-keel-pool", b"x-keel-campaign", b"x-keel-tenant"];

/// Extracts the control headers. Returns `None` (and leaves `message` alone) when there are
/// none, which is the common case and costs one scan of the header section.
pub fn extract(message: &[u8]) -> Option<(Controls, Vec<u8>)> {
    let header_end = memmem::find(message, b"\r\n\r\n").map_or(message.len(), |i| i + 2);
    let headers = &message[..header_end];
    if !contains_ignore_case(headers, b"x-keel-") {
        return None;
    }
    let mut controls = Controls::default();
    let mut kept = Vec::with_capacity(message.len());
    let mut fields = Fields { rest: headers };
    while let Some(field) = fields.next() {
        let name_end = field.iter().position(|&b| b == b':').unwrap_or(0);
        let name = field[..name_end].trim_ascii();
        match NAMES.iter().position(|n| name.eq_ignore_ascii_case(n)) {
            Some(i) => {
                let value = unfold(&field[name_end + 1..]);
                match i {
                    0 => controls.pool = value,
                    1 => controls.campaign = value,
                    _ => controls.tenant = value,
                }
            }
            None => kept.extend_from_slice(field),
        }
    }
    kept.extend_from_slice(&message[header_end..]);
    Some((controls, kept))
}

/// Header fields, each with its continuation lines and line ends.
struct Fields<'a> {
    rest: &'a [u8],
}

impl<'a> Fields<'a> {
    fn next(&mut self) -> Option<&'a [u8]> {
        if self.rest.is_empty() {
            return None;
        }
        let mut end = 0;
        loop {
            match memchr::memchr(b'\n', &self.rest[end..]) {
                Some(i) => {
                    end += i + 1;
                    if !matches!(self.rest.get(end), Some(b' ' | b'\t')) {
                        break;
                    }
                }
                None => {
                    end = self.rest.len();
                    break;
                }
            }
        }
        let (field, rest) = self.rest.split_at(end);
        self.rest = rest;
        Some(field)
    }
}

fn unfold(value: &[u8]) -> String {
    let text = String::from_utf8_lossy(value);
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect()
}

fn contains_ignore_case(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extracts_and_strips_controls() {
        let msg = b"From: a@b\r\nX-Keel-Pool: warm\r\nX-KEEL-Campaign: bf\r\n 2026\r\nSubject: s\r\nx-keel-tenant:acme\r\n\r\nX-Keel-Pool: body\r\n";
        let (c, kept) = extract(msg).unwrap();
        assert_eq!(c.pool, "warm");
        assert_eq!(c.campaign, "bf 2026");
        assert_eq!(c.tenant, "acme");
        assert_eq!(
            kept,
            b"From: a@b\r\nSubject: s\r\n\r\nX-Keel-Pool: body\r\n"
        );
    }

    #[test]
    fn leaves_other_messages_alone() {
        assert!(extract(b"From: a@b\r\nSubject: X-Keel-\r\n\r\n").is_some());
        assert!(extract(b"From: a@b\r\n\r\nX-Keel-Pool: p\r\n").is_none());
    }
}
