//! The server's packet entry points (client datagrams, peer datagrams, time passing).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = turnpike_dataplane::fuzzing::server_packets(data);
});
