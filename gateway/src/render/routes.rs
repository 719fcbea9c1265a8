//! UDPRoutes: which listeners each of their parentRefs attaches to, and the peers their
//! backendRefs resolve to.

use std::collections::BTreeMap;

use gateway_api::experimental::udproutes::{
    UdpRoute, UdpRouteParentRefs, UdpRouteStatus, UdpRouteStatusParents,
    UdpRouteStatusParentsParentRef,
};
use gateway_api::gateways::GatewayListenersAllowedRoutesNamespacesFrom as From;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use turnpike_contract::config::EndpointSpec;

use super::conditions::{Stamp, reason};
use super::listeners::ValidListener;
use super::{GATEWAY_GROUP, GatewayState, endpoints, generation, selector};
use crate::crd::CONTROLLER_NAME;
use crate::objects::{ObjectKey, ObjectSet};

/// The Gateway a parentRef names, if it names one.
fn parent_gateway(p: &UdpRouteParentRefs, route_ns: &str) -> Option<ObjectKey> {
    (p.group.as_deref().unwrap_or(GATEWAY_GROUP) == GATEWAY_GROUP
        && p.kind.as_deref().unwrap_or("Gateway") == "Gateway")
        .then(|| ObjectKey::new(p.namespace.as_deref().unwrap_or(route_ns), p.name.as_str()))
}

/// The peers of every backendRef of `route`, sorted, and its `ResolvedRefs` condition
/// (every unresolved backend named in it).
fn resolve_backends(
    objects: &ObjectSet,
    slices: &endpoints::SliceIndex<'_>,
    rk: &ObjectKey,
    route: &UdpRoute,
    stamp: &Stamp,
) -> (Vec<EndpointSpec>, Condition) {
    let mut peers = Vec::new();
    let mut unresolved = Vec::new();
    for b in route.spec.rules.iter().flat_map(|r| &r.backend_refs) {
        match endpoints::resolve(objects, slices, &rk.namespace, b) {
            Ok(eps) => peers.extend(eps),
            Err(u) => unresolved.push(u),
        }
    }
    peers.sort();
    peers.dedup();
    let condition = match unresolved.first() {
        None => stamp.resolved("all backends resolved"),
        Some(first) => stamp.unresolved(
            first.reason,
            unresolved
                .iter()
                .map(|u| u.message.as_str())
                .collect::<Vec<_>>()
                .join("; "),
        ),
    };
    (peers, condition)
}

/// The listeners of `g` that parentRef `p` of route `rk` attaches to, or why none.
fn attachable(
    objects: &ObjectSet,
    rk: &ObjectKey,
    gk: &ObjectKey,
    g: &GatewayState,
    p: &UdpRouteParentRefs,
) -> Result<Vec<String>, (&'static str, String)> {
    let candidates: Vec<&ValidListener> = g
        .listeners
        .iter()
        .filter(|l| p.section_name.as_deref().is_none_or(|s| s == l.name))
        .filter(|l| p.port.is_none_or(|port| i32::from(l.port) == port))
        .collect();
    if candidates.is_empty() {
        let listener = match &p.section_name {
            Some(s) => format!(" {s:?}"),
            None => String::new(),
        };
        return Err((
            reason::NO_MATCHING_PARENT,
            format!("Gateway {gk} has no valid listener{listener}"),
        ));
    }
    let route_ns_labels = objects.namespace_labels(&rk.namespace);
    let allowed: Vec<String> = candidates
        .iter()
        .filter(|l| l.allows_udproute)
        .filter(|l| match l.allowed_from {
            From::All => true,
            From::Same => rk.namespace == gk.namespace,
            From::Selector => l
                .namespace_selector
                .as_ref()
                .is_some_and(|s| selector::selects(s, &route_ns_labels)),
        })
        .map(|l| l.name.clone())
        .collect();
    if allowed.is_empty() {
        return Err((
            reason::NOT_ALLOWED_BY_LISTENERS,
            "the listener does not allow UDPRoutes from this namespace".into(),
        ));
    }
    Ok(allowed)
}

/// Attaches `route` to the listeners its parentRefs select; returns its status (our
/// parents only) and resolved peers, or `None` when no parentRef is ours.
pub(super) fn attach_route(
    objects: &ObjectSet,
    slices: &endpoints::SliceIndex<'_>,
    rk: &ObjectKey,
    route: &UdpRoute,
    gateways: &mut BTreeMap<ObjectKey, GatewayState>,
    base: &Stamp,
) -> Option<(UdpRouteStatus, Vec<EndpointSpec>)> {
    let stamp = base.with_generation(generation(route));
    let (peers, refs_condition) = resolve_backends(objects, slices, rk, route, &stamp);
    let mut parents = Vec::new();
    for p in route.spec.parent_refs.iter().flatten() {
        let Some(gk) = parent_gateway(p, &rk.namespace) else {
            continue;
        };
        let Some(g) = gateways.get_mut(&gk) else {
            continue;
        };
        let accepted = match attachable(objects, rk, &gk, g, p) {
            Ok(listeners) => {
                for l in &listeners {
                    g.attached.entry(l.clone()).or_default().insert(rk.clone());
                }
                stamp.accepted(format!("attached to {}", listeners.join(", ")))
            }
            Err((why, message)) => stamp.rejected(why, message),
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
            conditions: vec![accepted, refs_condition.clone()],
        });
    }
    if parents.is_empty() {
        return None;
    }
    Some((UdpRouteStatus { parents }, peers))
}
