//! Relay access control: which peers a client on a listener may reach (DESIGN.md §3).
//!
//! Allow-list only. Addresses are normalised (IPv4-mapped IPv6 → IPv4) before matching.
//! Special addresses (loopback, unspecified, link-local, multicast, broadcast, Teredo, 6to4,
//! IPv4-compatible IPv6) match only an endpoint that lies entirely inside the same special
//! range, so a broad route such as `0.0.0.0/0` never opens the loopback or metadata service.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// Index into the relay counters (one per listener × route pair).
pub type CounterId = u16;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub net: IpNet,
    /// Inclusive port range; `(0, 65535)` allows every port.
    pub ports: (u16, u16),
    pub counter: CounterId,
}

impl Endpoint {
    fn all_ports(&self) -> bool {
        self.ports == (0, u16::MAX)
    }
}

/// The result of matching a peer IP for a permission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpMatch {
    pub counter: CounterId,
    /// Every port of this IP is allowed, so relayed packets need no per-packet port check.
    pub all_ports: bool,
}

/// The endpoints reachable from one listener (the union of its routes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteTable {
    entries: Vec<Endpoint>,
}

impl RouteTable {
    pub fn new(entries: Vec<Endpoint>) -> Self {
        RouteTable { entries }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn candidates(&self, ip: IpAddr) -> impl Iterator<Item = &Endpoint> {
        let ip = ip.to_canonical();
        let special = special_range(ip);
        self.entries.iter().filter(move |e| {
            e.net.contains(&ip)
                && match special {
                    None => true,
                    Some(range) => range.contains(&e.net),
                }
        })
    }

    /// May a permission for `ip` be installed? Prefers an entry that allows every port.
    pub fn match_ip(&self, ip: IpAddr) -> Option<IpMatch> {
        let mut found = None;
        for e in self.candidates(ip) {
            if e.all_ports() {
                return Some(IpMatch {
                    counter: e.counter,
                    all_ports: true,
                });
            }
            found.get_or_insert(IpMatch {
                counter: e.counter,
                all_ports: false,
            });
        }
        found
    }

    /// May data be relayed to `addr`? Returns the counter of the first matching endpoint.
    pub fn match_addr(&self, addr: SocketAddr) -> Option<CounterId> {
        let port = addr.port();
        self.candidates(addr.ip())
            .find(|e| e.ports.0 <= port && port <= e.ports.1)
            .map(|e| e.counter)
    }
}

fn v4(a: u8, b: u8, c: u8, d: u8, len: u8) -> IpNet {
    IpNet::V4(Ipv4Net::new_assert(Ipv4Addr::new(a, b, c, d), len))
}

fn v6(segs: [u16; 8], len: u8) -> IpNet {
    let [a, b, c, d, e, f, g, h] = segs;
    IpNet::V6(Ipv6Net::new_assert(
        Ipv6Addr::new(a, b, c, d, e, f, g, h),
        len,
    ))
}

/// The special-use range `ip` (already canonical) belongs to, if any.
pub fn special_range(ip: IpAddr) -> Option<IpNet> {
    match ip {
        IpAddr::V4(ip) => {
            let o = ip.octets();
            if o[0] == 0 {
                Some(v4(0, 0, 0, 0, 8))
            } else if o[0] == 127 {
                Some(v4(127, 0, 0, 0, 8))
            } else if o[0] == 169 && o[1] == 254 {
                Some(v4(169, 254, 0, 0, 16))
            } else if ip.is_broadcast() {
                Some(v4(255, 255, 255, 255, 32))
            } else if o[0] >= 224 {
                // Multicast 224/4 and reserved 240/4.
                Some(v4(224, 0, 0, 0, 3))
            } else {
                None
            }
        }
        IpAddr::V6(ip) => {
            let s = ip.segments();
            if ip.is_unspecified() {
                Some(v6([0; 8], 128))
            } else if ip.is_loopback() {
                Some(v6([0, 0, 0, 0, 0, 0, 0, 1], 128))
            } else if s[0] & 0xffc0 == 0xfe80 {
                Some(v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10))
            } else if s[0] & 0xff00 == 0xff00 {
                Some(v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8))
            } else if s[0] == 0x2001 && s[1] == 0 {
                // Teredo: RFC 6156 §9.1 forbids relaying to it.
                Some(v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 32))
            } else if s[0] == 0x2002 {
                // 6to4: likewise.
                Some(v6([0x2002, 0, 0, 0, 0, 0, 0, 0], 16))
            } else if s[..6] == [0; 6] {
                // IPv4-compatible (deprecated) addresses such as ::127.0.0.1.
                Some(v6([0; 8], 96))
            } else if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                // NAT64 well-known prefix: reaches arbitrary IPv4, including loopback.
                Some(v6([0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96))
            } else {
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(specs: &[(&str, u16, u16)]) -> RouteTable {
        RouteTable::new(
            specs
                .iter()
                .enumerate()
                .map(|(i, (net, lo, hi))| Endpoint {
                    net: net.parse().unwrap(),
                    ports: (*lo, *hi),
                    counter: i as u16,
                })
                .collect(),
        )
    }

    #[test]
    fn broad_route_never_opens_special_addresses() {
        let t = table(&[("0.0.0.0/0", 0, 65535), ("::/0", 0, 65535)]);
        for bad in [
            "127.0.0.1",
            "0.0.0.0",
            "169.254.169.254",
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "fe80::1",
            "2002:7f00:1::1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "64:ff9b::7f00:1",
        ] {
            let ip: IpAddr = bad.parse().unwrap();
            assert_eq!(t.match_ip(ip), None, "{bad} must be refused");
        }
        assert!(t.match_ip("10.1.2.3".parse().unwrap()).is_some());
        assert!(t.match_ip("2001:db8::1".parse().unwrap()).is_some());
    }

    #[test]
    fn explicit_special_route_allows_it_in_every_spelling() {
        let t = table(&[("127.0.0.1/32", 3480, 3480)]);
        let m = t.match_ip("::ffff:127.0.0.1".parse().unwrap()).unwrap();
        assert!(!m.all_ports);
        assert_eq!(t.match_addr("127.0.0.1:3480".parse().unwrap()), Some(0));
        assert_eq!(
            t.match_addr("[::ffff:127.0.0.1]:3480".parse().unwrap()),
            Some(0)
        );
        assert_eq!(t.match_addr("127.0.0.1:3481".parse().unwrap()), None);
        assert_eq!(t.match_ip("127.0.0.2".parse().unwrap()), None);
    }

    #[test]
    fn prefers_all_port_entries() {
        let t = table(&[("10.0.0.1/32", 5000, 5010), ("10.0.0.0/24", 0, 65535)]);
        let m = t.match_ip("10.0.0.1".parse().unwrap()).unwrap();
        assert!(m.all_ports);
        assert_eq!(m.counter, 1);
    }
}
