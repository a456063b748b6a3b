//! The bodies of the fuzz targets in `fuzz/`, kept here so that `cargo test` replays the seed
//! corpus through exactly the code the fuzzer runs (`tests/corpus.rs`) and the property tests
//! drive the same state machine (`tests/roundtrip.rs`).
//!
//! Not part of the API: hidden from the docs and free to change. It uses only the public API of
//! this crate, has no dependencies of its own and reaches no internals, so it is always compiled
//! (a `cfg(fuzzing)` gate would keep the corpus replay out of a plain `cargo test`).
//!
//! Every check here is an `assert!`: a panic is what the fuzzer reports as a crash.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::{Bytes, BytesMut};

use crate::{
    Codec, DecodeError, Frame, FrameDecoder, GoAway, LENGTH_PREFIX_LEN, MAX_METADATA_ENTRIES,
    MAX_METADATA_KEY_LEN, MAX_METADATA_VALUE_LEN, MAX_METHOD_LEN, Metadata, Request, Response,
    Status, decode_frame,
};

/// Maximum frame length of the decoders the targets use: small, so that the fuzzer reaches the
/// [`DecodeError::FrameTooLarge`] path with short inputs.
pub const FUZZ_MAX_FRAME_LEN: usize = 64 * 1024;

/// What [`decode_frame_target`] saw, so that tests can pin the outcome of a seed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DecodeOutcome {
    /// The frames decoded, in order.
    pub frames: Vec<Frame>,
    /// The error that ended decoding, if one did.
    pub error: Option<DecodeError>,
    /// Bytes left in the buffer at the end: an incomplete frame, or what followed the error.
    pub leftover: usize,
}

/// Body of the `decode_frame` fuzz target.
///
/// The first byte of `data` picks the chunk size (0: the whole stream at once; `n`: `n` bytes at
/// a time); the rest is the byte stream. Each chunk is appended to the buffer of a
/// [`FrameDecoder`] limited to [`FUZZ_MAX_FRAME_LEN`], which is then polled until it returns
/// `Ok(None)` or an error (after an error the stream is out of sync, so the target stops, as the
/// transport would close the connection). Every decoded frame must re-encode to exactly the bytes
/// it came from and decode back equal; see [`decode_checked`] for the other checks.
pub fn decode_frame_target(data: &[u8]) -> DecodeOutcome {
    let mut outcome = DecodeOutcome::default();
    let Some((&chunk_byte, stream)) = data.split_first() else {
        return outcome;
    };
    let chunk_len = match chunk_byte {
        0 => stream.len().max(1),
        n => usize::from(n),
    };
    let mut decoder = fuzz_decoder();
    let mut buf = BytesMut::new();
    'feed: for chunk in stream.chunks(chunk_len) {
        buf.extend_from_slice(chunk);
        loop {
            match decode_checked(&mut decoder, &mut buf) {
                Ok(Some(frame)) => outcome.frames.push(frame),
                Ok(None) => break,
                Err(err) => {
                    outcome.error = Some(err);
                    break 'feed;
                }
            }
        }
    }
    outcome.leftover = buf.len();
    // The one-shot decoder must not panic on arbitrary bytes either.
    let _ = decode_frame(Bytes::copy_from_slice(stream));
    outcome
}

/// Calls [`FrameDecoder::decode`] once and asserts what it promises:
///
/// - `Ok(Some(frame))` consumed exactly one length-prefixed frame, and `frame` re-encodes to
///   those very bytes (the encoding is canonical) and decodes back equal.
/// - `Ok(None)` consumed nothing, and the buffer indeed holds no whole frame.
/// - `FrameTooLarge` and `FrameTooShort` consumed nothing; `FrameTooLarge` did not grow the
///   buffer's capacity.
/// - Any other error consumed exactly the one bad frame.
pub fn decode_checked(
    decoder: &mut FrameDecoder,
    buf: &mut BytesMut,
) -> Result<Option<Frame>, DecodeError> {
    let len_before = buf.len();
    let cap_before = buf.capacity();
    let announced = (len_before >= LENGTH_PREFIX_LEN)
        .then(|| u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize);
    // The bytes of the frame at the front, if it is all there, to compare with the re-encoding.
    let whole = announced
        .map(|len| LENGTH_PREFIX_LEN + len)
        .filter(|&total| total <= len_before)
        .map(|total| buf[..total].to_vec());

    let result = decoder.decode(buf);
    let consumed = len_before - buf.len();
    match &result {
        Ok(Some(frame)) => {
            let whole = whole.expect("a frame was decoded from an incomplete buffer");
            assert_eq!(consumed, whole.len(), "decode consumed more than one frame");
            assert_eq!(frame.encoded_len(), whole.len(), "encoded_len disagrees");
            let mut again = BytesMut::new();
            frame
                .encode(&mut again)
                .expect("a decoded frame must re-encode");
            assert_eq!(&again[..], &whole[..], "re-encoding differs from the input");
            let back = fuzz_decoder().decode(&mut again);
            assert_eq!(
                back.as_ref(),
                Ok(&Some(frame.clone())),
                "round trip changed it"
            );
            assert!(again.is_empty());
        }
        Ok(None) => {
            assert_eq!(consumed, 0, "Ok(None) consumed bytes");
            assert!(
                whole.is_none(),
                "Ok(None) although a whole frame was buffered"
            );
        }
        Err(DecodeError::FrameTooLarge { len, max }) => {
            assert_eq!(consumed, 0);
            assert_eq!(Some(*len), announced);
            assert_eq!(*max, decoder.max_frame_len());
            assert!(*len > *max);
            assert_eq!(buf.capacity(), cap_before, "FrameTooLarge grew the buffer");
        }
        Err(DecodeError::FrameTooShort { len, .. }) => {
            assert_eq!(consumed, 0);
            assert_eq!(Some(*len), announced);
        }
        Err(_) => {
            let whole = whole.expect("a body error from an incomplete buffer");
            assert_eq!(consumed, whole.len(), "a bad frame must be consumed whole");
        }
    }
    result
}

/// One step of the `decode_stream_ops` fuzz target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamOp {
    /// Append raw bytes to the decoder's buffer. Non-empty raw bytes make the stream
    /// unpredictable until the next decode error resets it.
    Feed(Vec<u8>),
    /// Append the encoding of [`FrameSpec::to_frame`].
    FeedValidFrame(FrameSpec),
    /// Poll the decoder once.
    Decode,
}

/// The raw material of one valid frame; [`to_frame`](Self::to_frame) clamps it to the protocol's
/// limits, so every spec yields a frame that encodes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FrameSpec {
    /// Frame kind, modulo 6: Request, Response, Cancel, Ping, Pong, GoAway.
    pub kind: u8,
    /// Request id, nonce or last request id.
    pub id: u64,
    /// MessagePack instead of JSON (Request, Response).
    pub msgpack: bool,
    /// Method name (Request); cut to [`MAX_METHOD_LEN`] bytes.
    pub method: String,
    /// Deadline in milliseconds, 0 for none (Request).
    pub deadline_ms: u32,
    /// Metadata entries (Request); cut to the metadata limits, later duplicates replace earlier.
    pub metadata: Vec<(String, String)>,
    /// Request payload, or the body of an Ok Response.
    pub payload: Vec<u8>,
    /// Status, an index into [`Status::ALL`] modulo its length (Response).
    pub status: u8,
    /// Error message of a failed Response, or GoAway reason.
    pub text: String,
}

impl FrameSpec {
    /// The frame this spec describes.
    pub fn to_frame(&self) -> Frame {
        let codec = if self.msgpack {
            Codec::MsgPack
        } else {
            Codec::Json
        };
        match self.kind % 6 {
            0 => {
                let mut metadata = Metadata::new();
                for (k, v) in self.metadata.iter().take(MAX_METADATA_ENTRIES) {
                    metadata.insert(
                        truncated(k, MAX_METADATA_KEY_LEN),
                        truncated(v, MAX_METADATA_VALUE_LEN),
                    );
                }
                Frame::Request(Request {
                    id: self.id,
                    codec,
                    method: truncated(&self.method, MAX_METHOD_LEN),
                    deadline: (self.deadline_ms != 0)
                        .then(|| Duration::from_millis(self.deadline_ms.into())),
                    metadata,
                    payload: Bytes::copy_from_slice(&self.payload),
                })
            }
            1 => {
                let status = Status::ALL[usize::from(self.status) % Status::ALL.len()];
                Frame::Response(if status == Status::Ok {
                    Response::ok(self.id, codec, Bytes::copy_from_slice(&self.payload))
                } else {
                    Response::error(self.id, codec, status, self.text.clone())
                })
            }
            2 => Frame::Cancel { id: self.id },
            3 => Frame::Ping { nonce: self.id },
            4 => Frame::Pong { nonce: self.id },
            _ => Frame::GoAway(GoAway {
                last_request_id: self.id,
                reason: self.text.clone(),
            }),
        }
    }
}

/// Body of the `decode_stream_ops` fuzz target: applies `ops` to one decoder and buffer, every
/// decode going through [`decode_checked`].
///
/// While only valid frames have been fed, a model predicts each decode exactly: the next fed
/// frame, or `FrameTooLarge` for one above [`FUZZ_MAX_FRAME_LEN`], or `Ok(None)` when none is
/// left. Raw bytes make the stream unpredictable; then only `decode_checked`'s checks apply.
/// After any decode error the connection is "reset" (new decoder, empty buffer, model in sync
/// again). At the end an in-sync stream must drain to exactly the predicted frames.
pub fn decode_stream_ops_target(ops: &[StreamOp]) {
    let mut decoder = fuzz_decoder();
    let mut buf = BytesMut::new();
    let mut expected: VecDeque<Result<Frame, DecodeError>> = VecDeque::new();
    let mut in_sync = true;
    for op in ops {
        match op {
            StreamOp::Feed(bytes) => {
                in_sync &= bytes.is_empty();
                buf.extend_from_slice(bytes);
            }
            StreamOp::FeedValidFrame(spec) => {
                let frame = spec.to_frame();
                let start = buf.len();
                frame
                    .encode(&mut buf)
                    .expect("FrameSpec::to_frame keeps frames within the limits");
                let len = buf.len() - start - LENGTH_PREFIX_LEN;
                expected.push_back(if len > FUZZ_MAX_FRAME_LEN {
                    Err(DecodeError::FrameTooLarge {
                        len,
                        max: FUZZ_MAX_FRAME_LEN,
                    })
                } else {
                    Ok(frame)
                });
            }
            StreamOp::Decode => {
                let got = decode_checked(&mut decoder, &mut buf);
                if in_sync {
                    match got.clone() {
                        Ok(Some(frame)) => assert_eq!(expected.pop_front(), Some(Ok(frame))),
                        Ok(None) => assert!(expected.is_empty(), "a fed frame went missing"),
                        Err(err) => assert_eq!(expected.pop_front(), Some(Err(err))),
                    }
                }
                if got.is_err() {
                    decoder = fuzz_decoder();
                    buf.clear();
                    expected.clear();
                    in_sync = true;
                }
            }
        }
    }
    if in_sync {
        while let Some(want) = expected.pop_front() {
            let got = decode_checked(&mut decoder, &mut buf).transpose();
            assert_eq!(got, Some(want));
            if got.is_some_and(|r| r.is_err()) {
                return;
            }
        }
        assert_eq!(decode_checked(&mut decoder, &mut buf), Ok(None));
        assert!(buf.is_empty(), "bytes left over after the last fed frame");
    }
}

fn fuzz_decoder() -> FrameDecoder {
    FrameDecoder::new(FUZZ_MAX_FRAME_LEN).expect("FUZZ_MAX_FRAME_LEN is a valid maximum")
}

/// `s` cut to at most `max` bytes, on a char boundary.
fn truncated(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}
