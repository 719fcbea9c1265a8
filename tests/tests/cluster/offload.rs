//! Kernel offload in a real dataplane pod: the capabilities and uid the operator's
//! Deployment asks for reach the process under containerd's RuntimeDefault seccomp
//! profile, the program loads on the pod's interface, the report travels over CDS to the
//! pod's condition and the listener's `Programmed` message, and media through the
//! load-balancer address is relayed by the kernel.

use gateway_api::gateways::Gateway;
use k8s_openapi::api::core::v1::Pod;
use serde_json::Value;
use turnpike_tests::cluster::{NodeCluster, first_container, is_ready, is_terminating, pod_ip};
use turnpike_tests::k8s::wait_for;

use super::{Client, DATAPLANE, patch_gateway_config, process_privileges, secs};

/// CAP_NET_ADMIN (12), CAP_PERFMON (38), CAP_BPF (39), as `/proc/PID/status` prints them.
const OFFLOAD_CAPABILITIES: &str = "000000c000001000";

pub fn relays_in_the_kernel(c: &NodeCluster, client: &Client, echo: &str) {
    patch_gateway_config(c, r#"{"spec":{"dataplane":{"offload":"TC","replicas":1}}}"#);
    let (name, pod) = wait_for("one ready dataplane pod with offload TC", secs(180), || {
        let pods = c.pods("media", DATAPLANE);
        let live: Vec<(String, Pod)> = pods
            .into_iter()
            .filter(|(_, p)| !is_terminating(p))
            .collect();
        let [(name, pod)] = live.as_slice() else {
            return None;
        };
        let env = first_container(pod).env.unwrap_or_default();
        let offload = env
            .iter()
            .find(|e| e.name == "TURNPIKE_OFFLOAD")
            .and_then(|e| e.value.as_deref())
            == Some("TC");
        (offload && is_ready(pod)).then(|| (name.clone(), pod.clone()))
    });

    let pid = c.container_pid("media", &name, "dataplane");
    let p = process_privileges(pid);
    let what = format!("media/{name} (dataplane, pid {pid}): {p:?}");
    assert_eq!(
        p.uid, "0 0 0 0",
        "uid 0 so the added capabilities hold: {what}"
    );
    assert_eq!(
        p.effective_capabilities, OFFLOAD_CAPABILITIES,
        "exactly BPF, NET_ADMIN and PERFMON: {what}"
    );
    assert_eq!(p.no_new_privs, "1", "no privilege escalation: {what}");
    assert_eq!(p.seccomp, "2", "seccomp RuntimeDefault: {what}");
    assert!(p.root_read_only, "read-only root filesystem: {what}");

    let ip = pod_ip(&pod);
    let status: Value = wait_for("the dataplane's /status to show offload", secs(30), || {
        let (_, _, body) =
            turnpike_tests::http_get_at(format!("{ip}:8086").parse().ok()?, "/status", &[])?;
        serde_json::from_str(&body).ok()
    });
    assert_eq!(
        status["offload"]["active"], "TC",
        "offload active in the pod: {}",
        status["offload"]
    );

    let condition = wait_for(
        "the pod's turnpike.dev/KernelOffload condition",
        secs(60),
        || {
            let p: Pod = c.get_as(&["pod", "-n", "media", &name])?;
            let conds = p.status?.conditions?;
            conds
                .into_iter()
                .find(|c| c.type_ == "turnpike.dev/KernelOffload")
        },
    );
    assert_eq!(
        (condition.status.as_str(), condition.reason.as_deref()),
        ("True", Some("TC")),
        "{condition:?}"
    );
    let message = wait_for(
        "the listener's Programmed message to name offload",
        secs(60),
        || {
            let gw: Gateway = c.get_as(&["gateway", "-n", "media", "media-gateway"])?;
            let listeners = gw.status?.listeners?;
            let udp = listeners.iter().find(|l| l.name == "turn-udp")?;
            let programmed = udp.conditions.iter().find(|c| c.type_ == "Programmed")?;
            programmed
                .message
                .contains("kernel offload TC active on 1 of 1 dataplanes")
                .then(|| programmed.message.clone())
        },
    );
    eprintln!("listener udp: {message}");

    // Senders on this machine leave UDP checksums to the device (CHECKSUM_PARTIAL),
    // which the program passes up; media from the internet arrives complete. Both ends
    // here compute theirs in software, as a remote host's NIC would have.
    let echo_pod = c
        .pods("media", "app=echo")
        .into_keys()
        .next()
        .expect("the echo pod");
    let echo_pid = c.container_pid("media", &echo_pod, "echo");
    for cmd in [
        vec![
            "ip", "netns", "exec", &c.inet_ns, "ethtool", "-K", "eth0", "tx", "off",
        ],
        vec![
            "nsenter",
            "-t",
            &echo_pid.to_string(),
            "-n",
            "ethtool",
            "-K",
            "eth0",
            "tx",
            "off",
        ],
    ] {
        let out = std::process::Command::new(cmd[0])
            .args(&cmd[1..])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{cmd:?}: {}",
            turnpike_tests::output_text(&out)
        );
    }

    // Changing a veth's offloads can drop the packets in flight; the relay is measured
    // once a short probe gets through again.
    wait_for(
        "a probe through after the offload changes",
        secs(30),
        || client.probe(5, 20).ok.then_some(()),
    );
    let before = kernel_packets(&ip);
    let r = client.probe(200, 5);
    assert!(r.ok, "relay with offload on:\n{}", r.output);
    // Every ChannelData both ways: the binding is in the kernel before its answer leaves.
    let relayed = wait_for("400 packets in the kernel's counters", secs(10), || {
        let n = kernel_packets(&ip).saturating_sub(before);
        (n >= 400).then_some(n)
    });
    eprintln!("kernel-relayed packets: {relayed} of 400 ({echo})");
}

/// `turnpike_relayed_packets_total{path="kernel"}` summed over listeners and directions.
fn kernel_packets(ip: &str) -> u64 {
    let Some(addr) = format!("{ip}:8086").parse().ok() else {
        return 0;
    };
    let Some((_, _, body)) = turnpike_tests::http_get_at(addr, "/metrics", &[]) else {
        return 0;
    };
    body.lines()
        .filter(|l| {
            l.starts_with("turnpike_relayed_packets_total{") && l.contains("path=\"kernel\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}
