//! `turnpike run DIR`: the control plane on a directory of YAML, with the dataplanes in the
//! same process. Files are watched; a bad edit is reported (file, document, field) and the
//! last good state keeps serving.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use turnpike_dataplane::offload::OffloadMode;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use notify::Watcher as _;
use serde::Serialize;
use tokio::sync::mpsc;
use turnpike_contract::admin;
use turnpike_contract::cds::client::{CdsClientOptions, subscribe};
use turnpike_dataplane::admin::AdminState;
use turnpike_dataplane::runtime::{Dataplane, apply_cds_event};

use crate::cds::{AUTH_SERVICE_CN, CdsServer, CertificateAuthority, dataplane_cn};

use crate::objects::ObjectKey;
use crate::operator::metrics::OperatorMetrics;
use crate::publish::{Publisher, Update};
use crate::render::offload::OffloadReports;
use crate::render::{RenderContext, Rendered, render};
use crate::rotation::SecretRotation;
use crate::source::dir::load_dir;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot watch {path}: {source}")]
    Watch { path: String, source: notify::Error },
    #[error("control-plane admin on {addr}: {source}")]
    Admin {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("signal handler: {0}")]
    Signal(std::io::Error),
    #[error("CDS: {0}")]
    Cds(String),
}

/// How often the directory is re-read without a file event.
const PERIODIC_RELOAD: Duration = Duration::from_secs(60);

/// The name in the in-memory CDS server certificate.
const CDS_SERVER_NAME: &str = "turnpike-cds";

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub dir: PathBuf,
    /// Control-plane admin (`/status`, `/livez`, `/readyz`).
    pub admin: SocketAddr,
    /// The first Gateway's dataplane admin port; each further Gateway takes the next.
    pub dataplane_admin: SocketAddr,
    /// Where the CDS server listens (QUIC); port 0 picks a free one.
    pub cds: SocketAddr,
    /// Where the auth service (`/ice-config`) listens.
    pub auth: SocketAddr,
    pub workers: usize,
    /// Kernel offload for the dataplanes (`--offload`).
    pub offload: OffloadMode,
}

/// What `/status` on the control-plane admin shows and `turnpike status` prints.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusReport {
    pub source: String,
    /// Errors of the last load; empty when it was good.
    pub errors: Vec<String>,
    pub gateway_classes: BTreeMap<String, serde_json::Value>,
    pub gateway_configs: BTreeMap<String, serde_json::Value>,
    pub gateways: BTreeMap<String, serde_json::Value>,
    pub udp_routes: BTreeMap<String, serde_json::Value>,
    pub dataplanes: BTreeMap<String, DataplaneReport>,
}

#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DataplaneReport {
    pub published_generation: u64,
    /// Read when the report was written; a dataplane applies over CDS a moment later.
    pub applied_generation: u64,
    pub admin: String,
}

fn keyed<V: Serialize>(m: &BTreeMap<ObjectKey, V>) -> BTreeMap<String, serde_json::Value> {
    m.iter()
        .map(|(k, v)| (k.to_string(), serde_json::to_value(v).unwrap_or_default()))
        .collect()
}

pub(crate) fn now_time() -> Time {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    Time(k8s_openapi::jiff::Timestamp::from_second(secs).unwrap_or_default())
}

/// The dataplanes this process runs, one per Gateway. Each follows its Gateway over CDS
/// like a dataplane pod would, so standalone mode exercises the real delivery path.
struct LocalDataplanes {
    running: BTreeMap<String, LocalDataplane>,
    workers: usize,
    offload: OffloadMode,
    admin_base: SocketAddr,
    cds: SocketAddr,
    ca: Arc<CertificateAuthority>,
}

struct LocalDataplane {
    task: tokio::task::JoinHandle<()>,
    admin: SocketAddr,
    status: Arc<turnpike_dataplane::status::Status>,
}

impl LocalDataplanes {
    fn next_admin(&self) -> SocketAddr {
        let mut port = self.admin_base.port();
        while self.running.values().any(|d| d.admin.port() == port) {
            port += 1;
        }
        SocketAddr::new(self.admin_base.ip(), port)
    }

    /// Starts a dataplane for every Gateway that got its first snapshot, and forgets the
    /// ones whose task ended (their Gateway was deleted).
    async fn reconcile(&mut self, updates: &[Update]) {
        self.running.retain(|_, d| !d.task.is_finished());
        for u in updates {
            let Update::Snapshot(snap) = u else { continue };
            let name = &snap.config.name;
            if self.running.contains_key(name) {
                continue;
            }
            if let Err(e) = self.spawn(name.clone()).await {
                tracing::error!(gateway = %name, error = %e, "cannot start dataplane");
            }
        }
    }

    async fn spawn(&mut self, gateway: String) -> Result<(), String> {
        let admin = self.next_admin();
        let tls = self
            .ca
            .issue_client(&dataplane_cn(&gateway))
            .map_err(|e| e.to_string())?;
        let mut dp = Dataplane::with_offload(self.workers, self.offload);
        let mut events = subscribe(CdsClientOptions {
            server: self.cds,
            server_name: CDS_SERVER_NAME.into(),
            tls,
            tls_files: None,
            gateway: gateway.clone(),
            report: Some(dp.report(None)),
        })
        .map_err(|e| e.to_string())?;
        let state = AdminState {
            metrics: dp.metrics.clone(),
            status: dp.status.clone(),
            workers: self.workers,
        };
        let listener = tokio::net::TcpListener::bind(admin)
            .await
            .map_err(|e| format!("dataplane admin {admin}: {e}"))?;
        let status = dp.status.clone();
        let name = gateway.clone();
        let task = tokio::spawn(async move {
            let server = tokio::spawn(async move {
                let _ = axum::serve(listener, turnpike_dataplane::admin::router(state)).await;
            });
            let source = "control plane (CDS)";
            while let Some(ev) = events.recv().await {
                if !apply_cds_event(&mut dp, ev, source) {
                    break;
                }
            }
            server.abort();
            let _ = tokio::task::spawn_blocking(move || dp.stop()).await;
            tracing::info!(gateway = %name, "dataplane stopped");
        });
        tracing::info!(%gateway, %admin, "dataplane started");
        self.running.insert(
            gateway,
            LocalDataplane {
                task,
                admin,
                status,
            },
        );
        Ok(())
    }
}

/// The in-process dataplanes' reports, as the renderer takes them (one per Gateway here).
fn offload_reports(reports: &crate::cds::server::Reports) -> OffloadReports {
    reports
        .iter()
        .filter_map(|(gateway, by_conn)| {
            let key = crate::objects::ObjectKey::parse(gateway)?;
            let of_gateway = by_conn
                .values()
                .enumerate()
                .map(|(i, r)| {
                    let who = r.pod.as_ref().map_or_else(
                        || format!("dataplane {}", i + 1),
                        |p| format!("pod {}", p.name),
                    );
                    (who, r.offload.clone())
                })
                .collect();
            Some((key, of_gateway))
        })
        .collect()
}

fn log_statuses(r: &Rendered) {
    for (k, st) in &r.status.gateways {
        for c in st.conditions.iter().flatten() {
            if c.status != "True" {
                tracing::warn!(gateway = %k.to_string(), condition = %c.type_, reason = %c.reason, message = %c.message, "gateway condition");
            }
        }
        for l in st.listeners.iter().flatten() {
            for c in &l.conditions {
                let bad = (c.type_ == "Conflicted") == (c.status == "True");
                if bad {
                    tracing::warn!(gateway = %k.to_string(), listener = %l.name, condition = %c.type_, reason = %c.reason, message = %c.message, "listener condition");
                }
            }
        }
    }
    for (k, st) in &r.status.udp_routes {
        for p in &st.parents {
            for c in &p.conditions {
                if c.status != "True" {
                    tracing::warn!(route = %k.to_string(), parent = %p.parent_ref.name, condition = %c.type_, reason = %c.reason, message = %c.message, "route condition");
                }
            }
        }
    }
}

/// Loads and renders a directory once, as `turnpike run` would (for `probe` and `token`).
pub fn render_dir(dir: &std::path::Path) -> Result<Rendered, String> {
    let objects = load_dir(dir).map_err(|errs| {
        errs.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    })?;
    let ctx = RenderContext {
        now: now_time(),
        standalone: true,
        dataplane_image: String::new(),
        dataplane_image_pull_policy: None,
        cds_address: String::new(),
        previous_secrets: BTreeMap::new(),
        serving_certificates: Default::default(),
        offload_reports: Default::default(),
    };
    Ok(render(&objects, &ctx))
}

/// What the control plane's admin port serves: `/status` and the operator's metrics
/// (`turnpike run` is its own leader; its write pass starts and updates the in-process
/// dataplanes and the status).
#[derive(Clone)]
struct ControlPlaneAdmin {
    report: Arc<Mutex<StatusReport>>,
    metrics: Arc<OperatorMetrics>,
}

pub async fn run(opts: RunOptions) -> Result<(), RunError> {
    let admin_state = ControlPlaneAdmin {
        report: Arc::new(Mutex::new(StatusReport {
            source: opts.dir.display().to_string(),
            ..Default::default()
        })),
        metrics: Arc::new(OperatorMetrics::default()),
    };
    admin_state.metrics.leader.set(1);
    serve_admin(opts.admin, admin_state.clone()).await?;

    let (tx, mut rx) = mpsc::channel::<()>(1);
    let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        if ev.is_ok_and(|e| !e.kind.is_access()) {
            let _ = tx.try_send(());
        }
    })
    .map_err(|source| RunError::Watch {
        path: opts.dir.display().to_string(),
        source,
    })?;
    watcher
        .watch(&opts.dir, notify::RecursiveMode::NonRecursive)
        .map_err(|source| RunError::Watch {
            path: opts.dir.display().to_string(),
            source,
        })?;

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(RunError::Signal)?;
    let ca = Arc::new(
        CertificateAuthority::generate("turnpike standalone CDS CA")
            .map_err(|e| RunError::Cds(e.to_string()))?,
    );
    let server_id = ca
        .issue_server(&[
            CDS_SERVER_NAME.to_string(),
            "localhost".into(),
            opts.cds.ip().to_string(),
        ])
        .map_err(|e| RunError::Cds(e.to_string()))?;
    let cds = CdsServer::start(opts.cds, &server_id).map_err(|e| RunError::Cds(e.to_string()))?;
    let cds_addr = cds.local_addr().map_err(|e| RunError::Cds(e.to_string()))?;
    tracing::info!(addr = %cds_addr, "CDS server listening (QUIC, mutual TLS, in-memory CA)");
    admin_state.metrics.watch_cds(cds.reports());
    start_auth_service(opts.auth, cds_addr, &ca).await?;
    let mut publisher = Publisher::default();
    let mut dataplanes = LocalDataplanes {
        running: BTreeMap::new(),
        workers: opts.workers,
        offload: opts.offload,
        admin_base: opts.dataplane_admin,
        cds: cds_addr,
        ca,
    };
    let mut rotation = SecretRotation::default();
    let mut reports = cds.reports();
    loop {
        reload(
            &opts,
            &admin_state,
            &mut reports,
            &cds,
            &mut publisher,
            &mut dataplanes,
            &mut rotation,
        )
        .await;
        tokio::select! {
            Some(()) = rx.recv() => {
                // Let an editor or `cp` finish writing before reading.
                tokio::time::sleep(Duration::from_millis(50)).await;
                while rx.try_recv().is_ok() {}
            }
            // Re-read now and then even without a file event: rotated-out secrets expire
            // from the configs, and an event a filesystem failed to deliver is caught up.
            _ = tokio::time::sleep(PERIODIC_RELOAD) => {}
            // A dataplane reported (offload state): its listeners' status says so.
            Ok(()) = reports.changed() => {}
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
        }
    }
    // Deleting every Gateway stops each dataplane the way a real deletion would.
    let all: BTreeMap<_, _> = BTreeMap::new();
    cds.publish(&publisher.update(&all, &Default::default()));
    for (_, d) in std::mem::take(&mut dataplanes.running) {
        let _ = tokio::time::timeout(Duration::from_secs(5), d.task).await;
    }
    cds.shutdown().await;
    Ok(())
}

async fn reload(
    opts: &RunOptions,
    admin: &ControlPlaneAdmin,
    reports: &mut tokio::sync::watch::Receiver<crate::cds::server::Reports>,
    cds: &CdsServer,
    publisher: &mut Publisher,
    dataplanes: &mut LocalDataplanes,
    rotation: &mut SecretRotation,
) {
    let (report, metrics) = (&admin.report, &admin.metrics);
    let objects = match load_dir(&opts.dir) {
        Ok(o) => o,
        Err(errors) => {
            for e in &errors {
                tracing::error!(error = %e, "refused; the last good state keeps serving");
            }
            if let Ok(mut r) = report.lock() {
                r.errors = errors.iter().map(ToString::to_string).collect();
            }
            return;
        }
    };
    let now_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut ctx = RenderContext {
        now: now_time(),
        standalone: true,
        dataplane_image: String::new(),
        dataplane_image_pull_policy: None,
        cds_address: String::new(),
        previous_secrets: BTreeMap::new(),
        serving_certificates: Default::default(),
        offload_reports: Default::default(),
    };
    ctx.previous_secrets = rotation.observe(&objects, &ctx, now_unix);
    ctx.serving_certificates = rotation.serving_certificates();
    ctx.offload_reports = offload_reports(&reports.borrow_and_update());
    let started = std::time::Instant::now();
    let rendered = render(&objects, &ctx);
    metrics.renders.inc();
    metrics.render_duration.observe_duration(started.elapsed());
    metrics.synced.set(1);
    rotation.rendered(&rendered);
    log_statuses(&rendered);
    let updates = publisher.update(&rendered.snapshots(), &rendered.held_names());
    metrics.published_generations.inc_by(updates.len() as u64);
    cds.publish(&updates);
    let started = std::time::Instant::now();
    dataplanes.reconcile(&updates).await;
    if let Ok(mut r) = report.lock() {
        r.errors.clear();
        r.gateway_classes = rendered
            .status
            .gateway_classes
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::to_value(v).unwrap_or_default()))
            .collect();
        r.gateway_configs = keyed(&rendered.status.gateway_configs);
        r.gateways = keyed(&rendered.status.gateways);
        r.udp_routes = keyed(&rendered.status.udp_routes);
        r.dataplanes = publisher
            .current()
            .iter()
            .map(|(name, snap)| {
                let d = dataplanes.running.get(name);
                (
                    name.clone(),
                    DataplaneReport {
                        published_generation: snap.config.generation,
                        applied_generation: d.map_or(0, |d| {
                            d.status
                                .generation
                                .load(std::sync::atomic::Ordering::Relaxed)
                        }),
                        admin: d.map(|d| d.admin.to_string()).unwrap_or_default(),
                    },
                )
            })
            .collect();
    }
    metrics.write_passes.inc();
    metrics.write_duration.observe_duration(started.elapsed());
}

/// The auth service in-process: it follows every Gateway over CDS like its own pod would.
async fn start_auth_service(
    addr: SocketAddr,
    cds: SocketAddr,
    ca: &CertificateAuthority,
) -> Result<(), RunError> {
    let tls = ca
        .issue_client(AUTH_SERVICE_CN)
        .map_err(|e| RunError::Cds(e.to_string()))?;
    let events = subscribe(CdsClientOptions {
        server: cds,
        server_name: CDS_SERVER_NAME.into(),
        tls,
        tls_files: None,
        gateway: turnpike_contract::cds::ALL.into(),
        report: None,
    })
    .map_err(|e| RunError::Cds(e.to_string()))?;
    let state = turnpike_auth::http::AppState::new();
    tokio::spawn(turnpike_auth::follow(state.clone(), events));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| RunError::Admin { addr, source })?;
    tracing::info!(%addr, "auth service listening (/ice-config)");
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, turnpike_auth::http::router(state)).await {
            tracing::error!(error = %e, "auth service stopped");
        }
    });
    Ok(())
}

async fn serve_admin(addr: SocketAddr, state: ControlPlaneAdmin) -> Result<(), RunError> {
    use axum::routing::get;
    let report = state.report;
    let metrics: Arc<dyn admin::Scrape> = state.metrics;
    let app = admin::router(admin::always_ready(), Some(metrics)).route(
        "/status",
        get(move || {
            let r = report.lock().map(|r| r.clone()).unwrap_or_default();
            async move { axum::Json(r) }
        }),
    );
    admin::spawn(addr, app, "control-plane admin")
        .await
        .map_err(|source| RunError::Admin { addr, source })
}
