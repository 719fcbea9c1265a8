//! A real kube-apiserver for tests (`tests/k8s/apiserver.sh`), kubectl against it, the
//! operator as a local process, and a network namespace standing in for a pod network:
//! the API server refuses loopback endpoint addresses, so media backends live at private
//! addresses inside a namespace the test creates and removes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use serde_json::Value;

use crate::{Proc, free_tcp_port, free_udp_port, output_text, repo_root, turnpike_bin};

/// kube-apiserver + etcd with RBAC, the Gateway API and Turnpike CRDs installed.
pub struct Cluster {
    dir: tempfile::TempDir,
    kube: Kube,
    /// The operator's ServiceAccount user, bound by manifests/10-rbac.yaml once applied.
    pub operator: PathBuf,
}

impl std::ops::Deref for Cluster {
    type Target = Kube;
    fn deref(&self) -> &Kube {
        &self.kube
    }
}

/// kubectl against one API server, as admin unless told otherwise.
pub struct Kube {
    /// Admin (system:masters) kubeconfig.
    pub admin: PathBuf,
}

fn fixture(dir: &Path, verb: &str) -> Output {
    Command::new(repo_root().join("tests/k8s/apiserver.sh"))
        .arg(verb)
        .env("TURNPIKE_K8S_DIR", dir.join("run"))
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

pub fn kubectl_bin() -> PathBuf {
    crate::python().parent().unwrap().join("kubectl")
}

/// The value of `export NAME=VALUE` in a fixture's output (panics naming what is missing).
pub fn exported(text: &str, name: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("export {name}=")))
        .map(str::to_string)
        .unwrap_or_else(|| panic!("{name} missing from: {text}"))
}

impl Cluster {
    pub fn start() -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let out = fixture(dir.path(), "start");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(out.status.success(), "{}", output_text(&out));
        let var = |name: &str| PathBuf::from(exported(&text, name));
        Cluster {
            kube: Kube {
                admin: var("KUBECONFIG"),
            },
            operator: var("TURNPIKE_OPERATOR_KUBECONFIG"),
            dir,
        }
    }

    /// Restarts kube-apiserver (same port and etcd); returns once it is ready again.
    pub fn restart_apiserver(&self) {
        let out = fixture(self.dir.path(), "restart");
        assert!(out.status.success(), "{}", output_text(&out));
    }
}

impl Kube {
    pub fn kubectl_as(&self, kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> Output {
        let mut cmd = Command::new(kubectl_bin());
        cmd.arg("--kubeconfig").arg(kubeconfig).args(args);
        match stdin {
            None => cmd.stdin(Stdio::null()).output().unwrap(),
            Some(text) => {
                use std::io::Write as _;
                let mut child = cmd
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap();
                child
                    .stdin
                    .take()
                    .unwrap()
                    .write_all(text.as_bytes())
                    .unwrap();
                child.wait_with_output().unwrap()
            }
        }
    }

    /// kubectl as admin; panics with its output when it fails.
    pub fn kubectl(&self, args: &[&str]) -> String {
        let o = self.kubectl_as(&self.admin, args, None);
        assert!(o.status.success(), "kubectl {args:?}: {}", output_text(&o));
        String::from_utf8_lossy(&o.stdout).to_string()
    }

    /// Applies YAML as admin.
    pub fn apply(&self, yaml: &str) {
        let o = self.kubectl_as(&self.admin, &["apply", "-f", "-"], Some(yaml));
        assert!(o.status.success(), "apply: {}\n{yaml}", output_text(&o));
    }

    /// `kubectl get ... -o json`, or None when it is not there.
    /// `kubectl get ARGS -o json` as a typed object (`None` when absent). An object that is
    /// not a `K` fails the test at once, naming what did not fit, instead of looking absent.
    pub fn get_as<K: serde::de::DeserializeOwned>(&self, args: &[&str]) -> Option<K> {
        self.get(args).map(|v| typed(args, v))
    }

    /// The items of `kubectl get ARGS -o json` as typed objects (kubectl answers
    /// `kind: List`, which k8s-openapi's `List<K>` refuses: it expects `PodList` and the
    /// like). No answer is no items.
    pub fn list_as<K: serde::de::DeserializeOwned>(&self, args: &[&str]) -> Vec<K> {
        let items = self
            .get(args)
            .and_then(|mut v| v.get_mut("items").map(Value::take))
            .and_then(|v| match v {
                Value::Array(items) => Some(items),
                _ => None,
            })
            .unwrap_or_default();
        items.into_iter().map(|i| typed(args, i)).collect()
    }

    pub fn get(&self, args: &[&str]) -> Option<Value> {
        let mut a = vec!["get"];
        a.extend_from_slice(args);
        a.extend_from_slice(&["-o", "json"]);
        let o = self.kubectl_as(&self.admin, &a, None);
        o.status
            .success()
            .then(|| serde_json::from_slice(&o.stdout).ok())
            .flatten()
    }

    /// Events (events.k8s.io) about object `name` in `ns`: `(reason, note)`.
    pub fn events_about(&self, ns: &str, name: &str) -> Vec<(String, String)> {
        self.list_as::<Event>(&["events.events.k8s.io", "-n", ns])
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
            .collect()
    }
}

impl Cluster {
    /// Where a test keeps its process logs: they are kept when the test fails.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Freezes kube-apiserver (SIGSTOP): the kernel still accepts connections but nothing
    /// answers, as with a wedged or partitioned API server. It runs again when the guard
    /// drops (also when the test fails).
    pub fn freeze_apiserver(&self) -> FrozenApiserver {
        let pid = std::fs::read_to_string(self.dir.path().join("run/apiserver.pid")).unwrap();
        let pid = pid.trim().to_string();
        assert!(signal_pid(&pid, "STOP"), "kill -STOP {pid}");
        FrozenApiserver { pid }
    }
}

fn signal_pid(pid: &str, signal: &str) -> bool {
    Command::new("kill")
        .args([&format!("-{signal}"), pid])
        .status()
        .is_ok_and(|s| s.success())
}

pub struct FrozenApiserver {
    pid: String,
}

impl Drop for FrozenApiserver {
    fn drop(&mut self) {
        let _ = signal_pid(&self.pid, "CONT");
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = fixture(self.dir.path(), "stop");
        if std::thread::panicking() {
            keep_logs(self.dir.path());
        }
    }
}

/// Copies a failed test's `*.log` files (operators, dataplane, the fixture's) to
/// `tests/artifacts/k8s-<pid>-<n>/` before its temporary directory goes.
pub fn keep_logs(dir: &Path) {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let to = repo_root().join(format!("tests/artifacts/k8s-{}-{n}", std::process::id()));
    let mut kept = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            // Container root filesystems and volumes are not logs (and may be mounts).
            if p.is_dir() && !p.ends_with("containerd") && !p.ends_with("kubelet") {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "log")
                && std::fs::create_dir_all(&to).is_ok()
                && let Ok(rel) = p.strip_prefix(dir)
                // Pod logs are POD/CONTAINER/0.log: the path names the file.
                && std::fs::copy(&p, to.join(rel.to_string_lossy().replace('/', "_"))).is_ok()
            {
                kept += 1;
            }
        }
    }
    if kept > 0 {
        eprintln!("kept {kept} log files in {}", to.display());
    }
}

/// The condition `type_` of a conditions array: `(status, reason)`.
/// `v` as a `K`, or a test failure naming the kubectl query and the field that did not fit.
fn typed<K: serde::de::DeserializeOwned>(args: &[&str], v: Value) -> K {
    serde_json::from_value(v).unwrap_or_else(|e| {
        panic!(
            "kubectl get {args:?}: not a {}: {e}",
            std::any::type_name::<K>()
        )
    })
}

/// `(status, reason)` of condition `type_` among typed `conds`.
pub fn condition_of(conds: &[Condition], type_: &str) -> Option<(String, String)> {
    conds
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone()))
}

/// Polls `f` every 100 ms until it returns Some, or panics naming `what` after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < end,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `turnpike operator` as a local process with the operator's RBAC identity.
pub struct Operator {
    pub proc: Proc,
    pub identity: String,
    pub admin: u16,
    pub cds: u16,
    pub log: PathBuf,
}

impl Operator {
    /// Starts an operator replica; `cds` is its CDS port (0 picks one).
    pub fn start(cluster: &Cluster, identity: &str, cds: u16, lease: &str) -> Operator {
        let admin = free_tcp_port();
        let cds = if cds == 0 { free_udp_port() } else { cds };
        let log = cluster.dir.path().join(format!("{identity}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(turnpike_bin());
        cmd.args([
            "operator",
            "--namespace",
            "turnpike-system",
            "--identity",
            identity,
            "--lease-duration",
            lease,
        ])
        .arg("--kubeconfig")
        .arg(&cluster.operator)
        .args(["--cds-listen", &format!("127.0.0.1:{cds}")])
        .args(["--admin", &format!("127.0.0.1:{admin}")])
        .args(["--dataplane-image", "turnpike:test"])
        .env(
            "RUST_LOG",
            "info,turnpike_gateway::operator=debug,kube=warn",
        )
        .stdout(file.try_clone().unwrap())
        .stderr(file);
        let op = Operator {
            proc: Proc::spawn(identity, &mut cmd),
            identity: identity.into(),
            admin,
            cds,
            log,
        };
        wait_for(
            &format!("operator {identity} ready"),
            Duration::from_secs(60),
            || crate::http_get(admin, "/readyz").filter(|(code, _)| *code == 200),
        );
        op
    }

    pub fn metric(&self, series: &str) -> f64 {
        crate::http_get(self.admin, "/metrics")
            .and_then(|(_, body)| crate::metric(&body, series))
            .unwrap_or(f64::NAN)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// A network namespace joined to the host by a veth pair: the host side has `.1`, the
/// namespace side the given addresses (a /24 each), like pods on a node.
pub struct PodNetwork {
    pub name: String,
    host_if: String,
}

impl PodNetwork {
    pub fn create(prefix: &str, pod_ips: &[&str]) -> PodNetwork {
        crate::require_tool("ip");
        // Tests of one process run side by side: each network gets its own names.
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let id = (std::process::id() % 1000) * 10 + n % 10;
        let name = format!("tp-pods-{id}");
        let host_if = format!("tph{id}");
        let ns_if = format!("tpn{id}");
        let ip = |args: &[&str]| {
            let o = Command::new("ip").args(args).output().unwrap();
            assert!(o.status.success(), "ip {args:?}: {}", output_text(&o));
        };
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        ip(&["netns", "add", &name]);
        let net = PodNetwork {
            name: name.clone(),
            host_if: host_if.clone(),
        };
        ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if,
        ]);
        ip(&["link", "set", &ns_if, "netns", &name]);
        ip(&["addr", "add", &format!("{prefix}.1/24"), "dev", &host_if]);
        ip(&["link", "set", &host_if, "up"]);
        for a in pod_ips {
            ip(&[
                "-n",
                &name,
                "addr",
                "add",
                &format!("{a}/24"),
                "dev",
                &ns_if,
            ]);
        }
        ip(&["-n", &name, "link", "set", &ns_if, "up"]);
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        // Like a pod, answer everything through the node: the relay sends from the
        // node's own address, not from the veth's.
        ip(&[
            "-n",
            &name,
            "route",
            "add",
            "default",
            "via",
            &format!("{prefix}.1"),
        ]);
        net
    }

    /// A command run inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }
}

impl Drop for PodNetwork {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .output();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}
