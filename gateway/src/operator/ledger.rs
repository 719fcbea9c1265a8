//! The secret-rotation [`Ledger`] as a Secret in the operator's namespace: every replica
//! folds it into its [`crate::rotation::SecretRotation`] before rendering, the leader
//! writes it whenever the history changed. Without it, a replica started after a rotation
//! would serve configs that refuse every credential issued under the old secret, while
//! the replica that saw the rotation accepts them.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::objects::ObjectSet;
use crate::render::{MANAGED_BY, MANAGED_BY_LABEL};
use crate::rotation::Ledger;

pub const LEDGER_SECRET: &str = "turnpike-auth-rotation";

/// The ledger stored in `ns`, if there is one.
pub fn stored(objects: &ObjectSet, ns: &str) -> Option<Ledger> {
    let s = objects
        .secrets
        .get(&(ns.to_string(), LEDGER_SECRET.to_string()))?;
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
        metadata: ObjectMeta {
            name: Some(LEDGER_SECRET.into()),
            namespace: Some(ns.into()),
            labels: Some(BTreeMap::from([(
                MANAGED_BY_LABEL.to_string(),
                MANAGED_BY.to_string(),
            )])),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        data: Some(data),
        ..Default::default()
    })
}
