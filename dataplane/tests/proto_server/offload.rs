//! What the core tells the kernel: a channel is installed while it, its permission and its
//! allocation live, with the earliest deadline, and removed at once when any of them ends.

use std::time::Duration;

use turnpike_dataplane::proto::message::method;
use turnpike_dataplane::proto::{
    AllocId, ChannelRoute, Class, ClientKey, ConnId, OffloadEvent, Transport, attr,
};

use crate::common::Client;
use crate::harness::{Harness, allocate, config, peer};

const PEER: &str = "10.0.0.9:7000";

fn bind(h: &mut Harness, c: &mut Client, number: u16, to: &str) {
    let addr = to.parse().unwrap();
    let r = h.request(c, method::CHANNEL_BIND, &|b| {
        b.attr(
            attr::CHANNEL_NUMBER,
            &[(number >> 8) as u8, number as u8, 0, 0],
        );
        b.xor_address(attr::XOR_PEER_ADDRESS, addr);
    });
    assert_eq!(r.class, Class::Success, "{r:?}");
}

fn events(h: &mut Harness) -> Vec<OffloadEvent> {
    h.server.offload_events().collect()
}

fn installed(h: &mut Harness) -> ChannelRoute {
    match events(h).as_slice() {
        [OffloadEvent::Install(route)] => *route,
        other => panic!("expected one Install, got {other:?}"),
    }
}

fn removed(h: &mut Harness) -> (AllocId, u16) {
    match events(h).as_slice() {
        [OffloadEvent::Remove { alloc, channel }] => (*alloc, *channel),
        other => panic!("expected one Remove, got {other:?}"),
    }
}

/// An offloading server with one UDP client and channel 0x4001 to [`PEER`] bound at t=0.
fn bound() -> (Harness, Client, ChannelRoute) {
    let mut h = Harness::new();
    h.server.set_offload(true, h.now().instant);
    let mut c = h.client("192.0.2.7:4242", "alice");
    allocate(&mut h, &mut c);
    assert!(
        events(&mut h).is_empty(),
        "an allocation alone offloads nothing"
    );
    bind(&mut h, &mut c, 0x4001, PEER);
    let route = installed(&mut h);
    (h, c, route)
}

#[test]
fn without_offload_the_core_says_nothing() {
    let mut h = Harness::new();
    let mut c = h.client("192.0.2.7:4242", "alice");
    allocate(&mut h, &mut c);
    bind(&mut h, &mut c, 0x4001, PEER);
    h.advance(400);
    assert!(events(&mut h).is_empty());
}

#[test]
fn a_bound_channel_is_installed_until_its_permission_expires() {
    let (h, c, route) = bound();
    assert_eq!(route.channel, 0x4001);
    assert_eq!(route.client, c.key);
    assert_eq!(route.peer, PEER.parse().unwrap());
    // The permission (5 min) ends before the channel (10 min) and the allocation (10 min).
    assert_eq!(
        route.offloaded.until,
        h.now().instant + Duration::from_secs(300)
    );
    let (id, _) = h.server.allocations().next().unwrap();
    assert_eq!(route.alloc, id);
}

#[test]
fn refreshes_move_the_deadline_and_expiry_removes_the_channel() {
    let (mut h, mut c, first) = bound();
    h.advance(100);
    assert!(events(&mut h).is_empty(), "nothing changed on a tick");
    // Re-binding refreshes channel and permission: the deadline moves, nothing else.
    bind(&mut h, &mut c, 0x4001, PEER);
    let again = installed(&mut h);
    assert_eq!(
        again.offloaded.until,
        h.now().instant + Duration::from_secs(300)
    );
    assert_eq!((again.alloc, again.channel), (first.alloc, first.channel));
    // A permission for another peer changes nothing for this channel.
    h.request(&mut c, method::CREATE_PERMISSION, &peer("10.0.0.10:1"));
    assert!(events(&mut h).is_empty());
    // No refresh for 5 minutes: the permission expires and the kernel entry goes.
    h.advance(301);
    assert_eq!(removed(&mut h), (first.alloc, 0x4001));
    // A new permission brings the still-bound channel back.
    h.request(&mut c, method::CREATE_PERMISSION, &peer(PEER));
    let back = installed(&mut h);
    assert_eq!(back.channel, 0x4001);
}

#[test]
fn the_allocation_lifetime_caps_the_deadline() {
    let (mut h, mut c, _) = bound();
    h.advance(350);
    let _ = events(&mut h);
    bind(&mut h, &mut c, 0x4001, PEER);
    // The allocation (600 s from t=0) ends before the new permission (350 + 300).
    let route = installed(&mut h);
    assert_eq!(
        route.offloaded.until,
        h.now().instant + Duration::from_secs(250)
    );
    let r = h.request(&mut c, method::REFRESH, &|b| {
        b.u32_attr(attr::LIFETIME, 1200)
    });
    assert_eq!(r.class, Class::Success);
    let route = installed(&mut h);
    assert_eq!(
        route.offloaded.until,
        h.now().instant + Duration::from_secs(300)
    );
}

#[test]
fn deleting_the_allocation_removes_its_channels_at_once() {
    let (mut h, mut c, first) = bound();
    bind(&mut h, &mut c, 0x4002, "10.0.0.11:7000");
    let second = installed(&mut h);
    let r = h.request(&mut c, method::REFRESH, &|b| b.u32_attr(attr::LIFETIME, 0));
    assert_eq!(r.class, Class::Success);
    let mut gone = events(&mut h);
    gone.sort_by_key(|e| match e {
        OffloadEvent::Remove { channel, .. } => *channel,
        OffloadEvent::Install(r) => r.channel,
    });
    assert_eq!(
        gone,
        [first, second].map(|r| OffloadEvent::Remove {
            alloc: r.alloc,
            channel: r.channel
        })
    );
}

#[test]
fn a_revoked_route_removes_the_channel_in_the_same_config_change() {
    let (mut h, _c, first) = bound();
    let mut narrowed = config("").as_ref().clone();
    narrowed.listeners[0].routes =
        turnpike_dataplane::proto::RouteTable::new(vec![turnpike_dataplane::proto::Endpoint {
            net: "10.0.1.0/24".parse().unwrap(),
            ports: (1, 65535),
            counter: 0,
        }]);
    h.apply_config(narrowed);
    assert_eq!(removed(&mut h), (first.alloc, 0x4001));
}

#[test]
fn a_config_change_that_keeps_the_route_keeps_the_channel() {
    let (mut h, _c, _) = bound();
    h.apply_config(config("").as_ref().clone());
    assert!(events(&mut h).is_empty());
}

#[test]
fn stream_clients_stay_in_userspace() {
    let mut h = Harness::new();
    h.server.set_offload(true, h.now().instant);
    let mut c = h.client("192.0.2.7:4242", "alice");
    c.key = ClientKey {
        transport: Transport::Stream(ConnId { slot: 0, seq: 1 }),
        ..c.key
    };
    allocate(&mut h, &mut c);
    bind(&mut h, &mut c, 0x4001, PEER);
    assert!(events(&mut h).is_empty());
}

#[test]
fn turning_offload_on_and_off_installs_and_removes_what_exists() {
    let mut h = Harness::new();
    let mut c = h.client("192.0.2.7:4242", "alice");
    allocate(&mut h, &mut c);
    bind(&mut h, &mut c, 0x4001, PEER);
    h.server.set_offload(true, h.now().instant);
    let route = installed(&mut h);
    h.server.set_offload(false, h.now().instant);
    assert_eq!(removed(&mut h), (route.alloc, 0x4001));
}

#[test]
fn an_allocation_past_its_lifetime_relays_nothing_even_before_the_tick() {
    let (mut h, c, _) = bound();
    let frame = [0x40, 0x01, 0, 2, b'h', b'i'];
    assert!(h.send(&c, &frame).is_some(), "relayed while alive");
    // Past the allocation's 600 s, with no tick run yet (the kernel's deadline is exact,
    // userspace must not relay what the kernel passes up in that window).
    h.elapsed += Duration::from_secs(601);
    assert_eq!(h.send(&c, &frame), None);
    assert_eq!(h.server.stats().dropped_no_allocation, 1);
}
