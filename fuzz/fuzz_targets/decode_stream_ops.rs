//! A state-machine target: an arbitrary sequence of raw feeds, valid frames and decode polls on
//! one `FrameDecoder`, checked against a model of what each poll must return. The model lives in
//! `tideway_wire::fuzzing::decode_stream_ops_target` (also driven by proptest in
//! `crates/tideway-wire/tests/roundtrip.rs`); this file only derives `Arbitrary` for its input.

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use tideway_wire::fuzzing::{FrameSpec, StreamOp, decode_stream_ops_target};

#[derive(Debug, Arbitrary)]
enum Op {
    Feed(Vec<u8>),
    FeedValidFrame(Spec),
    Decode,
}

/// Mirrors `FrameSpec`, which has no `Arbitrary` impl so that tideway-wire needs no
/// fuzz-only dependency.
#[derive(Debug, Arbitrary)]
struct Spec {
    kind: u8,
    id: u64,
    msgpack: bool,
    method: String,
    deadline_ms: u32,
    metadata: Vec<(String, String)>,
    payload: Vec<u8>,
    status: u8,
    text: String,
}

impl From<Op> for StreamOp {
    fn from(op: Op) -> StreamOp {
        match op {
            Op::Feed(bytes) => StreamOp::Feed(bytes),
            Op::FeedValidFrame(s) => StreamOp::FeedValidFrame(FrameSpec {
                kind: s.kind,
                id: s.id,
                msgpack: s.msgpack,
                method: s.method,
                deadline_ms: s.deadline_ms,
                metadata: s.metadata,
                payload: s.payload,
                status: s.status,
                text: s.text,
            }),
            Op::Decode => StreamOp::Decode,
        }
    }
}

fuzz_target!(|ops: Vec<Op>| {
    let ops: Vec<StreamOp> = ops.into_iter().map(StreamOp::from).collect();
    decode_stream_ops_target(&ops);
});
