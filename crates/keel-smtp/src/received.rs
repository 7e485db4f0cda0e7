//! The `Received:` trace header (RFC 5321 §4.4) Keel prepends to every message it accepts.

use std::net::IpAddr;

/// What the trace header records about one hop.
pub struct Trace<'a> {
    /// The EHLO/HELO name the client gave.
    pub helo: &'a str,
    pub peer_ip: IpAddr,
    /// Our host name.
    pub by: &'a str,
    /// `ESMTP`, `SMTP`, `ESMTPS`, `ESMTPA`, ... (RFC 3848).
    pub protocol: &'a str,
    /// Queue id of the message.
    pub id: &'a str,
    /// The single recipient, when there is exactly one (privacy: never list many).
    pub for_rcpt: Option<&'a str>,
    /// RFC 5322 date-time.
    pub date: &'a str,
}

impl Trace<'_> {
    /// The header field, folded, ending in CRLF.
    pub fn header(&self) -> String {
        let helo: String = self
            .helo
            .chars()
            .filter(|c| c.is_ascii_graphic())
            .take(255)
            .collect();
        let helo = if helo.is_empty() { "unknown" } else { &helo };
        let ip = match self.peer_ip {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => format!("IPv6:{v6}"),
        };
        let mut h = format!(
            "Received: from {helo} ([{ip}])\r\n\tby {} (Keel) with {} id {}",
            self.by, self.protocol, self.id
        );
        if let Some(rcpt) = self.for_rcpt {
            h.push_str(&format!("\r\n\tfor <{rcpt}>"));
        }
        h.push_str(&format!("; {}\r\n", self.date));
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_a_folded_header() {
        let t = Trace {
            helo: "client.example\r\nX-Evil: 1",
            peer_ip: "192.0.2.7".parse().unwrap(),
            by: "mta.example.com",
            protocol: "ESMTP",
            id: "0190abc",
            for_rcpt: Some("a@b.example"),
            date: "Sat, 28 Nov 2026 01:00:00 +0000",
        };
        assert_eq!(
            t.header(),
            "Received: from client.exampleX-Evil:1 ([192.0.2.7])\r\n\tby mta.example.com (Keel) \
             with ESMTP id 0190abc\r\n\tfor <a@b.example>; Sat, 28 Nov 2026 01:00:00 +0000\r\n"
        );
    }
}
