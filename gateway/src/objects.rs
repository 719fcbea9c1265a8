//! The objects the renderer reads, whatever their source (a directory of YAML or the
//! Kubernetes API). Ordered maps keep every output deterministic.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use gateway_api::experimental::udproutes::UdpRoute;
use gateway_api::gatewayclasses::GatewayClass;
use gateway_api::gateways::Gateway;
use gateway_api::referencegrants::ReferenceGrant;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Resource;

use crate::crd::{GatewayConfig, StaticService};

/// The namespace and name of a namespaced object; written `namespace/name` (also on the
/// wire: CDS subscribes to Gateways by it).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ObjectKey {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// Parses `namespace/name`.
    pub fn parse(s: &str) -> Option<Self> {
        let (namespace, name) = s.split_once('/')?;
        (!namespace.is_empty() && !name.is_empty() && !name.contains('/'))
            .then(|| ObjectKey::new(namespace, name))
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

impl Serialize for ObjectKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

pub fn key_of<K: Resource>(o: &K) -> ObjectKey {
    let m = o.meta();
    ObjectKey::new(
        m.namespace.clone().unwrap_or_else(|| "default".into()),
        m.name.clone().unwrap_or_default(),
    )
}

#[derive(Debug, Clone, Default)]
pub struct ObjectSet {
    /// Cluster-scoped: keyed by name.
    pub gateway_classes: BTreeMap<String, GatewayClass>,
    pub gateway_configs: BTreeMap<ObjectKey, GatewayConfig>,
    pub gateways: BTreeMap<ObjectKey, Gateway>,
    pub udp_routes: BTreeMap<ObjectKey, UdpRoute>,
    pub services: BTreeMap<ObjectKey, Service>,
    pub endpoint_slices: BTreeMap<ObjectKey, EndpointSlice>,
    pub static_services: BTreeMap<ObjectKey, StaticService>,
    pub secrets: BTreeMap<ObjectKey, Secret>,
    pub reference_grants: BTreeMap<ObjectKey, ReferenceGrant>,
    /// Cluster-scoped, keyed by name: their labels, for listeners' `allowedRoutes`
    /// namespace selectors.
    pub namespaces: BTreeMap<String, Namespace>,
    /// The managed dataplane Deployments as they are in the cluster (operator only): a
    /// Deployment keeps the image it was created with unless GatewayConfig names one, so
    /// an operator upgrade never rolls the dataplanes.
    pub deployments: BTreeMap<ObjectKey, Deployment>,
    /// The managed dataplane pods (operator only), for the offload reports recorded on
    /// them ([`crate::render::offload`]).
    pub pods: BTreeMap<ObjectKey, Pod>,
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
        let s = self.secrets.get(&ObjectKey::new(ns, name))?;
        if let Some(v) = s.data.as_ref().and_then(|d| d.get(key)) {
            return String::from_utf8(v.0.clone()).ok();
        }
        s.string_data.as_ref().and_then(|d| d.get(key)).cloned()
    }

    /// Every key/value of Secret `ns/name`.
    pub fn secret_entries(&self, ns: &str, name: &str) -> Option<BTreeMap<String, String>> {
        let s = self.secrets.get(&ObjectKey::new(ns, name))?;
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
