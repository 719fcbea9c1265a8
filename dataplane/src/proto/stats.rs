//! Counters the core keeps per worker; the shell adds them into shared metrics.

use std::time::Duration;

use turnpike_contract::histogram::{LIFETIME_SECS, Tally};

use super::access::CounterId;

/// Why a request's credentials were refused (401, 438, 441).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// 438: the nonce expired; the client retries with the new one.
    StaleNonce,
    /// 401: a realm other than the server's.
    WrongRealm,
    /// 401: a username no secret or static user knows.
    UnknownUser,
    /// 401: ephemeral credentials past their expiry.
    Expired,
    /// 401: an ephemeral username that is not `<expiry>[:<user>]`.
    MalformedUsername,
    /// 401: MESSAGE-INTEGRITY does not match (a wrong password).
    BadIntegrity,
    /// 441: valid credentials, but not the ones the allocation was created with.
    WrongCredentials,
}

impl AuthFailure {
    pub const ALL: [AuthFailure; 7] = [
        AuthFailure::StaleNonce,
        AuthFailure::WrongRealm,
        AuthFailure::UnknownUser,
        AuthFailure::Expired,
        AuthFailure::MalformedUsername,
        AuthFailure::BadIntegrity,
        AuthFailure::WrongCredentials,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AuthFailure::StaleNonce => "stale_nonce",
            AuthFailure::WrongRealm => "wrong_realm",
            AuthFailure::UnknownUser => "unknown_user",
            AuthFailure::Expired => "expired",
            AuthFailure::MalformedUsername => "malformed_username",
            AuthFailure::BadIntegrity => "bad_integrity",
            AuthFailure::WrongCredentials => "wrong_credentials",
        }
    }
}

/// Why an authenticated Allocate was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllocationRefusal {
    /// 486: the user holds `maxAllocationsPerUser` already.
    Quota,
    /// 508: no relay port or file descriptor left.
    Capacity,
    /// 508: the dataplane is draining (terminating).
    Draining,
}

impl AllocationRefusal {
    pub const ALL: [AllocationRefusal; 3] = [
        AllocationRefusal::Quota,
        AllocationRefusal::Capacity,
        AllocationRefusal::Draining,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AllocationRefusal::Quota => "quota",
            AllocationRefusal::Capacity => "capacity",
            AllocationRefusal::Draining => "draining",
        }
    }
}

/// How an allocation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllocationEnd {
    /// A Refresh with lifetime 0.
    Deleted,
    /// Its lifetime ran out.
    Expired,
    /// Its TCP/TLS connection closed.
    Closed,
    /// Its listener left the config.
    ListenerRemoved,
}

impl AllocationEnd {
    pub const ALL: [AllocationEnd; 4] = [
        AllocationEnd::Deleted,
        AllocationEnd::Expired,
        AllocationEnd::Closed,
        AllocationEnd::ListenerRemoved,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AllocationEnd::Deleted => "deleted",
            AllocationEnd::Expired => "expired",
            AllocationEnd::Closed => "closed",
            AllocationEnd::ListenerRemoved => "listener_removed",
        }
    }
}

/// Allocation events of one listener (by name: they are counted off the relay path, and
/// a name survives config changes that renumber listeners).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerStats {
    pub listener: String,
    pub created: u64,
    /// By [`AllocationEnd`], in the order of [`AllocationEnd::ALL`].
    pub ended: [u64; 4],
    /// By [`AllocationRefusal`], in the order of [`AllocationRefusal::ALL`].
    pub refused: [u64; 3],
    /// Lifetimes of the allocations that ended, in seconds.
    pub lifetimes: Tally,
}

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
    /// Requests whose credentials checked out.
    pub authenticated: u64,
    /// By [`AuthFailure`], in the order of [`AuthFailure::ALL`].
    pub auth_failures: [u64; 7],
    pub denied_peers: u64,
    pub peers_revoked: u64,
    pub dropped_no_allocation: u64,
    pub dropped_no_permission: u64,
    pub retransmits: u64,
    /// 401/438 answers dropped by the per-source rate limit.
    pub challenges_suppressed: u64,
    pub allocations_created: u64,
    pub allocations_deleted: u64,
    /// Allocation events by listener.
    pub listeners: Vec<ListenerStats>,
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

    pub fn auth_failed(&mut self, why: AuthFailure) {
        self.auth_failures[why as usize] += 1;
    }

    pub fn auth_failure_count(&self) -> u64 {
        self.auth_failures.iter().sum()
    }

    fn listener_mut(&mut self, listener: &str) -> &mut ListenerStats {
        let i = match self.listeners.iter().position(|l| l.listener == listener) {
            Some(i) => i,
            None => {
                self.listeners.push(ListenerStats {
                    listener: listener.to_string(),
                    created: 0,
                    ended: [0; 4],
                    refused: [0; 3],
                    lifetimes: Tally::new(LIFETIME_SECS),
                });
                self.listeners.len() - 1
            }
        };
        &mut self.listeners[i]
    }

    pub fn allocation_created(&mut self, listener: &str) {
        self.allocations_created += 1;
        self.listener_mut(listener).created += 1;
    }

    pub fn allocation_ended(&mut self, listener: &str, how: AllocationEnd, lived: Duration) {
        self.allocations_deleted += 1;
        let l = self.listener_mut(listener);
        l.ended[how as usize] += 1;
        l.lifetimes.record(lived.as_secs(), 1);
    }

    pub fn allocation_refused(&mut self, listener: &str, why: AllocationRefusal) {
        self.listener_mut(listener).refused[why as usize] += 1;
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
