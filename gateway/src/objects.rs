//! The objects the renderer reads, whatever their source (a directory of YAML or the
//! Kubernetes API). Ordered maps keep every output deterministic.

use std::collections::BTreeMap;

use gateway_api::experimental::udproutes::UdpRoute;
use gateway_api::gatewayclasses::GatewayClass;
use gateway_api::gateways::Gateway;
use gateway_api::referencegrants::ReferenceGrant;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Resource;

use crate::crd::{GatewayConfig, StaticService};

/// `(namespace, name)` of a namespaced object.
pub type Key = (String, String);

pub fn key_of<K: Resource>(o: &K) -> Key {
    let m = o.meta();
    (
        m.namespace.clone().unwrap_or_else(|| "default".into()),
        m.name.clone().unwrap_or_default(),
    )
}

pub fn key_string(k: &Key) -> String {
    format!("{}/{}", k.0, k.1)
}

#[derive(Debug, Clone, Default)]
pub struct ObjectSet {
    /// Cluster-scoped: keyed by name.
    pub gateway_classes: BTreeMap<String, GatewayClass>,
    pub gateway_configs: BTreeMap<Key, GatewayConfig>,
    pub gateways: BTreeMap<Key, Gateway>,
    pub udp_routes: BTreeMap<Key, UdpRoute>,
    pub services: BTreeMap<Key, Service>,
    pub endpoint_slices: BTreeMap<Key, EndpointSlice>,
    pub static_services: BTreeMap<Key, StaticService>,
    pub secrets: BTreeMap<Key, Secret>,
    pub reference_grants: BTreeMap<Key, ReferenceGrant>,
    /// Cluster-scoped, keyed by name: their labels, for listeners' `allowedRoutes`
    /// namespace selectors.
    pub namespaces: BTreeMap<String, Namespace>,
    /// The managed dataplane Deployments as they are in the cluster (operator only): a
    /// Deployment keeps the image it was created with unless GatewayConfig names one, so
    /// an operator upgrade never rolls the dataplanes.
    pub deployments: BTreeMap<Key, Deployment>,
}

impl ObjectSet {
    /// The labels of namespace `ns`, with the `kubernetes.io/metadata.name` label the API
    /// server sets on every namespace (also for a namespace no YAML file declares).
    pub fn namespace_labels(&self, ns: &str) -> BTreeMap<String, String> {
        let mut labels = self
            .namespaces
            .get(ns)
            .and_then(|n| n.metadata.labels.clone())
            .unwrap_or_default();
        labels.insert("kubernetes.io/metadata.name".into(), ns.into());
        labels
    }

    /// The value of `key` in Secret `ns/name` (from `data`, or `stringData` as written in
    /// a YAML file).
    pub fn secret_value(&self, ns: &str, name: &str, key: &str) -> Option<String> {
        let s = self.secrets.get(&(ns.to_string(), name.to_string()))?;
        if let Some(v) = s.data.as_ref().and_then(|d| d.get(key)) {
            return String::from_utf8(v.0.clone()).ok();
        }
        s.string_data.as_ref().and_then(|d| d.get(key)).cloned()
    }

    /// Every key/value of Secret `ns/name`.
    pub fn secret_entries(&self, ns: &str, name: &str) -> Option<BTreeMap<String, String>> {
        let s = self.secrets.get(&(ns.to_string(), name.to_string()))?;
        let mut out = BTreeMap::new();
        for (k, v) in s.data.iter().flatten() {
            if let Ok(v) = String::from_utf8(v.0.clone()) {
                out.insert(k.clone(), v);
            }
        }
        for (k, v) in s.string_data.iter().flatten() {
            out.insert(k.clone(), v.clone());
        }
        Some(out)
    }
}
