//! Frame layout, message types and the incremental decoder. The layout is drawn in the crate
//! docs.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use smallvec::SmallVec;

use crate::codec::Codec;
use crate::error::{DecodeError, EncodeError};
use crate::status::Status;

/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: u8 = 1;
/// Bytes of the length prefix.
pub const LENGTH_PREFIX_LEN: usize = 4;
/// Bytes of the fixed header after the length prefix: version, kind, flags, codec, request id.
pub const FRAME_HEADER_LEN: usize = 12;
/// Default maximum frame length (prefix excluded): 4 MiB, tonic's default message limit.
pub const DEFAULT_MAX_FRAME_LEN: usize = 4 * 1024 * 1024;
/// No configuration may raise the maximum frame length above 16 MiB: a peer must never be able to
/// make us buffer more than this for one frame.
pub const MAX_FRAME_LEN_CEILING: usize = 16 * 1024 * 1024;
/// Longest method name (`service/method`). Long enough for any real name; short enough that a
/// method name can be logged and used as a metric label.
pub const MAX_METHOD_LEN: usize = 1024;
/// Most metadata entries on one request. Metadata is for trace context, principal and caller; a
/// request with more entries than this is misusing it.
pub const MAX_METADATA_ENTRIES: usize = 64;
/// Longest metadata key (its length prefix is a `u8`).
pub const MAX_METADATA_KEY_LEN: usize = u8::MAX as usize;
/// Longest metadata value. A W3C `traceparent` is 55 bytes and a `tracestate` at most 512; JWT
/// principals fit easily.
pub const MAX_METADATA_VALUE_LEN: usize = 8 * 1024;

/// The kind byte of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameKind {
    /// A call.
    Request = 1,
    /// The answer to a call.
    Response = 2,
    /// The caller gave up on a call; the callee should stop working on it.
    Cancel = 3,
    /// Liveness probe; the peer answers with a Pong carrying the same id.
    Ping = 4,
    /// Answer to a Ping.
    Pong = 5,
    /// The sender accepts no new requests on this connection; in-flight ones still complete.
    GoAway = 6,
}

impl FrameKind {
    /// The kind for a byte read off the wire.
    pub fn from_byte(b: u8) -> Option<FrameKind> {
        Some(match b {
            1 => FrameKind::Request,
            2 => FrameKind::Response,
            3 => FrameKind::Cancel,
            4 => FrameKind::Ping,
            5 => FrameKind::Pong,
            6 => FrameKind::GoAway,
            _ => return None,
        })
    }

    /// A short name for errors and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            FrameKind::Request => "request",
            FrameKind::Response => "response",
            FrameKind::Cancel => "cancel",
            FrameKind::Ping => "ping",
            FrameKind::Pong => "pong",
            FrameKind::GoAway => "goaway",
        }
    }
}

/// Key/value pairs that travel with a request: trace context, authenticated principal, caller.
/// Keys are compared exactly; callers should use lowercase keys, as HTTP/2 does.
///
/// Besides its own entries, metadata can hold one shared block of pairs
/// ([`extend_shared`](Self::extend_shared)): pairs made once and reused by many calls (a
/// gateway's authenticated principal, the same for every request with one token), so that adding
/// them or cloning the metadata costs a reference count, not a copy of each string. The block
/// comes after the own entries in [`iter`](Self::iter) and on the wire; two metadata values are
/// equal when they iterate to the same pairs, however they are split.
///
/// The own entries are shared, copy-on-write, with clones: a client puts a call's metadata in
/// each request frame it sends (retries and hedges send it again), and a clone then costs a
/// reference count instead of a copy of every string.
///
/// Keys are usually constants (`x-request-id`, `traceparent`): a `&'static str` key is kept
/// as it is, not copied, and so are the well-known keys read off the wire
/// ([`KNOWN_KEYS`]). A call's own entries (one to three: request id, trace context) live in one
/// allocation with their reference count.
#[derive(Debug, Clone, Default)]
pub struct Metadata {
    /// `None` until the first entry: empty metadata allocates nothing.
    entries: Option<Arc<OwnEntries>>,
    shared: Option<Arc<[(String, String)]>>,
}

/// A metadata key: a constant, or a string of its own.
type Key = Cow<'static, str>;

/// The own entries: inline up to two (the request id and a `traceparent`), so that a call's
/// metadata is one allocation rather than a reference count, a vector and a key apiece.
type OwnEntries = SmallVec<[(Key, String); 2]>;

/// Keys the decoder does not copy: the ones Tideway's own gateway and tracing send with every
/// call. Any other key read off the wire is copied as usual.
pub const KNOWN_KEYS: [&str; 3] = ["x-request-id", "traceparent", "tracestate"];

/// `key` as one of [`KNOWN_KEYS`] when it is one, else copied.
fn key_from_wire(key: &str) -> Key {
    match KNOWN_KEYS.iter().find(|known| **known == key) {
        Some(known) => Cow::Borrowed(known),
        None => Cow::Owned(key.to_owned()),
    }
}

impl Metadata {
    /// Empty metadata.
    pub fn new() -> Self {
        Self::default()
    }

    /// The first value for `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// Sets `key` to `value`, replacing an earlier value. A `&'static str` key is not copied.
    pub fn insert(&mut self, key: impl Into<Cow<'static, str>>, value: impl Into<String>) {
        let key = key.into();
        let value = value.into();
        if self.shared_has(&key) {
            self.unshare();
        }
        let entries = self.own_mut();
        match entries.iter_mut().find(|(k, _)| *k == key) {
            Some(entry) => entry.1 = value,
            None => entries.push((key, value)),
        }
    }

    /// The own entries, to change: copied first if a clone shares them.
    fn own_mut(&mut self) -> &mut OwnEntries {
        Arc::make_mut(self.entries.get_or_insert_with(Default::default))
    }

    fn own(&self) -> &[(Key, String)] {
        self.entries.as_deref().map_or(&[], SmallVec::as_slice)
    }

    /// Adds `pairs` after the current entries without copying them. Keys already present keep
    /// their first value for [`get`](Self::get), as with repeated keys on the wire; callers
    /// should add a block of keys they do not set otherwise. A second block is merged into the
    /// own entries (copied) first.
    pub fn extend_shared(&mut self, pairs: Arc<[(String, String)]>) {
        if self.shared.is_some() {
            self.unshare();
        }
        if !pairs.is_empty() {
            self.shared = Some(pairs);
        }
    }

    fn shared_has(&self, key: &str) -> bool {
        self.shared
            .as_ref()
            .is_some_and(|s| s.iter().any(|(k, _)| k == key))
    }

    /// Moves the shared block into the own entries (copying its strings).
    fn unshare(&mut self) {
        if let Some(shared) = self.shared.take() {
            self.own_mut().extend(
                shared
                    .iter()
                    .map(|(k, v)| (Cow::Owned(k.clone()), v.clone())),
            );
        }
    }

    /// All entries in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.own().iter().map(|(k, v)| (&**k, v.as_str())).chain(
            self.shared
                .iter()
                .flat_map(|s| s.iter())
                .map(|(k, v)| (k.as_str(), v.as_str())),
        )
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.own().len() + self.shared.as_ref().map_or(0, |s| s.len())
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl PartialEq for Metadata {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for Metadata {}

/// A call: method, deadline, metadata and an opaque payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Ties the response to this request; unique among the requests in flight on a connection.
    pub id: u64,
    /// The payload's codec; the response uses the same.
    pub codec: Codec,
    /// `service/method`, e.g. `logistics.Waybills/create`.
    pub method: String,
    /// Time left for the call when the frame was written; `None` lets the callee apply its own
    /// default. Carried in whole milliseconds, rounded up so a short deadline never becomes none.
    pub deadline: Option<Duration>,
    /// Trace context, principal, caller.
    pub metadata: Metadata,
    /// Encoded arguments; opaque to the transport.
    pub payload: Bytes,
}

impl Request {
    /// A request with no deadline and no metadata.
    pub fn new(id: u64, method: impl Into<String>, codec: Codec, payload: Bytes) -> Self {
        Request {
            id,
            codec,
            method: method.into(),
            deadline: None,
            metadata: Metadata::new(),
            payload,
        }
    }
}

/// The answer to a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The request this answers.
    pub id: u64,
    /// The request's codec.
    pub codec: Codec,
    /// Outcome.
    pub status: Status,
    /// The encoded result when `status` is [`Status::Ok`], else a UTF-8 error message.
    pub body: Bytes,
}

impl Response {
    /// A successful response.
    pub fn ok(id: u64, codec: Codec, payload: Bytes) -> Self {
        Response {
            id,
            codec,
            status: Status::Ok,
            body: payload,
        }
    }

    /// A failed response with a human-readable message.
    pub fn error(id: u64, codec: Codec, status: Status, message: impl Into<String>) -> Self {
        Response {
            id,
            codec,
            status,
            body: Bytes::from(message.into()),
        }
    }

    /// The error message of a failed response (lossy if a broken peer sent bad UTF-8; the decoder
    /// rejects that, so frames from [`FrameDecoder`] are always exact).
    pub fn message(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.body)
    }
}

/// The sender takes no new requests on this connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoAway {
    /// Highest request id the sender accepted before going away; requests above it were not
    /// processed and are safe to retry elsewhere.
    pub last_request_id: u64,
    /// Why, for logs.
    pub reason: String,
}

/// One protocol frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A call.
    Request(Request),
    /// A call's answer.
    Response(Response),
    /// The caller abandoned the request with this id.
    Cancel {
        /// The abandoned request.
        id: u64,
    },
    /// Liveness probe.
    Ping {
        /// Echoed in the Pong.
        nonce: u64,
    },
    /// Liveness answer.
    Pong {
        /// The Ping's nonce.
        nonce: u64,
    },
    /// No new requests on this connection.
    GoAway(GoAway),
}

impl Frame {
    /// The frame's kind.
    pub fn kind(&self) -> FrameKind {
        match self {
            Frame::Request(_) => FrameKind::Request,
            Frame::Response(_) => FrameKind::Response,
            Frame::Cancel { .. } => FrameKind::Cancel,
            Frame::Ping { .. } => FrameKind::Ping,
            Frame::Pong { .. } => FrameKind::Pong,
            Frame::GoAway(_) => FrameKind::GoAway,
        }
    }

    /// Length of the encoded frame including its length prefix.
    pub fn encoded_len(&self) -> usize {
        LENGTH_PREFIX_LEN + FRAME_HEADER_LEN + self.body_len()
    }

    fn body_len(&self) -> usize {
        match self {
            Frame::Request(r) => {
                4 + 2
                    + r.method.len()
                    + 2
                    + r.metadata
                        .iter()
                        .map(|(k, v)| 1 + k.len() + 2 + v.len())
                        .sum::<usize>()
                    + r.payload.len()
            }
            Frame::Response(r) => 1 + r.body.len(),
            Frame::Cancel { .. } | Frame::Ping { .. } | Frame::Pong { .. } => 0,
            Frame::GoAway(g) => g.reason.len(),
        }
    }

    /// Appends the encoded frame to `dst`. Checks every limit first, and that an error message is
    /// UTF-8, so on error nothing was written and whatever is written the peer can decode.
    pub fn encode(&self, dst: &mut BytesMut) -> Result<(), EncodeError> {
        self.validate()?;
        let body_len = self.body_len();
        let frame_len = FRAME_HEADER_LEN + body_len;
        if frame_len > MAX_FRAME_LEN_CEILING {
            return Err(EncodeError::FrameTooLarge {
                len: frame_len,
                max: MAX_FRAME_LEN_CEILING,
            });
        }
        dst.reserve(LENGTH_PREFIX_LEN + frame_len);
        // The ceiling check above keeps this in range.
        dst.put_u32(frame_len as u32);
        dst.put_u8(PROTOCOL_VERSION);
        dst.put_u8(self.kind() as u8);
        dst.put_u8(0);
        let (codec, id) = match self {
            Frame::Request(r) => (r.codec.id(), r.id),
            Frame::Response(r) => (r.codec.id(), r.id),
            Frame::Cancel { id } => (0, *id),
            Frame::Ping { nonce } | Frame::Pong { nonce } => (0, *nonce),
            Frame::GoAway(g) => (0, g.last_request_id),
        };
        dst.put_u8(codec);
        dst.put_u64(id);
        match self {
            Frame::Request(r) => {
                dst.put_u32(deadline_to_millis(r.deadline));
                dst.put_u16(r.method.len() as u16);
                dst.put_slice(r.method.as_bytes());
                dst.put_u16(r.metadata.len() as u16);
                for (k, v) in r.metadata.iter() {
                    dst.put_u8(k.len() as u8);
                    dst.put_slice(k.as_bytes());
                    dst.put_u16(v.len() as u16);
                    dst.put_slice(v.as_bytes());
                }
                dst.put_slice(&r.payload);
            }
            Frame::Response(r) => {
                dst.put_u8(r.status.code());
                dst.put_slice(&r.body);
            }
            Frame::Cancel { .. } | Frame::Ping { .. } | Frame::Pong { .. } => {}
            Frame::GoAway(g) => dst.put_slice(g.reason.as_bytes()),
        }
        Ok(())
    }

    fn validate(&self) -> Result<(), EncodeError> {
        let r = match self {
            Frame::Request(r) => r,
            // The decoder rejects an error message that is not UTF-8, and closes the connection.
            Frame::Response(r)
                if r.status != Status::Ok && std::str::from_utf8(&r.body).is_err() =>
            {
                return Err(EncodeError::InvalidUtf8 {
                    field: "error message",
                });
            }
            _ => return Ok(()),
        };
        check_len("method", r.method.len(), MAX_METHOD_LEN)?;
        if r.metadata.len() > MAX_METADATA_ENTRIES {
            return Err(EncodeError::TooManyMetadataEntries {
                count: r.metadata.len(),
                max: MAX_METADATA_ENTRIES,
            });
        }
        for (k, v) in r.metadata.iter() {
            check_len("metadata key", k.len(), MAX_METADATA_KEY_LEN)?;
            check_len("metadata value", v.len(), MAX_METADATA_VALUE_LEN)?;
        }
        Ok(())
    }
}

fn check_len(field: &'static str, len: usize, max: usize) -> Result<(), EncodeError> {
    if len > max {
        Err(EncodeError::FieldTooLong { field, len, max })
    } else {
        Ok(())
    }
}

/// Whole milliseconds, rounded up, saturating; 0 means "no deadline" on the wire.
fn deadline_to_millis(deadline: Option<Duration>) -> u32 {
    match deadline {
        None => 0,
        Some(d) => {
            let ms = d.as_nanos().div_ceil(1_000_000).max(1);
            u32::try_from(ms).unwrap_or(u32::MAX)
        }
    }
}

/// Incremental frame decoder: feed it whatever bytes arrived, take out whole frames.
///
/// Call [`decode`](Self::decode) after each read until it returns `Ok(None)` (need more bytes).
/// After an `Err` the stream is out of sync and the connection must be closed.
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    max_frame_len: usize,
}

impl FrameDecoder {
    /// A decoder that rejects frames longer than `max_frame_len` (prefix excluded). Returns
    /// `None` when the maximum is below a header or above [`MAX_FRAME_LEN_CEILING`].
    pub fn new(max_frame_len: usize) -> Option<Self> {
        if (FRAME_HEADER_LEN..=MAX_FRAME_LEN_CEILING).contains(&max_frame_len) {
            Some(FrameDecoder { max_frame_len })
        } else {
            None
        }
    }

    /// The configured maximum frame length.
    pub fn max_frame_len(&self) -> usize {
        self.max_frame_len
    }

    /// Takes one whole frame off the front of `src`, or returns `Ok(None)` if `src` does not
    /// hold one yet. The length prefix is checked against the maximum before `src` is grown, so a
    /// hostile length costs nothing. Payloads share `src`'s allocation (no copy).
    pub fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, DecodeError> {
        if src.len() < LENGTH_PREFIX_LEN {
            return Ok(None);
        }
        let len = u32::from_be_bytes([src[0], src[1], src[2], src[3]]) as usize;
        if len > self.max_frame_len {
            return Err(DecodeError::FrameTooLarge {
                len,
                max: self.max_frame_len,
            });
        }
        if len < FRAME_HEADER_LEN {
            return Err(DecodeError::FrameTooShort {
                len,
                min: FRAME_HEADER_LEN,
            });
        }
        let total = LENGTH_PREFIX_LEN + len;
        if src.len() < total {
            // Bounded by the check above.
            src.reserve(total - src.len());
            return Ok(None);
        }
        let mut frame = src.split_to(total).freeze();
        frame.advance(LENGTH_PREFIX_LEN);
        decode_frame(frame).map(Some)
    }
}

/// Decodes one frame from its bytes after the length prefix (header and body).
pub fn decode_frame(mut buf: Bytes) -> Result<Frame, DecodeError> {
    if buf.len() < FRAME_HEADER_LEN {
        return Err(DecodeError::FrameTooShort {
            len: buf.len(),
            min: FRAME_HEADER_LEN,
        });
    }
    let version = buf.get_u8();
    if version != PROTOCOL_VERSION {
        return Err(DecodeError::UnsupportedVersion(version));
    }
    let kind_byte = buf.get_u8();
    let kind = FrameKind::from_byte(kind_byte).ok_or(DecodeError::UnknownKind(kind_byte))?;
    let flags = buf.get_u8();
    if flags != 0 {
        return Err(DecodeError::ReservedFlags(flags));
    }
    let codec_byte = buf.get_u8();
    let id = buf.get_u64();

    let payload_codec = || {
        Codec::from_id(codec_byte).ok_or(DecodeError::InvalidCodec {
            codec: codec_byte,
            kind: kind.as_str(),
        })
    };
    let no_codec = || {
        if codec_byte == 0 {
            Ok(())
        } else {
            Err(DecodeError::InvalidCodec {
                codec: codec_byte,
                kind: kind.as_str(),
            })
        }
    };
    let empty_body = |buf: &Bytes| {
        if buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::UnexpectedBody {
                kind: kind.as_str(),
                len: buf.len(),
            })
        }
    };

    Ok(match kind {
        FrameKind::Request => {
            let codec = payload_codec()?;
            let deadline_ms = read_u32(&mut buf, "deadline")?;
            let method_len = read_u16(&mut buf, "method length")? as usize;
            let method = read_string(&mut buf, method_len, "method")?;
            let count = read_u16(&mut buf, "metadata count")? as usize;
            // Each entry takes at least 3 bytes, so a count the body cannot hold is rejected
            // before we reserve room for it.
            if count > buf.remaining() / 3 {
                return Err(DecodeError::Truncated { field: "metadata" });
            }
            let mut entries = OwnEntries::with_capacity(count);
            for _ in 0..count {
                let key_len = read_u8(&mut buf, "metadata key length")? as usize;
                let key = read_text(&mut buf, key_len, "metadata key", key_from_wire)?;
                let value_len = read_u16(&mut buf, "metadata value length")? as usize;
                let value = read_string(&mut buf, value_len, "metadata value")?;
                entries.push((key, value));
            }
            let metadata = Metadata {
                entries: (!entries.is_empty()).then(|| Arc::new(entries)),
                shared: None,
            };
            Frame::Request(Request {
                id,
                codec,
                method,
                deadline: (deadline_ms != 0).then(|| Duration::from_millis(deadline_ms.into())),
                metadata,
                payload: buf,
            })
        }
        FrameKind::Response => {
            let codec = payload_codec()?;
            let code = read_u8(&mut buf, "status")?;
            let status = Status::from_code(code).ok_or(DecodeError::UnknownStatus(code))?;
            if status != Status::Ok && std::str::from_utf8(&buf).is_err() {
                return Err(DecodeError::InvalidUtf8 {
                    field: "error message",
                });
            }
            Frame::Response(Response {
                id,
                codec,
                status,
                body: buf,
            })
        }
        FrameKind::Cancel => {
            no_codec()?;
            empty_body(&buf)?;
            Frame::Cancel { id }
        }
        FrameKind::Ping => {
            no_codec()?;
            empty_body(&buf)?;
            Frame::Ping { nonce: id }
        }
        FrameKind::Pong => {
            no_codec()?;
            empty_body(&buf)?;
            Frame::Pong { nonce: id }
        }
        FrameKind::GoAway => {
            no_codec()?;
            let len = buf.len();
            let reason = read_string(&mut buf, len, "goaway reason")?;
            Frame::GoAway(GoAway {
                last_request_id: id,
                reason,
            })
        }
    })
}

fn read_u8(buf: &mut Bytes, field: &'static str) -> Result<u8, DecodeError> {
    buf.try_get_u8()
        .map_err(|_| DecodeError::Truncated { field })
}

fn read_u16(buf: &mut Bytes, field: &'static str) -> Result<u16, DecodeError> {
    buf.try_get_u16()
        .map_err(|_| DecodeError::Truncated { field })
}

fn read_u32(buf: &mut Bytes, field: &'static str) -> Result<u32, DecodeError> {
    buf.try_get_u32()
        .map_err(|_| DecodeError::Truncated { field })
}

fn read_string(buf: &mut Bytes, len: usize, field: &'static str) -> Result<String, DecodeError> {
    read_text(buf, len, field, str::to_owned)
}

/// The next `len` bytes of `buf`, which must be UTF-8, made into a value by `make` (which
/// copies the text, or does not need to), then consumed.
fn read_text<T>(
    buf: &mut Bytes,
    len: usize,
    field: &'static str,
    make: impl FnOnce(&str) -> T,
) -> Result<T, DecodeError> {
    if buf.remaining() < len {
        return Err(DecodeError::Truncated { field });
    }
    let text = std::str::from_utf8(&buf[..len]).map_err(|_| DecodeError::InvalidUtf8 { field })?;
    let value = make(text);
    buf.advance(len);
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(frame: &Frame) -> BytesMut {
        let mut buf = BytesMut::new();
        frame.encode(&mut buf).unwrap();
        assert_eq!(buf.len(), frame.encoded_len());
        buf
    }

    fn decoder() -> FrameDecoder {
        FrameDecoder::new(DEFAULT_MAX_FRAME_LEN).unwrap()
    }

    #[test]
    fn request_with_everything_round_trips() {
        let mut req = Request::new(
            u64::MAX,
            "logistics.Waybills/create",
            Codec::MsgPack,
            Bytes::from_static(b"\x81\xa1a\x01"),
        );
        req.deadline = Some(Duration::from_millis(1500));
        req.metadata.insert("traceparent", "00-abc-def-01");
        req.metadata.insert("principal", "alice");
        let frame = Frame::Request(req);
        let mut buf = encode(&frame);
        assert_eq!(decoder().decode(&mut buf).unwrap(), Some(frame));
        assert!(buf.is_empty());
    }

    #[test]
    fn metadata_clones_share_their_entries_until_one_changes() {
        let mut original = Metadata::new();
        assert!(
            original.entries.is_none(),
            "empty metadata allocates nothing"
        );
        original.insert("x-request-id", "r1");
        let mut copy = original.clone();
        assert!(Arc::ptr_eq(
            original.entries.as_ref().unwrap(),
            copy.entries.as_ref().unwrap()
        ));
        copy.insert("x-request-id", "r2");
        copy.insert("traceparent", "00-abc-def-01");
        assert_eq!(original.get("x-request-id"), Some("r1"));
        assert_eq!(original.len(), 1);
        assert_eq!(copy.get("x-request-id"), Some("r2"));
        assert_eq!(copy.len(), 2);
        assert_ne!(original, copy);
    }

    #[test]
    fn constant_and_well_known_keys_are_not_copied() {
        let mut req = Request::new(1, "s/m", Codec::Json, Bytes::new());
        req.metadata.insert("x-request-id", "r1");
        req.metadata.insert(String::from("x-caller"), "billing");
        req.metadata.insert("traceparent", "00-abc-def-01");
        let own = req.metadata.own();
        assert!(matches!(own[0].0, Cow::Borrowed("x-request-id")));
        assert!(matches!(own[1].0, Cow::Owned(ref k) if k == "x-caller"));
        // Read back off the wire: the known keys are the constants again, others are copied.
        let frame = Frame::Request(req.clone());
        let mut buf = encode(&frame);
        let Some(Frame::Request(decoded)) = decoder().decode(&mut buf).unwrap() else {
            panic!("not a request");
        };
        assert_eq!(decoded.metadata, req.metadata);
        let keys: Vec<_> = decoded
            .metadata
            .own()
            .iter()
            .map(|(k, _)| matches!(k, Cow::Borrowed(_)))
            .collect();
        assert_eq!(keys, [true, false, true]);
        assert_eq!(decoded.metadata.get("x-caller"), Some("billing"));
    }

    #[test]
    fn shared_metadata_block_travels_like_own_entries() {
        let shared: Arc<[(String, String)]> = Arc::from(vec![
            ("x-auth-subject".to_owned(), "ada".to_owned()),
            ("x-auth-method".to_owned(), "jwt".to_owned()),
        ]);
        let mut req = Request::new(7, "a/b", Codec::Json, Bytes::from_static(b"{}"));
        req.metadata.insert("x-request-id", "r1");
        req.metadata.extend_shared(Arc::clone(&shared));
        assert_eq!(req.metadata.len(), 3);
        assert_eq!(req.metadata.get("x-auth-method"), Some("jwt"));
        let pairs: Vec<_> = req.metadata.iter().collect();
        assert_eq!(
            pairs,
            [
                ("x-request-id", "r1"),
                ("x-auth-subject", "ada"),
                ("x-auth-method", "jwt")
            ]
        );
        // On the wire and after decoding, the split into own and shared entries is gone, and
        // equality does not depend on it.
        let frame = Frame::Request(req.clone());
        let mut buf = encode(&frame);
        let decoded = decoder().decode(&mut buf).unwrap().unwrap();
        assert_eq!(decoded, frame);
        let Frame::Request(decoded) = decoded else {
            unreachable!()
        };
        assert_eq!(decoded.metadata, req.metadata);

        // Setting a key of the block replaces it, in a copy: the block itself is unchanged.
        let mut changed = req.metadata.clone();
        changed.insert("x-auth-subject", "mallory");
        assert_eq!(changed.get("x-auth-subject"), Some("mallory"));
        assert_eq!(changed.len(), 3);
        assert_eq!(shared[0].1, "ada");
        assert_eq!(req.metadata.get("x-auth-subject"), Some("ada"));
        assert_ne!(changed, req.metadata);

        // A second block merges the first into the own entries.
        let mut two = Metadata::new();
        two.extend_shared(Arc::clone(&shared));
        two.extend_shared(Arc::from(vec![("k".to_owned(), "v".to_owned())]));
        assert_eq!(two.len(), 3);
        assert_eq!(two.get("k"), Some("v"));
        assert_eq!(two.get("x-auth-subject"), Some("ada"));
    }
    #[test]
    fn sub_millisecond_deadline_is_not_lost() {
        assert_eq!(deadline_to_millis(Some(Duration::from_micros(10))), 1);
        assert_eq!(deadline_to_millis(Some(Duration::ZERO)), 1);
        assert_eq!(deadline_to_millis(None), 0);
        assert_eq!(
            deadline_to_millis(Some(Duration::from_secs(u64::MAX))),
            u32::MAX
        );
    }

    #[test]
    fn partial_input_yields_none_until_the_frame_is_whole() {
        let frame = Frame::Response(Response::ok(9, Codec::Json, Bytes::from_static(b"[1,2]")));
        let whole = encode(&frame);
        let mut dec = decoder();
        let mut buf = BytesMut::new();
        for (i, b) in whole.iter().enumerate() {
            buf.put_u8(*b);
            let got = dec.decode(&mut buf).unwrap();
            if i + 1 < whole.len() {
                assert_eq!(got, None, "byte {i}");
            } else {
                assert_eq!(got, Some(frame.clone()));
            }
        }
    }

    #[test]
    fn oversized_length_is_rejected_before_allocating() {
        let mut dec = FrameDecoder::new(1024).unwrap();
        let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0xff][..]);
        let cap_before = buf.capacity();
        assert_eq!(
            dec.decode(&mut buf),
            Err(DecodeError::FrameTooLarge {
                len: u32::MAX as usize,
                max: 1024
            })
        );
        assert_eq!(buf.capacity(), cap_before);
    }

    #[test]
    fn typed_errors_for_bad_header_fields() {
        let good = encode(&Frame::Ping { nonce: 1 });
        let cases: [(usize, u8, DecodeError); 5] = [
            (4, 2, DecodeError::UnsupportedVersion(2)),
            (5, 0, DecodeError::UnknownKind(0)),
            (5, 7, DecodeError::UnknownKind(7)),
            (6, 0x80, DecodeError::ReservedFlags(0x80)),
            (
                7,
                1,
                DecodeError::InvalidCodec {
                    codec: 1,
                    kind: "ping",
                },
            ),
        ];
        for (offset, value, want) in cases {
            let mut buf = good.clone();
            buf[offset] = value;
            assert_eq!(decoder().decode(&mut buf), Err(want));
        }
        let mut short = BytesMut::from(&[0, 0, 0, 3, 1, 1, 0][..]);
        assert!(matches!(
            decoder().decode(&mut short),
            Err(DecodeError::FrameTooShort { len: 3, .. })
        ));
    }

    #[test]
    fn request_without_codec_and_bad_status_are_rejected() {
        let mut buf = encode(&Frame::Request(Request::new(
            1,
            "a/b",
            Codec::Json,
            Bytes::new(),
        )));
        buf[7] = 0;
        assert!(matches!(
            decoder().decode(&mut buf),
            Err(DecodeError::InvalidCodec { codec: 0, .. })
        ));
        let mut buf = encode(&Frame::Response(Response::error(
            1,
            Codec::Json,
            Status::Internal,
            "x",
        )));
        buf[16] = 200;
        assert_eq!(
            decoder().decode(&mut buf),
            Err(DecodeError::UnknownStatus(200))
        );
    }

    #[test]
    fn lying_metadata_count_does_not_allocate_for_it() {
        let mut req = Request::new(1, "a/b", Codec::Json, Bytes::new());
        req.metadata.insert("k", "v");
        let mut buf = encode(&Frame::Request(req));
        // metadata count sits after header(16) + deadline(4) + method len(2) + "a/b"(3)
        buf[25] = 0xff;
        buf[26] = 0xff;
        assert_eq!(
            decoder().decode(&mut buf),
            Err(DecodeError::Truncated { field: "metadata" })
        );
    }

    #[test]
    fn encoder_refuses_oversized_fields_and_writes_nothing() {
        let long = "m".repeat(MAX_METHOD_LEN + 1);
        let mut buf = BytesMut::new();
        let err = Frame::Request(Request::new(1, long, Codec::Json, Bytes::new()))
            .encode(&mut buf)
            .unwrap_err();
        assert!(matches!(
            err,
            EncodeError::FieldTooLong {
                field: "method",
                ..
            }
        ));
        assert!(buf.is_empty());
    }

    #[test]
    fn encoder_refuses_an_error_message_the_decoder_would_reject() {
        let mut resp = Response::error(1, Codec::Json, Status::Internal, "");
        resp.body = Bytes::from_static(b"\xc3\x28");
        let mut buf = BytesMut::new();
        assert_eq!(
            Frame::Response(resp.clone()).encode(&mut buf),
            Err(EncodeError::InvalidUtf8 {
                field: "error message"
            })
        );
        assert!(buf.is_empty());
        // The same bytes are a fine payload of an Ok response.
        resp.status = Status::Ok;
        assert!(Frame::Response(resp).encode(&mut buf).is_ok());
    }

    #[test]
    fn decoder_limits_are_validated() {
        assert!(FrameDecoder::new(FRAME_HEADER_LEN - 1).is_none());
        assert!(FrameDecoder::new(MAX_FRAME_LEN_CEILING + 1).is_none());
        assert!(FrameDecoder::new(MAX_FRAME_LEN_CEILING).is_some());
    }
}
