//! A `turnpike dataplane --config FILE` under test.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::http::{http_get, metric};
use crate::ports::free_tcp_port;
use crate::process::{Proc, turnpike_bin};

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
