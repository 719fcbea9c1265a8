//! CDS, the config discovery service (DESIGN.md §4): QUIC with mutual TLS, ALPN
//! `turnpike-cds/1`. A client opens one bidirectional stream, sends `Subscribe`, then reads
//! length-prefixed JSON messages: a full `Snapshot` whenever its Gateway's config changes,
//! or `Deleted`. A dataplane's `Subscribe` carries its [`report::DataplaneReport`]. The wire types and the client live here, with the config they carry.

pub mod client;
pub mod report;

use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::config::DataplaneConfig;

pub const ALPN: &[u8] = b"turnpike-cds/1";
pub const DEFAULT_PORT: u16 = 13478;
/// Subscribing to this name gets every Gateway (the auth service does).
pub const ALL: &str = "all";
/// Largest message accepted (a config with thousands of endpoints fits easily).
const MAX_FRAME: u32 = 16 << 20;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ClientMessage {
    Subscribe {
        gateway: String,
        /// Absent from auth-service subscriptions and from dataplanes older than it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        report: Option<report::DataplaneReport>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ServerMessage {
    /// `epoch` changes when the control plane restarts, so a client can tell a restarted
    /// server's generation 1 from an old snapshot. `auth` goes to `all` subscribers (the
    /// auth service) only: dataplanes never see JWT keys.
    Snapshot {
        epoch: u64,
        generation: u64,
        config: Box<DataplaneConfig>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        auth: Option<AuthServiceConfig>,
    },
    Deleted {
        gateway: String,
    },
}

/// What the auth service needs of a Gateway beyond its dataplane config (from the
/// GatewayConfig of its class).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthServiceConfig {
    /// Default credential lifetime, seconds.
    pub ttl: u64,
    /// Longest lifetime a caller may ask for, seconds.
    pub max_ttl: u64,
    #[serde(default)]
    pub allow_anonymous: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt: Option<JwtConfig>,
}

/// How callers of the auth service authenticate: HS256 with `hmacSecret`, or RS256/ES256
/// with `publicKeyPem`.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JwtConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hmac_secret: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key_pem: Option<String>,
}

impl std::fmt::Debug for JwtConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtConfig")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field(
                "hmac_secret",
                &self.hmac_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("public_key_pem", &self.public_key_pem.is_some())
            .finish()
    }
}

/// One Gateway as published: its dataplane config and, for the auth service, its auth
/// settings.
#[derive(Debug, Clone, PartialEq)]
pub struct GatewaySnapshot {
    pub config: DataplaneConfig,
    pub auth: Option<AuthServiceConfig>,
}

#[derive(Debug, thiserror::Error)]
pub enum CdsError {
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("frame of {0} bytes is larger than allowed")]
    FrameTooLarge(u32),
    #[error("malformed message: {0}")]
    Decode(#[from] serde_json::Error),
    #[error("TLS setup: {0}")]
    Tls(String),
    #[error("QUIC connect: {0}")]
    Connect(#[from] quinn::ConnectError),
    #[error("QUIC connection: {0}")]
    Connection(#[from] quinn::ConnectionError),
}

pub async fn write_frame<W: AsyncWrite + Unpin, T: Serialize>(
    w: &mut W,
    msg: &T,
) -> Result<(), CdsError> {
    let body = serde_json::to_vec(msg)?;
    let len = u32::try_from(body.len()).map_err(|_| CdsError::FrameTooLarge(u32::MAX))?;
    if len > MAX_FRAME {
        return Err(CdsError::FrameTooLarge(len));
    }
    w.write_all(&len.to_be_bytes()).await?;
    w.write_all(&body).await?;
    Ok(())
}

/// Reads one frame; `Ok(None)` at a clean end of stream.
pub async fn read_frame<R: AsyncRead + Unpin, T: DeserializeOwned>(
    r: &mut R,
) -> Result<Option<T>, CdsError> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_be_bytes(len);
    if len > MAX_FRAME {
        return Err(CdsError::FrameTooLarge(len));
    }
    let mut body = vec![0u8; len as usize];
    r.read_exact(&mut body).await?;
    Ok(Some(serde_json::from_slice(&body)?))
}

/// PEM material for one side of the mutual TLS.
#[derive(Clone, PartialEq, Eq)]
pub struct TlsIdentity {
    /// The CA that signs both sides.
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsIdentity(<redacted>)")
    }
}

/// Where a [`TlsIdentity`] was read from: a mounted Secret, whose files the kubelet
/// replaces when the operator reissues them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca: std::path::PathBuf,
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

impl TlsFiles {
    pub fn load(&self) -> Result<TlsIdentity, CdsError> {
        TlsIdentity::from_files(&self.ca, &self.cert, &self.key)
    }
}

impl TlsIdentity {
    pub fn from_files(
        ca: &std::path::Path,
        cert: &std::path::Path,
        key: &std::path::Path,
    ) -> Result<Self, CdsError> {
        let read = |p: &std::path::Path| {
            std::fs::read_to_string(p).map_err(|e| CdsError::Tls(format!("{}: {e}", p.display())))
        };
        Ok(TlsIdentity {
            ca_pem: read(ca)?,
            cert_pem: read(cert)?,
            key_pem: read(key)?,
        })
    }

    pub fn roots(&self) -> Result<rustls::RootCertStore, CdsError> {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(self.ca_pem.as_bytes()) {
            let c = c.map_err(|e| CdsError::Tls(format!("CA certificate: {e}")))?;
            roots
                .add(c)
                .map_err(|e| CdsError::Tls(format!("CA certificate: {e}")))?;
        }
        if roots.is_empty() {
            return Err(CdsError::Tls("no CA certificate".into()));
        }
        Ok(roots)
    }

    pub fn chain(
        &self,
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), CdsError> {
        let chain = CertificateDer::pem_slice_iter(self.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| CdsError::Tls(format!("certificate: {e}")))?;
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes())
            .map_err(|e| CdsError::Tls(format!("private key: {e}")))?;
        Ok((chain, key))
    }
}

pub fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The QUIC client configuration: trusts only the CDS CA and presents our certificate.
pub fn client_config(id: &TlsIdentity) -> Result<quinn::ClientConfig, CdsError> {
    let (chain, key) = id.chain()?;
    let mut tls = rustls::ClientConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| CdsError::Tls(e.to_string()))?
        .with_root_certificates(id.roots()?)
        .with_client_auth_cert(chain, key)
        .map_err(|e| CdsError::Tls(e.to_string()))?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|e| CdsError::Tls(e.to_string()))?;
    let mut cfg = quinn::ClientConfig::new(Arc::new(quic));
    let mut transport = quinn::TransportConfig::default();
    // Notice a dead server quickly and keep idle connections alive through NATs.
    transport.keep_alive_interval(Some(std::time::Duration::from_secs(2)));
    if let Ok(idle) = quinn::IdleTimeout::try_from(std::time::Duration::from_secs(6)) {
        transport.max_idle_timeout(Some(idle));
    }
    cfg.transport_config(Arc::new(transport));
    Ok(cfg)
}
