//! Batched datagram I/O: `recvmmsg`/`sendmmsg` on Linux, one datagram per call elsewhere.
//!
//! This is the only module of the dataplane that needs `unsafe`: the batch calls take raw
//! `mmsghdr` arrays whose pointers are rebuilt right before each call, so nothing here is
//! self-referential across calls.
#![allow(unsafe_code)]

use std::io;
use std::mem::{MaybeUninit, size_of};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;

/// Datagrams per batch call.
pub const BATCH: usize = 32;
/// Room for one datagram; jumbo frames fit. Larger datagrams are truncated and dropped.
pub const BUF_LEN: usize = 9216;

fn to_storage(addr: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain old data; all-zero is a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { MaybeUninit::zeroed().assume_init() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { std::ptr::write(&mut storage as *mut _ as *mut libc::sockaddr_in, sin) };
            size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe { std::ptr::write(&mut storage as *mut _ as *mut libc::sockaddr_in6, sin6) };
            size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

fn from_storage(s: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match s.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the kernel wrote a sockaddr_in when the family says AF_INET.
            let a = unsafe { &*(s as *const _ as *const libc::sockaddr_in) };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(a.sin_addr.s_addr.to_ne_bytes()),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the kernel wrote a sockaddr_in6 when the family says AF_INET6.
            let a = unsafe { &*(s as *const _ as *const libc::sockaddr_in6) };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// What one receive call reported for a datagram: length, sender, and whether the kernel
/// cut it short because the buffer was too small.
type Received = (usize, Option<SocketAddr>, bool);

/// One `recvmmsg` into the buffers `bufs` yields (pointer and length), at most [`BATCH`].
///
/// # Safety
/// Every pointer must be valid for writes of its length for the duration of the call and
/// the buffers must not overlap.
unsafe fn recv_batch(
    fd: RawFd,
    bufs: impl Iterator<Item = (*mut u8, usize)>,
    meta: &mut [Received; BATCH],
) -> io::Result<usize> {
    // SAFETY: all-zero sockaddr_storage is valid.
    let zero: libc::sockaddr_storage = unsafe { MaybeUninit::zeroed().assume_init() };
    let mut addrs = [zero; BATCH];
    let mut iovs: [MaybeUninit<libc::iovec>; BATCH] = [MaybeUninit::uninit(); BATCH];
    // SAFETY: mmsghdr is plain old data; all-zero is valid.
    let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { MaybeUninit::zeroed().assume_init() };
    let mut count = 0;
    for (k, (ptr, len)) in bufs.take(BATCH).enumerate() {
        iovs[k].write(libc::iovec {
            iov_base: ptr as *mut libc::c_void,
            iov_len: len,
        });
        hdrs[k].msg_hdr.msg_name = &mut addrs[k] as *mut _ as *mut libc::c_void;
        hdrs[k].msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        hdrs[k].msg_hdr.msg_iov = iovs[k].as_mut_ptr();
        hdrs[k].msg_hdr.msg_iovlen = 1;
        count = k + 1;
    }
    if count == 0 {
        return Ok(0);
    }
    // SAFETY: headers [0, count) point at the caller's live buffers and at `addrs`, all of
    // which outlive the call.
    let n = unsafe {
        libc::recvmmsg(
            fd,
            hdrs.as_mut_ptr(),
            count as libc::c_uint,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = n as usize;
    for k in 0..n {
        meta[k] = (
            hdrs[k].msg_len as usize,
            from_storage(&addrs[k]),
            hdrs[k].msg_hdr.msg_flags & libc::MSG_TRUNC != 0,
        );
    }
    Ok(n)
}

/// A set of receive buffers filled by one `recvmmsg`.
pub struct RecvBatch {
    bufs: Box<[[u8; BUF_LEN]]>,
    meta: [Received; BATCH],
    count: usize,
}

impl Default for RecvBatch {
    fn default() -> Self {
        Self::new()
    }
}

impl RecvBatch {
    pub fn new() -> Self {
        RecvBatch {
            bufs: vec![[0u8; BUF_LEN]; BATCH].into_boxed_slice(),
            meta: [(0, None, false); BATCH],
            count: 0,
        }
    }

    /// Receives up to [`BATCH`] datagrams. An empty socket gives `WouldBlock`.
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        let bufs = self.bufs.iter_mut().map(|b| (b.as_mut_ptr(), BUF_LEN));
        // SAFETY: each buffer is a distinct, live array of BUF_LEN bytes owned by self.
        let n = unsafe { recv_batch(fd, bufs, &mut self.meta) }?;
        self.count = n;
        Ok(n)
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Datagram `i`: its bytes, sender, and whether it was cut short.
    pub fn get(&self, i: usize) -> Option<(&[u8], SocketAddr, bool)> {
        if i >= self.count {
            return None;
        }
        let (len, from, truncated) = self.meta[i];
        Some((&self.bufs[i][..len.min(BUF_LEN)], from?, truncated))
    }
}

/// Outgoing datagrams gathered for one `sendmmsg` per socket. Buffers are handed out in
/// order; an entry refers to the buffer it leaves from, so a buffer that was filled but
/// then dropped (no permission, say) simply stays unused until the next flush.
pub struct SendBatch {
    bufs: Box<[[u8; BUF_LEN]]>,
    /// Buffers handed out since the last flush.
    used: usize,
    /// Entry → buffer index and byte range in it.
    slots: [u8; BATCH],
    ranges: [(u16, u16); BATCH],
    dests: Box<[libc::sockaddr_storage]>,
    dest_lens: [libc::socklen_t; BATCH],
    /// Which socket each datagram leaves from (a listener index of the worker).
    sockets: [u16; BATCH],
    count: usize,
    /// What [`SendBatch::recv_into`] received: (length, sender, truncated).
    received: [Received; BATCH],
}

impl Default for SendBatch {
    fn default() -> Self {
        Self::new()
    }
}

/// What a flush achieved.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Flushed {
    pub sent: usize,
    /// Dropped because the socket buffer was full or the send failed.
    pub dropped: usize,
}

impl SendBatch {
    pub fn new() -> Self {
        // SAFETY: all-zero sockaddr_storage is valid.
        let zero: libc::sockaddr_storage = unsafe { MaybeUninit::zeroed().assume_init() };
        SendBatch {
            bufs: vec![[0u8; BUF_LEN]; BATCH].into_boxed_slice(),
            used: 0,
            slots: [0; BATCH],
            ranges: [(0, 0); BATCH],
            dests: vec![zero; BATCH].into_boxed_slice(),
            dest_lens: [0; BATCH],
            sockets: [0; BATCH],
            count: 0,
            received: [(0, None, false); BATCH],
        }
    }

    /// Buffers still free before a flush is needed.
    pub fn free(&self) -> usize {
        BATCH - self.used
    }

    pub fn is_full(&self) -> bool {
        self.used == BATCH
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The next free buffer, to be filled in place and then committed with [`Self::push`].
    pub fn slot(&mut self) -> &mut [u8; BUF_LEN] {
        let i = self.used.min(BATCH - 1);
        &mut self.bufs[i]
    }

    fn entry(&mut self, buf: usize, socket: u16, range: std::ops::Range<usize>, dest: SocketAddr) {
        if self.count == BATCH || buf >= BATCH || range.end > BUF_LEN {
            return;
        }
        let i = self.count;
        self.slots[i] = buf as u8;
        self.ranges[i] = (range.start as u16, range.end as u16);
        let (s, l) = to_storage(&dest);
        self.dests[i] = s;
        self.dest_lens[i] = l;
        self.sockets[i] = socket;
        self.count += 1;
    }

    /// Commits `slot()[range]` for `dest` through socket `socket`. The caller flushes first
    /// when the batch is full.
    pub fn push(&mut self, socket: u16, range: std::ops::Range<usize>, dest: SocketAddr) {
        if self.used == BATCH {
            return;
        }
        self.entry(self.used, socket, range, dest);
        self.used += 1;
    }

    /// Receives up to `max` datagrams from `fd` straight into the next free buffers, each
    /// at `offset` with room up to `end`, so they can be framed in place and sent on. One
    /// call with `max > 1` also tells whether the queue is drained (fewer than `max`), which
    /// saves the extra `EAGAIN` receive a single-datagram loop needs.
    pub fn recv_into(
        &mut self,
        fd: RawFd,
        max: usize,
        offset: usize,
        end: usize,
    ) -> io::Result<usize> {
        let max = max.min(self.free());
        if max == 0 || offset >= end || end > BUF_LEN {
            return Ok(0);
        }
        let bufs = self.bufs[self.used..self.used + max]
            .iter_mut()
            .map(|b| (b[offset..].as_mut_ptr(), end - offset));
        // SAFETY: each range [offset, end) lies inside a distinct, live buffer owned by self.
        unsafe { recv_batch(fd, bufs, &mut self.received) }
    }

    /// Datagram `k` of the last [`Self::recv_into`]: its buffer, length, sender, truncation.
    pub fn received(&mut self, k: usize) -> (&mut [u8; BUF_LEN], usize, Option<SocketAddr>, bool) {
        let (len, from, truncated) = self.received[k.min(BATCH - 1)];
        let i = (self.used + k).min(BATCH - 1);
        (&mut self.bufs[i], len, from, truncated)
    }

    /// Queues received datagram `k`, now framed as `range` of its buffer, for `dest`.
    pub fn push_received(
        &mut self,
        k: usize,
        socket: u16,
        range: std::ops::Range<usize>,
        dest: SocketAddr,
    ) {
        self.entry(self.used + k, socket, range, dest);
    }

    /// Marks the `n` buffers of the last [`Self::recv_into`] as used.
    pub fn commit_received(&mut self, n: usize) {
        self.used = (self.used + n).min(BATCH);
    }

    /// Sends everything, one `sendmmsg` per run of datagrams leaving from the same socket.
    pub fn flush(&mut self, fd_of: impl Fn(u16) -> Option<RawFd>) -> Flushed {
        let mut result = Flushed::default();
        let mut start = 0;
        while start < self.count {
            let sock = self.sockets[start];
            let mut end = start + 1;
            while end < self.count && self.sockets[end] == sock {
                end += 1;
            }
            match fd_of(sock) {
                Some(fd) => {
                    let sent = self.send_run(fd, start, end);
                    result.sent += sent;
                    result.dropped += end - start - sent;
                }
                None => result.dropped += end - start,
            }
            start = end;
        }
        self.count = 0;
        self.used = 0;
        result
    }

    fn send_run(&mut self, fd: RawFd, start: usize, end: usize) -> usize {
        let n = end - start;
        let mut iovs: [MaybeUninit<libc::iovec>; BATCH] = [MaybeUninit::uninit(); BATCH];
        // SAFETY: mmsghdr is plain old data; all-zero is valid.
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { MaybeUninit::zeroed().assume_init() };
        for k in 0..n {
            let i = start + k;
            let (a, b) = self.ranges[i];
            let buf = self.slots[i] as usize;
            iovs[k].write(libc::iovec {
                iov_base: self.bufs[buf][a as usize..].as_mut_ptr() as *mut libc::c_void,
                iov_len: (b - a) as usize,
            });
            hdrs[k].msg_hdr.msg_name = &mut self.dests[i] as *mut _ as *mut libc::c_void;
            hdrs[k].msg_hdr.msg_namelen = self.dest_lens[i];
            hdrs[k].msg_hdr.msg_iov = iovs[k].as_mut_ptr();
            hdrs[k].msg_hdr.msg_iovlen = 1;
        }
        let mut done = 0;
        let mut lost = 0;
        while done < n {
            // SAFETY: headers [done, n) point at live buffers and addresses of this batch.
            let r = unsafe {
                libc::sendmmsg(
                    fd,
                    hdrs[done..].as_mut_ptr(),
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

/// Sends one datagram without blocking; a full buffer loses it, as UDP may.
pub fn send_to(fd: RawFd, data: &[u8], dest: &SocketAddr) -> io::Result<usize> {
    let (storage, len) = to_storage(dest);
    // SAFETY: `data` and `storage` are live for the call.
    let r = unsafe {
        libc::sendto(
            fd,
            data.as_ptr() as *const libc::c_void,
            data.len(),
            libc::MSG_DONTWAIT,
            &storage as *const _ as *const libc::sockaddr,
            len,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

/// Receives one datagram into `buf`; returns its length, sender and whether it was cut.
pub fn recv_from(fd: RawFd, buf: &mut [u8]) -> io::Result<(usize, SocketAddr, bool)> {
    // SAFETY: all-zero sockaddr_storage is valid.
    let mut storage: libc::sockaddr_storage = unsafe { MaybeUninit::zeroed().assume_init() };
    let mut len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `buf` and `storage` are live and sized as passed.
    let r = unsafe {
        libc::recvfrom(
            fd,
            buf.as_mut_ptr() as *mut libc::c_void,
            buf.len(),
            libc::MSG_DONTWAIT | libc::MSG_TRUNC,
            &mut storage as *mut _ as *mut libc::sockaddr,
            &mut len,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    let from = from_storage(&storage)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unknown address family"))?;
    let r = r as usize;
    Ok((r.min(buf.len()), from, r > buf.len()))
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
