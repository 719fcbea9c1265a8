//! TURN over TCP and TLS (RFC 8656 §12.5): client connections of one worker. A
//! connection is one 5-tuple for allocation purposes; bytes become frames with
//! [`crate::proto::framing`], and frames go to the same protocol core as UDP datagrams.
//!
//! Memory is bounded per connection: received bytes are read into the worker's scratch
//! buffer and only an incomplete frame is kept (at most [`MAX_FRAME`]); what goes to a
//! slow client waits in a queue of at most [`SEND_QUEUE_LIMIT`] bytes, beyond which
//! relayed packets are dropped and counted (media prefers loss to delay), so one stalled
//! client never blocks anyone else.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use mio::net::TcpStream;

use crate::proto::framing::{self, MAX_FRAME};
use crate::proto::{ClientKey, ConnId, Transport};

pub use crate::metrics::CloseReason;

/// Bytes queued for one client before relayed packets are dropped: about a second of a
/// 2 Mbit/s video call.
pub const SEND_QUEUE_LIMIT: usize = 256 * 1024;
/// Plaintext handed to rustls per round, so its record buffer stays small.
const TLS_CHUNK: usize = 16 * 1024;

/// One client connection.
pub struct Connection {
    pub socket: TcpStream,
    pub peer: SocketAddr,
    /// Index of its listener in the current config.
    pub listener: u16,
    /// The `Transport::Stream` id: slot and a per-worker sequence, so a reused slot is
    /// never mistaken for the connection that held it before.
    pub id: ConnId,
    tls: Option<Box<rustls::ServerConnection>>,
    /// The start of a frame whose remaining bytes have not arrived yet.
    partial: Vec<u8>,
    out: Vec<u8>,
    out_start: usize,
    pub opened: Instant,
    /// When the last whole frame arrived (`None` before the first).
    pub last_frame: Option<Instant>,
}

/// What one read produced.
pub enum Received {
    /// Plaintext bytes in the scratch buffer.
    Bytes(usize),
    /// Nothing more until the next readiness event.
    WouldBlock,
    Closed(CloseReason),
}

impl Connection {
    pub fn new(
        socket: TcpStream,
        peer: SocketAddr,
        listener: u16,
        id: ConnId,
        tls: Option<&Arc<rustls::ServerConfig>>,
        now: Instant,
    ) -> Result<Self, rustls::Error> {
        let tls = match tls {
            Some(config) => {
                let mut c = rustls::ServerConnection::new(config.clone())?;
                // The send queue above bounds what waits; rustls only holds one chunk.
                c.set_buffer_limit(None);
                Some(Box::new(c))
            }
            None => None,
        };
        Ok(Connection {
            socket,
            peer,
            listener,
            id,
            tls,
            partial: Vec::new(),
            out: Vec::new(),
            out_start: 0,
            opened: now,
            last_frame: None,
        })
    }

    /// Who this connection is to the protocol core.
    pub fn client_key(&self) -> ClientKey {
        ClientKey {
            listener: self.listener,
            transport: Transport::Stream(self.id),
            addr: self.peer,
        }
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Reads the next plaintext bytes into `buf`.
    pub fn receive(&mut self, buf: &mut [u8]) -> Received {
        let Some(tls) = self.tls.as_mut() else {
            loop {
                return match self.socket.read(buf) {
                    Ok(0) => Received::Closed(CloseReason::Client),
                    Ok(n) => Received::Bytes(n),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => io_outcome(&e),
                };
            }
        };
        loop {
            match tls.reader().read(buf) {
                Ok(0) => return Received::Closed(CloseReason::Client),
                Ok(n) => return Received::Bytes(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    return Received::Closed(CloseReason::Client);
                }
                Err(_) => return Received::Closed(CloseReason::TlsError),
            }
            match tls.read_tls(&mut self.socket) {
                Ok(0) => return Received::Closed(CloseReason::Client),
                Ok(_) => {
                    if let Err(e) = tls.process_new_packets() {
                        tracing::debug!(peer = %self.peer, error = %e, "TLS error");
                        // Best effort: tell the client why (the alert is queued).
                        let _ = tls.write_tls(&mut self.socket);
                        return Received::Closed(CloseReason::TlsError);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return io_outcome(&e),
            }
        }
    }

    /// Splits `data` (just received) into frames, calling `frame` for each whole one and
    /// keeping an incomplete tail. False when the stream is not TURN.
    pub fn frames(&mut self, data: &[u8], mut frame: impl FnMut(&mut Self, &[u8])) -> bool {
        if self.partial.is_empty() {
            let rest = match self.split(data, &mut frame) {
                Some(r) => r,
                None => return false,
            };
            self.partial.extend_from_slice(rest);
            return true;
        }
        self.partial.extend_from_slice(data);
        let pending = std::mem::take(&mut self.partial);
        let rest = match self.split(&pending, &mut frame) {
            Some(r) => r.len(),
            None => return false,
        };
        let mut pending = pending;
        pending.drain(..pending.len() - rest);
        self.partial = pending;
        if self.partial.is_empty() && self.partial.capacity() > MAX_FRAME {
            self.partial = Vec::new();
        }
        true
    }

    fn split<'d>(
        &mut self,
        mut data: &'d [u8],
        frame: &mut impl FnMut(&mut Self, &[u8]),
    ) -> Option<&'d [u8]> {
        loop {
            match framing::next_frame(data) {
                Ok(Some(n)) => {
                    frame(self, &data[..n]);
                    data = &data[n..];
                }
                Ok(None) => return Some(data),
                Err(_) => return None,
            }
        }
    }

    /// Bytes waiting to be sent.
    pub fn queued(&self) -> usize {
        self.out.len() - self.out_start
    }

    /// Queues one whole frame; false (nothing queued) when the queue is full.
    pub fn queue(&mut self, frame: &[u8]) -> bool {
        if self.queued() + frame.len() > SEND_QUEUE_LIMIT {
            return false;
        }
        if self.out_start > 0 && self.out_start == self.out.len() {
            self.out.clear();
            self.out_start = 0;
        }
        self.out.extend_from_slice(frame);
        true
    }

    /// Writes what the socket takes. Ok(true) when nothing is left.
    pub fn flush(&mut self) -> io::Result<bool> {
        let done = match self.tls.as_mut() {
            None => {
                while self.out_start < self.out.len() {
                    match self.socket.write(&self.out[self.out_start..]) {
                        Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                        Ok(n) => self.out_start += n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
                true
            }
            Some(tls) => loop {
                while tls.wants_write() {
                    match tls.write_tls(&mut self.socket) {
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
                // Application data waits for the handshake; rustls would buffer it anyway.
                if self.out_start == self.out.len() || tls.is_handshaking() {
                    break self.out_start == self.out.len();
                }
                // One record per frame, as coturn sends: simple clients (turnutils_uclient)
                // take each record as one message and drop the rest of a coalesced one.
                let mut fed = 0;
                while fed < TLS_CHUNK && self.out_start < self.out.len() {
                    let rest = &self.out[self.out_start..];
                    let n = match framing::next_frame(rest) {
                        Ok(Some(n)) => n,
                        // Only whole frames are queued; anything else goes as it is.
                        _ => rest.len(),
                    };
                    tls.writer().write_all(&rest[..n])?;
                    self.out_start += n;
                    fed += n;
                }
            },
        };
        if done {
            self.out.clear();
            self.out_start = 0;
            if self.out.capacity() > SEND_QUEUE_LIMIT / 4 {
                // A burst is over; do not keep its buffer for a connection's lifetime.
                self.out = Vec::new();
            }
        }
        Ok(done)
    }
}

fn io_outcome(e: &io::Error) -> Received {
    match e.kind() {
        io::ErrorKind::WouldBlock => Received::WouldBlock,
        io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted => {
            Received::Closed(CloseReason::Client)
        }
        _ => Received::Closed(CloseReason::IoError),
    }
}
