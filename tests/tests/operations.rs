//! Operating the dataplane: admin endpoints, hot reload, refused configs, SIGHUP, SIGTERM.
#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

use std::time::{Duration, Instant};

use turnpike_tests::{
    Dataplane, echo_peer, free_udp_port, http_get, metric, uclient_relay, udp_config,
};

const SECRET: &str = "ops-secret";

fn auth() -> String {
    format!("{{type: ephemeral, secret: {SECRET}}}")
}

fn relay(port: u16, peer: u16, messages: u32, pace_ms: &str) -> turnpike_tests::UclientReport {
    uclient_relay(port, peer, 2, messages, &["-z", pace_ms, "-W", SECRET])
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out waiting for {what}");
}

#[test]
fn admin_endpoints_answer() {
    let port = free_udp_port();
    let dp = Dataplane::start(&udp_config(port, &auth(), &["127.0.0.1:9"]));
    assert_eq!(http_get(dp.admin, "/livez").unwrap().0, 200);
    assert_eq!(http_get(dp.admin, "/readyz").unwrap().0, 200);
    let status = dp.status();
    assert!(status.contains("\"name\":\"default/test\""), "{status}");
    assert!(status.contains("\"state\":\"serving\""), "{status}");
    assert!(!status.contains(SECRET), "no secret in /status");
    let m = dp.metrics();
    for series in [
        "turnpike_allocations_active",
        "turnpike_auth_failures_total",
        "turnpike_denied_peers_total",
        "turnpike_malformed_packets_total",
        "turnpike_config_generation",
    ] {
        assert!(metric(&m, series).is_some(), "{series} missing:\n{m}");
    }
}

#[test]
fn edits_reload_without_dropping_relays_and_bad_files_are_refused() {
    let (port, peer_a, peer_b) = (free_udp_port(), free_udp_port(), free_udp_port());
    let _a = echo_peer(peer_a);
    let _b = echo_peer(peer_b);
    let route_a = format!("127.0.0.1:{}-{}", peer_a, peer_a + 1);
    let route_b = format!("127.0.0.1:{}-{}", peer_b, peer_b + 1);
    let dp = Dataplane::start(&udp_config(port, &auth(), &[&route_a]));

    // Peer B is not routed yet.
    let r = relay(port, peer_b, 5, "20");
    assert!(r.output.contains("403"), "{}", r.output);

    // A relay runs for ~6 s while the config changes underneath it twice.
    let path = dp.config_path();
    let long = std::thread::spawn(move || relay(port, peer_a, 300, "20"));
    std::thread::sleep(Duration::from_millis(1500));

    std::fs::write(&path, "version: v1alpha1\nname: [oops\n").unwrap();
    wait_for(
        "the refused config in /status",
        Duration::from_secs(5),
        || {
            dp.status().contains("lastError")
                && metric(&dp.metrics(), "turnpike_config_reload_failures_total") == Some(1.0)
        },
    );
    let bad_field = udp_config(port, &auth(), &[&route_a]).replace("port:", "prot:");
    std::fs::write(&path, bad_field).unwrap();
    wait_for("the second refusal", Duration::from_secs(5), || {
        metric(&dp.metrics(), "turnpike_config_reload_failures_total") == Some(2.0)
    });
    assert!(
        dp.status().contains("listeners[0]"),
        "field path: {}",
        dp.status()
    );

    let good =
        udp_config(port, &auth(), &[&route_a, &route_b]).replace("generation: 1", "generation: 2");
    std::fs::write(&path, good).unwrap();
    wait_for("generation 2", Duration::from_secs(5), || {
        metric(&dp.metrics(), "turnpike_config_generation") == Some(2.0)
    });

    let r = long.join().unwrap();
    assert_eq!(
        r.lost,
        Some(0),
        "the running relay lost packets across reloads: {}",
        r.output
    );
    let r = relay(port, peer_b, 20, "5");
    assert_eq!(
        r.lost,
        Some(0),
        "peer B routed after the reload: {}",
        r.output
    );
}

#[test]
fn sighup_reapplies_the_file() {
    let port = free_udp_port();
    let dp = Dataplane::start(&udp_config(port, &auth(), &["127.0.0.1:9"]));
    let before = metric(&dp.metrics(), "turnpike_config_reloads_total").unwrap();
    dp.proc.signal("HUP");
    wait_for("a reload after SIGHUP", Duration::from_secs(5), || {
        metric(&dp.metrics(), "turnpike_config_reloads_total").unwrap() > before
    });
}

#[test]
fn sigterm_drains_then_exits() {
    let (port, peer) = (free_udp_port(), free_udp_port());
    let _echo = echo_peer(peer);
    let route = format!("127.0.0.1:{}-{}", peer, peer + 1);
    let mut dp = Dataplane::start_with(
        &udp_config(port, &auth(), &[&route]),
        &["--drain-timeout", "4s"],
    );
    // turnutils_uclient leaves its allocations behind, so the drain has work to wait for.
    let r = relay(port, peer, 5, "10");
    assert_eq!(r.lost, Some(0), "{}", r.output);
    let start = Instant::now();
    dp.proc.signal("TERM");
    // Still ready while it drains: a failing probe would make kube-proxy flush the UDP
    // flows of the allocations it is draining (tests/tests/cluster.rs).
    wait_for(
        "/readyz to report draining",
        Duration::from_secs(3),
        || matches!(http_get(dp.admin, "/readyz"), Some((200, body)) if body.contains("draining")),
    );
    // New allocations are refused while existing ones keep their relay.
    let r = relay(port, peer, 5, "10");
    assert!(r.output.contains("508"), "{}", r.output);
    let status = dp
        .proc
        .wait_exit(Duration::from_secs(10))
        .expect("exits after the grace period");
    assert!(status.success());
    let took = start.elapsed();
    assert!(
        took >= Duration::from_secs(3),
        "waited for allocations: {took:?}"
    );

    // Without allocations the drain ends at once.
    let port = free_udp_port();
    let mut idle = Dataplane::start_with(
        &udp_config(port, &auth(), &["127.0.0.1:9"]),
        &["--drain-timeout", "60s"],
    );
    let start = Instant::now();
    idle.proc.signal("TERM");
    idle.proc.wait_exit(Duration::from_secs(10)).expect("exits");
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[test]
fn an_invalid_startup_config_names_the_field() {
    let port = free_udp_port();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, udp_config(port, &auth(), &["10.0.0.0/33"])).unwrap();
    let out = std::process::Command::new(turnpike_tests::turnpike_bin())
        .args(["dataplane", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("routes[0].endpoints[0]"), "{err}");
}

#[test]
fn garbage_datagrams_are_dropped_and_counted_and_service_goes_on() {
    let (port, peer) = (free_udp_port(), free_udp_port());
    let _echo = echo_peer(peer);
    let route = format!("127.0.0.1:{}-{}", peer, peer + 1);
    let dp = Dataplane::start(&udp_config(port, &auth(), &[&route]));
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let target = ("127.0.0.1", port);
    let mut seed: u32 = 0x1234_5678;
    let mut sent = 0;
    for i in 0..2000usize {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        let len = (seed as usize) % 300;
        let mut d: Vec<u8> = (0..len).map(|k| (seed >> (k % 24)) as u8).collect();
        match i % 4 {
            // STUN-looking header with a lying length.
            0 if d.len() >= 20 => {
                d[0] = 0;
                d[1] = 1;
                d[2..4].copy_from_slice(&(len as u16 + 40).to_be_bytes());
                d[4..8].copy_from_slice(&0x2112_A442u32.to_be_bytes());
            }
            // ChannelData for a channel nobody bound.
            1 if d.len() >= 4 => d[0] = 0x40,
            _ => {}
        }
        if d.first().is_some_and(|b| b & 0xC0 == 0x40) {
            // ChannelData without an allocation is counted as dropped, not malformed.
            continue;
        }
        sock.send_to(&d, target).unwrap();
        sent += 1;
    }
    // Larger than any receive buffer: truncated by the kernel, dropped as oversized.
    sock.send_to(&vec![0u8; 20_000], target).unwrap();
    let malformed = dp.wait_metric(
        "turnpike_malformed_packets_total",
        sent as f64,
        Duration::from_secs(5),
    );
    assert!(
        malformed >= sent as f64 * 0.95,
        "malformed {malformed} of {sent}"
    );
    assert!(
        dp.wait_metric(
            "turnpike_oversized_packets_total",
            1.0,
            Duration::from_secs(3)
        ) >= 1.0
    );
    let r = relay(port, peer, 20, "5");
    assert_eq!(r.lost, Some(0), "still relaying: {}", r.output);
}

#[test]
fn a_listener_that_cannot_bind_keeps_the_dataplane_unready() {
    // A plain socket (without SO_REUSEPORT) holds the port.
    let squatter = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = squatter.local_addr().unwrap().port();
    let dp = Dataplane::spawn(&udp_config(port, &auth(), &["127.0.0.1:9"]), &[]);
    wait_for(
        "/readyz to name the listener",
        Duration::from_secs(10),
        || matches!(http_get(dp.admin, "/readyz"), Some((503, body)) if body.contains("listener udp")),
    );
    assert!(
        dp.status().contains("error: bind 127.0.0.1:"),
        "{}",
        dp.status()
    );
}
