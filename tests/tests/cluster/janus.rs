//! Real media on the cluster (issue 16): examples/janus applied with `kubectl apply -k`,
//! Janus and its app server as a pod from the image examples/janus/image.sh builds out of
//! Debian packages, and two headless Chromiums in the internet namespace that reach only
//! the load-balancer addresses: the app's, for the page and `/ice-config`, and the Janus
//! Gateway's, for every media packet.

use std::process::Command;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use turnpike_tests::media::{Call, artifacts, assert_media_flowed, require_browser, route_bytes};
use turnpike_tests::repo_root;

use super::*;

const JANUS_GATEWAY_LB: &str = "198.18.253.20";
const APP_LB: &str = "198.18.253.21";
const NS: &str = "janus";
const JANUS_POD: &str = "app=janus";
const JANUS_DATAPLANE: &str = "turnpike.dev/gateway=janus-gateway";

pub fn media_through_janus(c: &NodeCluster) {
    require_browser(&[]);
    let out = Command::new(repo_root().join("examples/janus/image.sh"))
        .output()
        .unwrap();
    assert!(out.status.success(), "Janus image: {}", output_text(&out));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let archive = text
        .lines()
        .find_map(|l| l.strip_prefix("archive "))
        .unwrap_or_else(|| panic!("no archive in {text}"));
    c.import_image(std::path::Path::new(archive));

    let kustomization = repo_root().join("examples/janus");
    c.kubectl(&["apply", "-k", kustomization.to_str().unwrap()]);
    assign_lb_address(c, NS, "janus-gateway", JANUS_GATEWAY_LB);
    assign_service_lb_address(c, NS, "janus-app", APP_LB);
    let pods = c.wait_ready_pods(NS, JANUS_POD, 1, secs(180));
    let (janus_pod, pod) = pods.iter().next().unwrap();
    let janus_ip = pod_ip(pod);
    for container in ["janus", "app"] {
        let pid = c.container_pid(NS, janus_pod, container);
        let p = process_privileges(pid);
        let what = format!("{NS}/{janus_pod} ({container}, pid {pid}): {p:?}");
        assert_eq!(p.uid, "65532 65532 65532 65532", "non-root: {what}");
        assert_eq!(p.effective_capabilities, "0000000000000000", "{what}");
        assert!(p.root_read_only, "read-only root filesystem: {what}");
    }
    wait_for("UDPRoute janus/janus ResolvedRefs", secs(60), || {
        let route = c.get(&["udproute", "-n", NS, "janus"])?;
        let conds: Vec<Condition> =
            serde_json::from_value(route["status"]["parents"][0]["conditions"].clone()).ok()?;
        (condition_of(&conds, "ResolvedRefs")?.0 == "True").then_some(())
    });
    let dataplane = c.wait_ready_pods(NS, JANUS_DATAPLANE, 1, secs(120));
    let dataplane_ip = pod_ip(dataplane.values().next().unwrap());

    let shot = artifacts().join("cluster-janus-videoroom-subscriber.png");
    let url = format!("http://{APP_LB}/");
    let r = Call {
        app_url: &url,
        kind: "videoroom",
        screenshot: &shot,
        seconds: 10,
        client_ns: &c.inet_ns,
        // The page is plain HTTP on the load-balancer address; the camera wants a secure
        // context (a real deployment puts the page behind its HTTPS ingress).
        flags: format!("--unsafely-treat-insecure-origin-as-secure=http://{APP_LB}"),
    }
    .run(|| {
        let logs = |container: &str| {
            c.kubectl(&["logs", "-n", NS, janus_pod, "-c", container, "--tail=40"])
        };
        format!("app:\n{}\njanus:\n{}", logs("app"), logs("janus"))
    });
    let received = assert_media_flowed(&r);
    for side in [&r["publisher"]["stats"], &r["stats"]] {
        let selected = &side["selected"];
        // Relayed by the Janus Gateway's address, to Janus' pod on its media port range.
        let turn_url = selected["local"]["url"].as_str().unwrap_or("");
        assert!(
            turn_url.contains(JANUS_GATEWAY_LB),
            "relayed through {turn_url}: {selected}"
        );
        assert_eq!(
            selected["remote"]["address"],
            janus_ip.as_str(),
            "{selected}"
        );
        let port = selected["remote"]["port"].as_u64().unwrap_or(0);
        assert!((20000..=20199).contains(&port), "{selected}");
    }
    let metrics = format!("{dataplane_ip}:8086")
        .parse()
        .ok()
        .and_then(|a| turnpike_tests::http_get_at(a, "/metrics", &[]))
        .map(|(_, _, body)| body)
        .unwrap_or_default();
    let bytes = route_bytes(&metrics, "janus/janus");
    assert!(
        bytes >= received,
        "the dataplane counted {bytes} bytes on route janus/janus; the subscriber alone received {received}"
    );
    assert!(shot.exists(), "screenshot {}", shot.display());
    eprintln!(
        "Janus VideoRoom through {JANUS_GATEWAY_LB}: {} video frames decoded, {bytes} bytes on the route",
        r["stats"]["inbound"]["video"]["framesDecoded"]
    );

    // The later phases scale the GatewayConfig every Gateway of the class shares: the
    // demo leaves first.
    c.kubectl(&["delete", "namespace", NS, "--wait=false"]);
}
