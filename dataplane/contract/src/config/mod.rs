//! The dataplane config contract (DESIGN.md §3): what CDS carries and what
//! `turnpike dataplane --config FILE` reads. Versioned, JSON or YAML. Parsed once: values
//! with a syntax of their own (addresses, endpoints) are typed by serde, and what needs the
//! whole config (names, references, TLS pairs) is checked into a [`ValidConfig`] that keeps
//! what the checks built. Every error names its field path; unknown fields are refused so
//! typos never pass silently.

mod endpoint;
mod validate;

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use serde::{Deserialize, Serialize};

pub use endpoint::EndpointSpec;
pub use validate::ValidConfig;

pub const VERSION: &str = "v1alpha1";

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

/// Limits of one dataplane. A field left out takes its value from [`Default`], the one
/// place every default is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct LimitsConfig {
    pub max_allocations_per_user: u32,
    pub max_permissions_per_allocation: u32,
    /// Seconds.
    pub max_lifetime: u32,
    /// TCP and TLS client connections per dataplane; more are closed at accept.
    pub max_connections: u32,
    /// New TCP/TLS connections per second from one source IP (bursts of twice that).
    pub max_connection_rate_per_ip: u32,
    /// Seconds a new TCP/TLS connection has to complete its TLS handshake and send its
    /// first whole TURN message: what stops half-open and slow-loris connections.
    pub handshake_timeout: u32,
    /// Seconds a TCP/TLS connection without an allocation may stay silent.
    pub idle_timeout: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            // One browser tab easily holds 2 allocations per peer connection (UDP and TCP
            // URIs), and REST usernames minted in the same second for one userid are
            // identical, so 10 (eturnal's default) refuses legitimate clients; 100 still
            // stops one leaked credential from exhausting the relay ports.
            max_allocations_per_user: 100,
            max_permissions_per_allocation: 64,
            max_lifetime: 3600,
            max_connections: 20_000,
            // A corporate NAT puts many browsers behind one address, each opening a
            // connection or two per call; 50 a second (bursts of 100) lets them start a
            // meeting at once while a single host still cannot churn connections fast
            // enough to matter.
            max_connection_rate_per_ip: 50,
            handshake_timeout: 10,
            idle_timeout: 60,
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
    pub endpoints: Vec<EndpointSpec>,
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

impl DataplaneConfig {
    /// Parses YAML or JSON (JSON is YAML too) and validates it. A syntax or type error is
    /// reported with the field path of the first one; validation reports every problem.
    pub fn parse(text: &str) -> Result<ValidConfig, ConfigError> {
        let de = serde_yaml_ng::Deserializer::from_str(text);
        let cfg: DataplaneConfig = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            ConfigError::Parse(FieldError {
                path: if path == "." { String::new() } else { path },
                message: e.into_inner().to_string(),
            })
        })?;
        cfg.validate()
    }

    pub fn from_file(path: &Path) -> Result<ValidConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text)
    }
}

/// A small valid config (one UDP listener, one route with every endpoint form), for
/// tests here and in the crates that compile it.
#[doc(hidden)]
pub const EXAMPLE: &str = r#"
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

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = EXAMPLE;

    #[test]
    fn parses_with_defaults_and_typed_endpoints() {
        let c = DataplaneConfig::parse(GOOD).unwrap();
        assert_eq!(c.limits, LimitsConfig::default());
        let ep = &c.routes[0].endpoints;
        assert_eq!(ep[2].ports, (5000, 5010));
        assert_eq!(ep[3].to_string(), "[fd00::1]:7");
        assert!(c.tls(0).is_none());
    }

    #[test]
    fn json_is_accepted() {
        let c = DataplaneConfig::parse(GOOD).unwrap();
        let json = serde_json::to_string(c.config()).unwrap();
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
        // An endpoint is typed like an address: its syntax is a parse error at its path.
        let bad = GOOD.replace("10.0.2.0/24", "10.0.2.0/33");
        let e = DataplaneConfig::parse(&bad).unwrap_err().to_string();
        assert!(e.starts_with("routes[0].endpoints[1]:"), "{e}");
    }

    #[test]
    fn validation_errors_name_every_field() {
        let bad = GOOD
            .replace("routes: [default/echo]", "routes: [default/nope]")
            .replace("secret: s3cret", "secret: ''")
            .replace("realm: turnpike.dev", "realm: ''");
        let e = DataplaneConfig::parse(&bad).unwrap_err();
        let paths: Vec<String> = e.field_errors().into_iter().map(|f| f.path).collect();
        assert_eq!(
            paths,
            vec!["realm", "auth.secret", "listeners[0].routes[0]"]
        );
    }
}
