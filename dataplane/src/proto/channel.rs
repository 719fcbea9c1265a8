//! ChannelData framing (RFC 8656 §12.4).

use super::error::ParseError;

pub const HEADER_LEN: usize = 4;
pub const MIN_CHANNEL: u16 = 0x4000;
/// RFC 8656 narrowed channels to 0x4000–0x4FFF, but RFC 5766 clients (coturn's own
/// `turnutils_uclient` among them) pick anywhere in 0x4000–0x7FFF, which coturn accepts;
/// every number whose top bits are `01` is unambiguous ChannelData, so all are accepted.
pub const MAX_CHANNEL: u16 = 0x7FFF;

pub fn is_valid_channel(n: u16) -> bool {
    (MIN_CHANNEL..=MAX_CHANNEL).contains(&n)
}

/// Parses a ChannelData message from a UDP datagram: returns the channel number and the
/// payload. Over UDP the datagram may carry up to 3 bytes of padding after the payload.
pub fn parse(data: &[u8]) -> Result<(u16, &[u8]), ParseError> {
    if data.len() < HEADER_LEN {
        return Err(ParseError::Truncated);
    }
    let number = u16::from_be_bytes([data[0], data[1]]);
    if !is_valid_channel(number) {
        return Err(ParseError::BadChannelNumber);
    }
    let len = u16::from_be_bytes([data[2], data[3]]) as usize;
    let rest = data.len() - HEADER_LEN;
    if len > rest {
        return Err(ParseError::Truncated);
    }
    if rest - len > 3 {
        return Err(ParseError::LengthMismatch);
    }
    Ok((number, &data[HEADER_LEN..HEADER_LEN + len]))
}

/// Writes a ChannelData header into `header` (4 bytes) for a payload of `len` bytes.
pub fn write_header(header: &mut [u8], number: u16, len: usize) {
    header[0..2].copy_from_slice(&number.to_be_bytes());
    header[2..4].copy_from_slice(&(len as u16).to_be_bytes());
}
