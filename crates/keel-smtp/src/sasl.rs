//! SASL for SMTP AUTH (RFC 4954): the PLAIN (RFC 4616) and LOGIN mechanisms.
//!
//! This module turns what the client sends — the AUTH command's optional initial response and
//! the lines it answers our `334` challenges with — into [`Credentials`], without deciding
//! whether they are right (that is the caller's, see [`crate::Next::Authenticate`]). It owns the
//! base64 decoding, the PLAIN message layout and LOGIN's two prompts.
//!
//! Invariants:
//! - a password is only ever held in a [`Password`], whose `Debug` does not show it, so no
//!   `{:?}` of a step, a session or an error can log one;
//! - a response of `*` cancels the exchange (RFC 4954 §4), whatever the mechanism's state;
//! - names and passwords must be UTF-8 without NUL (RFC 4616 §2); anything else is malformed,
//!   not a wrong password, so it is answered `501` and never reaches the password check.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_PAD_INDIFFERENT};
use smtp_proto::{AUTH_LOGIN, AUTH_PLAIN};

/// The mechanisms Keel offers, in the order they are advertised.
pub const MECHANISMS: [Mechanism; 2] = [Mechanism::Plain, Mechanism::Login];

/// A SASL mechanism Keel implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mechanism {
    /// RFC 4616: one message, `[authzid] NUL authcid NUL passwd`.
    Plain,
    /// The de-facto LOGIN mechanism (draft-murchison-sasl-login): username, then password, each
    /// after its own `334` prompt. Outlook and many bulk-mail libraries still use only this.
    Login,
}

impl Mechanism {
    /// The name as advertised in EHLO and written in the AUTH command.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::Login => "LOGIN",
        }
    }

    /// The mechanism smtp-proto recognised in an AUTH command, if Keel implements it.
    pub(crate) fn from_proto(mechanism: u64) -> Option<Mechanism> {
        match mechanism {
            AUTH_PLAIN => Some(Mechanism::Plain),
            AUTH_LOGIN => Some(Mechanism::Login),
            _ => None,
        }
    }
}

impl fmt::Display for Mechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A password as the client sent it. `Debug` and `Display` are deliberately absent or redacted:
/// the only way to the text is [`Password::expose`], which a reviewer can grep for.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    pub fn new(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    /// The password itself, for the verifier. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// What a client presented: check `username` and `password` against the user list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub mechanism: Mechanism,
    pub username: String,
    pub password: Password,
}

/// Why an exchange ended without credentials.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SaslError {
    /// The client answered a challenge with `*` (RFC 4954 §4): `501 5.0.0`.
    #[error("authentication cancelled")]
    Cancelled,
    /// A response was not valid base64: `501 5.5.2`.
    #[error("invalid base64 in the SASL response")]
    BadBase64,
    /// The decoded response does not have the mechanism's form: `501 5.5.2`.
    #[error("malformed {mechanism} response: {problem}")]
    Malformed {
        mechanism: Mechanism,
        problem: &'static str,
    },
    /// PLAIN asked to act as someone else (an authorization identity other than the
    /// authentication identity); Keel has no proxy rights to grant: `535 5.7.8`.
    #[error("authorization identity differs from authentication identity")]
    AuthzidNotPermitted,
}

/// Where an exchange stands while we wait for the client's next line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Exchange {
    /// PLAIN without initial response: we sent an empty `334`, the message comes next.
    PlainMessage,
    /// LOGIN: we asked for the username.
    LoginUsername,
    /// LOGIN: we have the username and asked for the password.
    LoginPassword { username: String },
}

/// The result of one SASL step.
#[derive(Debug)]
pub(crate) enum Progress {
    /// Send `334 <challenge>` and wait for the client's response line.
    Challenge(&'static str, Exchange),
    /// The client has presented everything.
    Done(Credentials),
}

/// `Username:` and `Password:` in base64, LOGIN's customary prompts.
const LOGIN_USERNAME_PROMPT: &str = "VXNlcm5hbWU6";
const LOGIN_PASSWORD_PROMPT: &str = "UGFzc3dvcmQ6";

/// Starts an exchange from the AUTH command. `initial` is the command's initial-response
/// argument as written: empty when absent, `=` for a present but empty response (RFC 4954 §4).
pub(crate) fn start(mechanism: Mechanism, initial: &str) -> Result<Progress, SaslError> {
    let initial = initial.trim();
    match (mechanism, initial) {
        (Mechanism::Plain, "") => Ok(Progress::Challenge("", Exchange::PlainMessage)),
        (Mechanism::Login, "") => Ok(Progress::Challenge(
            LOGIN_USERNAME_PROMPT,
            Exchange::LoginUsername,
        )),
        (_, initial) => step(
            match mechanism {
                Mechanism::Plain => Exchange::PlainMessage,
                Mechanism::Login => Exchange::LoginUsername,
            },
            initial,
        ),
    }
}

/// Continues an exchange with the client's response line (CRLF already removed).
pub(crate) fn step(exchange: Exchange, line: &str) -> Result<Progress, SaslError> {
    let line = line.trim();
    if line == "*" {
        return Err(SaslError::Cancelled);
    }
    let decoded = decode(line)?;
    match exchange {
        Exchange::PlainMessage => {
            let (authzid, username, password) = decode_plain(&decoded)?;
            if !authzid.is_empty() && authzid != username {
                return Err(SaslError::AuthzidNotPermitted);
            }
            Ok(Progress::Done(Credentials {
                mechanism: Mechanism::Plain,
                username: username.to_owned(),
                password: Password::new(password),
            }))
        }
        Exchange::LoginUsername => {
            let username = login_text(decoded, "empty or invalid username")?;
            Ok(Progress::Challenge(
                LOGIN_PASSWORD_PROMPT,
                Exchange::LoginPassword { username },
            ))
        }
        Exchange::LoginPassword { username } => {
            let password = login_text(decoded, "empty or invalid password")?;
            Ok(Progress::Done(Credentials {
                mechanism: Mechanism::Login,
                username,
                password: Password::new(password),
            }))
        }
    }
}

/// Decodes a response; `=` is the empty response (RFC 4954 §4). Padding is optional, since
/// some clients leave it off and it carries no information.
fn decode(text: &str) -> Result<Vec<u8>, SaslError> {
    if text == "=" {
        return Ok(Vec::new());
    }
    STANDARD_PAD_INDIFFERENT
        .decode(text)
        .map_err(|_| SaslError::BadBase64)
}

/// Splits a PLAIN message into `(authzid, authcid, passwd)` (RFC 4616 §2): UTF-8, exactly two
/// NULs, non-empty authcid and passwd.
pub fn decode_plain(message: &[u8]) -> Result<(&str, &str, &str), SaslError> {
    let malformed = |problem| SaslError::Malformed {
        mechanism: Mechanism::Plain,
        problem,
    };
    let text = std::str::from_utf8(message).map_err(|_| malformed("not UTF-8"))?;
    let mut parts = text.split('\0');
    let (Some(authzid), Some(authcid), Some(passwd), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed("expected [authzid] NUL authcid NUL passwd"));
    };
    if authcid.is_empty() || passwd.is_empty() {
        return Err(malformed("empty username or password"));
    }
    Ok((authzid, authcid, passwd))
}

fn login_text(decoded: Vec<u8>, problem: &'static str) -> Result<String, SaslError> {
    match String::from_utf8(decoded) {
        Ok(text) if !text.is_empty() && !text.contains('\0') => Ok(text),
        _ => Err(SaslError::Malformed {
            mechanism: Mechanism::Login,
            problem,
        }),
    }
}

/// Encodes a PLAIN initial response (for clients and tests).
pub fn encode_plain(username: &str, password: &str) -> String {
    STANDARD.encode(format!("\0{username}\0{password}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(p: Result<Progress, SaslError>) -> Credentials {
        match p {
            Ok(Progress::Done(c)) => c,
            other => panic!("expected credentials, got {other:?}"),
        }
    }

    #[test]
    fn plain_with_and_without_initial_response() {
        let c = done(start(Mechanism::Plain, &encode_plain("u", "p w")));
        assert_eq!((c.username.as_str(), c.password.expose()), ("u", "p w"));
        let Ok(Progress::Challenge("", ex)) = start(Mechanism::Plain, "") else {
            panic!("expected an empty challenge")
        };
        let c = done(step(ex, &STANDARD.encode("u\0u\0pw")));
        assert_eq!(c.username, "u");
        // Unpadded base64 is accepted.
        let c = done(start(Mechanism::Plain, "AHUAcA"));
        assert_eq!((c.username.as_str(), c.password.expose()), ("u", "p"));
    }

    #[test]
    fn plain_rejects_malformed_messages() {
        for bad in ["u\0p", "\0\0p", "\0u\0", "a\0b\0c\0d"] {
            let r = start(Mechanism::Plain, &STANDARD.encode(bad));
            assert!(matches!(r, Err(SaslError::Malformed { .. })), "{bad:?}");
        }
        assert_eq!(
            start(Mechanism::Plain, &STANDARD.encode("admin\0u\0p")).err(),
            Some(SaslError::AuthzidNotPermitted)
        );
        assert_eq!(
            start(Mechanism::Plain, "not base64!").err(),
            Some(SaslError::BadBase64)
        );
        assert!(matches!(
            start(Mechanism::Plain, "="),
            Err(SaslError::Malformed { .. })
        ));
        assert!(matches!(
            decode_plain(b"\0\xff\0p"),
            Err(SaslError::Malformed { .. })
        ));
    }

    #[test]
    fn login_prompts_twice() {
        let Ok(Progress::Challenge(LOGIN_USERNAME_PROMPT, ex)) = start(Mechanism::Login, "") else {
            panic!("expected the username prompt")
        };
        let Ok(Progress::Challenge(LOGIN_PASSWORD_PROMPT, ex)) = step(ex, &STANDARD.encode("u"))
        else {
            panic!("expected the password prompt")
        };
        let c = done(step(ex, &STANDARD.encode("secret")));
        assert_eq!(c.mechanism, Mechanism::Login);
        assert_eq!((c.username.as_str(), c.password.expose()), ("u", "secret"));
        // The initial response is the username.
        let Ok(Progress::Challenge(LOGIN_PASSWORD_PROMPT, _)) =
            start(Mechanism::Login, &STANDARD.encode("u"))
        else {
            panic!("expected the password prompt")
        };
    }

    #[test]
    fn star_cancels_at_any_step() {
        assert_eq!(
            step(Exchange::PlainMessage, "*").err(),
            Some(SaslError::Cancelled)
        );
        assert_eq!(
            step(
                Exchange::LoginPassword {
                    username: "u".into()
                },
                " * "
            )
            .err(),
            Some(SaslError::Cancelled)
        );
    }

    #[test]
    fn passwords_are_never_in_debug_output() {
        let c = done(start(Mechanism::Plain, &encode_plain("u", "hunter2")));
        let shown = format!("{c:?} {:?}", c.password);
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}
