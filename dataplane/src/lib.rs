//! Turnpike's TURN dataplane.
//!
//! - [`proto`]: the sans-IO STUN/TURN core (no I/O, no clock).
//! - [`config`]: the dataplane config contract (DESIGN.md §3) and its validation.
//! - [`io`]: UDP workers, relay sockets and batched socket calls.
//! - [`admin`], [`metrics`]: `/livez`, `/readyz`, `/metrics`, `/status`.
//! - [`runtime`]: wires config loading, workers, reload and drain together.
//! - [`tls`]: TURN-TLS certificates.

pub mod admin;
pub mod cds;
pub mod client;
pub mod config;
#[doc(hidden)]
pub mod fuzzing;
pub mod io;
pub mod metrics;
pub mod proto;
pub mod runtime;
pub mod tls;
