//! Typed errors of the protocol core.

use thiserror::Error;

/// Why a datagram could not be parsed as STUN or ChannelData. Each variant is counted as a
/// malformed packet; none of them is ever answered (answering garbage amplifies attacks).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ParseError {
    #[error("message shorter than its header or declared length")]
    Truncated,
    #[error("not a STUN message (bad leading bits or magic cookie)")]
    NotStun,
    #[error("message length is not a multiple of 4")]
    UnalignedLength,
    #[error("declared length does not match the datagram")]
    LengthMismatch,
    #[error("attribute runs past the end of the message")]
    AttributeOverrun,
    #[error("attribute after FINGERPRINT")]
    AfterFingerprint,
    #[error("malformed or duplicate MESSAGE-INTEGRITY")]
    BadIntegrity,
    #[error("FINGERPRINT does not match")]
    BadFingerprint,
    #[error("too many attributes")]
    TooManyAttributes,
    #[error("malformed address attribute")]
    BadAddress,
    #[error("attribute value has the wrong length")]
    BadAttributeLength,
    #[error("ChannelData with a channel number outside 0x4000-0x7FFF")]
    BadChannelNumber,
    #[error("stream frame larger than the limit")]
    FrameTooLarge,
}

/// Why a relay socket could not be opened for an allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum RelayError {
    #[error("no relay address of the requested family")]
    FamilyUnsupported,
    #[error("no relay port available")]
    NoCapacity,
    #[error("reservation token unknown or expired")]
    UnknownReservation,
}

/// A STUN ERROR-CODE answer: the number and the reason phrase sent with it. Every error
/// response the server gives is one of the constants below, so a code never travels
/// without its phrase and the list of answers is in one place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorCode {
    pub code: u16,
    pub reason: &'static str,
}

macro_rules! error_codes {
    {$($(#[$doc:meta])* $name:ident($code:literal, $reason:literal);)*} => {
        impl ErrorCode {
            $($(#[$doc])* pub const $name: ErrorCode = ErrorCode { code: $code, reason: $reason };)*

            /// Every answer the server can give, for tests and documentation.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$name),*];
        }
    };
}

error_codes! {
    /// A comprehension-required attribute the server does not know (RFC 8489 §7.3.1).
    UNKNOWN_ATTRIBUTE(420, "Unknown Attribute");
    UNSUPPORTED_METHOD(400, "Unsupported Method");
    UNAUTHORIZED(401, "Unauthorized");
    STALE_NONCE(438, "Stale Nonce");
    MISSING_CREDENTIALS(400, "Missing USERNAME, REALM or NONCE");
    USERNAME_NOT_UTF8(400, "USERNAME is not UTF-8");
    UNKNOWN_PASSWORD_ALGORITHM(400, "Unknown PASSWORD-ALGORITHM");
    /// Valid credentials, but not those that created the allocation.
    WRONG_CREDENTIALS(441, "Wrong Credentials");
    ALLOCATION_MISMATCH(437, "Allocation Mismatch");
    MISSING_REQUESTED_TRANSPORT(400, "Missing REQUESTED-TRANSPORT");
    BAD_REQUESTED_TRANSPORT(400, "Bad REQUESTED-TRANSPORT");
    UNSUPPORTED_TRANSPORT(442, "Unsupported Transport Protocol");
    BAD_EVEN_PORT(400, "Bad EVEN-PORT");
    BAD_RESERVATION_TOKEN(400, "Bad RESERVATION-TOKEN");
    FAMILY_NOT_SUPPORTED(440, "Address Family not Supported");
    BAD_REQUESTED_ADDRESS_FAMILY(400, "Bad REQUESTED-ADDRESS-FAMILY");
    RESERVATION_WITH_EVEN_PORT_OR_FAMILY(400, "RESERVATION-TOKEN with EVEN-PORT or family");
    BAD_LIFETIME(400, "Bad LIFETIME");
    /// Draining, no relay port, or a permission/channel limit reached.
    INSUFFICIENT_CAPACITY(508, "Insufficient Capacity");
    ALLOCATION_QUOTA_REACHED(486, "Allocation Quota Reached");
    PEER_FAMILY_MISMATCH(443, "Peer Address Family Mismatch");
    BAD_XOR_PEER_ADDRESS(400, "Bad XOR-PEER-ADDRESS");
    /// The peer is outside the routes of the client's listener.
    FORBIDDEN(403, "Forbidden");
    MISSING_XOR_PEER_ADDRESS(400, "Missing XOR-PEER-ADDRESS");
    BAD_CHANNEL_NUMBER(400, "Bad CHANNEL-NUMBER");
    CHANNEL_BOUND_DIFFERENTLY(400, "Channel already bound differently");
}

impl From<RelayError> for ErrorCode {
    fn from(e: RelayError) -> Self {
        match e {
            RelayError::FamilyUnsupported => ErrorCode::FAMILY_NOT_SUPPORTED,
            RelayError::NoCapacity | RelayError::UnknownReservation => {
                ErrorCode::INSUFFICIENT_CAPACITY
            }
        }
    }
}
