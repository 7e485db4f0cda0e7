//! SMTP replies (RFC 5321 §4.2) with enhanced status codes (RFC 3463).
//!
//! Every reply Keel sends carries an enhanced status code, so a client (and an operator reading a
//! bounce) can tell a policy refusal from a syntax error without parsing prose.

use std::fmt;

/// An enhanced status code `class.subject.detail` (RFC 3463), e.g. `5.7.1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Enhanced(pub u8, pub u16, pub u16);

impl fmt::Display for Enhanced {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// One SMTP reply: a three-digit code, an enhanced status code and one or more text lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    /// `None` only where RFC 2034 says no enhanced code is sent: the greeting, the EHLO/HELO
    /// answer (its lines are capability keywords) and the 354 go-ahead.
    pub enhanced: Option<Enhanced>,
    pub lines: Vec<String>,
}

impl Reply {
    /// A single-line reply.
    pub fn new(code: u16, enhanced: Enhanced, text: impl Into<String>) -> Self {
        Self {
            code,
            enhanced: Some(enhanced),
            lines: vec![text.into()],
        }
    }

    /// A reply without enhanced status code (greeting, EHLO, 354).
    pub fn plain(code: u16, lines: Vec<String>) -> Self {
        Self {
            code,
            enhanced: None,
            lines,
        }
    }

    /// True for 4xx and 5xx replies.
    pub fn is_negative(&self) -> bool {
        self.code >= 400
    }

    /// Appends the wire form (`250-...` continuation lines, `250 ...` last line) to `out`.
    ///
    /// Text is sanitised: CR and LF inside a line would let text (e.g. an echoed address)
    /// forge extra reply lines, so they are replaced by spaces.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let last = self.lines.len().saturating_sub(1);
        for (i, line) in self.lines.iter().enumerate() {
            let sep = if i == last { ' ' } else { '-' };
            let clean: String = line
                .chars()
                .map(|c| if c == '\r' || c == '\n' { ' ' } else { c })
                .collect();
            let line = match self.enhanced {
                Some(e) => format!("{}{}{} {}\r\n", self.code, sep, e, clean),
                None => format!("{}{}{}\r\n", self.code, sep, clean),
            };
            out.extend_from_slice(line.as_bytes());
        }
        if self.lines.is_empty() {
            let line = match self.enhanced {
                Some(e) => format!("{} {}\r\n", self.code, e),
                None => format!("{}\r\n", self.code),
            };
            out.extend_from_slice(line.as_bytes());
        }
    }

    /// The wire form as a new buffer.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_to(&mut out);
        out
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.enhanced {
            Some(e) => write!(f, "{} {} {}", self.code, e, self.lines.join(" ")),
            None => write!(f, "{} {}", self.code, self.lines.join(" ")),
        }
    }
}

/// Shorthand constructor used throughout the server state machine.
pub(crate) fn reply(code: u16, e: (u8, u16, u16), text: impl Into<String>) -> Reply {
    Reply::new(code, Enhanced(e.0, e.1, e.2), text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_and_multi_line() {
        assert_eq!(
            reply(250, (2, 0, 0), "Ok").to_bytes(),
            b"250 2.0.0 Ok\r\n".to_vec()
        );
        let r = Reply {
            code: 250,
            enhanced: Some(Enhanced(2, 0, 0)),
            lines: vec!["a".into(), "b".into()],
        };
        assert_eq!(r.to_bytes(), b"250-2.0.0 a\r\n250 2.0.0 b\r\n".to_vec());
        let ehlo = Reply::plain(250, vec!["mx".into(), "PIPELINING".into()]);
        assert_eq!(ehlo.to_bytes(), b"250-mx\r\n250 PIPELINING\r\n".to_vec());
    }

    #[test]
    fn crlf_in_text_cannot_forge_lines() {
        let r = reply(550, (5, 1, 1), "bad\r\n250 ok");
        assert_eq!(r.to_bytes(), b"550 5.1.1 bad  250 ok\r\n".to_vec());
    }
}
