//! MESSAGE-INTEGRITY(-SHA256) and long-term credential keys (RFC 8489 §9.2, §14.5, §14.6).

use hmac::{Hmac, Mac};
use md5::{Digest as _, Md5};
use sha1::Sha1;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::attr;
use super::message::Message;

/// A long-term credential key: MD5 (16 bytes) or SHA-256 (32 bytes) of
/// `username:realm:password`, per the PASSWORD-ALGORITHM in use.
#[derive(Clone, PartialEq, Eq)]
pub struct Key {
    bytes: [u8; 32],
    len: u8,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(<redacted>)")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordAlgorithm {
    Md5,
    Sha256,
}

impl Key {
    pub fn long_term(alg: PasswordAlgorithm, username: &str, realm: &str, password: &str) -> Key {
        let mut bytes = [0u8; 32];
        let len = match alg {
            PasswordAlgorithm::Md5 => {
                let mut h = Md5::new();
                for part in [username, ":", realm, ":", password] {
                    h.update(part.as_bytes());
                }
                bytes[..16].copy_from_slice(&h.finalize());
                16
            }
            PasswordAlgorithm::Sha256 => {
                let mut h = Sha256::new();
                for part in [username, ":", realm, ":", password] {
                    h.update(part.as_bytes());
                }
                bytes.copy_from_slice(&h.finalize());
                32
            }
        };
        Key { bytes, len }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
}

/// HMAC-SHA1 (20 bytes used) or HMAC-SHA256 (32 bytes) over the concatenated `parts`.
pub fn compute_mac(key: &[u8], sha256: bool, parts: &[&[u8]]) -> [u8; 32] {
    let mut out = [0u8; 32];
    if sha256 {
        // HMAC accepts keys of any length, so this cannot fail.
        if let Ok(mut m) = Hmac::<Sha256>::new_from_slice(key) {
            parts.iter().for_each(|p| m.update(p));
            out.copy_from_slice(&m.finalize().into_bytes());
        }
    } else if let Ok(mut m) = Hmac::<Sha1>::new_from_slice(key) {
        parts.iter().for_each(|p| m.update(p));
        out[..20].copy_from_slice(&m.finalize().into_bytes());
    }
    out
}

/// Which integrity attribute a request carried (SHA-256 is preferred when both are present).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntegrityKind {
    Sha1,
    Sha256,
}

pub fn integrity_kind(msg: &Message<'_>) -> Option<IntegrityKind> {
    if msg.has(attr::MESSAGE_INTEGRITY_SHA256) {
        Some(IntegrityKind::Sha256)
    } else if msg.has(attr::MESSAGE_INTEGRITY) {
        Some(IntegrityKind::Sha1)
    } else {
        None
    }
}

/// Checks the message's integrity attribute of `kind` against `key` in constant time.
pub fn verify(msg: &Message<'_>, key: &[u8], kind: IntegrityKind) -> bool {
    let (typ, sha256) = match kind {
        IntegrityKind::Sha1 => (attr::MESSAGE_INTEGRITY, false),
        IntegrityKind::Sha256 => (attr::MESSAGE_INTEGRITY_SHA256, true),
    };
    let Some((input, mac)) = msg.integrity_input(typ) else {
        return false;
    };
    let expected = compute_mac(key, sha256, &input.parts());
    expected[..mac.len()].ct_eq(mac).into()
}
