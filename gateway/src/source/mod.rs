//! Reading objects from YAML: multi-document files, the kinds the renderer uses (others are
//! ignored), errors that name the file, the document and the field path.

pub mod dir;

use std::fmt;

use gateway_api::experimental::udproutes::UdpRoute;
use gateway_api::gatewayclasses::GatewayClass;
use gateway_api::gateways::Gateway;
use gateway_api::referencegrants::ReferenceGrant;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Resource;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::crd::{GatewayConfig, StaticService};
use crate::objects::{ObjectSet, key_of};

/// One problem in one document of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    pub file: String,
    /// 0-based index of the YAML document in the file.
    pub document: usize,
    /// Field path inside the document (`spec.listeners[0].port`), empty for the whole.
    pub path: String,
    pub message: String,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: document {}", self.file, self.document)?;
        if !self.path.is_empty() {
            write!(f, ": {}", self.path)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for LoadError {}

/// One object of a kind the renderer uses.
#[derive(Debug, Clone)]
pub enum Object {
    GatewayClass(Box<GatewayClass>),
    Gateway(Box<Gateway>),
    UdpRoute(Box<UdpRoute>),
    ReferenceGrant(Box<ReferenceGrant>),
    Service(Box<Service>),
    EndpointSlice(Box<EndpointSlice>),
    Secret(Box<Secret>),
    GatewayConfig(Box<GatewayConfig>),
    StaticService(Box<StaticService>),
    Namespace(Box<Namespace>),
    /// A managed dataplane Deployment (from the API server only, never from YAML).
    Deployment(Box<Deployment>),
    /// A managed dataplane pod (from the API server only), for its offload report.
    Pod(Box<Pod>),
}

fn typed<T: DeserializeOwned + Resource>(
    value: serde_yaml_ng::Value,
    err: &dyn Fn(String, String) -> LoadError,
    namespaced: bool,
) -> Result<Box<T>, LoadError> {
    let mut o: T = serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        err(
            if path == "." { String::new() } else { path },
            e.into_inner().to_string(),
        )
    })?;
    let meta = o.meta_mut();
    if meta.name.as_deref().is_none_or(str::is_empty) {
        return Err(err("metadata.name".into(), "is required".into()));
    }
    if namespaced && meta.namespace.is_none() {
        meta.namespace = Some("default".into());
    }
    Ok(Box::new(o))
}

/// Parses every YAML document of `text` (from `file`, for messages), with its index.
pub fn parse_documents(file: &str, text: &str) -> Result<Vec<(usize, Object)>, LoadError> {
    let mut out = Vec::new();
    for (document, de) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let err = |path: String, message: String| LoadError {
            file: file.to_string(),
            document,
            path,
            message,
        };
        let value =
            serde_yaml_ng::Value::deserialize(de).map_err(|e| err(String::new(), e.to_string()))?;
        if value.is_null() {
            continue;
        }
        let api_version = value
            .get("apiVersion")
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string();
        let kind = value
            .get("kind")
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string();
        if api_version.is_empty() || kind.is_empty() {
            return Err(err(
                String::new(),
                "apiVersion and kind are required".into(),
            ));
        }
        let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
        let obj = match (group, kind.as_str()) {
            ("gateway.networking.k8s.io", "GatewayClass") => {
                Object::GatewayClass(typed(value, &err, false)?)
            }
            ("gateway.networking.k8s.io", "Gateway") => Object::Gateway(typed(value, &err, true)?),
            ("gateway.networking.k8s.io", "UDPRoute") => {
                Object::UdpRoute(typed(value, &err, true)?)
            }
            ("gateway.networking.k8s.io", "ReferenceGrant") => {
                Object::ReferenceGrant(typed(value, &err, true)?)
            }
            ("", "Service") => Object::Service(typed(value, &err, true)?),
            ("", "Secret") => Object::Secret(typed(value, &err, true)?),
            ("", "Namespace") => Object::Namespace(typed(value, &err, false)?),
            ("discovery.k8s.io", "EndpointSlice") => {
                Object::EndpointSlice(typed(value, &err, true)?)
            }
            ("turnpike.dev", "GatewayConfig" | "StaticService")
                if api_version != "turnpike.dev/v1alpha1" =>
            {
                return Err(err(
                    "apiVersion".into(),
                    format!("{api_version} is not served; use turnpike.dev/v1alpha1"),
                ));
            }
            ("turnpike.dev", "GatewayConfig") => Object::GatewayConfig(typed(value, &err, true)?),
            ("turnpike.dev", "StaticService") => Object::StaticService(typed(value, &err, true)?),
            ("turnpike.dev", other) => {
                return Err(err(
                    "kind".into(),
                    format!("unknown turnpike.dev kind {other:?}"),
                ));
            }
            _ => {
                tracing::debug!(file, document, %api_version, %kind, "ignoring a kind Turnpike does not use");
                continue;
            }
        };
        out.push((document, obj));
    }
    Ok(out)
}

impl ObjectSet {
    /// Adds an object; `Err` names the kind and key when it is already present.
    pub fn insert(&mut self, o: Object) -> Result<(), String> {
        fn put<V: Resource>(
            map: &mut std::collections::BTreeMap<crate::objects::ObjectKey, V>,
            kind: &str,
            v: V,
        ) -> Result<(), String> {
            let k = key_of(&v);
            if map.contains_key(&k) {
                return Err(format!("{kind} {} is defined twice", k));
            }
            map.insert(k, v);
            Ok(())
        }
        /// Cluster-scoped kinds, keyed by name.
        fn put_named<V: Resource>(
            map: &mut std::collections::BTreeMap<String, V>,
            kind: &str,
            v: V,
        ) -> Result<(), String> {
            let name = v.meta().name.clone().unwrap_or_default();
            if map.contains_key(&name) {
                return Err(format!("{kind} {name} is defined twice"));
            }
            map.insert(name, v);
            Ok(())
        }
        match o {
            Object::GatewayClass(c) => put_named(&mut self.gateway_classes, "GatewayClass", *c),
            Object::Gateway(g) => put(&mut self.gateways, "Gateway", *g),
            Object::UdpRoute(r) => put(&mut self.udp_routes, "UDPRoute", *r),
            Object::ReferenceGrant(r) => put(&mut self.reference_grants, "ReferenceGrant", *r),
            Object::Service(s) => put(&mut self.services, "Service", *s),
            Object::EndpointSlice(e) => put(&mut self.endpoint_slices, "EndpointSlice", *e),
            Object::Secret(s) => put(&mut self.secrets, "Secret", *s),
            Object::GatewayConfig(g) => put(&mut self.gateway_configs, "GatewayConfig", *g),
            Object::StaticService(s) => put(&mut self.static_services, "StaticService", *s),
            Object::Namespace(n) => put_named(&mut self.namespaces, "Namespace", *n),
            Object::Deployment(d) => put(&mut self.deployments, "Deployment", *d),
            Object::Pod(p) => put(&mut self.pods, "Pod", *p),
        }
    }
}

/// Parses `text` into a fresh set (used by tests and golden files).
pub fn parse_set(file: &str, text: &str) -> Result<ObjectSet, LoadError> {
    let mut set = ObjectSet::default();
    for (document, o) in parse_documents(file, text)? {
        set.insert(o).map_err(|message| LoadError {
            file: file.to_string(),
            document,
            path: "metadata.name".into(),
            message,
        })?;
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_file_document_and_field() {
        let text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ignored}\n---\n\
                    apiVersion: turnpike.dev/v1alpha1\nkind: GatewayConfig\nmetadata: {name: c}\n\
                    spec:\n  auth: {secretRef: {name: s}, tll: 1h}\n";
        let e = parse_set("dir/config.yaml", text).unwrap_err();
        assert_eq!(e.file, "dir/config.yaml");
        assert_eq!(
            e.document, 1,
            "the ignored ConfigMap still counts as a document"
        );
        assert_eq!(e.path, "spec.auth.tll");
        assert!(e.message.contains("unknown field `tll`"), "{e}");
        assert_eq!(
            e.to_string().split(": ").take(3).collect::<Vec<_>>(),
            ["dir/config.yaml", "document 1", "spec.auth.tll"]
        );
    }

    #[test]
    fn kinds_and_namespaces() {
        let text = "apiVersion: turnpike.dev/v1beta9\nkind: StaticService\nmetadata: {name: x}\nspec: {addresses: []}\n";
        let e = parse_set("f.yaml", text).unwrap_err();
        assert_eq!(e.path, "apiVersion");
        let text = "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\nstringData: {k: v}\n---\n\
                    apiVersion: v1\nkind: Secret\nmetadata: {name: s, namespace: default}\n";
        let e = parse_set("f.yaml", text).unwrap_err();
        assert!(e.message.contains("defined twice"), "{e}");
        let set = parse_set(
            "f.yaml",
            "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\nstringData: {k: v}\n",
        )
        .unwrap();
        assert_eq!(set.secret_value("default", "s", "k").as_deref(), Some("v"));
    }
}
