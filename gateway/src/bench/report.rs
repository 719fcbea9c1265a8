//! What a benchmark measured: counters and an HDR histogram of round trips per thread,
//! merged into one [`Report`] printed as a table or as JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Round trips from 1 µs to 60 s at 3 significant digits.
const RTT_MAX_US: u64 = 60_000_000;

/// One thread's measurements.
pub struct Tally {
    pub sent: u64,
    /// Sends the local socket refused (full buffer): never reached the server.
    pub send_dropped: u64,
    pub received: u64,
    pub reordered: u64,
    pub duplicates: u64,
    /// Datagrams from the server that are neither ours nor a STUN answer.
    pub foreign: u64,
    pub rtt_us: Histogram<u64>,
    pub setup_us: Histogram<u64>,
    /// Failed steps, by STUN error code (0: no answer).
    pub errors: BTreeMap<String, u64>,
    pub allocations: u64,
    pub retransmissions: u64,
    /// CPU the thread ran for (see [`thread_cpu`]).
    pub cpu: Duration,
}

impl Default for Tally {
    fn default() -> Self {
        Tally {
            sent: 0,
            send_dropped: 0,
            received: 0,
            reordered: 0,
            duplicates: 0,
            foreign: 0,
            rtt_us: new_histogram(),
            setup_us: new_histogram(),
            errors: BTreeMap::new(),
            allocations: 0,
            retransmissions: 0,
            cpu: Duration::ZERO,
        }
    }
}

fn new_histogram() -> Histogram<u64> {
    // Bounds are constants known to be valid: 1 ≤ low, high ≥ 2·low, sigfig ≤ 5.
    match Histogram::new_with_bounds(1, RTT_MAX_US, 3) {
        Ok(h) => h,
        Err(e) => unreachable!("constant histogram bounds: {e}"),
    }
}

impl Tally {
    pub fn rtt(&mut self, rtt: Duration) {
        self.rtt_us
            .saturating_record((rtt.as_micros() as u64).clamp(1, RTT_MAX_US));
    }

    pub fn setup(&mut self, took: Duration) {
        self.setup_us
            .saturating_record((took.as_micros() as u64).clamp(1, RTT_MAX_US));
    }

    pub fn error(&mut self, step: &str, code: u16) {
        let key = if code == 0 {
            format!("{step}: no answer")
        } else {
            format!("{step}: {code}")
        };
        *self.errors.entry(key).or_default() += 1;
    }

    pub fn merge(&mut self, other: &Tally) {
        self.sent += other.sent;
        self.send_dropped += other.send_dropped;
        self.received += other.received;
        self.reordered += other.reordered;
        self.duplicates += other.duplicates;
        self.foreign += other.foreign;
        // Same bounds on both sides: adding cannot fail.
        let _ = self.rtt_us.add(&other.rtt_us);
        let _ = self.setup_us.add(&other.setup_us);
        for (k, v) in &other.errors {
            *self.errors.entry(k.clone()).or_default() += v;
        }
        self.allocations += other.allocations;
        self.retransmissions += other.retransmissions;
        self.cpu += other.cpu;
    }
}

/// Where the CDF is sampled: evenly to 0.99, then the tail in decades.
const CDF_QUANTILES: [f64; 26] = [
    0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8,
    0.85, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9995, 0.9999, 1.0,
];

/// Percentiles of a histogram, in microseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    /// `[quantile, µs]` pairs from 0 to 1, for a CDF plot.
    pub cdf: Vec<(f64, u64)>,
}

impl Percentiles {
    fn of(h: &Histogram<u64>) -> Percentiles {
        if h.is_empty() {
            return Percentiles::default();
        }
        Percentiles {
            count: h.len(),
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            cdf: CDF_QUANTILES
                .iter()
                .map(|&q| (q, h.value_at_quantile(q)))
                .collect(),
        }
    }
}

/// The result of one run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub mode: &'static str,
    pub transport: super::link::Transport,
    pub server: String,
    pub allocations: u64,
    pub duration_s: f64,
    pub sent: u64,
    pub send_dropped: u64,
    pub received: u64,
    pub lost: u64,
    pub loss_percent: f64,
    pub reordered: u64,
    pub duplicates: u64,
    pub foreign: u64,
    pub sent_per_s: f64,
    pub received_per_s: f64,
    pub rtt_us: Percentiles,
    pub setup_us: Percentiles,
    /// `allocate` mode: allocation cycles (allocate, refresh, delete) completed per second.
    pub allocations_per_s: f64,
    pub retransmissions: u64,
    pub errors: BTreeMap<String, u64>,
    /// CPU time of the load threads, seconds.
    pub loader_cpu_s: f64,
}

impl Report {
    pub fn new(
        mode: &'static str,
        transport: super::link::Transport,
        server: String,
        tally: &Tally,
        measured: Duration,
    ) -> Report {
        let secs = measured.as_secs_f64().max(1e-9);
        let lost = tally
            .sent
            .saturating_sub(tally.received.saturating_sub(tally.duplicates));
        Report {
            mode,
            transport,
            server,
            allocations: tally.allocations,
            duration_s: measured.as_secs_f64(),
            sent: tally.sent,
            send_dropped: tally.send_dropped,
            received: tally.received,
            lost,
            loss_percent: if tally.sent == 0 {
                0.0
            } else {
                100.0 * lost as f64 / tally.sent as f64
            },
            reordered: tally.reordered,
            duplicates: tally.duplicates,
            foreign: tally.foreign,
            sent_per_s: tally.sent as f64 / secs,
            received_per_s: tally.received as f64 / secs,
            rtt_us: Percentiles::of(&tally.rtt_us),
            setup_us: Percentiles::of(&tally.setup_us),
            allocations_per_s: if mode == "allocate" {
                tally.allocations as f64 / secs
            } else {
                0.0
            },
            retransmissions: tally.retransmissions,
            errors: tally.errors.clone(),
            loader_cpu_s: tally.cpu.as_secs_f64(),
        }
    }

    /// A table for people.
    pub fn table(&self) -> String {
        let mut t = String::new();
        let _ = writeln!(
            t,
            "{} over {:?} to {}: {} allocations, {:.1} s",
            self.mode, self.transport, self.server, self.allocations, self.duration_s
        );
        if self.mode == "relay" {
            let _ = writeln!(
                t,
                "  packets   sent {}  received {}  lost {} ({:.3} %)  reordered {}  duplicates {}",
                self.sent,
                self.received,
                self.lost,
                self.loss_percent,
                self.reordered,
                self.duplicates
            );
            let _ = writeln!(
                t,
                "  rate      sent {:.0}/s  received {:.0}/s  dropped locally {}",
                self.sent_per_s, self.received_per_s, self.send_dropped
            );
            row(&mut t, "rtt (µs)", &self.rtt_us);
        }
        if self.mode == "allocate" {
            let _ = writeln!(
                t,
                "  rate      {:.0} allocations/s (allocate, refresh, delete)",
                self.allocations_per_s
            );
        }
        row(&mut t, "setup (µs)", &self.setup_us);
        let _ = writeln!(
            t,
            "  loader    {:.2} CPU-s  retransmissions {}",
            self.loader_cpu_s, self.retransmissions
        );
        for (what, n) in &self.errors {
            let _ = writeln!(t, "  error     {what}: {n}");
        }
        t
    }
}

fn row(t: &mut String, name: &str, p: &Percentiles) {
    let _ = writeln!(
        t,
        "  {name:<9} p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  (n={})",
        p.p50, p.p90, p.p99, p.p999, p.max, p.count
    );
}

/// CPU time this thread has run, from `/proc/thread-self/schedstat` (nanoseconds on
/// the CPU). `/proc/stat` and tick-based `utime`/`stime` under-report on some VMs; the
/// scheduler's own clock does not. 0 where unreadable.
pub fn thread_cpu() -> Duration {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(Duration::ZERO, Duration::from_nanos)
}
