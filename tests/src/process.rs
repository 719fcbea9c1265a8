//! The processes tests run: the `turnpike` binary under test (never a stale build),
//! third-party tools (required, never skipped), children killed when dropped, and commands
//! inside a test's network namespace.

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
            for krate in ["dataplane", "dataplane/contract", "auth-service", "gateway"] {
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
