//! Per-source-IP token buckets. They limit unauthenticated answers (401, 438): a 401 is
//! larger than the request that provokes it, so without a limit a spoofed flood turns the
//! server into a reflection amplifier. They also limit how fast one address may open
//! TCP/TLS connections. The table has a fixed size: no allocation and no per-client state
//! (two sources sharing a bucket only makes their limit stricter).

use std::net::IpAddr;
use std::time::Instant;

const BUCKETS: usize = 4096;
/// Sustained unauthenticated answers per second per source IP. Generous so that a large
/// NAT full of clients starting calls at once is not throttled; a flood still cannot use it.
pub const CHALLENGE_RATE: u32 = 100;
pub const CHALLENGE_BURST: u32 = 200;

#[derive(Clone, Copy, Default)]
struct Bucket {
    /// Milliseconds since the limiter's start at the last refill.
    last_ms: u32,
    /// Tokens, in thousandths.
    milli_tokens: u32,
    used: bool,
}

pub struct SourceLimiter {
    buckets: Box<[Bucket]>,
    start: Option<Instant>,
    key: u64,
    rate: u32,
    burst: u32,
}

impl SourceLimiter {
    /// `rate` tokens per second and at most `burst` at once, per source; `key` salts the
    /// hash so sources cannot aim at one another's bucket.
    pub fn new(key: u64, rate: u32, burst: u32) -> Self {
        SourceLimiter {
            buckets: vec![Bucket::default(); BUCKETS].into_boxed_slice(),
            start: None,
            key: key | 1,
            rate,
            burst: burst.max(1),
        }
    }

    /// Tokens per second per source.
    pub fn rate(&self) -> u32 {
        self.rate
    }

    fn index(&self, ip: IpAddr) -> usize {
        let bits: u128 = match ip.to_canonical() {
            IpAddr::V4(v4) => u32::from(v4).into(),
            IpAddr::V6(v6) => u128::from(v6),
        };
        let folded = (bits as u64) ^ ((bits >> 64) as u64);
        let h = (folded ^ self.key).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        (h >> 52) as usize % BUCKETS
    }

    /// Takes one token for `ip`; false means the answer should be dropped.
    pub fn allow(&mut self, ip: IpAddr, now: Instant) -> bool {
        let start = *self.start.get_or_insert(now);
        let now_ms = now.saturating_duration_since(start).as_millis() as u32;
        let i = self.index(ip);
        let b = &mut self.buckets[i];
        let full = self.burst.saturating_mul(1000);
        if !b.used {
            *b = Bucket {
                last_ms: now_ms,
                milli_tokens: full,
                used: true,
            };
        }
        let elapsed = now_ms.wrapping_sub(b.last_ms).min(full);
        b.milli_tokens = b
            .milli_tokens
            .saturating_add(elapsed.saturating_mul(self.rate))
            .min(full);
        b.last_ms = now_ms;
        if b.milli_tokens >= 1000 {
            b.milli_tokens -= 1000;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn burst_then_rate() {
        let mut l = SourceLimiter::new(42, CHALLENGE_RATE, CHALLENGE_BURST);
        let t = Instant::now();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "198.51.100.7".parse().unwrap();
        assert_eq!(
            (0..300).filter(|_| l.allow(a, t)).count(),
            CHALLENGE_BURST as usize
        );
        assert!(l.allow(b, t), "other sources keep their own budget");
        let later = t + Duration::from_millis(100);
        assert_eq!((0..300).filter(|_| l.allow(a, later)).count(), 10);
    }
}
