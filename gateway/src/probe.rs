//! `turnpike probe`: allocate, permit, echo through a peer and report the round trip — a
//! command-line version of a browser's TURN connectivity check.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use turnpike_contract::config::{AuthType, DataplaneConfig, Protocol};
use turnpike_dataplane::client::{ClientError, TurnClient};

/// Server, credentials and peer worked out from a directory of YAML.
#[derive(Debug, Clone)]
pub struct Target {
    pub server: SocketAddr,
    pub username: String,
    pub password: String,
    pub peer: Option<SocketAddr>,
}

/// Derives a probe target from the first (or the named) Gateway of `dir`.
pub fn target_from_dir(dir: &Path, gateway: Option<&str>) -> Result<Target, String> {
    let rendered = crate::standalone::render_dir(dir)?;
    let cfg: &DataplaneConfig = match gateway {
        Some(g) => rendered
            .configs
            .get(
                &crate::objects::ObjectKey::parse(g)
                    .ok_or_else(|| format!("{g:?} is not namespace/name"))?,
            )
            .ok_or_else(|| format!("no rendered config for Gateway {g}"))?,
        None => rendered
            .configs
            .values()
            .next()
            .ok_or("no Gateway of a Turnpike GatewayClass renders in that directory")?,
    };
    let listener = cfg
        .listeners
        .iter()
        .find(|l| l.protocol == Protocol::TurnUdp)
        .ok_or_else(|| format!("Gateway {} has no TURN-UDP listener", cfg.name))?;
    let host = listener
        .public_address
        .as_deref()
        .and_then(|a| a.parse().ok())
        .unwrap_or(listener.address);
    let server = SocketAddr::new(host, listener.public_port.unwrap_or(listener.port));
    let (username, password) = match cfg.auth.kind {
        AuthType::Ephemeral => {
            let secret = cfg.auth.secret.clone().unwrap_or_default();
            let expiry = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
                + 600;
            turnpike_auth::ephemeral_credential(&secret, "turnpike-probe", expiry)
        }
        AuthType::Static => {
            let u = cfg.auth.users.first().ok_or("static auth without users")?;
            (u.username.clone(), u.password.clone())
        }
    };
    let peer = listener
        .routes
        .iter()
        .filter_map(|r| cfg.routes.iter().find(|x| &x.name == r))
        .flat_map(|r| r.endpoints.iter())
        .find(|e| e.net.prefix_len() == e.net.max_prefix_len() && e.ports.0 != 0)
        .map(|e| SocketAddr::new(e.net.addr(), e.ports.0));
    Ok(Target {
        server,
        username,
        password,
        peer,
    })
}

/// Answers every datagram on `addr` with itself, in a background thread.
pub fn start_echo(addr: SocketAddr) -> std::io::Result<SocketAddr> {
    let bound = crate::echo::start(&[addr])?;
    bound
        .first()
        .copied()
        .ok_or_else(|| std::io::Error::other("no echo socket bound"))
}

#[derive(Debug, Clone)]
pub struct ProbeReport {
    pub relayed: SocketAddr,
    pub sent: usize,
    pub received: usize,
    pub rtts: Vec<Duration>,
}

impl ProbeReport {
    /// The round-trip time below which a share `q` of the echoes came back.
    pub fn percentile(&self, q: f64) -> Duration {
        let mut rtts = self.rtts.clone();
        rtts.sort();
        rtts.get(((rtts.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or_default()
    }

    /// The lines `turnpike probe` prints.
    pub fn summary(&self, peer: SocketAddr, use_channel: bool) -> String {
        let via = if use_channel {
            "a channel"
        } else {
            "Send indications"
        };
        format!(
            "relayed address {}\nechoed {}/{} through {peer} via {via}: rtt p50 {:?}, max {:?}\n",
            self.relayed,
            self.received,
            self.sent,
            self.percentile(0.5),
            self.percentile(1.0)
        )
    }
}

/// Allocates on `target.server`, permits `peer`, sends `count` messages over a channel (or
/// Send indications) `interval` apart, waits for each echo, then deletes the allocation.
pub fn probe(
    target: &Target,
    peer: SocketAddr,
    count: usize,
    interval: Duration,
    use_channel: bool,
) -> Result<ProbeReport, ClientError> {
    let mut c = TurnClient::new(target.server, &target.username, &target.password)?;
    let relayed = c.allocate()?;
    if use_channel {
        c.channel_bind(peer, 0x4000)?;
    } else {
        c.create_permission(peer)?;
    }
    let mut rtts = Vec::new();
    for i in 0..count {
        if i > 0 && !interval.is_zero() {
            std::thread::sleep(interval);
        }
        let payload = format!("turnpike-probe {i}");
        let start = Instant::now();
        if use_channel {
            c.send_channel(0x4000, payload.as_bytes())?;
        } else {
            c.send_indication(peer, payload.as_bytes())?;
        }
        match c.recv(Duration::from_secs(1)) {
            Ok((from, data)) if from == peer && data == payload.as_bytes() => {
                rtts.push(start.elapsed())
            }
            Ok(_) | Err(ClientError::Timeout) => {}
            Err(e) => return Err(e),
        }
    }
    let _ = c.release();
    Ok(ProbeReport {
        relayed,
        sent: count,
        received: rtts.len(),
        rtts,
    })
}
