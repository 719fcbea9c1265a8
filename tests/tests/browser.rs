//! Headless Chromium (Debian's) against `turnpike run`: the auth service's /test page
//! gathers relay candidates for every URI it hands out, and two RTCPeerConnections in the
//! page connect relay-only through the dataplane and exchange a datachannel message.
#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

use std::process::Command;

use turnpike_tests::standalone::{ConfigDir, start_run, token};
use turnpike_tests::{free_udp_port, repo_root, require_tool};

#[test]
fn test_page_gathers_relay_candidates_and_connects_a_call() {
    require_tool("node");
    assert!(
        std::path::Path::new("/usr/bin/chromium").exists(),
        "chromium is not installed: run tests/run.sh"
    );
    let browser_dir = repo_root().join("tests/browser");
    assert!(
        browser_dir.join("node_modules/playwright-core").exists(),
        "playwright-core is not installed: run tests/run.sh"
    );
    let (turn, echo) = (free_udp_port(), free_udp_port());
    let config = ConfigDir::new(turn, echo);
    let dir = &config.path;
    // Two browser peers relay to each other's relayed addresses on 127.0.0.1.
    std::fs::write(
        dir.join("40-peers.yaml"),
        "apiVersion: gateway.networking.k8s.io/v1alpha2\nkind: UDPRoute\nmetadata: {name: peers, namespace: default}\n\
         spec:\n  parentRefs: [{name: gw}]\n  rules: [{backendRefs: [{group: turnpike.dev, kind: StaticService, name: relays}]}]\n---\n\
         apiVersion: turnpike.dev/v1alpha1\nkind: StaticService\nmetadata: {name: relays, namespace: default}\nspec: {addresses: [127.0.0.1]}\n",
    )
    .unwrap();
    let run = start_run(dir);
    let token = token(dir, "alice");
    let artifacts = repo_root().join("tests/artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let shot = artifacts.join("auth-test-page.png");
    let out = Command::new("timeout")
        .args(["120", "node"])
        .arg(browser_dir.join("test-page.mjs"))
        .arg(format!("http://127.0.0.1:{}", run.auth))
        .arg(&token)
        .arg(&shot)
        .output()
        .unwrap();
    let text = turnpike_tests::output_text(&out);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(&format!("turn:127.0.0.1:{turn}?transport=udp")),
        "{text}"
    );
    assert!(text.contains("\"call\":\"relay\""), "{text}");
    assert!(shot.exists());
}
