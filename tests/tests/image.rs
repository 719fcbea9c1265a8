//! The image as users run it: built FROM scratch by `tests/image/build.sh` from the tested
//! binary, inspected, and run with podman (read-only, no capabilities) on the quickstart
//! directory mounted from the host, relaying for a client on the host.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;
use turnpike_tests::cluster::{IMAGE, build_image};
use turnpike_tests::k8s::wait_for;
use turnpike_tests::{free_tcp_port, free_udp_port, output_text, repo_root, turnpike_bin};

/// podman with the tests' storage and containers.conf (tests/image/containers-env.sh).
fn podman(args: &[&str]) -> Output {
    let env = repo_root().join("tests/image/containers-env.sh");
    Command::new("bash")
        .arg("-c")
        .arg(format!(
            r#". "{}" && exec podman "${{storage[@]}}" "$@""#,
            env.display()
        ))
        .arg("podman")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn inspect() -> Value {
    let out = podman(&["image", "inspect", IMAGE]);
    assert!(out.status.success(), "{}", output_text(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v[0].clone()
}

#[test]
fn the_image_is_minimal_non_root_and_runs_turnpike_run_on_a_mounted_directory() {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("turnpike.oci.tar");
    build_image(&archive);
    let archive_size = std::fs::metadata(&archive).unwrap().len();

    let image = inspect();
    let size = image["Size"].as_u64().unwrap();
    eprintln!("image {size} bytes unpacked, archive {archive_size} bytes");
    assert!(
        size <= 30_000_000,
        "the image is {size} bytes (target 30 MB)"
    );
    assert_eq!(image["Config"]["User"], "65532:65532");
    assert_eq!(image["Config"]["Entrypoint"][0], "/usr/local/bin/turnpike");
    let labels = &image["Config"]["Labels"];
    for label in ["source", "version", "licenses", "revision"] {
        let key = format!("org.opencontainers.image.{label}");
        assert!(labels[&key].is_string(), "label {key} in {labels}");
    }
    assert_eq!(
        labels["org.opencontainers.image.version"],
        env!("CARGO_PKG_VERSION")
    );
    // No shell to exec into, no package manager.
    let sh = podman(&[
        "run",
        "--rm",
        "--entrypoint",
        "/bin/sh",
        IMAGE,
        "-c",
        "true",
    ]);
    assert!(!sh.status.success(), "the image has a shell");
    let version = podman(&["run", "--rm", IMAGE, "--version"]);
    assert!(
        String::from_utf8_lossy(&version.stdout).contains(env!("CARGO_PKG_VERSION")),
        "{}",
        output_text(&version)
    );

    // `turnpike run` on the quickstart, mounted read-only into a read-only container
    // without capabilities; the client and the echo backend run on the host.
    let quickstart = repo_root().join("examples/quickstart");
    let (admin, dp_admin, auth) = (free_tcp_port(), free_tcp_port(), free_tcp_port());
    let cds = free_udp_port();
    let name = format!("turnpike-image-test-{}", std::process::id());
    let run = podman(&[
        "run",
        "-d",
        "--rm",
        "--name",
        &name,
        "--network",
        "host",
        "--read-only",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
        "-v",
        &format!("{}:/config:ro", quickstart.display()),
        IMAGE,
        "run",
        "/config",
        "--admin",
        &format!("127.0.0.1:{admin}"),
        "--dataplane-admin",
        &format!("127.0.0.1:{dp_admin}"),
        "--cds",
        &format!("127.0.0.1:{cds}"),
        "--auth",
        &format!("127.0.0.1:{auth}"),
    ]);
    assert!(run.status.success(), "podman run: {}", output_text(&run));
    let _stop = StopContainer(name.clone());
    wait_for(
        "the dataplane in the container ready",
        Duration::from_secs(30),
        || turnpike_tests::http_get(dp_admin, "/readyz").filter(|(code, _)| *code == 200),
    );
    let probe = Command::new(turnpike_bin())
        .args(["probe", "--echo", "--count", "20", "--dir"])
        .arg(Path::new(&quickstart))
        .output()
        .unwrap();
    let text = output_text(&probe);
    assert!(
        probe.status.success(),
        "probe through the container: {text}"
    );
    assert!(text.contains("echoed 20/20"), "{text}");
    let logs = podman(&["logs", &name]);
    assert!(
        String::from_utf8_lossy(&logs.stderr).contains("\"dataplane started\""),
        "JSON logs by default: {}",
        output_text(&logs)
    );
}

struct StopContainer(String);

impl Drop for StopContainer {
    fn drop(&mut self) {
        let _ = podman(&["stop", "-t", "5", &self.0]);
    }
}
