//! Queueing one accepted message, whatever it came in by (SMTP, HTTP).
//!
//! The steps every ingress shares, in the order that keeps the durability promise: strip
//! Keel's control headers (`X-Keel-Pool`, `-Campaign`, `-Tenant`), DKIM-sign if allowed,
//! prepend the trace header, append envelope and body to the spool and wait for the group
//! commit, then — only then — emit the Reception events and hand the message to the queue
//! manager. The caller answers its client (250, 2xx) after `submit` returns `Ok`.

use std::sync::Arc;
use std::time::SystemTime;

use keel_spool::Spool;

use crate::envelope::{Envelope, Recipient};
use crate::events::{self, Event, EventSink, Kind};
use crate::queue::{QueueHandle, format_id};

/// What `submit` needs from the daemon.
#[derive(Clone)]
pub struct Submitter {
    pub spool: Spool,
    pub queue: QueueHandle,
    pub events: EventSink,
    /// `[[dkim]]` keys; empty: nothing is signed. Swapped on reload.
    pub dkim: Arc<arc_swap::ArcSwap<keel_dkim::Signers>>,
}

/// One message to queue.
pub struct Submission {
    /// Reverse path; empty for `<>`.
    pub sender: String,
    /// Validated recipient addresses.
    pub rcpts: Vec<String>,
    /// The RFC 5322 message as received (CRLF line ends), control headers still in it.
    pub message: Vec<u8>,
    /// The client, for events (`ip:port`, or a description).
    pub peer: String,
    /// Whether the message may carry our DKIM signature (mail from our own clients).
    pub sign: bool,
    /// A tenant that overrides the `X-Keel-Tenant` header (the authenticated user's).
    pub tenant: Option<String>,
}

/// Why a message could not be queued; the client keeps responsibility for it.
#[derive(Debug, thiserror::Error)]
#[error("cannot store the message: {0}")]
pub struct SubmitError(#[from] keel_spool::SpoolError);

impl Submitter {
    /// Queues `s` durably. `trace` builds the trace header (ending in CRLF) from the queue id
    /// and the reception time. Returns the queue id.
    pub async fn submit(
        &self,
        s: Submission,
        trace: impl FnOnce(&str, SystemTime) -> String,
    ) -> Result<String, SubmitError> {
        let id = uuid::Uuid::now_v7().as_u128();
        let queue_id = format_id(id);
        let now = SystemTime::now();
        let header = trace(&queue_id, now);
        let (controls, message) = match super::headers::extract(&s.message) {
            Some((controls, stripped)) => (controls, stripped),
            None => (Default::default(), s.message),
        };
        let (message, signature) = if s.sign {
            dkim_sign(&self.dkim.load_full(), message, &queue_id).await
        } else {
            (message, None)
        };
        let signature = signature.unwrap_or_default();
        let mut body = Vec::with_capacity(header.len() + signature.len() + message.len());
        body.extend_from_slice(header.as_bytes());
        body.extend_from_slice(signature.as_bytes());
        body.extend_from_slice(&message);
        drop(message);

        let envelope = Envelope {
            sender: s.sender,
            recipients: s
                .rcpts
                .iter()
                .map(|r| Recipient {
                    address: r.clone(),
                    done: false,
                    attempts: 0,
                })
                .collect(),
            received_at_ms: events::epoch_ms(now),
            peer: s.peer,
            size: body.len() as u64,
            pool: controls.pool,
            campaign: controls.campaign,
            // A tenant fixed by authentication wins over a header the client wrote: a user
            // must not be able to send on another tenant's account.
            tenant: s.tenant.unwrap_or(controls.tenant),
        };
        self.spool.append(id, envelope.encode(), body).await?;
        let time = events::rfc3339(now);
        for r in &s.rcpts {
            self.events.emit(Event {
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
                source: String::new(),
                attempt: 0,
                response: None,
                peer: envelope.peer.clone(),
                queue_time_ms: 0,
                action: None,
            });
        }
        self.queue.enqueue(id, envelope);
        Ok(queue_id)
    }
}

/// The `DKIM-Signature` field(s) for `message`, or `None` when no key matches its From domain
/// or it cannot be signed unambiguously (logged at debug: such mail is still accepted, unsigned).
/// Runs on the blocking pool; the message is shared with the signing thread rather than moved,
/// so it survives even a panic in the signer.
async fn dkim_sign(
    signers: &keel_dkim::Signers,
    message: Vec<u8>,
    queue_id: &str,
) -> (Vec<u8>, Option<String>) {
    if signers.is_empty() {
        return (message, None);
    }
    let shared = Arc::new(message);
    let (signers, for_signer) = (signers.clone(), shared.clone());
    let result = tokio::task::spawn_blocking(move || signers.sign(&for_signer)).await;
    // The signing closure (and its clone of the message) is gone once the task finished.
    let message = Arc::try_unwrap(shared).unwrap_or_else(|shared| (*shared).clone());
    let signature = match result {
        Ok(Ok(signature)) => signature,
        Ok(Err(e)) => {
            tracing::debug!(id = %queue_id, error = %e, "message accepted without a DKIM signature");
            None
        }
        Err(e) => {
            tracing::warn!(id = %queue_id, error = %e, "DKIM signing failed; message accepted unsigned");
            None
        }
    };
    (message, signature)
}
