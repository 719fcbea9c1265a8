//! `turnpike run DIR`: the control plane on a directory of YAML, with the dataplanes in the
//! same process. Files are watched; a bad edit is reported (file, document, field) and the
//! last good state keeps serving.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use notify::Watcher as _;
use serde::Serialize;
use tokio::sync::mpsc;
use turnpike_dataplane::admin::{self, AdminState};
use turnpike_dataplane::runtime::Dataplane;

use crate::objects::{Key, key_string};
use crate::publish::{Publisher, Update};
use crate::render::{RenderContext, Rendered, render};
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
}

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub dir: PathBuf,
    /// Control-plane admin (`/status`, `/livez`, `/readyz`).
    pub admin: SocketAddr,
    /// The first Gateway's dataplane admin port; each further Gateway takes the next.
    pub dataplane_admin: SocketAddr,
    pub workers: usize,
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
    pub generation: u64,
    pub admin: String,
}

fn keyed<V: Serialize>(m: &BTreeMap<Key, V>) -> BTreeMap<String, serde_json::Value> {
    m.iter()
        .map(|(k, v)| (key_string(k), serde_json::to_value(v).unwrap_or_default()))
        .collect()
}

fn now_time() -> Time {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    Time(k8s_openapi::jiff::Timestamp::from_second(secs).unwrap_or_default())
}

/// The dataplanes this process runs, one per Gateway.
struct LocalDataplanes {
    running: BTreeMap<String, (Dataplane, tokio::task::JoinHandle<()>, SocketAddr)>,
    workers: usize,
    admin_base: SocketAddr,
}

impl LocalDataplanes {
    fn next_admin(&self) -> SocketAddr {
        let mut port = self.admin_base.port();
        while self.running.values().any(|(_, _, a)| a.port() == port) {
            port += 1;
        }
        SocketAddr::new(self.admin_base.ip(), port)
    }

    async fn apply(&mut self, u: Update) {
        match u {
            Update::Snapshot(cfg) => {
                let name = cfg.name.clone();
                if let Some((dp, _, _)) = self.running.get_mut(&name) {
                    dp.apply(cfg, "control plane");
                    return;
                }
                let admin = self.next_admin();
                match Dataplane::start(cfg, self.workers, "control plane") {
                    Ok(dp) => {
                        let state = AdminState {
                            metrics: dp.metrics.clone(),
                            status: dp.status.clone(),
                            workers: self.workers,
                        };
                        let task = tokio::spawn(async move {
                            if let Err(e) = admin::serve(admin, state).await {
                                tracing::error!(%admin, error = %e, "dataplane admin server stopped");
                            }
                        });
                        tracing::info!(gateway = %name, %admin, "dataplane started");
                        self.running.insert(name, (dp, task, admin));
                    }
                    Err(e) => {
                        tracing::error!(gateway = %name, error = %e, "cannot start dataplane")
                    }
                }
            }
            Update::Deleted(name) => {
                if let Some((dp, task, _)) = self.running.remove(&name) {
                    task.abort();
                    let _ = tokio::task::spawn_blocking(move || dp.stop()).await;
                    tracing::info!(gateway = %name, "dataplane stopped: its Gateway is gone");
                }
            }
        }
    }
}

fn log_statuses(r: &Rendered) {
    for (k, st) in &r.status.gateways {
        for c in st.conditions.iter().flatten() {
            if c.status != "True" {
                tracing::warn!(gateway = %key_string(k), condition = %c.type_, reason = %c.reason, message = %c.message, "gateway condition");
            }
        }
        for l in st.listeners.iter().flatten() {
            for c in &l.conditions {
                let bad = (c.type_ == "Conflicted") == (c.status == "True");
                if bad {
                    tracing::warn!(gateway = %key_string(k), listener = %l.name, condition = %c.type_, reason = %c.reason, message = %c.message, "listener condition");
                }
            }
        }
    }
    for (k, st) in &r.status.udp_routes {
        for p in &st.parents {
            for c in &p.conditions {
                if c.status != "True" {
                    tracing::warn!(route = %key_string(k), parent = %p.parent_ref.name, condition = %c.type_, reason = %c.reason, message = %c.message, "route condition");
                }
            }
        }
    }
}

pub async fn run(opts: RunOptions) -> Result<(), RunError> {
    let report = Arc::new(Mutex::new(StatusReport {
        source: opts.dir.display().to_string(),
        ..Default::default()
    }));
    serve_admin(opts.admin, report.clone()).await?;

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
    let mut publisher = Publisher::default();
    let mut dataplanes = LocalDataplanes {
        running: BTreeMap::new(),
        workers: opts.workers,
        admin_base: opts.dataplane_admin,
    };
    let mut previous_secrets: BTreeMap<Key, Vec<(String, u64)>> = BTreeMap::new();
    let mut last_secrets: BTreeMap<Key, String> = BTreeMap::new();
    loop {
        reload(
            &opts,
            &report,
            &mut publisher,
            &mut dataplanes,
            &mut previous_secrets,
            &mut last_secrets,
        )
        .await;
        tokio::select! {
            Some(()) = rx.recv() => {
                // Let an editor or `cp` finish writing before reading.
                tokio::time::sleep(Duration::from_millis(50)).await;
                while rx.try_recv().is_ok() {}
            }
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
        }
    }
    for (name, (dp, task, _)) in std::mem::take(&mut dataplanes.running) {
        task.abort();
        let _ = tokio::task::spawn_blocking(move || dp.stop()).await;
        tracing::info!(gateway = %name, "dataplane stopped");
    }
    Ok(())
}

async fn reload(
    opts: &RunOptions,
    report: &Arc<Mutex<StatusReport>>,
    publisher: &mut Publisher,
    dataplanes: &mut LocalDataplanes,
    previous_secrets: &mut BTreeMap<Key, Vec<(String, u64)>>,
    last_secrets: &mut BTreeMap<Key, String>,
) {
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
        cds_address: String::new(),
        previous_secrets: BTreeMap::new(),
    };
    let mut rendered = render(&objects, &ctx);
    // A rotated secret stays valid for as long as credentials issued under it may live.
    let mut rotated = false;
    for class in objects.gateway_classes.values() {
        if let Ok(p) = crate::render::resolve_params(&objects, class, &ctx)
            && let Some(secret) = p.auth.secret.clone()
            && let Some(old) = last_secrets.insert(p.key.clone(), secret.clone())
            && old != secret
        {
            previous_secrets
                .entry(p.key.clone())
                .or_default()
                .push((old, now_unix + p.max_ttl_secs));
            rotated = true;
            tracing::info!(config = %key_string(&p.key), "auth secret rotated; the previous one stays valid for maxTTL");
        }
    }
    for v in previous_secrets.values_mut() {
        v.retain(|(_, until)| *until > now_unix);
    }
    if rotated || previous_secrets.values().any(|v| !v.is_empty()) {
        ctx.previous_secrets = previous_secrets
            .iter()
            .map(|(k, v)| (k.clone(), v.iter().map(|(s, _)| s.clone()).collect()))
            .collect();
        rendered = render(&objects, &ctx);
    }
    log_statuses(&rendered);
    for u in publisher.update(&rendered.configs, &rendered.held) {
        dataplanes.apply(u).await;
    }
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
            .map(|(name, cfg)| {
                let admin = dataplanes
                    .running
                    .get(name)
                    .map(|(_, _, a)| a.to_string())
                    .unwrap_or_default();
                (
                    name.clone(),
                    DataplaneReport {
                        generation: cfg.generation,
                        admin,
                    },
                )
            })
            .collect();
    }
}

async fn serve_admin(addr: SocketAddr, report: Arc<Mutex<StatusReport>>) -> Result<(), RunError> {
    use axum::routing::get;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| RunError::Admin { addr, source })?;
    let app = axum::Router::new()
        .route("/livez", get(|| async { "ok\n" }))
        .route("/readyz", get(|| async { "ok\n" }))
        .route(
            "/status",
            get(move || {
                let r = report.lock().map(|r| r.clone()).unwrap_or_default();
                async move { axum::Json(r) }
            }),
        );
    tracing::info!(%addr, "control-plane admin listening");
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "control-plane admin stopped");
        }
    });
    Ok(())
}
