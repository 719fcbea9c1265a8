//! `turnpike echo`: a UDP echo backend that reflects every datagram to its sender (what
//! coturn's `turnutils_peer` does), so the image itself carries the backend that
//! `examples/kubernetes` and the cluster tests route to.

use std::io;
use std::net::{SocketAddr, UdpSocket};

/// Binds every address and echoes on each from a thread of its own; returns the bound
/// addresses (port 0 resolved). The threads run until the process exits.
pub fn start(addrs: &[SocketAddr]) -> io::Result<Vec<SocketAddr>> {
    let sockets = addrs
        .iter()
        .map(|a| UdpSocket::bind(a).map_err(|e| io::Error::new(e.kind(), format!("{a}: {e}"))))
        .collect::<io::Result<Vec<_>>>()?;
    let mut bound = Vec::with_capacity(sockets.len());
    for sock in sockets {
        bound.push(sock.local_addr()?);
        std::thread::spawn(move || echo(&sock));
    }
    Ok(bound)
}

fn echo(sock: &UdpSocket) {
    let mut buf = [0u8; 65536];
    loop {
        match sock.recv_from(&mut buf) {
            // A failed send (the peer's port closed, a full buffer) loses one echo, as
            // UDP may; the next datagram is served as usual.
            Ok((n, from)) => {
                let _ = sock.send_to(&buf[..n], from);
            }
            // ICMP errors from an earlier send surface here on Linux; keep serving.
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                tracing::error!(error = %e, "echo socket failed");
                return;
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
