//! Loopback ports for the processes under test.

use std::net::{TcpListener, UdpSocket};

/// An even loopback port free on both UDP and TCP, so one number serves a TURN listener;
/// the odd port above it is free too and handed to nobody else, because coturn's
/// `turnutils_peer` listens on a port and the next one (RTP and RTCP) and
/// `turnutils_uclient` sends to both.
///
/// Ports come from below the kernel's ephemeral range (32768–60999 by default), so no
/// outgoing connection, and no other test's `bind(0)`, can take a port between the moment
/// it is handed out and the moment the process under test binds it. A process-wide counter
/// never hands out the same pair twice; the pid picks where a process starts, so test
/// binaries running side by side start far apart, and the bind check skips ports that are
/// held right now.
pub fn free_udp_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const PAIRS: u32 = 6_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let start = (std::process::id().wrapping_mul(2_654_435_761) >> 8) % PAIRS;
    let _ = NEXT.compare_exchange(u32::MAX, start, Ordering::Relaxed, Ordering::Relaxed);
    let free = |port: u16| {
        UdpSocket::bind(("127.0.0.1", port)).is_ok()
            && TcpListener::bind(("127.0.0.1", port)).is_ok()
    };
    for _ in 0..PAIRS {
        let port = (FIRST + 2 * (NEXT.fetch_add(1, Ordering::Relaxed) % PAIRS)) as u16;
        if free(port) && free(port + 1) {
            return port;
        }
    }
    panic!(
        "no free loopback port pair in {FIRST}..{}",
        FIRST + 2 * PAIRS
    );
}

/// A loopback TCP port nobody else will be handed (see [`free_udp_port`]).
pub fn free_tcp_port() -> u16 {
    free_udp_port()
}
