//! Route endpoints: an IP or CIDR with an optional port or port range, as route configs
//! and StaticServices write them (`10.0.1.7`, `10.0.2.0/24`, `10.0.3.4:5000-5010`,
//! `[fd00::1]:7`).

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A parsed endpoint. It keeps the text it was parsed from, so a config written back
/// (CDS, golden files) reads exactly as it was rendered.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EndpointSpec {
    text: Box<str>,
    /// The network, truncated to its prefix; a single IP is a full-length prefix.
    /// IPv4-mapped IPv6 addresses are stored as IPv4.
    pub net: IpNet,
    /// Inclusive port range; every port is `(0, 65535)`.
    pub ports: (u16, u16),
}

impl EndpointSpec {
    /// One address and port, written `10.0.0.7:5000` or `[fd00::7]:5000`.
    pub fn host_port(ip: IpAddr, port: u16) -> Self {
        let ip = ip.to_canonical();
        EndpointSpec {
            text: SocketAddr::new(ip, port).to_string().into(),
            net: IpNet::from(ip),
            ports: (port, port),
        }
    }

    /// One address and an inclusive port range, written `10.0.0.7:20000-20199`.
    pub fn host_port_range(ip: IpAddr, first: u16, last: u16) -> Self {
        if first == last {
            return Self::host_port(ip, first);
        }
        let ip = ip.to_canonical();
        let host = match ip {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => format!("[{v6}]"),
        };
        EndpointSpec {
            text: format!("{host}:{first}-{last}").into(),
            net: IpNet::from(ip),
            ports: (first, last),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for EndpointSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for EndpointSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let text = s.trim();
        let (host, ports) = split_host_ports(text)?;
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
            Some(p) => parse_ports(p, text)?,
        };
        Ok(EndpointSpec {
            text: text.into(),
            net,
            ports,
        })
    }
}

/// `[v6]:ports`, `[v6]`, `v4:ports`, or a bare host (an IPv6 address has several colons).
fn split_host_ports(s: &str) -> Result<(&str, Option<&str>), String> {
    if let Some(rest) = s.strip_prefix('[') {
        let (h, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("unclosed '[' in {s:?}"))?;
        return match after {
            "" => Ok((h, None)),
            p => p
                .strip_prefix(':')
                .map(|p| (h, Some(p)))
                .ok_or_else(|| format!("expected ':' after ']' in {s:?}")),
        };
    }
    match s.split_once(':') {
        Some((h, p)) if !p.contains(':') => Ok((h, Some(p))),
        _ => Ok((s, None)),
    }
}

fn parse_ports(p: &str, whole: &str) -> Result<(u16, u16), String> {
    let parse = |x: &str| {
        x.parse::<u16>()
            .map_err(|_| format!("invalid port {x:?} in {whole:?}"))
    };
    match p.split_once('-') {
        Some((lo, hi)) => {
            let (lo, hi) = (parse(lo)?, parse(hi)?);
            if lo > hi {
                return Err(format!("port range {lo}-{hi} is empty"));
            }
            Ok((lo, hi))
        }
        None => {
            let port = parse(p)?;
            Ok((port, port))
        }
    }
}

impl Serialize for EndpointSpec {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for EndpointSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<(IpNet, (u16, u16)), String> {
        s.parse::<EndpointSpec>().map(|e| (e.net, e.ports))
    }

    #[test]
    fn endpoint_forms() {
        assert_eq!(
            parse("10.0.0.7").unwrap(),
            ("10.0.0.7/32".parse().unwrap(), (0, 65535))
        );
        assert_eq!(parse("10.0.0.7:5000-5010").unwrap().1, (5000, 5010));
        assert_eq!(
            parse("::ffff:10.0.0.7").unwrap().0,
            "10.0.0.7/32".parse::<IpNet>().unwrap()
        );
        assert_eq!(parse("fd00::/8").unwrap().1, (0, 65535));
        assert!(parse("10.0.0.7:6000-5000").is_err());
        assert!(parse("10.0.0.7:x").is_err());
        assert!(parse("[fd00::1").is_err());
    }

    #[test]
    fn host_port_reads_like_its_parse() {
        for (ip, port) in [("10.0.0.7", 5000), ("fd00::7", 9)] {
            let e = EndpointSpec::host_port(ip.parse().unwrap(), port);
            assert_eq!(e.to_string().parse::<EndpointSpec>().unwrap(), e);
        }
    }

    #[test]
    fn host_port_range_reads_like_its_parse() {
        for (ip, first, last) in [
            ("10.0.0.7", 20000, 20199),
            ("fd00::7", 9, 10),
            ("10.0.0.8", 5, 5),
        ] {
            let e = EndpointSpec::host_port_range(ip.parse().unwrap(), first, last);
            assert_eq!(e.to_string().parse::<EndpointSpec>().unwrap(), e);
            assert_eq!(e.ports, (first, last));
        }
    }

    #[test]
    fn text_is_kept() {
        let e: EndpointSpec = " [fd00::1]:7 ".parse().unwrap();
        assert_eq!(e.to_string(), "[fd00::1]:7");
        assert_eq!(serde_json::to_string(&e).unwrap(), "\"[fd00::1]:7\"");
    }
}
