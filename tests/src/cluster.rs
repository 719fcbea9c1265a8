//! The single-node cluster (`tests/k8s/cluster.sh`): kubelet, containerd, scheduler,
//! controller-manager, kube-proxy and CoreDNS for real, with Turnpike's own image
//! (`tests/image/build.sh`) imported into containerd and run as pods.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod};

use crate::k8s::{Kube, exported, keep_logs, wait_for};
use crate::{output_text, repo_root, turnpike_bin};

/// The image the tests build and import; manifests name [`PUBLISHED_IMAGE`] instead.
pub const IMAGE: &str = "localhost/turnpike:test";
pub const PUBLISHED_IMAGE: &str =
    concat!("ghcr.io/turnpike-dev/turnpike:", env!("CARGO_PKG_VERSION"));

pub struct NodeCluster {
    kube: Kube,
    /// The network namespace that plays the internet: it reaches the node only through
    /// load-balancer addresses.
    pub inet_ns: String,
    run: PathBuf,
}

impl std::ops::Deref for NodeCluster {
    type Target = Kube;
    fn deref(&self) -> &Kube {
        &self.kube
    }
}

fn script(path: &str, args: &[&str]) -> Output {
    Command::new(repo_root().join(path))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Builds [`IMAGE`] from the tested binary (`tests/image/build.sh`) into the local
/// containers storage and an OCI archive at `archive`.
pub fn build_image(archive: &Path) {
    let bin = turnpike_bin();
    let out = script(
        "tests/image/build.sh",
        &[
            "--binary",
            bin.to_str().unwrap(),
            "--tag",
            IMAGE,
            "--out",
            archive.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "image build: {}", output_text(&out));
}

impl NodeCluster {
    /// Builds the image from the tested binary, starts the cluster and imports the image.
    pub fn start() -> NodeCluster {
        let image_dir = tempfile::tempdir().unwrap();
        let archive = image_dir.path().join("turnpike.oci.tar");
        build_image(&archive);
        let out = script("tests/k8s/cluster.sh", &["start"]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(out.status.success(), "cluster start: {}", output_text(&out));
        let var = |name: &str| exported(&text, name);
        let admin = PathBuf::from(var("KUBECONFIG"));
        let cluster = NodeCluster {
            run: admin.parent().unwrap().to_path_buf(),
            kube: Kube { admin },
            inet_ns: var("TURNPIKE_CLUSTER_INET_NS"),
        };
        cluster.import_image(&archive);
        cluster
    }

    /// Imports an OCI or Docker archive into the cluster's containerd, as a node that
    /// pulled it.
    pub fn import_image(&self, archive: &Path) {
        let out = script(
            "tests/k8s/cluster.sh",
            &["import", archive.to_str().unwrap()],
        );
        assert!(
            out.status.success(),
            "image import of {}: {}",
            archive.display(),
            output_text(&out)
        );
    }

    /// A file of `manifests/` (or any repository YAML) with the published image replaced
    /// by the one under test, as a user would point it at their registry.
    pub fn with_test_image(path: &str) -> String {
        let text = std::fs::read_to_string(repo_root().join(path)).unwrap();
        text.replace(PUBLISHED_IMAGE, IMAGE)
    }

    /// Applies every YAML file of `dir` (sorted) with the test image.
    pub fn apply_dir(&self, dir: &str) {
        let mut files: Vec<_> = std::fs::read_dir(repo_root().join(dir))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
            .collect();
        files.sort();
        for f in files {
            let rel = f.strip_prefix(repo_root()).unwrap();
            self.apply(&Self::with_test_image(rel.to_str().unwrap()));
        }
    }

    /// The host PID of container `container` of pod `ns/pod` (from containerd).
    pub fn container_pid(&self, ns: &str, pod: &str, container: &str) -> u32 {
        let p: Pod = self.get_as(&["pod", "-n", ns, pod]).expect("pod");
        let statuses = p
            .status
            .and_then(|s| s.container_statuses)
            .unwrap_or_default();
        let id = statuses
            .iter()
            .find(|c| c.name == container)
            .and_then(|c| c.container_id.as_deref())
            .and_then(|id| id.strip_prefix("containerd://"))
            .unwrap_or_else(|| panic!("no running container {container} in {ns}/{pod}"))
            .to_string();
        let out = script("tests/k8s/cluster.sh", &["ctr", "tasks", "ls"]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        text.lines()
            .find_map(|l| {
                let mut f = l.split_whitespace();
                (f.next() == Some(id.as_str()))
                    .then(|| f.next().and_then(|pid| pid.parse().ok()))
                    .flatten()
            })
            .unwrap_or_else(|| panic!("no task {id} in ctr tasks ls:\n{text}"))
    }

    /// Pods of `ns` matching `selector`: name → the pod object.
    pub fn pods(&self, ns: &str, selector: &str) -> BTreeMap<String, Pod> {
        self.list_as::<Pod>(&["pods", "-n", ns, "-l", selector])
            .into_iter()
            .map(|p| (p.metadata.name.clone().unwrap_or_default(), p))
            .collect()
    }

    /// Waits until `ns` has exactly `n` pods matching `selector`, all Running and Ready and
    /// none terminating; returns them.
    pub fn wait_ready_pods(
        &self,
        ns: &str,
        selector: &str,
        n: usize,
        timeout: Duration,
    ) -> BTreeMap<String, Pod> {
        wait_for(
            &format!("{n} ready pods {selector} in {ns}"),
            timeout,
            || {
                let pods = self.pods(ns, selector);
                (pods.len() == n && pods.values().all(|p| is_ready(p) && !is_terminating(p)))
                    .then_some(pods)
            },
        )
    }
}

pub fn is_ready(pod: &Pod) -> bool {
    let Some(status) = &pod.status else {
        return false;
    };
    status.phase.as_deref() == Some("Running")
        && status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True")
}

pub fn is_terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

pub fn pod_ip(pod: &Pod) -> String {
    pod.status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .unwrap_or_default()
}

/// The first container of `pod`.
pub fn first_container(pod: &Pod) -> Container {
    pod.spec
        .as_ref()
        .and_then(|s| s.containers.first().cloned())
        .expect("a pod has a container")
}

/// `spec.terminationGracePeriodSeconds` of `pod`.
pub fn grace_period(pod: &Pod) -> Option<i64> {
    pod.spec
        .as_ref()
        .and_then(|s| s.termination_grace_period_seconds)
}

/// What `/proc/PID` says of a process's privileges.
#[derive(Debug, PartialEq)]
pub struct ProcessPrivileges {
    pub uid: String,
    pub effective_capabilities: String,
    pub no_new_privs: String,
    /// 2 = seccomp filter mode.
    pub seccomp: String,
    pub root_read_only: bool,
}

pub fn process_privileges(pid: u32) -> ProcessPrivileges {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    };
    let mountinfo = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    // Field 5 is the mount point, field 6 the per-mount options.
    let root_read_only = mountinfo.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.get(4) == Some(&"/") && f.get(5).is_some_and(|o| o.split(',').any(|x| x == "ro"))
    });
    ProcessPrivileges {
        uid: field("Uid"),
        effective_capabilities: field("CapEff"),
        no_new_privs: field("NoNewPrivs"),
        seccomp: field("Seccomp"),
        root_read_only,
    }
}

impl Drop for NodeCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            keep_logs(Path::new(&self.run));
        }
        let _ = script("tests/k8s/cluster.sh", &["stop"]);
    }
}
