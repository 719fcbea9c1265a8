//! Kernel offload of the ChannelData relay path: loads `dataplane/bpf/relay.bpf.o` (built
//! by `dataplane/bpf/build.sh`, committed, checked against its source by a test), attaches
//! it at TC ingress or XDP on the dataplane's interfaces and keeps its maps. The core
//! decides what the kernel may relay (`proto::offload`); workers write it here.
//!
//! Attachments are BPF links (TCX, XDP links) held by this process: when the dataplane
//! exits or crashes the kernel detaches and frees everything, so nothing stale stays.

pub mod maps;
pub mod routes;

use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;

use aya::maps::{HashMap as BpfHashMap, MapData, PerCpuArray};
use aya::programs::{SchedClassifier, TcAttachType, Xdp, XdpMode};
use aya::util::KernelVersion;
use aya::{Ebpf, EbpfLoader};

use maps::{BindingStats, ClientKey, Entries, PeerKey, ToClient, ToPeer};

/// The program, compiled from `dataplane/bpf/relay.bpf.c`.
static OBJECT: &[u8] = aya::include_bytes_aligned!("../../bpf/relay.bpf.o");

/// Channel bindings the kernel holds at most (the program's map sizes).
pub const MAX_BINDINGS: u32 = 65_536;

/// `GatewayConfig.spec.dataplane.offload` and `turnpike dataplane --offload`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OffloadMode {
    /// Everything relayed in userspace.
    #[default]
    None,
    /// TC ingress on every interface (works on any device).
    Tc,
    /// XDP: native where the driver has it (veth does), generic elsewhere.
    Xdp,
    /// TC where it can load; userspace otherwise, without an error.
    Auto,
}

impl OffloadMode {
    pub const NAMES: [&'static str; 4] = ["None", "TC", "XDP", "Auto"];
}

impl fmt::Display for OffloadMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OffloadMode::None => "None",
            OffloadMode::Tc => "TC",
            OffloadMode::Xdp => "XDP",
            OffloadMode::Auto => "Auto",
        })
    }
}

impl FromStr for OffloadMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "none" => Ok(OffloadMode::None),
            "tc" => Ok(OffloadMode::Tc),
            "xdp" => Ok(OffloadMode::Xdp),
            "auto" => Ok(OffloadMode::Auto),
            _ => Err(format!(
                "unknown offload mode {s:?} (expected one of {})",
                OffloadMode::NAMES.join(", ")
            )),
        }
    }
}

/// Why offload is not running.
#[derive(Debug, thiserror::Error)]
pub enum OffloadError {
    #[error("Linux {found} is too old: offload needs 6.6 (BPF links for TC and XDP)")]
    KernelTooOld { found: String },
    #[error("cannot read the kernel version: {0}")]
    KernelVersion(String),
    #[error(
        "the kernel refused the program ({0}); offload needs CAP_BPF and CAP_NET_ADMIN \
         (or CAP_SYS_ADMIN) and a kernel with BPF"
    )]
    Load(String),
    #[error("cannot attach to {interface}: {error}")]
    Attach { interface: String, error: String },
    #[error("no interface to attach to (only loopback or non-Ethernet devices)")]
    NoInterface,
    #[error("the program has no {0}")]
    Missing(&'static str),
    #[error("kernel map {map}: {error}")]
    Map { map: &'static str, error: String },
    #[error("all {MAX_BINDINGS} kernel binding slots are in use")]
    Full,
    #[error("{0}")]
    Unsupported(String),
}

/// What runs where: the mode and the interfaces it is attached to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attached {
    pub mode: OffloadMode,
    /// `name` or `name (generic)` for XDP in the kernel's generic mode.
    pub interfaces: Vec<String>,
    /// What limits it (an operator should read these).
    pub warnings: Vec<String>,
}

/// XDP finds the next hop with the kernel's FIB helper, which answers only on devices that
/// forward. Turns forwarding on for `interface` (both families); `Err` says why not (a
/// container's read-only /proc/sys: set the pod's sysctls instead).
fn enable_forwarding(interface: &str) -> Result<(), String> {
    for family in ["ipv4", "ipv6"] {
        let path = format!("/proc/sys/net/{family}/conf/{interface}/forwarding");
        if std::fs::read_to_string(&path).is_ok_and(|v| v.trim() == "1") {
            continue;
        }
        std::fs::write(&path, "1").map_err(|e| {
            format!(
                "XDP relays only where forwarding is on; cannot set {path}: {e} (set the \
                 sysctl net.{family}.conf.{interface}.forwarding=1 for the pod)"
            )
        })?;
    }
    Ok(())
}

/// Why packets were passed up to userspace instead (the program's `enum event`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KernelEvents {
    pub to_peer: u64,
    pub to_client: u64,
    pub expired: u64,
    pub no_route: u64,
    pub not_exact: u64,
    pub adjust_failed: u64,
    pub partial_checksum: u64,
}

struct Maps {
    to_peer: BpfHashMap<MapData, ClientKey, ToPeer>,
    to_client: BpfHashMap<MapData, PeerKey, ToClient>,
    /// Stats slots not in use.
    free_slots: Vec<u32>,
}

/// The loaded, attached program and its maps, shared by the workers.
pub struct Kernel {
    attached: Attached,
    maps: Mutex<Maps>,
    stats: PerCpuArray<MapData, BindingStats>,
    events: PerCpuArray<MapData, u64>,
    /// Owns the programs and their links: dropping it detaches everything.
    _ebpf: Ebpf,
}

fn map_error(map: &'static str) -> impl Fn(aya::maps::MapError) -> OffloadError {
    move |e| OffloadError::Map {
        map,
        error: e.to_string(),
    }
}

/// The interfaces to attach to: every Ethernet-type device but loopback (a pod's `eth0`,
/// a node's NICs), sorted.
pub fn default_interfaces() -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/sys/class/net") else {
        return Vec::new();
    };
    let mut names: Vec<String> = dir
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n != "lo")
        .filter(|n| {
            // ARPHRD_ETHER: the program parses an Ethernet header.
            std::fs::read_to_string(format!("/sys/class/net/{n}/type"))
                .is_ok_and(|t| t.trim() == "1")
        })
        .collect();
    names.sort();
    names
}

impl Kernel {
    /// Loads the program and attaches it in `mode` (`Tc` or `Xdp`; `Auto` means `Tc`) to
    /// `interfaces`.
    pub fn load(mode: OffloadMode, interfaces: &[String]) -> Result<Kernel, OffloadError> {
        let mode = match mode {
            OffloadMode::Auto => OffloadMode::Tc,
            m => m,
        };
        let version =
            KernelVersion::current().map_err(|e| OffloadError::KernelVersion(e.to_string()))?;
        if version < KernelVersion::new(6, 6, 0) {
            return Err(OffloadError::KernelTooOld {
                found: version.to_string(),
            });
        }
        if interfaces.is_empty() {
            return Err(OffloadError::NoInterface);
        }
        let mut ebpf = EbpfLoader::new()
            .load(OBJECT)
            .map_err(|e| OffloadError::Load(e.to_string()))?;
        let mut names = Vec::new();
        let mut warnings = Vec::new();
        match mode {
            OffloadMode::Xdp => {
                let prog: &mut Xdp = ebpf
                    .program_mut("turnpike_xdp")
                    .ok_or(OffloadError::Missing("turnpike_xdp program"))?
                    .try_into()
                    .map_err(|e: aya::programs::ProgramError| OffloadError::Load(e.to_string()))?;
                prog.load()
                    .map_err(|e| OffloadError::Load(format!("{e}: {}", verifier_tail(&e))))?;
                for i in interfaces {
                    if let Err(w) = enable_forwarding(i) {
                        warnings.push(w);
                    }
                    // Native first (veth and most NIC drivers), the generic hook otherwise.
                    match prog.attach(i, XdpMode::Driver) {
                        Ok(_) => names.push(i.clone()),
                        Err(native) => {
                            prog.attach(i, XdpMode::Skb)
                                .map_err(|e| OffloadError::Attach {
                                    interface: i.clone(),
                                    error: format!("native: {native}; generic: {e}"),
                                })?;
                            names.push(format!("{i} (generic)"));
                        }
                    }
                }
            }
            _ => {
                let prog: &mut SchedClassifier = ebpf
                    .program_mut("turnpike_tc")
                    .ok_or(OffloadError::Missing("turnpike_tc program"))?
                    .try_into()
                    .map_err(|e: aya::programs::ProgramError| OffloadError::Load(e.to_string()))?;
                prog.load()
                    .map_err(|e| OffloadError::Load(format!("{e}: {}", verifier_tail(&e))))?;
                for i in interfaces {
                    prog.attach(i, TcAttachType::Ingress)
                        .map_err(|e| OffloadError::Attach {
                            interface: i.clone(),
                            error: e.to_string(),
                        })?;
                    names.push(i.clone());
                }
            }
        }
        let take = |ebpf: &mut Ebpf, name: &'static str| {
            ebpf.take_map(name).ok_or(OffloadError::Missing(name))
        };
        let to_peer = BpfHashMap::try_from(take(&mut ebpf, "turnpike_to_peer")?)
            .map_err(map_error("turnpike_to_peer"))?;
        let to_client = BpfHashMap::try_from(take(&mut ebpf, "turnpike_to_client")?)
            .map_err(map_error("turnpike_to_client"))?;
        let stats = PerCpuArray::try_from(take(&mut ebpf, "turnpike_stats")?)
            .map_err(map_error("turnpike_stats"))?;
        let events = PerCpuArray::try_from(take(&mut ebpf, "turnpike_events")?)
            .map_err(map_error("turnpike_events"))?;
        Ok(Kernel {
            attached: Attached {
                mode,
                interfaces: names,
                warnings,
            },
            maps: Mutex::new(Maps {
                to_peer,
                to_client,
                free_slots: (0..MAX_BINDINGS).rev().collect(),
            }),
            stats,
            events,
            _ebpf: ebpf,
        })
    }

    pub fn attached(&self) -> &Attached {
        &self.attached
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Maps>, OffloadError> {
        self.maps.lock().map_err(|_| OffloadError::Map {
            map: "turnpike_to_peer",
            error: "a worker panicked while writing the maps".into(),
        })
    }

    /// A stats slot for a new binding; give it back with [`Kernel::remove`].
    pub fn take_slot(&self) -> Result<u32, OffloadError> {
        self.lock()?.free_slots.pop().ok_or(OffloadError::Full)
    }

    /// Gives back a slot from [`Kernel::take_slot`] that was never installed.
    pub fn release_slot(&self, slot: u32) {
        if let Ok(mut m) = self.lock() {
            m.free_slots.push(slot);
        }
    }

    /// Writes (or overwrites) both directions of a binding.
    pub fn install(&self, e: &Entries) -> Result<(), OffloadError> {
        let mut m = self.lock()?;
        // Peer -> client first: the client -> peer entry is what makes peers answer.
        m.to_client
            .insert(e.peer_key, e.to_client, 0)
            .map_err(map_error("turnpike_to_client"))?;
        m.to_peer
            .insert(e.client_key, e.to_peer, 0)
            .map_err(map_error("turnpike_to_peer"))
    }

    /// Removes both directions of a binding and frees its stats slot. Entries already
    /// gone are not an error.
    pub fn remove(&self, e: &Entries) -> Result<(), OffloadError> {
        let mut m = self.lock()?;
        let a = m.to_peer.remove(&e.client_key);
        let b = m.to_client.remove(&e.peer_key);
        m.free_slots.push(e.to_peer.stats_slot);
        for r in [a, b] {
            match r {
                Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
                Err(e) => return Err(map_error("turnpike_to_peer")(e)),
            }
        }
        Ok(())
    }

    /// What the kernel relayed for `slot` so far, summed over CPUs.
    pub fn binding_stats(&self, slot: u32) -> Result<BindingStats, OffloadError> {
        let per_cpu = self
            .stats
            .get(&slot, 0)
            .map_err(map_error("turnpike_stats"))?;
        Ok(per_cpu.iter().fold(BindingStats::default(), |mut s, c| {
            s.to_peer_packets += c.to_peer_packets;
            s.to_peer_bytes += c.to_peer_bytes;
            s.to_client_packets += c.to_client_packets;
            s.to_client_bytes += c.to_client_bytes;
            s
        }))
    }

    /// The program's event counters, summed over CPUs.
    pub fn events(&self) -> KernelEvents {
        let read = |i: u32| {
            self.events
                .get(&i, 0)
                .map(|v| v.iter().sum::<u64>())
                .unwrap_or(0)
        };
        KernelEvents {
            to_peer: read(0),
            to_client: read(1),
            expired: read(2),
            no_route: read(3),
            not_exact: read(4),
            adjust_failed: read(5),
            partial_checksum: read(6),
        }
    }
}

/// The end of the verifier's log, which says why it refused, when there is one.
fn verifier_tail(e: &aya::programs::ProgramError) -> String {
    match e {
        aya::programs::ProgramError::LoadError { verifier_log, .. } => {
            let log = verifier_log.to_string();
            let lines: Vec<&str> = log.lines().collect();
            lines[lines.len().saturating_sub(5)..].join(" / ")
        }
        _ => String::new(),
    }
}
