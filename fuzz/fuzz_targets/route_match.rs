//! `tideway_gateway::RouteTable` built from a fixed or fuzzed set of templates, then `lookup` of
//! an arbitrary method and path; the body and its checks are in `fuzz/targets/gateway.rs`, which
//! `crates/tideway-gateway/tests/fuzz_corpus.rs` also runs over the seed corpus.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../targets/gateway.rs"]
mod gateway;

fuzz_target!(|data: &[u8]| {
    gateway::route_match(data);
});
