//! The dataplane's admin server (127.0.0.1:8086): the shared `/livez`, `/readyz` and
//! `/metrics`, and `/status`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use turnpike_contract::admin::{self, ReadyCheck};

use crate::metrics::Metrics;
use crate::status::{OffloadStatus, Status, StatusDetail};

#[derive(Clone)]
pub struct AdminState {
    pub metrics: Arc<Metrics>,
    pub status: Arc<Status>,
    pub workers: usize,
}

pub fn router(state: AdminState) -> Router {
    admin::router(
        ready_check(state.status.clone()),
        Some(state.metrics.clone()),
    )
    .merge(
        Router::new()
            .route("/status", get(status))
            .with_state(state),
    )
}

/// 200 while the dataplane serves, draining included. Kubernetes already keeps new clients
/// off a terminating pod; a failing readiness probe would also mark its endpoint not
/// serving, and kube-proxy then deletes the conntrack entries of its UDP flows, moving the
/// allocations being drained to another pod that does not know them.
fn ready_check(status: Arc<Status>) -> ReadyCheck {
    Arc::new(move || {
        admin::ready_text(if status.is_serving() {
            Ok(if status.draining.load(Relaxed) {
                "draining\n".into()
            } else {
                "ready\n".into()
            })
        } else if let Some(e) = status.listener_error() {
            Err(format!("listener {e}\n"))
        } else {
            Err("no config applied yet\n".into())
        })
    })
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StatusBody {
    ready: bool,
    draining: bool,
    generation: u64,
    workers: usize,
    allocations: u64,
    offload: OffloadStatus,
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
        offload: s
            .status
            .offload
            .lock()
            .map(|o| o.clone())
            .unwrap_or_default(),
        detail,
    })
    .into_response()
}

/// Serves the admin API until the process exits.
pub async fn serve(addr: SocketAddr, state: AdminState) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    axum::serve(listener, router(state)).await
}
