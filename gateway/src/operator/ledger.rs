//! The secret-rotation [`Ledger`] as a Secret in the operator's namespace: every replica
//! folds it into its [`crate::rotation::SecretRotation`] before rendering, the leader
//! writes it whenever the history changed. Without it, a replica started after a rotation
//! would serve configs that refuse every credential issued under the old secret, while
//! the replica that saw the rotation accepts them.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;

use super::certs::managed_secret_meta;
use crate::objects::{ObjectKey, ObjectSet};
use crate::rotation::Ledger;

pub const LEDGER_SECRET: &str = "turnpike-auth-rotation";

/// The ledger stored in `ns`, if there is one.
pub fn stored(objects: &ObjectSet, ns: &str) -> Option<Ledger> {
    let s = objects.secrets.get(&ObjectKey::new(ns, LEDGER_SECRET))?;
    let data = s.data.as_ref()?;
    Some(Ledger::from_data(
        data.iter().map(|(k, v)| (k, v.0.as_slice())),
    ))
}

/// The Secret to apply when `wanted` differs from what `ns` holds; `None` when nothing
/// needs writing (also while there is no history and no Secret yet).
pub fn to_write(objects: &ObjectSet, ns: &str, wanted: &Ledger) -> Option<Secret> {
    let current = stored(objects, ns);
    let unchanged = match &current {
        Some(l) => l == wanted,
        None => wanted.configs.is_empty(),
    };
    if unchanged {
        return None;
    }
    let data: BTreeMap<String, ByteString> = wanted
        .to_data()
        .into_iter()
        .map(|(k, v)| (k, ByteString(v)))
        .collect();
    Some(Secret {
        metadata: managed_secret_meta(LEDGER_SECRET, ns),
        type_: Some("Opaque".into()),
        data: Some(data),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rotation::{LedgerEntry, LedgerSecret};

    fn ledger(current: &str) -> Ledger {
        let entry = LedgerEntry {
            current: current.into(),
            previous: vec![LedgerSecret {
                secret: "old".into(),
                until: 100,
            }],
        };
        Ledger {
            configs: BTreeMap::from([(ObjectKey::new("sys", "cfg"), entry)]),
        }
    }

    #[test]
    fn written_only_when_the_history_changed() {
        let mut objects = ObjectSet::default();
        assert!(to_write(&objects, "sys", &Ledger::default()).is_none());
        let secret = to_write(&objects, "sys", &ledger("new")).expect("a first ledger");
        assert_eq!(secret.metadata.name.as_deref(), Some(LEDGER_SECRET));
        objects
            .secrets
            .insert(ObjectKey::new("sys", LEDGER_SECRET), secret);
        assert_eq!(stored(&objects, "sys"), Some(ledger("new")));
        assert!(to_write(&objects, "sys", &ledger("new")).is_none());
        assert!(to_write(&objects, "sys", &ledger("newer")).is_some());
        // Another namespace's Secret of that name is not ours.
        assert!(stored(&objects, "other").is_none());
    }
}
