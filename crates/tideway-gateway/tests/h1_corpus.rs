//! Replays the seed corpus of the `h1_request` fuzz target (`fuzz/corpus/h1_request/`) through
//! the target's own body, so `cargo test` runs every seed (and whatever inputs a fuzzing run
//! added there) through exactly the code the fuzzer runs.

use tideway_testkit::corpus::{fuzz_seeds, mutate_seeds, replay_in_pieces};

#[test]
fn h1_request_corpus_replays() {
    replay_in_pieces(
        &fuzz_seeds("h1_request"),
        tideway_gateway::fuzzing::h1_request_target,
    );
}

/// Each seed with a few bytes flipped, inserted, removed or duplicated (see
/// `tideway_testkit::corpus::mutate_seeds`), through the target.
#[test]
fn mutated_seeds_keep_the_invariants() {
    mutate_seeds(
        &fuzz_seeds("h1_request"),
        4000,
        tideway_gateway::fuzzing::h1_request_target,
    );
}
