//! TCP/TLS client connections: opened, refused, closed by reason, backpressure drops.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use super::Reason;

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
    pub active: Gauge,
    pub accepted: Counter,
    pub refused_max_connections: Counter,
    pub refused_rate_limit: Counter,
    pub(super) closed: Family<Reason, Counter>,
    /// Relayed packets dropped because a slow client's send queue was full.
    pub dropped_queue_full: Counter,
}

impl StreamMetrics {
    pub fn closed(&self, reason: CloseReason) {
        self.closed
            .get_or_create(&Reason {
                reason: reason.as_str(),
            })
            .inc();
        self.active.dec();
    }

    pub fn closed_count(&self, reason: CloseReason) -> u64 {
        self.closed
            .get_or_create(&Reason {
                reason: reason.as_str(),
            })
            .get()
    }
}
