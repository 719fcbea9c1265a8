//! The TURN server state machine of one worker. No I/O, no clock: the shell passes in the
//! time, the datagrams and a [`RelayPorts`] that opens relay sockets; the server answers
//! with what to send where.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

use slab::Slab;

use super::access::CounterId;
use super::allocation::{AllocId, Allocation, CHANNEL_LIFETIME, Channel, ClientKey};
use super::attr;
use super::channel;
use super::config::{ServerConfig, UserQuota};
use super::error::RelayError;
use super::integrity::{self, IntegrityKind, Key, PasswordAlgorithm};
use super::message::{self, Class, Message, MessageBuilder, method};
use super::nonce::{NonceCheck, NonceKey};
use super::ratelimit::{CHALLENGE_BURST, CHALLENGE_RATE, SourceLimiter};
use super::stats::Stats;
use super::transactions::TransactionCache;

/// Bytes a shell must leave free before a peer payload so the server can prepend a
/// ChannelData header or a Data indication header in place (20 + 24 + 4).
pub const PEER_HEADROOM: usize = 48;
/// Bytes a shell must leave free after a peer payload (Data indication padding).
pub const PEER_TAILROOM: usize = 4;

/// The time as the shell sees it: a monotonic instant for lifetimes and the Unix time for
/// REST credential expiry and nonces.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    pub instant: Instant,
    pub unix: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

/// What the server needs from the shell to give an allocation a relay address.
#[derive(Debug, Clone, Copy)]
pub struct RelayRequest {
    pub listener: u16,
    pub family: Family,
    /// EVEN-PORT: `Some(reserve_next)` asks for an even port (and to reserve port + 1).
    pub even_port: Option<bool>,
    pub reservation: Option<u64>,
    pub dont_fragment: bool,
}

/// A relay socket the shell opened for an allocation.
pub struct OpenedRelay<R> {
    pub relay: R,
    pub addr: SocketAddr,
    pub reservation_token: Option<u64>,
}

/// The shell side of relay sockets.
pub trait RelayPorts {
    type Relay;
    fn open(
        &mut self,
        alloc: AllocId,
        req: &RelayRequest,
    ) -> Result<OpenedRelay<Self::Relay>, RelayError>;
    fn close(&mut self, alloc: AllocId, relay: Self::Relay);
}

/// What to do with a datagram from a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientAction {
    /// Nothing to send (dropped, or an indication that produced nothing).
    None,
    /// Send `out[..len]` back to the client.
    Reply(usize),
    /// Send `data[payload]` from allocation `alloc`'s relay socket to `peer`.
    ToPeer {
        alloc: AllocId,
        peer: SocketAddr,
        payload: Range<usize>,
    },
}

/// A peer datagram turned into a client frame: send `frame[range]` to `client`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToClient {
    pub client: ClientKey,
    pub range: Range<usize>,
}

struct Authenticated {
    key: Key,
    kind: IntegrityKind,
    username: Box<str>,
}

pub struct Server<P: RelayPorts> {
    config: Arc<ServerConfig>,
    nonce: NonceKey,
    quota: Arc<UserQuota>,
    allocations: Slab<Allocation<P::Relay>>,
    by_client: HashMap<ClientKey, AllocId>,
    transactions: TransactionCache,
    stats: Stats,
    draining: bool,
    indication_seq: u64,
    challenges: SourceLimiter,
}

fn lifetime_secs(requested: Option<u32>, max: u32) -> u32 {
    let default = 600.min(max);
    match requested {
        Some(r) => r.min(max).max(default),
        None => default,
    }
}

impl<P: RelayPorts> Server<P> {
    pub fn new(config: Arc<ServerConfig>, nonce: NonceKey, quota: Arc<UserQuota>) -> Self {
        let stats = Stats::new(config.counters.len());
        let challenges = SourceLimiter::new(nonce.limiter_key(), CHALLENGE_RATE, CHALLENGE_BURST);
        Server {
            config,
            nonce,
            quota,
            allocations: Slab::new(),
            by_client: HashMap::new(),
            transactions: TransactionCache::default(),
            stats,
            draining: false,
            indication_seq: 0,
            challenges,
        }
    }

    pub fn config(&self) -> &Arc<ServerConfig> {
        &self.config
    }

    pub fn allocation_count(&self) -> usize {
        self.allocations.len()
    }

    pub fn relay(&self, alloc: AllocId) -> Option<&P::Relay> {
        self.allocations.get(alloc).map(|a| &a.relay)
    }

    pub fn allocations(&self) -> impl Iterator<Item = (AllocId, &Allocation<P::Relay>)> {
        self.allocations.iter()
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Hands out the counters gathered since the last call and starts from zero.
    pub fn take_stats(&mut self) -> Stats {
        let fresh = Stats::new(self.config.counters.len());
        std::mem::replace(&mut self.stats, fresh)
    }

    /// Stops accepting new allocations (SIGTERM); existing ones keep relaying.
    pub fn begin_drain(&mut self) {
        self.draining = true;
    }

    // ---------------------------------------------------------------- client datagrams

    /// Processes one datagram (or TCP frame) from a client.
    pub fn handle_client(
        &mut self,
        now: Now,
        client: ClientKey,
        data: &[u8],
        out: &mut [u8],
        ports: &mut P,
    ) -> ClientAction {
        match data.first().map(|b| b >> 6) {
            Some(0b01) => self.handle_channel_data(now, client, data),
            Some(0b00) => match Message::parse(data) {
                Ok(msg) => self.handle_stun(now, client, &msg, out, ports),
                Err(_) => {
                    self.stats.malformed += 1;
                    ClientAction::None
                }
            },
            _ => {
                self.stats.malformed += 1;
                ClientAction::None
            }
        }
    }

    fn handle_channel_data(&mut self, now: Now, client: ClientKey, data: &[u8]) -> ClientAction {
        let Ok((number, payload)) = channel::parse(data) else {
            self.stats.malformed += 1;
            return ClientAction::None;
        };
        let Some(&id) = self.by_client.get(&client) else {
            self.stats.dropped_no_allocation += 1;
            return ClientAction::None;
        };
        let Some(alloc) = self.allocations.get(id) else {
            return ClientAction::None;
        };
        let t = now.instant;
        let Some(ch) = alloc.channel_by_number(number).filter(|c| c.expires > t) else {
            self.stats.dropped_no_permission += 1;
            return ClientAction::None;
        };
        if alloc.permission(ch.peer.ip(), t).is_none() {
            self.stats.dropped_no_permission += 1;
            return ClientAction::None;
        }
        let (peer, counter) = (ch.peer, ch.counter);
        self.stats.count_to_peer(counter, payload.len());
        ClientAction::ToPeer {
            alloc: id,
            peer,
            payload: channel::HEADER_LEN..channel::HEADER_LEN + payload.len(),
        }
    }

    fn handle_stun(
        &mut self,
        now: Now,
        client: ClientKey,
        msg: &Message<'_>,
        out: &mut [u8],
        ports: &mut P,
    ) -> ClientAction {
        match msg.class {
            Class::Request => {}
            Class::Indication => {
                if msg.method == method::SEND {
                    return self.handle_send(now, client, msg);
                }
                return ClientAction::None;
            }
            // Responses are never sent to a server; ignore them silently.
            Class::Success | Class::Error => return ClientAction::None,
        }
        if msg.method != method::BINDING
            && let Some(cached) =
                self.transactions
                    .get(&client, &msg.transaction_id, msg.raw(), now.instant)
        {
            let n = cached.len().min(out.len());
            out[..n].copy_from_slice(&cached[..n]);
            self.stats.retransmits += 1;
            return ClientAction::Reply(n);
        }
        let unknown: Vec<u16> = msg
            .attribute_types()
            .filter(|t| !attr::is_understood(*t))
            .collect();
        if !unknown.is_empty() {
            return ClientAction::Reply(self.error(
                out,
                msg,
                420,
                "Unknown Attribute",
                None,
                |b| {
                    b.attr_with(attr::UNKNOWN_ATTRIBUTES, unknown.len() * 2, |v| {
                        for (i, t) in unknown.iter().enumerate() {
                            v[2 * i..2 * i + 2].copy_from_slice(&t.to_be_bytes());
                        }
                    })
                },
            ));
        }
        let len = match msg.method {
            method::BINDING => self.binding(client, msg, out),
            method::ALLOCATE
            | method::REFRESH
            | method::CREATE_PERMISSION
            | method::CHANNEL_BIND => {
                let auth = match self.authenticate(now, client, msg, out) {
                    Ok(a) => a,
                    Err(0) => return ClientAction::None,
                    Err(len) => return ClientAction::Reply(len),
                };
                let len = match msg.method {
                    method::ALLOCATE => self.allocate(now, client, msg, &auth, out, ports),
                    method::REFRESH => self.refresh(now, client, msg, &auth, out, ports),
                    method::CREATE_PERMISSION => {
                        self.create_permission(now, client, msg, &auth, out)
                    }
                    _ => self.channel_bind(now, client, msg, &auth, out),
                };
                if len > 0 {
                    self.transactions.insert(
                        client,
                        msg.transaction_id,
                        msg.raw(),
                        &out[..len],
                        now.instant,
                    );
                }
                len
            }
            _ => self.error(out, msg, 400, "Unsupported Method", None, |_| {}),
        };
        if len == 0 {
            ClientAction::None
        } else {
            ClientAction::Reply(len)
        }
    }

    /// Builds a response of `class`, signed when the request authenticated.
    fn respond(
        &self,
        out: &mut [u8],
        msg: &Message<'_>,
        class: Class,
        auth: Option<&Authenticated>,
        body: impl FnOnce(&mut MessageBuilder<'_>),
    ) -> usize {
        let mut b = MessageBuilder::new(out, msg.method, class, &msg.transaction_id);
        body(&mut b);
        if let Some(a) = auth {
            b.integrity(a.key.as_bytes(), a.kind == IntegrityKind::Sha256);
        }
        b.finish(msg.has(attr::FINGERPRINT)).unwrap_or(0)
    }

    /// Builds an error response; signed when the request authenticated.
    fn error(
        &self,
        out: &mut [u8],
        msg: &Message<'_>,
        code: u16,
        reason: &str,
        auth: Option<&Authenticated>,
        extra: impl FnOnce(&mut MessageBuilder<'_>),
    ) -> usize {
        self.respond(out, msg, Class::Error, auth, |b| {
            b.error_code(code, reason);
            extra(b);
        })
    }

    /// 401/438 with a fresh nonce and the realm, so the client can (re)try. Rate-limited
    /// per source IP (returns 0, i.e. no answer, beyond the limit).
    fn challenge(
        &mut self,
        now: Now,
        client: ClientKey,
        msg: &Message<'_>,
        out: &mut [u8],
        code: u16,
    ) -> usize {
        if !self.challenges.allow(client.addr.ip(), now.instant) {
            self.stats.challenges_suppressed += 1;
            return 0;
        }
        let reason = if code == 438 {
            "Stale Nonce"
        } else {
            "Unauthorized"
        };
        let nonce = self.nonce.issue(now.unix, &client.addr);
        let realm = self.config.realm.as_bytes();
        self.error(out, msg, code, reason, None, |b| {
            b.attr(attr::REALM, realm);
            b.attr(attr::NONCE, &nonce);
        })
    }

    fn binding(&mut self, client: ClientKey, msg: &Message<'_>, out: &mut [u8]) -> usize {
        self.respond(out, msg, Class::Success, None, |b| {
            b.xor_address(attr::XOR_MAPPED_ADDRESS, client.addr)
        })
    }

    fn authenticate(
        &mut self,
        now: Now,
        client: ClientKey,
        msg: &Message<'_>,
        out: &mut [u8],
    ) -> Result<Authenticated, usize> {
        let Some(kind) = integrity::integrity_kind(msg) else {
            return Err(self.challenge(now, client, msg, out, 401));
        };
        let (Some(username), Some(realm), Some(nonce)) = (
            msg.get(attr::USERNAME),
            msg.get(attr::REALM),
            msg.get(attr::NONCE),
        ) else {
            return Err(self.error(
                out,
                msg,
                400,
                "Missing USERNAME, REALM or NONCE",
                None,
                |_| {},
            ));
        };
        if self.nonce.check(nonce, now.unix, &client.addr) == NonceCheck::Stale {
            return Err(self.challenge(now, client, msg, out, 438));
        }
        let Ok(username) = std::str::from_utf8(username) else {
            return Err(self.error(out, msg, 400, "USERNAME is not UTF-8", None, |_| {}));
        };
        let alg = match msg.get(attr::PASSWORD_ALGORITHM) {
            None => PasswordAlgorithm::Md5,
            Some(v) if v.len() >= 4 && v[0..2] == [0, 1] => PasswordAlgorithm::Md5,
            Some(v) if v.len() >= 4 && v[0..2] == [0, 2] => PasswordAlgorithm::Sha256,
            Some(_) => {
                return Err(self.error(out, msg, 400, "Unknown PASSWORD-ALGORITHM", None, |_| {}));
            }
        };
        // An allocation keeps the key (and realm) it was created with: later requests are
        // checked against it first, so rotating the secret or the realm never breaks a
        // running allocation. Fresh credentials under the current realm also do, and then
        // replace the stored key.
        let existing_id = self.by_client.get(&client).copied();
        let existing = existing_id.and_then(|id| self.allocations.get(id));
        let same_user = existing.is_some_and(|a| &*a.username == username);
        if let Some(a) = existing
            && same_user
            && alg == PasswordAlgorithm::Md5
            && realm == a.realm.as_bytes()
            && integrity::verify(msg, a.key.as_bytes(), kind)
        {
            return Ok(Authenticated {
                key: a.key.clone(),
                kind,
                username: a.username.clone(),
            });
        }
        let had_allocation = existing.is_some();
        if realm != self.config.realm.as_bytes() {
            self.stats.auth_failures += 1;
            return Err(self.challenge(now, client, msg, out, 401));
        }
        let keys = match self
            .config
            .credentials
            .keys(username, &self.config.realm, alg, now.unix)
        {
            Ok(k) => k,
            Err(e) => {
                tracing::debug!(client = %client.addr, username, reason = ?e, "authentication failed");
                self.stats.auth_failures += 1;
                return Err(self.challenge(now, client, msg, out, 401));
            }
        };
        let Some(key) = keys
            .into_iter()
            .find(|k| integrity::verify(msg, k.as_bytes(), kind))
        else {
            tracing::debug!(client = %client.addr, username, "authentication failed: integrity mismatch");
            self.stats.auth_failures += 1;
            return Err(self.challenge(now, client, msg, out, 401));
        };
        let auth = Authenticated {
            key,
            kind,
            username: username.into(),
        };
        if had_allocation && !same_user && msg.method != method::ALLOCATE {
            // Valid credentials, but not the ones that created this allocation. (A new
            // Allocate on a taken 5-tuple is answered 437 by `allocate` instead.)
            self.stats.auth_failures += 1;
            return Err(self.error(out, msg, 441, "Wrong Credentials", Some(&auth), |_| {}));
        }
        if same_user && let Some(a) = existing_id.and_then(|id| self.allocations.get_mut(id)) {
            a.key = auth.key.clone();
            a.realm = self.config.realm.as_str().into();
        }
        Ok(auth)
    }

    fn success(
        &self,
        out: &mut [u8],
        msg: &Message<'_>,
        auth: &Authenticated,
        body: impl FnOnce(&mut MessageBuilder<'_>),
    ) -> usize {
        self.respond(out, msg, Class::Success, Some(auth), body)
    }

    fn allocate(
        &mut self,
        now: Now,
        client: ClientKey,
        msg: &Message<'_>,
        auth: &Authenticated,
        out: &mut [u8],
        ports: &mut P,
    ) -> usize {
        let a = Some(auth);
        if self.by_client.contains_key(&client) {
            return self.error(out, msg, 437, "Allocation Mismatch", a, |_| {});
        }
        match msg.get(attr::REQUESTED_TRANSPORT) {
            None => return self.error(out, msg, 400, "Missing REQUESTED-TRANSPORT", a, |_| {}),
            Some(v) if v.len() != 4 => {
                return self.error(out, msg, 400, "Bad REQUESTED-TRANSPORT", a, |_| {});
            }
            Some(v) if v[0] != 17 => {
                return self.error(out, msg, 442, "Unsupported Transport Protocol", a, |_| {});
            }
            Some(_) => {}
        }
        let even_port = match msg.get(attr::EVEN_PORT) {
            None => None,
            Some(v) if v.len() == 1 => Some(v[0] & 0x80 != 0),
            Some(_) => return self.error(out, msg, 400, "Bad EVEN-PORT", a, |_| {}),
        };
        let reservation = match msg.get(attr::RESERVATION_TOKEN) {
            None => None,
            Some(v) => match <[u8; 8]>::try_from(v) {
                Ok(t) => Some(u64::from_be_bytes(t)),
                Err(_) => return self.error(out, msg, 400, "Bad RESERVATION-TOKEN", a, |_| {}),
            },
        };
        let family = match msg.get(attr::REQUESTED_ADDRESS_FAMILY) {
            None => Family::V4,
            Some(v) if v.len() == 4 && v[0] == attr::FAMILY_IPV4 => Family::V4,
            Some(v) if v.len() == 4 && v[0] == attr::FAMILY_IPV6 => Family::V6,
            Some(v) if v.len() == 4 => {
                return self.error(out, msg, 440, "Address Family not Supported", a, |_| {});
            }
            Some(_) => return self.error(out, msg, 400, "Bad REQUESTED-ADDRESS-FAMILY", a, |_| {}),
        };
        if reservation.is_some() && (even_port.is_some() || msg.has(attr::REQUESTED_ADDRESS_FAMILY))
        {
            return self.error(
                out,
                msg,
                400,
                "RESERVATION-TOKEN with EVEN-PORT or family",
                a,
                |_| {},
            );
        }
        let requested_lifetime = match msg.get(attr::LIFETIME).map(attr::decode_u32) {
            None => None,
            Some(Ok(l)) => Some(l),
            Some(Err(_)) => return self.error(out, msg, 400, "Bad LIFETIME", a, |_| {}),
        };
        if self.draining {
            return self.error(out, msg, 508, "Insufficient Capacity", a, |_| {});
        }
        let limits = self.config.limits;
        if !self
            .quota
            .acquire(&auth.username, limits.max_allocations_per_user)
        {
            return self.error(out, msg, 486, "Allocation Quota Reached", a, |_| {});
        }
        let req = RelayRequest {
            listener: client.listener,
            family,
            even_port,
            reservation,
            dont_fragment: msg.has(attr::DONT_FRAGMENT),
        };
        let entry = self.allocations.vacant_entry();
        let opened = match ports.open(entry.key(), &req) {
            Ok(o) => o,
            Err(e) => {
                self.quota.release(&auth.username);
                return match e {
                    RelayError::FamilyUnsupported => {
                        self.error(out, msg, 440, "Address Family not Supported", a, |_| {})
                    }
                    RelayError::NoCapacity | RelayError::UnknownReservation => {
                        self.error(out, msg, 508, "Insufficient Capacity", a, |_| {})
                    }
                };
            }
        };
        let lifetime = lifetime_secs(requested_lifetime, limits.max_lifetime_secs);
        let relay_addr = opened.addr;
        let id = entry.key();
        entry.insert(Allocation {
            client,
            relay: opened.relay,
            relay_addr,
            username: auth.username.clone(),
            key: auth.key.clone(),
            realm: self.config.realm.as_str().into(),
            expires: now.instant + std::time::Duration::from_secs(lifetime.into()),
            permissions: Vec::new(),
            channels: Vec::new(),
        });
        self.by_client.insert(client, id);
        self.stats.allocations_created += 1;
        let token = opened.reservation_token;
        self.success(out, msg, auth, |b| {
            b.xor_address(attr::XOR_RELAYED_ADDRESS, relay_addr);
            b.u32_attr(attr::LIFETIME, lifetime);
            if let Some(t) = token {
                b.attr(attr::RESERVATION_TOKEN, &t.to_be_bytes());
            }
            b.xor_address(attr::XOR_MAPPED_ADDRESS, client.addr);
        })
    }

    fn refresh(
        &mut self,
        now: Now,
        client: ClientKey,
        msg: &Message<'_>,
        auth: &Authenticated,
        out: &mut [u8],
        ports: &mut P,
    ) -> usize {
        let a = Some(auth);
        let Some(&id) = self.by_client.get(&client) else {
            return self.error(out, msg, 437, "Allocation Mismatch", a, |_| {});
        };
        let requested = match msg.get(attr::LIFETIME).map(attr::decode_u32) {
            None => None,
            Some(Ok(l)) => Some(l),
            Some(Err(_)) => return self.error(out, msg, 400, "Bad LIFETIME", a, |_| {}),
        };
        if let Some(v) = msg.get(attr::REQUESTED_ADDRESS_FAMILY) {
            let relay_v4 = self
                .allocations
                .get(id)
                .is_some_and(|x| x.relay_addr.is_ipv4());
            let asks_v4 = v.first() == Some(&attr::FAMILY_IPV4);
            if relay_v4 != asks_v4 {
                return self.error(out, msg, 443, "Peer Address Family Mismatch", a, |_| {});
            }
        }
        let lifetime = if requested == Some(0) {
            self.remove_allocation(id, ports);
            0
        } else {
            let l = lifetime_secs(requested, self.config.limits.max_lifetime_secs);
            if let Some(x) = self.allocations.get_mut(id) {
                x.expires = now.instant + std::time::Duration::from_secs(l.into());
            }
            l
        };
        self.success(out, msg, auth, |b| b.u32_attr(attr::LIFETIME, lifetime))
    }

    fn create_permission(
        &mut self,
        now: Now,
        client: ClientKey,
        msg: &Message<'_>,
        auth: &Authenticated,
        out: &mut [u8],
    ) -> usize {
        let a = Some(auth);
        let Some(&id) = self.by_client.get(&client) else {
            return self.error(out, msg, 437, "Allocation Mismatch", a, |_| {});
        };
        let Some(relay_v4) = self.allocations.get(id).map(|x| x.relay_addr.is_ipv4()) else {
            return self.error(out, msg, 437, "Allocation Mismatch", a, |_| {});
        };
        let routes = self.config.routes_of(client.listener);
        let mut granted = Vec::new();
        for v in msg.get_all(attr::XOR_PEER_ADDRESS) {
            let Ok(peer) = attr::decode_xor_address(v, &msg.transaction_id) else {
                return self.error(out, msg, 400, "Bad XOR-PEER-ADDRESS", a, |_| {});
            };
            if peer.ip().to_canonical().is_ipv4() != relay_v4 {
                return self.error(out, msg, 443, "Peer Address Family Mismatch", a, |_| {});
            }
            let Some(m) = routes.and_then(|r| r.match_ip(peer.ip())) else {
                tracing::debug!(client = %client.addr, %peer, "permission denied: peer outside routes");
                self.stats.denied_peers += 1;
                return self.error(out, msg, 403, "Forbidden", a, |_| {});
            };
            granted.push((peer.ip(), m));
        }
        if granted.is_empty() {
            return self.error(out, msg, 400, "Missing XOR-PEER-ADDRESS", a, |_| {});
        }
        let max = self.config.limits.max_permissions_per_allocation;
        let Some(alloc) = self.allocations.get_mut(id) else {
            return self.error(out, msg, 437, "Allocation Mismatch", a, |_| {});
        };
        let new = granted
            .iter()
            .filter(|(ip, _)| alloc.permissions.iter().all(|p| p.ip != ip.to_canonical()))
            .count();
        if alloc.permissions.len() + new > max {
            return self.error(out, msg, 508, "Insufficient Capacity", a, |_| {});
        }
        for (ip, m) in granted {
            alloc.permit(ip, m.counter, m.all_ports, now.instant, max);
        }
        self.success(out, msg, auth, |_| {})
    }

    fn channel_bind(
        &mut self,
        now: Now,
        client: ClientKey,
        msg: &Message<'_>,
        auth: &Authenticated,
        out: &mut [u8],
    ) -> usize {
        let a = Some(auth);
        let Some(&id) = self.by_client.get(&client) else {
            return self.error(out, msg, 437, "Allocation Mismatch", a, |_| {});
        };
        let number = match msg.get(attr::CHANNEL_NUMBER) {
            Some(v)
                if v.len() == 4 && channel::is_valid_channel(u16::from_be_bytes([v[0], v[1]])) =>
            {
                u16::from_be_bytes([v[0], v[1]])
            }
            _ => return self.error(out, msg, 400, "Bad CHANNEL-NUMBER", a, |_| {}),
        };
        let peer = match msg
            .get(attr::XOR_PEER_ADDRESS)
            .map(|v| attr::decode_xor_address(v, &msg.transaction_id))
        {
            Some(Ok(p)) => SocketAddr::new(p.ip().to_canonical(), p.port()),
            _ => return self.error(out, msg, 400, "Bad XOR-PEER-ADDRESS", a, |_| {}),
        };
        let routes = self.config.routes_of(client.listener);
        let max = self.config.limits.max_permissions_per_allocation;
        let Some(alloc) = self.allocations.get_mut(id) else {
            return self.error(out, msg, 437, "Allocation Mismatch", a, |_| {});
        };
        if peer.is_ipv4() != alloc.relay_addr.is_ipv4() {
            return self.error(out, msg, 443, "Peer Address Family Mismatch", a, |_| {});
        }
        let (Some(counter), Some(ip_match)) = (
            routes.and_then(|r| r.match_addr(peer)),
            routes.and_then(|r| r.match_ip(peer.ip())),
        ) else {
            tracing::debug!(client = %client.addr, %peer, "channel denied: peer outside routes");
            self.stats.denied_peers += 1;
            return self.error(out, msg, 403, "Forbidden", a, |_| {});
        };
        let conflict = alloc
            .channels
            .iter()
            .any(|c| (c.number == number) != (c.peer == peer));
        if conflict {
            return self.error(
                out,
                msg,
                400,
                "Channel already bound differently",
                a,
                |_| {},
            );
        }
        if !alloc.permit(
            peer.ip(),
            ip_match.counter,
            ip_match.all_ports,
            now.instant,
            max,
        ) {
            return self.error(out, msg, 508, "Insufficient Capacity", a, |_| {});
        }
        let expires = now.instant + CHANNEL_LIFETIME;
        match alloc.channels.iter_mut().find(|c| c.number == number) {
            Some(c) => {
                c.expires = expires;
                c.counter = counter;
            }
            None => alloc.channels.push(Channel {
                number,
                peer,
                expires,
                counter,
            }),
        }
        self.success(out, msg, auth, |_| {})
    }

    fn handle_send(&mut self, now: Now, client: ClientKey, msg: &Message<'_>) -> ClientAction {
        let Some(&id) = self.by_client.get(&client) else {
            self.stats.dropped_no_allocation += 1;
            return ClientAction::None;
        };
        let (Some(peer), Some(data)) = (msg.get(attr::XOR_PEER_ADDRESS), msg.get(attr::DATA))
        else {
            self.stats.malformed += 1;
            return ClientAction::None;
        };
        let Ok(peer) = attr::decode_xor_address(peer, &msg.transaction_id) else {
            self.stats.malformed += 1;
            return ClientAction::None;
        };
        let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
        let Some(alloc) = self.allocations.get(id) else {
            return ClientAction::None;
        };
        let Some(perm) = alloc.permission(peer.ip(), now.instant) else {
            self.stats.dropped_no_permission += 1;
            return ClientAction::None;
        };
        let counter = if perm.all_ports {
            perm.counter
        } else {
            match self
                .config
                .routes_of(client.listener)
                .and_then(|r| r.match_addr(peer))
            {
                Some(c) => c,
                None => {
                    self.stats.dropped_no_permission += 1;
                    return ClientAction::None;
                }
            }
        };
        let start = data.as_ptr() as usize - msg.raw().as_ptr() as usize;
        self.stats.count_to_peer(counter, data.len());
        ClientAction::ToPeer {
            alloc: id,
            peer,
            payload: start..start + data.len(),
        }
    }

    // ---------------------------------------------------------------- peer datagrams

    /// Wraps a datagram a relay socket received from `peer` for its client. The payload
    /// must sit at `frame[PEER_HEADROOM..PEER_HEADROOM + len]` with [`PEER_TAILROOM`] bytes
    /// free after it. Returns `None` when the peer has no permission (dropped).
    pub fn handle_peer(
        &mut self,
        now: Now,
        id: AllocId,
        peer: SocketAddr,
        frame: &mut [u8],
        len: usize,
    ) -> Option<ToClient> {
        let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
        let alloc = self.allocations.get(id)?;
        let t = now.instant;
        let Some(perm) = alloc.permission(peer.ip(), t) else {
            self.stats.dropped_no_permission += 1;
            return None;
        };
        let counter = if perm.all_ports {
            perm.counter
        } else {
            match self
                .config
                .routes_of(alloc.client.listener)
                .and_then(|r| r.match_addr(peer))
            {
                Some(c) => c,
                None => {
                    self.stats.dropped_no_permission += 1;
                    return None;
                }
            }
        };
        let client = alloc.client;
        let end = PEER_HEADROOM + len;
        if frame.len() < end + PEER_TAILROOM || len > u16::MAX as usize - 64 {
            self.stats.malformed += 1;
            return None;
        }
        let range = if let Some(ch) = alloc.channel_by_peer(peer, t) {
            let start = PEER_HEADROOM - channel::HEADER_LEN;
            channel::write_header(&mut frame[start..PEER_HEADROOM], ch.number, len);
            // Stream transports need ChannelData padded to 4 bytes (RFC 8656 §12.5).
            let padded = if matches!(client.transport, super::allocation::Transport::Stream(_)) {
                let p = (len + 3) & !3;
                frame[end..PEER_HEADROOM + p].fill(0);
                PEER_HEADROOM + p
            } else {
                end
            };
            start..padded
        } else {
            self.data_indication(peer, frame, len)
        };
        self.stats.count_to_client(counter, len);
        Some(ToClient { client, range })
    }

    fn data_indication(&mut self, peer: SocketAddr, frame: &mut [u8], len: usize) -> Range<usize> {
        let addr_len = attr::xor_address_len(&peer);
        let header_len = message::HEADER_LEN + 4 + addr_len + 4;
        let start = PEER_HEADROOM - header_len;
        self.indication_seq = self.indication_seq.wrapping_add(1);
        let mut tid = [0u8; 12];
        tid[4..].copy_from_slice(&self.indication_seq.to_be_bytes());
        let padded = (len + 3) & !3;
        let body_len = header_len - message::HEADER_LEN + padded;
        {
            let mut b = MessageBuilder::new(
                &mut frame[start..PEER_HEADROOM - 4],
                method::DATA,
                Class::Indication,
                &tid,
            );
            b.xor_address(attr::XOR_PEER_ADDRESS, peer);
        }
        frame[start + 2..start + 4].copy_from_slice(&(body_len as u16).to_be_bytes());
        let data_hdr = PEER_HEADROOM - 4;
        frame[data_hdr..data_hdr + 2].copy_from_slice(&attr::DATA.to_be_bytes());
        frame[data_hdr + 2..PEER_HEADROOM].copy_from_slice(&(len as u16).to_be_bytes());
        frame[PEER_HEADROOM + len..PEER_HEADROOM + padded].fill(0);
        start..PEER_HEADROOM + padded
    }

    // ---------------------------------------------------------------- housekeeping

    fn remove_allocation(&mut self, id: AllocId, ports: &mut P) {
        if self.allocations.contains(id) {
            let a = self.allocations.remove(id);
            self.by_client.remove(&a.client);
            self.quota.release(&a.username);
            ports.close(id, a.relay);
            self.stats.allocations_deleted += 1;
        }
    }

    pub fn has_allocation(&self, client: &ClientKey) -> bool {
        self.by_client.contains_key(client)
    }

    /// Removes the allocation of a client whose stream connection closed.
    pub fn client_gone(&mut self, client: &ClientKey, ports: &mut P) {
        if let Some(&id) = self.by_client.get(client) {
            self.remove_allocation(id, ports);
        }
    }

    /// Expires allocations, permissions, channels and cached transactions. Call about once
    /// a second.
    pub fn tick(&mut self, now: Now, ports: &mut P) {
        let t = now.instant;
        let expired: Vec<AllocId> = self
            .allocations
            .iter()
            .filter(|(_, a)| a.expires <= t)
            .map(|(id, _)| id)
            .collect();
        for id in expired {
            self.remove_allocation(id, ports);
        }
        for (_, a) in self.allocations.iter_mut() {
            a.sweep(t);
        }
        self.transactions.purge(t);
    }

    /// Applies a new configuration hitlessly: allocations on listeners that still exist keep
    /// their relay; permissions and channels whose peer is no longer routed are removed.
    /// Call [`Server::take_stats`] first: counter indexes change with the config.
    pub fn apply_config(&mut self, config: Arc<ServerConfig>, ports: &mut P) {
        let remap: Vec<Option<u16>> = self
            .config
            .listeners
            .iter()
            .map(|l| config.listener_index(&l.name))
            .collect();
        let ids: Vec<AllocId> = self.allocations.iter().map(|(id, _)| id).collect();
        self.by_client.clear();
        let mut removed_peers = 0;
        for id in ids {
            let new_listener = self
                .allocations
                .get(id)
                .and_then(|a| remap.get(a.client.listener as usize).copied().flatten());
            match new_listener {
                None => {
                    if self.allocations.contains(id) {
                        let a = self.allocations.remove(id);
                        self.quota.release(&a.username);
                        ports.close(id, a.relay);
                        self.stats.allocations_deleted += 1;
                    }
                }
                Some(l) => {
                    if let Some(a) = self.allocations.get_mut(id) {
                        a.client.listener = l;
                        if let Some(routes) = config.routes_of(l) {
                            removed_peers += a.recheck(routes);
                        }
                        self.by_client.insert(a.client, id);
                    }
                }
            }
        }
        self.transactions.clear();
        self.stats = Stats::new(config.counters.len());
        self.stats.peers_revoked += removed_peers as u64;
        self.config = config;
    }

    /// Relay counter id → (listener, route) labels of the current config.
    pub fn counter_labels(&self) -> &[(String, String)] {
        &self.config.counters
    }

    pub fn counter_of(&self, id: CounterId) -> Option<&(String, String)> {
        self.config.counters.get(id as usize)
    }
}
