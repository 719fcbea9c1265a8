//! Versioned snapshots: what the control plane publishes to dataplanes and the auth
//! service. A Gateway gets a new generation only when its snapshot really changed, so a
//! re-render of unchanged objects is a no-op downstream.

use std::collections::{BTreeMap, BTreeSet};

use turnpike_contract::cds::GatewaySnapshot;

/// One change to publish.
#[derive(Debug, Clone, PartialEq)]
pub enum Update {
    Snapshot(Box<GatewaySnapshot>),
    Deleted(String),
}

#[derive(Debug, Default)]
pub struct Publisher {
    current: BTreeMap<String, GatewaySnapshot>,
}

impl Publisher {
    /// Compares a render with what was published: changed or new snapshots get the next
    /// generation; Gateways in neither `snapshots` nor `held` are deleted. Held Gateways
    /// keep their last good snapshot.
    pub fn update(
        &mut self,
        snapshots: &BTreeMap<String, GatewaySnapshot>,
        held: &BTreeSet<String>,
    ) -> Vec<Update> {
        let mut out = Vec::new();
        for (name, snap) in snapshots {
            let previous = self.current.get(name);
            let unchanged = previous.is_some_and(|p| {
                let mut p = p.clone();
                p.config.generation = snap.config.generation;
                p == *snap
            });
            if unchanged {
                continue;
            }
            let mut next = snap.clone();
            next.config.generation = previous.map_or(1, |p| p.config.generation + 1);
            self.current.insert(name.clone(), next.clone());
            out.push(Update::Snapshot(Box::new(next)));
        }
        let gone: Vec<String> = self
            .current
            .keys()
            .filter(|k| !snapshots.contains_key(*k) && !held.contains(*k))
            .cloned()
            .collect();
        for name in gone {
            self.current.remove(&name);
            out.push(Update::Deleted(name));
        }
        out
    }

    pub fn current(&self) -> &BTreeMap<String, GatewaySnapshot> {
        &self.current
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use turnpike_contract::cds::AuthServiceConfig;
    use turnpike_contract::config::DataplaneConfig;

    fn snap(realm: &str, ttl: u64) -> GatewaySnapshot {
        GatewaySnapshot {
            config: DataplaneConfig::parse(&format!(
                "version: v1alpha1\nname: ns/gw\nrealm: {realm}\nauth: {{type: ephemeral, secret: s}}\nlisteners: []\n"
            ))
            .unwrap()
            .into_config(),
            auth: Some(AuthServiceConfig {
                ttl,
                max_ttl: 86_400,
                ..Default::default()
            }),
        }
    }

    #[test]
    fn generations_advance_only_on_change() {
        let mut p = Publisher::default();
        let mut snaps = BTreeMap::from([("ns/gw".to_string(), snap("a", 60))]);
        let held = BTreeSet::new();
        let u = p.update(&snaps, &held);
        assert!(matches!(&u[..], [Update::Snapshot(c)] if c.config.generation == 1));
        assert!(p.update(&snaps, &held).is_empty());
        snaps.insert("ns/gw".into(), snap("b", 60));
        let u = p.update(&snaps, &held);
        assert!(matches!(&u[..], [Update::Snapshot(c)] if c.config.generation == 2));
        // An auth-service setting alone is a change too.
        snaps.insert("ns/gw".into(), snap("b", 120));
        let u = p.update(&snaps, &held);
        assert!(matches!(&u[..], [Update::Snapshot(c)] if c.config.generation == 3));
        // Held: kept, not deleted.
        let held = BTreeSet::from(["ns/gw".to_string()]);
        assert!(p.update(&BTreeMap::new(), &held).is_empty());
        let u = p.update(&BTreeMap::new(), &BTreeSet::new());
        assert_eq!(u, vec![Update::Deleted("ns/gw".into())]);
    }
}
