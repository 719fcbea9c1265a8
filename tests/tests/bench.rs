//! `turnpike bench` against real servers: the Turnpike dataplane (whose own counters
//! cross-check what the load generator says it measured) and coturn's `turnserver`.
#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;
use turnpike_tests::{
    Dataplane, Proc, TestCa, free_tcp_port, free_udp_port, metric, output_text, require_tool,
    stream_config, turnpike_bin, udp_config,
};

const SECRET: &str = "bench-secret";
/// 10 allocations × 100 packets at 500/s each: 1,000 echoes in about 0.2 s.
const SMALL_LOAD: [&str; 6] = ["-n", "10", "--packets", "100", "--rate", "500"];

/// `bench` with the small load against `server`, plus `extra`.
fn small_load(server: &str, extra: &[&str]) -> Output {
    let mut args = vec!["--server", server];
    args.extend(SMALL_LOAD);
    args.extend(extra);
    bench(&args)
}

fn bench(args: &[&str]) -> Output {
    Command::new("timeout")
        .arg("120")
        .arg(turnpike_bin())
        .arg("bench")
        .args(args)
        .args(["--secret", SECRET, "--json", "-q"])
        .output()
        .unwrap()
}

fn report(out: &Output) -> Value {
    assert!(out.status.success(), "{}", output_text(out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", output_text(out)))
}

fn turnpike(port: u16) -> Dataplane {
    Dataplane::start(&udp_config(
        port,
        &format!("{{type: ephemeral, secret: {SECRET}}}"),
        &["127.0.0.1"],
    ))
}

/// Everything sent came back, once, and the histogram holds one RTT per echo.
fn assert_lossless(r: &Value, allocations: u64) {
    assert_eq!(r["allocations"], allocations, "{r:#}");
    let sent = r["sent"].as_u64().unwrap();
    assert!(sent > 0, "{r:#}");
    assert_eq!(r["received"], sent, "{r:#}");
    assert_eq!(r["lost"], 0, "{r:#}");
    assert_eq!(r["duplicates"], 0, "{r:#}");
    assert_eq!(r["foreign"], 0, "{r:#}");
    assert_eq!(r["rtt_us"]["count"], sent, "{r:#}");
    assert!(r["rtt_us"]["p50"].as_u64().unwrap() > 0, "{r:#}");
    assert_eq!(r["errors"], serde_json::json!({}), "{r:#}");
}

#[test]
fn relays_channel_data_and_indications_through_turnpike_and_counts_every_packet() {
    let port = free_udp_port();
    let dp = turnpike(port);
    let server = format!("127.0.0.1:{port}");
    // 20 allocations × 100 packets/s for 2 s, paced; then the same with Send indications.
    let r = report(&bench(&[
        "--server", &server, "-n", "20", "--rate", "100", "-d", "2s",
    ]));
    assert_lossless(&r, 20);
    let sent = r["sent"].as_u64().unwrap();
    // The pacing held: 20 × 100/s × 2 s, give or take the last turn.
    assert!((3600..=4100).contains(&sent), "{r:#}");
    let r2 = report(&bench(&[
        "--server",
        &server,
        "-n",
        "10",
        "--packets",
        "50",
        "--indications",
        "--burst",
        "5",
    ]));
    assert_lossless(&r2, 10);
    assert_eq!(r2["sent"], 500, "{r2:#}");
    // The server's own count agrees: every echoed packet crossed it twice.
    let to_peer = dp.wait_metric(
        "turnpike_relayed_packets_total{listener=\"udp\",route=\"default/echo\",direction=\"to_peer\",path=\"userspace\"}",
        (sent + 500) as f64,
        Duration::from_secs(3),
    );
    assert_eq!(to_peer, (sent + 500) as f64, "{}", dp.metrics());
}

#[test]
fn relays_over_tcp_and_tls() {
    let (tcp, tls) = (free_tcp_port(), free_tcp_port());
    let ca = TestCa::new();
    let cert = ca.server_cert(&["localhost"]);
    let _dp = Dataplane::start(&stream_config(tcp, tls, &cert, SECRET, &["127.0.0.1"]));
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.cert_pem).unwrap();
    let tcp_server = format!("127.0.0.1:{tcp}");
    let r = report(&small_load(&tcp_server, &["--transport", "tcp"]));
    assert_lossless(&r, 10);
    assert_eq!(r["sent"], 1000);
    let tls_server = format!("127.0.0.1:{tls}");
    let ca_arg = ca_file.to_str().unwrap();
    let r = report(&small_load(
        &tls_server,
        &["--transport", "tls", "--ca", ca_arg],
    ));
    assert_lossless(&r, 10);
    // A certificate for another name fails every connection, and the run with it.
    let out = bench(&[
        "--server",
        &tls_server,
        "--transport",
        "tls",
        "--ca",
        ca_arg,
        "--server-name",
        "elsewhere.test",
        "-n",
        "2",
        "-d",
        "1s",
    ]);
    assert!(!out.status.success(), "{}", output_text(&out));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    let errors = r["errors"].to_string();
    assert!(errors.contains("certificate"), "{errors}");
}

#[test]
fn allocate_mode_cycles_allocations_with_full_authentication() {
    let port = free_udp_port();
    let dp = turnpike(port);
    let server = format!("127.0.0.1:{port}");
    let r = report(&bench(&[
        "allocate",
        "--server",
        &server,
        "-d",
        "1s",
        "--sources",
        "127.1.0.0/16",
        "--concurrency",
        "16",
    ]));
    let cycles = r["allocations"].as_u64().unwrap();
    assert!(cycles > 100, "{r:#}");
    assert_eq!(r["errors"], serde_json::json!({}), "{r:#}");
    // Every cycle took the 401 challenge, allocated, refreshed and deleted.
    let created = dp.wait_metric(
        "turnpike_allocations_created_total",
        cycles as f64,
        Duration::from_secs(3),
    );
    assert!(created >= cycles as f64, "{created} < {cycles}");
    let m = dp.metrics();
    assert_eq!(
        metric(&m, "turnpike_allocations_deleted_total"),
        Some(created),
        "{m}"
    );
    assert_eq!(metric(&m, "turnpike_auth_failures_total"), Some(0.0), "{m}");
}

#[test]
fn hold_mode_keeps_allocations_open_until_the_end() {
    let port = free_udp_port();
    let dp = turnpike(port);
    let dir = tempfile::tempdir().unwrap();
    let mark = dir.path().join("mark");
    let mut cmd = Command::new(turnpike_bin());
    cmd.args([
        "bench",
        "hold",
        "300",
        "--server",
        &format!("127.0.0.1:{port}"),
    ])
    .args([
        "--secret",
        SECRET,
        "--sources",
        "127.2.0.0/16",
        "-d",
        "2s",
        "--json",
        "-q",
    ])
    .arg("--mark")
    .arg(&mark)
    .stdout(std::process::Stdio::null());
    let mut run = Proc::spawn("turnpike bench hold", &mut cmd);
    wait_for(&mark, "held");
    let held = dp.wait_metric("turnpike_allocations_active", 300.0, Duration::from_secs(3));
    assert_eq!(held, 300.0, "{}", dp.metrics());
    let status = run.wait_exit(Duration::from_secs(20)).unwrap();
    assert!(status.success());
    // Deleted at the end, not left to expire.
    let deleted = dp.wait_metric(
        "turnpike_allocations_deleted_total",
        300.0,
        Duration::from_secs(3),
    );
    assert_eq!(deleted, 300.0, "{}", dp.metrics());
}

fn wait_for(mark: &Path, phase: &str) {
    let end = Instant::now() + Duration::from_secs(30);
    while Instant::now() < end {
        if std::fs::read_to_string(mark).is_ok_and(|s| s.trim() == phase) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("bench never reached {phase}");
}

#[test]
fn relays_through_coturn_without_loss() {
    require_tool("turnserver");
    let port = free_udp_port();
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("empty.conf");
    std::fs::write(&conf, "").unwrap();
    let mut cmd = Command::new("turnserver");
    cmd.arg("-c")
        .arg(&conf)
        .args(["-n", "--listening-ip=127.0.0.1", "--relay-ip=127.0.0.1"])
        .arg(format!("--listening-port={port}"))
        .args(["--realm=bench", "--use-auth-secret"])
        .arg(format!("--static-auth-secret={SECRET}"))
        .args([
            "--allow-loopback-peers",
            "--no-cli",
            "--no-tls",
            "--no-dtls",
        ])
        .arg(format!("--pidfile={}", dir.path().join("pid").display()))
        .args(["--no-stdout-log", "--log-file=/dev/null"]);
    let _coturn = Proc::spawn("turnserver", &mut cmd);
    std::thread::sleep(Duration::from_millis(800));
    let server = format!("127.0.0.1:{port}");
    let r = report(&small_load(&server, &[]));
    assert_lossless(&r, 10);
    // Many sources: coturn keeps a deleted allocation's 5-tuple for a while and answers
    // 437 to a new client that the kernel gave the same ephemeral port.
    let r = report(&bench(&[
        "allocate",
        "--server",
        &server,
        "-d",
        "1s",
        "--concurrency",
        "8",
        "--sources",
        "127.3.0.0/16",
    ]));
    assert!(r["allocations"].as_u64().unwrap() > 50, "{r:#}");
    assert_eq!(r["errors"], serde_json::json!({}), "{r:#}");
}

#[test]
fn a_server_that_does_not_answer_fails_the_run_with_the_reason() {
    let port = free_udp_port();
    let out = bench(&[
        "--server",
        &format!("127.0.0.1:{port}"),
        "-n",
        "3",
        "-d",
        "1s",
    ]);
    assert!(!out.status.success());
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["errors"]["allocate: no answer"], 3, "{r:#}");
    assert!(output_text(&out).contains("no allocation succeeded"));
}

#[test]
fn bad_arguments_are_refused_before_any_traffic() {
    for (args, says) in [
        (&["--size", "8"][..], "--size 8"),
        (&["--burst", "0"][..], "--burst"),
        (&["--transport", "tls"][..], "--ca FILE or --insecure"),
        (
            &["--sources", "fd00::/64"][..],
            "different address families",
        ),
    ] {
        let out = bench(args);
        assert!(!out.status.success(), "{args:?}");
        assert!(
            output_text(&out).contains(says),
            "{args:?}: {}",
            output_text(&out)
        );
    }
    let out = Command::new(turnpike_bin())
        .args(["bench", "-d", "1s"])
        .output()
        .unwrap();
    assert!(
        output_text(&out).contains("credentials needed"),
        "{}",
        output_text(&out)
    );
}
