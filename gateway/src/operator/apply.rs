//! The leader's writes: statuses, Events, CDS certificate Secrets, and the managed
//! Deployment + Service of every Gateway (server-side apply), with orphans removed.
//! Every write is skipped when the API server already has what it would write.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Arc;

use gateway_api::experimental::udproutes::{UdpRoute, UdpRouteStatus};
use gateway_api::gatewayclasses::GatewayClass;
use gateway_api::gateways::Gateway;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Api, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::certs::{AUTH_CDS_SECRET, client_secret, client_secret_current};
use super::metrics::OperatorMetrics;
use super::status::{Warning, plan, route_status};
use super::writes::WriteRequest;
use crate::cds::{AUTH_SERVICE_CN, CertificateAuthority, dataplane_cn};
use crate::crd::GatewayConfig;
use crate::objects::{ObjectKey, ObjectSet};
use crate::render::{
    GATEWAY_LABEL, MANAGED_BY, MANAGED_BY_LABEL, Managed, Rendered, cds_secret_name,
};

/// Our field manager for server-side apply.
pub const FIELD_MANAGER: &str = "turnpike-operator";

/// What the write path needs (kube-rs's controller `Context` pattern).
pub struct Context {
    pub client: kube::Client,
    /// The operator's own namespace (CA, auth-service certificate, lease).
    pub namespace: String,
    pub recorder: Recorder,
    pub metrics: Arc<OperatorMetrics>,
    pub ca: Arc<CertificateAuthority>,
}

/// Managed resources this replica applied, so an unchanged render sends nothing. Cleared
/// now and then so drift (a hand edit) is put right.
pub type Applied = BTreeMap<ObjectKey, Managed>;

fn apply_params() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
}

impl Context {
    fn failed(&self, what: &str, e: &dyn std::fmt::Display) {
        self.metrics.write_errors.inc();
        tracing::warn!(%what, error = %e, "write failed; retrying later");
    }

    /// Server-side applies `status` to object `name` of kind `K`.
    async fn apply_status<K, S>(
        &self,
        api: Api<K>,
        ns: Option<&str>,
        name: &str,
        status: &S,
    ) -> bool
    where
        K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
        S: Serialize,
    {
        let mut meta = serde_json::json!({ "name": name });
        if let Some(ns) = ns {
            meta["namespace"] = ns.into();
        }
        let body = serde_json::json!({
            "apiVersion": K::api_version(&()),
            "kind": K::kind(&()),
            "metadata": meta,
            "status": status,
        });
        match api
            .patch_status(name, &apply_params(), &Patch::Apply(&body))
            .await
        {
            Ok(_) => {
                self.metrics.status_writes.inc();
                true
            }
            Err(e) => {
                self.failed(&format!("{} {name} status", K::kind(&())), &e);
                false
            }
        }
    }

    /// Our `parents[]` entries of a UDPRoute, by read-modify-write with the resourceVersion
    /// we read: the list is atomic, so a blind write could drop another controller's entry
    /// written meanwhile. A conflict re-reads and recomputes.
    async fn write_route(
        &self,
        key: &ObjectKey,
        route: &UdpRoute,
        status: UdpRouteStatus,
        ours: Option<&UdpRouteStatus>,
    ) -> bool {
        let api: Api<UdpRoute> = Api::namespaced(self.client.clone(), &key.namespace);
        let mut current = route.clone();
        let mut status = Some(status);
        for _ in 0..4 {
            let Some(s) = status.take() else { return true };
            current.status = Some(s);
            current.metadata.managed_fields = None;
            match api
                .replace_status(&key.name, &PostParams::default(), &current)
                .await
            {
                Ok(_) => {
                    self.metrics.status_writes.inc();
                    return true;
                }
                Err(kube::Error::Api(e)) if e.code == 409 => {
                    let fresh = match api.get_status(&key.name).await {
                        Ok(r) => r,
                        Err(e) => {
                            self.failed(&format!("UDPRoute {} status", key), &e);
                            return false;
                        }
                    };
                    status = route_status(
                        fresh.status.as_ref(),
                        ours,
                        &fresh.object_ref(&()),
                        &mut Vec::new(),
                    );
                    current = fresh;
                }
                Err(e) => {
                    self.failed(&format!("UDPRoute {} status", key), &e);
                    return false;
                }
            }
        }
        false
    }

    async fn warn(&self, w: &Warning) {
        let ev = Event {
            type_: EventType::Warning,
            reason: w.reason.clone(),
            note: Some(w.message.chars().take(1000).collect()),
            action: "Reconcile".into(),
            secondary: None,
        };
        match self.recorder.publish(&ev, &w.object).await {
            Ok(()) => {
                self.metrics.events.inc();
            }
            Err(e) => self.failed("Event", &e),
        }
    }

    async fn apply_object<K>(&self, ns: &str, obj: &K) -> bool
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + Serialize
            + Debug,
    {
        let name = obj.meta().name.clone().unwrap_or_default();
        let api: Api<K> = Api::namespaced(self.client.clone(), ns);
        match api.patch(&name, &apply_params(), &Patch::Apply(obj)).await {
            Ok(_) => {
                self.metrics.resource_writes.inc();
                true
            }
            Err(e) => {
                self.failed(&format!("{} {ns}/{name}", K::kind(&())), &e);
                false
            }
        }
    }

    async fn delete_object<K>(&self, key: &ObjectKey) -> bool
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + Debug,
    {
        let api: Api<K> = Api::namespaced(self.client.clone(), &key.namespace);
        match api.delete(&key.name, &DeleteParams::background()).await {
            Ok(_) => {
                self.metrics.resource_writes.inc();
                tracing::info!(kind = K::kind(&()).as_ref(), object = %key.to_string(), "deleted: its Gateway is gone");
                true
            }
            Err(kube::Error::Api(e)) if e.code == 404 => true,
            Err(e) => {
                self.failed(&format!("delete {} {}", K::kind(&()), key), &e);
                false
            }
        }
    }

    /// Makes the API server match one render. Returns false when any write failed (the
    /// caller retries after a backoff).
    pub async fn write(&self, request: &WriteRequest, applied: &mut Applied) -> bool {
        let (objects, rendered) = (&request.objects, &request.rendered);
        // The rotation history first: it is what another replica needs should this one
        // stop in the middle of the pass.
        let mut ok = match &request.ledger {
            Some(secret) => self.apply_object(&self.namespace, secret).await,
            None => true,
        };
        let plan = plan(objects, &rendered.status);
        for (name, st) in &plan.gateway_classes {
            let api: Api<GatewayClass> = Api::all(self.client.clone());
            ok &= self.apply_status(api, None, name, st).await;
        }
        for (k, st) in &plan.gateway_configs {
            let api: Api<GatewayConfig> = Api::namespaced(self.client.clone(), &k.namespace);
            ok &= self
                .apply_status(api, Some(&k.namespace), &k.name, st)
                .await;
        }
        for (k, st) in &plan.gateways {
            let api: Api<Gateway> = Api::namespaced(self.client.clone(), &k.namespace);
            ok &= self
                .apply_status(api, Some(&k.namespace), &k.name, st)
                .await;
        }
        for (k, st) in &plan.udp_routes {
            if let Some(route) = objects.udp_routes.get(k) {
                ok &= self
                    .write_route(k, route, st.clone(), rendered.status.udp_routes.get(k))
                    .await;
            }
        }
        for w in &plan.warnings {
            self.warn(w).await;
        }
        ok &= self.write_certificates(objects, rendered).await;
        ok &= self.write_managed(objects, rendered, applied).await;
        ok
    }

    async fn ensure_client_secret(
        &self,
        objects: &ObjectSet,
        ns: &str,
        name: &str,
        identity: &str,
        owner: Option<OwnerReference>,
    ) -> bool {
        let key = ObjectKey::new(ns, name);
        if objects
            .secrets
            .get(&key)
            .is_some_and(|s| client_secret_current(s, &self.ca, identity))
        {
            return true;
        }
        match client_secret(&self.ca, name, ns, identity, owner) {
            Ok(secret) => {
                let done = self.apply_object::<Secret>(ns, &secret).await;
                if done {
                    tracing::info!(secret = %key, %identity, "issued a CDS client certificate");
                }
                done
            }
            Err(e) => {
                self.failed(&format!("certificate for {identity}"), &e);
                false
            }
        }
    }

    async fn write_certificates(&self, objects: &ObjectSet, rendered: &Rendered) -> bool {
        let mut ok = self
            .ensure_client_secret(
                objects,
                &self.namespace,
                AUTH_CDS_SECRET,
                AUTH_SERVICE_CN,
                None,
            )
            .await;
        for gw in rendered.managed.keys() {
            let owner = rendered.managed[gw]
                .deployment
                .metadata
                .owner_references
                .as_ref()
                .and_then(|o| o.first().cloned());
            ok &= self
                .ensure_client_secret(
                    objects,
                    &gw.namespace,
                    &cds_secret_name(&gw.name),
                    &dataplane_cn(&gw.to_string()),
                    owner,
                )
                .await;
        }
        ok
    }

    async fn write_managed(
        &self,
        objects: &ObjectSet,
        rendered: &Rendered,
        applied: &mut Applied,
    ) -> bool {
        let mut ok = true;
        for (gw, m) in &rendered.managed {
            let present = objects.deployments.contains_key(gw) && objects.services.contains_key(gw);
            if present && applied.get(gw) == Some(m) {
                continue;
            }
            let done = self.apply_object(&gw.namespace, &m.deployment).await
                && self.apply_object(&gw.namespace, &m.service).await;
            if done {
                applied.insert(gw.clone(), m.clone());
            }
            ok &= done;
        }
        // A managed object whose Gateway is gone (or is no longer ours) goes too. Held
        // Gateways (a broken GatewayConfig) keep theirs.
        let wanted = |labels: Option<&BTreeMap<String, String>>, k: &ObjectKey| {
            let ours = labels.is_some_and(|l| {
                l.get(MANAGED_BY_LABEL).is_some_and(|v| v == MANAGED_BY)
                    && l.contains_key(GATEWAY_LABEL)
            });
            !ours || rendered.managed.contains_key(k) || rendered.held.contains(k)
        };
        for (k, d) in &objects.deployments {
            if !wanted(d.metadata.labels.as_ref(), k) {
                applied.remove(k);
                ok &= self.delete_object::<Deployment>(k).await;
            }
        }
        for (k, s) in &objects.services {
            if !wanted(s.metadata.labels.as_ref(), k) {
                ok &= self.delete_object::<Service>(k).await;
            }
        }
        ok
    }
}
