//! The metric names and labels dashboards and alerts are written against. The metrics
//! layer moved from hand-written text to `prometheus-client` (OpenMetrics); this scrapes a
//! running `turnpike run` after real relayed traffic and compares every series name and
//! label set with the ones the hand-written renderers produced.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use turnpike_tests::standalone::{ConfigDir, SECRET, start_run};
use turnpike_tests::{echo_peer, free_udp_port, http_get, uclient_relay};

/// Series as `name{label=value,...}` for the fixed label sets, `name{label,...}` (keys only)
/// for labels whose values depend on the config.
const DATAPLANE: &[&str] = &[
    "turnpike_allocation_lifetime_seconds_bucket{le,listener}",
    "turnpike_allocation_lifetime_seconds_count{listener}",
    "turnpike_allocation_lifetime_seconds_sum{listener}",
    "turnpike_allocations_active{listener}",
    "turnpike_allocations_created_total{listener}",
    "turnpike_allocations_deleted_total{listener,reason=closed}",
    "turnpike_allocations_deleted_total{listener,reason=deleted}",
    "turnpike_allocations_deleted_total{listener,reason=expired}",
    "turnpike_allocations_deleted_total{listener,reason=listener_removed}",
    "turnpike_allocations_refused_total{listener,reason=capacity}",
    "turnpike_allocations_refused_total{listener,reason=draining}",
    "turnpike_allocations_refused_total{listener,reason=quota}",
    "turnpike_auth_failures_total{reason=bad_integrity}",
    "turnpike_auth_failures_total{reason=expired}",
    "turnpike_auth_failures_total{reason=malformed_username}",
    "turnpike_auth_failures_total{reason=stale_nonce}",
    "turnpike_auth_failures_total{reason=unknown_user}",
    "turnpike_auth_failures_total{reason=wrong_credentials}",
    "turnpike_auth_failures_total{reason=wrong_realm}",
    "turnpike_authenticated_requests_total",
    "turnpike_cds_connected",
    "turnpike_config_applied_timestamp_seconds",
    "turnpike_config_generation",
    "turnpike_config_received_generation",
    "turnpike_config_reload_failures_total",
    "turnpike_config_reloads_total",
    "turnpike_connections_accepted_total",
    "turnpike_connections_active",
    "turnpike_connections_closed_total{reason=client}",
    "turnpike_connections_closed_total{reason=handshake_timeout}",
    "turnpike_connections_closed_total{reason=idle_timeout}",
    "turnpike_connections_closed_total{reason=io_error}",
    "turnpike_connections_closed_total{reason=listener_removed}",
    "turnpike_connections_closed_total{reason=not_turn}",
    "turnpike_connections_closed_total{reason=tls_error}",
    "turnpike_connections_refused_total{reason=max_connections}",
    "turnpike_connections_refused_total{reason=rate_limit}",
    "turnpike_denied_peers_total",
    "turnpike_dropped_packets_total{reason=client_queue_full}",
    "turnpike_dropped_packets_total{reason=no_allocation}",
    "turnpike_dropped_packets_total{reason=no_permission}",
    "turnpike_dropped_packets_total{reason=send_failed}",
    "turnpike_file_descriptors_limit",
    "turnpike_file_descriptors_open",
    "turnpike_malformed_packets_total",
    "turnpike_offload_active",
    "turnpike_offload_bindings",
    "turnpike_offload_passed_packets_total{reason=adjust_failed}",
    "turnpike_offload_passed_packets_total{reason=expired}",
    "turnpike_offload_passed_packets_total{reason=no_route}",
    "turnpike_offload_passed_packets_total{reason=not_exact}",
    "turnpike_offload_passed_packets_total{reason=partial_checksum}",
    "turnpike_offload_refused_total",
    "turnpike_oversized_packets_total",
    "turnpike_ready",
    "turnpike_relayed_bytes_total{direction,listener,path,route}",
    "turnpike_relayed_packets_total{direction,listener,path,route}",
    "turnpike_relay_latency_seconds_bucket{direction,le}",
    "turnpike_relay_latency_seconds_count{direction}",
    "turnpike_relay_latency_seconds_sum{direction}",
    "turnpike_retransmitted_requests_total",
    "turnpike_revoked_peers_total",
    "turnpike_suppressed_challenges_total",
];

const AUTH: &[&str] = &[
    "turnpike_cds_connected",
    "turnpike_auth_credentials_issued_total",
    "turnpike_auth_request_seconds_bucket{le}",
    "turnpike_auth_request_seconds_count",
    "turnpike_auth_request_seconds_sum",
    "turnpike_auth_requests_total{route,status}",
];

/// Every series of an exposition, written as in the lists above: `reason` values kept,
/// other labels by key only.
fn series(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let sample = l.split(' ').next().unwrap_or_default();
            let Some((name, labels)) = sample.split_once('{') else {
                return sample.to_string();
            };
            let labels: Vec<String> = labels
                .trim_end_matches('}')
                .split(',')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| match k {
                    "reason" => format!("{k}={}", v.trim_matches('"')),
                    _ => k.to_string(),
                })
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            format!("{name}{{{}}}", labels.join(","))
        })
        .collect()
}

fn expected(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[test]
fn metric_names_and_labels_are_the_ones_dashboards_use() {
    let (turn, echo) = (free_udp_port(), free_udp_port());
    let _peer = echo_peer(echo);
    let config = ConfigDir::new(turn, echo);
    let run = start_run(&config.path);
    let r = uclient_relay(turn, echo, 2, 20, &["-W", SECRET]);
    assert_eq!(r.lost, Some(0), "{}", r.output);
    // Workers publish once a second; wait for the relay counters.
    let end = Instant::now() + Duration::from_secs(5);
    let dataplane = loop {
        let text = http_get(run.dp_admin, "/metrics")
            .expect("dataplane /metrics")
            .1;
        if text.contains("turnpike_relayed_packets_total{") || Instant::now() > end {
            break text;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(series(&dataplane), expected(DATAPLANE), "{dataplane}");

    assert_eq!(http_get(run.auth, "/livez").map(|r| r.0), Some(200));
    let auth = http_get(run.auth, "/metrics").expect("auth /metrics").1;
    assert_eq!(series(&auth), expected(AUTH), "{auth}");
    assert!(
        auth.contains("turnpike_auth_requests_total{route=\"/livez\",status=\"200\"} 1"),
        "{auth}"
    );
}
