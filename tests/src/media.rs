//! Real media calls through Janus with headless Chromium (`tests/browser/janus-call.mjs`
//! on examples/janus/app's page), shared by the test bed on network namespaces
//! (tests/tests/janus.rs) and the cluster suite (tests/tests/cluster/janus.rs).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::{output_text, repo_root};

/// Fails with what to run when the browser or a tool of the demo is missing.
pub fn require_browser(tools: &[&str]) {
    assert!(
        Path::new("/usr/bin/chromium").exists(),
        "chromium is not installed: run tests/run.sh"
    );
    assert!(
        repo_root()
            .join("tests/browser/node_modules/playwright-core")
            .exists(),
        "playwright-core is not installed: run tests/run.sh"
    );
    for tool in ["node"].iter().chain(tools) {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(found, "{tool} is not installed: run tests/run.sh");
    }
}

/// `tests/artifacts/`, where screenshots are kept for a person to look at.
pub fn artifacts() -> PathBuf {
    let dir = repo_root().join("tests/artifacts");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    dir
}

/// One run of `janus-call.mjs`: Chromium inside `client_ns` with extra `flags`.
pub struct Call<'a> {
    pub app_url: &'a str,
    /// `echotest` or `videoroom`.
    pub kind: &'a str,
    pub screenshot: &'a Path,
    pub seconds: u32,
    pub client_ns: &'a str,
    pub flags: String,
}

impl Call<'_> {
    /// The browser's JSON result; panics with the script's output (and `context`, e.g. the
    /// server logs) when there is none.
    pub fn run(&self, context: impl Fn() -> String) -> Value {
        let out = Command::new("node")
            .arg(repo_root().join("tests/browser/janus-call.mjs"))
            .args([self.app_url, self.kind])
            .arg(self.screenshot)
            .arg(self.seconds.to_string())
            .env("CLIENT_NS", self.client_ns)
            .env("CHROMIUM_FLAGS", &self.flags)
            .output()
            .unwrap_or_else(|e| panic!("node: {e}"));
        let text = output_text(&out);
        let line = text.lines().find(|l| l.starts_with('{'));
        let Some(r) = line.and_then(|l| serde_json::from_str::<Value>(l).ok()) else {
            panic!("no result from the browsers:\n{text}\n{}", context());
        };
        eprintln!(
            "{}",
            serde_json::to_string_pretty(&r).unwrap_or_else(|_| r.to_string())
        );
        r
    }
}

/// What a VideoRoom call through Turnpike must show, from the browsers' `getStats`:
/// both peer connections on relayed candidates, the subscriber decoding at least 150 video
/// frames and receiving 250 audio packets in 10 s, loss at most 1 %. Returns the video
/// bytes the subscriber received.
pub fn assert_media_flowed(r: &Value) -> f64 {
    assert_eq!(r["publisher"]["state"], "connected", "publisher: {r}");
    assert_eq!(r["state"], "connected", "subscriber: {r}");
    for side in [&r["publisher"]["stats"], &r["stats"]] {
        assert_eq!(
            side["selected"]["local"]["type"], "relay",
            "only relayed candidates: {side}"
        );
    }
    let video = &r["stats"]["inbound"]["video"];
    let audio = &r["stats"]["inbound"]["audio"];
    let frames = video["framesDecoded"].as_u64().unwrap_or(0);
    assert!(
        frames >= 150,
        "video frames decoded in 10 s: {frames} ({video})"
    );
    let audio_packets = audio["packetsReceived"].as_u64().unwrap_or(0);
    assert!(
        audio_packets >= 250,
        "audio packets in 10 s: {audio_packets} ({audio})"
    );
    for (kind, s) in [("video", video), ("audio", audio)] {
        let received = s["packetsReceived"].as_f64().unwrap_or(0.0);
        let lost = s["packetsLost"].as_f64().unwrap_or(0.0).max(0.0);
        let loss = lost / (received + lost);
        assert!(loss <= 0.01, "{kind} loss {:.2} % ({s})", loss * 100.0);
    }
    video["bytesReceived"].as_f64().unwrap_or(0.0)
}

/// `turnpike_relayed_bytes_total` of `route`, both directions, in a Prometheus text body.
pub fn route_bytes(metrics: &str, route: &str) -> f64 {
    let label = format!("route=\"{route}\"");
    metrics
        .lines()
        .filter(|l| l.starts_with("turnpike_relayed_bytes_total{") && l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
