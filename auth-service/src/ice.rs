//! ICE server entries: TURN URIs for a Gateway's listeners and credentials valid on its
//! dataplane. Pure functions of a snapshot and the time.

use serde::Serialize;
use turnpike_contract::config::{AuthType, DataplaneConfig, ListenerConfig, Protocol};
use turnpike_contract::credentials::rest_password;

/// One `RTCIceServer`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct IceServer {
    pub urls: Vec<String>,
    pub username: String,
    pub credential: String,
}

/// RFC 7065 URI of a listener, or `None` when it has no address a client could use.
pub fn listener_uri(l: &ListenerConfig) -> Option<String> {
    let host = match &l.public_address {
        Some(a) => a.clone(),
        None if !l.address.is_unspecified() => l.address.to_string(),
        None => return None,
    };
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host
    };
    let port = l.public_port.unwrap_or(l.port);
    Some(match l.protocol {
        Protocol::TurnUdp => format!("turn:{host}:{port}?transport=udp"),
        Protocol::TurnTcp => format!("turn:{host}:{port}?transport=tcp"),
        Protocol::TurnTls => format!("turns:{host}:{port}?transport=tcp"),
    })
}

/// UDP, then TCP, then TLS.
fn transport_rank(p: Protocol) -> u8 {
    match p {
        Protocol::TurnUdp => 0,
        Protocol::TurnTcp => 1,
        Protocol::TurnTls => 2,
    }
}

/// Credentials for `userid` valid for `ttl` seconds from `now` on this dataplane.
pub fn credential(
    cfg: &DataplaneConfig,
    userid: &str,
    ttl: u64,
    now: u64,
) -> Option<(String, String)> {
    match cfg.auth.kind {
        AuthType::Ephemeral => {
            let secret = cfg.auth.secret.as_deref()?;
            let username = format!("{}:{userid}", now + ttl);
            let password = rest_password(secret, &username);
            Some((username, password))
        }
        // Static users: the configured account (as STUNner's auth service hands out).
        AuthType::Static => cfg
            .auth
            .users
            .first()
            .map(|u| (u.username.clone(), u.password.clone())),
    }
}

/// The ICE server entry of a Gateway, limited to `listener` when given. `None` when no
/// listener matches or has a usable address.
pub fn ice_server(
    cfg: &DataplaneConfig,
    listener: Option<&str>,
    userid: &str,
    ttl: u64,
    now: u64,
) -> Option<IceServer> {
    // Cheapest first: clients try URIs in order, and a browser that can use UDP should
    // not start on TCP or TLS (Chromium gathers all, but orders its candidates by it too).
    let mut listeners: Vec<&ListenerConfig> = cfg
        .listeners
        .iter()
        .filter(|l| listener.is_none_or(|n| n == l.name))
        .collect();
    listeners.sort_by_key(|l| transport_rank(l.protocol));
    let urls: Vec<String> = listeners.into_iter().filter_map(listener_uri).collect();
    if urls.is_empty() {
        return None;
    }
    let (username, credential) = credential(cfg, userid, ttl, now)?;
    Some(IceServer {
        urls,
        username,
        credential,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> DataplaneConfig {
        // Not validated: the TLS pair is a placeholder.
        serde_yaml_ng::from_str(
            r#"
version: v1alpha1
name: ns/gw
realm: r
auth: {type: ephemeral, secret: s3cret}
listeners:
  - {name: udp, protocol: TURN-UDP, address: 0.0.0.0, port: 3478, publicAddress: 203.0.113.1}
  - {name: tls, protocol: TURN-TLS, address: 0.0.0.0, port: 443, publicAddress: turn.example.com, tls: {certPem: x, keyPem: y}}
  - {name: v6, protocol: TURN-TCP, address: "::", port: 3478, publicAddress: "2001:db8::1"}
  - {name: hidden, protocol: TURN-UDP, address: 0.0.0.0, port: 3479}
"#,
        )
        .unwrap()
    }

    #[test]
    fn uris_per_listener_and_credentials() {
        let c = cfg();
        let uris: Vec<Option<String>> = c.listeners.iter().map(listener_uri).collect();
        assert_eq!(
            uris,
            vec![
                Some("turn:203.0.113.1:3478?transport=udp".to_string()),
                Some("turns:turn.example.com:443?transport=tcp".to_string()),
                Some("turn:[2001:db8::1]:3478?transport=tcp".to_string()),
                None,
            ]
        );
        let s = ice_server(&c, None, "alice", 600, 1_000).unwrap();
        assert_eq!(
            s.urls,
            vec![
                "turn:203.0.113.1:3478?transport=udp",
                "turn:[2001:db8::1]:3478?transport=tcp",
                "turns:turn.example.com:443?transport=tcp"
            ],
            "UDP, then TCP, then TLS, whatever the listeners' order"
        );
        let s = ice_server(&c, Some("tls"), "alice", 600, 1_000).unwrap();
        assert_eq!(s.urls, vec!["turns:turn.example.com:443?transport=tcp"]);
        assert_eq!(s.username, "1600:alice");
        assert_eq!(s.credential, rest_password("s3cret", "1600:alice"));
        assert!(ice_server(&c, Some("nope"), "a", 1, 0).is_none());
        assert!(ice_server(&c, Some("hidden"), "a", 1, 0).is_none());
    }
}
