//! The admin surface every component serves on its admin port: `/livez`, `/readyz` and
//! `/metrics` (OpenMetrics, from the official `prometheus-client` crate). Components add
//! their own routes (`/status`) to the router this builds, so health and metrics answer the
//! same way everywhere.
//!
//! Metrics follow controller-rs: each component keeps a struct with one field per metric,
//! registered once with its help line, and encodes its [`Registry`] on scrape.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
pub use prometheus_client;
use prometheus_client::registry::Registry;

/// The content type of [`encode`]'s output.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A component's metrics, encoded on every scrape. Gauges derived from other state (such as
/// allocations summed over workers) are set in [`Scrape::scrape`] before encoding.
pub trait Scrape: Send + Sync + 'static {
    fn scrape(&self) -> String;
}

/// A new metric of type `M`, registered in `registry` under `name` with its help line;
/// keep the returned handle in the component's metrics struct.
pub fn register<M>(registry: &mut Registry, name: &str, help: &str) -> M
where
    M: prometheus_client::registry::Metric + Clone + Default,
{
    let metric = M::default();
    // The registry ends every help line with a period.
    registry.register(name, help.trim_end_matches('.'), metric.clone());
    metric
}

/// OpenMetrics text of `registry`.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::with_capacity(4096);
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, registry);
    out
}

/// `/readyz`: builds the answer, usually with [`ready_text`].
pub type ReadyCheck = Arc<dyn Fn() -> Response + Send + Sync>;

/// Always ready (a component whose readiness is being up at all).
pub fn always_ready() -> ReadyCheck {
    Arc::new(|| ready_text(Ok("ok\n".into())))
}

/// `Ok(body)` answers 200, `Err(reason)` answers 503, as plain text.
pub fn ready_text(ready: Result<String, String>) -> Response {
    match ready {
        Ok(body) => (StatusCode::OK, body).into_response(),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, reason).into_response(),
    }
}

/// `/metrics` as a response.
pub fn metrics_response(metrics: &dyn Scrape) -> Response {
    ([(header::CONTENT_TYPE, OPENMETRICS)], metrics.scrape()).into_response()
}

/// `/livez`, `/readyz` and (when given) `/metrics`.
pub fn router(ready: ReadyCheck, metrics: Option<Arc<dyn Scrape>>) -> Router {
    let mut router = Router::new()
        .route("/livez", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let response = ready();
                async move { response }
            }),
        );
    if let Some(m) = metrics {
        router = router.route(
            "/metrics",
            get(move || {
                let response = metrics_response(m.as_ref());
                async move { response }
            }),
        );
    }
    router
}

/// Binds `addr` and serves `router` in the background; `what` names it in logs.
pub async fn spawn(addr: SocketAddr, router: Router, what: &'static str) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "{what} listening");
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!(error = %e, "{what} stopped");
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;

    #[test]
    fn counters_keep_their_total_suffix() {
        let mut r = Registry::default();
        let c: Counter = Counter::default();
        r.register("turnpike_things", "Things.", c.clone());
        c.inc_by(3);
        let text = encode(&r);
        assert!(text.contains("# HELP turnpike_things Things."), "{text}");
        assert!(text.contains("\nturnpike_things_total 3\n"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
