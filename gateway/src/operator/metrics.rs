//! The operator's metrics (`/metrics` on its admin port): one field and one help line per
//! metric, registered once, encoded as OpenMetrics on scrape.

use std::sync::OnceLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use turnpike_contract::admin::{self, Scrape};
use turnpike_contract::histogram::Histogram;

use tokio::sync::watch;

use crate::cds::server::Reports;

/// A `gateway` label (`namespace/name`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct GatewayLabel {
    gateway: String,
}

#[derive(Debug)]
pub struct OperatorMetrics {
    registry: Registry,
    /// 1 while this replica holds the leader lease.
    pub leader: Gauge,
    /// 1 once every watched kind has been listed.
    pub synced: Gauge,
    pub renders: Counter,
    pub render_duration: Histogram,
    pub watch_errors: Counter,
    /// Status writes (SSA or read-modify-write), by this replica.
    pub status_writes: Counter,
    /// Deployments, Services and Secrets applied or deleted, by this replica.
    pub resource_writes: Counter,
    pub write_errors: Counter,
    /// Passes of the leader's write loop, and the time they took.
    pub write_passes: Counter,
    pub write_duration: Histogram,
    pub events: Counter,
    pub published_generations: Counter,
    /// Dataplanes connected to this replica's CDS server, by Gateway (from its reports,
    /// counted on scrape).
    cds_dataplanes: Family<GatewayLabel, Gauge>,
    cds_reports: OnceLock<watch::Receiver<Reports>>,
}

impl Default for OperatorMetrics {
    fn default() -> Self {
        let mut r = Registry::default();
        let gauge =
            |r: &mut Registry, name: &str, help: &str| -> Gauge { admin::register(r, name, help) };
        let counter = |r: &mut Registry, name: &str, help: &str| -> Counter {
            admin::register(r, name, help)
        };
        let histogram = |r: &mut Registry, name: &str, help: &str| -> Histogram {
            let h = Histogram::duration();
            r.register(name, help.trim_end_matches('.'), h.clone());
            h
        };
        OperatorMetrics {
            leader: gauge(
                &mut r,
                "turnpike_operator_leader",
                "1 while this replica holds the leader lease and writes to the API server.",
            ),
            synced: gauge(
                &mut r,
                "turnpike_operator_synced",
                "1 once every watched kind has been listed.",
            ),
            renders: counter(
                &mut r,
                "turnpike_operator_renders",
                "Renders of the watched objects.",
            ),
            render_duration: histogram(
                &mut r,
                "turnpike_operator_render_duration_seconds",
                "How long renders of the watched objects took.",
            ),
            watch_errors: counter(
                &mut r,
                "turnpike_operator_watch_errors",
                "Watch errors (each is retried with backoff and a relist).",
            ),
            status_writes: counter(
                &mut r,
                "turnpike_operator_status_writes",
                "Status writes made by this replica.",
            ),
            resource_writes: counter(
                &mut r,
                "turnpike_operator_resource_writes",
                "Managed Deployments, Services and certificate Secrets applied or deleted by this replica.",
            ),
            write_errors: counter(
                &mut r,
                "turnpike_operator_write_errors",
                "Failed writes (retried with backoff).",
            ),
            write_passes: counter(
                &mut r,
                "turnpike_operator_write_passes",
                "Passes of the leader's write loop (each makes the API server match one render).",
            ),
            write_duration: histogram(
                &mut r,
                "turnpike_operator_write_duration_seconds",
                "How long write passes took (apart from rendering and CDS).",
            ),
            events: counter(
                &mut r,
                "turnpike_operator_events",
                "Kubernetes Events recorded for rejected objects.",
            ),
            published_generations: counter(
                &mut r,
                "turnpike_operator_cds_publishes",
                "Snapshots and deletions published over CDS.",
            ),
            cds_dataplanes: admin::register(
                &mut r,
                "turnpike_operator_cds_dataplanes",
                "Dataplanes connected to this replica's CDS server, by Gateway.",
            ),
            cds_reports: OnceLock::new(),
            registry: r,
        }
    }
}

impl OperatorMetrics {
    pub fn is_synced(&self) -> bool {
        self.synced.get() == 1
    }

    /// Counts the dataplanes connected to the CDS server whose reports `reports` follows.
    pub fn watch_cds(&self, reports: watch::Receiver<Reports>) {
        let _ = self.cds_reports.set(reports);
    }
}

impl Scrape for OperatorMetrics {
    fn scrape(&self) -> String {
        if let Some(reports) = self.cds_reports.get() {
            // Gateways whose dataplanes all left leave the exposition too.
            self.cds_dataplanes.clear();
            for (gateway, connections) in reports.borrow().iter() {
                let n = i64::try_from(connections.len()).unwrap_or(i64::MAX);
                self.cds_dataplanes
                    .get_or_create(&GatewayLabel {
                        gateway: gateway.clone(),
                    })
                    .set(n);
            }
        }
        admin::encode(&self.registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names the hand-written renderer used; dashboards and the Kubernetes tests read
    /// them.
    #[test]
    fn names_are_the_ones_dashboards_use() {
        let m = OperatorMetrics::default();
        m.leader.set(1);
        let text = m.scrape();
        // Histogram buckets by name only (their `le` values are checked in the contract).
        let samples: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.contains("_bucket{"))
            .filter_map(|l| l.split(' ').next())
            .collect();
        assert_eq!(
            samples,
            [
                "turnpike_operator_leader",
                "turnpike_operator_synced",
                "turnpike_operator_renders_total",
                "turnpike_operator_render_duration_seconds_sum",
                "turnpike_operator_render_duration_seconds_count",
                "turnpike_operator_watch_errors_total",
                "turnpike_operator_status_writes_total",
                "turnpike_operator_resource_writes_total",
                "turnpike_operator_write_errors_total",
                "turnpike_operator_write_passes_total",
                "turnpike_operator_write_duration_seconds_sum",
                "turnpike_operator_write_duration_seconds_count",
                "turnpike_operator_events_total",
                "turnpike_operator_cds_publishes_total",
            ]
        );
        assert!(text.contains("\nturnpike_operator_leader 1\n"), "{text}");
    }
}
