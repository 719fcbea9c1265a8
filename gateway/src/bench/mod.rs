//! `turnpike bench`: a TURN load generator for capacity planning and for comparing servers.
//!
//! Many allocations across threads, each with its own client socket (or TCP/TLS
//! connection), send timestamped packets through the server to an echo peer and back.
//! Every packet carries its flow, sequence number and send time ([`packet`]), so loss,
//! reordering, duplicates and round-trip percentiles come from the packets themselves.
//! Modes: `relay` (the load), `allocate` (allocation cycles per second with full
//! authentication) and `hold N` (N idle allocations, to measure a server's memory).

mod churn;
mod flows;
mod link;
mod packet;
mod report;
mod session;
mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub use link::Transport;
pub use report::Report;
use report::Tally;
use session::Bind;

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{0}")]
    Invalid(String),
    #[error("echo peer: {0}")]
    Echo(std::io::Error),
    #[error("load thread: {0}")]
    Io(#[from] std::io::Error),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("a load thread panicked")]
    Panicked,
}

#[derive(Debug, Clone, Copy, clap::Subcommand)]
pub enum Mode {
    /// Relay timestamped packets to the echo peer and back (the default).
    Relay,
    /// Allocation cycles with full authentication (challenge, allocate, refresh, delete)
    /// for the duration, `--concurrency` in flight per thread.
    Allocate,
    /// Open N allocations with a permission each and hold them idle for the duration.
    Hold {
        /// Allocations to hold.
        allocations: usize,
    },
}

#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub mode: Option<Mode>,
    /// Run only a batched UDP echo peer on this address (until interrupted), for the load
    /// of another `turnpike bench` to be relayed to.
    #[arg(long, value_name = "ADDR")]
    pub echo: Option<SocketAddr>,
    /// TURN server.
    #[arg(long, global = true, default_value = "127.0.0.1:3478")]
    pub server: SocketAddr,
    /// How clients reach the server; relays to the peer are UDP in every case.
    #[arg(long, global = true, value_enum, default_value_t = Transport::Udp)]
    pub transport: Transport,
    /// TURN REST API shared secret: each allocation gets its own ephemeral username.
    #[arg(
        long,
        global = true,
        env = "TURNPIKE_BENCH_SECRET",
        conflicts_with = "user"
    )]
    pub secret: Option<String>,
    /// Static credentials `USER:PASSWORD`, shared by every allocation.
    #[arg(long, global = true)]
    pub user: Option<String>,
    /// The echo peer; without it an echo peer runs in this process on 127.0.0.1.
    #[arg(long, global = true)]
    pub peer: Option<SocketAddr>,
    /// Bind client sockets to addresses of this network, one per allocation in turn
    /// (e.g. 127.1.0.0/16): a server limits unauthenticated answers per source address, as
    /// it should, and real clients come from many.
    #[arg(long, global = true, value_name = "CIDR")]
    pub sources: Option<ipnet::IpNet>,
    /// Allocations (`relay`).
    #[arg(long, short = 'n', global = true, default_value_t = 100)]
    pub allocations: usize,
    /// Load threads.
    #[arg(long, short = 't', global = true, default_value_t = 1)]
    pub threads: usize,
    /// Payload bytes per packet (at least 20: flow, sequence, timestamp).
    #[arg(long, global = true, default_value_t = 160)]
    pub size: usize,
    /// Packets per second per allocation (50: one Opus stream).
    #[arg(long, global = true, default_value_t = 50.0, conflicts_with_all = ["total_rate", "flat_out"])]
    pub rate: f64,
    /// Packets per second across all allocations, instead of `--rate`.
    #[arg(long, global = true)]
    pub total_rate: Option<f64>,
    /// No pacing: send as fast as the loop goes.
    #[arg(long, global = true)]
    pub flat_out: bool,
    /// Packets sent back to back each time an allocation is due (a video frame); the
    /// rate stays in packets per second, so frames go out rate/burst times a second.
    #[arg(long, global = true, default_value_t = 1)]
    pub burst: usize,
    /// Use Send/Data indications instead of a channel.
    #[arg(long, global = true)]
    pub indications: bool,
    /// Send the same load straight to the peer over UDP, with no TURN server: the
    /// baseline a relay's cost is measured against (the server is not contacted).
    #[arg(long, global = true, conflicts_with = "indications")]
    pub direct: bool,
    /// How long the load (or the hold, or the allocation cycles) lasts.
    #[arg(long, short = 'd', global = true, default_value = "10s", value_parser = crate::duration::parse)]
    pub duration: Duration,
    /// Stop each allocation after this many packets instead (the run ends earlier when
    /// all have sent them).
    #[arg(long, global = true)]
    pub packets: Option<u64>,
    /// How long to wait for the last echoes after the load.
    #[arg(long, global = true, default_value = "1s", value_parser = crate::duration::parse)]
    pub drain: Duration,
    /// Allocation cycles in flight per thread (`allocate`).
    #[arg(long, global = true, default_value_t = 64)]
    pub concurrency: usize,
    /// TLS: trust this CA (PEM) for the server's certificate.
    #[arg(long, global = true)]
    pub ca: Option<PathBuf>,
    /// TLS: accept any server certificate (self-signed test servers).
    #[arg(long, global = true)]
    pub insecure: bool,
    /// TLS: the server name to ask for and verify.
    #[arg(long, global = true, default_value = "localhost")]
    pub server_name: String,
    /// `hold`: write `open` to this file once every client socket exists (then wait a
    /// second) and `held` once every allocation is open, for a harness that measures the
    /// server's memory, user space and kernel, between the two.
    #[arg(long, global = true)]
    pub mark: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long, global = true)]
    pub json: bool,
    /// No progress lines on standard error.
    #[arg(long, short = 'q', global = true)]
    pub quiet: bool,
}

/// Where each allocation's credentials come from.
#[derive(Debug, Clone)]
pub enum Credentials {
    /// TURN REST API: `expiry:bench-<flow>` signed with the secret.
    Rest {
        secret: String,
        expiry: u64,
    },
    Static {
        username: String,
        password: String,
    },
}

impl Credentials {
    pub fn for_flow(&self, flow: u32) -> (String, String) {
        match self {
            Credentials::Rest { secret, expiry } => {
                turnpike_auth::ephemeral_credential(secret, &format!("bench-{flow}"), *expiry)
            }
            Credentials::Static { username, password } => (username.clone(), password.clone()),
        }
    }
}

/// Tells a harness when a phase has been reached.
#[derive(Debug, Clone)]
pub struct Mark(PathBuf);

impl Mark {
    /// Replaces the file's content with `phase` (`open`: every client socket exists and
    /// no allocation yet; `held`: every allocation is open).
    fn reached(&self, phase: &str) {
        if let Err(e) = std::fs::write(&self.0, format!("{phase}\n")) {
            tracing::warn!(file = %self.0.display(), error = %e, "cannot write the mark file");
        }
    }
}

/// Everything the load threads share.
pub struct Plan {
    pub server: SocketAddr,
    pub transport: Transport,
    pub tls: Option<link::TlsClient>,
    pub credentials: Credentials,
    pub peer: SocketAddr,
    pub sources: Option<ipnet::IpNet>,
    pub bind: Bind,
    pub size: usize,
    /// Time between two sends of one allocation; `None`: flat out.
    pub interval: Option<Duration>,
    pub burst: usize,
    pub packets: Option<u64>,
    pub duration: Duration,
    pub drain: Duration,
    pub lifetime: u32,
    pub hold: bool,
    pub mark: Option<Mark>,
    /// Send times in packets count from here.
    pub epoch: Instant,
    /// No TURN: flows send their packets straight to the peer.
    pub direct: bool,
}

impl Plan {
    /// The local address of flow `id`'s socket.
    pub fn source(&self, id: u32) -> Option<std::net::IpAddr> {
        let net = self.sources?;
        let id = u128::from(id);
        Some(match net {
            // Skip the network and broadcast addresses where the prefix has them.
            ipnet::IpNet::V4(v4) => {
                let size = 1u128 << (32 - v4.prefix_len());
                let (first, hosts) = if size > 2 { (1, size - 2) } else { (0, size) };
                let base = u128::from(u32::from(v4.network()));
                std::net::Ipv4Addr::from((base + first + id % hosts) as u32).into()
            }
            ipnet::IpNet::V6(v6) => {
                let bits = 128 - u32::from(v6.prefix_len());
                let hosts = if bits >= 64 {
                    u128::from(u64::MAX)
                } else {
                    (1u128 << bits) - 1
                };
                let base = u128::from(v6.network());
                std::net::Ipv6Addr::from(base + 1 + id % hosts.max(1)).into()
            }
        })
    }
}

/// Counters the load threads publish once per loop turn, for progress lines.
#[derive(Default)]
pub struct Live {
    pub sent: AtomicU64,
    pub received: AtomicU64,
    pub ready: AtomicU64,
}

/// Runs a benchmark and returns its report.
pub fn run(args: &BenchArgs) -> Result<Report, BenchError> {
    let mode = args.mode.unwrap_or(Mode::Relay);
    let plan = plan(args, mode)?;
    let plan = Arc::new(plan);
    let live = Arc::new(Live::default());
    let threads = args.threads.max(1);
    let (mode_name, allocations) = match mode {
        Mode::Relay => ("relay", args.allocations),
        Mode::Hold { allocations } => ("hold", allocations),
        Mode::Allocate => ("allocate", args.concurrency * threads),
    };
    if allocations < threads {
        return Err(BenchError::Invalid(format!(
            "{allocations} allocations cannot be spread over {threads} threads"
        )));
    }
    if allocations / threads >= usize::from(u16::MAX) {
        return Err(BenchError::Invalid(
            "at most 65,534 allocations per thread: add --threads".into(),
        ));
    }
    if matches!(mode, Mode::Hold { .. }) || allocations > 1000 {
        // One descriptor per allocation (more with TLS): take what the hard limit allows.
        let _ = turnpike_dataplane::io::limits::raise_open_files();
    }
    let barrier = Arc::new(Barrier::new(threads + 1));
    let mut handles = Vec::with_capacity(threads);
    for t in 0..threads {
        let (plan, live, barrier) = (plan.clone(), live.clone(), barrier.clone());
        // Allocations split as evenly as they go: the first threads take one more.
        let first = t * (allocations / threads) + t.min(allocations % threads);
        let count = allocations / threads + usize::from(t < allocations % threads);
        let concurrency = args.concurrency;
        handles.push(std::thread::spawn(move || match mode {
            Mode::Allocate => churn::run(&plan, &live, t, threads, concurrency, &barrier),
            _ => flows::run(&plan, &live, first, count, &barrier),
        }));
    }
    barrier.wait();
    let started = Instant::now();
    if !args.quiet {
        progress(&handles, &live, mode_name, started);
    }
    let mut tally = Tally::default();
    let mut window = Duration::ZERO;
    for h in handles {
        let (t, w) = h.join().map_err(|_| BenchError::Panicked)??;
        tally.merge(&t);
        window = window.max(w);
    }
    let to = if plan.direct {
        format!("{} directly (no TURN)", plan.peer)
    } else {
        args.server.to_string()
    };
    Ok(Report::new(mode_name, args.transport, to, &tally, window))
}

/// A progress line every [`PROGRESS_EVERY`] while the load threads run (checked every
/// 100 ms, so a short run ends without waiting for the next line).
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

fn progress<T>(handles: &[std::thread::JoinHandle<T>], live: &Live, mode: &str, started: Instant) {
    let mut last = (0, 0, 0);
    let mut next = started + PROGRESS_EVERY;
    while !handles.iter().all(|h| h.is_finished()) {
        std::thread::sleep(Duration::from_millis(100));
        if Instant::now() < next {
            continue;
        }
        next += PROGRESS_EVERY;
        let now = (
            live.sent.load(Ordering::Relaxed),
            live.received.load(Ordering::Relaxed),
            live.ready.load(Ordering::Relaxed),
        );
        if now == last {
            continue;
        }
        eprintln!(
            "bench {mode} {:>5.1} s: {} allocations, {} sent, {} received",
            started.elapsed().as_secs_f64(),
            now.2,
            now.0,
            now.1
        );
        last = now;
    }
}

fn plan(args: &BenchArgs, mode: Mode) -> Result<Plan, BenchError> {
    if args.size < packet::HEADER || args.size > 8192 {
        return Err(BenchError::Invalid(format!(
            "--size {}: between {} and 8192 bytes",
            args.size,
            packet::HEADER
        )));
    }
    if let Some(net) = args.sources
        && net.addr().is_ipv4() != args.server.is_ipv4()
    {
        return Err(BenchError::Invalid(format!(
            "--sources {net} and --server {} are of different address families",
            args.server
        )));
    }
    if args.burst == 0 {
        return Err(BenchError::Invalid("--burst must be at least 1".into()));
    }
    if args.direct && (args.transport != Transport::Udp || !matches!(mode, Mode::Relay)) {
        return Err(BenchError::Invalid(
            "--direct measures the relay mode over UDP only".into(),
        ));
    }
    let credentials = match (&args.secret, &args.user) {
        (Some(secret), _) => Credentials::Rest {
            secret: secret.clone(),
            expiry: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
                + args.duration.as_secs()
                + 3600,
        },
        (None, Some(user)) => {
            let (username, password) = user
                .split_once(':')
                .ok_or_else(|| BenchError::Invalid("--user takes USER:PASSWORD".into()))?;
            Credentials::Static {
                username: username.into(),
                password: password.into(),
            }
        }
        (None, None) => {
            return Err(BenchError::Invalid(
                "credentials needed: --secret (TURN REST API) or --user USER:PASSWORD".into(),
            ));
        }
    };
    // The in-process echo's thread runs until the process exits.
    let peer = match args.peer {
        Some(p) => p,
        None => crate::echo::start(&[SocketAddr::from(([127, 0, 0, 1], 0))])
            .map_err(BenchError::Echo)?[0],
    };
    let per_allocation = match (args.flat_out, args.total_rate) {
        (true, _) => None,
        (false, Some(total)) => Some(total / args.allocations.max(1) as f64),
        (false, None) => Some(args.rate),
    };
    let interval = match per_allocation {
        None => None,
        Some(r) if r > 0.0 && r.is_finite() => Some(Duration::from_secs_f64(args.burst as f64 / r)),
        Some(r) => return Err(BenchError::Invalid(format!("rate {r}: must be above 0"))),
    };
    let tls = match args.transport {
        Transport::Tls => Some(tls::client(args)?),
        _ => None,
    };
    let hold = matches!(mode, Mode::Hold { .. });
    let bind = if hold || args.indications {
        Bind::Permission
    } else {
        Bind::Channel(turnpike_dataplane::proto::channel::MIN_CHANNEL)
    };
    Ok(Plan {
        server: args.server,
        transport: args.transport,
        tls,
        credentials,
        peer,
        sources: args.sources,
        bind,
        size: args.size,
        interval,
        burst: args.burst,
        packets: args.packets,
        duration: args.duration,
        drain: args.drain,
        // Long enough that nothing needs refreshing during a run.
        lifetime: 3600,
        hold,
        mark: args.mark.clone().map(Mark),
        epoch: Instant::now(),
        direct: args.direct,
    })
}
