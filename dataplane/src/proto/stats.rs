//! Counters the core keeps per worker; the shell adds them into shared metrics.

use super::access::CounterId;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayCount {
    pub to_peer_packets: u64,
    pub to_peer_bytes: u64,
    pub to_client_packets: u64,
    pub to_client_bytes: u64,
}

impl RelayCount {
    pub fn add(&mut self, o: &RelayCount) {
        self.to_peer_packets += o.to_peer_packets;
        self.to_peer_bytes += o.to_peer_bytes;
        self.to_client_packets += o.to_client_packets;
        self.to_client_bytes += o.to_client_bytes;
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub malformed: u64,
    pub auth_failures: u64,
    pub denied_peers: u64,
    pub peers_revoked: u64,
    pub dropped_no_allocation: u64,
    pub dropped_no_permission: u64,
    pub retransmits: u64,
    /// 401/438 answers dropped by the per-source rate limit.
    pub challenges_suppressed: u64,
    pub allocations_created: u64,
    pub allocations_deleted: u64,
    /// Indexed by `CounterId` of the config current when counted.
    pub relay: Vec<RelayCount>,
}

impl Stats {
    pub fn new(counters: usize) -> Self {
        Stats {
            relay: vec![RelayCount::default(); counters],
            ..Default::default()
        }
    }

    #[inline]
    pub fn count_to_peer(&mut self, c: CounterId, bytes: usize) {
        if let Some(r) = self.relay.get_mut(c as usize) {
            r.to_peer_packets += 1;
            r.to_peer_bytes += bytes as u64;
        }
    }

    #[inline]
    pub fn count_to_client(&mut self, c: CounterId, bytes: usize) {
        if let Some(r) = self.relay.get_mut(c as usize) {
            r.to_client_packets += 1;
            r.to_client_bytes += bytes as u64;
        }
    }
}
