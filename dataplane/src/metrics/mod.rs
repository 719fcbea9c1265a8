//! The dataplane's metrics. Workers add their per-second deltas here (no lock on the relay
//! path; the relay counters take one short lock per worker per second); `/metrics` encodes
//! the registry. One field and one help line per metric; names and labels are the ones
//! dashboards already use (a test scrapes and compares them).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use turnpike_contract::admin::{self, Scrape};
use turnpike_contract::histogram::Histogram;

use crate::io::batch::RelayLatency;

use crate::proto::{AllocationEnd, AllocationRefusal, AuthFailure, RelayCount, Stats};
use crate::status::Status;

mod offload;
mod streams;

pub use offload::OffloadMetrics;
pub use streams::{CloseReason, StreamMetrics};

/// A `reason` label.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct Reason {
    reason: &'static str,
}

/// Relay counters' labels: the listener, the UDPRoute, `to_peer` or `to_client`, and
/// whether userspace or the kernel (offload) relayed it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RelayLabels {
    listener: String,
    route: String,
    direction: &'static str,
    path: &'static str,
}

/// A `listener` label.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct Listener {
    listener: String,
}

/// A `listener` and a `reason` label.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ListenerReason {
    listener: String,
    reason: &'static str,
}

/// A `direction` label: `to_peer` or `to_client`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct Direction {
    direction: &'static str,
}

pub struct Metrics {
    registry: Registry,
    status: Arc<Status>,
    /// Active allocations per worker (each worker writes only its own slot).
    pub allocations: Vec<AtomicU64>,
    /// Active allocations per worker and listener, written once a second by each worker.
    allocations_by_listener: Vec<Mutex<Vec<(String, u64)>>>,
    allocations_active: Family<Listener, Gauge>,
    config_generation: Gauge,
    config_received_generation: Gauge,
    config_applied_at: Gauge,
    /// One unlabelled series, present only when the config comes over CDS.
    cds_connected: Family<Vec<(String, String)>, Gauge>,
    certificate_expiry: Family<Listener, Gauge>,
    fds_open: Gauge,
    fds_limit: Gauge,
    pub authenticated: Counter,
    ready: Gauge,
    pub malformed: Counter,
    pub oversized: Counter,
    auth_failures: Family<Reason, Counter>,
    pub denied_peers: Counter,
    pub peers_revoked: Counter,
    allocations_created: Family<Listener, Counter>,
    allocations_ended: Family<ListenerReason, Counter>,
    allocations_refused: Family<ListenerReason, Counter>,
    allocation_lifetime: Family<Listener, Histogram, fn() -> Histogram>,
    pub retransmits: Counter,
    pub challenges_suppressed: Counter,
    pub config_reloads: Counter,
    pub config_reload_failures: Counter,
    pub dropped_no_allocation: Counter,
    pub dropped_no_permission: Counter,
    pub send_failures: Counter,
    pub streams: StreamMetrics,
    pub offload: OffloadMetrics,
    relayed_packets: Family<RelayLabels, Counter>,
    relayed_bytes: Family<RelayLabels, Counter>,
    latency_to_peer: Histogram,
    latency_to_client: Histogram,
}

/// A counter of `family` for `reason`, created now so it shows as 0 before it counts.
fn reason_counter(family: &Family<Reason, Counter>, reason: &'static str) -> Counter {
    family.get_or_create(&Reason { reason }).clone()
}

impl Metrics {
    pub fn new(workers: usize, status: Arc<Status>) -> Self {
        let mut r = Registry::default();
        let counter = |r: &mut Registry, name: &str, help: &str| -> Counter {
            admin::register(r, name, help)
        };
        let gauge =
            |r: &mut Registry, name: &str, help: &str| -> Gauge { admin::register(r, name, help) };
        let malformed = counter(
            &mut r,
            "turnpike_malformed_packets",
            "Datagrams dropped because they were not valid STUN or ChannelData.",
        );
        let oversized = counter(
            &mut r,
            "turnpike_oversized_packets",
            "Datagrams dropped because they exceeded the receive buffer.",
        );
        let auth_failures: Family<Reason, Counter> = admin::register(
            &mut r,
            "turnpike_auth_failures",
            "Requests refused for their credentials (401, 438 stale nonce, 441), by reason.",
        );
        for why in AuthFailure::ALL {
            reason_counter(&auth_failures, why.as_str());
        }
        let denied_peers = counter(
            &mut r,
            "turnpike_denied_peers",
            "Permission or channel requests refused with 403 (peer outside the routes).",
        );
        let peers_revoked = counter(
            &mut r,
            "turnpike_revoked_peers",
            "Permissions and channels removed because a new config no longer routes them.",
        );
        let allocations_created: Family<Listener, Counter> = admin::register(
            &mut r,
            "turnpike_allocations_created",
            "Allocations created, by listener.",
        );
        let allocations_ended: Family<ListenerReason, Counter> = admin::register(
            &mut r,
            "turnpike_allocations_deleted",
            "Allocations ended, by listener and reason (deleted, expired, closed, listener_removed).",
        );
        let allocations_refused: Family<ListenerReason, Counter> = admin::register(
            &mut r,
            "turnpike_allocations_refused",
            "Authenticated Allocate requests refused, by listener and reason (quota 486, capacity or draining 508).",
        );
        let allocation_lifetime: Family<Listener, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(Histogram::lifetime);
        r.register(
            "turnpike_allocation_lifetime_seconds",
            "How long allocations lived, by listener",
            allocation_lifetime.clone(),
        );
        let retransmits = counter(
            &mut r,
            "turnpike_retransmitted_requests",
            "Requests answered from the transaction cache.",
        );
        let challenges_suppressed = counter(
            &mut r,
            "turnpike_suppressed_challenges",
            "401/438 answers not sent because the source exceeded its rate limit.",
        );
        let config_reloads = counter(&mut r, "turnpike_config_reloads", "Configs applied.");
        let config_reload_failures = counter(
            &mut r,
            "turnpike_config_reload_failures",
            "Configs refused (the previous one kept running).",
        );
        let dropped: Family<Reason, Counter> = admin::register(
            &mut r,
            "turnpike_dropped_packets",
            "Packets dropped on the relay path.",
        );
        let active = gauge(
            &mut r,
            "turnpike_connections_active",
            "TCP and TLS client connections open.",
        );
        let accepted = counter(
            &mut r,
            "turnpike_connections_accepted",
            "TCP and TLS client connections accepted.",
        );
        let refused: Family<Reason, Counter> = admin::register(
            &mut r,
            "turnpike_connections_refused",
            "Connections closed at accept, by limit.",
        );
        let closed: Family<Reason, Counter> = admin::register(
            &mut r,
            "turnpike_connections_closed",
            "Client connections closed, by reason.",
        );
        for reason in CloseReason::ALL {
            reason_counter(&closed, reason.as_str());
        }
        let allocations_active: Family<Listener, Gauge> = admin::register(
            &mut r,
            "turnpike_allocations_active",
            "Allocations currently active, by listener.",
        );
        let config_generation = gauge(
            &mut r,
            "turnpike_config_generation",
            "Generation of the config in use.",
        );
        let ready = gauge(
            &mut r,
            "turnpike_ready",
            "1 when a config is applied and the dataplane is not draining.",
        );
        let config_received_generation = gauge(
            &mut r,
            "turnpike_config_received_generation",
            "Generation of the newest config received (above turnpike_config_generation when it was refused).",
        );
        let config_applied_at = gauge(
            &mut r,
            "turnpike_config_applied_timestamp_seconds",
            "When the config in use was applied (Unix seconds).",
        );
        let cds_connected: Family<Vec<(String, String)>, Gauge> = admin::register(
            &mut r,
            "turnpike_cds_connected",
            "1 while the CDS connection to the control plane is up (absent with a config file).",
        );
        let certificate_expiry: Family<Listener, Gauge> = admin::register(
            &mut r,
            "turnpike_certificate_expiry_timestamp_seconds",
            "When the certificate a TURN-TLS listener serves expires (Unix seconds).",
        );
        let fds_open = gauge(
            &mut r,
            "turnpike_file_descriptors_open",
            "File descriptors the dataplane holds (relay sockets, listeners, connections).",
        );
        let fds_limit = gauge(
            &mut r,
            "turnpike_file_descriptors_limit",
            "The dataplane's file-descriptor limit (RLIMIT_NOFILE).",
        );
        let authenticated = counter(
            &mut r,
            "turnpike_authenticated_requests",
            "Requests whose credentials checked out.",
        );
        let relayed_packets: Family<RelayLabels, Counter> = admin::register(
            &mut r,
            "turnpike_relayed_packets",
            "Packets relayed, by listener, route, direction and path (userspace or kernel).",
        );
        let relayed_bytes: Family<RelayLabels, Counter> = admin::register(
            &mut r,
            "turnpike_relayed_bytes",
            "Payload bytes relayed, by listener, route, direction and path (userspace or kernel).",
        );
        let latency: Family<Direction, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(Histogram::latency);
        r.register(
            "turnpike_relay_latency_seconds",
            "Time from the worker's wake-up to the send of a relayed datagram (userspace relay), by direction",
            latency.clone(),
        );
        let direction = |direction| latency.get_or_create(&Direction { direction }).clone();
        let (latency_to_peer, latency_to_client) = (direction("to_peer"), direction("to_client"));
        let offload = OffloadMetrics::new(&mut r, workers);
        Metrics {
            latency_to_peer,
            latency_to_client,
            offload,
            status,
            allocations: (0..workers).map(|_| AtomicU64::new(0)).collect(),
            allocations_by_listener: (0..workers).map(|_| Mutex::default()).collect(),
            allocations_active,
            config_generation,
            config_received_generation,
            config_applied_at,
            cds_connected,
            certificate_expiry,
            fds_open,
            fds_limit,
            authenticated,
            ready,
            malformed,
            oversized,
            auth_failures,
            denied_peers,
            peers_revoked,
            allocations_created,
            allocations_ended,
            allocations_refused,
            allocation_lifetime,
            retransmits,
            challenges_suppressed,
            config_reloads,
            config_reload_failures,
            dropped_no_allocation: reason_counter(&dropped, "no_allocation"),
            dropped_no_permission: reason_counter(&dropped, "no_permission"),
            send_failures: reason_counter(&dropped, "send_failed"),
            streams: StreamMetrics {
                active,
                accepted,
                refused_max_connections: reason_counter(&refused, "max_connections"),
                refused_rate_limit: reason_counter(&refused, "rate_limit"),
                closed,
                dropped_queue_full: reason_counter(&dropped, "client_queue_full"),
            },
            relayed_packets,
            relayed_bytes,
            registry: r,
        }
    }

    pub fn active_allocations(&self) -> u64 {
        self.allocations.iter().map(|a| a.load(Relaxed)).sum()
    }

    /// Adds a worker's counters (its lifetime tallies are emptied into the histograms);
    /// `labels[i]` names `stats.relay[i]`.
    pub fn add(&self, stats: &mut Stats, labels: &[(String, String)]) {
        self.malformed.inc_by(stats.malformed);
        self.authenticated.inc_by(stats.authenticated);
        for (why, n) in AuthFailure::ALL.iter().zip(stats.auth_failures) {
            if n > 0 {
                reason_counter(&self.auth_failures, why.as_str()).inc_by(n);
            }
        }
        self.denied_peers.inc_by(stats.denied_peers);
        self.peers_revoked.inc_by(stats.peers_revoked);
        self.dropped_no_allocation
            .inc_by(stats.dropped_no_allocation);
        self.dropped_no_permission
            .inc_by(stats.dropped_no_permission);
        self.retransmits.inc_by(stats.retransmits);
        self.challenges_suppressed
            .inc_by(stats.challenges_suppressed);
        for l in &mut stats.listeners {
            let listener = Listener {
                listener: l.listener.clone(),
            };
            self.allocations_created
                .get_or_create(&listener)
                .inc_by(l.created);
            let reasons = |family: &Family<ListenerReason, Counter>,
                           reasons: &[&'static str],
                           counts: &[u64]| {
                for (reason, n) in reasons.iter().zip(counts) {
                    family
                        .get_or_create(&ListenerReason {
                            listener: l.listener.clone(),
                            reason,
                        })
                        .inc_by(*n);
                }
            };
            reasons(
                &self.allocations_ended,
                &AllocationEnd::ALL.map(AllocationEnd::as_str),
                &l.ended,
            );
            reasons(
                &self.allocations_refused,
                &AllocationRefusal::ALL.map(AllocationRefusal::as_str),
                &l.refused,
            );
            self.allocation_lifetime
                .get_or_create(&listener)
                .add(&mut l.lifetimes);
        }
        self.add_relayed(&stats.relay, labels, "userspace");
    }

    /// Worker `worker`'s active allocations by listener (every listener of its config).
    /// Each listener's allocation counters exist from then on, at 0: a counter that
    /// first appears above 0 loses its first increase to `rate()`.
    pub fn set_allocations(&self, worker: usize, by_listener: Vec<(String, u64)>) {
        for (listener, _) in &by_listener {
            let l = Listener {
                listener: listener.clone(),
            };
            if self.allocations_created.get(&l).is_some() {
                continue;
            }
            drop(self.allocations_created.get_or_create(&l));
            drop(self.allocation_lifetime.get_or_create(&l));
            for reason in AllocationEnd::ALL.map(AllocationEnd::as_str) {
                let labels = ListenerReason {
                    listener: listener.clone(),
                    reason,
                };
                drop(self.allocations_ended.get_or_create(&labels));
            }
            for reason in AllocationRefusal::ALL.map(AllocationRefusal::as_str) {
                let labels = ListenerReason {
                    listener: listener.clone(),
                    reason,
                };
                drop(self.allocations_refused.get_or_create(&labels));
            }
        }
        if let Some(Ok(mut slot)) = self.allocations_by_listener.get(worker).map(|m| m.lock()) {
            *slot = by_listener;
        }
    }

    /// Adds a worker's relay latencies (and empties its tallies).
    pub fn add_latency(&self, l: &mut RelayLatency) {
        self.latency_to_peer.add(&mut l.to_peer);
        self.latency_to_client.add(&mut l.to_client);
    }

    /// Adds relay counts (`labels[i]` names `counts[i]`) relayed on `path`.
    pub fn add_relayed(
        &self,
        counts: &[RelayCount],
        labels: &[(String, String)],
        path: &'static str,
    ) {
        for (count, (listener, route)) in counts.iter().zip(labels) {
            if *count == RelayCount::default() {
                continue;
            }
            for (direction, packets, bytes) in [
                ("to_peer", count.to_peer_packets, count.to_peer_bytes),
                ("to_client", count.to_client_packets, count.to_client_bytes),
            ] {
                let labels = RelayLabels {
                    listener: listener.clone(),
                    route: route.clone(),
                    direction,
                    path,
                };
                self.relayed_packets.get_or_create(&labels).inc_by(packets);
                self.relayed_bytes.get_or_create(&labels).inc_by(bytes);
            }
        }
    }
}

/// Open file descriptors (entries of /proc/self/fd) and the soft RLIMIT_NOFILE.
fn file_descriptors() -> (u64, u64) {
    let open = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64);
    let limit = crate::io::limits::open_files_soft_limit().unwrap_or(0);
    (open, limit)
}

impl Scrape for Metrics {
    fn scrape(&self) -> String {
        let gauge = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        let mut by_listener: std::collections::BTreeMap<String, u64> = Default::default();
        for slot in &self.allocations_by_listener {
            if let Ok(slot) = slot.lock() {
                for (listener, n) in slot.iter() {
                    *by_listener.entry(listener.clone()).or_default() += n;
                }
            }
        }
        // Listeners that left the config leave the exposition too.
        self.allocations_active.clear();
        for (listener, n) in by_listener {
            self.allocations_active
                .get_or_create(&Listener { listener })
                .set(gauge(n));
        }
        self.config_generation
            .set(gauge(self.status.generation.load(Relaxed)));
        self.ready.set(i64::from(self.status.is_ready()));
        let st = &self.status;
        self.config_received_generation
            .set(gauge(st.received_generation.load(Relaxed)));
        self.config_applied_at
            .set(gauge(st.applied_at.load(Relaxed)));
        if let Ok(Some(up)) = st.cds_connected.lock().map(|c| *c) {
            self.cds_connected
                .get_or_create(&Vec::new())
                .set(i64::from(up));
        }
        self.certificate_expiry.clear();
        if let Ok(d) = st.detail.lock() {
            for l in &d.listeners {
                if let Some(c) = &l.certificate {
                    self.certificate_expiry
                        .get_or_create(&Listener {
                            listener: l.name.clone(),
                        })
                        .set(c.not_after);
                }
            }
        }
        let (open, limit) = file_descriptors();
        self.fds_open.set(gauge(open));
        self.fds_limit.set(gauge(limit));
        self.offload.scrape();
        admin::encode(&self.registry)
    }
}
