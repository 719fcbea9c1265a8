//! Resolving a UDPRoute backendRef to the peers a dataplane may relay to.

use std::collections::BTreeMap;
use std::net::IpAddr;

use gateway_api::experimental::udproutes::UdpRouteRulesBackendRefs;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use turnpike_contract::config::EndpointSpec;

use crate::crd::GROUP;
use crate::objects::{ObjectKey, ObjectSet};

use super::conditions::reason;

pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Service annotation: the relay may also reach the Service's ready endpoints on every
/// port of this range (`20000-20199`, or one port). Media servers such as Janus take one
/// port per call from a range; a Service can only list single ports, and Gateway API
/// requires a backendRef to a Service to name one of them.
pub const PEER_PORT_RANGE_ANNOTATION: &str = "turnpike.dev/peer-port-range";
const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";

/// Why a backendRef did not resolve: a Gateway API reason and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unresolved {
    pub reason: &'static str,
    pub message: String,
}

fn unresolved(reason: &'static str, message: String) -> Unresolved {
    Unresolved { reason, message }
}

/// EndpointSlices by the `(namespace, Service name)` they belong to, built once per render
/// so resolving a backend never scans every slice of the cluster.
#[derive(Default)]
pub struct SliceIndex<'a> {
    by_service: BTreeMap<(&'a str, &'a str), Vec<&'a EndpointSlice>>,
}

impl<'a> SliceIndex<'a> {
    pub fn new(objects: &'a ObjectSet) -> Self {
        let mut by_service: BTreeMap<(&str, &str), Vec<&EndpointSlice>> = BTreeMap::new();
        for (k, slice) in &objects.endpoint_slices {
            let ns = &k.namespace;
            if let Some(svc) = slice
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL))
            {
                by_service
                    .entry((ns.as_str(), svc.as_str()))
                    .or_default()
                    .push(slice);
            }
        }
        SliceIndex { by_service }
    }
}

/// The peers a backendRef names, as dataplane endpoints (`IP:port`, or a StaticService's
/// `IP`, `CIDR` and port ranges).
pub fn resolve(
    objects: &ObjectSet,
    slices: &SliceIndex<'_>,
    route_ns: &str,
    backend: &UdpRouteRulesBackendRefs,
) -> Result<Vec<EndpointSpec>, Unresolved> {
    let group = backend.group.as_deref().unwrap_or("");
    let kind = backend.kind.as_deref().unwrap_or("Service");
    let ns = backend.namespace.as_deref().unwrap_or(route_ns);
    let name = &backend.name;
    if ns != route_ns && !reference_granted(objects, route_ns, ns, group, kind, name) {
        return Err(unresolved(
            reason::REF_NOT_PERMITTED,
            format!(
                "{kind} {ns}/{name} is in another namespace and no ReferenceGrant there allows UDPRoutes from {route_ns}"
            ),
        ));
    }
    match (group, kind) {
        ("", "Service") => {
            let Some(svc) = objects.services.get(&ObjectKey::new(ns, name.as_str())) else {
                return Err(unresolved(
                    reason::BACKEND_NOT_FOUND,
                    format!("Service {ns}/{name} not found"),
                ));
            };
            let Some(port) = backend.port else {
                return Err(unresolved(
                    reason::UNSUPPORTED_VALUE,
                    format!("backendRef to Service {ns}/{name} needs a port"),
                ));
            };
            service_endpoints(slices, ns, name, svc, port)
        }
        (GROUP, "StaticService") => {
            let Some(s) = objects
                .static_services
                .get(&ObjectKey::new(ns, name.as_str()))
            else {
                return Err(unresolved(
                    reason::BACKEND_NOT_FOUND,
                    format!("StaticService {ns}/{name} not found"),
                ));
            };
            let mut out = Vec::new();
            for a in &s.spec.addresses {
                if s.spec.ports.is_empty() {
                    out.push(a.clone());
                }
                for p in &s.spec.ports {
                    let host = bracket(a);
                    match p.end_port {
                        Some(end) if end != p.port => out.push(format!("{host}:{}-{end}", p.port)),
                        _ => out.push(format!("{host}:{}", p.port)),
                    }
                }
            }
            out.iter()
                .map(|e| {
                    e.parse().map_err(|m| {
                        unresolved(
                            reason::UNSUPPORTED_VALUE,
                            format!("StaticService {ns}/{name}: {m}"),
                        )
                    })
                })
                .collect()
        }
        _ => Err(unresolved(
            reason::INVALID_KIND,
            format!(
                "backendRef kind {kind:?} in group {group:?} is not supported (use Service or turnpike.dev StaticService)"
            ),
        )),
    }
}

fn bracket(ip: &str) -> String {
    if ip.contains(':') {
        format!("[{ip}]")
    } else {
        ip.to_string()
    }
}

/// The ready EndpointSlice addresses on the Service port's target port, plus
/// ClusterIP:port, plus the ready addresses on the range of
/// [`PEER_PORT_RANGE_ANNOTATION`] when the Service has one.
fn service_endpoints(
    slices: &SliceIndex<'_>,
    ns: &str,
    name: &str,
    svc: &Service,
    port: i32,
) -> Result<Vec<EndpointSpec>, Unresolved> {
    let spec = svc.spec.as_ref();
    let svc_port = spec
        .and_then(|s| s.ports.as_ref())
        .and_then(|ports| ports.iter().find(|p| p.port == port));
    let Some(svc_port) = svc_port else {
        return Err(unresolved(
            reason::BACKEND_NOT_FOUND,
            format!("Service {ns}/{name} has no port {port}"),
        ));
    };
    let range = peer_port_range(ns, name, svc)?;
    let mut ranged = Vec::new();
    let mut out = Vec::new();
    // Addresses that are not IPs (FQDN EndpointSlices) name nothing a relay can reach.
    let mut add = |ip: &str, port: i32| {
        if let (Ok(ip), Ok(port)) = (ip.parse::<IpAddr>(), u16::try_from(port)) {
            out.push(EndpointSpec::host_port(ip, port));
        }
    };
    for ip in spec
        .and_then(|s| {
            s.cluster_ips
                .clone()
                .or_else(|| s.cluster_ip.clone().map(|c| vec![c]))
        })
        .into_iter()
        .flatten()
    {
        add(&ip, port);
    }
    let port_name = svc_port.name.clone().unwrap_or_default();
    let target = svc_port.target_port.clone();
    for slice in slices.by_service.get(&(ns, name)).into_iter().flatten() {
        // The slice port that carries this Service port: same name (Kubernetes names slice
        // ports after Service ports), or, for hand-written slices, the target port number.
        let slice_port = slice.ports.iter().flatten().find_map(|p| {
            let by_name = p.name.clone().unwrap_or_default() == port_name;
            let by_number = match &target {
                Some(IntOrString::Int(t)) => p.port == Some(*t),
                _ => false,
            };
            (by_name || by_number).then_some(p.port).flatten()
        });
        for ep in &slice.endpoints {
            let ready = ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
            if !ready {
                continue;
            }
            for a in &ep.addresses {
                if let Some(slice_port) = slice_port {
                    add(a, slice_port);
                }
                if let (Some((first, last)), Ok(ip)) = (range, a.parse::<IpAddr>()) {
                    ranged.push(EndpointSpec::host_port_range(ip, first, last));
                }
            }
        }
    }
    out.extend(ranged);
    out.sort();
    out.dedup();
    Ok(out)
}

/// The port range a Service's [`PEER_PORT_RANGE_ANNOTATION`] names, if it has one.
fn peer_port_range(ns: &str, name: &str, svc: &Service) -> Result<Option<(u16, u16)>, Unresolved> {
    let Some(text) = svc
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(PEER_PORT_RANGE_ANNOTATION))
    else {
        return Ok(None);
    };
    let invalid = || {
        unresolved(
            reason::UNSUPPORTED_VALUE,
            format!(
                "Service {ns}/{name}: metadata.annotations[{PEER_PORT_RANGE_ANNOTATION:?}]: {text:?} is not a port range such as \"20000-20199\""
            ),
        )
    };
    let (first, last) = text
        .trim()
        .split_once('-')
        .unwrap_or((text.trim(), text.trim()));
    let first: u16 = first.trim().parse().map_err(|_| invalid())?;
    let last: u16 = last.trim().parse().map_err(|_| invalid())?;
    if first == 0 || last < first {
        return Err(invalid());
    }
    Ok(Some((first, last)))
}

/// Does a ReferenceGrant in `to_ns` allow UDPRoutes from `from_ns` to reach this object?
pub fn reference_granted(
    objects: &ObjectSet,
    from_ns: &str,
    to_ns: &str,
    group: &str,
    kind: &str,
    name: &str,
) -> bool {
    objects
        .reference_grants
        .iter()
        .filter(|(k, _)| k.namespace == to_ns)
        .any(|(_, g)| {
            let from_ok = g.spec.from.iter().any(|f| {
                f.group == GATEWAY_GROUP && f.kind == "UDPRoute" && f.namespace == from_ns
            });
            let to_ok = g.spec.to.iter().any(|t| {
                t.group == group && t.kind == kind && t.name.as_deref().is_none_or(|n| n == name)
            });
            from_ok && to_ok
        })
}

/// Does a ReferenceGrant in `to_ns` allow Gateways from `from_ns` to use Secret `name`?
pub fn secret_granted(objects: &ObjectSet, from_ns: &str, to_ns: &str, name: &str) -> bool {
    objects
        .reference_grants
        .iter()
        .filter(|(k, _)| k.namespace == to_ns)
        .any(|(_, g)| {
            g.spec
                .from
                .iter()
                .any(|f| f.group == GATEWAY_GROUP && f.kind == "Gateway" && f.namespace == from_ns)
                && g.spec.to.iter().any(|t| {
                    t.group.is_empty()
                        && t.kind == "Secret"
                        && t.name.as_deref().is_none_or(|n| n == name)
                })
        })
}
