//! RFC 5769 test vectors through our codec and integrity code.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

use std::net::SocketAddr;

use turnpike_dataplane::proto::integrity::{self, IntegrityKind, Key, PasswordAlgorithm};
use turnpike_dataplane::proto::{Class, Message, MessageBuilder, attr, message};

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

const REQUEST: &str = "
    00 01 00 58 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
    80 22 00 10 53 54 55 4e 20 74 65 73 74 20 63 6c 69 65 6e 74
    00 24 00 04 6e 00 01 ff
    80 29 00 08 93 2f f9 b1 51 26 3b 36
    00 06 00 09 65 76 74 6a 3a 68 36 76 59 20 20 20
    00 08 00 14 9a ea a7 0c bf d8 cb 56 78 1e f2 b5 b2 d3 f2 49 c1 b5 71 a2
    80 28 00 04 e5 7a 3b cf";

const RESPONSE_V4: &str = "
    01 01 00 3c 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
    80 22 00 0b 74 65 73 74 20 76 65 63 74 6f 72 20
    00 20 00 08 00 01 a1 47 e1 12 a6 43
    00 08 00 14 2b 91 f5 99 fd 9e 90 c3 8c 74 89 f9 2a f9 ba 53 f0 6b e7 d7
    80 28 00 04 c0 7d 4c 96";

const RESPONSE_V6: &str = "
    01 01 00 48 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
    80 22 00 0b 74 65 73 74 20 76 65 63 74 6f 72 20
    00 20 00 14 00 02 a1 47 01 13 a9 fa a5 d3 f1 79 bc 25 f4 b5 be d2 b9 d9
    00 08 00 14 a3 82 95 4e 4b e6 7b f1 17 84 c9 7c 82 92 c2 75 bf e3 ed 41
    80 28 00 04 c8 fb 0b 4c";

const LONG_TERM: &str = "
    00 01 00 60 21 12 a4 42 78 ad 34 33 c6 ad 72 c0 29 da 41 2e
    00 06 00 12 e3 83 9e e3 83 88 e3 83 aa e3 83 83 e3 82 af e3 82 b9 00 00
    00 15 00 1c 66 2f 2f 34 39 39 6b 39 35 34 64 36 4f 4c 33 34 6f 4c 39 46 53 54 76 79 36 34 73 41
    00 14 00 0b 65 78 61 6d 70 6c 65 2e 6f 72 67 00
    00 08 00 14 f6 70 24 65 6d d6 4a 3e 02 b8 e0 71 2e 85 c9 a2 8c a8 96 66";

const SHORT_TERM_PASSWORD: &[u8] = b"VOkJxbRl1RmTxUk/WvJxBt";

#[test]
fn sample_request_parses_and_verifies() {
    let data = hex(REQUEST);
    let msg = Message::parse(&data).expect("fingerprint and lengths are valid");
    assert_eq!(msg.class, Class::Request);
    assert_eq!(msg.method, message::method::BINDING);
    assert_eq!(msg.get(attr::USERNAME), Some(&b"evtj:h6vY"[..]));
    assert_eq!(msg.get(attr::SOFTWARE), Some(&b"STUN test client"[..]));
    assert!(integrity::verify(
        &msg,
        SHORT_TERM_PASSWORD,
        IntegrityKind::Sha1
    ));
    assert!(!integrity::verify(&msg, b"wrong", IntegrityKind::Sha1));
}

#[test]
fn sample_responses_decode_mapped_address() {
    for (vector, expected) in [
        (RESPONSE_V4, "192.0.2.1:32853"),
        (RESPONSE_V6, "[2001:db8:1234:5678:11:2233:4455:6677]:32853"),
    ] {
        let data = hex(vector);
        let msg = Message::parse(&data).unwrap();
        assert_eq!(msg.class, Class::Success);
        let addr = attr::decode_xor_address(
            msg.get(attr::XOR_MAPPED_ADDRESS).unwrap(),
            &msg.transaction_id,
        )
        .unwrap();
        assert_eq!(addr, expected.parse::<SocketAddr>().unwrap());
        assert!(integrity::verify(
            &msg,
            SHORT_TERM_PASSWORD,
            IntegrityKind::Sha1
        ));
    }
}

#[test]
fn our_builder_reproduces_integrity_and_fingerprint_byte_for_byte() {
    for vector in [REQUEST, RESPONSE_V4, RESPONSE_V6] {
        let expected = hex(vector);
        let mi = expected.len() - 24 - 8;
        let mut buf = [0u8; 256];
        buf[..mi].copy_from_slice(&expected[..mi]);
        let mut b = MessageBuilder::resume(&mut buf, mi);
        b.integrity(SHORT_TERM_PASSWORD, false);
        let n = b.finish(true).unwrap();
        assert_eq!(&buf[..n], &expected[..]);
    }
}

#[test]
fn our_builder_encodes_xor_addresses_like_the_vectors() {
    for (vector, addr, at) in [
        (RESPONSE_V4, "192.0.2.1:32853", 36),
        (
            RESPONSE_V6,
            "[2001:db8:1234:5678:11:2233:4455:6677]:32853",
            36,
        ),
    ] {
        let expected = hex(vector);
        let tid: [u8; 12] = expected[8..20].try_into().unwrap();
        let mut buf = [0u8; 64];
        let mut b = MessageBuilder::new(&mut buf, message::method::BINDING, Class::Success, &tid);
        let addr: SocketAddr = addr.parse().unwrap();
        b.xor_address(attr::XOR_MAPPED_ADDRESS, addr);
        let n = b.finish(false).unwrap();
        assert_eq!(&buf[20..n], &expected[at..at + n - 20]);
    }
}

#[test]
fn long_term_credentials_vector() {
    let data = hex(LONG_TERM);
    let msg = Message::parse(&data).unwrap();
    let username = std::str::from_utf8(msg.get(attr::USERNAME).unwrap()).unwrap();
    assert_eq!(username, "マトリックス");
    assert_eq!(msg.get(attr::REALM), Some(&b"example.org"[..]));
    assert_eq!(
        msg.get(attr::NONCE),
        Some(&b"f//499k954d6OL34oL9FSTvy64sA"[..])
    );
    let key = Key::long_term(PasswordAlgorithm::Md5, username, "example.org", "TheMatrIX");
    assert!(integrity::verify(&msg, key.as_bytes(), IntegrityKind::Sha1));
}

#[test]
fn tampered_fingerprint_is_refused() {
    let mut data = hex(REQUEST);
    let last = data.len() - 1;
    data[last] ^= 1;
    assert_eq!(
        Message::parse(&data).unwrap_err(),
        turnpike_dataplane::proto::ParseError::BadFingerprint
    );
}
