//! STUN message codec (RFC 8489 §5, §14): zero-copy parsing and an in-place builder.
//!
//! Parsing never allocates: attributes are recorded as offsets into the datagram. The
//! builder writes into a caller-owned buffer, so a response costs no heap allocation either.

use super::attr;
use super::error::ParseError;

pub const MAGIC_COOKIE: u32 = 0x2112_A442;
pub const HEADER_LEN: usize = 20;
/// Attributes beyond this count make a request malformed; real clients send fewer than 15.
pub const MAX_ATTRIBUTES: usize = 32;

pub type TransactionId = [u8; 12];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Request,
    Indication,
    Success,
    Error,
}

impl Class {
    fn bits(self) -> u16 {
        match self {
            Class::Request => 0b00,
            Class::Indication => 0b01,
            Class::Success => 0b10,
            Class::Error => 0b11,
        }
    }
}

/// STUN/TURN methods this server understands.
pub mod method {
    pub const BINDING: u16 = 0x001;
    pub const ALLOCATE: u16 = 0x003;
    pub const REFRESH: u16 = 0x004;
    pub const SEND: u16 = 0x006;
    pub const DATA: u16 = 0x007;
    pub const CREATE_PERMISSION: u16 = 0x008;
    pub const CHANNEL_BIND: u16 = 0x009;
}

/// Splits a 14-bit message type into (method, class) per RFC 8489 §5.
pub fn split_type(t: u16) -> (u16, Class) {
    let class = match ((t >> 7) & 0b10) | ((t >> 4) & 0b01) {
        0b00 => Class::Request,
        0b01 => Class::Indication,
        0b10 => Class::Success,
        _ => Class::Error,
    };
    let method = (t & 0x000F) | ((t >> 1) & 0x0070) | ((t >> 2) & 0x0F80);
    (method, class)
}

pub fn join_type(method: u16, class: Class) -> u16 {
    let c = class.bits();
    (method & 0x000F)
        | ((method & 0x0070) << 1)
        | ((method & 0x0F80) << 2)
        | ((c & 0b01) << 4)
        | ((c & 0b10) << 7)
}

/// True when the first bytes look like a STUN message (not ChannelData).
pub fn is_stun(data: &[u8]) -> bool {
    data.len() >= HEADER_LEN
        && data[0] & 0xC0 == 0
        && u32::from_be_bytes([data[4], data[5], data[6], data[7]]) == MAGIC_COOKIE
}

#[derive(Debug, Clone, Copy)]
struct AttrSlot {
    typ: u16,
    /// Offset of the attribute header (value starts 4 bytes later).
    offset: u16,
    len: u16,
}

/// A parsed STUN message borrowing the datagram it came from.
#[derive(Debug, Clone)]
pub struct Message<'a> {
    raw: &'a [u8],
    pub method: u16,
    pub class: Class,
    pub transaction_id: TransactionId,
    attrs: [AttrSlot; MAX_ATTRIBUTES],
    count: usize,
}

impl<'a> Message<'a> {
    /// Parses one complete STUN message. `data` must be exactly the message (UDP datagram or
    /// a TCP frame cut at the header's length).
    pub fn parse(data: &'a [u8]) -> Result<Self, ParseError> {
        if data.len() < HEADER_LEN {
            return Err(ParseError::Truncated);
        }
        if data[0] & 0xC0 != 0 {
            return Err(ParseError::NotStun);
        }
        if u32::from_be_bytes([data[4], data[5], data[6], data[7]]) != MAGIC_COOKIE {
            return Err(ParseError::NotStun);
        }
        let body_len = u16::from_be_bytes([data[2], data[3]]) as usize;
        if !body_len.is_multiple_of(4) {
            return Err(ParseError::UnalignedLength);
        }
        if HEADER_LEN + body_len != data.len() {
            return Err(ParseError::LengthMismatch);
        }
        let (method, class) = split_type(u16::from_be_bytes([data[0], data[1]]));
        let mut transaction_id = [0u8; 12];
        transaction_id.copy_from_slice(&data[8..20]);

        let mut msg = Message {
            raw: data,
            method,
            class,
            transaction_id,
            attrs: [AttrSlot {
                typ: 0,
                offset: 0,
                len: 0,
            }; MAX_ATTRIBUTES],
            count: 0,
        };
        let mut pos = HEADER_LEN;
        let mut seen_integrity = false;
        let mut seen_integrity_sha256 = false;
        while pos < data.len() {
            if pos + 4 > data.len() {
                return Err(ParseError::Truncated);
            }
            let typ = u16::from_be_bytes([data[pos], data[pos + 1]]);
            let len = u16::from_be_bytes([data[pos + 2], data[pos + 3]]) as usize;
            let padded = (len + 3) & !3;
            if pos + 4 + padded > data.len() {
                return Err(ParseError::AttributeOverrun);
            }
            if msg.count > 0 && msg.attrs[msg.count - 1].typ == attr::FINGERPRINT {
                return Err(ParseError::AfterFingerprint);
            }
            // RFC 8489 §14.5/14.6: only MI-SHA256 and FINGERPRINT may follow MI; only
            // FINGERPRINT may follow MI-SHA256. Anything else after them is ignored by spec;
            // we keep the slots but `get` never returns attributes past the integrity.
            match typ {
                attr::MESSAGE_INTEGRITY => {
                    if len != 20 || seen_integrity || seen_integrity_sha256 {
                        return Err(ParseError::BadIntegrity);
                    }
                    seen_integrity = true;
                }
                attr::MESSAGE_INTEGRITY_SHA256 => {
                    if !(16..=32).contains(&len) || !len.is_multiple_of(4) || seen_integrity_sha256
                    {
                        return Err(ParseError::BadIntegrity);
                    }
                    seen_integrity_sha256 = true;
                }
                attr::FINGERPRINT if len != 4 => return Err(ParseError::BadFingerprint),
                _ => {}
            }
            if msg.count == MAX_ATTRIBUTES {
                return Err(ParseError::TooManyAttributes);
            }
            msg.attrs[msg.count] = AttrSlot {
                typ,
                offset: pos as u16,
                len: len as u16,
            };
            msg.count += 1;
            pos += 4 + padded;
        }
        if let Some(fp) = msg.slot(attr::FINGERPRINT) {
            let off = fp.offset as usize;
            let expected =
                u32::from_be_bytes([data[off + 4], data[off + 5], data[off + 6], data[off + 7]]);
            if fingerprint(&data[..off]) != expected {
                return Err(ParseError::BadFingerprint);
            }
        }
        Ok(msg)
    }

    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    fn slot(&self, typ: u16) -> Option<AttrSlot> {
        self.attrs[..self.count]
            .iter()
            .find(|a| a.typ == typ)
            .copied()
    }

    /// Value of the first attribute of `typ` that is covered by the message integrity
    /// (attributes after MESSAGE-INTEGRITY are not visible, RFC 8489 §14.5).
    pub fn get(&self, typ: u16) -> Option<&'a [u8]> {
        for a in &self.attrs[..self.count] {
            if a.typ == typ {
                let start = a.offset as usize + 4;
                return Some(&self.raw[start..start + a.len as usize]);
            }
            if matches!(
                a.typ,
                attr::MESSAGE_INTEGRITY | attr::MESSAGE_INTEGRITY_SHA256 | attr::FINGERPRINT
            ) && !matches!(
                typ,
                attr::MESSAGE_INTEGRITY | attr::MESSAGE_INTEGRITY_SHA256 | attr::FINGERPRINT
            ) {
                return None;
            }
        }
        None
    }

    /// Every value of attribute `typ` covered by the integrity (e.g. several
    /// XOR-PEER-ADDRESS in one CreatePermission).
    pub fn get_all(&self, typ: u16) -> impl Iterator<Item = &'a [u8]> + '_ {
        let raw = self.raw;
        self.attrs[..self.count]
            .iter()
            .take_while(|a| {
                !matches!(
                    a.typ,
                    attr::MESSAGE_INTEGRITY | attr::MESSAGE_INTEGRITY_SHA256 | attr::FINGERPRINT
                )
            })
            .filter(move |a| a.typ == typ)
            .map(move |a| {
                let start = a.offset as usize + 4;
                &raw[start..start + a.len as usize]
            })
    }

    pub fn has(&self, typ: u16) -> bool {
        self.get(typ).is_some()
    }

    /// Every attribute type in order (including duplicates).
    pub fn attribute_types(&self) -> impl Iterator<Item = u16> + '_ {
        self.attrs[..self.count].iter().map(|a| a.typ)
    }

    /// The bytes MESSAGE-INTEGRITY(-SHA256) of attribute `typ` is computed over, with the
    /// header length rewritten as RFC 8489 §14.5 requires, plus the received MAC.
    /// Returns `None` when the attribute is absent.
    pub fn integrity_input(&self, typ: u16) -> Option<(IntegrityInput<'a>, &'a [u8])> {
        let slot = self.slot(typ)?;
        let off = slot.offset as usize;
        let mac_start = off + 4;
        let mac = &self.raw[mac_start..mac_start + slot.len as usize];
        let adjusted_len = (off + 4 + slot.len as usize - HEADER_LEN) as u16;
        Some((
            IntegrityInput {
                header: &self.raw[..2],
                length: adjusted_len.to_be_bytes(),
                rest: &self.raw[4..off],
            },
            mac,
        ))
    }
}

/// The pieces hashed for MESSAGE-INTEGRITY: the type, the adjusted length, and the rest.
pub struct IntegrityInput<'a> {
    header: &'a [u8],
    length: [u8; 2],
    rest: &'a [u8],
}

impl IntegrityInput<'_> {
    pub fn parts(&self) -> [&[u8]; 3] {
        [self.header, &self.length, self.rest]
    }
}

pub fn fingerprint(data: &[u8]) -> u32 {
    crc32fast::hash(data) ^ 0x5354_554E
}

/// Writes a STUN message into a caller-owned buffer. Out-of-space writes set an overflow
/// flag instead of panicking; `finish` then reports it.
pub struct MessageBuilder<'b> {
    buf: &'b mut [u8],
    len: usize,
    overflow: bool,
}

impl<'b> MessageBuilder<'b> {
    pub fn new(
        buf: &'b mut [u8],
        method: u16,
        class: Class,
        transaction_id: &TransactionId,
    ) -> Self {
        let mut b = MessageBuilder {
            buf,
            len: 0,
            overflow: false,
        };
        if b.buf.len() < HEADER_LEN {
            b.overflow = true;
            return b;
        }
        b.buf[0..2].copy_from_slice(&join_type(method, class).to_be_bytes());
        b.buf[2..4].copy_from_slice(&[0, 0]);
        b.buf[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
        b.buf[8..20].copy_from_slice(transaction_id);
        b.len = HEADER_LEN;
        b
    }

    /// Continues a message whose header and first `len` bytes are already in `buf` (e.g. a
    /// received request being re-signed in tests).
    pub fn resume(buf: &'b mut [u8], len: usize) -> Self {
        let overflow = len < HEADER_LEN || len > buf.len() || !len.is_multiple_of(4);
        MessageBuilder {
            len: if overflow { 0 } else { len },
            buf,
            overflow,
        }
    }

    pub fn transaction_id(&self) -> TransactionId {
        let mut t = [0u8; 12];
        if self.buf.len() >= HEADER_LEN {
            t.copy_from_slice(&self.buf[8..20]);
        }
        t
    }

    fn set_length(&mut self) {
        let body = (self.len - HEADER_LEN) as u16;
        self.buf[2..4].copy_from_slice(&body.to_be_bytes());
    }

    /// Appends an attribute whose value is produced by `fill` into a zeroed slice of `len`.
    pub fn attr_with(&mut self, typ: u16, len: usize, fill: impl FnOnce(&mut [u8])) {
        let padded = (len + 3) & !3;
        if self.overflow || self.len + 4 + padded > self.buf.len() || len > u16::MAX as usize {
            self.overflow = true;
            return;
        }
        let p = self.len;
        self.buf[p..p + 2].copy_from_slice(&typ.to_be_bytes());
        self.buf[p + 2..p + 4].copy_from_slice(&(len as u16).to_be_bytes());
        let value = &mut self.buf[p + 4..p + 4 + padded];
        value.fill(0);
        fill(&mut value[..len]);
        self.len += 4 + padded;
    }

    pub fn attr(&mut self, typ: u16, value: &[u8]) {
        self.attr_with(typ, value.len(), |v| v.copy_from_slice(value));
    }

    pub fn u32_attr(&mut self, typ: u16, v: u32) {
        self.attr(typ, &v.to_be_bytes());
    }

    pub fn xor_address(&mut self, typ: u16, addr: std::net::SocketAddr) {
        let tid = self.transaction_id();
        let len = attr::xor_address_len(&addr);
        self.attr_with(typ, len, |v| attr::encode_xor_address(v, addr, &tid));
    }

    pub fn error_code(&mut self, error: super::error::ErrorCode) {
        let reason = error.reason.as_bytes();
        self.attr_with(attr::ERROR_CODE, 4 + reason.len(), |v| {
            v[2] = (error.code / 100) as u8;
            v[3] = (error.code % 100) as u8;
            v[4..].copy_from_slice(reason);
        });
    }

    /// Appends MESSAGE-INTEGRITY (HMAC-SHA1) or MESSAGE-INTEGRITY-SHA256 with `key`.
    pub fn integrity(&mut self, key: &[u8], sha256: bool) {
        let (typ, mac_len) = if sha256 {
            (attr::MESSAGE_INTEGRITY_SHA256, 32)
        } else {
            (attr::MESSAGE_INTEGRITY, 20)
        };
        if self.overflow || self.len + 4 + mac_len > self.buf.len() {
            self.overflow = true;
            return;
        }
        let start = self.len;
        // The length must already count the integrity attribute when the MAC is computed.
        self.len += 4 + mac_len;
        self.set_length();
        self.len = start;
        let mac = super::integrity::compute_mac(key, sha256, &[&self.buf[..start]]);
        self.attr(typ, &mac[..mac_len]);
    }

    /// Finishes the message, optionally with FINGERPRINT, and returns its length.
    pub fn finish(mut self, with_fingerprint: bool) -> Option<usize> {
        if with_fingerprint {
            if self.overflow || self.len + 8 > self.buf.len() {
                return None;
            }
            let start = self.len;
            self.len += 8;
            self.set_length();
            let crc = fingerprint(&self.buf[..start]);
            self.len = start;
            self.u32_attr(attr::FINGERPRINT, crc);
        }
        if self.overflow {
            return None;
        }
        self.set_length();
        Some(self.len)
    }
}
