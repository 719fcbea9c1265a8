//! The CDS server: QUIC with client certificates from our CA; every subscriber gets the
//! current snapshot of its Gateway at once and each newer one as it is published.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::watch;
use turnpike_contract::cds::report::DataplaneReport;
use turnpike_contract::cds::{
    ALL, ALPN, CdsError, ClientMessage, GatewaySnapshot, ServerMessage, TlsIdentity,
    crypto_provider, read_frame, write_frame,
};

use super::ca::AUTH_SERVICE_CN;
use crate::publish::Update;

/// Every published snapshot, by Gateway.
type Snapshots = Arc<BTreeMap<String, GatewaySnapshot>>;

/// What the dataplanes connected to this server reported, by Gateway, then by connection
/// (a Gateway with several replicas has several). A report goes when its connection does.
pub type Reports = BTreeMap<String, BTreeMap<u64, DataplaneReport>>;

/// Holds one connection's report on the board while the connection lives.
struct ReportHeld {
    board: watch::Sender<Reports>,
    gateway: String,
    connection: u64,
}

impl ReportHeld {
    fn post(board: &watch::Sender<Reports>, gateway: &str, report: DataplaneReport) -> Self {
        let connection = rand::random();
        board.send_modify(|r| {
            r.entry(gateway.to_string())
                .or_default()
                .insert(connection, report);
        });
        ReportHeld {
            board: board.clone(),
            gateway: gateway.to_string(),
            connection,
        }
    }
}

impl Drop for ReportHeld {
    fn drop(&mut self) {
        self.board.send_if_modified(|r| {
            let Some(of_gateway) = r.get_mut(&self.gateway) else {
                return false;
            };
            let removed = of_gateway.remove(&self.connection).is_some();
            if of_gateway.is_empty() {
                r.remove(&self.gateway);
            }
            removed
        });
    }
}

pub struct CdsServer {
    state: watch::Sender<Snapshots>,
    reports: watch::Sender<Reports>,
    endpoint: quinn::Endpoint,
    accept: tokio::task::JoinHandle<()>,
}

fn server_config(id: &TlsIdentity) -> Result<quinn::ServerConfig, CdsError> {
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(id.roots()?),
        crypto_provider(),
    )
    .build()
    .map_err(|e| CdsError::Tls(e.to_string()))?;
    let (chain, key) = id.chain()?;
    let mut tls = rustls::ServerConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| CdsError::Tls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| CdsError::Tls(e.to_string()))?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let quic = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
        .map_err(|e| CdsError::Tls(e.to_string()))?;
    Ok(quinn::ServerConfig::with_crypto(Arc::new(quic)))
}

impl CdsServer {
    /// Binds `addr` (UDP) and serves until dropped.
    pub fn start(addr: SocketAddr, id: &TlsIdentity) -> Result<Self, CdsError> {
        let endpoint = quinn::Endpoint::server(server_config(id)?, addr)?;
        let (state, _) = watch::channel(Snapshots::default());
        let (reports, _) = watch::channel(Reports::default());
        let epoch = rand::random();
        let rx = state.subscribe();
        let board = reports.clone();
        let accept_endpoint = endpoint.clone();
        let accept = tokio::spawn(async move {
            let endpoint = accept_endpoint;
            while let Some(incoming) = endpoint.accept().await {
                let rx = rx.clone();
                let board = board.clone();
                tokio::spawn(async move {
                    let remote = incoming.remote_address();
                    if let Err(e) = serve(incoming, rx, &board, epoch).await {
                        tracing::debug!(%remote, error = %e, "CDS session ended");
                    }
                });
            }
        });
        Ok(CdsServer {
            state,
            reports,
            endpoint,
            accept,
        })
    }

    /// The connected dataplanes' reports, current and as they change.
    pub fn reports(&self) -> watch::Receiver<Reports> {
        self.reports.subscribe()
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    /// Publishes updates to every subscriber.
    pub fn publish(&self, updates: &[Update]) {
        if updates.is_empty() {
            return;
        }
        self.state.send_modify(|s| {
            let m = Arc::make_mut(s);
            for u in updates {
                match u {
                    Update::Snapshot(snap) => {
                        m.insert(snap.config.name.clone(), (**snap).clone());
                    }
                    Update::Deleted(name) => {
                        m.remove(name);
                    }
                }
            }
        });
    }

    /// Stops accepting, closes every connection (clients keep their configs) and waits
    /// until the socket is released.
    pub async fn shutdown(self) {
        self.endpoint.close(0u32.into(), b"shutting down");
        let _ = tokio::time::timeout(std::time::Duration::from_secs(3), self.endpoint.wait_idle())
            .await;
        let _ = self.accept.await;
    }
}

/// The common name of the client certificate the TLS handshake verified.
fn peer_common_name(conn: &quinn::Connection) -> Option<String> {
    let certs = conn
        .peer_identity()?
        .downcast::<Vec<rustls_pki_types::CertificateDer<'static>>>()
        .ok()?;
    let (_, cert) = x509_parser::parse_x509_certificate(certs.first()?).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_string)
}

/// May a client whose certificate says `cn` subscribe to `gateway`?
pub fn may_subscribe(cn: Option<&str>, gateway: &str) -> bool {
    match cn {
        Some(AUTH_SERVICE_CN) => true,
        Some(cn) => cn.strip_prefix("dataplane:") == Some(gateway) && gateway != ALL,
        None => false,
    }
}

async fn serve(
    incoming: quinn::Incoming,
    mut rx: watch::Receiver<Snapshots>,
    board: &watch::Sender<Reports>,
    epoch: u64,
) -> Result<(), CdsError> {
    let conn = incoming.await?;
    let (mut send, mut recv) = conn.accept_bi().await?;
    let Some(ClientMessage::Subscribe { gateway, report }) = read_frame(&mut recv).await? else {
        return Ok(());
    };
    // Each certificate names what it may read: a dataplane only its own Gateway (whose
    // snapshot carries that Gateway's TURN secret), the auth service every Gateway.
    let cn = peer_common_name(&conn);
    if !may_subscribe(cn.as_deref(), &gateway) {
        tracing::warn!(remote = %conn.remote_address(), %gateway, client = ?cn, "CDS subscription refused: the client certificate does not cover it");
        conn.close(
            1u32.into(),
            b"subscription not allowed for this certificate",
        );
        return Ok(());
    }
    tracing::info!(remote = %conn.remote_address(), %gateway, report = ?report, "CDS subscriber");
    // Only a dataplane reports on its Gateway; the auth service (`all`) has nothing to say.
    let _held = report
        .filter(|_| gateway != ALL)
        .map(|r| ReportHeld::post(board, &gateway, r));
    let mut sent: BTreeMap<String, u64> = BTreeMap::new();
    loop {
        let snap = rx.borrow_and_update().clone();
        for (name, g) in snap
            .iter()
            .filter(|(n, _)| gateway == ALL || **n == gateway)
        {
            let generation = g.config.generation;
            if sent.get(name) != Some(&generation) {
                write_frame(
                    &mut send,
                    &ServerMessage::Snapshot {
                        epoch,
                        generation,
                        config: Box::new(g.config.clone()),
                        // Only the auth service (an `all` subscriber) gets JWT settings.
                        auth: if gateway == ALL { g.auth.clone() } else { None },
                    },
                )
                .await?;
                sent.insert(name.clone(), generation);
            }
        }
        let gone: Vec<String> = sent
            .keys()
            .filter(|n| !snap.contains_key(*n))
            .cloned()
            .collect();
        for name in gone {
            write_frame(
                &mut send,
                &ServerMessage::Deleted {
                    gateway: name.clone(),
                },
            )
            .await?;
            sent.remove(&name);
        }
        tokio::select! {
            changed = rx.changed() => if changed.is_err() { return Ok(()) },
            _ = conn.closed() => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificates_scope_subscriptions() {
        assert!(may_subscribe(Some("auth-service"), ALL));
        assert!(may_subscribe(Some("auth-service"), "ns/gw"));
        assert!(may_subscribe(Some("dataplane:ns/gw"), "ns/gw"));
        assert!(!may_subscribe(Some("dataplane:ns/gw"), "ns/other"));
        assert!(!may_subscribe(Some("dataplane:ns/gw"), ALL));
        assert!(!may_subscribe(Some("dataplane:all"), ALL));
        assert!(!may_subscribe(Some("test"), "ns/gw"));
        assert!(!may_subscribe(None, "ns/gw"));
    }
}
