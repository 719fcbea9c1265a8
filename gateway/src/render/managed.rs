//! The Deployment and Service each Gateway's dataplane runs as (used by the operator).
//! The pod template depends only on the Gateway, its GatewayConfig and the Deployment as it
//! already is, never on the operator's own version or address: the CDS address is a
//! Service name, the client certificate lives in a Secret the pod mounts, and the image
//! stays what the Deployment was created with unless GatewayConfig names one. So an
//! operator restart or upgrade never rolls the dataplane.

use std::collections::BTreeMap;

use gateway_api::gateways::Gateway;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction,
    ObjectFieldSelector, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, SeccompProfile,
    SecretVolumeSource, SecurityContext, Service, ServicePort, ServiceSpec, Sysctl, Volume,
    VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use turnpike_contract::config::Protocol;

use super::{RenderContext, ResolvedParams};
use crate::crd::Offload;

pub const GATEWAY_LABEL: &str = "turnpike.dev/gateway";
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "turnpike";
const ADMIN_PORT: i32 = 8086;
/// The admin port's name (health, `/metrics`, `/status`); never a listener's.
pub const ADMIN_PORT_NAME: &str = "turnpike-admin";
/// Where the pod mounts its CDS client certificate (the dataplane's default paths).
const CDS_CERT_DIR: &str = "/etc/turnpike/cds";
/// The kubelet's grace period is this much longer than the drain, so the dataplane
/// exits by itself rather than being killed.
const GRACE_AFTER_DRAIN_SECONDS: u64 = 30;
/// The image's non-root user (tests/image/rootfs.sh).
const RUN_AS_USER: i64 = 65532;

/// The Secret holding Gateway `name`'s CDS client certificate (in the Gateway's namespace).
pub fn cds_secret_name(gateway: &str) -> String {
    format!("{gateway}-turnpike-cds")
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Managed {
    pub deployment: Deployment,
    pub service: Service,
}

fn owner(gw: &Gateway) -> Option<Vec<OwnerReference>> {
    let uid = gw.metadata.uid.clone()?;
    Some(vec![OwnerReference {
        api_version: "gateway.networking.k8s.io/v1".into(),
        kind: "Gateway".into(),
        name: gw.metadata.name.clone().unwrap_or_default(),
        uid,
        controller: Some(true),
        block_owner_deletion: Some(true),
    }])
}

pub fn managed_resources(
    gw: &Gateway,
    listeners: &[(String, Protocol, u16)],
    params: &ResolvedParams,
    existing: Option<&Deployment>,
    ctx: &RenderContext,
) -> Managed {
    let name = gw.metadata.name.clone().unwrap_or_default();
    let ns = gw
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let labels = BTreeMap::from([
        (
            "app.kubernetes.io/name".to_string(),
            "turnpike-dataplane".to_string(),
        ),
        (MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string()),
        (GATEWAY_LABEL.to_string(), name.clone()),
    ]);
    let selector = BTreeMap::from([(GATEWAY_LABEL.to_string(), name.clone())]);
    let dp = params.spec.dataplane.clone().unwrap_or_default();
    let meta = ObjectMeta {
        name: Some(name.clone()),
        namespace: Some(ns.clone()),
        labels: Some(labels.clone()),
        owner_references: owner(gw),
        ..Default::default()
    };
    let env = |name: &str, value: String| EnvVar {
        name: name.into(),
        value: Some(value),
        ..Default::default()
    };
    let from_field = |name: &str, path: &str| EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut envs = vec![
        env("TURNPIKE_GATEWAY", format!("{ns}/{name}")),
        env("TURNPIKE_CDS", ctx.cds_address.clone()),
        env("TURNPIKE_ADMIN_ADDRESS", format!("0.0.0.0:{ADMIN_PORT}")),
        env(
            "TURNPIKE_DRAIN_TIMEOUT",
            format!("{}s", params.drain_timeout_secs),
        ),
        env("TURNPIKE_LOG_FORMAT", "json".into()),
        // The dataplane names its pod in its CDS report (offload state), and the
        // control plane records the report on that pod.
        from_field("TURNPIKE_POD_NAME", "metadata.name"),
        from_field("TURNPIKE_POD_NAMESPACE", "metadata.namespace"),
    ];
    if let Some(w) = dp.workers {
        envs.push(env("TURNPIKE_WORKERS", w.to_string()));
    }
    let offload = dp.offload.filter(|o| *o != Offload::None);
    if let Some(o) = offload {
        envs.push(env("TURNPIKE_OFFLOAD", o.as_str().into()));
    }
    // An image named in GatewayConfig wins; otherwise the one the Deployment already runs,
    // and only a new Deployment gets the operator's default.
    let running = existing
        .and_then(|d| d.spec.as_ref())
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|s| s.containers.iter().find(|c| c.name == "dataplane"));
    let running_image = running.and_then(|c| c.image.clone());
    let image = dp
        .image
        .clone()
        .or(running_image)
        .unwrap_or_else(|| ctx.dataplane_image.clone());
    let probe = |path: &str| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::Int(ADMIN_PORT),
            ..Default::default()
        }),
        period_seconds: Some(5),
        ..Default::default()
    };
    // GatewayConfig's, else the operator's, else Kubernetes' default (IfNotPresent).
    let image_pull_policy = dp
        .image_pull_policy
        .or(ctx.dataplane_image_pull_policy)
        .map(|p| p.as_str().to_string());
    let transport = |p: Protocol| if p == Protocol::TurnUdp { "UDP" } else { "TCP" };
    let container = Container {
        name: "dataplane".into(),
        image: Some(image),
        image_pull_policy,
        args: Some(vec!["dataplane".into()]),
        env: Some(envs),
        volume_mounts: Some(vec![VolumeMount {
            name: "cds-client".into(),
            mount_path: CDS_CERT_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        }]),
        ports: Some(
            listeners
                .iter()
                .map(|(n, p, port)| ContainerPort {
                    name: Some(port_name(n)),
                    container_port: i32::from(*port),
                    protocol: Some(transport(*p).into()),
                    ..Default::default()
                })
                // Named, so a PodMonitor can scrape `/metrics` by name.
                .chain(std::iter::once(ContainerPort {
                    name: Some(ADMIN_PORT_NAME.into()),
                    container_port: ADMIN_PORT,
                    protocol: Some("TCP".into()),
                    ..Default::default()
                }))
                .collect(),
        ),
        readiness_probe: Some(probe("/readyz")),
        liveness_probe: Some(probe("/livez")),
        resources: dp.resources.clone(),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                // Loading the program (BPF, with PERFMON for the verifier's pointer
                // rules) and attaching it to the pod's interfaces (NET_ADMIN).
                add: offload.map(|_| vec!["BPF".into(), "NET_ADMIN".into(), "PERFMON".into()]),
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let deployment = Deployment {
        metadata: meta.clone(),
        spec: Some(DeploymentSpec {
            replicas: Some(dp.replicas.unwrap_or(1)),
            selector: LabelSelector {
                match_labels: Some(selector.clone()),
                ..Default::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    security_context: Some(pod_security(listeners, offload.is_some())),
                    // The dataplane reads nothing from the API server.
                    automount_service_account_token: Some(false),
                    termination_grace_period_seconds: i64::try_from(
                        params.drain_timeout_secs + GRACE_AFTER_DRAIN_SECONDS,
                    )
                    .ok(),
                    volumes: Some(vec![Volume {
                        name: "cds-client".into(),
                        secret: Some(SecretVolumeSource {
                            secret_name: Some(cds_secret_name(&name)),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        status: None,
    };
    let svc_spec = dp.service.clone().unwrap_or_default();
    let service = Service {
        metadata: ObjectMeta {
            annotations: svc_spec.annotations.clone(),
            ..meta
        },
        spec: Some(ServiceSpec {
            type_: Some(
                svc_spec
                    .kind
                    .clone()
                    .unwrap_or_else(|| "LoadBalancer".into()),
            ),
            external_traffic_policy: svc_spec.external_traffic_policy.clone(),
            selector: Some(selector),
            // The admin port is never exposed on the Service.
            ports: Some(
                listeners
                    .iter()
                    .map(|(n, p, port)| ServicePort {
                        name: Some(port_name(n)),
                        port: i32::from(*port),
                        target_port: Some(IntOrString::Int(i32::from(*port))),
                        protocol: Some(transport(*p).into()),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }),
        status: None,
    };
    Managed {
        deployment,
        service,
    }
}

/// Non-root with the runtime's default seccomp profile. A listener below 1024 (TURN-TLS on
/// 443) is bound through the pod's own `net.ipv4.ip_unprivileged_port_start`, a sysctl
/// Kubernetes counts as safe (namespaced to the pod's network): a capability would not
/// do, since a non-root process does not keep an added NET_BIND_SERVICE across exec.
/// Non-root, unless offload is on: capabilities added to a non-root container do not
/// reach its process (Kubernetes sets no ambient capabilities), so the offloading
/// dataplane runs as uid 0 holding only the capabilities it adds.
fn pod_security(listeners: &[(String, Protocol, u16)], offload: bool) -> PodSecurityContext {
    let lowest = listeners.iter().map(|(_, _, port)| *port).min();
    let sysctls = lowest.filter(|p| *p < 1024).map(|p| {
        vec![Sysctl {
            name: "net.ipv4.ip_unprivileged_port_start".into(),
            value: p.to_string(),
        }]
    });
    let user = if offload { 0 } else { RUN_AS_USER };
    PodSecurityContext {
        run_as_non_root: Some(!offload),
        run_as_user: Some(user),
        run_as_group: Some(user),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..Default::default()
        }),
        sysctls,
        ..Default::default()
    }
}

/// Kubernetes port names are at most 15 lowercase alphanumerics and dashes.
fn port_name(listener: &str) -> String {
    let mut s: String = listener
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    s.truncate(15);
    s.trim_matches('-').to_string()
}
