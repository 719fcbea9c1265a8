//! Replays the cargo-fuzz corpora (`dataplane/fuzz/corpus/*`) and the generated seeds
//! through the fuzz entry points: every input that ever mattered stays a regression test.
//! Set `TURNPIKE_WRITE_FUZZ_SEEDS=1` to (re)write the generated seeds into the corpus.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

use std::path::PathBuf;

use turnpike_dataplane::fuzzing;

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let d = std::fs::read(&p).unwrap();
            (p, d)
        })
        .collect()
}

fn check_seed(target: &str, name: &str, bytes: &[u8]) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let path = dir.join(format!("seed-{name}"));
    if std::env::var_os("TURNPIKE_WRITE_FUZZ_SEEDS").is_some() {
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(&path, bytes).unwrap();
    }
    assert!(
        path.exists(),
        "{} missing: run with TURNPIKE_WRITE_FUZZ_SEEDS=1",
        path.display()
    );
}

#[test]
fn seeds_reach_deep_into_the_server() {
    let seeds = fuzzing::server_seeds();
    for (name, bytes) in &seeds {
        check_seed("server_packets", name, bytes);
    }
    let stats = fuzzing::server_packets(&seeds[0].1);
    assert_eq!(stats.allocations_created, 1, "{stats:?}");
    assert_eq!(stats.allocations_deleted, 1, "{stats:?}");
    let relayed = stats.relay[0];
    assert_eq!(
        relayed.to_peer_packets, 2,
        "ChannelData and Send: {stats:?}"
    );
    assert_eq!(relayed.to_client_packets, 1, "{stats:?}");
    for (i, m) in fuzzing::message_seeds().iter().enumerate() {
        check_seed("parse_message", &format!("{i:02}"), m);
    }
}

#[test]
fn parse_message_corpus() {
    let files = corpus("parse_message");
    assert!(files.len() >= 5, "corpus is empty");
    for (_, data) in files {
        fuzzing::parse_message(&data);
    }
}

#[test]
fn server_packets_corpus() {
    let files = corpus("server_packets");
    assert!(files.len() >= 2, "corpus is empty");
    for (_, data) in files {
        fuzzing::server_packets(&data);
    }
}
