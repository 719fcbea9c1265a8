//! The operator's view of the cluster: every watched kind folded into one [`ObjectSet`], the
//! renderer's input. A watcher (re)lists with `Init … InitApply … InitDone`; the new list
//! replaces that kind only when complete, so objects deleted while a watch was broken (a
//! `410 Gone`, an API server restart) disappear, and a half-read list is never rendered.

use std::collections::BTreeSet;

use kube::Resource;

use crate::objects::{ObjectKey, ObjectSet, key_of};
use crate::source::Object;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    GatewayClass,
    GatewayConfig,
    Gateway,
    UdpRoute,
    ReferenceGrant,
    Service,
    EndpointSlice,
    StaticService,
    Secret,
    Deployment,
    Pod,
    Namespace,
}

impl Kind {
    pub const ALL: [Kind; 12] = [
        Kind::GatewayClass,
        Kind::GatewayConfig,
        Kind::Gateway,
        Kind::UdpRoute,
        Kind::ReferenceGrant,
        Kind::Service,
        Kind::EndpointSlice,
        Kind::StaticService,
        Kind::Secret,
        Kind::Deployment,
        Kind::Pod,
        Kind::Namespace,
    ];
}

/// One event of one watcher.
#[derive(Debug)]
pub enum Change {
    Init(Kind),
    InitApply(Object),
    InitDone(Kind),
    Apply(Object),
    Delete(Kind, ObjectKey),
}

impl Change {
    /// What a log line may say about a change: kind, name and resourceVersion, never the
    /// content (Secrets).
    pub fn describe(&self) -> String {
        match self {
            Change::Init(k) => format!("relisting {k:?}"),
            Change::InitDone(k) => format!("relisted {k:?}"),
            Change::InitApply(o) => format!("listed {:?}", kind_of(o)),
            Change::Apply(o) => {
                let m = meta_of(o);
                format!(
                    "{:?} {}/{} at {}",
                    kind_of(o),
                    m.namespace.as_deref().unwrap_or(""),
                    m.name.as_deref().unwrap_or(""),
                    m.resource_version.as_deref().unwrap_or("?")
                )
            }
            Change::Delete(k, key) => format!("deleted {k:?} {}/{}", key.namespace, key.name),
        }
    }
}

fn meta_of(o: &Object) -> &kube::api::ObjectMeta {
    match o {
        Object::GatewayClass(x) => &x.metadata,
        Object::GatewayConfig(x) => &x.metadata,
        Object::Gateway(x) => &x.metadata,
        Object::UdpRoute(x) => &x.metadata,
        Object::ReferenceGrant(x) => &x.metadata,
        Object::Service(x) => &x.metadata,
        Object::EndpointSlice(x) => &x.metadata,
        Object::StaticService(x) => &x.metadata,
        Object::Secret(x) => &x.metadata,
        Object::Deployment(x) => &x.metadata,
        Object::Pod(x) => &x.metadata,
        Object::Namespace(x) => &x.metadata,
    }
}

pub fn kind_of(o: &Object) -> Kind {
    match o {
        Object::GatewayClass(_) => Kind::GatewayClass,
        Object::GatewayConfig(_) => Kind::GatewayConfig,
        Object::Gateway(_) => Kind::Gateway,
        Object::UdpRoute(_) => Kind::UdpRoute,
        Object::ReferenceGrant(_) => Kind::ReferenceGrant,
        Object::Service(_) => Kind::Service,
        Object::EndpointSlice(_) => Kind::EndpointSlice,
        Object::StaticService(_) => Kind::StaticService,
        Object::Secret(_) => Kind::Secret,
        Object::Deployment(_) => Kind::Deployment,
        Object::Pod(_) => Kind::Pod,
        Object::Namespace(_) => Kind::Namespace,
    }
}

/// The key an object is stored under (`("", name)` for a cluster-scoped GatewayClass).
pub fn key_for<K: Resource>(o: &K) -> ObjectKey {
    let m = o.meta();
    match &m.namespace {
        Some(_) => key_of(o),
        None => ObjectKey::new("", m.name.clone().unwrap_or_default()),
    }
}

fn upsert(set: &mut ObjectSet, o: Object) {
    match o {
        Object::GatewayClass(c) => {
            let name = c.metadata.name.clone().unwrap_or_default();
            set.gateway_classes.insert(name, *c);
        }
        Object::GatewayConfig(v) => {
            set.gateway_configs.insert(key_of(&*v), *v);
        }
        Object::Gateway(v) => {
            set.gateways.insert(key_of(&*v), *v);
        }
        Object::UdpRoute(v) => {
            set.udp_routes.insert(key_of(&*v), *v);
        }
        Object::ReferenceGrant(v) => {
            set.reference_grants.insert(key_of(&*v), *v);
        }
        Object::Service(v) => {
            set.services.insert(key_of(&*v), *v);
        }
        Object::EndpointSlice(v) => {
            set.endpoint_slices.insert(key_of(&*v), *v);
        }
        Object::StaticService(v) => {
            set.static_services.insert(key_of(&*v), *v);
        }
        Object::Secret(v) => {
            set.secrets.insert(key_of(&*v), *v);
        }
        Object::Deployment(v) => {
            set.deployments.insert(key_of(&*v), *v);
        }
        Object::Pod(v) => {
            set.pods.insert(key_of(&*v), *v);
        }
        Object::Namespace(v) => {
            let name = v.metadata.name.clone().unwrap_or_default();
            set.namespaces.insert(name, *v);
        }
    }
}

fn remove(set: &mut ObjectSet, kind: Kind, k: &ObjectKey) -> bool {
    match kind {
        Kind::GatewayClass => set.gateway_classes.remove(&k.name).is_some(),
        Kind::GatewayConfig => set.gateway_configs.remove(k).is_some(),
        Kind::Gateway => set.gateways.remove(k).is_some(),
        Kind::UdpRoute => set.udp_routes.remove(k).is_some(),
        Kind::ReferenceGrant => set.reference_grants.remove(k).is_some(),
        Kind::Service => set.services.remove(k).is_some(),
        Kind::EndpointSlice => set.endpoint_slices.remove(k).is_some(),
        Kind::StaticService => set.static_services.remove(k).is_some(),
        Kind::Secret => set.secrets.remove(k).is_some(),
        Kind::Deployment => set.deployments.remove(k).is_some(),
        Kind::Pod => set.pods.remove(k).is_some(),
        Kind::Namespace => set.namespaces.remove(&k.name).is_some(),
    }
}

/// Moves `kind`'s objects from `from` into `to`, replacing what `to` had of that kind.
fn replace_kind(to: &mut ObjectSet, from: &mut ObjectSet, kind: Kind) {
    use std::mem::take;
    match kind {
        Kind::GatewayClass => to.gateway_classes = take(&mut from.gateway_classes),
        Kind::GatewayConfig => to.gateway_configs = take(&mut from.gateway_configs),
        Kind::Gateway => to.gateways = take(&mut from.gateways),
        Kind::UdpRoute => to.udp_routes = take(&mut from.udp_routes),
        Kind::ReferenceGrant => to.reference_grants = take(&mut from.reference_grants),
        Kind::Service => to.services = take(&mut from.services),
        Kind::EndpointSlice => to.endpoint_slices = take(&mut from.endpoint_slices),
        Kind::StaticService => to.static_services = take(&mut from.static_services),
        Kind::Secret => to.secrets = take(&mut from.secrets),
        Kind::Deployment => to.deployments = take(&mut from.deployments),
        Kind::Pod => to.pods = take(&mut from.pods),
        Kind::Namespace => to.namespaces = take(&mut from.namespaces),
    }
}

#[derive(Default)]
pub struct Inventory {
    pub objects: ObjectSet,
    /// Lists in progress, one per kind being (re)listed.
    listing: ObjectSet,
    relisting: BTreeSet<Kind>,
    synced: BTreeSet<Kind>,
}

impl Inventory {
    /// Folds one change in; true when the rendered input changed.
    pub fn apply(&mut self, change: Change) -> bool {
        match change {
            Change::Init(kind) => {
                self.relisting.insert(kind);
                let mut empty = ObjectSet::default();
                replace_kind(&mut self.listing, &mut empty, kind);
                false
            }
            Change::InitApply(o) => {
                upsert(&mut self.listing, o);
                false
            }
            Change::InitDone(kind) => {
                self.relisting.remove(&kind);
                replace_kind(&mut self.objects, &mut self.listing, kind);
                self.synced.insert(kind);
                true
            }
            Change::Apply(o) => {
                upsert(&mut self.objects, o);
                true
            }
            Change::Delete(kind, k) => remove(&mut self.objects, kind, &k),
        }
    }

    /// Every kind has been listed once: rendering now cannot mistake "not read yet" for
    /// "deleted".
    pub fn synced(&self) -> bool {
        Kind::ALL.iter().all(|k| self.synced.contains(k))
    }

    pub fn unsynced(&self) -> Vec<Kind> {
        Kind::ALL
            .iter()
            .filter(|k| !self.synced.contains(k))
            .copied()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Secret;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn secret(name: &str) -> Object {
        Object::Secret(Box::new(Secret {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                ..Default::default()
            },
            ..Default::default()
        }))
    }

    #[test]
    fn a_relist_replaces_the_kind_only_when_complete() {
        let mut inv = Inventory::default();
        assert!(!inv.synced());
        inv.apply(Change::Init(Kind::Secret));
        inv.apply(Change::InitApply(secret("a")));
        inv.apply(Change::InitApply(secret("b")));
        assert!(
            inv.objects.secrets.is_empty(),
            "a half-read list is not used"
        );
        assert!(inv.apply(Change::InitDone(Kind::Secret)));
        assert_eq!(inv.objects.secrets.len(), 2);
        assert_eq!(inv.unsynced().len(), Kind::ALL.len() - 1);
        // A watch broke (410 Gone); "a" was deleted meanwhile: the relist drops it.
        inv.apply(Change::Init(Kind::Secret));
        inv.apply(Change::InitApply(secret("b")));
        assert_eq!(inv.objects.secrets.len(), 2, "old state serves until done");
        inv.apply(Change::InitDone(Kind::Secret));
        let names: Vec<_> = inv.objects.secrets.keys().map(|k| k.name.clone()).collect();
        assert_eq!(names, ["b"]);
        assert!(inv.apply(Change::Delete(Kind::Secret, ObjectKey::new("ns", "b"))));
        assert!(!inv.apply(Change::Delete(Kind::Secret, ObjectKey::new("ns", "b"))));
        for k in Kind::ALL {
            inv.apply(Change::Init(k));
            inv.apply(Change::InitDone(k));
        }
        assert!(inv.synced());
    }
}
