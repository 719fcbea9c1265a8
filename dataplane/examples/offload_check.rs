//! Loads the kernel relay in the current network namespace and installs one binding, for
//! checking the program by hand in the topology of `dataplane/bpf/netns.sh`:
//!
//!   ip netns exec tpk-g cargo run -p turnpike-dataplane --example offload_check -- \
//!       tc 198.18.10.1:3478 198.18.10.2:40000 198.18.20.1:50000 198.18.20.2:9000 60
//!
//! It holds the binding for the given seconds, then prints the kernel's counters.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use turnpike_dataplane::offload::maps::{Endpoints, Entries, monotonic_deadline};
use turnpike_dataplane::offload::{Kernel, default_interfaces};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mode = args[0].parse().unwrap();
    let e = Endpoints {
        listen: args[1].parse().unwrap(),
        client: args[2].parse().unwrap(),
        relay: args[3].parse().unwrap(),
        peer: args[4].parse().unwrap(),
        client_ifindex: args[6].parse().unwrap(),
        peer_ifindex: args[7].parse().unwrap(),
    };
    let secs: u64 = args[5].parse().unwrap();
    let kernel = Kernel::load(mode, &default_interfaces()).unwrap();
    println!("attached: {:?}", kernel.attached());
    let slot = kernel.take_slot().unwrap();
    let until = Instant::now() + Duration::from_secs(secs);
    let entries = Entries::new(&e, 0x4001, slot, monotonic_deadline(until)).unwrap();
    kernel.install(&entries).unwrap();
    println!("installed");
    std::thread::sleep(Duration::from_secs(secs + 1));
    println!("stats: {:?}", kernel.binding_stats(slot).unwrap());
    println!("events: {:?}", kernel.events());
}
