//! Bodies of this crate's fuzz targets (`fuzz/fuzz_targets/chunked_body.rs` and
//! `h1_response.rs`), public but hidden so that the cargo-fuzz binaries and the corpus replay
//! tests (`tests/chunked_corpus.rs`, `tests/h1_response_corpus.rs`) run exactly the same code.
//! Every check is an `assert!`: a panic is what the fuzzer reports as a crash. Not an API.

use bytes::{Bytes, BytesMut};
use http::{Method, StatusCode, Version};

use crate::chunked::{ChunkedDecoder, ChunkedError, Event};
use crate::h1::{HeadError, ResponseFraming, response_framing, take_final_head};

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

/// Head limits of the `h1_response` target (small, so that they are reached often).
const FUZZ_MAX_HEAD: usize = 512;
const FUZZ_MAX_FIELDS: usize = 8;

/// What reading a response head gave, compared across splits.
#[derive(Debug, PartialEq, Eq)]
enum HeadOutcome {
    /// The final (non-1xx) head: its start line, fields in order, how its body is framed after
    /// a GET and after a HEAD, and where in the input its body starts.
    Head {
        status: StatusCode,
        version: Version,
        fields: Vec<(String, Vec<u8>)>,
        framing_get: Result<(ResponseFraming, bool), HeadError>,
        framing_head: Result<(ResponseFraming, bool), HeadError>,
        body_starts_at: usize,
    },
    /// The input ended before a whole head.
    Incomplete,
    /// Refused, and why.
    Refused(HeadError),
}

/// Reads a response head as the HTTP/1.1 client does (`client::exchange`, through
/// [`take_final_head`]), with the target's limits: take what has arrived, else read more,
/// here at most `piece` bytes of `input` and never past the head limit.
fn read_head(input: &[u8], piece: usize) -> HeadOutcome {
    let mut buf = BytesMut::new();
    let mut fed = 0;
    let mut interim = 0;
    loop {
        let before = buf.len();
        match take_final_head(
            &mut buf,
            &mut interim,
            FUZZ_MAX_HEAD,
            FUZZ_MAX_FIELDS,
            false,
        ) {
            Ok(Some(head)) => {
                assert!(buf.len() < before, "a head takes its own bytes");
                let fields = head
                    .headers()
                    .iter()
                    .map(|(name, value)| {
                        let value = value.as_bytes();
                        assert!(
                            value.iter().all(|&b| b == b'\t' || b >= 0x20 && b != 0x7f),
                            "a field value holds no control bytes: {value:?}"
                        );
                        (name.as_str().to_owned(), value.to_vec())
                    })
                    .collect();
                let framing_get = response_framing(&Method::GET, &head);
                let framing_head = response_framing(&Method::HEAD, &head);
                if let Ok((framing, _)) = framing_head {
                    assert_eq!(framing, ResponseFraming::Empty, "a HEAD answer has no body");
                }
                if let Ok((ResponseFraming::Eof, keep_alive)) = framing_get {
                    assert!(!keep_alive, "a body delimited by close ends its connection");
                }
                return HeadOutcome::Head {
                    status: head.status(),
                    version: head.version(),
                    fields,
                    framing_get,
                    framing_head,
                    body_starts_at: fed - buf.len(),
                };
            }
            Ok(None) => {
                assert!(buf.len() <= before, "reading a head adds nothing");
                assert!(buf.len() < FUZZ_MAX_HEAD, "the head limit holds");
            }
            Err(e) => return HeadOutcome::Refused(e),
        }
        if fed == input.len() {
            return HeadOutcome::Incomplete;
        }
        let room = FUZZ_MAX_HEAD - buf.len();
        let n = piece.max(1).min(room).min(input.len() - fed);
        buf.extend_from_slice(&input[fed..fed + n]);
        fed += n;
    }
}

/// The HTTP/1.1 client's response-head reader fed an upstream's bytes in pieces: the first
/// byte is the piece size (0 = as much as the head limit allows at once), the rest is what the
/// upstream sent. Checked: no panic; a head takes bytes from the front and reading never adds
/// any; the head limit holds; field values hold no control bytes; a HEAD answer has no body and
/// a body delimited by close ends the connection; and the same outcome (head, fields, framing, where the body
/// starts; or which refusal; or incomplete) whatever the pieces, against reading all at once.
pub fn h1_response_target(data: &[u8]) {
    let Some((&piece, input)) = data.split_first() else {
        return;
    };
    let whole = read_head(input, FUZZ_MAX_HEAD);
    if piece != 0 {
        let pieces = read_head(input, usize::from(piece));
        assert_eq!(whole, pieces, "the split changed the result");
    }
}

/// A short account of what the client makes of `input` as an upstream's answer (read all at
/// once): `"<status> <framing after GET> keep|close body@<offset>"`, `"incomplete"` or
/// `"refused: <reason>"`. For tests that pin named seeds to their meaning.
pub fn h1_response_summary(input: &[u8]) -> String {
    match read_head(input, FUZZ_MAX_HEAD) {
        HeadOutcome::Head {
            status,
            framing_get,
            body_starts_at,
            ..
        } => match framing_get {
            Ok((framing, keep_alive)) => format!(
                "{} {framing:?} {} body@{body_starts_at}",
                status.as_u16(),
                if keep_alive { "keep" } else { "close" }
            ),
            Err(e) => format!("{} refused: {e}", status.as_u16()),
        },
        HeadOutcome::Incomplete => "incomplete".to_owned(),
        HeadOutcome::Refused(e) => format!("refused: {e}"),
    }
}
