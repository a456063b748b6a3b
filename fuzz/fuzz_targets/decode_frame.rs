//! Arbitrary bytes into `FrameDecoder`, in chunks whose size the first byte picks. Every decoded
//! frame must re-encode to the same bytes and decode back equal; see
//! `tideway_wire::fuzzing::decode_frame_target`, which `cargo test` also runs over the corpus.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tideway_wire::fuzzing::decode_frame_target(data);
});
