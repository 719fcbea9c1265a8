//! Deterministic tests of the sans-IO server: a scripted client, fake relay ports and a
//! clock the test advances.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

mod accounting;
#[path = "../common/mod.rs"]
mod common;
mod harness;
mod offload;

use common::{Client, build, tid_of};
use harness::{Harness, UNIX, allocate, config, peer, udp};

use std::time::Duration;

use turnpike_dataplane::proto::auth::rest_password;
use turnpike_dataplane::proto::integrity::{Key, PasswordAlgorithm};
use turnpike_dataplane::proto::message::method;
use turnpike_dataplane::proto::{
    Class, Destination, Message, MessageBuilder, PEER_HEADROOM, Payload, Transmit, attr, channel,
};

#[test]
fn binding_answers_the_reflexive_address() {
    let mut h = Harness::new();
    let c = h.client("192.0.2.7:4242", "a");
    let req = build(
        &mut h.client("192.0.2.7:4242", "a"),
        method::BINDING,
        &|_| {},
        false,
    );
    let r = h.reply(&c, &req).unwrap();
    assert_eq!(r.class, Class::Success);
    assert_eq!(r.xor_addr(attr::XOR_MAPPED_ADDRESS), c.key.addr);
}

#[test]
fn allocate_challenge_then_success_with_lifetime_and_mapped_address() {
    let mut h = Harness::new();
    let mut c = h.client("192.0.2.7:4242", "alice");
    let first = build(&mut c, method::ALLOCATE, &udp, false);
    let r = h.reply(&c, &first).unwrap();
    assert_eq!(r.code, Some(401));
    assert!(r.attr(attr::REALM).is_some() && r.attr(attr::NONCE).is_some());
    assert_eq!(
        h.server.allocation_count(),
        0,
        "nothing stored before authentication"
    );
    let relay = allocate(&mut h, &mut c);
    assert_eq!(relay.ip().to_string(), "10.255.0.1");
    let r = h.request(&mut c, method::REFRESH, &|_| {});
    assert_eq!(r.lifetime(), 600);
}

#[test]
fn lifetime_is_clamped_and_refresh_zero_deletes() {
    let mut h = Harness::new();
    let mut c = h.client("192.0.2.7:4242", "alice");
    let r = h.request(&mut c, method::ALLOCATE, &|b| {
        udp(b);
        b.u32_attr(attr::LIFETIME, 99_999);
    });
    assert_eq!(r.lifetime(), 1200);
    let r = h.request(&mut c, method::REFRESH, &|b| b.u32_attr(attr::LIFETIME, 30));
    assert_eq!(r.lifetime(), 600, "below the default gets the default");
    let r = h.request(&mut c, method::REFRESH, &|b| b.u32_attr(attr::LIFETIME, 0));
    assert_eq!(r.class, Class::Success);
    assert_eq!(h.server.allocation_count(), 0);
    assert!(h.ports.open.is_empty(), "relay socket closed");
    let r = h.request(&mut c, method::REFRESH, &|_| {});
    assert_eq!(r.code, Some(437));
}

#[test]
fn retransmitted_allocate_gets_the_same_answer_and_a_new_one_gets_437() {
    let mut h = Harness::new();
    let mut c = h.client("192.0.2.7:4242", "alice");
    let _ = h.request(&mut c, method::REFRESH, &|_| {}); // learn a nonce
    let req = build(&mut c, method::ALLOCATE, &udp, true);
    let a = h.reply(&c, &req).unwrap();
    let b = h.reply(&c, &req).unwrap();
    assert_eq!(a.class, Class::Success);
    assert_eq!(a.raw, b.raw, "byte-identical retransmission answer");
    assert_eq!(h.server.allocation_count(), 1);
    // Rebuilt from the allocation, not kept: still the same answer after a Refresh
    // changed the lifetime and time passed.
    h.advance(5);
    let r = h.request(&mut c, method::REFRESH, &|b| {
        b.u32_attr(attr::LIFETIME, 900)
    });
    assert_eq!(r.class, Class::Success);
    let again = h.reply(&c, &req).unwrap();
    assert_eq!(a.raw, again.raw, "byte-identical after a refresh");
    assert_eq!(h.server.take_stats().retransmits, 2);
    let r = h.request(&mut c, method::ALLOCATE, &udp);
    assert_eq!(r.code, Some(437));
}

#[test]
fn retransmitted_permission_and_channel_requests_run_again_harmlessly() {
    let mut h = Harness::with_config(config(""));
    let mut c = h.client("192.0.2.7:4242", "alice");
    allocate(&mut h, &mut c);
    let permit = build(&mut c, method::CREATE_PERMISSION, &peer("10.0.0.9:1"), true);
    let bind = build(
        &mut c,
        method::CHANNEL_BIND,
        &|b: &mut MessageBuilder<'_>| {
            b.attr(attr::CHANNEL_NUMBER, &[0x40, 0x00, 0, 0]);
            b.xor_address(attr::XOR_PEER_ADDRESS, "10.0.0.9:2".parse().unwrap());
        },
        true,
    );
    for _ in 0..3 {
        assert_eq!(h.reply(&c, &permit).unwrap().class, Class::Success);
        assert_eq!(h.reply(&c, &bind).unwrap().class, Class::Success);
    }
    let (_, a) = h.server.allocations().next().unwrap();
    // Permissions are per IP address: the channel's peer shares the one installed.
    assert_eq!((a.permissions.len(), a.channels.len()), (1, 1), "{a:?}");
}

#[test]
fn wrong_password_expired_and_rotated_credentials() {
    let mut h = Harness::new();
    let mut c = h.client("192.0.2.7:4242", "alice");
    c.password = "wrong".into();
    assert_eq!(h.request(&mut c, method::ALLOCATE, &udp).code, Some(401));

    let mut c = h.client("192.0.2.8:4242", "bob");
    c.username = format!("{}:bob", UNIX - 1);
    c.password = rest_password("s3cret", &c.username);
    assert_eq!(h.request(&mut c, method::ALLOCATE, &udp).code, Some(401));

    let mut c = h.client("192.0.2.9:4242", "carol");
    c.password = rest_password("old", &c.username);
    allocate(&mut h, &mut c);
    assert_eq!(h.server.stats().auth_failure_count(), 2);
}

#[test]
fn stale_nonce_gets_438_and_a_fresh_nonce() {
    let mut h = Harness::new();
    let mut c = h.client("192.0.2.7:4242", "alice");
    allocate(&mut h, &mut c);
    h.elapsed += Duration::from_secs(700);
    let req = build(&mut c, method::REFRESH, &|_| {}, true);
    let r = h.reply(&c, &req).unwrap();
    assert_eq!(r.code, Some(438));
    assert_ne!(r.attr(attr::NONCE).unwrap(), c.nonce);
    let r = h.request(&mut c, method::REFRESH, &|_| {});
    assert_eq!(r.class, Class::Success);
}

#[test]
fn later_requests_must_use_the_allocating_username() {
    let mut h = Harness::new();
    let mut c = h.client("192.0.2.7:4242", "alice");
    allocate(&mut h, &mut c);
    let mut other = h.client("192.0.2.7:4242", "mallory");
    other.nonce = c.nonce.clone();
    let r = h.request(&mut other, method::CREATE_PERMISSION, &peer("10.0.0.9:1"));
    assert_eq!(r.code, Some(441));
    let r = h.request(&mut other, method::REFRESH, &|_| {});
    assert_eq!(r.code, Some(441));
    // A new Allocate on a 5-tuple in use is a mismatch, whoever asks.
    let r = h.request(&mut other, method::ALLOCATE, &udp);
    assert_eq!(r.code, Some(437));
}

#[test]
fn request_errors() {
    let mut h = Harness::new();
    let mut c = h.client("192.0.2.7:4242", "alice");
    let r = h.request(&mut c, method::ALLOCATE, &|_| {});
    assert_eq!(r.code, Some(400), "missing REQUESTED-TRANSPORT");
    let r = h.request(&mut c, method::ALLOCATE, &|b| {
        b.attr(attr::REQUESTED_TRANSPORT, &[6, 0, 0, 0])
    });
    assert_eq!(r.code, Some(442));
    let r = h.request(&mut c, method::ALLOCATE, &|b| {
        udp(b);
        b.attr(attr::REQUESTED_ADDRESS_FAMILY, &[3, 0, 0, 0]);
    });
    assert_eq!(r.code, Some(440));
    let r = h.request(&mut c, method::ALLOCATE, &|b| {
        udp(b);
        b.attr(attr::EVEN_PORT, &[0x80]);
        b.attr(attr::RESERVATION_TOKEN, &[1; 8]);
    });
    assert_eq!(r.code, Some(400));
    let r = h.request(&mut c, method::ALLOCATE, &|b| {
        udp(b);
        b.attr(0x0031, b"x");
    });
    assert_eq!(r.code, Some(420));
    assert_eq!(r.attr(attr::UNKNOWN_ATTRIBUTES), Some(vec![0x00, 0x31]));
    let r = h.request(&mut c, method::CREATE_PERMISSION, &peer("10.0.0.9:1"));
    assert_eq!(r.code, Some(437), "no allocation yet");
    h.ports.refuse_v6 = true;
    let r = h.request(&mut c, method::ALLOCATE, &|b| {
        udp(b);
        b.attr(attr::REQUESTED_ADDRESS_FAMILY, &[2, 0, 0, 0]);
    });
    assert_eq!(r.code, Some(440), "no IPv6 relay address");
}

#[test]
fn user_quota_gives_486_and_is_released() {
    let mut h = Harness::new();
    let mut a = h.client("192.0.2.1:1", "alice");
    let mut b = h.client("192.0.2.1:2", "alice");
    let mut c = h.client("192.0.2.1:3", "alice");
    b.username = a.username.clone();
    b.password = a.password.clone();
    c.username = a.username.clone();
    c.password = a.password.clone();
    allocate(&mut h, &mut a);
    allocate(&mut h, &mut b);
    assert_eq!(h.request(&mut c, method::ALLOCATE, &udp).code, Some(486));
    h.request(&mut a, method::REFRESH, &|b| b.u32_attr(attr::LIFETIME, 0));
    allocate(&mut h, &mut c);
}

#[test]
fn permissions_follow_the_routes_including_special_addresses() {
    let mut h = Harness::new();
    let mut c = h.client("192.0.2.7:4242", "alice");
    allocate(&mut h, &mut c);
    for denied in [
        "127.0.0.1:5000",
        "0.0.0.0:5000",
        "169.254.169.254:80",
        "10.9.9.9:1",
    ] {
        let r = h.request(&mut c, method::CREATE_PERMISSION, &peer(denied));
        assert_eq!(r.code, Some(403), "{denied}");
    }
    let r = h.request(
        &mut c,
        method::CREATE_PERMISSION,
        &peer("[::ffff:127.0.0.1]:5000"),
    );
    assert_eq!(r.code, Some(403), "IPv4-mapped loopback is loopback");
    let r = h.request(&mut c, method::CREATE_PERMISSION, &|b| {
        b.xor_address(attr::XOR_PEER_ADDRESS, "10.0.0.1:1".parse().unwrap());
        b.xor_address(attr::XOR_PEER_ADDRESS, "10.0.0.2:1".parse().unwrap());
    });
    assert_eq!(r.class, Class::Success, "several peers in one request");
    let r = h.request(&mut c, method::CREATE_PERMISSION, &|b| {
        b.xor_address(attr::XOR_PEER_ADDRESS, "10.0.0.3:1".parse().unwrap());
        b.xor_address(attr::XOR_PEER_ADDRESS, "10.0.0.4:1".parse().unwrap());
    });
    assert_eq!(r.code, Some(508), "over maxPermissionsPerAllocation");
    assert_eq!(h.server.stats().denied_peers, 5);
}

#[test]
fn channel_bind_and_channel_data_both_ways() {
    let mut h = Harness::new();
    let mut c = h.client("192.0.2.7:4242", "alice");
    let relay = allocate(&mut h, &mut c);
    let r = h.request(&mut c, method::CHANNEL_BIND, &|b| {
        b.attr(attr::CHANNEL_NUMBER, &[0x40, 0x01, 0, 0]);
        b.xor_address(attr::XOR_PEER_ADDRESS, "10.0.1.5:5005".parse().unwrap());
    });
    assert_eq!(r.class, Class::Success);
    // Port outside the route's range.
    let r = h.request(&mut c, method::CHANNEL_BIND, &|b| {
        b.attr(attr::CHANNEL_NUMBER, &[0x40, 0x02, 0, 0]);
        b.xor_address(attr::XOR_PEER_ADDRESS, "10.0.1.5:6000".parse().unwrap());
    });
    assert_eq!(r.code, Some(403));
    // Same number, other peer.
    let r = h.request(&mut c, method::CHANNEL_BIND, &|b| {
        b.attr(attr::CHANNEL_NUMBER, &[0x40, 0x01, 0, 0]);
        b.xor_address(attr::XOR_PEER_ADDRESS, "10.0.0.1:1".parse().unwrap());
    });
    assert_eq!(r.code, Some(400));
    let r = h.request(&mut c, method::CHANNEL_BIND, &|b| {
        b.attr(attr::CHANNEL_NUMBER, &[0x30, 0x00, 0, 0]);
        b.xor_address(attr::XOR_PEER_ADDRESS, "10.0.0.1:1".parse().unwrap());
    });
    assert_eq!(r.code, Some(400), "channel number out of range");

    let mut frame = vec![0x40, 0x01, 0, 5];
    frame.extend_from_slice(b"hello\0\0\0");
    match h.send(&c, &frame) {
        Some(Transmit {
            destination: Destination::Peer { peer, .. },
            payload: Payload::InPlace(payload),
        }) => {
            assert_eq!(peer, "10.0.1.5:5005".parse().unwrap());
            assert_eq!(&frame[payload], b"hello");
        }
        other => panic!("{other:?}"),
    }
    // Peer → client uses the channel.
    let mut buf = vec![0u8; 2048];
    buf[PEER_HEADROOM..PEER_HEADROOM + 3].copy_from_slice(b"abc");
    let now = h.now();
    let alloc = h.server.allocations().next().unwrap().0;
    let to = h
        .server
        .handle_peer(now, alloc, "10.0.1.5:5005".parse().unwrap(), &mut buf, 3)
        .unwrap();
    let Payload::InPlace(range) = to.payload else {
        panic!("{to:?}")
    };
    assert_eq!(to.destination, Destination::Client(c.key));
    assert_eq!(channel::parse(&buf[range]).unwrap(), (0x4001, &b"abc"[..]));
    // A peer without permission is dropped.
    assert!(
        h.server
            .handle_peer(now, alloc, "10.0.0.77:1".parse().unwrap(), &mut buf, 3)
            .is_none()
    );
    let _ = relay;
    // After 10 minutes without refresh the channel and permission are gone.
    h.advance(601);
    assert_eq!(h.send(&c, &frame), None);
}

#[test]
fn send_and_data_indications() {
    let mut h = Harness::new();
    let mut c = h.client("192.0.2.7:4242", "alice");
    allocate(&mut h, &mut c);
    let send = |c: &mut Client, p: &str| {
        let mut buf = vec![0u8; 256];
        let mut b = MessageBuilder::new(&mut buf, method::SEND, Class::Indication, &tid_of(c.seq));
        b.xor_address(attr::XOR_PEER_ADDRESS, p.parse().unwrap());
        b.attr(attr::DATA, b"ping");
        let n = b.finish(true).unwrap();
        buf.truncate(n);
        buf
    };
    let ind = send(&mut c, "10.0.0.1:9");
    assert_eq!(h.send(&c, &ind), None, "no permission yet");
    h.request(&mut c, method::CREATE_PERMISSION, &peer("10.0.0.1:0"));
    match h.send(&c, &ind) {
        Some(Transmit {
            destination: Destination::Peer { .. },
            payload: Payload::InPlace(payload),
        }) => assert_eq!(&ind[payload], b"ping"),
        other => panic!("{other:?}"),
    }
    let mut buf = vec![0u8; 2048];
    buf[PEER_HEADROOM..PEER_HEADROOM + 5].copy_from_slice(b"hello");
    let now = h.now();
    let alloc = h.server.allocations().next().unwrap().0;
    let to = h
        .server
        .handle_peer(now, alloc, "10.0.0.1:9".parse().unwrap(), &mut buf, 5)
        .unwrap();
    let Payload::InPlace(range) = to.payload else {
        panic!("{to:?}")
    };
    let m = Message::parse(&buf[range]).unwrap();
    assert_eq!((m.method, m.class), (method::DATA, Class::Indication));
    assert_eq!(m.get(attr::DATA), Some(&b"hello"[..]));
    assert_eq!(
        attr::decode_xor_address(m.get(attr::XOR_PEER_ADDRESS).unwrap(), &m.transaction_id)
            .unwrap(),
        "10.0.0.1:9".parse().unwrap()
    );
    // Permissions last 300 s.
    h.advance(301);
    assert_eq!(h.send(&c, &ind), None);
}

#[test]
fn even_port_reservation_is_answered_and_redeemed() {
    let mut h = Harness::new();
    let mut a = h.client("192.0.2.1:1", "alice");
    let r = h.request(&mut a, method::ALLOCATE, &|b| {
        udp(b);
        b.attr(attr::EVEN_PORT, &[0x80]);
    });
    assert_eq!(r.class, Class::Success);
    let relay = r.xor_addr(attr::XOR_RELAYED_ADDRESS);
    assert_eq!(relay.port() % 2, 0);
    let token = r.attr(attr::RESERVATION_TOKEN).expect("token for R bit");
    let mut b = h.client("192.0.2.1:2", "bob");
    let r = h.request(&mut b, method::ALLOCATE, &|bld| {
        udp(bld);
        bld.attr(attr::RESERVATION_TOKEN, &token);
    });
    assert_eq!(
        r.xor_addr(attr::XOR_RELAYED_ADDRESS).port(),
        relay.port() + 1
    );
    let mut c = h.client("192.0.2.1:3", "carol");
    let r = h.request(&mut c, method::ALLOCATE, &|bld| {
        udp(bld);
        bld.attr(attr::RESERVATION_TOKEN, &token);
    });
    assert_eq!(r.code, Some(508), "a token is good once");
}

#[test]
fn allocations_expire_and_release_their_relay() {
    let mut h = Harness::new();
    let mut c = h.client("192.0.2.7:4242", "alice");
    allocate(&mut h, &mut c);
    h.advance(599);
    assert_eq!(h.server.allocation_count(), 1);
    h.advance(2);
    assert_eq!(h.server.allocation_count(), 0);
    assert!(h.ports.open.is_empty());
}

#[test]
fn new_config_keeps_allocations_and_revokes_unrouted_peers() {
    let mut h = Harness::new();
    let mut c = h.client("192.0.2.7:4242", "alice");
    allocate(&mut h, &mut c);
    h.request(&mut c, method::CREATE_PERMISSION, &|b| {
        b.xor_address(attr::XOR_PEER_ADDRESS, "10.0.0.1:1".parse().unwrap());
        b.xor_address(attr::XOR_PEER_ADDRESS, "10.0.1.5:5000".parse().unwrap());
    });
    let narrowed = config("").as_ref().clone();
    let mut narrowed = narrowed;
    narrowed.listeners[0].routes =
        turnpike_dataplane::proto::RouteTable::new(vec![turnpike_dataplane::proto::Endpoint {
            net: "10.0.1.5/32".parse().unwrap(),
            ports: (5000, 5010),
            counter: 0,
        }]);
    // Rotated secret: the allocation keeps working with the key it was created with.
    narrowed.credentials = turnpike_dataplane::proto::Credentials::Ephemeral(vec!["new".into()]);
    let _ = h.server.take_stats();
    h.apply_config(narrowed);
    assert_eq!(h.server.allocation_count(), 1);
    let a = h.server.allocations().next().unwrap().1;
    assert_eq!(a.permissions.len(), 1);
    assert_eq!(a.permissions[0].ip.to_string(), "10.0.1.5");
    // Asking again for a revoked peer on the same allocation is refused.
    let r = h.request(&mut c, method::CREATE_PERMISSION, &peer("10.0.0.1:1"));
    assert_eq!(r.code, Some(403), "{r:?}");
    let r = h.request(&mut c, method::REFRESH, &|_| {});
    assert_eq!(
        r.class,
        Class::Success,
        "existing allocation survives secret rotation"
    );
}

#[test]
fn removing_a_listener_removes_its_allocations() {
    let mut h = Harness::new();
    let mut c = h.client("192.0.2.7:4242", "alice");
    allocate(&mut h, &mut c);
    let mut cfg = config("").as_ref().clone();
    cfg.listeners.remove(0);
    h.apply_config(cfg);
    assert_eq!(h.server.allocation_count(), 0);
    assert!(h.ports.open.is_empty());
}

#[test]
fn draining_refuses_new_allocations_only() {
    let mut h = Harness::new();
    let mut a = h.client("192.0.2.1:1", "alice");
    allocate(&mut h, &mut a);
    h.server.begin_drain();
    let mut b = h.client("192.0.2.1:2", "bob");
    assert_eq!(h.request(&mut b, method::ALLOCATE, &udp).code, Some(508));
    assert_eq!(
        h.request(&mut a, method::REFRESH, &|_| {}).class,
        Class::Success
    );
}

#[test]
fn message_integrity_sha256_is_verified_and_answered_in_kind() {
    let mut h = Harness::new();
    let mut c = h.client("192.0.2.7:4242", "alice");
    let _ = h.request(&mut c, method::REFRESH, &|_| {});
    c.seq += 1;
    let tid = tid_of(c.seq);
    let mut buf = vec![0u8; 512];
    let mut b = MessageBuilder::new(&mut buf, method::ALLOCATE, Class::Request, &tid);
    udp(&mut b);
    b.attr(attr::USERNAME, c.username.as_bytes());
    b.attr(attr::REALM, b"turnpike.dev");
    b.attr(attr::NONCE, &c.nonce);
    let key = Key::long_term(
        PasswordAlgorithm::Md5,
        &c.username,
        "turnpike.dev",
        &c.password,
    );
    b.integrity(key.as_bytes(), true);
    let n = b.finish(true).unwrap();
    let r = h.reply(&c, &buf[..n]).unwrap();
    assert_eq!(r.class, Class::Success);
    let m = Message::parse(&r.raw).unwrap();
    assert!(m.has(attr::MESSAGE_INTEGRITY_SHA256));
    assert!(turnpike_dataplane::proto::integrity::verify(
        &m,
        key.as_bytes(),
        turnpike_dataplane::proto::integrity::IntegrityKind::Sha256
    ));
}

#[test]
fn garbage_is_counted_never_answered() {
    let mut h = Harness::new();
    let c = h.client("192.0.2.7:4242", "alice");
    let mut bad: Vec<Vec<u8>> = vec![
        vec![],
        vec![0xff; 40],
        vec![0x00, 0x01, 0x00, 0x04, 0x21, 0x12, 0xa4, 0x42],
        vec![0x40, 0x01, 0x00, 0x10, 1, 2],
    ];
    // Attribute length running past the end.
    let mut overrun = build(
        &mut h.client("192.0.2.7:4242", "a"),
        method::BINDING,
        &|b| b.attr(attr::SOFTWARE, b"abcd"),
        false,
    );
    overrun[22..24].copy_from_slice(&200u16.to_be_bytes());
    bad.push(overrun);
    for b in &bad {
        assert_eq!(h.send(&c, b), None, "{b:?}");
    }
    assert_eq!(h.server.stats().malformed, bad.len() as u64);
}

#[test]
fn unauthenticated_answers_are_rate_limited_per_source() {
    let mut h = Harness::new();
    let mut c = h.client("192.0.2.7:4242", "alice");
    let mut answered = 0;
    for _ in 0..300 {
        let req = build(&mut c, method::ALLOCATE, &udp, false);
        if h.reply(&c, &req).is_some() {
            answered += 1;
        }
    }
    assert_eq!(answered, 200, "burst of 200, then silence");
    assert_eq!(h.server.stats().challenges_suppressed, 100);
    // Another source is unaffected, and the budget refills with time.
    let mut d = h.client("198.51.100.1:1", "bob");
    allocate(&mut h, &mut d);
    h.elapsed += Duration::from_secs(1);
    let req = build(&mut c, method::ALLOCATE, &udp, false);
    assert_eq!(h.reply(&c, &req).unwrap().code, Some(401));
}

#[test]
fn a_realm_change_keeps_allocations_refreshable() {
    let mut h = Harness::new();
    let mut c = h.client("192.0.2.7:4242", "alice");
    allocate(&mut h, &mut c);
    let mut cfg = config("").as_ref().clone();
    cfg.realm = "new.example".into();
    h.apply_config(cfg);
    // The old realm and key still refresh the allocation they created.
    let r = h.request(&mut c, method::REFRESH, &|_| {});
    assert_eq!(r.class, Class::Success, "{r:?}");
    assert_eq!(h.server.allocation_count(), 1);
}
