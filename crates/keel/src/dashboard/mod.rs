//! The operator dashboard at `/`: one page (`index.html`, `app.js`, embedded in the binary with
//! `include_str!`, so there is nothing to deploy next to it and no CDN to reach) that polls
//! the admin API every 2 s.
//!
//! The page itself holds no data and is served without a token; everything it shows comes
//! from token-protected endpoints (`/api/v1/queues`, `/api/v1/stats/*`), so it is "behind the
//! same token as the admin API". It asks for the token once and keeps it in sessionStorage.
//!
//! The history the page charts is kept here, server-side, because a freshly opened page must
//! show the last hour: [`Recent`] is fed by the event stream (through `metrics::Metrics`,
//! the one event observer) and holds per-10 s counts for the last hour and the last 50
//! `ShapingAction` events. Both are fixed-size, so memory does not grow with traffic.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Mutex, PoisonError};
use std::time::SystemTime;

use axum::Router;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use serde_json::json;

use crate::events::{self, Event, Kind, Response as Reply};
use crate::http::{ApiError, AppState, authorize};

/// Width of one throughput bucket.
pub const BUCKET_S: u64 = 10;
/// Buckets kept: one hour.
pub const BUCKETS: usize = 360;
/// Shaping actions kept.
pub const ACTIONS: usize = 50;

const INDEX_HTML: &str = include_str!("index.html");
const APP_JS: &str = include_str!("app.js");

/// Counts of one 10-second bucket (recipients, not messages, except `received`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Bucket {
    /// Start of the bucket, seconds since the Unix epoch.
    pub t: u64,
    /// Reception events (one per accepted recipient).
    pub received: u64,
    pub delivered: u64,
    pub deferred: u64,
    /// Bounced, expired or administratively bounced.
    pub failed: u64,
}

/// A shaping action as the dashboard lists it.
#[derive(Debug, Clone, Serialize)]
pub struct Action {
    pub time: String,
    pub queue: String,
    pub site: String,
    pub source: String,
    pub action: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response: Option<Reply>,
}

#[derive(Default)]
struct Inner {
    /// Oldest first; consecutive buckets may be missing (quiet periods).
    buckets: VecDeque<Bucket>,
    actions: VecDeque<Action>,
}

/// Recent history for the dashboard. `observe` takes one short lock per event.
#[derive(Default)]
pub struct Recent {
    inner: Mutex<Inner>,
}

impl Recent {
    pub fn observe(&self, e: &Event) {
        let now = events::epoch_ms(SystemTime::now()) / 1000;
        self.observe_at(e, now);
    }

    fn observe_at(&self, e: &Event, now_s: u64) {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if e.kind == Kind::ShapingAction {
            if inner.actions.len() >= ACTIONS {
                inner.actions.pop_front();
            }
            inner.actions.push_back(Action {
                time: e.time.clone(),
                queue: e.queue.clone(),
                site: e.site.clone(),
                source: e.source.clone(),
                action: e.action.clone().unwrap_or_default(),
                response: e.response.clone(),
            });
            return;
        }
        let t = now_s - now_s % BUCKET_S;
        if inner.buckets.back().is_none_or(|b| b.t < t) {
            inner.buckets.push_back(Bucket {
                t,
                ..Bucket::default()
            });
        }
        let horizon = t.saturating_sub(BUCKET_S * (BUCKETS as u64 - 1));
        while inner.buckets.front().is_some_and(|b| b.t < horizon) {
            inner.buckets.pop_front();
        }
        // The clock may step back; such an event counts in the newest bucket.
        let Some(b) = inner.buckets.back_mut() else {
            return;
        };
        match e.kind {
            Kind::Reception => b.received += 1,
            Kind::Delivery => b.delivered += 1,
            Kind::TransientFailure => b.deferred += 1,
            Kind::Bounce | Kind::Expiration | Kind::AdminBounce => b.failed += 1,
            Kind::Delayed | Kind::ShapingAction => {}
        }
    }

    /// The last hour as exactly [`BUCKETS`] buckets ending with the current one, oldest first
    /// (quiet buckets filled in with zeros, so the page can draw them as they come).
    pub fn throughput(&self) -> Vec<Bucket> {
        let now = events::epoch_ms(SystemTime::now()) / 1000;
        self.throughput_at(now)
    }

    fn throughput_at(&self, now_s: u64) -> Vec<Bucket> {
        let end = now_s - now_s % BUCKET_S;
        let start = end.saturating_sub(BUCKET_S * (BUCKETS as u64 - 1));
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let mut have = inner.buckets.iter().filter(|b| b.t >= start).peekable();
        let mut out = Vec::with_capacity(BUCKETS);
        let mut t = start;
        while t <= end {
            match have.peek() {
                Some(b) if b.t == t => {
                    out.push(**b);
                    have.next();
                }
                _ => out.push(Bucket {
                    t,
                    ..Bucket::default()
                }),
            }
            t += BUCKET_S;
        }
        out
    }

    /// The last [`ACTIONS`] shaping actions, newest first.
    pub fn actions(&self) -> Vec<Action> {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.actions.iter().rev().cloned().collect()
    }
}

/// The dashboard's routes: the page, its script, and the history endpoints.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/app.js", get(app_js))
        .route("/api/v1/stats/throughput", get(throughput))
        .route("/api/v1/stats/actions", get(actions))
        .route("/api/v1/stats/spool", get(spool))
}

async fn index() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:",
            ),
        ],
        INDEX_HTML,
    )
        .into_response()
}

async fn app_js() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        APP_JS,
    )
        .into_response()
}

/// `GET /api/v1/stats/throughput`: per-10 s counts for the last hour, oldest first.
async fn throughput(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, peer)?;
    let buckets = state.metrics.recent.throughput();
    Ok(axum::Json(json!({ "bucket_s": BUCKET_S, "buckets": buckets })).into_response())
}

/// `GET /api/v1/stats/actions`: the last 50 ShapingAction events, newest first.
async fn actions(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, peer)?;
    Ok(axum::Json(json!({ "actions": state.metrics.recent.actions() })).into_response())
}

/// `GET /api/v1/stats/spool`: the spool's statistics and free disk space.
async fn spool(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, peer)?;
    let stats = state.metrics.spool_stats();
    let body = json!({
        "open": stats.is_some(),
        "live_messages": stats.as_ref().map(|s| s.live_messages),
        "live_bytes": stats.as_ref().map(|s| s.live_bytes),
        "disk_bytes": stats.as_ref().map(|s| s.disk_bytes),
        "segments": stats.as_ref().map(|s| s.segments),
        "syncs": stats.as_ref().map(|s| s.syncs),
        "failed_batches": stats.as_ref().map(|s| s.failed_batches),
        "free_bytes": state.metrics.spool_free_bytes(),
        "ready": state.readiness.get().as_str(),
    });
    Ok(axum::Json(body).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::tests::sample;

    fn ev(kind: Kind) -> Event {
        Event {
            kind,
            action: Some("halve".into()),
            ..sample()
        }
    }

    #[test]
    fn buckets_cover_the_last_hour_and_fill_gaps() {
        let r = Recent::default();
        let t0 = 1_800_000_000;
        r.observe_at(&ev(Kind::Reception), t0);
        r.observe_at(&ev(Kind::Delivery), t0 + 3);
        r.observe_at(&ev(Kind::Bounce), t0 + 25);
        let out = r.throughput_at(t0 + 29);
        assert_eq!(out.len(), BUCKETS);
        let last = out[BUCKETS - 1];
        assert_eq!((last.t, last.failed), (t0 + 20, 1));
        assert_eq!(out[BUCKETS - 2].t, t0 + 10);
        assert_eq!(out[BUCKETS - 2].received, 0);
        assert_eq!(
            (out[BUCKETS - 3].received, out[BUCKETS - 3].delivered),
            (1, 1)
        );
        // An hour later the old buckets are gone, from the answer and from memory.
        r.observe_at(&ev(Kind::Delivery), t0 + 3600);
        let out = r.throughput_at(t0 + 3600);
        assert_eq!(out.iter().map(|b| b.received).sum::<u64>(), 0);
        assert_eq!(out.iter().map(|b| b.delivered).sum::<u64>(), 1);
        assert!(r.inner.lock().unwrap().buckets.len() <= BUCKETS);
    }

    #[test]
    fn keeps_the_last_actions_newest_first() {
        let r = Recent::default();
        for i in 0..ACTIONS + 5 {
            r.observe_at(
                &Event {
                    action: Some(format!("a{i}")),
                    ..ev(Kind::ShapingAction)
                },
                1,
            );
        }
        let a = r.actions();
        assert_eq!(a.len(), ACTIONS);
        assert_eq!(a[0].action, format!("a{}", ACTIONS + 4));
    }
}
