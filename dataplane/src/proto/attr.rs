//! STUN/TURN attribute types and value codecs (RFC 8489 §14, RFC 8656 §18).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::error::ParseError;
use super::integrity::PasswordAlgorithm;
use super::message::{MAGIC_COOKIE, TransactionId};

pub const MAPPED_ADDRESS: u16 = 0x0001;
pub const CHANGE_REQUEST: u16 = 0x0003;
pub const USERNAME: u16 = 0x0006;
pub const MESSAGE_INTEGRITY: u16 = 0x0008;
pub const ERROR_CODE: u16 = 0x0009;
pub const UNKNOWN_ATTRIBUTES: u16 = 0x000A;
pub const CHANNEL_NUMBER: u16 = 0x000C;
pub const LIFETIME: u16 = 0x000D;
pub const XOR_PEER_ADDRESS: u16 = 0x0012;
pub const DATA: u16 = 0x0013;
pub const REALM: u16 = 0x0014;
pub const NONCE: u16 = 0x0015;
pub const XOR_RELAYED_ADDRESS: u16 = 0x0016;
pub const REQUESTED_ADDRESS_FAMILY: u16 = 0x0017;
pub const EVEN_PORT: u16 = 0x0018;
pub const REQUESTED_TRANSPORT: u16 = 0x0019;
pub const DONT_FRAGMENT: u16 = 0x001A;
pub const MESSAGE_INTEGRITY_SHA256: u16 = 0x001C;
pub const PASSWORD_ALGORITHM: u16 = 0x001D;
pub const XOR_MAPPED_ADDRESS: u16 = 0x0020;
pub const RESERVATION_TOKEN: u16 = 0x0022;
pub const PRIORITY: u16 = 0x0024;
pub const USE_CANDIDATE: u16 = 0x0025;
pub const ADDITIONAL_ADDRESS_FAMILY: u16 = 0x8000;
pub const PASSWORD_ALGORITHMS: u16 = 0x8002;
pub const SOFTWARE: u16 = 0x8022;
pub const FINGERPRINT: u16 = 0x8028;
pub const ICE_CONTROLLED: u16 = 0x8029;
pub const ICE_CONTROLLING: u16 = 0x802A;

/// Comprehension-required attributes (0x0000–0x7FFF) this server processes. Any other one
/// in a request is answered with 420 (RFC 8489 §7.3.1).
const UNDERSTOOD: &[u16] = &[
    MAPPED_ADDRESS,
    CHANGE_REQUEST,
    USERNAME,
    MESSAGE_INTEGRITY,
    ERROR_CODE,
    UNKNOWN_ATTRIBUTES,
    CHANNEL_NUMBER,
    LIFETIME,
    XOR_PEER_ADDRESS,
    DATA,
    REALM,
    NONCE,
    XOR_RELAYED_ADDRESS,
    REQUESTED_ADDRESS_FAMILY,
    EVEN_PORT,
    REQUESTED_TRANSPORT,
    DONT_FRAGMENT,
    MESSAGE_INTEGRITY_SHA256,
    PASSWORD_ALGORITHM,
    XOR_MAPPED_ADDRESS,
    RESERVATION_TOKEN,
    PRIORITY,
    USE_CANDIDATE,
];

pub fn is_understood(typ: u16) -> bool {
    typ >= 0x8000 || UNDERSTOOD.contains(&typ)
}

pub const FAMILY_IPV4: u8 = 0x01;
pub const FAMILY_IPV6: u8 = 0x02;
/// The IANA protocol number of UDP, the only REQUESTED-TRANSPORT a relay serves.
pub const PROTOCOL_UDP: u8 = 17;

/// An address family as REQUESTED-ADDRESS-FAMILY names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

pub fn xor_address_len(addr: &SocketAddr) -> usize {
    if addr.is_ipv4() { 8 } else { 20 }
}

/// Encodes an XOR-*-ADDRESS value into `v` (length from [`xor_address_len`]).
pub fn encode_xor_address(v: &mut [u8], addr: SocketAddr, tid: &TransactionId) {
    let cookie = MAGIC_COOKIE.to_be_bytes();
    v[0] = 0;
    let port = addr.port() ^ (MAGIC_COOKIE >> 16) as u16;
    v[2..4].copy_from_slice(&port.to_be_bytes());
    match addr.ip() {
        IpAddr::V4(ip) => {
            v[1] = FAMILY_IPV4;
            for (i, b) in ip.octets().iter().enumerate() {
                v[4 + i] = b ^ cookie[i];
            }
        }
        IpAddr::V6(ip) => {
            v[1] = FAMILY_IPV6;
            for (i, b) in ip.octets().iter().enumerate() {
                let k = if i < 4 { cookie[i] } else { tid[i - 4] };
                v[4 + i] = b ^ k;
            }
        }
    }
}

pub fn decode_xor_address(v: &[u8], tid: &TransactionId) -> Result<SocketAddr, ParseError> {
    if v.len() < 4 {
        return Err(ParseError::BadAddress);
    }
    let cookie = MAGIC_COOKIE.to_be_bytes();
    let port = u16::from_be_bytes([v[2], v[3]]) ^ (MAGIC_COOKIE >> 16) as u16;
    match (v[1], v.len()) {
        (FAMILY_IPV4, 8) => {
            let mut o = [0u8; 4];
            for i in 0..4 {
                o[i] = v[4 + i] ^ cookie[i];
            }
            Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(o)), port))
        }
        (FAMILY_IPV6, 20) => {
            let mut o = [0u8; 16];
            for i in 0..16 {
                let k = if i < 4 { cookie[i] } else { tid[i - 4] };
                o[i] = v[4 + i] ^ k;
            }
            Ok(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(o)), port))
        }
        _ => Err(ParseError::BadAddress),
    }
}

/// Decodes a plain (non-XOR) MAPPED-ADDRESS value; used by tests and the client side.
pub fn decode_address(v: &[u8]) -> Result<SocketAddr, ParseError> {
    if v.len() < 4 {
        return Err(ParseError::BadAddress);
    }
    let port = u16::from_be_bytes([v[2], v[3]]);
    match (v[1], v.len()) {
        (FAMILY_IPV4, 8) => Ok(SocketAddr::new(
            IpAddr::V4(Ipv4Addr::new(v[4], v[5], v[6], v[7])),
            port,
        )),
        (FAMILY_IPV6, 20) => {
            let mut o = [0u8; 16];
            o.copy_from_slice(&v[4..20]);
            Ok(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(o)), port))
        }
        _ => Err(ParseError::BadAddress),
    }
}

pub fn decode_u32(v: &[u8]) -> Result<u32, ParseError> {
    let b: [u8; 4] = v.try_into().map_err(|_| ParseError::BadAttributeLength)?;
    Ok(u32::from_be_bytes(b))
}

/// REQUESTED-TRANSPORT (RFC 8656 §18.6): the protocol number.
pub fn decode_requested_transport(v: &[u8]) -> Result<u8, ParseError> {
    match v {
        [protocol, _, _, _] => Ok(*protocol),
        _ => Err(ParseError::BadAttributeLength),
    }
}

/// EVEN-PORT (RFC 8656 §18.8): whether the next higher port is to be reserved too.
pub fn decode_even_port(v: &[u8]) -> Result<bool, ParseError> {
    match v {
        [flags] => Ok(flags & 0x80 != 0),
        _ => Err(ParseError::BadAttributeLength),
    }
}

/// RESERVATION-TOKEN (RFC 8656 §18.9).
pub fn decode_reservation_token(v: &[u8]) -> Result<u64, ParseError> {
    let b: [u8; 8] = v.try_into().map_err(|_| ParseError::BadAttributeLength)?;
    Ok(u64::from_be_bytes(b))
}

/// REQUESTED-ADDRESS-FAMILY (RFC 8656 §18.10): `None` for a family this server does not
/// know (answered 440, not 400).
pub fn decode_address_family(v: &[u8]) -> Result<Option<Family>, ParseError> {
    match v {
        [FAMILY_IPV4, _, _, _] => Ok(Some(Family::V4)),
        [FAMILY_IPV6, _, _, _] => Ok(Some(Family::V6)),
        [_, _, _, _] => Ok(None),
        _ => Err(ParseError::BadAttributeLength),
    }
}

/// CHANNEL-NUMBER (RFC 8656 §18.1): a number in the ChannelData range.
pub fn decode_channel_number(v: &[u8]) -> Result<u16, ParseError> {
    let [hi, lo, _, _] = v else {
        return Err(ParseError::BadAttributeLength);
    };
    let number = u16::from_be_bytes([*hi, *lo]);
    if super::channel::is_valid_channel(number) {
        Ok(number)
    } else {
        Err(ParseError::BadChannelNumber)
    }
}

/// PASSWORD-ALGORITHM (RFC 8489 §14.12): MD5 (1) or SHA-256 (2).
pub fn decode_password_algorithm(v: &[u8]) -> Result<PasswordAlgorithm, ParseError> {
    match v {
        [0, 1, _, _, ..] => Ok(PasswordAlgorithm::Md5),
        [0, 2, _, _, ..] => Ok(PasswordAlgorithm::Sha256),
        _ => Err(ParseError::BadAttributeLength),
    }
}

/// ERROR-CODE value → (code, reason).
pub fn decode_error_code(v: &[u8]) -> Result<(u16, &str), ParseError> {
    if v.len() < 4 {
        return Err(ParseError::BadAttributeLength);
    }
    let code = (v[2] & 0x07) as u16 * 100 + v[3] as u16;
    let reason = std::str::from_utf8(&v[4..]).map_err(|_| ParseError::BadAttributeLength)?;
    Ok((code, reason))
}
