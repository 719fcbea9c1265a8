//! Histograms a hot loop can fill: a worker records into its own [`Tally`] (plain array
//! increments, no atomics, no locks) and adds it to the shared [`Histogram`] about once a
//! second, which `/metrics` encodes as a Prometheus histogram. `prometheus-client`'s own
//! histogram takes a lock on every observation and cannot add a batch of them.
//!
//! Values are integers in a unit the bounds share (nanoseconds for latencies, seconds for
//! allocation lifetimes); [`Histogram`] encodes the bounds and the sum in seconds.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// Relay latency bounds, in nanoseconds: 5 µs to 100 ms.
pub const LATENCY_NS: &[u64] = &[
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    100_000_000,
];

/// Control-plane durations (renders, API writes, requests), in nanoseconds: 100 µs to 10 s.
pub const DURATION_NS: &[u64] = &[
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    10_000_000_000,
];

/// Allocation lifetimes, in seconds: 10 s to a day.
pub const LIFETIME_SECS: &[u64] = &[10, 30, 60, 300, 600, 1800, 3600, 7200, 21_600, 86_400];

/// One worker's observations since it last added them to a [`Histogram`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tally {
    bounds: &'static [u64],
    /// One per bound, then the overflow bucket (not cumulative).
    counts: Box<[u64]>,
    sum: u64,
}

impl Tally {
    pub fn new(bounds: &'static [u64]) -> Self {
        Tally {
            bounds,
            counts: vec![0; bounds.len() + 1].into_boxed_slice(),
            sum: 0,
        }
    }

    /// `n` observations of `value`.
    #[inline]
    pub fn record(&mut self, value: u64, n: u64) {
        let i = self.bounds.partition_point(|b| *b < value);
        if let Some(c) = self.counts.get_mut(i) {
            *c += n;
        }
        self.sum = self.sum.wrapping_add(value.wrapping_mul(n));
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// A histogram shared by threads: [`Histogram::add`] merges a [`Tally`] with relaxed atomic
/// additions. Clones share the counts (register one, keep the other).
#[derive(Debug, Clone)]
pub struct Histogram {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    bounds: &'static [u64],
    /// Units per second (1e9 for nanoseconds).
    per_sec: f64,
    counts: Box<[AtomicU64]>,
    sum: AtomicU64,
}

impl Histogram {
    /// Bounds in a unit of which `per_sec` make a second.
    pub fn new(bounds: &'static [u64], per_sec: f64) -> Self {
        Histogram {
            inner: Arc::new(Inner {
                bounds,
                per_sec,
                counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
                sum: AtomicU64::new(0),
            }),
        }
    }

    /// Latencies in nanoseconds ([`LATENCY_NS`]).
    pub fn latency() -> Self {
        Self::new(LATENCY_NS, 1e9)
    }

    /// Durations in nanoseconds ([`DURATION_NS`]).
    pub fn duration() -> Self {
        Self::new(DURATION_NS, 1e9)
    }

    /// Lifetimes in seconds ([`LIFETIME_SECS`]).
    pub fn lifetime() -> Self {
        Self::new(LIFETIME_SECS, 1.0)
    }

    /// A tally with this histogram's bounds.
    pub fn tally(&self) -> Tally {
        Tally::new(self.inner.bounds)
    }

    /// Adds `t` (recorded with the same bounds) and empties it.
    pub fn add(&self, t: &mut Tally) {
        debug_assert!(std::ptr::eq(t.bounds, self.inner.bounds));
        for (shared, local) in self.inner.counts.iter().zip(t.counts.iter_mut()) {
            if *local > 0 {
                shared.fetch_add(std::mem::take(local), Relaxed);
            }
        }
        self.inner
            .sum
            .fetch_add(std::mem::take(&mut t.sum), Relaxed);
    }

    /// One observation, straight into the shared counts (for code off the hot path).
    pub fn observe(&self, value: u64) {
        let mut t = self.tally();
        t.record(value, 1);
        self.add(&mut t);
    }

    /// One observation of a duration ([`Histogram::duration`], [`Histogram::latency`]).
    pub fn observe_duration(&self, d: std::time::Duration) {
        self.observe(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }

    pub fn count(&self) -> u64 {
        self.inner.counts.iter().map(|c| c.load(Relaxed)).sum()
    }
}

impl TypedMetric for Histogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Histogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let i = &self.inner;
        let buckets: Vec<(f64, u64)> = i
            .bounds
            .iter()
            .map(|b| *b as f64 / i.per_sec)
            .chain(std::iter::once(f64::INFINITY))
            .zip(i.counts.iter().map(|c| c.load(Relaxed)))
            .collect();
        let count = buckets.iter().map(|(_, c)| c).sum();
        let sum = i.sum.load(Relaxed) as f64 / i.per_sec;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::registry::Registry;

    #[test]
    fn a_tally_lands_in_the_bucket_of_its_upper_bound() {
        let h = Histogram::latency();
        let mut t = h.tally();
        t.record(5_000, 2); // exactly a bound: le="0.000005"
        t.record(5_001, 1);
        t.record(200_000_000, 1); // above every bound: +Inf only
        assert_eq!(t.count(), 4);
        h.add(&mut t);
        assert_eq!(t.count(), 0, "add empties the tally");
        assert_eq!(h.count(), 4);

        let mut r = Registry::default();
        r.register("relay_latency_seconds", "test", h.clone());
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &r).unwrap();
        assert!(
            text.contains("# TYPE relay_latency_seconds histogram"),
            "{text}"
        );
        assert!(
            text.contains("relay_latency_seconds_bucket{le=\"0.000005\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("relay_latency_seconds_bucket{le=\"0.00001\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("relay_latency_seconds_bucket{le=\"0.1\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("relay_latency_seconds_bucket{le=\"+Inf\"} 4"),
            "{text}"
        );
        assert!(text.contains("relay_latency_seconds_count 4"), "{text}");
        assert!(
            text.contains("relay_latency_seconds_sum 0.200015001"),
            "{text}"
        );
    }

    #[test]
    fn lifetimes_are_in_seconds() {
        let h = Histogram::lifetime();
        h.observe(45);
        let mut r = Registry::default();
        r.register("lifetime_seconds", "test", h);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &r).unwrap();
        assert!(
            text.contains("lifetime_seconds_bucket{le=\"30.0\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("lifetime_seconds_bucket{le=\"60.0\"} 1"),
            "{text}"
        );
    }
}
