//! The sans-IO server in a test harness: fake relay ports, a clock the test advances, and
//! a scripted client that answers challenges like a real one.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use turnpike_dataplane::config::DataplaneConfig;
use turnpike_dataplane::proto::auth::rest_password;
use turnpike_dataplane::proto::message::method;
use turnpike_dataplane::proto::{
    AllocId, Class, ClientKey, Destination, Family, MessageBuilder, NonceKey, Now, OpenedRelay,
    Payload, RelayError, RelayPorts, RelayRequest, Server, ServerConfig, Transmit, Transport,
    UserQuota, attr,
};

use crate::common::{Client, Resp, build};

pub const UNIX: u64 = 1_800_000_000;

#[derive(Default)]
pub struct FakePorts {
    pub open: HashMap<AllocId, SocketAddr>,
    pub reserved: HashMap<u64, SocketAddr>,
    pub next_port: u16,
    pub refuse_v6: bool,
}

impl RelayPorts for FakePorts {
    type Relay = SocketAddr;
    fn open(
        &mut self,
        alloc: AllocId,
        req: &RelayRequest,
    ) -> Result<OpenedRelay<SocketAddr>, RelayError> {
        if let Some(t) = req.reservation {
            let addr = self
                .reserved
                .remove(&t)
                .ok_or(RelayError::UnknownReservation)?;
            self.open.insert(alloc, addr);
            return Ok(OpenedRelay {
                relay: addr,
                addr,
                reservation_token: None,
            });
        }
        if req.family == Family::V6 && self.refuse_v6 {
            return Err(RelayError::FamilyUnsupported);
        }
        self.next_port += 2;
        let port = 50000 + self.next_port;
        let ip = if req.family == Family::V6 {
            "[fd00::1]"
        } else {
            "10.255.0.1"
        };
        let addr: SocketAddr = format!("{ip}:{port}").parse().unwrap();
        let token = match req.even_port {
            Some(true) => {
                let t = 0xABCD_0000 + port as u64;
                self.reserved
                    .insert(t, SocketAddr::new(addr.ip(), port + 1));
                Some(t)
            }
            _ => None,
        };
        self.open.insert(alloc, addr);
        Ok(OpenedRelay {
            relay: addr,
            addr,
            reservation_token: token,
        })
    }
    fn close(&mut self, alloc: AllocId, _relay: SocketAddr) {
        self.open.remove(&alloc);
    }
}

pub fn config(extra: &str) -> Arc<ServerConfig> {
    let yaml = format!(
        r#"
version: v1alpha1
name: default/gw
realm: turnpike.dev
auth: {{type: ephemeral, secret: s3cret, previousSecrets: [old]}}
limits: {{maxAllocationsPerUser: 2, maxPermissionsPerAllocation: 3, maxLifetime: 1200}}
listeners:
  - {{name: udp, protocol: TURN-UDP, address: 0.0.0.0, port: 3478, routes: [default/media]}}
  - {{name: closed, protocol: TURN-UDP, address: 0.0.0.0, port: 3479, routes: []}}
routes:
  - {{name: default/media, endpoints: ["10.0.0.0/24", "10.0.1.5:5000-5010", "fd00::/64"]}}
{extra}"#
    );
    Arc::new(turnpike_dataplane::config::compile(
        &DataplaneConfig::parse(&yaml).unwrap(),
    ))
}

pub struct Harness {
    pub server: Server<FakePorts>,
    pub ports: FakePorts,
    pub t0: Instant,
    pub elapsed: Duration,
    pub out: Vec<u8>,
}

impl Harness {
    pub fn new() -> Self {
        Self::with_config(config(""))
    }
    pub fn with_config(cfg: Arc<ServerConfig>) -> Self {
        Harness {
            server: Server::new(cfg, NonceKey::new([9; 32]), Arc::new(UserQuota::default())),
            ports: FakePorts::default(),
            t0: Instant::now(),
            elapsed: Duration::ZERO,
            out: vec![0; 2048],
        }
    }
    pub fn now(&self) -> Now {
        Now {
            instant: self.t0 + self.elapsed,
            unix: UNIX + self.elapsed.as_secs(),
        }
    }
    pub fn advance(&mut self, secs: u64) {
        self.elapsed += Duration::from_secs(secs);
        let now = self.now();
        self.server.tick(now, &mut self.ports);
    }
    /// Applies `cfg` as the shell does on a config change, at the harness's time.
    pub fn apply_config(&mut self, cfg: ServerConfig) {
        let now = self.now().instant;
        self.server
            .apply_config(Arc::new(cfg), now, &mut self.ports);
    }
    pub fn client(&self, addr: &str, user: &str) -> Client {
        let username = format!("{}:{user}", UNIX + 3600);
        Client {
            key: ClientKey {
                listener: 0,
                transport: Transport::Udp,
                addr: addr.parse().unwrap(),
            },
            password: rest_password("s3cret", &username),
            username,
            nonce: Vec::new(),
            seq: 0,
        }
    }
    pub fn send(&mut self, c: &Client, data: &[u8]) -> Option<Transmit> {
        let now = self.now();
        self.server
            .handle_client(now, c.key, data, &mut self.out, &mut self.ports)
    }
    pub fn reply(&mut self, c: &Client, data: &[u8]) -> Option<Resp> {
        match self.send(c, data) {
            Some(Transmit {
                destination: Destination::Client(to),
                payload: Payload::Written(range),
            }) if to == c.key => Some(Resp::parse(&self.out[range])),
            _ => None,
        }
    }
    /// Sends a signed request, answering one 401/438 challenge like a real client.
    pub fn request(
        &mut self,
        c: &mut Client,
        m: u16,
        body: &dyn Fn(&mut MessageBuilder<'_>),
    ) -> Resp {
        for _ in 0..2 {
            let req = build(c, m, body, true);
            let r = self.reply(c, &req).expect("requests are answered");
            if matches!(r.code, Some(401 | 438)) && r.attr(attr::NONCE).is_some() {
                let fresh = r.attr(attr::NONCE).unwrap();
                if fresh != c.nonce {
                    c.nonce = fresh;
                    continue;
                }
            }
            return r;
        }
        panic!("challenge loop");
    }
}

pub fn udp(b: &mut MessageBuilder<'_>) {
    b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
}

pub fn allocate(h: &mut Harness, c: &mut Client) -> SocketAddr {
    let r = h.request(c, method::ALLOCATE, &udp);
    assert_eq!(r.class, Class::Success, "{r:?}");
    r.xor_addr(attr::XOR_RELAYED_ADDRESS)
}

pub fn peer(p: &'static str) -> impl Fn(&mut MessageBuilder<'_>) {
    move |b| b.xor_address(attr::XOR_PEER_ADDRESS, p.parse().unwrap())
}
