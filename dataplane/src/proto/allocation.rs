//! Allocation state: permissions and channel bindings (RFC 8656 §9, §12).

use super::message::TransactionId;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::access::{CounterId, RouteTable};
use super::integrity::Key;
use super::offload::Offloaded;

pub const PERMISSION_LIFETIME: Duration = Duration::from_secs(300);
pub const CHANNEL_LIFETIME: Duration = Duration::from_secs(600);
/// After a channel expires, its number and peer stay reserved this long (RFC 8656 §12).
pub const CHANNEL_COOLDOWN: Duration = Duration::from_secs(300);

/// An allocation inside one worker: its slot and a generation, so a packet queued for an
/// allocation that ended never leaves through the relay socket of the next one in its slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AllocId {
    slot: u32,
    generation: u32,
}

impl AllocId {
    pub(crate) const fn new(slot: usize, generation: u32) -> Self {
        AllocId {
            slot: slot as u32,
            generation,
        }
    }

    /// The slot, which the shell uses as the relay socket's poll token.
    pub const fn slot(self) -> usize {
        self.slot as usize
    }
}

/// A TCP/TLS connection inside one worker: its slot and a per-worker sequence number, so a
/// slot reused by a new connection never receives frames meant for the old one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnId {
    pub slot: u32,
    pub seq: u32,
}

/// How a client reached the server: UDP from an address, or one TCP/TLS connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Stream(ConnId),
}

/// The 5-tuple an allocation belongs to (the server side is the listener).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientKey {
    pub listener: u16,
    pub transport: Transport,
    pub addr: SocketAddr,
}

#[derive(Debug, Clone)]
pub struct Permission {
    pub ip: IpAddr,
    pub expires: Instant,
    pub counter: CounterId,
    pub all_ports: bool,
}

#[derive(Debug, Clone)]
pub struct Channel {
    pub number: u16,
    pub peer: SocketAddr,
    pub expires: Instant,
    pub counter: CounterId,
    /// What the kernel holds for this channel (`None`: relayed in userspace only).
    pub offloaded: Option<Offloaded>,
}

#[derive(Debug)]
pub struct Allocation<R> {
    pub id: AllocId,
    pub client: ClientKey,
    pub relay: R,
    pub relay_addr: SocketAddr,
    pub username: Box<str>,
    pub key: Key,
    /// The realm `key` was derived under.
    pub realm: Box<str>,
    pub expires: Instant,
    pub permissions: Vec<Permission>,
    pub channels: Vec<Channel>,
    /// The Allocate that created it, and what its answer granted: a retransmission of
    /// that request is answered again from these (RFC 8656 §7.2), byte for byte, without
    /// keeping the answer itself.
    pub created_by: TransactionId,
    pub granted_lifetime: u32,
    pub reservation_token: Option<u64>,
    /// When it was created (for its lifetime when it ends).
    pub created: Instant,
}

impl<R> Allocation<R> {
    /// The live permission covering `ip`, if any.
    pub fn permission(&self, ip: IpAddr, now: Instant) -> Option<&Permission> {
        let ip = ip.to_canonical();
        self.permissions
            .iter()
            .find(|p| p.ip == ip && p.expires > now)
    }

    pub fn channel_by_number(&self, number: u16) -> Option<&Channel> {
        self.channels.iter().find(|c| c.number == number)
    }

    pub fn channel_by_peer(&self, peer: SocketAddr, now: Instant) -> Option<&Channel> {
        self.channels
            .iter()
            .find(|c| c.peer == peer && c.expires > now)
    }

    /// Installs or refreshes a permission. Returns false when `max` would be exceeded.
    pub fn permit(
        &mut self,
        ip: IpAddr,
        counter: CounterId,
        all_ports: bool,
        now: Instant,
        max: usize,
    ) -> bool {
        let ip = ip.to_canonical();
        let expires = now + PERMISSION_LIFETIME;
        if let Some(p) = self.permissions.iter_mut().find(|p| p.ip == ip) {
            p.expires = expires;
            p.counter = counter;
            p.all_ports = all_ports;
            return true;
        }
        if self.permissions.len() >= max {
            return false;
        }
        grow_by_doubling(&mut self.permissions);
        self.permissions.push(Permission {
            ip,
            expires,
            counter,
            all_ports,
        });
        true
    }

    /// Adds a channel (the caller checked that neither its number nor its peer is bound).
    pub fn bind_channel(&mut self, channel: Channel) {
        grow_by_doubling(&mut self.channels);
        self.channels.push(channel);
    }

    /// Drops expired permissions and channels past their cool-down (by then the kernel no
    /// longer holds them: a channel leaves it when it expires, see `offload::sync`).
    pub fn sweep(&mut self, now: Instant) {
        self.permissions.retain(|p| p.expires > now);
        self.channels.retain(|c| c.expires + CHANNEL_COOLDOWN > now);
    }

    /// Re-checks permissions and channels against a new route table; returns how many were
    /// removed because their peer is no longer allowed. The numbers of removed channels the
    /// kernel held go to `unoffloaded`.
    pub fn recheck(&mut self, routes: &RouteTable, unoffloaded: &mut Vec<u16>) -> usize {
        let before = self.permissions.len() + self.channels.len();
        self.permissions
            .retain_mut(|p| match routes.match_ip(p.ip) {
                Some(m) => {
                    p.counter = m.counter;
                    p.all_ports = m.all_ports;
                    true
                }
                None => false,
            });
        self.channels
            .retain_mut(|c| match routes.match_addr(c.peer) {
                Some(counter) => {
                    c.counter = counter;
                    true
                }
                None => {
                    if c.offloaded.is_some() {
                        unoffloaded.push(c.number);
                    }
                    false
                }
            });
        before - self.permissions.len() - self.channels.len()
    }
}

/// Makes room for one more element, growing 1, 2, 4, 8…: `Vec::push` starts at 4, which
/// for the one or two permissions and channels of a typical call holds a few hundred bytes
/// per allocation that are never used.
fn grow_by_doubling<T>(v: &mut Vec<T>) {
    if v.len() == v.capacity() {
        v.reserve_exact(v.len().max(1));
    }
}
