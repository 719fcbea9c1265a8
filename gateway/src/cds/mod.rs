//! The CDS server side: the CA and the QUIC server publishing snapshots.

pub mod ca;
pub mod server;

pub use ca::CertificateAuthority;
pub use server::CdsServer;
