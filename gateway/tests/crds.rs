//! The committed CRDs in `manifests/crds/` and in the Helm chart's `crds/` are exactly what
//! the Rust types generate. `TURNPIKE_BLESS=1` rewrites them.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

use std::path::Path;

#[test]
fn committed_crds_match_the_rust_types() {
    let manifests = Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests");
    let bless = std::env::var_os("TURNPIKE_BLESS").is_some();
    for dir in [manifests.join("crds"), manifests.join("helm/turnpike/crds")] {
        check(&dir, bless);
    }
}

fn check(dir: &Path, bless: bool) {
    for (file, yaml) in turnpike_gateway::manifests::crds().unwrap() {
        let path = dir.join(file);
        if bless {
            std::fs::create_dir_all(dir).unwrap();
            std::fs::write(&path, &yaml).unwrap();
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == yaml,
            "{} differs from the Rust types; TURNPIKE_BLESS=1 cargo test -p turnpike-gateway --test crds rewrites it",
            path.display()
        );
    }
}
