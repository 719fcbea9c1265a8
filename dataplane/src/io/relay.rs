//! Relay sockets: one UDP socket per allocation, EVEN-PORT and RESERVATION-TOKEN.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mio::{Interest, Registry, Token};
use socket2::{Domain, Protocol, Socket, Type};

use crate::proto::{AllocId, Family, OpenedRelay, RelayError, RelayPorts, RelayRequest};

use super::batch;

/// Poll tokens at and above this value are relay sockets (`RELAY_BASE` + allocation slot).
pub const RELAY_BASE: usize = 1 << 20;
/// How long a reserved odd port waits for its Allocate (RFC 8656 suggests about 30 s).
const RESERVATION_KEEP: Duration = Duration::from_secs(30);
/// EVEN-PORT picks from the IANA dynamic range.
const EVEN_PORT_RANGE: (u16, u16) = (49152, 65534);

/// The addresses relay sockets of one listener bind to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RelayAddrs {
    pub v4: Option<IpAddr>,
    pub v6: Option<IpAddr>,
}

/// Ports reserved by `EVEN-PORT: R`, shared by all workers: the follow-up Allocate comes
/// from another client port and may land on another worker.
#[derive(Default)]
pub struct Reservations {
    sockets: Mutex<HashMap<u64, (UdpSocket, Instant)>>,
}

impl Reservations {
    fn insert(&self, token: u64, sock: UdpSocket, now: Instant) {
        if let Ok(mut m) = self.sockets.lock() {
            m.retain(|_, (_, exp)| *exp > now);
            m.insert(token, (sock, now + RESERVATION_KEEP));
        }
    }

    fn take(&self, token: u64, now: Instant) -> Option<UdpSocket> {
        let mut m = self.sockets.lock().ok()?;
        m.retain(|_, (_, exp)| *exp > now);
        m.remove(&token).map(|(s, _)| s)
    }

    pub fn len(&self) -> usize {
        self.sockets.lock().map(|m| m.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Opens and registers relay sockets for one worker.
pub struct RelayOpener {
    registry: Registry,
    /// Indexed by listener index of the current config.
    pub addrs: Vec<RelayAddrs>,
    reservations: Arc<Reservations>,
}

fn bind_udp(addr: SocketAddr) -> io::Result<UdpSocket> {
    let sock = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        sock.set_only_v6(true)?;
    }
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    Ok(sock.into())
}

impl RelayOpener {
    pub fn new(registry: Registry, reservations: Arc<Reservations>) -> Self {
        RelayOpener {
            registry,
            addrs: Vec::new(),
            reservations,
        }
    }

    fn bind_even(
        &self,
        ip: IpAddr,
        reserve: bool,
    ) -> Result<(UdpSocket, Option<UdpSocket>), RelayError> {
        for _ in 0..128 {
            let port = rand::random_range(EVEN_PORT_RANGE.0 / 2..=EVEN_PORT_RANGE.1 / 2) * 2;
            let Ok(even) = bind_udp(SocketAddr::new(ip, port)) else {
                continue;
            };
            if !reserve {
                return Ok((even, None));
            }
            if let Ok(odd) = bind_udp(SocketAddr::new(ip, port + 1)) {
                return Ok((even, Some(odd)));
            }
        }
        Err(RelayError::NoCapacity)
    }
}

impl RelayPorts for RelayOpener {
    type Relay = mio::net::UdpSocket;

    fn open(
        &mut self,
        alloc: AllocId,
        req: &RelayRequest,
    ) -> Result<OpenedRelay<Self::Relay>, RelayError> {
        let addrs = self
            .addrs
            .get(req.listener as usize)
            .copied()
            .unwrap_or_default();
        let now = Instant::now();
        let (sock, token) = if let Some(t) = req.reservation {
            let s = self
                .reservations
                .take(t, now)
                .ok_or(RelayError::UnknownReservation)?;
            (s, None)
        } else {
            let ip = match req.family {
                Family::V4 => addrs.v4,
                Family::V6 => addrs.v6,
            }
            .ok_or(RelayError::FamilyUnsupported)?;
            match req.even_port {
                None => (
                    bind_udp(SocketAddr::new(ip, 0)).map_err(|_| RelayError::NoCapacity)?,
                    None,
                ),
                Some(reserve) => {
                    let (even, odd) = self.bind_even(ip, reserve)?;
                    let token = odd.map(|odd| {
                        let t = rand::random::<u64>();
                        self.reservations.insert(t, odd, now);
                        t
                    });
                    (even, token)
                }
            }
        };
        let addr = sock.local_addr().map_err(|_| RelayError::NoCapacity)?;
        if req.dont_fragment {
            // Best effort: the relay still works if the kernel refuses.
            let _ = batch::set_dont_fragment(sock.as_raw_fd(), addr.is_ipv6());
        }
        let mut sock = mio::net::UdpSocket::from_std(sock);
        self.registry
            .register(
                &mut sock,
                Token(RELAY_BASE + alloc.slot()),
                Interest::READABLE,
            )
            .map_err(|_| RelayError::NoCapacity)?;
        Ok(OpenedRelay {
            relay: sock,
            addr,
            reservation_token: token,
        })
    }

    fn close(&mut self, _alloc: AllocId, mut relay: Self::Relay) {
        let _ = self.registry.deregister(&mut relay);
    }
}

/// The local address the kernel would send from to reach `dst` (a connected UDP socket
/// asks the routing table; nothing is sent).
pub fn source_towards(dst: SocketAddr) -> io::Result<IpAddr> {
    let any: IpAddr = if dst.is_ipv4() {
        [0u8; 4].into()
    } else {
        [0u16; 8].into()
    };
    let s = UdpSocket::bind(SocketAddr::new(any, 0))?;
    s.connect(dst)?;
    Ok(s.local_addr()?.ip().to_canonical())
}

/// The address relay sockets should use for a listener bound to `listen`: the listener's
/// own address when it is specific, else the local address the kernel would use to reach
/// the first route endpoint of that family (nothing is sent). A listener on a specific
/// IPv6 address relays IPv4 too: clients that do not ask for a family get IPv4 (RFC 8656
/// §7.2), and browsers on IPv6-only networks do not ask.
pub fn relay_addrs(listen: IpAddr, peers: &[IpAddr]) -> RelayAddrs {
    let probe = |target: Option<&IpAddr>| -> Option<IpAddr> {
        source_towards(SocketAddr::new(*target?, 9)).ok()
    };
    let v4_peer = peers.iter().find(|p| p.is_ipv4());
    let v6_peer = peers.iter().find(|p| p.is_ipv6());
    if !listen.is_unspecified() {
        let ip = listen.to_canonical();
        return if ip.is_ipv4() {
            RelayAddrs {
                v4: Some(ip),
                v6: None,
            }
        } else {
            RelayAddrs {
                v4: probe(v4_peer),
                v6: Some(ip),
            }
        };
    }
    let v4 = probe(v4_peer).or_else(|| probe(Some(&IpAddr::from([192, 0, 2, 1]))));
    let v6 = if listen.is_ipv6() {
        probe(v6_peer)
    } else {
        None
    };
    RelayAddrs { v4, v6 }
}
