//! The CDS server side: the CA and the QUIC server publishing snapshots.

pub mod ca;
pub mod server;

pub use ca::{AUTH_SERVICE_CN, CertificateAuthority, dataplane_cn};
pub use server::CdsServer;
