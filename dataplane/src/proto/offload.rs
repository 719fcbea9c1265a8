//! Kernel offload as the core sees it: which channel bindings the kernel may relay, and
//! until when. The core owns the truth and says what changed as [`OffloadEvent`]s; the
//! shell writes them to the kernel's maps (`crate::offload`) in the order given.
//!
//! A channel is offloadable while its client speaks UDP, the channel is bound, a
//! permission covers its peer and the allocation lives; the kernel entry carries the
//! earliest of those deadlines, so the kernel stops at the exact expiry even before the
//! next tick removes the entry.

use std::net::SocketAddr;
use std::time::Instant;

use super::access::CounterId;
use super::allocation::{AllocId, Allocation, ClientKey, Transport};

/// What the kernel holds for one channel: until when it relays, and the route counter its
/// traffic is added to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offloaded {
    pub until: Instant,
    pub counter: CounterId,
}

/// A channel binding the kernel relays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelRoute {
    pub alloc: AllocId,
    pub channel: u16,
    pub client: ClientKey,
    pub peer: SocketAddr,
    pub offloaded: Offloaded,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffloadEvent {
    /// Relay this channel in the kernel (or keep relaying it, with a new deadline or
    /// counter): replaces what the kernel held for `(alloc, channel)`.
    Install(ChannelRoute),
    /// Stop relaying `channel` of `alloc` in the kernel, at once.
    Remove { alloc: AllocId, channel: u16 },
}

/// Brings what the kernel holds for allocation `a` in line with its state at `now`,
/// pushing the changes to `events`. With `enabled` false everything installed is removed.
pub(crate) fn sync<R>(
    a: &mut Allocation<R>,
    enabled: bool,
    now: Instant,
    events: &mut Vec<OffloadEvent>,
) {
    let udp = matches!(a.client.transport, Transport::Udp);
    for i in 0..a.channels.len() {
        let c = &a.channels[i];
        let want = (enabled && udp && c.expires > now && a.expires > now)
            .then(|| a.permission(c.peer.ip(), now))
            .flatten()
            .map(|p| Offloaded {
                until: c.expires.min(p.expires).min(a.expires),
                counter: c.counter,
            });
        if want == c.offloaded {
            continue;
        }
        let (number, peer) = (c.number, c.peer);
        events.push(match want {
            Some(offloaded) => OffloadEvent::Install(ChannelRoute {
                alloc: a.id,
                channel: number,
                client: a.client,
                peer,
                offloaded,
            }),
            None => OffloadEvent::Remove {
                alloc: a.id,
                channel: number,
            },
        });
        a.channels[i].offloaded = want;
    }
}

/// Removes from the kernel every channel of `a` it holds (the allocation is ending).
pub(crate) fn remove_all<R>(a: &Allocation<R>, events: &mut Vec<OffloadEvent>) {
    events.extend(
        a.channels
            .iter()
            .filter(|c| c.offloaded.is_some())
            .map(|c| OffloadEvent::Remove {
                alloc: a.id,
                channel: c.number,
            }),
    );
}
