//! Runs a dataplane: workers on a config, the admin server, reload on file change or
//! SIGHUP, and drain on SIGTERM.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use notify::Watcher as _;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use crate::admin::{self, AdminState};
use crate::cds::client::{self, CdsClientOptions, CdsEvent};
use crate::cds::report::{DataplaneReport, PodName};
use crate::config::{ConfigError, DataplaneConfig, ValidConfig};
use crate::io::{
    self, ActiveConfig, Command, ListenerRuntime, StreamLimits, WorkerHandle, WorkerShared,
};
use crate::metrics::Metrics;
use crate::offload::{self, Kernel, OffloadMode};
use crate::proto::{NonceKey, UserQuota};
use crate::status::{CertificateStatus, ListenerStatus, OffloadStatus, Status, StatusDetail};
use crate::tls;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot start workers: {0}")]
    Workers(std::io::Error),
    #[error("admin server on {addr}: {source}")]
    Admin {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot watch {path}: {source}")]
    Watch { path: String, source: notify::Error },
    #[error("signal handler: {0}")]
    Signal(std::io::Error),
    #[error("CDS: {0}")]
    Cds(crate::cds::CdsError),
}

/// Where the dataplane's config comes from.
#[derive(Debug, Clone)]
pub enum ConfigSource {
    File(PathBuf),
    Cds(Box<CdsClientOptions>),
}

#[derive(Debug, Clone)]
pub struct Options {
    pub workers: usize,
    pub admin: SocketAddr,
    /// After SIGTERM, how long existing allocations may keep relaying.
    pub drain_timeout: Duration,
    /// Kernel offload of established channels.
    pub offload: OffloadMode,
    /// The pod this dataplane runs in, for its report to the control plane.
    pub pod: Option<PodName>,
}

/// The runtime view of a config: what workers bind and where relays live.
pub fn activate(cfg: &ValidConfig) -> ActiveConfig {
    let peers: Vec<IpAddr> = cfg
        .routes
        .iter()
        .flat_map(|r| r.endpoints.iter())
        .map(|e| e.net.network())
        .collect();
    ActiveConfig {
        server: Arc::new(crate::config::compile(cfg)),
        listeners: cfg
            .listeners
            .iter()
            .enumerate()
            .map(|(i, l)| ListenerRuntime {
                name: l.name.clone(),
                protocol: l.protocol,
                bind: l.socket_addr(),
                relay: io::relay_addrs(l.address, &peers),
                tls: cfg.tls(i).cloned(),
            })
            .collect(),
        streams: StreamLimits {
            max_connections: cfg.limits.max_connections,
            rate_per_ip: cfg.limits.max_connection_rate_per_ip,
            handshake_timeout: Duration::from_secs(cfg.limits.handshake_timeout.into()),
            idle_timeout: Duration::from_secs(cfg.limits.idle_timeout.into()),
        },
    }
}

/// A dataplane: its workers (started with the first config), metrics and status.
pub struct Dataplane {
    workers: Vec<WorkerHandle>,
    worker_count: usize,
    shared: WorkerShared,
    pub metrics: Arc<Metrics>,
    pub status: Arc<Status>,
    current: Option<ValidConfig>,
}

impl Dataplane {
    /// A dataplane that serves nothing until [`Dataplane::apply`] gives it a config; until
    /// then `/readyz` says so.
    pub fn new(workers: usize) -> Self {
        Self::with_offload(workers, OffloadMode::None)
    }

    /// As [`Dataplane::new`], relaying established channels in the kernel when `offload`
    /// asks for it and the kernel allows it; otherwise (logged, and shown in `/status` and
    /// `turnpike_offload_active`) everything is relayed in userspace.
    pub fn with_offload(workers: usize, offload: OffloadMode) -> Self {
        let worker_count = workers.max(1);
        let status = Arc::new(Status::default());
        let metrics = Arc::new(Metrics::new(worker_count, status.clone()));
        let kernel = start_offload(offload, &status);
        if let Some(k) = &kernel {
            metrics.offload.attach(k.clone());
        }
        let shared = WorkerShared {
            nonce: NonceKey::new(rand::random()),
            quota: Arc::new(UserQuota::default()),
            reservations: Arc::default(),
            admission: Arc::new(io::Admission::new(rand::random())),
            metrics: metrics.clone(),
            status: status.clone(),
            offload: kernel,
        };
        Dataplane {
            workers: Vec::new(),
            worker_count,
            shared,
            metrics,
            status,
            current: None,
        }
    }

    /// A dataplane running `cfg`.
    pub fn start(cfg: ValidConfig, workers: usize, source: &str) -> std::io::Result<Self> {
        let mut dp = Self::new(workers);
        dp.apply(cfg, source)?;
        Ok(dp)
    }

    pub fn config(&self) -> Option<&DataplaneConfig> {
        self.current.as_ref().map(ValidConfig::config)
    }

    /// Applies a validated config: the first starts the workers; later ones reach every
    /// worker without disturbing allocations whose listener and route remain.
    pub fn apply(&mut self, cfg: ValidConfig, source: &str) -> std::io::Result<()> {
        let active = Arc::new(activate(&cfg));
        publish_status(&self.status, &cfg, &active, source);
        if self.workers.is_empty() {
            self.workers = (0..self.worker_count)
                .map(|i| io::spawn(i, active.clone(), self.shared.clone()))
                .collect::<std::io::Result<Vec<_>>>()?;
            self.status.applied.store(true, Relaxed);
            tracing::info!(event = "config_applied", name = %cfg.name, generation = cfg.generation, workers = self.worker_count, "dataplane started");
        } else {
            for w in &self.workers {
                w.send(Command::Apply(active.clone()));
            }
            self.metrics.config_reloads.inc();
            tracing::info!(event = "config_applied", name = %cfg.name, generation = cfg.generation, "config applied");
        }
        self.current = Some(cfg);
        Ok(())
    }

    pub fn reject(&self, err: &ConfigError) {
        self.metrics.config_reload_failures.inc();
        if let Ok(mut d) = self.status.detail.lock() {
            d.last_error = Some(err.to_string());
        }
        tracing::error!(event = "config_refused", error = %err, "config refused; the previous config keeps running");
    }

    /// Stops new allocations; existing ones keep relaying.
    /// What this dataplane tells the control plane about itself when it subscribes.
    pub fn report(&self, pod: Option<PodName>) -> DataplaneReport {
        DataplaneReport {
            pod,
            offload: self
                .status
                .offload
                .lock()
                .map(|o| o.clone())
                .unwrap_or_default(),
        }
    }

    pub fn begin_drain(&self) {
        self.status.draining.store(true, Relaxed);
        for w in &self.workers {
            w.send(Command::Drain);
        }
    }

    /// Stops every worker and waits for their threads.
    pub fn stop(self) {
        for w in &self.workers {
            w.send(Command::Stop);
        }
        for w in self.workers {
            w.join();
        }
    }
}

/// Loads and attaches the kernel relay when `mode` asks for it.
fn start_offload(mode: OffloadMode, status: &Status) -> Option<Arc<Kernel>> {
    let mut shown = OffloadStatus {
        requested: mode.to_string(),
        active: OffloadMode::None.to_string(),
        ..OffloadStatus::default()
    };
    let kernel = if mode == OffloadMode::None {
        None
    } else {
        match Kernel::load(mode, &offload::default_interfaces()) {
            Ok(k) => {
                let a = k.attached();
                tracing::info!(mode = %a.mode, interfaces = ?a.interfaces, "kernel offload attached");
                for w in &a.warnings {
                    tracing::warn!(warning = %w, "kernel offload limited");
                }
                shown.active = a.mode.to_string();
                shown.interfaces = a.interfaces.clone();
                shown.warnings = a.warnings.clone();
                Some(Arc::new(k))
            }
            Err(e) => {
                if mode == OffloadMode::Auto {
                    tracing::info!(reason = %e, "kernel offload unavailable; relaying in userspace");
                } else {
                    tracing::warn!(reason = %e, "kernel offload unavailable; relaying in userspace");
                }
                shown.reason = Some(e.to_string());
                None
            }
        }
    };
    if let Ok(mut o) = status.offload.lock() {
        *o = shown;
    }
    kernel
}

fn publish_status(status: &Status, cfg: &DataplaneConfig, active: &ActiveConfig, source: &str) {
    status.generation.store(cfg.generation, Relaxed);
    // A config file has no control plane: what it holds is what was received.
    status
        .received_generation
        .fetch_max(cfg.generation, Relaxed);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    status.applied_at.store(now, Relaxed);
    if let Ok(mut d) = status.detail.lock() {
        *d = StatusDetail {
            name: cfg.name.clone(),
            config_source: source.to_string(),
            last_error: None,
            listeners: cfg
                .listeners
                .iter()
                .zip(&active.listeners)
                .map(|(l, rt)| ListenerStatus {
                    name: l.name.clone(),
                    protocol: l.protocol.to_string(),
                    address: l.socket_addr().to_string(),
                    relay_addresses: [rt.relay.v4, rt.relay.v6]
                        .into_iter()
                        .flatten()
                        .map(|ip| ip.to_string())
                        .collect(),
                    routes: l.routes.clone(),
                    state: match (&l.tls, &rt.tls) {
                        (Some(_), None) => "error: the TLS certificate cannot be used".into(),
                        _ => "serving".into(),
                    },
                    certificate: l
                        .tls
                        .as_ref()
                        .and_then(|t| tls::certificate_info(t).ok())
                        .inspect(|i| {
                            tracing::info!(
                                event = "certificate_loaded",
                                listener = %l.name,
                                serial = %i.serial,
                                not_after = i.not_after_unix,
                                dns_names = ?i.dns_names,
                                "certificate loaded"
                            );
                        })
                        .map(|i| CertificateStatus {
                            serial: i.serial,
                            not_after: i.not_after_unix,
                            dns_names: i.dns_names,
                        }),
                })
                .collect(),
        };
    }
}

fn spawn_watcher(
    path: &Path,
    tx: mpsc::Sender<()>,
) -> Result<notify::RecommendedWatcher, RuntimeError> {
    let name = path.file_name().map(|n| n.to_os_string());
    let mut w = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        if let Ok(ev) = ev {
            // Kubernetes ConfigMap updates swap a symlink: react to any change in the
            // directory that touches our file name or the `..data` link.
            let relevant = ev.paths.iter().any(|p| {
                p.file_name().is_some_and(|f| {
                    Some(f.to_os_string()) == name || f.to_string_lossy().starts_with("..")
                })
            });
            if relevant {
                let _ = tx.try_send(());
            }
        }
    })
    .map_err(|source| RuntimeError::Watch {
        path: path.display().to_string(),
        source,
    })?;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    w.watch(dir, notify::RecursiveMode::NonRecursive)
        .map_err(|source| RuntimeError::Watch {
            path: dir.display().to_string(),
            source,
        })?;
    Ok(w)
}

/// `turnpike dataplane --config FILE`: runs until SIGTERM/SIGINT and a completed drain.
/// Serves the admin API of `dp` on `addr` in the background.
async fn spawn_admin(dp: &Dataplane, addr: SocketAddr, workers: usize) -> Result<(), RuntimeError> {
    let state = AdminState {
        metrics: dp.metrics.clone(),
        status: dp.status.clone(),
        workers,
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| RuntimeError::Admin { addr, source })?;
    tracing::info!(%addr, "admin server listening");
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, admin::router(state)).await {
            tracing::error!(error = %e, "admin server stopped");
        }
    });
    Ok(())
}

/// Applies one CDS event to `dp`. Returns false when the Gateway was deleted.
pub fn apply_cds_event(dp: &mut Dataplane, event: CdsEvent, source: &str) -> bool {
    match event {
        CdsEvent::Snapshot(snap) => {
            dp.status
                .received_generation
                .store(snap.config.generation, Relaxed);
            match snap.config.validate() {
                Ok(valid) => {
                    if let Err(e) = dp.apply(valid, source) {
                        tracing::error!(error = %e, "cannot apply config");
                    }
                }
                Err(e) => dp.reject(&e),
            }
        }
        CdsEvent::Deleted(name) => {
            tracing::warn!(gateway = %name, "the control plane deleted this Gateway");
            return false;
        }
        CdsEvent::Connected => dp.status.set_cds_connected(true),
        CdsEvent::Disconnected(_) => dp.status.set_cds_connected(false),
    }
    true
}

/// `turnpike dataplane --config FILE` or `--cds ADDR --gateway NS/NAME`: runs until
/// SIGTERM/SIGINT and a completed drain.
pub async fn run(opts: Options, source: ConfigSource) -> Result<(), RuntimeError> {
    match io::limits::raise_open_files() {
        Ok(n) => tracing::info!(open_files = n, "each allocation holds one relay socket"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
    }
    let workers = opts.workers.max(1);
    let mut hup = signal(SignalKind::hangup()).map_err(RuntimeError::Signal)?;
    let mut term = signal(SignalKind::terminate()).map_err(RuntimeError::Signal)?;
    let mut int = signal(SignalKind::interrupt()).map_err(RuntimeError::Signal)?;

    let dp = match source {
        ConfigSource::File(path) => {
            let name = path.display().to_string();
            let cfg = DataplaneConfig::from_file(&path)?;
            let mut last_text = std::fs::read_to_string(&path).unwrap_or_default();
            let mut dp = Dataplane::with_offload(workers, opts.offload);
            dp.apply(cfg, &name).map_err(RuntimeError::Workers)?;
            spawn_admin(&dp, opts.admin, workers).await?;
            let (reload_tx, mut reload_rx) = mpsc::channel::<()>(1);
            let _watcher = spawn_watcher(&path, reload_tx)?;
            loop {
                tokio::select! {
                    Some(()) = reload_rx.recv() => {
                        // Editors write in several steps; let them finish.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        while reload_rx.try_recv().is_ok() {}
                        reload(&mut dp, &path, &mut last_text, &name, false);
                    }
                    _ = hup.recv() => reload(&mut dp, &path, &mut last_text, &name, true),
                    _ = term.recv() => break,
                    _ = int.recv() => break,
                }
            }
            dp
        }
        ConfigSource::Cds(mut cds) => {
            let mut dp = Dataplane::with_offload(workers, opts.offload);
            cds.report = Some(dp.report(opts.pod.clone()));
            spawn_admin(&dp, opts.admin, workers).await?;
            let name = format!("cds {}", cds.server);
            let mut events = client::subscribe(*cds).map_err(RuntimeError::Cds)?;
            loop {
                tokio::select! {
                    ev = events.recv() => match ev {
                        Some(ev) => if !apply_cds_event(&mut dp, ev, &name) { break },
                        None => break,
                    },
                    _ = term.recv() => break,
                    _ = int.recv() => break,
                }
            }
            dp
        }
    };

    tracing::info!(timeout = ?opts.drain_timeout, allocations = dp.metrics.active_allocations(), "draining");
    dp.begin_drain();
    let deadline = tokio::time::Instant::now() + opts.drain_timeout;
    // Workers publish their allocation count once a second.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    while dp.metrics.active_allocations() > 0 && tokio::time::Instant::now() < deadline {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    tracing::info!(allocations = dp.metrics.active_allocations(), "stopping");
    let _ = tokio::task::spawn_blocking(move || dp.stop()).await;
    Ok(())
}

fn reload(dp: &mut Dataplane, path: &Path, last_text: &mut String, source: &str, forced: bool) {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            dp.reject(&ConfigError::Read {
                path: path.display().to_string(),
                source: e,
            });
            return;
        }
    };
    if !forced && text == *last_text {
        return;
    }
    match DataplaneConfig::parse(&text) {
        Ok(cfg) => {
            *last_text = text;
            if let Err(e) = dp.apply(cfg, source) {
                tracing::error!(error = %e, "cannot apply the new config");
            }
        }
        Err(e) => {
            *last_text = text;
            dp.reject(&e);
        }
    }
}
