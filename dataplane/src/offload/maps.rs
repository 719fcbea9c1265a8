//! The kernel program's map layouts (`dataplane/bpf/relay.bpf.c`), mirrored as `#[repr(C)]`
//! types, and how a [`ChannelRoute`](crate::proto::ChannelRoute) becomes entries. Ports
//! are kept in network byte order, as the program compares them with packet bytes.
#![allow(unsafe_code)]

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use aya::Pod;

/// `struct client_key`: a ChannelData from a client, by listener port, client and channel.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ClientKey {
    pub family: u8,
    pub pad: u8,
    pub channel: u16,
    pub listen_port: u16,
    pub client_port: u16,
    pub client_ip: [u8; 16],
}

/// `struct to_peer`: where such a packet goes.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ToPeer {
    pub relay_ip: [u8; 16],
    pub peer_ip: [u8; 16],
    pub relay_port: u16,
    pub peer_port: u16,
    pub stats_slot: u32,
    pub out_ifindex: u32,
    pub pad: u32,
    pub expires_ns: u64,
}

/// `struct peer_key`: a datagram from a peer, by relay port and peer.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PeerKey {
    pub family: u8,
    pub pad: u8,
    pub relay_port: u16,
    pub peer_port: u16,
    pub pad2: u16,
    pub peer_ip: [u8; 16],
}

/// `struct to_client`: the client and channel it goes to.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ToClient {
    pub listen_ip: [u8; 16],
    pub client_ip: [u8; 16],
    pub listen_port: u16,
    pub client_port: u16,
    pub channel: u16,
    pub pad: u16,
    pub stats_slot: u32,
    pub out_ifindex: u32,
    pub expires_ns: u64,
}

/// `struct binding_stats`: what the kernel relayed for one binding (payload bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BindingStats {
    pub to_peer_packets: u64,
    pub to_peer_bytes: u64,
    pub to_client_packets: u64,
    pub to_client_bytes: u64,
}

// SAFETY: each type is `repr(C)`, `Copy`, made only of integers and byte arrays with every
// padding byte an explicit field, so any bit pattern is a valid value and none is
// uninitialised when aya copies it to or from the kernel.
unsafe impl Pod for ClientKey {}
// SAFETY: as above.
unsafe impl Pod for ToPeer {}
// SAFETY: as above.
unsafe impl Pod for PeerKey {}
// SAFETY: as above.
unsafe impl Pod for ToClient {}
// SAFETY: as above.
unsafe impl Pod for BindingStats {}

/// The program's family tag and 16 address bytes (IPv4 in the first 4).
fn ip_bytes(ip: IpAddr) -> (u8, [u8; 16]) {
    let mut b = [0u8; 16];
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            b[..4].copy_from_slice(&v4.octets());
            (4, b)
        }
        IpAddr::V6(v6) => (6, v6.octets()),
    }
}

/// The kernel entries of one channel binding, both directions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entries {
    pub client_key: ClientKey,
    pub to_peer: ToPeer,
    pub peer_key: PeerKey,
    pub to_client: ToClient,
}

/// The addresses a binding is relayed between, as the kernel sees them: `listen` is the
/// address the client sends to (and receives from), `relay` the relay socket's address
/// towards the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoints {
    pub listen: SocketAddr,
    pub client: SocketAddr,
    pub relay: SocketAddr,
    pub peer: SocketAddr,
    /// The devices a packet to the client and to the peer leaves by.
    pub client_ifindex: u32,
    pub peer_ifindex: u32,
}

impl Entries {
    /// `None` when the client and peer sides are of different families than their local
    /// ends (the program rewrites addresses within one family).
    pub fn new(e: &Endpoints, channel: u16, stats_slot: u32, expires_ns: u64) -> Option<Self> {
        let (lf, listen_ip) = ip_bytes(e.listen.ip());
        let (cf, client_ip) = ip_bytes(e.client.ip());
        let (rf, relay_ip) = ip_bytes(e.relay.ip());
        let (pf, peer_ip) = ip_bytes(e.peer.ip());
        if lf != cf || rf != pf {
            return None;
        }
        // The program keys and rewrites a packet within its own family: a client on one
        // family relaying to a peer on the other crosses families, which it does not do.
        if cf != pf {
            return None;
        }
        Some(Entries {
            client_key: ClientKey {
                family: cf,
                channel,
                listen_port: e.listen.port().to_be(),
                client_port: e.client.port().to_be(),
                client_ip,
                ..ClientKey::default()
            },
            to_peer: ToPeer {
                relay_ip,
                peer_ip,
                relay_port: e.relay.port().to_be(),
                peer_port: e.peer.port().to_be(),
                stats_slot,
                out_ifindex: e.peer_ifindex,
                pad: 0,
                expires_ns,
            },
            peer_key: PeerKey {
                family: pf,
                relay_port: e.relay.port().to_be(),
                peer_port: e.peer.port().to_be(),
                peer_ip,
                ..PeerKey::default()
            },
            to_client: ToClient {
                listen_ip,
                client_ip,
                listen_port: e.listen.port().to_be(),
                client_port: e.client.port().to_be(),
                channel,
                stats_slot,
                out_ifindex: e.client_ifindex,
                expires_ns,
                ..ToClient::default()
            },
        })
    }

    pub fn set_expiry(&mut self, expires_ns: u64) {
        self.to_peer.expires_ns = expires_ns;
        self.to_client.expires_ns = expires_ns;
    }
}

/// `until` on the kernel's clock (`bpf_ktime_get_ns`, CLOCK_MONOTONIC), in nanoseconds.
pub fn monotonic_deadline(until: Instant) -> u64 {
    let left = until.saturating_duration_since(Instant::now());
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    let now = if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) } == 0 {
        (ts.tv_sec as u64)
            .saturating_mul(1_000_000_000)
            .saturating_add(ts.tv_nsec as u64)
    } else {
        0
    };
    now.saturating_add(u64::try_from(left.as_nanos()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    /// The offsets of `relay.bpf.c`'s structs (x86-64 and aarch64 lay them out alike).
    #[test]
    fn layouts_match_the_program() {
        assert_eq!(size_of::<ClientKey>(), 24);
        assert_eq!(offset_of!(ClientKey, channel), 2);
        assert_eq!(offset_of!(ClientKey, listen_port), 4);
        assert_eq!(offset_of!(ClientKey, client_port), 6);
        assert_eq!(offset_of!(ClientKey, client_ip), 8);
        assert_eq!(size_of::<ToPeer>(), 56);
        assert_eq!(offset_of!(ToPeer, relay_port), 32);
        assert_eq!(offset_of!(ToPeer, stats_slot), 36);
        assert_eq!(offset_of!(ToPeer, out_ifindex), 40);
        assert_eq!(offset_of!(ToPeer, expires_ns), 48);
        assert_eq!(size_of::<PeerKey>(), 24);
        assert_eq!(offset_of!(PeerKey, relay_port), 2);
        assert_eq!(offset_of!(PeerKey, peer_port), 4);
        assert_eq!(offset_of!(PeerKey, peer_ip), 8);
        assert_eq!(size_of::<ToClient>(), 56);
        assert_eq!(offset_of!(ToClient, listen_port), 32);
        assert_eq!(offset_of!(ToClient, channel), 36);
        assert_eq!(offset_of!(ToClient, stats_slot), 40);
        assert_eq!(offset_of!(ToClient, out_ifindex), 44);
        assert_eq!(offset_of!(ToClient, expires_ns), 48);
        assert_eq!(size_of::<BindingStats>(), 32);
    }

    #[test]
    fn entries_carry_network_order_ports_and_padded_ipv4() {
        let e = Endpoints {
            listen: "198.18.10.1:3478".parse().unwrap(),
            client: "198.18.10.2:40000".parse().unwrap(),
            relay: "198.18.20.1:50000".parse().unwrap(),
            peer: "198.18.20.2:9".parse().unwrap(),
            client_ifindex: 2,
            peer_ifindex: 3,
        };
        let x = Entries::new(&e, 0x4001, 7, 99).unwrap();
        assert_eq!(x.client_key.family, 4);
        assert_eq!(
            x.client_key.listen_port.to_ne_bytes(),
            3478u16.to_be_bytes()
        );
        assert_eq!(&x.client_key.client_ip[..4], &[198, 18, 10, 2]);
        assert_eq!(&x.client_key.client_ip[4..], &[0; 12]);
        assert_eq!(x.to_peer.peer_port.to_ne_bytes(), 9u16.to_be_bytes());
        assert_eq!(x.to_client.channel, 0x4001);
        assert_eq!((x.to_peer.stats_slot, x.to_client.expires_ns), (7, 99));
        let mapped = Endpoints {
            client: "[::ffff:198.18.10.2]:40000".parse().unwrap(),
            ..e
        };
        assert_eq!(
            Entries::new(&mapped, 0x4001, 7, 99),
            Some(x),
            "v4-mapped is v4"
        );
        let crossed = Endpoints {
            peer: "[2001:2::9]:9".parse().unwrap(),
            ..e
        };
        assert_eq!(Entries::new(&crossed, 0x4001, 7, 99), None);
    }
}
