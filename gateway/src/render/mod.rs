//! The renderer: a pure function from the set of objects to the dataplane config of every
//! Gateway of our GatewayClasses, the status every object should have, and the Deployment
//! and Service each Gateway needs. Same input, same output: no clock (the time is an input),
//! no I/O, ordered maps throughout.

mod conditions;
mod endpoints;
mod managed;
mod params;
mod selector;

use std::collections::{BTreeMap, BTreeSet};

use gateway_api::experimental::udproutes::{
    UdpRoute, UdpRouteParentRefs, UdpRouteStatus, UdpRouteStatusParents,
    UdpRouteStatusParentsParentRef,
};
use gateway_api::gatewayclasses::GatewayClassStatus;
use gateway_api::gateways::{
    Gateway, GatewayListeners, GatewayListenersAllowedRoutesNamespacesFrom,
    GatewayListenersAllowedRoutesNamespacesSelector, GatewayStatus, GatewayStatusAddresses,
    GatewayStatusListeners, GatewayStatusListenersSupportedKinds,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use turnpike_contract::cds::{AuthServiceConfig, GatewaySnapshot};
use turnpike_contract::config::{
    DataplaneConfig, EndpointSpec, ListenerConfig, Protocol, RouteConfig, SERVED_PROTOCOLS,
    TlsConfig, VERSION,
};

use crate::crd::{CONTROLLER_NAME, GatewayConfigStatus};
use crate::objects::{Key, ObjectSet, key_string};

pub use conditions::{Stamp, is_true, reason};
pub use managed::{
    GATEWAY_LABEL, MANAGED_BY, MANAGED_BY_LABEL, Managed, cds_secret_name, managed_resources,
};
pub use params::{ResolvedParams, resolve_params};

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
    pub previous_secrets: BTreeMap<Key, Vec<String>>,
    /// The certificate each TURN-TLS listener (`ns/gateway`, listener) served after the
    /// last render: a Secret that turns invalid keeps the listener on it instead of
    /// taking TLS down. See [`Rendered::serving_certificates`].
    pub serving_certificates: ServingCertificates,
}

pub type ServingCertificates = BTreeMap<(String, String), TlsConfig>;

/// What one GatewayClass / Gateway / UDPRoute / GatewayConfig should show.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Statuses {
    pub gateway_classes: BTreeMap<String, GatewayClassStatus>,
    pub gateway_configs: BTreeMap<Key, GatewayConfigStatus>,
    pub gateways: BTreeMap<Key, GatewayStatus>,
    /// Only the `parents[]` entries of our controller.
    pub udp_routes: BTreeMap<Key, UdpRouteStatus>,
}

#[derive(Debug, Clone, Default)]
pub struct Rendered {
    /// Keyed `namespace/name` of the Gateway.
    pub configs: BTreeMap<String, DataplaneConfig>,
    /// Gateways of ours that got no config this time (e.g. their GatewayConfig is broken):
    /// their dataplanes keep the last good one.
    pub held: BTreeSet<String>,
    pub status: Statuses,
    pub managed: BTreeMap<String, Managed>,
    /// What the auth service needs of each rendered Gateway.
    pub auth: BTreeMap<String, AuthServiceConfig>,
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

    /// Config and auth settings of every rendered Gateway, as published over CDS.
    pub fn snapshots(&self) -> BTreeMap<String, GatewaySnapshot> {
        self.configs
            .iter()
            .map(|(name, config)| {
                (
                    name.clone(),
                    GatewaySnapshot {
                        config: config.clone(),
                        auth: self.auth.get(name).cloned(),
                    },
                )
            })
            .collect()
    }
}

/// A listener that passed every check.
struct ValidListener {
    name: String,
    protocol: Protocol,
    port: u16,
    tls: Option<TlsConfig>,
    /// The listener's `hostname`: what a `turns:` URI must name.
    hostname: Option<String>,
    allowed_from: GatewayListenersAllowedRoutesNamespacesFrom,
    /// For `from: Selector`; none selects no namespace.
    namespace_selector: Option<GatewayListenersAllowedRoutesNamespacesSelector>,
    allows_udproute: bool,
}

struct GatewayState {
    key: Key,
    stamp: Stamp,
    params: Option<ResolvedParams>,
    params_error: Option<String>,
    listeners: Vec<ValidListener>,
    listener_status: Vec<GatewayStatusListeners>,
    /// Listener name → attached routes.
    attached: BTreeMap<String, BTreeSet<String>>,
    address: Option<String>,
}

pub fn protocol_of(p: &str) -> Option<Protocol> {
    match p {
        "TURN-UDP" | "UDP" => Some(Protocol::TurnUdp),
        "TURN-TCP" | "TCP" => Some(Protocol::TurnTcp),
        "TURN-TLS" => Some(Protocol::TurnTls),
        _ => None,
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

    // GatewayConfigs: valid on their own, whoever references them.
    for (k, gc) in &objects.gateway_configs {
        let stamp = base.with_generation(generation(gc));
        let cond = match params::check_config(objects, k, gc) {
            Ok(()) => stamp.cond(reason::ACCEPTED, true, reason::ACCEPTED, "valid"),
            Err(e) => stamp.cond(reason::ACCEPTED, false, reason::INVALID, e),
        };
        out.status.gateway_configs.insert(
            k.clone(),
            GatewayConfigStatus {
                conditions: vec![cond],
            },
        );
    }

    // Our GatewayClasses and their parameters.
    let mut classes: BTreeMap<String, Result<ResolvedParams, String>> = BTreeMap::new();
    for (name, class) in &objects.gateway_classes {
        if class.spec.controller_name != CONTROLLER_NAME {
            continue;
        }
        let stamp = base.with_generation(generation(class));
        let resolved = resolve_params(objects, class, ctx);
        let cond = match &resolved {
            Ok(_) => stamp.cond(
                reason::ACCEPTED,
                true,
                reason::ACCEPTED,
                "parameters resolved",
            ),
            Err(e) => stamp.cond(
                reason::ACCEPTED,
                false,
                reason::INVALID_PARAMETERS,
                e.clone(),
            ),
        };
        out.status.gateway_classes.insert(
            name.clone(),
            GatewayClassStatus {
                conditions: Some(vec![cond]),
                supported_features: None,
            },
        );
        classes.insert(name.clone(), resolved);
    }

    // Our Gateways and their listeners.
    let mut gateways: BTreeMap<Key, GatewayState> = BTreeMap::new();
    for (k, gw) in &objects.gateways {
        let Some(class) = classes.get(&gw.spec.gateway_class_name) else {
            continue;
        };
        let stamp = base.with_generation(generation(gw));
        let (params, params_error) = match class {
            Ok(p) => (Some(p.clone()), None),
            Err(e) => (None, Some(e.clone())),
        };
        let (listeners, listener_status) = check_listeners(objects, k, gw, &stamp, ctx);
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
                address: public_address(objects, k, gw),
            },
        );
    }

    // Routes: attach to listeners and resolve backends.
    let mut route_endpoints: BTreeMap<String, Vec<EndpointSpec>> = BTreeMap::new();
    let slices = endpoints::SliceIndex::new(objects);
    for (rk, route) in &objects.udp_routes {
        if let Some((status, endpoints)) =
            attach_route(objects, &slices, rk, route, &mut gateways, &base)
        {
            route_endpoints.insert(key_string(rk), endpoints);
            out.status.udp_routes.insert(rk.clone(), status);
        }
    }

    // Gateway status and dataplane configs.
    for (k, g) in &gateways {
        let name = key_string(k);
        let gw = &objects.gateways[k];
        out.status.gateways.insert(k.clone(), gateway_status(g));
        let Some(params) = &g.params else {
            out.held.insert(name);
            continue;
        };
        let cfg = dataplane_config(g, params, &route_endpoints, ctx);
        match cfg.validate() {
            // No valid listener is a broken Gateway like any other: it is held, so a
            // running dataplane keeps its last good config and a new one gets no
            // Service (one without ports is invalid anyway).
            Ok(_) if g.listeners.is_empty() => {
                out.held.insert(name);
            }
            Ok(cfg) => {
                out.managed.insert(
                    name.clone(),
                    managed_resources(
                        gw,
                        &g.listeners_for_managed(),
                        params,
                        objects.deployments.get(k),
                        ctx,
                    ),
                );
                out.auth.insert(name.clone(), params.auth_service.clone());
                out.configs.insert(name, cfg.into_config());
            }
            Err(e) => {
                if let Some(st) = out.status.gateways.get_mut(k) {
                    let conds = st.conditions.get_or_insert_with(Vec::new);
                    conds.retain(|c| c.type_ != reason::PROGRAMMED);
                    conds.push(g.stamp.cond(
                        reason::PROGRAMMED,
                        false,
                        reason::INVALID,
                        e.to_string(),
                    ));
                }
                out.held.insert(name);
            }
        }
    }
    out
}

impl GatewayState {
    fn listeners_for_managed(&self) -> Vec<(String, Protocol, u16)> {
        self.listeners
            .iter()
            .map(|l| (l.name.clone(), l.protocol, l.port))
            .collect()
    }
}

fn check_listeners(
    objects: &ObjectSet,
    gw_key: &Key,
    gw: &Gateway,
    stamp: &Stamp,
    ctx: &RenderContext,
) -> (Vec<ValidListener>, Vec<GatewayStatusListeners>) {
    let mut valid = Vec::new();
    let mut statuses = Vec::new();
    let mut taken: BTreeMap<(u16, bool), String> = BTreeMap::new();
    let mut names = BTreeSet::new();
    for l in &gw.spec.listeners {
        let mut conds: Vec<Condition> = Vec::new();
        let protocol = protocol_of(&l.protocol);
        let port = u16::try_from(l.port).ok().filter(|p| *p != 0);
        let mut resolved = stamp.cond(
            reason::RESOLVED_REFS,
            true,
            reason::RESOLVED_REFS,
            "all references resolved",
        );
        let mut conflicted = stamp.cond(
            reason::CONFLICTED,
            false,
            reason::NO_CONFLICTS,
            "no conflicts",
        );
        let mut tls = None;
        let mut kept_certificate = false;
        let accepted = match (protocol, port) {
            (None, _) => Err((
                reason::UNSUPPORTED_PROTOCOL,
                format!(
                    "protocol {:?} is not supported: use TURN-UDP, TURN-TCP or TURN-TLS",
                    l.protocol
                ),
            )),
            (_, None) => Err((
                reason::PORT_UNAVAILABLE,
                format!("port {} is out of range", l.port),
            )),
            (Some(p), Some(port)) => {
                let udp = p == Protocol::TurnUdp;
                if !names.insert(l.name.clone()) {
                    conflicted = stamp.cond(
                        reason::CONFLICTED,
                        true,
                        reason::PROTOCOL_CONFLICT,
                        "duplicate listener name",
                    );
                    Err((
                        reason::PORT_UNAVAILABLE,
                        format!("listener name {:?} is used twice", l.name),
                    ))
                } else if let Some(first) = taken.get(&(port, udp)) {
                    conflicted = stamp.cond(
                        reason::CONFLICTED,
                        true,
                        reason::PROTOCOL_CONFLICT,
                        format!(
                            "listener {first:?} already serves {} port {port}",
                            if udp { "UDP" } else { "TCP" }
                        ),
                    );
                    Err((
                        reason::PORT_UNAVAILABLE,
                        format!("port {port} is taken by listener {first:?}"),
                    ))
                } else {
                    if p == Protocol::TurnTls {
                        let serving = ctx
                            .serving_certificates
                            .get(&(key_string(gw_key), l.name.clone()));
                        match (listener_tls(objects, gw_key, l), serving) {
                            (Ok(t), _) => tls = Some(t),
                            // A revoked ReferenceGrant is a decision, not an accident.
                            (Err((r, m)), Some(old)) if r != reason::REF_NOT_PERMITTED => {
                                tls = Some(old.clone());
                                kept_certificate = true;
                                resolved = stamp.cond(
                                    reason::RESOLVED_REFS,
                                    false,
                                    r,
                                    format!("{m}; still serving the previous certificate"),
                                );
                            }
                            (Err((r, m)), _) => {
                                resolved = stamp.cond(reason::RESOLVED_REFS, false, r, m);
                            }
                        }
                    }
                    taken.insert((port, udp), l.name.clone());
                    Ok((p, port))
                }
            }
        };
        let refs_ok = resolved.status == "True" || kept_certificate;
        match &accepted {
            Ok(_) => conds.push(stamp.cond(
                reason::ACCEPTED,
                true,
                reason::ACCEPTED,
                "listener accepted",
            )),
            Err((r, m)) => conds.push(stamp.cond(reason::ACCEPTED, false, r, m.clone())),
        }
        let programmed = accepted.is_ok() && refs_ok;
        let served = protocol.is_some_and(|p| SERVED_PROTOCOLS.contains(&p));
        conds.push(match (programmed, served) {
            (true, true) => stamp.cond(
                reason::PROGRAMMED,
                true,
                reason::PROGRAMMED,
                "served by the dataplane",
            ),
            (true, false) => stamp.cond(
                reason::PROGRAMMED,
                false,
                reason::PENDING,
                format!(
                    "{} is configured but this dataplane version serves only TURN-UDP",
                    l.protocol
                ),
            ),
            _ => stamp.cond(reason::PROGRAMMED, false, reason::INVALID, "not served"),
        });
        conds.push(resolved);
        conds.push(conflicted);
        let kinds = l.allowed_routes.as_ref().and_then(|a| a.kinds.as_ref());
        let allows_udproute = kinds.is_none_or(|ks| {
            ks.iter().any(|k| {
                k.kind == "UDPRoute" && k.group.as_deref().is_none_or(|g| g == GATEWAY_GROUP)
            })
        });
        statuses.push(GatewayStatusListeners {
            name: l.name.clone(),
            attached_routes: 0,
            supported_kinds: Some(if allows_udproute {
                vec![GatewayStatusListenersSupportedKinds {
                    group: Some(GATEWAY_GROUP.into()),
                    kind: "UDPRoute".into(),
                }]
            } else {
                vec![]
            }),
            conditions: conds,
        });
        if let (Ok((p, port)), true) = (accepted, programmed) {
            valid.push(ValidListener {
                name: l.name.clone(),
                protocol: p,
                port,
                tls,
                hostname: l.hostname.clone().filter(|h| !h.starts_with('*')),
                allowed_from: l
                    .allowed_routes
                    .as_ref()
                    .and_then(|a| a.namespaces.as_ref())
                    .and_then(|n| n.from.clone())
                    .unwrap_or(GatewayListenersAllowedRoutesNamespacesFrom::Same),
                namespace_selector: l
                    .allowed_routes
                    .as_ref()
                    .and_then(|a| a.namespaces.as_ref())
                    .and_then(|n| n.selector.clone()),
                allows_udproute,
            });
        }
    }
    (valid, statuses)
}

fn listener_tls(
    objects: &ObjectSet,
    gw_key: &Key,
    l: &GatewayListeners,
) -> Result<TlsConfig, (&'static str, String)> {
    let refs = l.tls.as_ref().and_then(|t| t.certificate_refs.as_ref());
    let Some(r) = refs.and_then(|r| r.first()) else {
        return Err((
            reason::INVALID_CERTIFICATE_REF,
            "TURN-TLS needs tls.certificateRefs".into(),
        ));
    };
    if r.kind.as_deref().unwrap_or("Secret") != "Secret"
        || !r.group.as_deref().unwrap_or("").is_empty()
    {
        return Err((
            reason::INVALID_CERTIFICATE_REF,
            format!("certificateRef {} is not a Secret", r.name),
        ));
    }
    let ns = r.namespace.as_deref().unwrap_or(&gw_key.0);
    if ns != gw_key.0 && !endpoints::secret_granted(objects, &gw_key.0, ns, &r.name) {
        return Err((
            reason::REF_NOT_PERMITTED,
            format!(
                "Secret {ns}/{} is in another namespace and no ReferenceGrant allows it",
                r.name
            ),
        ));
    }
    match (
        objects.secret_value(ns, &r.name, "tls.crt"),
        objects.secret_value(ns, &r.name, "tls.key"),
    ) {
        (Some(cert_pem), Some(key_pem)) => {
            let t = TlsConfig { cert_pem, key_pem };
            // The dataplane would refuse the whole config over a bad pair; catch it here
            // so only this listener is affected and its status says why.
            match turnpike_contract::tls::server_config(&t) {
                Ok(_) => Ok(t),
                Err(e) => Err((
                    reason::INVALID_CERTIFICATE_REF,
                    format!("Secret {ns}/{}: {e}", r.name),
                )),
            }
        }
        _ => Err((
            reason::INVALID_CERTIFICATE_REF,
            format!("Secret {ns}/{} with tls.crt and tls.key not found", r.name),
        )),
    }
}

/// `spec.addresses[0]`, else the managed Service's load-balancer ingress.
fn public_address(objects: &ObjectSet, k: &Key, gw: &Gateway) -> Option<String> {
    if let Some(v) = gw
        .spec
        .addresses
        .as_ref()
        .and_then(|a| a.first())
        .and_then(|a| a.value.clone())
    {
        return Some(v);
    }
    let svc = objects.services.get(k)?;
    let ingress = svc
        .status
        .as_ref()?
        .load_balancer
        .as_ref()?
        .ingress
        .as_ref()?
        .first()?;
    ingress.ip.clone().or_else(|| ingress.hostname.clone())
}

/// The Gateway a parentRef names, if it names one.
fn parent_gateway(p: &UdpRouteParentRefs, route_ns: &str) -> Option<Key> {
    (p.group.as_deref().unwrap_or(GATEWAY_GROUP) == GATEWAY_GROUP
        && p.kind.as_deref().unwrap_or("Gateway") == "Gateway")
        .then(|| {
            (
                p.namespace.as_deref().unwrap_or(route_ns).to_string(),
                p.name.clone(),
            )
        })
}

/// Attaches `route` to the listeners its parentRefs select; returns its status (our
/// parents only) and resolved endpoints, or `None` when no parentRef is ours.
fn attach_route(
    objects: &ObjectSet,
    slices: &endpoints::SliceIndex<'_>,
    rk: &Key,
    route: &UdpRoute,
    gateways: &mut BTreeMap<Key, GatewayState>,
    base: &Stamp,
) -> Option<(UdpRouteStatus, Vec<EndpointSpec>)> {
    let stamp = base.with_generation(generation(route));
    let route_name = key_string(rk);
    let mut endpoints = Vec::new();
    let mut unresolved = Vec::new();
    for rule in &route.spec.rules {
        for b in &rule.backend_refs {
            match endpoints::resolve(objects, slices, &rk.0, b) {
                Ok(eps) => endpoints.extend(eps),
                Err(u) => unresolved.push(u),
            }
        }
    }
    endpoints.sort();
    endpoints.dedup();
    let refs_cond = match unresolved.first() {
        None => stamp.cond(
            reason::RESOLVED_REFS,
            true,
            reason::RESOLVED_REFS,
            "all backends resolved",
        ),
        Some(u) => stamp.cond(
            reason::RESOLVED_REFS,
            false,
            u.reason,
            unresolved
                .iter()
                .map(|u| u.message.as_str())
                .collect::<Vec<_>>()
                .join("; "),
        ),
    };
    let mut parents = Vec::new();
    for p in route.spec.parent_refs.iter().flatten() {
        let Some(gk) = parent_gateway(p, &rk.0).filter(|k| gateways.contains_key(k)) else {
            continue;
        };
        let Some(g) = gateways.get_mut(&gk) else {
            continue;
        };
        let candidates: Vec<&ValidListener> = g
            .listeners
            .iter()
            .filter(|l| p.section_name.as_deref().is_none_or(|s| s == l.name))
            .filter(|l| p.port.is_none_or(|port| i32::from(l.port) == port))
            .collect();
        let accepted = if candidates.is_empty() {
            Err((
                reason::NO_MATCHING_PARENT,
                match &p.section_name {
                    Some(s) => format!("Gateway {} has no valid listener {s:?}", key_string(&gk)),
                    None => format!("Gateway {} has no valid listener", key_string(&gk)),
                },
            ))
        } else {
            let route_ns_labels = objects.namespace_labels(&rk.0);
            let allowed: Vec<String> = candidates
                .iter()
                .filter(|l| l.allows_udproute)
                .filter(|l| match l.allowed_from {
                    GatewayListenersAllowedRoutesNamespacesFrom::All => true,
                    GatewayListenersAllowedRoutesNamespacesFrom::Same => rk.0 == gk.0,
                    GatewayListenersAllowedRoutesNamespacesFrom::Selector => l
                        .namespace_selector
                        .as_ref()
                        .is_some_and(|s| selector::selects(s, &route_ns_labels)),
                })
                .map(|l| l.name.clone())
                .collect();
            if allowed.is_empty() {
                Err((
                    reason::NOT_ALLOWED_BY_LISTENERS,
                    "the listener does not allow UDPRoutes from this namespace".to_string(),
                ))
            } else {
                Ok(allowed)
            }
        };
        let accepted_cond = match &accepted {
            Ok(ls) => {
                for l in ls {
                    g.attached
                        .entry(l.clone())
                        .or_default()
                        .insert(route_name.clone());
                }
                stamp.cond(
                    reason::ACCEPTED,
                    true,
                    reason::ACCEPTED,
                    format!("attached to {}", ls.join(", ")),
                )
            }
            Err((r, m)) => stamp.cond(reason::ACCEPTED, false, r, m.clone()),
        };
        parents.push(UdpRouteStatusParents {
            controller_name: CONTROLLER_NAME.into(),
            parent_ref: UdpRouteStatusParentsParentRef {
                group: p.group.clone(),
                kind: p.kind.clone(),
                name: p.name.clone(),
                namespace: p.namespace.clone(),
                port: p.port,
                section_name: p.section_name.clone(),
            },
            conditions: vec![accepted_cond, refs_cond.clone()],
        });
    }
    if parents.is_empty() {
        return None;
    }
    Some((UdpRouteStatus { parents }, endpoints))
}

fn gateway_status(g: &GatewayState) -> GatewayStatus {
    let s = &g.stamp;
    let mut conds = Vec::new();
    match &g.params_error {
        Some(e) => {
            conds.push(s.cond(
                reason::ACCEPTED,
                false,
                reason::INVALID_PARAMETERS,
                e.clone(),
            ));
            conds.push(s.cond(
                reason::PROGRAMMED,
                false,
                reason::INVALID,
                "the GatewayClass parameters are invalid",
            ));
        }
        None if g.listeners.is_empty() => {
            conds.push(s.cond(
                reason::ACCEPTED,
                false,
                reason::LISTENERS_NOT_VALID,
                "no valid listener",
            ));
            conds.push(s.cond(
                reason::PROGRAMMED,
                false,
                reason::INVALID,
                "no valid listener",
            ));
        }
        None => {
            // Some invalid listeners do not stop the valid ones: Accepted stays True, with
            // ListenersNotValid as Gateway API prescribes.
            let invalid = g.listener_status.len() - g.listeners.len();
            conds.push(if invalid == 0 {
                s.cond(
                    reason::ACCEPTED,
                    true,
                    reason::ACCEPTED,
                    "all listeners accepted",
                )
            } else {
                s.cond(
                    reason::ACCEPTED,
                    true,
                    reason::LISTENERS_NOT_VALID,
                    format!("{invalid} listener(s) not valid"),
                )
            });
            match &g.address {
                Some(a) => conds.push(s.cond(
                    reason::PROGRAMMED,
                    true,
                    reason::PROGRAMMED,
                    format!("serving on {a}"),
                )),
                None => conds.push(s.cond(
                    reason::PROGRAMMED,
                    false,
                    reason::ADDRESS_NOT_ASSIGNED,
                    "no spec.addresses and no load-balancer ingress yet",
                )),
            }
        }
    }
    let listeners = g
        .listener_status
        .iter()
        .cloned()
        .map(|mut l| {
            l.attached_routes = g.attached.get(&l.name).map_or(0, |r| r.len() as i32);
            l
        })
        .collect();
    GatewayStatus {
        addresses: g.address.as_ref().map(|a| {
            vec![GatewayStatusAddresses {
                r#type: Some(
                    if a.parse::<std::net::IpAddr>().is_ok() {
                        "IPAddress"
                    } else {
                        "Hostname"
                    }
                    .into(),
                ),
                value: a.clone(),
            }]
        }),
        attached_listener_sets: None,
        conditions: Some(conds),
        listeners: Some(listeners),
    }
}

fn dataplane_config(
    g: &GatewayState,
    params: &ResolvedParams,
    route_endpoints: &BTreeMap<String, Vec<EndpointSpec>>,
    ctx: &RenderContext,
) -> DataplaneConfig {
    let bind: std::net::IpAddr = if ctx.standalone {
        g.address
            .as_deref()
            .and_then(|a| a.parse().ok())
            .unwrap_or(std::net::IpAddr::from([0, 0, 0, 0]))
    } else {
        std::net::IpAddr::from([0, 0, 0, 0])
    };
    let mut used_routes = BTreeSet::new();
    let listeners = g
        .listeners
        .iter()
        .map(|l| {
            let routes: Vec<String> = g
                .attached
                .get(&l.name)
                .into_iter()
                .flatten()
                .cloned()
                .collect();
            used_routes.extend(routes.iter().cloned());
            // Browsers check a TURNS certificate against the URI host, so a TLS listener
            // is reached by its hostname, else the certificate's name, else the address.
            let tls_host = l.tls.as_ref().and_then(|t| {
                l.hostname.clone().or_else(|| {
                    let info = turnpike_contract::tls::certificate_info(t).ok()?;
                    turnpike_contract::tls::uri_host(&info).map(str::to_string)
                })
            });
            let public = tls_host.or_else(|| g.address.clone());
            ListenerConfig {
                name: l.name.clone(),
                protocol: l.protocol,
                address: bind,
                port: l.port,
                public_port: public.as_ref().map(|_| l.port),
                public_address: public,
                tls: l.tls.clone(),
                routes,
            }
        })
        .collect();
    DataplaneConfig {
        version: VERSION.into(),
        name: key_string(&g.key),
        generation: 0,
        realm: params.realm.clone(),
        auth: params.auth.clone(),
        limits: params.limits,
        listeners,
        routes: used_routes
            .into_iter()
            .map(|name| RouteConfig {
                endpoints: route_endpoints.get(&name).cloned().unwrap_or_default(),
                name,
            })
            .collect(),
    }
}

/// True when a condition of `type_` in `conds` is True (for callers inspecting status).
pub fn condition_true(conds: &Option<Vec<Condition>>, type_: &str) -> bool {
    conds.as_deref().is_some_and(|c| is_true(c, type_))
}
