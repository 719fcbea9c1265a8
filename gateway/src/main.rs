//! The `turnpike` binary.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "turnpike",
    version,
    about = "Kubernetes media gateway for WebRTC"
)]
struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "TURNPIKE_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Control plane on a directory of Gateway API YAML, with the dataplanes in-process.
    Run(RunArgs),
    /// Print the conditions of every Gateway and route of a running `turnpike run`.
    Status(StatusArgs),
    /// Control plane against the Kubernetes API: watches Gateway API objects, serves CDS,
    /// writes status and runs a dataplane Deployment + Service per Gateway.
    Operator(OperatorArgs),
    /// Run one TURN dataplane.
    Dataplane(DataplaneArgs),
    /// Check a TURN server: allocate, permit a peer, echo through it, report the RTT.
    Probe(ProbeArgs),
    /// Run the auth service (`GET /ice-config`), following every Gateway over CDS.
    Auth(AuthArgs),
    /// Print our CRDs (generated from the Rust types) as YAML.
    Crds,
    /// Mint an HS256 token for the auth service from a directory's GatewayConfig (for
    /// trying things out; application servers mint their own).
    Token(TokenArgs),
    /// A UDP echo backend: reflects every datagram to its sender (for tests and demos).
    Echo(EchoArgs),
    /// Load generator: allocations × rate through a TURN server to an echo peer and back;
    /// loss, reordering, RTT percentiles (or allocations per second, or held allocations).
    Bench(turnpike_gateway::bench::BenchArgs),
}

#[derive(clap::Args)]
struct EchoArgs {
    /// Where to listen (repeat for several ports, e.g. RTP and RTCP).
    #[arg(
        long,
        required = true,
        env = "TURNPIKE_ECHO_LISTEN",
        value_delimiter = ','
    )]
    listen: Vec<SocketAddr>,
}

#[derive(clap::Args)]
struct OperatorArgs {
    /// Kubeconfig file (default: KUBECONFIG, then the in-cluster service account).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// The operator's namespace (its CA Secret, the auth service's certificate, the Lease).
    #[arg(long, env = "TURNPIKE_NAMESPACE", default_value = "turnpike-system")]
    namespace: String,
    /// This replica's name in the leader Lease (default: the pod name, else host and pid).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Where this replica serves CDS (QUIC).
    #[arg(long, env = "TURNPIKE_CDS_LISTEN", default_value = "0.0.0.0:13478")]
    cds_listen: SocketAddr,
    /// The CDS Service dataplane pods connect to (default: turnpike-cds.NAMESPACE.svc:13478).
    #[arg(long, env = "TURNPIKE_CDS_ADDRESS")]
    cds_address: Option<String>,
    /// Image of new dataplane Deployments whose GatewayConfig names none.
    #[arg(long, env = "TURNPIKE_DATAPLANE_IMAGE", default_value = DEFAULT_IMAGE)]
    dataplane_image: String,
    /// imagePullPolicy of new dataplane Deployments whose GatewayConfig names none
    /// (default: Kubernetes' own, IfNotPresent unless the tag is `latest`).
    #[arg(long, env = "TURNPIKE_DATAPLANE_IMAGE_PULL_POLICY", value_enum)]
    dataplane_image_pull_policy: Option<turnpike_gateway::crd::PullPolicy>,
    /// Admin address: /livez, /readyz, /metrics, /status.
    #[arg(long, env = "TURNPIKE_ADMIN_ADDRESS", default_value = "0.0.0.0:8081")]
    admin: SocketAddr,
    /// How long a leader that stopped renewing keeps the Lease (e.g. 15s).
    #[arg(long, default_value = "15s", value_parser = turnpike_gateway::duration::parse)]
    lease_duration: Duration,
}

/// The image this build of Turnpike is published as.
const DEFAULT_IMAGE: &str = concat!("ghcr.io/turnpike-dev/turnpike:", env!("CARGO_PKG_VERSION"));

#[derive(clap::Args)]
struct AuthArgs {
    /// CDS server (`host:port`).
    #[arg(long, env = "TURNPIKE_CDS")]
    cds: String,
    #[arg(long, default_value = "0.0.0.0:8088", env = "TURNPIKE_AUTH_ADDRESS")]
    listen: SocketAddr,
    #[command(flatten)]
    cds_tls: CdsTlsArgs,
}

/// The client side of CDS mutual TLS (files the operator mounts from a Secret).
#[derive(clap::Args)]
struct CdsTlsArgs {
    /// The CA certificate, our certificate and our key (PEM files).
    #[arg(
        long,
        env = "TURNPIKE_CDS_CA",
        default_value = "/etc/turnpike/cds/ca.crt"
    )]
    cds_ca: PathBuf,
    #[arg(
        long,
        env = "TURNPIKE_CDS_CERT",
        default_value = "/etc/turnpike/cds/tls.crt"
    )]
    cds_cert: PathBuf,
    #[arg(
        long,
        env = "TURNPIKE_CDS_KEY",
        default_value = "/etc/turnpike/cds/tls.key"
    )]
    cds_key: PathBuf,
    /// The name the CDS server's certificate carries.
    #[arg(long, default_value = "turnpike-cds")]
    cds_server_name: String,
}

impl CdsTlsArgs {
    /// Resolves `cds` and loads the certificates into client options for `gateway`.
    fn client(
        &self,
        rt: &tokio::runtime::Runtime,
        cds: &str,
        gateway: String,
    ) -> anyhow::Result<turnpike_contract::cds::client::CdsClientOptions> {
        let server = rt
            .block_on(tokio::net::lookup_host(cds))
            .with_context(|| format!("resolving the CDS address {cds}"))?
            .next()
            .with_context(|| format!("{cds} resolves to no address"))?;
        let files = turnpike_contract::cds::TlsFiles {
            ca: self.cds_ca.clone(),
            cert: self.cds_cert.clone(),
            key: self.cds_key.clone(),
        };
        let tls = files.load().context("loading the CDS client certificate")?;
        Ok(turnpike_contract::cds::client::CdsClientOptions {
            server,
            server_name: self.cds_server_name.clone(),
            tls,
            tls_files: Some(files),
            gateway,
            report: None,
        })
    }
}

#[derive(clap::Args)]
struct TokenArgs {
    #[arg(long, default_value = "examples/quickstart")]
    dir: PathBuf,
    /// The token's subject: the TURN userid by default.
    #[arg(long, default_value = "alice")]
    sub: String,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 3600)]
    ttl: u64,
}

#[derive(clap::Args)]
struct ProbeArgs {
    /// Take server, credentials and peer from this directory of YAML (as `turnpike run`).
    #[arg(long, default_value = "examples/quickstart")]
    dir: PathBuf,
    /// The Gateway (`namespace/name`) to probe when the directory holds several.
    #[arg(long)]
    gateway: Option<String>,
    /// TURN server, instead of the Gateway's address.
    #[arg(long)]
    server: Option<SocketAddr>,
    /// Credentials, instead of ones derived from the directory.
    #[arg(long, requires = "password")]
    username: Option<String>,
    #[arg(long)]
    password: Option<String>,
    /// The echo peer, instead of the route's first endpoint.
    #[arg(long)]
    peer: Option<SocketAddr>,
    /// Start a UDP echo server on the peer address first.
    #[arg(long)]
    echo: bool,
    /// Messages to echo.
    #[arg(long, default_value_t = 10)]
    count: usize,
    /// Pause between messages (e.g. 50ms: a 20 s probe with --count 400).
    #[arg(long, default_value = "0ms", value_parser = turnpike_gateway::duration::parse)]
    interval: Duration,
    /// Use Send indications instead of a channel.
    #[arg(long)]
    indications: bool,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Directory of YAML (GatewayClass, GatewayConfig, Gateway, UDPRoute, Service,
    /// EndpointSlice, StaticService, Secret, ReferenceGrant); watched for changes.
    #[arg(default_value = "examples/quickstart")]
    dir: PathBuf,
    /// Control-plane admin address (`/status`).
    #[arg(long, default_value = "127.0.0.1:8081")]
    admin: SocketAddr,
    /// Admin address of the first Gateway's dataplane; further Gateways take the next ports.
    #[arg(long, default_value = "127.0.0.1:8086")]
    dataplane_admin: SocketAddr,
    /// CDS server address (QUIC); the in-process dataplanes connect to it like pods do.
    #[arg(long, default_value = "127.0.0.1:13478")]
    cds: SocketAddr,
    /// Auth service address (`GET /ice-config`).
    #[arg(long, default_value = "127.0.0.1:8088")]
    auth: SocketAddr,
    /// Worker threads per dataplane (default: CPU cores).
    #[arg(long)]
    workers: Option<usize>,
    /// Kernel offload for the dataplanes: None, TC, XDP or Auto (see `turnpike dataplane`).
    #[arg(long, default_value = "None")]
    offload: turnpike_dataplane::offload::OffloadMode,
}

#[derive(clap::Args)]
struct StatusArgs {
    /// Control-plane admin address of `turnpike run`.
    #[arg(long, default_value = "127.0.0.1:8081")]
    admin: SocketAddr,
    /// Print the raw JSON.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct DataplaneArgs {
    /// Dataplane config file (YAML or JSON, DESIGN.md §3); reloaded on change and SIGHUP.
    #[arg(
        long,
        env = "TURNPIKE_CONFIG",
        required_unless_present = "cds",
        conflicts_with = "cds"
    )]
    config: Option<PathBuf>,
    /// CDS server (`host:port`) to take the config from instead of a file.
    #[arg(long, env = "TURNPIKE_CDS", requires = "gateway")]
    cds: Option<String>,
    /// The Gateway (`namespace/name`) whose config to subscribe to over CDS.
    #[arg(long, env = "TURNPIKE_GATEWAY")]
    gateway: Option<String>,
    #[command(flatten)]
    cds_tls: CdsTlsArgs,
    /// Worker threads, each with its own SO_REUSEPORT socket (default: CPU cores).
    #[arg(long, env = "TURNPIKE_WORKERS")]
    workers: Option<usize>,
    /// Admin address for /livez, /readyz, /metrics and /status.
    #[arg(long, default_value = "127.0.0.1:8086", env = "TURNPIKE_ADMIN_ADDRESS")]
    admin: SocketAddr,
    /// After SIGTERM, how long existing allocations may keep relaying (e.g. 30s, 5m).
    #[arg(long, default_value = "60s", value_parser = turnpike_gateway::duration::parse, env = "TURNPIKE_DRAIN_TIMEOUT")]
    drain_timeout: Duration,
    /// Relay established UDP channel bindings in the kernel: None, TC, XDP or Auto (TC
    /// when the kernel and capabilities allow, else userspace). Needs CAP_BPF and
    /// CAP_NET_ADMIN and Linux 6.6+; without them the dataplane says why and relays in
    /// userspace.
    #[arg(long, default_value = "None", env = "TURNPIKE_OFFLOAD")]
    offload: turnpike_dataplane::offload::OffloadMode,
    /// This dataplane's pod (the managed Deployment sets both from the downward API): the
    /// control plane shows the pod's offload state on it as a condition.
    #[arg(long, env = "TURNPIKE_POD_NAME", requires = "pod_namespace")]
    pod_name: Option<String>,
    #[arg(long, env = "TURNPIKE_POD_NAMESPACE", requires = "pod_name")]
    pod_namespace: Option<String>,
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    match cli.command {
        Command::Run(a) => {
            rt.block_on(turnpike_gateway::standalone::run(
                turnpike_gateway::standalone::RunOptions {
                    dir: a.dir,
                    admin: a.admin,
                    dataplane_admin: a.dataplane_admin,
                    cds: a.cds,
                    auth: a.auth,
                    workers: a.workers.unwrap_or(cores),
                    offload: a.offload,
                },
            ))
            .context("turnpike run")?;
        }
        Command::Status(a) => {
            let body = rt
                .block_on(turnpike_gateway::status_cmd::fetch(a.admin, "/status"))
                .with_context(|| format!("is `turnpike run` running with --admin {}?", a.admin))?;
            if a.json {
                println!("{body}");
            } else {
                let v: serde_json::Value =
                    serde_json::from_str(&body).context("parsing /status")?;
                print!("{}", turnpike_gateway::status_cmd::format_report(&v));
            }
        }
        Command::Probe(a) => probe(a)?,
        Command::Bench(a) => bench(&a)?,
        Command::Operator(a) => {
            let opts = operator_options(a);
            rt.block_on(turnpike_gateway::operator::run(opts))
                .context("operator")?;
        }
        Command::Crds => {
            for (_, yaml) in turnpike_gateway::manifests::crds()? {
                println!("---\n{yaml}");
            }
        }
        Command::Token(a) => {
            let token =
                turnpike_gateway::token::mint(&a.dir, &a.sub, a.ttl).map_err(anyhow::Error::msg)?;
            println!("{token}");
        }
        Command::Echo(a) => {
            let bound = turnpike_gateway::echo::start(&a.listen).context("turnpike echo")?;
            for addr in bound {
                tracing::info!(%addr, "echoing UDP");
            }
            // As PID 1 in a container nothing ends the process on SIGTERM unless it does.
            rt.block_on(async {
                terminated()?.await;
                anyhow::Ok(())
            })?;
        }
        Command::Auth(a) => {
            let opts = a
                .cds_tls
                .client(&rt, &a.cds, turnpike_contract::cds::ALL.into())?;
            rt.block_on(async move {
                let events = turnpike_contract::cds::client::subscribe(opts)?;
                let state = turnpike_auth::http::AppState::new();
                tokio::spawn(turnpike_auth::follow(state.clone(), events));
                turnpike_auth::serve_until(a.listen, state, terminated()?).await?;
                anyhow::Ok(())
            })
            .context("auth service")?;
        }
        Command::Dataplane(a) => {
            let workers = a.workers.unwrap_or(cores);
            let source = match (a.config, a.cds) {
                (Some(path), _) => turnpike_dataplane::runtime::ConfigSource::File(path),
                (None, Some(cds)) => turnpike_dataplane::runtime::ConfigSource::Cds(Box::new(
                    a.cds_tls.client(&rt, &cds, a.gateway.unwrap_or_default())?,
                )),
                (None, None) => anyhow::bail!("give --config FILE or --cds ADDR --gateway NS/NAME"),
            };
            rt.block_on(turnpike_dataplane::runtime::run(
                turnpike_dataplane::runtime::Options {
                    workers,
                    admin: a.admin,
                    drain_timeout: a.drain_timeout,
                    offload: a.offload,
                    pod: a.pod_name.zip(a.pod_namespace).map(|(name, namespace)| {
                        turnpike_contract::cds::report::PodName { namespace, name }
                    }),
                },
                source,
            ))
            .context("dataplane")?;
        }
    }
    Ok(())
}

/// Installs the SIGTERM handler (inside the runtime) and returns what completes on SIGTERM
/// or SIGINT: as PID 1 in a container nothing ends the process on SIGTERM unless it does
/// so itself.
fn terminated() -> anyhow::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    })
}

fn operator_options(a: OperatorArgs) -> turnpike_gateway::operator::OperatorOptions {
    let ns = a.namespace;
    let identity = a.identity.unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "turnpike".into());
        format!("{host}-{}", std::process::id())
    });
    let service = "turnpike-cds";
    let names = turnpike_gateway::operator::cds_server_names(service, &ns, a.cds_listen);
    turnpike_gateway::operator::OperatorOptions {
        kubeconfig: a.kubeconfig,
        cds_address: a.cds_address.unwrap_or_else(|| {
            format!(
                "{service}.{ns}.svc:{}",
                turnpike_contract::cds::DEFAULT_PORT
            )
        }),
        namespace: ns,
        identity,
        cds_listen: a.cds_listen,
        cds_server_names: names,
        dataplane_image: a.dataplane_image,
        dataplane_image_pull_policy: a.dataplane_image_pull_policy,
        admin: a.admin,
        lease_name: "turnpike-operator".into(),
        lease_duration: a.lease_duration,
    }
}

fn bench(a: &turnpike_gateway::bench::BenchArgs) -> anyhow::Result<()> {
    use turnpike_gateway::bench;
    if let Some(addr) = a.echo {
        let bound = turnpike_gateway::echo::start(&[addr]).context("echo peer")?;
        eprintln!("echo peer on {}", bound[0]);
        loop {
            std::thread::park();
        }
    }
    let report = bench::run(a)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.table());
    }
    // Nothing measured is a failed run, whatever the table says.
    anyhow::ensure!(
        report.allocations > 0,
        "no allocation succeeded (see the errors above)"
    );
    Ok(())
}

fn probe(a: ProbeArgs) -> anyhow::Result<()> {
    use turnpike_gateway::probe;
    let mut target = match probe::target_from_dir(&a.dir, a.gateway.as_deref()) {
        Ok(t) => t,
        Err(e) if a.server.is_some() && a.username.is_some() && a.peer.is_some() => {
            tracing::debug!(error = %e, "directory not used");
            probe::Target {
                server: a.server.context("--server")?,
                username: String::new(),
                password: String::new(),
                peer: a.peer,
            }
        }
        Err(e) => anyhow::bail!("{}: {e}", a.dir.display()),
    };
    if let Some(s) = a.server {
        target.server = s;
    }
    if let (Some(u), Some(p)) = (a.username, a.password) {
        target.username = u;
        target.password = p;
    }
    let peer = a
        .peer
        .or(target.peer)
        .context("no peer: give --peer or a route with IP:port endpoints")?;
    if a.echo {
        probe::start_echo(peer).with_context(|| format!("starting an echo server on {peer}"))?;
        println!("echo server on {peer}");
    }
    println!("TURN server {} as {}", target.server, target.username);
    let r =
        probe::probe(&target, peer, a.count, a.interval, !a.indications).context("probe failed")?;
    print!("{}", r.summary(peer, !a.indications));
    anyhow::ensure!(
        r.received == r.sent,
        "{} of {} messages lost",
        r.sent - r.received,
        r.sent
    );
    Ok(())
}
