//! Kernel offload (issue 15) with the real dataplane in a gateway namespace between a
//! client namespace and a peer namespace, joined by veth pairs as pods are. Each scenario
//! runs with offload at TC, at XDP and off: the outcome a client and a peer see must be the
//! same, and the counters say which path carried the packets.
//!
//! Receivers verify every UDP checksum in software (`rx off` on their veths), so a bad
//! checksum written by the kernel program shows as `InCsumErrors`.
#![allow(clippy::unwrap_used)]

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use turnpike_dataplane::client::TurnClient;
use turnpike_tests::netlab::{SenderOffloads, Topology, addr};
use turnpike_tests::{Dataplane, metric, rest_credentials};

const SECRET: &str = "offload-secret";
const PORT: u16 = 3478;
const ECHO: u16 = 9000;
/// A second peer port: reached by Send indications, answered by Data indications.
const OTHER: u16 = 9001;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Tc,
    Xdp,
    Off,
}

impl Mode {
    fn flag(self) -> &'static str {
        match self {
            Mode::Tc => "TC",
            Mode::Xdp => "XDP",
            Mode::Off => "None",
        }
    }
}

fn config(generation: u64, max_lifetime: u32, endpoints: &str) -> String {
    format!(
        "version: v1alpha1\nname: default/offload\ngeneration: {generation}\nrealm: turnpike.test\n\
         auth: {{type: ephemeral, secret: {SECRET}}}\n\
         limits: {{maxAllocationsPerUser: 100, maxLifetime: {max_lifetime}}}\nlisteners:\n  \
         - {{name: udp, protocol: TURN-UDP, address: \"::\", port: {PORT}, routes: [default/media]}}\n\
         routes:\n  - {{name: default/media, endpoints: [{endpoints}]}}\n"
    )
}

const ROUTED: &str = "\"198.18.20.0/24\", \"2001:2:0:20::/64\"";
/// The same Gateway after the peers' route was withdrawn.
const REVOKED: &str = "\"198.18.30.0/24\"";

/// Echo peers in the peer namespace on ECHO and OTHER, counting what they received.
struct Peers {
    stop: Arc<AtomicBool>,
    received: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Peers {
    fn start(lab: &Topology, v6: bool) -> Peers {
        let stop = Arc::new(AtomicBool::new(false));
        let received = Arc::new(AtomicU64::new(0));
        let threads = [ECHO, OTHER]
            .into_iter()
            .map(|port| {
                let (stop, received) = (stop.clone(), received.clone());
                let sock = lab
                    .peer
                    .run(move || UdpSocket::bind(SocketAddr::new(addr::peer(v6), port)).unwrap());
                std::thread::spawn(move || {
                    sock.set_read_timeout(Some(Duration::from_millis(50)))
                        .unwrap();
                    let mut buf = [0u8; 2048];
                    while !stop.load(Relaxed) {
                        if let Ok((n, from)) = sock.recv_from(&mut buf) {
                            received.fetch_add(1, Relaxed);
                            let _ = sock.send_to(&buf[..n], from);
                        }
                    }
                })
            })
            .collect();
        Peers {
            stop,
            received,
            threads,
        }
    }
}

impl Drop for Peers {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// A TURN client in the client namespace (its socket lives there).
fn client(lab: &Topology, v6: bool, user: &str) -> TurnClient {
    let server = SocketAddr::new(addr::gateway_client_side(v6), PORT);
    let (u, p) = rest_credentials(SECRET, user, 3600);
    lab.client
        .run(move || TurnClient::new(server, &u, &p).unwrap())
}

/// Sends `n` numbered packets of varied sizes on channel 0x4001 one at a time and checks
/// each echo: intact and in order. Returns how many came back.
fn echo_round(c: &TurnClient, n: u32, wait: Duration) -> u32 {
    let mut back = 0;
    for i in 0..n {
        let len = 8 + (i as usize * 37) % 1100;
        let mut payload = vec![(i % 251) as u8; len];
        payload[..4].copy_from_slice(&i.to_be_bytes());
        c.send_channel(0x4001, &payload).unwrap();
        match c.recv_relayed(wait) {
            Ok(r) => {
                assert_eq!(r.channel, Some(0x4001), "echo of {i} came on its channel");
                assert_eq!(r.payload, payload, "echo of packet {i} intact and in order");
                back += 1;
            }
            Err(_) => continue,
        }
    }
    back
}

fn series(direction: &str, path: &str) -> String {
    format!(
        "turnpike_relayed_packets_total{{listener=\"udp\",route=\"default/media\",direction=\"{direction}\",path=\"{path}\"}}"
    )
}

fn relayed(dp: &Dataplane, direction: &str, path: &str) -> f64 {
    metric(&dp.metrics(), &series(direction, path)).unwrap_or(0.0)
}

/// The prefix of this test's namespaces: short, and distinct between tests and runs.
fn prefix(test: u32) -> String {
    format!("o{test}{}", std::process::id() % 100_000)
}

fn checksum_errors(lab: &Topology, v6: bool) -> u64 {
    let (table, field) = if v6 {
        ("Udp6", "InCsumErrors")
    } else {
        ("Udp", "InCsumErrors")
    };
    lab.client.snmp(table, field) + lab.peer.snmp(table, field)
}

fn expect_offload_status(dp: &Dataplane, mode: Mode) {
    let status: serde_json::Value = serde_json::from_str(&dp.status()).unwrap();
    let active = status["offload"]["active"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    match mode {
        Mode::Off => assert_eq!(active, "None", "{status}"),
        m => assert_eq!(active, m.flag(), "offload attached: {status}"),
    }
}

/// Relayed payloads arrive intact and in order; the kernel carried them (its counters,
/// and none through the relay sockets) unless offload is off; Send indications still go
/// through userspace beside the offloaded channel; no receiver saw a bad checksum.
fn relays_intact(mode: Mode, v6: bool, test: u32) {
    let lab = Topology::new(&prefix(test), SenderOffloads { tx_checksum: false });
    let _peers = Peers::start(&lab, v6);
    let dp = Dataplane::start_in(
        &lab.gateway,
        &config(1, 3600, ROUTED),
        &["--offload", mode.flag()],
    );
    expect_offload_status(&dp, mode);
    let mut c = client(&lab, v6, "alice");
    c.allocate_family(v6).unwrap();
    let echo = SocketAddr::new(addr::peer(v6), ECHO);
    c.channel_bind(echo, 0x4001).unwrap();
    let n = 300;
    assert_eq!(
        echo_round(&c, n, Duration::from_secs(1)),
        n,
        "every packet echoed"
    );

    // Beside the channel: a Send indication to another peer port, answered by a Data
    // indication (no channel for that port), both through userspace.
    let other = SocketAddr::new(addr::peer(v6), OTHER);
    c.create_permission(other).unwrap();
    c.send_indication(other, b"indicated").unwrap();
    let r = c.recv_relayed(Duration::from_secs(2)).unwrap();
    assert_eq!(
        (r.peer, r.payload.as_slice(), r.channel),
        (other, &b"indicated"[..], None)
    );

    // Counters are published once a second. The first packets towards a neighbour not
    // yet resolved go up the stack (XDP cannot resolve it; TC hands it to the kernel's
    // neighbour subsystem): the kernel relays all but at most those.
    let want = f64::from(n);
    let path = if mode == Mode::Off {
        "userspace"
    } else {
        "kernel"
    };
    let end = Instant::now() + Duration::from_secs(5);
    while relayed(&dp, "to_client", path) + relayed(&dp, "to_client", "userspace") < want + 1.0
        && Instant::now() < end
    {
        std::thread::sleep(Duration::from_millis(200));
    }
    for direction in ["to_peer", "to_client"] {
        let kernel = relayed(&dp, direction, "kernel");
        let user = relayed(&dp, direction, "userspace");
        assert_eq!(
            kernel + user,
            want + 1.0,
            "{direction}: every packet counted once"
        );
        match mode {
            Mode::Off => assert_eq!(kernel, 0.0, "{direction}: nothing in the kernel"),
            _ => assert!(
                kernel >= want - 2.0,
                "{direction}: {kernel} of {n} in the kernel"
            ),
        }
    }
    assert_eq!(
        checksum_errors(&lab, v6),
        0,
        "receivers found bad UDP checksums"
    );
    let (table, field) = if v6 {
        ("Udp6", "InDatagrams")
    } else {
        ("Udp", "InDatagrams")
    };
    assert!(
        lab.peer.snmp(table, field) >= u64::from(n),
        "the peer's stack counted them"
    );
}

/// After the allocation is deleted, after its lifetime ends and after its route is
/// withdrawn, the very next ChannelData goes nowhere: the kernel stopped at once.
fn stops_at_once(mode: Mode, test: u32) {
    let lab = Topology::new(&prefix(test), SenderOffloads { tx_checksum: false });
    let peers = Peers::start(&lab, false);
    // The shortest lifetime a config may give (seconds).
    let lifetime = 60;
    let dp = Dataplane::start_in(
        &lab.gateway,
        &config(1, lifetime, ROUTED),
        &["--offload", mode.flag()],
    );
    let echo = SocketAddr::new(addr::peer(false), ECHO);
    let silent = |c: &TurnClient| {
        let before = peers.received.load(Relaxed);
        let back = echo_round(c, 5, Duration::from_millis(300));
        let reached = peers.received.load(Relaxed) - before;
        (back, reached)
    };
    let bound = |user: &str| {
        let mut c = client(&lab, false, user);
        c.allocate().unwrap();
        c.channel_bind(echo, 0x4001).unwrap();
        assert_eq!(
            echo_round(&c, 20, Duration::from_secs(1)),
            20,
            "{user} relays"
        );
        c
    };

    // Expiring: nothing refreshes it; checked when its lifetime is over, below.
    let start = Instant::now();
    let expiring = bound("expiring");

    // Deleted: the answer to the delete comes after the kernel entry is gone.
    let mut c = bound("deleted");
    c.release().unwrap();
    assert_eq!(
        silent(&c),
        (0, 0),
        "relayed after the allocation was deleted"
    );

    // Expired: the lifetime ends between two ticks; the entry's own deadline stops it.
    let expiry = start + Duration::from_secs(lifetime.into());
    std::thread::sleep(
        expiry.saturating_duration_since(Instant::now()) + Duration::from_millis(50),
    );
    assert_eq!(
        silent(&expiring),
        (0, 0),
        "relayed after the allocation expired"
    );

    // Revoked: a new config no longer routes the peers.
    let c = bound("revoked");
    std::fs::write(dp.config_path(), config(2, lifetime, REVOKED)).unwrap();
    let end = Instant::now() + Duration::from_secs(5);
    while !dp.status().contains("\"generation\":2") && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(dp.status().contains("\"generation\":2"), "{}", dp.status());
    assert_eq!(silent(&c), (0, 0), "relayed after the route was withdrawn");
    assert_eq!(checksum_errors(&lab, false), 0);
}

#[test]
fn tc_relays_ipv4_intact_in_the_kernel() {
    relays_intact(Mode::Tc, false, 1);
}

#[test]
fn tc_relays_ipv6_intact_in_the_kernel() {
    relays_intact(Mode::Tc, true, 2);
}

#[test]
fn xdp_relays_ipv4_intact_in_the_kernel() {
    relays_intact(Mode::Xdp, false, 3);
}

#[test]
fn xdp_relays_ipv6_intact_in_the_kernel() {
    relays_intact(Mode::Xdp, true, 4);
}

#[test]
fn without_offload_the_same_relay_runs_in_userspace() {
    relays_intact(Mode::Off, false, 5);
    relays_intact(Mode::Off, true, 6);
}

#[test]
fn tc_stops_at_once_on_delete_expiry_and_revocation() {
    stops_at_once(Mode::Tc, 7);
}

#[test]
fn xdp_stops_at_once_on_delete_expiry_and_revocation() {
    stops_at_once(Mode::Xdp, 8);
}

#[test]
fn without_offload_delete_expiry_and_revocation_stop_the_relay() {
    stops_at_once(Mode::Off, 9);
}

/// Senders on the same machine leave UDP checksums unfinished (CHECKSUM_PARTIAL), which
/// the kernel program cannot complete after moving the UDP header: it passes those
/// packets up, and userspace relays them. Nothing is lost; the counters say why.
#[test]
fn unfinished_checksums_are_passed_up_and_relayed_in_userspace() {
    let lab = Topology::new(&prefix(10), SenderOffloads { tx_checksum: true });
    let _peers = Peers::start(&lab, false);
    let dp = Dataplane::start_in(&lab.gateway, &config(1, 3600, ROUTED), &["--offload", "TC"]);
    let mut c = client(&lab, false, "partial");
    c.allocate().unwrap();
    c.channel_bind(SocketAddr::new(addr::peer(false), ECHO), 0x4001)
        .unwrap();
    let n = 50;
    assert_eq!(echo_round(&c, n, Duration::from_secs(1)), n);
    let want = f64::from(n);
    let end = Instant::now() + Duration::from_secs(5);
    while relayed(&dp, "to_client", "userspace") < want && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(relayed(&dp, "to_peer", "userspace"), want);
    assert_eq!(relayed(&dp, "to_client", "userspace"), want);
    assert_eq!(relayed(&dp, "to_peer", "kernel"), 0.0);
    let passed = metric(
        &dp.metrics(),
        "turnpike_offload_passed_packets_total{reason=\"partial_checksum\"}",
    )
    .unwrap_or(0.0);
    assert_eq!(passed, 2.0 * want, "both directions passed up, counted");
}

/// `turnpike run --offload TC` in the gateway namespace: the in-process dataplane's report
/// reaches the listener's `Programmed` message that `/status` (and `turnpike status`)
/// shows, though no GatewayConfig asks for offload.
#[test]
fn turnpike_run_shows_offload_in_the_listener_status() {
    let lab = Topology::new(&prefix(11), SenderOffloads { tx_checksum: false });
    let dir = turnpike_tests::standalone::ConfigDir::new(PORT, ECHO);
    let (admin, dp_admin, auth) = (18080, 18086, 18088);
    let log = dir.path.parent().unwrap().join("run.log");
    let f = std::fs::File::create(&log).unwrap();
    let _run = turnpike_tests::Proc::spawn(
        "turnpike run --offload TC",
        std::process::Command::new("ip")
            .args(["netns", "exec", &lab.gateway.name])
            .arg(turnpike_tests::turnpike_bin())
            .arg("run")
            .arg(&dir.path)
            .args(["--offload", "TC", "--workers", "1", "--cds", "127.0.0.1:0"])
            .args(["--admin", &format!("127.0.0.1:{admin}")])
            .args(["--dataplane-admin", &format!("127.0.0.1:{dp_admin}")])
            .args(["--auth", &format!("127.0.0.1:{auth}")])
            .stdout(f.try_clone().unwrap())
            .stderr(f),
    );
    let want = "served by the dataplane; kernel offload TC active on 1 of 1 dataplanes";
    let end = Instant::now() + Duration::from_secs(20);
    let mut last = String::new();
    while Instant::now() < end {
        last = lab
            .gateway
            .run(move || turnpike_tests::http_get(admin, "/status"))
            .map(|(_, body)| body)
            .unwrap_or_default();
        if last.contains(want) {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!(
        "no {want:?} in /status:\n{last}\nlog:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}
