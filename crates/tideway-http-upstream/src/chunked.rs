//! `Transfer-Encoding: chunked` (RFC 9112 §7.1), sans IO: bytes in, events out. No socket, no
//! clock, so it can be unit-tested byte by byte and fuzzed.
//!
//! # Order of calls
//!
//! The reader appends what it read to a `BytesMut` and calls [`ChunkedDecoder::decode`] with it
//! until it returns `Ok(None)` (more bytes needed: read, append, call again). Each call takes
//! what it decodes from the front of the buffer; bytes it cannot use yet (half a size line) stay
//! there. Data comes out as `Bytes` cut from the buffer, so it is never copied.
//!
//! # States
//!
//! ```text
//!          size > 0               all data           CRLF
//!   Size ───────────▶ Data(n) ───────────▶ DataEnd ──────▶ Size
//!     │ size == 0
//!     ▼                  empty line, or fields + empty line
//!   Trailers ──────────────────────────────────────────────▶ Done
//! ```
//!
//! Every state accepts any split of its input: one byte at a time gives the same events as the
//! whole body at once (data may come in more, smaller pieces).

use bytes::{Buf, Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};

/// Longest chunk-size line accepted, extensions and CRLF included. Sizes need at most 16 hex
/// digits; the rest is room for extensions, which nothing in this crate reads. hyper accepts any
/// length but counts extension bytes; a single bounded line keeps the buffer bounded too.
pub(crate) const MAX_SIZE_LINE: usize = 4 * 1024;
/// Most chunk-extension bytes accepted over a whole body: hyper's limit
/// (`CHUNKED_EXTENSIONS_LIMIT`), which stops an upstream from making us parse megabytes of
/// extensions around one-byte chunks.
pub(crate) const MAX_EXTENSION_BYTES: usize = 16 * 1024;
/// Most hex digits in a chunk size: 16 digits hold any `u64`.
const MAX_SIZE_DIGITS: usize = 16;

/// What [`ChunkedDecoder::decode`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Event {
    /// Some of a chunk's data (never empty).
    Data(Bytes),
    /// The trailer fields after the last chunk; the body is complete.
    Trailers(HeaderMap),
    /// The last chunk and an empty trailer section; the body is complete.
    End,
}

/// Why a chunked body is malformed. The connection cannot be used after any of these.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum ChunkedError {
    /// The chunk-size line is not hex digits followed by optional extensions.
    #[error("invalid chunk size line")]
    InvalidSize,
    /// The chunk size does not fit in 64 bits.
    #[error("chunk size too large")]
    SizeOverflow,
    /// The chunk-size line is longer than [`MAX_SIZE_LINE`].
    #[error("chunk size line longer than {MAX_SIZE_LINE} bytes")]
    SizeLineTooLong,
    /// More than [`MAX_EXTENSION_BYTES`] of chunk extensions in one body.
    #[error("more than {MAX_EXTENSION_BYTES} bytes of chunk extensions")]
    ExtensionsTooLong,
    /// A chunk's data is not followed by CRLF.
    #[error("chunk data not followed by CRLF")]
    MissingCrlf,
    /// The trailer section is not valid header fields.
    #[error("invalid trailer section")]
    InvalidTrailers,
    /// The trailer section is longer than the decoder's limit, or has too many fields.
    #[error("trailer section too large")]
    TrailersTooLarge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk, this many data bytes to go.
    Data(u64),
    /// After a chunk's data, expecting CRLF.
    DataEnd,
    /// After the last chunk, expecting the trailer section (maybe empty) and its empty line.
    Trailers,
    /// The body is complete.
    Done,
}

/// Decodes one chunked body. See the module docs for the order of calls.
#[derive(Debug)]
pub(crate) struct ChunkedDecoder {
    state: State,
    /// Chunk-extension bytes seen so far in this body.
    extension_bytes: usize,
    /// Largest trailer section accepted, its final empty line included.
    max_trailer_bytes: usize,
    /// Most trailer fields accepted.
    max_trailers: usize,
}

impl ChunkedDecoder {
    /// A decoder at the start of a body, accepting trailer sections of at most
    /// `max_trailer_bytes` bytes and `max_trailers` fields.
    pub(crate) fn new(max_trailer_bytes: usize, max_trailers: usize) -> Self {
        ChunkedDecoder {
            state: State::Size,
            extension_bytes: 0,
            max_trailer_bytes,
            max_trailers,
        }
    }

    /// Whether the body is complete (the last chunk and the trailer section were decoded).
    pub(crate) fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes from the front of `buf`: `Ok(Some(event))` with the bytes it used taken from
    /// `buf`, or `Ok(None)` when `buf` holds no complete next element (append more bytes and
    /// call again). Once the body is complete every call returns [`Event::End`] and takes
    /// nothing; bytes after the body stay in `buf`.
    pub(crate) fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Event>, ChunkedError> {
        loop {
            match self.state {
                State::Size => {
                    let window = &buf[..buf.len().min(MAX_SIZE_LINE)];
                    let Some(lf) = window.iter().position(|&b| b == b'\n') else {
                        if buf.len() >= MAX_SIZE_LINE {
                            return Err(ChunkedError::SizeLineTooLong);
                        }
                        return Ok(None);
                    };
                    // A bare LF is refused: the line must end in CRLF (RFC 9112 §7.1).
                    if lf == 0 || buf[lf - 1] != b'\r' {
                        return Err(ChunkedError::InvalidSize);
                    }
                    let (size, extension_len) = parse_size_line(&buf[..lf - 1])?;
                    self.extension_bytes += extension_len;
                    if self.extension_bytes > MAX_EXTENSION_BYTES {
                        return Err(ChunkedError::ExtensionsTooLong);
                    }
                    buf.advance(lf + 1);
                    self.state = if size == 0 {
                        State::Trailers
                    } else {
                        State::Data(size)
                    };
                }
                State::Data(remaining) => {
                    debug_assert!(remaining > 0, "Data state with nothing left");
                    if buf.is_empty() {
                        return Ok(None);
                    }
                    let n = remaining.min(buf.len() as u64);
                    let data = buf.split_to(n as usize).freeze();
                    self.state = if n == remaining {
                        State::DataEnd
                    } else {
                        State::Data(remaining - n)
                    };
                    return Ok(Some(Event::Data(data)));
                }
                State::DataEnd => {
                    match buf.len() {
                        0 => return Ok(None),
                        1 if buf[0] == b'\r' => return Ok(None),
                        1 => return Err(ChunkedError::MissingCrlf),
                        _ if buf.starts_with(b"\r\n") => {}
                        _ => return Err(ChunkedError::MissingCrlf),
                    }
                    buf.advance(2);
                    self.state = State::Size;
                }
                State::Trailers => return self.decode_trailers(buf),
                State::Done => return Ok(Some(Event::End)),
            }
        }
    }

    fn decode_trailers(&mut self, buf: &mut BytesMut) -> Result<Option<Event>, ChunkedError> {
        debug_assert_eq!(self.state, State::Trailers);
        // The common case: no trailer fields, just the empty line.
        if buf.starts_with(b"\r\n") {
            buf.advance(2);
            self.state = State::Done;
            return Ok(Some(Event::End));
        }
        if buf.len() < 2 {
            return match buf.first() {
                None | Some(b'\r') => Ok(None),
                // Any other first byte starts a field: wait for more.
                Some(_) => Ok(None),
            };
        }
        let mut fields = vec![httparse::EMPTY_HEADER; self.max_trailers];
        // No further than the size limit: what lies beyond it cannot change the outcome. (Else
        // a bad byte past the limit would make the section invalid when it arrives in one read
        // and too large when it arrives in small ones.)
        let window = &buf[..buf.len().min(self.max_trailer_bytes)];
        let (len, spans) = match httparse::parse_headers(window, &mut fields) {
            Ok(httparse::Status::Complete((len, parsed))) => {
                let base = window.as_ptr() as usize;
                let spans: Vec<(HeaderName, usize, usize)> = parsed
                    .iter()
                    .map(|f| {
                        let name = HeaderName::from_bytes(f.name.as_bytes())
                            .map_err(|_| ChunkedError::InvalidTrailers)?;
                        let from = f.value.as_ptr() as usize - base;
                        Ok((name, from, from + f.value.len()))
                    })
                    .collect::<Result<_, ChunkedError>>()?;
                (len, spans)
            }
            Ok(httparse::Status::Partial) => {
                if buf.len() >= self.max_trailer_bytes {
                    return Err(ChunkedError::TrailersTooLarge);
                }
                return Ok(None);
            }
            Err(httparse::Error::TooManyHeaders) => return Err(ChunkedError::TrailersTooLarge),
            Err(_) => return Err(ChunkedError::InvalidTrailers),
        };
        if len > self.max_trailer_bytes {
            return Err(ChunkedError::TrailersTooLarge);
        }
        let section = buf.split_to(len).freeze();
        let mut trailers = HeaderMap::with_capacity(spans.len());
        for (name, from, to) in spans {
            let value = HeaderValue::from_maybe_shared(section.slice(from..to))
                .map_err(|_| ChunkedError::InvalidTrailers)?;
            trailers.append(name, value);
        }
        self.state = State::Done;
        Ok(Some(Event::Trailers(trailers)))
    }
}

/// A chunk-size line without its CRLF: the size, and how many bytes of extensions followed it.
fn parse_size_line(line: &[u8]) -> Result<(u64, usize), ChunkedError> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err(ChunkedError::InvalidSize);
    }
    if digits > MAX_SIZE_DIGITS {
        return Err(ChunkedError::SizeOverflow);
    }
    let size = line[..digits].iter().fold(0u64, |n, &d| {
        let v = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            _ => d - b'A' + 10,
        };
        (n << 4) | u64::from(v)
    });
    // Optional whitespace (BWS), then nothing or `;` and extensions.
    let rest = &line[digits..];
    let after_ws = rest
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(rest.len());
    let extensions = &rest[after_ws..];
    if extensions.is_empty() {
        return Ok((size, 0));
    }
    if extensions[0] != b';' {
        return Err(ChunkedError::InvalidSize);
    }
    // Extensions are not interpreted, only checked for bytes no field may carry.
    if extensions
        .iter()
        .any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f)
    {
        return Err(ChunkedError::InvalidSize);
    }
    Ok((size, extensions.len()))
}

/// The chunk-size line for `len` bytes of data: lowercase hex and CRLF, at most 18 bytes.
pub(crate) fn encode_size_line(len: usize) -> ([u8; 18], usize) {
    let mut out = [0u8; 18];
    let digits = if len == 0 {
        1
    } else {
        (usize::BITS - len.leading_zeros()).div_ceil(4) as usize
    };
    for (i, slot) in out[..digits].iter_mut().enumerate() {
        let shift = 4 * (digits - 1 - i);
        *slot = b"0123456789abcdef"[(len >> shift) & 0xf];
    }
    out[digits] = b'\r';
    out[digits + 1] = b'\n';
    (out, digits + 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX_TRAILERS: usize = 16;
    const MAX_TRAILER_BYTES: usize = 1024;

    fn decoder() -> ChunkedDecoder {
        ChunkedDecoder::new(MAX_TRAILER_BYTES, MAX_TRAILERS)
    }

    /// Feeds `input` in pieces of `step` bytes; returns the data, the trailers and what was
    /// left in the buffer after the end (or the first error).
    /// Data, trailers, and the bytes left after the body.
    type Outcome = Result<(Vec<u8>, Option<HeaderMap>, Vec<u8>), ChunkedError>;

    fn run(input: &[u8], step: usize) -> Outcome {
        let mut dec = decoder();
        let mut buf = BytesMut::new();
        let mut data = Vec::new();
        let mut trailers = None;
        let mut fed = 0;
        loop {
            match dec.decode(&mut buf)? {
                Some(Event::Data(d)) => {
                    assert!(!d.is_empty(), "empty data event");
                    data.extend_from_slice(&d);
                }
                Some(Event::Trailers(t)) => {
                    assert!(dec.is_done());
                    trailers = Some(t);
                    break;
                }
                Some(Event::End) => {
                    assert!(dec.is_done());
                    break;
                }
                None => {
                    assert!(fed < input.len(), "decoder wants more than the input holds");
                    let end = (fed + step).min(input.len());
                    buf.extend_from_slice(&input[fed..end]);
                    fed = end;
                }
            }
        }
        let mut rest = buf.to_vec();
        rest.extend_from_slice(&input[fed..]);
        Ok((data, trailers, rest))
    }

    /// Every split of `input` gives the same result as the whole input at once.
    fn run_all_splits(input: &[u8]) -> Outcome {
        let whole = run(input, input.len().max(1));
        for step in 1..input.len().min(40) {
            assert_eq!(run(input, step), whole, "step {step}");
        }
        whole
    }

    #[test]
    fn decodes_chunks_in_any_split() {
        let input =
            b"5\r\nhello\r\n1;name=value;flag\r\n \r\nA \t; ext=\"q\"\r\n0123456789\r\n0\r\n\r\n";
        let (data, trailers, rest) = run_all_splits(input).unwrap();
        assert_eq!(data, b"hello 0123456789");
        assert!(trailers.is_none());
        assert!(rest.is_empty());
    }

    #[test]
    fn upper_and_lower_hex_and_leading_zeros() {
        let mut input = b"00000010\r\n".to_vec();
        input.extend_from_slice(&[b'x'; 16]);
        input.extend_from_slice(b"\r\nfF\r\n");
        input.extend_from_slice(&[b'y'; 255]);
        input.extend_from_slice(b"\r\n0000\r\n\r\n");
        let (data, _, _) = run_all_splits(&input).unwrap();
        assert_eq!(data.len(), 16 + 255);
    }

    #[test]
    fn trailers_are_a_header_map() {
        let input = b"3\r\nabc\r\n0\r\nX-Checksum: 42\r\nx-other:  v \r\nx-checksum: 43\r\n\r\n";
        let (data, trailers, rest) = run_all_splits(input).unwrap();
        assert_eq!(data, b"abc");
        let t = trailers.unwrap();
        let sums: Vec<_> = t.get_all("x-checksum").iter().collect();
        assert_eq!(sums, ["42", "43"]);
        assert_eq!(t["x-other"], "v");
        assert!(rest.is_empty());
    }

    #[test]
    fn bytes_after_the_body_stay_in_the_buffer() {
        let (data, _, rest) = run(b"1\r\na\r\n0\r\n\r\nHTTP/1.1 200 OK\r\n", 64).unwrap();
        assert_eq!(data, b"a");
        assert_eq!(rest, b"HTTP/1.1 200 OK\r\n");
        // And once done, the decoder keeps saying End without taking anything.
        let mut dec = decoder();
        let mut buf = BytesMut::from(&b"0\r\n\r\nextra"[..]);
        assert_eq!(dec.decode(&mut buf).unwrap(), Some(Event::End));
        assert_eq!(dec.decode(&mut buf).unwrap(), Some(Event::End));
        assert_eq!(&buf[..], b"extra");
    }

    #[test]
    fn data_is_cut_from_the_buffer_as_it_comes() {
        let mut dec = decoder();
        let mut buf = BytesMut::from(&b"a\r\n0123"[..]);
        assert_eq!(
            dec.decode(&mut buf).unwrap(),
            Some(Event::Data(Bytes::from_static(b"0123")))
        );
        assert_eq!(dec.decode(&mut buf).unwrap(), None);
        buf.extend_from_slice(b"456789\r");
        assert_eq!(
            dec.decode(&mut buf).unwrap(),
            Some(Event::Data(Bytes::from_static(b"456789")))
        );
        assert_eq!(dec.decode(&mut buf).unwrap(), None);
        assert!(!dec.is_done());
    }

    #[test]
    fn malformed_bodies_are_errors() {
        let cases: &[(&[u8], ChunkedError)] = &[
            (b"\r\n", ChunkedError::InvalidSize),
            (b"g\r\n", ChunkedError::InvalidSize),
            (b"-1\r\n", ChunkedError::InvalidSize),
            (b"+1\r\n", ChunkedError::InvalidSize),
            (b" 1\r\n", ChunkedError::InvalidSize),
            (b"1 x\r\n", ChunkedError::InvalidSize),
            (b"1\n", ChunkedError::InvalidSize),
            (b"1;a\rb\r\n", ChunkedError::InvalidSize),
            (b"1;a\x00\r\n", ChunkedError::InvalidSize),
            (b"10000000000000000\r\n", ChunkedError::SizeOverflow),
            (b"1\r\nabc\r\n", ChunkedError::MissingCrlf),
            (b"1\r\na\n\r\n", ChunkedError::MissingCrlf),
            (b"1\r\naxy", ChunkedError::MissingCrlf),
            (b"0\r\nbad field\r\n\r\n", ChunkedError::InvalidTrailers),
        ];
        for (input, expected) in cases {
            for step in 1..=input.len() {
                let got = run(input, step);
                assert_eq!(
                    got.as_ref().err(),
                    Some(expected),
                    "{:?} step {step}: {got:?}",
                    String::from_utf8_lossy(input)
                );
            }
        }
    }

    #[test]
    fn limits_are_enforced() {
        // One size line longer than the limit.
        let mut long = b"1;".to_vec();
        long.extend(std::iter::repeat_n(b'x', MAX_SIZE_LINE));
        long.extend_from_slice(b"\r\n");
        assert_eq!(run(&long, 512).err(), Some(ChunkedError::SizeLineTooLong));

        // Extensions that fit per line but not per body.
        let mut many = Vec::new();
        let ext = vec![b'e'; 1000];
        for _ in 0..(MAX_EXTENSION_BYTES / 1000 + 1) {
            many.extend_from_slice(b"1;");
            many.extend_from_slice(&ext);
            many.extend_from_slice(b"\r\nz\r\n");
        }
        many.extend_from_slice(b"0\r\n\r\n");
        assert_eq!(
            run(&many, 4096).err(),
            Some(ChunkedError::ExtensionsTooLong)
        );

        // A trailer section past its byte limit.
        // Few fields (under the count limit), long values.
        let mut trailers = b"0\r\n".to_vec();
        while trailers.len() <= MAX_TRAILER_BYTES + 64 {
            trailers.extend_from_slice(b"x-t: ");
            trailers.extend(std::iter::repeat_n(b'v', 200));
            trailers.extend_from_slice(b"\r\n");
        }
        assert_eq!(
            run(&trailers, 64).err(),
            Some(ChunkedError::TrailersTooLarge)
        );
        let mut closed = trailers.clone();
        closed.extend_from_slice(b"\r\n");
        assert_eq!(
            run(&closed, 4096).err(),
            Some(ChunkedError::TrailersTooLarge)
        );

        // Too many trailer fields.
        let mut fields = b"0\r\n".to_vec();
        for _ in 0..=MAX_TRAILERS {
            fields.extend_from_slice(b"x: 1\r\n");
        }
        fields.extend_from_slice(b"\r\n");
        assert_eq!(
            run(&fields, 4096).err(),
            Some(ChunkedError::TrailersTooLarge)
        );
    }

    #[test]
    fn size_lines_encode_as_lowercase_hex() {
        for (len, text) in [
            (0usize, "0\r\n"),
            (1, "1\r\n"),
            (15, "f\r\n"),
            (16, "10\r\n"),
            (0xabcdef, "abcdef\r\n"),
            (usize::MAX, "ffffffffffffffff\r\n"),
        ] {
            let (line, n) = encode_size_line(len);
            assert_eq!(std::str::from_utf8(&line[..n]).unwrap(), text);
        }
        // Round trip through the decoder.
        for len in [1usize, 9, 10, 255, 4096, 65_535] {
            let (line, n) = encode_size_line(len);
            let mut input = line[..n].to_vec();
            input.extend(std::iter::repeat_n(b'q', len));
            input.extend_from_slice(b"\r\n0\r\n\r\n");
            assert_eq!(run(&input, 1000).unwrap().0.len(), len);
        }
    }
}
