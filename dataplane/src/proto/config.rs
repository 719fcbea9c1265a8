//! The compiled, immutable view of the dataplane config the protocol core works from.

use std::collections::HashMap;
use std::sync::Mutex;

use super::access::RouteTable;
use super::auth::Credentials;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_allocations_per_user: u32,
    pub max_permissions_per_allocation: usize,
    pub max_lifetime_secs: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_allocations_per_user: 100,
            max_permissions_per_allocation: 64,
            max_lifetime_secs: 3600,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ListenerPolicy {
    pub name: String,
    pub routes: RouteTable,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub realm: String,
    pub credentials: Credentials,
    pub limits: Limits,
    /// In the order of the config's listeners; a client's listener index points here.
    pub listeners: Vec<ListenerPolicy>,
    /// Relay counter labels `(listener, route)`, indexed by `CounterId`.
    pub counters: Vec<(String, String)>,
}

impl ServerConfig {
    pub fn routes_of(&self, listener: u16) -> Option<&RouteTable> {
        self.listeners.get(listener as usize).map(|l| &l.routes)
    }

    pub fn listener_index(&self, name: &str) -> Option<u16> {
        self.listeners
            .iter()
            .position(|l| l.name == name)
            .map(|i| i as u16)
    }
}

/// Allocations per username across all workers. Touched only when an allocation is created
/// or removed, never per packet, so a mutex is cheap here.
#[derive(Debug, Default)]
pub struct UserQuota {
    counts: Mutex<HashMap<Box<str>, u32>>,
}

impl UserQuota {
    pub fn acquire(&self, user: &str, max: u32) -> bool {
        let Ok(mut m) = self.counts.lock() else {
            return false;
        };
        let n = m.entry(user.into()).or_insert(0);
        if *n >= max {
            return false;
        }
        *n += 1;
        true
    }

    pub fn release(&self, user: &str) {
        if let Ok(mut m) = self.counts.lock()
            && let Some(n) = m.get_mut(user)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(user);
            }
        }
    }

    pub fn count(&self, user: &str) -> u32 {
        self.counts
            .lock()
            .ok()
            .and_then(|m| m.get(user).copied())
            .unwrap_or(0)
    }
}
