//! Turnpike installed the way users install it, on a real single-node cluster
//! (`tests/k8s/cluster.sh`): its image in containerd, the manifests (then the Helm chart)
//! and examples/kubernetes applied, and the real kubelet, scheduler, controller-manager
//! and kube-proxy doing the work. Clients sit in a network namespace of their own (the
//! internet) and reach the Gateway only through its load-balancer address.
//!
//! One cluster serves the whole suite, so it runs as one test in phases; each phase says
//! what it checks when it fails.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

use std::collections::{BTreeMap, BTreeSet};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use gateway_api::gatewayclasses::GatewayClass;
use gateway_api::gateways::Gateway;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::Value;
use turnpike_tests::cluster::{
    IMAGE, NodeCluster, first_container, grace_period, is_terminating, pod_ip, process_privileges,
};
use turnpike_tests::k8s::{condition_of, wait_for};
use turnpike_tests::standalone::tls_secret_yaml;
use turnpike_tests::{Aioice, TestCa, Uclient, output_text, rest_credentials, turnpike_bin};

#[path = "cluster/janus.rs"]
mod janus;
#[path = "cluster/offload.rs"]
mod kernel_offload;
#[path = "cluster/scaling.rs"]
mod scaling;

const LB: &str = "198.18.253.10";
const LB_TLS: &str = "198.18.253.11";
const DATAPLANE: &str = "turnpike.dev/gateway=media-gateway";
const OPERATOR: &str = "app.kubernetes.io/name=turnpike-operator";

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// What `turnpike probe` did from the internet namespace.
#[derive(Debug)]
struct ProbeRun {
    ok: bool,
    /// The relayed address's IP: the dataplane pod that served the allocation.
    pod_ip: Option<String>,
    output: String,
}

#[derive(Clone)]
struct Client {
    inet_ns: String,
    server: String,
    username: String,
    password: String,
    peer: String,
}

impl Client {
    fn new(c: &NodeCluster, server: &str, secret: &str, peer: &str) -> Client {
        let (username, password) = rest_credentials(secret, "cluster-test", 3600);
        Client {
            inet_ns: c.inet_ns.clone(),
            server: server.into(),
            username,
            password,
            peer: peer.into(),
        }
    }

    /// Allocates, echoes `count` messages `interval_ms` apart (each waits for its echo),
    /// deletes the allocation.
    fn probe(&self, count: u32, interval_ms: u32) -> ProbeRun {
        let out = turnpike_tests::in_netns(Some(&self.inet_ns), turnpike_bin())
            .args(["probe", "--server", &self.server])
            .args(["--username", &self.username, "--password", &self.password])
            .args(["--peer", &self.peer, "--count", &count.to_string()])
            .args(["--interval", &format!("{interval_ms}ms")])
            .output()
            .unwrap();
        let output = output_text(&out);
        let pod_ip = output
            .lines()
            .find_map(|l| l.strip_prefix("relayed address "))
            .and_then(|a| a.rsplit_once(':'))
            .map(|(ip, _)| ip.to_string());
        ProbeRun {
            ok: out.status.success(),
            pod_ip,
            output,
        }
    }

    fn probe_in_background(&self, count: u32, interval_ms: u32) -> JoinHandle<ProbeRun> {
        let me = self.clone();
        std::thread::spawn(move || me.probe(count, interval_ms))
    }
}

fn join_all(runs: Vec<JoinHandle<ProbeRun>>) -> Vec<ProbeRun> {
    runs.into_iter().map(|h| h.join().unwrap()).collect()
}

fn assert_all_echoed(what: &str, runs: &[ProbeRun]) {
    for r in runs {
        assert!(
            r.ok,
            "{what}: a client lost packets or its allocation:\n{}",
            r.output
        );
    }
}

fn pod_names(c: &NodeCluster, ns: &str, selector: &str) -> BTreeSet<String> {
    c.pods(ns, selector).into_keys().collect()
}

fn lease_holder(c: &NodeCluster) -> Option<String> {
    c.get_as::<Lease>(&["lease", "-n", "turnpike-system", "turnpike-operator"])
        .and_then(|l| l.spec?.holder_identity)
        .filter(|h| !h.is_empty())
}

fn turn_secret(c: &NodeCluster) -> String {
    let b64 = c.kubectl(&[
        "get",
        "secret",
        "-n",
        "turnpike-system",
        "turnpike-auth",
        "-o",
        "jsonpath={.data.secret}",
    ]);
    String::from_utf8(turnpike_tests::base64_decode(b64.trim())).unwrap()
}

fn patch_gateway_config(c: &NodeCluster, patch: &str) {
    c.kubectl(&[
        "patch",
        "gatewayconfig",
        "-n",
        "turnpike-system",
        "turnpike",
        "--type=merge",
        "-p",
        patch,
    ]);
}

/// Plays the cloud load balancer: gives the Service of Gateway `ns/name` its external
/// address, which kube-proxy then forwards, and waits for the Gateway to be Programmed
/// there.
fn assign_lb_address(c: &NodeCluster, ns: &str, name: &str, ip: &str) {
    assign_service_lb_address(c, ns, name, ip);
    wait_for(
        &format!("Gateway {ns}/{name} Programmed at {ip}"),
        secs(60),
        || {
            let status = c.get_as::<Gateway>(&["gateway", "-n", ns, name])?.status?;
            let programmed = condition_of(status.conditions.as_deref()?, "Programmed")?;
            let address = &status.addresses.as_ref()?.first()?.value;
            (programmed.0 == "True" && address == ip).then_some(())
        },
    );
}

/// Plays the cloud load balancer for LoadBalancer Service `ns/name`.
fn assign_service_lb_address(c: &NodeCluster, ns: &str, name: &str, ip: &str) {
    wait_for(&format!("the Service {ns}/{name}"), secs(60), || {
        c.get_as::<Service>(&["service", "-n", ns, name])
    });
    c.kubectl(&[
        "patch",
        "service",
        "-n",
        ns,
        name,
        "--subresource=status",
        "--type=merge",
        "-p",
        &format!(r#"{{"status":{{"loadBalancer":{{"ingress":[{{"ip":"{ip}"}}]}}}}}}"#),
    ]);
}

fn echo_pod_ip(c: &NodeCluster) -> String {
    let pods = c.wait_ready_pods("media", "app=echo", 1, secs(120));
    pod_ip(pods.values().next().unwrap())
}

#[test]
fn turnpike_on_a_real_single_node_cluster() {
    let c = NodeCluster::start();
    let started = Instant::now();
    let phase = |name: &str| eprintln!("[{:>6.1}s] {name}", started.elapsed().as_secs_f64());

    phase("install: manifests/ and examples/kubernetes/ with the test image");
    c.apply_dir("manifests");
    c.apply_dir("examples/kubernetes");
    installed_and_ready(&c);
    // Drains bounded at 40 s (default: an hour), so a pod holding allocations that never
    // end (turnutils_uclient deletes none) exits within the test. A pod-template change:
    // the first dataplane pod is replaced before any client connects.
    patch_gateway_config(&c, r#"{"spec":{"dataplane":{"drainTimeout":"40s"}}}"#);
    wait_for("the dataplane with a 40 s drain", secs(120), || {
        let pods = c.pods("media", DATAPLANE);
        (pods.len() == 1
            && pods.values().all(|p| {
                grace_period(p) == Some(70)
                    && turnpike_tests::cluster::is_ready(p)
                    && !is_terminating(p)
            }))
        .then_some(())
    });

    phase("security: what the kernel says of every Turnpike process");
    runs_unprivileged(&c);

    phase("relay from the internet through the load-balancer address");
    assign_lb_address(&c, "media", "media-gateway", LB);
    let echo = format!("{}:3480", echo_pod_ip(&c));
    let secret = turn_secret(&c);
    relays_from_the_internet(&c, &secret, &echo);

    phase("TURN-TLS on port 443, non-root");
    turn_tls_on_443(&c, &secret, &echo);

    phase("real media: browsers, Janus in a pod, the Janus Gateway's address");
    janus::media_through_janus(&c);

    let client = Client::new(&c, &format!("{LB}:3478"), &secret, &echo);
    phase("scale 1 -> 3 under load");
    scaling::scales_out_under_load(&c, &client);
    phase("scale 3 -> 1: the removed pods drain");
    scaling::scales_in_with_draining(&c, &client);
    phase("rolling update under load");
    scaling::rolls_without_cutting_allocations(&c, &client);
    phase("the leader operator pod is deleted");
    scaling::leader_fails_over(&c, &client);
    phase("kernel offload in a real pod");
    kernel_offload::relays_in_the_kernel(&c, &client, &echo);
    phase("a deleted Gateway's objects are garbage-collected");
    gateway_objects_are_collected(&c);
    phase("helm install gives the same result");
    helm_install_gives_the_same_result(&c);
    phase("done");
}

fn installed_and_ready(c: &NodeCluster) {
    let ops = c.wait_ready_pods("turnpike-system", OPERATOR, 2, secs(180));
    let holder = wait_for("an operator to hold the lease", secs(60), || {
        lease_holder(c)
    });
    assert!(
        ops.contains_key(&holder),
        "lease held by {holder}, not by {ops:?}"
    );
    wait_for("GatewayClass Accepted", secs(60), || {
        let gc: GatewayClass = c.get_as(&["gatewayclass", "turnpike"])?;
        (condition_of(gc.status?.conditions.as_deref()?, "Accepted")?.0 == "True").then_some(())
    });
    c.wait_ready_pods(
        "turnpike-system",
        "app.kubernetes.io/name=turnpike-auth",
        2,
        secs(120),
    );
    let dps = c.wait_ready_pods("media", DATAPLANE, 1, secs(180));
    let pod = dps.values().next().unwrap();
    let container = first_container(pod);
    assert_eq!(
        container.image.as_deref(),
        Some(IMAGE),
        "the operator's --dataplane-image"
    );
    let readiness = container.readiness_probe.and_then(|p| p.http_get);
    assert_eq!(readiness.and_then(|g| g.path).as_deref(), Some("/readyz"));
}

fn runs_unprivileged(c: &NodeCluster) {
    let checks = [
        ("turnpike-system", OPERATOR, "operator"),
        (
            "turnpike-system",
            "app.kubernetes.io/name=turnpike-auth",
            "auth",
        ),
        ("media", DATAPLANE, "dataplane"),
        ("media", "app=echo", "echo"),
    ];
    for (ns, selector, container) in checks {
        for name in pod_names(c, ns, selector) {
            let pid = c.container_pid(ns, &name, container);
            let p = process_privileges(pid);
            let what = format!("{ns}/{name} ({container}, pid {pid}): {p:?}");
            assert_eq!(p.uid, "65532 65532 65532 65532", "non-root: {what}");
            assert_eq!(
                p.effective_capabilities, "0000000000000000",
                "no capabilities: {what}"
            );
            assert_eq!(p.no_new_privs, "1", "no privilege escalation: {what}");
            assert_eq!(p.seccomp, "2", "seccomp RuntimeDefault: {what}");
            assert!(p.root_read_only, "read-only root filesystem: {what}");
        }
    }
}

fn relays_from_the_internet(c: &NodeCluster, secret: &str, echo: &str) {
    let (ip, port) = echo.split_once(':').unwrap();
    let port: u16 = port.parse().unwrap();
    for transport in [&[][..], &["-t"][..]] {
        let r = Uclient::new(LB, ip, port)
            .rest_secret(secret)
            .clients(10)
            .messages(200)
            .pace_ms(5)
            .args(transport)
            .in_netns(&c.inet_ns)
            .run();
        assert_eq!(
            r.lost,
            Some(0),
            "turnutils_uclient {transport:?}: {}",
            r.output
        );
    }
    let (user, pass) = rest_credentials(secret, "aioice", 600);
    let (ok, out) = Aioice::new(format!("{LB}:3478"), &user, &pass)
        .peer(echo)
        .in_netns(&c.inet_ns)
        .run();
    assert!(ok, "aioice through the load balancer: {out}");

    // What an application server does: /ice-config from the auth service's Service, then
    // a client relays with exactly those credentials and that URI.
    let auth_ip = c.kubectl(&[
        "get",
        "service",
        "-n",
        "turnpike-system",
        "turnpike-auth",
        "-o",
        "jsonpath={.spec.clusterIP}",
    ]);
    let token = std::process::Command::new(turnpike_bin())
        .args(["token", "--dir"])
        .arg(turnpike_tests::repo_root().join("examples/kubernetes"))
        .output()
        .unwrap();
    let token = String::from_utf8_lossy(&token.stdout).trim().to_string();
    let auth: std::net::SocketAddr = format!("{}:8088", auth_ip.trim()).parse().unwrap();
    let ice: Value = wait_for(
        "/ice-config naming the load-balancer address",
        secs(60),
        || {
            let (status, _, body) = turnpike_tests::http_get_at(
                auth,
                "/ice-config?gateway=media/media-gateway",
                &[("Authorization", &format!("Bearer {token}"))],
            )?;
            let v: Value = serde_json::from_str(&body).ok()?;
            (status == 200 && body.contains(&format!("turn:{LB}:3478?transport=udp"))).then_some(v)
        },
    );
    let server = &ice["iceServers"][0];
    let (user, pass) = (
        server["username"].as_str().unwrap(),
        server["credential"].as_str().unwrap(),
    );
    let r = Uclient::new(LB, ip, port)
        .user(user, pass)
        .clients(2)
        .messages(50)
        .size(None)
        .in_netns(&c.inet_ns)
        .run();
    assert_eq!(
        r.lost,
        Some(0),
        "credentials from /ice-config: {}",
        r.output
    );
}

fn turn_tls_on_443(c: &NodeCluster, secret: &str, echo: &str) {
    let ca = TestCa::new();
    let cert = ca.server_cert(&["turn.example.com", LB_TLS]);
    c.apply(&tls_secret_yaml(
        "turn-tls",
        "media",
        &cert.cert_pem,
        &cert.key_pem,
    ));
    c.apply(
        "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: media-tls, namespace: media}
spec:
  gatewayClassName: turnpike
  listeners:
    - name: turn-tls
      protocol: TURN-TLS
      port: 443
      tls: {certificateRefs: [{name: turn-tls}]}
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: UDPRoute
metadata: {name: echo-tls, namespace: media}
spec:
  parentRefs: [{name: media-tls}]
  rules:
    - backendRefs: [{name: echo, port: 3480}, {name: echo, port: 3481}]
",
    );
    let pods = c.wait_ready_pods("media", "turnpike.dev/gateway=media-tls", 1, secs(180));
    let (name, pod) = pods.iter().next().unwrap();
    let sysctls = pod
        .spec
        .as_ref()
        .and_then(|s| s.security_context.as_ref())
        .and_then(|s| s.sysctls.clone())
        .unwrap_or_default();
    assert_eq!(
        sysctls[0].name, "net.ipv4.ip_unprivileged_port_start",
        "{name}"
    );
    assert_eq!(sysctls[0].value, "443", "{name}");
    let p = process_privileges(c.container_pid("media", name, "dataplane"));
    assert_eq!(
        p.uid, "65532 65532 65532 65532",
        "{name} binds 443 as: {p:?}"
    );
    assert_eq!(
        p.effective_capabilities, "0000000000000000",
        "{name}: {p:?}"
    );
    assign_lb_address(c, "media", "media-tls", LB_TLS);
    let (ip, port) = echo.split_once(':').unwrap();
    let r = Uclient::new(LB_TLS, ip, port.parse().unwrap())
        .port(443)
        .tls()
        .rest_secret(secret)
        .clients(5)
        .messages(100)
        .pace_ms(5)
        .in_netns(&c.inet_ns)
        .run();
    assert_eq!(r.lost, Some(0), "TURN-TLS on 443: {}", r.output);
}

fn gateway_objects_are_collected(c: &NodeCluster) {
    for gw in ["media-gateway", "media-tls"] {
        let secret = format!("{gw}-turnpike-cds");
        for kind in ["deployment", "service", "secret"] {
            let name = if kind == "secret" { &secret } else { gw };
            assert!(
                c.get(&[kind, "-n", "media", name]).is_some(),
                "{kind} {name} before"
            );
        }
        c.kubectl(&["delete", "gateway", "-n", "media", gw]);
        wait_for(
            &format!("{gw}'s objects garbage-collected"),
            secs(90),
            || {
                ["deployment", "service", "secret"]
                    .iter()
                    .all(|kind| {
                        let name = if *kind == "secret" { &secret } else { gw };
                        c.get(&[kind, "-n", "media", name]).is_none()
                    })
                    .then_some(())
            },
        );
    }
    wait_for("the dataplane pods gone", secs(60), || {
        c.pods("media", "turnpike.dev/gateway")
            .is_empty()
            .then_some(())
    });
}

fn helm_install_gives_the_same_result(c: &NodeCluster) {
    let kubectl = |args: &[&str]| c.kubectl(args);
    let root = turnpike_tests::repo_root();
    for dir in ["examples/kubernetes", "manifests"] {
        let d = root.join(dir);
        kubectl(&[
            "delete",
            "-f",
            d.to_str().unwrap(),
            "--ignore-not-found",
            "--wait=false",
        ]);
    }
    for ns in ["media", "turnpike-system"] {
        wait_for(&format!("namespace {ns} deleted"), secs(180), || {
            c.get(&["namespace", ns]).is_none().then_some(())
        });
    }
    let helm = std::process::Command::new(root.join("tests/k8s/helm.sh"))
        .output()
        .unwrap();
    assert!(helm.status.success(), "helm: {}", output_text(&helm));
    let helm = String::from_utf8_lossy(&helm.stdout).trim().to_string();
    let (repo, tag) = IMAGE.rsplit_once(':').unwrap();
    let out = std::process::Command::new(&helm)
        .arg("--kubeconfig")
        .arg(&c.admin)
        .args(["install", "turnpike"])
        .arg(root.join("manifests/helm/turnpike"))
        .args(["-n", "turnpike-system", "--create-namespace"])
        .args(["--set", &format!("image.repository={repo}")])
        .args(["--set", &format!("image.tag={tag}")])
        .args(["--set", "image.pullPolicy=Never"])
        .output()
        .unwrap();
    assert!(out.status.success(), "helm install: {}", output_text(&out));
    c.apply_dir("examples/kubernetes");
    installed_and_ready(c);
    let dp = c.pods("media", DATAPLANE);
    assert_eq!(
        first_container(dp.values().next().unwrap())
            .image_pull_policy
            .as_deref(),
        Some("Never"),
        "the chart's image.pullPolicy reaches the dataplane"
    );
    runs_unprivileged(c);
    assign_lb_address(c, "media", "media-gateway", LB);
    let echo = format!("{}:3480", echo_pod_ip(c));
    let client = Client::new(c, &format!("{LB}:3478"), &turn_secret(c), &echo);
    let r = client.probe(50, 10);
    assert!(r.ok, "relay after helm install:\n{}", r.output);
}
