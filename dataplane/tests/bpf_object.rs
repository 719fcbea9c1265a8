//! The committed kernel program (`dataplane/bpf/relay.bpf.o`, embedded in the binary) is
//! what its source builds to: rebuilt here with `dataplane/bpf/build.sh` and compared byte
//! for byte. Run `dataplane/bpf/build.sh` after changing `relay.bpf.c`.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;

#[test]
fn the_committed_object_is_built_from_its_source() {
    let bpf = Path::new(env!("CARGO_MANIFEST_DIR")).join("bpf");
    let out = tempfile::tempdir().unwrap();
    let rebuilt = out.path().join("relay.bpf.o");
    let build = Command::new(bpf.join("build.sh"))
        .arg(&rebuilt)
        .output()
        .unwrap();
    assert!(
        build.status.success(),
        "dataplane/bpf/build.sh failed (it needs clang and libbpf-dev; tests/run.sh installs \
         them): {}{}",
        String::from_utf8_lossy(&build.stdout),
        String::from_utf8_lossy(&build.stderr)
    );
    let committed = std::fs::read(bpf.join("relay.bpf.o")).unwrap();
    let fresh = std::fs::read(&rebuilt).unwrap();
    assert!(
        committed == fresh,
        "dataplane/bpf/relay.bpf.o differs from what relay.bpf.c builds to \
         ({} vs {} bytes): run dataplane/bpf/build.sh and commit the object",
        committed.len(),
        fresh.len()
    );
}
