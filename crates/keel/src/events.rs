//! The event stream: one typed record per state change of a message.
//!
//! Every consumer (the JSON-lines log; metrics and the dashboard through an [`Observer`];
//! campaign statistics, webhooks and the suppression list later) reads these same records.
//! Producers call [`EventSink::emit`], which never blocks: records go over an unbounded
//! channel to the single writer task, which batches them into the log file and flushes
//! whenever the channel runs dry (so a reader sees an event within milliseconds, and a burst
//! costs one write per batch, not per event).
//!
//! The log is rotated by size and time (`[log] rotate_size`, `rotate_interval`) between two
//! lines, compressed with zstd on a background thread and deleted by `retention` /
//! `max_files`; `keel logs` reads it back. The parts: [`segment`] (file names, listing,
//! opening), [`rotate`] (when), `writer` (the thread that owns the live file), `archiver`
//! (compression and retention), `compress` (zstd), [`tail`] (reading and following across
//! rotations).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use keel_config::LogConfig;
use serde::Serialize;
use tokio::sync::mpsc;

mod archiver;
mod compress;
mod rotate;
pub mod segment;
pub mod tail;
mod writer;

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

/// A consumer that sees every event synchronously, in the producer's thread, before it goes to
/// the log writer. It must be cheap and must not block (atomic counters, a short lock): it runs
/// on the queue manager's and the SMTP sessions' paths. Metrics and the dashboard's recent
/// history are fed this way, so they need no second channel and no second copy of the event.
pub trait Observer: Send + Sync {
    fn observe(&self, event: &Event);
}

/// Cheap, cloneable handle that producers emit through.
#[derive(Clone)]
pub struct EventSink {
    tx: mpsc::UnboundedSender<Event>,
    observer: Option<Arc<dyn Observer>>,
}

impl EventSink {
    pub fn emit(&self, event: Event) {
        if let Some(o) = &self.observer {
            o.observe(&event);
        }
        // The writer outlives every producer; a send error can only happen during shutdown.
        let _ = self.tx.send(event);
    }

    /// A sink whose records are handed to `rx` (tests, and consumers other than the log).
    pub fn channel() -> (EventSink, mpsc::UnboundedReceiver<Event>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (EventSink { tx, observer: None }, rx)
    }

    /// The same sink, also showing every event to `observer` (fan-out next to the log).
    pub fn with_observer(mut self, observer: Arc<dyn Observer>) -> EventSink {
        self.observer = Some(observer);
        self
    }
}

/// The live file events are written to inside the log directory.
pub fn log_path(dir: &Path) -> PathBuf {
    dir.join(segment::LIVE)
}

/// Opens (appending) the event log and spawns its writer and archiver threads, so file
/// writes and compression never stall the async runtime. The returned join handle ends after
/// every sink is dropped, the remaining records are flushed and fsynced, and the archiver has
/// compressed what was rotated.
///
/// `observer`, if any, sees every event as it is emitted (metrics, the dashboard).
pub fn start_log(
    cfg: &LogConfig,
    observer: Option<Arc<dyn Observer>>,
) -> anyhow::Result<(EventSink, std::thread::JoinHandle<()>)> {
    use anyhow::Context;
    let dir = &cfg.dir;
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating log directory {}", dir.display()))?;
    let retention = archiver::Retention {
        max_age: cfg.retention,
        max_files: cfg.max_files,
    };
    let (archive, archiver) = archiver::Archiver::new(dir, retention)
        .spawn()
        .context("starting the event log archiver")?;
    let writer = writer::Writer::open(dir, rotate::Policy::from_config(cfg), archive)
        .with_context(|| format!("opening event log {}", log_path(dir).display()))?;
    let (mut sink, rx) = EventSink::channel();
    if let Some(o) = observer {
        sink = sink.with_observer(o);
    }
    let handle = std::thread::Builder::new()
        .name("keel-events".into())
        .spawn(move || {
            writer.run(rx);
            // The writer dropped its sender: the archiver finishes its queue and ends.
            let _ = archiver.join();
        })
        .context("starting the event log writer")?;
    Ok((sink, handle))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn formats_times() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_795_000_000_123);
        assert_eq!(rfc3339(t), "2026-11-18T11:06:40.123Z");
        assert_eq!(rfc5322(t), "Wed, 18 Nov 2026 11:06:40 +0000");
    }

    /// A complete event for tests; override fields with `Event { id, ..sample() }`, so a new
    /// field is added in one place.
    pub(crate) fn sample() -> Event {
        Event {
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
        }
    }

    #[test]
    fn serialises_with_contract_field_names() {
        let ev = sample();
        let v: serde_json::Value = serde_json::to_value(&ev).unwrap();
        assert_eq!(v["type"], "Bounce");
        assert_eq!(v["response"]["enhanced"], "5.1.1");
        assert_eq!(v["queue_time_ms"], 7);
    }
}
