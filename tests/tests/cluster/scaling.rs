//! Scaling, draining, rolling updates and leader failover under load: the phases of the
//! cluster suite that change the dataplane's replicas and the operator's pods while
//! clients hold allocations.

use super::*;

/// Runs `n` short probes side by side; returns the pod IPs they landed on.
fn spread(client: &Client, n: usize) -> BTreeMap<String, usize> {
    let runs = new_clients(client, n);
    assert_all_echoed("a new client", &runs);
    by_pod(&runs)
}

fn new_clients(client: &Client, n: usize) -> Vec<ProbeRun> {
    join_all((0..n).map(|_| client.probe_in_background(5, 20)).collect())
}

/// How many of `runs` each pod (by IP) served.
fn by_pod(runs: &[ProbeRun]) -> BTreeMap<String, usize> {
    let mut by_pod = BTreeMap::new();
    for r in runs {
        *by_pod
            .entry(r.pod_ip.clone().unwrap_or_default())
            .or_insert(0) += 1;
    }
    by_pod
}

/// The addresses the Service's EndpointSlices list as ready.
fn ready_endpoints(c: &NodeCluster, ns: &str, service: &str) -> BTreeSet<String> {
    let selector = format!("kubernetes.io/service-name={service}");
    c.list_as::<EndpointSlice>(&["endpointslices", "-n", ns, "-l", &selector])
        .into_iter()
        .flat_map(|s| s.endpoints)
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
        .filter_map(|e| e.addresses.into_iter().next())
        .collect()
}

pub fn scales_out_under_load(c: &NodeCluster, client: &Client) {
    let before = pod_names(c, "media", DATAPLANE);
    let long = client.probe_in_background(600, 25);
    std::thread::sleep(secs(1));
    patch_gateway_config(c, r#"{"spec":{"dataplane":{"replicas":3}}}"#);
    let pods = c.wait_ready_pods("media", DATAPLANE, 3, secs(180));
    assert!(
        before.iter().all(|p| pods.contains_key(p)),
        "the first pod stays"
    );
    let ips: BTreeSet<String> = pods.values().map(pod_ip).collect();
    wait_for(
        "the Service's endpoints to list the new pods",
        secs(30),
        || (ready_endpoints(c, "media", "media-gateway") == ips).then_some(()),
    );
    // kube-proxy programs the new endpoints a moment after the EndpointSlice lists them.
    let t0 = Instant::now();
    let mut by_pod = BTreeMap::new();
    while !ips.iter().all(|ip| by_pod.contains_key(ip)) {
        assert!(
            t0.elapsed() < secs(20),
            "new clients never reached every pod {ips:?}: {by_pod:?}"
        );
        for (ip, n) in spread(client, 12) {
            *by_pod.entry(ip).or_insert(0) += n;
        }
    }
    eprintln!(
        "new clients reached all 3 pods within {:.1}s of the endpoints: {by_pod:?}",
        t0.elapsed().as_secs_f64()
    );
    let r = long.join().unwrap();
    assert!(
        r.ok,
        "the client relaying through the scale-out lost packets:\n{}",
        r.output
    );
}

/// Once kube-proxy has caught up with the EndpointSlice (about a second here), batches of
/// `n` new clients all relay, and only through pods `allowed` accepts. A client that
/// reached a draining pod is refused (508); ten seconds of that fails the test.
fn settled_spread(
    client: &Client,
    n: usize,
    allowed: impl Fn(&str) -> bool,
) -> BTreeMap<String, usize> {
    let t0 = Instant::now();
    loop {
        let runs = new_clients(client, n);
        let settled = runs
            .iter()
            .all(|r| r.ok && r.pod_ip.as_deref().is_some_and(&allowed));
        if settled {
            return by_pod(&runs);
        }
        let seen: Vec<_> = runs.iter().map(|r| (r.ok, r.pod_ip.clone())).collect();
        assert!(
            t0.elapsed() < secs(10),
            "new clients still reach pods they should not 10 s after the endpoints changed: {seen:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Starts `n` long clients and returns them with the pods they landed on (pod IP → runs).
fn long_clients(client: &Client, n: usize, count: u32) -> Vec<JoinHandle<ProbeRun>> {
    (0..n)
        .map(|_| client.probe_in_background(count, 25))
        .collect()
}

fn allocations_by_pod(c: &NodeCluster) -> BTreeMap<String, u64> {
    c.pods("media", DATAPLANE)
        .values()
        .filter_map(|p| {
            let ip = pod_ip(p);
            let addr = format!("{ip}:8086").parse().ok()?;
            let (_, _, body) = turnpike_tests::http_get_at(addr, "/status", &[])?;
            let v: Value = serde_json::from_str(&body).ok()?;
            Some((ip, v["allocations"].as_u64()?))
        })
        .collect()
}

pub fn scales_in_with_draining(c: &NodeCluster, client: &Client) {
    let runs = long_clients(client, 12, 800);
    std::thread::sleep(secs(2));
    let busy = allocations_by_pod(c);
    eprintln!("allocations before scale-in: {busy:?}");
    patch_gateway_config(c, r#"{"spec":{"dataplane":{"replicas":1}}}"#);
    let draining: BTreeMap<String, String> = wait_for("two pods terminating", secs(30), || {
        let pods = c.pods("media", DATAPLANE);
        let t: BTreeMap<_, _> = pods
            .iter()
            .filter(|(_, p)| is_terminating(p))
            .map(|(n, p)| (pod_ip(p), n.clone()))
            .collect();
        (t.len() == 2).then_some(t)
    });
    assert!(
        draining
            .keys()
            .any(|ip| busy.get(ip).is_some_and(|n| *n > 0)),
        "no client was on a removed pod, so nothing drained: {busy:?} {draining:?}"
    );
    // New clients meanwhile land on the pod that stays, never on a draining one (once
    // the EndpointSlice and then kube-proxy have caught up).
    wait_for(
        "the draining pods out of the ready endpoints",
        secs(30),
        || {
            ready_endpoints(c, "media", "media-gateway")
                .iter()
                .all(|ip| !draining.contains_key(ip))
                .then_some(())
        },
    );
    let by_pod = settled_spread(client, 6, |ip| !draining.contains_key(ip));
    eprintln!("new clients during the drain: {by_pod:?}");
    // The draining pods are still there, relaying, while their allocations live.
    std::thread::sleep(secs(3));
    let still = c.pods("media", DATAPLANE);
    for name in draining.values() {
        assert!(
            still.contains_key(name),
            "{name} went before its allocations ended"
        );
    }
    let results = join_all(runs);
    assert_all_echoed("an allocation on a draining pod", &results);
    let on_removed = results
        .iter()
        .filter(|r| {
            r.pod_ip
                .as_ref()
                .is_some_and(|ip| draining.contains_key(ip))
        })
        .count();
    assert!(on_removed > 0, "no client relayed through a draining pod");
    let ended = Instant::now();
    c.wait_ready_pods("media", DATAPLANE, 1, secs(30));
    eprintln!(
        "{on_removed} of 12 clients relayed through the draining pods to their end; the pods exited {:.1}s after",
        ended.elapsed().as_secs_f64()
    );
}

pub fn rolls_without_cutting_allocations(c: &NodeCluster, client: &Client) {
    let old = pod_names(c, "media", DATAPLANE);
    let runs = long_clients(client, 6, 800);
    std::thread::sleep(secs(2));
    // A pod-template change: the worker count is an environment variable of the pod.
    patch_gateway_config(c, r#"{"spec":{"dataplane":{"workers":1}}}"#);
    let (new_name, new_pod) = wait_for(
        "the new pod ready, the old one terminating",
        secs(120),
        || {
            let pods = c.pods("media", DATAPLANE);
            let old_terminating = old.iter().all(|n| pods.get(n).is_none_or(is_terminating));
            let new = pods
                .into_iter()
                .find(|(n, p)| !old.contains(n) && turnpike_tests::cluster::is_ready(p));
            new.filter(|_| old_terminating)
        },
    );
    let terminating_since = Instant::now();
    assert_eq!(grace_period(&new_pod), Some(70), "{new_name}");
    let new_ip = pod_ip(&new_pod);
    wait_for("only the new pod in the ready endpoints", secs(30), || {
        (ready_endpoints(c, "media", "media-gateway") == BTreeSet::from([new_ip.clone()]))
            .then_some(())
    });
    let by_pod = settled_spread(client, 4, |ip| ip == new_ip);
    eprintln!("new clients during the roll: {by_pod:?} (new pod {new_ip})");
    let results = join_all(runs);
    assert_all_echoed("an allocation on the pod being replaced", &results);
    // turnutils_uclient never deletes its allocations: those the first phase left on the
    // old pod keep it draining until its deadline, where it exits by itself (before the
    // kubelet's kill at the grace period).
    let leftover: u64 = allocations_by_pod(c)
        .iter()
        .filter(|(ip, _)| **ip != new_ip)
        .map(|(_, n)| *n)
        .sum();
    assert!(
        leftover > 0,
        "the old pod holds allocations that outlive the roll"
    );
    wait_for(
        "the old pod to exit at its drain deadline",
        secs(90),
        || {
            let pods = pod_names(c, "media", DATAPLANE);
            old.iter().all(|n| !pods.contains(n)).then_some(())
        },
    );
    let took = terminating_since.elapsed();
    eprintln!(
        "the replaced pod drained {leftover} leftover allocations and exited {:.1}s after SIGTERM (drain timeout 40 s, grace 70 s)",
        took.as_secs_f64()
    );
    assert!(
        took >= secs(36) && took < secs(66),
        "the old pod exited {took:?} after SIGTERM; its drain deadline was 40 s"
    );
}

pub fn leader_fails_over(c: &NodeCluster, client: &Client) {
    let mut dp_before = c.pods("media", DATAPLANE);
    dp_before.retain(|_, p| !is_terminating(p));
    let holder = lease_holder(c).expect("a leader");
    let running = client.probe_in_background(1200, 25);
    let t0 = Instant::now();
    c.kubectl(&[
        "delete",
        "pod",
        "-n",
        "turnpike-system",
        &holder,
        "--wait=false",
    ]);
    let ops_before = pod_names(c, "turnpike-system", OPERATOR);
    let new_holder = wait_for("another replica to lead", secs(30), || {
        lease_holder(c).filter(|h| *h != holder)
    });
    let took = t0.elapsed();
    assert!(
        ops_before.contains(&new_holder),
        "led by the surviving replica, not {new_holder}"
    );
    assert!(took < secs(20), "a new leader after {took:?} (lease 15 s)");
    eprintln!(
        "{new_holder} leads {:.2}s after the leader pod was deleted",
        took.as_secs_f64()
    );
    // The new leader's changes reach the dataplane over CDS: one allocation per user, so
    // a second client of the running one's user is refused (486), then admitted again.
    // (Generation numbers cannot show it: each replica counts its own.)
    patch_gateway_config(c, r#"{"spec":{"limits":{"maxAllocationsPerUser":1}}}"#);
    wait_for("the dataplane to enforce the new limit", secs(20), || {
        let r = client.probe(1, 0);
        (!r.ok && r.output.contains("486")).then_some(())
    });
    patch_gateway_config(c, r#"{"spec":{"limits":{"maxAllocationsPerUser":100}}}"#);
    wait_for("the dataplane to lift the limit", secs(20), || {
        client.probe(1, 0).ok.then_some(())
    });
    let r = running.join().unwrap();
    assert!(
        r.ok,
        "relaying through the operator failover:\n{}",
        r.output
    );
    let dp_after = c.pods("media", DATAPLANE);
    for (name, before) in &dp_before {
        let after = dp_after
            .get(name)
            .unwrap_or_else(|| panic!("{name} was replaced"));
        assert_eq!(after.metadata.uid, before.metadata.uid, "{name}");
        let restarts = after
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .map(|cs| cs[0].restart_count);
        assert_eq!(restarts, Some(0), "{name}");
    }
}
