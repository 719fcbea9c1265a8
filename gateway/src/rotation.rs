//! Hitless rotation of the TURN REST secret: when a GatewayConfig's secret changes, the old
//! one stays valid for `maxTTL`, as long as credentials issued under it may live. It also
//! remembers the certificate each TURN-TLS listener serves, so a Secret replaced by a
//! broken one leaves the listener on its last good certificate. The standalone runner and
//! the operator both keep one [`SecretRotation`].

use std::collections::BTreeMap;

use crate::objects::{Key, ObjectSet, key_string};
use crate::render::{RenderContext, Rendered, ServingCertificates, resolve_params};

#[derive(Debug, Default)]
pub struct SecretRotation {
    /// Rotated-out secrets per GatewayConfig, with the unix time they stop being valid.
    previous: BTreeMap<Key, Vec<(String, u64)>>,
    current: BTreeMap<Key, String>,
    certificates: ServingCertificates,
}

impl SecretRotation {
    /// For [`RenderContext::serving_certificates`].
    pub fn serving_certificates(&self) -> ServingCertificates {
        self.certificates.clone()
    }

    /// Notes what a render made TURN-TLS listeners serve.
    pub fn rendered(&mut self, rendered: &Rendered) {
        self.certificates = rendered.serving_certificates(&self.certificates);
    }

    /// Notes every GatewayConfig's current secret and returns the previous secrets still
    /// valid at `now_unix`, for [`RenderContext::previous_secrets`].
    pub fn observe(
        &mut self,
        objects: &ObjectSet,
        ctx: &RenderContext,
        now_unix: u64,
    ) -> BTreeMap<Key, Vec<String>> {
        for class in objects.gateway_classes.values() {
            let Ok(p) = resolve_params(objects, class, ctx) else {
                continue;
            };
            let Some(secret) = p.auth.secret.clone() else {
                continue;
            };
            if let Some(old) = self.current.insert(p.key.clone(), secret.clone())
                && old != secret
            {
                self.previous
                    .entry(p.key.clone())
                    .or_default()
                    .push((old, now_unix + p.max_ttl_secs));
                tracing::info!(config = %key_string(&p.key), "auth secret rotated; the previous one stays valid for maxTTL");
            }
        }
        for v in self.previous.values_mut() {
            v.retain(|(_, until)| *until > now_unix);
        }
        self.previous.retain(|_, v| !v.is_empty());
        self.previous
            .iter()
            .map(|(k, v)| (k.clone(), v.iter().map(|(s, _)| s.clone()).collect()))
            .collect()
    }
}
