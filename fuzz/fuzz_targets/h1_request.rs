//! The gateway's HTTP/1.1 fast-path reader fed bytes in chunks; the body and its checks are
//! `tideway_gateway::fuzzing::h1_request_target`, which `crates/tideway-gateway/tests/
//! h1_corpus.rs` also runs over the seed corpus.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tideway_gateway::fuzzing::h1_request_target(data);
});
