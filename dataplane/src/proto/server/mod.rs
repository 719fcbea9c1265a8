//! The TURN server state machine of one worker. No I/O, no clock: the shell passes in the
//! time, the datagrams and a [`RelayPorts`] that opens relay sockets; the server answers
//! with a [`Transmit`], which the shell sends in one place whatever its direction.
//!
//! Split by concern, as quinn-proto splits its connection: [`auth`] (challenges and
//! credentials), [`allocate`] (Allocate and Refresh), [`permissions`] (CreatePermission,
//! ChannelBind and the route check both directions share), [`relay`] (ChannelData, Send and
//! Data indications); this file holds the dispatch, the answers and the housekeeping.

mod allocate;
mod auth;
mod permissions;
mod relay;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

use slab::Slab;

use super::access::CounterId;
use super::allocation::{AllocId, Allocation, ClientKey};
use super::attr;
use super::config::{ServerConfig, UserQuota};
use super::error::{ErrorCode, RelayError};
use super::message::{Class, Message, MessageBuilder, method};
use super::nonce::NonceKey;
use super::offload::{self, OffloadEvent};
use super::ratelimit::{CHALLENGE_BURST, CHALLENGE_RATE, SourceLimiter};
use super::stats::{AllocationEnd, AllocationRefusal, RelayCount, Stats};

pub use super::attr::Family;
use auth::Authenticated;

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

/// A datagram (or stream frame) the server wants sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub destination: Destination,
    pub payload: Payload,
}

/// Where a [`Transmit`] goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// To a client, through the listener socket (UDP) or the connection (TCP/TLS) it uses.
    Client(ClientKey),
    /// To a peer, from the relay socket of allocation `alloc`.
    Peer { alloc: AllocId, peer: SocketAddr },
}

/// Which bytes a [`Transmit`] sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// `out[range]`: an answer the server wrote into the output buffer.
    Written(Range<usize>),
    /// `input[range]`: relayed in place from the buffer the shell passed in (the client's
    /// datagram for client → peer, the framed peer datagram for peer → client).
    InPlace(Range<usize>),
}

impl Transmit {
    fn to_client(client: ClientKey, reply: Reply) -> Option<Transmit> {
        match reply {
            Reply::Silent => None,
            Reply::Send(len) => Some(Transmit {
                destination: Destination::Client(client),
                payload: Payload::Written(0..len),
            }),
        }
    }
}

/// An authenticated request being answered: when, from whom, what, and the key its answer
/// is signed with.
#[derive(Clone, Copy)]
struct Request<'a, 'm> {
    now: Now,
    client: ClientKey,
    msg: &'a Message<'m>,
    auth: &'a Authenticated,
}

impl<'a, 'm> Request<'a, 'm> {
    fn parts(self) -> (Now, ClientKey, &'a Message<'m>, &'a Authenticated) {
        (self.now, self.client, self.msg, self.auth)
    }
}

/// The answer to a request: nothing (rate-limited challenge, or no room to write it), or a
/// response of `len` bytes at the start of the output buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
enum Reply {
    Silent,
    Send(usize),
}

impl Reply {
    fn written(len: Option<usize>) -> Reply {
        len.map_or(Reply::Silent, Reply::Send)
    }
}

pub struct Server<P: RelayPorts> {
    config: Arc<ServerConfig>,
    nonce: NonceKey,
    quota: Arc<UserQuota>,
    allocations: Slab<Allocation<P::Relay>>,
    by_client: HashMap<ClientKey, AllocId>,
    stats: Stats,
    draining: bool,
    indication_seq: u64,
    /// Generation of the next allocation's [`AllocId`].
    generation: u32,
    challenges: SourceLimiter,
    /// Whether the shell relays channels in the kernel; then every change of what may be
    /// relayed there is queued in `offload_events` for the shell to apply.
    offload: bool,
    offload_events: Vec<OffloadEvent>,
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
            stats,
            draining: false,
            indication_seq: 0,
            generation: 0,
            challenges,
            offload: false,
            offload_events: Vec::new(),
        }
    }

    /// Turns kernel offload on or off; existing channels are installed or removed.
    pub fn set_offload(&mut self, enabled: bool, now: Instant) {
        self.offload = enabled;
        for (_, a) in self.allocations.iter_mut() {
            offload::sync(a, enabled, now, &mut self.offload_events);
        }
    }

    /// What the kernel must install and remove, oldest first: apply them in this order
    /// before relaying further.
    pub fn offload_events(&mut self) -> std::vec::Drain<'_, OffloadEvent> {
        self.offload_events.drain(..)
    }

    /// Re-evaluates what the kernel may relay for allocation `id` after its state changed.
    fn sync_offload(&mut self, id: AllocId, now: Instant) {
        if let Some(a) = live_mut(&mut self.allocations, id) {
            offload::sync(a, self.offload, now, &mut self.offload_events);
        }
    }

    pub fn config(&self) -> &Arc<ServerConfig> {
        &self.config
    }

    pub fn allocation_count(&self) -> usize {
        self.allocations.len()
    }

    pub fn relay(&self, alloc: AllocId) -> Option<&P::Relay> {
        self.allocation(alloc).map(|a| &a.relay)
    }

    pub fn allocations(&self) -> impl Iterator<Item = (AllocId, &Allocation<P::Relay>)> {
        self.allocations.iter().map(|(_, a)| (a.id, a))
    }

    /// The allocation in `slot` now (a relay socket's poll token names only the slot).
    pub fn allocation_in(&self, slot: usize) -> Option<AllocId> {
        self.allocations.get(slot).map(|a| a.id)
    }

    fn allocation(&self, id: AllocId) -> Option<&Allocation<P::Relay>> {
        self.allocations.get(id.slot()).filter(|a| a.id == id)
    }

    fn allocation_mut(&mut self, id: AllocId) -> Option<&mut Allocation<P::Relay>> {
        live_mut(&mut self.allocations, id)
    }

    /// The allocation of `client`, with its id.
    fn allocation_of(&self, client: &ClientKey) -> Option<(AllocId, &Allocation<P::Relay>)> {
        let id = *self.by_client.get(client)?;
        self.allocation(id).map(|a| (id, a))
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

    /// Processes one datagram (or TCP frame) from a client. A [`Payload::InPlace`] answer
    /// refers to `data`, a [`Payload::Written`] one to `out`.
    pub fn handle_client(
        &mut self,
        now: Now,
        client: ClientKey,
        data: &[u8],
        out: &mut [u8],
        ports: &mut P,
    ) -> Option<Transmit> {
        match data.first().map(|b| b >> 6) {
            Some(0b01) => self.handle_channel_data(now, client, data),
            Some(0b00) => match Message::parse(data) {
                Ok(msg) => match msg.class {
                    Class::Request => {
                        let reply = self.handle_request(now, client, &msg, out, ports);
                        Transmit::to_client(client, reply)
                    }
                    Class::Indication if msg.method == method::SEND => {
                        self.handle_send(now, client, &msg)
                    }
                    // Other indications carry nothing for a server; responses are never
                    // sent to one. Both are ignored silently.
                    Class::Indication | Class::Success | Class::Error => None,
                },
                Err(_) => {
                    self.stats.malformed += 1;
                    None
                }
            },
            _ => {
                self.stats.malformed += 1;
                None
            }
        }
    }

    fn handle_request(
        &mut self,
        now: Now,
        client: ClientKey,
        msg: &Message<'_>,
        out: &mut [u8],
        ports: &mut P,
    ) -> Reply {
        if let Some(reply) = self.reject_unknown_attributes(msg, out) {
            return reply;
        }
        match msg.method {
            method::BINDING => self.respond(out, msg, Class::Success, None, |b| {
                b.xor_address(attr::XOR_MAPPED_ADDRESS, client.addr)
            }),
            method::ALLOCATE
            | method::REFRESH
            | method::CREATE_PERMISSION
            | method::CHANNEL_BIND => {
                let auth = match self.authenticate(now, client, msg, out) {
                    Ok(a) => a,
                    Err(reply) => return reply,
                };
                self.stats.authenticated += 1;
                let req = Request {
                    now,
                    client,
                    msg,
                    auth: &auth,
                };
                // Only Allocate is not idempotent: its retransmission is recognised by
                // the allocation it created (see `allocate`). CreatePermission,
                // ChannelBind and Refresh simply run again (a repeated delete gets 437,
                // which RFC 8656 §7.3 tells clients to take as success), so no answer is
                // kept per request.
                match msg.method {
                    method::ALLOCATE => self.allocate(req, out, ports),
                    method::REFRESH => self.refresh(req, out, ports),
                    method::CREATE_PERMISSION => self.create_permission(req, out),
                    _ => self.channel_bind(req, out),
                }
            }
            _ => self.error(out, msg, ErrorCode::UNSUPPORTED_METHOD, None),
        }
    }

    /// 420 listing the comprehension-required attributes this server does not know.
    fn reject_unknown_attributes(&self, msg: &Message<'_>, out: &mut [u8]) -> Option<Reply> {
        let unknown: Vec<u16> = msg
            .attribute_types()
            .filter(|t| !attr::is_understood(*t))
            .collect();
        if unknown.is_empty() {
            return None;
        }
        Some(self.respond(out, msg, Class::Error, None, |b| {
            b.error_code(ErrorCode::UNKNOWN_ATTRIBUTE);
            b.attr_with(attr::UNKNOWN_ATTRIBUTES, unknown.len() * 2, |v| {
                for (pair, t) in v.chunks_exact_mut(2).zip(&unknown) {
                    pair.copy_from_slice(&t.to_be_bytes());
                }
            })
        }))
    }

    // ---------------------------------------------------------------- answers

    /// Builds a response of `class`, signed when the request authenticated.
    fn respond(
        &self,
        out: &mut [u8],
        msg: &Message<'_>,
        class: Class,
        auth: Option<&Authenticated>,
        body: impl FnOnce(&mut MessageBuilder<'_>),
    ) -> Reply {
        let mut b = MessageBuilder::new(out, msg.method, class, &msg.transaction_id);
        body(&mut b);
        if let Some(a) = auth {
            a.sign(&mut b);
        }
        Reply::written(b.finish(msg.has(attr::FINGERPRINT)))
    }

    /// An error response; signed when the request authenticated.
    fn error(
        &self,
        out: &mut [u8],
        msg: &Message<'_>,
        code: ErrorCode,
        auth: Option<&Authenticated>,
    ) -> Reply {
        self.respond(out, msg, Class::Error, auth, |b| b.error_code(code))
    }

    /// A signed success response.
    fn success(
        &self,
        out: &mut [u8],
        msg: &Message<'_>,
        auth: &Authenticated,
        body: impl FnOnce(&mut MessageBuilder<'_>),
    ) -> Reply {
        self.respond(out, msg, Class::Success, Some(auth), body)
    }

    // ---------------------------------------------------------------- housekeeping

    /// An authenticated Allocate from `client` was refused.
    fn refused(&mut self, client: ClientKey, why: AllocationRefusal) {
        if let Some(l) = self.config.listeners.get(usize::from(client.listener)) {
            self.stats.allocation_refused(&l.name, why);
        }
    }

    /// Ends allocation `id` (`how`, at `now`): its quota, its relay socket and its
    /// client's index entry.
    fn remove_allocation(&mut self, id: AllocId, ports: &mut P, now: Instant, how: AllocationEnd) {
        if self.allocation(id).is_none() {
            return;
        }
        let a = self.allocations.remove(id.slot());
        if let Some(l) = self.config.listeners.get(usize::from(a.client.listener)) {
            let lived = now.saturating_duration_since(a.created);
            self.stats.allocation_ended(&l.name, how, lived);
            tracing::info!(
                event = "allocation_deleted",
                listener = %l.name,
                client = %a.client.addr,
                relay = %a.relay_addr,
                user = %a.username,
                reason = how.as_str(),
                lived_seconds = lived.as_secs(),
                "allocation deleted"
            );
        }
        offload::remove_all(&a, &mut self.offload_events);
        if self.by_client.get(&a.client) == Some(&id) {
            self.by_client.remove(&a.client);
        }
        self.quota.release(&a.username);
        ports.close(id, a.relay);
    }

    pub fn has_allocation(&self, client: &ClientKey) -> bool {
        self.by_client.contains_key(client)
    }

    /// Removes the allocation of a client whose stream connection closed at `now`.
    pub fn client_gone(&mut self, client: &ClientKey, ports: &mut P, now: Instant) {
        if let Some(&id) = self.by_client.get(client) {
            self.remove_allocation(id, ports, now, AllocationEnd::Closed);
        }
    }

    /// Expires allocations, permissions and channels. Call about once
    /// a second.
    pub fn tick(&mut self, now: Now, ports: &mut P) {
        let t = now.instant;
        let expired: Vec<AllocId> = self
            .allocations()
            .filter(|(_, a)| a.expires <= t)
            .map(|(id, _)| id)
            .collect();
        for id in expired {
            self.remove_allocation(id, ports, t, AllocationEnd::Expired);
        }
        for (_, a) in self.allocations.iter_mut() {
            offload::sync(a, self.offload, t, &mut self.offload_events);
            a.sweep(t);
        }
    }

    /// Applies a new configuration hitlessly: allocations on listeners that still exist keep
    /// their relay; permissions and channels whose peer is no longer routed are removed
    /// (from the kernel too, at once). Call [`Server::take_stats`] first: counter indexes
    /// change with the config.
    pub fn apply_config(&mut self, config: Arc<ServerConfig>, now: Instant, ports: &mut P) {
        let remap: Vec<Option<u16>> = self
            .config
            .listeners
            .iter()
            .map(|l| config.listener_index(&l.name))
            .collect();
        let moves: Vec<(AllocId, Option<u16>)> = self
            .allocations()
            .map(|(id, a)| (id, remap.get(a.client.listener as usize).copied().flatten()))
            .collect();
        self.by_client.clear();
        let mut removed_peers = 0;
        let mut unoffloaded = Vec::new();
        for (id, new_listener) in moves {
            let Some(l) = new_listener else {
                self.remove_allocation(id, ports, now, AllocationEnd::ListenerRemoved);
                continue;
            };
            if let Some(a) = live_mut(&mut self.allocations, id) {
                a.client.listener = l;
                if let Some(routes) = config.routes_of(l) {
                    removed_peers += a.recheck(routes, &mut unoffloaded);
                }
                self.offload_events.extend(
                    unoffloaded
                        .drain(..)
                        .map(|channel| OffloadEvent::Remove { alloc: id, channel }),
                );
                // Counters are renumbered with the config: the kernel's entries follow.
                offload::sync(a, self.offload, now, &mut self.offload_events);
                self.by_client.insert(a.client, id);
            }
        }
        // Relay counters are renumbered with the config (the shell took them first); the
        // allocations ended here stay counted.
        self.stats.relay = vec![RelayCount::default(); config.counters.len()];
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

/// Allocation `id` if it is still the one in its slot; a free function so callers can hold
/// other fields of the server at the same time.
fn live_mut<R>(allocations: &mut Slab<Allocation<R>>, id: AllocId) -> Option<&mut Allocation<R>> {
    allocations.get_mut(id.slot()).filter(|a| a.id == id)
}

/// The lifetime an allocation gets: the request clamped to the maximum, and never below
/// the default (RFC 8656 §7.2: a shorter request gets the default).
fn lifetime_secs(requested: Option<u32>, max: u32) -> u32 {
    let default = 600.min(max);
    match requested {
        Some(r) => r.min(max).max(default),
        None => default,
    }
}
