//! Header rules of a forwarding proxy: hop-by-hop removal (RFC 9110 §7.6.1) and the
//! `X-Forwarded-*` fields.
//!
//! The functions here are what [`HttpUpstream::forward`](crate::HttpUpstream::forward) applies;
//! they are public so that the gateway can apply the same rules on paths of its own.

use std::io::Write as _;
use std::net::SocketAddr;

use bytes::Bytes;
use http::header::{
    CONNECTION, HOST, HeaderMap, HeaderName, HeaderValue, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION,
    TE, TRAILER, TRANSFER_ENCODING, UPGRADE,
};

/// `X-Forwarded-For`: the chain of client addresses.
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Proto`: the scheme of the client's connection to the gateway.
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `X-Forwarded-Host`: the `Host` the client asked for.
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// `X-Request-Id`: the id a gateway gave the request ([`ClientInfo::request_id`]).
///
/// [`ClientInfo::request_id`]: crate::ClientInfo::request_id
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Fields that describe one connection and never cross a proxy, in either direction: RFC 9110
/// §7.6.1's list plus the legacy `Keep-Alive` and `Proxy-Connection`, `Trailer` (RFC 2616's list)
/// and the proxy authentication pair, which is meant for this hop only.
pub const HOP_BY_HOP: [HeaderName; 9] = [
    CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    TE,
    TRAILER,
    TRANSFER_ENCODING,
    UPGRADE,
    PROXY_AUTHENTICATE,
    PROXY_AUTHORIZATION,
];

/// Removes every field named in `Connection` (all its values), then every [`HOP_BY_HOP`] field.
///
/// Names in `Connection` that are not valid field names are ignored.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    if !has_hop_by_hop(headers) {
        return;
    }
    let nominated: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .filter_map(|token| HeaderName::from_bytes(token.trim_ascii()).ok())
        .collect();
    for name in nominated {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Whether a comma-separated field value (`Connection`, for one) lists `token`, in any case.
pub fn lists_token(value: &HeaderValue, token: &[u8]) -> bool {
    value
        .as_bytes()
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

/// A field name as `HeaderName::from_bytes` makes it, with the names on almost every request
/// and response matched first, in the two spellings they come in: lowercase (as HTTP/2 and many
/// servers write them) and capitalized (`Content-Type`, as curl and most clients do).
/// `from_bytes` lower-cases and checks each byte of a name through a table and then looks it
/// up among the standard names (about 100 instructions a name); a match here is a length
/// switch and a comparison or two. Hand-written because it is that shortcut: every other name
/// and spelling goes to `from_bytes`, which stays the one judge of validity.
pub fn name_from_bytes(name: &[u8]) -> Result<HeaderName, http::header::InvalidHeaderName> {
    use http::header;
    let known = match name.len() {
        4 => match name {
            b"host" | b"Host" => Some(header::HOST),
            b"date" | b"Date" => Some(header::DATE),
            b"vary" | b"Vary" => Some(header::VARY),
            b"etag" | b"ETag" => Some(header::ETAG),
            _ => None,
        },
        6 => match name {
            b"accept" | b"Accept" => Some(header::ACCEPT),
            b"server" | b"Server" => Some(header::SERVER),
            _ => None,
        },
        10 => match name {
            b"connection" | b"Connection" => Some(header::CONNECTION),
            b"user-agent" | b"User-Agent" => Some(header::USER_AGENT),
            _ => None,
        },
        12 => match name {
            b"content-type" | b"Content-Type" => Some(header::CONTENT_TYPE),
            _ => None,
        },
        13 => match name {
            b"authorization" | b"Authorization" => Some(header::AUTHORIZATION),
            b"cache-control" | b"Cache-Control" => Some(header::CACHE_CONTROL),
            b"last-modified" | b"Last-Modified" => Some(header::LAST_MODIFIED),
            _ => None,
        },
        14 => match name {
            b"content-length" | b"Content-Length" => Some(header::CONTENT_LENGTH),
            _ => None,
        },
        15 => match name {
            b"accept-encoding" | b"Accept-Encoding" => Some(header::ACCEPT_ENCODING),
            b"x-forwarded-for" | b"X-Forwarded-For" => Some(X_FORWARDED_FOR),
            _ => None,
        },
        16 => match name {
            b"content-encoding" | b"Content-Encoding" => Some(header::CONTENT_ENCODING),
            _ => None,
        },
        17 => match name {
            b"transfer-encoding" | b"Transfer-Encoding" => Some(header::TRANSFER_ENCODING),
            _ => None,
        },
        _ => None,
    };
    match known {
        Some(name) => Ok(name),
        None => HeaderName::from_bytes(name),
    }
}

/// Up to this many field names, [`first_value`] scans instead of hashing.
const SCAN_FIELDS: usize = 8;

/// The first value of `name`, as `headers.get(name)` gives it. A request or response has few
/// fields, and comparing names is cheap (an enum comparison for known ones, a length check for
/// most others) where `get` hashes the name first: up to a handful of fields, a scan costs
/// less. For the lookups made on every request.
pub fn first_value<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a HeaderValue> {
    if headers.keys_len() <= SCAN_FIELDS {
        headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    } else {
        headers.get(name)
    }
}

/// Whether `headers` has any [`HOP_BY_HOP`] field. The common message has none; this is one
/// pass over its names (comparisons of known names are enum comparisons) instead of a hashed
/// lookup for each of the ten names [`remove_hop_by_hop`] removes.
pub fn has_hop_by_hop(headers: &HeaderMap) -> bool {
    headers.keys().any(|name| HOP_BY_HOP.contains(name))
}

/// Whether a `TE` field lists `trailers`: the client will accept trailer fields. Read this
/// before [`remove_hop_by_hop`], which removes `TE`.
pub fn te_allows_trailers(headers: &HeaderMap) -> bool {
    headers
        .get_all(TE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .any(|member| {
            let token = member.split(|b| *b == b';').next().unwrap_or_default();
            token.trim_ascii().eq_ignore_ascii_case(b"trailers")
        })
}

/// A `Content-Length` value (RFC 9110 §8.6): ASCII digits only (no sign, no spaces), at most 19
/// of them, so it always fits a `u64`. The one strict reading both HTTP/1.1 codecs of the
/// gateway use, its server's and this crate's client.
pub fn parse_content_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        value
            .iter()
            .fold(0u64, |n, &d| n * 10 + u64::from(d - b'0')),
    )
}

/// Writes `ip` as text (IPv4-mapped IPv6 as IPv4) to the front of `out`; returns its length.
/// IPv4, the common case, is written octet by octet: `Display` goes through the formatting
/// machinery, which costs several times more on a path taken by every request.
fn write_ip(out: &mut [u8; 64], ip: std::net::IpAddr) -> usize {
    match ip.to_canonical() {
        std::net::IpAddr::V4(v4) => {
            let mut len = 0;
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out[len] = b'.';
                    len += 1;
                }
                let mut digits = itoa::Buffer::new();
                let digits = digits.format(octet).as_bytes();
                out[len..len + digits.len()].copy_from_slice(digits);
                len += digits.len();
            }
            len
        }
        v6 => {
            let mut w = &mut out[..];
            // An IPv6 address is at most 45 characters: it always fits.
            let _ = write!(w, "{v6}");
            64 - w.len()
        }
    }
}

/// Sets the `X-Forwarded-*` fields for a request from `client`:
///
/// - `X-Forwarded-For`: the client's IP (IPv4-mapped IPv6 shown as IPv4, IPv6 without brackets)
///   appended to whatever the request already carried, all values joined into one field;
/// - `X-Forwarded-Proto`: `http` or `https`, the client's connection, replacing any sent value;
/// - `X-Forwarded-Host`: `original_host`, replacing any sent value (removed when `None`).
///
/// Incoming values of `X-Forwarded-For` are kept as they are: whether to trust them is for the
/// upstream (or a gateway policy) to decide, with the last entry the one this hop vouches for.
pub fn set_forwarded(
    headers: &mut HeaderMap,
    client: SocketAddr,
    scheme: crate::Scheme,
    original_host: Option<&HeaderValue>,
) {
    // The client's address, written on the stack: the common request (no incoming
    // `X-Forwarded-For`) then costs one allocation, the header value's.
    let mut ip_buf = [0u8; 64];
    let ip_len = write_ip(&mut ip_buf, client.ip());
    let ip = &ip_buf[..ip_len];
    // Which of the two the request carries, from one pass over its names (most carry neither):
    // cheaper than a hashed lookup of each.
    let (mut has_for, mut has_host) = (false, false);
    for name in headers.keys() {
        has_for |= *name == X_FORWARDED_FOR;
        has_host |= *name == X_FORWARDED_HOST;
    }
    let mut chain: Vec<u8> = Vec::new();
    if has_for {
        for value in headers.get_all(&X_FORWARDED_FOR) {
            let value = value.as_bytes().trim_ascii();
            if value.is_empty() {
                continue;
            }
            if !chain.is_empty() {
                chain.extend_from_slice(b", ");
            }
            chain.extend_from_slice(value);
        }
    }
    let value = if chain.is_empty() {
        HeaderValue::from_bytes(ip)
    } else {
        chain.extend_from_slice(b", ");
        chain.extend_from_slice(ip);
        // Valid field values joined by ", " stay valid; if that ever fails, vouch for the
        // client only.
        HeaderValue::from_bytes(&chain).or_else(|_| HeaderValue::from_bytes(ip))
    };
    match value {
        Ok(v) => {
            headers.insert(X_FORWARDED_FOR, v);
        }
        Err(_) => {
            headers.remove(X_FORWARDED_FOR);
        }
    }
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(scheme.as_str()));
    match original_host {
        Some(host) => {
            headers.insert(X_FORWARDED_HOST, host.clone());
        }
        None if has_host => {
            headers.remove(X_FORWARDED_HOST);
        }
        None => {}
    }
}

/// What a forwarding proxy sets in an HTTP/1.1 request, written by the request's encoder after
/// the request's own fields instead of being put in its map: `Host`, the `X-Forwarded-*` trio
/// (as [`set_forwarded`] sets them) and, when the client accepts trailers, `TE: trailers` with
/// `Connection: te`. The encoder skips the map's own `Host` and `X-Forwarded-*` fields.
///
/// Why not the map: inserting four fields (hashing each name, a new value for
/// `X-Forwarded-For`) cost more than writing them, on the path every proxied request takes.
/// HTTP/2 requests carry their fields in a map to hyper, so they get [`set_forwarded`].
#[derive(Debug)]
pub(crate) struct Forwarding {
    host: HeaderValue,
    client: std::net::IpAddr,
    /// Whether the request carries `X-Forwarded-For`: its values then come first in the chain.
    has_for: bool,
    proto: &'static str,
    forwarded_host: Option<HeaderValue>,
    te_trailers: bool,
    /// The protocol a request asks to switch to (`Upgrade`), passed on with
    /// `Connection: upgrade`; `None` for every request but a WebSocket handshake.
    upgrade: Option<HeaderValue>,
    /// Written as `x-request-id` in place of the map's own (see `ClientInfo::request_id`).
    request_id: Option<HeaderValue>,
}

impl Forwarding {
    /// The fields for a request carrying `headers` (hop-by-hop fields already removed), from
    /// `client`, to be sent with `host`; `original_host` is the host the client asked for.
    pub(crate) fn new(
        headers: &HeaderMap,
        client: SocketAddr,
        scheme: crate::Scheme,
        host: HeaderValue,
        original_host: Option<HeaderValue>,
        te_trailers: bool,
        request_id: Option<HeaderValue>,
    ) -> Self {
        Forwarding {
            host,
            client: client.ip(),
            has_for: headers.keys().any(|name| *name == X_FORWARDED_FOR),
            proto: scheme.as_str(),
            forwarded_host: original_host,
            te_trailers,
            upgrade: None,
            request_id,
        }
    }

    /// Asks the upstream to switch to `protocol` (the client's `Upgrade` value).
    pub(crate) fn set_upgrade(&mut self, protocol: HeaderValue) {
        self.upgrade = Some(protocol);
    }

    /// Whether the encoder leaves out a field of the request's map by this name: these fields
    /// write it instead.
    pub(crate) fn replaces(&self, name: &HeaderName) -> bool {
        *name == HOST
            || *name == X_FORWARDED_FOR
            || *name == X_FORWARDED_PROTO
            || *name == X_FORWARDED_HOST
            || (self.request_id.is_some() && *name == X_REQUEST_ID)
    }

    /// The `Host` value.
    pub(crate) fn host(&self) -> &HeaderValue {
        &self.host
    }

    /// At most how many bytes [`write_fields`](Self::write_fields) writes, given the map it
    /// will read `X-Forwarded-For` from.
    pub(crate) fn len_hint(&self, headers: &HeaderMap) -> usize {
        let prior: usize = if self.has_for {
            headers
                .get_all(X_FORWARDED_FOR)
                .iter()
                .map(|v| v.len() + 2)
                .sum()
        } else {
            0
        };
        let host = self.forwarded_host.as_ref().map_or(0, |h| h.len() + 20);
        let upgrade = self.upgrade.as_ref().map_or(0, |u| u.len() + 40);
        let request_id = self.request_id.as_ref().map_or(0, |id| id.len() + 16);
        // Names, separators and line ends of the fixed fields; 45 bytes of address at most.
        self.host.len()
            + 8
            + prior
            + 45
            + 19
            + self.proto.len()
            + 21
            + host
            + 32
            + upgrade
            + request_id
    }

    /// Writes `X-Forwarded-For` (the values `headers` carries, then the client's address),
    /// `X-Forwarded-Proto`, `X-Request-Id` when one was given, `X-Forwarded-Host` when there
    /// is an original host, the `TE` field
    /// when the client accepts trailers, `Upgrade` when the request asks to switch protocols,
    /// and the `Connection` field naming those two. (`Host` is written first, by the encoder.)
    pub(crate) fn write_fields(&self, out: &mut Vec<u8>, headers: &HeaderMap) {
        out.extend_from_slice(b"x-forwarded-for: ");
        if self.has_for {
            for value in headers.get_all(X_FORWARDED_FOR) {
                let value = value.as_bytes().trim_ascii();
                if !value.is_empty() {
                    out.extend_from_slice(value);
                    out.extend_from_slice(b", ");
                }
            }
        }
        let mut ip = [0u8; 64];
        let len = write_ip(&mut ip, self.client);
        out.extend_from_slice(&ip[..len]);
        out.extend_from_slice(b"\r\nx-forwarded-proto: ");
        out.extend_from_slice(self.proto.as_bytes());
        out.extend_from_slice(b"\r\n");
        if let Some(id) = &self.request_id {
            out.extend_from_slice(b"x-request-id: ");
            out.extend_from_slice(id.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        if let Some(host) = &self.forwarded_host {
            out.extend_from_slice(b"x-forwarded-host: ");
            out.extend_from_slice(host.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        if self.te_trailers {
            out.extend_from_slice(b"te: trailers\r\n");
        }
        if let Some(protocol) = &self.upgrade {
            out.extend_from_slice(b"upgrade: ");
            out.extend_from_slice(protocol.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        match (self.te_trailers, self.upgrade.is_some()) {
            (false, false) => {}
            (true, false) => out.extend_from_slice(b"connection: te\r\n"),
            (false, true) => out.extend_from_slice(b"connection: upgrade\r\n"),
            (true, true) => out.extend_from_slice(b"connection: te, upgrade\r\n"),
        }
    }
}

/// Gives every value in `headers` bytes of its own, for fields an HTTP/2 connection's HPACK
/// encoder will see: a request to an HTTP/2 upstream, a response to an HTTP/2 client.
///
/// A value read off the wire shares the buffer its message was read into (2 KiB to 8 KiB, or
/// an HTTP/2 frame's). An HTTP/2 connection's HPACK encoder keeps the fields it indexes in its
/// dynamic table until they are evicted or the connection closes, so a shared value would keep
/// that whole buffer allocated long after its message was sent: up to one buffer per table
/// entry (over 100 per connection at the default 4 KiB table). Copied, an entry holds its own
/// bytes only, which the table's size bounds.
pub fn own_values(headers: &mut HeaderMap) {
    for value in headers.values_mut() {
        let sensitive = value.is_sensitive();
        // A copy of a valid value is valid; were it not, the shared one would simply stay.
        if let Ok(mut owned) =
            HeaderValue::from_maybe_shared(Bytes::copy_from_slice(value.as_bytes()))
        {
            owned.set_sensitive(sensitive);
            *value = owned;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Scheme;

    #[test]
    fn names_read_as_from_bytes_reads_them() {
        let known = [
            "host",
            "date",
            "vary",
            "etag",
            "accept",
            "server",
            "connection",
            "user-agent",
            "content-type",
            "authorization",
            "cache-control",
            "last-modified",
            "content-length",
            "accept-encoding",
            "x-forwarded-for",
            "content-encoding",
            "transfer-encoding",
        ];
        let capitalized = |name: &str| -> String {
            name.split('-')
                .map(|part| {
                    let mut chars = part.chars();
                    chars.next().map_or(String::new(), |c| {
                        c.to_ascii_uppercase().to_string() + chars.as_str()
                    })
                })
                .collect::<Vec<_>>()
                .join("-")
        };
        let mut spellings: Vec<String> = Vec::new();
        for name in known {
            spellings.push(name.to_owned());
            spellings.push(capitalized(name));
            spellings.push(name.to_ascii_uppercase());
        }
        spellings.push("ETag".to_owned());
        // Not on the list, or not names at all: `from_bytes` decides.
        for other in [
            "x-request-id",
            "X-Custom",
            "hosts",
            "dat",
            "content-typ",
            "bad name",
            "",
            "ho\u{e9}t",
            "content type",
            "Content-Length:",
        ] {
            spellings.push(other.to_owned());
        }
        for spelling in &spellings {
            let fast = name_from_bytes(spelling.as_bytes()).ok();
            let slow = HeaderName::from_bytes(spelling.as_bytes()).ok();
            assert_eq!(fast, slow, "{spelling:?}");
        }
        // The shortcut is taken for both spellings of each listed name.
        assert_eq!(
            name_from_bytes(b"Content-Type").unwrap(),
            http::header::CONTENT_TYPE
        );
        assert_eq!(
            name_from_bytes(b"X-Forwarded-For").unwrap(),
            X_FORWARDED_FOR
        );
    }

    #[test]
    fn first_value_reads_as_get_does_scanning_or_hashing() {
        let request_id = HeaderName::from_static("x-request-id");
        let (traceparent, tracestate) = (
            HeaderName::from_static("traceparent"),
            HeaderName::from_static("tracestate"),
        );
        let mut headers = HeaderMap::new();
        for fields in 0..32 {
            for name in [&request_id, &traceparent, &HOST] {
                assert_eq!(
                    first_value(&headers, name),
                    headers.get(name),
                    "{fields} fields"
                );
            }
            // Alternately a field the lookups look for (a second value at times) and others.
            match fields % 4 {
                0 => headers.append(&traceparent, HeaderValue::from(fields)),
                1 => headers.append(&request_id, HeaderValue::from(fields)),
                2 => headers.append(HOST, HeaderValue::from(fields)),
                _ => headers.append(
                    HeaderName::from_bytes(format!("x-other-{fields}").as_bytes()).unwrap(),
                    HeaderValue::from(fields),
                ),
            };
        }
        assert!(headers.keys_len() > SCAN_FIELDS, "past the scanned size");
        assert_eq!(first_value(&headers, &request_id).unwrap(), "1");
        assert_eq!(first_value(&headers, &tracestate), None);
    }

    /// Bytes whose owner says when it is dropped.
    struct Watched(Vec<u8>, std::sync::Arc<std::sync::atomic::AtomicBool>);

    impl AsRef<[u8]> for Watched {
        fn as_ref(&self) -> &[u8] {
            &self.0
        }
    }

    impl Drop for Watched {
        fn drop(&mut self) {
            self.1.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[test]
    fn owned_values_let_go_of_the_buffer_they_were_read_into() {
        let dropped = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let buffer = Bytes::from_owner(Watched(
            b"one-valuesecret".to_vec(),
            std::sync::Arc::clone(&dropped),
        ));
        let mut headers = HeaderMap::new();
        headers.append(
            "x-a",
            HeaderValue::from_maybe_shared(buffer.slice(..3)).unwrap(),
        );
        headers.append(
            "x-a",
            HeaderValue::from_maybe_shared(buffer.slice(4..9)).unwrap(),
        );
        let mut secret = HeaderValue::from_maybe_shared(buffer.slice(9..)).unwrap();
        secret.set_sensitive(true);
        headers.insert("authorization", secret);
        headers.insert("x-static", HeaderValue::from_static("kept"));
        drop(buffer);
        assert!(!dropped.load(std::sync::atomic::Ordering::SeqCst));

        own_values(&mut headers);
        assert!(
            dropped.load(std::sync::atomic::Ordering::SeqCst),
            "a value still shares the buffer"
        );
        let a: Vec<_> = headers.get_all("x-a").iter().collect();
        assert_eq!(a, ["one", "value"]);
        assert_eq!(headers["authorization"], "secret");
        assert!(headers["authorization"].is_sensitive());
        assert!(!headers["x-a"].is_sensitive());
        assert_eq!(headers["x-static"], "kept");
        assert_eq!(headers.len(), 4);
    }

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        m
    }

    #[test]
    fn removes_listed_and_nominated_fields() {
        let mut m = map(&[
            ("connection", "keep-alive, X-Secret ,x-other"),
            ("connection", "x-third, , bad name"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("te", "trailers"),
            ("trailer", "x-checksum"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("proxy-authenticate", "Basic"),
            ("proxy-authorization", "Basic Zm9v"),
            ("x-secret", "1"),
            ("x-other", "2"),
            ("x-third", "3"),
            ("x-end-to-end", "kept"),
            ("content-type", "text/plain"),
            ("authorization", "Bearer t"),
        ]);
        remove_hop_by_hop(&mut m);
        let mut left: Vec<_> = m.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["authorization", "content-type", "x-end-to-end"]);
    }

    #[test]
    fn content_lengths_are_read_strictly() {
        assert_eq!(parse_content_length(b"0"), Some(0));
        assert_eq!(parse_content_length(b"0042"), Some(42));
        assert_eq!(
            parse_content_length(b"9999999999999999999"),
            Some(9_999_999_999_999_999_999)
        );
        for bad in [
            &b""[..],
            b"+1",
            b"-1",
            b" 1",
            b"1 ",
            b"1,1",
            b"0x10",
            b"10000000000000000000",
        ] {
            assert_eq!(parse_content_length(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        let mut out = [0u8; 64];
        let mut check = |ip: std::net::IpAddr| {
            let len = write_ip(&mut out, ip);
            assert_eq!(
                std::str::from_utf8(&out[..len]).unwrap(),
                ip.to_canonical().to_string()
            );
        };
        for octet in 0..=255u8 {
            check(std::net::Ipv4Addr::new(octet, 255 - octet, octet / 3, 9).into());
        }
        check("255.255.255.255".parse().unwrap());
        check("::ffff:10.0.0.1".parse().unwrap());
        check("2001:db8::8a2e:370:7334".parse().unwrap());
        check("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff".parse().unwrap());
    }

    #[test]
    fn te_trailers_is_detected() {
        assert!(te_allows_trailers(&map(&[("te", "trailers")])));
        assert!(te_allows_trailers(&map(&[("te", "gzip;q=0.5, Trailers")])));
        assert!(te_allows_trailers(&map(&[
            ("te", "gzip"),
            ("te", "trailers;q=1")
        ])));
        assert!(!te_allows_trailers(&map(&[("te", "gzip, deflate")])));
        assert!(!te_allows_trailers(&HeaderMap::new()));
    }

    #[test]
    fn forwarded_for_appends_and_others_replace() {
        let mut m = map(&[
            ("x-forwarded-for", "203.0.113.7"),
            ("x-forwarded-for", " 198.51.100.1 "),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "spoofed"),
        ]);
        let host = HeaderValue::from_static("api.example.com");
        set_forwarded(
            &mut m,
            "10.1.2.3:5555".parse().unwrap(),
            Scheme::Http,
            Some(&host),
        );
        assert_eq!(m["x-forwarded-for"], "203.0.113.7, 198.51.100.1, 10.1.2.3");
        assert_eq!(m.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(m["x-forwarded-proto"], "http");
        assert_eq!(m["x-forwarded-host"], "api.example.com");

        let mut m = map(&[("x-forwarded-host", "spoofed")]);
        set_forwarded(
            &mut m,
            "[::ffff:127.0.0.1]:1".parse().unwrap(),
            Scheme::Https,
            None,
        );
        assert_eq!(m["x-forwarded-for"], "127.0.0.1");
        assert_eq!(m["x-forwarded-proto"], "https");
        assert!(!m.contains_key("x-forwarded-host"));

        let mut m = HeaderMap::new();
        set_forwarded(
            &mut m,
            "[2001:db8::1]:1".parse().unwrap(),
            Scheme::Https,
            None,
        );
        assert_eq!(m["x-forwarded-for"], "2001:db8::1");

        // The longest an address prints.
        let mut m = HeaderMap::new();
        set_forwarded(
            &mut m,
            "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe]:1"
                .parse()
                .unwrap(),
            Scheme::Http,
            None,
        );
        assert_eq!(
            m["x-forwarded-for"],
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe"
        );
    }
}
