//! CreatePermission and ChannelBind (RFC 8656 §9, §11), checked against the routes of the
//! client's listener, and the route check relayed packets share in both directions.

use std::net::SocketAddr;

use super::{Now, RelayPorts, Reply, Request, Server, live_mut};
use crate::proto::access::CounterId;
use crate::proto::allocation::{Allocation, CHANNEL_LIFETIME, Channel};
use crate::proto::attr;
use crate::proto::error::ErrorCode;

impl<P: RelayPorts> Server<P> {
    pub(super) fn create_permission(&mut self, req: Request<'_, '_>, out: &mut [u8]) -> Reply {
        let (now, client, msg, auth) = req.parts();
        let a = Some(auth);
        let Some((id, allocation)) = self.allocation_of(&client) else {
            return self.error(out, msg, ErrorCode::ALLOCATION_MISMATCH, a);
        };
        let relay_v4 = allocation.relay_addr.is_ipv4();
        let routes = self.config.routes_of(client.listener);
        let mut granted = Vec::new();
        for v in msg.get_all(attr::XOR_PEER_ADDRESS) {
            let Ok(peer) = attr::decode_xor_address(v, &msg.transaction_id) else {
                return self.error(out, msg, ErrorCode::BAD_XOR_PEER_ADDRESS, a);
            };
            if peer.ip().to_canonical().is_ipv4() != relay_v4 {
                return self.error(out, msg, ErrorCode::PEER_FAMILY_MISMATCH, a);
            }
            let Some(m) = routes.and_then(|r| r.match_ip(peer.ip())) else {
                tracing::debug!(client = %client.addr, %peer, "permission denied: peer outside routes");
                self.stats.denied_peers += 1;
                return self.error(out, msg, ErrorCode::FORBIDDEN, a);
            };
            granted.push((peer.ip(), m));
        }
        if granted.is_empty() {
            return self.error(out, msg, ErrorCode::MISSING_XOR_PEER_ADDRESS, a);
        }
        let max = self.config.limits.max_permissions_per_allocation;
        let Some(alloc) = live_mut(&mut self.allocations, id) else {
            return self.error(out, msg, ErrorCode::ALLOCATION_MISMATCH, a);
        };
        let new = granted
            .iter()
            .filter(|(ip, _)| alloc.permissions.iter().all(|p| p.ip != ip.to_canonical()))
            .count();
        if alloc.permissions.len() + new > max {
            return self.error(out, msg, ErrorCode::INSUFFICIENT_CAPACITY, a);
        }
        for (ip, m) in granted {
            alloc.permit(ip, m.counter, m.all_ports, now.instant, max);
        }
        self.sync_offload(id, now.instant);
        self.success(out, msg, auth, |_| {})
    }

    pub(super) fn channel_bind(&mut self, req: Request<'_, '_>, out: &mut [u8]) -> Reply {
        let (now, client, msg, auth) = req.parts();
        let a = Some(auth);
        let Some(&id) = self.by_client.get(&client) else {
            return self.error(out, msg, ErrorCode::ALLOCATION_MISMATCH, a);
        };
        let Some(Ok(number)) = msg
            .get(attr::CHANNEL_NUMBER)
            .map(attr::decode_channel_number)
        else {
            return self.error(out, msg, ErrorCode::BAD_CHANNEL_NUMBER, a);
        };
        let Some(Ok(peer)) = msg
            .get(attr::XOR_PEER_ADDRESS)
            .map(|v| attr::decode_xor_address(v, &msg.transaction_id))
        else {
            return self.error(out, msg, ErrorCode::BAD_XOR_PEER_ADDRESS, a);
        };
        let peer = canonical(peer);
        let routes = self.config.routes_of(client.listener);
        let max = self.config.limits.max_permissions_per_allocation;
        let Some(alloc) = live_mut(&mut self.allocations, id) else {
            return self.error(out, msg, ErrorCode::ALLOCATION_MISMATCH, a);
        };
        if peer.is_ipv4() != alloc.relay_addr.is_ipv4() {
            return self.error(out, msg, ErrorCode::PEER_FAMILY_MISMATCH, a);
        }
        let (Some(counter), Some(ip_match)) = (
            routes.and_then(|r| r.match_addr(peer)),
            routes.and_then(|r| r.match_ip(peer.ip())),
        ) else {
            tracing::debug!(client = %client.addr, %peer, "channel denied: peer outside routes");
            self.stats.denied_peers += 1;
            return self.error(out, msg, ErrorCode::FORBIDDEN, a);
        };
        let conflict = alloc
            .channels
            .iter()
            .any(|c| (c.number == number) != (c.peer == peer));
        if conflict {
            return self.error(out, msg, ErrorCode::CHANNEL_BOUND_DIFFERENTLY, a);
        }
        let permitted = alloc.permit(
            peer.ip(),
            ip_match.counter,
            ip_match.all_ports,
            now.instant,
            max,
        );
        if !permitted {
            return self.error(out, msg, ErrorCode::INSUFFICIENT_CAPACITY, a);
        }
        let expires = now.instant + CHANNEL_LIFETIME;
        match alloc.channels.iter_mut().find(|c| c.number == number) {
            Some(c) => {
                c.expires = expires;
                c.counter = counter;
            }
            None => alloc.bind_channel(Channel {
                number,
                peer,
                expires,
                counter,
                offloaded: None,
            }),
        }
        self.sync_offload(id, now.instant);
        self.success(out, msg, auth, |_| {})
    }

    /// The relay counter of a packet between `alloc` and `peer` (either direction), or
    /// `None` when no live permission covers the peer: a permission for every port of a
    /// route carries its counter, one for some ports needs the port checked as well.
    pub(super) fn permitted_counter(
        &self,
        alloc: &Allocation<P::Relay>,
        peer: SocketAddr,
        now: Now,
    ) -> Option<CounterId> {
        let perm = alloc.permission(peer.ip(), now.instant)?;
        if perm.all_ports {
            return Some(perm.counter);
        }
        self.config
            .routes_of(alloc.client.listener)
            .and_then(|r| r.match_addr(peer))
    }
}

/// IPv4-mapped IPv6 peers are the IPv4 peer they map (DESIGN.md §3).
pub(super) fn canonical(peer: SocketAddr) -> SocketAddr {
    SocketAddr::new(peer.ip().to_canonical(), peer.port())
}
