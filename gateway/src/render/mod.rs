//! The renderer: a pure function from the set of objects to the dataplane config of every
//! Gateway of our GatewayClasses, the status every object should have, and the Deployment
//! and Service each Gateway needs. Same input, same output: no clock (the time is an input),
//! no I/O, ordered maps throughout.

mod conditions;
mod endpoints;
mod listeners;
mod managed;
pub mod offload;
mod params;
mod program;
mod routes;
mod selector;

use std::collections::{BTreeMap, BTreeSet};

use gateway_api::experimental::udproutes::UdpRouteStatus;
use gateway_api::gatewayclasses::GatewayClassStatus;
use gateway_api::gateways::{GatewayStatus, GatewayStatusListeners};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use turnpike_contract::cds::{AuthServiceConfig, GatewaySnapshot};
use turnpike_contract::config::{DataplaneConfig, EndpointSpec, Protocol, TlsConfig};

use crate::crd::{CONTROLLER_NAME, GatewayConfigStatus};
use crate::objects::{ObjectKey, ObjectSet};

pub use conditions::{Stamp, is_true, reason};
pub use listeners::protocol_of;
pub use managed::{
    GATEWAY_LABEL, MANAGED_BY, MANAGED_BY_LABEL, Managed, cds_secret_name, managed_resources,
};
pub use params::{FieldProblem, ParamsError, ResolvedParams, resolve_params};

use listeners::ValidListener;

const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";

/// Inputs that are not objects.
#[derive(Debug, Clone)]
pub struct RenderContext {
    /// Stamped on every condition, so output is deterministic.
    pub now: Time,
    /// Standalone mode binds listeners to the Gateway's own IP address (a laptop's
    /// 127.0.0.1 stays private); in Kubernetes the dataplane pod binds 0.0.0.0.
    pub standalone: bool,
    /// Image and CDS address for managed dataplane Deployments.
    pub dataplane_image: String,
    pub dataplane_image_pull_policy: Option<crate::crd::PullPolicy>,
    pub cds_address: String,
    /// Secrets rotated out of each GatewayConfig that issued credentials may still use.
    pub previous_secrets: BTreeMap<ObjectKey, Vec<String>>,
    /// The certificate each TURN-TLS listener (`ns/gateway`, listener) served after the
    /// last render: a Secret that turns invalid keeps the listener on it instead of
    /// taking TLS down. See [`Rendered::serving_certificates`].
    pub serving_certificates: ServingCertificates,
    /// What each Gateway's dataplanes reported about kernel offload (for the listeners'
    /// `Programmed` message): from the pods' conditions, or from the CDS server in
    /// `turnpike run`.
    pub offload_reports: offload::OffloadReports,
}

/// The certificate each TURN-TLS listener serves, by Gateway and listener name.
pub type ServingCertificates = BTreeMap<(ObjectKey, String), TlsConfig>;

/// What one GatewayClass / Gateway / UDPRoute / GatewayConfig should show.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Statuses {
    pub gateway_classes: BTreeMap<String, GatewayClassStatus>,
    pub gateway_configs: BTreeMap<ObjectKey, GatewayConfigStatus>,
    pub gateways: BTreeMap<ObjectKey, GatewayStatus>,
    /// Only the `parents[]` entries of our controller.
    pub udp_routes: BTreeMap<ObjectKey, UdpRouteStatus>,
}

#[derive(Debug, Clone, Default)]
pub struct Rendered {
    /// By Gateway.
    pub configs: BTreeMap<ObjectKey, DataplaneConfig>,
    /// Gateways of ours that got no config this time (e.g. their GatewayConfig is broken):
    /// their dataplanes keep the last good one.
    pub held: BTreeSet<ObjectKey>,
    pub status: Statuses,
    pub managed: BTreeMap<ObjectKey, Managed>,
    /// What the auth service needs of each rendered Gateway.
    pub auth: BTreeMap<ObjectKey, AuthServiceConfig>,
}

impl Rendered {
    /// What TURN-TLS listeners serve after this render, for the next render's
    /// [`RenderContext::serving_certificates`]: held Gateways keep what they had.
    pub fn serving_certificates(&self, before: &ServingCertificates) -> ServingCertificates {
        let mut out: ServingCertificates = before
            .iter()
            .filter(|((gw, _), _)| self.held.contains(gw))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (gw, cfg) in &self.configs {
            for l in &cfg.listeners {
                if let Some(t) = &l.tls {
                    out.insert((gw.clone(), l.name.clone()), t.clone());
                }
            }
        }
        out
    }

    /// Config and auth settings of every rendered Gateway, by the `namespace/name` CDS
    /// clients subscribe to.
    pub fn snapshots(&self) -> BTreeMap<String, GatewaySnapshot> {
        self.configs
            .iter()
            .map(|(gw, config)| {
                (
                    gw.to_string(),
                    GatewaySnapshot {
                        config: config.clone(),
                        auth: self.auth.get(gw).cloned(),
                    },
                )
            })
            .collect()
    }

    /// The held Gateways as CDS names them.
    pub fn held_names(&self) -> BTreeSet<String> {
        self.held.iter().map(ObjectKey::to_string).collect()
    }
}

/// A Gateway of ours while it renders.
struct GatewayState {
    key: ObjectKey,
    stamp: Stamp,
    params: Option<ResolvedParams>,
    params_error: Option<ParamsError>,
    listeners: Vec<ValidListener>,
    listener_status: Vec<GatewayStatusListeners>,
    /// Listener name → attached routes.
    attached: BTreeMap<String, BTreeSet<ObjectKey>>,
    address: Option<String>,
}

impl GatewayState {
    fn listeners_for_managed(&self) -> Vec<(String, Protocol, u16)> {
        self.listeners
            .iter()
            .map(|l| (l.name.clone(), l.protocol, l.port))
            .collect()
    }
}

fn generation<K: kube::Resource>(o: &K) -> Option<i64> {
    o.meta().generation
}

pub fn render(objects: &ObjectSet, ctx: &RenderContext) -> Rendered {
    let base = Stamp {
        time: ctx.now.clone(),
        generation: None,
    };
    let mut out = Rendered::default();
    out.status.gateway_configs = gateway_config_statuses(objects, &base);
    let classes = resolve_classes(objects, ctx, &base, &mut out.status);
    let mut gateways = check_gateways(objects, ctx, &base, &classes);

    // Routes: attach to listeners and resolve backends.
    let mut route_peers = BTreeMap::new();
    let slices = endpoints::SliceIndex::new(objects);
    for (rk, route) in &objects.udp_routes {
        if let Some((status, peers)) =
            routes::attach_route(objects, &slices, rk, route, &mut gateways, &base)
        {
            route_peers.insert(rk.clone(), peers);
            out.status.udp_routes.insert(rk.clone(), status);
        }
    }

    for (k, g) in &gateways {
        out.status
            .gateways
            .insert(k.clone(), program::gateway_status(g));
        program_gateway(objects, ctx, k, g, &route_peers, &mut out);
    }
    out
}

/// GatewayConfigs are valid or not on their own, whoever references them.
fn gateway_config_statuses(
    objects: &ObjectSet,
    base: &Stamp,
) -> BTreeMap<ObjectKey, GatewayConfigStatus> {
    objects
        .gateway_configs
        .iter()
        .map(|(k, gc)| {
            let stamp = base.with_generation(generation(gc));
            let cond = match params::check_config(objects, k, gc) {
                Ok(()) => stamp.accepted("valid"),
                Err(e) => stamp.rejected(reason::INVALID, e.to_string()),
            };
            (
                k.clone(),
                GatewayConfigStatus {
                    conditions: vec![cond],
                },
            )
        })
        .collect()
}

/// Our GatewayClasses and their parameters, with their status.
fn resolve_classes(
    objects: &ObjectSet,
    ctx: &RenderContext,
    base: &Stamp,
    status: &mut Statuses,
) -> BTreeMap<String, Result<ResolvedParams, ParamsError>> {
    let mut classes = BTreeMap::new();
    for (name, class) in &objects.gateway_classes {
        if class.spec.controller_name != CONTROLLER_NAME {
            continue;
        }
        let stamp = base.with_generation(generation(class));
        let resolved = resolve_params(objects, class, ctx);
        let cond = match &resolved {
            Ok(_) => stamp.accepted("parameters resolved"),
            Err(e) => stamp.rejected(reason::INVALID_PARAMETERS, e.to_string()),
        };
        status.gateway_classes.insert(
            name.clone(),
            GatewayClassStatus {
                conditions: Some(vec![cond]),
                supported_features: None,
            },
        );
        classes.insert(name.clone(), resolved);
    }
    classes
}

/// The Gateways of our classes, their listeners checked.
fn check_gateways(
    objects: &ObjectSet,
    ctx: &RenderContext,
    base: &Stamp,
    classes: &BTreeMap<String, Result<ResolvedParams, ParamsError>>,
) -> BTreeMap<ObjectKey, GatewayState> {
    let mut gateways = BTreeMap::new();
    for (k, gw) in &objects.gateways {
        let Some(class) = classes.get(&gw.spec.gateway_class_name) else {
            continue;
        };
        let stamp = base.with_generation(generation(gw));
        let (params, params_error) = match class {
            Ok(p) => (Some(p.clone()), None),
            Err(e) => (None, Some(e.clone())),
        };
        let (listeners, mut listener_status) =
            listeners::check_listeners(objects, k, gw, &stamp, ctx);
        if let Ok(p) = class {
            let requested = p.spec.dataplane.as_ref().and_then(|d| d.offload);
            offload::annotate_listeners(
                gw,
                requested.unwrap_or(crate::crd::Offload::None),
                ctx.offload_reports.get(k),
                &mut listener_status,
            );
        }
        gateways.insert(
            k.clone(),
            GatewayState {
                key: k.clone(),
                stamp,
                params,
                params_error,
                listeners,
                listener_status,
                attached: BTreeMap::new(),
                address: program::public_address(objects, k, gw),
            },
        );
    }
    gateways
}

/// The dataplane config and managed resources of Gateway `k`, or holds it: a broken
/// Gateway keeps its running dataplane on the last good config.
fn program_gateway(
    objects: &ObjectSet,
    ctx: &RenderContext,
    k: &ObjectKey,
    g: &GatewayState,
    route_peers: &BTreeMap<ObjectKey, Vec<EndpointSpec>>,
    out: &mut Rendered,
) {
    let Some(params) = &g.params else {
        out.held.insert(k.clone());
        return;
    };
    let cfg = program::dataplane_config(g, params, route_peers, ctx);
    match cfg.validate() {
        // No valid listener is a broken Gateway like any other: a new one gets no Service
        // (one without ports is invalid anyway).
        Ok(_) if g.listeners.is_empty() => {
            out.held.insert(k.clone());
        }
        Ok(cfg) => {
            let managed = managed_resources(
                &objects.gateways[k],
                &g.listeners_for_managed(),
                params,
                objects.deployments.get(k),
                ctx,
            );
            out.managed.insert(k.clone(), managed);
            out.auth.insert(k.clone(), params.auth_service.clone());
            out.configs.insert(k.clone(), cfg.into_config());
        }
        Err(e) => {
            if let Some(st) = out.status.gateways.get_mut(k) {
                let conds = st.conditions.get_or_insert_with(Vec::new);
                conds.retain(|c| c.type_ != reason::PROGRAMMED);
                conds.push(g.stamp.not_programmed(reason::INVALID, e.to_string()));
            }
            out.held.insert(k.clone());
        }
    }
}

/// True when a condition of `type_` in `conds` is True (for callers inspecting status).
pub fn condition_true(conds: &Option<Vec<Condition>>, type_: &str) -> bool {
    conds.as_deref().is_some_and(|c| is_true(c, type_))
}
