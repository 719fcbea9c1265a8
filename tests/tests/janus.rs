//! Real media through Turnpike (issue 16): Janus in a network namespace of its own,
//! reachable only through the Gateway's relay; headless Chromium with a fake camera and
//! microphone in a client namespace behind a NAT router (tests/netlab/netlab.sh), using
//! only relayed candidates with credentials from the app server's `/ice-config`
//! (examples/janus). Screenshots of the received video go to tests/artifacts/.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

use std::process::Command;

use serde_json::Value;
use turnpike_tests::media::{Call, artifacts, assert_media_flowed, require_browser, route_bytes};
use turnpike_tests::{output_text, repo_root};

/// The demo of examples/janus/run.sh, up for one test and down when dropped.
struct Demo {
    state: tempfile::TempDir,
    env: std::collections::BTreeMap<String, String>,
}

impl Demo {
    fn up(prefix: &str) -> Demo {
        let state = tempfile::tempdir().unwrap();
        let out = Command::new(repo_root().join("examples/janus/run.sh"))
            .arg("up")
            .arg(state.path())
            .env("NETLAB_PREFIX", prefix)
            .output()
            .unwrap();
        let demo_env = std::fs::read_to_string(state.path().join("env")).unwrap_or_default();
        let demo = Demo {
            env: demo_env
                .lines()
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            state,
        };
        assert!(out.status.success(), "run.sh up: {}", output_text(&out));
        demo
    }

    fn var(&self, k: &str) -> &str {
        self.env.get(k).map_or("", String::as_str)
    }

    /// `turnpike_relayed_bytes_total` of route `default/janus`, both directions, summed
    /// over the two dataplanes `turnpike run` starts (the IPv4 and the IPv6 Gateway, admin
    /// ports 9086 and 9087 in the gateway namespace): a dual-stack browser may take either.
    fn route_bytes(&self) -> f64 {
        [9086, 9087]
            .iter()
            .map(|port| {
                let out = Command::new("ip")
                    .args(["netns", "exec", &format!("{}-g", self.var("NETLAB_PREFIX"))])
                    .args(["curl", "-sf", &format!("http://127.0.0.1:{port}/metrics")])
                    .output()
                    .unwrap();
                route_bytes(&String::from_utf8_lossy(&out.stdout), "default/janus")
            })
            .sum()
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.state.path().join(name)).unwrap_or_default()
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = Command::new(repo_root().join("examples/janus/run.sh"))
            .arg("down")
            .arg(self.state.path())
            .output();
    }
}

/// Browsers and Janus share two cores with the rest of the suite; the tests here run one
/// at a time so timings measure the network, not each other.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn prefix(test: u32) -> String {
    format!("j{test}{}", std::process::id() % 1000)
}

#[test]
fn a_browser_publishes_and_another_receives_through_janus_and_turnpike() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    require_browser(&["janus", "tinyproxy"]);
    let demo = Demo::up(&prefix(1));
    let shot = artifacts().join("janus-videoroom-subscriber.png");
    let r = Call {
        app_url: demo.var("APP_URL"),
        kind: "videoroom",
        screenshot: &shot,
        seconds: 10,
        client_ns: demo.var("CLIENT_NS"),
        flags: format!("--ignore-certificate-errors-spki-list={}", demo.var("SPKI")),
    }
    .run(|| {
        format!(
            "turnpike:\n{}\njanus:\n{}",
            demo.log("turnpike.log"),
            demo.log("janus.log")
        )
    });
    let received = assert_media_flowed(&r);
    // Both browsers' media crossed the route to Janus: the subscriber's received video
    // alone is more than this.
    let bytes = demo.route_bytes();
    assert!(
        bytes >= received,
        "Turnpike counted {bytes} bytes on route default/janus; the subscriber alone received {received}"
    );
    assert!(shot.exists(), "screenshot {}", shot.display());
}

/// Every egress profile of the test bed, 10 EchoTest calls each (tests/netlab/profiles.py
/// prints the same table for README.md).
#[test]
fn calls_connect_from_every_network_that_lets_tcp_443_out() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    require_browser(&["janus", "tinyproxy"]);
    let json = tempfile::NamedTempFile::new().unwrap();
    let shots = artifacts().join("netlab");
    let out = Command::new(repo_root().join("tests/netlab/profiles.py"))
        .args(["--calls", "10", "--json"])
        .arg(json.path())
        .arg("--shots")
        .arg(&shots)
        .env("NETLAB_PREFIX", prefix(2))
        .output()
        .unwrap();
    let text = output_text(&out);
    assert!(out.status.success(), "profiles.py: {text}");
    eprintln!("{text}");
    let rows: Vec<Value> = serde_json::from_slice(&std::fs::read(json.path()).unwrap()).unwrap();
    assert_eq!(rows.len(), 8, "{text}");
    for r in &rows {
        let name = r["row"].as_str().unwrap_or("?");
        let calls = r["calls"].as_u64().unwrap_or(0);
        let connected = r["connected"].as_u64().unwrap_or(0);
        assert_eq!(calls, 10, "{name}: {r}");
        if r["expected_to_connect"] == true {
            assert_eq!(connected, calls, "{name}: every call connects: {r}");
            let p95 = r["p95_ms"].as_f64().unwrap_or(f64::MAX);
            assert!(p95 < 1000.0, "{name}: p95 {p95} ms to ICE connected: {r}");
        } else {
            assert_eq!(connected, 0, "{name}: nothing can pass: {r}");
            // A clear failure naming what was refused, at the page's deadline.
            for f in r["failures"].as_array().unwrap() {
                let f = f.as_str().unwrap_or("");
                assert!(
                    f.contains("no relayed path within 10 s") && f.contains("701"),
                    "{name}: {f}"
                );
            }
        }
    }
    // Which transport each profile needed: the one its rules leave.
    let transport = |row: usize| r_transports(&rows[row]);
    assert!(
        transport(2).contains(&"tcp".to_string()),
        "udp-blocked: TURN over TCP"
    );
    for row in [3, 4, 5] {
        assert_eq!(
            transport(row),
            ["tls"],
            "{}: TURN over TLS on 443",
            rows[row]["row"]
        );
    }
}

fn r_transports(r: &Value) -> Vec<String> {
    r["transports"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}
