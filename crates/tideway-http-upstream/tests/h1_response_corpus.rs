//! Replays the seed corpus of the `h1_response` fuzz target (`fuzz/corpus/h1_response/`)
//! through the target's own body, at every piece size from 1 to 16, so `cargo test` runs every
//! seed (and whatever inputs a fuzzing run added there) through exactly the code the fuzzer runs.

use std::path::Path;

use tideway_http_upstream::fuzzing::h1_response_summary;
use tideway_testkit::corpus::{fuzz_seeds, mutate_seeds, replay_in_pieces};

#[test]
fn h1_response_corpus_replays() {
    replay_in_pieces(
        &fuzz_seeds("h1_response"),
        tideway_http_upstream::fuzzing::h1_response_target,
    );
}

/// Each seed with a few bytes flipped, inserted, removed or duplicated (see
/// `tideway_testkit::corpus::mutate_seeds`), through the target.
#[test]
fn mutated_seeds_keep_the_invariants() {
    mutate_seeds(
        &fuzz_seeds("h1_response"),
        4000,
        tideway_http_upstream::fuzzing::h1_response_target,
    );
}

/// What the client makes of the named seeds (their first byte, the piece size, left off).
#[test]
fn named_seeds_mean_what_their_names_say() {
    let expected = [
        ("ok_with_length", "200 Length(7) keep body@70"),
        ("chunked", "200 Chunked keep body@47"),
        ("chunked_and_length", "200 Chunked close body@72"),
        ("not_chunked_last", "200 Eof close body@53"),
        ("until_close_http10", "200 Eof close body@32"),
        ("connection_close", "503 Length(0) close body@86"),
        ("interim_then_final", "201 Length(2) keep body@125"),
        (
            "switching_protocols",
            "refused: upstream answered 101 Switching Protocols to a request that did not ask to switch",
        ),
        ("no_content", "204 Empty keep body@47"),
        ("not_modified", "304 Empty keep body@40"),
        ("length_list_same", "200 Length(5) keep body@60"),
        (
            "length_list_conflict",
            "200 refused: invalid content-length in response",
        ),
        (
            "length_not_a_number",
            "200 refused: invalid content-length in response",
        ),
        ("bare_lf", "200 Length(2) keep body@35"),
        (
            "too_many_fields",
            "refused: response head has more than 8 header fields",
        ),
        (
            "head_too_large",
            "refused: response head larger than 512 bytes",
        ),
        ("bad_status", "refused: malformed response head: status"),
        ("http2_version", "refused: malformed response head: version"),
        ("incomplete", "incomplete"),
        (
            "control_byte_in_value",
            "refused: malformed response head: header value",
        ),
        ("many_interim", "refused: more than 16 interim responses"),
    ];
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/h1_response");
    for (name, meaning) in expected {
        let seed = std::fs::read(dir.join(name)).unwrap_or_else(|e| panic!("seed {name}: {e}"));
        assert_eq!(h1_response_summary(&seed[1..]), meaning, "seed {name}");
    }
}
