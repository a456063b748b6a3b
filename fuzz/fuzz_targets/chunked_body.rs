//! The HTTP upstream client's chunked-body decoder fed bytes in pieces; the body and its checks
//! are `tideway_http_upstream::fuzzing::chunked_body_target`, which
//! `crates/tideway-http-upstream/tests/chunked_corpus.rs` also runs over the seed corpus.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tideway_http_upstream::fuzzing::chunked_body_target(data);
});
