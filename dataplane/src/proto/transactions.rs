//! Responses to authenticated requests, kept so a retransmission gets the same answer
//! (RFC 8489 §6.3.1) instead of, say, a second allocation or a 437.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::allocation::ClientKey;
use super::message::TransactionId;

/// RFC 8489 Ti: how long a client may keep retransmitting one request.
const KEEP: Duration = Duration::from_secs(40);
/// Bound on memory per worker; beyond it new responses are simply not cached.
const MAX_ENTRIES: usize = 65_536;

/// A cached response and when it may be forgotten.
type Cached = (Instant, Box<[u8]>);

#[derive(Default)]
pub struct TransactionCache {
    entries: HashMap<(ClientKey, TransactionId), Cached>,
}

impl TransactionCache {
    pub fn get(&self, client: &ClientKey, tid: &TransactionId, now: Instant) -> Option<&[u8]> {
        self.entries
            .get(&(*client, *tid))
            .filter(|(exp, _)| *exp > now)
            .map(|(_, r)| &r[..])
    }

    pub fn insert(&mut self, client: ClientKey, tid: TransactionId, response: &[u8], now: Instant) {
        if self.entries.len() >= MAX_ENTRIES {
            return;
        }
        self.entries
            .insert((client, tid), (now + KEEP, response.into()));
    }

    pub fn purge(&mut self, now: Instant) {
        self.entries.retain(|_, (exp, _)| *exp > now);
    }

    pub fn clear(&mut self) {
        self.entries.clear();
    }
}
