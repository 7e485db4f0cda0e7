//! The HTTP listener. Today: `GET /healthz` for load balancers and supervisors.

use axum::Router;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

async fn healthz() -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({ "status": "ok" }))
}

/// The HTTP routes.
pub fn router() -> Router {
    Router::new().route("/healthz", get(healthz))
}

/// Serves HTTP until shutdown.
pub async fn serve(listener: TcpListener, shutdown: CancellationToken) {
    let r = axum::serve(listener, router())
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await;
    if let Err(e) = r {
        tracing::error!(error = %e, "HTTP listener failed");
    }
}
