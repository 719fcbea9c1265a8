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
use crate::config::{ConfigError, DataplaneConfig, Protocol, parse_endpoint};
use crate::io::{self, ActiveConfig, Command, ListenerRuntime, WorkerHandle, WorkerShared};
use crate::metrics::{ListenerStatus, Metrics, Status, StatusDetail};
use crate::proto::{NonceKey, UserQuota};

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
}

#[derive(Debug, Clone)]
pub struct Options {
    pub config: PathBuf,
    pub workers: usize,
    pub admin: SocketAddr,
    /// After SIGTERM, how long existing allocations may keep relaying.
    pub drain_timeout: Duration,
}

/// The runtime view of a config: what workers bind and where relays live.
pub fn activate(cfg: &DataplaneConfig) -> ActiveConfig {
    let peers: Vec<IpAddr> = cfg
        .routes
        .iter()
        .flat_map(|r| r.endpoints.iter())
        .filter_map(|e| parse_endpoint(e).ok())
        .map(|(net, _)| net.network())
        .collect();
    ActiveConfig {
        server: Arc::new(cfg.compile()),
        listeners: cfg
            .listeners
            .iter()
            .map(|l| ListenerRuntime {
                name: l.name.clone(),
                protocol: l.protocol,
                bind: l.socket_addr(),
                relay: io::relay_addrs(l.address, &peers),
            })
            .collect(),
    }
}

/// A running set of workers.
pub struct Dataplane {
    workers: Vec<WorkerHandle>,
    pub metrics: Arc<Metrics>,
    pub status: Arc<Status>,
    current: DataplaneConfig,
}

impl Dataplane {
    pub fn start(cfg: DataplaneConfig, workers: usize, source: &str) -> std::io::Result<Self> {
        let workers = workers.max(1);
        let metrics = Arc::new(Metrics::new(workers));
        let status = Arc::new(Status::default());
        let shared = WorkerShared {
            nonce: NonceKey::new(rand::random()),
            quota: Arc::new(UserQuota::default()),
            reservations: Arc::default(),
            metrics: metrics.clone(),
            status: status.clone(),
        };
        let active = Arc::new(activate(&cfg));
        publish_status(&status, &cfg, &active, source);
        let handles = (0..workers)
            .map(|i| io::spawn(i, active.clone(), shared.clone()))
            .collect::<std::io::Result<Vec<_>>>()?;
        status.applied.store(true, Relaxed);
        tracing::info!(name = %cfg.name, generation = cfg.generation, workers, "dataplane started");
        Ok(Dataplane {
            workers: handles,
            metrics,
            status,
            current: cfg,
        })
    }

    pub fn config(&self) -> &DataplaneConfig {
        &self.current
    }

    /// Applies a validated config to every worker without disturbing allocations whose
    /// listener and route remain.
    pub fn apply(&mut self, cfg: DataplaneConfig, source: &str) {
        let active = Arc::new(activate(&cfg));
        publish_status(&self.status, &cfg, &active, source);
        for w in &self.workers {
            w.send(Command::Apply(active.clone()));
        }
        self.metrics.config_reloads.fetch_add(1, Relaxed);
        tracing::info!(name = %cfg.name, generation = cfg.generation, "config applied");
        self.current = cfg;
    }

    pub fn reject(&self, err: &ConfigError) {
        self.metrics.config_reload_failures.fetch_add(1, Relaxed);
        if let Ok(mut d) = self.status.detail.lock() {
            d.last_error = Some(err.to_string());
        }
        tracing::error!(error = %err, "config refused; the previous config keeps running");
    }

    /// Stops new allocations; existing ones keep relaying.
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

fn publish_status(status: &Status, cfg: &DataplaneConfig, active: &ActiveConfig, source: &str) {
    status.generation.store(cfg.generation, Relaxed);
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
                    state: if l.protocol == Protocol::TurnUdp {
                        "serving".into()
                    } else {
                        format!(
                            "not served: {} arrives with TURN-TCP/TLS support",
                            l.protocol
                        )
                    },
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
pub async fn run(opts: Options) -> Result<(), RuntimeError> {
    let source = opts.config.display().to_string();
    let cfg = DataplaneConfig::from_file(&opts.config)?;
    match io::limits::raise_open_files() {
        Ok(n) => tracing::info!(open_files = n, "each allocation holds one relay socket"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
    }
    let mut last_text = std::fs::read_to_string(&opts.config).unwrap_or_default();
    let mut dp = Dataplane::start(cfg, opts.workers, &source).map_err(RuntimeError::Workers)?;

    let admin_state = AdminState {
        metrics: dp.metrics.clone(),
        status: dp.status.clone(),
        workers: opts.workers.max(1),
    };
    let listener = tokio::net::TcpListener::bind(opts.admin)
        .await
        .map_err(|source| RuntimeError::Admin {
            addr: opts.admin,
            source,
        })?;
    tracing::info!(addr = %opts.admin, "admin server listening");
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, admin::router(admin_state)).await {
            tracing::error!(error = %e, "admin server stopped");
        }
    });

    let (reload_tx, mut reload_rx) = mpsc::channel::<()>(1);
    let _watcher = spawn_watcher(&opts.config, reload_tx.clone())?;
    let mut hup = signal(SignalKind::hangup()).map_err(RuntimeError::Signal)?;
    let mut term = signal(SignalKind::terminate()).map_err(RuntimeError::Signal)?;
    let mut int = signal(SignalKind::interrupt()).map_err(RuntimeError::Signal)?;

    loop {
        tokio::select! {
            Some(()) = reload_rx.recv() => {
                // Editors write in several steps; let them finish.
                tokio::time::sleep(Duration::from_millis(100)).await;
                while reload_rx.try_recv().is_ok() {}
                reload(&mut dp, &opts.config, &mut last_text, &source, false);
            }
            _ = hup.recv() => reload(&mut dp, &opts.config, &mut last_text, &source, true),
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }

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
            dp.apply(cfg, source);
        }
        Err(e) => {
            *last_text = text;
            dp.reject(&e);
        }
    }
}
