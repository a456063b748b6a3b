//! Replays the seed corpus of the `h1_request` fuzz target (`fuzz/corpus/h1_request/`) through
//! the target's own body, so `cargo test` runs every seed (and whatever inputs a fuzzing run
//! added there) through exactly the code the fuzzer runs.

use std::path::PathBuf;

/// Fewer files than this means the corpus moved or was lost.
const MIN_CORPUS_FILES: usize = 10;

#[test]
fn h1_request_corpus_replays() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/h1_request");
    let mut replayed = 0;
    for entry in std::fs::read_dir(&dir).expect("the h1_request corpus folder") {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        tideway_gateway::fuzzing::h1_request_target(&data);
        // Every chunk size too: the same bytes arriving in other pieces.
        for chunk in 1..=16u8 {
            let mut split = data.clone();
            if let Some(first) = split.first_mut() {
                *first = chunk;
            }
            tideway_gateway::fuzzing::h1_request_target(&split);
        }
        replayed += 1;
    }
    assert!(
        replayed >= MIN_CORPUS_FILES,
        "only {replayed} files in {}",
        dir.display()
    );
}

/// Each seed with a few bytes flipped, inserted, removed or duplicated (see
/// `tideway_testkit::corpus::mutate_seeds`), through the target.
#[test]
fn mutated_seeds_keep_the_invariants() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/h1_request");
    let seeds = tideway_testkit::corpus::seeds(&dir, MIN_CORPUS_FILES);
    tideway_testkit::corpus::mutate_seeds(
        &seeds,
        4000,
        tideway_gateway::fuzzing::h1_request_target,
    );
}
