//! Our CRDs (`turnpike.dev/v1alpha1`, DESIGN.md §6): GatewayConfig and StaticService.
//! Unknown fields are refused so a typo in a spec is an error, not a silent default.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub const GROUP: &str = "turnpike.dev";
pub const CONTROLLER_NAME: &str = "turnpike.dev/gateway-controller";

/// Parameters of a Turnpike GatewayClass: realm, credentials, auth service, dataplane
/// deployment and limits.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "turnpike.dev",
    version = "v1alpha1",
    kind = "GatewayConfig",
    namespaced,
    status = "GatewayConfigStatus",
    shortname = "gwconfig"
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewayConfigSpec {
    /// STUN/TURN realm (default `turnpike.dev`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub realm: Option<String>,
    pub auth: AuthSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_service: Option<AuthServiceSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataplane: Option<DataplaneSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<LimitsSpec>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AuthType {
    /// TURN REST API credentials: `expiry:userid`, HMAC-SHA1 of a shared secret.
    #[default]
    Ephemeral,
    /// Fixed users; the Secret's keys are usernames, its values passwords.
    Static,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthSpec {
    #[serde(rename = "type", default)]
    pub kind: AuthType,
    /// The Secret (in the GatewayConfig's namespace) holding the shared secret or users.
    pub secret_ref: SecretKeyRef,
    /// Default lifetime of issued credentials (e.g. `1h`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
    /// Longest lifetime a caller may ask for (e.g. `24h`).
    #[serde(default, rename = "maxTTL", skip_serializing_if = "Option::is_none")]
    pub max_ttl: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretKeyRef {
    pub name: String,
    /// The key inside the Secret's data (ephemeral auth; default `secret`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthServiceSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt: Option<JwtSpec>,
    #[serde(default)]
    pub allow_anonymous: bool,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JwtSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    /// HS256 shared key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hmac_secret_ref: Option<SecretKeyRef>,
    /// RS256/ES256 public key (PEM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key_ref: Option<SecretKeyRef>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DataplaneSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The dataplane container's `imagePullPolicy` (default: the operator's
    /// `--dataplane-image-pull-policy`, else Kubernetes' own default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<PullPolicy>,
    /// How long a terminating dataplane pod keeps relaying the allocations it has, e.g.
    /// `15m` (default `3570s`); the pod's grace period is 30 s longer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceSpec>,
    /// Relay established UDP channel bindings in the kernel (eBPF): `None` (default),
    /// `TC`, `XDP` or `Auto` (TC where the node's kernel allows, else userspace). With
    /// offload on, the dataplane container runs as root with only the capabilities BPF,
    /// NET_ADMIN and PERFMON (README "Kernel offload").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offload: Option<Offload>,
}

/// `GatewayConfig.spec.dataplane.offload`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Offload {
    None,
    #[serde(rename = "TC")]
    Tc,
    #[serde(rename = "XDP")]
    Xdp,
    Auto,
}

impl Offload {
    /// The dataplane's `--offload` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Offload::None => "None",
            Offload::Tc => "TC",
            Offload::Xdp => "XDP",
            Offload::Auto => "Auto",
        }
    }
}

/// A container's `imagePullPolicy`.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, clap::ValueEnum,
)]
#[value(rename_all = "PascalCase")]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

impl PullPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceSpec {
    /// `LoadBalancer` (default), `NodePort` or `ClusterIP`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    /// `Local` or `Cluster`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_traffic_policy: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LimitsSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_allocations_per_user: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_permissions_per_allocation: Option<u32>,
    /// Longest allocation lifetime (e.g. `1h`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_lifetime: Option<String>,
    /// TCP and TLS client connections per dataplane pod (default 20000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    /// New TCP/TLS connections per second from one source IP (default 50, bursts of twice).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connection_rate_per_ip: Option<u32>,
    /// Time a TCP/TLS connection has for its TLS handshake and first TURN message
    /// (default `10s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handshake_timeout: Option<String>,
    /// Time a TCP/TLS connection without an allocation may stay silent (default `60s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct GatewayConfigStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// Peers that are not a Service, or that need port ranges (media servers on 40000–49999).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "turnpike.dev",
    version = "v1alpha1",
    kind = "StaticService",
    namespaced
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StaticServiceSpec {
    /// IPs or CIDRs.
    pub addresses: Vec<String>,
    /// No ports means every port.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortRange>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortRange {
    pub port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_port: Option<u16>,
}
