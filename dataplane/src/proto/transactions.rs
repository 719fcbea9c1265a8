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

/// When a cached response may be forgotten, a hash of the request it answered (so only a
/// byte-identical retransmission gets it) and the response.
type Cached = (Instant, u64, Box<[u8]>);

fn request_hash(request: &[u8]) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    BuildHasherDefault::<DefaultHasher>::default().hash_one(request)
}

#[derive(Default)]
pub struct TransactionCache {
    entries: HashMap<(ClientKey, TransactionId), Cached>,
}

impl TransactionCache {
    pub fn get(
        &self,
        client: &ClientKey,
        tid: &TransactionId,
        request: &[u8],
        now: Instant,
    ) -> Option<&[u8]> {
        self.entries
            .get(&(*client, *tid))
            .filter(|(exp, hash, _)| *exp > now && *hash == request_hash(request))
            .map(|(_, _, r)| &r[..])
    }

    pub fn insert(
        &mut self,
        client: ClientKey,
        tid: TransactionId,
        request: &[u8],
        response: &[u8],
        now: Instant,
    ) {
        if self.entries.len() >= MAX_ENTRIES {
            return;
        }
        self.entries.insert(
            (client, tid),
            (now + KEEP, request_hash(request), response.into()),
        );
    }

    pub fn purge(&mut self, now: Instant) {
        self.entries.retain(|_, (exp, _, _)| *exp > now);
    }

    pub fn clear(&mut self) {
        self.entries.clear();
    }
}
