//! The `allocate` mode: allocation cycles with full authentication, as fast as the server
//! answers. Each cycle opens a fresh client socket (a new 5-tuple, as a new browser tab
//! would), takes the 401 challenge, allocates with MESSAGE-INTEGRITY, refreshes, deletes.
//! A fixed number of cycles is in flight per thread.

use std::sync::Barrier;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use mio::{Events, Poll, Token};
use turnpike_dataplane::io::batch::Datagrams;
use turnpike_dataplane::proto::{Message, message};

use super::link::Link;
use super::report::{Tally, thread_cpu};
use super::session::{Bind, Outcome, Session, State, Step};
use super::{Live, Plan};

struct Cycle {
    link: Link,
    session: Session,
    refreshed: bool,
}

/// Runs cycles on this thread with `concurrency` in flight for the planned duration;
/// flow ids start at `first` and go up by `stride` so threads never share a username.
pub fn run(
    plan: &Plan,
    live: &Live,
    first: usize,
    stride: usize,
    concurrency: usize,
    barrier: &Barrier,
) -> std::io::Result<(Tally, Duration)> {
    let mut poll = Poll::new()?;
    let mut tally = Tally::default();
    let mut rx = Datagrams::new();
    let mut cycles: Vec<Option<Cycle>> = (0..concurrency).map(|_| None).collect();
    let mut next_id = first;
    barrier.wait();
    let start = Instant::now();
    let end = start + plan.duration;
    let mut events = Events::with_capacity(1024);
    let mut published = 0;
    for (slot, c) in cycles.iter_mut().enumerate() {
        *c = Some(open(plan, &mut poll, slot, next_id as u32, start)?);
        next_id += stride;
    }
    // Stop starting new cycles at the end, then let those in flight finish.
    let mut closing = false;
    loop {
        let now = Instant::now();
        if !closing && now >= end {
            closing = true;
        }
        if cycles.iter().all(Option::is_none) || now >= end + Duration::from_secs(3) {
            break;
        }
        poll.poll(&mut events, Some(Duration::from_millis(5)))?;
        let now = Instant::now();
        for ev in events.iter() {
            let slot = ev.token().0;
            let Some(Some(c)) = cycles.get_mut(slot) else {
                continue;
            };
            let result = serve(c, ev, &mut rx, now);
            // A connection the server closed or broke loses the cycle in flight.
            if !matches!(result, Ok(true))
                && let State::Waiting(step) = c.session.state
            {
                c.session.state = State::Failed(step, 0);
            }
        }
        // Advance, finish or replace cycles; retransmit what is due.
        for (slot, entry) in cycles.iter_mut().enumerate() {
            let Some(c) = entry else { continue };
            if c.session.deadline().is_some_and(|d| d <= now) && c.session.on_timer(now) {
                // Only UDP retransmits, and a UDP send error loses just this datagram.
                let _ = c.link.send(c.session.request());
            }
            let done = match c.session.state {
                State::Ready => {
                    let step = if c.refreshed {
                        Step::Delete
                    } else {
                        Step::Refresh
                    };
                    c.refreshed = true;
                    let req = c.session.begin(step, now);
                    if c.link.send(req).is_err() {
                        c.session.state = State::Failed(step, 0);
                    }
                    false
                }
                State::Closed => {
                    tally.allocations += 1;
                    if let Some(t) = c.session.started {
                        tally.setup(now.saturating_duration_since(t));
                    }
                    true
                }
                State::Failed(step, code) => {
                    tally.error(step.name(), code);
                    true
                }
                State::Waiting(_) => false,
            };
            if done {
                tally.retransmissions += u64::from(c.session.retransmissions);
                c.link.close(poll.registry());
                *entry = if closing {
                    None
                } else {
                    let c = open(plan, &mut poll, slot, next_id as u32, now)?;
                    next_id += stride;
                    Some(c)
                };
            }
        }
        live.ready
            .fetch_add(tally.allocations - published, Ordering::Relaxed);
        published = tally.allocations;
    }
    for c in cycles.iter_mut().flatten() {
        if let State::Waiting(step) = c.session.state {
            tally.error(step.name(), 0);
        }
        c.link.close(poll.registry());
    }
    tally.cpu = thread_cpu();
    // The measured window is the time new cycles were started.
    Ok((tally, plan.duration.min(start.elapsed())))
}

/// Handles one readiness event of a cycle; `Ok(false)` when the server closed the stream.
fn serve(
    c: &mut Cycle,
    ev: &mio::event::Event,
    rx: &mut Datagrams,
    now: Instant,
) -> std::io::Result<bool> {
    if !c.link.ready(ev)? {
        return Ok(true);
    }
    let mut send = false;
    let session = &mut c.session;
    let open = c.link.read(rx, &mut |data: &[u8]| {
        if !message::is_stun(data) {
            return;
        }
        if let Ok(msg) = Message::parse(data)
            && session.on_message(&msg, now) == Outcome::Send
        {
            send = true;
        }
    })?;
    if send {
        c.link.send(c.session.request())?;
    }
    Ok(open)
}

fn open(
    plan: &Plan,
    poll: &mut Poll,
    slot: usize,
    id: u32,
    now: Instant,
) -> std::io::Result<Cycle> {
    let mut link = Link::open(
        plan.transport,
        plan.server,
        plan.source(id),
        plan.tls.as_ref(),
        poll.registry(),
        Token(slot),
    )?;
    let (username, password) = plan.credentials.for_flow(id);
    let mut session = Session::new(
        username,
        password,
        Bind::None,
        plan.peer,
        plan.lifetime,
        link.is_stream(),
        now,
    );
    let req = session.begin(Step::Allocate, now);
    link.send(req)?;
    Ok(Cycle {
        link,
        session,
        refreshed: false,
    })
}
