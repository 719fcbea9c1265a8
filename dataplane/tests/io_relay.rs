//! The I/O shell in-process with real sockets on loopback: EVEN-PORT reservations across
//! clients (and workers), IPv6 relays, DONT-FRAGMENT, Send/Data indications.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use common::{Client, Resp, build};
use turnpike_dataplane::config::DataplaneConfig;
use turnpike_dataplane::proto::auth::rest_password;
use turnpike_dataplane::proto::message::method;
use turnpike_dataplane::proto::{Class, ClientKey, Message, MessageBuilder, Transport, attr};
use turnpike_dataplane::runtime::Dataplane;

const SECRET: &str = "io-secret";

fn start(listen: &str, port: u16, endpoints: &[String]) -> Dataplane {
    let eps: Vec<String> = endpoints.iter().map(|e| format!("\"{e}\"")).collect();
    let yaml = format!(
        "version: v1alpha1\nname: t/io\nrealm: {}\nauth: {{type: ephemeral, secret: {SECRET}}}\n\
         listeners:\n  - {{name: udp, protocol: TURN-UDP, address: \"{listen}\", port: {port}, routes: [r]}}\n\
         routes:\n  - {{name: r, endpoints: [{}]}}\n",
        common::REALM,
        eps.join(", ")
    );
    let dp = Dataplane::start(DataplaneConfig::parse(&yaml).unwrap(), 2, "test").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    dp
}

struct UdpClient {
    sock: UdpSocket,
    server: SocketAddr,
    c: Client,
}

impl UdpClient {
    fn new(bind: &str, server: SocketAddr, user: &str) -> Self {
        let sock = UdpSocket::bind((bind, 0)).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let username = format!("{}:{user}", unix_now() + 600);
        UdpClient {
            c: Client {
                key: ClientKey {
                    listener: 0,
                    transport: Transport::Udp,
                    addr: sock.local_addr().unwrap(),
                },
                password: rest_password(SECRET, &username),
                username,
                nonce: Vec::new(),
                seq: 0,
            },
            sock,
            server,
        }
    }

    fn request(&mut self, m: u16, body: &dyn Fn(&mut MessageBuilder<'_>)) -> Resp {
        for _ in 0..2 {
            let req = build(&mut self.c, m, body, true);
            self.sock.send_to(&req, self.server).unwrap();
            let mut buf = [0u8; 2048];
            let (n, _) = self.sock.recv_from(&mut buf).unwrap();
            let r = Resp::parse(&buf[..n]);
            if matches!(r.code, Some(401 | 438)) && self.c.nonce.is_empty() {
                self.c.nonce = r.attr(attr::NONCE).unwrap();
                continue;
            }
            return r;
        }
        panic!("challenge loop");
    }

    fn allocate(&mut self, body: &dyn Fn(&mut MessageBuilder<'_>)) -> Resp {
        self.request(method::ALLOCATE, &|b| {
            b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
            body(b);
        })
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn even_port_reservation_with_real_sockets() {
    let port = common::ports::free_udp_port();
    let server: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let dp = start("127.0.0.1", port, &["127.0.0.1".into()]);
    let mut a = UdpClient::new("127.0.0.1", server, "a");
    let r = a.allocate(&|b| {
        b.attr(attr::EVEN_PORT, &[0x80]);
        b.attr(attr::DONT_FRAGMENT, &[]);
    });
    assert_eq!(r.class, Class::Success, "{r:?}");
    let relay = r.xor_addr(attr::XOR_RELAYED_ADDRESS);
    assert_eq!(relay.port() % 2, 0, "{relay}");
    let token = r.attr(attr::RESERVATION_TOKEN).unwrap();
    // The reserved odd port is really held: nobody else can bind it.
    assert!(UdpSocket::bind(SocketAddr::new(relay.ip(), relay.port() + 1)).is_err());

    // b comes from another port, so SO_REUSEPORT may hand it to the other worker: the
    // reservation table is shared, so either way the token is honoured.
    let mut b = UdpClient::new("127.0.0.1", server, "b");
    let r = b.allocate(&|bld| bld.attr(attr::RESERVATION_TOKEN, &token));
    assert_eq!(r.class, Class::Success, "{r:?}");
    assert_eq!(
        r.xor_addr(attr::XOR_RELAYED_ADDRESS).port(),
        relay.port() + 1
    );
    let mut c = UdpClient::new("127.0.0.1", server, "c");
    let r = c.allocate(&|bld| bld.attr(attr::RESERVATION_TOKEN, &token));
    assert_eq!(r.code, Some(508), "a token is good once");
    dp.stop();
}

#[test]
fn ipv6_relay_with_send_and_data_indications() {
    if UdpSocket::bind("[::1]:0").is_err() {
        panic!("this machine has no IPv6 loopback; the dataplane's IPv6 path cannot be tested");
    }
    let port = common::ports::free_udp_port();
    let server: SocketAddr = format!("[::1]:{port}").parse().unwrap();
    let echo = UdpSocket::bind("[::1]:0").unwrap();
    let echo_addr = echo.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = echo.recv_from(&mut buf) {
            let _ = echo.send_to(&buf[..n], from);
        }
    });
    let dp = start("::1", port, &[format!("[::1]:{}", echo_addr.port())]);
    let mut a = UdpClient::new("::1", server, "v6");
    let r = a.allocate(&|b| b.attr(attr::REQUESTED_ADDRESS_FAMILY, &[2, 0, 0, 0]));
    assert_eq!(r.class, Class::Success, "{r:?}");
    let relay = r.xor_addr(attr::XOR_RELAYED_ADDRESS);
    assert_eq!(relay.ip().to_string(), "::1");
    // An IPv4 relay cannot be had from a listener bound to ::1 only.
    let mut b = UdpClient::new("::1", server, "v4");
    assert_eq!(b.allocate(&|_| {}).code, Some(440));

    let r = a.request(method::CREATE_PERMISSION, &|b| {
        b.xor_address(attr::XOR_PEER_ADDRESS, echo_addr)
    });
    assert_eq!(r.class, Class::Success, "{r:?}");
    let mut send = vec![0u8; 256];
    let n = {
        let mut b = MessageBuilder::new(&mut send, method::SEND, Class::Indication, &[3; 12]);
        b.xor_address(attr::XOR_PEER_ADDRESS, echo_addr);
        b.attr(attr::DATA, b"over ipv6");
        b.finish(true).unwrap()
    };
    a.sock.send_to(&send[..n], server).unwrap();
    let mut buf = [0u8; 2048];
    let (n, _) = a.sock.recv_from(&mut buf).unwrap();
    let m = Message::parse(&buf[..n]).unwrap();
    assert_eq!((m.method, m.class), (method::DATA, Class::Indication));
    assert_eq!(m.get(attr::DATA), Some(&b"over ipv6"[..]));
    dp.stop();
}
