//! A small blocking TURN client over UDP, built on the same codec as the server. It backs
//! `turnpike probe` and tests that need to watch single packets; third-party clients
//! (coturn's, aioice, aiortc, browsers) remain the interop judges.

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use crate::proto::integrity::{Key, PasswordAlgorithm};
use crate::proto::message::method;
use crate::proto::{Class, Message, MessageBuilder, attr, channel};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("no answer from the server")]
    Timeout,
    #[error("server answered {code} {reason}")]
    Rejected { code: u16, reason: String },
    #[error("malformed answer")]
    Malformed,
}

/// Data a peer sent, as the client received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relayed {
    pub peer: SocketAddr,
    pub payload: Vec<u8>,
    /// The channel it came on; `None` for a Data indication.
    pub channel: Option<u16>,
}

pub struct TurnClient {
    sock: UdpSocket,
    server: SocketAddr,
    username: String,
    password: String,
    realm: Option<String>,
    nonce: Option<Vec<u8>>,
    seq: u64,
    channels: BTreeMap<u16, SocketAddr>,
}

impl TurnClient {
    pub fn new(server: SocketAddr, username: &str, password: &str) -> Result<Self, ClientError> {
        let bind: SocketAddr = if server.is_ipv4() {
            SocketAddr::from(([0, 0, 0, 0], 0))
        } else {
            SocketAddr::from(([0u16; 8], 0))
        };
        let sock = UdpSocket::bind(bind)?;
        sock.connect(server)?;
        Ok(TurnClient {
            sock,
            server,
            username: username.into(),
            password: password.into(),
            realm: None,
            nonce: None,
            seq: rand::random(),
            channels: BTreeMap::new(),
        })
    }

    pub fn local_addr(&self) -> Result<SocketAddr, ClientError> {
        Ok(self.sock.local_addr()?)
    }

    fn key(&self) -> Option<Key> {
        let realm = self.realm.as_deref()?;
        Some(Key::long_term(
            PasswordAlgorithm::Md5,
            &self.username,
            realm,
            &self.password,
        ))
    }

    /// Sends a request (signed once the server has told us realm and nonce), retransmits,
    /// and answers one 401/438 challenge. Returns the success response.
    fn request(
        &mut self,
        m: u16,
        body: &dyn Fn(&mut MessageBuilder<'_>),
    ) -> Result<Vec<u8>, ClientError> {
        for _attempt in 0..3 {
            self.seq = self.seq.wrapping_add(1);
            let mut tid = [0u8; 12];
            tid[4..].copy_from_slice(&self.seq.to_be_bytes());
            let mut buf = [0u8; 1500];
            let mut b = MessageBuilder::new(&mut buf, m, Class::Request, &tid);
            body(&mut b);
            if let (Some(key), Some(nonce), Some(realm)) = (self.key(), &self.nonce, &self.realm) {
                b.attr(attr::USERNAME, self.username.as_bytes());
                b.attr(attr::REALM, realm.as_bytes());
                b.attr(attr::NONCE, nonce);
                b.integrity(key.as_bytes(), false);
            }
            let n = b.finish(true).ok_or(ClientError::Malformed)?;
            let resp = self.transact(&buf[..n], &tid)?;
            let msg = Message::parse(&resp).map_err(|_| ClientError::Malformed)?;
            match msg.class {
                Class::Success => return Ok(resp),
                Class::Error => {
                    let (code, reason) = msg
                        .get(attr::ERROR_CODE)
                        .and_then(|v| attr::decode_error_code(v).ok())
                        .map(|(c, r)| (c, r.to_string()))
                        .ok_or(ClientError::Malformed)?;
                    let fresh = msg.get(attr::NONCE).map(<[u8]>::to_vec);
                    let challenge =
                        matches!(code, 401 | 438) && fresh.is_some() && fresh != self.nonce;
                    if challenge {
                        self.nonce = fresh;
                        if let Some(r) = msg.get(attr::REALM) {
                            self.realm = Some(String::from_utf8_lossy(r).into_owned());
                        }
                        continue;
                    }
                    return Err(ClientError::Rejected { code, reason });
                }
                _ => return Err(ClientError::Malformed),
            }
        }
        Err(ClientError::Rejected {
            code: 401,
            reason: "Unauthorized".into(),
        })
    }

    /// One datagram into `buf` before `deadline`; `None` once the deadline passed.
    fn recv_until(&self, deadline: Instant, buf: &mut [u8]) -> Result<Option<usize>, ClientError> {
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            return Ok(None);
        };
        self.sock
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))?;
        match self.sock.recv(buf) {
            Ok(n) => Ok(Some(n)),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Sends `req` and waits for the response with transaction id `tid`, retransmitting.
    fn transact(&self, req: &[u8], tid: &[u8; 12]) -> Result<Vec<u8>, ClientError> {
        let mut buf = [0u8; 2048];
        for rto in [250u64, 500, 1000, 2000] {
            self.sock.send(req)?;
            let deadline = Instant::now() + Duration::from_millis(rto);
            while let Some(n) = self.recv_until(deadline, &mut buf)? {
                if n >= 20 && buf[8..20] == tid[..] {
                    return Ok(buf[..n].to_vec());
                }
            }
        }
        Err(ClientError::Timeout)
    }

    /// Allocates a UDP relay; returns the relayed address.
    pub fn allocate(&mut self) -> Result<SocketAddr, ClientError> {
        self.allocate_family(false)
    }

    /// Allocates a UDP relay of the given family (REQUESTED-ADDRESS-FAMILY for IPv6).
    pub fn allocate_family(&mut self, ipv6: bool) -> Result<SocketAddr, ClientError> {
        let resp = self.request(method::ALLOCATE, &|b| {
            b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
            if ipv6 {
                b.attr(attr::REQUESTED_ADDRESS_FAMILY, &[2, 0, 0, 0]);
            }
        })?;
        let msg = Message::parse(&resp).map_err(|_| ClientError::Malformed)?;
        msg.get(attr::XOR_RELAYED_ADDRESS)
            .and_then(|v| attr::decode_xor_address(v, &msg.transaction_id).ok())
            .ok_or(ClientError::Malformed)
    }

    pub fn create_permission(&mut self, peer: SocketAddr) -> Result<(), ClientError> {
        self.request(method::CREATE_PERMISSION, &|b| {
            b.xor_address(attr::XOR_PEER_ADDRESS, peer)
        })
        .map(|_| ())
    }

    pub fn channel_bind(&mut self, peer: SocketAddr, number: u16) -> Result<(), ClientError> {
        self.request(method::CHANNEL_BIND, &|b| {
            b.attr(
                attr::CHANNEL_NUMBER,
                &[(number >> 8) as u8, number as u8, 0, 0],
            );
            b.xor_address(attr::XOR_PEER_ADDRESS, peer);
        })?;
        self.channels.insert(number, peer);
        Ok(())
    }

    /// Deletes the allocation (Refresh with lifetime 0).
    pub fn release(&mut self) -> Result<(), ClientError> {
        self.request(method::REFRESH, &|b| b.u32_attr(attr::LIFETIME, 0))
            .map(|_| ())
    }

    /// Sends `data` to `peer` in a Send indication.
    pub fn send_indication(&self, peer: SocketAddr, data: &[u8]) -> Result<(), ClientError> {
        let mut buf = vec![0u8; data.len() + 64];
        let mut b = MessageBuilder::new(&mut buf, method::SEND, Class::Indication, &rand::random());
        b.xor_address(attr::XOR_PEER_ADDRESS, peer);
        b.attr(attr::DATA, data);
        let n = b.finish(false).ok_or(ClientError::Malformed)?;
        self.sock.send(&buf[..n])?;
        Ok(())
    }

    /// Sends `data` over a bound channel.
    pub fn send_channel(&self, number: u16, data: &[u8]) -> Result<(), ClientError> {
        let mut buf = vec![0u8; channel::HEADER_LEN + data.len()];
        channel::write_header(&mut buf, number, data.len());
        buf[channel::HEADER_LEN..].copy_from_slice(data);
        self.sock.send(&buf)?;
        Ok(())
    }

    /// Waits for relayed data (Data indication or ChannelData): `(peer, payload)`.
    pub fn recv(&self, timeout: Duration) -> Result<(SocketAddr, Vec<u8>), ClientError> {
        self.recv_relayed(timeout).map(|r| (r.peer, r.payload))
    }

    /// Waits for relayed data and says how it came.
    pub fn recv_relayed(&self, timeout: Duration) -> Result<Relayed, ClientError> {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 2048];
        while let Some(n) = self.recv_until(deadline, &mut buf)? {
            let data = &buf[..n];
            if let Ok((number, payload)) = channel::parse(data) {
                if let Some(peer) = self.channels.get(&number) {
                    return Ok(Relayed {
                        peer: *peer,
                        payload: payload.to_vec(),
                        channel: Some(number),
                    });
                }
                continue;
            }
            if let Ok(msg) = Message::parse(data)
                && msg.method == method::DATA
                && msg.class == Class::Indication
                && let (Some(p), Some(d)) = (msg.get(attr::XOR_PEER_ADDRESS), msg.get(attr::DATA))
                && let Ok(peer) = attr::decode_xor_address(p, &msg.transaction_id)
            {
                return Ok(Relayed {
                    peer,
                    payload: d.to_vec(),
                    channel: None,
                });
            }
        }
        Err(ClientError::Timeout)
    }

    pub fn server(&self) -> SocketAddr {
        self.server
    }
}
