//! The admin HTTP server: `/livez`, `/readyz`, `/metrics`, `/status` (127.0.0.1:8086).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;

use crate::metrics::{Metrics, Status, StatusDetail};

#[derive(Clone)]
pub struct AdminState {
    pub metrics: Arc<Metrics>,
    pub status: Arc<Status>,
    pub workers: usize,
}

pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/livez", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .with_state(state)
}

/// 200 while the dataplane serves, draining included. Kubernetes already keeps new clients
/// off a terminating pod; a failing readiness probe would also mark its endpoint not
/// serving, and kube-proxy then deletes the conntrack entries of its UDP flows, moving the
/// allocations being drained to another pod that does not know them.
async fn readyz(State(s): State<AdminState>) -> Response {
    if s.status.is_serving() {
        let body = if s.status.draining.load(Relaxed) {
            "draining\n"
        } else {
            "ready\n"
        };
        (StatusCode::OK, body).into_response()
    } else if let Some(e) = s.status.listener_error() {
        (StatusCode::SERVICE_UNAVAILABLE, format!("listener {e}\n")).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "no config applied yet\n").into_response()
    }
}

async fn metrics(State(s): State<AdminState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(&s.status),
    )
        .into_response()
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StatusBody {
    ready: bool,
    draining: bool,
    generation: u64,
    workers: usize,
    allocations: u64,
    #[serde(flatten)]
    detail: StatusDetail,
}

async fn status(State(s): State<AdminState>) -> Response {
    let detail = s
        .status
        .detail
        .lock()
        .map(|d| d.clone())
        .unwrap_or_default();
    axum::Json(StatusBody {
        ready: s.status.is_ready(),
        draining: s.status.draining.load(Relaxed),
        generation: s.status.generation.load(Relaxed),
        workers: s.workers,
        allocations: s.metrics.active_allocations(),
        detail,
    })
    .into_response()
}

/// Serves the admin API until the process exits.
pub async fn serve(addr: SocketAddr, state: AdminState) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    axum::serve(listener, router(state)).await
}
