//! One worker: a thread with its own poll loop, its own `SO_REUSEPORT` listener sockets
//! (UDP, and TCP for TURN-TCP/TLS), its own client connections, allocations and relay
//! sockets. Nothing on the UDP relay path takes a lock or allocates: datagrams land in
//! preallocated batch buffers and go out from them.

mod egress;
mod offload;
mod streams;

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mio::{Events, Interest, Poll, Token, Waker};
use socket2::{Domain, Protocol as SockProtocol, Socket, Type};

use crate::config::Protocol;
use crate::metrics::Metrics;
use crate::proto::{
    ClientKey, NonceKey, Now, PEER_HEADROOM, PEER_TAILROOM, Server, ServerConfig, Transport,
    UserQuota,
};
use crate::status::Status;

use super::batch::{BATCH, BUF_LEN, Datagrams};
use super::relay::{RELAY_BASE, RelayAddrs, RelayOpener, Reservations};

const WAKER: Token = Token(0);
const LISTENER_BASE: usize = 1;
/// Poll tokens: UDP listeners from 1, TCP listeners from here, then client connections,
/// then relay sockets ([`RELAY_BASE`]).
const STREAM_LISTENER_BASE: usize = 1 << 16;
const CONN_BASE: usize = 1 << 18;

/// What a poll token stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Commands,
    /// The UDP socket of listener `i`.
    UdpListener(u16),
    /// The TCP socket of listener `i`.
    StreamListener(usize),
    /// The client connection in this slot.
    Connection(usize),
    /// The relay socket of the allocation in this slot.
    Relay(usize),
}

impl Source {
    fn of(token: Token) -> Source {
        match token.0 {
            0 => Source::Commands,
            t if t >= RELAY_BASE => Source::Relay(t - RELAY_BASE),
            t if t >= CONN_BASE => Source::Connection(t - CONN_BASE),
            t if t >= STREAM_LISTENER_BASE => Source::StreamListener(t - STREAM_LISTENER_BASE),
            t => Source::UdpListener((t - LISTENER_BASE) as u16),
        }
    }
}
const TICK: Duration = Duration::from_secs(1);
/// Socket buffer asked for on listeners; bursts of many clients need more than the default.
const LISTENER_BUFFER: usize = 4 << 20;

/// A listener as the workers need it.
#[derive(Debug, Clone)]
pub struct ListenerRuntime {
    pub name: String,
    pub protocol: Protocol,
    pub bind: SocketAddr,
    pub relay: RelayAddrs,
    /// TURN-TLS: what new connections handshake with. Connections keep the config they
    /// started with, so a new certificate never disturbs them.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// Limits on TCP/TLS client connections.
#[derive(Debug, Clone, Copy)]
pub struct StreamLimits {
    pub max_connections: u32,
    pub rate_per_ip: u32,
    pub handshake_timeout: Duration,
    pub idle_timeout: Duration,
}

/// Everything a worker needs of one config.
#[derive(Debug)]
pub struct ActiveConfig {
    pub server: Arc<ServerConfig>,
    pub listeners: Vec<ListenerRuntime>,
    pub streams: StreamLimits,
}

pub enum Command {
    Apply(Arc<ActiveConfig>),
    Drain,
    Stop,
}

/// Shared by all workers of a dataplane.
#[derive(Clone)]
pub struct WorkerShared {
    pub nonce: NonceKey,
    pub quota: Arc<UserQuota>,
    pub reservations: Arc<Reservations>,
    pub admission: Arc<super::Admission>,
    pub metrics: Arc<Metrics>,
    pub status: Arc<Status>,
    /// The kernel relay, when offload is on and attached.
    pub offload: Option<Arc<crate::offload::Kernel>>,
}

pub struct WorkerHandle {
    commands: mpsc::Sender<Command>,
    waker: Arc<Waker>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl WorkerHandle {
    pub fn send(&self, c: Command) {
        if self.commands.send(c).is_ok() {
            let _ = self.waker.wake();
        }
    }

    pub fn join(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts worker `index` on `config`.
pub fn spawn(
    index: usize,
    config: Arc<ActiveConfig>,
    shared: WorkerShared,
) -> io::Result<WorkerHandle> {
    let poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
    let (tx, rx) = mpsc::channel();
    let relays = RelayOpener::new(poll.registry().try_clone()?, shared.reservations.clone());
    let mut server = Server::new(
        config.server.clone(),
        shared.nonce.clone(),
        shared.quota.clone(),
    );
    let offload = shared.offload.clone().map(|k| {
        server.set_offload(true, Instant::now());
        offload::OffloadTable::new(k)
    });
    let mut worker = Worker {
        index,
        poll,
        commands: rx,
        server,
        relays,
        listeners: Vec::new(),
        config: config.clone(),
        out: Datagrams::new(),
        streams: streams::Streams::default(),
        shared,
        stopping: false,
        offload,
    };
    worker.bind_listeners(&config, Vec::new());
    let thread = std::thread::Builder::new()
        .name(format!("turnpike-worker-{index}"))
        .spawn(move || worker.run())?;
    Ok(WorkerHandle {
        commands: tx,
        waker,
        thread: Some(thread),
    })
}

struct Worker {
    index: usize,
    poll: Poll,
    commands: mpsc::Receiver<Command>,
    server: Server<RelayOpener>,
    relays: RelayOpener,
    /// Indexed like the config's listeners; `None` when not served by this worker.
    listeners: Vec<Option<(SocketAddr, mio::net::UdpSocket)>>,
    config: Arc<ActiveConfig>,
    /// Every datagram in or out, whichever direction.
    out: Datagrams,
    streams: streams::Streams,
    shared: WorkerShared,
    stopping: bool,
    /// Kernel bindings this worker installed (offload on).
    offload: Option<offload::OffloadTable>,
}

fn now() -> Now {
    Now {
        instant: Instant::now(),
        unix: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    }
}

/// A non-blocking listener socket that every worker binds to the same address
/// (`SO_REUSEPORT`: the kernel spreads clients over them); not bound yet.
fn shared_listener_socket(addr: SocketAddr, ty: Type, proto: SockProtocol) -> io::Result<Socket> {
    let sock = Socket::new(Domain::for_address(addr), ty, Some(proto))?;
    sock.set_reuse_port(true)?;
    sock.set_reuse_address(true)?;
    if addr.is_ipv6() && !addr.ip().is_unspecified() {
        sock.set_only_v6(true)?;
    }
    sock.set_nonblocking(true)?;
    Ok(sock)
}

fn bind_listener(addr: SocketAddr) -> io::Result<mio::net::UdpSocket> {
    let sock = shared_listener_socket(addr, Type::DGRAM, SockProtocol::UDP)?;
    let _ = sock.set_recv_buffer_size(LISTENER_BUFFER);
    let _ = sock.set_send_buffer_size(LISTENER_BUFFER);
    sock.bind(&addr.into())?;
    Ok(mio::net::UdpSocket::from_std(sock.into()))
}

/// The socket of `l`: the one in `old` bound to the same address (re-registered under
/// `token`, so clients never notice a config change), else a new one from `bind`. A
/// failure is logged and shown in the listener's status.
fn keep_or_bind<S: mio::event::Source>(
    registry: &mio::Registry,
    old: &mut [Option<(SocketAddr, S)>],
    l: &ListenerRuntime,
    token: Token,
    bind: impl Fn(SocketAddr) -> io::Result<S>,
    status: &crate::status::Status,
) -> Option<(SocketAddr, S)> {
    let reused = old
        .iter_mut()
        .find(|s| s.as_ref().is_some_and(|(a, _)| *a == l.bind))
        .and_then(Option::take);
    if let Some((a, mut s)) = reused {
        return registry
            .reregister(&mut s, token, Interest::READABLE)
            .ok()
            .map(|()| (a, s));
    }
    let result = bind(l.bind).and_then(|mut s| {
        registry
            .register(&mut s, token, Interest::READABLE)
            .map(|()| (l.bind, s))
    });
    match result {
        Ok(entry) => Some(entry),
        Err(e) => {
            tracing::error!(listener = %l.name, addr = %l.bind, error = %e, "cannot bind listener");
            status.set_listener_state(&l.name, format!("error: bind {}: {e}", l.bind));
            None
        }
    }
}

/// A socket per listener of `config` that `serves` (indexed like the listeners, `None`
/// for the others), kept from `old` where the address is unchanged; the rest of `old` is
/// deregistered (and closed when dropped).
fn bind_all<S: mio::event::Source>(
    registry: &mio::Registry,
    config: &ActiveConfig,
    mut old: Vec<Option<(SocketAddr, S)>>,
    serves: impl Fn(&ListenerRuntime) -> bool,
    token_base: usize,
    bind: impl Fn(SocketAddr) -> io::Result<S>,
    status: &crate::status::Status,
) -> Vec<Option<(SocketAddr, S)>> {
    let sockets = config
        .listeners
        .iter()
        .enumerate()
        .map(|(i, l)| {
            serves(l)
                .then(|| keep_or_bind(registry, &mut old, l, Token(token_base + i), &bind, status))
                .flatten()
        })
        .collect();
    for (_, mut s) in old.into_iter().flatten() {
        let _ = registry.deregister(&mut s);
    }
    sockets
}

impl Worker {
    /// Binds (or keeps) a socket per UDP listener of `config`; `old` are the sockets of the
    /// previous config, reused when the address is unchanged so clients never notice.
    fn bind_listeners(
        &mut self,
        config: &ActiveConfig,
        old: Vec<Option<(SocketAddr, mio::net::UdpSocket)>>,
    ) {
        self.listeners = bind_all(
            self.poll.registry(),
            config,
            old,
            |l| l.protocol == Protocol::TurnUdp,
            LISTENER_BASE,
            bind_listener,
            &self.shared.status,
        );
        self.relays.addrs = config.listeners.iter().map(|l| l.relay).collect();
        self.bind_stream_listeners(config);
    }

    fn run(mut self) {
        self.publish_allocations();
        let mut events = Events::with_capacity(1024);
        let mut next_tick = Instant::now() + TICK;
        while !self.stopping {
            let timeout = next_tick.saturating_duration_since(Instant::now());
            if let Err(e) = self.poll.poll(&mut events, Some(timeout))
                && e.kind() != io::ErrorKind::Interrupted
            {
                tracing::error!(worker = self.index, error = %e, "poll failed");
                std::thread::sleep(Duration::from_millis(10));
            }
            let now = now();
            self.out.start_turn(now.instant);
            for ev in events.iter() {
                match Source::of(ev.token()) {
                    Source::Commands => self.handle_commands(),
                    Source::Relay(slot) => self.drain_relay(slot, now),
                    Source::Connection(slot) => self.connection_ready(slot, now),
                    Source::StreamListener(i) => self.accept(i, now),
                    Source::UdpListener(i) => self.drain_listener(i, now),
                }
            }
            self.flush();
            if now.instant >= next_tick {
                self.server.tick(now, &mut self.relays);
                self.sync_offload();
                self.expire_connections(now);
                self.publish();
                next_tick = now.instant + TICK;
            }
        }
        self.publish();
    }

    fn handle_commands(&mut self) {
        // What is queued leaves under the config it was relayed under.
        self.flush_datagrams();
        while let Ok(c) = self.commands.try_recv() {
            match c {
                Command::Apply(cfg) => {
                    self.publish();
                    let old = std::mem::take(&mut self.listeners);
                    self.bind_listeners(&cfg, old);
                    self.server
                        .apply_config(cfg.server.clone(), Instant::now(), &mut self.relays);
                    self.remap_connections(&cfg);
                    self.config = cfg;
                    self.publish_allocations();
                    // Revoked routes leave the kernel before anything else is relayed.
                    self.sync_offload();
                }
                Command::Drain => self.server.begin_drain(),
                Command::Stop => self.stopping = true,
            }
        }
    }

    fn publish(&mut self) {
        let mut stats = self.server.take_stats();
        let m = &self.shared.metrics;
        m.add(&mut stats, self.server.counter_labels());
        m.add_latency(&mut self.out.latency);
        if let Some(slot) = m.allocations.get(self.index) {
            slot.store(self.server.allocation_count() as u64, Relaxed);
        }
        let mut counts = vec![0u64; self.server.config().listeners.len()];
        for (_, a) in self.server.allocations() {
            if let Some(n) = counts.get_mut(usize::from(a.client.listener)) {
                *n += 1;
            }
        }
        let names = self
            .server
            .config()
            .listeners
            .iter()
            .map(|l| l.name.clone());
        m.set_allocations(self.index, names.zip(counts).collect());
        if let Some(t) = &mut self.offload {
            m.add_relayed(&t.take_relayed(), self.server.counter_labels(), "kernel");
            m.offload.refused.inc_by(std::mem::take(&mut t.refused));
            if let Some(slot) = m.offload.bindings.get(self.index) {
                slot.store(t.bindings() as u64, Relaxed);
            }
        }
    }

    /// Active allocations by listener, every listener of the config included (at 0).
    fn publish_allocations(&self) {
        let listeners = &self.server.config().listeners;
        let mut counts = vec![0u64; listeners.len()];
        for (_, a) in self.server.allocations() {
            if let Some(n) = counts.get_mut(usize::from(a.client.listener)) {
                *n += 1;
            }
        }
        let names = listeners.iter().map(|l| l.name.clone());
        self.shared
            .metrics
            .set_allocations(self.index, names.zip(counts).collect());
    }

    /// Writes what the core decided the kernel may relay (or must stop relaying).
    fn sync_offload(&mut self) {
        let Some(table) = &mut self.offload else {
            return;
        };
        let events: Vec<_> = self.server.offload_events().collect();
        if events.is_empty() {
            return;
        }
        let listeners = &self.config.listeners;
        let server = &self.server;
        let listener = |i: u16| listeners.get(i as usize).map(|l| l.bind);
        let relay = |a| server.relay(a).and_then(|s| s.local_addr().ok());
        let resolve = offload::Resolve {
            listener: &listener,
            relay: &relay,
        };
        for ev in events {
            table.apply(ev, &resolve);
        }
    }

    fn listener_fd(&self, i: u16) -> Option<RawFd> {
        self.listeners
            .get(i as usize)
            .and_then(|s| s.as_ref())
            .map(|(_, s)| s.as_raw_fd())
    }

    fn flush(&mut self) {
        self.sync_offload();
        self.flush_connections();
        self.flush_datagrams();
    }

    fn flush_datagrams(&mut self) {
        egress::flush(
            &mut self.out,
            &self.server,
            &self.listeners,
            &self.shared.metrics,
        );
    }

    fn drain_listener(&mut self, listener: u16, now: Now) {
        let Some(fd) = self.listener_fd(listener) else {
            return;
        };
        loop {
            // Every datagram may need a second buffer for its answer; flush before the
            // batches get small.
            if self.out.free() < BATCH {
                self.flush_datagrams();
            }
            let want = BATCH.min(self.out.free() / 2);
            let n = match self.out.recv(fd, want, 0, BUF_LEN) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // ICMP errors surface here on some kernels; the socket stays usable.
                Err(_) => return,
            };
            for k in 0..n {
                let Worker {
                    out,
                    server,
                    relays,
                    streams,
                    shared,
                    ..
                } = self;
                let Some(r) = out.received(k) else { continue };
                let Some(from) = egress::sender(&r, &shared.metrics) else {
                    continue;
                };
                let client = ClientKey {
                    listener,
                    transport: Transport::Udp,
                    addr: from,
                };
                let Some((input, answer)) = out.input_and_answer(r.buf) else {
                    continue;
                };
                let Some(t) = server.handle_client(now, client, &input[..r.len], answer, relays)
                else {
                    continue;
                };
                egress::emit_received(out, streams, &shared.metrics, t, r.buf);
            }
            if n < want {
                // A short batch means the queue is empty; skip the extra EAGAIN round trip.
                // Edge-triggered polling still fires for the next datagram.
                return;
            }
        }
    }

    fn drain_relay(&mut self, slot: usize, now: Now) {
        /// Datagrams per receive call on a relay socket: a relay usually carries one flow,
        /// so large batches rarely fill, but more than one tells when the queue is empty.
        const RELAY_BATCH: usize = 8;
        let Some(alloc) = self.server.allocation_in(slot) else {
            return;
        };
        let mut errors = 0;
        loop {
            if self.out.free() == 0 {
                self.flush_datagrams();
            }
            let Some(fd) = self.server.relay(alloc).map(|s| s.as_raw_fd()) else {
                return;
            };
            let want = RELAY_BATCH.min(self.out.free());
            let n = match self
                .out
                .recv(fd, want, PEER_HEADROOM, BUF_LEN - PEER_TAILROOM)
            {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // ICMP port unreachable from an earlier send: nothing to relay, go on; a
                // socket that keeps failing is left until its next readiness event.
                Err(_) => {
                    errors += 1;
                    if errors > 8 {
                        return;
                    }
                    continue;
                }
            };
            for k in 0..n {
                let Worker {
                    out,
                    server,
                    streams,
                    shared,
                    ..
                } = self;
                let Some(r) = out.received(k) else { continue };
                let Some(peer) = egress::sender(&r, &shared.metrics) else {
                    continue;
                };
                let frame = &mut out.buf_mut(r.buf)[..];
                let Some(t) = server.handle_peer(now, alloc, peer, frame, r.len) else {
                    continue;
                };
                egress::emit_received(out, streams, &shared.metrics, t, r.buf);
            }
            if n < want {
                return;
            }
        }
    }
}
