//! A worker's side of kernel offload: it writes the core's [`OffloadEvent`]s to the
//! kernel's maps, in order, and reads the kernel's per-binding counters back so traffic
//! relayed in the kernel shows in the same metrics (labelled `path="kernel"`).
//!
//! A binding the kernel cannot take (maps full, a family it does not translate, an
//! address it cannot resolve) simply stays in userspace, which relays it as before.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::io::relay::source_towards;
use crate::offload::maps::{BindingStats, Endpoints, Entries, monotonic_deadline};
use crate::offload::{Kernel, OffloadError, routes};
use crate::proto::{AllocId, ChannelRoute, CounterId, OffloadEvent, RelayCount};

/// One binding the kernel holds for this worker.
struct Installed {
    entries: Entries,
    counter: CounterId,
    /// The kernel's counters when last read.
    seen: BindingStats,
}

/// What a worker needs to turn a [`ChannelRoute`] into kernel entries.
pub struct Resolve<'a> {
    /// The address a listener was bound to (by the core's listener index).
    pub listener: &'a dyn Fn(u16) -> Option<SocketAddr>,
    /// The local address of an allocation's relay socket.
    pub relay: &'a dyn Fn(AllocId) -> Option<SocketAddr>,
}

pub struct OffloadTable {
    kernel: Arc<Kernel>,
    installed: HashMap<(AllocId, u16), Installed>,
    /// Kernel-relayed traffic read since the last [`OffloadTable::take_relayed`], by the
    /// core's counter id.
    relayed: Vec<RelayCount>,
    /// Bindings the kernel could not take (they stay in userspace).
    pub refused: u64,
}

impl OffloadTable {
    pub fn new(kernel: Arc<Kernel>) -> Self {
        OffloadTable {
            kernel,
            installed: HashMap::new(),
            relayed: Vec::new(),
            refused: 0,
        }
    }

    /// Bindings the kernel holds for this worker.
    pub fn bindings(&self) -> usize {
        self.installed.len()
    }

    /// Applies one event from the core.
    pub fn apply(&mut self, event: OffloadEvent, resolve: &Resolve<'_>) {
        match event {
            OffloadEvent::Install(route) => {
                if let Err(e) = self.install(&route, resolve) {
                    self.refused += 1;
                    tracing::warn!(channel = route.channel, client = %route.client.addr, peer = %route.peer, error = %e, "channel stays in userspace");
                }
            }
            OffloadEvent::Remove { alloc, channel } => self.remove(alloc, channel),
        }
    }

    fn install(&mut self, route: &ChannelRoute, resolve: &Resolve<'_>) -> Result<(), OffloadError> {
        let key = (route.alloc, route.channel);
        let expires_ns = monotonic_deadline(route.offloaded.until);
        if self.installed.contains_key(&key) {
            // A refresh or a renumbered counter: same addresses, new deadline. What was
            // relayed so far still counts under the old counter.
            self.fold(key);
            if let Some(i) = self.installed.get_mut(&key) {
                i.counter = route.offloaded.counter;
                i.entries.set_expiry(expires_ns);
                return self.kernel.install(&i.entries);
            }
        }
        let endpoints = self.endpoints(route, resolve)?;
        let slot = self.kernel.take_slot()?;
        let Some(entries) = Entries::new(&endpoints, route.channel, slot, expires_ns) else {
            self.kernel.release_slot(slot);
            return Err(OffloadError::Unsupported(format!(
                "client {} and peer {} are of different address families",
                route.client.addr, route.peer
            )));
        };
        let seen = match self.kernel.binding_stats(slot) {
            Ok(s) => s,
            Err(e) => {
                self.kernel.release_slot(slot);
                return Err(e);
            }
        };
        if let Err(e) = self.kernel.install(&entries) {
            let _ = self.kernel.remove(&entries);
            return Err(e);
        }
        self.installed.insert(
            key,
            Installed {
                entries,
                counter: route.offloaded.counter,
                seen,
            },
        );
        Ok(())
    }

    fn remove(&mut self, alloc: AllocId, channel: u16) {
        let key = (alloc, channel);
        self.fold(key);
        if let Some(i) = self.installed.remove(&key)
            && let Err(e) = self.kernel.remove(&i.entries)
        {
            tracing::warn!(channel, error = %e, "cannot remove a kernel binding");
        }
    }

    /// Removes everything this worker installed (it is stopping).
    pub fn clear(&mut self) {
        let keys: Vec<_> = self.installed.keys().copied().collect();
        for (alloc, channel) in keys {
            self.remove(alloc, channel);
        }
    }

    /// Adds what the kernel relayed for `key` since the last read to `relayed`.
    fn fold(&mut self, key: (AllocId, u16)) {
        let Some(i) = self.installed.get_mut(&key) else {
            return;
        };
        let Ok(now) = self.kernel.binding_stats(i.entries.to_peer.stats_slot) else {
            return;
        };
        let c = i.counter as usize;
        if self.relayed.len() <= c {
            self.relayed.resize(c + 1, RelayCount::default());
        }
        let r = &mut self.relayed[c];
        r.to_peer_packets += now.to_peer_packets.saturating_sub(i.seen.to_peer_packets);
        r.to_peer_bytes += now.to_peer_bytes.saturating_sub(i.seen.to_peer_bytes);
        r.to_client_packets += now
            .to_client_packets
            .saturating_sub(i.seen.to_client_packets);
        r.to_client_bytes += now.to_client_bytes.saturating_sub(i.seen.to_client_bytes);
        i.seen = now;
    }

    /// Reads every binding's counters and hands out what the kernel relayed since the last
    /// call, indexed like the core's relay counters.
    pub fn take_relayed(&mut self) -> Vec<RelayCount> {
        let keys: Vec<_> = self.installed.keys().copied().collect();
        for key in keys {
            self.fold(key);
        }
        std::mem::take(&mut self.relayed)
    }

    fn endpoints(
        &mut self,
        route: &ChannelRoute,
        resolve: &Resolve<'_>,
    ) -> Result<Endpoints, OffloadError> {
        let client = canonical(route.client.addr);
        let peer = canonical(route.peer);
        let bound = (resolve.listener)(route.client.listener)
            .ok_or_else(|| OffloadError::Unsupported("the listener is gone".into()))?;
        // A wildcard listener answers from the address the route to the client takes.
        let listen = if bound.ip().is_unspecified() {
            SocketAddr::new(source_towards(client).map_err(unresolved)?, bound.port())
        } else {
            canonical(bound)
        };
        let relay = (resolve.relay)(route.alloc)
            .map(canonical)
            .ok_or_else(|| OffloadError::Unsupported("the relay socket is gone".into()))?;
        let relay = if relay.ip().is_unspecified() {
            SocketAddr::new(source_towards(peer).map_err(unresolved)?, relay.port())
        } else {
            relay
        };
        Ok(Endpoints {
            listen,
            client,
            relay,
            peer,
            client_ifindex: routes::egress_ifindex(client.ip()).map_err(unresolved)?,
            peer_ifindex: routes::egress_ifindex(peer.ip()).map_err(unresolved)?,
        })
    }
}

impl Drop for OffloadTable {
    fn drop(&mut self) {
        self.clear();
    }
}

fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}

fn unresolved(e: io::Error) -> OffloadError {
    OffloadError::Unsupported(format!("cannot resolve a local address: {e}"))
}
