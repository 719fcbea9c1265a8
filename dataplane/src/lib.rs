//! Turnpike's TURN dataplane.
//!
//! - [`proto`]: the sans-IO STUN/TURN core (no I/O, no clock).
//! - [`config`]: the dataplane config contract (from `turnpike-contract`) compiled for the
//!   core; [`cds`] and [`tls`] are the contract's too.
//! - [`io`]: UDP workers, relay sockets and batched socket calls.
//! - [`offload`]: the kernel relay (eBPF at TC or XDP) for established channels.
//! - [`admin`], [`metrics`], [`status`]: `/livez`, `/readyz`, `/metrics`, `/status`.
//! - [`runtime`]: wires config loading, workers, reload and drain together.

pub mod admin;
pub mod client;
pub mod config;
#[doc(hidden)]
pub mod fuzzing;
pub mod io;
pub mod metrics;
pub mod offload;
pub mod proto;
pub mod runtime;
pub mod status;

pub use turnpike_contract::{cds, tls};
