//! The sans-IO STUN/TURN core: codec, integrity, credentials, nonces, access control and
//! the per-worker server state machine. Nothing here does I/O or reads a clock.

pub mod access;
pub mod allocation;
pub mod attr;
pub mod auth;
pub mod channel;
pub mod config;
pub mod error;
pub mod framing;
pub mod integrity;
pub mod message;
pub mod nonce;
pub mod offload;
pub mod ratelimit;
pub mod server;
pub mod stats;

pub use access::{CounterId, Endpoint, RouteTable};
pub use allocation::{AllocId, ClientKey, ConnId, Transport};
pub use auth::Credentials;
pub use config::{Limits, ListenerPolicy, ServerConfig, UserQuota};
pub use error::{ErrorCode, ParseError, RelayError};
pub use message::{Class, Message, MessageBuilder};
pub use nonce::NonceKey;
pub use offload::{ChannelRoute, OffloadEvent, Offloaded};
pub use server::{
    Destination, Family, Now, OpenedRelay, PEER_HEADROOM, PEER_TAILROOM, Payload, RelayPorts,
    RelayRequest, Server, Transmit,
};
pub use stats::{AllocationEnd, AllocationRefusal, AuthFailure, ListenerStats, RelayCount, Stats};
