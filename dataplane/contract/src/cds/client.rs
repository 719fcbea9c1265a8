//! The CDS client: subscribes to one Gateway (or `all`), reconnects with backoff, and hands
//! every snapshot to its owner. The owner keeps the last good config across disconnects.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::mpsc;

use super::report::DataplaneReport;
use super::{
    CdsError, ClientMessage, GatewaySnapshot, ServerMessage, TlsFiles, TlsIdentity, client_config,
    read_frame, write_frame,
};

#[derive(Debug, Clone)]
pub struct CdsClientOptions {
    pub server: SocketAddr,
    /// The name in the server's certificate (e.g. the CDS Service's DNS name).
    pub server_name: String,
    pub tls: TlsIdentity,
    /// Re-read before every reconnect, so a reissued certificate (a new CA after its
    /// Secret was lost) is picked up without a restart. `None` in-process.
    pub tls_files: Option<TlsFiles>,
    /// `namespace/name` of a Gateway, or [`super::ALL`].
    pub gateway: String,
    /// A dataplane's facts about itself, sent with every subscription.
    pub report: Option<DataplaneReport>,
}

/// What the client reports to its owner.
#[derive(Debug, Clone, PartialEq)]
pub enum CdsEvent {
    Connected,
    /// A new config (never an older one than already delivered for this server epoch).
    Snapshot(Box<GatewaySnapshot>),
    Deleted(String),
    Disconnected(String),
}

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Starts the client task; events arrive on the returned channel until it is dropped.
pub fn subscribe(opts: CdsClientOptions) -> Result<mpsc::Receiver<CdsEvent>, CdsError> {
    let config = client_config(&opts.tls)?;
    let bind: SocketAddr = if opts.server.is_ipv6() {
        "[::]:0"
            .parse()
            .map_err(|_| CdsError::Tls("bind address".into()))?
    } else {
        "0.0.0.0:0"
            .parse()
            .map_err(|_| CdsError::Tls("bind address".into()))?
    };
    let mut endpoint = quinn::Endpoint::client(bind)?;
    endpoint.set_default_client_config(config);
    let (tx, rx) = mpsc::channel(16);
    let mut identity = opts.tls.clone();
    tokio::spawn(async move {
        let mut backoff = BACKOFF_MIN;
        // Per Gateway: (server epoch, generation) of the last delivered snapshot.
        let mut seen: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        loop {
            let result = session(&endpoint, &opts, &tx, &mut seen, &mut backoff).await;
            if tx.is_closed() {
                return;
            }
            let reason = match result {
                Ok(()) => "server closed the stream".to_string(),
                Err(e) => e.to_string(),
            };
            tracing::warn!(server = %opts.server, error = %reason, retry_in = ?backoff, "CDS disconnected; keeping the last good config");
            if tx.send(CdsEvent::Disconnected(reason)).await.is_err() {
                return;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
            if let Some(files) = &opts.tls_files {
                reload(&mut endpoint, files, &mut identity);
            }
        }
    });
    Ok(rx)
}

/// Uses the certificate files' current content when it changed and is usable; a broken
/// or half-written replacement keeps the identity in use.
fn reload(endpoint: &mut quinn::Endpoint, files: &TlsFiles, identity: &mut TlsIdentity) {
    let fresh = match files.load() {
        Ok(f) if f == *identity => return,
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(error = %e, "CDS certificate files unreadable; keeping the loaded ones");
            return;
        }
    };
    match client_config(&fresh) {
        Ok(config) => {
            endpoint.set_default_client_config(config);
            *identity = fresh;
            tracing::info!("CDS client certificate reloaded from its files");
        }
        Err(e) => {
            tracing::warn!(error = %e, "new CDS certificate files refused; keeping the loaded ones");
        }
    }
}

async fn session(
    endpoint: &quinn::Endpoint,
    opts: &CdsClientOptions,
    tx: &mpsc::Sender<CdsEvent>,
    seen: &mut BTreeMap<String, (u64, u64)>,
    backoff: &mut Duration,
) -> Result<(), CdsError> {
    let conn = endpoint.connect(opts.server, &opts.server_name)?.await?;
    let (mut send, mut recv) = conn.open_bi().await.map_err(CdsError::Connection)?;
    write_frame(
        &mut send,
        &ClientMessage::Subscribe {
            gateway: opts.gateway.clone(),
            report: opts.report.clone(),
        },
    )
    .await?;
    *backoff = BACKOFF_MIN;
    tracing::info!(server = %opts.server, gateway = %opts.gateway, "CDS connected");
    let _ = tx.send(CdsEvent::Connected).await;
    while let Some(msg) = read_frame::<_, ServerMessage>(&mut recv).await? {
        let event = match msg {
            ServerMessage::Snapshot {
                epoch,
                generation,
                config,
                auth,
            } => {
                let stale = seen
                    .get(&config.name)
                    .is_some_and(|(e, g)| *e == epoch && *g >= generation);
                if stale {
                    continue;
                }
                seen.insert(config.name.clone(), (epoch, generation));
                let mut config = *config;
                config.generation = generation;
                CdsEvent::Snapshot(Box::new(GatewaySnapshot { config, auth }))
            }
            ServerMessage::Deleted { gateway } => {
                seen.remove(&gateway);
                CdsEvent::Deleted(gateway)
            }
        };
        if tx.send(event).await.is_err() {
            return Ok(());
        }
    }
    Ok(())
}
