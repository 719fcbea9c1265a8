//! The control side of one benchmark allocation, sans-IO: the request to send next, what
//! an answer changes, and when to retransmit. Time comes in as an argument, so the load
//! loops drive thousands of these from one thread without a blocking call.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use turnpike_dataplane::proto::integrity::{Key, PasswordAlgorithm};
use turnpike_dataplane::proto::message::method;
use turnpike_dataplane::proto::{Class, Message, MessageBuilder, attr};

/// How the allocation reaches its peer once allocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bind {
    /// ChannelBind: data goes as ChannelData (what browsers do once they can).
    Channel(u16),
    /// CreatePermission only: data goes in Send and Data indications.
    Permission,
    /// Nothing: an idle allocation (the `hold` mode).
    None,
}

/// The steps a session takes, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Allocate,
    Bind,
    /// A Refresh that keeps the allocation (the `allocate` mode exercises it).
    Refresh,
    /// Refresh with lifetime 0.
    Delete,
}

impl Step {
    /// How reports name the step (errors are counted as `"<step>: <code>"`).
    pub fn name(self) -> &'static str {
        match self {
            Step::Allocate => "allocate",
            Step::Bind => "bind",
            Step::Refresh => "refresh",
            Step::Delete => "delete",
        }
    }
}

/// Where a session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// A request of this step is in flight.
    Waiting(Step),
    /// Allocated and bound: data may flow.
    Ready,
    /// Deleted.
    Closed,
    /// The server refused a step with this code (0: no answer after every retransmission).
    Failed(Step, u16),
}

/// What an answer did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Not an answer to the request in flight (a late duplicate, data).
    Ignored,
    /// Send [`Session::request`]: the same step signed with a fresh nonce after a 401/438
    /// challenge, or the next step of the chain (ChannelBind after Allocate).
    Send,
    /// The step succeeded and the chain is done: `state` is `Ready` or `Closed`.
    Done,
    /// The step failed.
    Failed(u16),
}

/// Retransmission on UDP (RFC 8489 §6.2.1, shortened for a benchmark on one host).
const FIRST_RTO: Duration = Duration::from_millis(250);
const TRIES_UDP: u8 = 5;
/// A stream transport does not lose requests; one long wait.
const STREAM_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Session {
    pub state: State,
    username: String,
    password: String,
    realm: Option<String>,
    nonce: Option<Vec<u8>>,
    key: Option<Key>,
    bind: Bind,
    peer: SocketAddr,
    lifetime: u32,
    reliable: bool,
    tid: [u8; 12],
    seq: u32,
    /// The request in flight, kept for retransmission.
    request: Vec<u8>,
    deadline: Instant,
    rto: Duration,
    tries: u8,
    pub relayed: Option<SocketAddr>,
    /// When the first Allocate left, and when the session became ready.
    pub started: Option<Instant>,
    pub ready_after: Option<Duration>,
    /// Challenges answered (one per session is the norm; more mean stale nonces).
    pub challenges: u32,
    pub retransmissions: u32,
}

impl Session {
    /// `reliable`: TCP or TLS (no retransmissions).
    pub fn new(
        username: String,
        password: String,
        bind: Bind,
        peer: SocketAddr,
        lifetime: u32,
        reliable: bool,
        now: Instant,
    ) -> Session {
        Session {
            state: State::Waiting(Step::Allocate),
            username,
            password,
            realm: None,
            nonce: None,
            key: None,
            bind,
            peer,
            lifetime,
            reliable,
            tid: rand::random(),
            seq: 0,
            request: Vec::with_capacity(256),
            deadline: now,
            rto: FIRST_RTO,
            tries: 0,
            relayed: None,
            started: None,
            ready_after: None,
            challenges: 0,
            retransmissions: 0,
        }
    }

    /// Starts a step: the request's bytes are in [`Self::request`] until the answer.
    pub fn begin(&mut self, step: Step, now: Instant) -> &[u8] {
        self.state = State::Waiting(step);
        if self.started.is_none() {
            self.started = Some(now);
        }
        self.build(step);
        self.arm(now, true);
        &self.request
    }

    /// The request in flight.
    pub fn request(&self) -> &[u8] {
        &self.request
    }

    /// When [`Self::on_timer`] wants to be called.
    pub fn deadline(&self) -> Option<Instant> {
        let begun = !self.request.is_empty();
        (begun && matches!(self.state, State::Waiting(_))).then_some(self.deadline)
    }

    /// Past the deadline: `true` when the request should be sent again (it is in
    /// [`Self::request`]); otherwise the step has failed for want of an answer.
    pub fn on_timer(&mut self, now: Instant) -> bool {
        let State::Waiting(step) = self.state else {
            return false;
        };
        if now < self.deadline {
            return false;
        }
        if self.reliable || self.tries >= TRIES_UDP {
            self.state = State::Failed(step, 0);
            return false;
        }
        self.retransmissions += 1;
        self.arm(now, false);
        true
    }

    fn arm(&mut self, now: Instant, fresh: bool) {
        if fresh {
            self.tries = 1;
            self.rto = FIRST_RTO;
        } else {
            self.tries += 1;
            self.rto *= 2;
        }
        self.deadline = now
            + if self.reliable {
                STREAM_TIMEOUT
            } else {
                self.rto
            };
    }

    /// Feeds a STUN message from the server.
    pub fn on_message(&mut self, msg: &Message<'_>, now: Instant) -> Outcome {
        let State::Waiting(step) = self.state else {
            return Outcome::Ignored;
        };
        if msg.transaction_id != self.tid {
            return Outcome::Ignored;
        }
        match msg.class {
            Class::Success => {
                self.succeed(step, msg, now);
                match self.state {
                    State::Waiting(next) => {
                        self.begin(next, now);
                        Outcome::Send
                    }
                    _ => Outcome::Done,
                }
            }
            Class::Error => {
                let code = msg
                    .get(attr::ERROR_CODE)
                    .and_then(|v| attr::decode_error_code(v).ok())
                    .map_or(0, |(code, _)| code);
                let fresh = msg.get(attr::NONCE).map(<[u8]>::to_vec);
                let challenge = matches!(code, 401 | 438) && fresh.is_some() && fresh != self.nonce;
                if challenge && self.challenges < 3 {
                    self.challenges += 1;
                    self.nonce = fresh;
                    if let Some(realm) = msg.get(attr::REALM) {
                        let realm = String::from_utf8_lossy(realm).into_owned();
                        if self.realm.as_deref() != Some(&realm) {
                            self.key = Some(Key::long_term(
                                PasswordAlgorithm::Md5,
                                &self.username,
                                &realm,
                                &self.password,
                            ));
                            self.realm = Some(realm);
                        }
                    }
                    self.build(step);
                    self.arm(now, true);
                    return Outcome::Send;
                }
                self.state = State::Failed(step, code);
                Outcome::Failed(code)
            }
            _ => Outcome::Ignored,
        }
    }

    fn succeed(&mut self, step: Step, msg: &Message<'_>, now: Instant) {
        self.state = match step {
            Step::Allocate => {
                self.relayed = msg
                    .get(attr::XOR_RELAYED_ADDRESS)
                    .and_then(|v| attr::decode_xor_address(v, &msg.transaction_id).ok());
                if self.bind == Bind::None {
                    State::Ready
                } else {
                    State::Waiting(Step::Bind)
                }
            }
            Step::Bind | Step::Refresh => State::Ready,
            Step::Delete => State::Closed,
        };
        if self.state == State::Ready && self.ready_after.is_none() {
            self.ready_after = self.started.map(|s| now.saturating_duration_since(s));
        }
    }

    fn build(&mut self, step: Step) {
        self.seq = self.seq.wrapping_add(1);
        self.tid[8..].copy_from_slice(&self.seq.to_be_bytes());
        let m = match step {
            Step::Allocate => method::ALLOCATE,
            Step::Bind => match self.bind {
                Bind::Channel(_) => method::CHANNEL_BIND,
                _ => method::CREATE_PERMISSION,
            },
            Step::Refresh | Step::Delete => method::REFRESH,
        };
        self.request.resize(512, 0);
        let mut b = MessageBuilder::new(&mut self.request, m, Class::Request, &self.tid);
        match step {
            Step::Allocate => {
                b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
                b.u32_attr(attr::LIFETIME, self.lifetime);
            }
            Step::Bind => {
                if let Bind::Channel(n) = self.bind {
                    b.attr(attr::CHANNEL_NUMBER, &[(n >> 8) as u8, n as u8, 0, 0]);
                }
                b.xor_address(attr::XOR_PEER_ADDRESS, self.peer);
            }
            Step::Refresh => b.u32_attr(attr::LIFETIME, self.lifetime),
            Step::Delete => b.u32_attr(attr::LIFETIME, 0),
        }
        if let (Some(key), Some(nonce), Some(realm)) = (&self.key, &self.nonce, &self.realm) {
            b.attr(attr::USERNAME, self.username.as_bytes());
            b.attr(attr::REALM, realm.as_bytes());
            b.attr(attr::NONCE, nonce);
            b.integrity(key.as_bytes(), false);
        }
        let len = b.finish(true).unwrap_or(0);
        self.request.truncate(len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use turnpike_dataplane::proto::ErrorCode;
    use turnpike_dataplane::proto::integrity::{IntegrityKind, verify};

    const PEER: &str = "10.0.0.9:5000";

    fn session(bind: Bind, reliable: bool, now: Instant) -> Session {
        let peer = PEER.parse().unwrap();
        Session::new("1:u".into(), "pw".into(), bind, peer, 600, reliable, now)
    }

    /// A server answer to the request in flight.
    fn answer(s: &Session, class: Class, body: impl FnOnce(&mut MessageBuilder<'_>)) -> Vec<u8> {
        let req = Message::parse(s.request()).unwrap();
        let mut buf = vec![0u8; 512];
        let mut b = MessageBuilder::new(&mut buf, req.method, class, &req.transaction_id);
        body(&mut b);
        let n = b.finish(true).unwrap();
        buf.truncate(n);
        buf
    }

    fn feed(s: &mut Session, bytes: &[u8], now: Instant) -> Outcome {
        s.on_message(&Message::parse(bytes).unwrap(), now)
    }

    #[test]
    fn takes_the_challenge_signs_allocates_and_binds_a_channel() {
        let t0 = Instant::now();
        let mut s = session(Bind::Channel(0x4000), false, t0);
        let first = Message::parse(s.begin(Step::Allocate, t0)).unwrap();
        assert_eq!(first.method, method::ALLOCATE);
        assert!(
            !first.has(attr::MESSAGE_INTEGRITY),
            "unsigned before the challenge"
        );

        let challenge = answer(&s, Class::Error, |b| {
            b.error_code(ErrorCode::UNAUTHORIZED);
            b.attr(attr::REALM, b"bench");
            b.attr(attr::NONCE, b"n0nce");
        });
        assert_eq!(feed(&mut s, &challenge, t0), Outcome::Send);
        let signed = Message::parse(s.request()).unwrap();
        assert_eq!(signed.method, method::ALLOCATE);
        assert_eq!(signed.get(attr::USERNAME), Some(&b"1:u"[..]));
        assert_eq!(signed.get(attr::NONCE), Some(&b"n0nce"[..]));
        let key = Key::long_term(PasswordAlgorithm::Md5, "1:u", "bench", "pw");
        assert!(verify(&signed, key.as_bytes(), IntegrityKind::Sha1));

        let relayed: SocketAddr = "192.0.2.1:50000".parse().unwrap();
        let ok = answer(&s, Class::Success, |b| {
            b.xor_address(attr::XOR_RELAYED_ADDRESS, relayed)
        });
        let t1 = t0 + Duration::from_millis(3);
        // Allocated: the ChannelBind goes next, in the same call.
        assert_eq!(feed(&mut s, &ok, t1), Outcome::Send);
        assert_eq!(s.relayed, Some(relayed));
        let bind = Message::parse(s.request()).unwrap();
        assert_eq!(bind.method, method::CHANNEL_BIND);
        assert_eq!(bind.get(attr::CHANNEL_NUMBER), Some(&[0x40, 0, 0, 0][..]));
        assert!(verify(&bind, key.as_bytes(), IntegrityKind::Sha1));

        let bound = answer(&s, Class::Success, |_| {});
        assert_eq!(feed(&mut s, &bound, t1), Outcome::Done);
        assert_eq!(s.state, State::Ready);
        assert_eq!(s.ready_after, Some(Duration::from_millis(3)));
        assert_eq!(s.challenges, 1);
    }

    #[test]
    fn answers_to_another_transaction_are_ignored_and_errors_fail_the_step() {
        let t0 = Instant::now();
        let mut s = session(Bind::Permission, false, t0);
        s.begin(Step::Allocate, t0);
        let mut tid = Message::parse(s.request()).unwrap().transaction_id;
        tid[11] ^= 1;
        let mut stale = vec![0u8; 128];
        let b = MessageBuilder::new(&mut stale, method::ALLOCATE, Class::Success, &tid);
        let n = b.finish(true).unwrap();
        assert_eq!(feed(&mut s, &stale[..n], t0), Outcome::Ignored);
        assert_eq!(s.state, State::Waiting(Step::Allocate));
        let refused = answer(&s, Class::Error, |b| b.error_code(ErrorCode::FORBIDDEN));
        assert_eq!(feed(&mut s, &refused, t0), Outcome::Failed(403));
        assert_eq!(s.state, State::Failed(Step::Allocate, 403));
    }

    #[test]
    fn udp_retransmits_with_backoff_then_gives_up() {
        let t0 = Instant::now();
        let mut s = session(Bind::None, false, t0);
        s.begin(Step::Allocate, t0);
        assert!(!s.on_timer(t0 + Duration::from_millis(249)), "not yet");
        let mut at = t0;
        let mut rto = FIRST_RTO;
        for _ in 1..TRIES_UDP {
            at += rto;
            assert!(s.on_timer(at), "retransmit at {:?}", at - t0);
            rto *= 2;
        }
        assert_eq!(s.retransmissions, u32::from(TRIES_UDP) - 1);
        assert!(!s.on_timer(at + rto));
        assert_eq!(s.state, State::Failed(Step::Allocate, 0));
        assert_eq!(s.deadline(), None);
    }

    #[test]
    fn streams_never_retransmit_but_time_out() {
        let t0 = Instant::now();
        let mut s = session(Bind::None, true, t0);
        s.begin(Step::Allocate, t0);
        assert!(!s.on_timer(t0 + Duration::from_secs(1)));
        assert_eq!(s.state, State::Waiting(Step::Allocate));
        assert!(!s.on_timer(t0 + STREAM_TIMEOUT));
        assert_eq!(s.state, State::Failed(Step::Allocate, 0));
        assert_eq!(s.retransmissions, 0);
    }
}
