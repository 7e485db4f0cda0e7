//! Message data transparency on the sending side (RFC 5321 §4.5.2).

use memchr::memmem;

/// Appends `body` to `out` as DATA content: a dot is added before every line that starts with
/// one, the body is ended with CRLF if it does not end so, and the `.` CRLF terminator follows.
///
/// Lines are found after LF (bare or in CRLF), so a body with bare LFs cannot smuggle a
/// terminator to a receiver that accepts bare LF line ends either.
pub fn stuff(body: &[u8], out: &mut Vec<u8>) {
    out.reserve(body.len() + body.len() / 64 + 5);
    let mut rest = body;
    if rest.first() == Some(&b'.') {
        out.push(b'.');
    }
    let finder = memmem::Finder::new(b"\n.");
    while let Some(i) = finder.find(rest) {
        out.extend_from_slice(&rest[..=i]);
        out.push(b'.');
        rest = &rest[i + 1..];
    }
    out.extend_from_slice(rest);
    if !body.is_empty() && !body.ends_with(b"\r\n") {
        if body.ends_with(b"\r") {
            out.push(b'\n');
        } else {
            out.extend_from_slice(b"\r\n");
        }
    }
    out.extend_from_slice(b".\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(b: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        stuff(b, &mut out);
        out
    }

    #[test]
    fn stuffs_leading_dots_and_terminates() {
        assert_eq!(s(b".a\r\nb\r\n..c\r\n"), b"..a\r\nb\r\n...c\r\n.\r\n");
        assert_eq!(s(b"no newline"), b"no newline\r\n.\r\n");
        assert_eq!(s(b"x\n.y"), b"x\n..y\r\n.\r\n");
        assert_eq!(s(b""), b".\r\n");
        assert_eq!(s(b"cr\r"), b"cr\r\n.\r\n");
    }
}
