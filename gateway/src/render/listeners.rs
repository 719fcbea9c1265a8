//! A Gateway's listeners: each is checked on its own (protocol, port, name, conflicts with
//! the listeners before it, its certificate), and the verdicts become its status
//! conditions and, for the valid ones, what the dataplane serves.

use std::collections::{BTreeMap, BTreeSet};

use gateway_api::gateways::{
    Gateway, GatewayListeners, GatewayListenersAllowedRoutesNamespacesFrom,
    GatewayListenersAllowedRoutesNamespacesSelector, GatewayStatusListeners,
    GatewayStatusListenersSupportedKinds,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use turnpike_contract::config::{Protocol, TlsConfig};

use super::conditions::{Stamp, reason};
use super::{GATEWAY_GROUP, RenderContext, endpoints};
use crate::objects::{ObjectKey, ObjectSet};

/// A listener that passed every check.
pub(super) struct ValidListener {
    pub name: String,
    pub protocol: Protocol,
    pub port: u16,
    pub tls: Option<TlsConfig>,
    /// The listener's `hostname`: what a `turns:` URI must name.
    pub hostname: Option<String>,
    pub allowed_from: GatewayListenersAllowedRoutesNamespacesFrom,
    /// For `from: Selector`; none selects no namespace.
    pub namespace_selector: Option<GatewayListenersAllowedRoutesNamespacesSelector>,
    pub allows_udproute: bool,
}

/// Why a listener is not accepted: a Gateway API reason and a message.
struct Rejection {
    reason: &'static str,
    message: String,
}

fn rejection(reason: &'static str, message: impl Into<String>) -> Rejection {
    Rejection {
        reason,
        message: message.into(),
    }
}

/// A listener's protocol by its Gateway API name (`UDP` and `TCP` are accepted aliases).
pub fn protocol_of(p: &str) -> Option<Protocol> {
    match p {
        "TURN-UDP" | "UDP" => Some(Protocol::TurnUdp),
        "TURN-TCP" | "TCP" => Some(Protocol::TurnTcp),
        "TURN-TLS" => Some(Protocol::TurnTls),
        _ => None,
    }
}

/// What the listeners checked so far hold: names, and ports per transport.
#[derive(Default)]
struct Claimed {
    names: BTreeSet<String>,
    ports: BTreeMap<(u16, bool), String>,
}

/// A listener that passed the checks of its own fields and claimed its name and port.
struct Admitted {
    protocol: Protocol,
    port: u16,
}

/// The listener's own fields: a protocol we serve and a port in range.
fn check_fields(l: &GatewayListeners) -> Result<Admitted, Rejection> {
    let Some(protocol) = protocol_of(&l.protocol) else {
        return Err(rejection(
            reason::UNSUPPORTED_PROTOCOL,
            format!(
                "protocol {:?} is not supported: use TURN-UDP, TURN-TCP or TURN-TLS",
                l.protocol
            ),
        ));
    };
    let Some(port) = u16::try_from(l.port).ok().filter(|p| *p != 0) else {
        return Err(rejection(
            reason::PORT_UNAVAILABLE,
            format!("port {} is out of range", l.port),
        ));
    };
    Ok(Admitted { protocol, port })
}

/// Claims the listener's name and (port, transport) against the listeners before it. A
/// clash is a rejection and a `Conflicted` message.
fn claim(
    claimed: &mut Claimed,
    l: &GatewayListeners,
    a: &Admitted,
) -> Result<(), (Rejection, String)> {
    let udp = a.protocol == Protocol::TurnUdp;
    if claimed.names.contains(&l.name) {
        return Err((
            rejection(
                reason::PORT_UNAVAILABLE,
                format!("listener name {:?} is used twice", l.name),
            ),
            "duplicate listener name".into(),
        ));
    }
    claimed.names.insert(l.name.clone());
    if let Some(first) = claimed.ports.get(&(a.port, udp)) {
        let transport = if udp { "UDP" } else { "TCP" };
        return Err((
            rejection(
                reason::PORT_UNAVAILABLE,
                format!("port {} is taken by listener {first:?}", a.port),
            ),
            format!(
                "listener {first:?} already serves {transport} port {}",
                a.port
            ),
        ));
    }
    claimed.ports.insert((a.port, udp), l.name.clone());
    Ok(())
}

/// A TURN-TLS listener's certificate.
enum Certificate {
    /// Not a TLS listener.
    NotNeeded,
    Resolved(TlsConfig),
    /// The Secret turned invalid; the listener keeps serving the certificate it had.
    Kept(TlsConfig, Rejection),
    Unresolved(Rejection),
}

impl Certificate {
    fn check(
        objects: &ObjectSet,
        gw_key: &ObjectKey,
        l: &GatewayListeners,
        ctx: &RenderContext,
    ) -> Certificate {
        let serving = ctx
            .serving_certificates
            .get(&(gw_key.clone(), l.name.clone()));
        match (listener_tls(objects, gw_key, l), serving) {
            (Ok(t), _) => Certificate::Resolved(t),
            // A revoked ReferenceGrant is a decision, not an accident.
            (Err(r), Some(old)) if r.reason != reason::REF_NOT_PERMITTED => {
                Certificate::Kept(old.clone(), r)
            }
            (Err(r), _) => Certificate::Unresolved(r),
        }
    }

    fn tls(&self) -> Option<TlsConfig> {
        match self {
            Certificate::Resolved(t) | Certificate::Kept(t, _) => Some(t.clone()),
            Certificate::NotNeeded | Certificate::Unresolved(_) => None,
        }
    }

    fn condition(&self, stamp: &Stamp) -> Condition {
        match self {
            Certificate::NotNeeded | Certificate::Resolved(_) => {
                stamp.resolved("all references resolved")
            }
            Certificate::Kept(_, r) => stamp.unresolved(
                r.reason,
                format!("{}; still serving the previous certificate", r.message),
            ),
            Certificate::Unresolved(r) => stamp.unresolved(r.reason, r.message.clone()),
        }
    }
}

/// Checks every listener of `gw`: the valid ones, and a status for each.
pub(super) fn check_listeners(
    objects: &ObjectSet,
    gw_key: &ObjectKey,
    gw: &Gateway,
    stamp: &Stamp,
    ctx: &RenderContext,
) -> (Vec<ValidListener>, Vec<GatewayStatusListeners>) {
    let mut valid = Vec::new();
    let mut statuses = Vec::new();
    let mut claimed = Claimed::default();
    for l in &gw.spec.listeners {
        let mut conflict = None;
        let admitted = check_fields(l).and_then(|a| match claim(&mut claimed, l, &a) {
            Ok(()) => Ok(a),
            Err((r, c)) => {
                conflict = Some(c);
                Err(r)
            }
        });
        let certificate = match &admitted {
            Ok(a) if a.protocol == Protocol::TurnTls => Certificate::check(objects, gw_key, l, ctx),
            _ => Certificate::NotNeeded,
        };
        let programmed = admitted.is_ok() && !matches!(certificate, Certificate::Unresolved(_));
        let mut conditions = vec![match &admitted {
            Ok(_) => stamp.accepted("listener accepted"),
            Err(r) => stamp.rejected(r.reason, r.message.clone()),
        }];
        conditions.push(if programmed {
            stamp.programmed("served by the dataplane")
        } else {
            stamp.not_programmed(reason::INVALID, "not served")
        });
        conditions.push(certificate.condition(stamp));
        conditions.push(match conflict {
            Some(c) => stamp.conflicted(c),
            None => stamp.no_conflicts(),
        });
        let allows_udproute = allows_udproute(l);
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
            conditions,
        });
        if let (Ok(a), true) = (admitted, programmed) {
            valid.push(valid_listener(l, a, certificate.tls(), allows_udproute));
        }
    }
    (valid, statuses)
}

/// Whether `allowedRoutes.kinds` (none: the protocol's default) includes UDPRoute.
fn allows_udproute(l: &GatewayListeners) -> bool {
    let kinds = l.allowed_routes.as_ref().and_then(|a| a.kinds.as_ref());
    kinds.is_none_or(|ks| {
        ks.iter()
            .any(|k| k.kind == "UDPRoute" && k.group.as_deref().is_none_or(|g| g == GATEWAY_GROUP))
    })
}

fn valid_listener(
    l: &GatewayListeners,
    a: Admitted,
    tls: Option<TlsConfig>,
    allows_udproute: bool,
) -> ValidListener {
    let namespaces = l
        .allowed_routes
        .as_ref()
        .and_then(|a| a.namespaces.as_ref());
    ValidListener {
        name: l.name.clone(),
        protocol: a.protocol,
        port: a.port,
        tls,
        hostname: l.hostname.clone().filter(|h| !h.starts_with('*')),
        allowed_from: namespaces
            .and_then(|n| n.from.clone())
            .unwrap_or(GatewayListenersAllowedRoutesNamespacesFrom::Same),
        namespace_selector: namespaces.and_then(|n| n.selector.clone()),
        allows_udproute,
    }
}

/// The certificate pair a TURN-TLS listener's first `certificateRefs` entry names.
fn listener_tls(
    objects: &ObjectSet,
    gw_key: &ObjectKey,
    l: &GatewayListeners,
) -> Result<TlsConfig, Rejection> {
    let refs = l.tls.as_ref().and_then(|t| t.certificate_refs.as_ref());
    let Some(r) = refs.and_then(|r| r.first()) else {
        return Err(rejection(
            reason::INVALID_CERTIFICATE_REF,
            "TURN-TLS needs tls.certificateRefs",
        ));
    };
    if r.kind.as_deref().unwrap_or("Secret") != "Secret"
        || !r.group.as_deref().unwrap_or("").is_empty()
    {
        return Err(rejection(
            reason::INVALID_CERTIFICATE_REF,
            format!("certificateRef {} is not a Secret", r.name),
        ));
    }
    let ns = r.namespace.as_deref().unwrap_or(&gw_key.namespace);
    if ns != gw_key.namespace && !endpoints::secret_granted(objects, &gw_key.namespace, ns, &r.name)
    {
        return Err(rejection(
            reason::REF_NOT_PERMITTED,
            format!(
                "Secret {ns}/{} is in another namespace and no ReferenceGrant allows it",
                r.name
            ),
        ));
    }
    let (Some(cert_pem), Some(key_pem)) = (
        objects.secret_value(ns, &r.name, "tls.crt"),
        objects.secret_value(ns, &r.name, "tls.key"),
    ) else {
        return Err(rejection(
            reason::INVALID_CERTIFICATE_REF,
            format!("Secret {ns}/{} with tls.crt and tls.key not found", r.name),
        ));
    };
    let t = TlsConfig { cert_pem, key_pem };
    // The dataplane would refuse the whole config over a bad pair; catch it here so only
    // this listener is affected and its status says why.
    match turnpike_contract::tls::server_config(&t) {
        Ok(_) => Ok(t),
        Err(e) => Err(rejection(
            reason::INVALID_CERTIFICATE_REF,
            format!("Secret {ns}/{}: {e}", r.name),
        )),
    }
}
