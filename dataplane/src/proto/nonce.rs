//! Stateless nonces: `hex(timestamp) || hex(HMAC-SHA256(key, timestamp || client)[..12])`.
//!
//! Nothing is stored before a client authenticates: a nonce is valid when its MAC matches
//! the client address it is presented from and its timestamp is recent.

use std::net::SocketAddr;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

pub const NONCE_LEN: usize = 32;
/// How long a nonce stays fresh (coturn's default; clients renew on 438).
pub const NONCE_LIFETIME_SECS: u64 = 600;

#[derive(Clone)]
pub struct NonceKey([u8; 32]);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceCheck {
    Valid,
    /// Too old, from the future, forged, or issued to another client address.
    Stale,
}

impl NonceKey {
    pub fn new(bytes: [u8; 32]) -> Self {
        NonceKey(bytes)
    }

    fn mac(&self, ts: u32, client: &SocketAddr) -> [u8; 12] {
        let mut m = match Hmac::<Sha256>::new_from_slice(&self.0) {
            Ok(m) => m,
            Err(_) => return [0; 12],
        };
        m.update(&ts.to_be_bytes());
        match client.ip() {
            std::net::IpAddr::V4(ip) => m.update(&ip.octets()),
            std::net::IpAddr::V6(ip) => m.update(&ip.octets()),
        }
        m.update(&client.port().to_be_bytes());
        let full = m.finalize().into_bytes();
        let mut out = [0u8; 12];
        out.copy_from_slice(&full[..12]);
        out
    }

    /// A key for hashing sources in the challenge rate limiter, derived from the secret so
    /// bucket collisions cannot be aimed at a victim.
    pub fn limiter_key(&self) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.mac(0, &SocketAddr::from(([0, 0, 0, 0], 0)))[..8]);
        u64::from_le_bytes(b)
    }

    pub fn issue(&self, unix: u64, client: &SocketAddr) -> [u8; NONCE_LEN] {
        let ts = unix as u32;
        let mut out = [0u8; NONCE_LEN];
        hex_into(&ts.to_be_bytes(), &mut out[..8]);
        hex_into(&self.mac(ts, client), &mut out[8..]);
        out
    }

    pub fn check(&self, nonce: &[u8], unix: u64, client: &SocketAddr) -> NonceCheck {
        if nonce.len() != NONCE_LEN {
            return NonceCheck::Stale;
        }
        let Some(ts_bytes) = unhex::<4>(&nonce[..8]) else {
            return NonceCheck::Stale;
        };
        let Some(mac) = unhex::<12>(&nonce[8..]) else {
            return NonceCheck::Stale;
        };
        let ts = u32::from_be_bytes(ts_bytes);
        let expected = self.mac(ts, client);
        if !bool::from(expected.ct_eq(&mac)) {
            return NonceCheck::Stale;
        }
        let now = unix as u32;
        let age = now.wrapping_sub(ts) as u64;
        if age > NONCE_LIFETIME_SECS {
            return NonceCheck::Stale;
        }
        NonceCheck::Valid
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn hex_into(bytes: &[u8], out: &mut [u8]) {
    for (i, b) in bytes.iter().enumerate() {
        out[2 * i] = HEX[(b >> 4) as usize];
        out[2 * i + 1] = HEX[(b & 0xF) as usize];
    }
}

fn unhex<const N: usize>(s: &[u8]) -> Option<[u8; N]> {
    if s.len() != 2 * N {
        return None;
    }
    let val = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; N];
    for i in 0..N {
        out[i] = (val(s[2 * i])? << 4) | val(s[2 * i + 1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonce_round_trip_and_expiry() {
        let k = NonceKey::new([7; 32]);
        let a: SocketAddr = "192.0.2.1:5000".parse().unwrap();
        let b: SocketAddr = "192.0.2.1:5001".parse().unwrap();
        let n = k.issue(1_000_000, &a);
        assert_eq!(k.check(&n, 1_000_000, &a), NonceCheck::Valid);
        assert_eq!(k.check(&n, 1_000_600, &a), NonceCheck::Valid);
        assert_eq!(k.check(&n, 1_000_601, &a), NonceCheck::Stale);
        assert_eq!(k.check(&n, 1_000_000, &b), NonceCheck::Stale);
        let mut forged = n;
        forged[0] = b'f';
        assert_eq!(k.check(&forged, 1_000_000, &a), NonceCheck::Stale);
        assert_eq!(k.check(b"short", 1_000_000, &a), NonceCheck::Stale);
    }
}
