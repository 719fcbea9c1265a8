//! coturn's own clients (`turnutils_uclient`, `turnutils_stunclient`) against the built
#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions
//! `turnpike dataplane`, relaying to `turnutils_peer` on 127.0.0.1.

use std::time::Duration;

use turnpike_tests::{
    Dataplane, echo_peer, free_udp_port, metric, require_tool, uclient_relay, udp_config,
};

const SECRET: &str = "e2e-secret";

/// `turnutils_uclient` also binds a channel to peer port + 1 (its RTCP stream), so the
/// route names both ports.
fn echo_route(peer: u16) -> String {
    format!("127.0.0.1:{}-{}", peer, peer + 1)
}

fn ephemeral(port: u16, peer: u16) -> Dataplane {
    let route = echo_route(peer);
    Dataplane::start(&udp_config(
        port,
        &format!("{{type: ephemeral, secret: {SECRET}}}"),
        &[&route],
    ))
}

#[test]
fn rest_credentials_channel_data_zero_loss() {
    let (port, peer) = (free_udp_port(), free_udp_port());
    let _echo = echo_peer(peer);
    let dp = ephemeral(port, peer);
    let r = uclient_relay(port, peer, 10, 200, &["-W", SECRET]);
    assert_eq!(r.exit, Some(0), "{}", r.output);
    assert_eq!(r.lost, Some(0), "{}", r.output);
    let m = dp.metrics();
    let sent = metric(
        &m,
        "turnpike_relayed_packets_total{listener=\"udp\",route=\"default/echo\",direction=\"to_peer\",path=\"userspace\"}",
    );
    // 10 clients × 200 messages, counted after each worker's next publish.
    let sent = sent.unwrap_or(0.0).max(dp.wait_metric(
        "turnpike_relayed_packets_total{listener=\"udp\",route=\"default/echo\",direction=\"to_client\",path=\"userspace\"}",
        2000.0,
        Duration::from_secs(3),
    ));
    assert!(sent >= 2000.0, "relayed {sent}\n{m}");
}

#[test]
fn rest_credentials_send_indications_zero_loss() {
    let (port, peer) = (free_udp_port(), free_udp_port());
    let _echo = echo_peer(peer);
    let _dp = ephemeral(port, peer);
    let r = uclient_relay(port, peer, 10, 200, &["-s", "-u", "alice", "-W", SECRET]);
    assert_eq!(r.exit, Some(0), "{}", r.output);
    assert_eq!(r.lost, Some(0), "{}", r.output);
}

#[test]
fn static_credentials_zero_loss() {
    let (port, peer) = (free_udp_port(), free_udp_port());
    let _echo = echo_peer(peer);
    let route = echo_route(peer);
    let _dp = Dataplane::start(&udp_config(
        port,
        "{type: static, users: [{username: bob, password: hunter2}]}",
        &[&route],
    ));
    let r = uclient_relay(port, peer, 10, 200, &["-u", "bob", "-w", "hunter2"]);
    assert_eq!(r.exit, Some(0), "{}", r.output);
    assert_eq!(r.lost, Some(0), "{}", r.output);
    let r = uclient_relay(port, peer, 10, 200, &["-s", "-u", "bob", "-w", "hunter2"]);
    assert_eq!(r.lost, Some(0), "{}", r.output);
}

#[test]
fn wrong_password_is_refused_with_401() {
    let (port, peer) = (free_udp_port(), free_udp_port());
    let _echo = echo_peer(peer);
    let route = echo_route(peer);
    let dp = Dataplane::start(&udp_config(
        port,
        "{type: static, users: [{username: bob, password: hunter2}]}",
        &[&route],
    ));
    let r = uclient_relay(port, peer, 1, 200, &["-u", "bob", "-w", "wrong"]);
    assert_ne!(r.exit, Some(0), "{}", r.output);
    assert!(r.lost.is_none(), "nothing may be relayed: {}", r.output);
    let failures = dp.wait_metric("turnpike_auth_failures_total", 1.0, Duration::from_secs(3));
    assert!(failures >= 1.0);
}

#[test]
fn wrong_rest_secret_is_refused_with_401() {
    let (port, peer) = (free_udp_port(), free_udp_port());
    let _echo = echo_peer(peer);
    let dp = ephemeral(port, peer);
    let r = uclient_relay(port, peer, 1, 200, &["-u", "alice", "-W", "not-the-secret"]);
    assert_ne!(r.exit, Some(0), "{}", r.output);
    assert!(dp.wait_metric("turnpike_auth_failures_total", 1.0, Duration::from_secs(3)) >= 1.0);
}

#[test]
fn peer_outside_the_routes_gets_403() {
    let (port, peer, other) = (free_udp_port(), free_udp_port(), free_udp_port());
    let _echo = echo_peer(peer);
    let _other = echo_peer(other);
    let dp = ephemeral(port, peer);
    let r = uclient_relay(port, other, 1, 200, &["-W", SECRET]);
    assert_ne!(r.exit, Some(0), "{}", r.output);
    assert!(r.output.contains("403"), "{}", r.output);
    assert!(dp.wait_metric("turnpike_denied_peers_total", 1.0, Duration::from_secs(3)) >= 1.0);
}

#[test]
fn stunclient_gets_its_reflexive_address() {
    require_tool("turnutils_stunclient");
    let (port, peer) = (free_udp_port(), free_udp_port());
    let _dp = ephemeral(port, peer);
    let out = std::process::Command::new("timeout")
        .args([
            "20",
            "turnutils_stunclient",
            "-p",
            &port.to_string(),
            "127.0.0.1",
        ])
        .output()
        .unwrap();
    let text = turnpike_tests::output_text(&out);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("UDP reflexive addr: 127.0.0.1:"),
        "expected a reflexive address: {text}"
    );
}
