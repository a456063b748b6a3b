//! End-to-end behaviour of `HttpUpstream::forward` against real hyper backends on loopback.

mod common;

use std::io;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{BoxBody, WAIT, backend, client, empty, full, read_all, silent_backend};
use futures::StreamExt as _;
use futures::stream;
use http::{HeaderMap, Method, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use tideway_http_upstream::{HttpUpstream, UpstreamConfig, UpstreamError};
use tokio::sync::mpsc;

/// What a recording backend saw of one request.
#[derive(Debug)]
struct Seen {
    method: Method,
    uri: String,
    version: Version,
    headers: HeaderMap,
    body: Bytes,
}

/// A backend that reports each request on a channel and answers 201 with a streamed
/// `echo:<body>`, some end-to-end fields and a set of hop-by-hop ones.
async fn recording_backend() -> (common::Backend, mpsc::Receiver<Seen>) {
    let (tx, rx) = mpsc::channel(64);
    let b = backend(move |req: Request<hyper::body::Incoming>| {
        let tx = tx.clone();
        async move {
            let (parts, body) = req.into_parts();
            let body = read_all(body).await;
            let mut echo = b"echo:".to_vec();
            echo.extend_from_slice(&body);
            let _ = tx
                .send(Seen {
                    method: parts.method,
                    uri: parts.uri.to_string(),
                    version: parts.version,
                    headers: parts.headers,
                    body,
                })
                .await;
            // A streamed body: hyper frames it with `Transfer-Encoding: chunked`.
            let chunks = stream::iter([Ok::<_, BoxError>(Frame::data(Bytes::from(echo)))]);
            Response::builder()
                .status(StatusCode::CREATED)
                .header("x-end", "kept")
                .header("content-type", "text/plain")
                .header("connection", "x-drop-me")
                .header("x-drop-me", "1")
                .header("keep-alive", "timeout=5")
                .header("proxy-authenticate", "Basic realm=x")
                .header("trailer", "x-checksum")
                .body(StreamBody::new(chunks).boxed_unsync())
                .unwrap()
        }
    })
    .await;
    (b, rx)
}

type BoxError = tideway_http_upstream::BoxError;

async fn seen(rx: &mut mpsc::Receiver<Seen>) -> Seen {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .unwrap()
        .unwrap()
}

fn upstream(base_url: String) -> HttpUpstream {
    HttpUpstream::new(UpstreamConfig::new(base_url)).unwrap()
}

#[tokio::test]
async fn get_round_trip_passes_status_headers_body_and_query() {
    let (b, mut rx) = recording_backend().await;
    let up = upstream(b.url("/prefix"));
    let req = Request::get("/public/items/7?x=1&y=two%20words")
        .header("accept", "text/plain")
        .body(empty())
        .unwrap();
    let resp = up
        .forward(req, "/items/7?x=1&y=two%20words", &client(), WAIT)
        .await
        .unwrap();
    let s = seen(&mut rx).await;
    assert_eq!(s.method, Method::GET);
    assert_eq!(s.uri, "/prefix/items/7?x=1&y=two%20words");
    assert_eq!(s.version, Version::HTTP_11);
    assert_eq!(s.headers["accept"], "text/plain");

    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(resp.headers()["x-end"], "kept");
    assert_eq!(resp.headers()["content-type"], "text/plain");
    assert_eq!(read_all(resp.into_body()).await, "echo:");
}

#[tokio::test]
async fn post_round_trip_streams_the_body_both_ways() {
    let (b, mut rx) = recording_backend().await;
    let up = upstream(b.url("/prefix/"));
    let req = Request::post("/anything")
        .header("content-type", "application/json")
        .header("content-length", "13")
        .body(full(r#"{"hello":"x"}"#))
        .unwrap();
    let resp = up.forward(req, "/orders", &client(), WAIT).await.unwrap();
    let s = seen(&mut rx).await;
    assert_eq!(s.method, Method::POST);
    assert_eq!(s.uri, "/prefix/orders");
    assert_eq!(s.headers["content-type"], "application/json");
    assert_eq!(s.headers["content-length"], "13");
    assert_eq!(s.body, r#"{"hello":"x"}"#);
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(read_all(resp.into_body()).await, r#"echo:{"hello":"x"}"#);
}

#[tokio::test]
async fn paths_join_the_base_prefix_with_one_slash() {
    let (b, mut rx) = recording_backend().await;
    let cases = [
        ("/api", "/v1/x", "/api/v1/x"),
        ("/api/", "v1/x", "/api/v1/x"),
        ("/api/", "//v1/x?q=1", "/api/v1/x?q=1"),
        ("/api", "", "/api"),
        ("/api", "?q=1", "/api?q=1"),
        ("/api", "/", "/api/"),
        ("", "/v1/x", "/v1/x"),
        ("/", "", "/"),
        ("/api", "/../../etc/passwd", "/api/etc/passwd"),
    ];
    for (base_path, pq, expected) in cases {
        let up = upstream(b.url(base_path));
        let req = Request::get("/").body(empty()).unwrap();
        let resp = up.forward(req, pq, &client(), WAIT).await.unwrap();
        read_all(resp.into_body()).await;
        assert_eq!(
            seen(&mut rx).await.uri,
            expected,
            "base {base_path:?} + {pq:?}"
        );
    }
}

#[tokio::test]
async fn hop_by_hop_fields_are_removed_both_ways() {
    let (b, mut rx) = recording_backend().await;
    let up = upstream(b.url(""));
    let req = Request::get("/")
        .header("connection", "keep-alive, X-Secret")
        .header("connection", "x-also-secret")
        .header("x-secret", "1")
        .header("x-also-secret", "2")
        .header("keep-alive", "timeout=5")
        .header("proxy-connection", "keep-alive")
        .header("proxy-authorization", "Basic Zm9vOmJhcg==")
        .header("te", "deflate, trailers")
        .header("trailer", "x-checksum")
        .header("upgrade", "websocket")
        .header("authorization", "Bearer end-to-end")
        .header("x-end", "kept")
        .body(empty())
        .unwrap();
    let resp = up.forward(req, "/", &client(), WAIT).await.unwrap();
    let s = seen(&mut rx).await;
    for gone in [
        "x-secret",
        "x-also-secret",
        "keep-alive",
        "proxy-connection",
        "proxy-authorization",
        "trailer",
        "upgrade",
        "transfer-encoding",
    ] {
        assert!(!s.headers.contains_key(gone), "{gone} reached the upstream");
    }
    // Only the trailers member of TE survives, named in Connection as HTTP/1.1 requires.
    assert_eq!(s.headers["te"], "trailers");
    assert_eq!(s.headers["connection"], "te");
    assert_eq!(s.headers["authorization"], "Bearer end-to-end");
    assert_eq!(s.headers["x-end"], "kept");

    for gone in [
        "connection",
        "x-drop-me",
        "keep-alive",
        "proxy-authenticate",
        "trailer",
        "transfer-encoding",
    ] {
        assert!(!resp.headers().contains_key(gone), "{gone} came back");
    }
    assert_eq!(resp.headers()["x-end"], "kept");
    assert_eq!(read_all(resp.into_body()).await, "echo:");

    // Without `trailers` in TE, no TE (and no Connection) is sent at all.
    let req = Request::get("/")
        .header("te", "gzip")
        .body(empty())
        .unwrap();
    let resp = up.forward(req, "/", &client(), WAIT).await.unwrap();
    read_all(resp.into_body()).await;
    let s = seen(&mut rx).await;
    assert!(!s.headers.contains_key("te"));
    assert!(!s.headers.contains_key("connection"));
}

#[tokio::test]
async fn forwarded_fields_are_set_and_host_is_rewritten() {
    let (b, mut rx) = recording_backend().await;
    let up = upstream(b.url("/p"));
    let req = Request::get("/x")
        .header("host", "public.example:8443")
        .header("x-forwarded-for", "203.0.113.9")
        .header("x-forwarded-proto", "http")
        .header("x-forwarded-host", "spoofed.example")
        .body(empty())
        .unwrap();
    let resp = up.forward(req, "/x", &client(), WAIT).await.unwrap();
    read_all(resp.into_body()).await;
    let s = seen(&mut rx).await;
    assert_eq!(s.headers["x-forwarded-for"], "203.0.113.9, 10.0.0.5");
    assert_eq!(s.headers["x-forwarded-proto"], "https");
    assert_eq!(s.headers["x-forwarded-host"], "public.example:8443");
    assert_eq!(s.headers["host"], b.addr.to_string().as_str());
    assert_eq!(s.headers.get_all("host").iter().count(), 1);

    // A request without any X-Forwarded-For starts the chain.
    let req = Request::get("/x")
        .header("host", "public.example")
        .body(empty())
        .unwrap();
    let resp = up.forward(req, "/x", &client(), WAIT).await.unwrap();
    read_all(resp.into_body()).await;
    assert_eq!(seen(&mut rx).await.headers["x-forwarded-for"], "10.0.0.5");
}

#[tokio::test]
async fn host_is_preserved_when_configured() {
    let (b, mut rx) = recording_backend().await;
    let up = HttpUpstream::new(UpstreamConfig {
        preserve_host: true,
        ..UpstreamConfig::new(b.url(""))
    })
    .unwrap();
    let req = Request::get("/")
        .header("host", "public.example")
        .body(empty())
        .unwrap();
    let resp = up.forward(req, "/", &client(), WAIT).await.unwrap();
    read_all(resp.into_body()).await;
    let s = seen(&mut rx).await;
    assert_eq!(s.headers["host"], "public.example");
    assert_eq!(s.headers["x-forwarded-host"], "public.example");
}

#[tokio::test]
async fn connection_refused_is_a_retry_safe_502() {
    // Take a free port, then close it: nothing listens there now.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let up = upstream(format!("http://{addr}"));
    let started = Instant::now();
    let req = Request::get("/").body(empty()).unwrap();
    let err = up.forward(req, "/", &client(), WAIT).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(matches!(err, UpstreamError::Connect { .. }), "{err:?}");
    assert_eq!(err.http_status(), StatusCode::BAD_GATEWAY);
    assert!(err.is_retry_safe());
    assert_eq!(up.open_connections(), 0);
}

#[tokio::test]
async fn silent_upstream_times_out_with_504() {
    let b = silent_backend().await;
    let up = upstream(b.url(""));
    let timeout = Duration::from_millis(300);
    let started = Instant::now();
    let req = Request::get("/").body(empty()).unwrap();
    let err = up.forward(req, "/", &client(), timeout).await.unwrap_err();
    let elapsed = started.elapsed();
    assert!(matches!(err, UpstreamError::Timeout { .. }), "{err:?}");
    assert!(elapsed >= timeout, "{elapsed:?}");
    assert!(
        elapsed < timeout + Duration::from_millis(500),
        "{elapsed:?}"
    );
    assert_eq!(err.http_status(), StatusCode::GATEWAY_TIMEOUT);
    assert!(!err.is_retry_safe());
    assert_eq!(b.accepted(), 1);
    // The abandoned request's connection is closed, not pooled.
    let deadline = Instant::now() + WAIT;
    while up.open_connections() != 0 {
        assert!(Instant::now() < deadline, "abandoned connection still open");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn upstream_closing_before_the_head_is_a_502_not_retry_safe() {
    // Reads the request head, then closes without answering.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 1024];
        let _ = s.read(&mut buf).await;
    });
    let up = upstream(format!("http://{addr}"));
    let req = Request::get("/").body(empty()).unwrap();
    let err = up.forward(req, "/", &client(), WAIT).await.unwrap_err();
    assert!(matches!(err, UpstreamError::Disconnected { .. }), "{err:?}");
    assert_eq!(err.http_status(), StatusCode::BAD_GATEWAY);
    assert!(!err.is_retry_safe());
    server.await.unwrap();
}

#[tokio::test]
async fn garbage_response_is_a_protocol_error() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 1024];
        let _ = s.read(&mut buf).await;
        let _ = s.write_all(b"NOT HTTP AT ALL\r\n\r\n").await;
        let _ = s.shutdown().await;
    });
    let up = upstream(format!("http://{addr}"));
    let req = Request::get("/").body(empty()).unwrap();
    let err = up.forward(req, "/", &client(), WAIT).await.unwrap_err();
    assert!(matches!(err, UpstreamError::Protocol { .. }), "{err:?}");
    assert_eq!(err.http_status(), StatusCode::BAD_GATEWAY);
    server.await.unwrap();
}

#[tokio::test]
async fn twenty_sequential_requests_share_one_connection() {
    let b = backend(|_req| async { Response::new(full("ok")) }).await;
    let up = upstream(b.url("/"));
    for i in 0..20 {
        let req = Request::get("/").body(empty()).unwrap();
        let resp = up
            .forward(req, &format!("/n/{i}"), &client(), WAIT)
            .await
            .unwrap();
        assert_eq!(read_all(resp.into_body()).await, "ok");
    }
    assert_eq!(b.accepted(), 1);
    assert_eq!(up.open_connections(), 1);
}

#[tokio::test]
async fn h2c_prior_knowledge_speaks_http2() {
    let (b, mut rx) = recording_backend().await;
    let up = HttpUpstream::new(UpstreamConfig {
        http2_prior_knowledge: true,
        ..UpstreamConfig::new(b.url("/p"))
    })
    .unwrap();
    for _ in 0..3 {
        let req = Request::post("/")
            .header("host", "public.example")
            .header("te", "trailers")
            .body(full("h2"))
            .unwrap();
        let resp = up.forward(req, "/q?x=1", &client(), WAIT).await.unwrap();
        assert_eq!(resp.status(), StatusCode::CREATED);
        assert_eq!(resp.headers()["x-end"], "kept");
        assert!(!resp.headers().contains_key("x-drop-me"));
        assert_eq!(read_all(resp.into_body()).await, "echo:h2");
        let s = seen(&mut rx).await;
        assert_eq!(s.version, Version::HTTP_2);
        assert_eq!(s.uri, format!("http://{}/p/q?x=1", b.addr));
        assert_eq!(s.headers["te"], "trailers");
        assert_eq!(s.headers["x-forwarded-host"], "public.example");
    }
    assert_eq!(b.accepted(), 1);
}

#[tokio::test]
async fn an_h2c_upstream_request_lets_go_of_the_downstream_buffer_while_it_waits() {
    // Reports the request it got, then never answers.
    let (got_tx, mut got_rx) = mpsc::channel(1);
    let b = backend(move |req: Request<hyper::body::Incoming>| {
        let got_tx = got_tx.clone();
        async move {
            let _ = got_tx
                .send((req.uri().to_string(), req.headers().clone()))
                .await;
            std::future::pending::<Response<BoxBody>>().await
        }
    })
    .await;
    let up = HttpUpstream::new(UpstreamConfig {
        http2_prior_knowledge: true,
        ..UpstreamConfig::new(b.url(""))
    })
    .unwrap();
    let (req, dropped) = common::request_sharing_one_buffer();
    let forward = tokio::spawn(async move { up.forward_as_is(req, None, &client(), WAIT).await });
    let (uri, headers) = tokio::time::timeout(WAIT, got_rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(uri, format!("http://{}/items/7?x=1", b.addr));
    assert_eq!(headers["x-shared"], "shared-value");
    // The request is out and its answer awaited: nothing of the gateway's holds the buffer.
    assert!(
        dropped.is_dropped(),
        "the read buffer is kept while waiting"
    );
    assert!(!forward.is_finished());
    forward.abort();
}

#[tokio::test]
async fn failing_request_body_is_reported_with_its_own_error() {
    let b = backend(|req: Request<hyper::body::Incoming>| async move {
        // Read until the body ends or breaks, then answer.
        let _ = req.into_body().collect().await;
        Response::new(empty())
    })
    .await;
    let up = upstream(b.url(""));
    let frames = stream::iter([
        Ok(Frame::data(Bytes::from_static(b"first chunk"))),
        Err(io::Error::new(
            io::ErrorKind::ConnectionReset,
            "client vanished",
        )),
    ]);
    let req = Request::post("/").body(StreamBody::new(frames)).unwrap();
    let err = up.forward(req, "/", &client(), WAIT).await.unwrap_err();
    let UpstreamError::RequestBody { source } = &err else {
        panic!("expected RequestBody, got {err:?}");
    };
    let io = source
        .downcast_ref::<io::Error>()
        .expect("the body's own error");
    assert_eq!(io.kind(), io::ErrorKind::ConnectionReset);
    assert_eq!(err.http_status(), StatusCode::BAD_REQUEST);
    assert!(!err.is_retry_safe());
}

#[tokio::test]
async fn response_body_is_not_bound_by_the_head_deadline() {
    let b = backend(|_req| async {
        let frames = stream::unfold(0u8, |n| async move {
            if n == 3 {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
            Some((
                Ok::<_, BoxError>(Frame::data(Bytes::from_static(b"tick"))),
                n + 1,
            ))
        });
        Response::new(BodyExt::boxed_unsync(StreamBody::new(frames)))
    })
    .await;
    let up = upstream(b.url(""));
    let req = Request::get("/").body(empty()).unwrap();
    let resp = up
        .forward(req, "/", &client(), Duration::from_millis(100))
        .await
        .unwrap();
    // 450 ms of body after a 100 ms head deadline.
    assert_eq!(read_all(resp.into_body()).await, "tickticktick");
}

#[tokio::test]
async fn dropping_the_response_body_closes_the_upstream_connection() {
    let b = backend(|_req| async {
        let frames =
            stream::repeat_with(|| Ok::<_, BoxError>(Frame::data(Bytes::from(vec![7u8; 65536]))));
        Response::new(BodyExt::boxed_unsync(StreamBody::new(frames)))
    })
    .await;
    let up = upstream(b.url(""));
    let req = Request::get("/").body(empty()).unwrap();
    let mut body = up
        .forward(req, "/", &client(), WAIT)
        .await
        .unwrap()
        .into_body();
    let _ = body.frame().await;
    assert_eq!(up.open_connections(), 1);
    drop(body);
    let deadline = Instant::now() + WAIT;
    while up.open_connections() != 0 {
        assert!(Instant::now() < deadline, "connection still open");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[test]
fn forward_future_is_send() {
    fn assert_send<T: Send>(_: &T) {}
    let up = HttpUpstream::new(UpstreamConfig::new("http://127.0.0.1:1")).unwrap();
    let info = client();
    let req: Request<BoxBody> = Request::get("/").body(empty()).unwrap();
    let fut = up.forward(req, "/", &info, WAIT);
    assert_send(&fut);
}

/// The gateway turns the response into its own body type with exactly this expression
/// (`tideway-gateway` `handler.rs`); `BoxBody` needs the body to be `Send + Sync + 'static`.
#[test]
fn response_body_boxes_the_way_the_gateway_does() {
    fn gateway_map(
        response: Response<tideway_http_upstream::UpstreamBody>,
    ) -> Response<http_body_util::combinators::BoxBody<Bytes, BoxError>> {
        response.map(|body| body.map_err(Into::into).boxed())
    }
    fn assert_send_sync_static<T: Send + Sync + 'static>() {}
    assert_send_sync_static::<tideway_http_upstream::UpstreamBody>();
    let _ = gateway_map;
}

#[tokio::test]
async fn an_h2c_body_that_stops_coming_ends_at_the_idle_timeout() {
    // One data frame, then a body that never produces another.
    let b = backend(|_req| async {
        let frames = stream::iter([Ok::<_, BoxError>(Frame::data(Bytes::from_static(b"part")))])
            .chain(stream::pending());
        Response::new(BodyExt::boxed_unsync(StreamBody::new(frames)))
    })
    .await;
    let idle = Duration::from_millis(200);
    let up = HttpUpstream::new(UpstreamConfig {
        http2_prior_knowledge: true,
        body_idle_timeout: idle,
        ..UpstreamConfig::new(b.url(""))
    })
    .unwrap();
    let resp = up.forward(empty_get(), "/", &client(), WAIT).await.unwrap();
    let mut body = resp.into_body();
    let first = body.frame().await.unwrap().unwrap();
    assert_eq!(first.into_data().unwrap(), "part");
    let started = Instant::now();
    let error = body.frame().await.unwrap().unwrap_err();
    assert!(
        matches!(error, tideway_http_upstream::UpstreamBodyError::IdleTimeout { after } if after == idle),
        "{error:?}"
    );
    assert!(started.elapsed() >= Duration::from_millis(190));
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(body.frame().await.is_none());
}

fn empty_get() -> Request<BoxBody> {
    Request::get("/").body(empty()).unwrap()
}
