//! The HTTP/1.1 client: pooling, framing both ways, broken upstreams. Most upstreams here are
//! raw TCP scripts on 127.0.0.1:0, so the exact bytes (and how they are split) are the test's.

mod common;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{BoxBody, WAIT, backend, client, empty, full, read_all};
use futures::{StreamExt, stream};
use http::{Method, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use tideway_http_upstream::{
    BoxError, HttpUpstream, UpstreamBodyError, UpstreamConfig, UpstreamError,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// A raw TCP upstream: runs `script` on each accepted connection, with the connection's index.
struct Raw {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Raw {
    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    fn upstream(&self) -> HttpUpstream {
        upstream_with(self.addr, |c| c)
    }
}

impl Drop for Raw {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn raw<F, Fut>(script: F) -> Raw
where
    F: Fn(usize, TcpStream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    let script = Arc::new(script);
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            stream.set_nodelay(true).unwrap();
            let i = count.fetch_add(1, Ordering::SeqCst);
            let script = Arc::clone(&script);
            tokio::spawn(async move { script(i, stream).await });
        }
    });
    Raw {
        addr,
        accepted,
        task,
    }
}

fn upstream_with(
    addr: SocketAddr,
    tweak: impl FnOnce(UpstreamConfig) -> UpstreamConfig,
) -> HttpUpstream {
    HttpUpstream::new(tweak(UpstreamConfig::new(format!("http://{addr}")))).unwrap()
}

/// One request as a raw upstream read it: the head's text and the body (Content-Length only).
struct RawRequest {
    head: String,
    body: Vec<u8>,
}

/// Reads one request (head and `Content-Length` body) from `s`, keeping extra bytes in `buf`.
/// `None` when the client closed first.
async fn read_request(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<RawRequest> {
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 4096];
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).unwrap();
    let len = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().unwrap())
        })
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let mut chunk = [0u8; 4096];
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let body = buf[head_end..head_end + len].to_vec();
    buf.drain(..head_end + len);
    Some(RawRequest { head, body })
}

/// Reads (and drops) until the client closes or resets.
async fn drain(s: &mut TcpStream) {
    let mut chunk = [0u8; 4096];
    while let Ok(n) = s.read(&mut chunk).await {
        if n == 0 {
            break;
        }
    }
}

fn get() -> Request<BoxBody> {
    Request::get("/").body(empty()).unwrap()
}

/// A request body of `chunks` chunks of `size` bytes whose size is unknown up front.
fn unsized_body(chunks: usize, size: usize) -> BoxBody {
    StreamBody::new(stream::iter((0..chunks).map(move |_| {
        Ok::<_, BoxError>(Frame::data(Bytes::from(vec![b'u'; size])))
    })))
    .boxed_unsync()
}

/// Serves requests on one connection with `200` and `Content-Length` bodies until the client
/// closes; `answer` gives the body for each request.
async fn serve_keep_alive(mut s: TcpStream, answer: impl Fn(&RawRequest) -> Vec<u8>) {
    let mut buf = Vec::new();
    while let Some(req) = read_request(&mut s, &mut buf).await {
        let body = answer(&req);
        let mut out =
            format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len()).into_bytes();
        out.extend_from_slice(&body);
        if s.write_all(&out).await.is_err() {
            return;
        }
    }
}

#[tokio::test]
async fn sequential_requests_of_every_kind_share_one_connection() {
    let b = backend(|req: Request<Incoming>| async move {
        let path = req.uri().path().to_owned();
        let n = req.into_body().collect().await.unwrap().to_bytes().len();
        match path.as_str() {
            "/chunked" => {
                let frames = stream::iter(
                    [b"one ".as_slice(), b"two"]
                        .map(|d| Ok::<_, BoxError>(Frame::data(Bytes::from_static(d)))),
                );
                Response::new(StreamBody::new(frames).boxed_unsync())
            }
            "/none" => Response::builder()
                .status(StatusCode::NO_CONTENT)
                .body(empty())
                .unwrap(),
            _ => Response::new(full(n.to_string())),
        }
    })
    .await;
    let up = upstream_with(b.addr, |c| c);
    for _ in 0..5 {
        let resp = up
            .forward(get(), "/chunked", &client(), WAIT)
            .await
            .unwrap();
        assert_eq!(read_all(resp.into_body()).await, "one two");
        let resp = up.forward(get(), "/none", &client(), WAIT).await.unwrap();
        assert_eq!(resp.status(), StatusCode::NO_CONTENT);
        assert!(resp.body().is_end_stream());
        let small = Request::post("/").body(full("hello")).unwrap();
        let resp = up.forward(small, "/len", &client(), WAIT).await.unwrap();
        assert_eq!(read_all(resp.into_body()).await, "5");
        let large = Request::post("/").body(full(vec![7u8; 100_000])).unwrap();
        let resp = up.forward(large, "/len", &client(), WAIT).await.unwrap();
        assert_eq!(read_all(resp.into_body()).await, "100000");
        let streamed = Request::post("/").body(unsized_body(10, 3000)).unwrap();
        let resp = up.forward(streamed, "/len", &client(), WAIT).await.unwrap();
        assert_eq!(read_all(resp.into_body()).await, "30000");
    }
    assert_eq!(b.accepted(), 1);
    assert_eq!(up.open_connections(), 1);
    assert_eq!(up.idle_connections(), 1);
}

#[tokio::test]
async fn request_framing_follows_the_body() {
    let (tx, mut rx) = mpsc::channel(16);
    let b = backend(move |req: Request<Incoming>| {
        let tx = tx.clone();
        async move {
            let (parts, body) = req.into_parts();
            let body = body.collect().await.unwrap().to_bytes();
            let _ = tx.send((parts.method, parts.headers, body.len())).await;
            Response::new(empty())
        }
    })
    .await;
    let up = upstream_with(b.addr, |c| c);
    /// A request, and the `content-length`, `transfer-encoding` and body size the upstream
    /// must see.
    type Case = (
        Request<BoxBody>,
        Option<&'static str>,
        Option<&'static str>,
        usize,
    );
    let cases: Vec<Case> = vec![
        (get(), None, None, 0),
        (Request::delete("/").body(empty()).unwrap(), None, None, 0),
        (
            Request::post("/").body(empty()).unwrap(),
            Some("0"),
            None,
            0,
        ),
        (
            Request::put("/").body(full("abc")).unwrap(),
            Some("3"),
            None,
            3,
        ),
        (
            Request::post("/").body(full(vec![1u8; 20_000])).unwrap(),
            Some("20000"),
            None,
            20_000,
        ),
        (
            Request::post("/").body(unsized_body(4, 1000)).unwrap(),
            None,
            Some("chunked"),
            4000,
        ),
        // A declared length is used when the body does not know its size...
        (
            Request::post("/")
                .header("content-length", "4000")
                .body(unsized_body(4, 1000))
                .unwrap(),
            Some("4000"),
            None,
            4000,
        ),
        // ...and the body's own size wins over a client's header.
        (
            Request::post("/")
                .header("content-length", "99")
                .header("transfer-encoding", "chunked")
                .body(full("four"))
                .unwrap(),
            Some("4"),
            None,
            4,
        ),
    ];
    for (req, length, coding, size) in cases {
        let method = req.method().clone();
        let resp = up.forward(req, "/", &client(), WAIT).await.unwrap();
        read_all(resp.into_body()).await;
        let (seen_method, headers, seen_size) = rx.recv().await.unwrap();
        assert_eq!(seen_method, method);
        let get = |name: &str| headers.get(name).map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(get("content-length").as_deref(), length, "{method}");
        assert_eq!(get("transfer-encoding").as_deref(), coding, "{method}");
        assert_eq!(seen_size, size, "{method}");
    }
    assert_eq!(b.accepted(), 1);
}

#[tokio::test]
async fn a_small_request_goes_out_in_one_write() {
    let (tx, mut rx) = mpsc::channel(1);
    let u = raw(move |_, mut s| {
        let tx = tx.clone();
        async move {
            // The first read gets what the first write sent (one segment on loopback).
            let mut chunk = vec![0u8; 65536];
            let n = s.read(&mut chunk).await.unwrap();
            let _ = tx.send(chunk[..n].to_vec()).await;
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                .await;
            drain(&mut s).await;
        }
    })
    .await;
    let up = u.upstream();
    let body = "x".repeat(10_000);
    let req = Request::post("/").body(full(body.clone())).unwrap();
    let resp = up.forward(req, "/p?q=1", &client(), WAIT).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let first = String::from_utf8(rx.recv().await.unwrap()).unwrap();
    assert!(
        first.starts_with("POST /p?q=1 HTTP/1.1\r\nhost: "),
        "{first}"
    );
    assert!(first.contains("\r\ncontent-length: 10000\r\n"), "{first}");
    assert!(first.ends_with(&format!("\r\n\r\n{body}")), "{first}");
}

#[tokio::test]
async fn a_pooled_connection_the_upstream_closed_is_not_used() {
    // Answers one request per connection, keep-alive, then closes the connection.
    let u = raw(|_, mut s| async move {
        let mut buf = Vec::new();
        if read_request(&mut s, &mut buf).await.is_some() {
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .await;
        }
    })
    .await;
    let up = u.upstream();
    let resp = up.forward(get(), "/", &client(), WAIT).await.unwrap();
    assert_eq!(read_all(resp.into_body()).await, "ok");
    assert_eq!(up.idle_connections(), 1);
    // Let the upstream's FIN arrive.
    tokio::time::sleep(Duration::from_millis(50)).await;
    // A POST is never sent twice, so its success shows the closed connection was skipped.
    let post = Request::post("/").body(full("data")).unwrap();
    let resp = up.forward(post, "/", &client(), WAIT).await.unwrap();
    assert_eq!(read_all(resp.into_body()).await, "ok");
    assert_eq!(u.accepted(), 2);
    // The dead one was closed when found; the new one is pooled.
    assert_eq!(up.open_connections(), 1);
}

#[tokio::test]
async fn a_stale_pooled_connection_is_retried_once_for_idempotent_requests_only() {
    // On every connection: answers the first request, then reads the next one and closes
    // without answering (an upstream closing an idle connection as a request arrives).
    let u = raw(|_, mut s| async move {
        let mut buf = Vec::new();
        if read_request(&mut s, &mut buf).await.is_some() {
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .await;
        }
        let _ = read_request(&mut s, &mut buf).await;
    })
    .await;
    let up = u.upstream();
    let resp = up.forward(get(), "/", &client(), WAIT).await.unwrap();
    assert_eq!(read_all(resp.into_body()).await, "ok");
    assert_eq!(u.accepted(), 1);
    // GET on the pooled connection: closed on arrival, sent again on a new one.
    let resp = up.forward(get(), "/", &client(), WAIT).await.unwrap();
    assert_eq!(read_all(resp.into_body()).await, "ok");
    assert_eq!(u.accepted(), 2);
    // POST on the (again pooled) connection: closed on arrival, not sent again.
    let post = Request::post("/").body(full("data")).unwrap();
    let err = up.forward(post, "/", &client(), WAIT).await.unwrap_err();
    assert!(matches!(err, UpstreamError::Disconnected { .. }), "{err:?}");
    assert_eq!(err.http_status(), StatusCode::BAD_GATEWAY);
    assert!(!err.is_retry_safe());
    assert_eq!(u.accepted(), 2);
    assert_eq!(up.open_connections(), 0);
}

/// `forward` of `path` with `timeout`: its result and how long it took.
async fn timed_forward(
    up: &HttpUpstream,
    path: &str,
    timeout: Duration,
) -> (Result<Bytes, UpstreamError>, Duration) {
    let started = Instant::now();
    let req = Request::get(path).body(empty()).unwrap();
    let result = match up.forward(req, path, &client(), timeout).await {
        Ok(resp) => Ok(read_all(resp.into_body()).await),
        Err(e) => Err(e),
    };
    (result, started.elapsed())
}

#[tokio::test]
async fn a_reused_connection_times_each_request_from_its_own_start() {
    // Keep-alive; answers `/fast` at once and never answers `/slow`.
    let u = raw(|_, mut s| async move {
        let mut buf = Vec::new();
        while let Some(req) = read_request(&mut s, &mut buf).await {
            if req.head.starts_with("GET /slow") {
                tokio::time::sleep(Duration::from_secs(30)).await;
                return;
            }
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .await;
        }
    })
    .await;
    let up = u.upstream();
    let timeout = Duration::from_millis(300);
    // A slow request on the pooled connection: 504 after its whole budget, not sooner.
    let slow_gets_its_whole_budget = async || {
        let (slow, elapsed) = timed_forward(&up, "/slow", timeout).await;
        assert!(
            matches!(slow, Err(UpstreamError::Timeout { .. })),
            "{slow:?}"
        );
        assert!(
            elapsed >= timeout && elapsed < timeout + Duration::from_millis(500),
            "{elapsed:?}"
        );
    };

    // The connection's timer is first set for the fast request; the slow one, sent 200 ms
    // later on the same connection, gets its whole 300 ms (the old deadline would cut it at
    // about 100 ms).
    let (fast, _) = timed_forward(&up, "/fast", timeout).await;
    assert_eq!(fast.unwrap(), "ok");
    tokio::time::sleep(Duration::from_millis(200)).await;
    slow_gets_its_whole_budget().await;
    assert_eq!(u.accepted(), 1);

    // A timer that fired while its connection sat idle in the pool neither fails the next
    // request nor leaves a later slow one unbounded.
    let (fast, _) = timed_forward(&up, "/fast", timeout).await;
    assert_eq!(fast.unwrap(), "ok");
    assert_eq!(u.accepted(), 2);
    tokio::time::sleep(timeout + Duration::from_millis(100)).await;
    let (fast, _) = timed_forward(&up, "/fast", timeout).await;
    assert_eq!(fast.unwrap(), "ok");
    tokio::time::sleep(timeout + Duration::from_millis(100)).await;
    slow_gets_its_whole_budget().await;
    // All on the second connection; the timed-out one was closed, not pooled.
    assert_eq!(u.accepted(), 2);
    assert_eq!(up.open_connections(), 0);
}

#[tokio::test]
async fn the_downstream_request_is_let_go_while_the_upstream_thinks() {
    // Reads the request, says so, and never answers.
    let (read_tx, mut read_rx) = mpsc::unbounded_channel();
    let u = raw(move |_, mut s| {
        let read_tx = read_tx.clone();
        async move {
            let mut buf = Vec::new();
            if let Some(req) = read_request(&mut s, &mut buf).await {
                let _ = read_tx.send(req.head);
            }
            tokio::time::sleep(Duration::from_secs(30)).await;
        }
    })
    .await;
    let up = u.upstream();
    let (req, dropped) = common::request_sharing_one_buffer();
    let forward = tokio::spawn(async move { up.forward_as_is(req, None, &client(), WAIT).await });
    let head = tokio::time::timeout(WAIT, read_rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(head.starts_with("GET /items/7?x=1 HTTP/1.1\r\n"), "{head}");
    assert!(head.contains("x-shared: shared-value\r\n"), "{head}");
    // The request is out and its answer awaited: nothing holds the buffer any more.
    assert!(
        dropped.is_dropped(),
        "the read buffer is kept while waiting"
    );
    assert!(!forward.is_finished());
    forward.abort();
}

/// Writes `bytes` in pieces of 1 to 7 bytes with a pause after each, so the client reads the
/// response in many small reads that cut every element in every place.
async fn trickle(s: &mut TcpStream, bytes: &[u8]) {
    let mut sizes = [1usize, 2, 3, 5, 7, 1, 4].into_iter().cycle();
    let mut rest = bytes;
    while !rest.is_empty() {
        let n = sizes.next().unwrap().min(rest.len());
        s.write_all(&rest[..n]).await.unwrap();
        rest = &rest[n..];
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[tokio::test]
async fn chunked_responses_are_decoded_from_tiny_pieces() {
    const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\n\
        transfer-encoding: chunked\r\n\
        trailer: x-checksum\r\n\
        x-end: kept\r\n\r\n\
        4;ext=1\r\nWiki\r\n\
        5 ; name=\"quoted value\";flag\r\npedia\r\n\
        E\r\n in\r\n\r\nchunks.\r\n\
        000\r\n\
        x-checksum: abc\r\n\
        \r\n";
    let u = raw(|_, mut s| async move {
        let mut buf = Vec::new();
        while read_request(&mut s, &mut buf).await.is_some() {
            trickle(&mut s, RESPONSE).await;
        }
    })
    .await;
    let up = u.upstream();
    for _ in 0..3 {
        let req = Request::get("/")
            .header("te", "trailers")
            .body(empty())
            .unwrap();
        let resp = up.forward(req, "/", &client(), WAIT).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["x-end"], "kept");
        assert!(!resp.headers().contains_key("transfer-encoding"));
        assert!(!resp.headers().contains_key("trailer"));
        let collected = tokio::time::timeout(WAIT, resp.into_body().collect())
            .await
            .unwrap()
            .unwrap();
        let trailers = collected.trailers().cloned().expect("trailers");
        assert_eq!(trailers["x-checksum"], "abc");
        assert_eq!(collected.to_bytes(), "Wikipedia in\r\n\r\nchunks.");
    }
    // Each complete chunked body gave its connection back.
    assert_eq!(u.accepted(), 1);
    assert_eq!(up.idle_connections(), 1);
}

#[tokio::test]
async fn a_body_delimited_by_close_is_read_to_the_end_and_not_pooled() {
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let expected = Bytes::from(data.clone());
    let data = Arc::new(data);
    let u = raw(move |i, mut s| {
        let data = Arc::clone(&data);
        async move {
            let mut buf = Vec::new();
            if read_request(&mut s, &mut buf).await.is_none() {
                return;
            }
            // HTTP/1.1 without length, then HTTP/1.0 with one: neither may be reused.
            let head: &[u8] = if i == 0 {
                b"HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\n\r\n"
            } else {
                b"HTTP/1.0 200 OK\r\ncontent-length: 200000\r\n\r\n"
            };
            s.write_all(head).await.unwrap();
            for piece in data.chunks(7_000) {
                s.write_all(piece).await.unwrap();
                tokio::task::yield_now().await;
            }
            if i > 0 {
                // An HTTP/1.0 upstream may keep the connection open: the client must close it.
                drain(&mut s).await;
            }
        }
    })
    .await;
    let up = u.upstream();
    for round in 0..2 {
        let resp = up.forward(get(), "/", &client(), WAIT).await.unwrap();
        let mut body = resp.into_body();
        let mut got = Vec::new();
        while let Some(frame) = tokio::time::timeout(WAIT, body.frame()).await.unwrap() {
            let data = frame.unwrap().into_data().unwrap();
            // Bounded reads: no frame larger than the per-poll read limit.
            assert!(data.len() <= 64 * 1024, "frame of {} bytes", data.len());
            got.extend_from_slice(&data);
        }
        assert_eq!(got, expected, "round {round}");
        assert_eq!(up.idle_connections(), 0);
        assert_eq!(up.open_connections(), 0, "round {round}");
    }
    assert_eq!(u.accepted(), 2);
}

#[tokio::test]
async fn malformed_response_heads_are_502_protocol_errors() {
    let many_fields = {
        let mut h = String::from("HTTP/1.1 200 OK\r\n");
        for i in 0..101 {
            h.push_str(&format!("x-{i}: v\r\n"));
        }
        h + "\r\n"
    };
    let huge_head = format!("HTTP/1.1 200 OK\r\nx-big: {}", "a".repeat(10_000));
    let interims = "HTTP/1.1 100 Continue\r\n\r\n".repeat(17) + "HTTP/1.1 200 OK\r\n\r\n";
    let cases: Vec<(&str, String)> = vec![
        ("not http", "NOT HTTP AT ALL\r\n\r\n".into()),
        ("bad status", "HTTP/1.1 abc OK\r\n\r\n".into()),
        ("status out of range", "HTTP/1.1 1000 OK\r\n\r\n".into()),
        ("status too small", "HTTP/1.1 099 OK\r\n\r\n".into()),
        ("version", "HTTP/2.0 200 OK\r\n\r\n".into()),
        (
            "field name",
            "HTTP/1.1 200 OK\r\nbad field: x\r\n\r\n".into(),
        ),
        ("field value", "HTTP/1.1 200 OK\r\nx: a\x01b\r\n\r\n".into()),
        (
            "negative length",
            "HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n".into(),
        ),
        (
            "conflicting lengths",
            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello".into(),
        ),
        (
            "length list",
            "HTTP/1.1 200 OK\r\ncontent-length: 5, 6\r\n\r\nhello".into(),
        ),
        (
            "switching protocols",
            "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n".into(),
        ),
        ("too many fields", many_fields),
        ("head too large", huge_head),
        ("too many interim responses", interims),
    ];
    for (what, response) in cases {
        let response = Arc::new(response);
        let u = raw(move |_, mut s| {
            let response = Arc::clone(&response);
            async move {
                let mut buf = Vec::new();
                if read_request(&mut s, &mut buf).await.is_some() {
                    let _ = s.write_all(response.as_bytes()).await;
                    drain(&mut s).await;
                }
            }
        })
        .await;
        let up = upstream_with(u.addr, |c| UpstreamConfig {
            http1_max_buf_size: 8 * 1024,
            ..c
        });
        let err = up.forward(get(), "/", &client(), WAIT).await.unwrap_err();
        assert!(
            matches!(err, UpstreamError::Protocol { .. }),
            "{what}: {err:?}"
        );
        assert_eq!(err.http_status(), StatusCode::BAD_GATEWAY, "{what}");
        assert!(!err.is_retry_safe(), "{what}");
        assert_eq!(up.open_connections(), 0, "{what}");
    }
}

#[tokio::test]
async fn interim_responses_are_skipped() {
    let u = raw(|_, mut s| async move {
        let mut buf = Vec::new();
        if read_request(&mut s, &mut buf).await.is_some() {
            let _ = s
                .write_all(
                    b"HTTP/1.1 100 Continue\r\n\r\n\
                      HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload\r\n\r\n\
                      HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-final: 1\r\n\r\nok",
                )
                .await;
            drain(&mut s).await;
        }
    })
    .await;
    let up = u.upstream();
    let resp = up.forward(get(), "/", &client(), WAIT).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["x-final"], "1");
    assert!(!resp.headers().contains_key("link"));
    assert_eq!(read_all(resp.into_body()).await, "ok");
}

#[tokio::test]
async fn responses_without_a_body_keep_the_connection() {
    let b = backend(|req: Request<Incoming>| async move {
        let status = match req.uri().path() {
            "/204" => StatusCode::NO_CONTENT,
            "/304" => StatusCode::NOT_MODIFIED,
            _ => StatusCode::OK,
        };
        // For HEAD, hyper sends the length of this body but not the body.
        Response::builder()
            .status(status)
            .body(full(if status == StatusCode::OK {
                "x".repeat(1234)
            } else {
                String::new()
            }))
            .unwrap()
    })
    .await;
    let up = upstream_with(b.addr, |c| c);
    for _ in 0..3 {
        let head = Request::head("/").body(empty()).unwrap();
        let resp = up.forward(head, "/", &client(), WAIT).await.unwrap();
        assert_eq!(resp.headers()["content-length"], "1234");
        assert!(resp.body().is_end_stream());
        assert_eq!(read_all(resp.into_body()).await, "");
        for path in ["/204", "/304"] {
            let resp = up.forward(get(), path, &client(), WAIT).await.unwrap();
            assert_eq!(read_all(resp.into_body()).await, "", "{path}");
        }
        let resp = up.forward(get(), "/", &client(), WAIT).await.unwrap();
        assert_eq!(resp.body().size_hint().exact(), Some(1234));
        assert_eq!(read_all(resp.into_body()).await.len(), 1234);
    }
    assert_eq!(b.accepted(), 1);
}

#[tokio::test]
async fn broken_response_bodies_are_body_errors() {
    let cases: [(&str, &[u8]); 3] = [
        (
            "bad chunk size",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\nzz\r\n",
        ),
        (
            "chunked cut short",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n10\r\nabc",
        ),
        (
            "length cut short",
            b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nabc",
        ),
    ];
    for (what, response) in cases {
        let u = raw(move |_, mut s| async move {
            let mut buf = Vec::new();
            if read_request(&mut s, &mut buf).await.is_some() {
                let _ = s.write_all(response).await;
                // Close after the broken body (the bad chunk case errors before this matters).
            }
        })
        .await;
        let up = u.upstream();
        let resp = up.forward(get(), "/", &client(), WAIT).await.unwrap();
        let err = tokio::time::timeout(WAIT, resp.into_body().collect())
            .await
            .unwrap()
            .unwrap_err();
        match what {
            "bad chunk size" => assert!(
                matches!(err, UpstreamBodyError::Protocol { .. }),
                "{what}: {err:?}"
            ),
            _ => assert!(
                matches!(err, UpstreamBodyError::Incomplete),
                "{what}: {err:?}"
            ),
        }
        // It converts into the boxed error the gateway uses.
        let _boxed: BoxError = err.into();
        assert_eq!(up.open_connections(), 0, "{what}");
        assert_eq!(up.idle_connections(), 0, "{what}");
    }
}

#[tokio::test]
async fn dropping_a_length_delimited_body_midway_closes_the_connection() {
    let (tx, mut rx) = mpsc::channel(1);
    let u = raw(move |_, mut s| {
        let tx = tx.clone();
        async move {
            let mut buf = Vec::new();
            if read_request(&mut s, &mut buf).await.is_some() {
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 10000000\r\n\r\n")
                    .await;
                let _ = s.write_all(&[1u8; 65536]).await;
                // The client's close shows up here as end of stream (or a reset).
                drain(&mut s).await;
                let _ = tx.send(()).await;
            }
        }
    })
    .await;
    let up = u.upstream();
    let resp = up.forward(get(), "/", &client(), WAIT).await.unwrap();
    let mut body = resp.into_body();
    assert_eq!(body.size_hint().exact(), Some(10_000_000));
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert!(!first.is_empty());
    assert_eq!(
        body.size_hint().exact(),
        Some(10_000_000 - first.len() as u64)
    );
    assert_eq!(up.open_connections(), 1);
    drop(body);
    assert_eq!(up.open_connections(), 0);
    assert_eq!(up.idle_connections(), 0);
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn dropping_forward_while_uploading_closes_the_connection() {
    // Reads nothing after accepting: the upload fills the socket buffers and stalls.
    let u = raw(|_, mut s| async move {
        tokio::time::sleep(Duration::from_secs(30)).await;
        drain(&mut s).await;
    })
    .await;
    let up = upstream_with(u.addr, |c| UpstreamConfig {
        tcp_send_buffer_size: Some(64 * 1024),
        ..c
    });
    let req = Request::post("/")
        .body(unsized_body(1000, 64 * 1024))
        .unwrap();
    let err = up
        .forward(req, "/", &client(), Duration::from_millis(200))
        .await
        .unwrap_err();
    assert!(matches!(err, UpstreamError::Timeout { .. }), "{err:?}");
    assert_eq!(up.open_connections(), 0);
    assert_eq!(up.idle_connections(), 0);
}

#[tokio::test]
async fn an_early_answer_stops_the_upload_and_is_returned() {
    // Answers 413 after the head without reading the body, and keeps the connection open.
    let u = raw(|_, mut s| async move {
        let mut buf = Vec::new();
        loop {
            let mut chunk = [0u8; 4096];
            let n = s.read(&mut chunk).await.unwrap();
            buf.extend_from_slice(&chunk[..n]);
            if buf.windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
        let _ = s
            .write_all(b"HTTP/1.1 413 Content Too Large\r\ncontent-length: 8\r\n\r\ntoo big!")
            .await;
        tokio::time::sleep(Duration::from_secs(30)).await;
    })
    .await;
    let up = upstream_with(u.addr, |c| UpstreamConfig {
        tcp_send_buffer_size: Some(64 * 1024),
        ..c
    });
    let produced = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&produced);
    let frames = stream::iter(0..800).map(move |_| {
        counter.fetch_add(64 * 1024, Ordering::SeqCst);
        Ok::<_, BoxError>(Frame::data(Bytes::from(vec![0u8; 64 * 1024])))
    });
    let req = Request::post("/")
        .body(StreamBody::new(frames).boxed_unsync())
        .unwrap();
    let started = Instant::now();
    let resp = up.forward(req, "/", &client(), WAIT).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(read_all(resp.into_body()).await, "too big!");
    // Backpressure held: only what fits in the socket buffers was produced.
    assert!(produced.load(Ordering::SeqCst) < 16 * 1024 * 1024);
    // The request was never finished, so the connection cannot be reused.
    assert_eq!(up.open_connections(), 0);
    assert_eq!(up.idle_connections(), 0);
}

#[tokio::test]
async fn an_answer_while_the_body_still_streams_keeps_sending_it() {
    // Answers as soon as the head is in, then echoes the request body as the response body
    // (chunked): the client must go on sending while the caller reads the response.
    let b = backend(|req: Request<Incoming>| async move {
        let echo = req.into_body().map_frame(|f| {
            f.into_data()
                .map(Frame::data)
                .unwrap_or_else(|_| Frame::data(Bytes::new()))
        });
        Response::new(echo.map_err(|e| -> BoxError { e.into() }).boxed_unsync())
    })
    .await;
    let up = upstream_with(b.addr, |c| c);
    // A request body that only sends its next chunk after the previous one came back.
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, BoxError>>(1);
    let req = Request::post("/")
        .body(StreamBody::new(tokio_stream_from(rx)).boxed_unsync())
        .unwrap();
    tx.send(Ok(Frame::data(Bytes::from_static(b"ping-0"))))
        .await
        .unwrap();
    let resp = up.forward(req, "/", &client(), WAIT).await.unwrap();
    let mut body = resp.into_body();
    for i in 1..=3 {
        let echoed = next_data(&mut body).await;
        assert_eq!(echoed, format!("ping-{}", i - 1));
        tx.send(Ok(Frame::data(Bytes::from(format!("ping-{i}")))))
            .await
            .unwrap();
    }
    assert_eq!(next_data(&mut body).await, "ping-3");
    drop(tx);
    assert!(
        tokio::time::timeout(WAIT, body.frame())
            .await
            .unwrap()
            .is_none()
    );
    // Upload and response both complete: the connection is reusable.
    assert_eq!(up.idle_connections(), 1);
}

/// The next non-empty data frame.
async fn next_data<B>(body: &mut B) -> Bytes
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Debug,
{
    loop {
        let frame = tokio::time::timeout(WAIT, body.frame())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Ok(data) = frame.into_data()
            && !data.is_empty()
        {
            return data;
        }
    }
}

/// An mpsc receiver as a stream.
fn tokio_stream_from<T: Send + 'static>(
    rx: mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send + 'static {
    stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|t| (t, rx)) })
}

#[tokio::test]
async fn the_pool_bound_holds_under_concurrency() {
    // No answer before all 50 requests are in, so none can reuse another's connection: the
    // client must open 50 and then keep only 8.
    let all_in = Arc::new(tokio::sync::Barrier::new(50));
    let b = backend(move |req: Request<Incoming>| {
        let all_in = Arc::clone(&all_in);
        async move {
            if req.uri().path() != "/again" {
                all_in.wait().await;
            }
            Response::new(full("ok"))
        }
    })
    .await;
    let up = upstream_with(b.addr, |c| UpstreamConfig {
        pool_max_idle_per_host: 8,
        ..c
    });
    let requests = (0..50).map(|i| {
        let up = up.clone();
        tokio::spawn(async move {
            let resp = up.forward(get(), &format!("/{i}"), &client(), WAIT).await?;
            Ok::<_, UpstreamError>(read_all(resp.into_body()).await)
        })
    });
    for r in futures::future::join_all(requests).await {
        assert_eq!(r.unwrap().unwrap(), "ok");
    }
    assert_eq!(b.accepted(), 50);
    assert_eq!(up.idle_connections(), 8);
    assert_eq!(up.open_connections(), 8);
    // And they are reused: another round opens nothing new.
    for _ in 0..8 {
        let resp = up.forward(get(), "/again", &client(), WAIT).await.unwrap();
        read_all(resp.into_body()).await;
    }
    assert_eq!(b.accepted(), 50);
}

#[test]
fn the_response_is_read_by_the_callers_task_alone() {
    // The upstream runs on a runtime of its own, in another thread.
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let server = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            addr_tx.send(listener.local_addr().unwrap()).unwrap();
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = Vec::new();
            while read_request(&mut s, &mut buf).await.is_some() {
                s.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n")
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(20)).await;
                s.write_all(b"6\r\n world\r\n0\r\n\r\n").await.unwrap();
            }
        });
    });
    let addr = addr_rx.recv().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let up = upstream_with(addr, |c| c);
        let tasks = || {
            tokio::runtime::Handle::current()
                .metrics()
                .num_alive_tasks()
        };
        for _ in 0..3 {
            let resp = up.forward(get(), "/", &client(), WAIT).await.unwrap();
            assert_eq!(tasks(), 0, "a task was spawned for the request");
            // The body is read after `forward` returned, with no task driving the connection.
            assert_eq!(read_all(resp.into_body()).await, "hello world");
            assert_eq!(tasks(), 0);
        }
        assert_eq!(up.open_connections(), 1);
    });
    drop(rt);
    server.join().unwrap();
}

#[tokio::test]
async fn host_names_are_resolved() {
    let u = raw(|_, s| serve_keep_alive(s, |_| b"named".to_vec())).await;
    let up = HttpUpstream::new(UpstreamConfig::new(format!(
        "http://localhost:{}",
        u.addr.port()
    )))
    .unwrap();
    let resp = up.forward(get(), "/", &client(), WAIT).await.unwrap();
    assert_eq!(read_all(resp.into_body()).await, "named");
}

#[tokio::test]
async fn request_heads_carry_the_rewritten_fields() {
    let (tx, mut rx) = mpsc::channel(4);
    let u = raw(move |_, s| {
        let tx = tx.clone();
        serve_keep_alive(s, move |req| {
            let _ = tx.try_send((req.head.clone(), req.body.clone()));
            Vec::new()
        })
    })
    .await;
    let up = u.upstream();
    let req = Request::builder()
        .method(Method::PATCH)
        .uri("/x")
        .header("host", "public.example")
        .header("connection", "close, x-hop")
        .header("x-hop", "1")
        .header("te", "trailers")
        .header("x-multi", "a")
        .header("x-multi", "b")
        .body(full("{}"))
        .unwrap();
    let resp = up
        .forward(req, "/api/x?y=1", &client(), WAIT)
        .await
        .unwrap();
    read_all(resp.into_body()).await;
    let (head, body) = rx.recv().await.unwrap();
    let lines: Vec<&str> = head.trim_end().split("\r\n").collect();
    assert_eq!(lines[0], "PATCH /api/x?y=1 HTTP/1.1");
    assert_eq!(lines[1], format!("host: {}", u.addr));
    for expected in [
        "te: trailers",
        "connection: te",
        "x-multi: a",
        "x-multi: b",
        "x-forwarded-for: 10.0.0.5",
        "x-forwarded-proto: https",
        "x-forwarded-host: public.example",
        "content-length: 2",
    ] {
        assert!(
            lines.contains(&expected),
            "{expected:?} missing in {lines:?}"
        );
    }
    assert!(!head.contains("x-hop"), "{head}");
    assert!(!head.contains("close"), "{head}");
    assert_eq!(body, b"{}");
    // The client asked to close its own connection; the upstream one is still pooled.
    assert_eq!(up.idle_connections(), 1);
}

#[tokio::test]
async fn a_body_that_stops_coming_ends_at_the_idle_timeout_and_closes_its_connection() {
    // Sends the head and part of the body, a little more after 100 ms, then nothing, holding
    // the connection open.
    let u = raw(|_, mut s| async move {
        let mut buf = Vec::new();
        if read_request(&mut s, &mut buf).await.is_some() {
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nfirst")
                .await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            let _ = s.write_all(b"second").await;
            drain(&mut s).await;
        }
    })
    .await;
    let idle = Duration::from_millis(300);
    let up = upstream_with(u.addr, |mut c| {
        c.body_idle_timeout = idle;
        c
    });
    let resp = up.forward(get(), "/", &client(), WAIT).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let mut got = Vec::new();
    let started = Instant::now();
    let error = loop {
        match body.frame().await {
            Some(Ok(frame)) => got.extend_from_slice(&frame.into_data().unwrap()),
            Some(Err(e)) => break e,
            None => panic!("the body ended without its 100 bytes"),
        }
    };
    let waited = started.elapsed();
    // The data before the stall arrived; the 100 ms pause was not an idle timeout.
    assert_eq!(got, b"firstsecond");
    assert!(
        matches!(error, UpstreamBodyError::IdleTimeout { after } if after == idle),
        "{error:?}"
    );
    // Measured from the last bytes (at about 100 ms), not from the head.
    assert!(waited >= Duration::from_millis(380), "{waited:?}");
    assert!(waited < Duration::from_secs(3), "{waited:?}");
    assert!(body.frame().await.is_none(), "nothing after the error");
    drop(body);
    // Never pooled half-read: closed.
    assert_eq!(up.open_connections(), 0);
    assert_eq!(up.idle_connections(), 0);
}

#[tokio::test]
async fn a_body_read_with_its_head_is_taken_whole_and_a_streamed_one_is_left_to_read() {
    let big: Vec<u8> = vec![b'x'; 300_000];
    let expected_big = big.len();
    let big = Arc::new(big);
    let u = raw(move |_, s| {
        let big = Arc::clone(&big);
        async move {
            serve_keep_alive(s, move |req| {
                if req.head.starts_with("GET /big ") {
                    big.to_vec()
                } else if req.head.starts_with("GET /empty ") {
                    Vec::new()
                } else {
                    b"{\"small\":true}".to_vec()
                }
            })
            .await
        }
    })
    .await;
    let up = u.upstream();

    let mut small = up
        .forward(get(), "/small", &client(), WAIT)
        .await
        .unwrap()
        .into_body();
    assert_eq!(
        small.take_whole().as_deref(),
        Some(&b"{\"small\":true}"[..])
    );
    // Taken: what is left is an ended, empty body.
    assert!(small.is_end_stream());
    assert!(small.frame().await.is_none());
    // Its connection went back to the pool with the head.
    assert_eq!(up.idle_connections(), 1);

    let mut empty = up
        .forward(get(), "/empty", &client(), WAIT)
        .await
        .unwrap()
        .into_body();
    assert_eq!(empty.take_whole().as_deref(), Some(&b""[..]));

    let mut big = up
        .forward(get(), "/big", &client(), WAIT)
        .await
        .unwrap()
        .into_body();
    assert!(
        big.take_whole().is_none(),
        "a 300 kB body does not come with its head"
    );
    let mut got = 0;
    while let Some(frame) = tokio::time::timeout(WAIT, big.frame()).await.unwrap() {
        got += frame.unwrap().into_data().unwrap().len();
    }
    assert_eq!(
        got, expected_big,
        "the streamed body is still read whole after the attempt"
    );
    assert_eq!(u.accepted(), 1, "all three on one pooled connection");
}

/// A request asking to switch to WebSocket (what a gateway forwards for a handshake).
fn websocket_handshake() -> Request<BoxBody> {
    Request::get("/feed")
        .header("connection", "keep-alive, Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .body(empty())
        .unwrap()
}

#[tokio::test]
async fn a_switched_connection_becomes_the_callers_tunnel() {
    let (heads, mut seen) = mpsc::unbounded_channel();
    let u = raw(move |_, mut s| {
        let heads = heads.clone();
        async move {
            let mut buf = Vec::new();
            let Some(req) = read_request(&mut s, &mut buf).await else {
                return;
            };
            heads.send(req.head).unwrap();
            s.write_all(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                  sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\nFIRST",
            )
            .await
            .unwrap();
            // Then an echo of whatever comes.
            let mut chunk = [0u8; 1024];
            while let Ok(n @ 1..) = s.read(&mut chunk).await {
                s.write_all(&chunk[..n]).await.unwrap();
            }
        }
    })
    .await;
    let up = u.upstream();
    let mut response = up
        .forward_as_is_switching(websocket_handshake(), None, &client(), WAIT, true)
        .await
        .unwrap();

    // The upstream was asked to switch, with only `upgrade` left in `Connection`.
    let head = seen.recv().await.unwrap().to_ascii_lowercase();
    assert!(head.contains("\r\nupgrade: websocket\r\n"), "{head}");
    assert!(head.contains("\r\nconnection: upgrade\r\n"), "{head}");
    assert!(!head.contains("keep-alive"), "{head}");

    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    assert_eq!(response.headers()["upgrade"], "websocket");
    assert_eq!(response.headers()["connection"], "upgrade");
    assert_eq!(
        response.headers()["sec-websocket-accept"],
        "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    );
    let mut tunnel = response.body_mut().take_tunnel().expect("a tunnel");
    assert!(response.body_mut().take_tunnel().is_none());
    assert_eq!(up.open_connections(), 1);
    assert_eq!(tunnel.unread(), b"FIRST");
    tunnel.write_all(b"ping").await.unwrap();
    let mut got = [0u8; 9];
    tunnel.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"FIRSTping");
    drop(tunnel);
    assert_eq!(up.open_connections(), 0);
    assert_eq!(up.idle_connections(), 0);
}

#[tokio::test]
async fn a_refused_switch_is_an_ordinary_answer_and_a_switch_without_upgrade_a_bad_one() {
    // One connection: the refusal leaves it fit for the next request, which it then carries.
    let u = raw(|_, mut s| async move {
        let mut buf = Vec::new();
        let mut answers: [&[u8]; 2] = [
            b"HTTP/1.1 426 Upgrade Required\r\ncontent-length: 4\r\n\r\nnope",
            b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\n\r\n",
        ];
        for answer in &mut answers {
            if read_request(&mut s, &mut buf).await.is_none() {
                return;
            }
            let _ = s.write_all(answer).await;
        }
        drain(&mut s).await;
    })
    .await;
    let up = u.upstream();
    let mut refused = up
        .forward_as_is_switching(websocket_handshake(), None, &client(), WAIT, true)
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UPGRADE_REQUIRED);
    assert!(refused.body_mut().take_tunnel().is_none());
    assert_eq!(
        read_all(refused.into_body()).await,
        Bytes::from_static(b"nope")
    );

    let err = up
        .forward_as_is_switching(websocket_handshake(), None, &client(), WAIT, true)
        .await
        .unwrap_err();
    assert!(matches!(err, UpstreamError::Protocol { .. }), "{err:?}");
    assert_eq!(err.http_status(), StatusCode::BAD_GATEWAY);
    assert_eq!(u.accepted(), 1);
    assert_eq!(up.open_connections(), 0);
}
