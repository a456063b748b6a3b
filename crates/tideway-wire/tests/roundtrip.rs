//! Property tests of the frame codec: every frame kind round-trips, streams survive arbitrary
//! chunking, and hostile or damaged input yields `Ok(None)` or a typed error, never a panic.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use proptest::collection::vec;
use proptest::prelude::*;
use tideway_wire::fuzzing::{self, FrameSpec, StreamOp};
use tideway_wire::{
    Codec, DEFAULT_MAX_FRAME_LEN, DecodeError, EncodeError, Frame, FrameDecoder, GoAway,
    LENGTH_PREFIX_LEN, MAX_FRAME_LEN_CEILING, MAX_METADATA_ENTRIES, MAX_METADATA_KEY_LEN,
    MAX_METADATA_VALUE_LEN, MAX_METHOD_LEN, Metadata, Request, Response, Status,
};

/// Cases per property: enough to cover every kind and status many times, few enough that the
/// suite stays fast in debug builds.
const CASES: u32 = 256;

/// A string of at most `max_bytes` UTF-8 bytes: usually short and of any chars, sometimes ASCII
/// filling the limit exactly.
fn string_up_to(max_bytes: usize) -> BoxedStrategy<String> {
    prop_oneof![
        8 => vec(any::<char>(), 0..=16.min(max_bytes / 4))
            .prop_map(|chars| chars.into_iter().collect::<String>()),
        1 => "[a-zA-Z0-9._/-]*".prop_map(move |s: String| s.chars().take(max_bytes).collect()),
        1 => Just("x".repeat(max_bytes)),
    ]
    .boxed()
}

fn codec() -> impl Strategy<Value = Codec> {
    prop_oneof![Just(Codec::Json), Just(Codec::MsgPack)]
}

/// Whole milliseconds, as the wire carries them, or none.
fn deadline() -> impl Strategy<Value = Option<Duration>> {
    proptest::option::of((1..=u64::from(u32::MAX)).prop_map(Duration::from_millis))
}

fn metadata() -> impl Strategy<Value = Metadata> {
    let entry = (
        string_up_to(MAX_METADATA_KEY_LEN),
        prop_oneof![
            9 => string_up_to(64),
            1 => string_up_to(MAX_METADATA_VALUE_LEN),
        ],
    );
    prop_oneof![
        4 => vec(entry.clone(), 0..=4),
        1 => vec(entry, 0..=MAX_METADATA_ENTRIES),
    ]
    .prop_map(|entries| {
        let mut metadata = Metadata::new();
        for (k, v) in entries {
            metadata.insert(k, v);
        }
        metadata
    })
}

fn payload() -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..256).prop_map(Bytes::from)
}

fn request() -> impl Strategy<Value = Request> {
    (
        any::<u64>(),
        codec(),
        string_up_to(MAX_METHOD_LEN),
        deadline(),
        metadata(),
        payload(),
    )
        .prop_map(|(id, codec, method, deadline, metadata, payload)| Request {
            id,
            codec,
            method,
            deadline,
            metadata,
            payload,
        })
}

/// An Ok response carries arbitrary bytes; any other status a UTF-8 message.
fn response() -> impl Strategy<Value = Response> {
    (
        any::<u64>(),
        codec(),
        proptest::sample::select(Status::ALL.to_vec()),
        payload(),
        string_up_to(256),
    )
        .prop_map(|(id, codec, status, payload, message)| {
            if status == Status::Ok {
                Response::ok(id, codec, payload)
            } else {
                Response::error(id, codec, status, message)
            }
        })
}

fn frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        request().prop_map(Frame::Request),
        response().prop_map(Frame::Response),
        any::<u64>().prop_map(|id| Frame::Cancel { id }),
        any::<u64>().prop_map(|nonce| Frame::Ping { nonce }),
        any::<u64>().prop_map(|nonce| Frame::Pong { nonce }),
        (any::<u64>(), string_up_to(256)).prop_map(|(last_request_id, reason)| {
            Frame::GoAway(GoAway {
                last_request_id,
                reason,
            })
        }),
    ]
}

fn encode(frame: &Frame) -> BytesMut {
    let mut buf = BytesMut::new();
    frame
        .encode(&mut buf)
        .expect("generated frames are within limits");
    assert_eq!(buf.len(), frame.encoded_len());
    buf
}

fn decoder() -> FrameDecoder {
    FrameDecoder::new(DEFAULT_MAX_FRAME_LEN).unwrap()
}

/// Decodes until `Ok(None)`, panicking on an error.
fn drain(decoder: &mut FrameDecoder, buf: &mut BytesMut, out: &mut Vec<Frame>) {
    while let Some(frame) = decoder.decode(buf).expect("valid stream") {
        out.push(frame);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn every_frame_round_trips(frame in frame()) {
        let mut buf = encode(&frame);
        prop_assert_eq!(decoder().decode(&mut buf), Ok(Some(frame)));
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn requests_round_trip(req in request()) {
        let frame = Frame::Request(req);
        let mut buf = encode(&frame);
        prop_assert_eq!(decoder().decode(&mut buf), Ok(Some(frame)));
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn responses_round_trip_for_every_status(resp in response()) {
        let frame = Frame::Response(resp);
        let mut buf = encode(&frame);
        prop_assert_eq!(decoder().decode(&mut buf), Ok(Some(frame)));
        prop_assert!(buf.is_empty());
    }

    /// The encoder never writes a Response the decoder rejects: with any status and any body
    /// bytes it either round-trips or refuses a non-UTF-8 error message up front.
    #[test]
    fn encoder_only_writes_responses_the_decoder_accepts(
        id in any::<u64>(),
        codec in codec(),
        status in proptest::sample::select(Status::ALL.to_vec()),
        body in prop_oneof![
            vec(any::<u8>(), 0..64),
            string_up_to(64).prop_map(String::into_bytes),
        ],
    ) {
        let utf8 = std::str::from_utf8(&body).is_ok();
        let frame = Frame::Response(Response { id, codec, status, body: Bytes::from(body) });
        let mut buf = BytesMut::new();
        match frame.encode(&mut buf) {
            Ok(()) => {
                prop_assert!(status == Status::Ok || utf8);
                prop_assert_eq!(decoder().decode(&mut buf), Ok(Some(frame)));
            }
            Err(err) => {
                prop_assert!(status != Status::Ok && !utf8);
                prop_assert_eq!(err, EncodeError::InvalidUtf8 { field: "error message" });
                prop_assert!(buf.is_empty());
            }
        }
    }

    /// A deadline that is not whole milliseconds comes back rounded up to the next whole
    /// millisecond (saturating at `u32::MAX` ms), never down and never to "no deadline".
    #[test]
    fn deadlines_round_up_to_whole_milliseconds(nanos in 0u64..=u64::from(u32::MAX) * 1_000_001) {
        let sent = Duration::from_nanos(nanos);
        let mut req = Request::new(1, "a/b", Codec::Json, Bytes::new());
        req.deadline = Some(sent);
        let mut buf = encode(&Frame::Request(req));
        let Ok(Some(Frame::Request(got))) = decoder().decode(&mut buf) else {
            panic!("the request did not decode");
        };
        let want_ms = nanos.div_ceil(1_000_000).clamp(1, u64::from(u32::MAX));
        prop_assert_eq!(got.deadline, Some(Duration::from_millis(want_ms)));
    }

    /// The decoder's maximum is inclusive: a frame of exactly the maximum decodes, one byte
    /// less of maximum refuses it without consuming anything.
    #[test]
    fn max_frame_len_is_an_inclusive_bound(frame in frame()) {
        let mut buf = encode(&frame);
        let len = buf.len() - LENGTH_PREFIX_LEN;
        let mut tight = FrameDecoder::new(len).unwrap();
        prop_assert_eq!(tight.decode(&mut buf.clone()), Ok(Some(frame)));
        if let Some(mut short) = FrameDecoder::new(len - 1) {
            let cap = buf.capacity();
            prop_assert_eq!(
                short.decode(&mut buf),
                Err(DecodeError::FrameTooLarge { len, max: len - 1 })
            );
            prop_assert_eq!(buf.len(), len + LENGTH_PREFIX_LEN);
            prop_assert_eq!(buf.capacity(), cap);
        }
    }

    /// Many frames back to back, fed in arbitrary chunk sizes, come out whole and in order.
    #[test]
    fn chunked_stream_yields_the_same_frames_in_order(
        frames in vec(frame(), 1..16),
        chunk_sizes in vec(1usize..64, 1..32),
    ) {
        let mut wire = BytesMut::new();
        for frame in &frames {
            frame.encode(&mut wire).unwrap();
        }
        let mut dec = decoder();
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        let mut rest = &wire[..];
        for size in chunk_sizes.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (chunk, tail) = rest.split_at((*size).min(rest.len()));
            buf.extend_from_slice(chunk);
            rest = tail;
            drain(&mut dec, &mut buf, &mut got);
        }
        prop_assert_eq!(got, frames);
        prop_assert!(buf.is_empty());
    }

    /// Arbitrary bytes, fed in one go or byte by byte, never panic; the checks of
    /// `fuzzing::decode_checked` hold at every step.
    #[test]
    fn arbitrary_bytes_never_panic(data in vec(any::<u8>(), 0..512)) {
        fuzzing::decode_frame_target(&data);
        let _ = tideway_wire::decode_frame(Bytes::from(data));
    }

    /// Arbitrary bytes behind a plausible header, so the body parsers see more than the header
    /// checks let through.
    #[test]
    fn arbitrary_bodies_never_panic(
        kind in 1u8..=6,
        codec in 0u8..=2,
        id in any::<u64>(),
        body in vec(any::<u8>(), 0..128),
    ) {
        let mut wire = Vec::new();
        wire.extend_from_slice(&(12 + body.len() as u32).to_be_bytes());
        wire.extend_from_slice(&[1, kind, 0, codec]);
        wire.extend_from_slice(&id.to_be_bytes());
        wire.extend_from_slice(&body);
        let mut buf = BytesMut::from(&wire[..]);
        let _ = fuzzing::decode_checked(&mut decoder(), &mut buf);
    }

    /// A length prefix above the maximum is refused before anything is allocated or consumed,
    /// whatever follows it.
    #[test]
    fn oversized_length_prefix_is_refused_without_growing(
        max in 12usize..=MAX_FRAME_LEN_CEILING,
        excess in 1u64..=u64::from(u32::MAX),
        tail in vec(any::<u8>(), 0..64),
    ) {
        let len = (max as u64 + excess).min(u64::from(u32::MAX)) as u32;
        prop_assume!(len as usize > max);
        let mut buf = BytesMut::with_capacity(4 + tail.len());
        buf.extend_from_slice(&len.to_be_bytes());
        buf.extend_from_slice(&tail);
        let (len_before, cap_before) = (buf.len(), buf.capacity());
        let mut dec = FrameDecoder::new(max).unwrap();
        prop_assert_eq!(
            dec.decode(&mut buf),
            Err(DecodeError::FrameTooLarge { len: len as usize, max })
        );
        prop_assert_eq!(buf.len(), len_before);
        prop_assert_eq!(buf.capacity(), cap_before);
    }

    /// Any proper prefix of a valid encoding is "need more bytes", and consumes nothing.
    #[test]
    fn truncated_encoding_is_incomplete_not_an_error(
        frame in frame(),
        cut in any::<proptest::sample::Index>(),
    ) {
        let whole = encode(&frame);
        let at = cut.index(whole.len());
        let mut buf = BytesMut::from(&whole[..at]);
        prop_assert_eq!(decoder().decode(&mut buf), Ok(None));
        prop_assert_eq!(buf.len(), at);
    }

    /// Flipping bits of one byte gives a frame, `Ok(None)` or a typed error; never a panic, and
    /// whatever decodes re-encodes to the very same bytes.
    #[test]
    fn corrupting_one_byte_never_panics(
        frame in frame(),
        at in any::<proptest::sample::Index>(),
        flip in 1u8..=255,
    ) {
        let mut buf = encode(&frame);
        let at = at.index(buf.len());
        buf[at] ^= flip;
        let _ = fuzzing::decode_checked(&mut decoder(), &mut buf);
    }

    /// The state-machine fuzz target, driven by proptest: valid frames interleaved with polls
    /// decode exactly as fed, raw bytes never break the decoder's promises.
    #[test]
    fn stream_ops_keep_the_decoder_consistent(ops in vec(stream_op(), 0..48)) {
        fuzzing::decode_stream_ops_target(&ops);
    }
}

fn frame_spec() -> impl Strategy<Value = FrameSpec> {
    (
        any::<u8>(),
        any::<u64>(),
        any::<bool>(),
        string_up_to(64),
        prop_oneof![Just(0u32), any::<u32>()],
        vec((string_up_to(16), string_up_to(64)), 0..4),
        vec(any::<u8>(), 0..64),
        any::<u8>(),
        string_up_to(64),
    )
        .prop_map(
            |(kind, id, msgpack, method, deadline_ms, metadata, payload, status, text)| FrameSpec {
                kind,
                id,
                msgpack,
                method,
                deadline_ms,
                metadata,
                payload,
                status,
                text,
            },
        )
}

fn stream_op() -> impl Strategy<Value = StreamOp> {
    prop_oneof![
        1 => vec(any::<u8>(), 0..24).prop_map(StreamOp::Feed),
        4 => frame_spec().prop_map(StreamOp::FeedValidFrame),
        4 => Just(StreamOp::Decode),
    ]
}

/// A frame above the fuzz decoder's maximum is predicted as `FrameTooLarge` and resets the
/// model; the frames fed after the reset decode normally.
#[test]
fn stream_ops_predict_frame_too_large_and_recover() {
    let big = FrameSpec {
        kind: 1,
        payload: vec![7; fuzzing::FUZZ_MAX_FRAME_LEN],
        ..FrameSpec::default()
    };
    let ping = FrameSpec {
        kind: 3,
        id: 42,
        ..FrameSpec::default()
    };
    fuzzing::decode_stream_ops_target(&[
        StreamOp::FeedValidFrame(ping.clone()),
        StreamOp::FeedValidFrame(big),
        StreamOp::Decode,
        StreamOp::Decode,
        StreamOp::FeedValidFrame(ping),
        StreamOp::Decode,
        StreamOp::Decode,
    ]);
}
