//! Message boundaries on a stream transport (TURN over TCP or TLS, RFC 8656 §12.5): a
//! STUN message is 20 bytes plus its length; ChannelData is 4 bytes plus its length,
//! padded to a multiple of 4. There is nothing else on the stream, so a first byte whose
//! top bits are neither `00` nor `01` means the client is not speaking TURN.

use super::channel;
use super::error::ParseError;
use super::message;

/// The largest frame accepted from a stream client. Media packets are about 1.2 KB and
/// STUN requests smaller; allowing 64 KiB frames would let every slow-loris connection pin
/// 64 KiB of partial frame. A larger frame closes the connection.
pub const MAX_FRAME: usize = 16 * 1024;

/// The length of the first frame in `buf` once it is complete: `Ok(Some(n))` when
/// `buf[..n]` is a whole frame, `Ok(None)` when more bytes are needed, and an error when
/// the stream cannot be TURN (the connection should be closed).
pub fn next_frame(buf: &[u8]) -> Result<Option<usize>, ParseError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    if buf.len() < channel::HEADER_LEN {
        return match first >> 6 {
            0b00 | 0b01 => Ok(None),
            _ => Err(ParseError::NotStun),
        };
    }
    let len = u16::from_be_bytes([buf[2], buf[3]]) as usize;
    let total = match first >> 6 {
        0b00 => {
            if !len.is_multiple_of(4) {
                return Err(ParseError::UnalignedLength);
            }
            // The cookie tells a stray protocol (a TLS ClientHello on the TCP port) from
            // STUN after 8 bytes instead of after a bogus length's worth.
            if buf.len() >= 8
                && u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]) != message::MAGIC_COOKIE
            {
                return Err(ParseError::NotStun);
            }
            message::HEADER_LEN + len
        }
        0b01 => {
            let number = u16::from_be_bytes([buf[0], buf[1]]);
            if !channel::is_valid_channel(number) {
                return Err(ParseError::BadChannelNumber);
            }
            channel::HEADER_LEN + ((len + 3) & !3)
        }
        _ => return Err(ParseError::NotStun),
    };
    if total > MAX_FRAME {
        return Err(ParseError::FrameTooLarge);
    }
    Ok((buf.len() >= total).then_some(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stun_and_padded_channel_data_frames() {
        let mut stun = vec![0x00, 0x01, 0x00, 0x08, 0x21, 0x12, 0xA4, 0x42];
        stun.extend([0; 12 + 8]);
        assert_eq!(next_frame(&stun[..19]), Ok(None));
        assert_eq!(next_frame(&stun[..27]), Ok(None));
        assert_eq!(next_frame(&stun), Ok(Some(28)));
        let mut two = stun.clone();
        two.extend(&stun);
        assert_eq!(next_frame(&two), Ok(Some(28)));

        // 5 payload bytes travel with 3 bytes of padding on a stream.
        let cd = [0x40, 0x00, 0x00, 0x05, 1, 2, 3, 4, 5, 0, 0, 0];
        assert_eq!(next_frame(&cd[..9]), Ok(None));
        assert_eq!(next_frame(&cd[..11]), Ok(None));
        assert_eq!(next_frame(&cd), Ok(Some(12)));
        assert_eq!(next_frame(&cd[..2]), Ok(None));
        assert_eq!(next_frame(&[]), Ok(None));
    }

    #[test]
    fn what_cannot_be_turn_is_refused_early() {
        assert_eq!(next_frame(&[0xFF]), Err(ParseError::NotStun));
        // "GE" reads as a channel number; "T " as a length over the limit.
        assert_eq!(
            next_frame(b"GET / HTTP/1.1\r\n"),
            Err(ParseError::FrameTooLarge)
        );
        // A TLS ClientHello sent to a plain TCP listener: refused at its cookie.
        let hello = [0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xFC, 0x03];
        assert_eq!(next_frame(&hello), Err(ParseError::UnalignedLength));
        let hello = [0x16, 0x03, 0x02, 0x00, 0x01, 0x00, 0x01, 0xFC, 0x03, 0x03];
        assert_eq!(next_frame(&hello[..4]), Ok(None));
        assert_eq!(next_frame(&hello), Err(ParseError::NotStun));
        assert_eq!(
            next_frame(&[0x00, 0x01, 0x00, 0x07]),
            Err(ParseError::UnalignedLength)
        );
        // Known from the header, before the bytes arrive.
        assert_eq!(
            next_frame(&[0x40, 0x00, 0xFF, 0xFF]),
            Err(ParseError::FrameTooLarge)
        );
    }
}
