//! `tideway_gateway::binding::bind` on path parameters, a query string and a body decoded from
//! arbitrary bytes; the body and its checks are in `fuzz/targets/gateway.rs`, which
//! `crates/tideway-gateway/tests/fuzz_corpus.rs` also runs over the seed corpus.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../targets/gateway.rs"]
mod gateway;

fuzz_target!(|data: &[u8]| {
    gateway::bind_payload(data);
});
