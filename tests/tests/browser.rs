//! Headless Chromium (Debian's) against `turnpike run`: the auth service's /test page
//! gathers relay candidates for every URI it hands out (TURN over UDP, TCP and TLS), and
//! two RTCPeerConnections in the page connect relay-only through the TURN-TLS listener
//! and exchange a datachannel message. Chromium trusts the test certificate by its SPKI.
#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

use std::process::Command;

use turnpike_tests::standalone::{ConfigDir, start_run, token, write_base_with, write_tls_secret};
use turnpike_tests::{TestCa, free_tcp_port, free_udp_port, repo_root, require_tool};

/// base64(SHA-256(SubjectPublicKeyInfo)) of a PEM certificate, for Chromium's
/// `--ignore-certificate-errors-spki-list`.
fn spki_hash(cert_pem: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("cert.pem");
    std::fs::write(&f, cert_pem).unwrap();
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl x509 -in {} -pubkey -noout | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64",
            f.display()
        ))
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

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
    let (turn, tls, echo) = (free_udp_port(), free_tcp_port(), free_udp_port());
    let config = ConfigDir::new(turn, echo);
    let dir = &config.path;
    write_base_with(
        dir,
        &format!(
            "    - {{name: udp, protocol: TURN-UDP, port: {turn}}}\n\
             \x20   - {{name: tcp, protocol: TURN-TCP, port: {turn}}}\n\
             \x20   - {{name: tls, protocol: TURN-TLS, port: {tls}, tls: {{certificateRefs: [{{name: turn-tls}}]}}}}\n"
        ),
        "",
    );
    let cert = TestCa::new().server_cert(&["127.0.0.1"]);
    write_tls_secret(dir, "turn-tls", &cert.cert_pem, &cert.key_pem);
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
        .arg("tls")
        .env(
            "CHROMIUM_FLAGS",
            format!(
                "--ignore-certificate-errors-spki-list={}",
                spki_hash(&cert.cert_pem)
            ),
        )
        .output()
        .unwrap();
    let text = turnpike_tests::output_text(&out);
    println!("{text}");
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(&format!("turn:127.0.0.1:{turn}?transport=udp")),
        "{text}"
    );
    for uri in [
        format!("turn:127.0.0.1:{turn}?transport=tcp"),
        format!("turns:127.0.0.1:{tls}?transport=tcp"),
    ] {
        assert!(text.contains(&uri), "{uri} missing: {text}");
    }
    assert!(text.contains("\"call\":\"relay\""), "{text}");
    assert!(
        text.contains("relay/tls"),
        "the call did not use TURN-TLS: {text}"
    );
    assert!(shot.exists());
}
