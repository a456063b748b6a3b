//! Bodies of the gateway's fuzz targets that need its internals (`fuzz/fuzz_targets/
//! h1_request.rs`), public but hidden so that the cargo-fuzz binaries and the corpus replay test
//! (`tests/h1_corpus.rs`) run exactly the same code. Every check is an `assert!`: a panic is what
//! the fuzzer reports as a crash. Not an API.

use bytes::BytesMut;
use http_body::Body as _;

use crate::h1::{MAX_WHOLE_BODY, Parsed, parse_request};

/// Largest head the target accepts (small, so that the limit is reached often).
const FUZZ_MAX_HEAD: usize = 512;

/// The HTTP/1.1 fast-path reader fed the input in chunks, as a socket would: the first byte is
/// the chunk size (0 = all at once), the rest is the bytes. After each chunk the buffer is read
/// until it holds no whole request. Checked: no panic; a request takes exactly its head and
/// body from the front of the buffer, within the limits, with an origin-form path; anything
/// else leaves the buffer as it was (hyper would get every byte), and after a fallback or a bad
/// request nothing more is read (the connection is no longer the fast path's).
pub fn h1_request_target(data: &[u8]) {
    let Some((&chunk, input)) = data.split_first() else {
        return;
    };
    let chunk = if chunk == 0 {
        input.len().max(1)
    } else {
        usize::from(chunk)
    };
    let mut buf = BytesMut::new();
    for piece in input.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            let before = buf.clone();
            match parse_request(&mut buf, FUZZ_MAX_HEAD, MAX_WHOLE_BODY) {
                Parsed::Partial => {
                    assert_eq!(buf, before, "a partial read takes nothing");
                    assert!(
                        buf.len() < FUZZ_MAX_HEAD + MAX_WHOLE_BODY,
                        "the buffer is bounded"
                    );
                    break;
                }
                Parsed::Fallback(_) => {
                    assert_eq!(buf, before, "hyper gets every byte");
                    return;
                }
                Parsed::BadRequest => return,
                Parsed::Request { request, .. } => {
                    let taken = before.len() - buf.len();
                    assert!(taken > 0, "a request takes its bytes");
                    assert_eq!(&before[taken..], &buf[..], "only from the front");
                    let body = request.body().size_hint().exact().unwrap_or(0) as usize;
                    assert!(body <= MAX_WHOLE_BODY);
                    assert!(taken - body <= FUZZ_MAX_HEAD, "head within its limit");
                    assert!(request.uri().path().starts_with('/'));
                    assert_eq!(request.version(), http::Version::HTTP_11);
                }
            }
        }
    }
}
