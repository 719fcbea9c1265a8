//! Network namespaces joined by veth pairs, as pods are: a client namespace, a gateway
//! namespace and a peer namespace (`dataplane/bpf/netns.sh` draws the same topology for
//! hand checks). Addresses come from 198.18.0.0/15 and, for IPv6, from the benchmarking
//! range 2001:2::/48; everything is created by the test and removed when it is dropped.
//!
//! Code runs inside a namespace on a thread of its own ([`Netns::run`]): a socket opened
//! there stays in that namespace, so a test drives clients and peers in-process.
#![allow(unsafe_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::process::Command;

use crate::process::output_text;

/// One namespace of a [`Topology`].
#[derive(Debug, Clone)]
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// Runs `f` on a thread inside this namespace and returns its result.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        self.spawn(f).join().unwrap()
    }

    /// Starts `f` on a thread inside this namespace.
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let path = format!("/var/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let ns = std::fs::File::open(&path).unwrap();
            // SAFETY: `ns` is an open namespace file for the duration of the call; setns
            // changes only this thread's network namespace, and this thread ends after `f`.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
            f()
        })
    }

    /// `ip netns exec NAME ARGS...`, checked.
    pub fn exec(&self, args: &[&str]) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?} in {}: {}",
            self.name,
            output_text(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A counter of `/proc/net/snmp` (or `snmp6`) in this namespace, e.g. `Udp` `InCsumErrors`.
    pub fn snmp(&self, table: &'static str, field: &'static str) -> u64 {
        self.run(move || {
            let file = if table.ends_with('6') {
                "/proc/thread-self/net/snmp6"
            } else {
                "/proc/thread-self/net/snmp"
            };
            let text = std::fs::read_to_string(file).unwrap();
            if table.ends_with('6') {
                // snmp6: one "Udp6InCsumErrors  N" per line.
                let key = format!("{table}{field}");
                return text
                    .lines()
                    .find_map(|l| {
                        let mut it = l.split_whitespace();
                        (it.next() == Some(key.as_str())).then(|| it.next())?
                    })
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
            }
            // snmp: a header line and a value line per table.
            let mut lines = text.lines().filter(|l| l.starts_with(&format!("{table}:")));
            let (Some(head), Some(values)) = (lines.next(), lines.next()) else {
                return 0;
            };
            head.split_whitespace()
                .zip(values.split_whitespace())
                .find(|(k, _)| *k == field)
                .and_then(|(_, v)| v.parse().ok())
                .unwrap_or(0)
        })
    }
}

/// client — gateway — peer, each a namespace; the gateway has one veth towards each side.
pub struct Topology {
    pub prefix: String,
    pub client: Netns,
    pub gateway: Netns,
    pub peer: Netns,
}

/// Addresses of the topology (fixed: namespaces are private to the test).
pub mod addr {
    use super::*;
    pub const CLIENT_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 10, 2);
    pub const GATEWAY_CLIENT_SIDE_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 10, 1);
    pub const GATEWAY_PEER_SIDE_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 20, 1);
    pub const PEER_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 20, 2);
    pub const CLIENT_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0x10, 0, 0, 0, 2);
    pub const GATEWAY_CLIENT_SIDE_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0x10, 0, 0, 0, 1);
    pub const GATEWAY_PEER_SIDE_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0x20, 0, 0, 0, 1);
    pub const PEER_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0x20, 0, 0, 0, 2);

    pub fn client(v6: bool) -> IpAddr {
        if v6 {
            CLIENT_V6.into()
        } else {
            CLIENT_V4.into()
        }
    }
    pub fn gateway_client_side(v6: bool) -> IpAddr {
        if v6 {
            GATEWAY_CLIENT_SIDE_V6.into()
        } else {
            GATEWAY_CLIENT_SIDE_V4.into()
        }
    }
    pub fn peer(v6: bool) -> IpAddr {
        if v6 { PEER_V6.into() } else { PEER_V4.into() }
    }
}

/// How the senders behave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderOffloads {
    /// Leave UDP checksums to the veth (CHECKSUM_PARTIAL, as pods on one node do); off,
    /// packets carry full checksums as they do when they come from another machine.
    pub tx_checksum: bool,
}

impl Topology {
    /// Creates the namespaces `PREFIX-c`, `PREFIX-g`, `PREFIX-p` (PREFIX at most 8
    /// characters: interface names are PREFIX-c0 and so on). Receivers check every UDP
    /// checksum themselves; the veth ends towards the gateway run GRO, which XDP needs to
    /// redirect into them.
    pub fn new(prefix: &str, senders: SenderOffloads) -> Topology {
        assert!(
            prefix.len() <= 8,
            "interface names would exceed 15 characters"
        );
        let script = crate::process::repo_root().join("dataplane/bpf/netns.sh");
        let out = Command::new(&script).args(["up", prefix]).output().unwrap();
        let t = Topology {
            prefix: prefix.into(),
            client: Netns {
                name: format!("{prefix}-c"),
            },
            gateway: Netns {
                name: format!("{prefix}-g"),
            },
            peer: Netns {
                name: format!("{prefix}-p"),
            },
        };
        assert!(out.status.success(), "netns.sh up: {}", output_text(&out));
        let tx = if senders.tx_checksum { "on" } else { "off" };
        for (ns, dev) in [(&t.client, "c0"), (&t.peer, "p0")] {
            let dev = format!("{prefix}-{dev}");
            ns.exec(&["ethtool", "-K", &dev, "tx", tx, "gro", "on"]);
        }
        t
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        let script = crate::process::repo_root().join("dataplane/bpf/netns.sh");
        let _ = Command::new(&script).args(["down", &self.prefix]).output();
    }
}
