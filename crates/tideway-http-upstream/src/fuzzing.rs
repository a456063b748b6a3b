//! Bodies of this crate's fuzz targets (`fuzz/fuzz_targets/chunked_body.rs`), public but hidden
//! so that the cargo-fuzz binary and the corpus replay test (`tests/chunked_corpus.rs`) run
//! exactly the same code. Every check is an `assert!`: a panic is what the fuzzer reports as a
//! crash. Not an API.

use bytes::{Bytes, BytesMut};

use crate::chunked::{ChunkedDecoder, ChunkedError, Event};

/// Trailer limits of the target (small, so that they are reached often).
const FUZZ_MAX_TRAILER_BYTES: usize = 256;
const FUZZ_MAX_TRAILERS: usize = 4;

/// What decoding a whole input gave: the data, and how it ended.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    data: Vec<u8>,
    end: Result<bool, ChunkedError>,
}

/// Feeds `input` to a fresh decoder `chunk` bytes at a time, decoding after each piece until
/// it needs more. `end`: `Ok(true)` complete, `Ok(false)` still incomplete, or the error.
fn decode_in_pieces(input: &[u8], chunk: usize) -> Outcome {
    let mut decoder = ChunkedDecoder::new(FUZZ_MAX_TRAILER_BYTES, FUZZ_MAX_TRAILERS);
    let mut buf = BytesMut::new();
    let mut data = Vec::new();
    for piece in input.chunks(chunk.max(1)) {
        buf.extend_from_slice(piece);
        loop {
            match decoder.decode(&mut buf) {
                Ok(None) => break,
                Ok(Some(Event::Data(bytes))) => {
                    assert!(!bytes.is_empty(), "data events are never empty");
                    data.extend_from_slice(&bytes);
                }
                Ok(Some(Event::Trailers(_) | Event::End)) => {
                    assert!(decoder.is_done());
                    return Outcome {
                        data,
                        end: Ok(true),
                    };
                }
                Err(e) => return Outcome { data, end: Err(e) },
            }
        }
    }
    Outcome {
        data,
        end: Ok(false),
    }
}

/// The chunked decoder fed the input in pieces: the first byte is the piece size (0 = all at
/// once), the rest is the body. Checked: no panic, data events never empty, and the same data
/// and the same ending (complete, incomplete or which error) whatever the pieces, compared with
/// the whole input at once. A body re-encoded from the decoded data decodes back to it.
pub fn chunked_body_target(data: &[u8]) {
    let Some((&chunk, input)) = data.split_first() else {
        return;
    };
    let whole = decode_in_pieces(input, input.len());
    let pieces = decode_in_pieces(input, usize::from(chunk).max(1));
    assert_eq!(whole, pieces, "the split changed the result");
    // Round trip: the decoded data as one chunk and a last chunk.
    let (line, len) = crate::chunked::encode_size_line(whole.data.len());
    let mut encoded = Vec::new();
    if !whole.data.is_empty() {
        encoded.extend_from_slice(&line[..len]);
        encoded.extend_from_slice(&whole.data);
        encoded.extend_from_slice(b"\r\n");
    }
    encoded.extend_from_slice(b"0\r\n\r\n");
    let again = decode_in_pieces(&encoded, 7);
    assert_eq!(again.end, Ok(true), "a re-encoded body is complete");
    assert_eq!(Bytes::from(again.data), Bytes::from(whole.data));
}
