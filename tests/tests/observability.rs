//! Issue 17: the alert rules operators load (manifests/helm/turnpike/files/
//! prometheus-rules.yaml) pass Debian's `promtool check rules`, and its unit tests
//! (tests/observability/rules-test.yaml) make every alert fire on its condition and stay
//! quiet short of it. A real Prometheus scraping `turnpike run` checks the dashboard and
//! the alerts against the metrics as they are.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use turnpike_dataplane::client::TurnClient;
use turnpike_tests::media::artifacts;
use turnpike_tests::standalone::{
    Run, SECRET, start_run, start_run_with, token, write_base_with, write_echo_route,
    write_other_route, write_tls_secret,
};
use turnpike_tests::{
    Proc, Uclient, echo_peer, free_tcp_port, free_udp_port, http_get, http_get_with, output_text,
    python, repo_root, require_tool, rest_credentials, uclient_relay,
};

const RULES: &str = "manifests/helm/turnpike/files/prometheus-rules.yaml";

fn promtool(args: &[&str]) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(repo_root())
        .output()
        .unwrap_or_else(|e| panic!("promtool ({e}): run tests/run.sh, which installs prometheus"));
    let text = output_text(&out);
    assert!(out.status.success(), "promtool {args:?}:\n{text}");
    text
}

#[test]
fn alert_rules_are_valid_and_every_alert_fires_on_its_condition() {
    let checked = promtool(&["check", "rules", RULES]);
    assert!(checked.contains("SUCCESS: 13 rules found"), "{checked}");
    let tested = promtool(&["test", "rules", "tests/observability/rules-test.yaml"]);
    assert!(tested.contains("SUCCESS"), "{tested}");

    // Every alert of the rule file has a unit test that expects it to fire.
    let rules = std::fs::read_to_string(repo_root().join(RULES)).unwrap_or_default();
    let tests = std::fs::read_to_string(repo_root().join("tests/observability/rules-test.yaml"))
        .unwrap_or_default();
    for alert in rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
    {
        let fires = tests.split("alertname: ").skip(1).any(|t| {
            t.starts_with(alert)
                && t[alert.len()..].starts_with(['\n', ','])
                && t.contains("exp_labels")
        });
        assert!(fires, "{alert}: no test expects it to fire");
    }
}

/// Every query of the Grafana dashboard returns data from a real Prometheus scraping
/// `turnpike run` under load, the rules load and evaluate, and alerts fire when their
/// condition is produced: a TLS certificate with a day left, then the dataplane gone.
/// The dashboard's Overview row, drawn from the same Prometheus, is kept as
/// tests/artifacts/dashboard-overview.png.
#[test]
fn prometheus_scrapes_turnpike_every_panel_has_data_and_alerts_fire() {
    require_tool("prometheus");
    let (turn, tls, echo) = (free_udp_port(), free_tcp_port(), free_udp_port());
    let _peer = echo_peer(echo);
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("config");
    std::fs::create_dir(&dir).unwrap();
    write_base_with(
        &dir,
        &format!(
            "    - {{name: udp, protocol: TURN-UDP, port: {turn}}}\n    - {{name: tcp, protocol: TURN-TCP, port: {turn}}}\n    - {{name: tls, protocol: TURN-TLS, port: {tls}, tls: {{certificateRefs: [{{name: turn-tls}}]}}}}\n"
        ),
        "",
    );
    write_echo_route(&dir, echo);
    let (cert, key) = certificate_expiring_in_a_day(root.path());
    write_tls_secret(&dir, "turn-tls", &cert, &key);
    let run = start_run(&dir);

    let prom = Prometheus::start(root.path(), &run);
    let started = now_unix();
    // A route added while Prometheus watches: the control plane renders and applies it.
    write_other_route(&dir, free_udp_port());

    // Load: UDP and TCP relays, a wrong password, allocations created and released, the
    // auth service asked with and without a token.
    let udp = uclient_relay(turn, echo, 4, 200, &["-W", SECRET]);
    assert_eq!(udp.lost, Some(0), "{}", udp.output);
    let tcp = Uclient::loopback(turn, echo)
        .tcp()
        .clients(2)
        .messages(100)
        .args(&["-W", SECRET])
        .run();
    assert!(tcp.lost.is_some(), "{}", tcp.output);
    let wrong = uclient_relay(turn, echo, 1, 5, &["-W", "not-the-secret"]);
    assert_ne!(wrong.lost, Some(0), "a wrong password relays nothing");
    for i in 0..3 {
        let (user, pass) = rest_credentials(SECRET, &format!("released-{i}"), 600);
        let server = std::net::SocketAddr::from(([127, 0, 0, 1], turn));
        let mut c = TurnClient::new(server, &user, &pass).unwrap();
        c.allocate().unwrap();
        c.release().unwrap();
    }
    let token = token(&dir, "monitoring-test");
    let bearer = format!("Bearer {token}");
    let ice = http_get_with(
        run.auth,
        "/ice-config?gateway=default/gw&userid=alice",
        &[("authorization", &bearer)],
    );
    assert_eq!(ice.map(|r| r.0), Some(200));
    assert_eq!(
        http_get(run.auth, "/ice-config?gateway=default/gw").map(|r| r.0),
        Some(401)
    );
    // A few scrapes after the load, so every rate has two samples.
    std::thread::sleep(Duration::from_secs(5));

    let rules = prom.get("/api/v1/rules");
    let loaded: Vec<&Value> = rules["data"]["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_array().into_iter().flatten())
        .collect();
    assert_eq!(loaded.len(), 13, "{rules}");
    for r in &loaded {
        assert_eq!(r["health"], "ok", "rule evaluation: {r}");
    }

    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(repo_root().join(DASHBOARD)).unwrap())
            .unwrap();
    let mut empty = Vec::new();
    let mut queries = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"]
                .as_str()
                .unwrap()
                .replace("$__rate_interval", "5m")
                .replace("$namespace", ".*")
                .replace("$gateway", ".*");
            queries += 1;
            let result = prom.query(&expr);
            let finite = result
                .iter()
                .filter_map(|s| s["value"][1].as_str()?.parse::<f64>().ok())
                .any(f64::is_finite);
            if !finite {
                empty.push(format!("{}: {expr} -> {result:?}", panel["title"]));
            }
        }
    }
    assert!(queries >= 40, "{queries} queries");
    assert!(
        empty.is_empty(),
        "panels without data:\n{}",
        empty.join("\n")
    );

    let png = artifacts().join("dashboard-overview.png");
    let out = Command::new(python())
        .arg(repo_root().join("tests/observability/render_overview.py"))
        .arg(prom.url())
        .arg(repo_root().join(DASHBOARD))
        .arg(&png)
        .arg(started.to_string())
        .arg(now_unix().to_string())
        .output()
        .unwrap();
    assert!(out.status.success(), "render: {}", output_text(&out));

    // The certificate has a day left: critical within the rule's minute.
    prom.wait_firing("TurnpikeCertificateExpiring", Duration::from_secs(120));
    assert!(
        !prom.firing().contains(&"TurnpikeDataplaneDown".to_string()),
        "the dataplane is up"
    );
    // The dataplane goes away.
    run.proc.signal("KILL");
    prom.wait_firing("TurnpikeDataplaneDown", Duration::from_secs(120));
}

/// `--log-format json`: one JSON object per line, with the allocation lifecycle, config and
/// certificate events under stable field names, and never a password or secret.
#[test]
fn json_logs_carry_the_allocation_lifecycle_without_credentials() {
    let (turn, echo) = (free_udp_port(), free_udp_port());
    let config = turnpike_tests::standalone::ConfigDir::new(turn, echo);
    let run = start_run_with(&config.path, &[("TURNPIKE_LOG_FORMAT", "json")]);
    let (user, pass) = rest_credentials(SECRET, "log-user", 600);
    let server = std::net::SocketAddr::from(([127, 0, 0, 1], turn));
    let mut c = TurnClient::new(server, &user, &pass).unwrap();
    let relay = c.allocate().unwrap();
    c.release().unwrap();

    let event = |name: &str| -> Value {
        let end = Instant::now() + Duration::from_secs(5);
        loop {
            let text = std::fs::read_to_string(&run.log).unwrap_or_default();
            let found = text
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .find(|v| v["fields"]["event"] == name);
            if let Some(v) = found {
                return v;
            }
            assert!(Instant::now() < end, "no {name} event in:\n{text}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let created = event("allocation_created");
    let f = &created["fields"];
    assert_eq!(f["listener"], "udp", "{created}");
    assert_eq!(f["user"], user.as_str(), "{created}");
    assert_eq!(f["relay"], relay.to_string(), "{created}");
    assert_eq!(f["lifetime"], 600, "{created}");
    assert!(
        f["client"]
            .as_str()
            .is_some_and(|c| c.starts_with("127.0.0.1:")),
        "{created}"
    );
    assert_eq!(created["level"], "INFO", "{created}");
    let deleted = event("allocation_deleted");
    let f = &deleted["fields"];
    assert_eq!(f["reason"], "deleted", "{deleted}");
    assert_eq!(f["user"], user.as_str(), "{deleted}");
    assert!(f["lived_seconds"].is_u64(), "{deleted}");
    event("config_applied");

    let text = std::fs::read_to_string(&run.log).unwrap_or_default();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            serde_json::from_str::<Value>(line).is_ok(),
            "not one JSON object per line: {line}"
        );
    }
    assert!(
        !text.contains(SECRET),
        "the REST secret leaked into the log"
    );
    assert!(!text.contains(&pass), "a password leaked into the log");
}

const DASHBOARD: &str = "manifests/helm/turnpike/files/grafana-dashboard.json";

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A self-signed certificate for 127.0.0.1 that expires in a day (`openssl req -days 1`).
fn certificate_expiring_in_a_day(dir: &std::path::Path) -> (String, String) {
    let (cert, key) = (dir.join("expiring.crt"), dir.join("expiring.key"));
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "1", "-subj", "/CN=turn.test"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:turn.test"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(out.status.success(), "openssl: {}", output_text(&out));
    (
        std::fs::read_to_string(cert).unwrap(),
        std::fs::read_to_string(key).unwrap(),
    )
}

/// Debian's Prometheus scraping `turnpike run` every second (jobs and labels as the
/// chart's PodMonitors set them) and evaluating the rules every second.
struct Prometheus {
    _proc: Proc,
    port: u16,
}

impl Prometheus {
    fn start(dir: &std::path::Path, run: &Run) -> Prometheus {
        let port = free_tcp_port();
        let config = dir.join("prometheus.yml");
        let rules = repo_root().join(RULES);
        std::fs::write(
            &config,
            format!(
                r#"global: {{scrape_interval: 1s, evaluation_interval: 1s}}
rule_files: ["{}"]
scrape_configs:
  - job_name: turnpike-dataplane
    static_configs:
      - targets: ["127.0.0.1:{}"]
        labels: {{namespace: default, gateway: gw, pod: gw-standalone}}
  - job_name: turnpike-operator
    static_configs:
      - targets: ["127.0.0.1:{}"]
        labels: {{namespace: turnpike-system, pod: turnpike-run}}
  - job_name: turnpike-auth
    static_configs:
      - targets: ["127.0.0.1:{}"]
        labels: {{namespace: turnpike-system, pod: turnpike-run}}
"#,
                rules.display(),
                run.dp_admin,
                run.admin,
                run.auth
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let proc = Proc::spawn(
            "prometheus",
            Command::new("prometheus")
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.join("tsdb").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .stdout(log.try_clone().unwrap())
                .stderr(log),
        );
        let prom = Prometheus { _proc: proc, port };
        // Up, and every target scraped healthy once.
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            let targets = prom.try_get("/api/v1/targets");
            let up = targets.as_ref().map_or(0, |t| {
                t["data"]["activeTargets"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|t| t["health"] == "up")
                    .count()
            });
            if up == 3 {
                return prom;
            }
            assert!(
                Instant::now() < end,
                "Prometheus targets not up: {targets:?}\n{}",
                std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn try_get(&self, path_and_query: &str) -> Option<Value> {
        let out = Command::new("curl")
            .args(["-sf", "--max-time", "10"])
            .arg(format!("{}{path_and_query}", self.url()))
            .output()
            .ok()?;
        serde_json::from_slice(&out.stdout).ok()
    }

    fn get(&self, path: &str) -> Value {
        self.try_get(path)
            .unwrap_or_else(|| panic!("Prometheus {path}"))
    }

    /// The instant vector `expr` evaluates to now.
    fn query(&self, expr: &str) -> Vec<Value> {
        let out = Command::new("curl")
            .args(["-sf", "--max-time", "10", "-G", "--data-urlencode"])
            .arg(format!("query={expr}"))
            .arg(format!("{}/api/v1/query", self.url()))
            .output()
            .unwrap();
        let v: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|_| panic!("query {expr}: {}", output_text(&out)));
        assert_eq!(v["status"], "success", "query {expr}: {v}");
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// Names of the alerts firing now.
    fn firing(&self) -> Vec<String> {
        self.get("/api/v1/alerts")["data"]["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| a["state"] == "firing")
            .filter_map(|a| a["labels"]["alertname"].as_str().map(String::from))
            .collect()
    }

    fn wait_firing(&self, alert: &str, timeout: Duration) {
        let end = Instant::now() + timeout;
        while !self.firing().iter().any(|a| a == alert) {
            assert!(
                Instant::now() < end,
                "{alert} did not fire within {timeout:?}: {}",
                self.get("/api/v1/alerts")
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}
