//! The operator's Prometheus metrics (`/metrics` on its admin port).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

#[derive(Debug, Default)]
pub struct OperatorMetrics {
    pub leader: AtomicBool,
    pub synced: AtomicBool,
    pub renders: AtomicU64,
    pub render_micros: AtomicU64,
    pub watch_errors: AtomicU64,
    /// Status writes (SSA or read-modify-write), by this replica.
    pub status_writes: AtomicU64,
    /// Deployments, Services and Secrets applied or deleted, by this replica.
    pub resource_writes: AtomicU64,
    pub write_errors: AtomicU64,
    /// Passes of the leader's write loop, and the time they took.
    pub write_passes: AtomicU64,
    pub write_micros: AtomicU64,
    pub events: AtomicU64,
    pub published_generations: AtomicU64,
}

impl OperatorMetrics {
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
            );
        };
        metric(
            "turnpike_operator_leader",
            "gauge",
            "1 while this replica holds the leader lease and writes to the API server.",
            u64::from(self.leader.load(Relaxed)),
        );
        metric(
            "turnpike_operator_synced",
            "gauge",
            "1 once every watched kind has been listed.",
            u64::from(self.synced.load(Relaxed)),
        );
        metric(
            "turnpike_operator_renders_total",
            "counter",
            "Renders of the watched objects.",
            self.renders.load(Relaxed),
        );
        metric(
            "turnpike_operator_render_microseconds_total",
            "counter",
            "Time spent rendering.",
            self.render_micros.load(Relaxed),
        );
        metric(
            "turnpike_operator_watch_errors_total",
            "counter",
            "Watch errors (each is retried with backoff and a relist).",
            self.watch_errors.load(Relaxed),
        );
        metric(
            "turnpike_operator_status_writes_total",
            "counter",
            "Status writes made by this replica.",
            self.status_writes.load(Relaxed),
        );
        metric(
            "turnpike_operator_resource_writes_total",
            "counter",
            "Managed Deployments, Services and certificate Secrets applied or deleted by this replica.",
            self.resource_writes.load(Relaxed),
        );
        metric(
            "turnpike_operator_write_errors_total",
            "counter",
            "Failed writes (retried with backoff).",
            self.write_errors.load(Relaxed),
        );
        metric(
            "turnpike_operator_write_passes_total",
            "counter",
            "Passes of the leader's write loop (each makes the API server match one render).",
            self.write_passes.load(Relaxed),
        );
        metric(
            "turnpike_operator_write_microseconds_total",
            "counter",
            "Time spent in write passes (apart from rendering and CDS).",
            self.write_micros.load(Relaxed),
        );
        metric(
            "turnpike_operator_events_total",
            "counter",
            "Kubernetes Events recorded for rejected objects.",
            self.events.load(Relaxed),
        );
        metric(
            "turnpike_operator_cds_publishes_total",
            "counter",
            "Snapshots and deletions published over CDS.",
            self.published_generations.load(Relaxed),
        );
        out
    }
}
