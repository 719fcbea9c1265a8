//! A minimal TURN client for tests: builds signed requests and reads responses.
#![allow(dead_code, clippy::unwrap_used)] // each test file uses part of it

use std::net::SocketAddr;

use turnpike_dataplane::proto::integrity::{Key, PasswordAlgorithm};
use turnpike_dataplane::proto::{Class, ClientKey, Message, MessageBuilder, attr};

/// The loopback port allocator every end-to-end test uses (ports below the ephemeral
/// range, handed out once per process), so a port given to a dataplane is never taken by
/// another test's `bind(0)` in between.
#[path = "../../../tests/src/ports.rs"]
pub mod ports;

pub const REALM: &str = "turnpike.dev";

pub struct Client {
    pub key: ClientKey,
    pub username: String,
    pub password: String,
    pub nonce: Vec<u8>,
    pub seq: u32,
}

/// A parsed response, owned.
#[derive(Debug)]
pub struct Resp {
    pub class: Class,
    pub code: Option<u16>,
    pub raw: Vec<u8>,
}

impl Resp {
    pub fn attr(&self, typ: u16) -> Option<Vec<u8>> {
        Message::parse(&self.raw)
            .unwrap()
            .get(typ)
            .map(<[u8]>::to_vec)
    }
    pub fn xor_addr(&self, typ: u16) -> SocketAddr {
        let m = Message::parse(&self.raw).unwrap();
        attr::decode_xor_address(m.get(typ).unwrap(), &m.transaction_id).unwrap()
    }
    pub fn lifetime(&self) -> u32 {
        u32::from_be_bytes(self.attr(attr::LIFETIME).unwrap().try_into().unwrap())
    }
}

impl Resp {
    pub fn parse(raw: &[u8]) -> Resp {
        let m = Message::parse(raw).expect("replies are valid STUN");
        let code = m
            .get(attr::ERROR_CODE)
            .map(|v| attr::decode_error_code(v).unwrap().0);
        Resp {
            class: m.class,
            code,
            raw: raw.to_vec(),
        }
    }
}

pub fn tid_of(seq: u32) -> [u8; 12] {
    let mut t = [0u8; 12];
    t[8..].copy_from_slice(&seq.to_be_bytes());
    t
}

pub fn build(
    c: &mut Client,
    m: u16,
    body: &dyn Fn(&mut MessageBuilder<'_>),
    sign: bool,
) -> Vec<u8> {
    c.seq += 1;
    let tid = tid_of(c.seq);
    let mut buf = vec![0u8; 1500];
    let mut b = MessageBuilder::new(&mut buf, m, Class::Request, &tid);
    body(&mut b);
    if sign && !c.nonce.is_empty() {
        b.attr(attr::USERNAME, c.username.as_bytes());
        b.attr(attr::REALM, REALM.as_bytes());
        b.attr(attr::NONCE, &c.nonce);
        let key = Key::long_term(PasswordAlgorithm::Md5, &c.username, REALM, &c.password);
        b.integrity(key.as_bytes(), false);
    }
    let n = b.finish(true).unwrap();
    buf.truncate(n);
    buf
}
