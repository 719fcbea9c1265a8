//! TURN-TLS certificates: a listener's PEM pair turned into a rustls server config, and
//! what operators (status) and the auth service (the `turns:` host) need to know of it.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use thiserror::Error;

use crate::config::TlsConfig;

#[derive(Debug, Error)]
pub enum TlsError {
    #[error("certPem holds no certificate")]
    NoCertificate,
    #[error("certPem is not valid PEM: {0}")]
    CertPem(String),
    #[error("keyPem holds no private key (PKCS#8, PKCS#1 or SEC1): {0}")]
    KeyPem(String),
    #[error("certificate and key do not belong together, or the key type is unsupported: {0}")]
    Mismatch(rustls::Error),
    #[error("certificate cannot be parsed: {0}")]
    Certificate(String),
}

/// Facts about the certificate a listener serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateInfo {
    /// Hex, as `openssl x509 -serial` prints it.
    pub serial: String,
    pub not_after_unix: i64,
    /// DNS subject alternative names, or the common name when there are none.
    pub dns_names: Vec<String>,
}

fn chain(tls: &TlsConfig) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(tls.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::CertPem(e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate);
    }
    Ok(certs)
}

/// A rustls server config for a TURN-TLS listener: TLS 1.2 and 1.3, no client
/// certificates, and no ALPN list, so clients offering `stun.turn` (RFC 7443), something
/// else, or nothing all connect.
pub fn server_config(tls: &TlsConfig) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let certs = chain(tls)?;
    let key = PrivateKeyDer::from_pem_slice(tls.key_pem.as_bytes())
        .map_err(|e| TlsError::KeyPem(e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(TlsError::Mismatch)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(TlsError::Mismatch)?;
    Ok(Arc::new(config))
}

/// Serial, expiry and names of the leaf certificate.
pub fn certificate_info(tls: &TlsConfig) -> Result<CertificateInfo, TlsError> {
    let certs = chain(tls)?;
    let (_, cert) = x509_parser::parse_x509_certificate(&certs[0])
        .map_err(|e| TlsError::Certificate(e.to_string()))?;
    let mut dns_names: Vec<String> = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_string()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    if dns_names.is_empty() {
        dns_names.extend(
            cert.subject()
                .iter_common_name()
                .filter_map(|cn| cn.as_str().ok())
                .map(str::to_string),
        );
    }
    Ok(CertificateInfo {
        serial: cert.raw_serial_as_string().replace(':', "").to_uppercase(),
        not_after_unix: cert.validity().not_after.timestamp(),
        dns_names,
    })
}

/// The name a `turns:` URI should carry: browsers check the certificate against the URI
/// host, so the first exact DNS name (a wildcard names no host).
pub fn uri_host(info: &CertificateInfo) -> Option<&str> {
    // A common name used as fallback may be any text; only a DNS name qualifies.
    let dns = |n: &str| {
        n.contains('.')
            && n.split('.').all(|label| {
                !label.is_empty() && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            })
    };
    info.dns_names.iter().map(String::as_str).find(|n| dns(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(names: &[&str]) -> TlsConfig {
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        let cert = params.self_signed(&key).unwrap();
        TlsConfig {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    #[test]
    fn a_valid_pair_builds_and_reports_its_names() {
        let tls = pair(&["turn.example.com", "*.example.com"]);
        assert!(server_config(&tls).is_ok());
        let info = certificate_info(&tls).unwrap();
        assert_eq!(info.dns_names, ["turn.example.com", "*.example.com"]);
        assert_eq!(uri_host(&info), Some("turn.example.com"));
        let only_ip = certificate_info(&pair(&["127.0.0.1"])).unwrap();
        assert_eq!(uri_host(&only_ip), None, "{only_ip:?}");
        assert!(!info.serial.is_empty());
        assert!(info.not_after_unix > 1_700_000_000);
    }

    #[test]
    fn broken_pairs_are_refused_with_a_reason() {
        let a = pair(&["a.example.com"]);
        let b = pair(&["b.example.com"]);
        let mismatched = TlsConfig {
            cert_pem: a.cert_pem.clone(),
            key_pem: b.key_pem.clone(),
        };
        assert!(matches!(
            server_config(&mismatched),
            Err(TlsError::Mismatch(_))
        ));
        let no_cert = TlsConfig {
            cert_pem: "hello".into(),
            key_pem: a.key_pem.clone(),
        };
        assert!(matches!(
            server_config(&no_cert),
            Err(TlsError::NoCertificate)
        ));
        let no_key = TlsConfig {
            cert_pem: a.cert_pem.clone(),
            key_pem: String::new(),
        };
        assert!(matches!(server_config(&no_key), Err(TlsError::KeyPem(_))));
        let mut truncated = a.cert_pem.clone();
        truncated.truncate(truncated.len() / 2);
        assert!(
            server_config(&TlsConfig {
                cert_pem: truncated,
                key_pem: a.key_pem
            })
            .is_err()
        );
    }
}
