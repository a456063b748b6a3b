//! The HTTP/1.1 wire format of the upstream client, sans IO: a request head out as bytes, a
//! response head in from bytes, and how each side's body is delimited (RFC 9112 §6). No
//! socket, no clock. The chunked body decoder is in `chunked.rs`; the driver that moves these
//! bytes over a socket is `client.rs`.

use std::mem::MaybeUninit;

use bytes::BytesMut;
use http::header::{CONNECTION, CONTENT_LENGTH, HeaderMap, HeaderName, TRANSFER_ENCODING};
use http::{HeaderValue, Method, Response, StatusCode, Version};
use smallvec::SmallVec;

use crate::headers::Forwarding;

/// Header fields parsed on the stack; a configured limit above this parses into a heap array.
/// hyper's (and the config's) default limit is 100.
const STACK_FIELDS: usize = 128;

/// How a request body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RequestFraming {
    /// No body and no `Content-Length` (GET and the like with an empty body).
    None,
    /// `Content-Length: n`.
    Length(u64),
    /// `Transfer-Encoding: chunked`: the body's size is not known up front.
    Chunked,
}

/// Whether an empty body of this method goes without `Content-Length`: the methods whose
/// requests have no defined body semantics (RFC 9110 §9.3), so no server expects one.
/// For the others (POST, PUT, PATCH, extensions) `Content-Length: 0` is sent, as hyper does.
pub(crate) fn empty_body_needs_no_length(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::DELETE | Method::OPTIONS | Method::TRACE
    )
}

/// Whether a request may be sent again after its connection died before any response byte came
/// back: the idempotent methods of RFC 9110 §9.2.2, as hyper and browsers retry them.
pub(crate) fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

/// Bytes [`encode_request_head`] will write at most for these fields, plus `extra`: sized
/// once so the head (and a small body) is built without reallocating.
pub(crate) fn request_head_capacity(
    target: &str,
    headers: &HeaderMap,
    forwarding: &Forwarding,
    extra: usize,
) -> usize {
    // Method, spaces, version, CRLFs, `content-length: ` with 20 digits.
    let fixed = 16 + target.len() + 48;
    let fields: usize = headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum();
    fixed + fields + forwarding.len_hint(headers) + extra
}

/// Writes a request head to `out`: request line, `Host` first (RFC 9112 §3.2 asks clients to
/// send it first), the other fields of `headers` as they are, the fields `forwarding` sets
/// (it replaces the map's `Host` and `X-Forwarded-*`), then the framing field from `framing`.
/// `Content-Length` and `Transfer-Encoding` in `headers` are skipped: `framing` decides them.
/// The caller has already removed hop-by-hop fields.
pub(crate) fn encode_request_head(
    out: &mut Vec<u8>,
    method: &Method,
    target: &str,
    headers: &HeaderMap,
    forwarding: &Forwarding,
    framing: RequestFraming,
) {
    debug_assert!(target.starts_with('/'), "origin-form target {target:?}");
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    out.extend_from_slice(forwarding.host().as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        if forwarding.replaces(name) || name == CONTENT_LENGTH || name == TRANSFER_ENCODING {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    forwarding.write_fields(out, headers);
    match framing {
        RequestFraming::None => {}
        RequestFraming::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        RequestFraming::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    out.extend_from_slice(b"\r\n");
}

/// Why a response head is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum HeadError {
    /// Not a valid HTTP/1.x status line and header fields.
    #[error("malformed response head: {0}")]
    Malformed(&'static str),
    /// More header fields than the configured limit.
    #[error("response head has more than {0} header fields")]
    TooManyFields(usize),
    /// No complete head within the configured size limit.
    #[error("response head larger than {0} bytes")]
    TooLarge(usize),
    /// `Content-Length` is not one decimal number (or a list of the same one).
    #[error("invalid content-length in response")]
    InvalidContentLength,
    /// The upstream switched protocols to a request that did not ask it to.
    #[error("upstream answered 101 Switching Protocols to a request that did not ask to switch")]
    SwitchingProtocols,
    /// Too many interim (1xx) responses before the final one.
    #[error("more than {0} interim responses")]
    TooManyInterim(usize),
}

/// Most interim (1xx) responses accepted before the final one. Real upstreams send one
/// `100 Continue` or a few `103 Early Hints`; more is a broken or hostile peer, and each one
/// costs a parse.
pub(crate) const MAX_INTERIM_RESPONSES: usize = 16;

/// Takes the final response head from the front of `buf`, skipping (and taking) interim 1xx
/// heads on the way; `interim` counts those across calls. `Ok(None)`: no final head yet, read
/// more (at most up to `max_head` bytes in `buf`). `101 Switching Protocols` is the final head
/// when the request asked to switch (`switch`), and refused otherwise. Also refused: more
/// than [`MAX_INTERIM_RESPONSES`] interim heads, a head not complete within `max_head` bytes,
/// and whatever [`parse_response_head`] refuses. This is the HTTP/1.1 client's whole reading
/// of a response head, short of the socket; the `h1_response` fuzz target runs it too.
pub(crate) fn take_final_head(
    buf: &mut BytesMut,
    interim: &mut usize,
    max_head: usize,
    max_fields: usize,
    switch: bool,
) -> Result<Option<Response<()>>, HeadError> {
    while !buf.is_empty() {
        match parse_response_head(buf, max_fields)? {
            Some(head) if head.status() == StatusCode::SWITCHING_PROTOCOLS => {
                if !switch {
                    return Err(HeadError::SwitchingProtocols);
                }
                if !head.headers().contains_key(http::header::UPGRADE) {
                    return Err(HeadError::Malformed(
                        "101 Switching Protocols without an Upgrade field",
                    ));
                }
                return Ok(Some(head));
            }
            Some(head) if head.status().is_informational() => {
                *interim += 1;
                if *interim > MAX_INTERIM_RESPONSES {
                    return Err(HeadError::TooManyInterim(MAX_INTERIM_RESPONSES));
                }
            }
            Some(head) => return Ok(Some(head)),
            None if buf.len() >= max_head => return Err(HeadError::TooLarge(max_head)),
            None => return Ok(None),
        }
    }
    Ok(None)
}

/// One header field's place in the head: name, value start, value end.
type FieldSpan = (HeaderName, u32, u32);

/// A parsed head's start line and length; its fields are written to a list of [`FieldSpan`]s.
struct HeadSpans {
    len: usize,
    status: StatusCode,
    version: Version,
}

/// A response head's fields, inline up to 16: a head rarely has more, and this is made for
/// every response. Filled in place by [`parse_spans`] (it is large enough that moving it costs
/// a copy worth avoiding).
type FieldSpans = SmallVec<[FieldSpan; 16]>;

/// Reads a response head from the front of `buf`. `Ok(None)`: not complete yet (read more;
/// the caller enforces the size limit). `Ok(Some(_))`: the head's bytes are cut from `buf`,
/// which keeps what followed (the body's first bytes); header values share the head's bytes
/// rather than copying them. Nothing is removed or interpreted here: see
/// [`response_framing`].
pub(crate) fn parse_response_head(
    buf: &mut BytesMut,
    max_fields: usize,
) -> Result<Option<Response<()>>, HeadError> {
    let mut field_spans = FieldSpans::new();
    let spans = if max_fields <= STACK_FIELDS {
        let mut fields = [const { MaybeUninit::uninit() }; STACK_FIELDS];
        parse_spans(buf, &mut fields[..max_fields], max_fields, &mut field_spans)?
    } else {
        let mut fields = Vec::with_capacity(max_fields);
        fields.resize_with(max_fields, MaybeUninit::uninit);
        parse_spans(buf, &mut fields, max_fields, &mut field_spans)?
    };
    let Some(spans) = spans else {
        return Ok(None);
    };
    let head = buf.split_to(spans.len).freeze();
    // Room for the fields the gateway adds (its request id), so the map is not regrown.
    let mut headers = HeaderMap::with_capacity(field_spans.len() + 2);
    // `drain`, not `into_iter`: the spans are inline, and moving them into an iterator would
    // copy all of their room.
    for (name, from, to) in field_spans.drain(..) {
        let value = HeaderValue::from_maybe_shared(head.slice(from as usize..to as usize))
            .map_err(|_| HeadError::Malformed("header value"))?;
        headers.append(name, value);
    }
    let mut response = Response::new(());
    *response.status_mut() = spans.status;
    *response.version_mut() = spans.version;
    *response.headers_mut() = headers;
    Ok(Some(response))
}

/// The parse proper; its results are offsets, so the caller can cut `bytes`' buffer afterwards.
fn parse_spans<'b>(
    bytes: &'b [u8],
    fields: &mut [MaybeUninit<httparse::Header<'b>>],
    max_fields: usize,
    spans: &mut FieldSpans,
) -> Result<Option<HeadSpans>, HeadError> {
    let mut parsed = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut parsed,
        bytes,
        fields,
    ) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooManyFields(max_fields)),
        Err(e) => return Err(HeadError::Malformed(error_text(e))),
    };
    let code = parsed.code.ok_or(HeadError::Malformed("no status code"))?;
    let status = StatusCode::from_u16(code).map_err(|_| HeadError::Malformed("status code"))?;
    let version = match parsed.version {
        Some(1) => Version::HTTP_11,
        Some(0) => Version::HTTP_10,
        _ => return Err(HeadError::Malformed("version")),
    };
    let base = bytes.as_ptr() as usize;
    spans.reserve(parsed.headers.len());
    for field in parsed.headers.iter() {
        let name = crate::headers::name_from_bytes(field.name.as_bytes())
            .map_err(|_| HeadError::Malformed("header name"))?;
        // The head is at most `http1_max_buf_size` (≤ 16 MiB), so offsets fit in u32.
        let from = (field.value.as_ptr() as usize - base) as u32;
        spans.push((name, from, from + field.value.len() as u32));
    }
    Ok(Some(HeadSpans {
        len,
        status,
        version,
    }))
}

fn error_text(e: httparse::Error) -> &'static str {
    match e {
        httparse::Error::HeaderName => "header name",
        httparse::Error::HeaderValue => "header value",
        httparse::Error::NewLine => "line ending",
        httparse::Error::Status => "status",
        httparse::Error::Token => "token",
        httparse::Error::Version => "version",
        httparse::Error::TooManyHeaders => "too many header fields",
    }
}

/// How a response body is delimited on the wire (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ResponseFraming {
    /// No body: a response to HEAD, 1xx, 204, 304.
    Empty,
    /// `Content-Length: n`.
    Length(u64),
    /// `Transfer-Encoding` ending in `chunked`.
    Chunked,
    /// Neither: the body runs until the upstream closes the connection.
    Eof,
}

/// How `response`'s body is delimited, and whether the connection can carry another request
/// after it (HTTP/1.1, no `Connection: close`, not delimited by close, no conflicting framing
/// fields). Read this before hop-by-hop fields are removed.
pub(crate) fn response_framing<T>(
    request_method: &Method,
    response: &Response<T>,
) -> Result<(ResponseFraming, bool), HeadError> {
    // One pass over the fields (a response has few, and comparing known names is comparing
    // enums) instead of a hashed lookup for each of the three framing fields.
    let mut close = false;
    let mut last_transfer_encoding = None;
    let mut has_length = false;
    let mut length: Option<u64> = None;
    let mut invalid_length = false;
    for (name, value) in response.headers() {
        if name == CONNECTION {
            close |= crate::headers::lists_token(value, b"close");
        } else if name == TRANSFER_ENCODING {
            last_transfer_encoding = Some(value);
        } else if name == CONTENT_LENGTH {
            has_length = true;
            for item in value.as_bytes().split(|&b| b == b',') {
                match crate::headers::parse_content_length(item.trim_ascii()) {
                    Some(n) if length.is_none_or(|l| l == n) => length = Some(n),
                    _ => invalid_length = true,
                }
            }
        }
    }
    let mut keep_alive = response.version() == Version::HTTP_11 && !close;
    let status = response.status();
    if *request_method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok((ResponseFraming::Empty, keep_alive));
    }
    if let Some(transfer_encoding) = last_transfer_encoding {
        // RFC 9112 §6.3 (3): Transfer-Encoding overrides Content-Length, and a message with
        // both may be an attempt at smuggling: never reuse its connection.
        if has_length {
            keep_alive = false;
        }
        let last_is_chunked = transfer_encoding
            .as_bytes()
            .rsplit(|&b| b == b',')
            .next()
            .is_some_and(|t| t.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        if last_is_chunked {
            return Ok((ResponseFraming::Chunked, keep_alive));
        }
        // (4): a response whose last coding is not chunked runs until close.
        return Ok((ResponseFraming::Eof, false));
    }
    if invalid_length {
        return Err(HeadError::InvalidContentLength);
    }
    match length {
        Some(n) => Ok((ResponseFraming::Length(n), keep_alive)),
        None => Ok((ResponseFraming::Eof, false)),
    }
}

#[cfg(test)]
mod tests {
    use http::header::{HOST, HeaderValue};

    use super::*;

    fn head_of(text: &str) -> Response<()> {
        let mut buf = BytesMut::from(text.as_bytes());
        parse_response_head(&mut buf, 100).unwrap().unwrap()
    }

    #[test]
    fn request_heads_put_host_first_and_frame_the_body() {
        let mut headers = HeaderMap::new();
        headers.insert("x-a", HeaderValue::from_static("1"));
        headers.insert(HOST, HeaderValue::from_static("client.example"));
        headers.append("x-b", HeaderValue::from_static("2"));
        headers.append("x-b", HeaderValue::from_static("3"));
        // Replaced by the forwarding fields.
        headers.append("x-forwarded-for", HeaderValue::from_static("192.0.2.1"));
        headers.append("x-forwarded-for", HeaderValue::from_static(" 192.0.2.2 "));
        headers.append("x-forwarded-proto", HeaderValue::from_static("gopher"));
        headers.append("x-forwarded-host", HeaderValue::from_static("spoofed"));
        // Framing fields of the map are never written: `framing` decides.
        headers.insert(CONTENT_LENGTH, HeaderValue::from_static("999"));
        headers.insert(TRANSFER_ENCODING, HeaderValue::from_static("gzip"));
        let forwarding = Forwarding::new(
            &headers,
            "[::ffff:10.0.0.5]:4000".parse().unwrap(),
            crate::Scheme::Https,
            HeaderValue::from_static("up:8080"),
            Some(HeaderValue::from_static("client.example")),
            true,
            None,
        );
        let cases = [
            (RequestFraming::None, ""),
            (RequestFraming::Length(42), "content-length: 42\r\n"),
            (RequestFraming::Chunked, "transfer-encoding: chunked\r\n"),
        ];
        for (framing, line) in cases {
            let mut out = Vec::new();
            encode_request_head(
                &mut out,
                &Method::PATCH,
                "/a?b=c",
                &headers,
                &forwarding,
                framing,
            );
            assert!(out.len() <= request_head_capacity("/a?b=c", &headers, &forwarding, 0));
            assert_eq!(
                String::from_utf8(out).unwrap(),
                format!(
                    "PATCH /a?b=c HTTP/1.1\r\nhost: up:8080\r\nx-a: 1\r\nx-b: 2\r\nx-b: 3\r\n\
                     x-forwarded-for: 192.0.2.1, 192.0.2.2, 10.0.0.5\r\n\
                     x-forwarded-proto: https\r\nx-forwarded-host: client.example\r\n\
                     te: trailers\r\nconnection: te\r\n{line}\r\n"
                )
            );
        }
        // A request id given replaces the one the request carries.
        headers.insert("x-request-id", HeaderValue::from_static("from-client"));
        let forwarding = Forwarding::new(
            &headers,
            "10.0.0.5:4000".parse().unwrap(),
            crate::Scheme::Http,
            HeaderValue::from_static("up:8080"),
            None,
            false,
            Some(HeaderValue::from_static("gw-7")),
        );
        let mut out = Vec::new();
        encode_request_head(
            &mut out,
            &Method::GET,
            "/",
            &headers,
            &forwarding,
            RequestFraming::None,
        );
        assert!(out.len() <= request_head_capacity("/", &headers, &forwarding, 0));
        let text = String::from_utf8(out).unwrap();
        let ids: Vec<_> = text
            .lines()
            .filter_map(|l| l.strip_prefix("x-request-id: "))
            .collect();
        assert_eq!(ids, ["gw-7"], "{text}");
    }

    #[test]
    fn response_heads_parse_in_any_split_and_share_the_buffer() {
        let text = b"HTTP/1.1 201 Created\r\nX-One: a\r\nx-two:  b c \r\nx-one: d\r\n\r\nbody";
        for cut in 0..text.len() - 4 {
            let mut buf = BytesMut::from(&text[..cut]);
            assert!(
                parse_response_head(&mut buf, 100).unwrap().is_none(),
                "{cut}"
            );
            assert_eq!(buf.len(), cut, "a partial head is left in place");
        }
        let mut buf = BytesMut::from(&text[..]);
        let head = parse_response_head(&mut buf, 100).unwrap().unwrap();
        assert_eq!(head.status(), StatusCode::CREATED);
        assert_eq!(head.version(), Version::HTTP_11);
        let ones: Vec<_> = head.headers().get_all("x-one").iter().collect();
        assert_eq!(ones, ["a", "d"]);
        assert_eq!(head.headers()["x-two"], "b c");
        assert_eq!(&buf[..], b"body", "the body's first bytes stay");

        let head = head_of("HTTP/1.0 204\r\n\r\n");
        assert_eq!(head.status(), StatusCode::NO_CONTENT);
        assert_eq!(head.version(), Version::HTTP_10);
    }

    #[test]
    fn field_limits_use_the_stack_or_the_heap() {
        let mut text = String::from("HTTP/1.1 200 OK\r\n");
        for i in 0..200 {
            text.push_str(&format!("x-{i}: {i}\r\n"));
        }
        text.push_str("\r\n");
        let parse = |max| parse_response_head(&mut BytesMut::from(text.as_bytes()), max);
        assert_eq!(parse(100).unwrap_err(), HeadError::TooManyFields(100));
        assert_eq!(parse(199).unwrap_err(), HeadError::TooManyFields(199));
        assert_eq!(parse(200).unwrap().unwrap().headers().len(), 200);
        assert_eq!(parse(1000).unwrap().unwrap().headers().len(), 200);
    }

    #[test]
    fn malformed_heads_are_errors_never_panics() {
        for text in [
            "HTTP/1.1 abc OK\r\n\r\n",
            "HTTP/1.1 99 OK\r\n\r\n",
            "HTTP/1.1 099 OK\r\n\r\n",
            "HTTP/1.1 1000 OK\r\n\r\n",
            "HTTP/2.0 200 OK\r\n\r\n",
            "HTTP/1.1 200 OK\r\nbad name: x\r\n\r\n",
            "HTTP/1.1 200 OK\r\nx: a\x00b\r\n\r\n",
            "HTTP/1.1 200 OK\r\n folded: x\r\n\r\n",
            "GET / HTTP/1.1\r\n\r\n",
        ] {
            let mut buf = BytesMut::from(text.as_bytes());
            assert!(
                matches!(
                    parse_response_head(&mut buf, 100),
                    Err(HeadError::Malformed(_))
                ),
                "{text:?}"
            );
        }
        // Empty lines before the status line are skipped (RFC 9112 §2.2); the head size limit
        // bounds how many.
        let mut buf = BytesMut::from(&b"\r\n\r\n\r\n"[..]);
        assert!(parse_response_head(&mut buf, 100).unwrap().is_none());
        buf.extend_from_slice(b"HTTP/1.1 200 OK\r\n\r\n");
        assert!(parse_response_head(&mut buf, 100).unwrap().is_some());
        assert!(buf.is_empty());
    }

    #[test]
    fn response_framing_follows_rfc_9112() {
        use ResponseFraming::*;
        let get = Method::GET;
        let cases: [(&Method, &str, ResponseFraming, bool); 14] = [
            (
                &get,
                "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n",
                Length(5),
                true,
            ),
            (
                &get,
                "HTTP/1.1 200 OK\r\ncontent-length: 5, 5\r\ncontent-length: 5\r\n",
                Length(5),
                true,
            ),
            (&get, "HTTP/1.1 200 OK\r\n", Eof, false),
            (
                &get,
                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n",
                Chunked,
                true,
            ),
            (
                &get,
                "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, Chunked\r\n",
                Chunked,
                true,
            ),
            (
                &get,
                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked, gzip\r\n",
                Eof,
                false,
            ),
            // Both fields: chunked wins, and the connection is not trusted again.
            (
                &get,
                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n",
                Chunked,
                false,
            ),
            (
                &get,
                "HTTP/1.1 200 OK\r\nconnection: keep-alive, Close\r\ncontent-length: 0\r\n",
                Length(0),
                false,
            ),
            (
                &get,
                "HTTP/1.0 200 OK\r\ncontent-length: 2\r\n",
                Length(2),
                false,
            ),
            (
                &Method::HEAD,
                "HTTP/1.1 200 OK\r\ncontent-length: 1234\r\n",
                Empty,
                true,
            ),
            (
                &Method::HEAD,
                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n",
                Empty,
                true,
            ),
            (&get, "HTTP/1.1 204 No Content\r\n", Empty, true),
            (
                &get,
                "HTTP/1.1 304 Not Modified\r\ncontent-length: 99\r\n",
                Empty,
                true,
            ),
            (&get, "HTTP/1.1 103 Early Hints\r\n", Empty, true),
        ];
        for (method, text, framing, keep_alive) in cases {
            let head = head_of(&format!("{text}\r\n"));
            assert_eq!(
                response_framing(method, &head).unwrap(),
                (framing, keep_alive),
                "{method} {text:?}"
            );
        }
        for bad in [
            "content-length: 5\r\ncontent-length: 6",
            "content-length: 5, 6",
            "content-length: -1",
            "content-length: +1",
            "content-length: 1 2",
            "content-length: ",
            "content-length: 99999999999999999999",
        ] {
            let head = head_of(&format!("HTTP/1.1 200 OK\r\n{bad}\r\n\r\n"));
            assert_eq!(
                response_framing(&get, &head).unwrap_err(),
                HeadError::InvalidContentLength,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn method_classes() {
        for m in [Method::GET, Method::HEAD, Method::DELETE, Method::OPTIONS] {
            assert!(empty_body_needs_no_length(&m), "{m}");
            assert!(is_idempotent(&m), "{m}");
        }
        assert!(is_idempotent(&Method::PUT));
        assert!(!empty_body_needs_no_length(&Method::PUT));
        for m in [Method::POST, Method::PATCH, Method::CONNECT] {
            assert!(!is_idempotent(&m), "{m}");
            assert!(!empty_body_needs_no_length(&m), "{m}");
        }
    }
}
