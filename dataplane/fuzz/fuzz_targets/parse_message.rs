//! STUN and ChannelData parsing, integrity checks and attribute decoders.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    turnpike_dataplane::fuzzing::parse_message(data);
});
