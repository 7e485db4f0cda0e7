//! The SMTP listener: tokio I/O around the sans-I/O [`keel_smtp::Session`].
//!
//! Each connection runs one task that reads, feeds the session, writes its replies, and —
//! when the session has a complete message — stores it: Received header prepended, envelope
//! and body appended to the spool, and only once the spool reports the group commit durable
//! is the 250 written and the message handed to the queue manager. A spool error becomes
//! `451 4.3.0`, so the client keeps responsibility for the message.
//!
//! The session decides when TLS starts and what to do with credentials; this task carries
//! it out: the handshake ([`tls`]), on STARTTLS or, on an implicit-TLS listener, before the
//! greeting; and the credential check ([`auth`]). Before a session starts, the connection
//! must fit under both `max_connections` (`421 4.3.2`) and `max_connections_per_ip`
//! (`421 4.7.0`); an implicit-TLS connection over a limit is closed without an answer,
//! since a plaintext reply would mean nothing to a client expecting a TLS handshake.
//!
//! Slow clients and back-pressure: a session has a total deadline (`timeouts.session`) and
//! each message's data one of its own (`timeouts.message`), next to the per-read timeouts, so
//! a client trickling a byte at a time cannot hold a slot for ever (`421 4.4.2`). New
//! connections per client address are rate-limited (`max_connection_rate_per_ip`, `421 4.7.0`;
//! relay clients exempt). The back-pressure stage ([`super::backpressure`]) is read at connect
//! (refuse: `421 4.3.2`), before each command batch (defer: `452 4.3.1` at MAIL/RCPT) and after
//! each accepted MAIL (slow: the reply is held back by `tarpit`).
//!
//! DKIM: mail from a client that may relay (by address or by AUTH) is signed in [`store`]
//! when its From domain has a `[[dkim]]` key — the message as received, after Keel's
//! `X-Keel-*` control headers are removed, so the signature covers exactly what recipients
//! get. The `DKIM-Signature` field goes above the message and the Received header above it
//! (Received is not signed, so adding it later does not break the signature). Signing runs on
//! the blocking pool (RSA-2048 costs about 0.7 ms); a message that cannot be signed (no From,
//! several From fields...) is stored unsigned, with a debug log.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::Context as _;
use keel_config::Config;
use keel_smtp::received::Trace;
use keel_smtp::{Enhanced, Next, Peer, Reply, ServerConfig, Session, Transaction};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::auth::Authenticator;
use super::backpressure::Stage;
use super::limits::{ConnectionRate, PerIpConnections};
use super::submit::{Submission, Submitter};
use super::tls::{self, Stream};
use crate::events;

/// Shared by every SMTP session.
pub struct Ingress {
    /// Swapped on reload (relay networks, timeouts, back-pressure tarpit).
    pub cfg: arc_swap::ArcSwap<Config>,
    pub server: Arc<ServerConfig>,
    pub shutdown: CancellationToken,
    pub tracker: TaskTracker,
    pub connections: Arc<Semaphore>,
    pub access: Access,
    /// Spool, queue, events and DKIM keys: what queueing a message needs.
    pub submitter: Submitter,
    /// The back-pressure stage, published by [`super::backpressure::Monitor`].
    pub stage: watch::Receiver<Stage>,
}

/// Who may connect and how they prove who they are: TLS, AUTH and per-client limits.
pub struct Access {
    /// `None` when no certificate is configured (no STARTTLS, no implicit TLS).
    pub tls: Option<TlsAcceptor>,
    pub auth: Authenticator,
    pub per_ip: PerIpConnections,
    /// `None`: no connection-rate limit.
    pub conn_rate: Option<ConnectionRate>,
}

impl Access {
    /// Loads the certificate and key (a bad pair fails start-up) and the user list.
    pub fn from_config(cfg: &Config) -> anyhow::Result<Access> {
        let tls = match &cfg.smtp.tls {
            Some(files) => Some(tls::acceptor(files).context("setting up TLS for SMTP")?),
            None => None,
        };
        Ok(Access {
            tls,
            auth: Authenticator::new(&cfg.smtp),
            per_ip: PerIpConnections::new(cfg.smtp.max_connections_per_ip),
            conn_rate: cfg.smtp.max_connection_rate_per_ip.map(ConnectionRate::new),
        })
    }
}

/// The session parameters derived from the configuration.
pub fn server_config(cfg: &Config) -> ServerConfig {
    let mut s = ServerConfig::new(cfg.smtp.hostname.clone());
    s.max_message_size = cfg.smtp.max_message_size;
    s.max_recipients = cfg.smtp.max_recipients;
    s.command_timeout = cfg.smtp.timeouts.command;
    s.data_timeout = cfg.smtp.timeouts.data_block;
    s.starttls = cfg.smtp.tls.is_some();
    s.auth = !cfg.smtp.users.is_empty();
    s.auth_plaintext_loopback = cfg.smtp.auth_plaintext_loopback;
    s
}

/// How a listener's connections start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Plain SMTP; STARTTLS when configured.
    Plain,
    /// TLS from the first byte (`smtp.tls_listen`).
    ImplicitTls,
}

/// Pending connections the kernel holds for `accept`. The common default (128) overflows
/// when a burst of clients connects faster than one accept-loop turn, and every dropped SYN
/// costs that client a full second before its retransmission; the kernel caps this at
/// `net.core.somaxconn` anyway.
const LISTEN_BACKLOG: u32 = 4096;

/// Binds an SMTP listener with [`LISTEN_BACKLOG`] (`SO_REUSEADDR`, so a restart does not wait
/// for old connections in TIME_WAIT).
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Accepts plain SMTP connections until shutdown.
pub async fn serve(listener: TcpListener, ingress: Arc<Ingress>) {
    accept_loop(listener, ingress, Mode::Plain).await;
}

/// Accepts implicit-TLS connections (`smtp.tls_listen`) until shutdown.
pub async fn serve_implicit_tls(listener: TcpListener, ingress: Arc<Ingress>) {
    accept_loop(listener, ingress, Mode::ImplicitTls).await;
}

async fn accept_loop(listener: TcpListener, ingress: Arc<Ingress>, mode: Mode) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = ingress.shutdown.cancelled() => break,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let ingress2 = ingress.clone();
        ingress.tracker.spawn(async move {
            let ingress = ingress2;
            if *ingress.stage.borrow() == Stage::Refuse {
                let text = format!(
                    "{} Insufficient system resources, try again later",
                    ingress.server.hostname
                );
                return refuse(stream, mode, Reply::new(421, Enhanced(4, 3, 2), text)).await;
            }
            if let Some(rate) = &ingress.access.conn_rate
                && !ingress.cfg.load().is_relay_client(peer.ip())
                && !rate.allow(peer.ip(), std::time::Instant::now())
            {
                tracing::debug!(%peer, "connection rate exceeded for this client");
                let text = format!(
                    "{} Too many connections from your address, slow down",
                    ingress.server.hostname
                );
                return refuse(stream, mode, Reply::new(421, Enhanced(4, 7, 0), text)).await;
            }
            let Ok(_permit) = ingress.connections.clone().try_acquire_owned() else {
                let text = format!(
                    "{} Too many connections, try again later",
                    ingress.server.hostname
                );
                return refuse(stream, mode, Reply::new(421, Enhanced(4, 3, 2), text)).await;
            };
            let Some(_slot) = ingress.access.per_ip.try_acquire(peer.ip()) else {
                tracing::debug!(%peer, "too many connections from this client");
                let text = format!(
                    "{} Too many connections from your address",
                    ingress.server.hostname
                );
                return refuse(stream, mode, Reply::new(421, Enhanced(4, 7, 0), text)).await;
            };
            if let Err(e) = session(stream, peer, &ingress, mode).await {
                tracing::debug!(%peer, error = %e, "SMTP session ended with an error");
            }
        });
    }
}

/// Turns a connection away before its session starts.
async fn refuse(mut stream: TcpStream, mode: Mode, reply: Reply) {
    if mode == Mode::Plain {
        let _ = stream.write_all(&reply.to_bytes()).await;
    }
}

/// Writes and flushes (a TLS stream holds written data until flushed).
async fn send(stream: &mut Stream, bytes: &[u8]) -> std::io::Result<()> {
    stream.write_all(bytes).await?;
    stream.flush().await
}

async fn session(
    tcp: TcpStream,
    peer: SocketAddr,
    ingress: &Ingress,
    mode: Mode,
) -> std::io::Result<()> {
    let _ = tcp.set_nodelay(true);
    let relay_allowed = ingress.cfg.load().is_relay_client(peer.ip());
    let mut s = Session::new(
        ingress.server.clone(),
        Peer {
            ip: peer.ip(),
            relay_allowed,
        },
    );
    let mut stream = Stream::Plain(tcp);
    if mode == Mode::ImplicitTls {
        stream = handshake(stream, ingress, ingress.cfg.load().smtp.timeouts.greeting).await?;
        s.tls_started();
    }
    send(&mut stream, &s.greeting()).await?;
    let cfg = ingress.cfg.load_full();
    let timeouts = &cfg.smtp.timeouts;
    let session_deadline = after(timeouts.session);
    let mut message_deadline: Option<Instant> = None;
    let mut stage = ingress.stage.clone();
    let mut mails_tarpitted = 0;
    // Small per-connection buffer: thousands of idle sessions must stay cheap.
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        // Each message's data has its own deadline from its start, however steadily a client
        // trickles it; the session's deadline bounds everything else.
        if s.in_data() {
            message_deadline.get_or_insert_with(|| after(timeouts.message));
        } else {
            message_deadline = None;
        }
        let deadline = after(s.read_timeout())
            .min(session_deadline)
            .min(message_deadline.unwrap_or(session_deadline));
        let read = tokio::select! {
            r = tokio::time::timeout_at(deadline, stream.read(&mut buf)) => r,
            _ = ingress.shutdown.cancelled(), if !s.in_data() => {
                send(&mut stream, &s.shutdown()).await?;
                return Ok(());
            }
        };
        let n = match read {
            Err(_) => {
                send(&mut stream, &s.timeout()).await?;
                return Ok(());
            }
            Ok(r) => r?,
        };
        if n == 0 {
            return Ok(());
        }
        let current = *stage.borrow_and_update();
        s.set_defer_transactions(current >= Stage::Defer);
        let mut step = s.receive(&buf[..n]);
        loop {
            if current == Stage::Slow && s.mails_accepted() > mails_tarpitted {
                // Hold the MAIL reply back: senders slow down and nobody is refused.
                mails_tarpitted = s.mails_accepted();
                tokio::time::sleep(ingress.cfg.load().smtp.backpressure.tarpit).await;
            }
            if !step.output.is_empty() {
                send(&mut stream, &step.output).await?;
            }
            match step.next {
                Next::Read => break,
                Next::Close => return Ok(()),
                Next::Store(tx) => {
                    let outcome = store(ingress, peer, tx).await;
                    step = s.stored(outcome);
                }
                Next::StartTls => {
                    // The rest of this read was discarded by the session; what the client
                    // sends next must be the TLS handshake.
                    stream = handshake(stream, ingress, s.read_timeout()).await?;
                    s.tls_started();
                    break;
                }
                Next::Authenticate(credentials) => {
                    let outcome = ingress.access.auth.check(peer.ip(), credentials).await;
                    step = s.auth_result(outcome);
                }
            }
        }
    }
}

/// `d` from now; a configured duration too large for the clock means "never" (about 30 years)
/// rather than a panic.
fn after(d: std::time::Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(d)
        .unwrap_or_else(|| now + std::time::Duration::from_secs(30 * 365 * 86_400))
}

/// Runs the TLS handshake within `limit`; an error, a timeout or shutdown ends the session
/// (there is nothing to finish: no message can be in progress).
async fn handshake(
    stream: Stream,
    ingress: &Ingress,
    limit: std::time::Duration,
) -> std::io::Result<Stream> {
    let Some(acceptor) = &ingress.access.tls else {
        return Err(std::io::Error::other("TLS requested but not configured"));
    };
    tokio::select! {
        r = tokio::time::timeout(limit, stream.start_tls(acceptor)) => match r {
            Ok(Ok(tls)) => Ok(tls),
            Ok(Err(e)) => Err(std::io::Error::other(format!("TLS handshake failed: {e}"))),
            Err(_) => Err(std::io::Error::other("TLS handshake timed out")),
        },
        _ = ingress.shutdown.cancelled() => {
            Err(std::io::Error::other("shutting down during the TLS handshake"))
        }
    }
}

/// Makes a received message durable and queues it. `Ok(queue id)` only after the fsync.
async fn store(ingress: &Ingress, peer: SocketAddr, tx: Transaction) -> Result<String, Reply> {
    let rcpts: Vec<String> = tx.rcpts.iter().map(|a| a.to_string()).collect();
    let protocol = tx.protocol();
    let for_rcpt = (rcpts.len() == 1).then(|| rcpts[0].clone());
    let helo = tx.helo.clone();
    let by = ingress.server.hostname.clone();
    // Only mail Keel relays for its own clients is signed: a message an outside client sends
    // to a local domain must not leave with our signature.
    let sign = tx.authenticated.is_some() || ingress.cfg.load().is_relay_client(peer.ip());
    let submission = Submission {
        sender: tx.mail_from.map(|a| a.to_string()).unwrap_or_default(),
        rcpts,
        message: tx.body,
        peer: peer.to_string(),
        sign,
        tenant: tx.authenticated.and_then(|a| a.tenant),
    };
    let trace = |queue_id: &str, now: SystemTime| {
        Trace {
            helo: &helo,
            peer_ip: peer.ip(),
            by: &by,
            protocol,
            id: queue_id,
            for_rcpt: for_rcpt.as_deref(),
            date: &events::rfc5322(now),
        }
        .header()
    };
    ingress
        .submitter
        .submit(submission, trace)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, %peer, "cannot store a received message");
            Reply::new(
                451,
                Enhanced(4, 3, 0),
                "Requested action aborted: local storage error, try again later",
            )
        })
}
