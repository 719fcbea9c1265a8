//! Turnpike's auth service: application servers fetch ready ICE configurations with fresh
//! TURN credentials (`GET /ice-config`), authenticated with a JWT. It learns every Gateway
//! from CDS (`all` subscription).
//!
//! - [`ice`]: URIs and credentials (pure).
//! - [`jwt`]: caller authentication.
//! - [`http`]: the axum API.

pub mod http;
pub mod ice;
pub mod jwt;
pub mod metrics;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::mpsc;
use turnpike_contract::cds::client::CdsEvent;
pub use turnpike_contract::credentials::rest_password;

/// A TURN REST API username and password for `userid`, valid until `expiry` (Unix seconds).
pub fn ephemeral_credential(secret: &str, userid: &str, expiry: u64) -> (String, String) {
    let username = format!("{expiry}:{userid}");
    let password = rest_password(secret, &username);
    (username, password)
}

/// Applies CDS events to `state`'s gateway table (and its CDS link gauge) until the
/// channel closes.
pub async fn follow(state: http::AppState, mut events: mpsc::Receiver<CdsEvent>) {
    let gateways = state.gateways;
    while let Some(ev) = events.recv().await {
        match ev {
            CdsEvent::Snapshot(s) => {
                let mut next: BTreeMap<_, _> = (**gateways.load()).clone();
                tracing::info!(gateway = %s.config.name, generation = s.config.generation, "auth service updated");
                next.insert(s.config.name.clone(), *s);
                gateways.store(Arc::new(next));
            }
            CdsEvent::Deleted(name) => {
                let mut next: BTreeMap<_, _> = (**gateways.load()).clone();
                next.remove(&name);
                gateways.store(Arc::new(next));
            }
            CdsEvent::Connected => {
                state.metrics.cds_connected.set(1);
            }
            CdsEvent::Disconnected(_) => {
                state.metrics.cds_connected.set(0);
            }
        }
    }
}

/// Serves the API on `addr` until the process ends.
pub async fn serve(addr: SocketAddr, state: http::AppState) -> std::io::Result<()> {
    serve_until(addr, state, std::future::pending()).await
}

/// Serves the API on `addr` until `shutdown` completes, then finishes the requests in
/// flight (a pod's SIGTERM: the endpoint is already being removed from the Service).
pub async fn serve_until(
    addr: SocketAddr,
    state: http::AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "auth service listening");
    axum::serve(listener, http::router(state))
        .with_graceful_shutdown(shutdown)
        .await
}
