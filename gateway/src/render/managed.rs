//! The Deployment and Service each Gateway's dataplane runs as (used by the operator).
//! The pod template depends only on the Gateway and its GatewayConfig, never on the
//! operator's own version, so an operator upgrade never rolls the dataplane.

use std::collections::BTreeMap;

use gateway_api::gateways::Gateway;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, HTTPGetAction, PodSpec, PodTemplateSpec, Probe, Service,
    ServicePort, ServiceSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use turnpike_dataplane::config::Protocol;

use super::{RenderContext, ResolvedParams};

pub const GATEWAY_LABEL: &str = "turnpike.dev/gateway";
const ADMIN_PORT: i32 = 8086;

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
        (
            "app.kubernetes.io/managed-by".to_string(),
            "turnpike".to_string(),
        ),
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
    let mut args = vec![
        "dataplane".to_string(),
        "--cds".into(),
        ctx.cds_address.clone(),
        "--gateway".into(),
        format!("{ns}/{name}"),
        "--admin".into(),
        format!("0.0.0.0:{ADMIN_PORT}"),
    ];
    if let Some(w) = dp.workers {
        args.extend(["--workers".into(), w.to_string()]);
    }
    let probe = |path: &str| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::Int(ADMIN_PORT),
            ..Default::default()
        }),
        period_seconds: Some(5),
        ..Default::default()
    };
    let transport = |p: Protocol| if p == Protocol::TurnUdp { "UDP" } else { "TCP" };
    let container = Container {
        name: "dataplane".into(),
        image: Some(
            dp.image
                .clone()
                .unwrap_or_else(|| ctx.dataplane_image.clone()),
        ),
        args: Some(args),
        env: Some(vec![EnvVar {
            name: "TURNPIKE_LOG_FORMAT".into(),
            value: Some("json".into()),
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
                .collect(),
        ),
        readiness_probe: Some(probe("/readyz")),
        liveness_probe: Some(probe("/livez")),
        resources: dp.resources.clone(),
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
                    // Existing allocations keep relaying while a pod drains.
                    termination_grace_period_seconds: Some(3600),
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
