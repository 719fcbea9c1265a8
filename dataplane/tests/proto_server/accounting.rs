//! What the core counts for `/metrics`: why credentials were refused, which listener an
//! allocation was created, refused and ended on, how it ended and how long it lived.

use std::time::Duration;

use turnpike_dataplane::proto::auth::rest_password;
use turnpike_dataplane::proto::message::method;
use turnpike_dataplane::proto::{AllocationEnd, AllocationRefusal, AuthFailure, ListenerStats};

use crate::common::build;
use crate::harness::{Harness, UNIX, allocate, udp};

fn failures(h: &Harness, why: AuthFailure) -> u64 {
    h.server.stats().auth_failures[why as usize]
}

fn listener<'a>(h: &'a Harness, name: &str) -> &'a ListenerStats {
    h.server
        .stats()
        .listeners
        .iter()
        .find(|l| l.listener == name)
        .unwrap_or_else(|| panic!("no stats for listener {name}: {:?}", h.server.stats()))
}

#[test]
fn each_refused_credential_is_counted_under_its_reason() {
    let mut h = Harness::new();
    // The first request of each client carries no credentials: its 401 is the challenge
    // every client gets, not a failure.
    let mut wrong = h.client("192.0.2.1:1", "alice");
    wrong.password = "wrong".into();
    assert_eq!(
        h.request(&mut wrong, method::ALLOCATE, &udp).code,
        Some(401)
    );
    assert_eq!(failures(&h, AuthFailure::BadIntegrity), 1);

    let mut expired = h.client("192.0.2.2:1", "bob");
    expired.username = format!("{}:bob", UNIX - 1);
    expired.password = rest_password("s3cret", &expired.username);
    assert_eq!(
        h.request(&mut expired, method::ALLOCATE, &udp).code,
        Some(401)
    );
    assert_eq!(failures(&h, AuthFailure::Expired), 1);

    let mut malformed = h.client("192.0.2.3:1", "carol");
    malformed.username = "carol".into();
    malformed.password = rest_password("s3cret", "carol");
    assert_eq!(
        h.request(&mut malformed, method::ALLOCATE, &udp).code,
        Some(401)
    );
    assert_eq!(failures(&h, AuthFailure::MalformedUsername), 1);

    // A stale nonce is answered 438 and counted; the retry with the fresh one succeeds.
    let mut c = h.client("192.0.2.4:1", "dave");
    allocate(&mut h, &mut c);
    h.elapsed += Duration::from_secs(700);
    let req = build(&mut c, method::REFRESH, &|_| {}, true);
    let r = h.reply(&c, &req).unwrap();
    assert_eq!(r.code, Some(438));
    assert_eq!(failures(&h, AuthFailure::StaleNonce), 1);
    c.nonce = r.attr(turnpike_dataplane::proto::attr::NONCE).unwrap();

    // Valid credentials of another user on an allocated 5-tuple: 441.
    let r = h.request(&mut c, method::REFRESH, &|_| {});
    assert_eq!(r.code, None, "{r:?}");
    let mut other = h.client("192.0.2.4:1", "mallory");
    other.nonce = c.nonce.clone();
    let r = h.request(&mut other, method::REFRESH, &|_| {});
    assert_eq!(r.code, Some(441));
    assert_eq!(failures(&h, AuthFailure::WrongCredentials), 1);
    assert_eq!(h.server.stats().auth_failure_count(), 5);
}

#[test]
fn allocations_are_counted_by_listener_with_how_they_ended_and_lived() {
    let mut h = Harness::new();
    let mut a = h.client("192.0.2.1:1", "alice");
    let mut b = h.client("192.0.2.2:1", "alice");
    let mut c = h.client("192.0.2.3:1", "alice");
    allocate(&mut h, &mut a);
    allocate(&mut h, &mut b);
    // The user's quota (2) is full.
    assert_eq!(h.request(&mut c, method::ALLOCATE, &udp).code, Some(486));
    h.elapsed += Duration::from_secs(45);
    let delete = |b: &mut turnpike_dataplane::proto::message::MessageBuilder<'_>| {
        b.attr(
            turnpike_dataplane::proto::attr::LIFETIME,
            &0u32.to_be_bytes(),
        )
    };
    assert_eq!(h.request(&mut a, method::REFRESH, &delete).code, None);
    // b expires at its default lifetime of 600 s.
    h.advance(600);
    h.server.begin_drain();
    let mut d = h.client("192.0.2.4:1", "dave");
    assert_eq!(h.request(&mut d, method::ALLOCATE, &udp).code, Some(508));

    let udp_listener = listener(&h, "udp");
    assert_eq!(udp_listener.created, 2);
    assert_eq!(udp_listener.ended[AllocationEnd::Deleted as usize], 1);
    assert_eq!(udp_listener.ended[AllocationEnd::Expired as usize], 1);
    assert_eq!(udp_listener.refused[AllocationRefusal::Quota as usize], 1);
    assert_eq!(
        udp_listener.refused[AllocationRefusal::Draining as usize],
        1
    );
    // Lifetimes: 45 s (deleted) and 645 s (expired).
    let mut expected =
        turnpike_contract::histogram::Tally::new(turnpike_contract::histogram::LIFETIME_SECS);
    expected.record(45, 1);
    expected.record(645, 1);
    assert_eq!(udp_listener.lifetimes, expected);
    let stats = h.server.take_stats();
    assert_eq!(
        (stats.allocations_created, stats.allocations_deleted),
        (2, 2)
    );
    assert!(h.server.stats().listeners.is_empty(), "taken");
}
