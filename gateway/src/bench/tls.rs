//! The TLS client of `--transport tls`: the system of trust is a CA file, or none at all
//! for self-signed test servers (`--insecure`, said out loud on the command line).

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use super::link::TlsClient;
use super::{BenchArgs, BenchError};

pub fn client(args: &BenchArgs) -> Result<TlsClient, BenchError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| BenchError::Tls(e.to_string()))?;
    let config = match (&args.ca, args.insecure) {
        (Some(ca), _) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(ca)
                .map_err(|e| BenchError::Tls(format!("{}: {e}", ca.display())))?
            {
                let cert = cert.map_err(|e| BenchError::Tls(format!("{}: {e}", ca.display())))?;
                roots
                    .add(cert)
                    .map_err(|e| BenchError::Tls(format!("{}: {e}", ca.display())))?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        (None, true) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth(),
        (None, false) => {
            return Err(BenchError::Invalid(
                "--transport tls needs --ca FILE or --insecure".into(),
            ));
        }
    };
    let name = ServerName::try_from(args.server_name.clone())
        .map_err(|e| BenchError::Invalid(format!("--server-name {}: {e}", args.server_name)))?;
    Ok(TlsClient {
        config: Arc::new(config),
        name,
    })
}

/// Accepts any certificate but still checks the handshake signatures, so the session is
/// a real TLS session with the server's key (only its identity is unverified).
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
