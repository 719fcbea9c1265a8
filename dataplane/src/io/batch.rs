//! Batched datagram I/O: `recvmmsg`/`sendmmsg` over one pool of packet buffers.
//!
//! Every datagram the worker relays or answers passes through [`Datagrams`]: it is received
//! into a pool buffer, framed or answered in place (answers go into the next free buffer),
//! queued with [`Datagrams::push`], and sent by [`Datagrams::flush`], one `sendmmsg` per
//! run of datagrams leaving from the same socket (`sendto` for a run of one). Client → peer
//! and peer → client take the same path.
//!
//! This is the only module of the dataplane that needs `unsafe`: the batch calls take raw
//! `mmsghdr` arrays whose pointers are rebuilt right before each call, so nothing here is
//! self-referential across calls.
#![allow(unsafe_code)]

use std::io;
use std::mem::{MaybeUninit, size_of};
use std::net::SocketAddr;
use std::ops::Range;
use std::os::fd::RawFd;

use std::time::Instant;

use socket2::{SockAddr, SockAddrStorage};
use turnpike_contract::histogram::{LATENCY_NS, Tally};

use crate::proto::AllocId;

/// Datagrams per receive call, and the pool holds twice as many buffers: each received
/// client datagram may need a second buffer for its answer.
pub const BATCH: usize = 32;
const POOL: usize = 2 * BATCH;
/// Room for one datagram; jumbo frames fit. Larger datagrams are truncated and dropped.
pub const BUF_LEN: usize = 9216;

/// The socket a queued datagram leaves from, resolved to a descriptor only at flush time:
/// an allocation that ended in between (its [`AllocId`] no longer live) loses the datagram
/// instead of sending it from whatever socket took over the descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// The worker's UDP socket of a listener (by index in the config).
    Listener(u16),
    /// An allocation's relay socket.
    Relay(AllocId),
}

/// One datagram a receive call brought: which pool buffer, its length, the sender, and
/// whether the kernel cut it short because the buffer was too small.
#[derive(Debug, Clone, Copy)]
pub struct Received {
    pub buf: usize,
    pub len: usize,
    pub from: Option<SocketAddr>,
    pub truncated: bool,
}

/// A datagram queued for the next flush.
struct Queued {
    buf: u8,
    range: (u16, u16),
    via: Via,
    /// Relayed data (not an answer of the server's own): its latency is recorded.
    relayed: bool,
    dest: SockAddr,
}

/// How long relayed datagrams took from the worker's wake-up to the return of the send
/// call that carried them, by direction. Everything a poll turn receives was queued in the
/// kernel when the turn began (the queue is flushed at every turn's end), so the turn's
/// start stands in for each datagram's arrival without a clock read per datagram: one read
/// per flush. Time spent in the socket's receive queue before the wake-up is not included.
#[derive(Debug, Clone)]
pub struct RelayLatency {
    turn_started: Instant,
    pub to_peer: Tally,
    pub to_client: Tally,
}

impl RelayLatency {
    fn new() -> Self {
        RelayLatency {
            turn_started: Instant::now(),
            to_peer: Tally::new(LATENCY_NS),
            to_client: Tally::new(LATENCY_NS),
        }
    }
}

/// One message of a batch call: a single buffer and an address. Only the entries a call
/// uses are built, so a short batch (a relay socket's one datagram) does not pay for
/// zeroing a whole array of headers.
fn message(
    name: *mut libc::c_void,
    namelen: libc::socklen_t,
    iov: *mut libc::iovec,
) -> libc::mmsghdr {
    // SAFETY: mmsghdr is plain old data; all-zero is valid (no control data, no flags).
    let mut h: libc::mmsghdr = unsafe { MaybeUninit::zeroed().assume_init() };
    h.msg_hdr.msg_name = name;
    h.msg_hdr.msg_namelen = namelen;
    h.msg_hdr.msg_iov = iov;
    h.msg_hdr.msg_iovlen = 1;
    h
}

/// What a flush achieved.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Flushed {
    pub sent: usize,
    /// Dropped because the socket buffer was full, the send failed or the socket is gone.
    pub dropped: usize,
}

/// The worker's packet buffers and its queue of datagrams to send.
pub struct Datagrams {
    bufs: Box<[[u8; BUF_LEN]]>,
    /// Buffers handed out since the last flush (received into or written by an answer); a
    /// buffer whose datagram was dropped simply stays unused until the flush.
    used: usize,
    queue: Vec<Queued>,
    received: Vec<Received>,
    /// Sender addresses of the current receive call.
    addrs: Box<[SockAddrStorage]>,
    pub latency: RelayLatency,
}

impl Default for Datagrams {
    fn default() -> Self {
        Self::new()
    }
}

impl Datagrams {
    pub fn new() -> Self {
        Datagrams {
            bufs: vec![[0u8; BUF_LEN]; POOL].into_boxed_slice(),
            used: 0,
            queue: Vec::with_capacity(POOL),
            received: Vec::with_capacity(BATCH),
            addrs: (0..BATCH).map(|_| SockAddrStorage::zeroed()).collect(),
            latency: RelayLatency::new(),
        }
    }

    /// A poll turn begins at `now`: what it receives arrived by then.
    pub fn start_turn(&mut self, now: Instant) {
        self.latency.turn_started = now;
    }

    /// Buffers still free before a flush is needed.
    pub fn free(&self) -> usize {
        POOL - self.used
    }

    /// Receives up to `max` datagrams from `fd` into the next free buffers, each at
    /// `offset` with room up to `end` (so a relayed datagram can be framed in place), and
    /// returns what arrived. The buffers count as used until the next flush. One call with
    /// `max > 1` also tells whether the queue is drained (fewer than `max`), which saves the
    /// extra `EAGAIN` receive a single-datagram loop needs.
    pub fn recv(&mut self, fd: RawFd, max: usize, offset: usize, end: usize) -> io::Result<usize> {
        self.received.clear();
        let max = max.min(self.free()).min(BATCH);
        if max == 0 || offset >= end || end > BUF_LEN {
            return Ok(0);
        }
        let first = self.used;
        let mut iovs: [MaybeUninit<libc::iovec>; BATCH] = [MaybeUninit::uninit(); BATCH];
        let mut hdrs: [MaybeUninit<libc::mmsghdr>; BATCH] = [MaybeUninit::uninit(); BATCH];
        for k in 0..max {
            let buf = &mut self.bufs[first + k][offset..end];
            let iov = iovs[k].write(libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            });
            let name = &mut self.addrs[k];
            let namelen = name.size_of();
            hdrs[k].write(message((name as *mut SockAddrStorage).cast(), namelen, iov));
        }
        // SAFETY: headers [0, max) are initialized and point at distinct live ranges of
        // distinct pool buffers and at distinct address storages, all owned by self and
        // outliving the call.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                hdrs.as_mut_ptr().cast::<libc::mmsghdr>(),
                max as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        for (k, hdr) in hdrs.iter().enumerate().take(n as usize) {
            // SAFETY: entries [0, max) were written above and n <= max.
            let hdr = unsafe { hdr.assume_init_ref() };
            let storage = std::mem::replace(&mut self.addrs[k], SockAddrStorage::zeroed());
            // SAFETY: the kernel wrote a socket address of its family and set the length.
            let from = unsafe { SockAddr::new(storage, hdr.msg_hdr.msg_namelen) }.as_socket();
            self.received.push(Received {
                buf: first + k,
                len: hdr.msg_len as usize,
                from,
                truncated: hdr.msg_hdr.msg_flags & libc::MSG_TRUNC != 0,
            });
        }
        self.used += n as usize;
        Ok(n as usize)
    }

    /// What the last [`Self::recv`] brought.
    pub fn received(&self, k: usize) -> Option<Received> {
        self.received.get(k).copied()
    }

    /// Buffer `buf`, to read a received datagram or frame one in place.
    pub fn buf_mut(&mut self, buf: usize) -> &mut [u8; BUF_LEN] {
        &mut self.bufs[buf.min(POOL - 1)]
    }

    pub fn buf(&self, buf: usize) -> &[u8; BUF_LEN] {
        &self.bufs[buf.min(POOL - 1)]
    }

    /// The buffer [`Self::input_and_answer`] hands out next, to read an answer written
    /// there without queueing it as a datagram.
    pub fn next_free(&self) -> &[u8; BUF_LEN] {
        self.buf(self.used)
    }

    /// A received datagram (`input`, read-only) beside the next free buffer for its answer;
    /// an answer is kept with [`Self::push_answer`]. `None` when the pool is full.
    pub fn input_and_answer(&mut self, input: usize) -> Option<(&[u8], &mut [u8])> {
        if self.used >= POOL || input >= self.used {
            return None;
        }
        let (inputs, free) = self.bufs.split_at_mut(self.used);
        Some((&inputs[input][..], &mut free[0][..]))
    }

    /// Queues `range` of the answer written into the buffer [`Self::input_and_answer`]
    /// handed out, and marks that buffer used.
    pub fn push_answer(&mut self, range: Range<usize>, via: Via, dest: SocketAddr) {
        if self.used < POOL {
            self.used += 1;
            self.queue_buf(self.used - 1, range, via, dest, false);
        }
    }

    /// Copies `bytes` (relayed data from a TCP/TLS client) into a free buffer and queues
    /// them; `false` when the pool is full or the datagram too large (the caller flushes
    /// first when [`Self::free`] is 0).
    pub fn push_copy(&mut self, bytes: &[u8], via: Via, dest: SocketAddr) -> bool {
        if self.used >= POOL || bytes.len() > BUF_LEN {
            return false;
        }
        self.bufs[self.used][..bytes.len()].copy_from_slice(bytes);
        self.used += 1;
        self.queue_buf(self.used - 1, 0..bytes.len(), via, dest, true);
        true
    }

    /// Queues `bufs[buf][range]`, relayed data framed in place where it was received, for
    /// `dest`, leaving through `via`.
    pub fn push(&mut self, buf: usize, range: Range<usize>, via: Via, dest: SocketAddr) {
        self.queue_buf(buf, range, via, dest, true);
    }

    fn queue_buf(
        &mut self,
        buf: usize,
        range: Range<usize>,
        via: Via,
        dest: SocketAddr,
        relayed: bool,
    ) {
        if buf >= self.used || range.start > range.end || range.end > BUF_LEN {
            return;
        }
        self.queue.push(Queued {
            buf: buf as u8,
            range: (range.start as u16, range.end as u16),
            via,
            relayed,
            dest: dest.into(),
        });
    }

    /// Sends everything queued, one `sendmmsg` per run of datagrams leaving from the same
    /// socket, and frees every buffer.
    pub fn flush(&mut self, fd_of: impl Fn(Via) -> Option<RawFd>) -> Flushed {
        let mut result = Flushed::default();
        let mut start = 0;
        while start < self.queue.len() {
            let via = self.queue[start].via;
            let end = self.queue[start..]
                .iter()
                .position(|q| q.via != via)
                .map_or(self.queue.len(), |n| start + n);
            match fd_of(via) {
                // A lone datagram (a relay socket's, usually) goes out with sendto: the
                // kernel's sendmmsg path costs more per message than sendto's.
                Some(fd) if end - start == 1 => {
                    let sent = usize::from(self.send_one(fd, start));
                    result.sent += sent;
                    result.dropped += 1 - sent;
                }
                Some(fd) => {
                    let sent = self.send_run(fd, start, end);
                    result.sent += sent;
                    result.dropped += end - start - sent;
                }
                None => result.dropped += end - start,
            }
            start = end;
        }
        self.record_latency();
        self.queue.clear();
        self.used = 0;
        result
    }

    /// Records the latency of the relayed datagrams in the queue (just sent).
    fn record_latency(&mut self) {
        let (mut to_peer, mut to_client) = (0, 0);
        for q in self.queue.iter().filter(|q| q.relayed) {
            match q.via {
                Via::Relay(_) => to_peer += 1,
                Via::Listener(_) => to_client += 1,
            }
        }
        if to_peer + to_client == 0 {
            return;
        }
        let l = &mut self.latency;
        let ns = u64::try_from(l.turn_started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        if to_peer > 0 {
            l.to_peer.record(ns, to_peer);
        }
        if to_client > 0 {
            l.to_client.record(ns, to_client);
        }
    }

    /// `sendto` of queue entry `i`; whether it left.
    fn send_one(&self, fd: RawFd, i: usize) -> bool {
        let q = &self.queue[i];
        let bytes = &self.bufs[q.buf as usize][q.range.0 as usize..q.range.1 as usize];
        loop {
            // SAFETY: `bytes` and `q.dest` are live for the call and sized as passed.
            let r = unsafe {
                libc::sendto(
                    fd,
                    bytes.as_ptr().cast(),
                    bytes.len(),
                    libc::MSG_DONTWAIT,
                    q.dest.as_ptr().cast(),
                    q.dest.len(),
                )
            };
            if r >= 0 {
                return true;
            }
            if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                // A full socket buffer or an ICMP-induced error: UDP may lose it.
                return false;
            }
        }
    }

    /// `sendmmsg` of queue entries `[start, end)` (at most [`POOL`]) on `fd`; returns how
    /// many left.
    fn send_run(&mut self, fd: RawFd, start: usize, end: usize) -> usize {
        let n = end - start;
        let mut iovs: [MaybeUninit<libc::iovec>; POOL] = [MaybeUninit::uninit(); POOL];
        let mut hdrs: [MaybeUninit<libc::mmsghdr>; POOL] = [MaybeUninit::uninit(); POOL];
        let Datagrams { bufs, queue, .. } = self;
        for (k, q) in queue[start..end].iter().enumerate() {
            let bytes = &bufs[q.buf as usize][q.range.0 as usize..q.range.1 as usize];
            let iov = iovs[k].write(libc::iovec {
                // sendmmsg only reads the payload.
                iov_base: bytes.as_ptr() as *mut libc::c_void,
                iov_len: bytes.len(),
            });
            // sendmmsg only reads the destination address.
            let name = q.dest.as_ptr() as *mut libc::c_void;
            hdrs[k].write(message(name, q.dest.len(), iov));
        }
        let mut done = 0;
        let mut lost = 0;
        while done < n {
            // SAFETY: headers [done, n) are initialized and point at live buffers and
            // addresses of the queue, which is not touched until the call returns.
            let r = unsafe {
                libc::sendmmsg(
                    fd,
                    hdrs[done..].as_mut_ptr().cast::<libc::mmsghdr>(),
                    (n - done) as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            if r <= 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                // A full socket buffer or an ICMP-induced error on the first datagram:
                // skip that one datagram (UDP may lose it) and carry on with the rest.
                done += 1;
                lost += 1;
                continue;
            }
            done += r as usize;
        }
        n - lost
    }
}

/// Sets the Don't Fragment behaviour an Allocate with DONT-FRAGMENT asks for.
pub fn set_dont_fragment(fd: RawFd, ipv6: bool) -> io::Result<()> {
    let (level, name, value) = if ipv6 {
        (libc::IPPROTO_IPV6, libc::IPV6_DONTFRAG, 1 as libc::c_int)
    } else {
        (
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            libc::IP_PMTUDISC_DO,
        )
    };
    // SAFETY: `value` is a live c_int of the size passed.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            &value as *const _ as *const libc::c_void,
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}
