//! What a config must hold beyond its syntax: names that are set and unique, references
//! that resolve, limits in range, and TLS pairs that load. [`DataplaneConfig::validate`]
//! reports every problem at once, each at its field path, and keeps what it built (the
//! TLS server configs) so nothing is parsed twice.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;

use super::{AuthType, ConfigError, DataplaneConfig, FieldError, Protocol, VERSION};

/// A config that passed [`DataplaneConfig::validate`], with the TLS server config of each
/// TURN-TLS listener (indexed like the listeners; `None` for the others).
#[derive(Debug, Clone)]
pub struct ValidConfig {
    config: DataplaneConfig,
    tls: Vec<Option<Arc<rustls::ServerConfig>>>,
}

impl ValidConfig {
    pub fn config(&self) -> &DataplaneConfig {
        &self.config
    }

    pub fn into_config(self) -> DataplaneConfig {
        self.config
    }

    /// The TLS server config of listener `i` (TURN-TLS listeners only).
    pub fn tls(&self, i: usize) -> Option<&Arc<rustls::ServerConfig>> {
        self.tls.get(i).and_then(Option::as_ref)
    }
}

impl std::ops::Deref for ValidConfig {
    type Target = DataplaneConfig;

    fn deref(&self) -> &DataplaneConfig {
        &self.config
    }
}

impl PartialEq for ValidConfig {
    fn eq(&self, other: &Self) -> bool {
        self.config == other.config
    }
}

/// Collected problems, each at its field path.
#[derive(Default)]
struct Problems(Vec<FieldError>);

impl Problems {
    fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            path: path.into(),
            message: message.into(),
        });
    }

    fn not_empty(&mut self, path: impl Into<String>, value: &str) {
        if value.is_empty() {
            self.add(path, "must not be empty");
        }
    }
}

impl DataplaneConfig {
    /// Checks everything serde cannot, reporting every problem.
    pub fn validate(self) -> Result<ValidConfig, ConfigError> {
        let mut p = Problems::default();
        if self.version != VERSION {
            p.add(
                "version",
                format!(
                    "unsupported version {:?}, expected {VERSION:?}",
                    self.version
                ),
            );
        }
        p.not_empty("name", &self.name);
        p.not_empty("realm", &self.realm);
        self.check_auth(&mut p);
        self.check_limits(&mut p);
        let routes = self.check_routes(&mut p);
        let tls = self.check_listeners(&routes, &mut p);
        if p.0.is_empty() {
            Ok(ValidConfig { config: self, tls })
        } else {
            Err(ConfigError::Invalid(p.0))
        }
    }

    fn check_auth(&self, p: &mut Problems) {
        match self.auth.kind {
            AuthType::Ephemeral => {
                if self.auth.secret.as_deref().is_none_or(str::is_empty) {
                    p.add("auth.secret", "required for ephemeral auth");
                }
                for (i, s) in self.auth.previous_secrets.iter().enumerate() {
                    p.not_empty(format!("auth.previousSecrets[{i}]"), s);
                }
            }
            AuthType::Static => {
                if self.auth.users.is_empty() {
                    p.add("auth.users", "static auth needs at least one user");
                }
                let mut seen = HashSet::new();
                for (i, u) in self.auth.users.iter().enumerate() {
                    let path = format!("auth.users[{i}].username");
                    p.not_empty(path.clone(), &u.username);
                    if !seen.insert(&u.username) {
                        p.add(path, format!("duplicate user {:?}", u.username));
                    }
                }
            }
        }
    }

    fn check_limits(&self, p: &mut Problems) {
        let l = &self.limits;
        for (field, v) in [
            ("limits.maxAllocationsPerUser", l.max_allocations_per_user),
            (
                "limits.maxPermissionsPerAllocation",
                l.max_permissions_per_allocation,
            ),
        ] {
            if v == 0 {
                p.add(field, "must be at least 1");
            }
        }
        if l.max_lifetime < 60 {
            p.add("limits.maxLifetime", "must be at least 60 seconds");
        }
        for (field, v) in [
            ("limits.maxConnections", l.max_connections),
            (
                "limits.maxConnectionRatePerIp",
                l.max_connection_rate_per_ip,
            ),
        ] {
            if v == 0 {
                p.add(field, "must be at least 1");
            }
        }
        for (field, v) in [
            ("limits.handshakeTimeout", l.handshake_timeout),
            ("limits.idleTimeout", l.idle_timeout),
        ] {
            if !(1..=3600).contains(&v) {
                p.add(field, "must be 1 to 3600 seconds");
            }
        }
    }

    /// The route names, checked for being set and unique.
    fn check_routes(&self, p: &mut Problems) -> HashSet<&str> {
        let mut names = HashSet::new();
        for (i, r) in self.routes.iter().enumerate() {
            let path = format!("routes[{i}].name");
            p.not_empty(path.clone(), &r.name);
            if !names.insert(r.name.as_str()) {
                p.add(path, format!("duplicate route {:?}", r.name));
            }
        }
        names
    }

    /// Checks listeners and builds the TLS server config of each TURN-TLS one.
    fn check_listeners(
        &self,
        routes: &HashSet<&str>,
        p: &mut Problems,
    ) -> Vec<Option<Arc<rustls::ServerConfig>>> {
        let mut names = HashSet::new();
        let mut binds: HashMap<(SocketAddr, bool), usize> = HashMap::new();
        let mut tls_configs = Vec::with_capacity(self.listeners.len());
        for (i, li) in self.listeners.iter().enumerate() {
            let path = |field: &str| format!("listeners[{i}].{field}");
            p.not_empty(path("name"), &li.name);
            if !names.insert(li.name.as_str()) {
                p.add(path("name"), format!("duplicate listener {:?}", li.name));
            }
            if li.port == 0 {
                p.add(path("port"), "must not be 0");
            }
            let udp = li.protocol == Protocol::TurnUdp;
            if let Some(j) = binds.insert((li.socket_addr(), udp), i) {
                p.add(
                    path("port"),
                    format!("same address, port and transport as listeners[{j}]"),
                );
            }
            let tls = match (li.protocol, &li.tls) {
                (Protocol::TurnTls, None) => {
                    p.add(path("tls"), "required for TURN-TLS");
                    None
                }
                (Protocol::TurnTls, Some(pair)) => match crate::tls::server_config(pair) {
                    Ok(c) => Some(c),
                    Err(e) => {
                        p.add(path("tls"), e.to_string());
                        None
                    }
                },
                (Protocol::TurnUdp | Protocol::TurnTcp, Some(_)) => {
                    p.add(path("tls"), format!("not allowed for {}", li.protocol));
                    None
                }
                (Protocol::TurnUdp | Protocol::TurnTcp, None) => None,
            };
            tls_configs.push(tls);
            for (j, r) in li.routes.iter().enumerate() {
                if !routes.contains(r.as_str()) {
                    p.add(
                        path(&format!("routes[{j}]")),
                        format!("unknown route {r:?}"),
                    );
                }
            }
        }
        tls_configs
    }
}
