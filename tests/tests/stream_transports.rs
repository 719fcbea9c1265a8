//! TURN over TCP and TLS with real clients (coturn's `turnutils_uclient -t` and `-S`,
//! `openssl s_client`): relaying with zero loss, certificate rotation from the YAML
//! directory under load, and connection abuse (idle floods, slow loris, rate and cap).

use std::io::Write as _;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use turnpike_tests::standalone::{
    ConfigDir, SECRET as RUN_SECRET, start_run, write_base_with, write_tls_secret,
};
use turnpike_tests::{
    Dataplane, TestCa, Uclient, echo_peer, free_tcp_port, free_udp_port, http_get, metric,
    require_tool, served_serial, uclient_relay,
};

/// Polls `f` every 100 ms for up to `timeout`; the elapsed seconds once it holds.
fn within(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) -> f64 {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < timeout, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    t.elapsed().as_secs_f64()
}

#[test]
fn run_relays_over_tcp_and_tls_and_rotates_the_certificate_under_load() {
    require_tool("turnutils_uclient");
    let (port, tls_port, echo) = (free_udp_port(), free_tcp_port(), free_udp_port());
    let _peer = echo_peer(echo);
    let dir = ConfigDir::new(port, echo);
    write_base_with(
        &dir.path,
        &format!(
            "    - {{name: udp, protocol: TURN-UDP, port: {port}}}\n\
             \x20   - {{name: tcp, protocol: TURN-TCP, port: {port}}}\n\
             \x20   - {{name: tls, protocol: TURN-TLS, port: {tls_port}, tls: {{certificateRefs: [{{name: turn-tls}}]}}}}\n"
        ),
        "",
    );
    let ca = TestCa::new();
    let first = ca.server_cert(&["127.0.0.1"]);
    write_tls_secret(&dir.path, "turn-tls", &first.cert_pem, &first.key_pem);
    let run = start_run(&dir.path);

    // TURN-TCP and TURN-TLS relay to a UDP peer with zero loss.
    let r = uclient_relay(port, echo, 5, 100, &["-t", "-W", RUN_SECRET]);
    assert_eq!(r.lost, Some(0), "TCP:\n{}", r.output);
    let r = uclient_relay(tls_port, echo, 5, 100, &["-t", "-S", "-W", RUN_SECRET]);
    assert_eq!(r.lost, Some(0), "TLS:\n{}", r.output);
    // A burst (20 clients, 1 ms apart) queues several frames per flush: each still goes
    // in its own TLS record, which uclient (one SSL_read = one message) needs.
    let r = uclient_relay(
        tls_port,
        echo,
        20,
        300,
        &["-t", "-S", "-z", "1", "-W", RUN_SECRET],
    );
    assert_eq!(r.lost, Some(0), "TLS burst:\n{}", r.output);
    assert_eq!(served_serial(tls_port).as_deref(), Some(&*first.serial));

    // An open TLS client relays for about 12 s while the Secret's file is rewritten.
    let load = std::thread::spawn(move || {
        uclient_relay(
            tls_port,
            echo,
            1,
            600,
            &["-t", "-S", "-z", "20", "-W", RUN_SECRET],
        )
    });
    std::thread::sleep(Duration::from_secs(2));
    let second = ca.server_cert(&["127.0.0.1"]);
    write_tls_secret(&dir.path, "turn-tls", &second.cert_pem, &second.key_pem);
    let rotated = within(
        "new handshakes get the new certificate",
        Duration::from_secs(5),
        || served_serial(tls_port).as_deref() == Some(&*second.serial),
    );
    println!("certificate file rewritten → served to new handshakes in {rotated:.2} s");
    let dp_status = http_get(run.dp_admin, "/status").unwrap().1;
    assert!(dp_status.contains(&second.serial), "{dp_status}");

    // A broken replacement is refused: the listener keeps the last good certificate and
    // its status says why.
    let garbage =
        "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n";
    write_tls_secret(&dir.path, "turn-tls", garbage, &second.key_pem);
    within(
        "the broken certificate reported",
        Duration::from_secs(5),
        || {
            http_get(run.admin, "/status")
                .is_some_and(|(_, s)| s.contains("still serving the previous certificate"))
        },
    );
    assert_eq!(served_serial(tls_port).as_deref(), Some(&*second.serial));
    let r = uclient_relay(tls_port, echo, 2, 50, &["-t", "-S", "-W", RUN_SECRET]);
    assert_eq!(r.lost, Some(0), "TLS after a broken Secret:\n{}", r.output);

    let r = load.join().unwrap();
    assert_eq!(
        r.lost,
        Some(0),
        "the open TLS client lost packets across two certificate changes:\n{}",
        r.output
    );
}

fn stream_dataplane(port: u16, echo: u16, limits: &str) -> Dataplane {
    Dataplane::start(&format!(
        "version: v1alpha1\nname: default/test\nrealm: turnpike.test\n\
         auth: {{type: ephemeral, secret: {SECRET}}}\n\
         limits: {{maxAllocationsPerUser: 1000, {limits}}}\n\
         listeners:\n  - {{name: tcp, protocol: TURN-TCP, address: 127.0.0.1, port: {port}, routes: [default/echo]}}\n\
         routes:\n  - {{name: default/echo, endpoints: [\"127.0.0.1:{echo}-{}\"]}}\n",
        echo + 1
    ))
}

const SECRET: &str = "stream-secret";

fn tcp_relay(port: u16, echo: u16, clients: u32, messages: u32) -> turnpike_tests::UclientReport {
    uclient_relay(port, echo, clients, messages, &["-t", "-W", SECRET])
}

#[test]
fn idle_connections_and_a_slow_loris_do_not_stop_a_normal_client() {
    require_tool("turnutils_uclient");
    // 1,000 sockets here and as many in the dataplane.
    let _ = turnpike_dataplane::io::limits::raise_open_files();
    let (port, echo) = (free_tcp_port(), free_udp_port());
    let _peer = echo_peer(echo);
    let dp = stream_dataplane(
        port,
        echo,
        "maxConnectionRatePerIp: 100000, handshakeTimeout: 3, idleTimeout: 5",
    );

    let idle: Vec<TcpStream> = (0..1000)
        .map(|i| {
            TcpStream::connect(("127.0.0.1", port))
                .unwrap_or_else(|e| panic!("idle connection {i}: {e}"))
        })
        .collect();
    // A slow loris: a STUN header one byte at a time, never a whole message.
    let mut loris = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let loris_thread = std::thread::spawn(move || {
        let header = [0x00, 0x01, 0x00, 0x08, 0x21, 0x12, 0xA4, 0x42, 1, 2, 3, 4];
        for b in header {
            if loris.write_all(&[b]).is_err() {
                return true; // closed by the server
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        false
    });
    dp.wait_metric(
        "turnpike_connections_accepted_total",
        1001.0,
        Duration::from_secs(10),
    );

    let r = tcp_relay(port, echo, 5, 100);
    assert_eq!(
        r.lost,
        Some(0),
        "a normal client next to 1,000 idle connections:\n{}",
        r.output
    );

    // None of them ever sent a whole message: all closed once the handshake timeout passes.
    let closed = dp.wait_metric(
        "turnpike_connections_closed_total{reason=\"handshake_timeout\"}",
        1001.0,
        Duration::from_secs(10),
    );
    assert!(closed >= 1001.0, "closed {closed}\n{}", dp.metrics());
    assert!(
        loris_thread.join().unwrap(),
        "the slow loris was not disconnected"
    );
    drop(idle);
    let m = dp.metrics();
    assert_eq!(metric(&m, "turnpike_connections_active"), Some(0.0), "{m}");
}

#[test]
fn the_connection_cap_and_the_per_ip_rate_refuse_and_count() {
    let _ = turnpike_dataplane::io::limits::raise_open_files();
    let (port, echo) = (free_tcp_port(), free_udp_port());
    let _peer = echo_peer(echo);

    // At most 20 connections.
    let dp = stream_dataplane(
        port,
        echo,
        "maxConnections: 20, maxConnectionRatePerIp: 100000",
    );
    let held: Vec<TcpStream> = (0..30)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    let refused = dp.wait_metric(
        "turnpike_connections_refused_total{reason=\"max_connections\"}",
        10.0,
        Duration::from_secs(5),
    );
    assert_eq!(refused, 10.0, "{}", dp.metrics());
    drop(held);
    drop(dp);

    // 10 new connections a second per source, bursts of 20.
    let (port, echo2) = (free_tcp_port(), free_udp_port());
    let _peer2 = echo_peer(echo2);
    let dp = stream_dataplane(port, echo2, "maxConnectionRatePerIp: 10");
    let started = Instant::now();
    let flood: Vec<TcpStream> = (0..60)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    // Once the dataplane has decided on all 60, at most the burst plus what the bucket
    // refilled meanwhile got in (on a loaded machine the accepts spread over more time).
    let mut counts = (0.0, 0.0);
    within(
        "all 60 connections decided",
        Duration::from_secs(10),
        || {
            let m = dp.metrics();
            counts = (
                metric(&m, "turnpike_connections_accepted_total").unwrap_or(0.0),
                metric(
                    &m,
                    "turnpike_connections_refused_total{reason=\"rate_limit\"}",
                )
                .unwrap_or(0.0),
            );
            counts.0 + counts.1 >= 60.0
        },
    );
    let window = started.elapsed().as_secs_f64();
    let (accepted, limited) = counts;
    let most = 20.0 + 10.0 * window + 1.0;
    assert!(
        accepted >= 20.0 && accepted <= most && limited >= 60.0 - most,
        "refused {limited}, accepted {accepted} in {window:.2} s (at most {most:.0})"
    );
    drop(flood);
    // The bucket refills: a client a moment later gets through and relays.
    std::thread::sleep(Duration::from_millis(1500));
    let r = tcp_relay(port, echo2, 1, 50);
    assert_eq!(r.lost, Some(0), "{}", r.output);
}

#[test]
fn ipv6_listeners_relay_to_ipv6_peers_over_udp_and_tcp() {
    require_tool("turnutils_peer");
    if std::net::UdpSocket::bind("[::1]:0").is_err() {
        panic!("this machine has no IPv6 loopback; the IPv6 test needs ::1");
    }
    let (port, peer) = (free_tcp_port(), free_udp_port());
    let _peer = turnpike_tests::Proc::spawn(
        "turnutils_peer",
        std::process::Command::new("turnutils_peer")
            .args(["-L", "::1", "-p", &peer.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null()),
    );
    std::thread::sleep(Duration::from_millis(200));
    let dp = Dataplane::start(&format!(
        "version: v1alpha1\nname: default/v6\nrealm: turnpike.test\n\
         auth: {{type: ephemeral, secret: {SECRET}}}\n\
         listeners:\n\
         \x20 - {{name: udp6, protocol: TURN-UDP, address: \"::1\", port: {port}, routes: [default/echo]}}\n\
         \x20 - {{name: tcp6, protocol: TURN-TCP, address: \"::1\", port: {port}, routes: [default/echo]}}\n\
         routes:\n  - {{name: default/echo, endpoints: [\"[::1]:{peer}-{}\"]}}\n",
        peer + 1
    ));
    assert!(
        dp.status().contains("\"relayAddresses\":[\"::1\"]"),
        "{}",
        dp.status()
    );
    // turnutils_uclient asks for an IPv6 relay (REQUESTED-ADDRESS-FAMILY) to reach a v6
    // peer; without it the v6-only listener would answer 440.
    for transport in [&[][..], &["-t"][..]] {
        let r = Uclient::new("::1", "::1", peer)
            .port(port)
            .rest_secret(SECRET)
            .clients(3)
            .messages(100)
            .relay_family_of_peer()
            .args(transport)
            .run();
        assert_eq!(r.lost, Some(0), "{transport:?}:\n{}", r.output);
    }
    // Workers publish their counters once a second.
    let relayed = dp.wait_metric(
        "turnpike_relayed_packets_total{listener=\"tcp6\",route=\"default/echo\",direction=\"to_client\",path=\"userspace\"}",
        300.0,
        Duration::from_secs(5),
    );
    assert_eq!(relayed, 300.0, "{}", dp.metrics());
}
