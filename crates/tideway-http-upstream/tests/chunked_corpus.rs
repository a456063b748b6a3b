//! Replays the seed corpus of the `chunked_body` fuzz target (`fuzz/corpus/chunked_body/`)
//! through the target's own body, at every piece size from 1 to 16, so `cargo test` runs every
//! seed (and whatever inputs a fuzzing run added there) through exactly the code the fuzzer runs.

use tideway_testkit::corpus::{fuzz_seeds, mutate_seeds, replay_in_pieces};

#[test]
fn chunked_body_corpus_replays() {
    replay_in_pieces(
        &fuzz_seeds("chunked_body"),
        tideway_http_upstream::fuzzing::chunked_body_target,
    );
}

/// Each seed with a few bytes flipped, inserted, removed or duplicated (see
/// `tideway_testkit::corpus::mutate_seeds`), through the target.
#[test]
fn mutated_seeds_keep_the_invariants() {
    mutate_seeds(
        &fuzz_seeds("chunked_body"),
        4000,
        tideway_http_upstream::fuzzing::chunked_body_target,
    );
}
