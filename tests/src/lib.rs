//! Helpers for Turnpike's end-to-end tests (the tests live in `tests/tests/`): start the
//! real `turnpike` binary and real third-party peers (coturn's tools, Python aioice/aiortc)
//! and read what they report.
#![allow(clippy::unwrap_used)] // test support: a failure here is a test failure

pub mod clients;
pub mod cluster;
pub mod dataplane;
pub mod fixtures;
pub mod http;
pub mod k8s;
pub mod media;
pub mod netlab;
pub mod ports;
pub mod process;
pub mod standalone;

pub use clients::aioice::{Aioice, python_script};
pub use clients::coturn::{Uclient, UclientReport, echo_peer, uclient_relay};
pub use dataplane::Dataplane;
pub use fixtures::{
    ServerCert, TestCa, base64_decode, rest_credentials, served_serial, stream_config, udp_config,
    yaml_to_json,
};
pub use http::{http_get, http_get_at, http_get_with, metric};
pub use ports::{free_tcp_port, free_udp_port};
pub use process::{Proc, in_netns, output_text, python, repo_root, require_tool, turnpike_bin};
