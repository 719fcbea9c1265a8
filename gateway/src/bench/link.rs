//! One client's connection to the TURN server: a connected UDP socket, or a TCP stream
//! (TLS on top when asked) that carries length-framed STUN and ChannelData.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::Arc;

use mio::net::{TcpStream, UdpSocket};
use mio::{Interest, Registry, Token};
use rustls::pki_types::ServerName;
use turnpike_dataplane::io::batch::Datagrams;
use turnpike_dataplane::proto::framing;

/// How the benchmark reaches the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
}

/// Socket buffers of the load generator: a burst of video or a whole round of a thousand
/// allocations must not overflow before the loop comes back to read it.
const SOCKET_BUFFER: usize = 1 << 20;

pub enum Link {
    Udp(UdpSocket),
    Stream(Box<StreamLink>),
}

pub struct StreamLink {
    tcp: TcpStream,
    tls: Option<rustls::ClientConnection>,
    /// Bytes read and not yet framed.
    inbound: Vec<u8>,
    /// Bytes (plain TCP) waiting for room in the socket.
    outbound: Vec<u8>,
}

/// What the TLS client needs: its config and the name the server's certificate carries.
#[derive(Clone)]
pub struct TlsClient {
    pub config: Arc<rustls::ClientConfig>,
    pub name: ServerName<'static>,
}

impl Link {
    /// Opens a link to `server` and registers it with `registry` under `token`.
    /// `source`: the local address to bind (any when `None`).
    pub fn open(
        transport: Transport,
        server: SocketAddr,
        source: Option<IpAddr>,
        tls: Option<&TlsClient>,
        registry: &Registry,
        token: Token,
    ) -> io::Result<Link> {
        let local = SocketAddr::new(
            source.unwrap_or(if server.is_ipv4() {
                IpAddr::from([0, 0, 0, 0])
            } else {
                IpAddr::from([0u16; 8])
            }),
            0,
        );
        let kind = match transport {
            Transport::Udp => socket2::Type::DGRAM,
            Transport::Tcp | Transport::Tls => socket2::Type::STREAM,
        };
        let sock = socket2::Socket::new(socket2::Domain::for_address(server), kind, None)?;
        // Best effort: the kernel caps these at net.core.[rw]mem_max.
        let _ = sock.set_recv_buffer_size(SOCKET_BUFFER);
        let _ = sock.set_send_buffer_size(SOCKET_BUFFER);
        sock.set_nonblocking(true)?;
        sock.bind(&local.into())?;
        match sock.connect(&server.into()) {
            Ok(()) => {}
            // A stream connects in the background; the first write waits for it.
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(e) => return Err(e),
        }
        let mut link = match transport {
            Transport::Udp => Link::Udp(UdpSocket::from_std(sock.into())),
            Transport::Tcp | Transport::Tls => {
                let tcp = TcpStream::from_std(sock.into());
                tcp.set_nodelay(true)?;
                let tls = match (transport, tls) {
                    (Transport::Tls, Some(t)) => Some(
                        rustls::ClientConnection::new(t.config.clone(), t.name.clone())
                            .map_err(io::Error::other)?,
                    ),
                    (Transport::Tls, None) => {
                        return Err(io::Error::other("TLS transport without a TLS config"));
                    }
                    _ => None,
                };
                Link::Stream(Box::new(StreamLink {
                    tcp,
                    tls,
                    inbound: Vec::with_capacity(4096),
                    outbound: Vec::new(),
                }))
            }
        };
        match &mut link {
            Link::Udp(s) => registry.register(s, token, Interest::READABLE)?,
            Link::Stream(s) => {
                registry.register(&mut s.tcp, token, Interest::READABLE | Interest::WRITABLE)?
            }
        }
        Ok(link)
    }

    pub fn close(&mut self, registry: &Registry) {
        let _ = match self {
            Link::Udp(s) => registry.deregister(s),
            Link::Stream(s) => registry.deregister(&mut s.tcp),
        };
    }

    /// The UDP socket's descriptor, for batched sends.
    pub fn udp_fd(&self) -> Option<std::os::fd::RawFd> {
        match self {
            Link::Udp(s) => Some(s.as_raw_fd()),
            Link::Stream(_) => None,
        }
    }

    pub fn is_stream(&self) -> bool {
        matches!(self, Link::Stream(_))
    }

    /// Sends one frame now (UDP) or queues it behind what the stream still holds.
    /// `Ok(false)`: a full UDP socket buffer dropped it.
    pub fn send(&mut self, frame: &[u8]) -> io::Result<bool> {
        match self {
            Link::Udp(s) => match s.send(frame) {
                Ok(_) => Ok(true),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
                // An ICMP error from an earlier datagram; this one is lost, the next goes.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Ok(false),
                Err(e) => Err(e),
            },
            Link::Stream(s) => {
                s.queue(frame)?;
                Ok(true)
            }
        }
    }

    /// Handles a readiness event's write side (a stream drains what it holds); returns
    /// whether there is something to read.
    pub fn ready(&mut self, ev: &mio::event::Event) -> io::Result<bool> {
        if ev.is_writable() {
            self.flush()?;
        }
        Ok(ev.is_readable())
    }

    /// Writes what a stream holds as far as the socket takes it.
    pub fn flush(&mut self) -> io::Result<()> {
        match self {
            Link::Udp(_) => Ok(()),
            Link::Stream(s) => s.flush(),
        }
    }

    /// Reads everything available and hands each datagram or frame to `frame`.
    /// `Ok(false)` when a stream was closed by the server.
    pub fn read(&mut self, rx: &mut Datagrams, frame: &mut impl FnMut(&[u8])) -> io::Result<bool> {
        match self {
            Link::Udp(s) => {
                let fd = s.as_raw_fd();
                loop {
                    let n = match rx.recv(fd, turnpike_dataplane::io::batch::BATCH, 0, 2048) {
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
                        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => 0,
                        Err(e) => return Err(e),
                    };
                    for k in 0..n {
                        if let Some(got) = rx.received(k) {
                            frame(&rx.buf(got.buf)[..got.len]);
                        }
                    }
                    rx.flush(|_| None);
                    if n < turnpike_dataplane::io::batch::BATCH {
                        return Ok(true);
                    }
                }
            }
            Link::Stream(s) => s.read(frame),
        }
    }
}

impl StreamLink {
    fn queue(&mut self, frame: &[u8]) -> io::Result<()> {
        // ChannelData over a stream is padded to a multiple of 4 (RFC 8656 §12.5);
        // STUN messages already are.
        let pad = (4 - frame.len() % 4) % 4;
        let zeros = [0u8; 3];
        match &mut self.tls {
            Some(tls) => {
                let mut w = tls.writer();
                w.write_all(frame)?;
                w.write_all(&zeros[..pad])?;
            }
            None => {
                self.outbound.extend_from_slice(frame);
                self.outbound.extend_from_slice(&zeros[..pad]);
            }
        }
        self.flush()
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.tls {
            Some(tls) => {
                while tls.wants_write() {
                    match tls.write_tls(&mut self.tcp) {
                        Ok(_) => {}
                        Err(e) if would_block(&e) => return Ok(()),
                        Err(e) => return Err(e),
                    }
                }
                Ok(())
            }
            None => {
                while !self.outbound.is_empty() {
                    match self.tcp.write(&self.outbound) {
                        Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                        Ok(n) => {
                            self.outbound.drain(..n);
                        }
                        Err(e) if would_block(&e) => return Ok(()),
                        Err(e) => return Err(e),
                    }
                }
                Ok(())
            }
        }
    }

    fn read(&mut self, frame: &mut impl FnMut(&[u8])) -> io::Result<bool> {
        let mut open = true;
        let mut chunk = [0u8; 16 * 1024];
        loop {
            let n = match &mut self.tls {
                Some(tls) => match tls.read_tls(&mut self.tcp) {
                    Ok(0) => {
                        open = false;
                        0
                    }
                    Ok(n) => {
                        tls.process_new_packets().map_err(io::Error::other)?;
                        n
                    }
                    Err(e) if would_block(&e) => break,
                    Err(e) => return Err(e),
                },
                None => match self.tcp.read(&mut chunk) {
                    Ok(0) => {
                        open = false;
                        0
                    }
                    Ok(n) => {
                        self.inbound.extend_from_slice(&chunk[..n]);
                        n
                    }
                    Err(e) if would_block(&e) => break,
                    Err(e) => return Err(e),
                },
            };
            if let Some(tls) = &mut self.tls {
                loop {
                    match tls.reader().read(&mut chunk) {
                        Ok(0) => break,
                        Ok(m) => self.inbound.extend_from_slice(&chunk[..m]),
                        Err(e) if would_block(&e) => break,
                        Err(e) => return Err(e),
                    }
                }
            }
            if n == 0 {
                break;
            }
        }
        let mut at = 0;
        while let Ok(Some(len)) = framing::next_frame(&self.inbound[at..]) {
            frame(&self.inbound[at..at + len]);
            at += len;
        }
        if framing::next_frame(&self.inbound[at..]).is_err() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the server sent something that is not STUN or ChannelData",
            ));
        }
        self.inbound.drain(..at);
        // The handshake (and answers to reads) may have something to write.
        self.flush()?;
        Ok(open)
    }
}

fn would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}
