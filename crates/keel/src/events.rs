//! The event stream: one typed record per state change of a message.
//!
//! Every consumer (the JSON-lines log today; metrics, campaign statistics, webhooks and the
//! suppression list later) reads these same records. Producers call [`EventSink::emit`], which
//! never blocks: records go over an unbounded channel to the single writer task, which batches
//! them into the log file and flushes whenever the channel runs dry (so a reader sees an event
//! within milliseconds, and a burst costs one write per batch, not per event).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::Serialize;
use tokio::sync::mpsc;

/// Kinds of state change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Kind {
    Reception,
    Delivery,
    TransientFailure,
    Bounce,
    Expiration,
    /// Failed by an operator (`keel bounce`).
    AdminBounce,
    /// Held in the scheduled queue because its ready queue is full (see `action`).
    Delayed,
    /// Traffic shaping acted on its own: a reply rule fired, or adaptive shaping changed a
    /// site's limits. `action` says what and why; `response` is the reply that caused it.
    ShapingAction,
}

/// A remote reply, as logged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Response {
    pub code: u16,
    /// Enhanced status code (`5.1.1`), empty when the peer sent none.
    pub enhanced: String,
    pub text: String,
}

/// One event record. Field names are the log's contract; operators grep for them.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    #[serde(rename = "type")]
    pub kind: Kind,
    /// RFC 3339 UTC time of the state change.
    pub time: String,
    /// Queue id of the message.
    pub id: String,
    pub sender: String,
    pub recipient: String,
    pub size: u64,
    /// Scheduled queue (destination domain).
    pub queue: String,
    /// Where delivery was attempted: MX host or smarthost name; empty if not applicable.
    pub site: String,
    /// Egress source the attempt was made from; empty if not applicable.
    pub source: String,
    /// Delivery attempt number (0 for Reception).
    pub attempt: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response: Option<Response>,
    /// Remote `ip:port`: the client for Reception, the server for delivery attempts.
    pub peer: String,
    /// Milliseconds since reception.
    pub queue_time_ms: u64,
    /// For `Delayed` and `ShapingAction`: what was done and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
}

/// RFC 3339 time with millisecond precision, UTC.
pub fn rfc3339(t: SystemTime) -> String {
    let dt = time::OffsetDateTime::from(t);
    let fmt = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    dt.format(&fmt).unwrap_or_default()
}

/// RFC 5322 date-time for headers, UTC.
pub fn rfc5322(t: SystemTime) -> String {
    let dt = time::OffsetDateTime::from(t);
    let fmt = time::macros::format_description!(
        "[weekday repr:short], [day padding:none] [month repr:short] [year] [hour]:[minute]:[second] +0000"
    );
    dt.format(&fmt).unwrap_or_default()
}

/// Milliseconds since the Unix epoch.
pub fn epoch_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Cheap, cloneable handle that producers emit through.
#[derive(Clone)]
pub struct EventSink {
    tx: mpsc::UnboundedSender<Event>,
}

impl EventSink {
    pub fn emit(&self, event: Event) {
        // The writer outlives every producer; a send error can only happen during shutdown.
        let _ = self.tx.send(event);
    }

    /// A sink whose records are handed to `rx` (tests, and consumers other than the log).
    pub fn channel() -> (EventSink, mpsc::UnboundedReceiver<Event>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (EventSink { tx }, rx)
    }
}

/// The file events are written to inside the log directory.
pub fn log_path(dir: &Path) -> PathBuf {
    dir.join("events.jsonl")
}

/// Opens (appending) the event log and spawns its writer on a dedicated thread, so file
/// writes never stall the async runtime. The returned join handle ends after every sink is
/// dropped and the remaining records are flushed.
pub fn start_log(dir: &Path) -> anyhow::Result<(EventSink, std::thread::JoinHandle<()>)> {
    use anyhow::Context;
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating log directory {}", dir.display()))?;
    let path = log_path(dir);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("opening event log {}", path.display()))?;
    let (sink, mut rx) = EventSink::channel();
    let handle = std::thread::Builder::new()
        .name("keel-events".into())
        .spawn(move || {
            let mut out = std::io::BufWriter::with_capacity(256 * 1024, file);
            while let Some(ev) = rx.blocking_recv() {
                write_event(&mut out, &ev);
                while let Ok(ev) = rx.try_recv() {
                    write_event(&mut out, &ev);
                }
                if let Err(e) = out.flush() {
                    tracing::error!(error = %e, "cannot write the event log");
                }
            }
            let _ = out.flush();
        })
        .context("starting the event log writer")?;
    Ok((sink, handle))
}

fn write_event(out: &mut impl Write, ev: &Event) {
    if serde_json::to_writer(&mut *out, ev).is_ok() {
        let _ = out.write_all(b"\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_times() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_795_000_000_123);
        assert_eq!(rfc3339(t), "2026-11-18T11:06:40.123Z");
        assert_eq!(rfc5322(t), "Wed, 18 Nov 2026 11:06:40 +0000");
    }

    #[test]
    fn serialises_with_contract_field_names() {
        let ev = Event {
            kind: Kind::Bounce,
            time: "t".into(),
            id: "i".into(),
            sender: "s@x".into(),
            recipient: "r@y".into(),
            size: 5,
            queue: "y".into(),
            site: "mx.y".into(),
            source: "ip1".into(),
            attempt: 2,
            response: Some(Response {
                code: 550,
                enhanced: "5.1.1".into(),
                text: "no such user".into(),
            }),
            peer: "192.0.2.1:25".into(),
            queue_time_ms: 7,
            action: None,
        };
        let v: serde_json::Value = serde_json::to_value(&ev).unwrap();
        assert_eq!(v["type"], "Bounce");
        assert_eq!(v["response"]["enhanced"], "5.1.1");
        assert_eq!(v["queue_time_ms"], 7);
    }
}
