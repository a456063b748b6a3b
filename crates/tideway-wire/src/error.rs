//! Errors of the wire protocol. Each says what was wrong with which part of the input; none is
//! ever raised as a panic.

use crate::codec::Codec;

/// Why bytes could not be decoded into a frame. Any of these means the peer is broken or hostile:
/// the transport closes that one connection and keeps the others.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The length prefix announces more than the configured maximum. Raised before anything is
    /// allocated for the frame.
    #[error("frame of {len} bytes exceeds the maximum of {max} bytes")]
    FrameTooLarge {
        /// Announced length.
        len: usize,
        /// Configured maximum.
        max: usize,
    },
    /// The length prefix announces fewer bytes than a header needs.
    #[error("frame of {len} bytes is shorter than the {min}-byte header")]
    FrameTooShort {
        /// Announced length.
        len: usize,
        /// Header length.
        min: usize,
    },
    /// A protocol version this decoder does not speak.
    #[error("unsupported protocol version {0}")]
    UnsupportedVersion(u8),
    /// A frame kind this version does not define.
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    /// Flag bits set that this version reserves.
    #[error("reserved flag bits set: {0:#04x}")]
    ReservedFlags(u8),
    /// A codec id this version does not define, or a codec on a frame kind that has no payload.
    #[error("invalid codec id {codec} for a {kind} frame")]
    InvalidCodec {
        /// The codec id.
        codec: u8,
        /// The frame kind's name.
        kind: &'static str,
    },
    /// A status code this version does not define.
    #[error("unknown status code {0}")]
    UnknownStatus(u8),
    /// The body ended inside a field.
    #[error("frame body ends inside the {field} field")]
    Truncated {
        /// The field being read.
        field: &'static str,
    },
    /// A text field is not UTF-8.
    #[error("the {field} field is not valid UTF-8")]
    InvalidUtf8 {
        /// The field.
        field: &'static str,
    },
    /// A body where the kind allows none.
    #[error("a {kind} frame must have an empty body, found {len} bytes")]
    UnexpectedBody {
        /// The frame kind's name.
        kind: &'static str,
        /// Body length.
        len: usize,
    },
}

/// Why a frame could not be encoded. Raised on the sending side before anything is written, so the
/// connection stays usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// A field is longer than its length prefix or limit allows.
    #[error("the {field} field is {len} bytes, the limit is {max}")]
    FieldTooLong {
        /// The field.
        field: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// More metadata entries than a frame may carry.
    #[error("{count} metadata entries, the limit is {max}")]
    TooManyMetadataEntries {
        /// Entries given.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// The whole frame is larger than the frame ceiling.
    #[error("frame of {len} bytes exceeds the maximum of {max} bytes")]
    FrameTooLarge {
        /// Frame length.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// A field the protocol defines as UTF-8 is not: the error message of a failed
    /// [`Response`](crate::Response), whose `body` is public bytes. The peer's decoder would
    /// reject the frame and close the whole connection, so it is refused here instead.
    #[error("the {field} field is not valid UTF-8")]
    InvalidUtf8 {
        /// The field.
        field: &'static str,
    },
}

/// A payload could not be turned into a value, or a value into a payload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The payload is not a valid encoding of the expected type.
    #[error("cannot decode {codec} payload: {reason}")]
    Decode {
        /// The codec used.
        codec: Codec,
        /// The decoder's explanation.
        reason: String,
    },
    /// The value cannot be represented in the codec.
    #[error("cannot encode {codec} payload: {reason}")]
    Encode {
        /// The codec used.
        codec: Codec,
        /// The encoder's explanation.
        reason: String,
    },
}
