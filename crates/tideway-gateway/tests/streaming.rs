//! HTTP upstream streaming through the gateway, in its own test binary so that no other test's
//! allocations show in this process's RSS.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::rt::TokioExecutor;
use tideway_gateway::config::ServerSettings;
use tideway_gateway::{Gateway, Route, RouteTable, RpcBackends};

/// RSS of this process in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap()
}

async fn start_counting_backend() -> (SocketAddr, Arc<AtomicUsize>) {
    use hyper::service::service_fn;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let received = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&received);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let counter = Arc::clone(&counter);
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let counter = Arc::clone(&counter);
                    async move {
                        let want_bytes: usize = req
                            .uri()
                            .query()
                            .and_then(|q| q.strip_prefix("bytes="))
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(0);
                        let xff = req
                            .headers()
                            .get("x-forwarded-for")
                            .map(|v| v.to_str().unwrap().to_owned())
                            .unwrap_or_default();
                        let path = req.uri().path().to_owned();
                        let mut body = req.into_body();
                        while let Some(frame) = body.frame().await {
                            if let Ok(data) = frame.unwrap().into_data() {
                                counter.fetch_add(data.len(), Ordering::SeqCst);
                            }
                        }
                        let chunk = Bytes::from(vec![b'z'; 64 * 1024]);
                        let chunks = want_bytes / chunk.len();
                        let stream = futures::stream::iter((0..chunks).map(move |_| {
                            Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(
                                chunk.clone(),
                            ))
                        }));
                        let resp = http::Response::builder()
                            .header("x-seen-path", path)
                            .header("x-seen-xff", xff)
                            .header("connection", "x-private")
                            .header("x-private", "secret")
                            .body(http_body_util::StreamBody::new(stream))
                            .unwrap();
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, received)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_upstream_streams_50_mb_each_way_without_growing_memory() {
    let (backend, received) = start_counting_backend().await;
    let route = |path: &str, strip: Option<&str>| Route {
        method: None,
        path: path.into(),
        timeout: Some(Duration::from_secs(30)),
        target: tideway_gateway::RouteTarget::Http {
            upstream: tideway_http_upstream::HttpUpstream::new(
                tideway_http_upstream::UpstreamConfig::new(format!("http://{backend}/base")),
            )
            .unwrap(),
            strip_prefix: strip.map(str::to_owned),
            websocket_idle_timeout: None,
        },
        origin: "test".into(),
        limit: None,
        call: tideway_gateway::CallSettings::default(),
    };
    let gateway = Gateway::start(
        ServerSettings {
            listen: "127.0.0.1:0".parse().unwrap(),
            ..Default::default()
        },
        RouteTable::new([route("/files/{*rest}", Some("/files"))]).unwrap(),
        RpcBackends::new(),
    )
    .await
    .unwrap();
    let url = |path: &str| format!("http://{}{path}", gateway.local_addr());

    // Headers and path first.
    let resp = HttpClient::builder(TokioExecutor::new())
        .build_http::<http_body_util::Empty<Bytes>>()
        .request(
            Request::get(url("/files/a/b?bytes=0"))
                .body(Default::default())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let headers = resp.headers();
    assert_eq!(headers["x-seen-path"], "/base/a/b");
    assert_eq!(headers["x-seen-xff"], "127.0.0.1");
    assert!(
        !headers.contains_key("x-private"),
        "hop-by-hop header leaked"
    );
    assert!(headers.contains_key("x-request-id"));

    // 50 MB up and 50 MB down, generated and consumed chunk by chunk.
    const TOTAL: usize = 50 * 1024 * 1024;
    let before = rss_kib();
    let peak = Arc::new(AtomicUsize::new(before as usize));
    let sampling = {
        let peak = Arc::clone(&peak);
        tokio::spawn(async move {
            loop {
                peak.fetch_max(rss_kib() as usize, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    let chunk = Bytes::from(vec![b'u'; 64 * 1024]);
    let upload =
        futures::stream::iter((0..TOTAL / chunk.len()).map(move |_| {
            Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(chunk.clone()))
        }));
    let req = Request::post(url(&format!("/files/big?bytes={TOTAL}")))
        .body(http_body_util::StreamBody::new(upload))
        .unwrap();
    let client = HttpClient::builder(TokioExecutor::new()).build_http();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let mut downloaded = 0usize;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            downloaded += data.len();
        }
    }
    sampling.abort();
    assert_eq!(received.load(Ordering::SeqCst), TOTAL);
    assert_eq!(downloaded, TOTAL);
    let growth_kib = peak.load(Ordering::Relaxed) as u64 - before;
    eprintln!("RSS growth while streaming 50 MB each way: {growth_kib} KiB");
    assert!(growth_kib < 16 * 1024, "RSS grew by {growth_kib} KiB");
}

/// A route's `upstream_body_idle_timeout` (from the config file): an upstream that stops
/// sending mid-body has its response cut off there. The client gets the head and the bytes
/// sent so far, then the connection closes without the chunked body's end, so it can tell the
/// response is incomplete.
/// An upstream speaking raw TCP on a free port: each connection is served by `serve`.
async fn raw_upstream<F, Fut>(serve: F) -> SocketAddr
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = upstream.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = upstream.accept().await {
            tokio::spawn(serve(s));
        }
    });
    addr
}

/// A gateway on a free port with one route, given as the body of its `[[routes]]` table in
/// the config file's TOML.
async fn gateway_with_upstream_route(route: &str) -> Gateway {
    let text = format!("[server]\nlisten = \"127.0.0.1:0\"\n\n[[routes]]\n{route}");
    let config = tideway_gateway::config::GatewayConfig::parse(&text, "test.toml", [])
        .expect("config parses");
    let routes = tideway_gateway::assemble::route_table(&config, &[]).unwrap();
    Gateway::start(config.server.clone(), routes, RpcBackends::new())
        .await
        .unwrap()
}

#[tokio::test]
async fn an_upstream_body_that_stops_coming_is_cut_off_at_the_routes_idle_timeout() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    // Answers with a chunked body: one chunk, then nothing more, holding the connection open.
    let upstream_addr = raw_upstream(|mut s| async move {
        let mut buf = vec![0u8; 4096];
        let mut got = Vec::new();
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n")
            .await;
        // Hold the connection until the gateway closes it.
        while let Ok(n) = s.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
    let gateway = gateway_with_upstream_route(&format!(
        r#"
path = "/stall/{{*rest}}"
upstream = "http://{upstream_addr}"
strip_prefix = "/stall"
upstream_body_idle_timeout = "300ms"
"#
    ))
    .await;

    let mut client = tokio::net::TcpStream::connect(gateway.local_addr())
        .await
        .unwrap();
    client
        .write_all(b"GET /stall/x HTTP/1.1\r\nhost: t\r\n\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut got = Vec::new();
    let read_all = async {
        let mut buf = [0u8; 4096];
        loop {
            match client.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), read_all)
        .await
        .expect("the gateway closes the connection at the idle timeout");
    let waited = started.elapsed();
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(
        text.contains("first"),
        "the bytes sent before the stall arrive: {text}"
    );
    assert!(
        !text.ends_with("0\r\n\r\n"),
        "a cut-off body must not look complete: {text}"
    );
    assert!(waited >= Duration::from_millis(250), "{waited:?}");
}

/// The response carries the gateway's request id (the client's when it sent a usable one),
/// once: an upstream's own `x-request-id` is replaced, on the HTTP/1.1 fast path (where the
/// writer puts the id in the head) as everywhere. The upstream gets the same id, once.
#[tokio::test]
async fn an_upstreams_own_request_id_is_replaced_by_the_gateways() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    // Answers every request with its own `x-request-id`, and tells in `x-seen-ids` which ids
    // the request carried.
    let upstream_addr = raw_upstream(|mut s| async move {
        let mut buf = vec![0u8; 4096];
        let mut got = Vec::new();
        loop {
            while let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
                let seen: Vec<&str> = head
                    .lines()
                    .filter_map(|l| l.strip_prefix("x-request-id: "))
                    .collect();
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-request-id: upstream-own\r\n\
                     x-seen-ids: [{}]\r\n\r\nok",
                    seen.join(",")
                );
                got.drain(..end + 4);
                if s.write_all(answer.as_bytes()).await.is_err() {
                    return;
                }
            }
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    let gateway = gateway_with_upstream_route(&format!(
        r#"
path = "/p/{{*rest}}"
upstream = "http://{upstream_addr}"
strip_prefix = "/p"
"#
    ))
    .await;
    let mut client = tokio::net::TcpStream::connect(gateway.local_addr())
        .await
        .unwrap();
    // Reads one response with a 2-byte body off the connection; returns its head.
    async fn response_head(client: &mut tokio::net::TcpStream) -> String {
        let mut got = Vec::new();
        let mut buf = vec![0u8; 4096];
        let end = loop {
            if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                break end;
            }
            let n = tokio::time::timeout(Duration::from_secs(5), client.read(&mut buf))
                .await
                .expect("no response")
                .unwrap();
            assert!(n > 0, "connection closed");
            got.extend_from_slice(&buf[..n]);
        };
        while got.len() < end + 4 + 2 {
            let n = client.read(&mut buf).await.unwrap();
            assert!(n > 0, "connection closed");
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(&got[end + 4..], b"ok");
        String::from_utf8(got[..end].to_vec()).unwrap()
    }
    let ids = |head: &str| -> Vec<String> {
        head.lines()
            .filter_map(|l| l.strip_prefix("x-request-id: "))
            .map(str::to_owned)
            .collect()
    };

    client
        .write_all(b"GET /p/a HTTP/1.1\r\nhost: t\r\nx-request-id: client-abc\r\n\r\n")
        .await
        .unwrap();
    let head = response_head(&mut client).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(ids(&head), ["client-abc"], "{head}");
    // The upstream got the same id, once.
    assert!(head.contains("x-seen-ids: [client-abc]\r\n"), "{head}");

    // No id from the client: one made by the gateway, still not the upstream's.
    client
        .write_all(b"GET /p/b HTTP/1.1\r\nhost: t\r\n\r\n")
        .await
        .unwrap();
    let head = response_head(&mut client).await;
    let got = ids(&head);
    assert_eq!(got.len(), 1, "{head}");
    assert_ne!(got[0], "upstream-own", "{head}");
    assert!(!got[0].is_empty(), "{head}");
    assert!(
        head.contains(&format!("x-seen-ids: [{}]\r\n", got[0])),
        "{head}"
    );
}
