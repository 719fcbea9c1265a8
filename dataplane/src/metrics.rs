//! Shared counters and status. Workers add their per-second deltas here (one short lock
//! per worker per second); the admin server renders them.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use serde::Serialize;

use crate::proto::{RelayCount, Stats};

#[derive(Default)]
pub struct Metrics {
    /// Active allocations per worker (each worker writes only its own slot).
    pub allocations: Vec<AtomicU64>,
    pub malformed: AtomicU64,
    pub oversized: AtomicU64,
    pub auth_failures: AtomicU64,
    pub denied_peers: AtomicU64,
    pub peers_revoked: AtomicU64,
    pub dropped_no_allocation: AtomicU64,
    pub dropped_no_permission: AtomicU64,
    pub send_failures: AtomicU64,
    pub retransmits: AtomicU64,
    pub challenges_suppressed: AtomicU64,
    pub allocations_created: AtomicU64,
    pub allocations_deleted: AtomicU64,
    pub config_reloads: AtomicU64,
    pub config_reload_failures: AtomicU64,
    pub streams: StreamMetrics,
    relay: Mutex<BTreeMap<(String, String), RelayCount>>,
}

/// Why a TCP/TLS client connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The client closed it.
    Client,
    HandshakeTimeout,
    IdleTimeout,
    /// Bytes that cannot be STUN or ChannelData, or a frame over the size limit.
    NotTurn,
    TlsError,
    IoError,
    /// Its listener left the config.
    ListenerRemoved,
}

impl CloseReason {
    pub const ALL: [CloseReason; 7] = [
        CloseReason::Client,
        CloseReason::HandshakeTimeout,
        CloseReason::IdleTimeout,
        CloseReason::NotTurn,
        CloseReason::TlsError,
        CloseReason::IoError,
        CloseReason::ListenerRemoved,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::Client => "client",
            CloseReason::HandshakeTimeout => "handshake_timeout",
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::NotTurn => "not_turn",
            CloseReason::TlsError => "tls_error",
            CloseReason::IoError => "io_error",
            CloseReason::ListenerRemoved => "listener_removed",
        }
    }
}

/// TCP/TLS connection counters, updated where connections open and close (never per
/// packet, except the queue-full drop).
#[derive(Default)]
pub struct StreamMetrics {
    pub active: AtomicU64,
    pub accepted: AtomicU64,
    pub refused_max_connections: AtomicU64,
    pub refused_rate_limit: AtomicU64,
    closed: [AtomicU64; CloseReason::ALL.len()],
    /// Relayed packets dropped because a slow client's send queue was full.
    pub dropped_queue_full: AtomicU64,
}

impl StreamMetrics {
    pub fn closed(&self, reason: CloseReason) {
        self.closed[reason as usize].fetch_add(1, Relaxed);
        self.active.fetch_sub(1, Relaxed);
    }

    pub fn closed_count(&self, reason: CloseReason) -> u64 {
        self.closed[reason as usize].load(Relaxed)
    }

    fn render(&self, o: &mut String) {
        let _ = writeln!(
            o,
            "# HELP turnpike_connections_active TCP and TLS client connections open.\n\
             # TYPE turnpike_connections_active gauge\nturnpike_connections_active {}",
            self.active.load(Relaxed)
        );
        let _ = writeln!(
            o,
            "# HELP turnpike_connections_accepted_total TCP and TLS client connections accepted.\n\
             # TYPE turnpike_connections_accepted_total counter\nturnpike_connections_accepted_total {}",
            self.accepted.load(Relaxed)
        );
        let _ = writeln!(
            o,
            "# HELP turnpike_connections_refused_total Connections closed at accept, by limit.\n\
             # TYPE turnpike_connections_refused_total counter\n\
             turnpike_connections_refused_total{{reason=\"max_connections\"}} {}\n\
             turnpike_connections_refused_total{{reason=\"rate_limit\"}} {}",
            self.refused_max_connections.load(Relaxed),
            self.refused_rate_limit.load(Relaxed)
        );
        let _ = writeln!(
            o,
            "# HELP turnpike_connections_closed_total Client connections closed, by reason.\n\
             # TYPE turnpike_connections_closed_total counter"
        );
        for r in CloseReason::ALL {
            let _ = writeln!(
                o,
                "turnpike_connections_closed_total{{reason=\"{}\"}} {}",
                r.as_str(),
                self.closed_count(r)
            );
        }
    }
}

impl Metrics {
    pub fn new(workers: usize) -> Self {
        Metrics {
            allocations: (0..workers).map(|_| AtomicU64::new(0)).collect(),
            ..Default::default()
        }
    }

    pub fn active_allocations(&self) -> u64 {
        self.allocations.iter().map(|a| a.load(Relaxed)).sum()
    }

    /// Adds a worker's counters; `labels[i]` names `stats.relay[i]`.
    pub fn add(&self, stats: &Stats, labels: &[(String, String)]) {
        self.malformed.fetch_add(stats.malformed, Relaxed);
        self.auth_failures.fetch_add(stats.auth_failures, Relaxed);
        self.denied_peers.fetch_add(stats.denied_peers, Relaxed);
        self.peers_revoked.fetch_add(stats.peers_revoked, Relaxed);
        self.dropped_no_allocation
            .fetch_add(stats.dropped_no_allocation, Relaxed);
        self.dropped_no_permission
            .fetch_add(stats.dropped_no_permission, Relaxed);
        self.retransmits.fetch_add(stats.retransmits, Relaxed);
        self.challenges_suppressed
            .fetch_add(stats.challenges_suppressed, Relaxed);
        self.allocations_created
            .fetch_add(stats.allocations_created, Relaxed);
        self.allocations_deleted
            .fetch_add(stats.allocations_deleted, Relaxed);
        if stats.relay.iter().all(|r| *r == RelayCount::default()) {
            return;
        }
        if let Ok(mut m) = self.relay.lock() {
            for (count, label) in stats.relay.iter().zip(labels) {
                if *count != RelayCount::default() {
                    m.entry(label.clone()).or_default().add(count);
                }
            }
        }
    }

    pub fn relay_counts(&self) -> BTreeMap<(String, String), RelayCount> {
        self.relay.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// Prometheus text exposition format.
    pub fn render(&self, status: &Status) -> String {
        let mut o = String::with_capacity(4096);
        let mut counter = |name: &str, help: &str, v: u64| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        };
        counter(
            "turnpike_malformed_packets_total",
            "Datagrams dropped because they were not valid STUN or ChannelData.",
            self.malformed.load(Relaxed),
        );
        counter(
            "turnpike_oversized_packets_total",
            "Datagrams dropped because they exceeded the receive buffer.",
            self.oversized.load(Relaxed),
        );
        counter(
            "turnpike_auth_failures_total",
            "Requests refused for bad credentials, realm or integrity.",
            self.auth_failures.load(Relaxed),
        );
        counter(
            "turnpike_denied_peers_total",
            "Permission or channel requests refused with 403 (peer outside the routes).",
            self.denied_peers.load(Relaxed),
        );
        counter(
            "turnpike_revoked_peers_total",
            "Permissions and channels removed because a new config no longer routes them.",
            self.peers_revoked.load(Relaxed),
        );
        counter(
            "turnpike_allocations_created_total",
            "Allocations created.",
            self.allocations_created.load(Relaxed),
        );
        counter(
            "turnpike_allocations_deleted_total",
            "Allocations deleted, expired or closed.",
            self.allocations_deleted.load(Relaxed),
        );
        counter(
            "turnpike_retransmitted_requests_total",
            "Requests answered from the transaction cache.",
            self.retransmits.load(Relaxed),
        );
        counter(
            "turnpike_suppressed_challenges_total",
            "401/438 answers not sent because the source exceeded its rate limit.",
            self.challenges_suppressed.load(Relaxed),
        );
        counter(
            "turnpike_config_reloads_total",
            "Configs applied.",
            self.config_reloads.load(Relaxed),
        );
        counter(
            "turnpike_config_reload_failures_total",
            "Configs refused (the previous one kept running).",
            self.config_reload_failures.load(Relaxed),
        );
        let _ = writeln!(
            o,
            "# HELP turnpike_dropped_packets_total Packets dropped on the relay path.\n\
             # TYPE turnpike_dropped_packets_total counter"
        );
        for (reason, v) in [
            ("no_allocation", &self.dropped_no_allocation),
            ("no_permission", &self.dropped_no_permission),
            ("send_failed", &self.send_failures),
            ("client_queue_full", &self.streams.dropped_queue_full),
        ] {
            let _ = writeln!(
                o,
                "turnpike_dropped_packets_total{{reason=\"{reason}\"}} {}",
                v.load(Relaxed)
            );
        }
        self.streams.render(&mut o);
        let _ = writeln!(
            o,
            "# HELP turnpike_allocations_active Allocations currently active.\n\
             # TYPE turnpike_allocations_active gauge\nturnpike_allocations_active {}",
            self.active_allocations()
        );
        let _ = writeln!(
            o,
            "# HELP turnpike_config_generation Generation of the config in use.\n\
             # TYPE turnpike_config_generation gauge\nturnpike_config_generation {}",
            status.generation.load(Relaxed)
        );
        let _ = writeln!(
            o,
            "# HELP turnpike_ready 1 when a config is applied and the dataplane is not draining.\n\
             # TYPE turnpike_ready gauge\nturnpike_ready {}",
            u8::from(status.is_ready())
        );
        let relay = self.relay_counts();
        for (name, help, pick) in [
            (
                "turnpike_relayed_packets_total",
                "Packets relayed, by listener, route and direction.",
                (|r: &RelayCount| (r.to_peer_packets, r.to_client_packets))
                    as fn(&RelayCount) -> (u64, u64),
            ),
            (
                "turnpike_relayed_bytes_total",
                "Payload bytes relayed, by listener, route and direction.",
                |r: &RelayCount| (r.to_peer_bytes, r.to_client_bytes),
            ),
        ] {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter");
            for ((listener, route), r) in &relay {
                let (to_peer, to_client) = pick(r);
                for (dir, v) in [("to_peer", to_peer), ("to_client", to_client)] {
                    let _ = writeln!(
                        o,
                        "{name}{{listener=\"{}\",route=\"{}\",direction=\"{dir}\"}} {v}",
                        escape(listener),
                        escape(route)
                    );
                }
            }
        }
        o
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// What `/status` shows and `/readyz` decides on.
#[derive(Default)]
pub struct Status {
    pub generation: AtomicU64,
    pub applied: AtomicBool,
    pub draining: AtomicBool,
    pub detail: Mutex<StatusDetail>,
}

#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusDetail {
    pub name: String,
    pub config_source: String,
    pub last_error: Option<String>,
    pub listeners: Vec<ListenerStatus>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListenerStatus {
    pub name: String,
    pub protocol: String,
    pub address: String,
    pub relay_addresses: Vec<String>,
    pub routes: Vec<String>,
    /// `serving`, or why not.
    pub state: String,
    /// The certificate a TURN-TLS listener presents to new connections.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate: Option<CertificateStatus>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CertificateStatus {
    /// Hex serial number.
    pub serial: String,
    /// Unix seconds.
    pub not_after: i64,
    pub dns_names: Vec<String>,
}

impl Status {
    /// Ready for new allocations: serving and not draining.
    pub fn is_ready(&self) -> bool {
        self.is_serving() && !self.draining.load(Relaxed)
    }

    /// Relaying for its clients: a config is applied and every listener is bound (a
    /// listener whose port is taken keeps the pod out of the Service instead of
    /// blackholing its clients). A draining dataplane still serves the allocations it has
    /// (see `/readyz`).
    pub fn is_serving(&self) -> bool {
        self.applied.load(Relaxed) && self.listener_error().is_none()
    }

    /// The first listener that failed to bind, as `name: error`.
    pub fn listener_error(&self) -> Option<String> {
        let d = self.detail.lock().ok()?;
        d.listeners
            .iter()
            .find(|l| l.state.starts_with("error"))
            .map(|l| format!("{}: {}", l.name, l.state))
    }

    pub fn set_listener_state(&self, name: &str, state: String) {
        if let Ok(mut d) = self.detail.lock()
            && let Some(l) = d.listeners.iter_mut().find(|l| l.name == name)
        {
            l.state = state;
        }
    }
}
