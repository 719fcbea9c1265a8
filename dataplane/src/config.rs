//! The dataplane config contract (DESIGN.md §3): what CDS carries and what
//! `turnpike dataplane --config FILE` reads. Versioned, JSON or YAML, validated with an
//! error per field path; unknown fields are refused so typos never pass silently.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::proto::{self, Credentials, Endpoint, Limits, ListenerPolicy, RouteTable, ServerConfig};

pub const VERSION: &str = "v1alpha1";

/// Listener protocols this dataplane version serves. Others are accepted in configs (so
/// nothing changes when support lands) but not bound, reported as not programmed, and left
/// out of ICE configurations.
pub const SERVED_PROTOCOLS: &[Protocol] =
    &[Protocol::TurnUdp, Protocol::TurnTcp, Protocol::TurnTls];

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DataplaneConfig {
    pub version: String,
    /// `namespace/name` of the Gateway.
    pub name: String,
    #[serde(default)]
    pub generation: u64,
    pub realm: String,
    pub auth: AuthConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
    pub listeners: Vec<ListenerConfig>,
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthType {
    Ephemeral,
    Static,
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthConfig {
    #[serde(rename = "type")]
    pub kind: AuthType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub previous_secrets: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<StaticUser>,
}

impl fmt::Debug for AuthConfig {
    // Secrets never reach a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthConfig")
            .field("kind", &self.kind)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("previous_secrets", &self.previous_secrets.len())
            .field("users", &self.users.len())
            .finish()
    }
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticUser {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for StaticUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StaticUser({})", self.username)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LimitsConfig {
    #[serde(default = "default_max_allocations_per_user")]
    pub max_allocations_per_user: u32,
    #[serde(default = "default_max_permissions")]
    pub max_permissions_per_allocation: u32,
    /// Seconds.
    #[serde(default = "default_max_lifetime")]
    pub max_lifetime: u32,
    /// TCP and TLS client connections per dataplane; more are closed at accept.
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    /// New TCP/TLS connections per second from one source IP (bursts of twice that).
    #[serde(default = "default_connection_rate")]
    pub max_connection_rate_per_ip: u32,
    /// Seconds a new TCP/TLS connection has to complete its TLS handshake and send its
    /// first whole TURN message: what stops half-open and slow-loris connections.
    #[serde(default = "default_handshake_timeout")]
    pub handshake_timeout: u32,
    /// Seconds a TCP/TLS connection without an allocation may stay silent.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: u32,
}

/// One browser tab easily holds 2 allocations per peer connection (UDP and TCP URIs), and
/// REST usernames minted in the same second for one userid are identical, so 10 (eturnal's
/// default) refuses legitimate clients; 100 still stops one leaked credential from
/// exhausting the relay ports.
fn default_max_allocations_per_user() -> u32 {
    100
}
fn default_max_permissions() -> u32 {
    64
}
fn default_max_lifetime() -> u32 {
    3600
}
fn default_max_connections() -> u32 {
    20_000
}
/// A corporate NAT puts many browsers behind one address, each opening a connection or two
/// per call; 50 a second (bursts of 100) lets them start a meeting at once while a single
/// host still cannot churn connections fast enough to matter.
fn default_connection_rate() -> u32 {
    50
}
fn default_handshake_timeout() -> u32 {
    10
}
fn default_idle_timeout() -> u32 {
    60
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_allocations_per_user: default_max_allocations_per_user(),
            max_permissions_per_allocation: default_max_permissions(),
            max_lifetime: default_max_lifetime(),
            max_connections: default_max_connections(),
            max_connection_rate_per_ip: default_connection_rate(),
            handshake_timeout: default_handshake_timeout(),
            idle_timeout: default_idle_timeout(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Protocol {
    #[serde(rename = "TURN-UDP")]
    TurnUdp,
    #[serde(rename = "TURN-TCP")]
    TurnTcp,
    #[serde(rename = "TURN-TLS")]
    TurnTls,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::TurnUdp => "TURN-UDP",
            Protocol::TurnTcp => "TURN-TCP",
            Protocol::TurnTls => "TURN-TLS",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListenerConfig {
    pub name: String,
    pub protocol: Protocol,
    pub address: IpAddr,
    pub port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
    #[serde(default)]
    pub routes: Vec<String>,
}

impl ListenerConfig {
    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::new(self.address, self.port)
    }
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsConfig {
    pub cert_pem: String,
    pub key_pem: String,
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TlsConfig(<redacted>)")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// `namespace/name` of the UDPRoute.
    pub name: String,
    pub endpoints: Vec<String>,
}

/// One problem in a config, at a field path such as `listeners[0].routes[1]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub path: String,
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Parse(FieldError),
    #[error("invalid config: {}", join(.0))]
    Invalid(Vec<FieldError>),
}

fn join(errs: &[FieldError]) -> String {
    errs.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl ConfigError {
    pub fn field_errors(&self) -> Vec<FieldError> {
        match self {
            ConfigError::Read { path, source } => vec![FieldError {
                path: String::new(),
                message: format!("cannot read {path}: {source}"),
            }],
            ConfigError::Parse(e) => vec![e.clone()],
            ConfigError::Invalid(v) => v.clone(),
        }
    }
}

/// A parsed endpoint: an IP or CIDR with an optional port or port range.
pub fn parse_endpoint(s: &str) -> Result<(IpNet, (u16, u16)), String> {
    let s = s.trim();
    let (host, ports) = if let Some(rest) = s.strip_prefix('[') {
        let (h, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("unclosed '[' in {s:?}"))?;
        match after {
            "" => (h, None),
            p => (
                h,
                Some(
                    p.strip_prefix(':')
                        .ok_or_else(|| format!("expected ':' after ']' in {s:?}"))?,
                ),
            ),
        }
    } else if s.matches(':').count() == 1 {
        let (h, p) = s.split_once(':').unwrap_or((s, ""));
        (h, Some(p))
    } else {
        (s, None)
    };
    let net: IpNet = if host.contains('/') {
        let n: IpNet = host.parse().map_err(|_| format!("invalid CIDR {host:?}"))?;
        n.trunc()
    } else {
        let ip: IpAddr = host
            .parse()
            .map_err(|_| format!("invalid IP address {host:?}"))?;
        IpNet::from(ip.to_canonical())
    };
    let ports = match ports {
        None => (0, u16::MAX),
        Some(p) => {
            let parse = |x: &str| {
                x.parse::<u16>()
                    .map_err(|_| format!("invalid port {x:?} in {s:?}"))
            };
            match p.split_once('-') {
                Some((lo, hi)) => {
                    let (lo, hi) = (parse(lo)?, parse(hi)?);
                    if lo > hi {
                        return Err(format!("port range {lo}-{hi} is empty"));
                    }
                    (lo, hi)
                }
                None => {
                    let port = parse(p)?;
                    (port, port)
                }
            }
        }
    };
    Ok((net, ports))
}

impl DataplaneConfig {
    /// Parses YAML or JSON (JSON is YAML too), reporting the field path of the first error.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let de = serde_yaml::Deserializer::from_str(text);
        let cfg: DataplaneConfig = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            ConfigError::Parse(FieldError {
                path: if path == "." { String::new() } else { path },
                message: e.into_inner().to_string(),
            })
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut errs = Vec::new();
        let mut err = |path: String, message: String| errs.push(FieldError { path, message });
        if self.version != VERSION {
            err(
                "version".into(),
                format!(
                    "unsupported version {:?}, expected {VERSION:?}",
                    self.version
                ),
            );
        }
        if self.name.is_empty() {
            err("name".into(), "must not be empty".into());
        }
        if self.realm.is_empty() {
            err("realm".into(), "must not be empty".into());
        }
        match self.auth.kind {
            AuthType::Ephemeral => {
                if self.auth.secret.as_deref().is_none_or(str::is_empty) {
                    err("auth.secret".into(), "required for ephemeral auth".into());
                }
                for (i, s) in self.auth.previous_secrets.iter().enumerate() {
                    if s.is_empty() {
                        err(
                            format!("auth.previousSecrets[{i}]"),
                            "must not be empty".into(),
                        );
                    }
                }
            }
            AuthType::Static => {
                if self.auth.users.is_empty() {
                    err(
                        "auth.users".into(),
                        "static auth needs at least one user".into(),
                    );
                }
                let mut seen = HashSet::new();
                for (i, u) in self.auth.users.iter().enumerate() {
                    if u.username.is_empty() {
                        err(
                            format!("auth.users[{i}].username"),
                            "must not be empty".into(),
                        );
                    }
                    if !seen.insert(&u.username) {
                        err(
                            format!("auth.users[{i}].username"),
                            format!("duplicate user {:?}", u.username),
                        );
                    }
                }
            }
        }
        let l = &self.limits;
        if l.max_allocations_per_user == 0 {
            err(
                "limits.maxAllocationsPerUser".into(),
                "must be at least 1".into(),
            );
        }
        if l.max_permissions_per_allocation == 0 {
            err(
                "limits.maxPermissionsPerAllocation".into(),
                "must be at least 1".into(),
            );
        }
        if l.max_lifetime < 60 {
            err(
                "limits.maxLifetime".into(),
                "must be at least 60 seconds".into(),
            );
        }
        for (field, v) in [
            ("limits.maxConnections", l.max_connections),
            (
                "limits.maxConnectionRatePerIp",
                l.max_connection_rate_per_ip,
            ),
        ] {
            if v == 0 {
                err(field.into(), "must be at least 1".into());
            }
        }
        for (field, v) in [
            ("limits.handshakeTimeout", l.handshake_timeout),
            ("limits.idleTimeout", l.idle_timeout),
        ] {
            if !(1..=3600).contains(&v) {
                err(field.into(), "must be 1 to 3600 seconds".into());
            }
        }
        let mut route_names = HashSet::new();
        for (i, r) in self.routes.iter().enumerate() {
            if r.name.is_empty() {
                err(format!("routes[{i}].name"), "must not be empty".into());
            }
            if !route_names.insert(r.name.as_str()) {
                err(
                    format!("routes[{i}].name"),
                    format!("duplicate route {:?}", r.name),
                );
            }
            for (j, e) in r.endpoints.iter().enumerate() {
                if let Err(m) = parse_endpoint(e) {
                    err(format!("routes[{i}].endpoints[{j}]"), m);
                }
            }
        }
        let mut names = HashSet::new();
        let mut binds: HashMap<(SocketAddr, bool), usize> = HashMap::new();
        for (i, li) in self.listeners.iter().enumerate() {
            if li.name.is_empty() {
                err(format!("listeners[{i}].name"), "must not be empty".into());
            }
            if !names.insert(li.name.as_str()) {
                err(
                    format!("listeners[{i}].name"),
                    format!("duplicate listener {:?}", li.name),
                );
            }
            if li.port == 0 {
                err(format!("listeners[{i}].port"), "must not be 0".into());
            }
            let udp = li.protocol == Protocol::TurnUdp;
            if let Some(j) = binds.insert((li.socket_addr(), udp), i) {
                err(
                    format!("listeners[{i}].port"),
                    format!("same address, port and transport as listeners[{j}]"),
                );
            }
            match (li.protocol, &li.tls) {
                (Protocol::TurnTls, None) => {
                    err(
                        format!("listeners[{i}].tls"),
                        "required for TURN-TLS".into(),
                    );
                }
                (Protocol::TurnTls, Some(tls)) => {
                    if let Err(e) = crate::tls::server_config(tls) {
                        err(format!("listeners[{i}].tls"), e.to_string());
                    }
                }
                (Protocol::TurnUdp | Protocol::TurnTcp, Some(_)) => {
                    err(
                        format!("listeners[{i}].tls"),
                        format!("not allowed for {}", li.protocol),
                    );
                }
                _ => {}
            }
            for (j, r) in li.routes.iter().enumerate() {
                if !route_names.contains(r.as_str()) {
                    err(
                        format!("listeners[{i}].routes[{j}]"),
                        format!("unknown route {r:?}"),
                    );
                }
            }
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(errs))
        }
    }

    /// The protocol core's view of this (validated) config.
    pub fn compile(&self) -> ServerConfig {
        let credentials = match self.auth.kind {
            AuthType::Ephemeral => Credentials::Ephemeral(
                self.auth
                    .secret
                    .iter()
                    .chain(self.auth.previous_secrets.iter())
                    .cloned()
                    .collect(),
            ),
            AuthType::Static => Credentials::Static(
                self.auth
                    .users
                    .iter()
                    .map(|u| (u.username.clone(), u.password.clone()))
                    .collect(),
            ),
        };
        let routes: HashMap<&str, &RouteConfig> =
            self.routes.iter().map(|r| (r.name.as_str(), r)).collect();
        let mut counters = Vec::new();
        let listeners = self
            .listeners
            .iter()
            .map(|l| {
                let mut entries = Vec::new();
                for rname in &l.routes {
                    let Some(route) = routes.get(rname.as_str()) else {
                        continue;
                    };
                    let counter = counters.len() as proto::CounterId;
                    counters.push((l.name.clone(), rname.clone()));
                    entries.extend(route.endpoints.iter().filter_map(|e| {
                        parse_endpoint(e).ok().map(|(net, ports)| Endpoint {
                            net,
                            ports,
                            counter,
                        })
                    }));
                }
                ListenerPolicy {
                    name: l.name.clone(),
                    routes: RouteTable::new(entries),
                }
            })
            .collect();
        ServerConfig {
            realm: self.realm.clone(),
            credentials,
            limits: Limits {
                max_allocations_per_user: self.limits.max_allocations_per_user,
                max_permissions_per_allocation: self.limits.max_permissions_per_allocation as usize,
                max_lifetime_secs: self.limits.max_lifetime,
            },
            listeners,
            counters,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
version: v1alpha1
name: default/gw
generation: 3
realm: turnpike.dev
auth: {type: ephemeral, secret: s3cret}
listeners:
  - {name: udp, protocol: TURN-UDP, address: 127.0.0.1, port: 3478, routes: [default/echo]}
routes:
  - {name: default/echo, endpoints: ["127.0.0.1:3480", "10.0.2.0/24", "10.0.3.4:5000-5010", "[fd00::1]:7"]}
"#;

    #[test]
    fn parses_and_compiles() {
        let c = DataplaneConfig::parse(GOOD).unwrap();
        assert_eq!(c.limits, LimitsConfig::default());
        let s = c.compile();
        let t = s.routes_of(0).unwrap();
        assert_eq!(t.match_addr("127.0.0.1:3480".parse().unwrap()), Some(0));
        assert_eq!(t.match_addr("10.0.3.4:5011".parse().unwrap()), None);
        assert_eq!(t.match_addr("[fd00::1]:7".parse().unwrap()), Some(0));
        assert_eq!(
            s.counters,
            vec![("udp".to_string(), "default/echo".to_string())]
        );
    }

    #[test]
    fn json_is_accepted() {
        let c = DataplaneConfig::parse(GOOD).unwrap();
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(DataplaneConfig::parse(&json).unwrap(), c);
    }

    #[test]
    fn parse_errors_name_the_field() {
        let bad = GOOD.replace("port: 3478", "port: 70000");
        let e = DataplaneConfig::parse(&bad).unwrap_err().to_string();
        assert!(e.starts_with("listeners[0].port:"), "{e}");
        let bad = GOOD.replace("realm: turnpike.dev", "realm: turnpike.dev\nrelam: x");
        let e = DataplaneConfig::parse(&bad).unwrap_err().to_string();
        assert!(e.contains("relam"), "{e}");
        let bad = GOOD.replace("TURN-UDP", "TURN-SCTP");
        let e = DataplaneConfig::parse(&bad).unwrap_err().to_string();
        assert!(e.starts_with("listeners[0].protocol:"), "{e}");
    }

    #[test]
    fn validation_errors_name_every_field() {
        let bad = GOOD
            .replace("routes: [default/echo]", "routes: [default/nope]")
            .replace("10.0.2.0/24", "10.0.2.0/33")
            .replace("secret: s3cret", "secret: ''");
        let e = DataplaneConfig::parse(&bad).unwrap_err();
        let paths: Vec<String> = e.field_errors().into_iter().map(|f| f.path).collect();
        assert_eq!(
            paths,
            vec![
                "auth.secret",
                "routes[0].endpoints[1]",
                "listeners[0].routes[0]"
            ]
        );
    }

    #[test]
    fn endpoint_forms() {
        assert_eq!(
            parse_endpoint("10.0.0.7").unwrap(),
            ("10.0.0.7/32".parse().unwrap(), (0, 65535))
        );
        assert_eq!(
            parse_endpoint("10.0.0.7:5000-5010").unwrap().1,
            (5000, 5010)
        );
        assert_eq!(
            parse_endpoint("::ffff:10.0.0.7").unwrap().0,
            "10.0.0.7/32".parse::<IpNet>().unwrap()
        );
        assert_eq!(parse_endpoint("fd00::/8").unwrap().1, (0, 65535));
        assert!(parse_endpoint("10.0.0.7:6000-5000").is_err());
        assert!(parse_endpoint("10.0.0.7:x").is_err());
        assert!(parse_endpoint("[fd00::1").is_err());
    }
}
