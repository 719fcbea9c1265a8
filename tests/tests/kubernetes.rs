//! Against a real kube-apiserver with RBAC (tests/k8s/apiserver.sh): our CRDs, generated
//! from the Rust types, are served and validate strictly; the quickstart's Gateway API
//! objects apply; the operator's ClusterRole grants what it needs and nothing more.
#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

use std::path::PathBuf;
use std::process::{Command, Output};

use turnpike_tests::repo_root;

struct Fixture {
    dir: tempfile::TempDir,
    admin: PathBuf,
    operator: PathBuf,
}

impl Fixture {
    fn start() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new(repo_root().join("tests/k8s/apiserver.sh"))
            .arg("start")
            .env("TURNPIKE_K8S_DIR", dir.path().join("run"))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let var = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("export {name}=")))
                .map(PathBuf::from)
                .unwrap()
        };
        Fixture {
            admin: var("KUBECONFIG"),
            operator: var("TURNPIKE_OPERATOR_KUBECONFIG"),
            dir,
        }
    }

    fn kubectl(&self, kubeconfig: &PathBuf, args: &[&str], stdin: Option<&str>) -> Output {
        let kubectl = turnpike_tests::python().parent().unwrap().join("kubectl");
        let mut cmd = Command::new(kubectl);
        cmd.arg("--kubeconfig").arg(kubeconfig).args(args);
        match stdin {
            None => cmd.output().unwrap(),
            Some(text) => {
                use std::io::Write as _;
                let mut child = cmd
                    .stdin(std::process::Stdio::piped())
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
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
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = Command::new(repo_root().join("tests/k8s/apiserver.sh"))
            .arg("stop")
            .env("TURNPIKE_K8S_DIR", self.dir.path().join("run"))
            .output();
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn crds_quickstart_and_rbac_on_a_real_apiserver() {
    let f = Fixture::start();
    let crds = f.kubectl(&f.admin, &["get", "crd", "-o", "name"], None);
    let names = text(&crds);
    for crd in [
        "gatewayconfigs.turnpike.dev",
        "staticservices.turnpike.dev",
        "udproutes.gateway.networking.k8s.io",
    ] {
        assert!(names.contains(crd), "{crd} missing: {names}");
    }
    // The quickstart's Gateway API objects are valid cluster YAML...
    let quickstart = repo_root().join("examples/quickstart");
    for file in [
        "00-gatewayclass.yaml",
        "10-gateway.yaml",
        "20-udproute.yaml",
    ] {
        let path = quickstart.join(file);
        let o = f.kubectl(&f.admin, &["apply", "-f", path.to_str().unwrap()], None);
        assert!(o.status.success(), "{file}: {}", text(&o));
    }
    // ...but its hand-written EndpointSlice points at loopback, which a cluster refuses:
    // the quickstart is for `turnpike run`; cluster examples come with the operator.
    let path = quickstart.join("30-echo-service.yaml");
    let o = f.kubectl(&f.admin, &["apply", "-f", path.to_str().unwrap()], None);
    assert!(
        text(&o).contains("may not be in the loopback range"),
        "{}",
        text(&o)
    );
    // Unknown fields in our CRDs are refused by the API server itself.
    let bad = "apiVersion: turnpike.dev/v1alpha1\nkind: GatewayConfig\nmetadata: {name: bad, namespace: default}\nspec:\n  auth: {secretRef: {name: x}, tll: 1h}\n";
    let o = f.kubectl(&f.admin, &["apply", "-f", "-"], Some(bad));
    assert!(
        !o.status.success() && text(&o).contains("unknown field \"spec.auth.tll\""),
        "{}",
        text(&o)
    );

    // RBAC: nothing before the manifests, exactly what the operator needs after.
    let can = |args: &[&str]| {
        let mut a = vec!["auth", "can-i"];
        a.extend_from_slice(args);
        text(&f.kubectl(&f.operator, &a, None)).trim().to_string()
    };
    assert_eq!(
        can(&["list", "gateways.gateway.networking.k8s.io", "-A"]),
        "no"
    );
    let manifests = repo_root().join("manifests");
    for m in ["00-namespace.yaml", "10-rbac.yaml"] {
        let o = f.kubectl(
            &f.admin,
            &["apply", "-f", manifests.join(m).to_str().unwrap()],
            None,
        );
        assert!(o.status.success(), "{}", text(&o));
    }
    for (args, want) in [
        (
            vec!["list", "gateways.gateway.networking.k8s.io", "-A"],
            "yes",
        ),
        (
            vec!["watch", "udproutes.gateway.networking.k8s.io", "-A"],
            "yes",
        ),
        (
            vec![
                "patch",
                "gateways.gateway.networking.k8s.io",
                "--subresource=status",
                "-A",
            ],
            "yes",
        ),
        (
            vec![
                "patch",
                "udproutes.gateway.networking.k8s.io",
                "--subresource=status",
                "-A",
            ],
            "yes",
        ),
        (vec!["list", "endpointslices.discovery.k8s.io", "-A"], "yes"),
        (vec!["create", "deployments.apps", "-n", "default"], "yes"),
        (
            vec![
                "create",
                "leases.coordination.k8s.io",
                "-n",
                "turnpike-system",
            ],
            "yes",
        ),
        (
            vec![
                "update",
                "gateways.gateway.networking.k8s.io",
                "-n",
                "default",
            ],
            "no",
        ),
        (vec!["create", "pods", "-n", "default"], "no"),
        (vec!["delete", "secrets", "-n", "default"], "no"),
        (
            vec!["create", "leases.coordination.k8s.io", "-n", "default"],
            "no",
        ),
    ] {
        assert_eq!(can(&args), want, "can-i {args:?}");
    }
}
