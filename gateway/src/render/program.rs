//! What a checked Gateway becomes: its status and the dataplane config it serves.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use gateway_api::gateways::{Gateway, GatewayStatus, GatewayStatusAddresses};
use turnpike_contract::config::{
    DataplaneConfig, EndpointSpec, ListenerConfig, RouteConfig, VERSION,
};

use super::conditions::reason;
use super::params::ResolvedParams;
use super::{GatewayState, RenderContext};
use crate::objects::{ObjectKey, ObjectSet};

/// `spec.addresses[0]`, else the managed Service's load-balancer ingress.
pub(super) fn public_address(objects: &ObjectSet, k: &ObjectKey, gw: &Gateway) -> Option<String> {
    if let Some(v) = gw
        .spec
        .addresses
        .as_ref()
        .and_then(|a| a.first())
        .and_then(|a| a.value.clone())
    {
        return Some(v);
    }
    let ingress = objects
        .services
        .get(k)?
        .status
        .as_ref()?
        .load_balancer
        .as_ref()?
        .ingress
        .as_ref()?
        .first()?;
    ingress.ip.clone().or_else(|| ingress.hostname.clone())
}

pub(super) fn gateway_status(g: &GatewayState) -> GatewayStatus {
    let s = &g.stamp;
    let conds = match &g.params_error {
        Some(e) => vec![
            s.rejected(reason::INVALID_PARAMETERS, e.to_string()),
            s.not_programmed(reason::INVALID, "the GatewayClass parameters are invalid"),
        ],
        None if g.listeners.is_empty() => vec![
            s.rejected(reason::LISTENERS_NOT_VALID, "no valid listener"),
            s.not_programmed(reason::INVALID, "no valid listener"),
        ],
        None => {
            // Some invalid listeners do not stop the valid ones: Accepted stays True, with
            // ListenersNotValid as Gateway API prescribes.
            let invalid = g.listener_status.len() - g.listeners.len();
            vec![
                if invalid == 0 {
                    s.accepted("all listeners accepted")
                } else {
                    s.accepted_because(
                        reason::LISTENERS_NOT_VALID,
                        format!("{invalid} listener(s) not valid"),
                    )
                },
                match &g.address {
                    Some(a) => s.programmed(format!("serving on {a}")),
                    None => s.not_programmed(
                        reason::ADDRESS_NOT_ASSIGNED,
                        "no spec.addresses and no load-balancer ingress yet",
                    ),
                },
            ]
        }
    };
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
            let kind = if a.parse::<IpAddr>().is_ok() {
                "IPAddress"
            } else {
                "Hostname"
            };
            vec![GatewayStatusAddresses {
                r#type: Some(kind.into()),
                value: a.clone(),
            }]
        }),
        attached_listener_sets: None,
        conditions: Some(conds),
        listeners: Some(listeners),
    }
}

pub(super) fn dataplane_config(
    g: &GatewayState,
    params: &ResolvedParams,
    route_peers: &BTreeMap<ObjectKey, Vec<EndpointSpec>>,
    ctx: &RenderContext,
) -> DataplaneConfig {
    let any = IpAddr::from([0, 0, 0, 0]);
    // Standalone mode binds the Gateway's own address (a laptop's 127.0.0.1 stays private);
    // a pod binds every address.
    let bind = match ctx.standalone {
        true => g
            .address
            .as_deref()
            .and_then(|a| a.parse().ok())
            .unwrap_or(any),
        false => any,
    };
    let mut used_routes = BTreeSet::new();
    let listeners = g
        .listeners
        .iter()
        .map(|l| {
            let routes: Vec<&ObjectKey> = g.attached.get(&l.name).into_iter().flatten().collect();
            used_routes.extend(routes.iter().copied());
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
                routes: routes.iter().map(ToString::to_string).collect(),
            }
        })
        .collect();
    DataplaneConfig {
        version: VERSION.into(),
        name: g.key.to_string(),
        generation: 0,
        realm: params.realm.clone(),
        auth: params.auth.clone(),
        limits: params.limits,
        listeners,
        routes: used_routes
            .into_iter()
            .map(|route| RouteConfig {
                name: route.to_string(),
                endpoints: route_peers.get(route).cloned().unwrap_or_default(),
            })
            .collect(),
    }
}
