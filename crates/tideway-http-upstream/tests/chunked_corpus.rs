//! Replays the seed corpus of the `chunked_body` fuzz target (`fuzz/corpus/chunked_body/`)
//! through the target's own body, at every piece size from 1 to 16, so `cargo test` runs every
//! seed (and whatever inputs a fuzzing run added there) through exactly the code the fuzzer runs.

use std::path::PathBuf;

/// Fewer files than this means the corpus moved or was lost.
const MIN_CORPUS_FILES: usize = 10;

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/chunked_body")
}

#[test]
fn chunked_body_corpus_replays() {
    let seeds = tideway_testkit::corpus::seeds(&corpus_dir(), MIN_CORPUS_FILES);
    tideway_testkit::corpus::replay_in_pieces(
        &seeds,
        tideway_http_upstream::fuzzing::chunked_body_target,
    );
}

/// Each seed with a few bytes flipped, inserted, removed or duplicated (see
/// `tideway_testkit::corpus::mutate_seeds`), through the target.
#[test]
fn mutated_seeds_keep_the_invariants() {
    let seeds = tideway_testkit::corpus::seeds(&corpus_dir(), MIN_CORPUS_FILES);
    tideway_testkit::corpus::mutate_seeds(
        &seeds,
        4000,
        tideway_http_upstream::fuzzing::chunked_body_target,
    );
}
