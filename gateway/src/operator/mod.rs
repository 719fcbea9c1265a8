//! `turnpike operator`: the control plane against the Kubernetes API. Watchers feed one
//! [`inventory::Inventory`]; every change (debounced) goes through the same pure renderer
//! as `turnpike run`; configs go out over CDS from every replica; the replica holding the
//! leader Lease also writes statuses, Events, certificate Secrets and the managed
//! dataplane Deployments and Services.

pub mod apply;
pub mod certs;
pub mod inventory;
pub mod lease;
pub mod ledger;
pub mod metrics;
pub mod reports;
pub mod status;
pub mod watchers;
pub mod writes;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::events::{Recorder, Reporter};
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use self::apply::Context;
use self::inventory::{Inventory, Kind};
use self::lease::{LeaderElector, LeaseOptions};
use self::metrics::OperatorMetrics;
use self::writes::{WriteRequest, WriteSender};
use crate::cds::CdsServer;
use crate::publish::Publisher;
use crate::render::{RenderContext, Rendered, render};
use crate::rotation::SecretRotation;
use turnpike_contract::admin;

#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    #[error("kubeconfig {path}: {source}")]
    Kubeconfig {
        path: String,
        source: kube::config::KubeconfigError,
    },
    #[error("Kubernetes client configuration: {0}")]
    InferConfig(#[from] kube::config::InferConfigError),
    #[error("Kubernetes client: {0}")]
    Client(#[from] kube::Error),
    #[error("operator admin on {addr}: {source}")]
    Admin {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("CDS server: {0}")]
    Cds(String),
    #[error("signal handler: {0}")]
    Signal(std::io::Error),
}

#[derive(Debug, Clone)]
pub struct OperatorOptions {
    /// A kubeconfig file; otherwise `KUBECONFIG` or the in-cluster service account.
    pub kubeconfig: Option<PathBuf>,
    /// The operator's namespace: its CA Secret, the auth service's certificate, the Lease.
    pub namespace: String,
    /// This replica's name in the Lease (the pod name).
    pub identity: String,
    /// Where this replica serves CDS (QUIC).
    pub cds_listen: SocketAddr,
    /// The CDS address dataplane pods are given: a Service name, so an operator restart
    /// never changes their pod template.
    pub cds_address: String,
    /// Names and IPs the CDS server certificate carries.
    pub cds_server_names: Vec<String>,
    /// Image for new dataplane Deployments whose GatewayConfig names none.
    pub dataplane_image: String,
    /// `imagePullPolicy` of new dataplane Deployments whose GatewayConfig names none.
    pub dataplane_image_pull_policy: Option<crate::crd::PullPolicy>,
    /// `/livez`, `/readyz`, `/metrics`, `/status`.
    pub admin: SocketAddr,
    pub lease_name: String,
    pub lease_duration: Duration,
}

/// The names the CDS server certificate carries: the CDS Service's in-cluster names, the
/// loopback names for a port-forward, and the listen address when it is specific.
pub fn cds_server_names(service: &str, namespace: &str, listen: SocketAddr) -> Vec<String> {
    let mut names = vec![
        service.to_string(),
        format!("{service}.{namespace}"),
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
        "localhost".into(),
        "127.0.0.1".into(),
    ];
    if !listen.ip().is_unspecified() {
        names.push(listen.ip().to_string());
    }
    names
}

/// How long changes are gathered before a render (a `kubectl apply` of many objects is one
/// render, not dozens).
const DEBOUNCE: Duration = Duration::from_millis(50);
/// A render even without a change: rotated-out secrets expire.
const RESYNC: Duration = Duration::from_secs(60);
/// Applied managed objects are re-applied this often, undoing hand edits.
const REAPPLY: Duration = Duration::from_secs(600);

/// What `/status` on the operator's admin port shows.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OperatorReport {
    pub identity: String,
    pub leader: bool,
    pub synced: bool,
    pub waiting_for: Vec<String>,
    /// Published generation per Gateway.
    pub gateways: BTreeMap<String, u64>,
    pub held: Vec<String>,
}

async fn client(opts: &OperatorOptions) -> Result<kube::Client, OperatorError> {
    let config = match &opts.kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path).map_err(|source| OperatorError::Kubeconfig {
                path: path.display().to_string(),
                source,
            })?;
            kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .map_err(|source| OperatorError::Kubeconfig {
                    path: path.display().to_string(),
                    source,
                })?
        }
        None => kube::Config::infer().await?,
    };
    Ok(kube::Client::try_from(config)?)
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub async fn run(opts: OperatorOptions) -> Result<(), OperatorError> {
    let client = client(&opts).await?;
    let metrics = Arc::new(OperatorMetrics::default());
    let report = Arc::new(Mutex::new(OperatorReport {
        identity: opts.identity.clone(),
        ..Default::default()
    }));
    serve_admin(opts.admin, metrics.clone(), report.clone()).await?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(OperatorError::Signal)?;

    // The CA first: without it there is no CDS. The API server may not be up yet.
    let ca = loop {
        match certs::load_or_create_ca(&client, &opts.namespace).await {
            Ok(ca) => break Arc::new(ca),
            Err(e) => {
                tracing::warn!(error = %e, "waiting for the CDS certificate authority");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                    _ = tokio::signal::ctrl_c() => return Ok(()),
                    _ = term.recv() => return Ok(()),
                }
            }
        }
    };
    let server_id = ca
        .issue_server(&opts.cds_server_names)
        .map_err(|e| OperatorError::Cds(e.to_string()))?;
    let cds = CdsServer::start(opts.cds_listen, &server_id)
        .map_err(|e| OperatorError::Cds(format!("{}: {e}", opts.cds_listen)))?;
    tracing::info!(addr = %opts.cds_listen, "CDS server listening (QUIC, mutual TLS)");

    metrics.watch_cds(cds.reports());
    let recorder = tokio::spawn(reports::run(client.clone(), cds.reports()));

    let (leader_tx, mut leader_rx) = watch::channel(false);
    let (stop_tx, stop_rx) = watch::channel(false);
    let elector = LeaderElector::new(
        client.clone(),
        LeaseOptions {
            namespace: opts.namespace.clone(),
            name: opts.lease_name.clone(),
            identity: opts.identity.clone(),
            duration: opts.lease_duration,
        },
    );
    let election = tokio::spawn(elector.run(leader_tx, stop_rx));

    let (tx, mut rx) = mpsc::channel(1024);
    let watchers = watchers::spawn_all(&client, &tx, &metrics);
    drop(tx);

    let ctx = Arc::new(Context {
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: "turnpike-operator".into(),
                instance: Some(opts.identity.clone()),
            },
        ),
        client,
        namespace: opts.namespace.clone(),
        metrics: metrics.clone(),
        ca,
    });
    let (write_tx, write_rx) = watch::channel(None);
    let writes = tokio::spawn(writes::run(ctx, write_rx, leader_rx.clone()));
    let mut state = Reconciler {
        opts: &opts,
        metrics: &metrics,
        cds: &cds,
        inventory: Inventory::default(),
        publisher: Publisher::default(),
        rotation: SecretRotation::default(),
        writes: write_tx,
        trust_epoch: 0,
        report: report.clone(),
    };
    let mut due: Option<Instant> = None;
    let mut resync = tokio::time::interval(RESYNC);
    let mut last_reapply = Instant::now();
    loop {
        tokio::select! {
            change = rx.recv() => {
                let Some(change) = change else { break };
                let what = tracing::enabled!(tracing::Level::DEBUG).then(|| change.describe());
                if state.inventory.apply(change) {
                    tracing::debug!(change = what.as_deref().unwrap_or(""), "render due");
                    let soon = Instant::now() + DEBOUNCE;
                    due = Some(due.map_or(soon, |d| d.min(soon)));
                }
            }
            Ok(()) = leader_rx.changed() => {
                let leading = *leader_rx.borrow_and_update();
                metrics.leader.set(i64::from(leading));
                // A new leader trusts nothing a previous term applied.
                state.trust_epoch += 1;
                due = Some(Instant::now());
            }
            _ = async { tokio::time::sleep_until(due.unwrap_or_else(Instant::now)).await }, if due.is_some() => {
                due = None;
                if !state.inventory.synced() {
                    continue;
                }
                let leading = *leader_rx.borrow();
                state.reconcile(leading);
            }
            _ = resync.tick() => {
                if last_reapply.elapsed() > REAPPLY {
                    state.trust_epoch += 1;
                    last_reapply = Instant::now();
                }
                due.get_or_insert_with(Instant::now);
            }
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
        }
    }
    tracing::info!("operator stopping");
    writes.abort();
    recorder.abort();
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), election).await;
    for w in watchers {
        w.abort();
    }
    cds.shutdown().await;
    Ok(())
}

/// The state one reconcile pass needs.
struct Reconciler<'a> {
    opts: &'a OperatorOptions,
    metrics: &'a OperatorMetrics,
    cds: &'a CdsServer,
    inventory: Inventory,
    publisher: Publisher,
    rotation: SecretRotation,
    /// To the leader's write loop ([`writes::run`]).
    writes: WriteSender,
    trust_epoch: u64,
    report: Arc<Mutex<OperatorReport>>,
}

impl Reconciler<'_> {
    /// Renders, publishes over CDS, and (as the leader) hands the render to the write loop.
    /// Never waits on the API server.
    fn reconcile(&mut self, leading: bool) {
        let metrics = self.metrics;
        metrics.synced.set(1);
        let mut rctx = RenderContext {
            now: crate::standalone::now_time(),
            standalone: false,
            dataplane_image: self.opts.dataplane_image.clone(),
            dataplane_image_pull_policy: self.opts.dataplane_image_pull_policy,
            cds_address: self.opts.cds_address.clone(),
            previous_secrets: BTreeMap::new(),
            serving_certificates: Default::default(),
            offload_reports: Default::default(),
        };
        let objects = &self.inventory.objects;
        if let Some(stored) = ledger::stored(objects, &self.opts.namespace) {
            self.rotation.merge(&stored);
        }
        rctx.previous_secrets = self.rotation.observe(objects, &rctx, now_unix());
        rctx.serving_certificates = self.rotation.serving_certificates();
        rctx.offload_reports = crate::render::offload::reports_from_pods(objects);
        let started = std::time::Instant::now();
        let rendered = render(objects, &rctx);
        self.rotation.rendered(&rendered);
        metrics.renders.inc();
        metrics.render_duration.observe_duration(started.elapsed());
        let updates = self
            .publisher
            .update(&rendered.snapshots(), &rendered.held_names());
        metrics.published_generations.inc_by(updates.len() as u64);
        self.cds.publish(&updates);
        tracing::debug!(
            render_us = started.elapsed().as_micros() as u64,
            published = updates.len(),
            "rendered"
        );
        self.update_report(leading, &rendered);
        let request = leading.then(|| {
            Arc::new(WriteRequest {
                objects: objects.clone(),
                rendered,
                trust_epoch: self.trust_epoch,
                ledger: ledger::to_write(objects, &self.opts.namespace, &self.rotation.ledger()),
            })
        });
        self.writes.send_replace(request);
    }

    fn update_report(&self, leading: bool, rendered: &Rendered) {
        let Ok(mut r) = self.report.lock() else {
            return;
        };
        r.leader = leading;
        r.synced = self.inventory.synced();
        r.waiting_for = self
            .inventory
            .unsynced()
            .iter()
            .map(|k: &Kind| format!("{k:?}"))
            .collect();
        r.gateways = self
            .publisher
            .current()
            .iter()
            .map(|(k, s)| (k.clone(), s.config.generation))
            .collect();
        r.held = rendered.held.iter().map(ToString::to_string).collect();
    }
}

async fn serve_admin(
    addr: SocketAddr,
    metrics: Arc<OperatorMetrics>,
    report: Arc<Mutex<OperatorReport>>,
) -> Result<(), OperatorError> {
    use axum::routing::get;
    let synced = metrics.clone();
    // Ready (and so reachable through the CDS Service) once every kind is listed: before
    // that, a snapshot could miss objects not read yet.
    let ready: admin::ReadyCheck = Arc::new(move || {
        admin::ready_text(if synced.is_synced() {
            Ok("ok\n".into())
        } else {
            Err("waiting for the first list of every watched kind\n".into())
        })
    });
    let app = admin::router(ready, Some(metrics)).route(
        "/status",
        get(move || {
            let r = report.lock().map(|r| r.clone()).unwrap_or_default();
            async move { axum::Json(r) }
        }),
    );
    admin::spawn(addr, app, "operator admin")
        .await
        .map_err(|source| OperatorError::Admin { addr, source })
}
