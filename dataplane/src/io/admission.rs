//! Whether a new TCP/TLS connection may stay: a dataplane-wide connection cap and a
//! per-source-IP rate, shared by all workers (`SO_REUSEPORT` spreads one source's
//! connections over them). Accepting is rare next to relaying, so one short lock is fine.

use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

use crate::metrics::StreamMetrics;
use crate::proto::ratelimit::SourceLimiter;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    MaxConnections,
    RateLimit,
}

pub struct Admission {
    limiter: Mutex<SourceLimiter>,
    key: u64,
}

impl Admission {
    pub fn new(key: u64) -> Self {
        Admission {
            limiter: Mutex::new(SourceLimiter::new(key, 0, 0)),
            key,
        }
    }

    /// Counts the connection in `metrics.active` when admitted; the caller reports its
    /// close with [`StreamMetrics::closed`].
    pub fn admit(
        &self,
        ip: IpAddr,
        now: Instant,
        max_connections: u32,
        rate_per_ip: u32,
        metrics: &StreamMetrics,
    ) -> Result<(), Refused> {
        let allowed = match self.limiter.lock() {
            Ok(mut l) => {
                if l.rate() != rate_per_ip {
                    *l = SourceLimiter::new(self.key, rate_per_ip, rate_per_ip.saturating_mul(2));
                }
                l.allow(ip, now)
            }
            Err(_) => true,
        };
        if !allowed {
            metrics.refused_rate_limit.inc();
            return Err(Refused::RateLimit);
        }
        let before = metrics.active.inc();
        if before >= i64::from(max_connections) {
            metrics.active.dec();
            metrics.refused_max_connections.inc();
            return Err(Refused::MaxConnections);
        }
        metrics.accepted.inc();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_and_the_rate_refuse_and_count() {
        let a = Admission::new(7);
        let m = StreamMetrics::default();
        let t = Instant::now();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        // Burst of twice the rate, then refused.
        let admitted = (0..30)
            .filter(|_| a.admit(ip, t, 1000, 10, &m).is_ok())
            .count();
        assert_eq!(admitted, 20);
        assert_eq!(m.refused_rate_limit.get(), 10);
        assert_eq!(m.active.get(), 20);
        // The cap counts every source.
        assert_eq!(a.admit(other, t, 21, 10, &m), Ok(()));
        assert_eq!(a.admit(other, t, 21, 10, &m), Err(Refused::MaxConnections));
        assert_eq!(m.active.get(), 21);
        assert_eq!(m.accepted.get(), 21);
    }
}
