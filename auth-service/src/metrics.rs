//! The auth service's metrics: requests by route and status, their latency, and the
//! credentials handed out. One field and one help line per metric.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use turnpike_contract::admin::{self, Scrape};

/// Latency buckets, seconds: a credential is an HMAC and a JWT check, well under 1 ms
/// when healthy.
const BUCKETS: [f64; 8] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1.0];

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    status: u16,
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Histogram,
    pub credentials_issued: Counter,
    /// 1 while the CDS connection to the control plane is up.
    pub cds_connected: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let requests: Family<RequestLabels, Counter> = admin::register(
            &mut registry,
            "turnpike_auth_requests",
            "Requests by route and status.",
        );
        let latency = Histogram::new(BUCKETS);
        registry.register(
            "turnpike_auth_request_seconds",
            "Request latency",
            latency.clone(),
        );
        let credentials_issued: Counter = admin::register(
            &mut registry,
            "turnpike_auth_credentials_issued",
            "TURN credentials handed out.",
        );
        let cds_connected: Gauge = admin::register(
            &mut registry,
            "turnpike_cds_connected",
            "1 while the CDS connection to the control plane is up.",
        );
        Metrics {
            registry,
            requests,
            latency,
            credentials_issued,
            cds_connected,
        }
    }
}

impl Metrics {
    pub fn observe(&self, route: &'static str, status: u16, took: Duration) {
        self.requests
            .get_or_create(&RequestLabels { route, status })
            .inc();
        self.latency.observe(took.as_secs_f64());
    }
}

impl Scrape for Metrics {
    fn scrape(&self) -> String {
        admin::encode(&self.registry)
    }
}
