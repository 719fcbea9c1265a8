//! Python aioice and aiortc (`tests/python/`), run with the test venv.

use std::path::Path;
use std::process::Stdio;

use crate::process::{in_netns, output_text, python, repo_root};

/// Runs `tests/python/SCRIPT ARGS…` with the test venv, inside network namespace `netns`
/// when given; returns (success, output).
pub fn python_script(netns: Option<&str>, script: &str, args: &[&str]) -> (bool, String) {
    let out = in_netns(netns, python())
        .arg(repo_root().join("tests/python").join(script))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (out.status.success(), output_text(&out))
}

/// An `aioice_echo.py` run: allocate on `server` with the credentials, then echo 20
/// messages through the relay to `peer`, or expect a TURN error instead.
#[derive(Debug, Clone, Default)]
pub struct Aioice {
    server: String,
    username: String,
    password: String,
    peer: Option<String>,
    transport: Option<&'static str>,
    ca: Option<String>,
    expect_error: Option<u16>,
    netns: Option<String>,
}

impl Aioice {
    pub fn new(server: impl Into<String>, username: &str, password: &str) -> Self {
        Aioice {
            server: server.into(),
            username: username.into(),
            password: password.into(),
            ..Default::default()
        }
    }

    /// The echo peer (`host:port`).
    pub fn peer(mut self, peer: impl Into<String>) -> Self {
        self.peer = Some(peer.into());
        self
    }

    /// TURN over TCP.
    pub fn tcp(mut self) -> Self {
        self.transport = Some("tcp");
        self
    }

    /// TURN over TLS, trusting the CA certificate in `ca`.
    pub fn tls(mut self, ca: &Path) -> Self {
        self.transport = Some("tcp");
        self.ca = Some(ca.display().to_string());
        self
    }

    /// Succeeds only when the Allocate is refused with `code`.
    pub fn expect_error(mut self, code: u16) -> Self {
        self.expect_error = Some(code);
        self
    }

    pub fn in_netns(mut self, ns: &str) -> Self {
        self.netns = Some(ns.into());
        self
    }

    /// (success, output).
    pub fn run(&self) -> (bool, String) {
        let mut args = vec![
            "--server".to_string(),
            self.server.clone(),
            "--username".into(),
            self.username.clone(),
            "--password".into(),
            self.password.clone(),
        ];
        let optional = [
            ("--peer", self.peer.clone()),
            ("--transport", self.transport.map(str::to_string)),
            ("--ca", self.ca.clone()),
            ("--expect-error", self.expect_error.map(|c| c.to_string())),
        ];
        for (flag, value) in optional {
            if let Some(v) = value {
                args.extend([flag.to_string(), v]);
            }
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        python_script(self.netns.as_deref(), "aioice_echo.py", &args)
    }
}
