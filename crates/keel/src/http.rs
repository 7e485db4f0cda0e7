//! The HTTP listener: health for load balancers, and the admin API operators and `keel`'s
//! own subcommands use.
//!
//! | method | path | what |
//! |---|---|---|
//! | GET | `/healthz` | alive (no token) |
//! | GET | `/readyz` | 200 `{"status":"ready"}` when accepting mail; 503 with `recovering` or `draining`, or `backpressure` and its `stage` (no token) |
//! | GET | `/api/v1/queues?limit=N` | totals, the N busiest scheduled and ready queues (default 1000, 0: all), suspensions |
//! | POST | `/api/v1/suspend` | `{domain\|site\|source\|campaign\|tenant, duration?, reason?}` |
//! | POST | `/api/v1/resume` | `{domain\|site\|source\|campaign\|tenant}`; a reply rule's suspension names `site` and `source` together |
//! | POST | `/api/v1/bounce` | `{domain\|site\|campaign\|tenant, dry_run?, reason?}` |
//! | GET | `/metrics` | Prometheus text format (no token; `crate::metrics`) |
//! | GET | `/`, `/app.js` | the dashboard page (no token; its data comes from the API: `crate::dashboard`) |
//! | GET | `/api/v1/stats/throughput`, `/api/v1/stats/actions`, `/api/v1/stats/spool` | the dashboard's history and spool state |
//!
//! The admin API wants `Authorization: Bearer <token>` with one of `[http] api_tokens`
//! (compared in constant time). With no tokens configured it serves loopback clients only, so
//! a fresh install is usable from its own host and closed to everyone else. Errors are JSON:
//! `{"error": "...", "field": "..."}`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::queue::admin::Selector;
use crate::queue::{Command, QueueHandle};
use crate::readiness::{Phase, Readiness};

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub queue: QueueHandle,
    /// Swapped on reload.
    pub tokens: Arc<arc_swap::ArcSwap<Vec<String>>>,
    /// Asks the daemon to reload its configuration; the answer says what changed or why not.
    pub reload: tokio::sync::mpsc::Sender<tokio::sync::oneshot::Sender<Result<String, String>>>,
    pub readiness: Arc<Readiness>,
    /// Metrics and the dashboard's recent history (fed by the event stream).
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Queueing for `POST /api/v1/messages`, set once the spool is open.
    pub submit: crate::api_messages::SubmitSlot,
    /// `smtp.hostname`, for trace headers and Message-IDs.
    pub hostname: Arc<str>,
}

async fn healthz() -> axum::Json<serde_json::Value> {
    axum::Json(json!({ "status": "ok" }))
}

/// For load balancers: 200 only while mail is accepted (see `crate::readiness`).
async fn readyz(State(state): State<AppState>) -> Response {
    let phase = state.readiness.get();
    let stage = state.readiness.stage();
    if phase == Phase::Ready && stage != crate::ingress::backpressure::Stage::Normal {
        // Shedding ingress load (disk, memory or queue past a threshold): send mail elsewhere.
        let body = json!({ "status": "backpressure", "stage": stage.as_str() });
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(axum::http::header::RETRY_AFTER, "30")],
            axum::Json(body),
        )
            .into_response();
    }
    let status = match phase {
        Phase::Ready => StatusCode::OK,
        Phase::Recovering | Phase::Draining => StatusCode::SERVICE_UNAVAILABLE,
    };
    (status, axum::Json(json!({ "status": phase.as_str() }))).into_response()
}

/// The HTTP routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/api/v1/queues", get(queues))
        .route("/api/v1/suspend", post(suspend))
        .route("/api/v1/resume", post(resume))
        .route("/api/v1/bounce", post(bounce))
        .route("/api/v1/reload", post(reload))
        .route(
            "/api/v1/messages",
            post(crate::api_messages::post_message).layer(axum::extract::DefaultBodyLimit::max(
                crate::api_messages::MAX_BODY,
            )),
        )
        .route("/metrics", get(crate::metrics::handler))
        .merge(crate::dashboard::routes())
        .with_state(state)
}

/// Serves HTTP until shutdown.
pub async fn serve(listener: TcpListener, state: AppState, shutdown: CancellationToken) {
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    let r = axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await;
    if let Err(e) = r {
        tracing::error!(error = %e, "HTTP listener failed");
    }
}

/// An API error: status plus `{"error", "field"}`.
pub(crate) struct ApiError {
    status: StatusCode,
    error: String,
    field: Option<String>,
    /// Every problem, when there are several (`errors` in the JSON).
    errors: Vec<String>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, error: impl Into<String>, field: Option<&str>) -> Self {
        ApiError {
            status,
            error: error.into(),
            field: field.map(str::to_string),
            errors: Vec::new(),
        }
    }

    pub(crate) fn bad(error: impl Into<String>, field: &str) -> Self {
        Self::new(StatusCode::BAD_REQUEST, error, Some(field))
    }

    /// Names the exact field (e.g. `recipients[0].email`) and lists every problem.
    pub(crate) fn with_details(mut self, field: Option<String>, errors: Vec<String>) -> Self {
        if field.is_some() {
            self.field = field;
        }
        self.errors = errors;
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": self.error });
        if let Some(f) = self.field {
            body["field"] = json!(f);
        }
        if !self.errors.is_empty() {
            body["errors"] = json!(self.errors);
        }
        let mut resp = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer realm=\"keel\""),
            );
        }
        resp
    }
}

/// Equal-length-independent, data-independent comparison: the time taken does not reveal how
/// much of a guessed token was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= usize::from(x ^ y);
    }
    diff == 0
}

pub(crate) fn authorize(
    state: &AppState,
    headers: &HeaderMap,
    peer: SocketAddr,
) -> Result<(), ApiError> {
    let tokens = state.tokens.load();
    if tokens.is_empty() {
        if peer.ip().is_loopback() {
            return Ok(());
        }
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "the admin API has no tokens configured and only serves loopback clients",
            Some("authorization"),
        ));
    }
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(given) = given else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing bearer token (Authorization: Bearer <token>)",
            Some("authorization"),
        ));
    };
    // Check every token, so timing does not tell which one (if any) was close.
    let ok = tokens.iter().fold(false, |ok, t| {
        ok | constant_time_eq(t.as_bytes(), given.as_bytes())
    });
    if ok {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid bearer token",
            Some("authorization"),
        ))
    }
}

fn unavailable() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "the queue is shutting down",
        None,
    )
}

/// `?limit=N`: how many of the busiest queues to list (default 1000; 0: all).
#[derive(Debug, Default, Deserialize)]
struct QueuesQuery {
    limit: Option<usize>,
}

async fn queues(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    query: Result<axum::extract::Query<QueuesQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, peer)?;
    let limit = match query {
        Ok(q) => q.0.limit.unwrap_or(1000),
        Err(e) => return Err(ApiError::bad(e.body_text(), "limit")),
    };
    let snapshot = state
        .queue
        .ask(|reply| Command::Snapshot { limit, reply })
        .await
        .ok_or_else(unavailable)?;
    Ok(axum::Json(snapshot).into_response())
}

/// The body of suspend, resume and bounce.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct OpRequest {
    domain: Option<String>,
    site: Option<String>,
    source: Option<String>,
    campaign: Option<String>,
    tenant: Option<String>,
    duration: Option<String>,
    reason: Option<String>,
    dry_run: Option<bool>,
}

impl OpRequest {
    fn parse(body: &Bytes) -> Result<OpRequest, ApiError> {
        serde_json::from_slice(body).map_err(|e| {
            let msg = e.to_string();
            // serde names the offending field between backticks ("unknown field `x`").
            let field = match msg.split('`').nth(1) {
                Some("domain") => "domain",
                Some("duration") => "duration",
                Some("dry_run") => "dry_run",
                Some("reason") => "reason",
                _ => "body",
            };
            ApiError::bad(format!("invalid JSON body: {msg}"), field)
        })
    }

    fn selector(&self) -> Result<Selector, ApiError> {
        let s = self.any_selector()?;
        if s.count() != 1 {
            return Err(ApiError::bad(
                "give exactly one of domain, site, source, campaign, tenant",
                "selector",
            ));
        }
        Ok(s)
    }

    /// At least one field: resume matches a suspension by its whole selector, and a reply
    /// rule suspends a (site, source) pair, which the dashboard's Resume button sends back.
    fn any_selector(&self) -> Result<Selector, ApiError> {
        let s = Selector {
            domain: self.domain.clone(),
            site: self.site.clone(),
            source: self.source.clone(),
            campaign: self.campaign.clone(),
            tenant: self.tenant.clone(),
        }
        .normalized();
        if s.count() == 0 {
            return Err(ApiError::bad(
                "give one of domain, site, source, campaign, tenant",
                "selector",
            ));
        }
        Ok(s)
    }
}

async fn suspend(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, peer)?;
    let req = OpRequest::parse(&body)?;
    let selector = req.selector()?;
    let duration = match &req.duration {
        None => None,
        Some(d) => Some(
            keel_config::units::parse_duration(d).map_err(|e| ApiError::bad(e.0, "duration"))?,
        ),
    };
    let reason = req
        .reason
        .unwrap_or_else(|| "suspended by the operator".into());
    let s = state
        .queue
        .ask(|reply| Command::Suspend {
            selector,
            duration,
            reason,
            reply,
        })
        .await
        .ok_or_else(unavailable)?;
    Ok((StatusCode::CREATED, axum::Json(s)).into_response())
}

async fn resume(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, peer)?;
    let req = OpRequest::parse(&body)?;
    let selector = req.any_selector()?;
    let resumed = state
        .queue
        .ask(|reply| Command::Resume { selector, reply })
        .await
        .ok_or_else(unavailable)?;
    if resumed == 0 {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no suspension matches",
            Some("selector"),
        ));
    }
    Ok(axum::Json(json!({ "resumed": resumed })).into_response())
}

async fn bounce(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, peer)?;
    let req = OpRequest::parse(&body)?;
    let selector = req.selector()?;
    if selector.source.is_some() {
        return Err(ApiError::bad(
            "bounce by egress source is not supported (a message is not tied to one source); \
             use domain, site, campaign or tenant",
            "source",
        ));
    }
    let dry_run = req.dry_run.unwrap_or(false);
    let reason = req.reason.unwrap_or_else(|| "no reason given".into());
    let result = state
        .queue
        .ask(|reply| Command::Bounce {
            selector,
            dry_run,
            reason,
            reply,
        })
        .await
        .ok_or_else(unavailable)?;
    Ok(axum::Json(result).into_response())
}

/// `POST /api/v1/reload`: re-read and apply the configuration file (like SIGHUP).
async fn reload(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, peer)?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    state.reload.send(tx).await.map_err(|_| unavailable())?;
    match rx.await.map_err(|_| unavailable())? {
        Ok(summary) => {
            Ok(axum::Json(json!({ "reloaded": true, "summary": summary })).into_response())
        }
        Err(errors) => Err(ApiError::bad(
            format!("configuration not reloaded; the running one stays in force:\n{errors}"),
            "config",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_comparison() {
        assert!(constant_time_eq(b"abcdef", b"abcdef"));
        assert!(!constant_time_eq(b"abcdef", b"abcdeg"));
        assert!(!constant_time_eq(b"abc", b"abcdef"));
        assert!(!constant_time_eq(b"", b"x"));
    }
}
