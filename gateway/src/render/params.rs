//! GatewayClass parameters: the GatewayConfig and the Secret it names.

use gateway_api::gatewayclasses::GatewayClass;
use turnpike_contract::cds::{AuthServiceConfig, JwtConfig};
use turnpike_contract::config::{AuthConfig, AuthType as DpAuthType, LimitsConfig, StaticUser};

use crate::crd::{AuthType, GROUP, GatewayConfig, GatewayConfigSpec};
use crate::duration;
use crate::objects::{ObjectKey, ObjectSet};

use super::RenderContext;

pub const DEFAULT_REALM: &str = "turnpike.dev";
const DEFAULT_SECRET_KEY: &str = "secret";
const DEFAULT_TTL: u64 = 3600;
const DEFAULT_MAX_TTL: u64 = 86_400;
/// Long calls keep relaying while a pod drains.
const DEFAULT_DRAIN_TIMEOUT: u64 = 3570;

/// Why a GatewayClass's parameters do not resolve; shown in its `Accepted` condition and
/// the Gateways' (the text is what operators read).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamsError {
    #[error("spec.parametersRef must name a turnpike.dev GatewayConfig")]
    NoParametersRef,
    #[error("spec.parametersRef must be group {GROUP} kind GatewayConfig, not {group}/{kind}")]
    WrongParametersRef { group: String, kind: String },
    #[error("spec.parametersRef.namespace is required (GatewayConfig is namespaced)")]
    NoNamespace,
    #[error("GatewayConfig {0} not found")]
    NotFound(ObjectKey),
    #[error("GatewayConfig {config}: {problem}")]
    Invalid {
        config: ObjectKey,
        problem: FieldProblem,
    },
}

/// One problem in a GatewayConfig, at its field path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldProblem {
    pub field: &'static str,
    pub message: String,
}

fn problem(field: &'static str, message: impl Into<String>) -> FieldProblem {
    FieldProblem {
        field,
        message: message.into(),
    }
}

/// A GatewayConfig turned into what dataplanes and the auth service need.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedParams {
    pub key: ObjectKey,
    pub spec: GatewayConfigSpec,
    pub realm: String,
    pub auth: AuthConfig,
    pub limits: LimitsConfig,
    pub ttl_secs: u64,
    pub max_ttl_secs: u64,
    pub auth_service: AuthServiceConfig,
    /// How long a terminating dataplane pod keeps relaying its allocations.
    pub drain_timeout_secs: u64,
}

fn duration_or(field: &'static str, v: &Option<String>, default: u64) -> Result<u64, FieldProblem> {
    match v {
        None => Ok(default),
        Some(s) => duration::seconds(s).map_err(|e| problem(field, e)),
    }
}

/// Checks a GatewayConfig on its own: durations, limits, and its Secret.
pub fn check_config(
    objects: &ObjectSet,
    key: &ObjectKey,
    gc: &GatewayConfig,
) -> Result<(), FieldProblem> {
    resolve_config(objects, key, gc, &[]).map(|_| ())
}

fn seconds_u32(
    field: &'static str,
    value: &Option<String>,
    default: u32,
) -> Result<u32, FieldProblem> {
    u32::try_from(duration_or(field, value, u64::from(default))?)
        .map_err(|_| problem(field, "too long"))
}

fn resolve_config(
    objects: &ObjectSet,
    key: &ObjectKey,
    gc: &GatewayConfig,
    previous: &[String],
) -> Result<ResolvedParams, FieldProblem> {
    let spec = &gc.spec;
    let ttl_secs = duration_or("spec.auth.ttl", &spec.auth.ttl, DEFAULT_TTL)?;
    let max_ttl_secs = duration_or("spec.auth.maxTTL", &spec.auth.max_ttl, DEFAULT_MAX_TTL)?;
    if ttl_secs > max_ttl_secs {
        return Err(problem(
            "spec.auth.ttl",
            format!("{ttl_secs}s is longer than spec.auth.maxTTL ({max_ttl_secs}s)"),
        ));
    }
    let defaults = LimitsConfig::default();
    let l = spec.limits.clone().unwrap_or_default();
    let limits = LimitsConfig {
        max_allocations_per_user: l
            .max_allocations_per_user
            .unwrap_or(defaults.max_allocations_per_user),
        max_permissions_per_allocation: l
            .max_permissions_per_allocation
            .unwrap_or(defaults.max_permissions_per_allocation),
        max_lifetime: seconds_u32(
            "spec.limits.maxLifetime",
            &l.max_lifetime,
            defaults.max_lifetime,
        )?,
        max_connections: l.max_connections.unwrap_or(defaults.max_connections),
        max_connection_rate_per_ip: l
            .max_connection_rate_per_ip
            .unwrap_or(defaults.max_connection_rate_per_ip),
        handshake_timeout: seconds_u32(
            "spec.limits.handshakeTimeout",
            &l.handshake_timeout,
            defaults.handshake_timeout,
        )?,
        idle_timeout: seconds_u32(
            "spec.limits.idleTimeout",
            &l.idle_timeout,
            defaults.idle_timeout,
        )?,
    };
    let counts = [
        limits.max_allocations_per_user,
        limits.max_permissions_per_allocation,
        limits.max_connections,
        limits.max_connection_rate_per_ip,
    ];
    if counts.contains(&0) {
        return Err(problem("spec.limits", "limits must be at least 1"));
    }
    for (field, v) in [
        ("spec.limits.handshakeTimeout", limits.handshake_timeout),
        ("spec.limits.idleTimeout", limits.idle_timeout),
    ] {
        if !(1..=3600).contains(&v) {
            return Err(problem(field, "must be 1s to 1h"));
        }
    }
    if limits.max_lifetime < 60 {
        return Err(problem("spec.limits.maxLifetime", "must be at least 60s"));
    }
    let secret = &spec.auth.secret_ref;
    let secret_name = format!("{}/{}", key.namespace, secret.name);
    let auth = match spec.auth.kind {
        AuthType::Ephemeral => {
            let k = secret.key.as_deref().unwrap_or(DEFAULT_SECRET_KEY);
            let value = objects
                .secret_value(&key.namespace, &secret.name, k)
                .filter(|v| !v.is_empty())
                .ok_or_else(|| {
                    problem(
                        "spec.auth.secretRef",
                        format!("Secret {secret_name} has no non-empty key {k:?}"),
                    )
                })?;
            AuthConfig {
                kind: DpAuthType::Ephemeral,
                previous_secrets: previous.iter().filter(|p| **p != value).cloned().collect(),
                secret: Some(value),
                users: vec![],
            }
        }
        AuthType::Static => {
            let entries = objects
                .secret_entries(&key.namespace, &secret.name)
                .ok_or_else(|| {
                    problem(
                        "spec.auth.secretRef",
                        format!("Secret {secret_name} not found"),
                    )
                })?;
            if entries.is_empty() {
                return Err(problem(
                    "spec.auth.secretRef",
                    format!("Secret {secret_name} holds no users"),
                ));
            }
            AuthConfig {
                kind: DpAuthType::Static,
                secret: None,
                previous_secrets: vec![],
                users: entries
                    .into_iter()
                    .map(|(username, password)| StaticUser { username, password })
                    .collect(),
            }
        }
    };
    let auth_service = auth_service_config(objects, key, spec, ttl_secs, max_ttl_secs)?;
    let drain_timeout_secs = duration_or(
        "spec.dataplane.drainTimeout",
        &spec
            .dataplane
            .as_ref()
            .and_then(|d| d.drain_timeout.clone()),
        DEFAULT_DRAIN_TIMEOUT,
    )?;
    Ok(ResolvedParams {
        drain_timeout_secs,
        auth_service,
        key: key.clone(),
        spec: spec.clone(),
        realm: spec.realm.clone().unwrap_or_else(|| DEFAULT_REALM.into()),
        auth,
        limits,
        ttl_secs,
        max_ttl_secs,
    })
}

/// The GatewayConfig a class's `parametersRef` names, resolved.
pub fn resolve_params(
    objects: &ObjectSet,
    class: &GatewayClass,
    ctx: &RenderContext,
) -> Result<ResolvedParams, ParamsError> {
    let Some(p) = &class.spec.parameters_ref else {
        return Err(ParamsError::NoParametersRef);
    };
    if p.group != GROUP || p.kind != "GatewayConfig" {
        return Err(ParamsError::WrongParametersRef {
            group: p.group.clone(),
            kind: p.kind.clone(),
        });
    }
    let Some(ns) = &p.namespace else {
        return Err(ParamsError::NoNamespace);
    };
    let key = ObjectKey::new(ns.as_str(), p.name.as_str());
    let Some(gc) = objects.gateway_configs.get(&key) else {
        return Err(ParamsError::NotFound(key));
    };
    let previous = ctx.previous_secrets.get(&key).cloned().unwrap_or_default();
    resolve_config(objects, &key, gc, &previous).map_err(|problem| ParamsError::Invalid {
        config: key,
        problem,
    })
}

/// The auth service's settings: credential lifetimes and how callers authenticate.
fn auth_service_config(
    objects: &ObjectSet,
    key: &ObjectKey,
    spec: &GatewayConfigSpec,
    ttl: u64,
    max_ttl: u64,
) -> Result<AuthServiceConfig, FieldProblem> {
    let svc = spec.auth_service.clone().unwrap_or_default();
    let secret = |field: &'static str, r: &crate::crd::SecretKeyRef| {
        let k = r.key.as_deref().unwrap_or("key");
        objects
            .secret_value(&key.namespace, &r.name, k)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| {
                problem(
                    field,
                    format!(
                        "Secret {}/{} has no non-empty key {k:?}",
                        key.namespace, r.name
                    ),
                )
            })
    };
    let jwt = match &svc.jwt {
        None => None,
        Some(j) => {
            let hmac_secret = j
                .hmac_secret_ref
                .as_ref()
                .map(|r| secret("spec.authService.jwt.hmacSecretRef", r))
                .transpose()?;
            let public_key_pem = j
                .public_key_ref
                .as_ref()
                .map(|r| secret("spec.authService.jwt.publicKeyRef", r))
                .transpose()?;
            match (&hmac_secret, &public_key_pem) {
                (None, None) => {
                    return Err(problem(
                        "spec.authService.jwt",
                        "needs hmacSecretRef or publicKeyRef",
                    ));
                }
                (Some(_), Some(_)) => {
                    return Err(problem(
                        "spec.authService.jwt",
                        "hmacSecretRef and publicKeyRef exclude each other",
                    ));
                }
                (None, Some(pem)) if !pem.contains("BEGIN PUBLIC KEY") => {
                    return Err(problem(
                        "spec.authService.jwt.publicKeyRef",
                        "not a PEM public key",
                    ));
                }
                _ => {}
            }
            Some(JwtConfig {
                issuer: j.issuer.clone(),
                audience: j.audience.clone(),
                hmac_secret,
                public_key_pem,
            })
        }
    };
    if jwt.is_none() && !svc.allow_anonymous && spec.auth_service.is_some() {
        return Err(problem(
            "spec.authService",
            "set jwt, or allowAnonymous: true",
        ));
    }
    Ok(AuthServiceConfig {
        ttl,
        max_ttl,
        // Without an authService section nobody may fetch credentials: closed by default.
        allow_anonymous: svc.allow_anonymous,
        jwt,
    })
}
