//! GatewayClass parameters: the GatewayConfig and the Secret it names.

use gateway_api::gatewayclasses::GatewayClass;
use turnpike_contract::cds::{AuthServiceConfig, JwtConfig};
use turnpike_contract::config::{AuthConfig, AuthType as DpAuthType, LimitsConfig, StaticUser};

use crate::crd::{AuthType, GROUP, GatewayConfig, GatewayConfigSpec, parse_duration};
use crate::objects::{Key, ObjectSet, key_string};

use super::RenderContext;

pub const DEFAULT_REALM: &str = "turnpike.dev";
const DEFAULT_SECRET_KEY: &str = "secret";
const DEFAULT_TTL: u64 = 3600;
const DEFAULT_MAX_TTL: u64 = 86_400;
/// Long calls keep relaying while a pod drains.
const DEFAULT_DRAIN_TIMEOUT: u64 = 3570;

/// A GatewayConfig turned into what dataplanes and the auth service need.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedParams {
    pub key: Key,
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

fn duration_or(field: &str, v: &Option<String>, default: u64) -> Result<u64, String> {
    match v {
        None => Ok(default),
        Some(s) => parse_duration(s).map_err(|e| format!("{field}: {e}")),
    }
}

/// Checks a GatewayConfig on its own: durations, limits, and its Secret.
pub fn check_config(objects: &ObjectSet, key: &Key, gc: &GatewayConfig) -> Result<(), String> {
    resolve_config(objects, key, gc, &[]).map(|_| ())
}

fn seconds_u32(field: &str, value: &Option<String>, default: u32) -> Result<u32, String> {
    u32::try_from(duration_or(field, value, u64::from(default))?)
        .map_err(|_| format!("{field}: too long"))
}

fn resolve_config(
    objects: &ObjectSet,
    key: &Key,
    gc: &GatewayConfig,
    previous: &[String],
) -> Result<ResolvedParams, String> {
    let spec = &gc.spec;
    let ttl_secs = duration_or("spec.auth.ttl", &spec.auth.ttl, DEFAULT_TTL)?;
    let max_ttl_secs = duration_or("spec.auth.maxTTL", &spec.auth.max_ttl, DEFAULT_MAX_TTL)?;
    if ttl_secs > max_ttl_secs {
        return Err(format!(
            "spec.auth.ttl ({ttl_secs}s) is longer than spec.auth.maxTTL ({max_ttl_secs}s)"
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
        return Err("spec.limits: limits must be at least 1".into());
    }
    for (field, v) in [
        ("spec.limits.handshakeTimeout", limits.handshake_timeout),
        ("spec.limits.idleTimeout", limits.idle_timeout),
    ] {
        if !(1..=3600).contains(&v) {
            return Err(format!("{field}: must be 1s to 1h"));
        }
    }
    if limits.max_lifetime < 60 {
        return Err("spec.limits.maxLifetime: must be at least 60s".into());
    }
    let secret = &spec.auth.secret_ref;
    let secret_name = format!("{}/{}", key.0, secret.name);
    let auth = match spec.auth.kind {
        AuthType::Ephemeral => {
            let k = secret.key.as_deref().unwrap_or(DEFAULT_SECRET_KEY);
            let value = objects
                .secret_value(&key.0, &secret.name, k)
                .filter(|v| !v.is_empty())
                .ok_or_else(|| {
                    format!("spec.auth.secretRef: Secret {secret_name} has no non-empty key {k:?}")
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
                .secret_entries(&key.0, &secret.name)
                .ok_or_else(|| format!("spec.auth.secretRef: Secret {secret_name} not found"))?;
            if entries.is_empty() {
                return Err(format!(
                    "spec.auth.secretRef: Secret {secret_name} holds no users"
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
) -> Result<ResolvedParams, String> {
    let Some(p) = &class.spec.parameters_ref else {
        return Err("spec.parametersRef must name a turnpike.dev GatewayConfig".into());
    };
    if p.group != GROUP || p.kind != "GatewayConfig" {
        return Err(format!(
            "spec.parametersRef must be group {GROUP} kind GatewayConfig, not {}/{}",
            p.group, p.kind
        ));
    }
    let Some(ns) = &p.namespace else {
        return Err(
            "spec.parametersRef.namespace is required (GatewayConfig is namespaced)".into(),
        );
    };
    let key = (ns.clone(), p.name.clone());
    let Some(gc) = objects.gateway_configs.get(&key) else {
        return Err(format!("GatewayConfig {} not found", key_string(&key)));
    };
    let previous = ctx.previous_secrets.get(&key).cloned().unwrap_or_default();
    resolve_config(objects, &key, gc, &previous)
        .map_err(|e| format!("GatewayConfig {}: {e}", key_string(&key)))
}

/// The auth service's settings: credential lifetimes and how callers authenticate.
fn auth_service_config(
    objects: &ObjectSet,
    key: &Key,
    spec: &GatewayConfigSpec,
    ttl: u64,
    max_ttl: u64,
) -> Result<AuthServiceConfig, String> {
    let svc = spec.auth_service.clone().unwrap_or_default();
    let secret = |field: &str, r: &crate::crd::SecretKeyRef| {
        let k = r.key.as_deref().unwrap_or("key");
        objects
            .secret_value(&key.0, &r.name, k)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| {
                format!(
                    "{field}: Secret {}/{} has no non-empty key {k:?}",
                    key.0, r.name
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
                    return Err("spec.authService.jwt: needs hmacSecretRef or publicKeyRef".into());
                }
                (Some(_), Some(_)) => {
                    return Err(
                        "spec.authService.jwt: hmacSecretRef and publicKeyRef exclude each other"
                            .into(),
                    );
                }
                (None, Some(pem)) if !pem.contains("BEGIN PUBLIC KEY") => {
                    return Err("spec.authService.jwt.publicKeyRef: not a PEM public key".into());
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
        return Err("spec.authService: set jwt, or allowAnonymous: true".into());
    }
    Ok(AuthServiceConfig {
        ttl,
        max_ttl,
        // Without an authService section nobody may fetch credentials: closed by default.
        allow_anonymous: svc.allow_anonymous,
        jwt,
    })
}
