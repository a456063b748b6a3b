//! The gateway's own HTTP/1.1 reader and writer for the common request, sans IO: bytes in,
//! `http::Request` out; `http::response::Parts` in, bytes out. No socket, no clock.
//!
//! # Why not hyper for every request
//!
//! hyper's HTTP/1 connection keeps an 8 KiB read buffer and a write buffer for as long as a
//! request is in service, and hands every response through its dispatcher. Under the load this
//! product exists for (thousands of clients waiting on slow services), those buffers were the
//! largest share of the gateway's memory, and hyper offers no setting for their size. The fast
//! path here holds no buffer while a request waits: the head (and a small body that came with
//! it) is cut from a short-lived read buffer, the request's parts are dropped before the RPC
//! call, and the response is written in one `write` from a buffer made for it.
//!
//! # What the fast path takes, and what it leaves to hyper
//!
//! [`parse_request`] serves only what is simple to serve exactly right: an HTTP/1.1 request in
//! origin form, with no body or a `Content-Length` body of at most [`MAX_WHOLE_BODY`] bytes,
//! no `Transfer-Encoding`, `Expect`, `Upgrade` or `TE`, and not `HEAD` or `CONNECT`. Anything
//! else, including every malformed or oversized head, is [`Parsed::Fallback`]: the connection
//! driver hands the bytes read so far to hyper, which takes the connection from that request on
//! and answers with its own well-tested errors (400, 413, 431, chunked bodies, 100-continue).
//! So a byte sequence that hyper would refuse is never accepted here.
//!
//! # Order of calls
//!
//! The connection driver reads into a buffer and calls [`parse_request`] until it returns
//! something other than [`Parsed::Partial`]; then it runs the request, and writes the response
//! with [`response_framing`], [`encode_head`] and, for chunked bodies, [`encode_chunk`] and
//! [`LAST_CHUNK`].

use std::mem::MaybeUninit;

use bytes::BytesMut;
use http::header;
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, Uri, Version};
use smallvec::SmallVec;
use tideway_http_upstream::headers::parse_content_length;

use crate::body::IngressBody;

/// Most header fields a fast-path request may carry (hyper's default limit is 100: a request
/// with more goes to hyper, which applies it).
pub(crate) const MAX_HEADERS: usize = 64;
/// Fields a request may gain on its way to an upstream (see `parse_request`).
const FORWARDING_FIELDS: usize = 6;
/// Largest body the fast path reads together with its head. Bigger bodies are streamed by hyper
/// (and refused with 413 past the gateway's body limit), so this is also the most a
/// fast-path request can buffer beyond its head.
pub(crate) const MAX_WHOLE_BODY: usize = 16 * 1024;

/// What a read buffer holds.
// Returned by value and consumed at once: boxing the request would cost an allocation per request.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(crate) enum Parsed {
    /// Not a whole request yet: read more (the caller bounds the head's time and size).
    Partial,
    /// A request for the fast path, cut from the front of the buffer with its body.
    Request {
        /// The request, its header values shared with (not copied from) the buffer. Boxed
        /// here, where it is made, as the handler takes it: each move of a request by value
        /// copies its 264 bytes.
        request: Box<Request<IngressBody>>,
        /// The client asked to close the connection after this request.
        close: bool,
    },
    /// Not for the fast path (why, for the trace log): hyper serves it from the same bytes.
    Fallback(&'static str),
    /// A head httparse accepted but `http` refuses (bytes httparse allows in a target or a
    /// field name): its bytes are already taken, so hyper cannot have it. Answer 400 and close.
    BadRequest,
}

/// One header field's place in the buffer: name start, name end, value start, value end.
type FieldSpan = (u32, u32, u32, u32);

/// Reads a request from the front of `buf`. On [`Parsed::Request`] the request's bytes are cut
/// from `buf`, which keeps only what followed (a pipelined request); otherwise `buf` is left as
/// it was. `max_head` is the largest head accepted, `max_body` the largest whole body.
pub(crate) fn parse_request(buf: &mut BytesMut, max_head: usize, max_body: usize) -> Parsed {
    // Left uninitialized (httparse writes what it finds): initializing 64 fields would cost
    // more than parsing the usual handful.
    let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut []);
    let head_len = match parsed.parse_with_uninit_headers(buf, &mut fields) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() < max_head => return Parsed::Partial,
        Ok(httparse::Status::Partial) => return Parsed::Fallback("head too large"),
        Err(httparse::Error::TooManyHeaders) => return Parsed::Fallback("many header fields"),
        Err(_) => return Parsed::Fallback("malformed head"),
    };
    if head_len > max_head {
        return Parsed::Fallback("head too large");
    }
    if parsed.version != Some(1) {
        return Parsed::Fallback("not HTTP/1.1");
    }
    let method = match parsed.method {
        Some("GET") => Method::GET,
        Some("POST") => Method::POST,
        Some("PUT") => Method::PUT,
        Some("DELETE") => Method::DELETE,
        Some("PATCH") => Method::PATCH,
        Some("OPTIONS") => Method::OPTIONS,
        _ => return Parsed::Fallback("method"),
    };
    let Some(path) = parsed.path.filter(|p| p.starts_with('/')) else {
        return Parsed::Fallback("request target not in origin form");
    };
    let base = buf.as_ptr() as usize;
    let offset = |s: &[u8]| (s.as_ptr() as usize - base) as u32;
    let path_span = (
        offset(path.as_bytes()),
        offset(path.as_bytes()) + path.len() as u32,
    );

    // `new`, not `with_capacity`: the latter returns the vector by value, a 272-byte copy;
    // past 16 fields it grows as pushed.
    let mut spans: SmallVec<[FieldSpan; 16]> = SmallVec::new();
    let mut content_length: Option<u64> = None;
    let mut close = false;
    for field in parsed.headers.iter() {
        let name = field.name.as_bytes();
        let value = field.value;
        if !value
            .iter()
            .all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f))
        {
            return Parsed::Fallback("header value bytes");
        }
        if name.eq_ignore_ascii_case(b"content-length") {
            let Some(n) = parse_content_length(value) else {
                return Parsed::Fallback("content-length");
            };
            if content_length.is_some_and(|c| c != n) {
                return Parsed::Fallback("content-length");
            }
            content_length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding")
            || name.eq_ignore_ascii_case(b"expect")
            || name.eq_ignore_ascii_case(b"upgrade")
            || name.eq_ignore_ascii_case(b"te")
        {
            return Parsed::Fallback("header needs hyper");
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if token.eq_ignore_ascii_case(b"upgrade") {
                    return Parsed::Fallback("connection upgrade");
                }
            }
        }
        spans.push((
            offset(name),
            offset(name) + name.len() as u32,
            offset(value),
            offset(value) + value.len() as u32,
        ));
    }
    let body_len = match content_length {
        None => 0,
        Some(n) if n <= max_body as u64 => n as usize,
        Some(_) => return Parsed::Fallback("body larger than the whole-body limit"),
    };
    if buf.len() < head_len + body_len {
        return Parsed::Partial;
    }

    // From here on the request is ours: cut it from the buffer and share its bytes.
    let bytes = buf.split_to(head_len + body_len).freeze();
    let slice = |from: u32, to: u32| bytes.slice(from as usize..to as usize);
    let Ok(uri) = Uri::from_maybe_shared(slice(path_span.0, path_span.1)) else {
        // hyper answers 400 to the same target; this request's bytes are already taken.
        return bad_request_target(buf);
    };
    // Room for the fields a proxied request gains (request id, `X-Forwarded-*`, trace
    // context), so the map is not regrown on the way out.
    let mut headers = HeaderMap::with_capacity(spans.len() + FORWARDING_FIELDS);
    for &(name_from, name_to, value_from, value_to) in &spans {
        let name = &bytes[name_from as usize..name_to as usize];
        let Ok(name) = tideway_http_upstream::headers::name_from_bytes(name) else {
            return bad_request_target(buf);
        };
        let Ok(value) = HeaderValue::from_maybe_shared(slice(value_from, value_to)) else {
            return bad_request_target(buf);
        };
        headers.append(name, value);
    }
    let body = bytes.slice(head_len..);
    let mut request = Box::new(Request::new(IngressBody::whole(body)));
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = headers;
    Parsed::Request { request, close }
}

/// See [`Parsed::BadRequest`]; what followed the request is dropped with the connection.
fn bad_request_target(buf: &mut BytesMut) -> Parsed {
    buf.clear();
    Parsed::BadRequest
}

/// How a response body is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// `Content-Length: n`, then exactly n bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// No body at all (204, 304).
    Empty,
}

/// How to frame a response: no body for 204 and 304; the response's own `Content-Length` when
/// it has a valid one; else the body's exact size when known; else chunked. And whether the
/// response's own `Connection` field asks to close. One pass over the fields (few; comparing
/// known names is comparing enums) instead of a hashed lookup for each.
pub(crate) fn response_framing(
    status: StatusCode,
    headers: &HeaderMap,
    exact_size: Option<u64>,
) -> (Framing, bool) {
    let mut close = false;
    let mut content_length = None;
    for (name, value) in headers {
        if name == header::CONNECTION {
            close |= tideway_http_upstream::headers::lists_token(value, b"close");
        } else if name == header::CONTENT_LENGTH && content_length.is_none() {
            // The first value only, as `HeaderMap::get` reads it.
            content_length = Some(parse_content_length(value.as_bytes()));
        }
    }
    let framing = if status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        Framing::Empty
    } else if let Some(Some(n)) = content_length {
        Framing::Length(n)
    } else {
        match exact_size {
            Some(n) => Framing::Length(n),
            None => Framing::Chunked,
        }
    };
    (framing, close)
}

/// Writes a response head: status line, the response's fields (less the framing and
/// connection fields, which are written here from `framing` and `close`), and `date`.
pub(crate) fn encode_head(
    out: &mut Vec<u8>,
    status: StatusCode,
    headers: &HeaderMap,
    framing: Framing,
    close: bool,
    date: &[u8],
    request_id: Option<&HeaderValue>,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    let mut has_date = false;
    for (name, value) in headers {
        if name == header::CONTENT_LENGTH
            || name == header::TRANSFER_ENCODING
            || name == header::CONNECTION
            || name == "keep-alive"
        {
            continue;
        }
        // The request id given replaces any in the map (an upstream's own, say).
        if request_id.is_some() && *name == crate::handler::REQUEST_ID_NAME {
            continue;
        }
        has_date |= name == header::DATE;
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if let Some(id) = request_id {
        out.extend_from_slice(b"x-request-id: ");
        out.extend_from_slice(id.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    match framing {
        Framing::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        Framing::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        Framing::Empty => {}
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    if !has_date {
        out.extend_from_slice(b"date: ");
        out.extend_from_slice(date);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// The size line of a chunk of `len` bytes (the chunk's data and its `\r\n` follow).
pub(crate) fn encode_chunk_size(out: &mut Vec<u8>, len: usize) {
    use std::io::Write as _;
    let _ = write!(out, "{len:x}\r\n");
}

/// Ends a chunked body (no trailers: the fast path does not serve requests that accept them).
pub(crate) const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// An HTTP date (`Sun, 06 Nov 1994 08:49:37 GMT`, 29 bytes) for the given Unix second.
pub(crate) fn http_date(unix_secs: u64) -> [u8; 29] {
    let text =
        httpdate::fmt_http_date(std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix_secs));
    let mut out = [b' '; 29];
    let n = text.len().min(29);
    out[..n].copy_from_slice(&text.as_bytes()[..n]);
    out
}

/// Keeps the encoded `Date` of the current second, per thread (as hyper does): one format a
/// second instead of one per response.
#[derive(Debug, Default)]
pub(crate) struct DateCache {
    second: u64,
    text: [u8; 29],
}

impl DateCache {
    /// The date for `unix_secs`, encoded once per second.
    pub(crate) fn get(&mut self, unix_secs: u64) -> &[u8] {
        if self.second != unix_secs || self.text[0] == 0 {
            self.text = http_date(unix_secs);
            self.second = unix_secs;
        }
        &self.text
    }
}

#[cfg(test)]
mod tests {
    use http_body::Body as _;
    use http_body_util::BodyExt;

    use super::*;

    fn parse(bytes: &[u8]) -> (Parsed, BytesMut) {
        let mut buf = BytesMut::from(bytes);
        let parsed = parse_request(&mut buf, 8192, MAX_WHOLE_BODY);
        (parsed, buf)
    }

    #[tokio::test]
    async fn a_get_and_a_pipelined_post_are_cut_from_the_buffer() {
        let (parsed, rest) = parse(
            b"GET /api/items/7?x=1 HTTP/1.1\r\nHost: a\r\nX-Request-Id: r1\r\nX-Dup: 1\r\nx-dup: 2\r\n\r\nPOST /p HTTP/1.1\r\n",
        );
        let Parsed::Request { request, close } = parsed else {
            panic!("{parsed:?}")
        };
        assert!(!close);
        assert_eq!(request.method(), Method::GET);
        assert_eq!(request.uri().path(), "/api/items/7");
        assert_eq!(request.uri().query(), Some("x=1"));
        assert_eq!(request.headers()["host"], "a");
        assert_eq!(request.headers()["x-request-id"], "r1");
        assert_eq!(request.headers().get_all("x-dup").iter().count(), 2);
        assert!(
            request
                .into_body()
                .collect()
                .await
                .unwrap()
                .to_bytes()
                .is_empty()
        );
        assert_eq!(&rest[..], b"POST /p HTTP/1.1\r\n");

        let (parsed, rest) = parse(
            b"POST /p HTTP/1.1\r\nContent-Length: 7\r\nConnection: close\r\n\r\n{\"a\":1}GET",
        );
        let Parsed::Request { request, close } = parsed else {
            panic!("{parsed:?}")
        };
        assert!(close);
        let body = request.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"{\"a\":1}");
        assert_eq!(&rest[..], b"GET");
    }

    #[test]
    fn incomplete_heads_and_bodies_ask_for_more() {
        assert!(matches!(
            parse(b"GET / HTTP/1.1\r\nHost").0,
            Parsed::Partial
        ));
        let (parsed, rest) = parse(b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\n12345");
        assert!(matches!(parsed, Parsed::Partial));
        assert_eq!(rest.len(), 44, "nothing taken from the buffer");
    }

    #[test]
    fn what_the_fast_path_leaves_to_hyper() {
        for head in [
            &b"GET / HTTP/1.0\r\n\r\n"[..],
            b"HEAD / HTTP/1.1\r\n\r\n",
            b"CONNECT a:443 HTTP/1.1\r\n\r\n",
            b"GET http://a/ HTTP/1.1\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
            b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            b"GET / HTTP/1.1\r\nTE: trailers\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n",
            b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
            b"\x16\x03\x01garbage",
        ] {
            let (parsed, rest) = parse(head);
            assert!(
                matches!(parsed, Parsed::Fallback(_)),
                "{:?} -> {parsed:?}",
                String::from_utf8_lossy(head)
            );
            assert_eq!(&rest[..], head, "hyper gets every byte back");
        }
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..MAX_HEADERS + 1 {
            many.extend_from_slice(format!("x-{i}: y\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert!(matches!(parse(&many).0, Parsed::Fallback(_)));
        let mut big = BytesMut::from(&b"GET / HTTP/1.1\r\nx: "[..]);
        big.extend_from_slice(&[b'a'; 200]);
        assert!(matches!(
            parse_request(&mut big, 100, 0),
            Parsed::Fallback("head too large")
        ));
    }

    #[test]
    fn heads_are_framed_exactly() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        headers.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("gzip"));
        let date = http_date(784_111_777);
        assert_eq!(&date, b"Sun, 06 Nov 1994 08:49:37 GMT");
        let (framing, closes) = response_framing(StatusCode::OK, &headers, Some(11));
        assert_eq!(framing, Framing::Length(11));
        assert!(!closes, "keep-alive is not close");
        // The head `encode_head` writes, as text.
        let head = |status, headers: &HeaderMap, framing, close, id: Option<&HeaderValue>| {
            let mut out = Vec::new();
            encode_head(&mut out, status, headers, framing, close, &date, id);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(
            head(StatusCode::OK, &headers, framing, false, None),
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\ndate: Sun, 06 Nov 1994 08:49:37 GMT\r\n\r\n"
        );
        // A request id given to the writer replaces the one in the map (an upstream's own).
        headers.insert(
            crate::handler::REQUEST_ID_NAME,
            HeaderValue::from_static("upstream-id"),
        );
        let id = HeaderValue::from_static("gw-1");
        assert_eq!(
            head(StatusCode::OK, &headers, framing, false, Some(&id)),
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nx-request-id: gw-1\r\ncontent-length: 11\r\ndate: Sun, 06 Nov 1994 08:49:37 GMT\r\n\r\n"
        );
        assert!(
            head(StatusCode::OK, &headers, framing, false, None)
                .contains("x-request-id: upstream-id\r\n")
        );
        let (framing, _) = response_framing(StatusCode::BAD_GATEWAY, &HeaderMap::new(), None);
        assert_eq!(
            head(
                StatusCode::BAD_GATEWAY,
                &HeaderMap::new(),
                framing,
                true,
                None
            ),
            "HTTP/1.1 502 Bad Gateway\r\ntransfer-encoding: chunked\r\nconnection: close\r\ndate: Sun, 06 Nov 1994 08:49:37 GMT\r\n\r\n"
        );
        let mut lengthy = HeaderMap::new();
        lengthy.insert(header::CONTENT_LENGTH, HeaderValue::from_static("5"));
        assert_eq!(
            response_framing(StatusCode::OK, &lengthy, None),
            (Framing::Length(5), false)
        );
        assert_eq!(
            response_framing(StatusCode::NO_CONTENT, &lengthy, Some(5)),
            (Framing::Empty, false)
        );
        // The first Content-Length counts, as it did when read with `HeaderMap::get`; an
        // invalid one falls back to the body's size.
        lengthy.append(header::CONTENT_LENGTH, HeaderValue::from_static("7"));
        assert_eq!(
            response_framing(StatusCode::OK, &lengthy, None).0,
            Framing::Length(5)
        );
        let mut invalid = HeaderMap::new();
        invalid.insert(header::CONTENT_LENGTH, HeaderValue::from_static("-1"));
        invalid.append(header::CONTENT_LENGTH, HeaderValue::from_static("9"));
        assert_eq!(
            response_framing(StatusCode::OK, &invalid, Some(3)).0,
            Framing::Length(3)
        );
        let mut chunk = Vec::new();
        encode_chunk_size(&mut chunk, 4096);
        assert_eq!(chunk, b"1000\r\n");
        let mut closing = HeaderMap::new();
        closing.insert(
            header::CONNECTION,
            HeaderValue::from_static("Keep-Alive, Close"),
        );
        closing.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        assert!(response_framing(StatusCode::OK, &closing, None).1);
        closing.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        closing.append(header::CONNECTION, HeaderValue::from_static("close"));
        assert!(
            response_framing(StatusCode::OK, &closing, None).1,
            "a second field closes"
        );
    }

    proptest::proptest! {
        /// Bytes from the network never panic the reader, and it only ever takes a whole
        /// request from the front of the buffer: on anything but a request the buffer is left
        /// as it was (hyper gets every byte), and a request takes exactly its head and body.
        #[test]
        fn any_bytes_are_taken_whole_or_left_alone(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600),
            max_head in 16usize..1024,
            max_body in 0usize..64,
        ) {
            let mut buf = BytesMut::from(&bytes[..]);
            match parse_request(&mut buf, max_head, max_body) {
                Parsed::Partial | Parsed::Fallback(_) => proptest::prop_assert_eq!(&buf[..], &bytes[..]),
                Parsed::BadRequest => proptest::prop_assert!(buf.is_empty()),
                Parsed::Request { request, .. } => {
                    let taken = bytes.len() - buf.len();
                    proptest::prop_assert_eq!(&buf[..], &bytes[taken..]);
                    let body = request.body().size_hint().exact().unwrap_or(0) as usize;
                    proptest::prop_assert!(body <= max_body);
                    proptest::prop_assert!(taken - body <= max_head);
                    proptest::prop_assert!(request.uri().path().starts_with('/'));
                }
            }
        }

        /// A well-formed request, however its bytes are cut, is read the same once whole.
        #[test]
        fn a_request_split_anywhere_is_read_once_whole(
            path in "/[a-z0-9/_.~%-]{0,40}",
            query in proptest::option::of("[a-z0-9=&]{0,20}"),
            names in proptest::collection::vec("x-[a-z]{1,10}", 0..8),
            body in "[ -~]{0,40}",
            cut in 0usize..400,
        ) {
            let mut wire = format!("POST {path}");
            if let Some(q) = &query {
                wire.push('?');
                wire.push_str(q);
            }
            wire.push_str(" HTTP/1.1\r\nhost: h\r\n");
            for (i, name) in names.iter().enumerate() {
                wire.push_str(&format!("{name}: v{i}\r\n"));
            }
            wire.push_str(&format!("content-length: {}\r\n\r\n{body}", body.len()));
            let cut = cut.min(wire.len());
            let mut buf = BytesMut::from(&wire.as_bytes()[..cut]);
            let first = parse_request(&mut buf, 8192, MAX_WHOLE_BODY);
            if cut < wire.len() {
                proptest::prop_assert!(matches!(first, Parsed::Partial), "{first:?}");
                buf.extend_from_slice(&wire.as_bytes()[cut..]);
            }
            let parsed = if cut < wire.len() {
                parse_request(&mut buf, 8192, MAX_WHOLE_BODY)
            } else {
                first
            };
            let Parsed::Request { request, close } = parsed else {
                return Err(proptest::test_runner::TestCaseError::fail(format!("{parsed:?}")));
            };
            proptest::prop_assert!(!close);
            proptest::prop_assert!(buf.is_empty());
            proptest::prop_assert_eq!(request.uri().path(), path.as_str());
            proptest::prop_assert_eq!(request.uri().query(), query.as_deref());
            for (i, name) in names.iter().enumerate() {
                let values: Vec<_> = request.headers().get_all(name.as_str()).iter().collect();
                let want = format!("v{i}");
                let found = values.iter().any(|v| *v == want.as_str());
                proptest::prop_assert!(found, "{} missing", name);
            }
            let IngressBody::Whole(got) = request.into_body() else {
                return Err(proptest::test_runner::TestCaseError::fail("not a whole body"));
            };
            proptest::prop_assert_eq!(got.unwrap_or_default(), bytes::Bytes::from(body));
        }
    }

    #[test]
    fn the_date_cache_encodes_once_per_second() {
        let mut cache = DateCache::default();
        assert_eq!(cache.get(784_111_777), b"Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(cache.get(784_111_778), b"Sun, 06 Nov 1994 08:49:38 GMT");
    }
}
