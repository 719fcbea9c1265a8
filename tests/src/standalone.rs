//! Helpers for tests and benchmarks of `turnpike run`: a directory of Gateway API YAML
//! with one TURN-UDP Gateway on 127.0.0.1, and the running process.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::{Proc, free_tcp_port, http_get, turnpike_bin};

/// The REST secret of the generated GatewayConfig.
pub const SECRET: &str = "standalone-secret";
/// The HS256 key callers of its auth service sign tokens with.
pub const JWT_KEY: &str = "standalone-jwt-key";

pub fn write_base(dir: &Path, turn_port: u16) {
    write_base_with(
        dir,
        &format!("    - {{name: udp, protocol: TURN-UDP, port: {turn_port}}}\n"),
        "",
    );
}

/// The base objects with the Gateway's `listeners` (YAML list items, indented 4) and
/// GatewayConfig `limits` entries (e.g. `handshakeTimeout: 2s, `, may be empty).
pub fn write_base_with(dir: &Path, listeners: &str, limits: &str) {
    std::fs::write(
        dir.join("00-class.yaml"),
        format!(
            r#"apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {{name: turnpike}}
spec:
  controllerName: turnpike.dev/gateway-controller
  parametersRef: {{group: turnpike.dev, kind: GatewayConfig, name: cfg, namespace: default}}
---
apiVersion: turnpike.dev/v1alpha1
kind: GatewayConfig
metadata: {{name: cfg, namespace: default}}
spec:
  auth: {{type: ephemeral, secretRef: {{name: auth}}}}
  limits: {{{limits}maxAllocationsPerUser: 1000}}
  authService:
    jwt: {{issuer: e2e, audience: turnpike, hmacSecretRef: {{name: auth, key: jwt}}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: auth, namespace: default}}
stringData: {{secret: {SECRET}, jwt: {JWT_KEY}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, namespace: default}}
spec:
  gatewayClassName: turnpike
  addresses: [{{type: IPAddress, value: 127.0.0.1}}]
  listeners:
{listeners}"#
        ),
    )
    .unwrap();
}

/// A `kubernetes.io/tls` Secret file, renamed into place so the watcher never sees half.
pub fn write_tls_secret(dir: &Path, name: &str, cert_pem: &str, key_pem: &str) {
    let tmp = dir.join(format!(".{name}.yaml.tmp"));
    std::fs::write(&tmp, tls_secret_yaml(name, "default", cert_pem, key_pem)).unwrap();
    std::fs::rename(&tmp, dir.join(format!("40-{name}.yaml"))).unwrap();
}

/// A `kubernetes.io/tls` Secret as YAML (for a config directory or `kubectl apply`).
pub fn tls_secret_yaml(name: &str, namespace: &str, cert_pem: &str, key_pem: &str) -> String {
    let indent = |pem: &str| {
        pem.lines()
            .map(|l| format!("    {l}\n"))
            .collect::<String>()
    };
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: {namespace}}}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}",
        indent(cert_pem),
        indent(key_pem)
    )
}

/// The "echo" route: a Service whose EndpointSlice points at 127.0.0.1:`peer` (and
/// `peer + 1`, which turnutils_uclient also binds).
pub fn write_echo_route(dir: &Path, peer: u16) {
    let tmp = dir.join(".20-echo.yaml.tmp");
    std::fs::write(
        &tmp,
        format!(
            r#"apiVersion: gateway.networking.k8s.io/v1alpha2
kind: UDPRoute
metadata: {{name: echo, namespace: default}}
spec:
  parentRefs: [{{name: gw}}]
  rules:
    - backendRefs: [{{name: echo, port: 9}}, {{name: echo, port: 10}}]
---
apiVersion: v1
kind: Service
metadata: {{name: echo, namespace: default}}
spec:
  clusterIP: None
  ports: [{{name: a, port: 9}}, {{name: b, port: 10}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: echo-1, namespace: default, labels: {{kubernetes.io/service-name: echo}}}}
addressType: IPv4
ports: [{{name: a, port: {peer}}}, {{name: b, port: {}}}]
endpoints: [{{addresses: [127.0.0.1]}}]
"#,
            peer + 1
        ),
    )
    .unwrap();
    // Renamed into place, as editors and `kubectl`-like tools do: never half a file.
    std::fs::rename(&tmp, dir.join("20-echo.yaml")).unwrap();
}

/// An unrelated route to a StaticService on 127.0.0.1:`peer`-`peer + 1`.
pub fn write_other_route(dir: &Path, peer: u16) {
    std::fs::write(
        dir.join("30-other.yaml"),
        format!(
            r#"apiVersion: gateway.networking.k8s.io/v1alpha2
kind: UDPRoute
metadata: {{name: other, namespace: default}}
spec:
  parentRefs: [{{name: gw}}]
  rules:
    - backendRefs: [{{group: turnpike.dev, kind: StaticService, name: other}}]
---
apiVersion: turnpike.dev/v1alpha1
kind: StaticService
metadata: {{name: other, namespace: default}}
spec:
  addresses: [127.0.0.1]
  ports: [{{port: {peer}, endPort: {}}}]
"#,
            peer + 1
        ),
    )
    .unwrap();
}

pub struct Run {
    pub proc: Proc,
    pub admin: u16,
    pub dp_admin: u16,
    pub auth: u16,
    pub log: std::path::PathBuf,
}

pub fn start_run(dir: &Path) -> Run {
    start_run_with(dir, &[])
}

/// [`start_run`] with extra environment variables (e.g. `TURNPIKE_LOG_FORMAT=json`).
pub fn start_run_with(dir: &Path, envs: &[(&str, &str)]) -> Run {
    let (admin, dp_admin, auth) = (free_tcp_port(), free_tcp_port(), free_tcp_port());
    let log = dir.parent().unwrap().join(format!("run-{admin}.log"));
    let f = std::fs::File::create(&log).unwrap();
    let proc = Proc::spawn(
        "turnpike run",
        Command::new(turnpike_bin())
            .arg("run")
            .arg(dir)
            .args(["--admin", &format!("127.0.0.1:{admin}")])
            .args(["--dataplane-admin", &format!("127.0.0.1:{dp_admin}")])
            .args(["--cds", "127.0.0.1:0", "--workers", "2"])
            .args(["--auth", &format!("127.0.0.1:{auth}")])
            .env("RUST_LOG", "info")
            .envs(envs.iter().copied())
            .stdout(f.try_clone().unwrap())
            .stderr(f),
    );
    let end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end {
        if let Some((200, _)) = http_get(dp_admin, "/readyz") {
            return Run {
                proc,
                admin,
                dp_admin,
                auth,
                log,
            };
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "dataplane never ready:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}

/// A fresh directory holding the base objects and the echo route (to `echo`), removed when
/// dropped.
pub struct ConfigDir {
    _root: tempfile::TempDir,
    pub path: PathBuf,
}

impl ConfigDir {
    pub fn new(turn_port: u16, echo: u16) -> ConfigDir {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("config");
        std::fs::create_dir(&path).unwrap();
        write_base(&path, turn_port);
        write_echo_route(&path, echo);
        ConfigDir { _root: root, path }
    }
}

/// `turnpike token --dir DIR --sub SUB`: an HS256 token for the directory's auth service.
pub fn token(dir: &Path, sub: &str) -> String {
    let out = Command::new(turnpike_bin())
        .args(["token", "--sub", sub, "--dir"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", crate::output_text(&out));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}
