//! Turnpike's wire contracts, shared by the dataplane, the auth service and the control
//! plane without pulling in any of them (DESIGN.md §2–4):
//!
//! - [`config`]: the dataplane config CDS carries (DESIGN.md §3), parsed once and validated
//!   with field paths.
//! - [`cds`]: the CDS messages, their framing, the mTLS identity and the client.
//! - [`credentials`]: the TURN REST API credential formula both sides use.
//! - [`tls`]: a TURN-TLS listener's PEM pair as a rustls server config, and its facts.
//! - [`admin`]: `/livez`, `/readyz` and OpenMetrics `/metrics`, the same in every component.

pub mod admin;
pub mod cds;
pub mod config;
pub mod credentials;
pub mod histogram;
pub mod tls;
