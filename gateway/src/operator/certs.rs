//! CDS certificates in Kubernetes: the CA in a Secret of the operator's namespace (created
//! once, shared by every replica and every restart, so the dataplanes keep trusting the
//! CDS server), and one client-certificate Secret per Gateway (mounted by its dataplane
//! pods) plus one for the auth service.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Api;
use kube::api::PostParams;

use crate::cds::CertificateAuthority;
use crate::cds::ca::CaError;
use crate::render::{MANAGED_BY, MANAGED_BY_LABEL};

pub const CA_SECRET: &str = "turnpike-cds-ca";
pub const AUTH_CDS_SECRET: &str = "turnpike-auth-cds";
/// Records which client identity a certificate Secret holds.
const IDENTITY_ANNOTATION: &str = "turnpike.dev/cds-identity";

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("Secret {0}: {1}")]
    Api(String, kube::Error),
    #[error("Secret {0} does not hold a usable CA (tls.crt, tls.key): {1}")]
    BadCa(String, String),
    #[error(transparent)]
    Generate(#[from] CaError),
}

fn value(s: &Secret, key: &str) -> Option<String> {
    s.data
        .as_ref()
        .and_then(|d| d.get(key))
        .and_then(|v| String::from_utf8(v.0.clone()).ok())
}

/// The CDS CA from Secret `ns/turnpike-cds-ca`, created on first start. Two replicas
/// starting at once both try; the API server lets exactly one create win and the other
/// reads the winner's.
pub async fn load_or_create_ca(
    client: &kube::Client,
    ns: &str,
) -> Result<CertificateAuthority, CertError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let name = format!("{ns}/{CA_SECRET}");
    loop {
        match api.get_opt(CA_SECRET).await {
            Ok(Some(s)) => {
                let (Some(cert), Some(key)) = (value(&s, "tls.crt"), value(&s, "tls.key")) else {
                    return Err(CertError::BadCa(name, "missing keys".into()));
                };
                return CertificateAuthority::from_pem(&cert, &key)
                    .map_err(|e| CertError::BadCa(name, e.to_string()));
            }
            Ok(None) => {}
            Err(e) => return Err(CertError::Api(name, e)),
        }
        let ca = CertificateAuthority::generate("turnpike CDS CA")?;
        let secret = tls_secret(
            CA_SECRET,
            ns,
            &ca.ca_pem(),
            &ca.ca_pem(),
            &ca.key_pem(),
            None,
            None,
        );
        match api.create(&PostParams::default(), &secret).await {
            Ok(_) => {
                tracing::info!(secret = %name, "created the CDS certificate authority");
                return Ok(ca);
            }
            Err(kube::Error::Api(e)) if e.code == 409 => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(CertError::Api(name, e)),
        }
    }
}

/// Name, namespace and our managed-by label: every Secret the operator writes has them.
pub fn managed_secret_meta(name: &str, ns: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some(ns.into()),
        labels: Some(BTreeMap::from([(
            MANAGED_BY_LABEL.to_string(),
            MANAGED_BY.to_string(),
        )])),
        ..Default::default()
    }
}

fn tls_secret(
    name: &str,
    ns: &str,
    ca: &str,
    cert: &str,
    key: &str,
    identity: Option<&str>,
    owner: Option<OwnerReference>,
) -> Secret {
    let data = BTreeMap::from([
        ("ca.crt".to_string(), ByteString(ca.as_bytes().to_vec())),
        ("tls.crt".to_string(), ByteString(cert.as_bytes().to_vec())),
        ("tls.key".to_string(), ByteString(key.as_bytes().to_vec())),
    ]);
    Secret {
        metadata: ObjectMeta {
            annotations: identity
                .map(|i| BTreeMap::from([(IDENTITY_ANNOTATION.to_string(), i.to_string())])),
            owner_references: owner.map(|o| vec![o]),
            ..managed_secret_meta(name, ns)
        },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(data),
        ..Default::default()
    }
}

/// A fresh client-certificate Secret for `identity`.
pub fn client_secret(
    ca: &CertificateAuthority,
    name: &str,
    ns: &str,
    identity: &str,
    owner: Option<OwnerReference>,
) -> Result<Secret, CaError> {
    let id = ca.issue_client(identity)?;
    Ok(tls_secret(
        name,
        ns,
        &id.ca_pem,
        &id.cert_pem,
        &id.key_pem,
        Some(identity),
        owner,
    ))
}

/// Is `existing` a client certificate for `identity` from this CA? Then it is kept: the
/// pods that mount it need no change.
pub fn client_secret_current(existing: &Secret, ca: &CertificateAuthority, identity: &str) -> bool {
    let annotated = existing
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(IDENTITY_ANNOTATION))
        .is_some_and(|i| i == identity);
    annotated
        && value(existing, "ca.crt").is_some_and(|c| c == ca.ca_pem())
        && value(existing, "tls.crt").is_some()
        && value(existing, "tls.key").is_some()
}
