//! [`HttpUpstream`]: the clients (our own for HTTP/1.1, hyper-util's for h2c) and the one
//! forwarding function.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONNECTION, HOST, HeaderMap, HeaderValue, TE};
use http::{Extensions, Request, Response, Uri, Version};
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::body::UpstreamBody;
use crate::client::{EncodedRequest, H1Client, HeadDeadline};
use crate::config::{BaseUrl, UpstreamConfig, UpstreamConfigError};
use crate::connect::{CountingConnector, TcpConnector};
use crate::error::{BoxError, RequestBodyError, UpstreamError};
use crate::headers::Forwarding;
use crate::{headers, target};

/// The body type the HTTP/2 client sends: the caller's body, boxed, its error wrapped.
type H2RequestBody = UnsyncBoxBody<Bytes, BoxError>;

/// The scheme of the downstream (client-to-gateway) connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// Plain HTTP.
    Http,
    /// HTTP over TLS.
    Https,
}

impl Scheme {
    /// `"http"` or `"https"`, as `X-Forwarded-Proto` carries it.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// What the gateway knows about the downstream connection a request came in on, and the id it
/// gave the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientInfo {
    /// The client's address (the TCP peer of the gateway).
    pub addr: SocketAddr,
    /// Whether the client's connection is TLS.
    pub scheme: Scheme,
    /// Sent as `x-request-id`, in place of any the request carries; `None` passes the request's
    /// own on. (For HTTP/1.1 the encoder writes it, as it writes `X-Forwarded-*`, instead of
    /// its being inserted into the request's map: one field written against a hashed insert.)
    pub request_id: Option<HeaderValue>,
}

/// One HTTP upstream: a base URL and a pool of keep-alive connections to it.
///
/// Cheap to clone; clones share the pool. See the crate docs for what
/// [`forward`](Self::forward) does to a request.
#[derive(Clone, Debug)]
pub struct HttpUpstream {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    client: Protocol,
    base: BaseUrl,
    base_url: String,
    /// The `Host` value sent when the downstream one is not preserved.
    host: HeaderValue,
    preserve_host: bool,
    http2: bool,
    open: Arc<AtomicUsize>,
    body_idle_timeout: Duration,
}

/// The client for the upstream's protocol.
#[derive(Debug)]
enum Protocol {
    /// Our own HTTP/1.1 client, driven by the caller's task (`client.rs`).
    Http1(H1Client),
    /// hyper-util's pooled client speaking h2c with prior knowledge: one multiplexed connection
    /// driven by its own task.
    Http2(Client<CountingConnector, H2RequestBody>),
}

impl HttpUpstream {
    /// Validates `config` and builds the client. No connection is opened until the first
    /// request; nothing is spawned here, so this works inside or outside a tokio runtime, but
    /// [`forward`](Self::forward) must run inside one (with time enabled).
    pub fn new(config: UpstreamConfig) -> Result<Self, UpstreamConfigError> {
        config.validate()?;
        let base = config.base()?;
        let host = HeaderValue::from_str(base.authority.as_str()).map_err(|e| {
            UpstreamConfigError::InvalidBaseUrl {
                url: config.base_url.clone(),
                reason: e.to_string(),
            }
        })?;

        let open = Arc::new(AtomicUsize::new(0));
        let client = if config.http2_prior_knowledge {
            let mut http = HttpConnector::new();
            http.enforce_http(true);
            http.set_nodelay(true);
            http.set_connect_timeout(Some(config.connect_timeout));
            http.set_send_buffer_size(config.tcp_send_buffer_size);
            http.set_recv_buffer_size(config.tcp_recv_buffer_size);
            let connector = CountingConnector::new(http, Arc::clone(&open));
            Protocol::Http2(
                Client::builder(TokioExecutor::new())
                    .timer(TokioTimer::new())
                    .pool_timer(TokioTimer::new())
                    .pool_idle_timeout(config.pool_idle_timeout)
                    .pool_max_idle_per_host(config.pool_max_idle_per_host)
                    .http2_only(true)
                    .build(connector),
            )
        } else {
            let connector = TcpConnector::new(
                &base.authority,
                config.connect_timeout,
                config.tcp_send_buffer_size,
                config.tcp_recv_buffer_size,
                Arc::clone(&open),
            );
            Protocol::Http1(H1Client::new(
                &config,
                connector,
                base.authority.as_str().to_owned(),
            ))
        };

        Ok(HttpUpstream {
            inner: Arc::new(Inner {
                client,
                base,
                base_url: config.base_url,
                host,
                preserve_host: config.preserve_host,
                body_idle_timeout: config.body_idle_timeout,
                http2: config.http2_prior_knowledge,
                open,
            }),
        })
    }

    /// The base URL requests go to, as configured.
    pub fn base_url(&self) -> &str {
        &self.inner.base_url
    }

    /// Upstream connections open right now, busy or idle in the pool (a gauge for metrics).
    pub fn open_connections(&self) -> usize {
        self.inner.open.load(Ordering::Relaxed)
    }

    /// HTTP/1.1 connections idle in the pool right now, at most
    /// [`UpstreamConfig::pool_max_idle_per_host`] (a gauge for metrics). Always 0 for h2c, whose
    /// pool hyper-util keeps.
    pub fn idle_connections(&self) -> usize {
        match &self.inner.client {
            Protocol::Http1(client) => client.idle_connections(),
            Protocol::Http2(_) => 0,
        }
    }

    /// Forwards `req` to the upstream and returns its response head with the body unread.
    ///
    /// - `path_and_query` is appended to the base URL's path (see the crate docs for the joining
    ///   rules); `req`'s own URI only supplies the original host.
    /// - `client` describes the downstream connection, for the `X-Forwarded-*` fields.
    /// - `timeout` bounds everything up to the response head: pool checkout, connect, sending the
    ///   head, and as much of the request body as the upstream reads before it answers. Past it
    ///   the result is [`UpstreamError::Timeout`]. Reading the returned body is not bounded by
    ///   it: the caller bounds that (and its size).
    ///
    /// The request body is streamed as the upstream reads it (a small body of known size is
    /// sent with the head); the response body is read from the socket only as the caller polls
    /// it. Neither is buffered whole. Over HTTP/1.1 no other task is involved: this future and
    /// then the returned body do all the I/O.
    ///
    /// Cancel safety: dropping the future at any point is safe. A request in flight is abandoned
    /// and its connection closed, never returned to the pool half-used.
    ///
    /// Not an `async fn` of its own (nor is [`forward_as_is`](Self::forward_as_is)): each
    /// level of `async fn` is a future its caller copies in whole when it starts awaiting it,
    /// and this one would only pass its arguments on.
    pub fn forward<B>(
        &self,
        req: Request<B>,
        path_and_query: &str,
        client: &ClientInfo,
        timeout: Duration,
    ) -> impl Future<Output = Result<Response<UpstreamBody>, UpstreamError>> + Send
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let (parts, body) = req.into_parts();
        self.send(
            parts,
            body,
            UpstreamPath::Given(path_and_query),
            client,
            timeout,
            false,
        )
    }

    /// [`forward`](Self::forward) with the request's own path and query, less `strip_prefix`
    /// when the path starts with it: what a gateway route forwarding a whole path subtree
    /// sends. The path is not copied on the way.
    pub fn forward_as_is<B>(
        &self,
        req: Request<B>,
        strip_prefix: Option<&str>,
        client: &ClientInfo,
        timeout: Duration,
    ) -> impl Future<Output = Result<Response<UpstreamBody>, UpstreamError>> + Send
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        self.forward_as_is_switching(req, strip_prefix, client, timeout, false)
    }

    /// [`forward_as_is`](Self::forward_as_is), and with `switch` for a request asking to switch
    /// protocols (a WebSocket handshake: `Connection: upgrade` and `Upgrade`): its `Upgrade`
    /// field is then passed on, with `Connection: upgrade`, instead of being removed as
    /// hop-by-hop. If the upstream answers `101 Switching Protocols`, the response carries its
    /// `Upgrade` and `Connection: upgrade` fields and its body holds the connection
    /// ([`UpstreamBody::take_tunnel`]), which is then the caller's to splice to its client.
    /// Any other answer is an ordinary response.
    ///
    /// Which protocols may be switched to is the caller's to decide (a gateway allows
    /// `websocket` only: a switch to `h2c` would let a client send requests the gateway never
    /// sees). Only HTTP/1.1 upstreams can switch ([`supports_upgrades`](Self::supports_upgrades));
    /// for h2c ones, and for a request with a body, `switch` is ignored.
    ///
    /// One function with a flag rather than one per kind of request: a caller then awaits one
    /// future type at one place, and the compiler inlines its state machine into the caller's
    /// (a second await of it cost the proxied request path about 1 % in a paired run).
    pub fn forward_as_is_switching<B>(
        &self,
        req: Request<B>,
        strip_prefix: Option<&str>,
        client: &ClientInfo,
        timeout: Duration,
        switch: bool,
    ) -> impl Future<Output = Result<Response<UpstreamBody>, UpstreamError>> + Send
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let (parts, body) = req.into_parts();
        let switch = switch && body.size_hint().exact() == Some(0);
        self.send(
            parts,
            body,
            UpstreamPath::AsIs { strip_prefix },
            client,
            timeout,
            switch,
        )
    }

    /// Whether this upstream can switch protocols (WebSocket): it is spoken to in HTTP/1.1.
    pub fn supports_upgrades(&self) -> bool {
        matches!(self.inner.client, Protocol::Http1(_))
    }

    /// Prepares the upstream request now, then returns the future that sends it. For an
    /// HTTP/1.1 upstream the head is encoded here, before any future exists: the downstream
    /// request's head (224 bytes) is read where it lies and dropped, never moved into the
    /// future and along with it from one caller's state to the next, and the future holds
    /// only the encoded head and the body.
    fn send<B>(
        &self,
        mut parts: http::request::Parts,
        body: B,
        path: UpstreamPath<'_>,
        client: &ClientInfo,
        timeout: Duration,
        upgrade: bool,
    ) -> impl Future<Output = Result<Response<UpstreamBody>, UpstreamError>> + Send + use<'_, B>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let inner = &*self.inner;
        let target = match path {
            UpstreamPath::Given(path_and_query) => target::join_target(&inner.base, path_and_query),
            UpstreamPath::AsIs { strip_prefix } => {
                let uri = &parts.uri;
                let path_and_query = uri.path_and_query().map_or("/", |pq| pq.as_str());
                let path_and_query = match strip_prefix {
                    Some(prefix) if uri.path().starts_with(prefix) => {
                        &path_and_query[prefix.len()..]
                    }
                    _ => path_and_query,
                };
                target::join_target(&inner.base, path_and_query)
            }
        };
        if let Ok(target) = &target {
            tracing::debug!(
                method = %parts.method,
                authority = %inner.base.authority,
                target = &**target,
                client = %client.addr,
                "forwarding to http upstream"
            );
        }
        let prepared = match (target, &inner.client) {
            (Err(e), _) => Prepared::Failed(e),
            (Ok(target), Protocol::Http1(h1)) => {
                // Read before `forwarding` removes it with the other hop-by-hop fields.
                let switch_to = upgrade
                    .then(|| parts.headers.get(http::header::UPGRADE).cloned())
                    .flatten();
                let switch = switch_to.is_some();
                let mut forwarding = self.forwarding(&mut parts.headers, &parts.uri, client);
                if let Some(protocol) = switch_to {
                    forwarding.set_upgrade(protocol);
                }
                let request = h1.encode(
                    &parts.method,
                    &target,
                    &parts.headers,
                    &forwarding,
                    &body.size_hint(),
                );
                // Nothing of the downstream request is needed past this point. Its URI and
                // fields may share the buffer it was read into, which would otherwise stay
                // allocated for as long as the upstream takes to answer.
                drop(parts);
                Prepared::Http1 {
                    h1,
                    request,
                    switch,
                    // Bounded inside: a per-request timer wrapped around this would be
                    // registered and removed again for every request (see `Conn::arm`).
                    deadline: HeadDeadline::after(timeout),
                }
            }
            (Ok(target), Protocol::Http2(h2)) => {
                self.rewrite_request_headers(&mut parts.headers, &parts.uri, client);
                headers::own_values(&mut parts.headers);
                match target::absolute_uri(&inner.base, target) {
                    Ok(uri) => {
                        parts.uri = uri;
                        parts.version = Version::HTTP_2;
                        // Extensions belong to the downstream connection (hyper's upgrade
                        // handle, header case maps); none of them should steer the upstream
                        // request.
                        parts.extensions = Extensions::new();
                        Prepared::Http2 {
                            h2,
                            parts: Box::new(parts),
                        }
                    }
                    Err(e) => Prepared::Failed(e),
                }
            }
        };
        async move {
            let result =
                match prepared {
                    Prepared::Failed(e) => Err(e),
                    Prepared::Http1 {
                        h1,
                        request,
                        switch,
                        deadline,
                    } => h1
                        .send(request, body, deadline, switch)
                        .await
                        .map(|response| {
                            response.map(|body| UpstreamBody::h1(body, inner.body_idle_timeout))
                        }),
                    Prepared::Http2 { h2, parts } => {
                        let body: H2RequestBody = body
                            .map_err(|e| -> BoxError {
                                Box::new(RequestBodyError(Arc::from(e.into())))
                            })
                            .boxed_unsync();
                        let sent = h2.request(Request::from_parts(*parts, body));
                        match tokio::time::timeout(timeout, sent).await {
                            Err(_elapsed) => Err(UpstreamError::Timeout { timeout }),
                            Ok(Err(e)) => {
                                Err(UpstreamError::from_client(e, inner.base.authority.as_str()))
                            }
                            Ok(Ok(mut response)) => {
                                headers::remove_hop_by_hop(response.headers_mut());
                                Ok(response
                                    .map(|body| UpstreamBody::h2(body, inner.body_idle_timeout)))
                            }
                        }
                    }
                };
            match &result {
                Ok(response) => tracing::debug!(status = %response.status(), "upstream answered"),
                Err(error) => {
                    tracing::debug!(%error, status = %error.http_status(), "upstream failed")
                }
            }
            result
        }
    }

    /// For an HTTP/1.1 upstream request: hop-by-hop removal from `headers`, and the `Host`,
    /// `X-Forwarded-*` and `TE` fields its encoder writes. The same rules as
    /// [`rewrite_request_headers`](Self::rewrite_request_headers), which puts them in the map
    /// (for HTTP/2); a test holds the two to the same result.
    fn forwarding(&self, headers: &mut HeaderMap, uri: &Uri, client: &ClientInfo) -> Forwarding {
        let inner = &*self.inner;
        let (original_host, trailers) = strip_hop_by_hop(headers, uri);
        let host = match (&original_host, inner.preserve_host) {
            (Some(host), true) => host.clone(),
            _ => inner.host.clone(),
        };
        Forwarding::new(
            headers,
            client.addr,
            client.scheme,
            host,
            original_host,
            trailers,
            client.request_id.clone(),
        )
    }

    /// Hop-by-hop removal, `X-Forwarded-*`, `Host` and `TE` for the upstream request, in its
    /// map (HTTP/2; HTTP/1.1 requests get the same fields from [`forwarding`](Self::forwarding)).
    fn rewrite_request_headers(&self, headers: &mut HeaderMap, uri: &Uri, client: &ClientInfo) {
        let inner = &*self.inner;
        let (original_host, trailers) = strip_hop_by_hop(headers, uri);
        headers::set_forwarded(headers, client.addr, client.scheme, original_host.as_ref());
        if let Some(id) = &client.request_id {
            headers.insert(headers::X_REQUEST_ID, id.clone());
        }
        match (&original_host, inner.preserve_host, inner.http2) {
            (Some(host), true, _) => {
                headers.insert(HOST, host.clone());
            }
            // HTTP/2 carries the authority in the URI (`:authority`), not in `Host`.
            (_, _, true) => {
                headers.remove(HOST);
            }
            _ => {
                headers.insert(HOST, inner.host.clone());
            }
        }
        // `TE: trailers` is the one TE value worth passing on: the client reads trailers, so the
        // upstream may send them. HTTP/1.1 requires `TE` to be named in `Connection` too.
        if trailers {
            headers.insert(TE, HeaderValue::from_static("trailers"));
            if !inner.http2 {
                headers.insert(CONNECTION, HeaderValue::from_static("te"));
            }
        }
    }
}

/// What both header rewrites start with: the host the client asked for (read first), whether
/// its `TE` accepts trailers, and the hop-by-hop fields removed. `TE` is hop-by-hop: a request
/// with no hop-by-hop field (most) has no `TE: trailers` to pass on and nothing to remove.
fn strip_hop_by_hop(headers: &mut HeaderMap, uri: &Uri) -> (Option<HeaderValue>, bool) {
    let original_host = original_host(uri, headers);
    let hop_by_hop = headers::has_hop_by_hop(headers);
    let trailers = hop_by_hop && headers::te_allows_trailers(headers);
    if hop_by_hop {
        headers::remove_hop_by_hop(headers);
    }
    (original_host, trailers)
}

/// Which path and query an upstream request gets, appended to the base URL's path.
/// An upstream request made ready to send: what the future returned by `HttpUpstream::send`
/// holds.
enum Prepared<'a> {
    /// The head encoded; the downstream request's own head is gone.
    Http1 {
        h1: &'a H1Client,
        request: EncodedRequest,
        switch: bool,
        deadline: HeadDeadline,
    },
    /// hyper's client takes a `Request`: the head, rewritten, goes along (boxed, so that the
    /// HTTP/1.1 requests' futures are not as large as it).
    Http2 {
        h2: &'a Client<CountingConnector, H2RequestBody>,
        parts: Box<http::request::Parts>,
    },
    /// The request cannot be sent (its target does not make a valid URI).
    Failed(UpstreamError),
}

enum UpstreamPath<'a> {
    /// Given by the caller.
    Given(&'a str),
    /// The request's own, less `strip_prefix` when its path starts with it.
    AsIs { strip_prefix: Option<&'a str> },
}

/// The host the client asked for: the request target's authority when it had one (absolute form
/// or HTTP/2 `:authority`, which take precedence over `Host`), else the `Host` field. User info
/// is never included.
fn original_host(uri: &Uri, headers: &HeaderMap) -> Option<HeaderValue> {
    if let Some(authority) = uri.authority() {
        let host_port = authority
            .as_str()
            .rsplit_once('@')
            .map_or(authority.as_str(), |(_, hp)| hp);
        if let Ok(v) = HeaderValue::from_str(host_port) {
            return Some(v);
        }
    }
    headers::first_value(headers, &HOST).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn original_host_prefers_the_uri_authority() {
        let mut h = HeaderMap::new();
        h.insert(HOST, HeaderValue::from_static("from-header"));
        let origin_form: Uri = "/a".parse().unwrap();
        assert_eq!(original_host(&origin_form, &h).unwrap(), "from-header");
        let absolute: Uri = "http://user@from-uri:8080/a".parse().unwrap();
        assert_eq!(original_host(&absolute, &h).unwrap(), "from-uri:8080");
        assert!(original_host(&origin_form, &HeaderMap::new()).is_none());
    }

    /// The fields an HTTP/1.1 request gets from [`HttpUpstream::forwarding`] (written by the
    /// encoder) are the ones [`HttpUpstream::rewrite_request_headers`] puts in the map.
    #[test]
    fn http1_forwarding_fields_match_the_map_rewrite() {
        let xffs: [&[&str]; 3] = [
            &[],
            &["203.0.113.9"],
            &["203.0.113.9, 198.51.100.1", " 2001:db8::1 "],
        ];
        let clients: [SocketAddr; 2] = [
            "10.0.0.5:4000".parse().unwrap(),
            "[2001:db8::7]:4000".parse().unwrap(),
        ];
        let mut cases = 0;
        for preserve_host in [false, true] {
            let up = HttpUpstream::new(UpstreamConfig {
                preserve_host,
                ..UpstreamConfig::new("http://127.0.0.1:1/p")
            })
            .unwrap();
            for uri in ["/x", "http://user@abs.example:81/x"] {
                for host in [None, Some("public.example")] {
                    for xff in xffs {
                        for (te, others) in [
                            (None, false),
                            (Some("trailers"), true),
                            (Some("gzip, trailers;q=0.5"), false),
                            (Some("gzip"), true),
                        ] {
                            for (client_addr, scheme) in
                                clients.into_iter().zip([Scheme::Http, Scheme::Https])
                            {
                                let uri: Uri = uri.parse().unwrap();
                                let mut headers = HeaderMap::new();
                                headers.append("x-app", HeaderValue::from_static("1"));
                                if let Some(host) = host {
                                    headers.insert(HOST, HeaderValue::from_static(host));
                                }
                                for value in xff {
                                    headers
                                        .append("x-forwarded-for", HeaderValue::from_static(value));
                                }
                                if let Some(te) = te {
                                    headers.insert(TE, HeaderValue::from_static(te));
                                    headers
                                        .insert(CONNECTION, HeaderValue::from_static("te, x-hop"));
                                    headers.insert("x-hop", HeaderValue::from_static("gone"));
                                }
                                if others {
                                    headers.insert(
                                        "x-forwarded-proto",
                                        HeaderValue::from_static("ftp"),
                                    );
                                    headers.insert(
                                        "x-forwarded-host",
                                        HeaderValue::from_static("spoofed"),
                                    );
                                    headers.insert(
                                        "x-request-id",
                                        HeaderValue::from_static("client-id"),
                                    );
                                }
                                // An id given replaces the client's; none keeps it.
                                let client = ClientInfo {
                                    addr: client_addr,
                                    scheme,
                                    request_id: (scheme == Scheme::Https)
                                        .then(|| HeaderValue::from_static("gw-1")),
                                };

                                let mut by_map = headers.clone();
                                up.rewrite_request_headers(&mut by_map, &uri, &client);
                                let mut expected: Vec<(String, String)> = by_map
                                    .iter()
                                    .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_owned()))
                                    .collect();
                                expected.sort();

                                let mut written = headers.clone();
                                let forwarding = up.forwarding(&mut written, &uri, &client);
                                let mut out = Vec::new();
                                crate::h1::encode_request_head(
                                    &mut out,
                                    &http::Method::GET,
                                    "/x",
                                    &written,
                                    &forwarding,
                                    crate::h1::RequestFraming::None,
                                );
                                let text = String::from_utf8(out).unwrap();
                                let mut got: Vec<(String, String)> = text
                                    .lines()
                                    .skip(1)
                                    .filter(|l| !l.is_empty())
                                    .map(|l| {
                                        let (n, v) = l.split_once(": ").unwrap();
                                        (n.to_owned(), v.to_owned())
                                    })
                                    .collect();
                                got.sort();
                                assert_eq!(
                                    got, expected,
                                    "preserve_host {preserve_host}, {uri}, host {host:?}, xff {xff:?}, te {te:?}, {client_addr}"
                                );
                                cases += 1;
                            }
                        }
                    }
                }
            }
        }
        assert_eq!(cases, 2 * 2 * 2 * 3 * 4 * 2);
    }

    #[test]
    fn new_works_outside_a_runtime_and_rejects_bad_config() {
        let up = HttpUpstream::new(UpstreamConfig::new("http://127.0.0.1:1/p")).unwrap();
        assert_eq!(up.base_url(), "http://127.0.0.1:1/p");
        assert_eq!(up.open_connections(), 0);
        assert!(HttpUpstream::new(UpstreamConfig::new("https://x")).is_err());
    }
}
