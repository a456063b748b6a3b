//! WebSocket through the gateway: real WebSocket clients and servers (tungstenite) on real
//! sockets, and raw sockets where the bytes on the wire are the point.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use parking_lot::Mutex;
use tideway_gateway::config::ServerSettings;
use tideway_gateway::{Gateway, Route, RouteTable, RpcBackends};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};

/// Request heads (path and fields) a WebSocket echo server saw, in order.
type Seen = Arc<Mutex<Vec<(String, http::HeaderMap)>>>;

/// A WebSocket server that echoes every data message back, and records each handshake.
// The handshake callback's `Result` is tungstenite's signature.
#[allow(clippy::result_large_err)]
async fn echo_server() -> (SocketAddr, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Seen::default();
    let record = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let record = Arc::clone(&record);
            tokio::spawn(async move {
                let callback = |req: &Request, resp: Response| {
                    let target = req.uri().to_string();
                    record.lock().push((target, req.headers().clone()));
                    Ok(resp)
                };
                let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(sock, callback).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, seen)
}

/// A plain TCP server: reads one request head, hands it to `seen`, writes `answer`, then echoes
/// whatever comes until the peer closes.
async fn raw_server(answer: &'static [u8]) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let record = Arc::clone(&record);
            tokio::spawn(async move {
                let head = read_head(&mut sock).await;
                record.lock().push(head);
                sock.write_all(answer).await.unwrap();
                let mut buf = vec![0u8; 4096];
                loop {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if sock.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    (addr, seen)
}

/// Reads up to the end of a head (byte by byte: nothing behind it is consumed).
async fn read_head(sock: &mut TcpStream) -> String {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        if sock.read(&mut byte).await.unwrap() == 0 {
            break;
        }
        head.push(byte[0]);
    }
    String::from_utf8(head).unwrap()
}

fn route(path: &str, upstream: SocketAddr, websocket_idle_timeout: Option<Duration>) -> Route {
    let prefix = path.trim_end_matches("/{*rest}");
    Route {
        method: None,
        path: path.into(),
        timeout: Some(Duration::from_secs(5)),
        target: tideway_gateway::RouteTarget::Http {
            upstream: tideway_http_upstream::HttpUpstream::new(
                tideway_http_upstream::UpstreamConfig::new(format!("http://{upstream}")),
            )
            .unwrap(),
            strip_prefix: Some(prefix.to_owned()),
            websocket_idle_timeout,
        },
        origin: "test".into(),
        limit: None,
        call: tideway_gateway::CallSettings::default(),
    }
}

async fn gateway(settings: ServerSettings, routes: Vec<Route>) -> Gateway {
    Gateway::start(
        ServerSettings {
            listen: "127.0.0.1:0".parse().unwrap(),
            ..settings
        },
        RouteTable::new(routes).unwrap(),
        RpcBackends::new(),
    )
    .await
    .unwrap()
}

const IDLE: Option<Duration> = Some(Duration::from_secs(60));

/// A gateway with one WebSocket route, `/ws/{*rest}` to `upstream`.
async fn ws_gateway(upstream: SocketAddr) -> Gateway {
    gateway(
        ServerSettings::default(),
        vec![route("/ws/{*rest}", upstream, IDLE)],
    )
    .await
}

/// A raw connection to `gw` that has sent a WebSocket handshake for `path`, with `behind` in
/// the same write.
async fn handshake(gw: &Gateway, path: &str, behind: &[u8]) -> TcpStream {
    let mut sock = TcpStream::connect(gw.local_addr()).await.unwrap();
    let mut bytes = format!(
        "GET {path} HTTP/1.1\r\nhost: x\r\nconnection: Upgrade\r\nupgrade: websocket\r\n\r\n"
    )
    .into_bytes();
    bytes.extend_from_slice(behind);
    sock.write_all(&bytes).await.unwrap();
    sock
}

/// A WebSocket client's handshake through `gw` for `path`: the client and the answer, or why
/// the handshake failed.
async fn ws_connect(
    gw: &Gateway,
    path: &str,
) -> Result<
    (
        tokio_tungstenite::WebSocketStream<TcpStream>,
        tokio_tungstenite::tungstenite::handshake::client::Response,
    ),
    tokio_tungstenite::tungstenite::Error,
> {
    let sock = TcpStream::connect(gw.local_addr()).await.unwrap();
    let url = format!("ws://{}{path}", gw.local_addr());
    tokio_tungstenite::client_async(url, sock).await
}

/// What an upstream accepting a WebSocket handshake answers.
const SWITCHED: &[u8] =
    b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n";

/// Waits (at most 3 s) until the gateway counts `n` open tunnels.
async fn wait_tunnels(gw: &Gateway, n: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while gw.websocket_tunnels() != n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} tunnels open, expected {n}",
            gw.websocket_tunnels()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn websocket_messages_cross_the_gateway_both_ways() {
    let (upstream, seen) = echo_server().await;
    let gw = ws_gateway(upstream).await;
    let (mut ws, handshake) = ws_connect(&gw, "/ws/chat?room=7").await.unwrap();
    assert_eq!(handshake.status(), http::StatusCode::SWITCHING_PROTOCOLS);
    assert!(handshake.headers().contains_key("x-request-id"));
    wait_tunnels(&gw, 1).await;

    // The upstream saw the handshake with the route's prefix stripped and the proxy's fields.
    {
        let seen = seen.lock();
        let (target, headers) = &seen[0];
        assert_eq!(target, "/chat?room=7");
        assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
        assert_eq!(headers["x-forwarded-proto"], "http");
        assert!(headers.contains_key("x-request-id"));
        assert!(headers.contains_key("sec-websocket-key"));
    }

    ws.send(Message::text("hello")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("hello"));
    // A message far larger than one read: many chunks each way.
    let big: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    ws.send(Message::binary(big.clone())).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::binary(big));
    for i in 0..50 {
        ws.send(Message::text(format!("m{i}"))).await.unwrap();
    }
    for i in 0..50 {
        assert_eq!(
            ws.next().await.unwrap().unwrap(),
            Message::text(format!("m{i}"))
        );
    }

    // The close handshake crosses too (the upstream's close frame comes back), and once both
    // sides have closed their connections the tunnel is gone.
    ws.close(None).await.unwrap();
    let mut closed_by_upstream = false;
    while let Some(Ok(msg)) = ws.next().await {
        closed_by_upstream |= msg.is_close();
    }
    assert!(closed_by_upstream);
    drop(ws);
    wait_tunnels(&gw, 0).await;
}

#[tokio::test]
async fn bytes_sent_behind_either_handshake_are_not_lost() {
    // The upstream writes bytes right behind its 101; the client sends bytes in the same write
    // as its handshake. Both must come through, in order.
    let (upstream, seen) = raw_server(
        b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\nEARLY",
    )
    .await;
    let gw = ws_gateway(upstream).await;
    let mut sock = handshake(&gw, "/ws/feed", b"BEHIND").await;
    let head = read_head(&mut sock).await.to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    assert!(head.contains("connection: upgrade"), "{head}");
    let mut rest = vec![0u8; 11];
    tokio::time::timeout(Duration::from_secs(3), sock.read_exact(&mut rest))
        .await
        .expect("tunnel bytes did not come")
        .unwrap();
    assert_eq!(&rest, b"EARLYBEHIND");

    let upstream_head = seen.lock()[0].to_ascii_lowercase();
    assert!(
        upstream_head.starts_with("get /feed http/1.1\r\n"),
        "{upstream_head}"
    );
    assert!(
        upstream_head.contains("\r\nupgrade: websocket\r\n"),
        "{upstream_head}"
    );
    assert!(
        upstream_head.contains("\r\nconnection: upgrade\r\n"),
        "{upstream_head}"
    );

    // Half-close: the client's end of stream reaches the upstream, which closes in turn.
    sock.shutdown().await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(3), sock.read(&mut buf))
        .await
        .expect("tunnel not closed after both sides finished")
        .unwrap();
    assert_eq!(n, 0);
    wait_tunnels(&gw, 0).await;
}

#[tokio::test]
async fn only_websocket_is_switched_to_and_only_where_the_route_allows() {
    let (upstream, seen) =
        raw_server(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok").await;
    let gw = gateway(
        ServerSettings::default(),
        vec![
            route("/ws/{*rest}", upstream, IDLE),
            route("/plain/{*rest}", upstream, None),
        ],
    )
    .await;
    let ask = |path: &str, protocol: &str| {
        format!(
            "GET {path} HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: {protocol}\r\n\r\n"
        )
    };
    for (path, protocol) in [
        // h2c would let the client speak HTTP/2 straight to the upstream (h2c smuggling).
        ("/ws/a", "h2c"),
        ("/ws/a", "websocket, h2c"),
        // A route that does not allow WebSocket.
        ("/plain/a", "websocket"),
    ] {
        let mut sock = TcpStream::connect(gw.local_addr()).await.unwrap();
        sock.write_all(ask(path, protocol).as_bytes())
            .await
            .unwrap();
        let head = read_head(&mut sock).await;
        assert!(
            head.starts_with("HTTP/1.1 200"),
            "{protocol} on {path}: {head}"
        );
        let upstream_head = seen.lock().pop().unwrap().to_ascii_lowercase();
        assert!(
            !upstream_head.contains("upgrade"),
            "{protocol} on {path} reached the upstream: {upstream_head}"
        );
    }
    assert_eq!(gw.websocket_tunnels(), 0);
}

#[tokio::test]
async fn an_upstream_refusing_the_handshake_is_answered_as_usual() {
    let (upstream, _seen) =
        raw_server(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 6\r\n\r\nno ws!").await;
    let gw = ws_gateway(upstream).await;
    match ws_connect(&gw, "/ws/x").await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), http::StatusCode::FORBIDDEN);
            assert_eq!(response.body().as_deref(), Some(&b"no ws!"[..]));
        }
        other => panic!("expected the upstream's 403, got {other:?}"),
    }
    assert_eq!(gw.websocket_tunnels(), 0);
}

#[tokio::test]
async fn an_upstream_switching_to_another_protocol_is_a_bad_gateway() {
    let (upstream, _seen) = raw_server(
        b"HTTP/1.1 101 Switching Protocols\r\nupgrade: h2c\r\nconnection: upgrade\r\n\r\n",
    )
    .await;
    let gw = ws_gateway(upstream).await;
    let mut sock = handshake(&gw, "/ws/x", b"").await;
    let head = read_head(&mut sock).await;
    assert!(head.starts_with("HTTP/1.1 502"), "{head}");
    assert_eq!(gw.websocket_tunnels(), 0);
}

#[tokio::test]
async fn a_quiet_tunnel_is_closed_after_its_idle_timeout() {
    let (upstream, _seen) = echo_server().await;
    let idle = Duration::from_millis(400);
    let gw = gateway(
        ServerSettings::default(),
        vec![route("/ws/{*rest}", upstream, Some(idle))],
    )
    .await;
    let (mut ws, _) = ws_connect(&gw, "/ws/x").await.unwrap();

    // Traffic keeps it open well past the timeout...
    for i in 0..8 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        ws.send(Message::text(format!("{i}"))).await.unwrap();
        assert_eq!(
            ws.next().await.unwrap().unwrap(),
            Message::text(format!("{i}"))
        );
    }
    assert_eq!(gw.websocket_tunnels(), 1);

    // ...silence closes it after one to two timeouts (the timer is checked when it fires,
    // not moved for every message).
    let quiet = std::time::Instant::now();
    let end = tokio::time::timeout(Duration::from_secs(3), ws.next())
        .await
        .expect("a quiet tunnel stayed open");
    assert!(
        !matches!(end, Some(Ok(Message::Text(_) | Message::Binary(_)))),
        "{end:?}"
    );
    let waited = quiet.elapsed();
    assert!(
        waited >= idle - Duration::from_millis(50)
            && waited < idle * 2 + Duration::from_millis(300),
        "closed after {waited:?}"
    );
    wait_tunnels(&gw, 0).await;
}

#[tokio::test]
async fn gateway_shutdown_closes_open_tunnels() {
    let (upstream, _seen) = echo_server().await;
    let gw = ws_gateway(upstream).await;
    let (mut ws, _) = ws_connect(&gw, "/ws/x").await.unwrap();
    wait_tunnels(&gw, 1).await;
    let shutdown = tokio::spawn(gw.shutdown(Duration::from_secs(30)));
    let end = tokio::time::timeout(Duration::from_secs(3), ws.next())
        .await
        .expect("the tunnel outlived the gateway's shutdown");
    assert!(
        !matches!(end, Some(Ok(Message::Text(_) | Message::Binary(_)))),
        "{end:?}"
    );
    tokio::time::timeout(Duration::from_secs(5), shutdown)
        .await
        .expect("shutdown waited on the tunnel")
        .unwrap();
}

#[tokio::test]
async fn websocket_over_tls() {
    let (upstream, _seen) = echo_server().await;
    let dir = tempfile::tempdir().unwrap();
    let (cert, tls) = common::self_signed(dir.path());
    let gw = gateway(
        ServerSettings {
            tls: Some(tls),
            ..Default::default()
        },
        vec![route("/ws/{*rest}", upstream, IDLE)],
    )
    .await;
    let tls = common::tls_connect(gw.local_addr(), &cert).await;
    let url = format!("wss://localhost:{}/ws/secure", gw.local_addr().port());
    let (mut ws, _) = tokio_tungstenite::client_async(url, tls).await.unwrap();
    wait_tunnels(&gw, 1).await;
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
    ws.send(Message::binary(big.clone())).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::binary(big));
    ws.close(None).await.unwrap();
    while let Some(Ok(_)) = ws.next().await {}
    drop(ws);
    wait_tunnels(&gw, 0).await;
}

#[tokio::test]
async fn a_tunnel_moves_bytes_no_faster_than_the_receiver_takes_them() {
    // The upstream switches and then reads nothing: the client's writes must stall once the
    // sockets' buffers are full, with at most one chunk in the gateway, rather than the
    // gateway reading on into memory.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        read_head(&mut sock).await;
        sock.write_all(SWITCHED).await.unwrap();
        let _ = released.await;
    });
    let gw = ws_gateway(upstream).await;
    let mut sock = handshake(&gw, "/ws/x", b"").await;
    assert!(read_head(&mut sock).await.starts_with("HTTP/1.1 101"));
    let chunk = vec![7u8; 256 * 1024];
    let mut written = 0usize;
    let stalled = loop {
        match tokio::time::timeout(Duration::from_millis(500), sock.write_all(&chunk)).await {
            Ok(Ok(())) => written += chunk.len(),
            Ok(Err(e)) => panic!("write failed: {e}"),
            Err(_) => break true,
        }
        if written >= 256 * 1024 * 1024 {
            break false;
        }
    };
    // Loopback socket buffers hold a few MiB each way; 256 MiB would mean the gateway buffers.
    assert!(stalled, "{written} bytes went into a tunnel nobody reads");
    assert!(
        written < 64 * 1024 * 1024,
        "{written} bytes before the stall"
    );
    drop(release);
}

#[tokio::test]
async fn a_refused_handshake_leaves_the_client_connection_usable() {
    let (upstream, seen) = raw_server(
        b"HTTP/1.1 403 Forbidden\r\ncontent-length: 6\r\nconnection: close\r\n\r\nno ws!",
    )
    .await;
    let gw = ws_gateway(upstream).await;
    let mut sock = handshake(&gw, "/ws/x", b"").await;
    let head = read_head(&mut sock).await;
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    let mut body = [0u8; 6];
    sock.read_exact(&mut body).await.unwrap();
    assert_eq!(&body, b"no ws!");
    // The same connection carries the next request as usual.
    sock.write_all(b"GET /ws/after HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let head = read_head(&mut sock).await;
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    let last = seen.lock().last().unwrap().to_ascii_lowercase();
    assert!(last.starts_with("get /after http/1.1"), "{last}");
    assert!(!last.contains("upgrade"), "{last}");
    assert_eq!(gw.websocket_tunnels(), 0);
}
