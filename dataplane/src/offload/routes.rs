//! Which device the kernel sends a relayed packet out of: the longest-prefix route of the
//! namespace's main table (`/proc/net/route`, `/proc/net/ipv6_route`), lowest metric
//! first. The kernel program needs it for its output route (pods do not forward, so its
//! FIB helper does not answer there). Policy routing rules are not consulted.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// RTF_UP and RTF_REJECT (`include/uapi/linux/route.h`).
const RTF_UP: u32 = 0x0001;
const RTF_REJECT: u32 = 0x0200;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Route {
    net: IpAddr,
    prefix: u8,
    metric: u32,
    device: String,
}

fn parse_v4(text: &str) -> Vec<Route> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let hex = |i: usize| f.get(i).and_then(|v| u32::from_str_radix(v, 16).ok());
            let (dest, flags, metric, mask) = (hex(1)?, hex(3)?, hex(6)?, hex(7)?);
            if flags & RTF_UP == 0 || flags & RTF_REJECT != 0 {
                return None;
            }
            // The kernel prints the network-order words as host integers.
            let mask = Ipv4Addr::from(mask.to_ne_bytes());
            Some(Route {
                net: Ipv4Addr::from(dest.to_ne_bytes()).into(),
                prefix: u32::from(mask).count_ones() as u8,
                metric,
                device: (*f.first()?).to_string(),
            })
        })
        .collect()
}

fn parse_v6(text: &str) -> Vec<Route> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 10 {
                return None;
            }
            let net = u128::from_str_radix(f[0], 16).ok()?;
            let prefix = u8::from_str_radix(f[1], 16).ok()?;
            let metric = u32::from_str_radix(f[5], 16).ok()?;
            let flags = u32::from_str_radix(f[8], 16).ok()?;
            if flags & RTF_UP == 0 || flags & RTF_REJECT != 0 || f[9] == "lo" {
                return None;
            }
            Some(Route {
                net: Ipv6Addr::from(net).into(),
                prefix,
                metric,
                device: f[9].to_string(),
            })
        })
        .collect()
}

fn covers(r: &Route, dst: IpAddr) -> bool {
    match (r.net, dst) {
        (IpAddr::V4(n), IpAddr::V4(d)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(r.prefix)).unwrap_or(0);
            u32::from(n) & mask == u32::from(d) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(d)) => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(r.prefix))
                .unwrap_or(0);
            u128::from(n) & mask == u128::from(d) & mask
        }
        _ => false,
    }
}

/// The device of the best route to `dst` in `routes` (the text of the family's proc file).
fn best(routes: &[Route], dst: IpAddr) -> Option<&str> {
    routes
        .iter()
        .filter(|r| covers(r, dst))
        .max_by_key(|r| (r.prefix, std::cmp::Reverse(r.metric)))
        .map(|r| r.device.as_str())
}

/// The index of the device the kernel would send to `dst` from (this namespace).
pub fn egress_ifindex(dst: IpAddr) -> std::io::Result<u32> {
    let dst = dst.to_canonical();
    let routes = if dst.is_ipv4() {
        parse_v4(&std::fs::read_to_string("/proc/net/route")?)
    } else {
        parse_v6(&std::fs::read_to_string("/proc/net/ipv6_route")?)
    };
    let device = best(&routes, dst).ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::NotFound, format!("no route to {dst}"))
    })?;
    std::fs::read_to_string(format!("/sys/class/net/{device}/ifindex"))?
        .trim()
        .parse()
        .map_err(|_| std::io::Error::other(format!("no index for {device}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const V4: &str =
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t00000000\t010200C0\t0003\t0\t0\t100\t00000000\t0\t0\t0
eth1\t00000000\t010212C6\t0003\t0\t0\t50\t00000000\t0\t0\t0
eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
eth1\t001412C6\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
eth2\t001412C6\t00000000\t0201\t0\t0\t0\t80FFFFFF\t0\t0\t0
";

    const V6: &str = "20010002000000200000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth1
00000000000000000000000000000000 00 00000000000000000000000000000000 00 20010002000000100000000000000001 00000400 00000002 00000000 00000003     eth0
00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo
";

    fn dev(text: &str, v6: bool, dst: &str) -> Option<String> {
        let routes = if v6 { parse_v6(text) } else { parse_v4(text) };
        best(&routes, dst.parse().unwrap()).map(str::to_string)
    }

    #[test]
    fn the_longest_prefix_wins_then_the_lowest_metric() {
        assert_eq!(dev(V4, false, "198.18.20.7").as_deref(), Some("eth1"));
        assert_eq!(dev(V4, false, "192.0.2.9").as_deref(), Some("eth0"));
        // Two defaults: metric 50 beats 100.
        assert_eq!(dev(V4, false, "203.0.113.1").as_deref(), Some("eth1"));
        // The reject route (a /25 inside eth1's /24) is not a way out.
        assert_eq!(dev(V4, false, "198.18.20.200").as_deref(), Some("eth1"));
    }

    #[test]
    fn ipv6_routes_skip_loopback_and_reject() {
        assert_eq!(dev(V6, true, "2001:2:0:20::2").as_deref(), Some("eth1"));
        assert_eq!(dev(V6, true, "2001:db8::1").as_deref(), Some("eth0"));
        assert_eq!(dev("", true, "2001:db8::1"), None);
    }
}
