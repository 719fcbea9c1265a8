//! The certificate authority behind CDS mutual TLS. The operator keeps it in a Secret;
//! standalone mode keeps it in memory.

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use turnpike_dataplane::cds::TlsIdentity;

pub struct CertificateAuthority {
    issuer: CertifiedIssuer<'static, KeyPair>,
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
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate()?)?;
        Ok(CertificateAuthority { issuer })
    }

    pub fn ca_pem(&self) -> String {
        self.issuer.pem()
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

    /// A client identity (a dataplane or the auth service).
    pub fn issue_client(&self, cn: &str) -> Result<TlsIdentity, CaError> {
        self.issue(cn, &[], ExtendedKeyUsagePurpose::ClientAuth)
    }
}
