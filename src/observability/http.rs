//! The HTTP endpoints: `/healthz`, `/readyz`, `/metrics`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;

use super::Readiness;

#[derive(Clone)]
struct AppState {
    readiness: Arc<Readiness>,
    metrics: Option<PrometheusHandle>,
    /// CPU, memory and open files of this process, read at each scrape.
    process: Arc<metrics_process::Collector>,
}

/// The running listener.
pub struct HttpServer {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl HttpServer {
    /// Stop accepting, finish the requests being answered, and return.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

/// Bind the listener now (so a taken port fails start-up) and serve until
/// stopped.
pub async fn serve(
    address: SocketAddr,
    readiness: Arc<Readiness>,
    metrics: Option<PrometheusHandle>,
) -> anyhow::Result<HttpServer> {
    let stop = CancellationToken::new();
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|error| anyhow::anyhow!("HTTP_PORT: cannot listen on {address}: {error}"))?;
    tracing::info!(http.address = %address, "serving /healthz, /readyz and /metrics");
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(render_metrics))
        .with_state(AppState {
            readiness,
            metrics,
            process: Arc::new(process_collector()),
        });
    let stopped = stop.clone();
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stopped.cancelled().await })
            .await;
        if let Err(error) = served {
            tracing::error!(error = %error, "the HTTP listener failed");
        }
    });
    Ok(HttpServer { stop, task })
}

/// Alive: answering at all means the process and its runtime run.
async fn healthz() -> impl IntoResponse {
    Json(serde_json::json!({ "status": "alive" }))
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    match state.readiness.check().await {
        Ok(()) => (
            StatusCode::OK,
            Json(serde_json::json!({ "status": "ready" })),
        ),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "status": "not_ready", "reason": reason })),
        ),
    }
}

fn process_collector() -> metrics_process::Collector {
    let collector = metrics_process::Collector::default();
    collector.describe();
    collector
}

/// Gauges that are cheap to read and only matter when scraped are read here:
/// the process's resources and the database pool.
async fn render_metrics(State(state): State<AppState>) -> impl IntoResponse {
    let body = match state.metrics.as_ref() {
        Some(handle) => {
            state.process.collect();
            super::metrics::database_pool(state.readiness.pool_status());
            handle.render()
        }
        None => String::new(),
    };
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}
