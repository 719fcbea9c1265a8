//! CDS over real QUIC on loopback: snapshot ordering, reconnect after a server restart with
//! the last good config kept, refusal of a client certificate from another CA, and of a
//! dataplane certificate asking for another Gateway; certificate files re-read on reconnect.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::mpsc;
use turnpike_contract::cds::ALL;
use turnpike_contract::cds::client::{CdsClientOptions, CdsEvent, subscribe};
use turnpike_contract::cds::{AuthServiceConfig, GatewaySnapshot};
use turnpike_contract::config::DataplaneConfig;
use turnpike_gateway::cds::{AUTH_SERVICE_CN, CdsServer, CertificateAuthority, dataplane_cn};
use turnpike_gateway::publish::{Publisher, Update};

fn config(gateway: &str, realm: &str) -> DataplaneConfig {
    DataplaneConfig::parse(&format!(
        "version: v1alpha1\nname: {gateway}\nrealm: {realm}\nauth: {{type: ephemeral, secret: s}}\nlisteners: []\n"
    ))
    .unwrap()
    .into_config()
}

fn publish(server: &CdsServer, publisher: &mut Publisher, configs: &[(&str, &str)]) -> Vec<Update> {
    let map = configs
        .iter()
        .map(|(g, r)| {
            (
                g.to_string(),
                GatewaySnapshot {
                    config: config(g, r),
                    auth: Some(AuthServiceConfig {
                        ttl: 60,
                        max_ttl: 600,
                        ..Default::default()
                    }),
                },
            )
        })
        .collect();
    let updates = publisher.update(&map, &Default::default());
    server.publish(&updates);
    updates
}

async fn next_config(rx: &mut mpsc::Receiver<CdsEvent>) -> DataplaneConfig {
    next_config_within(rx, Duration::from_secs(5)).await
}

fn client(
    ca: &CertificateAuthority,
    server: SocketAddr,
    gateway: &str,
) -> mpsc::Receiver<CdsEvent> {
    subscribe(CdsClientOptions {
        server,
        server_name: "turnpike-cds".into(),
        tls: ca
            .issue_client(&if gateway == ALL {
                AUTH_SERVICE_CN.to_string()
            } else {
                dataplane_cn(gateway)
            })
            .unwrap(),
        tls_files: None,
        gateway: gateway.into(),
        report: None,
    })
    .unwrap()
}

async fn start(ca: &CertificateAuthority, addr: &str) -> CdsServer {
    let id = ca.issue_server(&["turnpike-cds".into()]).unwrap();
    // A restarted server may find the old socket still closing for a moment.
    for _ in 0..40 {
        match CdsServer::start(addr.parse().unwrap(), &id) {
            Ok(s) => return s,
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    panic!("cannot bind {addr}");
}

#[tokio::test]
async fn snapshots_arrive_in_order_and_deletions_follow() {
    let ca = CertificateAuthority::generate("test CA").unwrap();
    let server = start(&ca, "127.0.0.1:0").await;
    let addr = server.local_addr().unwrap();
    let mut publisher = Publisher::default();
    publish(
        &server,
        &mut publisher,
        &[("ns/a", "r1"), ("ns/b", "other")],
    );
    let mut rx = client(&ca, addr, "ns/a");
    let first = next_config(&mut rx).await;
    assert_eq!((first.realm.as_str(), first.generation), ("r1", 1));
    for (i, realm) in ["r2", "r3", "r4"].iter().enumerate() {
        publish(
            &server,
            &mut publisher,
            &[("ns/a", realm), ("ns/b", "other")],
        );
        let c = next_config(&mut rx).await;
        // Never the other Gateway's config, never out of order.
        assert_eq!(c.name, "ns/a");
        assert_eq!((c.realm.as_str(), c.generation), (*realm, i as u64 + 2));
    }
    publish(&server, &mut publisher, &[("ns/b", "other")]);
    loop {
        match tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
        {
            Some(CdsEvent::Deleted(g)) => {
                assert_eq!(g, "ns/a");
                break;
            }
            Some(CdsEvent::Snapshot(c)) => panic!("unexpected snapshot {}", c.config.name),
            _ => {}
        }
    }
    // `all` subscribers see every Gateway, with auth settings; per-Gateway ones never do.
    let mut all = client(&ca, addr, "all");
    loop {
        match tokio::time::timeout(Duration::from_secs(5), all.recv())
            .await
            .unwrap()
        {
            Some(CdsEvent::Snapshot(s)) => {
                assert_eq!(s.config.name, "ns/b");
                assert_eq!(s.auth.map(|a| a.ttl), Some(60));
                break;
            }
            Some(_) => {}
            None => panic!("closed"),
        }
    }
    let mut one = client(&ca, addr, "ns/b");
    loop {
        if let Some(CdsEvent::Snapshot(s)) =
            tokio::time::timeout(Duration::from_secs(5), one.recv())
                .await
                .unwrap()
        {
            assert!(
                s.auth.is_none(),
                "a dataplane must not get auth-service settings"
            );
            break;
        }
    }
}

#[tokio::test]
async fn reconnects_after_a_server_restart() {
    let ca = CertificateAuthority::generate("test CA").unwrap();
    let server = start(&ca, "127.0.0.1:0").await;
    let addr = server.local_addr().unwrap();
    let mut publisher = Publisher::default();
    publish(&server, &mut publisher, &[("ns/a", "before")]);
    let mut rx = client(&ca, addr, "ns/a");
    assert_eq!(next_config(&mut rx).await.realm, "before");

    server.shutdown().await;
    loop {
        match tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .unwrap()
        {
            Some(CdsEvent::Disconnected(_)) => break,
            Some(CdsEvent::Snapshot(c)) => panic!("no snapshot while down: {c:?}"),
            _ => {}
        }
    }
    // A new server process: a new epoch, generations start at 1 again.
    let server = start(&ca, &addr.to_string()).await;
    let mut publisher = Publisher::default();
    publish(&server, &mut publisher, &[("ns/a", "after")]);
    let c = next_config(&mut rx).await;
    assert_eq!((c.realm.as_str(), c.generation), ("after", 1));
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused() {
    let ca = CertificateAuthority::generate("test CA").unwrap();
    let rogue = CertificateAuthority::generate("rogue CA").unwrap();
    let server = start(&ca, "127.0.0.1:0").await;
    let addr = server.local_addr().unwrap();
    let mut publisher = Publisher::default();
    publish(&server, &mut publisher, &[("ns/a", "secret-config")]);
    // The rogue client trusts our server (it has our CA) but presents a rogue certificate.
    let mut tls = rogue.issue_client(&dataplane_cn("ns/a")).unwrap();
    tls.ca_pem = ca.ca_pem();
    assert_refused(addr, tls, "ns/a", Duration::from_secs(3)).await;
    // The legitimate client still works.
    let mut ok = client(&ca, addr, "ns/a");
    assert_eq!(next_config(&mut ok).await.realm, "secret-config");
}

/// A client with `tls` asking for `gateway` gets no snapshot and is disconnected.
async fn assert_refused(
    server: SocketAddr,
    tls: turnpike_contract::cds::TlsIdentity,
    gateway: &str,
    wait: Duration,
) {
    let mut rx = subscribe(CdsClientOptions {
        server,
        server_name: "turnpike-cds".into(),
        tls,
        tls_files: None,
        gateway: gateway.into(),
        report: None,
    })
    .unwrap();
    let deadline = tokio::time::Instant::now() + wait;
    let mut disconnects = 0;
    while let Ok(Some(ev)) = tokio::time::timeout_at(deadline, rx.recv()).await {
        match ev {
            CdsEvent::Snapshot(c) => panic!("a refused client got {gateway}: {c:?}"),
            CdsEvent::Disconnected(_) => disconnects += 1,
            CdsEvent::Connected | CdsEvent::Deleted(_) => {}
        }
    }
    assert!(disconnects >= 1, "subscribing to {gateway} must be refused");
}

#[tokio::test]
async fn a_dataplane_certificate_reads_only_its_own_gateway() {
    let ca = CertificateAuthority::generate("test CA").unwrap();
    let server = start(&ca, "127.0.0.1:0").await;
    let addr = server.local_addr().unwrap();
    let mut publisher = Publisher::default();
    publish(
        &server,
        &mut publisher,
        &[("ns/a", "realm-a"), ("ns/b", "realm-b")],
    );
    for asked in ["ns/b", ALL] {
        let tls = ca.issue_client(&dataplane_cn("ns/a")).unwrap();
        assert_refused(addr, tls, asked, Duration::from_secs(2)).await;
    }
    let mut own = client(&ca, addr, "ns/a");
    assert_eq!(next_config(&mut own).await.realm, "realm-a");
    let mut auth = client(&ca, addr, ALL);
    let mut realms = vec![
        next_config(&mut auth).await.realm,
        next_config(&mut auth).await.realm,
    ];
    realms.sort();
    assert_eq!(realms, ["realm-a", "realm-b"]);
}

/// The operator lost its CA Secret and made a new CA; the kubelet rewrote the mounted
/// files. The client picks them up at its next reconnect (no restart), and a half-written
/// file in between keeps the identity it had.
#[tokio::test]
async fn reissued_certificate_files_are_used_at_the_next_reconnect() {
    let old_ca = CertificateAuthority::generate("old CA").unwrap();
    let new_ca = CertificateAuthority::generate("new CA").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let files = turnpike_contract::cds::TlsFiles {
        ca: dir.path().join("ca.crt"),
        cert: dir.path().join("tls.crt"),
        key: dir.path().join("tls.key"),
    };
    let write = |id: &turnpike_contract::cds::TlsIdentity| {
        std::fs::write(&files.ca, &id.ca_pem).unwrap();
        std::fs::write(&files.cert, &id.cert_pem).unwrap();
        std::fs::write(&files.key, &id.key_pem).unwrap();
    };
    let old_id = old_ca.issue_client(&dataplane_cn("ns/a")).unwrap();
    write(&old_id);

    let server = start(&new_ca, "127.0.0.1:0").await;
    let addr = server.local_addr().unwrap();
    let mut publisher = Publisher::default();
    publish(&server, &mut publisher, &[("ns/a", "from-new-ca")]);
    let mut rx = subscribe(CdsClientOptions {
        server: addr,
        server_name: "turnpike-cds".into(),
        tls: files.load().unwrap(),
        tls_files: Some(files.clone()),
        gateway: "ns/a".into(),
        report: None,
    })
    .unwrap();
    // Refused while it holds the old CA's certificate, also after a broken rewrite.
    let mut disconnects = 0;
    while disconnects < 2 {
        match tokio::time::timeout(Duration::from_secs(5), rx.recv()).await {
            Ok(Some(CdsEvent::Disconnected(_))) => disconnects += 1,
            Ok(Some(CdsEvent::Snapshot(c))) => panic!("the old certificate was accepted: {c:?}"),
            Ok(Some(_)) => {}
            other => panic!("expected disconnects, got {other:?}"),
        }
        if disconnects == 1 {
            std::fs::write(&files.cert, "-----BEGIN CERTIFICATE-----\n").unwrap();
        }
    }
    write(&new_ca.issue_client(&dataplane_cn("ns/a")).unwrap());
    assert_eq!(
        next_config_within(&mut rx, Duration::from_secs(15))
            .await
            .realm,
        "from-new-ca"
    );
}

async fn next_config_within(rx: &mut mpsc::Receiver<CdsEvent>, wait: Duration) -> DataplaneConfig {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(CdsEvent::Snapshot(c))) => return c.config,
            Ok(Some(_)) => continue,
            other => panic!("expected a snapshot, got {other:?}"),
        }
    }
}

async fn reports_until(
    server: &CdsServer,
    what: &str,
    done: impl Fn(&turnpike_gateway::cds::server::Reports) -> bool,
) {
    let mut rx = server.reports();
    let wait = async {
        loop {
            if done(&rx.borrow_and_update()) {
                return;
            }
            rx.changed().await.unwrap();
        }
    };
    tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}: {:?}", *rx.borrow()));
}

#[tokio::test]
async fn a_dataplane_report_lives_as_long_as_its_connection() {
    use turnpike_contract::cds::report::{DataplaneReport, OffloadStatus, PodName};
    let ca = CertificateAuthority::generate("test CA").unwrap();
    let server = start(&ca, "127.0.0.1:0").await;
    let addr = server.local_addr().unwrap();
    let mut publisher = Publisher::default();
    publish(&server, &mut publisher, &[("ns/a", "r1")]);
    let report = DataplaneReport {
        pod: Some(PodName {
            namespace: "ns".into(),
            name: "a-7d9f".into(),
        }),
        offload: OffloadStatus {
            requested: "TC".into(),
            active: "TC".into(),
            interfaces: vec!["eth0".into()],
            ..Default::default()
        },
    };
    let options = |gateway: &str, cn: &str, report: Option<DataplaneReport>| CdsClientOptions {
        server: addr,
        server_name: "turnpike-cds".into(),
        tls: ca.issue_client(cn).unwrap(),
        tls_files: None,
        gateway: gateway.into(),
        report,
    };
    let mut rx = subscribe(options("ns/a", &dataplane_cn("ns/a"), Some(report.clone()))).unwrap();
    next_config(&mut rx).await;
    reports_until(&server, "the report", |r| {
        r.get("ns/a")
            .is_some_and(|m| m.values().collect::<Vec<_>>() == [&report])
    })
    .await;
    // The auth service has nothing to report; a report it sends anyway is not recorded.
    let mut auth = subscribe(options(ALL, AUTH_SERVICE_CN, Some(report.clone()))).unwrap();
    next_config(&mut auth).await;
    assert_eq!(server.reports().borrow().len(), 1);
    assert!(!server.reports().borrow().contains_key(ALL));
    // The dataplane goes away (its client ends at the next event it cannot deliver): its
    // report goes with its connection.
    drop(rx);
    publish(&server, &mut publisher, &[("ns/a", "r2")]);
    reports_until(&server, "the report removed", |r| r.is_empty()).await;
}
