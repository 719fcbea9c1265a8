//! Entry points shared by the cargo-fuzz targets (`dataplane/fuzz`) and the corpus replay
//! test, so the corpus that found a bug keeps guarding against it in every `cargo test`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::DataplaneConfig;
use crate::proto::integrity::{self, IntegrityKind};
use crate::proto::{
    AllocId, ClientKey, Message, NonceKey, Now, OpenedRelay, PEER_HEADROOM, PEER_TAILROOM,
    RelayError, RelayPorts, RelayRequest, Server, Transport, UserQuota, attr, channel,
};

/// Parses `data` as STUN and ChannelData and exercises every attribute decoder.
pub fn parse_message(data: &[u8]) {
    if let Ok(msg) = Message::parse(data) {
        let _ = integrity::verify(&msg, b"key", IntegrityKind::Sha1);
        let _ = integrity::verify(&msg, b"key", IntegrityKind::Sha256);
        for typ in msg.attribute_types().collect::<Vec<_>>() {
            for v in msg.get_all(typ) {
                let _ = attr::decode_xor_address(v, &msg.transaction_id);
                let _ = attr::decode_address(v);
                let _ = attr::decode_u32(v);
                let _ = attr::decode_error_code(v);
            }
        }
    }
    let _ = channel::parse(data);
}

/// Relay "sockets" that only hand out addresses.
#[derive(Default)]
pub struct NullRelays {
    next: u16,
}

impl RelayPorts for NullRelays {
    type Relay = ();
    fn open(&mut self, _: AllocId, req: &RelayRequest) -> Result<OpenedRelay<()>, RelayError> {
        if req.reservation.is_some() {
            return Err(RelayError::UnknownReservation);
        }
        self.next = self.next.wrapping_add(2);
        Ok(OpenedRelay {
            relay: (),
            addr: SocketAddr::from(([10, 255, 0, 1], 40000u16.wrapping_add(self.next))),
            reservation_token: None,
        })
    }
    fn close(&mut self, _: AllocId, _: ()) {}
}

/// The config fuzzed servers run: static user `u`/`p`, realm `fuzz`, peers in 10/8.
pub const CONFIG: &str = r#"
version: v1alpha1
name: fuzz/gw
realm: fuzz
auth: {type: static, users: [{username: u, password: p}]}
listeners:
  - {name: udp, protocol: TURN-UDP, address: 127.0.0.1, port: 3478, routes: [r]}
routes:
  - {name: r, endpoints: ["10.0.0.0/8", "127.0.0.1:9"]}
"#;

/// Feeds `data` to a server as a script of datagrams: each record is
/// `[kind][len_hi][len_lo][bytes…]`. Kind bits choose the client (low 2 bits), whether the
/// datagram comes from a peer (bit 2), whether a minute passes first (bit 3) and whether
/// the client is on a stream transport (bit 4). Returns the server's counters.
pub fn server_packets(data: &[u8]) -> crate::proto::Stats {
    let Ok(cfg) = DataplaneConfig::parse(CONFIG) else {
        return crate::proto::Stats::default();
    };
    let mut server: Server<NullRelays> = Server::new(
        Arc::new(crate::config::compile(&cfg)),
        NonceKey::new([1; 32]),
        Arc::new(UserQuota::default()),
    );
    let mut relays = NullRelays::default();
    let start = Instant::now();
    let mut now = Now {
        instant: start,
        unix: 1_800_000_000,
    };
    let mut out = [0u8; 2048];
    let mut frame = [0u8; 2048];
    let mut rest = data;
    while rest.len() >= 3 {
        let kind = rest[0];
        let len = (u16::from_be_bytes([rest[1], rest[2]]) as usize).min(rest.len() - 3);
        let payload = &rest[3..3 + len];
        rest = &rest[3 + len..];
        if kind & 8 != 0 {
            now.instant += Duration::from_secs(60);
            now.unix += 60;
            server.tick(now, &mut relays);
        }
        let client = ClientKey {
            listener: 0,
            transport: if kind & 16 != 0 {
                Transport::Stream(crate::proto::ConnId {
                    slot: u32::from(kind & 3),
                    seq: 0,
                })
            } else {
                Transport::Udp
            },
            addr: SocketAddr::from(([192, 0, 2, kind & 3], 5000)),
        };
        if kind & 4 == 0 {
            let _ = server.handle_client(now, client, payload, &mut out, &mut relays);
        } else {
            let ids: Vec<AllocId> = server.allocations().map(|(id, _)| id).collect();
            if let Some(id) = ids.first() {
                let n = payload
                    .len()
                    .min(frame.len() - PEER_HEADROOM - PEER_TAILROOM);
                frame[PEER_HEADROOM..PEER_HEADROOM + n].copy_from_slice(&payload[..n]);
                let peer = SocketAddr::from(([10, 0, 0, kind], 9));
                let _ = server.handle_peer(now, *id, peer, &mut frame, n);
            }
        }
    }
    server.take_stats()
}

/// The individual datagrams of [`server_seeds`], as seeds for [`parse_message`].
pub fn message_seeds() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for (_, script) in server_seeds() {
        let mut rest = &script[..];
        while rest.len() >= 3 {
            let len = (u16::from_be_bytes([rest[1], rest[2]]) as usize).min(rest.len() - 3);
            out.push(rest[3..3 + len].to_vec());
            rest = &rest[3 + len..];
        }
    }
    out
}

fn record(kind: u8, bytes: &[u8], out: &mut Vec<u8>) {
    out.push(kind);
    out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// A request from client `192.0.2.<client>:5000` signed for user `u` with the nonce a
/// server keyed `[1; 32]` issues at Unix time 1_800_000_000 (see [`server_packets`]).
pub fn signed_request(
    client: u8,
    seq: u8,
    method: u16,
    body: impl FnOnce(&mut crate::proto::MessageBuilder<'_>),
) -> Vec<u8> {
    use crate::proto::integrity::{Key, PasswordAlgorithm};
    use crate::proto::{Class, MessageBuilder};
    let nonce = NonceKey::new([1; 32]).issue(
        1_800_000_000,
        &SocketAddr::from(([192, 0, 2, client], 5000)),
    );
    let mut buf = vec![0u8; 512];
    let mut b = MessageBuilder::new(&mut buf, method, Class::Request, &[seq; 12]);
    body(&mut b);
    b.attr(attr::USERNAME, b"u");
    b.attr(attr::REALM, b"fuzz");
    b.attr(attr::NONCE, &nonce);
    b.integrity(
        Key::long_term(PasswordAlgorithm::Md5, "u", "fuzz", "p").as_bytes(),
        seq.is_multiple_of(2),
    );
    let n = b.finish(true).unwrap_or(0);
    buf.truncate(n);
    buf
}

/// Seed scripts for [`server_packets`]: authenticated allocations, permissions, channels
/// and data both ways, so mutations start deep inside the state machine.
pub fn server_seeds() -> Vec<(&'static str, Vec<u8>)> {
    use crate::proto::message::method;
    let peer = SocketAddr::from(([10, 0, 0, 4], 9));
    let mut full = Vec::new();
    record(
        0,
        &signed_request(0, 1, method::ALLOCATE, |b| {
            b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0])
        }),
        &mut full,
    );
    record(
        0,
        &signed_request(0, 2, method::CREATE_PERMISSION, |b| {
            b.xor_address(attr::XOR_PEER_ADDRESS, peer)
        }),
        &mut full,
    );
    record(
        0,
        &signed_request(0, 3, method::CHANNEL_BIND, |b| {
            b.attr(attr::CHANNEL_NUMBER, &[0x40, 0x00, 0, 0]);
            b.xor_address(attr::XOR_PEER_ADDRESS, peer);
        }),
        &mut full,
    );
    record(
        0,
        &[0x40, 0x00, 0x00, 0x04, b'p', b'i', b'n', b'g'],
        &mut full,
    );
    record(4, b"pong", &mut full);
    let mut send = vec![0u8; 128];
    let n = {
        let mut b = crate::proto::MessageBuilder::new(
            &mut send,
            method::SEND,
            crate::proto::Class::Indication,
            &[9; 12],
        );
        b.xor_address(attr::XOR_PEER_ADDRESS, peer);
        b.attr(attr::DATA, b"indication");
        b.finish(false).unwrap_or(0)
    };
    record(0, &send[..n], &mut full);
    record(
        8,
        &signed_request(0, 4, method::REFRESH, |b| b.u32_attr(attr::LIFETIME, 0)),
        &mut full,
    );
    let mut even = Vec::new();
    record(
        1,
        &signed_request(1, 6, method::ALLOCATE, |b| {
            b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
            b.attr(attr::EVEN_PORT, &[0x80]);
            b.attr(attr::DONT_FRAGMENT, &[]);
        }),
        &mut even,
    );
    record(
        17,
        &signed_request(1, 7, method::ALLOCATE, |b| {
            b.attr(attr::RESERVATION_TOKEN, &[1; 8])
        }),
        &mut even,
    );
    vec![
        ("allocate-permit-channel-data", full),
        ("even-port-reservation", even),
    ]
}
