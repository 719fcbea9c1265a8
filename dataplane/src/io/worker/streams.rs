//! The worker's TURN-TCP and TURN-TLS side: its `SO_REUSEPORT` TCP listeners, accepting
//! under the connection limits, reading frames into the protocol core, queueing what goes
//! back, and closing connections (which deletes their allocations).

use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use mio::net::TcpListener;
use mio::{Interest, Token};
use slab::Slab;
use socket2::{Protocol as SockProtocol, Type};

use super::{
    ActiveConfig, CONN_BASE, RELAY_BASE, STREAM_LISTENER_BASE, Worker, bind_all,
    shared_listener_socket,
};
use crate::config::Protocol;
use crate::io::batch::BUF_LEN;
use crate::io::stream::{CloseReason, Connection, Received};
use crate::metrics::Metrics;
use crate::proto::{ConnId, Now};

use super::egress::{self, Bytes};

/// Connections one worker can hold: the poll tokens between [`CONN_BASE`] and relays.
const MAX_SLOTS: usize = RELAY_BASE - CONN_BASE;
/// Read size per call; frames are cut straight out of it.
const SCRATCH: usize = 64 * 1024;
const BACKLOG: i32 = 1024;

pub struct Streams {
    /// Indexed like the config's listeners; `None` for UDP or unbound listeners.
    listeners: Vec<Option<(SocketAddr, TcpListener)>>,
    conns: Slab<Connection>,
    /// Connections with bytes queued since the last flush.
    dirty: Vec<usize>,
    seq: u32,
    scratch: Box<[u8]>,
    reply: Box<[u8]>,
    last_accept_error: Option<Instant>,
}

impl Default for Streams {
    fn default() -> Self {
        Streams {
            listeners: Vec::new(),
            conns: Slab::new(),
            dirty: Vec::new(),
            seq: 0,
            scratch: vec![0; SCRATCH].into_boxed_slice(),
            reply: vec![0; BUF_LEN].into_boxed_slice(),
            last_accept_error: None,
        }
    }
}

impl Streams {
    /// Queues a relayed frame for connection `id`; a full queue drops it (counted).
    pub fn deliver(&mut self, id: ConnId, frame: &[u8], metrics: &Metrics) {
        let slot = id.slot as usize;
        let Some(c) = self.conns.get_mut(slot).filter(|c| c.id == id) else {
            return;
        };
        let was_empty = c.queued() == 0;
        if !c.queue(frame) {
            metrics.streams.dropped_queue_full.inc();
        } else if was_empty {
            self.dirty.push(slot);
        }
    }
}

fn bind_tcp(addr: SocketAddr) -> io::Result<TcpListener> {
    let sock = shared_listener_socket(addr, Type::STREAM, SockProtocol::TCP)?;
    sock.bind(&addr.into())?;
    sock.listen(BACKLOG)?;
    Ok(TcpListener::from_std(sock.into()))
}

impl Worker {
    /// Binds (or keeps, when the address is unchanged) a TCP socket per TURN-TCP/TLS
    /// listener of `config`.
    pub(super) fn bind_stream_listeners(&mut self, config: &ActiveConfig) {
        let old = std::mem::take(&mut self.streams.listeners);
        // A TLS listener without a usable certificate stays unbound; the runtime's status
        // already says why.
        self.streams.listeners = bind_all(
            self.poll.registry(),
            config,
            old,
            |l| match l.protocol {
                Protocol::TurnUdp => false,
                Protocol::TurnTcp => true,
                Protocol::TurnTls => l.tls.is_some(),
            },
            STREAM_LISTENER_BASE,
            bind_tcp,
            &self.shared.status,
        );
    }

    /// Accepts what listener `i` has waiting, closing at once what the limits refuse.
    pub(super) fn accept(&mut self, i: usize, now: Now) {
        loop {
            let Some(Some((_, listener))) = self.streams.listeners.get(i) else {
                return;
            };
            let (socket, peer) = match listener.accept() {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Out of file descriptors, usually; say so once in a while, not per try.
                    let quiet = self
                        .streams
                        .last_accept_error
                        .is_some_and(|t| now.instant.duration_since(t).as_secs() < 10);
                    if !quiet {
                        tracing::warn!(error = %e, "cannot accept TCP connections");
                        self.streams.last_accept_error = Some(now.instant);
                    }
                    return;
                }
            };
            let limits = self.config.streams;
            let metrics = &self.shared.metrics.streams;
            if self.streams.conns.len() >= MAX_SLOTS
                || self
                    .shared
                    .admission
                    .admit(
                        peer.ip(),
                        now.instant,
                        limits.max_connections,
                        limits.rate_per_ip,
                        metrics,
                    )
                    .is_err()
            {
                continue; // dropping `socket` closes it
            }
            let _ = socket.set_nodelay(true);
            let tls = self.config.listeners.get(i).and_then(|l| l.tls.as_ref());
            let entry = self.streams.conns.vacant_entry();
            let slot = entry.key();
            self.streams.seq = self.streams.seq.wrapping_add(1);
            let id = ConnId {
                slot: slot as u32,
                seq: self.streams.seq,
            };
            let mut conn = match Connection::new(socket, peer, i as u16, id, tls, now.instant) {
                Ok(c) => c,
                Err(_) => {
                    metrics.closed(CloseReason::TlsError);
                    continue;
                }
            };
            if self
                .poll
                .registry()
                .register(
                    &mut conn.socket,
                    Token(CONN_BASE + slot),
                    Interest::READABLE | Interest::WRITABLE,
                )
                .is_err()
            {
                metrics.closed(CloseReason::IoError);
                continue;
            }
            entry.insert(conn);
        }
    }

    /// Reads and handles everything connection `slot` has, then sends what is queued.
    pub(super) fn connection_ready(&mut self, slot: usize, now: Now) {
        loop {
            let Worker {
                server,
                relays,
                streams,
                shared,
                out,
                listeners,
                ..
            } = self;
            let Some(conn) = streams.conns.get_mut(slot) else {
                return;
            };
            let n = match conn.receive(&mut streams.scratch) {
                Received::Bytes(n) => n,
                Received::WouldBlock => break,
                Received::Closed(reason) => return self.close_connection(slot, reason),
            };
            let reply = &mut streams.reply;
            let metrics = &shared.metrics;
            let turn = conn.frames(&streams.scratch[..n], |c, frame| {
                c.last_frame = Some(now.instant);
                if out.free() == 0 {
                    egress::flush(out, server, listeners, metrics);
                }
                let Some(t) = server.handle_client(now, c.client_key(), frame, reply, relays)
                else {
                    return;
                };
                // A stream client's answers and relayed frames go back on this connection.
                egress::emit(
                    out,
                    metrics,
                    t,
                    Bytes::Slice(frame),
                    Bytes::Slice(reply),
                    |_, bytes| {
                        if !c.queue(bytes) {
                            metrics.streams.dropped_queue_full.inc();
                        }
                    },
                );
            });
            if !turn {
                return self.close_connection(slot, CloseReason::NotTurn);
            }
        }
        self.flush_connection(slot);
    }

    fn flush_connection(&mut self, slot: usize) {
        let Some(conn) = self.streams.conns.get_mut(slot) else {
            return;
        };
        if let Err(e) = conn.flush() {
            tracing::debug!(peer = %conn.peer, error = %e, "connection write failed");
            self.close_connection(slot, CloseReason::IoError);
        }
    }

    /// Sends what relaying queued since the last flush: one write per connection for all
    /// the packets a poll round brought.
    pub(super) fn flush_connections(&mut self) {
        while let Some(slot) = self.streams.dirty.pop() {
            self.flush_connection(slot);
        }
    }

    pub(super) fn close_connection(&mut self, slot: usize, reason: CloseReason) {
        let Some(mut conn) = self.streams.conns.try_remove(slot) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut conn.socket);
        self.server
            .client_gone(&conn.client_key(), &mut self.relays, Instant::now());
        self.shared.metrics.streams.closed(reason);
        tracing::debug!(peer = %conn.peer, reason = reason.as_str(), "connection closed");
    }

    /// Closes connections that never sent a whole message within the handshake timeout,
    /// and silent ones without an allocation. Called once a second.
    pub(super) fn expire_connections(&mut self, now: Now) {
        let limits = self.config.streams;
        let mut expired = Vec::new();
        for (slot, c) in &self.streams.conns {
            match c.last_frame {
                None if now.instant.duration_since(c.opened) > limits.handshake_timeout => {
                    expired.push((slot, CloseReason::HandshakeTimeout));
                }
                Some(t)
                    if now.instant.duration_since(t) > limits.idle_timeout
                        && !self.server.has_allocation(&c.client_key()) =>
                {
                    expired.push((slot, CloseReason::IdleTimeout));
                }
                _ => {}
            }
        }
        for (slot, reason) in expired {
            self.close_connection(slot, reason);
        }
    }

    /// After a config change: connections follow their listener to its new index (the
    /// protocol core re-keyed their allocations the same way); those whose listener is gone
    /// or no longer a stream listener are closed.
    pub(super) fn remap_connections(&mut self, new: &ActiveConfig) {
        let remap: Vec<Option<u16>> = self
            .config
            .listeners
            .iter()
            .map(|l| {
                new.listeners
                    .iter()
                    .position(|n| n.name == l.name)
                    .map(|i| i as u16)
            })
            .collect();
        let mut gone = Vec::new();
        for (slot, c) in &mut self.streams.conns {
            let to = remap.get(c.listener as usize).copied().flatten();
            if let Some(l) = to {
                c.listener = l;
            }
            let stream = to
                .and_then(|l| new.listeners.get(l as usize))
                .is_some_and(|l| l.protocol != Protocol::TurnUdp);
            if !stream {
                gone.push(slot);
            }
        }
        for slot in gone {
            self.close_connection(slot, CloseReason::ListenerRemoved);
        }
    }
}
