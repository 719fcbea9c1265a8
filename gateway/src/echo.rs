//! `turnpike echo`: a UDP echo backend that reflects every datagram to its sender (what
//! coturn's `turnutils_peer` does), so the image itself carries the backend that
//! `examples/kubernetes` and the cluster tests route to.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;

use turnpike_dataplane::io::batch::{BATCH, BUF_LEN, Datagrams, Via};

/// Binds every address and echoes on each from a thread of its own; returns the bound
/// addresses (port 0 resolved). The threads run until the process exits.
pub fn start(addrs: &[SocketAddr]) -> io::Result<Vec<SocketAddr>> {
    let sockets = addrs
        .iter()
        .map(|a| bind(*a).map_err(|e| io::Error::new(e.kind(), format!("{a}: {e}"))))
        .collect::<io::Result<Vec<_>>>()?;
    let mut bound = Vec::with_capacity(sockets.len());
    for sock in sockets {
        bound.push(sock.local_addr()?);
        std::thread::spawn(move || echo(sock));
    }
    Ok(bound)
}

/// One socket takes every allocation's traffic to this backend: a buffer of a few
/// milliseconds at 100,000 packets/s keeps a scheduling hiccup from dropping echoes (the
/// kernel caps it at net.core.rmem_max).
const SOCKET_BUFFER: usize = 4 << 20;

fn bind(addr: SocketAddr) -> io::Result<UdpSocket> {
    let sock = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    let _ = sock.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = sock.set_send_buffer_size(SOCKET_BUFFER);
    sock.bind(&addr.into())?;
    Ok(sock.into())
}

/// Reflects datagrams in batches: one `recvmmsg` takes up to 32, one `sendmmsg` returns
/// them, so the echo costs a load test little CPU of the machine it shares.
fn echo(sock: UdpSocket) {
    if let Err(e) = echo_batched(sock) {
        tracing::error!(error = %e, "echo socket failed");
    }
}

fn echo_batched(sock: UdpSocket) -> io::Result<()> {
    sock.set_nonblocking(true)?;
    let mut sock = mio::net::UdpSocket::from_std(sock);
    let mut poll = mio::Poll::new()?;
    poll.registry()
        .register(&mut sock, mio::Token(0), mio::Interest::READABLE)?;
    let mut events = mio::Events::with_capacity(4);
    let mut pool = Datagrams::new();
    let fd = sock.as_raw_fd();
    loop {
        match poll.poll(&mut events, None) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        loop {
            let n = match pool.recv(fd, BATCH, 0, BUF_LEN) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
                // ICMP errors from an earlier send surface here on Linux; keep serving.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            for k in 0..n {
                if let Some(got) = pool.received(k)
                    && let Some(from) = got.from
                    && !got.truncated
                {
                    pool.push(got.buf, 0..got.len, Via::Listener(0), from);
                }
            }
            // A failed send (the peer's port closed, a full buffer) loses one echo, as UDP
            // may; the next datagram is served as usual.
            pool.flush(|_| Some(fd));
            if n < BATCH {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn every_listener_echoes_to_the_sender() {
        let any = "127.0.0.1:0".parse().unwrap();
        let bound = start(&[any, any]).unwrap();
        let client = UdpSocket::bind(any).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        for (i, addr) in bound.iter().enumerate() {
            let msg = format!("hello {i}");
            client.send_to(msg.as_bytes(), addr).unwrap();
            let mut buf = [0u8; 64];
            let (n, from) = client.recv_from(&mut buf).unwrap();
            assert_eq!((&buf[..n], from), (msg.as_bytes(), *addr));
        }
    }

    #[test]
    fn an_address_in_use_names_the_address() {
        let taken = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let err = start(&[addr]).unwrap_err();
        assert!(err.to_string().contains(&addr.to_string()), "{err}");
    }
}
