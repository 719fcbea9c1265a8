//! What `/status` shows and `/readyz` decides on: the applied config's generation, whether
//! it serves, and each listener's state.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use serde::Serialize;

/// What `/status` shows and `/readyz` decides on.
#[derive(Default)]
pub struct Status {
    pub generation: AtomicU64,
    /// The newest generation the control plane sent (a refused one included).
    pub received_generation: AtomicU64,
    /// Unix seconds when the config in use was applied.
    pub applied_at: AtomicU64,
    /// Whether the CDS connection is up; `None` until a CDS client starts (a config file
    /// has no control plane to be connected to).
    pub cds_connected: Mutex<Option<bool>>,
    pub applied: AtomicBool,
    pub draining: AtomicBool,
    pub detail: Mutex<StatusDetail>,
    pub offload: Mutex<OffloadStatus>,
}

/// Kernel offload as `/status` shows it and the dataplane reports it over CDS.
pub use turnpike_contract::cds::report::OffloadStatus;

#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusDetail {
    pub name: String,
    pub config_source: String,
    pub last_error: Option<String>,
    pub listeners: Vec<ListenerStatus>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListenerStatus {
    pub name: String,
    pub protocol: String,
    pub address: String,
    pub relay_addresses: Vec<String>,
    pub routes: Vec<String>,
    /// `serving`, or why not.
    pub state: String,
    /// The certificate a TURN-TLS listener presents to new connections.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate: Option<CertificateStatus>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CertificateStatus {
    /// Hex serial number.
    pub serial: String,
    /// Unix seconds.
    pub not_after: i64,
    pub dns_names: Vec<String>,
}

impl Status {
    /// Ready for new allocations: serving and not draining.
    pub fn is_ready(&self) -> bool {
        self.is_serving() && !self.draining.load(Relaxed)
    }

    /// Relaying for its clients: a config is applied and every listener is bound (a
    /// listener whose port is taken keeps the pod out of the Service instead of
    /// blackholing its clients). A draining dataplane still serves the allocations it has
    /// (see `/readyz`).
    pub fn is_serving(&self) -> bool {
        self.applied.load(Relaxed) && self.listener_error().is_none()
    }

    /// The first listener that failed to bind, as `name: error`.
    pub fn listener_error(&self) -> Option<String> {
        let d = self.detail.lock().ok()?;
        d.listeners
            .iter()
            .find(|l| l.state.starts_with("error"))
            .map(|l| format!("{}: {}", l.name, l.state))
    }

    pub fn set_cds_connected(&self, up: bool) {
        if let Ok(mut c) = self.cds_connected.lock() {
            *c = Some(up);
        }
    }

    pub fn set_listener_state(&self, name: &str, state: String) {
        if let Ok(mut d) = self.detail.lock()
            && let Some(l) = d.listeners.iter_mut().find(|l| l.name == name)
        {
            l.state = state;
        }
    }
}
