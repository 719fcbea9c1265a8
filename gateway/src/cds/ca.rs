//! The certificate authority behind CDS mutual TLS. The operator keeps it in a Secret (so a
//! restarted or second replica signs with the same CA the dataplanes trust); standalone
//! mode keeps it in memory.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use turnpike_contract::cds::TlsIdentity;

pub struct CertificateAuthority {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
}

#[derive(Debug, thiserror::Error)]
#[error("certificate generation: {0}")]
pub struct CaError(#[from] rcgen::Error);

impl CertificateAuthority {
    pub fn generate(name: &str) -> Result<Self, CaError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(CertificateAuthority {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// A CA stored earlier (certificate and private key, PEM).
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, CaError> {
        let key = KeyPair::from_pem(key_pem)?;
        Ok(CertificateAuthority {
            issuer: Issuer::from_ca_cert_pem(cert_pem, key)?,
            cert_pem: cert_pem.to_string(),
        })
    }

    pub fn ca_pem(&self) -> String {
        self.cert_pem.clone()
    }

    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    fn issue(
        &self,
        cn: &str,
        names: &[String],
        usage: ExtendedKeyUsagePurpose,
    ) -> Result<TlsIdentity, CaError> {
        let mut params = CertificateParams::new(names.to_vec())?;
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![usage];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(TlsIdentity {
            ca_pem: self.ca_pem(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// The CDS server's identity for the DNS names / IPs clients connect with.
    pub fn issue_server(&self, names: &[String]) -> Result<TlsIdentity, CaError> {
        self.issue("turnpike-cds", names, ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A client identity: `dataplane:NS/NAME` for a Gateway's dataplane, [`AUTH_SERVICE_CN`]
    /// for the auth service. The CDS server lets each subscribe only to what its name allows.
    pub fn issue_client(&self, cn: &str) -> Result<TlsIdentity, CaError> {
        self.issue(cn, &[], ExtendedKeyUsagePurpose::ClientAuth)
    }
}

/// The common name of the auth service's CDS client certificate.
pub const AUTH_SERVICE_CN: &str = "auth-service";

/// The common name of Gateway `gateway`'s dataplane certificate.
pub fn dataplane_cn(gateway: &str) -> String {
    format!("dataplane:{gateway}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_ca_signs_certificates_its_clients_trust() {
        let ca = CertificateAuthority::generate("test CA").unwrap();
        let again = CertificateAuthority::from_pem(&ca.ca_pem(), &ca.key_pem()).unwrap();
        let id = again.issue_client("dataplane:ns/gw").unwrap();
        assert_eq!(id.ca_pem, ca.ca_pem());
        // The reloaded CA's leaf chains to the original CA certificate.
        let roots = id.roots().unwrap();
        let (chain, _) = id.chain().unwrap();
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            std::sync::Arc::new(roots),
            turnpike_contract::cds::crypto_provider(),
        )
        .build()
        .unwrap();
        let now = rustls_pki_types::UnixTime::now();
        verifier
            .verify_client_cert(&chain[0], &chain[1..], now)
            .unwrap();
    }
}
