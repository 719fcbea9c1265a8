//! Helpers for Turnpike's end-to-end tests (the tests live in `tests/tests/`): start the
//! real `turnpike` binary, real third-party peers (coturn's tools, Python aioice/aiortc),
//! and read what they report.
#![allow(clippy::unwrap_used)] // test support: a failure here is a test failure

pub mod cluster;
pub mod k8s;
pub mod standalone;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The `turnpike` binary under test: `$TURNPIKE_BIN`, else the release build, else debug.
pub fn turnpike_bin() -> PathBuf {
    if let Ok(p) = std::env::var("TURNPIKE_BIN") {
        return PathBuf::from(p);
    }
    for profile in ["release", "debug"] {
        let p = repo_root().join("target").join(profile).join("turnpike");
        if let Ok(built) = std::fs::metadata(&p).and_then(|m| m.modified()) {
            // `cargo test` does not rebuild the binary; a stale one tests old code.
            let newest = newest_source();
            assert!(
                newest.as_ref().is_none_or(|(t, _)| *t <= built),
                "{} is older than {}: run `cargo build --release` (tests/run.sh does)",
                p.display(),
                newest
                    .map(|(_, f)| f.display().to_string())
                    .unwrap_or_default()
            );
            return p;
        }
    }
    panic!("no turnpike binary: run `cargo build --release` or tests/run.sh first");
}

/// The most recently modified source file of the crates the binary is built from.
fn newest_source() -> Option<(std::time::SystemTime, PathBuf)> {
    fn walk(path: &Path, newest: &mut Option<(std::time::SystemTime, PathBuf)>) {
        if let Ok(entries) = std::fs::read_dir(path) {
            for e in entries.flatten() {
                walk(&e.path(), newest);
            }
        } else if path.extension().is_some_and(|x| x == "rs" || x == "toml")
            && let Ok(t) = std::fs::metadata(path).and_then(|m| m.modified())
            && newest.as_ref().is_none_or(|(n, _)| t > *n)
        {
            *newest = Some((t, path.to_path_buf()));
        }
    }
    static NEWEST: std::sync::OnceLock<Option<(std::time::SystemTime, PathBuf)>> =
        std::sync::OnceLock::new();
    NEWEST
        .get_or_init(|| {
            let mut newest = None;
            for krate in ["dataplane", "auth-service", "gateway"] {
                walk(&repo_root().join(krate).join("src"), &mut newest);
                walk(&repo_root().join(krate).join("Cargo.toml"), &mut newest);
            }
            newest
        })
        .clone()
}

/// The Python with aioice/aiortc installed (tests/run.sh creates it).
pub fn python() -> PathBuf {
    if let Ok(p) = std::env::var("TURNPIKE_PYTHON") {
        return PathBuf::from(p);
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let p = PathBuf::from(home).join(".cache/turnpike/venv/bin/python");
    assert!(
        p.exists(),
        "no Python venv at {}: run tests/run.sh once",
        p.display()
    );
    p
}

/// Requires a third-party tool, failing (never skipping) when tests/run.sh did not
/// install it.
pub fn require_tool(name: &str) {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|d| d.join(name).is_file()))
        .unwrap_or(false);
    assert!(found, "{name} is not installed: run tests/run.sh");
}

/// An even loopback port free on both UDP and TCP, so one number serves a TURN listener;
/// the odd port above it is free too and handed to nobody else, because coturn's
/// `turnutils_peer` listens on a port and the next one (RTP and RTCP) and
/// `turnutils_uclient` sends to both.
///
/// Ports come from below the kernel's ephemeral range (32768–60999 by default), so no
/// outgoing connection, and no other test's `bind(0)`, can take a port between the moment
/// it is handed out and the moment the process under test binds it. A process-wide counter
/// never hands out the same pair twice; the pid picks where a process starts, so test
/// binaries running side by side start far apart, and the bind check skips ports that are
/// held right now.
pub fn free_udp_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const PAIRS: u32 = 6_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let start = (std::process::id().wrapping_mul(2_654_435_761) >> 8) % PAIRS;
    let _ = NEXT.compare_exchange(u32::MAX, start, Ordering::Relaxed, Ordering::Relaxed);
    let free = |port: u16| {
        UdpSocket::bind(("127.0.0.1", port)).is_ok()
            && TcpListener::bind(("127.0.0.1", port)).is_ok()
    };
    for _ in 0..PAIRS {
        let port = (FIRST + 2 * (NEXT.fetch_add(1, Ordering::Relaxed) % PAIRS)) as u16;
        if free(port) && free(port + 1) {
            return port;
        }
    }
    panic!(
        "no free loopback port pair in {FIRST}..{}",
        FIRST + 2 * PAIRS
    );
}

/// A loopback TCP port nobody else will be handed (see [`free_udp_port`]).
pub fn free_tcp_port() -> u16 {
    free_udp_port()
}

/// Minimal HTTP/1.1 GET on loopback: (status, body).
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    http_get_with(port, path, &[]).map(|(status, _, body)| (status, body))
}

/// GET with extra request headers: (status, response head, body).
pub fn http_get_with(
    port: u16,
    path: &str,
    headers: &[(&str, &str)],
) -> Option<(u16, String, String)> {
    http_get_at(
        std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        path,
        headers,
    )
}

/// GET from any address (a pod's, a Service's): (status, response head, body).
pub fn http_get_at(
    addr: std::net::SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Option<(u16, String, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{extra}\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    Some((status, head.to_string(), body.to_string()))
}

/// A Prometheus sample value from `/metrics` text (`name{labels}` exactly as rendered).
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Everything a finished command printed, stdout then stderr.
pub fn output_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A child process killed when dropped.
pub struct Proc {
    pub child: Child,
    pub name: String,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    pub fn spawn(name: &str, cmd: &mut Command) -> Proc {
        let child = cmd
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Proc {
            child,
            name: name.to_string(),
        }
    }

    /// Sends a signal (e.g. `libc::SIGTERM` as a number) through `kill(1)`.
    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .args([format!("-{sig}"), self.child.id().to_string()])
            .status();
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

/// A dataplane config for tests: one TURN-UDP listener on 127.0.0.1:`port` routed to
/// `endpoints`, with `auth` given as YAML (e.g. `{type: ephemeral, secret: s}`).
pub fn udp_config(port: u16, auth: &str, endpoints: &[&str]) -> String {
    let eps: Vec<String> = endpoints.iter().map(|e| format!("\"{e}\"")).collect();
    format!(
        "version: v1alpha1\nname: default/test\ngeneration: 1\nrealm: turnpike.test\n\
         auth: {auth}\nlimits: {{maxAllocationsPerUser: 1000}}\nlisteners:\n  \
         - {{name: udp, protocol: TURN-UDP, address: 127.0.0.1, port: {port}, routes: [default/echo]}}\n\
         routes:\n  - {{name: default/echo, endpoints: [{}]}}\n",
        eps.join(", ")
    )
}

/// A dataplane config with TURN-TCP on `tcp_port` and TURN-TLS on `tls_port` (serving
/// `cert`), both on 127.0.0.1 and routed to `endpoints`.
pub fn stream_config(
    tcp_port: u16,
    tls_port: u16,
    cert: &ServerCert,
    secret: &str,
    endpoints: &[&str],
) -> String {
    let indent = |pem: &str| {
        pem.lines()
            .map(|l| format!("        {l}\n"))
            .collect::<String>()
    };
    let eps: Vec<String> = endpoints.iter().map(|e| format!("\"{e}\"")).collect();
    format!(
        "version: v1alpha1\nname: default/test\ngeneration: 1\nrealm: turnpike.test\n\
         auth: {{type: ephemeral, secret: {secret}}}\n\
         limits: {{maxAllocationsPerUser: 1000}}\nlisteners:\n\
         \x20 - {{name: tcp, protocol: TURN-TCP, address: 127.0.0.1, port: {tcp_port}, routes: [default/echo]}}\n\
         \x20 - name: tls\n    protocol: TURN-TLS\n    address: 127.0.0.1\n    port: {tls_port}\n    routes: [default/echo]\n\
         \x20   tls:\n      certPem: |\n{}      keyPem: |\n{}\
         routes:\n  - {{name: default/echo, endpoints: [{}]}}\n",
        indent(&cert.cert_pem),
        indent(&cert.key_pem),
        eps.join(", ")
    )
}

/// A running `turnpike dataplane --config FILE`.
pub struct Dataplane {
    pub proc: Proc,
    pub dir: tempfile::TempDir,
    pub admin: u16,
    pub log: PathBuf,
}

impl Dataplane {
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("dataplane.yaml")
    }

    pub fn start(yaml: &str) -> Dataplane {
        Self::start_with(yaml, &[])
    }

    pub fn start_with(yaml: &str, extra: &[&str]) -> Dataplane {
        let dp = Self::spawn(yaml, extra);
        dp.wait_ready(Duration::from_secs(10));
        dp
    }

    /// Starts the dataplane without waiting for it to become ready.
    pub fn spawn(yaml: &str, extra: &[&str]) -> Dataplane {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("dataplane.yaml");
        std::fs::write(&cfg, yaml).unwrap();
        let admin = free_tcp_port();
        let log = dir.path().join("dataplane.log");
        let logf = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(turnpike_bin());
        cmd.args(["dataplane", "--config"])
            .arg(&cfg)
            .args(["--workers", "2", "--admin", &format!("127.0.0.1:{admin}")])
            .args(extra)
            .env("RUST_LOG", "info,turnpike_dataplane=debug")
            .stdout(logf.try_clone().unwrap())
            .stderr(logf);
        let proc = Proc::spawn("turnpike dataplane", &mut cmd);
        Dataplane {
            proc,
            dir,
            admin,
            log,
        }
    }

    pub fn wait_ready(&self, timeout: Duration) {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if let Some((200, _)) = http_get(self.admin, "/readyz") {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("dataplane not ready; log:\n{}", self.log_text());
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn metrics(&self) -> String {
        http_get(self.admin, "/metrics").unwrap().1
    }

    pub fn status(&self) -> String {
        http_get(self.admin, "/status").unwrap().1
    }

    /// Polls `/metrics` until `series` reaches at least `value`.
    pub fn wait_metric(&self, series: &str, value: f64, timeout: Duration) -> f64 {
        let end = Instant::now() + timeout;
        loop {
            let v = metric(&self.metrics(), series).unwrap_or(0.0);
            if v >= value || Instant::now() > end {
                return v;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

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

pub fn uclient(args: &[&str]) -> UclientReport {
    uclient_in(None, args)
}

/// `turnutils_uclient`, inside network namespace `netns` when given.
pub fn uclient_in(netns: Option<&str>, args: &[&str]) -> UclientReport {
    require_tool("turnutils_uclient");
    let out: Output = in_netns(netns, "turnutils_uclient")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let output = output_text(&out);
    let lost = output
        .lines()
        .find_map(|l| l.split("Total lost packets ").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok());
    let rtt_ms = output
        .lines()
        .find_map(|l| l.split("Average round trip delay ").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok());
    UclientReport {
        exit: out.status.code(),
        lost,
        rtt_ms,
        output,
    }
}

/// `turnutils_uclient` relaying through the TURN server on 127.0.0.1:`port` to the echo
/// peer on 127.0.0.1:`peer`: `clients` × `messages` of 160 bytes over ChannelData (add
/// `-s` to `extra` for Send indications), no RTCP allocation, IPv4 relays.
pub fn uclient_relay(
    port: u16,
    peer: u16,
    clients: u32,
    messages: u32,
    extra: &[&str],
) -> UclientReport {
    let (port, peer, clients, messages) = (
        port.to_string(),
        peer.to_string(),
        clients.to_string(),
        messages.to_string(),
    );
    let mut args = vec![
        "-p",
        &port,
        "-e",
        "127.0.0.1",
        "-r",
        &peer,
        "-m",
        &clients,
        "-n",
        &messages,
        "-l",
        "160",
        "-c",
        "-X",
    ];
    args.extend_from_slice(extra);
    args.push("127.0.0.1");
    uclient(&args)
}

/// `timeout 120 PROGRAM`, run inside network namespace `netns` when given.
pub fn in_netns(netns: Option<&str>, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = Command::new("timeout");
    c.arg("120");
    if let Some(ns) = netns {
        c.args(["ip", "netns", "exec", ns]);
    }
    c.arg(program);
    c
}

/// Runs a Python script from `tests/python/` with the test venv; returns (success, output).
pub fn python_script(script: &str, args: &[&str]) -> (bool, String) {
    python_script_in(None, script, args)
}

/// [`python_script`] inside network namespace `netns` when given.
pub fn python_script_in(netns: Option<&str>, script: &str, args: &[&str]) -> (bool, String) {
    let out = in_netns(netns, python())
        .arg(repo_root().join("tests/python").join(script))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (out.status.success(), output_text(&out))
}

/// TURN REST API credentials for `user`, valid `ttl` seconds: `(expiry:user, password)`.
pub fn rest_credentials(secret: &str, user: &str, ttl: u64) -> (String, String) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let username = format!("{}:{user}", now + ttl);
    let password = turnpike_dataplane::proto::auth::rest_password(secret, &username);
    (username, password)
}

/// One YAML document as JSON (None when it does not parse).
pub fn yaml_to_json(doc: &str) -> Option<serde_json::Value> {
    serde_yaml_ng::from_str(doc).ok()
}

pub fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap()
}

/// A certificate authority for TURN-TLS tests and the server certificates it signs.
pub struct TestCa {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    pub cert_pem: String,
}

/// A server certificate: PEM pair and the serial `openssl x509 -serial` prints.
pub struct ServerCert {
    pub cert_pem: String,
    pub key_pem: String,
    pub serial: String,
}

impl TestCa {
    pub fn new() -> TestCa {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Turnpike test CA");
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        TestCa {
            cert_pem: cert.pem(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// A certificate for `names` (DNS names or IP addresses) with a fresh random serial.
    pub fn server_cert(&self, names: &[&str]) -> ServerCert {
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        let serial: [u8; 8] = rand::random();
        let serial = [&[0x01u8][..], &serial].concat();
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        ServerCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            serial: serial.iter().map(|b| format!("{b:02X}")).collect(),
        }
    }
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

/// The serial (hex, upper case) of the certificate a TLS server on 127.0.0.1:`port`
/// presents to a new connection, read with `openssl s_client`.
pub fn served_serial(port: u16) -> Option<String> {
    require_tool("openssl");
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "timeout 10 openssl s_client -connect 127.0.0.1:{port} </dev/null 2>/dev/null | openssl x509 -noout -serial"
        ))
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .strip_prefix("serial=")
        .map(str::to_uppercase)
}
