//! Turnpike against a real kube-apiserver with RBAC (tests/k8s/apiserver.sh): CRDs and
//! RBAC; every manifest, the Helm chart and the examples pass a server-side dry run; the
//! operator programs Gateways, owns their dataplane Deployments and Services, reports
//! rejections, survives API server and operator restarts without dropping a relayed
//! packet; two replicas elect one leader and hand over within the lease time.
#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use gateway_api::experimental::udproutes::UdpRoute;
use gateway_api::gatewayclasses::GatewayClass;
use gateway_api::gateways::Gateway;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta};
use serde_json::Value;
use turnpike_dataplane::client::{ClientError, TurnClient};
use turnpike_gateway::rotation::LedgerEntry;
use turnpike_tests::k8s::{Cluster, Operator, PodNetwork, condition_of, wait_for};
use turnpike_tests::standalone::tls_secret_yaml;
use turnpike_tests::{
    Proc, TestCa, Uclient, free_tcp_port, output_text, repo_root, served_serial, turnpike_bin,
};

/// One fixture at a time: each is a kube-apiserver, and the relay test binds TURN ports.
static SERIAL: Mutex<()> = Mutex::new(());

const SECRET: &str = "example-turn-secret-change-me";
const GW: &str = "media-gateway";

fn apply_file(c: &Cluster, path: &str) {
    let p = repo_root().join(path);
    c.kubectl(&["apply", "-f", p.to_str().unwrap()]);
}

fn install_operator_rbac(c: &Cluster) {
    apply_file(c, "manifests/00-namespace.yaml");
    apply_file(c, "manifests/10-rbac.yaml");
}

fn gateway(c: &Cluster, ns: &str, name: &str) -> Option<Gateway> {
    c.get_as(&["gateway", "-n", ns, name])
}

fn gateway_condition(c: &Cluster, ns: &str, name: &str, t: &str) -> Option<(String, String)> {
    condition_of(gateway(c, ns, name)?.status?.conditions.as_deref()?, t)
}

fn route_condition(c: &Cluster, ns: &str, name: &str, t: &str) -> Option<(String, String)> {
    let r: UdpRoute = c.get_as(&["udproute", "-n", ns, name])?;
    let parents = r.status?.parents;
    let ours = parents
        .iter()
        .find(|p| p.controller_name == "turnpike.dev/gateway-controller")?;
    condition_of(&ours.conditions, t)
}

/// What a cloud controller does for the Gateway's LoadBalancer Service.
fn assign_lb_address(c: &Cluster) {
    c.kubectl(&[
        "patch",
        "service",
        GW,
        "-n",
        "media",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"loadBalancer":{"ingress":[{"ip":"203.0.113.10"}]}}}"#,
    ]);
}

/// `turnutils_peer` echo backends on `ips` (port 3480) inside the pod network.
fn echo_backends(net: &PodNetwork, ips: &[&str]) -> Vec<Proc> {
    ips.iter()
        .map(|ip| {
            let mut cmd = net.command("turnutils_peer");
            cmd.args(["-L", ip, "-p", "3480"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null());
            Proc::spawn("turnutils_peer", &mut cmd)
        })
        .collect()
}

fn is(cond: Option<(String, String)>, status: &str, reason: &str) -> bool {
    cond.is_some_and(|(s, r)| s == status && r == reason)
}

#[test]
fn crds_rbac_manifests_helm_and_examples_on_a_real_apiserver() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let c = Cluster::start();
    let names = c.kubectl(&["get", "crd", "-o", "name"]);
    for crd in [
        "gatewayconfigs.turnpike.dev",
        "staticservices.turnpike.dev",
        "udproutes.gateway.networking.k8s.io",
    ] {
        assert!(names.contains(crd), "{crd} missing: {names}");
    }
    // The quickstart's hand-written EndpointSlice points at loopback, which a cluster
    // refuses: it is for `turnpike run`; examples/kubernetes is the cluster version.
    let path = repo_root().join("examples/quickstart/30-echo-service.yaml");
    let o = c.kubectl_as(&c.admin, &["apply", "-f", path.to_str().unwrap()], None);
    assert!(
        output_text(&o).contains("may not be in the loopback range"),
        "{}",
        output_text(&o)
    );
    // Unknown fields in our CRDs are refused by the API server itself.
    let bad = "apiVersion: turnpike.dev/v1alpha1\nkind: GatewayConfig\nmetadata: {name: bad, namespace: default}\nspec:\n  auth: {secretRef: {name: x}, tll: 1h}\n";
    let o = c.kubectl_as(&c.admin, &["apply", "-f", "-"], Some(bad));
    assert!(
        !o.status.success() && output_text(&o).contains("unknown field \"spec.auth.tll\""),
        "{}",
        output_text(&o)
    );

    // RBAC: nothing before the manifests, exactly what the operator needs after.
    let can = |args: &[&str]| {
        let mut a = vec!["auth", "can-i"];
        a.extend_from_slice(args);
        output_text(&c.kubectl_as(&c.operator, &a, None))
            .trim()
            .to_string()
    };
    assert_eq!(
        can(&["list", "gateways.gateway.networking.k8s.io", "-A"]),
        "no"
    );
    install_operator_rbac(&c);
    for (args, want) in [
        (
            vec!["list", "gateways.gateway.networking.k8s.io", "-A"],
            "yes",
        ),
        (
            vec!["watch", "udproutes.gateway.networking.k8s.io", "-A"],
            "yes",
        ),
        (
            vec![
                "patch",
                "gateways.gateway.networking.k8s.io",
                "--subresource=status",
                "-A",
            ],
            "yes",
        ),
        (
            vec![
                "update",
                "udproutes.gateway.networking.k8s.io",
                "--subresource=status",
                "-A",
            ],
            "yes",
        ),
        (vec!["list", "endpointslices.discovery.k8s.io", "-A"], "yes"),
        (vec!["patch", "deployments.apps", "-n", "default"], "yes"),
        (
            vec!["create", "events.events.k8s.io", "-n", "default"],
            "yes",
        ),
        (
            vec![
                "update",
                "leases.coordination.k8s.io",
                "-n",
                "turnpike-system",
            ],
            "yes",
        ),
        (
            vec![
                "update",
                "gateways.gateway.networking.k8s.io",
                "-n",
                "default",
            ],
            "no",
        ),
        (vec!["create", "pods", "-n", "default"], "no"),
        (vec!["delete", "secrets", "-n", "default"], "no"),
        (
            vec!["create", "leases.coordination.k8s.io", "-n", "default"],
            "no",
        ),
    ] {
        assert_eq!(can(&args), want, "can-i {args:?}");
    }

    // Every manifest, the examples and the Helm chart pass a server-side dry run. The
    // namespaces they use are created for real (a dry-run Namespace does not exist for
    // the objects after it).
    for ns in ["media", "mediasoup", "janus"] {
        c.kubectl(&["create", "namespace", ns]);
    }
    let dry_run = |path: &std::path::Path| {
        let o = c.kubectl_as(
            &c.admin,
            &[
                "apply",
                "--server-side",
                "--dry-run=server",
                "-f",
                path.to_str().unwrap(),
            ],
            None,
        );
        assert!(
            o.status.success(),
            "dry run of {}: {}",
            path.display(),
            output_text(&o)
        );
        output_text(&o)
    };
    for dir in [
        "manifests",
        "manifests/crds",
        "examples/kubernetes",
        "examples/mediasoup",
    ] {
        dry_run(&repo_root().join(dir));
    }
    // The Janus demo is a kustomization (its ConfigMaps are made from the same files
    // examples/janus/run.sh uses).
    let janus = c.kubectl_as(
        &c.admin,
        &[
            "apply",
            "--server-side",
            "--dry-run=server",
            "-k",
            repo_root().join("examples/janus").to_str().unwrap(),
        ],
        None,
    );
    assert!(
        janus.status.success(),
        "dry run of examples/janus: {}",
        output_text(&janus)
    );
    let rendered = helm_template();
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("helm.yaml");
    std::fs::write(&file, &rendered).unwrap();
    let out = dry_run(&file);
    assert!(
        out.contains("deployment.apps/turnpike-operator serverside-applied"),
        "{out}"
    );

    // The chart renders the same objects as manifests/ (CRDs included).
    let mut plain = String::new();
    for f in [
        "00-namespace.yaml",
        "10-rbac.yaml",
        "20-operator.yaml",
        "30-auth-service.yaml",
    ] {
        plain += &std::fs::read_to_string(repo_root().join("manifests").join(f)).unwrap();
        plain += "\n---\n";
    }
    for f in std::fs::read_dir(repo_root().join("manifests/crds")).unwrap() {
        plain += &std::fs::read_to_string(f.unwrap().path()).unwrap();
        plain += "\n---\n";
    }
    assert_eq!(
        documents(&rendered),
        documents(&plain),
        "helm template differs from manifests/"
    );

    // manifests/observability/ passes a dry run against prometheus-operator's CRDs (the
    // PrometheusRule's and PodMonitors' schemas), installed for real first.
    let crds = Command::new(repo_root().join("tests/k8s/monitoring-crds.sh"))
        .output()
        .unwrap();
    assert!(crds.status.success(), "{}", output_text(&crds));
    let crds = std::path::PathBuf::from(String::from_utf8_lossy(&crds.stdout).trim());
    for kind in ["podmonitors", "prometheusrules"] {
        let file = crds.join(format!("monitoring.coreos.com_{kind}.yaml"));
        c.kubectl(&["apply", "--server-side", "-f", file.to_str().unwrap()]);
        c.kubectl(&[
            "wait",
            "--for=condition=established",
            "--timeout=60s",
            &format!("crd/{kind}.monitoring.coreos.com"),
        ]);
    }
    let out = dry_run(&repo_root().join("manifests/observability"));
    assert!(
        out.contains("prometheusrule.monitoring.coreos.com/turnpike serverside-applied"),
        "{out}"
    );

    // With monitoring on, it renders manifests/observability/.
    let monitoring = helm_template_with(&[
        "--set",
        "monitoring.podMonitor.enabled=true,monitoring.prometheusRule.enabled=true,monitoring.grafanaDashboard.enabled=true",
        "--show-only",
        "templates/40-monitoring.yaml",
    ]);
    let observability = std::fs::read_to_string(
        repo_root().join("manifests/observability/turnpike-monitoring.yaml"),
    )
    .unwrap();
    assert_eq!(
        documents(&monitoring),
        documents(&observability),
        "helm template (monitoring) differs from manifests/observability/"
    );
}

/// `helm template` of the chart with its defaults, CRDs included.
fn helm_template() -> String {
    helm_template_with(&["--include-crds", "--set", "createNamespace=true"])
}

/// `helm template` of the chart into turnpike-system with `args`.
fn helm_template_with(args: &[&str]) -> String {
    let helm = Command::new(repo_root().join("tests/k8s/helm.sh"))
        .output()
        .unwrap();
    assert!(helm.status.success(), "{}", output_text(&helm));
    let helm = String::from_utf8_lossy(&helm.stdout).trim().to_string();
    let chart = repo_root().join("manifests/helm/turnpike");
    let o = Command::new(helm)
        .args(["template", "turnpike", chart.to_str().unwrap()])
        .args(["--namespace", "turnpike-system", "--kube-version", "1.35.4"])
        .args(args)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", output_text(&o));
    String::from_utf8_lossy(&o.stdout).to_string()
}

/// The YAML documents of `text`, parsed and sorted (comments and order do not matter).
fn documents(text: &str) -> Vec<String> {
    let mut docs: Vec<String> = text.split("\n---").filter_map(canonical_json).collect();
    docs.sort();
    docs
}

fn canonical_json(doc: &str) -> Option<String> {
    let v: Value = turnpike_tests::yaml_to_json(doc)?;
    (!v.is_null()).then(|| v.to_string())
}

/// A relay test client: `expiry:user` with the REST secret.
fn turn_client(port: u16) -> TurnClient {
    let (user, pass) = turnpike_tests::rest_credentials(SECRET, "k8s-test", 3600);
    let server: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut c = TurnClient::new(server, &user, &pass).unwrap();
    c.allocate().unwrap();
    c
}

fn permitted(c: &mut TurnClient, peer: &str) -> bool {
    match c.create_permission(peer.parse().unwrap()) {
        Ok(()) => true,
        Err(ClientError::Rejected { code: 403, .. }) => false,
        Err(e) => panic!("CreatePermission {peer}: {e}"),
    }
}

fn endpoint_slice(addresses: &[&str]) -> String {
    let eps: Vec<String> = addresses
        .iter()
        .map(|a| format!("  - addresses: [\"{a}\"]\n    conditions: {{ready: true}}\n"))
        .collect();
    format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: echo-pods\n  namespace: media\n  labels: {{kubernetes.io/service-name: echo}}\naddressType: IPv4\nports:\n  - {{name: rtp, port: 3480, protocol: UDP}}\n  - {{name: rtcp, port: 3481, protocol: UDP}}\nendpoints:\n{}",
        eps.concat()
    )
}

/// Seconds from now until `f` holds (polled every 20 ms, at most 5 s).
fn seconds_until(what: &str, mut f: impl FnMut() -> bool) -> f64 {
    let t = Instant::now();
    while !f() {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "{what}: not within 5 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    t.elapsed().as_secs_f64()
}

/// The dataplane a Gateway's pod would run, as a local process with the client
/// certificate from the Secret the operator issued.
fn start_dataplane(c: &Cluster, cds: u16, dir: &std::path::Path) -> (Proc, u16) {
    let secret: Secret = c
        .get_as(&["secret", "-n", "media", &format!("{GW}-turnpike-cds")])
        .unwrap();
    let data = secret.data.unwrap_or_default();
    for file in ["ca.crt", "tls.crt", "tls.key"] {
        std::fs::write(dir.join(file), &data[file].0).unwrap();
    }
    let admin = free_tcp_port();
    let log = std::fs::File::create(dir.join("dataplane.log")).unwrap();
    let mut cmd = Command::new(turnpike_bin());
    cmd.args(["dataplane", "--cds", &format!("127.0.0.1:{cds}")])
        .args(["--gateway", &format!("media/{GW}"), "--workers", "1"])
        .args(["--admin", &format!("127.0.0.1:{admin}")])
        .arg("--cds-ca")
        .arg(dir.join("ca.crt"))
        .arg("--cds-cert")
        .arg(dir.join("tls.crt"))
        .arg("--cds-key")
        .arg(dir.join("tls.key"))
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    let p = Proc::spawn("dataplane", &mut cmd);
    wait_for(
        "the dataplane to apply its first config",
        Duration::from_secs(20),
        || turnpike_tests::http_get(admin, "/readyz").filter(|(code, _)| *code == 200),
    );
    (p, admin)
}

#[test]
fn operator_programs_gateways_relays_and_survives_restarts() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    turnpike_tests::require_tool("turnutils_uclient");
    let c = Cluster::start();
    install_operator_rbac(&c);
    let cds = turnpike_tests::free_udp_port();
    let mut op = Operator::start(&c, "operator-1", cds, "6s");
    apply_file(&c, "examples/kubernetes");

    // GatewayClass Accepted; Deployment and Service named after the Gateway.
    wait_for("GatewayClass Accepted", Duration::from_secs(20), || {
        let gc: GatewayClass = c.get_as(&["gatewayclass", "turnpike"])?;
        is(
            condition_of(gc.status?.conditions.as_deref()?, "Accepted"),
            "True",
            "Accepted",
        )
        .then_some(())
    });
    let deployment: Deployment =
        wait_for("the managed Deployment", Duration::from_secs(20), || {
            c.get_as(&["deployment", "-n", "media", GW])
        });
    let service: Service = wait_for("the managed Service", Duration::from_secs(20), || {
        c.get_as(&["service", "-n", "media", GW])
    });
    let owner = |m: &ObjectMeta| m.owner_references.clone().unwrap_or_default()[0].clone();
    assert_eq!(owner(&deployment.metadata).kind, "Gateway");
    assert_eq!(owner(&service.metadata).name, GW);
    let svc_spec = service.spec.clone().unwrap();
    assert_eq!(svc_spec.type_.as_deref(), Some("LoadBalancer"));
    assert_eq!(svc_spec.external_traffic_policy.as_deref(), Some("Local"));
    assert_eq!(
        service.metadata.annotations.clone().unwrap_or_default()["example.com/owner"],
        "media-team"
    );
    let ports: Vec<(i32, String)> = svc_spec
        .ports
        .unwrap_or_default()
        .iter()
        .map(|p| (p.port, p.protocol.clone().unwrap_or_default()))
        .collect();
    assert_eq!(
        ports,
        [(3478, "UDP".into()), (3478, "TCP".into())],
        "no admin port on the Service"
    );
    let pod = deployment.spec.clone().unwrap().template.spec.unwrap();
    let container = &pod.containers[0];
    let env: Vec<(String, String)> = container
        .env
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|e| (e.name, e.value.unwrap_or_default()))
        .collect();
    assert!(
        env.contains(&("TURNPIKE_GATEWAY".into(), format!("media/{GW}"))),
        "{env:?}"
    );
    assert!(
        env.contains(&(
            "TURNPIKE_CDS".into(),
            "turnpike-cds.turnpike-system.svc:13478".into()
        )),
        "{env:?}"
    );
    assert_eq!(container.image.as_deref(), Some("turnpike:test"));
    let readiness = container.readiness_probe.clone().unwrap().http_get.unwrap();
    assert_eq!(readiness.path.as_deref(), Some("/readyz"));
    let volume = pod.volumes.clone().unwrap_or_default()[0]
        .secret
        .clone()
        .unwrap();
    assert_eq!(volume.secret_name, Some(format!("{GW}-turnpike-cds")));
    let requests = container.resources.clone().unwrap().requests.unwrap();
    assert_eq!(requests["cpu"].0, "250m");

    // No address yet; a cloud controller assigns one and the Gateway is Programmed with it.
    wait_for(
        "Programmed=False AddressNotAssigned",
        Duration::from_secs(20),
        || {
            is(
                gateway_condition(&c, "media", GW, "Programmed"),
                "False",
                "AddressNotAssigned",
            )
            .then_some(())
        },
    );
    assign_lb_address(&c);
    wait_for(
        "Programmed=True with the LB address",
        Duration::from_secs(20),
        || {
            let status = gateway(&c, "media", GW)?.status?;
            let address = status.addresses.as_ref()?.first()?.value.clone();
            (is(
                condition_of(status.conditions.as_deref()?, "Programmed"),
                "True",
                "Programmed",
            ) && address == "203.0.113.10")
                .then_some(())
        },
    );
    wait_for(
        "UDPRoute Accepted and ResolvedRefs",
        Duration::from_secs(20),
        || {
            (is(
                route_condition(&c, "media", "echo", "Accepted"),
                "True",
                "Accepted",
            ) && is(
                route_condition(&c, "media", "echo", "ResolvedRefs"),
                "True",
                "ResolvedRefs",
            ))
            .then_some(())
        },
    );

    // Rejections show the right conditions and a Warning Event.
    c.apply(&format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: bad-protocol, namespace: media}}\nspec:\n  gatewayClassName: turnpike\n  listeners:\n  - {{name: web, protocol: HTTP, port: 8080}}\n---\n\
         apiVersion: gateway.networking.k8s.io/v1alpha2\nkind: UDPRoute\nmetadata: {{name: missing-backend, namespace: media}}\nspec:\n  parentRefs: [{{name: {GW}}}]\n  rules:\n  - backendRefs: [{{name: nope, port: 5000}}]\n---\n\
         apiVersion: v1\nkind: Namespace\nmetadata: {{name: other}}\n---\n\
         apiVersion: v1\nkind: Service\nmetadata: {{name: media, namespace: other}}\nspec:\n  ports: [{{name: rtp, port: 5000, protocol: UDP}}]\n---\n\
         apiVersion: gateway.networking.k8s.io/v1alpha2\nkind: UDPRoute\nmetadata: {{name: cross-namespace, namespace: media}}\nspec:\n  parentRefs: [{{name: {GW}}}]\n  rules:\n  - backendRefs: [{{name: media, namespace: other, port: 5000}}]\n"
    ));
    wait_for("rejections reported", Duration::from_secs(20), || {
        let status = gateway(&c, "media", "bad-protocol")?.status?;
        let listener = &status.listeners.as_ref()?.first()?.conditions;
        (is(
            condition_of(listener, "Accepted"),
            "False",
            "UnsupportedProtocol",
        ) && is(
            condition_of(status.conditions.as_deref()?, "Accepted"),
            "False",
            "ListenersNotValid",
        ) && is(
            route_condition(&c, "media", "missing-backend", "ResolvedRefs"),
            "False",
            "BackendNotFound",
        ) && is(
            route_condition(&c, "media", "cross-namespace", "ResolvedRefs"),
            "False",
            "RefNotPermitted",
        ))
        .then_some(())
    });
    for (object, reason) in [
        ("bad-protocol", "UnsupportedProtocol"),
        ("missing-backend", "BackendNotFound"),
        ("cross-namespace", "RefNotPermitted"),
    ] {
        let events = wait_for(
            &format!("a {reason} Event on {object}"),
            Duration::from_secs(10),
            || {
                let e = c.events_about("media", object);
                e.iter().any(|(r, _)| r == reason).then_some(e)
            },
        );
        assert!(
            events.iter().any(|(_, note)| !note.is_empty()),
            "{events:?}"
        );
    }
    c.apply("apiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\nmetadata: {name: media-routes, namespace: other}\nspec:\n  from: [{group: gateway.networking.k8s.io, kind: UDPRoute, namespace: media}]\n  to: [{group: \"\", kind: Service}]\n");
    wait_for(
        "a ReferenceGrant resolves the cross-namespace route",
        Duration::from_secs(20),
        || {
            is(
                route_condition(&c, "media", "cross-namespace", "ResolvedRefs"),
                "True",
                "ResolvedRefs",
            )
            .then_some(())
        },
    );

    // A pod network with the echo backend; the test plays the EndpointSlice controller.
    let net = PodNetwork::create("198.18.100", &["198.18.100.2", "198.18.100.3"]);
    let _echo = echo_backends(&net, &["198.18.100.2", "198.18.100.3"]);
    c.apply(&endpoint_slice(&["198.18.100.2"]));
    let (_dataplane, dp_admin) = start_dataplane(&c, cds, c.dir());

    // A real TURN client relays through it to the backend the EndpointSlice names (once
    // the operator has published the slice).
    let mut client = turn_client(3478);
    seconds_until("the first endpoint", || {
        permitted(&mut client, "198.18.100.2:3480")
    });
    let r = Uclient::new("127.0.0.1", "198.18.100.2", 3480)
        .rest_secret(SECRET)
        .clients(5)
        .messages(100)
        .run();
    assert_eq!(r.lost, Some(0), "{}", r.output);

    // Changing the EndpointSlice changes what is allowed within 1 s.
    assert!(
        !permitted(&mut client, "198.18.100.3:3480"),
        "not an endpoint yet"
    );
    c.apply(&endpoint_slice(&["198.18.100.2", "198.18.100.3"]));
    let added = seconds_until("an added endpoint", || {
        permitted(&mut client, "198.18.100.3:3480")
    });
    c.apply(&endpoint_slice(&["198.18.100.2"]));
    let removed = seconds_until("a removed endpoint", || {
        !permitted(&mut client, "198.18.100.3:3480")
    });
    println!("EndpointSlice edit to enforcement: added {added:.3} s, removed {removed:.3} s");
    assert!(
        added < 1.0 && removed < 1.0,
        "added {added} s, removed {removed} s"
    );

    // Restarts under load: an open allocation relays continuously (about 25 s) while
    // kube-apiserver restarts and the operator is killed and replaced.
    let before: Deployment = c.get_as(&["deployment", "-n", "media", GW]).unwrap();
    let generation = before.metadata.generation;
    let template = before.spec.map(|s| s.template);
    let load = std::thread::spawn(|| {
        Uclient::new("127.0.0.1", "198.18.100.2", 3480)
            .rest_secret(SECRET)
            .messages(1200)
            .pace_ms(20)
            .run()
    });
    std::thread::sleep(Duration::from_secs(3));
    let errors_before = op.metric("turnpike_operator_watch_errors_total");
    c.restart_apiserver();
    wait_for(
        "the operator to notice the restart",
        Duration::from_secs(30),
        || (op.metric("turnpike_operator_watch_errors_total") > errors_before).then_some(()),
    );
    // It recovers: a change made after the restart is reconciled.
    c.kubectl(&[
        "label",
        "gateway",
        "-n",
        "media",
        "bad-protocol",
        "touched=yes",
    ]);
    c.apply(&endpoint_slice(&["198.18.100.2", "198.18.100.3"]));
    let recovered = seconds_until("after the API server restart", || {
        permitted(&mut client, "198.18.100.3:3480")
    });
    println!("a change after the API server restart enforced in {recovered:.3} s");
    op.proc.signal("KILL");
    let _ = op.proc.wait_exit(Duration::from_secs(5));
    op = Operator::start(&c, "operator-2", cds, "6s");
    wait_for("the new operator to lead", Duration::from_secs(15), || {
        (op.metric("turnpike_operator_leader") == 1.0).then_some(())
    });
    // The dataplane reconnects to the new operator's CDS and follows changes again.
    c.apply(&endpoint_slice(&["198.18.100.2"]));
    wait_for(
        "enforcement through the new operator",
        Duration::from_secs(15),
        || (!permitted(&mut client, "198.18.100.3:3480")).then_some(()),
    );
    let r = load.join().unwrap();
    assert_eq!(
        r.lost,
        Some(0),
        "the open allocation lost packets:\n{}",
        r.output
    );

    // Statuses stay right, and the restart did not roll the dataplane.
    wait_for(
        "statuses after the restarts",
        Duration::from_secs(20),
        || {
            (is(
                gateway_condition(&c, "media", GW, "Programmed"),
                "True",
                "Programmed",
            ) && is(
                route_condition(&c, "media", "echo", "ResolvedRefs"),
                "True",
                "ResolvedRefs",
            ) && is(
                route_condition(&c, "media", "missing-backend", "ResolvedRefs"),
                "False",
                "BackendNotFound",
            ))
            .then_some(())
        },
    );
    let after: Deployment = c.get_as(&["deployment", "-n", "media", GW]).unwrap();
    assert_eq!(
        after.metadata.generation, generation,
        "the operator restart changed the Deployment"
    );
    assert_eq!(after.spec.map(|s| s.template), template);
    // Settled: the new operator has nothing left to write.
    let writes = op.metric("turnpike_operator_status_writes_total");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        op.metric("turnpike_operator_status_writes_total"),
        writes,
        "no-op status writes"
    );
    let dp_status = turnpike_tests::http_get(dp_admin, "/readyz").unwrap();
    assert_eq!(dp_status.0, 200);

    // Deleting the Gateway removes its managed objects.
    c.kubectl(&["delete", "gateway", "-n", "media", GW]);
    wait_for("managed objects removed", Duration::from_secs(20), || {
        (c.get(&["deployment", "-n", "media", GW]).is_none()
            && c.get(&["service", "-n", "media", GW]).is_none())
        .then_some(())
    });
    drop(net);
}

#[test]
fn two_operator_replicas_elect_one_leader_and_hand_over() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let c = Cluster::start();
    install_operator_rbac(&c);
    let lease = Duration::from_secs(4);
    let mut replicas = [
        Operator::start(&c, "replica-a", 0, "4s"),
        Operator::start(&c, "replica-b", 0, "4s"),
    ];
    apply_file(&c, "examples/kubernetes");
    let leading = |o: &Operator| o.metric("turnpike_operator_leader") == 1.0;
    let leader = wait_for("exactly one leader", Duration::from_secs(15), || {
        let l: Vec<usize> = (0..2).filter(|i| leading(&replicas[*i])).collect();
        (l.len() == 1).then(|| l[0])
    });
    let follower = 1 - leader;
    wait_for("UDPRoute Accepted", Duration::from_secs(20), || {
        is(
            route_condition(&c, "media", "echo", "Accepted"),
            "True",
            "Accepted",
        )
        .then_some(())
    });
    let lease_obj: Lease = c
        .get_as(&["lease", "-n", "turnpike-system", "turnpike-operator"])
        .unwrap();
    assert_eq!(
        lease_obj.spec.and_then(|s| s.holder_identity).as_deref(),
        Some(replicas[leader].identity.as_str())
    );
    // Only the leader writes; both render (and serve CDS).
    let (l, f) = (&replicas[leader], &replicas[follower]);
    assert!(l.metric("turnpike_operator_status_writes_total") > 0.0);
    assert!(l.metric("turnpike_operator_resource_writes_total") > 0.0);
    for series in [
        "turnpike_operator_status_writes_total",
        "turnpike_operator_resource_writes_total",
        "turnpike_operator_events_total",
    ] {
        assert_eq!(f.metric(series), 0.0, "the follower wrote: {series}");
    }
    assert!(f.metric("turnpike_operator_renders_total") > 0.0);

    // Kill the leader: the follower takes over within the lease time and reconciles.
    replicas[leader].proc.signal("KILL");
    let killed = Instant::now();
    c.apply("apiVersion: gateway.networking.k8s.io/v1alpha2\nkind: UDPRoute\nmetadata: {name: after-handover, namespace: media}\nspec:\n  parentRefs: [{name: media-gateway}]\n  rules:\n  - backendRefs: [{name: echo, port: 3480}]\n");
    wait_for(
        "the follower to lead",
        lease + Duration::from_secs(3),
        || leading(&replicas[follower]).then_some(()),
    );
    let handover = killed.elapsed();
    wait_for(
        "the new leader's status write",
        Duration::from_secs(10),
        || {
            is(
                route_condition(&c, "media", "after-handover", "Accepted"),
                "True",
                "Accepted",
            )
            .then_some(())
        },
    );
    println!("leader killed, follower leading after {handover:?} (lease {lease:?})");
    assert!(
        handover <= lease + Duration::from_secs(1),
        "handover took {handover:?}"
    );
    let _ = replicas[leader].proc.wait_exit(Duration::from_secs(1));

    // A leader whose API server stops answering steps down at its renew deadline (2/3 of
    // the lease), before another replica could take the lease, not when a request times out.
    let new_leader = &replicas[follower];
    let frozen = c.freeze_apiserver();
    let t = Instant::now();
    wait_for(
        "the leader to step down",
        lease + Duration::from_secs(2),
        || (!leading(new_leader)).then_some(()),
    );
    let stepped_down = t.elapsed();
    println!("API server frozen: the leader stepped down after {stepped_down:?} (lease {lease:?})");
    assert!(stepped_down < lease, "stepped down after {stepped_down:?}");
    drop(frozen);
    wait_for(
        "leading again once the API server answers",
        Duration::from_secs(20),
        || leading(new_leader).then_some(()),
    );
}

/// The conditions of one listener of the test Gateway.
fn listener_conditions(c: &Cluster, listener: &str) -> Vec<Condition> {
    let listeners = gateway(c, "media", GW)
        .and_then(|g| g.status)
        .and_then(|s| s.listeners)
        .unwrap_or_default();
    listeners
        .into_iter()
        .find(|l| l.name == listener)
        .map(|l| l.conditions)
        .unwrap_or_default()
}

fn listener_condition(c: &Cluster, listener: &str, t: &str) -> Option<(String, String)> {
    condition_of(&listener_conditions(c, listener), t)
}

/// The operator path of certificate renewal (what cert-manager does): the TURN-TLS
/// listener's `kubernetes.io/tls` Secret is replaced while a TLS client relays; new
/// handshakes get the new certificate, the open connection loses nothing, and a broken
/// replacement is refused with the old certificate kept.
#[test]
fn tls_certificate_rotates_through_a_kubernetes_secret() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    turnpike_tests::require_tool("turnutils_uclient");
    let c = Cluster::start();
    install_operator_rbac(&c);
    let cds = turnpike_tests::free_udp_port();
    let _op = Operator::start(&c, "operator-1", cds, "6s");
    apply_file(&c, "examples/kubernetes");
    let tls_port = 5349;
    let ca = TestCa::new();
    let first = ca.server_cert(&["turn.example.com", "127.0.0.1"]);
    c.apply(&tls_secret_yaml(
        "turn-tls",
        "media",
        &first.cert_pem,
        &first.key_pem,
    ));
    c.apply(&format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: {GW}, namespace: media}}\nspec:\n  gatewayClassName: turnpike\n  listeners:\n  - {{name: turn-udp, protocol: TURN-UDP, port: 3478}}\n  - name: turn-tls\n    protocol: TURN-TLS\n    port: {tls_port}\n    tls: {{mode: Terminate, certificateRefs: [{{name: turn-tls}}]}}\n"
    ));
    assign_lb_address(&c);
    wait_for(
        "the TLS listener Programmed with its certificate",
        Duration::from_secs(20),
        || {
            (is(
                listener_condition(&c, "turn-tls", "ResolvedRefs"),
                "True",
                "ResolvedRefs",
            ) && is(
                gateway_condition(&c, "media", GW, "Programmed"),
                "True",
                "Programmed",
            ))
            .then_some(())
        },
    );

    let net = PodNetwork::create("198.18.101", &["198.18.101.2"]);
    let _echo = echo_backends(&net, &["198.18.101.2"]);
    c.apply(&endpoint_slice(&["198.18.101.2"]));
    let (_dataplane, _) = start_dataplane(&c, cds, c.dir());
    let mut client = turn_client(3478);
    seconds_until("the endpoint", || {
        permitted(&mut client, "198.18.101.2:3480")
    });
    assert_eq!(served_serial(tls_port).as_deref(), Some(&*first.serial));

    // A TLS client relays for about 12 s while the Secret is replaced, then broken.
    let relay_tls = move |messages: u32, pace_ms: u32| {
        Uclient::new("127.0.0.1", "198.18.101.2", 3480)
            .port(tls_port)
            .tls()
            .rest_secret(SECRET)
            .messages(messages)
            .pace_ms(pace_ms)
            .run()
    };
    let load = std::thread::spawn(move || relay_tls(600, 20));
    std::thread::sleep(Duration::from_secs(2));
    let second = ca.server_cert(&["turn.example.com", "127.0.0.1"]);
    c.apply(&tls_secret_yaml(
        "turn-tls",
        "media",
        &second.cert_pem,
        &second.key_pem,
    ));
    let rotated = seconds_until("the new certificate served", || {
        served_serial(tls_port).as_deref() == Some(&*second.serial)
    });
    println!("Secret replaced: new handshakes get the new certificate after {rotated:.2} s");

    c.apply(&tls_secret_yaml(
        "turn-tls",
        "media",
        "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n",
        &second.key_pem,
    ));
    wait_for(
        "ResolvedRefs=False on the TLS listener",
        Duration::from_secs(10),
        || {
            let (status, reason) = listener_condition(&c, "turn-tls", "ResolvedRefs")?;
            (status == "False" && reason == "InvalidCertificateRef").then_some(())
        },
    );
    let conditions = listener_conditions(&c, "turn-tls");
    let message = conditions
        .iter()
        .find(|c| c.type_ == "ResolvedRefs")
        .map(|c| c.message.as_str())
        .unwrap_or_default();
    assert!(
        message.contains("still serving the previous certificate"),
        "{message}"
    );
    assert_eq!(
        served_serial(tls_port).as_deref(),
        Some(&*second.serial),
        "the broken Secret replaced the served certificate"
    );
    let r = load.join().unwrap();
    assert_eq!(
        r.lost,
        Some(0),
        "the open TLS connection lost packets across the rotation:\n{}",
        r.output
    );
    // A new TLS client still relays after the broken replacement.
    let r = relay_tls(100, 0);
    assert_eq!(r.lost, Some(0), "{}", r.output);
}

/// A TURN client of the test Gateway with REST credentials from `secret`: `Some(client)`
/// once allocated, `None` when the dataplane answers 401.
fn allocated_with(secret: &str) -> Option<TurnClient> {
    let (user, pass) = turnpike_tests::rest_credentials(secret, "k8s-rotation", 3600);
    let mut c = TurnClient::new("127.0.0.1:3478".parse().unwrap(), &user, &pass).unwrap();
    match c.allocate() {
        Ok(_) => Some(c),
        Err(ClientError::Rejected { code: 401, .. }) => None,
        Err(e) => panic!("Allocate with a REST credential: {e}"),
    }
}

/// Rotating the TURN REST secret (the GatewayConfig's Secret) keeps credentials issued
/// under the old one valid for maxTTL, also after the operator is replaced: the history
/// lives in a Secret every replica reads, not in one replica's memory.
#[test]
fn a_rotated_auth_secret_stays_valid_across_an_operator_restart() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let c = Cluster::start();
    install_operator_rbac(&c);
    let cds = turnpike_tests::free_udp_port();
    let mut op = Operator::start(&c, "operator-1", cds, "6s");
    apply_file(&c, "examples/kubernetes");
    c.apply(&endpoint_slice(&["198.18.101.2"]));
    let (_dataplane, _) = start_dataplane(&c, cds, c.dir());
    let rotated = "rotated-turn-secret";
    wait_for(
        "the dataplane to accept the secret",
        Duration::from_secs(20),
        || allocated_with(SECRET).map(|_| ()),
    );
    assert!(allocated_with(rotated).is_none(), "not the secret yet");

    c.kubectl(&[
        "patch",
        "secret",
        "turnpike-auth",
        "-n",
        "turnpike-system",
        "--type=merge",
        "-p",
        &format!(r#"{{"stringData":{{"secret":"{rotated}"}}}}"#),
    ]);
    wait_for("the rotated secret", Duration::from_secs(10), || {
        allocated_with(rotated).map(|_| ())
    });
    assert!(
        allocated_with(SECRET).is_some(),
        "the old secret stays valid"
    );
    let ledger: Secret = wait_for("the rotation ledger", Duration::from_secs(10), || {
        c.get_as(&["secret", "-n", "turnpike-system", "turnpike-auth-rotation"])
    });
    let data = ledger.data.unwrap_or_default();
    let entry: LedgerEntry = serde_json::from_slice(&data["turnpike-system.turnpike"].0).unwrap();
    assert_eq!(entry.current, rotated);
    assert_eq!(entry.previous[0].secret, SECRET);

    // A new operator that never saw the rotation.
    op.proc.signal("KILL");
    let _ = op.proc.wait_exit(Duration::from_secs(5));
    op = Operator::start(&c, "operator-2", cds, "6s");
    wait_for("the new operator to lead", Duration::from_secs(15), || {
        (op.metric("turnpike_operator_leader") == 1.0).then_some(())
    });
    // An endpoint only the new operator has published: the dataplane runs its config.
    c.apply(&endpoint_slice(&["198.18.101.2", "198.18.101.3"]));
    let mut client = allocated_with(rotated).expect("the new secret after the restart");
    wait_for(
        "the new operator's config on the dataplane",
        Duration::from_secs(15),
        || permitted(&mut client, "198.18.101.3:3480").then_some(()),
    );
    assert!(
        allocated_with(SECRET).is_some(),
        "the old secret was refused after the operator restart"
    );
    assert!(allocated_with("never-the-secret").is_none());
}

/// `allowedRoutes.namespaces.from: Selector`: a route attaches once its namespace gets the
/// label the listener selects, and the operator follows namespace label edits.
#[test]
fn a_listener_selects_route_namespaces_by_label() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let c = Cluster::start();
    install_operator_rbac(&c);
    let _op = Operator::start(&c, "operator-1", 0, "6s");
    apply_file(&c, "examples/kubernetes");
    c.apply("apiVersion: v1\nkind: Namespace\nmetadata: {name: team-a}\n");
    c.apply(concat!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: selective, namespace: media}\n",
        "spec:\n  gatewayClassName: turnpike\n  listeners:\n  - name: udp\n    protocol: TURN-UDP\n    port: 3478\n",
        "    allowedRoutes:\n      namespaces:\n        from: Selector\n        selector: {matchLabels: {turnpike.dev/media: \"true\"}}\n",
        "---\napiVersion: v1\nkind: Service\nmetadata: {name: media, namespace: team-a}\n",
        "spec:\n  ports: [{name: rtp, port: 5000, protocol: UDP}]\n",
        "---\napiVersion: gateway.networking.k8s.io/v1alpha2\nkind: UDPRoute\nmetadata: {name: media, namespace: team-a}\n",
        "spec:\n  parentRefs: [{name: selective, namespace: media}]\n  rules: [{backendRefs: [{name: media, port: 5000}]}]\n",
    ));
    let accepted = |what: &str, status: &str, reason: &str| {
        wait_for(what, Duration::from_secs(20), || {
            is(
                route_condition(&c, "team-a", "media", "Accepted"),
                status,
                reason,
            )
            .then_some(())
        })
    };
    accepted("the route refused", "False", "NotAllowedByListeners");
    c.kubectl(&["label", "namespace", "team-a", "turnpike.dev/media=true"]);
    accepted("the route attached", "True", "Accepted");
    c.kubectl(&["label", "namespace", "team-a", "turnpike.dev/media-"]);
    accepted("the route refused again", "False", "NotAllowedByListeners");
}
