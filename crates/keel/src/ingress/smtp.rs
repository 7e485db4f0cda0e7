//! The SMTP listener: tokio I/O around the sans-I/O [`keel_smtp::Session`].
//!
//! Each connection runs one task that reads, feeds the session, writes its replies, and —
//! when the session has a complete message — stores it: Received header prepended, envelope
//! and body appended to the spool, and only once the spool reports the group commit durable
//! is the 250 written and the message handed to the queue manager. A spool error becomes
//! `451 4.3.0`, so the client keeps responsibility for the message.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use keel_config::Config;
use keel_smtp::received::Trace;
use keel_smtp::{Enhanced, Next, Peer, Reply, ServerConfig, Session, Transaction};
use keel_spool::Spool;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::envelope::{Envelope, Recipient};
use crate::events::{self, Event, EventSink, Kind};
use crate::queue::{QueueHandle, format_id};

/// Shared by every SMTP session.
pub struct Ingress {
    pub cfg: Arc<Config>,
    pub server: Arc<ServerConfig>,
    pub spool: Spool,
    pub queue: QueueHandle,
    pub events: EventSink,
    pub shutdown: CancellationToken,
    pub tracker: TaskTracker,
    pub connections: Arc<Semaphore>,
}

/// The session parameters derived from the configuration.
pub fn server_config(cfg: &Config) -> ServerConfig {
    let mut s = ServerConfig::new(cfg.smtp.hostname.clone());
    s.max_message_size = cfg.smtp.max_message_size;
    s.max_recipients = cfg.smtp.max_recipients;
    s.command_timeout = cfg.smtp.timeouts.command;
    s.data_timeout = cfg.smtp.timeouts.data_block;
    s
}

/// Accepts connections until shutdown.
pub async fn serve(listener: TcpListener, ingress: Arc<Ingress>) {
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
            let permit = ingress2.connections.clone().try_acquire_owned();
            let mut stream = stream;
            match permit {
                Ok(_permit) => {
                    if let Err(e) = session(&mut stream, peer, &ingress2).await {
                        tracing::debug!(%peer, error = %e, "SMTP session ended with an error");
                    }
                }
                Err(_) => {
                    let r = Reply::new(
                        421,
                        Enhanced(4, 3, 2),
                        format!(
                            "{} Too many connections, try again later",
                            ingress2.server.hostname
                        ),
                    );
                    let _ = stream.write_all(&r.to_bytes()).await;
                }
            }
        });
    }
}

async fn session(
    stream: &mut TcpStream,
    peer: SocketAddr,
    ingress: &Ingress,
) -> std::io::Result<()> {
    let _ = stream.set_nodelay(true);
    let relay_allowed = ingress.cfg.is_relay_client(peer.ip());
    let mut s = Session::new(
        ingress.server.clone(),
        Peer {
            ip: peer.ip(),
            relay_allowed,
        },
    );
    stream.write_all(&s.greeting()).await?;
    // Small per-connection buffer: thousands of idle sessions must stay cheap.
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let read = tokio::select! {
            r = tokio::time::timeout(s.read_timeout(), stream.read(&mut buf)) => r,
            _ = ingress.shutdown.cancelled(), if !s.in_data() => {
                stream.write_all(&s.shutdown()).await?;
                return Ok(());
            }
        };
        let n = match read {
            Err(_) => {
                stream.write_all(&s.timeout()).await?;
                return Ok(());
            }
            Ok(r) => r?,
        };
        if n == 0 {
            return Ok(());
        }
        let mut step = s.receive(&buf[..n]);
        loop {
            if !step.output.is_empty() {
                stream.write_all(&step.output).await?;
            }
            match step.next {
                Next::Read => break,
                Next::Close => return Ok(()),
                Next::Store(tx) => {
                    let outcome = store(ingress, peer, tx).await;
                    step = s.stored(outcome);
                }
            }
        }
    }
}

/// Makes a received message durable and queues it. `Ok(queue id)` only after the fsync.
async fn store(ingress: &Ingress, peer: SocketAddr, tx: Transaction) -> Result<String, Reply> {
    let id = uuid::Uuid::now_v7().as_u128();
    let queue_id = format_id(id);
    let now = SystemTime::now();
    let rcpts: Vec<String> = tx.rcpts.iter().map(|a| a.to_string()).collect();
    let protocol = if tx.esmtp { "ESMTP" } else { "SMTP" };
    let header = Trace {
        helo: &tx.helo,
        peer_ip: peer.ip(),
        by: &ingress.server.hostname,
        protocol,
        id: &queue_id,
        for_rcpt: (rcpts.len() == 1).then(|| rcpts[0].as_str()),
        date: &events::rfc5322(now),
    }
    .header();
    let mut body = Vec::with_capacity(header.len() + tx.body.len());
    body.extend_from_slice(header.as_bytes());
    body.extend_from_slice(&tx.body);
    drop(tx.body);

    let sender = tx.mail_from.map(|a| a.to_string()).unwrap_or_default();
    let envelope = Envelope {
        sender,
        recipients: rcpts
            .iter()
            .map(|r| Recipient {
                address: r.clone(),
                done: false,
                attempts: 0,
            })
            .collect(),
        received_at_ms: events::epoch_ms(now),
        peer: peer.to_string(),
        size: body.len() as u64,
    };
    if let Err(e) = ingress.spool.append(id, envelope.encode(), body).await {
        tracing::error!(error = %e, %peer, "cannot store a received message");
        return Err(Reply::new(
            451,
            Enhanced(4, 3, 0),
            "Requested action aborted: local storage error, try again later",
        ));
    }
    let time = events::rfc3339(now);
    for r in &rcpts {
        ingress.events.emit(Event {
            kind: Kind::Reception,
            time: time.clone(),
            id: queue_id.clone(),
            sender: envelope.sender.clone(),
            recipient: r.clone(),
            size: envelope.size,
            queue: r
                .rsplit_once('@')
                .map(|(_, d)| d.to_string())
                .unwrap_or_default(),
            site: String::new(),
            attempt: 0,
            response: None,
            peer: envelope.peer.clone(),
            queue_time_ms: 0,
        });
    }
    ingress.queue.enqueue(id, envelope);
    Ok(queue_id)
}
