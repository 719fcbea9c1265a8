//! The dataplane config: the contract's types (DESIGN.md §3, in `turnpike-contract`) and
//! their compilation into the protocol core's view.

use std::collections::HashMap;

pub use turnpike_contract::config::*;

use crate::proto::{self, Credentials, Endpoint, Limits, ListenerPolicy, RouteTable, ServerConfig};

/// The protocol core's view of a validated config: credentials, limits, and each
/// listener's route table with a relay counter per (listener, route).
pub fn compile(cfg: &DataplaneConfig) -> ServerConfig {
    let credentials = match cfg.auth.kind {
        AuthType::Ephemeral => Credentials::Ephemeral(
            cfg.auth
                .secret
                .iter()
                .chain(cfg.auth.previous_secrets.iter())
                .cloned()
                .collect(),
        ),
        AuthType::Static => Credentials::Static(
            cfg.auth
                .users
                .iter()
                .map(|u| (u.username.clone(), u.password.clone()))
                .collect(),
        ),
    };
    let routes: HashMap<&str, &RouteConfig> =
        cfg.routes.iter().map(|r| (r.name.as_str(), r)).collect();
    let mut counters = Vec::new();
    let listeners = cfg
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
                entries.extend(route.endpoints.iter().map(|e| Endpoint {
                    net: e.net,
                    ports: e.ports,
                    counter,
                }));
            }
            ListenerPolicy {
                name: l.name.clone(),
                routes: RouteTable::new(entries),
            }
        })
        .collect();
    ServerConfig {
        realm: cfg.realm.clone(),
        credentials,
        limits: Limits {
            max_allocations_per_user: cfg.limits.max_allocations_per_user,
            max_permissions_per_allocation: cfg.limits.max_permissions_per_allocation as usize,
            max_lifetime_secs: cfg.limits.max_lifetime,
        },
        listeners,
        counters,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = EXAMPLE;

    #[test]
    fn parses_and_compiles() {
        let c = DataplaneConfig::parse(GOOD).unwrap();
        assert_eq!(c.limits, LimitsConfig::default());
        let s = compile(&c);
        let t = s.routes_of(0).unwrap();
        assert_eq!(t.match_addr("127.0.0.1:3480".parse().unwrap()), Some(0));
        assert_eq!(t.match_addr("10.0.3.4:5011".parse().unwrap()), None);
        assert_eq!(t.match_addr("[fd00::1]:7".parse().unwrap()), Some(0));
        assert_eq!(
            s.counters,
            vec![("udp".to_string(), "default/echo".to_string())]
        );
    }
}
