//! Manifests generated from the Rust types: our CRDs. `turnpike crds` prints them; a test
//! fails when the committed `manifests/crds/` differs.

use kube::CustomResourceExt;

use crate::crd::{GatewayConfig, StaticService};

/// `(file name, YAML)` of every CRD Turnpike defines.
pub fn crds() -> Result<Vec<(&'static str, String)>, serde_yaml_ng::Error> {
    Ok(vec![
        (
            "turnpike.dev_gatewayconfigs.yaml",
            serde_yaml_ng::to_string(&GatewayConfig::crd())?,
        ),
        (
            "turnpike.dev_staticservices.yaml",
            serde_yaml_ng::to_string(&StaticService::crd())?,
        ),
    ])
}
