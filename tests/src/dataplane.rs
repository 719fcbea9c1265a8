//! A `turnpike dataplane --config FILE` under test.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::http::{http_get, metric};
use crate::netlab::Netns;
use crate::ports::free_tcp_port;
use crate::process::{Proc, turnpike_bin};

/// A running `turnpike dataplane --config FILE`.
pub struct Dataplane {
    pub proc: Proc,
    pub dir: tempfile::TempDir,
    pub admin: u16,
    pub log: PathBuf,
    /// The network namespace it runs in (its admin port is on that namespace's loopback).
    pub netns: Option<Netns>,
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

    /// Starts the dataplane inside `netns` (`ip netns exec`) and waits until it is ready.
    pub fn start_in(netns: &Netns, yaml: &str, extra: &[&str]) -> Dataplane {
        let dp = Self::spawn_in(Some(netns), yaml, extra);
        dp.wait_ready(Duration::from_secs(10));
        dp
    }

    /// Starts the dataplane without waiting for it to become ready.
    pub fn spawn(yaml: &str, extra: &[&str]) -> Dataplane {
        Self::spawn_in(None, yaml, extra)
    }

    fn spawn_in(netns: Option<&Netns>, yaml: &str, extra: &[&str]) -> Dataplane {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("dataplane.yaml");
        std::fs::write(&cfg, yaml).unwrap();
        let admin = free_tcp_port();
        let log = dir.path().join("dataplane.log");
        let logf = std::fs::File::create(&log).unwrap();
        let mut cmd = match netns {
            Some(ns) => {
                // `ip netns exec` execs the program: the pid stays the dataplane's.
                let mut c = Command::new("ip");
                c.args(["netns", "exec", &ns.name]).arg(turnpike_bin());
                c
            }
            None => Command::new(turnpike_bin()),
        };
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
            netns: netns.cloned(),
        }
    }

    /// GET on the admin port, from inside the dataplane's namespace when it has one.
    fn admin_get(&self, path: &'static str) -> Option<(u16, String)> {
        let port = self.admin;
        match &self.netns {
            Some(ns) => ns.run(move || http_get(port, path)),
            None => http_get(port, path),
        }
    }

    pub fn wait_ready(&self, timeout: Duration) {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if let Some((200, _)) = self.admin_get("/readyz") {
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
        self.admin_get("/metrics").unwrap().1
    }

    pub fn status(&self) -> String {
        self.admin_get("/status").unwrap().1
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
