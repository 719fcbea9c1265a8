//! Config propagation: time from writing a UDPRoute file to the dataplane relaying to the
//! route's new peer, over `turnpike run` (file watch → render → CDS over QUIC → apply).
//!
//!   cargo build --release && cargo run --release -p turnpike-tests --bin propagation_bench [-- CHANGES]

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use turnpike_dataplane::client::TurnClient;
use turnpike_tests::free_udp_port;
use turnpike_tests::standalone::{SECRET, start_run, write_base, write_echo_route};

fn echo() -> u16 {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind echo");
    let port = sock.local_addr().expect("echo addr").port();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            let _ = sock.send_to(&buf[..n], from);
        }
    });
    port
}

fn main() {
    let changes: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100);
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().join("config");
    std::fs::create_dir(&dir).expect("mkdir");
    let turn = free_udp_port();
    let peers = [echo(), echo()];
    write_base(&dir, turn);
    write_echo_route(&dir, peers[0]);
    let _run = start_run(&dir);

    let expiry = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
        + 3600;
    let (user, pass) = turnpike_auth::ephemeral_credential(SECRET, "bench", expiry);
    let mut c =
        TurnClient::new(SocketAddr::from(([127, 0, 0, 1], turn)), &user, &pass).expect("client");
    c.allocate().expect("allocate");
    // One permission covers both peers (same IP); only the route decides the port.
    c.create_permission(SocketAddr::from(([127, 0, 0, 1], peers[0])))
        .expect("permission");

    let mut samples = Vec::with_capacity(changes);
    for i in 1..=changes {
        let peer = SocketAddr::from(([127, 0, 0, 1], peers[i % 2]));
        // Let the previous change settle so each sample measures one edit.
        std::thread::sleep(Duration::from_millis(150));
        let start = Instant::now();
        write_echo_route(&dir, peers[i % 2]);
        loop {
            c.send_indication(peer, b"probe").expect("send");
            if matches!(c.recv(Duration::from_millis(2)), Ok((from, _)) if from == peer) {
                samples.push(start.elapsed());
                break;
            }
            if start.elapsed() > Duration::from_secs(5) {
                eprintln!("change {i}: the new peer never relayed");
                std::process::exit(1);
            }
        }
        // Drain echoes of the polling burst.
        while c.recv(Duration::from_millis(5)).is_ok() {}
    }
    samples.sort();
    let q = |p: f64| samples[((samples.len() - 1) as f64 * p).round() as usize];
    println!(
        "config propagation over {changes} route edits (file write → new peer relays): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        q(0.5).as_secs_f64() * 1e3,
        q(0.99).as_secs_f64() * 1e3,
        q(1.0).as_secs_f64() * 1e3
    );
}
