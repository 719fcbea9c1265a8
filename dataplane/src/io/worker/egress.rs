//! The one place where the worker sends what the protocol core asks for, in every
//! direction: datagrams to UDP clients and to peers are queued in the worker's
//! [`Datagrams`] and leave at the next flush; frames for TCP/TLS clients go to their
//! connection's send queue.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};

use super::streams::Streams;
use crate::io::batch::{Datagrams, Received, Via};
use crate::io::relay::RelayOpener;
use crate::metrics::Metrics;
use crate::proto::{ClientKey, ConnId, Destination, Payload, Server, Transmit, Transport};

/// Where the bytes a [`Payload`] refers to are.
#[derive(Clone, Copy)]
pub(super) enum Bytes<'a> {
    /// A pool buffer of [`Datagrams`] (a received datagram, framed in place).
    Pool(usize),
    /// The pool buffer [`Datagrams::input_and_answer`] handed out for an answer.
    Answer,
    /// Bytes outside the pool (a TCP/TLS frame, or an answer to one); copied if they go
    /// out as a datagram.
    Slice(&'a [u8]),
}

/// Sends `t` on its way. `input` holds [`Payload::InPlace`] bytes, `answer` holds
/// [`Payload::Written`] ones; `to_stream` takes frames for TCP/TLS clients.
pub(super) fn emit(
    out: &mut Datagrams,
    metrics: &Metrics,
    t: Transmit,
    input: Bytes<'_>,
    answer: Bytes<'_>,
    to_stream: impl FnOnce(ConnId, &[u8]),
) {
    let (bytes, range) = match t.payload {
        Payload::InPlace(r) => (input, r),
        Payload::Written(r) => (answer, r),
    };
    let (via, dest): (Via, SocketAddr) = match t.destination {
        Destination::Peer { alloc, peer } => (Via::Relay(alloc), peer),
        Destination::Client(ClientKey {
            transport: Transport::Udp,
            listener,
            addr,
        }) => (Via::Listener(listener), addr),
        Destination::Client(ClientKey {
            transport: Transport::Stream(conn),
            ..
        }) => {
            let frame = match bytes {
                Bytes::Pool(b) => out.buf(b).get(range),
                Bytes::Answer => out.next_free().get(range),
                Bytes::Slice(s) => s.get(range),
            };
            if let Some(frame) = frame {
                to_stream(conn, frame);
            }
            return;
        }
    };
    let queued = match bytes {
        Bytes::Pool(b) => {
            out.push(b, range, via, dest);
            true
        }
        Bytes::Answer => {
            out.push_answer(range, via, dest);
            true
        }
        Bytes::Slice(s) => s.get(range).is_some_and(|s| out.push_copy(s, via, dest)),
    };
    if !queued {
        metrics.send_failures.inc();
    }
}

/// A received datagram worth handling: its sender, unless it has none or was cut short
/// (counted as oversized).
pub(super) fn sender(r: &Received, metrics: &Metrics) -> Option<SocketAddr> {
    if r.truncated {
        metrics.oversized.inc();
        return None;
    }
    r.from
}

/// [`emit`] for a datagram received into pool buffer `buf`: in-place payloads are there,
/// answers in the next free buffer, and TCP/TLS clients' frames go to their connection.
pub(super) fn emit_received(
    out: &mut Datagrams,
    streams: &mut Streams,
    metrics: &Metrics,
    t: Transmit,
    buf: usize,
) {
    emit(
        out,
        metrics,
        t,
        Bytes::Pool(buf),
        Bytes::Answer,
        |conn, frame| streams.deliver(conn, frame, metrics),
    );
}

/// Sends everything queued in `out`; each datagram's socket is looked up now, so one whose
/// allocation or listener went away since it was queued is dropped and counted.
pub(super) fn flush(
    out: &mut Datagrams,
    server: &Server<RelayOpener>,
    listeners: &[Option<(SocketAddr, mio::net::UdpSocket)>],
    metrics: &Metrics,
) {
    let fd_of = |via: Via| -> Option<RawFd> {
        match via {
            Via::Listener(i) => listeners
                .get(usize::from(i))
                .and_then(Option::as_ref)
                .map(|(_, s)| s.as_raw_fd()),
            Via::Relay(alloc) => server.relay(alloc).map(|s| s.as_raw_fd()),
        }
    };
    let flushed = out.flush(fd_of);
    if flushed.dropped > 0 {
        metrics.send_failures.inc_by(flushed.dropped as u64);
    }
}
