//! The Tideway RPC wire protocol, with no I/O: bytes in, frames out; frames in, bytes out.
//!
//! This crate has no tokio, no sockets and no clock reads, so every decoder path can be driven
//! by a fuzzer or a property test. The transport (`tideway-rpc`) owns the sockets and feeds
//! bytes to [`FrameDecoder::decode`], and writes what [`Frame::encode`] produces.
//!
//! # Pieces
//!
//! - [`frame`]: the frame layout, [`Frame`] and its message types, [`FrameDecoder`].
//! - [`status`]: the [`Status`] code a response carries.
//! - [`codec`]: payload codecs ([`Codec::Json`], [`Codec::MsgPack`]). The transport never looks
//!   inside a payload; it only carries the codec id so the callee knows how to read it.
//! - [`error`]: [`DecodeError`], [`EncodeError`], [`CodecError`].
//!
//! # Frame layout
//!
//! Every frame is a big-endian `u32` length followed by that many bytes. The length counts the
//! 12-byte header and the body, never itself, and is checked against the decoder's configured
//! maximum *before* anything is allocated for the frame.
//!
//! ```text
//!  0               4       5       6       7       8                              16
//!  +---------------+-------+-------+-------+-------+-------------------------------+
//!  | length (u32)  |version| kind  | flags | codec |       request id (u64)        |
//!  +---------------+-------+-------+-------+-------+-------------------------------+
//!  | body (length - 12 bytes), laid out by kind                                    |
//!  +-------------------------------------------------------------------------------+
//! ```
//!
//! - `version`: [`PROTOCOL_VERSION`] (1). Anything else is [`DecodeError::UnsupportedVersion`].
//! - `kind`: 1 Request, 2 Response, 3 Cancel, 4 Ping, 5 Pong, 6 GoAway.
//! - `flags`: reserved, must be 0 in version 1.
//! - `codec`: the payload codec of a Request or Response (1 JSON, 2 MessagePack); 0 for the
//!   other kinds.
//! - `request id`: ties a Response or Cancel to its Request; the nonce of a Ping/Pong; the
//!   highest request id the sender accepted, for GoAway.
//!
//! Bodies by kind:
//!
//! ```text
//! Request:  deadline_ms u32 (0 = none) | method_len u16 | method (UTF-8)
//!           | metadata_count u16 | { key_len u8 | key (UTF-8) | value_len u16 | value (UTF-8) }*
//!           | payload (the rest)
//! Response: status u8 | payload if status is Ok, else an error message in UTF-8 (the rest)
//! Cancel:   empty
//! Ping:     empty
//! Pong:     empty
//! GoAway:   reason message in UTF-8 (the rest)
//! ```
//!
//! The deadline is relative (milliseconds remaining when the frame was written) so that peers
//! never need synchronised clocks.
//!
//! # Example
//!
//! ```
//! use bytes::{Bytes, BytesMut};
//! use tideway_wire::{Codec, Frame, FrameDecoder, Request};
//!
//! let req = Request::new(7, "echo.Echo/say", Codec::Json, Bytes::from_static(br#"{"text":"hi"}"#));
//! let mut buf = BytesMut::new();
//! Frame::Request(req.clone()).encode(&mut buf).unwrap();
//!
//! let mut decoder = FrameDecoder::new(4 * 1024 * 1024).unwrap();
//! let frame = decoder.decode(&mut buf).unwrap().unwrap();
//! assert_eq!(frame, Frame::Request(req));
//! ```

pub mod codec;
pub mod error;
pub mod frame;
pub mod status;

#[doc(hidden)]
pub mod fuzzing;

pub use codec::Codec;
pub use error::{CodecError, DecodeError, EncodeError};
pub use frame::{
    DEFAULT_MAX_FRAME_LEN, FRAME_HEADER_LEN, Frame, FrameDecoder, FrameKind, GoAway,
    LENGTH_PREFIX_LEN, MAX_FRAME_LEN_CEILING, MAX_METADATA_ENTRIES, MAX_METADATA_KEY_LEN,
    MAX_METADATA_VALUE_LEN, MAX_METHOD_LEN, Metadata, PROTOCOL_VERSION, Request, Response,
    decode_frame,
};
pub use status::Status;
