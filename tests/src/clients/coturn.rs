//! coturn's `turnutils_uclient` and `turnutils_peer`.

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::process::{Proc, in_netns, output_text, require_tool};

/// `turnutils_peer`: reflects every datagram to its sender.
pub fn echo_peer(port: u16) -> Proc {
    require_tool("turnutils_peer");
    let p = Proc::spawn(
        "turnutils_peer",
        Command::new("turnutils_peer")
            .args(["-L", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    std::thread::sleep(Duration::from_millis(200));
    p
}

/// What `turnutils_uclient` reported.
#[derive(Debug)]
pub struct UclientReport {
    pub exit: Option<i32>,
    pub lost: Option<u64>,
    pub rtt_ms: Option<f64>,
    pub output: String,
}

/// A `turnutils_uclient` run: `clients` × `messages` echoed through a TURN server to an
/// echo peer over ChannelData (`-c`: no RTCP allocation; `-X`: IPv4 relays unless told
/// otherwise), 160 bytes each unless told otherwise.
#[derive(Debug, Clone)]
pub struct Uclient {
    server: String,
    port: Option<u16>,
    peer: (String, u16),
    clients: u32,
    messages: u32,
    size: Option<u32>,
    pace_ms: Option<u32>,
    flags: Vec<String>,
    ipv4_relays: bool,
    netns: Option<String>,
}

impl Uclient {
    /// Through the TURN server at `server` (an IP; the port is 3478 unless [`Self::port`]),
    /// to the echo peer `peer_ip:peer_port`.
    pub fn new(server: impl Into<String>, peer_ip: impl Into<String>, peer_port: u16) -> Self {
        Uclient {
            server: server.into(),
            port: None,
            peer: (peer_ip.into(), peer_port),
            clients: 1,
            messages: 100,
            size: Some(160),
            pace_ms: None,
            flags: Vec::new(),
            ipv4_relays: true,
            netns: None,
        }
    }

    /// A server and an echo peer both on 127.0.0.1.
    pub fn loopback(port: u16, peer: u16) -> Self {
        Self::new("127.0.0.1", "127.0.0.1", peer).port(port)
    }

    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    pub fn clients(mut self, n: u32) -> Self {
        self.clients = n;
        self
    }

    pub fn messages(mut self, n: u32) -> Self {
        self.messages = n;
        self
    }

    /// Message size; `None` leaves uclient's default.
    pub fn size(mut self, bytes: Option<u32>) -> Self {
        self.size = bytes;
        self
    }

    /// Milliseconds between messages (`-z`).
    pub fn pace_ms(mut self, ms: u32) -> Self {
        self.pace_ms = Some(ms);
        self
    }

    /// TURN REST credentials minted by uclient from the shared secret (`-W`).
    pub fn rest_secret(self, secret: &str) -> Self {
        self.args(&["-W", secret])
    }

    /// Long-term credentials (`-u`, `-w`).
    pub fn user(self, username: &str, password: &str) -> Self {
        self.args(&["-u", username, "-w", password])
    }

    /// TURN over TCP (`-t`).
    pub fn tcp(self) -> Self {
        self.args(&["-t"])
    }

    /// TURN over TLS (`-t -S`).
    pub fn tls(self) -> Self {
        self.args(&["-t", "-S"])
    }

    /// Lets uclient ask for a relay of the peer's family (an IPv6 relay for an IPv6 peer)
    /// instead of always IPv4 (`-X`).
    pub fn relay_family_of_peer(mut self) -> Self {
        self.ipv4_relays = false;
        self
    }

    /// Any other flags, as uclient spells them.
    pub fn args(mut self, flags: &[&str]) -> Self {
        self.flags.extend(flags.iter().map(|f| f.to_string()));
        self
    }

    /// Runs inside network namespace `ns`.
    pub fn in_netns(mut self, ns: &str) -> Self {
        self.netns = Some(ns.into());
        self
    }

    pub fn run(&self) -> UclientReport {
        require_tool("turnutils_uclient");
        let mut cmd = in_netns(self.netns.as_deref(), "turnutils_uclient");
        if let Some(p) = self.port {
            cmd.args(["-p", &p.to_string()]);
        }
        cmd.args(["-e", &self.peer.0, "-r", &self.peer.1.to_string()]);
        cmd.args(["-m", &self.clients.to_string()]);
        cmd.args(["-n", &self.messages.to_string()]);
        if let Some(size) = self.size {
            cmd.args(["-l", &size.to_string()]);
        }
        if let Some(ms) = self.pace_ms {
            cmd.args(["-z", &ms.to_string()]);
        }
        cmd.arg("-c");
        if self.ipv4_relays {
            cmd.arg("-X");
        }
        cmd.args(&self.flags).arg(&self.server);
        let out: Output = cmd.stdin(Stdio::null()).output().unwrap();
        let output = output_text(&out);
        let after = |marker: &str| {
            output
                .lines()
                .find_map(|l| l.split(marker).nth(1))
                .and_then(|r| r.split_whitespace().next())
                .map(str::to_string)
        };
        UclientReport {
            exit: out.status.code(),
            lost: after("Total lost packets ").and_then(|n| n.parse().ok()),
            rtt_ms: after("Average round trip delay ").and_then(|n| n.parse().ok()),
            output,
        }
    }
}

/// [`Uclient::loopback`] with `clients` × `messages` and extra uclient flags.
pub fn uclient_relay(
    port: u16,
    peer: u16,
    clients: u32,
    messages: u32,
    extra: &[&str],
) -> UclientReport {
    Uclient::loopback(port, peer)
        .clients(clients)
        .messages(messages)
        .args(extra)
        .run()
}
