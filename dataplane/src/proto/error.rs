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
