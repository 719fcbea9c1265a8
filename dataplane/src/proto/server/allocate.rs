//! Allocate and Refresh (RFC 8656 §7): relay sockets from the shell, lifetimes, the
//! per-user quota and draining.

use std::net::SocketAddr;
use std::time::Duration;

use super::{
    Authenticated, Family, RelayPorts, RelayRequest, Reply, Request, Server, lifetime_secs,
};
use crate::proto::allocation::{AllocId, Allocation, ClientKey};
use crate::proto::attr;
use crate::proto::error::ErrorCode;
use crate::proto::message::Message;
use crate::proto::stats::{AllocationEnd, AllocationRefusal};

/// What an Allocate asks for, decoded from its attributes.
struct AllocateRequest {
    family: Family,
    even_port: Option<bool>,
    reservation: Option<u64>,
    lifetime: Option<u32>,
}

/// An optional attribute decoded with `decode`; a malformed one is answered `bad`.
fn optional<T, E>(
    msg: &Message<'_>,
    typ: u16,
    decode: impl FnOnce(&[u8]) -> Result<T, E>,
    bad: ErrorCode,
) -> Result<Option<T>, ErrorCode> {
    msg.get(typ).map(decode).transpose().map_err(|_| bad)
}

fn lifetime(msg: &Message<'_>) -> Result<Option<u32>, ErrorCode> {
    optional(
        msg,
        attr::LIFETIME,
        attr::decode_u32,
        ErrorCode::BAD_LIFETIME,
    )
}

impl AllocateRequest {
    fn decode(msg: &Message<'_>) -> Result<Self, ErrorCode> {
        let Some(transport) = msg.get(attr::REQUESTED_TRANSPORT) else {
            return Err(ErrorCode::MISSING_REQUESTED_TRANSPORT);
        };
        let protocol = attr::decode_requested_transport(transport)
            .map_err(|_| ErrorCode::BAD_REQUESTED_TRANSPORT)?;
        if protocol != attr::PROTOCOL_UDP {
            return Err(ErrorCode::UNSUPPORTED_TRANSPORT);
        }
        let even_port = optional(
            msg,
            attr::EVEN_PORT,
            attr::decode_even_port,
            ErrorCode::BAD_EVEN_PORT,
        )?;
        let reservation = optional(
            msg,
            attr::RESERVATION_TOKEN,
            attr::decode_reservation_token,
            ErrorCode::BAD_RESERVATION_TOKEN,
        )?;
        let family = match optional(
            msg,
            attr::REQUESTED_ADDRESS_FAMILY,
            attr::decode_address_family,
            ErrorCode::BAD_REQUESTED_ADDRESS_FAMILY,
        )? {
            None => Family::V4,
            Some(Some(f)) => f,
            Some(None) => return Err(ErrorCode::FAMILY_NOT_SUPPORTED),
        };
        if reservation.is_some() && (even_port.is_some() || msg.has(attr::REQUESTED_ADDRESS_FAMILY))
        {
            return Err(ErrorCode::RESERVATION_WITH_EVEN_PORT_OR_FAMILY);
        }
        Ok(AllocateRequest {
            family,
            even_port,
            reservation,
            lifetime: lifetime(msg)?,
        })
    }
}

impl<P: RelayPorts> Server<P> {
    pub(super) fn allocate(
        &mut self,
        req: Request<'_, '_>,
        out: &mut [u8],
        ports: &mut P,
    ) -> Reply {
        let (now, client, msg, auth) = req.parts();
        let a = Some(auth);
        if let Some((_, existing)) = self.allocation_of(&client) {
            // The request that created this allocation, again (its answer was lost): the
            // same answer. Any other Allocate on this 5-tuple is a mismatch.
            if existing.created_by != msg.transaction_id {
                return self.error(out, msg, ErrorCode::ALLOCATION_MISMATCH, a);
            }
            let granted = Granted {
                relay_addr: existing.relay_addr,
                lifetime: existing.granted_lifetime,
                reservation_token: existing.reservation_token,
            };
            self.stats.retransmits += 1;
            return self.allocated(out, msg, auth, client, granted);
        }
        let request = match AllocateRequest::decode(msg) {
            Ok(r) => r,
            Err(code) => return self.error(out, msg, code, a),
        };
        if self.draining {
            self.refused(client, AllocationRefusal::Draining);
            return self.error(out, msg, ErrorCode::INSUFFICIENT_CAPACITY, a);
        }
        let limits = self.config.limits;
        if !self
            .quota
            .acquire(&auth.username, limits.max_allocations_per_user)
        {
            self.refused(client, AllocationRefusal::Quota);
            return self.error(out, msg, ErrorCode::ALLOCATION_QUOTA_REACHED, a);
        }
        let req = RelayRequest {
            listener: client.listener,
            family: request.family,
            even_port: request.even_port,
            reservation: request.reservation,
            dont_fragment: msg.has(attr::DONT_FRAGMENT),
        };
        let entry = self.allocations.vacant_entry();
        self.generation = self.generation.wrapping_add(1);
        let id = AllocId::new(entry.key(), self.generation);
        let opened = match ports.open(id, &req) {
            Ok(o) => o,
            Err(e) => {
                self.quota.release(&auth.username);
                let code: ErrorCode = e.into();
                if code == ErrorCode::INSUFFICIENT_CAPACITY {
                    self.refused(client, AllocationRefusal::Capacity);
                }
                return self.error(out, msg, code, a);
            }
        };
        let lifetime = lifetime_secs(request.lifetime, limits.max_lifetime_secs);
        let relay_addr = opened.addr;
        entry.insert(Allocation {
            id,
            client,
            relay: opened.relay,
            relay_addr,
            username: auth.username.clone(),
            key: auth.key.clone(),
            realm: self.config.realm.as_str().into(),
            expires: now.instant + Duration::from_secs(lifetime.into()),
            permissions: Vec::new(),
            channels: Vec::new(),
            created_by: msg.transaction_id,
            granted_lifetime: lifetime,
            reservation_token: opened.reservation_token,
            created: now.instant,
        });
        self.by_client.insert(client, id);
        if let Some(l) = self.config.listeners.get(usize::from(client.listener)) {
            self.stats.allocation_created(&l.name);
            // One line per allocation, with STUNner's lifecycle fields (never credentials).
            tracing::info!(
                event = "allocation_created",
                listener = %l.name,
                client = %client.addr,
                relay = %relay_addr,
                user = %auth.username,
                lifetime,
                "allocation created"
            );
        }
        let granted = Granted {
            relay_addr,
            lifetime,
            reservation_token: opened.reservation_token,
        };
        self.allocated(out, msg, auth, client, granted)
    }

    /// The success answer to an Allocate: built the same way for the request and for any
    /// retransmission of it.
    fn allocated(
        &self,
        out: &mut [u8],
        msg: &Message<'_>,
        auth: &Authenticated,
        client: ClientKey,
        granted: Granted,
    ) -> Reply {
        self.success(out, msg, auth, |b| {
            b.xor_address(attr::XOR_RELAYED_ADDRESS, granted.relay_addr);
            b.u32_attr(attr::LIFETIME, granted.lifetime);
            if let Some(t) = granted.reservation_token {
                b.attr(attr::RESERVATION_TOKEN, &t.to_be_bytes());
            }
            b.xor_address(attr::XOR_MAPPED_ADDRESS, client.addr);
        })
    }

    pub(super) fn refresh(&mut self, req: Request<'_, '_>, out: &mut [u8], ports: &mut P) -> Reply {
        let (now, client, msg, auth) = req.parts();
        let a = Some(auth);
        let Some((id, allocation)) = self.allocation_of(&client) else {
            return self.error(out, msg, ErrorCode::ALLOCATION_MISMATCH, a);
        };
        let relay_v4 = allocation.relay_addr.is_ipv4();
        let requested = match lifetime(msg) {
            Ok(l) => l,
            Err(code) => return self.error(out, msg, code, a),
        };
        // A Refresh naming a family must name the allocation's own (RFC 8656 §7.3).
        if let Some(v) = msg.get(attr::REQUESTED_ADDRESS_FAMILY) {
            let asks_v4 = attr::decode_address_family(v) == Ok(Some(Family::V4));
            if relay_v4 != asks_v4 {
                return self.error(out, msg, ErrorCode::PEER_FAMILY_MISMATCH, a);
            }
        }
        let lifetime = if requested == Some(0) {
            self.remove_allocation(id, ports, now.instant, AllocationEnd::Deleted);
            0
        } else {
            let l = lifetime_secs(requested, self.config.limits.max_lifetime_secs);
            if let Some(x) = self.allocation_mut(id) {
                x.expires = now.instant + Duration::from_secs(l.into());
            }
            self.sync_offload(id, now.instant);
            l
        };
        self.success(out, msg, auth, |b| b.u32_attr(attr::LIFETIME, lifetime))
    }
}

/// What an Allocate answer tells the client.
#[derive(Clone, Copy)]
struct Granted {
    relay_addr: SocketAddr,
    lifetime: u32,
    reservation_token: Option<u64>,
}
