//! The I/O shell around the protocol core: UDP workers, relay sockets, batched syscalls.

pub mod batch;
pub mod limits;
pub mod relay;
pub mod worker;

pub use relay::{RelayAddrs, Reservations, relay_addrs};
pub use worker::{ActiveConfig, Command, ListenerRuntime, WorkerHandle, WorkerShared, spawn};
