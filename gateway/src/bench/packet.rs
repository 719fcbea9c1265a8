//! The payload of a benchmark packet: which flow sent it, its sequence number and when it
//! left, so the echo that comes back measures loss, order and round-trip time by itself.

/// flow (4 bytes), sequence (8), send time in ns since the run's epoch (8).
pub const HEADER: usize = 20;

pub struct Packet {
    pub flow: u32,
    pub seq: u64,
    pub sent_at: u64,
}

/// Fills `payload` (at least [`HEADER`] bytes; the rest stays as it is).
pub fn write(payload: &mut [u8], flow: u32, seq: u64, sent_at: u64) {
    if payload.len() < HEADER {
        return;
    }
    payload[..4].copy_from_slice(&flow.to_be_bytes());
    payload[4..12].copy_from_slice(&seq.to_be_bytes());
    payload[12..20].copy_from_slice(&sent_at.to_be_bytes());
}

pub fn read(payload: &[u8]) -> Option<Packet> {
    let h = payload.get(..HEADER)?;
    Some(Packet {
        flow: u32::from_be_bytes(h[..4].try_into().ok()?),
        seq: u64::from_be_bytes(h[4..12].try_into().ok()?),
        sent_at: u64::from_be_bytes(h[12..20].try_into().ok()?),
    })
}

/// How an arriving sequence number relates to those seen before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Newer than any before.
    InOrder,
    /// Older than the newest, and not seen before: reordered on the way.
    Late,
    /// Seen before.
    Again,
}

/// The newest sequence number and a bitmap of the 64 before it (the replay window of
/// SRTP, RFC 3711 §3.3.2): duplicates are told from late packets in O(1).
#[derive(Debug, Default)]
pub struct Window {
    /// One past the newest sequence number seen (0: none yet).
    top: u64,
    /// Bit i: `top - 1 - i` was seen.
    bits: u64,
}

impl Window {
    pub fn see(&mut self, seq: u64) -> Seen {
        if seq >= self.top {
            let shift = seq + 1 - self.top;
            self.bits = if shift >= 64 { 0 } else { self.bits << shift };
            self.bits |= 1;
            self.top = seq + 1;
            return Seen::InOrder;
        }
        let behind = self.top - 1 - seq;
        if behind >= 64 {
            // Too old to tell; a duplicate this late is rare enough to count as late.
            return Seen::Late;
        }
        let bit = 1u64 << behind;
        if self.bits & bit != 0 {
            Seen::Again
        } else {
            self.bits |= bit;
            Seen::Late
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_the_header() {
        let mut buf = [0u8; 32];
        write(&mut buf, 7, 1 << 40, 123_456_789);
        let p = read(&buf).unwrap();
        assert_eq!((p.flow, p.seq, p.sent_at), (7, 1 << 40, 123_456_789));
        assert!(read(&buf[..HEADER - 1]).is_none());
    }

    #[test]
    fn tells_order_lateness_and_duplicates_apart() {
        let mut w = Window::default();
        assert_eq!(w.see(0), Seen::InOrder);
        assert_eq!(w.see(2), Seen::InOrder);
        assert_eq!(w.see(1), Seen::Late);
        assert_eq!(w.see(1), Seen::Again);
        assert_eq!(w.see(2), Seen::Again);
        assert_eq!(w.see(100), Seen::InOrder);
        assert_eq!(w.see(40), Seen::Late);
        assert_eq!(w.see(40), Seen::Again);
        assert_eq!(w.see(3), Seen::Late);
    }
}
