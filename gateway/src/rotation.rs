//! Hitless rotation of the TURN REST secret: when a GatewayConfig's secret changes, the old
//! one stays valid for `maxTTL`, as long as credentials issued under it may live. It also
//! remembers the certificate each TURN-TLS listener serves, so a Secret replaced by a
//! broken one leaves the listener on its last good certificate. The standalone runner and
//! the operator both keep one [`SecretRotation`].
//!
//! In Kubernetes the secrets' history is also kept in a [`Ledger`] (a Secret in the
//! operator's namespace, written by the leader, read by every replica): a replica that
//! starts after a rotation, or an operator restarted during one, still accepts the
//! credentials issued under the old secret, and every replica serves the same config.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::objects::{ObjectKey, ObjectSet};
use crate::render::{RenderContext, Rendered, ServingCertificates, resolve_params};

#[derive(Debug, Default)]
pub struct SecretRotation {
    /// Rotated-out secrets per GatewayConfig, with the unix time they stop being valid.
    previous: BTreeMap<ObjectKey, Vec<(String, u64)>>,
    current: BTreeMap<ObjectKey, String>,
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

    /// Folds in a ledger another replica (or an earlier run) wrote: previous secrets are
    /// joined, and a GatewayConfig this replica has not seen yet starts from the ledger's
    /// current secret, so a rotation that happened while it was away is still noticed.
    pub fn merge(&mut self, ledger: &Ledger) {
        for (k, entry) in &ledger.configs {
            self.current
                .entry(k.clone())
                .or_insert_with(|| entry.current.clone());
            let previous = self.previous.entry(k.clone()).or_default();
            for old in &entry.previous {
                match previous.iter_mut().find(|(s, _)| *s == old.secret) {
                    Some((_, until)) => *until = (*until).max(old.until),
                    None => previous.push((old.secret.clone(), old.until)),
                }
            }
        }
        self.previous.retain(|_, v| !v.is_empty());
    }

    /// What a [`Ledger`] should hold now.
    pub fn ledger(&self) -> Ledger {
        let configs = self
            .current
            .iter()
            .map(|(k, current)| {
                let mut previous: Vec<LedgerSecret> = self
                    .previous
                    .get(k)
                    .into_iter()
                    .flatten()
                    .map(|(secret, until)| LedgerSecret {
                        secret: secret.clone(),
                        until: *until,
                    })
                    .collect();
                previous.sort_by(|a, b| (a.until, &a.secret).cmp(&(b.until, &b.secret)));
                (
                    k.clone(),
                    LedgerEntry {
                        current: current.clone(),
                        previous,
                    },
                )
            })
            .collect();
        Ledger { configs }
    }

    /// Notes every GatewayConfig's current secret and returns the previous secrets still
    /// valid at `now_unix`, for [`RenderContext::previous_secrets`].
    pub fn observe(
        &mut self,
        objects: &ObjectSet,
        ctx: &RenderContext,
        now_unix: u64,
    ) -> BTreeMap<ObjectKey, Vec<String>> {
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
                tracing::info!(config = %p.key.to_string(), "auth secret rotated; the previous one stays valid for maxTTL");
            }
        }
        // A deleted GatewayConfig's history goes with it.
        self.current
            .retain(|k, _| objects.gateway_configs.contains_key(k));
        self.previous
            .retain(|k, _| objects.gateway_configs.contains_key(k));
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

/// The rotation history of every GatewayConfig, as stored in Secret data: one key per
/// GatewayConfig (`NAMESPACE.NAME`; namespaces hold no dots), a JSON [`LedgerEntry`] as
/// its value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ledger {
    pub configs: BTreeMap<ObjectKey, LedgerEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerEntry {
    pub current: String,
    pub previous: Vec<LedgerSecret>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerSecret {
    pub secret: String,
    /// Unix seconds after which no credential issued under it can be valid.
    pub until: u64,
}

impl Ledger {
    /// Reads Secret data; entries that do not parse are skipped (and named in the log
    /// without their content), so a hand-edited key never costs the others.
    pub fn from_data<'a>(data: impl IntoIterator<Item = (&'a String, &'a [u8])>) -> Ledger {
        let mut configs = BTreeMap::new();
        for (key, value) in data {
            let parsed = key
                .split_once('.')
                .filter(|(ns, name)| !ns.is_empty() && !name.is_empty())
                .and_then(|(ns, name)| {
                    let entry = serde_json::from_slice::<LedgerEntry>(value).ok()?;
                    Some((ObjectKey::new(ns, name), entry))
                });
            match parsed {
                Some((k, entry)) => {
                    configs.insert(k, entry);
                }
                None => tracing::warn!(%key, "ignoring an unreadable secret-rotation ledger entry"),
            }
        }
        Ledger { configs }
    }

    /// Secret data for [`Ledger::from_data`].
    pub fn to_data(&self) -> BTreeMap<String, Vec<u8>> {
        self.configs
            .iter()
            .map(|(k, entry)| {
                let json = serde_json::to_vec(entry).unwrap_or_default();
                (format!("{}.{}", k.namespace, k.name), json)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::RenderContext;
    use crate::source::parse_set;

    const OBJECTS: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: turnpike}
spec:
  controllerName: turnpike.dev/gateway-controller
  parametersRef: {group: turnpike.dev, kind: GatewayConfig, name: cfg, namespace: sys}
---
apiVersion: turnpike.dev/v1alpha1
kind: GatewayConfig
metadata: {name: cfg, namespace: sys}
spec:
  auth: {type: ephemeral, secretRef: {name: auth, key: secret}, ttl: 50s, maxTTL: 100s}
---
apiVersion: v1
kind: Secret
metadata: {name: auth, namespace: sys}
stringData: {secret: SECRET}
"#;

    fn objects(secret: &str) -> ObjectSet {
        parse_set("test.yaml", &OBJECTS.replace("SECRET", secret)).unwrap()
    }

    fn ctx() -> RenderContext {
        RenderContext {
            now: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ),
            standalone: false,
            dataplane_image: String::new(),
            dataplane_image_pull_policy: None,
            cds_address: String::new(),
            previous_secrets: BTreeMap::new(),
            serving_certificates: Default::default(),
            offload_reports: Default::default(),
        }
    }

    fn key() -> ObjectKey {
        ObjectKey::new("sys", "cfg")
    }

    #[test]
    fn a_rotation_keeps_the_old_secret_until_max_ttl() {
        let mut r = SecretRotation::default();
        assert!(r.observe(&objects("one"), &ctx(), 1000).is_empty());
        let prev = r.observe(&objects("two"), &ctx(), 1010);
        assert_eq!(prev[&key()], vec!["one".to_string()]);
        assert_eq!(
            r.observe(&objects("two"), &ctx(), 1109)[&key()],
            vec!["one"]
        );
        assert!(r.observe(&objects("two"), &ctx(), 1110).is_empty());
    }

    #[test]
    fn a_replica_started_after_a_rotation_learns_it_from_the_ledger() {
        let mut leader = SecretRotation::default();
        leader.observe(&objects("one"), &ctx(), 1000);
        leader.observe(&objects("two"), &ctx(), 1010);
        let stored = Ledger::from_data(
            leader
                .ledger()
                .to_data()
                .iter()
                .map(|(k, v)| (k, v.as_slice())),
        );
        assert_eq!(stored, leader.ledger());

        let mut late = SecretRotation::default();
        late.merge(&stored);
        assert_eq!(
            late.observe(&objects("two"), &ctx(), 1020)[&key()],
            vec!["one"]
        );
        assert_eq!(late.ledger(), leader.ledger());
    }

    #[test]
    fn a_rotation_while_no_operator_ran_is_noticed_from_the_ledger() {
        let mut before = SecretRotation::default();
        before.observe(&objects("one"), &ctx(), 1000);
        let mut after = SecretRotation::default();
        after.merge(&before.ledger());
        let prev = after.observe(&objects("two"), &ctx(), 1050);
        assert_eq!(prev[&key()], vec!["one"]);
        assert_eq!(after.ledger().configs[&key()].previous[0].until, 1150);
    }

    #[test]
    fn merging_joins_histories_and_keeps_the_later_expiry() {
        let mut a = SecretRotation::default();
        a.observe(&objects("one"), &ctx(), 1000);
        a.observe(&objects("two"), &ctx(), 1010);
        let mut b = SecretRotation::default();
        b.observe(&objects("one"), &ctx(), 1000);
        b.observe(&objects("two"), &ctx(), 1012);
        b.merge(&a.ledger());
        let entry = &b.ledger().configs[&key()];
        assert_eq!(entry.previous.len(), 1);
        assert_eq!(entry.previous[0].until, 1112);
        let once = b.ledger();
        b.merge(&a.ledger());
        assert_eq!(b.ledger(), once, "merging again changes nothing");
    }

    #[test]
    fn a_deleted_gateway_config_leaves_the_ledger() {
        let mut r = SecretRotation::default();
        r.observe(&objects("one"), &ctx(), 1000);
        r.observe(&objects("two"), &ctx(), 1010);
        r.observe(&ObjectSet::default(), &ctx(), 1020);
        assert!(r.ledger().configs.is_empty());
    }

    #[test]
    fn unreadable_ledger_entries_are_skipped() {
        let good = serde_json::to_vec(&LedgerEntry {
            current: "x".into(),
            previous: vec![],
        })
        .unwrap();
        let data = [
            ("sys.cfg".to_string(), good),
            ("nodot".to_string(), b"{}".to_vec()),
            ("sys.other".to_string(), b"not json".to_vec()),
        ];
        let l = Ledger::from_data(data.iter().map(|(k, v)| (k, v.as_slice())));
        assert_eq!(l.configs.len(), 1);
        assert_eq!(l.configs[&key()].current, "x");
    }
}
