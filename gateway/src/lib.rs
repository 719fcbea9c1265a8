//! Turnpike's control plane: Gateway API objects in, dataplane configs and status out.
//!
//! - [`crd`]: our CRDs, GatewayConfig and StaticService.
//! - [`objects`]: the set of objects the renderer reads, from whatever source.
//! - [`render`]: the pure renderer (configs, statuses, managed Deployment/Service).

pub mod bench;
pub mod cds;
pub mod crd;
pub mod duration;
pub mod echo;
pub mod manifests;
pub mod objects;
pub mod operator;
pub mod probe;
pub mod publish;
pub mod render;
pub mod rotation;
pub mod source;
pub mod standalone;
pub mod status_cmd;
pub mod token;
