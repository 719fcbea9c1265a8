//! The relay hot path allocates nothing: ChannelData and Send indications from clients and
//! datagrams from peers are handled without touching the heap. A counting global
//! allocator checks it over thousands of packets.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions
#![allow(unsafe_code)] // a counting global allocator needs it

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use turnpike_dataplane::config::DataplaneConfig;
use turnpike_dataplane::fuzzing::{CONFIG, NullRelays, signed_request};
use turnpike_dataplane::proto::message::method;
use turnpike_dataplane::proto::{
    Class, ClientKey, Destination, MessageBuilder, NonceKey, Now, PEER_HEADROOM, Payload, Server,
    Transmit, Transport, UserQuota, attr,
};

struct Counting;
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// Set on the test's own thread only: the harness's other threads may allocate at any
    /// time (seen under load), and those are not the relay path's.
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn relaying_allocates_nothing() {
    let cfg = turnpike_dataplane::config::compile(&DataplaneConfig::parse(CONFIG).unwrap());
    let mut server: Server<NullRelays> = Server::new(
        Arc::new(cfg),
        NonceKey::new([1; 32]),
        Arc::new(UserQuota::default()),
    );
    let mut relays = NullRelays::default();
    let now = Now {
        instant: Instant::now(),
        unix: 1_800_000_000,
    };
    let client = ClientKey {
        listener: 0,
        transport: Transport::Udp,
        addr: SocketAddr::from(([192, 0, 2, 0], 5000)),
    };
    let peer: SocketAddr = "10.0.0.4:9".parse().unwrap();
    let mut out = vec![0u8; 2048];
    for (seq, m) in [(1, method::ALLOCATE), (3, method::CHANNEL_BIND)] {
        let req = signed_request(0, seq, m, |b| {
            if m == method::ALLOCATE {
                b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
            } else {
                b.attr(attr::CHANNEL_NUMBER, &[0x40, 0x00, 0, 0]);
                b.xor_address(attr::XOR_PEER_ADDRESS, peer);
            }
        });
        let action = server.handle_client(now, client, &req, &mut out, &mut relays);
        let Some(Transmit {
            destination: Destination::Client(_),
            payload: Payload::Written(range),
        }) = action
        else {
            panic!("{action:?}")
        };
        let resp = turnpike_dataplane::proto::Message::parse(&out[range]).unwrap();
        assert_eq!(resp.class, Class::Success);
    }
    let alloc = server.allocations().next().unwrap().0;
    let channel_data = [0x40, 0x00, 0x00, 0x08, 1, 2, 3, 4, 5, 6, 7, 8];
    let mut send = vec![0u8; 128];
    let n = {
        let mut b = MessageBuilder::new(&mut send, method::SEND, Class::Indication, &[7; 12]);
        b.xor_address(attr::XOR_PEER_ADDRESS, peer);
        b.attr(attr::DATA, b"indication");
        b.finish(true).unwrap()
    };
    send.truncate(n);
    let mut frame = vec![0u8; 2048];
    let other_peer: SocketAddr = "10.0.0.5:9".parse().unwrap();

    COUNTING.with(|c| c.set(true));
    let mut relayed = 0;
    for _ in 0..10_000 {
        for data in [&channel_data[..], &send[..]] {
            if let Some(Transmit {
                destination: Destination::Peer { .. },
                ..
            }) = server.handle_client(now, client, data, &mut out, &mut relays)
            {
                relayed += 1;
            }
        }
        frame[PEER_HEADROOM..PEER_HEADROOM + 8].copy_from_slice(b"mediamed");
        if server
            .handle_peer(now, alloc, peer, &mut frame, 8)
            .is_some()
        {
            relayed += 1;
        }
        // A peer without permission: dropped, also without allocating.
        assert!(
            server
                .handle_peer(now, alloc, other_peer, &mut frame, 8)
                .is_none()
        );
    }
    COUNTING.with(|c| c.set(false));
    assert_eq!(relayed, 30_000);
    assert_eq!(
        ALLOCATIONS.load(Ordering::Relaxed),
        0,
        "heap allocations on the relay path"
    );
}
