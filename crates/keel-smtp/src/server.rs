//! The ESMTP server session (RFC 5321), as a sans-I/O state machine.
//!
//! The I/O layer feeds bytes read from the socket into [`Session::receive`] and writes out what
//! comes back in [`Step::output`]. When a complete message has been received the step asks the
//! caller to store it ([`Next::Store`]); the caller makes it durable and reports the outcome with
//! [`Session::stored`], which produces the final reply to DATA/BDAT. Until then the session holds
//! any pipelined input that followed the message, so nothing is answered out of order.
//!
//! Invariants:
//! - framing is ours: command lines are split at LF and must fit in
//!   [`ServerConfig::max_line_length`] octets (RFC 5321 §4.5.3.1.4–6: 1000 with CRLF), otherwise
//!   `500 5.5.2`; a long line is discarded up to its end without buffering it;
//! - DATA ends only at `CRLF . CRLF` (smtp-proto's [`DataReceiver`]); a bare LF or bare CR
//!   before the dot does not end it (SMTP smuggling), and leading dots are unstuffed;
//! - the stored body is byte-exact as received (after unstuffing); the Received header is the
//!   caller's to prepend (it knows the queue id and time);
//! - the buffer of a message is capped: past `max_message_size` the rest is read and dropped
//!   and the message refused with `552 5.3.4` at its end.
//!
//! TLS and authentication are decided here too, and carried out by the caller:
//! - STARTTLS (RFC 3207) is offered when [`ServerConfig::starttls`] is set and the session is
//!   not encrypted yet. The `220` go-ahead comes with [`Next::StartTls`]; anything the client
//!   pipelined after the command is discarded (a man in the middle could have injected it into
//!   the plaintext stream, CVE-2011-0411), and [`Session::tls_started`] forgets everything the
//!   client said before the handshake (its EHLO, any transaction, any authentication).
//! - AUTH (RFC 4954) with PLAIN and LOGIN ([`crate::sasl`]) is offered only on an encrypted
//!   session, or in plain text to a loopback client when [`ServerConfig::auth_plaintext_loopback`]
//!   opts in. Complete credentials come out as [`Next::Authenticate`]; the caller checks them
//!   (and its failure rate limit) and answers with [`Session::auth_result`]. Until then pipelined
//!   input is held, as for [`Next::Store`]. A successful AUTH lets the client relay.
//!
//! Cost: each call is linear in the bytes given; a message body is copied once (into the
//! transaction buffer).

use std::net::IpAddr;
use std::time::Duration;

use memchr::memchr;
use smtp_proto::request::receiver::{BdatReceiver, DataReceiver};
use smtp_proto::{Error as ProtoError, MAIL_BODY_8BITMIME, MAIL_SMTPUTF8, Request};

use crate::address::{Address, AddressError};
use crate::reply::{Reply, reply};
use crate::sasl::{self, Credentials, Exchange, MECHANISMS, Mechanism, Progress, SaslError};

/// Longest line of an AUTH command or SASL response. RFC 4954 §4 lifts the command line limit
/// for these (a PLAIN message of two long names grows by a third in base64) and recommends
/// accepting 12288 octets.
const SASL_LINE_MAX: usize = 12288;

/// What a server session needs to know; shared by every session of a listener.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Name in the greeting and the EHLO answer.
    pub hostname: String,
    /// Largest message accepted, in octets (advertised as SIZE).
    pub max_message_size: u64,
    /// Recipients per transaction; more get `452 4.5.3`.
    pub max_recipients: usize,
    /// Longest command or text line, CRLF included.
    pub max_line_length: usize,
    /// Domains Keel accepts mail for from any client (not relaying). Lower-case.
    pub local_domains: Vec<String>,
    /// Received headers beyond which a message is taken to be looping (`554 5.4.6`).
    pub max_received_headers: usize,
    /// How long to wait for the next command (RFC 5321 §4.5.3.2.7: 5 minutes).
    pub command_timeout: Duration,
    /// How long to wait for the next block of message data (§4.5.3.2.5: 3 minutes).
    pub data_timeout: Duration,
    /// Errors in one session before it is closed with `421 4.7.0`.
    pub max_errors: usize,
    /// Offer STARTTLS: the caller can run a TLS handshake (it has a certificate).
    pub starttls: bool,
    /// Offer AUTH: the caller has users to check credentials against.
    pub auth: bool,
    /// Offer AUTH without TLS to clients on a loopback address (an explicit opt-in for local
    /// submission; passwords then travel in plain text, but only inside the host).
    pub auth_plaintext_loopback: bool,
}

impl ServerConfig {
    /// RFC-sized defaults for a host name.
    pub fn new(hostname: impl Into<String>) -> Self {
        Self {
            hostname: hostname.into(),
            max_message_size: 25 * 1024 * 1024,
            max_recipients: 1000,
            max_line_length: 1000,
            local_domains: Vec::new(),
            max_received_headers: 100,
            command_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(180),
            max_errors: 20,
            starttls: false,
            auth: false,
            auth_plaintext_loopback: false,
        }
    }
}

/// Who is on the other end.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    pub ip: IpAddr,
    /// The client may relay (its address is in `relay_networks`, or it authenticated).
    pub relay_allowed: bool,
}

/// A complete message handed to the caller for storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transaction {
    /// The EHLO/HELO name the client gave.
    pub helo: String,
    /// EHLO (true) or HELO (false), for the Received header's `with` clause.
    pub esmtp: bool,
    /// `None` is the null reverse path `<>` (bounces).
    pub mail_from: Option<Address>,
    pub rcpts: Vec<Address>,
    pub body: Vec<u8>,
    pub smtputf8: bool,
    pub body_8bit: bool,
    /// The message came over an encrypted session (STARTTLS or implicit TLS).
    pub tls: bool,
    /// Who the client authenticated as, if it did.
    pub authenticated: Option<Authenticated>,
}

impl Transaction {
    /// The Received header's `with` protocol (RFC 3848; RFC 6531 §3.7.3 for SMTPUTF8): `ESMTP`,
    /// `ESMTPS` (TLS), `ESMTPA` (AUTH), `ESMTPSA` (both), their `UTF8SMTP` forms, or `SMTP`
    /// after HELO.
    pub fn protocol(&self) -> &'static str {
        if !self.esmtp {
            return "SMTP";
        }
        match (self.smtputf8, self.tls, self.authenticated.is_some()) {
            (false, false, false) => "ESMTP",
            (false, true, false) => "ESMTPS",
            (false, false, true) => "ESMTPA",
            (false, true, true) => "ESMTPSA",
            (true, false, false) => "UTF8SMTP",
            (true, true, false) => "UTF8SMTPS",
            (true, false, true) => "UTF8SMTPA",
            (true, true, true) => "UTF8SMTPSA",
        }
    }
}

/// A successfully authenticated client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticated {
    /// The user name it authenticated as.
    pub user: String,
    /// The tenant the user's mail belongs to, if the configuration names one.
    pub tenant: Option<String>,
}

/// What the caller must do after writing [`Step::output`].
#[derive(Debug)]
pub enum Next {
    /// Read more input and call [`Session::receive`].
    Read,
    /// Make this message durable, then call [`Session::stored`].
    Store(Transaction),
    /// Run the TLS handshake (as server) on the connection, then call [`Session::tls_started`].
    /// Do not read plaintext before the handshake: pipelined bytes belong to nobody. If the
    /// handshake fails, close the connection.
    StartTls,
    /// Check these credentials (and the client's failure rate), then call
    /// [`Session::auth_result`].
    Authenticate(Credentials),
    /// Close the connection.
    Close,
}

/// The caller's verdict on [`Next::Authenticate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthOutcome {
    /// The credentials are right: `235 2.7.0`, and the client may relay from now on.
    Accepted { tenant: Option<String> },
    /// Wrong user name or password: `535 5.7.8` (the same reply for both, so user names
    /// cannot be probed).
    Rejected,
    /// Too many failures from this client's address: `421 4.7.0`, then close.
    TooManyFailures,
    /// The check itself failed (not the credentials): `454 4.7.0`, the client may retry.
    TemporaryFailure,
}

/// The result of feeding the session.
#[derive(Debug)]
pub struct Step {
    /// Reply bytes to write, in order (possibly several pipelined replies).
    pub output: Vec<u8>,
    pub next: Next,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Command,
    Data,
    /// Reading a BDAT chunk of `left` more octets; `last` if it is the final one; `discard`
    /// when the chunk must be read but the transaction is invalid.
    Bdat {
        left: usize,
        last: bool,
        discard: bool,
    },
    AwaitStore,
    /// The `220` to STARTTLS is out; waiting for [`Session::tls_started`].
    AwaitTls,
    /// Waiting for the client's response to a `334` challenge (the exchange is in `sasl`).
    Sasl,
    /// Waiting for [`Session::auth_result`].
    AwaitAuth,
    Closed,
}

#[derive(Debug, Default)]
struct Envelope {
    mail_from: Option<Address>,
    rcpts: Vec<Address>,
    smtputf8: bool,
    body_8bit: bool,
    bdat: bool,
}

/// One SMTP server session.
pub struct Session {
    cfg: std::sync::Arc<ServerConfig>,
    peer: Peer,
    state: State,
    input: Vec<u8>,
    pos: usize,
    output: Vec<u8>,
    helo: Option<(String, bool)>,
    envelope: Option<Envelope>,
    body: Vec<u8>,
    data: DataReceiver,
    /// Discarding the rest of an over-long command line.
    discarding_line: bool,
    /// Length of the current DATA line so far (raw octets).
    data_line_len: usize,
    data_line_too_long: bool,
    oversize: bool,
    errors: usize,
    /// The connection is encrypted.
    tls: bool,
    /// Whether the client's address alone allows relaying (restored when STARTTLS resets).
    relay_by_address: bool,
    /// The SASL exchange in progress while in [`State::Sasl`].
    sasl: Option<Exchange>,
    /// The user name being checked while in [`State::AwaitAuth`].
    pending_user: Option<String>,
    authenticated: Option<Authenticated>,
    /// Storage is short (back-pressure): new transactions get `452 4.3.1`.
    defer_transactions: bool,
    /// MAIL commands accepted so far (the caller tarpits on each).
    mails: u64,
}

impl Session {
    pub fn new(cfg: std::sync::Arc<ServerConfig>, peer: Peer) -> Self {
        Self {
            cfg,
            peer,
            state: State::Command,
            input: Vec::new(),
            pos: 0,
            output: Vec::new(),
            helo: None,
            envelope: None,
            body: Vec::new(),
            data: DataReceiver::new(),
            discarding_line: false,
            data_line_len: 0,
            data_line_too_long: false,
            oversize: false,
            errors: 0,
            tls: false,
            relay_by_address: peer.relay_allowed,
            sasl: None,
            pending_user: None,
            authenticated: None,
            defer_transactions: false,
            mails: 0,
        }
    }

    /// While set, MAIL and RCPT are answered `452 4.3.1 Insufficient system storage` (RFC 3463)
    /// and not counted as client errors: the caller's back-pressure says storage is short, and
    /// the client should keep the message and retry later. A transaction already past RCPT
    /// may still finish its DATA; its storage outcome decides its reply.
    pub fn set_defer_transactions(&mut self, defer: bool) {
        self.defer_transactions = defer;
    }

    /// How many MAIL commands this session has accepted (lets the caller delay each one).
    pub fn mails_accepted(&self) -> u64 {
        self.mails
    }

    /// True once TLS is up (after STARTTLS, or from the start on an implicit-TLS listener).
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// Who the client authenticated as, if it did.
    pub fn authenticated(&self) -> Option<&Authenticated> {
        self.authenticated.as_ref()
    }

    /// Reports that the TLS handshake asked for by [`Next::StartTls`] succeeded — or, on an
    /// implicit-TLS listener, that the connection was encrypted from the start (call it before
    /// sending the greeting).
    ///
    /// Resets the session as RFC 3207 §4.2 requires: the EHLO name, any transaction and any
    /// authentication are forgotten, and input received before the handshake is dropped. The
    /// client must send EHLO again.
    pub fn tls_started(&mut self) {
        self.tls = true;
        self.helo = None;
        self.envelope = None;
        self.body = Vec::new();
        self.authenticated = None;
        self.peer.relay_allowed = self.relay_by_address;
        self.sasl = None;
        self.pending_user = None;
        self.input.clear();
        self.pos = 0;
        self.discarding_line = false;
        if self.state != State::Closed {
            self.state = State::Command;
        }
    }

    /// Reports the verdict on the credentials from [`Next::Authenticate`] and goes on with any
    /// input the client pipelined behind them.
    pub fn auth_result(&mut self, outcome: AuthOutcome) -> Step {
        debug_assert_eq!(self.state, State::AwaitAuth);
        let user = self.pending_user.take().unwrap_or_default();
        if self.state == State::AwaitAuth {
            self.state = State::Command;
        }
        match outcome {
            AuthOutcome::Accepted { tenant } => {
                self.authenticated = Some(Authenticated { user, tenant });
                self.peer.relay_allowed = true;
                self.push(reply(235, (2, 7, 0), "Authentication successful"));
            }
            AuthOutcome::Rejected => {
                self.push_error(reply(535, (5, 7, 8), "Authentication credentials invalid"));
            }
            AuthOutcome::TooManyFailures => {
                self.push(reply(
                    421,
                    (4, 7, 0),
                    format!(
                        "{} Too many authentication failures from your address, try again later",
                        self.cfg.hostname
                    ),
                ));
                self.state = State::Closed;
            }
            AuthOutcome::TemporaryFailure => {
                self.push(reply(454, (4, 7, 0), "Temporary authentication failure"));
            }
        }
        self.process()
    }

    /// The 220 greeting to send on connect.
    pub fn greeting(&self) -> Vec<u8> {
        Reply::plain(220, vec![format!("{} ESMTP Keel", self.cfg.hostname)]).to_bytes()
    }

    /// How long the caller should wait for input in the current state.
    pub fn read_timeout(&self) -> Duration {
        match self.state {
            State::Data | State::Bdat { .. } => self.cfg.data_timeout,
            _ => self.cfg.command_timeout,
        }
    }

    /// The reply for a read timeout; the session is closed afterwards.
    pub fn timeout(&mut self) -> Vec<u8> {
        self.state = State::Closed;
        reply(
            421,
            (4, 4, 2),
            format!("{} Error: timeout exceeded", self.cfg.hostname),
        )
        .to_bytes()
    }

    /// The reply when the server shuts down; the session is closed afterwards.
    pub fn shutdown(&mut self) -> Vec<u8> {
        self.state = State::Closed;
        reply(
            421,
            (4, 3, 2),
            format!(
                "{} Service shutting down, try again later",
                self.cfg.hostname
            ),
        )
        .to_bytes()
    }

    /// True while a message body is being received (a shutdown may wait for it).
    pub fn in_data(&self) -> bool {
        matches!(self.state, State::Data | State::Bdat { .. })
    }

    /// Feeds bytes read from the client.
    pub fn receive(&mut self, bytes: &[u8]) -> Step {
        if self.pos == self.input.len() {
            self.input.clear();
            self.pos = 0;
        } else if self.pos > 64 * 1024 {
            self.input.drain(..self.pos);
            self.pos = 0;
        }
        self.input.extend_from_slice(bytes);
        self.process()
    }

    /// Reports the outcome of storing the message from [`Next::Store`]: `Ok(queue_id)` once it is
    /// durable, or the reply to send (e.g. `451 4.3.0` on a disk error).
    pub fn stored(&mut self, outcome: Result<String, Reply>) -> Step {
        debug_assert_eq!(self.state, State::AwaitStore);
        let r = match outcome {
            Ok(id) => reply(250, (2, 0, 0), format!("Ok: queued as {id}")),
            Err(r) => r,
        };
        self.push(r);
        if self.state == State::AwaitStore {
            self.state = State::Command;
        }
        self.process()
    }

    fn push(&mut self, r: Reply) {
        r.write_to(&mut self.output);
    }

    fn push_error(&mut self, r: Reply) {
        self.push(r);
        self.errors += 1;
        if self.errors >= self.cfg.max_errors {
            self.push(reply(421, (4, 7, 0), "Too many errors, closing connection"));
            self.state = State::Closed;
        }
    }

    fn step(&mut self, next: Next) -> Step {
        Step {
            output: std::mem::take(&mut self.output),
            next,
        }
    }

    fn process(&mut self) -> Step {
        loop {
            match self.state {
                State::Closed => return self.step(Next::Close),
                State::AwaitStore | State::AwaitAuth => return self.step(Next::Read),
                State::AwaitTls => {
                    // The caller owes the handshake; plaintext now is never a command.
                    self.pos = self.input.len();
                    return self.step(Next::StartTls);
                }
                State::Command => match self.next_line() {
                    Line::More => return self.step(Next::Read),
                    Line::TooLong => {
                        self.push_error(reply(500, (5, 5, 2), "Line too long"));
                    }
                    Line::Complete(line) => {
                        if let Some(next) = self.command(&line) {
                            return self.step(next);
                        }
                    }
                },
                State::Sasl => match self.next_line() {
                    Line::More => return self.step(Next::Read),
                    Line::TooLong => {
                        self.sasl = None;
                        self.state = State::Command;
                        self.push_error(reply(
                            500,
                            (5, 5, 6),
                            "Authentication exchange line is too long",
                        ));
                    }
                    Line::Complete(line) => {
                        // Always set in this state; the fallback only keeps this total.
                        let exchange = self.sasl.take().unwrap_or(Exchange::PlainMessage);
                        self.state = State::Command;
                        let text = String::from_utf8_lossy(&line);
                        let text = text.trim_end_matches(['\r', '\n']);
                        if let Some(next) = self.sasl_progress(sasl::step(exchange, text)) {
                            return self.step(next);
                        }
                    }
                },
                State::Data => {
                    let avail = &self.input[self.pos..];
                    if avail.is_empty() {
                        return self.step(Next::Read);
                    }
                    let mut it = avail.iter();
                    let done = self.data.ingest(&mut it, &mut self.body);
                    let consumed = avail.len() - it.as_slice().len();
                    track_lines(
                        &avail[..consumed],
                        &mut self.data_line_len,
                        &mut self.data_line_too_long,
                        self.cfg.max_line_length,
                    );
                    self.pos += consumed;
                    if self.body.len() as u64 > self.cfg.max_message_size {
                        self.oversize = true;
                        self.body = Vec::new();
                    }
                    if done {
                        if let Some(tx) = self.finish_message(true) {
                            return self.step(Next::Store(tx));
                        }
                    } else {
                        return self.step(Next::Read);
                    }
                }
                State::Bdat {
                    left,
                    last,
                    discard,
                } => {
                    let avail = &self.input[self.pos..];
                    let take = avail.len().min(left);
                    if !discard && !self.oversize {
                        let mut rx = BdatReceiver::new(take, last);
                        let mut it = avail[..take].iter();
                        rx.ingest(&mut it, &mut self.body);
                        if self.body.len() as u64 > self.cfg.max_message_size {
                            self.oversize = true;
                            self.body = Vec::new();
                        }
                    }
                    self.pos += take;
                    let left = left - take;
                    if left > 0 {
                        self.state = State::Bdat {
                            left,
                            last,
                            discard,
                        };
                        return self.step(Next::Read);
                    }
                    self.state = State::Command;
                    if discard {
                        self.push_error(reply(
                            503,
                            (5, 5, 1),
                            "BDAT chunk discarded: no valid transaction",
                        ));
                    } else if last {
                        if let Some(tx) = self.finish_message(false) {
                            return self.step(Next::Store(tx));
                        }
                    } else {
                        let n = self.body.len();
                        self.push(reply(250, (2, 0, 0), format!("{n} octets received")));
                    }
                }
            }
        }
    }

    /// Takes the next line (LF-terminated) out of the input, or tells why there is none.
    ///
    /// A line longer than the limit is discarded up to its end without buffering it. The limit
    /// is [`ServerConfig::max_line_length`], except for AUTH command lines and SASL responses
    /// ([`SASL_LINE_MAX`]); the decision is taken only once more than `max_line_length` octets
    /// are buffered, by which point the command name is known, so it does not depend on how
    /// the input was split.
    fn next_line(&mut self) -> Line {
        let avail = &self.input[self.pos..];
        let limit = if self.state == State::Sasl || starts_with_ignore_case(avail, b"AUTH ") {
            SASL_LINE_MAX.max(self.cfg.max_line_length)
        } else {
            self.cfg.max_line_length
        };
        let Some(nl) = memchr(b'\n', avail) else {
            if self.discarding_line || avail.len() > limit {
                self.discarding_line = true;
                self.pos = self.input.len();
            }
            return Line::More;
        };
        let line = avail[..=nl].to_vec();
        self.pos += nl + 1;
        if std::mem::take(&mut self.discarding_line) || line.len() > limit {
            return Line::TooLong;
        }
        Line::Complete(line)
    }

    /// Ends a DATA or BDAT LAST transfer: checks it and returns the transaction to store.
    fn finish_message(&mut self, data: bool) -> Option<Transaction> {
        self.state = State::Command;
        let envelope = self.envelope.take().unwrap_or_default();
        let body = std::mem::take(&mut self.body);
        let oversize = std::mem::replace(&mut self.oversize, false);
        let long_line = std::mem::replace(&mut self.data_line_too_long, false);
        self.data_line_len = 0;
        if oversize {
            self.push(reply(
                552,
                (5, 3, 4),
                "Message size exceeds fixed maximum message size",
            ));
            return None;
        }
        if data && long_line {
            self.push(reply(
                500,
                (5, 5, 2),
                format!(
                    "Message has a line longer than {} octets (RFC 5321 4.5.3.1.6); encode it",
                    self.cfg.max_line_length
                ),
            ));
            return None;
        }
        if count_received(&body) > self.cfg.max_received_headers {
            self.push(reply(
                554,
                (5, 4, 6),
                "Too many Received headers: mail loop detected",
            ));
            return None;
        }
        let (helo, esmtp) = self.helo.clone().unwrap_or_default();
        self.state = State::AwaitStore;
        Some(Transaction {
            helo,
            esmtp,
            mail_from: envelope.mail_from,
            rcpts: envelope.rcpts,
            body,
            smtputf8: envelope.smtputf8,
            body_8bit: envelope.body_8bit,
            tls: self.tls,
            authenticated: self.authenticated.clone(),
        })
    }

    /// Handles one command line. Returns what the caller must do when the command needs more
    /// than a reply: a zero-length `BDAT 0 LAST` that ends a message, STARTTLS, or complete
    /// AUTH credentials.
    fn command(&mut self, line: &[u8]) -> Option<Next> {
        let request = match Request::parse(&mut line.iter()) {
            Ok(r) => r,
            Err(e) => {
                let r = proto_error_reply(&e);
                self.push_error(r);
                return None;
            }
        };
        match request {
            Request::Ehlo { host } => {
                self.envelope = None;
                self.helo = Some((host.to_string(), true));
                let mut lines = vec![
                    format!(
                        "{} Hello {} [{}]",
                        self.cfg.hostname,
                        sanitize(&host),
                        self.peer.ip
                    ),
                    "PIPELINING".into(),
                    format!("SIZE {}", self.cfg.max_message_size),
                    "8BITMIME".into(),
                    "SMTPUTF8".into(),
                    "ENHANCEDSTATUSCODES".into(),
                    "CHUNKING".into(),
                ];
                if self.starttls_offered() {
                    lines.push("STARTTLS".into());
                }
                if self.auth_offered() {
                    let names: Vec<&str> = MECHANISMS.iter().map(|m| m.name()).collect();
                    lines.push(format!("AUTH {}", names.join(" ")));
                }
                lines.push("HELP".into());
                self.push(Reply::plain(250, lines));
            }
            Request::Helo { host } => {
                self.envelope = None;
                self.helo = Some((host.to_string(), false));
                self.push(Reply::plain(250, vec![self.cfg.hostname.clone()]));
            }
            Request::Lhlo { .. } => {
                self.push_error(reply(500, (5, 5, 1), "LHLO is for LMTP; this is SMTP"));
            }
            Request::Mail { from } => self.mail(&from.address, from.size, from.flags),
            Request::Rcpt { to } => self.rcpt(&to.address),
            Request::Data => self.data(),
            Request::Bdat {
                chunk_size,
                is_last,
            } => return self.bdat(chunk_size, is_last).map(Next::Store),
            Request::Rset => {
                self.envelope = None;
                self.push(reply(250, (2, 0, 0), "Ok"));
            }
            Request::Noop { .. } => self.push(reply(250, (2, 0, 0), "Ok")),
            Request::Quit => {
                self.push(reply(221, (2, 0, 0), "Bye"));
                self.state = State::Closed;
            }
            Request::Vrfy { .. } => self.push(reply(
                252,
                (2, 5, 0),
                "Cannot VRFY user, but will accept message and attempt delivery",
            )),
            Request::Expn { .. } => self.push_error(reply(502, (5, 5, 1), "EXPN not supported")),
            Request::Help { .. } => self.push(reply(
                214,
                (2, 0, 0),
                "Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT HELP VRFY",
            )),
            Request::StartTls => return self.starttls(),
            Request::Auth {
                mechanism,
                initial_response,
            } => return self.auth(mechanism, &initial_response),
            Request::Etrn { .. } | Request::Atrn { .. } | Request::Burl { .. } => {
                self.push_error(reply(502, (5, 5, 1), "Command not implemented"))
            }
        }
        None
    }

    fn starttls_offered(&self) -> bool {
        self.cfg.starttls && !self.tls
    }

    /// AUTH is offered on an encrypted session, or in plain text to a loopback client when the
    /// configuration opts in.
    fn auth_offered(&self) -> bool {
        self.cfg.auth
            && (self.tls || (self.cfg.auth_plaintext_loopback && is_loopback(self.peer.ip)))
    }

    fn starttls(&mut self) -> Option<Next> {
        if self.tls {
            self.push_error(reply(503, (5, 5, 1), "TLS already active"));
            return None;
        }
        if !self.cfg.starttls {
            self.push_error(reply(502, (5, 5, 1), "STARTTLS not available"));
            return None;
        }
        self.push(reply(220, (2, 0, 0), "Ready to start TLS"));
        // Whatever followed STARTTLS in the same read was sent (or injected) in plain text
        // before the handshake: it must not be taken as commands of the encrypted session.
        self.pos = self.input.len();
        self.state = State::AwaitTls;
        Some(Next::StartTls)
    }

    fn auth(&mut self, mechanism: u64, initial: &str) -> Option<Next> {
        let refusal = if !self.cfg.auth {
            Some(reply(502, (5, 5, 1), "AUTH not available"))
        } else if !self.helo.as_ref().is_some_and(|(_, esmtp)| *esmtp) {
            Some(reply(503, (5, 5, 1), "Send EHLO first"))
        } else if !self.auth_offered() {
            Some(reply(
                538,
                (5, 7, 11),
                "Encryption required for requested authentication mechanism",
            ))
        } else if self.authenticated.is_some() {
            Some(reply(503, (5, 5, 1), "Already authenticated"))
        } else if self.envelope.is_some() {
            Some(reply(
                503,
                (5, 5, 1),
                "AUTH not permitted during a mail transaction",
            ))
        } else {
            None
        };
        if let Some(r) = refusal {
            self.push_error(r);
            return None;
        }
        let Some(mechanism) = Mechanism::from_proto(mechanism) else {
            self.push_error(reply(504, (5, 5, 4), "Unrecognized authentication type"));
            return None;
        };
        self.sasl_progress(sasl::start(mechanism, initial))
    }

    /// Acts on one step of a SASL exchange: a challenge, complete credentials, or an error.
    fn sasl_progress(&mut self, progress: Result<Progress, SaslError>) -> Option<Next> {
        match progress {
            Ok(Progress::Challenge(challenge, exchange)) => {
                self.push(Reply::plain(334, vec![challenge.to_owned()]));
                self.sasl = Some(exchange);
                self.state = State::Sasl;
                None
            }
            Ok(Progress::Done(credentials)) => {
                self.pending_user = Some(credentials.username.clone());
                self.state = State::AwaitAuth;
                Some(Next::Authenticate(credentials))
            }
            Err(e) => {
                let r = match e {
                    SaslError::Cancelled => reply(501, (5, 0, 0), "Authentication cancelled"),
                    SaslError::BadBase64 => reply(501, (5, 5, 2), "Invalid base64 data"),
                    SaslError::Malformed { .. } => reply(501, (5, 5, 2), e.to_string()),
                    SaslError::AuthzidNotPermitted => {
                        reply(535, (5, 7, 8), "Authentication credentials invalid")
                    }
                };
                self.push_error(r);
                None
            }
        }
    }

    fn mail(&mut self, address: &str, size: usize, flags: u64) {
        if self.helo.is_none() {
            return self.push_error(reply(503, (5, 5, 1), "Send EHLO or HELO first"));
        }
        if self.envelope.is_some() {
            return self.push_error(reply(503, (5, 5, 1), "Nested MAIL command"));
        }
        if self.defer_transactions {
            return self.push(insufficient_storage());
        }
        let mail_from = if address.is_empty() {
            None
        } else {
            match Address::parse(address) {
                Ok(a) => Some(a),
                Err(e) => {
                    return self.push_error(reply(
                        501,
                        (5, 1, 7),
                        format!("Bad sender address syntax: {e}"),
                    ));
                }
            }
        };
        if size as u64 > self.cfg.max_message_size {
            return self.push(reply(
                552,
                (5, 3, 4),
                format!(
                    "Message size exceeds fixed maximum message size ({} octets)",
                    self.cfg.max_message_size
                ),
            ));
        }
        if size > 0 {
            // Pre-size the buffer from the client's declaration, bounded by our own maximum.
            self.body = Vec::with_capacity(size.min(self.cfg.max_message_size as usize) + 1024);
        }
        self.envelope = Some(Envelope {
            mail_from,
            rcpts: Vec::new(),
            smtputf8: flags & MAIL_SMTPUTF8 != 0,
            body_8bit: flags & MAIL_BODY_8BITMIME != 0,
            bdat: false,
        });
        self.mails += 1;
        self.push(reply(250, (2, 1, 0), "Ok"));
    }

    fn rcpt(&mut self, address: &str) {
        let max = self.cfg.max_recipients;
        let relay_allowed = self.peer.relay_allowed;
        let Some(envelope) = self.envelope.as_mut() else {
            return self.push_error(reply(503, (5, 5, 1), "Need MAIL before RCPT"));
        };
        let addr = match Address::parse(address) {
            Ok(a) => a,
            Err(e @ AddressError::NotQualified) | Err(e @ AddressError::BadLocalPart) => {
                return self.push_error(reply(
                    501,
                    (5, 1, 3),
                    format!("Bad recipient address syntax: {e}"),
                ));
            }
            Err(e @ AddressError::BadDomain) => {
                return self.push_error(reply(
                    501,
                    (5, 1, 2),
                    format!("Bad recipient address syntax: {e}"),
                ));
            }
        };
        if envelope.rcpts.len() >= max {
            return self.push(reply(452, (4, 5, 3), "Too many recipients"));
        }
        if self.defer_transactions {
            return self.push(insufficient_storage());
        }
        if !relay_allowed {
            let local = !addr.has_routing_chars()
                && addr
                    .domain_name()
                    .is_some_and(|d| self.cfg.local_domains.iter().any(|l| l == d));
            if !local {
                return self.push_error(reply(
                    550,
                    (5, 7, 1),
                    format!("<{addr}>: Relay access denied"),
                ));
            }
        }
        if !envelope.rcpts.contains(&addr) {
            envelope.rcpts.push(addr);
        }
        self.push(reply(250, (2, 1, 5), "Ok"));
    }

    fn data(&mut self) {
        let Some(envelope) = self.envelope.as_ref() else {
            return self.push_error(reply(503, (5, 5, 1), "Need MAIL command"));
        };
        if envelope.bdat {
            return self.push_error(reply(503, (5, 5, 1), "DATA not allowed after BDAT"));
        }
        if envelope.rcpts.is_empty() {
            return self.push_error(reply(554, (5, 5, 1), "No valid recipients"));
        }
        self.data = DataReceiver::new();
        // The receiver only recognises a leading dot after a CRLF it has seen; the CRLF that
        // ended the DATA command is that CRLF, so prime it with one (otherwise a stuffed dot on
        // the first line, or an immediately empty message, would be misread).
        let mut primer = Vec::with_capacity(2);
        self.data.ingest(&mut b"\r\n".iter(), &mut primer);
        self.data_line_len = 0;
        self.data_line_too_long = false;
        self.oversize = false;
        self.state = State::Data;
        self.push(Reply::plain(
            354,
            vec!["End data with <CR><LF>.<CR><LF>".into()],
        ));
    }

    fn bdat(&mut self, size: usize, last: bool) -> Option<Transaction> {
        let valid = self.envelope.as_ref().is_some_and(|e| !e.rcpts.is_empty());
        if let Some(e) = self.envelope.as_mut()
            && valid
            && !e.bdat
        {
            e.bdat = true;
            self.oversize = false;
        }
        self.state = State::Bdat {
            left: size,
            last,
            discard: !valid,
        };
        if size == 0 {
            // Nothing to read: complete the chunk now.
            self.state = State::Command;
            if !valid {
                self.push_error(reply(503, (5, 5, 1), "No valid transaction for BDAT"));
                return None;
            }
            if last {
                return self.finish_message(false);
            }
            self.push(reply(250, (2, 0, 0), "0 octets received"));
        }
        None
    }
}

/// The outcome of looking for the next input line.
enum Line {
    /// No complete line yet.
    More,
    /// A line over the limit ended; it was discarded.
    TooLong,
    /// A line, LF (and CR) included.
    Complete(Vec<u8>),
}

/// The back-pressure refusal of a new transaction or recipient.
fn insufficient_storage() -> Reply {
    reply(
        452,
        (4, 3, 1),
        "Insufficient system storage, try again later",
    )
}

fn starts_with_ignore_case(bytes: &[u8], prefix: &[u8]) -> bool {
    bytes.len() >= prefix.len() && bytes[..prefix.len()].eq_ignore_ascii_case(prefix)
}

/// True for 127.0.0.0/8, `::1`, and their IPv4-mapped forms (a dual-stack socket).
fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// Tracks DATA line lengths across chunks; sets `too_long` when a line exceeds `max` octets.
fn track_lines(chunk: &[u8], cur: &mut usize, too_long: &mut bool, max: usize) {
    let mut rest = chunk;
    while let Some(nl) = memchr(b'\n', rest) {
        if *cur + nl + 1 > max {
            *too_long = true;
        }
        *cur = 0;
        rest = &rest[nl + 1..];
    }
    *cur += rest.len();
    if *cur > max {
        *too_long = true;
    }
}

/// Counts `Received:` header fields in the header section of a message.
fn count_received(body: &[u8]) -> usize {
    let end = memchr::memmem::find(body, b"\r\n\r\n").unwrap_or(body.len());
    body[..end]
        .split(|&b| b == b'\n')
        .filter(|l| l.len() >= 9 && l[..9].eq_ignore_ascii_case(b"received:"))
        .count()
}

fn sanitize(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(255).collect()
}

fn proto_error_reply(e: &ProtoError) -> Reply {
    match e {
        ProtoError::UnknownCommand => reply(500, (5, 5, 1), "Command unrecognized"),
        ProtoError::InvalidSenderAddress => reply(501, (5, 1, 7), "Bad sender address syntax"),
        ProtoError::InvalidRecipientAddress => {
            reply(501, (5, 1, 3), "Bad recipient address syntax")
        }
        ProtoError::SyntaxError { syntax } => reply(501, (5, 5, 4), format!("Syntax: {syntax}")),
        ProtoError::InvalidParameter { param } => {
            reply(501, (5, 5, 4), format!("Invalid parameter: {param}"))
        }
        ProtoError::UnsupportedParameter { param } => reply(
            555,
            (5, 5, 4),
            format!("Unsupported parameter: {}", sanitize(param)),
        ),
        ProtoError::ResponseTooLong => reply(500, (5, 5, 2), "Line too long"),
        ProtoError::NeedsMoreData { .. } | ProtoError::InvalidResponse { .. } => {
            reply(500, (5, 5, 2), "Syntax error")
        }
    }
}
