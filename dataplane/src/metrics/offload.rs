//! Kernel offload's metrics: bindings the kernel holds, and packets it passed up.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use turnpike_contract::admin;

use super::{Reason, reason_counter};
use crate::offload::{Kernel, KernelEvents};

/// Kernel offload: what it holds and what it passed up to userspace, and why.
pub struct OffloadMetrics {
    /// Bindings the kernel relays, per worker (each worker writes only its own slot).
    pub bindings: Vec<AtomicU64>,
    bindings_gauge: Gauge,
    active: Gauge,
    pub refused: Counter,
    passed: Family<Reason, Counter>,
    kernel: OnceLock<Arc<Kernel>>,
    /// The kernel's event counters when last scraped (they are absolute).
    last_events: Mutex<KernelEvents>,
}

impl OffloadMetrics {
    const PASSED: [&'static str; 5] = [
        "expired",
        "no_route",
        "not_exact",
        "adjust_failed",
        "partial_checksum",
    ];

    pub(super) fn new(r: &mut Registry, workers: usize) -> Self {
        let passed: Family<Reason, Counter> = admin::register(
            r,
            "turnpike_offload_passed_packets",
            "Packets of kernel bindings passed up to userspace, by reason.",
        );
        for reason in Self::PASSED {
            reason_counter(&passed, reason);
        }
        OffloadMetrics {
            bindings: (0..workers).map(|_| AtomicU64::new(0)).collect(),
            bindings_gauge: admin::register(
                r,
                "turnpike_offload_bindings",
                "Channel bindings the kernel relays (offload).",
            ),
            active: admin::register(
                r,
                "turnpike_offload_active",
                "1 when the kernel relay (TC or XDP) is attached.",
            ),
            refused: admin::register(
                r,
                "turnpike_offload_refused",
                "Channel bindings the kernel could not take (relayed in userspace).",
            ),
            passed,
            kernel: OnceLock::new(),
            last_events: Mutex::new(KernelEvents::default()),
        }
    }

    /// The kernel relay is attached: its counters are read on every scrape.
    pub fn attach(&self, kernel: Arc<Kernel>) {
        self.active.set(1);
        let _ = self.kernel.set(kernel);
    }

    pub(super) fn scrape(&self) {
        let total: u64 = self.bindings.iter().map(|b| b.load(Relaxed)).sum();
        self.bindings_gauge
            .set(i64::try_from(total).unwrap_or(i64::MAX));
        let (Some(k), Ok(mut last)) = (self.kernel.get(), self.last_events.lock()) else {
            return;
        };
        let now = k.events();
        let counts = |e: &KernelEvents| {
            [
                e.expired,
                e.no_route,
                e.not_exact,
                e.adjust_failed,
                e.partial_checksum,
            ]
        };
        for ((reason, new), old) in Self::PASSED.iter().zip(counts(&now)).zip(counts(&last)) {
            reason_counter(&self.passed, reason).inc_by(new.saturating_sub(old));
        }
        *last = now;
    }
}
