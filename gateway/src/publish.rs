//! Versioned snapshots: what the control plane publishes to dataplanes. A config gets a new
//! generation only when it really changed, so a re-render of unchanged objects is a no-op
//! downstream.

use std::collections::{BTreeMap, BTreeSet};

use turnpike_dataplane::config::DataplaneConfig;

/// One change to publish.
#[derive(Debug, Clone, PartialEq)]
pub enum Update {
    Snapshot(DataplaneConfig),
    Deleted(String),
}

#[derive(Debug, Default)]
pub struct Publisher {
    current: BTreeMap<String, DataplaneConfig>,
}

impl Publisher {
    /// Compares a render with what was published: changed or new configs get the next
    /// generation; Gateways in neither `configs` nor `held` are deleted. Held Gateways keep
    /// their last good config.
    pub fn update(
        &mut self,
        configs: &BTreeMap<String, DataplaneConfig>,
        held: &BTreeSet<String>,
    ) -> Vec<Update> {
        let mut out = Vec::new();
        for (name, cfg) in configs {
            let previous = self.current.get(name);
            let unchanged = previous.is_some_and(|p| {
                let mut p = p.clone();
                p.generation = cfg.generation;
                p == *cfg
            });
            if unchanged {
                continue;
            }
            let mut next = cfg.clone();
            next.generation = previous.map_or(1, |p| p.generation + 1);
            self.current.insert(name.clone(), next.clone());
            out.push(Update::Snapshot(next));
        }
        let gone: Vec<String> = self
            .current
            .keys()
            .filter(|k| !configs.contains_key(*k) && !held.contains(*k))
            .cloned()
            .collect();
        for name in gone {
            self.current.remove(&name);
            out.push(Update::Deleted(name));
        }
        out
    }

    pub fn current(&self) -> &BTreeMap<String, DataplaneConfig> {
        &self.current
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(realm: &str) -> DataplaneConfig {
        DataplaneConfig::parse(&format!(
            "version: v1alpha1\nname: ns/gw\nrealm: {realm}\nauth: {{type: ephemeral, secret: s}}\nlisteners: []\n"
        ))
        .unwrap()
    }

    #[test]
    fn generations_advance_only_on_change() {
        let mut p = Publisher::default();
        let mut configs = BTreeMap::from([("ns/gw".to_string(), cfg("a"))]);
        let held = BTreeSet::new();
        let u = p.update(&configs, &held);
        assert!(matches!(&u[..], [Update::Snapshot(c)] if c.generation == 1));
        assert!(p.update(&configs, &held).is_empty());
        configs.insert("ns/gw".into(), cfg("b"));
        let u = p.update(&configs, &held);
        assert!(matches!(&u[..], [Update::Snapshot(c)] if c.generation == 2));
        // Held: kept, not deleted.
        let held = BTreeSet::from(["ns/gw".to_string()]);
        assert!(p.update(&BTreeMap::new(), &held).is_empty());
        let u = p.update(&BTreeMap::new(), &BTreeSet::new());
        assert_eq!(u, vec![Update::Deleted("ns/gw".into())]);
    }
}
