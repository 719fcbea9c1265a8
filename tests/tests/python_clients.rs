//! Python aioice and aiortc (independent TURN client implementations) against the built
//! `turnpike dataplane`.
#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

use turnpike_auth::ephemeral_credential;
use turnpike_tests::{
    Aioice, Dataplane, TestCa, echo_peer, free_tcp_port, free_udp_port, python_script,
    stream_config, udp_config,
};

const SECRET: &str = "py-secret";

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn dataplane(port: u16, endpoints: &[&str]) -> Dataplane {
    Dataplane::start(&udp_config(
        port,
        &format!("{{type: ephemeral, secret: {SECRET}}}"),
        endpoints,
    ))
}

#[test]
fn aioice_allocates_and_echoes_through_the_relay() {
    let (port, peer) = (free_udp_port(), free_udp_port());
    let _echo = echo_peer(peer);
    let route = format!("127.0.0.1:{peer}");
    let _dp = dataplane(port, &[&route]);
    let (user, pass) = ephemeral_credential(SECRET, "aioice", unix_now() + 600);
    let (ok, out) = Aioice::new(format!("127.0.0.1:{port}"), &user, &pass)
        .peer(&route)
        .run();
    assert!(ok, "{out}");
    assert!(out.contains("\"echoed\": 20"), "{out}");
    assert!(out.contains("\"relayed\": [\"127.0.0.1\""), "{out}");
}

#[test]
fn aioice_relays_over_tcp_and_over_tls_with_a_verified_certificate() {
    let (tcp, tls, peer) = (free_tcp_port(), free_tcp_port(), free_udp_port());
    let _echo = echo_peer(peer);
    let route = format!("127.0.0.1:{peer}");
    let ca = TestCa::new();
    let cert = ca.server_cert(&["127.0.0.1"]);
    let _dp = Dataplane::start(&stream_config(tcp, tls, &cert, SECRET, &[&route]));
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.cert_pem).unwrap();
    let other_ca = dir.path().join("other-ca.pem");
    std::fs::write(&other_ca, TestCa::new().cert_pem).unwrap();
    let (user, pass) = ephemeral_credential(SECRET, "aioice", unix_now() + 600);
    let run = |port: u16, ca: Option<&std::path::Path>| {
        let client = Aioice::new(format!("127.0.0.1:{port}"), &user, &pass).peer(&route);
        match ca {
            Some(ca) => client.tls(ca).run(),
            None => client.tcp().run(),
        }
    };
    let (ok, out) = run(tcp, None);
    assert!(ok && out.contains("\"echoed\": 20"), "TCP: {out}");
    let (ok, out) = run(tls, Some(&ca_file));
    assert!(ok && out.contains("\"echoed\": 20"), "TLS: {out}");
    // The check is real: a client trusting another CA refuses the server.
    let (ok, out) = run(tls, Some(&other_ca));
    assert!(!ok && out.contains("CERTIFICATE_VERIFY_FAILED"), "{out}");
}

#[test]
fn aioice_expired_rest_credential_gets_401() {
    let (port, peer) = (free_udp_port(), free_udp_port());
    let route = format!("127.0.0.1:{peer}");
    let dp = dataplane(port, &[&route]);
    let (user, pass) = ephemeral_credential(SECRET, "late", unix_now() - 5);
    let (ok, out) = Aioice::new(format!("127.0.0.1:{port}"), &user, &pass)
        .expect_error(401)
        .run();
    assert!(ok, "{out}");
    assert!(dp.log_text().contains("Expired"), "{}", dp.log_text());
}

#[test]
fn two_aiortc_peers_connect_relay_only() {
    let port = free_udp_port();
    // Each peer's relayed address is the other's peer: the route names the relay IP.
    let dp = dataplane(port, &["127.0.0.1"]);
    let (user, pass) = ephemeral_credential(SECRET, "aiortc", unix_now() + 600);
    let (ok, out) = python_script(
        None,
        "aiortc_pair.py",
        &[
            "--url",
            &format!("turn:127.0.0.1:{port}?transport=udp"),
            "--username",
            &user,
            "--password",
            &pass,
        ],
    );
    assert!(ok, "{out}\n{}", dp.log_text());
    assert!(out.contains("hello through turnpike"), "{out}");
}

#[test]
fn aioice_wrong_password_gets_401() {
    let (port, peer) = (free_udp_port(), free_udp_port());
    let route = format!("127.0.0.1:{peer}");
    let dp = dataplane(port, &[&route]);
    let (user, _) = ephemeral_credential(SECRET, "guess", unix_now() + 600);
    let (ok, out) = Aioice::new(format!("127.0.0.1:{port}"), &user, "not-the-password")
        .expect_error(401)
        .run();
    assert!(ok, "{out}");
    assert!(
        dp.log_text().contains("integrity mismatch"),
        "{}",
        dp.log_text()
    );
}
