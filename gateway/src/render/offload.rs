//! Kernel offload as the control plane shows it. Only a dataplane knows whether the
//! kernel took its relay path (capabilities, kernel version, device), so it reports that
//! when it subscribes over CDS. The CDS replica it reaches records the report on its pod
//! as the condition [`POD_CONDITION`]; the leader reads those conditions back (or, in
//! `turnpike run`, the CDS server's reports directly) and appends the outcome to each
//! TURN-UDP listener's `Programmed` message.

use std::collections::BTreeMap;

use gateway_api::gateways::{Gateway, GatewayStatusListeners};
use k8s_openapi::api::core::v1::{Pod, PodCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use turnpike_contract::cds::report::{OffloadStatus, PodName};
use turnpike_contract::config::Protocol;

use super::conditions::reason;
use super::listeners::protocol_of;
use super::managed::GATEWAY_LABEL;
use crate::crd::Offload;
use crate::objects::{ObjectKey, ObjectSet};

/// The pod condition a dataplane's offload report becomes.
pub const POD_CONDITION: &str = "turnpike.dev/KernelOffload";
const NOT_REQUESTED: &str = "NotRequested";
const UNAVAILABLE: &str = "Unavailable";

/// What each Gateway's dataplanes reported: by Gateway, then by who reported (a pod, or
/// a connection in `turnpike run`), in a stable order.
pub type OffloadReports = BTreeMap<ObjectKey, BTreeMap<String, OffloadStatus>>;

/// The pod condition for a report, stamped `now`. The reason carries the mode (`TC`,
/// `XDP`) when the kernel relays, `<requested>Unavailable` when it was asked for and could
/// not be had.
pub fn pod_condition(offload: &OffloadStatus, now: Time) -> PodCondition {
    let (status, reason, message) = pod_condition_parts(offload);
    PodCondition {
        type_: POD_CONDITION.into(),
        status,
        reason: Some(reason),
        message: Some(message),
        last_transition_time: Some(now),
        ..Default::default()
    }
}

fn pod_condition_parts(offload: &OffloadStatus) -> (String, String, String) {
    if offload.is_active() {
        let mut message = format!(
            "the kernel relays established channels on {}",
            if offload.interfaces.is_empty() {
                "no interface".to_string()
            } else {
                offload.interfaces.join(", ")
            }
        );
        for w in &offload.warnings {
            message.push_str("; ");
            message.push_str(w);
        }
        ("True".into(), offload.active.clone(), message)
    } else if offload.is_requested() {
        (
            "False".into(),
            format!("{}{UNAVAILABLE}", offload.requested),
            offload
                .reason
                .clone()
                .unwrap_or_else(|| "not attached".into()),
        )
    } else {
        (
            "False".into(),
            NOT_REQUESTED.into(),
            "kernel offload is off".into(),
        )
    }
}

/// The report a pod condition was written from (interfaces and warnings stay in its
/// message).
fn from_pod_condition(c: &PodCondition) -> OffloadStatus {
    let message = c.message.clone().unwrap_or_default();
    let reason = c.reason.clone().unwrap_or_default();
    if c.status == "True" {
        return OffloadStatus {
            requested: reason.clone(),
            active: reason,
            ..Default::default()
        };
    }
    match reason.strip_suffix(UNAVAILABLE) {
        Some(requested) => OffloadStatus {
            requested: requested.to_string(),
            active: Offload::None.as_str().into(),
            reason: Some(message),
            ..Default::default()
        },
        None => OffloadStatus {
            requested: Offload::None.as_str().into(),
            active: Offload::None.as_str().into(),
            ..Default::default()
        },
    }
}

/// The pod's [`POD_CONDITION`], when a report was recorded on it.
pub fn offload_condition(pod: &Pod) -> Option<&PodCondition> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == POD_CONDITION)
}

/// The reports recorded on the managed dataplane pods (operator), by Gateway. A pod that
/// is being deleted no longer counts.
pub fn reports_from_pods(objects: &ObjectSet) -> OffloadReports {
    let mut out = OffloadReports::new();
    for (key, pod) in &objects.pods {
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let Some(gateway) = pod
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(GATEWAY_LABEL))
        else {
            continue;
        };
        if let Some(c) = offload_condition(pod) {
            out.entry(ObjectKey::new(&key.namespace, gateway))
                .or_default()
                .insert(format!("pod {}", key.name), from_pod_condition(c));
        }
    }
    out
}

/// May the dataplane of `gateway` (`namespace/name`, as its CDS certificate names it)
/// write its report on `pod`? Only on a pod of that Gateway.
pub fn pod_belongs_to(pod: &Pod, gateway: &str, name: &PodName) -> bool {
    let Some((ns, gw)) = gateway.split_once('/') else {
        return false;
    };
    pod.metadata.namespace.as_deref() == Some(ns)
        && name.namespace == ns
        && pod
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(GATEWAY_LABEL))
            .is_some_and(|g| g == gw)
}

/// What the listeners' `Programmed` message says of offload, or `None` when it is off.
pub fn summary(
    requested: Offload,
    reports: Option<&BTreeMap<String, OffloadStatus>>,
) -> Option<String> {
    if requested == Offload::None {
        return None;
    }
    let asked = requested.as_str();
    let reports = match reports {
        Some(r) if !r.is_empty() => r,
        _ => {
            return Some(format!(
                "kernel offload {asked} requested, no dataplane has reported yet"
            ));
        }
    };
    let total = reports.len();
    let active: Vec<&OffloadStatus> = reports.values().filter(|r| r.is_active()).collect();
    let mut modes: Vec<&str> = active.iter().map(|r| r.active.as_str()).collect();
    modes.dedup();
    let first_refusal = reports
        .iter()
        .find(|(_, r)| !r.is_active())
        .map(|(who, r)| {
            let why = match &r.reason {
                Some(why) => why.clone(),
                None if !r.is_requested() => "its pod template does not ask for offload yet".into(),
                None => "not attached".into(),
            };
            format!("{who}: {why}")
        });
    Some(match (active.len(), first_refusal) {
        (n, None) => format!(
            "kernel offload {} active on {n} of {total} dataplanes",
            modes.join("/")
        ),
        (0, Some(why)) => format!(
            "kernel offload {asked} requested, unavailable on {total} of {total} dataplanes, \
             relaying in userspace ({why})"
        ),
        (n, Some(why)) => format!(
            "kernel offload {} active on {n} of {total} dataplanes, the others relay in \
             userspace ({why})",
            modes.join("/")
        ),
    })
}

fn parse_mode(s: &str) -> Option<Offload> {
    [Offload::Tc, Offload::Xdp, Offload::Auto]
        .into_iter()
        .find(|m| m.as_str() == s)
}

/// Appends [`summary`] to the `Programmed` message of every programmed TURN-UDP listener
/// of `gw` (offload relays UDP only).
pub(super) fn annotate_listeners(
    gw: &Gateway,
    requested: Offload,
    reports: Option<&BTreeMap<String, OffloadStatus>>,
    statuses: &mut [GatewayStatusListeners],
) {
    // `turnpike run --offload` asks without GatewayConfig: the dataplanes say what they
    // were asked for.
    let requested = match requested {
        Offload::None => reports
            .into_iter()
            .flat_map(|r| r.values())
            .find(|r| r.is_requested())
            .and_then(|r| parse_mode(&r.requested))
            .unwrap_or(Offload::None),
        asked => asked,
    };
    let Some(text) = summary(requested, reports) else {
        return;
    };
    for st in statuses.iter_mut() {
        let udp = gw
            .spec
            .listeners
            .iter()
            .find(|l| l.name == st.name)
            .and_then(|l| protocol_of(&l.protocol))
            == Some(Protocol::TurnUdp);
        if !udp {
            continue;
        }
        for c in st.conditions.iter_mut() {
            if c.type_ == reason::PROGRAMMED && c.status == "True" {
                c.message = format!("{}; {text}", c.message);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(requested: &str, active: &str, reason: Option<&str>) -> OffloadStatus {
        OffloadStatus {
            requested: requested.into(),
            active: active.into(),
            interfaces: if active == "None" {
                vec![]
            } else {
                vec!["eth0".into()]
            },
            reason: reason.map(Into::into),
            warnings: vec![],
        }
    }

    fn reports(r: &[(&str, OffloadStatus)]) -> BTreeMap<String, OffloadStatus> {
        r.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
    }

    #[test]
    fn summary_says_what_the_dataplanes_reported() {
        assert_eq!(summary(Offload::None, None), None);
        assert_eq!(
            summary(Offload::Tc, None).as_deref(),
            Some("kernel offload TC requested, no dataplane has reported yet")
        );
        let two_active = reports(&[
            ("pod a", status("TC", "TC", None)),
            ("pod b", status("TC", "TC", None)),
        ]);
        assert_eq!(
            summary(Offload::Tc, Some(&two_active)).as_deref(),
            Some("kernel offload TC active on 2 of 2 dataplanes")
        );
        let auto = reports(&[("pod a", status("Auto", "TC", None))]);
        assert_eq!(
            summary(Offload::Auto, Some(&auto)).as_deref(),
            Some("kernel offload TC active on 1 of 1 dataplanes")
        );
        let refused = reports(&[(
            "pod a",
            status("XDP", "None", Some("loading needs CAP_BPF")),
        )]);
        assert_eq!(
            summary(Offload::Xdp, Some(&refused)).as_deref(),
            Some(
                "kernel offload XDP requested, unavailable on 1 of 1 dataplanes, relaying in \
                 userspace (pod a: loading needs CAP_BPF)"
            )
        );
        let rolling = reports(&[
            ("pod a", status("None", "None", None)),
            ("pod b", status("TC", "TC", None)),
        ]);
        assert_eq!(
            summary(Offload::Tc, Some(&rolling)).as_deref(),
            Some(
                "kernel offload TC active on 1 of 2 dataplanes, the others relay in userspace \
                 (pod a: its pod template does not ask for offload yet)"
            )
        );
    }

    #[test]
    fn a_pod_condition_reads_back_as_what_the_summary_needs() {
        let now = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
        for original in [
            status("TC", "TC", None),
            status("XDP", "XDP", None),
            status("Auto", "None", Some("kernel 5.15 is older than 6.6")),
            status("None", "None", None),
        ] {
            let c = pod_condition(&original, now.clone());
            assert_eq!(c.type_, POD_CONDITION);
            let back = from_pod_condition(&c);
            assert_eq!(back.is_active(), original.is_active(), "{c:?}");
            assert_eq!(back.active, original.active, "{c:?}");
            assert_eq!(back.reason, original.reason, "{c:?}");
            if !original.is_active() {
                assert_eq!(back.requested, original.requested, "{c:?}");
            }
            let reason = c.reason.unwrap_or_default();
            assert!(
                reason.chars().all(|ch| ch.is_ascii_alphanumeric()),
                "a condition reason is CamelCase: {reason}"
            );
        }
        let active = pod_condition(&status("TC", "TC", None), now);
        assert_eq!(
            active.message.as_deref(),
            Some("the kernel relays established channels on eth0")
        );
    }

    fn pod(ns: &str, name: &str, gateway: &str, condition: Option<PodCondition>) -> Pod {
        let mut p = Pod::default();
        p.metadata.namespace = Some(ns.into());
        p.metadata.name = Some(name.into());
        p.metadata.labels = Some([(GATEWAY_LABEL.to_string(), gateway.to_string())].into());
        p.status = Some(k8s_openapi::api::core::v1::PodStatus {
            conditions: condition.map(|c| vec![c]),
            ..Default::default()
        });
        p
    }

    #[test]
    fn reports_come_from_the_pods_of_each_gateway() {
        let now = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
        let mut objects = ObjectSet::default();
        let tc = pod_condition(&status("TC", "TC", None), now);
        for p in [
            pod("media", "gw-1", "gw", Some(tc.clone())),
            pod("media", "gw-2", "gw", None),
            pod("other", "x-1", "x", Some(tc)),
        ] {
            objects.pods.insert(crate::objects::key_of(&p), p);
        }
        let r = reports_from_pods(&objects);
        assert_eq!(r.len(), 2);
        let gw = &r[&ObjectKey::new("media", "gw")];
        assert_eq!(gw.keys().collect::<Vec<_>>(), ["pod gw-1"]);
        assert!(gw["pod gw-1"].is_active());
    }

    #[test]
    fn a_dataplane_writes_only_on_its_own_gateways_pods() {
        let p = pod("media", "gw-1", "gw", None);
        let name = |ns: &str| PodName {
            namespace: ns.into(),
            name: "gw-1".into(),
        };
        assert!(pod_belongs_to(&p, "media/gw", &name("media")));
        assert!(!pod_belongs_to(&p, "media/other", &name("media")));
        assert!(!pod_belongs_to(&p, "other/gw", &name("other")));
        assert!(!pod_belongs_to(&p, "gw", &name("media")));
    }
}
