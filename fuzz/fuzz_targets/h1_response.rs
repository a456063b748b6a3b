//! The HTTP upstream client's response-head reader fed an upstream's bytes in pieces; the body
//! and its checks are `tideway_http_upstream::fuzzing::h1_response_target`, which
//! `crates/tideway-http-upstream/tests/h1_response_corpus.rs` also runs over the seed corpus.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tideway_http_upstream::fuzzing::h1_response_target(data);
});
