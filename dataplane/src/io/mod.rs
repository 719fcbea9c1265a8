//! The I/O shell around the protocol core: workers (UDP listeners, TCP/TLS connections),
//! relay sockets, batched syscalls.

pub mod admission;
pub mod batch;
pub mod limits;
pub mod relay;
pub mod stream;
pub mod worker;

pub use admission::Admission;
pub use relay::{RelayAddrs, Reservations, relay_addrs};
pub use worker::{
    ActiveConfig, Command, ListenerRuntime, StreamLimits, WorkerHandle, WorkerShared, spawn,
};
