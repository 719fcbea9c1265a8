//! `turnpike run DIR` end to end: Gateway API YAML in a directory, configs over CDS to the
//! in-process dataplane, real clients relaying, and live edits of the files.
#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use turnpike_auth::ephemeral_credential;
use turnpike_dataplane::client::TurnClient;
use turnpike_tests::standalone::{
    ConfigDir, SECRET, start_run, token, write_echo_route, write_other_route,
};
use turnpike_tests::{Aioice, echo_peer, free_udp_port, http_get, turnpike_bin, uclient_relay};

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn client(port: u16) -> TurnClient {
    let (u, p) = ephemeral_credential(SECRET, "e2e", unix_now() + 600);
    TurnClient::new(SocketAddr::from(([127, 0, 0, 1], port)), &u, &p).unwrap()
}

/// Sends to `peer` every 20 ms until an echo comes back (or not) — returns when the
/// wanted state (`echoing`) was first seen.
fn wait_echo_state(
    c: &TurnClient,
    peer: SocketAddr,
    echoing: bool,
    timeout: Duration,
) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        c.send_indication(peer, b"ping").unwrap();
        let got = matches!(c.recv(Duration::from_millis(40)), Ok((from, _)) if from == peer);
        if got == echoing {
            return Some(start.elapsed());
        }
    }
    None
}

#[test]
fn run_relays_hot_swaps_routes_and_survives_broken_files() {
    let (turn, a, b, other) = (
        free_udp_port(),
        free_udp_port(),
        free_udp_port(),
        free_udp_port(),
    );
    let _pa = echo_peer(a);
    let _pb = echo_peer(b);
    let _po = echo_peer(other);
    let config = ConfigDir::new(turn, a);
    let dir = &config.path;
    write_other_route(dir, other);
    let run = start_run(dir);

    // Real clients through the route, as the acceptance command does.
    let r = uclient_relay(turn, a, 5, 100, &["-W", SECRET]);
    assert_eq!(r.lost, Some(0), "{}", r.output);
    let (u, p) = ephemeral_credential(SECRET, "aioice", unix_now() + 600);
    let (ok, out) = Aioice::new(format!("127.0.0.1:{turn}"), &u, &p)
        .peer(format!("127.0.0.1:{a}"))
        .run();
    assert!(ok, "{out}");

    // An unrelated allocation keeps flowing through everything below (~6 s).
    let unrelated =
        std::thread::spawn(move || uclient_relay(turn, other, 2, 300, &["-z", "20", "-W", SECRET]));
    std::thread::sleep(Duration::from_millis(1500));

    let peer_a = SocketAddr::from(([127, 0, 0, 1], a));
    let peer_b = SocketAddr::from(([127, 0, 0, 1], b));
    let mut c = client(turn);
    c.allocate().unwrap();
    c.create_permission(peer_a).unwrap();
    assert!(wait_echo_state(&c, peer_a, true, Duration::from_secs(2)).is_some());

    // Point the route at peer B.
    let edited = Instant::now();
    write_echo_route(dir, b);
    let refused =
        wait_echo_state(&c, peer_a, false, Duration::from_secs(3)).expect("A still relays");
    let t_refused = edited.elapsed();
    let flows = wait_echo_state(&c, peer_b, true, Duration::from_secs(3)).expect("B never relays");
    let t_flows = edited.elapsed();
    eprintln!(
        "route edit: old peer refused after {t_refused:?}, new peer relays after {t_flows:?}"
    );
    assert!(
        t_refused < Duration::from_secs(1),
        "old peer refused after {t_refused:?} ({refused:?})"
    );
    assert!(
        t_flows < Duration::from_secs(1),
        "new peer relays after {t_flows:?} ({flows:?})"
    );

    // A broken file: reported with file, document and field; traffic unaffected.
    std::fs::write(dir.join("40-broken.yaml"), "apiVersion: gateway.networking.k8s.io/v1alpha2\nkind: UDPRoute\nmetadata: {name: bad}\nspec: {parentRefs: [{name: gw, port: not-a-number}], rules: []}\n").unwrap();
    let end = Instant::now() + Duration::from_secs(5);
    let status = loop {
        let s = http_get(run.admin, "/status").unwrap().1;
        if s.contains("40-broken.yaml") || Instant::now() > end {
            break s;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        status.contains("40-broken.yaml: document 0: spec.parentRefs[0].port"),
        "{status}"
    );
    assert!(
        wait_echo_state(&c, peer_b, true, Duration::from_secs(1)).is_some(),
        "B still relays"
    );
    let out = Command::new(turnpike_bin())
        .args(["status", "--admin", &format!("127.0.0.1:{}", run.admin)])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("the last edit was refused"), "{text}");
    assert!(text.contains("UDPRoute default/echo"), "{text}");

    let r = unrelated.join().unwrap();
    assert_eq!(
        r.lost,
        Some(0),
        "the unrelated allocation lost packets: {}",
        r.output
    );
    let metrics = http_get(run.dp_admin, "/metrics").unwrap().1;
    assert!(metrics.contains("route=\"default/other\""), "{metrics}");
    let _ = std::fs::read_to_string(&run.log);
}

#[test]
fn probe_echoes_through_the_quickstart_shape() {
    let (turn, a) = (free_udp_port(), free_udp_port());
    let config = ConfigDir::new(turn, a);
    let dir = &config.path;
    let _run = start_run(dir);
    let out = Command::new(turnpike_bin())
        .args(["probe", "--echo", "--dir"])
        .arg(dir)
        .output()
        .unwrap();
    let text = turnpike_tests::output_text(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("echoed 10/10"), "{text}");
}

/// The committed quickstart itself (ports moved to free ones so tests never collide): the
/// acceptance command of the README relays with zero loss.
#[test]
fn the_quickstart_example_relays() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("quickstart");
    std::fs::create_dir(&dir).unwrap();
    let (turn, echo) = (free_udp_port(), free_udp_port());
    let src = turnpike_tests::repo_root().join("examples/quickstart");
    for f in std::fs::read_dir(&src).unwrap() {
        let f = f.unwrap().path();
        let text = std::fs::read_to_string(&f)
            .unwrap()
            .replace("port: 3478", &format!("port: {turn}"))
            .replace("9001", &echo.to_string())
            .replace("9002", &(echo + 1).to_string());
        std::fs::write(dir.join(f.file_name().unwrap()), text).unwrap();
    }
    let _peer = echo_peer(echo);
    let _run = start_run(&dir);
    let r = uclient_relay(turn, echo, 5, 100, &["-W", "quickstart-secret"]);
    assert_eq!(r.exit, Some(0), "{}", r.output);
    assert_eq!(r.lost, Some(0), "{}", r.output);
}

/// The auth service inside `turnpike run`: a valid HS256 token gets credentials that relay
/// through the dataplane; no token gets a 401 problem.
#[test]
fn ice_config_credentials_relay_through_the_dataplane() {
    let (turn, a) = (free_udp_port(), free_udp_port());
    let _peer = echo_peer(a);
    let config = ConfigDir::new(turn, a);
    let dir = &config.path;
    let run = start_run(dir);
    let token = token(dir, "alice");
    let auth = format!("Bearer {token}");
    let end = Instant::now() + Duration::from_secs(5);
    let (status, head, body) = loop {
        let r = turnpike_tests::http_get_with(run.auth, "/ice-config", &[("Authorization", &auth)])
            .unwrap();
        if r.0 != 503 || Instant::now() > end {
            break r;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status, 200, "{head}\n{body}");
    assert!(
        head.to_ascii_lowercase()
            .contains("cache-control: no-store"),
        "{head}"
    );
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let server = &v["iceServers"][0];
    assert_eq!(
        server["urls"][0],
        format!("turn:127.0.0.1:{turn}?transport=udp")
    );
    let (user, cred) = (
        server["username"].as_str().unwrap(),
        server["credential"].as_str().unwrap(),
    );
    assert!(user.ends_with(":alice"), "{user}");
    let r = uclient_relay(turn, a, 5, 100, &["-u", user, "-w", cred]);
    assert_eq!(r.lost, Some(0), "{}", r.output);

    let (status, head, body) = turnpike_tests::http_get_with(run.auth, "/ice-config", &[]).unwrap();
    assert_eq!(status, 401, "{body}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/problem+json"),
        "{head}"
    );
}

/// The auth service's OpenAPI document is valid, and a property-based fuzzer driven by it
/// finds no server error (5xx) on any endpoint.
#[test]
fn openapi_document_validates_and_fuzzing_finds_no_5xx() {
    let (turn, a) = (free_udp_port(), free_udp_port());
    let config = ConfigDir::new(turn, a);
    let dir = &config.path;
    let run = start_run(dir);
    let (status, spec) = http_get(run.auth, "/openapi.json").unwrap();
    assert_eq!(status, 200);
    let spec_path = dir.with_file_name("openapi.json");
    std::fs::write(&spec_path, &spec).unwrap();
    let bin = turnpike_tests::python().parent().unwrap().to_path_buf();
    let out = Command::new(bin.join("openapi-spec-validator"))
        .arg(&spec_path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        turnpike_tests::output_text(&out)
    );
    let token = token(dir, "alice");
    let out = Command::new("timeout")
        .arg("300")
        .arg(bin.join("schemathesis"))
        .args([
            "run",
            &format!("http://127.0.0.1:{}/openapi.json", run.auth),
        ])
        .args(["--checks", "not_a_server_error", "--max-examples", "60"])
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .env("SCHEMATHESIS_HOOKS", "")
        .output()
        .unwrap();
    let text = turnpike_tests::output_text(&out);
    assert!(out.status.success(), "{text}");
}

/// Credentials from /ice-config work for aioice, and are refused once their TTL passed.
#[test]
fn ice_config_credentials_expire() {
    let (turn, a) = (free_udp_port(), free_udp_port());
    let _peer = echo_peer(a);
    let config = ConfigDir::new(turn, a);
    let dir = &config.path;
    let run = start_run(dir);
    let auth = format!("Bearer {}", token(dir, "alice"));
    let creds = |ttl: u32| -> (String, String) {
        let end = Instant::now() + Duration::from_secs(5);
        loop {
            let (status, _, body) = turnpike_tests::http_get_with(
                run.auth,
                &format!("/ice-config?ttl={ttl}&userid=py"),
                &[("Authorization", &auth)],
            )
            .unwrap();
            if status == 200 {
                let v: serde_json::Value = serde_json::from_str(&body).unwrap();
                let s = &v["iceServers"][0];
                return (
                    s["username"].as_str().unwrap().into(),
                    s["credential"].as_str().unwrap().into(),
                );
            }
            assert!(Instant::now() < end, "{status} {body}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let server = format!("127.0.0.1:{turn}");
    let peer = format!("127.0.0.1:{a}");
    let (u, p) = creds(600);
    let (ok, out) = Aioice::new(server.as_str(), &u, &p)
        .peer(peer.as_str())
        .run();
    assert!(ok, "{out}");
    let (u, p) = creds(1);
    std::thread::sleep(Duration::from_millis(2100));
    let (ok, out) = Aioice::new(server.as_str(), &u, &p).expect_error(401).run();
    assert!(ok, "expired credentials must be refused: {out}");
}
