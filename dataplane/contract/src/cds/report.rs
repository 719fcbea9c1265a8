//! What a dataplane tells the control plane about itself when it subscribes: facts only
//! the dataplane can know (whether the kernel took the relay path), which the control
//! plane shows in the listener's `Programmed` condition and on the dataplane's pod.

use serde::{Deserialize, Serialize};

/// Sent inside every `Subscribe`, so a reconnect (to the same or another control-plane
/// replica) repeats it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DataplaneReport {
    /// The dataplane's pod, in Kubernetes (from the downward API); `None` elsewhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodName>,
    pub offload: OffloadStatus,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PodName {
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for PodName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Kernel offload of one dataplane, as its `/status` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OffloadStatus {
    /// `None`, `TC`, `XDP` or `Auto`, as asked for.
    pub requested: String,
    /// `TC` or `XDP` when the kernel relays; `None` otherwise.
    pub active: String,
    /// The interfaces it is attached to.
    #[serde(default)]
    pub interfaces: Vec<String>,
    /// Why it is not active although asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What limits it while active.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

impl OffloadStatus {
    /// Whether the kernel relays established channels.
    pub fn is_active(&self) -> bool {
        !self.active.is_empty() && self.active != "None"
    }

    /// Whether it was asked for at all.
    pub fn is_requested(&self) -> bool {
        !self.requested.is_empty() && self.requested != "None"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subscribe_without_a_report_still_parses() {
        let old: super::super::ClientMessage =
            serde_json::from_str(r#"{"subscribe":{"gateway":"ns/gw"}}"#).unwrap_or_else(|e| {
                panic!("an older dataplane's Subscribe must parse: {e}");
            });
        assert_eq!(
            old,
            super::super::ClientMessage::Subscribe {
                gateway: "ns/gw".into(),
                report: None
            }
        );
    }

    #[test]
    fn active_and_requested() {
        let mut s = OffloadStatus {
            requested: "TC".into(),
            active: "None".into(),
            ..Default::default()
        };
        assert!(s.is_requested() && !s.is_active());
        s.active = "TC".into();
        assert!(s.is_active());
        assert!(!OffloadStatus::default().is_requested());
    }
}
