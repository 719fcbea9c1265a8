//! What status to write, decided purely from the objects as the API server has them and
//! the statuses the renderer wants: nothing is written when nothing changed (no no-op
//! writes), `lastTransitionTime` moves only when a condition's status does, other
//! controllers' UDPRoute `parents[]` entries survive, and every newly failing condition
//! becomes one Warning Event.

use gateway_api::experimental::udproutes::{UdpRouteStatus, UdpRouteStatusParents};
use gateway_api::gatewayclasses::GatewayClassStatus;
use gateway_api::gateways::GatewayStatus;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::Resource;

use crate::crd::{CONTROLLER_NAME, GatewayConfigStatus};
use crate::objects::{ObjectKey, ObjectSet};
use crate::render::{Statuses, reason};

/// A Warning Event to record on an object.
#[derive(Debug, Clone, PartialEq)]
pub struct Warning {
    pub object: ObjectReference,
    pub reason: String,
    pub message: String,
}

/// The status writes one render calls for.
#[derive(Debug, Default)]
pub struct StatusPlan {
    pub gateway_classes: Vec<(String, GatewayClassStatus)>,
    pub gateway_configs: Vec<(ObjectKey, GatewayConfigStatus)>,
    pub gateways: Vec<(ObjectKey, GatewayStatus)>,
    /// The whole new status (other controllers' entries included).
    pub udp_routes: Vec<(ObjectKey, UdpRouteStatus)>,
    pub warnings: Vec<Warning>,
}

impl StatusPlan {
    pub fn writes(&self) -> usize {
        self.gateway_classes.len()
            + self.gateway_configs.len()
            + self.gateways.len()
            + self.udp_routes.len()
    }
}

/// Keeps the old `lastTransitionTime` of every condition whose status did not change.
pub fn keep_transition_times(old: &[Condition], new: &mut [Condition]) {
    for c in new.iter_mut() {
        if let Some(o) = old
            .iter()
            .find(|o| o.type_ == c.type_ && o.status == c.status)
        {
            c.last_transition_time = o.last_transition_time.clone();
        }
    }
}

/// A condition that reports a problem: anything False, or Conflicted True.
fn failing(c: &Condition) -> bool {
    if c.type_ == reason::CONFLICTED {
        c.status == "True"
    } else {
        c.status == "False"
    }
}

/// Warnings for conditions that fail now and did not fail the same way before. A Pending
/// Programmed (configured, waiting for the dataplane) or an unassigned address is a state
/// to wait out, not a rejection.
fn newly_failing(
    old: &[Condition],
    new: &[Condition],
    object: &ObjectReference,
    context: &str,
    out: &mut Vec<Warning>,
) {
    for c in new.iter().filter(|c| failing(c)) {
        if c.reason == reason::PENDING || c.reason == reason::ADDRESS_NOT_ASSIGNED {
            continue;
        }
        let before = old
            .iter()
            .find(|o| o.type_ == c.type_)
            .is_some_and(|o| o.status == c.status && o.reason == c.reason);
        if !before {
            out.push(Warning {
                object: object.clone(),
                reason: c.reason.clone(),
                message: format!("{context}{}: {}", c.type_, c.message),
            });
        }
    }
}

fn gateway_status(
    old: Option<&GatewayStatus>,
    new: &GatewayStatus,
    object: &ObjectReference,
    warnings: &mut Vec<Warning>,
) -> Option<GatewayStatus> {
    let mut new = new.clone();
    let empty = GatewayStatus::default();
    let old = old.unwrap_or(&empty);
    let old_conds = old.conditions.clone().unwrap_or_default();
    if let Some(c) = new.conditions.as_mut() {
        keep_transition_times(&old_conds, c);
        newly_failing(&old_conds, c, object, "", warnings);
    }
    for l in new.listeners.iter_mut().flatten() {
        let old_l = old
            .listeners
            .iter()
            .flatten()
            .find(|o| o.name == l.name)
            .map(|o| o.conditions.clone())
            .unwrap_or_default();
        keep_transition_times(&old_l, &mut l.conditions);
        newly_failing(
            &old_l,
            &l.conditions,
            object,
            &format!("listener {}: ", l.name),
            warnings,
        );
    }
    (new != *old).then_some(new)
}

fn same_parent(a: &UdpRouteStatusParents, b: &UdpRouteStatusParents) -> bool {
    let (a, b) = (&a.parent_ref, &b.parent_ref);
    a.name == b.name
        && a.namespace == b.namespace
        && a.section_name == b.section_name
        && a.port == b.port
        && a.group == b.group
        && a.kind == b.kind
}

/// The route's new status: every other controller's entries as they are, then ours.
pub fn route_status(
    old: Option<&UdpRouteStatus>,
    ours: Option<&UdpRouteStatus>,
    object: &ObjectReference,
    warnings: &mut Vec<Warning>,
) -> Option<UdpRouteStatus> {
    let old_parents: &[UdpRouteStatusParents] = old.map_or(&[], |s| &s.parents);
    let mut parents: Vec<UdpRouteStatusParents> = old_parents
        .iter()
        .filter(|p| p.controller_name != CONTROLLER_NAME)
        .cloned()
        .collect();
    for p in ours.map_or(&[][..], |s| &s.parents) {
        let mut p = p.clone();
        let previous = old_parents
            .iter()
            .find(|o| o.controller_name == CONTROLLER_NAME && same_parent(o, &p))
            .map(|o| o.conditions.clone())
            .unwrap_or_default();
        keep_transition_times(&previous, &mut p.conditions);
        newly_failing(
            &previous,
            &p.conditions,
            object,
            &format!("parent {}: ", p.parent_ref.name),
            warnings,
        );
        parents.push(p);
    }
    let unchanged = old.map_or(parents.is_empty(), |o| o.parents == parents);
    (!unchanged).then_some(UdpRouteStatus { parents })
}

fn conditions_status(
    old: &[Condition],
    new: &[Condition],
    object: &ObjectReference,
    warnings: &mut Vec<Warning>,
) -> Option<Vec<Condition>> {
    let mut new = new.to_vec();
    keep_transition_times(old, &mut new);
    newly_failing(old, &new, object, "", warnings);
    (new != old).then_some(new)
}

/// Compares what the renderer wants with what the API server has.
pub fn plan(objects: &ObjectSet, want: &Statuses) -> StatusPlan {
    let mut plan = StatusPlan::default();
    for (name, st) in &want.gateway_classes {
        let Some(obj) = objects.gateway_classes.get(name) else {
            continue;
        };
        let old = obj
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default();
        let new = st.conditions.clone().unwrap_or_default();
        if let Some(conditions) =
            conditions_status(&old, &new, &obj.object_ref(&()), &mut plan.warnings)
        {
            plan.gateway_classes.push((
                name.clone(),
                GatewayClassStatus {
                    conditions: Some(conditions),
                    supported_features: obj
                        .status
                        .as_ref()
                        .and_then(|s| s.supported_features.clone()),
                },
            ));
        }
    }
    for (k, st) in &want.gateway_configs {
        let Some(obj) = objects.gateway_configs.get(k) else {
            continue;
        };
        let old = obj
            .status
            .as_ref()
            .map(|s| s.conditions.clone())
            .unwrap_or_default();
        if let Some(conditions) = conditions_status(
            &old,
            &st.conditions,
            &obj.object_ref(&()),
            &mut plan.warnings,
        ) {
            plan.gateway_configs
                .push((k.clone(), GatewayConfigStatus { conditions }));
        }
    }
    for (k, st) in &want.gateways {
        let Some(obj) = objects.gateways.get(k) else {
            continue;
        };
        if let Some(s) = gateway_status(
            obj.status.as_ref(),
            st,
            &obj.object_ref(&()),
            &mut plan.warnings,
        ) {
            plan.gateways.push((k.clone(), s));
        }
    }
    // Routes we rendered, and routes that still carry an entry of ours they no longer earn.
    for (k, route) in &objects.udp_routes {
        let ours = want.udp_routes.get(k);
        let has_ours = route.status.as_ref().is_some_and(|s| {
            s.parents
                .iter()
                .any(|p| p.controller_name == CONTROLLER_NAME)
        });
        if ours.is_none() && !has_ours {
            continue;
        }
        if let Some(s) = route_status(
            route.status.as_ref(),
            ours,
            &route.object_ref(&()),
            &mut plan.warnings,
        ) {
            plan.udp_routes.push((k.clone(), s));
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::{RenderContext, render};
    use crate::source::parse_set;
    use gateway_api::experimental::udproutes::UdpRouteStatusParentsParentRef;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn ctx(second: i64) -> RenderContext {
        RenderContext {
            now: Time(k8s_openapi::jiff::Timestamp::from_second(second).unwrap()),
            standalone: false,
            dataplane_image: "img".into(),
            dataplane_image_pull_policy: None,
            cds_address: "cds:13478".into(),
            previous_secrets: Default::default(),
            serving_certificates: Default::default(),
            offload_reports: Default::default(),
        }
    }

    fn input(case: &str) -> ObjectSet {
        let path = format!(
            "{}/tests/golden/{case}/input.yaml",
            env!("CARGO_MANIFEST_DIR")
        );
        parse_set(&path, &std::fs::read_to_string(&path).unwrap()).unwrap()
    }

    /// What the API server holds after the plan's writes.
    fn write_back(objects: &mut ObjectSet, p: &StatusPlan) {
        for (k, s) in &p.gateway_classes {
            objects.gateway_classes.get_mut(k).unwrap().status = Some(s.clone());
        }
        for (k, s) in &p.gateway_configs {
            objects.gateway_configs.get_mut(k).unwrap().status = Some(s.clone());
        }
        for (k, s) in &p.gateways {
            objects.gateways.get_mut(k).unwrap().status = Some(s.clone());
        }
        for (k, s) in &p.udp_routes {
            objects.udp_routes.get_mut(k).unwrap().status = Some(s.clone());
        }
    }

    #[test]
    fn nothing_is_written_twice_and_transition_times_stay() {
        let mut objects = input("basic");
        let first = plan(&objects, &render(&objects, &ctx(1_000)).status);
        assert!(first.gateway_classes.len() == 1 && first.gateways.len() == 1);
        assert!(!first.udp_routes.is_empty() && !first.gateway_configs.is_empty());
        write_back(&mut objects, &first);
        // A later render of the same objects: same conditions, so nothing to write.
        let again = plan(&objects, &render(&objects, &ctx(2_000)).status);
        assert_eq!(again.writes(), 0, "{again:?}");
        assert!(again.warnings.is_empty());
        let t = &objects
            .gateways
            .values()
            .next()
            .unwrap()
            .status
            .as_ref()
            .unwrap()
            .conditions
            .as_ref()
            .unwrap()[0]
            .last_transition_time;
        assert_eq!(t.0.as_second(), 1_000);
    }

    #[test]
    fn a_new_failure_warns_once_and_moves_its_transition_time() {
        let mut objects = input("backend-not-found");
        let first = plan(&objects, &render(&objects, &ctx(1_000)).status);
        let reasons: Vec<&str> = first.warnings.iter().map(|w| w.reason.as_str()).collect();
        assert!(reasons.contains(&"BackendNotFound"), "{reasons:?}");
        let w = first
            .warnings
            .iter()
            .find(|w| w.reason == "BackendNotFound")
            .unwrap();
        assert_eq!(w.object.kind.as_deref(), Some("UDPRoute"));
        assert!(w.message.contains("ResolvedRefs"), "{}", w.message);
        write_back(&mut objects, &first);
        let again = plan(&objects, &render(&objects, &ctx(2_000)).status);
        assert!(again.warnings.is_empty(), "{:?}", again.warnings);
        assert_eq!(again.writes(), 0);
    }

    #[test]
    fn other_controllers_route_entries_survive_and_stale_ones_of_ours_go() {
        let mut objects = input("basic");
        let foreign = UdpRouteStatusParents {
            controller_name: "example.com/other".into(),
            parent_ref: UdpRouteStatusParentsParentRef {
                name: "theirs".into(),
                ..Default::default()
            },
            conditions: vec![],
        };
        let stale = UdpRouteStatusParents {
            controller_name: CONTROLLER_NAME.into(),
            parent_ref: UdpRouteStatusParentsParentRef {
                name: "a-gateway-no-longer-referenced".into(),
                ..Default::default()
            },
            conditions: vec![],
        };
        let (k, route) = objects.udp_routes.iter_mut().next().unwrap();
        let k = k.clone();
        route.status = Some(UdpRouteStatus {
            parents: vec![foreign.clone(), stale],
        });
        let p = plan(&objects, &render(&objects, &ctx(1_000)).status);
        let (_, st) = p.udp_routes.iter().find(|(rk, _)| *rk == k).unwrap();
        assert_eq!(st.parents[0], foreign);
        assert!(
            st.parents[1..]
                .iter()
                .all(|p| p.controller_name == CONTROLLER_NAME
                    && p.parent_ref.name != "a-gateway-no-longer-referenced")
        );
        assert!(st.parents.len() >= 2);
        // A route that names no Gateway of ours any more loses only our entries.
        let route = objects.udp_routes.get_mut(&k).unwrap();
        route.spec.parent_refs = Some(vec![]);
        let p = plan(&objects, &render(&objects, &ctx(1_000)).status);
        let (_, st) = p.udp_routes.iter().find(|(rk, _)| *rk == k).unwrap();
        assert_eq!(st.parents, vec![foreign]);
    }
}
