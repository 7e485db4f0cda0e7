//! `GET /metrics`: Prometheus text format (prometheus-client, no global registry).
//!
//! Two kinds of series:
//!
//! - **Counters and the delivery latency histogram** are fed from the event stream: [`Metrics`]
//!   is an [`events::Observer`], updated synchronously in `EventSink::emit` with atomic
//!   increments, so they count exactly what the event log records.
//! - **Gauges** are computed at scrape time: the queue summary (one `Command::Snapshot` to the
//!   queue manager, the [`TOP_N`] busiest scheduled and ready queues plus totals), the spool's
//!   own statistics, free disk space of the spool directory (statvfs through rustix's safe
//!   API) and the SMTP listener's connection slots in use. Per-queue families are cleared before
//!   each scrape, so a queue that went idle drops out and label cardinality stays bounded by
//!   `TOP_N` (event labels are bounded by the event kinds times the configured egress sources).
//!
//! Scrapes are serialised by a lock held only while the gauges are set and the text encoded
//! (never across the queue manager round trip).

use std::collections::{HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use keel_spool::{Spool, SpoolStats};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::sync::Semaphore;

use crate::dashboard::Recent;
use crate::events::{self, Event, Kind};
use crate::http::AppState;
use crate::queue::Command;
use crate::queue::admin::Snapshot;

/// How many of the busiest scheduled and ready queues get series of their own.
pub const TOP_N: usize = 20;

/// How many recent Reception message ids are remembered to count messages, not recipients.
/// Ingress emits one Reception per recipient, back to back from the same session; other
/// sessions' events can only interleave a bounded amount, far below this window.
const RECEIVED_ID_WINDOW: usize = 4096;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    r#type: &'static str,
    source: String,
    /// The destination's provider class (bounded: a handful of values).
    site_class: &'static str,
}

/// Which large mailbox provider a site belongs to, from its MX host names, so traffic to
/// the providers that matter most can be told apart without one series per domain.
pub fn site_class(site: &str) -> &'static str {
    let s = site.to_ascii_lowercase();
    if s.is_empty() {
        "none"
    } else if s.contains("google.com") || s.contains("googlemail.com") {
        "google"
    } else if s.contains("yahoodns.net") || s.contains("yahoo.com") || s.contains("aol.com") {
        "yahoo"
    } else if s.contains("outlook.com") || s.contains("hotmail.com") || s.contains("msn.com") {
        "microsoft"
    } else if s.contains("icloud.com") || s.contains("apple.com") || s.contains("me.com") {
        "apple"
    } else if s.starts_with("route:") {
        "smarthost"
    } else {
        "other"
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabels {
    queue: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReadyLabels {
    source: String,
    site: String,
}

/// Recently seen message ids (a bounded FIFO set).
#[derive(Default)]
struct RecentIds {
    set: HashSet<String>,
    order: VecDeque<String>,
}

impl RecentIds {
    /// True the first time `id` is seen within the window.
    fn first_sight(&mut self, id: &str) -> bool {
        if self.set.contains(id) {
            return false;
        }
        if self.order.len() >= RECEIVED_ID_WINDOW
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        self.set.insert(id.to_owned());
        self.order.push_back(id.to_owned());
        true
    }
}

/// Where scrape-time values come from; set once the parts exist (the HTTP listener starts
/// before the spool is recovered and before the SMTP listeners bind).
struct Sources {
    spool: OnceLock<Spool>,
    spool_dir: PathBuf,
    /// The SMTP listener's global connection slots, and how many there are.
    inbound: OnceLock<(Arc<Semaphore>, usize)>,
}

/// Every metric Keel exports, and the dashboard's recent history (fed by the same events).
pub struct Metrics {
    registry: Registry,
    events: Family<EventLabels, Counter>,
    received: Counter,
    deliveries: Family<ResultLabels, Counter>,
    latency: Histogram,
    received_ids: Mutex<RecentIds>,

    queued_messages: Gauge,
    queued_recipients: Gauge,
    queued_bytes: Gauge,
    scheduled_queues: Gauge,
    ready_queues: Gauge,
    connections_out: Gauge,
    suspensions: Gauge,
    queue_messages: Family<QueueLabels, Gauge>,
    queue_recipients: Family<QueueLabels, Gauge>,
    queue_oldest: Family<QueueLabels, Gauge>,
    ready_queued: Family<ReadyLabels, Gauge>,
    ready_connections: Family<ReadyLabels, Gauge>,
    ready_effective_max: Family<ReadyLabels, Gauge>,
    spool_live_messages: Gauge,
    spool_live_bytes: Gauge,
    spool_disk_bytes: Gauge,
    spool_segments: Gauge,
    spool_syncs: Counter,
    spool_synced_appends: Counter,
    spool_free_bytes: Gauge,
    smtp_connections: Gauge,
    smtp_max_connections: Gauge,

    scrape: Mutex<()>,
    sources: Sources,
    /// Throughput history and recent shaping actions for the dashboard.
    pub recent: Recent,
}

fn gauge(registry: &mut Registry, name: &str, help: &str) -> Gauge {
    let g = Gauge::default();
    registry.register(name, help, g.clone());
    g
}

fn family<L>(registry: &mut Registry, name: &str, help: &str) -> Family<L, Gauge>
where
    L: EncodeLabelSet + Clone + std::hash::Hash + Eq + std::fmt::Debug + Send + Sync + 'static,
{
    let f = Family::<L, Gauge>::default();
    registry.register(name, help, f.clone());
    f
}

fn to_i64(v: impl TryInto<i64>) -> i64 {
    v.try_into().unwrap_or(i64::MAX)
}

impl Metrics {
    /// Registers every series; `spool_dir` is where free disk space is measured.
    pub fn new(spool_dir: PathBuf) -> Metrics {
        let mut r = Registry::default();
        let events = Family::<EventLabels, Counter>::default();
        r.register(
            "keel_events",
            "Events emitted, by type, egress source (empty for Reception) and site class (google, yahoo, microsoft, apple, smarthost, other)",
            events.clone(),
        );
        let received = Counter::default();
        r.register(
            "keel_messages_received",
            "Messages accepted over SMTP (after the spool sync)",
            received.clone(),
        );
        let deliveries = Family::<ResultLabels, Counter>::default();
        r.register(
            "keel_deliveries",
            "Recipient delivery results: delivered, deferred, bounced, expired",
            deliveries.clone(),
        );
        // 10 ms to ~11 h: local sinks answer in milliseconds, retried mail takes hours.
        let latency = Histogram::new(exponential_buckets(0.01, 4.0, 12));
        r.register(
            "keel_delivery_latency_seconds",
            "Time from reception to delivery, per delivered recipient",
            latency.clone(),
        );
        let m = Metrics {
            queued_messages: gauge(&mut r, "keel_queued_messages", "Messages in the queue"),
            queued_recipients: gauge(
                &mut r,
                "keel_queued_recipients",
                "Pending recipients in the queue",
            ),
            queued_bytes: gauge(&mut r, "keel_queued_bytes", "Size of queued messages"),
            scheduled_queues: gauge(
                &mut r,
                "keel_scheduled_queues",
                "Scheduled queues (destination domains) with mail",
            ),
            ready_queues: gauge(
                &mut r,
                "keel_ready_queues",
                "Ready queues (egress source, site) alive",
            ),
            connections_out: gauge(
                &mut r,
                "keel_smtp_outbound_connections",
                "Outbound SMTP connections open, all ready queues",
            ),
            suspensions: gauge(&mut r, "keel_suspensions", "Active suspensions"),
            queue_messages: family(
                &mut r,
                "keel_queue_messages",
                "Messages per scheduled queue (the busiest 20 only)",
            ),
            queue_recipients: family(
                &mut r,
                "keel_queue_recipients",
                "Pending recipients per scheduled queue (the busiest 20 only)",
            ),
            queue_oldest: family(
                &mut r,
                "keel_queue_oldest_age_seconds",
                "Age of the oldest message per scheduled queue (the busiest 20 only)",
            ),
            ready_queued: family(
                &mut r,
                "keel_ready_queue_jobs",
                "Jobs waiting per ready queue (the busiest 20 only)",
            ),
            ready_connections: family(
                &mut r,
                "keel_ready_queue_connections",
                "Outbound connections per ready queue (the busiest 20 only)",
            ),
            ready_effective_max: family(
                &mut r,
                "keel_ready_queue_effective_max_connections",
                "Connections adaptive shaping allows per ready queue (the busiest 20 only)",
            ),
            spool_live_messages: gauge(&mut r, "keel_spool_live_messages", "Messages spooled"),
            spool_live_bytes: gauge(
                &mut r,
                "keel_spool_live_bytes",
                "On-disk size of live spool records",
            ),
            spool_disk_bytes: gauge(
                &mut r,
                "keel_spool_disk_bytes",
                "Total size of spool segment files",
            ),
            spool_segments: gauge(&mut r, "keel_spool_segments", "Spool segment files"),
            spool_syncs: {
                let c = Counter::default();
                r.register(
                    "keel_spool_syncs",
                    "fdatasync calls by the spool writer (one per group-committed batch)",
                    c.clone(),
                );
                c
            },
            spool_synced_appends: {
                let c = Counter::default();
                r.register(
                    "keel_spool_group_commit_appends",
                    "Messages made durable by group commits (divided by keel_spool_syncs_total: \
                     the mean batch size)",
                    c.clone(),
                );
                c
            },
            spool_free_bytes: gauge(
                &mut r,
                "keel_spool_free_bytes",
                "Free disk space for unprivileged use in the spool directory's file system",
            ),
            smtp_connections: gauge(
                &mut r,
                "keel_smtp_connections",
                "Inbound SMTP connections open",
            ),
            smtp_max_connections: gauge(
                &mut r,
                "keel_smtp_max_connections",
                "Inbound SMTP connection limit ([smtp] max_connections)",
            ),
            registry: Registry::default(),
            events,
            received,
            deliveries,
            latency,
            received_ids: Mutex::new(RecentIds::default()),
            scrape: Mutex::new(()),
            sources: Sources {
                spool: OnceLock::new(),
                spool_dir,
                inbound: OnceLock::new(),
            },
            recent: Recent::default(),
        };
        Metrics { registry: r, ..m }
    }

    /// The spool, once it is open and recovered.
    pub fn set_spool(&self, spool: Spool) {
        let _ = self.sources.spool.set(spool);
    }

    /// The SMTP listener's connection slots (`max` permits in all).
    pub fn set_inbound(&self, slots: Arc<Semaphore>, max: usize) {
        let _ = self.sources.inbound.set((slots, max));
    }

    /// The spool's statistics, if it is open yet.
    pub fn spool_stats(&self) -> Option<SpoolStats> {
        self.sources.spool.get().map(Spool::stats)
    }

    /// Free bytes (for unprivileged users) on the spool's file system.
    pub fn spool_free_bytes(&self) -> Option<u64> {
        let st = rustix::fs::statvfs(&self.sources.spool_dir).ok()?;
        Some(st.f_bavail.saturating_mul(st.f_frsize))
    }

    /// Sets the scrape-time gauges and encodes everything.
    fn render(&self, snapshot: Option<&Snapshot>) -> Result<String, std::fmt::Error> {
        let spool = self.spool_stats();
        let free = self.spool_free_bytes();
        let _guard = self.scrape.lock().unwrap_or_else(PoisonError::into_inner);
        self.queue_messages.clear();
        self.queue_recipients.clear();
        self.queue_oldest.clear();
        self.ready_queued.clear();
        self.ready_connections.clear();
        self.ready_effective_max.clear();
        if let Some(s) = snapshot {
            self.queued_messages.set(to_i64(s.messages));
            self.queued_recipients.set(to_i64(s.recipients));
            self.queued_bytes.set(to_i64(s.bytes));
            self.scheduled_queues.set(to_i64(s.scheduled_queues));
            self.ready_queues.set(to_i64(s.ready_queues));
            self.connections_out.set(to_i64(s.connections_out));
            self.suspensions.set(to_i64(s.suspensions.len()));
            for q in s.scheduled.iter().take(TOP_N) {
                let l = QueueLabels {
                    queue: q.domain.clone(),
                };
                self.queue_messages
                    .get_or_create(&l)
                    .set(to_i64(q.messages));
                self.queue_recipients
                    .get_or_create(&l)
                    .set(to_i64(q.recipients));
                self.queue_oldest
                    .get_or_create(&l)
                    .set(to_i64(q.oldest_age_s));
            }
            for q in s.ready.iter().take(TOP_N) {
                let l = ReadyLabels {
                    source: q.source.clone(),
                    site: q.site.clone(),
                };
                self.ready_queued.get_or_create(&l).set(to_i64(q.queued));
                self.ready_connections
                    .get_or_create(&l)
                    .set(to_i64(q.connections));
                self.ready_effective_max
                    .get_or_create(&l)
                    .set(to_i64(q.effective_max_connections));
            }
        }
        if let Some(st) = spool {
            self.spool_live_messages.set(to_i64(st.live_messages));
            self.spool_live_bytes.set(to_i64(st.live_bytes));
            self.spool_disk_bytes.set(to_i64(st.disk_bytes));
            self.spool_segments.set(to_i64(st.segments));
            // The spool counts since open and so does this counter (one spool per process).
            let seen = self.spool_syncs.get();
            self.spool_syncs.inc_by(st.syncs.saturating_sub(seen));
            let seen = self.spool_synced_appends.get();
            self.spool_synced_appends
                .inc_by(st.synced_appends.saturating_sub(seen));
        }
        if let Some(f) = free {
            self.spool_free_bytes.set(to_i64(f));
        }
        if let Some((slots, max)) = self.sources.inbound.get() {
            let in_use = max.saturating_sub(slots.available_permits());
            self.smtp_connections.set(to_i64(in_use));
            self.smtp_max_connections.set(to_i64(*max));
        }
        let mut out = String::with_capacity(8192);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        if let Some(st) = spool {
            // The spool keeps its own fixed buckets (it does not depend on a metrics crate);
            // they are written out as a histogram family before the final `# EOF`.
            let eof = out.rfind("# EOF").unwrap_or(out.len());
            out.insert_str(eof, &sync_histogram(&st));
        }
        Ok(out)
    }
}

/// The spool's fdatasync latencies as an OpenMetrics histogram family.
fn sync_histogram(st: &keel_spool::SpoolStats) -> String {
    use std::fmt::Write;
    let mut t = String::from(
        "# HELP keel_spool_sync_seconds fdatasync latency of the spool writer (one per group commit).\n\
         # TYPE keel_spool_sync_seconds histogram\n",
    );
    let mut cumulative = 0u64;
    for (i, bound) in keel_spool::SYNC_LATENCY_BOUNDS_MICROS.iter().enumerate() {
        cumulative += st.sync_latency_buckets[i];
        let _ = writeln!(
            t,
            "keel_spool_sync_seconds_bucket{{le=\"{}\"}} {cumulative}",
            *bound as f64 / 1e6
        );
    }
    let total: u64 = st.sync_latency_buckets.iter().sum();
    let _ = writeln!(t, "keel_spool_sync_seconds_bucket{{le=\"+Inf\"}} {total}");
    let _ = writeln!(
        t,
        "keel_spool_sync_seconds_sum {}",
        st.sync_micros as f64 / 1e6
    );
    let _ = writeln!(t, "keel_spool_sync_seconds_count {total}");
    t
}

impl events::Observer for Metrics {
    fn observe(&self, e: &Event) {
        let kind = kind_name(e.kind);
        self.events
            .get_or_create(&EventLabels {
                r#type: kind,
                source: e.source.clone(),
                site_class: site_class(&e.site),
            })
            .inc();
        let result = match e.kind {
            Kind::Reception => {
                let first = self
                    .received_ids
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .first_sight(&e.id);
                if first {
                    self.received.inc();
                }
                None
            }
            Kind::Delivery => {
                self.latency.observe(e.queue_time_ms as f64 / 1000.0);
                Some("delivered")
            }
            Kind::TransientFailure => Some("deferred"),
            Kind::Bounce => Some("bounced"),
            Kind::Expiration => Some("expired"),
            Kind::AdminBounce | Kind::Delayed | Kind::ShapingAction => None,
        };
        if let Some(result) = result {
            self.deliveries
                .get_or_create(&ResultLabels { result })
                .inc();
        }
        self.recent.observe(e);
    }
}

/// The event type as it appears in the log's `type` field.
pub fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::Reception => "Reception",
        Kind::Delivery => "Delivery",
        Kind::TransientFailure => "TransientFailure",
        Kind::Bounce => "Bounce",
        Kind::Expiration => "Expiration",
        Kind::AdminBounce => "AdminBounce",
        Kind::Delayed => "Delayed",
        Kind::ShapingAction => "ShapingAction",
    }
}

/// `GET /metrics`, open like `/healthz` (Prometheus scrapers rarely carry tokens; the series
/// show counts and the busiest destination domains, never an address). Queue gauges keep
/// their last values if the queue manager is gone (shutting down).
pub async fn handler(State(state): State<AppState>) -> Response {
    let snapshot = state
        .queue
        .ask(|reply| Command::Snapshot {
            limit: TOP_N,
            reply,
        })
        .await;
    match state.metrics.render(snapshot.as_ref()) {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Observer;
    use crate::events::tests::sample;

    #[test]
    fn counts_events_messages_and_results() {
        let m = Metrics::new(std::env::temp_dir());
        for (id, rcpt) in [("a", "x@y"), ("a", "z@y"), ("b", "x@y")] {
            m.observe(&Event {
                kind: Kind::Reception,
                id: id.into(),
                recipient: rcpt.into(),
                source: String::new(),
                ..sample()
            });
        }
        m.observe(&Event {
            kind: Kind::Delivery,
            queue_time_ms: 1500,
            ..sample()
        });
        m.observe(&sample());
        let text = m.render(None).unwrap();
        assert!(text.contains("keel_messages_received_total 2\n"), "{text}");
        assert!(
            text.contains(
                "keel_events_total{type=\"Reception\",source=\"\",site_class=\"other\"} 3\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("keel_deliveries_total{result=\"delivered\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("keel_deliveries_total{result=\"bounced\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("keel_delivery_latency_seconds_count 1\n"),
            "{text}"
        );
        assert!(text.contains("keel_spool_free_bytes "), "{text}");
    }

    #[test]
    fn recent_ids_window_is_bounded() {
        let mut r = RecentIds::default();
        for i in 0..RECEIVED_ID_WINDOW + 10 {
            assert!(r.first_sight(&i.to_string()));
        }
        assert!(r.set.len() <= RECEIVED_ID_WINDOW);
        assert!(!r.first_sight(&(RECEIVED_ID_WINDOW + 9).to_string()));
        assert!(r.first_sight("0"), "the oldest id left the window");
    }
}

#[cfg(test)]
mod site_class_tests {
    use super::site_class;

    #[test]
    fn classes() {
        assert_eq!(site_class("alt1.gmail-smtp-in.l.google.com"), "google");
        assert_eq!(
            site_class("mta5.am0.yahoodns.net,mta6.am0.yahoodns.net"),
            "yahoo"
        );
        assert_eq!(
            site_class("example-com.mail.protection.outlook.com"),
            "microsoft"
        );
        assert_eq!(site_class("mx01.mail.icloud.com"), "apple");
        assert_eq!(site_class("route:127.0.0.1:2526"), "smarthost");
        assert_eq!(site_class("mx.example.org"), "other");
        assert_eq!(site_class(""), "none");
    }
}
