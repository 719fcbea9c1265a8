//! The `relay` and `hold` modes: one thread drives many allocations through setup, a paced
//! (or flat-out) load of timestamped packets to the echo peer and back, a drain, and
//! deletion.
//!
//! Pacing without a timer per allocation: every allocation of a thread sends at the same
//! interval, phases spread evenly, so the k-th send of the thread is due at
//! `start + k · interval / n` and belongs to allocation `k mod n`. One counter schedules
//! them all.

use std::sync::Barrier;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use mio::{Events, Poll, Token};
use turnpike_dataplane::io::batch::{Datagrams, Via};
use turnpike_dataplane::proto::message::{self, method};
use turnpike_dataplane::proto::{Class, Message, MessageBuilder, attr, channel};

use super::link::Link;
use super::packet::{self, Window};
use super::report::{Tally, thread_cpu};
use super::session::{Bind, Outcome, Session, State, Step};
use super::{Live, Plan};

/// Setups in flight per thread: a thousand Allocates at once would overflow the server's
/// socket buffer and measure retransmission timers instead of the server.
const SETUP_WINDOW: usize = 128;
/// How long setup and deletion may take before the stragglers count as failed.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);
const DELETE_TIMEOUT: Duration = Duration::from_secs(3);

struct Flow {
    link: Link,
    session: Session,
    /// Index of the flow across all threads (carried in every packet).
    id: u32,
    next_seq: u64,
    window: Window,
    /// Its connection failed or was closed: it sends nothing more.
    dead: bool,
}

struct Worker<'a> {
    plan: &'a Plan,
    live: &'a Live,
    poll: Poll,
    flows: Vec<Flow>,
    tally: Tally,
    tx: Datagrams,
    rx: Datagrams,
    frame: Vec<u8>,
    /// Counters already published to `live`.
    published: (u64, u64),
}

/// Runs flows `first .. first + count` on this thread; returns what it measured and the
/// length of the load window.
pub fn run(
    plan: &Plan,
    live: &Live,
    first: usize,
    count: usize,
    barrier: &Barrier,
) -> std::io::Result<(Tally, Duration)> {
    let poll = Poll::new()?;
    let mut w = Worker {
        plan,
        live,
        poll,
        flows: Vec::with_capacity(count),
        tally: Tally::default(),
        tx: Datagrams::new(),
        rx: Datagrams::new(),
        frame: vec![0u8; plan.size + 64],
        published: (0, 0),
    };
    let setup = w.setup(first, count);
    // Every thread waits for the others, so the load starts with every allocation ready
    // whatever happened here.
    barrier.wait();
    setup?;
    let window = if plan.hold {
        w.hold()?
    } else {
        let t = w.load()?;
        w.drain()?;
        t
    };
    w.delete()?;
    w.publish();
    w.tally.cpu = thread_cpu();
    Ok((w.tally, window))
}

impl Worker<'_> {
    fn setup(&mut self, first: usize, count: usize) -> std::io::Result<()> {
        let plan = self.plan;
        let now = Instant::now();
        // Direct: the peer is the other end, and nothing needs setting up.
        let to = if plan.direct { plan.peer } else { plan.server };
        for i in 0..count {
            let id = (first + i) as u32;
            let link = Link::open(
                plan.transport,
                to,
                plan.source(id),
                plan.tls.as_ref(),
                self.poll.registry(),
                Token(i),
            )?;
            let (username, password) = plan.credentials.for_flow(id);
            let session = Session::new(
                username,
                password,
                plan.bind,
                plan.peer,
                plan.lifetime,
                link.is_stream(),
                now,
            );
            self.flows.push(Flow {
                link,
                session,
                id,
                next_seq: 0,
                window: Window::default(),
                dead: false,
            });
        }
        if plan.direct {
            for f in &mut self.flows {
                f.session.state = State::Ready;
            }
            self.tally.allocations = self.flows.len() as u64;
            self.live
                .ready
                .fetch_add(self.tally.allocations, Ordering::Relaxed);
            return Ok(());
        }
        let mut now = now;
        if plan.hold
            && let Some(mark) = &plan.mark
        {
            // The kernel memory of the client sockets is on the books before any
            // allocation, so what grows from here on is the server's.
            mark.reached("open");
            std::thread::sleep(Duration::from_secs(1));
            now = Instant::now();
        }
        let mut next = 0;
        let deadline = now + SETUP_TIMEOUT;
        let mut events = Events::with_capacity(1024);
        loop {
            let now = Instant::now();
            let mut busy = self.in_flight();
            while next < self.flows.len() && busy < SETUP_WINDOW {
                self.begin(next, Step::Allocate, now);
                next += 1;
                busy += 1;
            }
            if self.settled() == self.flows.len() || now >= deadline {
                break;
            }
            self.turn(&mut events, Some(Duration::from_millis(5)))?;
            self.timers(Instant::now());
        }
        for f in &mut self.flows {
            match f.session.state {
                State::Ready => {
                    self.tally.allocations += 1;
                    if let Some(t) = f.session.ready_after {
                        self.tally.setup(t);
                    }
                }
                State::Failed(step, code) => self.tally.error(step.name(), code),
                State::Waiting(step) => self.tally.error(step.name(), 0),
                State::Closed => {}
            }
            self.tally.retransmissions += u64::from(f.session.retransmissions);
        }
        self.live
            .ready
            .fetch_add(self.tally.allocations, Ordering::Relaxed);
        Ok(())
    }

    /// Sessions that reached an end (ready, failed) or never started.
    fn settled(&self) -> usize {
        self.flows
            .iter()
            .filter(|f| {
                matches!(
                    f.session.state,
                    State::Ready | State::Failed(..) | State::Closed
                )
            })
            .count()
    }

    fn in_flight(&self) -> usize {
        self.flows
            .iter()
            .filter(|f| f.session.deadline().is_some())
            .count()
    }

    fn begin(&mut self, i: usize, step: Step, now: Instant) {
        let f = &mut self.flows[i];
        if f.dead {
            return;
        }
        let request = f.session.begin(step, now);
        // A stream that cannot take the request fails this session only; the poll
        // reports the connection's error.
        if let Err(e) = f.link.send(request) {
            f.session.state = State::Failed(step, 0);
            *self
                .tally
                .errors
                .entry(format!("connection: {e}"))
                .or_default() += 1;
            f.dead = true;
            f.link.close(self.poll.registry());
        }
    }

    /// Retransmits what is due; counts a session that ran out of tries as failed.
    fn timers(&mut self, now: Instant) {
        for f in &mut self.flows {
            if f.session.deadline().is_some_and(|d| d <= now) && f.session.on_timer(now) {
                // Only UDP retransmits, and a UDP send error loses just this datagram.
                let _ = f.link.send(f.session.request());
            }
        }
    }

    /// One poll: reads whatever arrived and hands it on.
    fn turn(&mut self, events: &mut Events, timeout: Option<Duration>) -> std::io::Result<()> {
        self.poll.poll(events, timeout)?;
        let now = Instant::now();
        for ev in events.iter() {
            let i = ev.token().0;
            let Some(f) = self.flows.get_mut(i) else {
                continue;
            };
            let Worker {
                rx, tally, plan, ..
            } = self;
            let result = serve(f, ev, rx, tally, plan, now);
            let reason = match result {
                Ok(true) => continue,
                Ok(false) => "closed by the server".to_string(),
                Err(e) => e.to_string(),
            };
            // Whatever was in flight on this connection is lost; the flow sends no more.
            if let State::Waiting(step) = f.session.state {
                f.session.state = State::Failed(step, 0);
            }
            if !f.dead {
                f.dead = true;
                *tally
                    .errors
                    .entry(format!("connection: {reason}"))
                    .or_default() += 1;
                f.link.close(self.poll.registry());
            }
        }
        Ok(())
    }

    fn load(&mut self) -> std::io::Result<Duration> {
        let plan = self.plan;
        let ready: Vec<usize> = (0..self.flows.len())
            .filter(|&i| self.flows[i].session.state == State::Ready)
            .collect();
        let start = Instant::now();
        let end = start + plan.duration;
        if ready.is_empty() {
            return Ok(Duration::ZERO);
        }
        let mut events = Events::with_capacity(1024);
        let step = plan.interval.map(|iv| iv / ready.len() as u32);
        let mut k: u64 = 0;
        let limit = plan
            .packets
            .map(|p| p.div_ceil(plan.burst as u64) * ready.len() as u64);
        loop {
            let now = Instant::now();
            if now >= end || limit.is_some_and(|l| k >= l) {
                break;
            }
            // Everything due now, up to one round of allocations per turn so receiving
            // keeps up when the loader falls behind its schedule.
            let mut sent_this_turn = 0;
            while sent_this_turn < ready.len() && limit.is_none_or(|l| k < l) {
                if let Some(step) = step
                    && start + step * (k as u32) > now
                {
                    break;
                }
                let i = ready[(k % ready.len() as u64) as usize];
                self.send_burst(i, now)?;
                k += 1;
                sent_this_turn += 1;
            }
            self.flush_datagrams();
            let wait = match step {
                Some(step) => (start + step * (k as u32)).saturating_duration_since(Instant::now()),
                None => Duration::ZERO,
            };
            self.turn(
                &mut events,
                Some(wait.min(end.saturating_duration_since(Instant::now()))),
            )?;
            self.publish();
        }
        Ok(start.elapsed())
    }

    fn send_burst(&mut self, i: usize, now: Instant) -> std::io::Result<()> {
        let plan = self.plan;
        let sent_at = now.saturating_duration_since(plan.epoch).as_nanos() as u64;
        for _ in 0..plan.burst {
            let f = &mut self.flows[i];
            if f.dead {
                return Ok(());
            }
            let len = write_packet(&mut self.frame, plan, f, sent_at);
            f.next_seq += 1;
            self.tally.sent += 1;
            if f.link.is_stream() {
                if let Err(e) = f.link.send(&self.frame[..len]) {
                    f.dead = true;
                    f.link.close(self.poll.registry());
                    *self
                        .tally
                        .errors
                        .entry(format!("connection: {e}"))
                        .or_default() += 1;
                }
                continue;
            }
            if self.tx.free() == 0 {
                self.flush_datagrams();
            }
            // `Via::Listener` names the flow here: the pool only needs a key per socket.
            let to = if plan.direct { plan.peer } else { plan.server };
            self.tx
                .push_copy(&self.frame[..len], Via::Listener(i as u16), to);
        }
        Ok(())
    }

    /// Sends the queued datagrams, one `sendmmsg` per run on the same socket (a burst).
    fn flush_datagrams(&mut self) {
        let flows = &self.flows;
        let flushed = self.tx.flush(|via| match via {
            Via::Listener(i) => flows.get(usize::from(i)).and_then(|f| f.link.udp_fd()),
            Via::Relay(_) => None,
        });
        self.tally.send_dropped += flushed.dropped as u64;
    }

    /// After the load: waits for the echoes still on their way.
    fn drain(&mut self) -> std::io::Result<()> {
        let end = Instant::now() + self.plan.drain;
        let mut events = Events::with_capacity(1024);
        while self.tally.received < self.tally.sent {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            self.turn(&mut events, Some(left.min(Duration::from_millis(10))))?;
        }
        Ok(())
    }

    /// The `hold` mode: keeps the allocations open and idle, answering nothing but what
    /// the server sends, for the planned duration.
    fn hold(&mut self) -> std::io::Result<Duration> {
        let start = Instant::now();
        let end = start + self.plan.duration;
        let mut events = Events::with_capacity(1024);
        if let Some(mark) = &self.plan.mark {
            mark.reached("held");
        }
        loop {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            self.turn(&mut events, Some(left.min(Duration::from_millis(200))))?;
        }
        Ok(start.elapsed())
    }

    /// Deletes every allocation (Refresh with lifetime 0) and waits for the answers.
    fn delete(&mut self) -> std::io::Result<()> {
        if self.plan.direct {
            for f in &mut self.flows {
                f.link.close(self.poll.registry());
            }
            return Ok(());
        }
        let now = Instant::now();
        for i in 0..self.flows.len() {
            if self.flows[i].session.state == State::Ready {
                self.begin(i, Step::Delete, now);
            }
        }
        let end = now + DELETE_TIMEOUT;
        let mut events = Events::with_capacity(1024);
        while self
            .flows
            .iter()
            .any(|f| f.session.state == State::Waiting(Step::Delete))
        {
            let now = Instant::now();
            if now >= end {
                break;
            }
            self.turn(&mut events, Some(Duration::from_millis(10)))?;
            self.timers(Instant::now());
        }
        for f in &mut self.flows {
            match f.session.state {
                State::Failed(Step::Delete, code) => self.tally.error("delete", code),
                State::Waiting(Step::Delete) => self.tally.error("delete", 0),
                _ => {}
            }
            f.link.close(self.poll.registry());
        }
        Ok(())
    }

    /// Publishes progress for the main thread (once per turn, not per packet).
    fn publish(&mut self) {
        let (sent, received) = (self.tally.sent, self.tally.received);
        self.live
            .sent
            .fetch_add(sent - self.published.0, Ordering::Relaxed);
        self.live
            .received
            .fetch_add(received - self.published.1, Ordering::Relaxed);
        self.published = (sent, received);
    }
}

/// Handles one readiness event of a flow; `Ok(false)` when the server closed the stream.
fn serve(
    f: &mut Flow,
    ev: &mio::event::Event,
    rx: &mut Datagrams,
    tally: &mut Tally,
    plan: &Plan,
    now: Instant,
) -> std::io::Result<bool> {
    let (epoch, direct) = (plan.epoch, plan.direct);
    if !f.link.ready(ev)? {
        return Ok(true);
    }
    let mut answer = false;
    let Flow {
        link,
        session,
        id,
        window,
        ..
    } = f;
    let mut rx_flow = Received {
        session,
        id: *id,
        window,
    };
    let open = link.read(rx, &mut |data: &[u8]| {
        if direct {
            measure(&mut rx_flow, data, now, epoch, tally);
        } else if on_frame(&mut rx_flow, data, now, epoch, tally) {
            answer = true;
        }
    })?;
    if answer {
        f.link.send(f.session.request())?;
    }
    Ok(open)
}

/// Writes flow `f`'s next packet (ChannelData or a Send indication) into `buf`; returns
/// its length.
fn write_packet(buf: &mut [u8], plan: &Plan, f: &Flow, sent_at: u64) -> usize {
    if plan.direct {
        packet::write(&mut buf[..plan.size], f.id, f.next_seq, sent_at);
        return plan.size;
    }
    match plan.bind {
        Bind::Channel(number) => {
            let payload = &mut buf[channel::HEADER_LEN..channel::HEADER_LEN + plan.size];
            packet::write(payload, f.id, f.next_seq, sent_at);
            channel::write_header(buf, number, plan.size);
            channel::HEADER_LEN + plan.size
        }
        _ => {
            let mut tid = [0u8; 12];
            tid[..8].copy_from_slice(&f.next_seq.to_be_bytes());
            let mut b = MessageBuilder::new(buf, method::SEND, Class::Indication, &tid);
            b.xor_address(attr::XOR_PEER_ADDRESS, plan.peer);
            b.attr_with(attr::DATA, plan.size, |v| {
                packet::write(v, f.id, f.next_seq, sent_at)
            });
            b.finish(false).unwrap_or(0)
        }
    }
}

/// The parts of a flow that receiving touches (the link is busy reading).
struct Received<'a> {
    session: &'a mut Session,
    id: u32,
    window: &'a mut Window,
}

/// Handles one datagram or frame from the server: a relayed packet is measured, a STUN
/// answer goes to the session. `true` when the session has a request to send.
fn on_frame(
    f: &mut Received<'_>,
    data: &[u8],
    now: Instant,
    epoch: Instant,
    tally: &mut Tally,
) -> bool {
    if let Ok((_, payload)) = channel::parse(data) {
        measure(f, payload, now, epoch, tally);
        return false;
    }
    if !message::is_stun(data) {
        tally.foreign += 1;
        return false;
    }
    let Ok(msg) = Message::parse(data) else {
        tally.foreign += 1;
        return false;
    };
    if msg.class == Class::Indication && msg.method == method::DATA {
        match msg.get(attr::DATA) {
            Some(payload) => measure(f, payload, now, epoch, tally),
            None => tally.foreign += 1,
        }
        return false;
    }
    matches!(f.session.on_message(&msg, now), Outcome::Send)
}

fn measure(f: &mut Received<'_>, payload: &[u8], now: Instant, epoch: Instant, tally: &mut Tally) {
    let Some(p) = packet::read(payload) else {
        tally.foreign += 1;
        return;
    };
    if p.flow != f.id {
        tally.foreign += 1;
        return;
    }
    tally.received += 1;
    match f.window.see(p.seq) {
        packet::Seen::InOrder => {}
        packet::Seen::Late => tally.reordered += 1,
        packet::Seen::Again => tally.duplicates += 1,
    }
    let sent = epoch + Duration::from_nanos(p.sent_at);
    tally.rtt(now.saturating_duration_since(sent));
}
