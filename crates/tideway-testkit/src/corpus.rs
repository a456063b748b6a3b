//! Fuzz seed corpora in `cargo test`: replay every file of a corpus folder, and a small
//! mutation fuzzer over the seeds (fixed-seed xorshift, so every run tries the same inputs).
//! The real fuzzer (cargo-fuzz, nightly) explores far more; this keeps the seeds and their
//! obvious neighbours checked on every test run.

use std::path::Path;

/// Fewer files than this in a fuzz target's corpus means the corpus moved or was lost.
const MIN_FUZZ_CORPUS_FILES: usize = 10;

/// The seeds of fuzz target `target`: the files of `fuzz/corpus/<target>/` at the workspace
/// root, as [`seeds`] reads them (at least 10).
pub fn fuzz_seeds(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    seeds(&dir, MIN_FUZZ_CORPUS_FILES)
}

/// Bytes a mutation prefers: the separators and digits of the text protocols we parse.
const INTERESTING: &[u8] = b"\r\n :;0123456789abcdefxX/?-\x00\x7f\xff";

/// The files of `dir`, sorted by content (a stable order whatever the file system's).
///
/// # Panics
/// When the folder cannot be read, or holds fewer than `min_files` files (a corpus that moved
/// or was lost, not one that shrank on purpose).
pub fn seeds(dir: &Path, min_files: usize) -> Vec<Vec<u8>> {
    let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("corpus folder {}: {e}", dir.display()))
        .map(|entry| std::fs::read(entry.expect("a corpus entry").path()).expect("a seed"))
        .collect();
    seeds.sort();
    assert!(
        seeds.len() >= min_files,
        "only {} files in {}",
        seeds.len(),
        dir.display()
    );
    seeds
}

/// Calls `target` on every seed as it is, then with its first byte (the piece size of the
/// targets that feed their input in pieces) set to each of 1 to 16: the same bytes arriving in
/// other pieces.
pub fn replay_in_pieces(seeds: &[Vec<u8>], mut target: impl FnMut(&[u8])) {
    for seed in seeds {
        target(seed);
        if seed.is_empty() {
            continue;
        }
        let mut split = seed.clone();
        for piece in 1..=16u8 {
            split[0] = piece;
            target(&split);
        }
    }
}

/// Calls `target` on `rounds` inputs, each a seed with one to four mutations: a byte replaced,
/// inserted or removed, or a run of up to 16 bytes duplicated.
pub fn mutate_seeds(seeds: &[Vec<u8>], rounds: usize, mut target: impl FnMut(&[u8])) {
    assert!(!seeds.is_empty(), "no seeds to mutate");
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for round in 0..rounds {
        let mut input = seeds[round % seeds.len()].clone();
        for _ in 0..1 + next() % 4 {
            let at = if input.is_empty() {
                0
            } else {
                (next() as usize) % input.len()
            };
            let byte = if next() % 2 == 0 {
                INTERESTING[(next() as usize) % INTERESTING.len()]
            } else {
                next() as u8
            };
            match next() % 4 {
                0 if !input.is_empty() => input[at] = byte,
                1 => input.insert(at, byte),
                2 if !input.is_empty() => {
                    input.remove(at);
                }
                _ => {
                    let end = (at + 1 + (next() as usize) % 16).min(input.len());
                    let copy = input[at..end].to_vec();
                    input.splice(at..at, copy);
                }
            }
        }
        target(&input);
    }
}
