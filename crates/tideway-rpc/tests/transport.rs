//! End-to-end transport tests: real TCP on 127.0.0.1, ephemeral ports, a hand-written service so
//! these tests do not depend on the macro crate.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tideway_rpc::{
    CallContext, CallOptions, Client, ClientConfig, Codec, HandlerFuture, MethodDescriptor,
    RpcError, Server, ServerConfig, ServerHandle, ServiceDescriptor, ServiceDispatch, Status,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Counts handlers started, finished and dropped before finishing (cancelled).
#[derive(Debug, Default)]
struct Probe {
    started: AtomicUsize,
    finished: AtomicUsize,
    dropped_unfinished: AtomicUsize,
}

struct DropWatch {
    probe: Arc<Probe>,
    finished: bool,
}

impl Drop for DropWatch {
    fn drop(&mut self) {
        if self.finished {
            self.probe.finished.fetch_add(1, Ordering::SeqCst);
        } else {
            self.probe.dropped_unfinished.fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[derive(Debug, Clone)]
struct TestService {
    probe: Arc<Probe>,
}

const METHODS: &[MethodDescriptor] = &[];
static DESCRIPTOR: ServiceDescriptor = ServiceDescriptor {
    name: "test.Svc",
    methods: METHODS,
};

impl ServiceDispatch for TestService {
    fn descriptor(&self) -> &'static ServiceDescriptor {
        &DESCRIPTOR
    }

    fn dispatch(&self, method: &str, codec: Codec, payload: Bytes) -> Option<HandlerFuture> {
        let probe = Arc::clone(&self.probe);
        Some(match method {
            // Returns the payload unchanged (valid in any codec).
            "echo" => Box::pin(async move { Ok(payload) }),
            // Sleeps for the number of milliseconds in the payload, watched by the probe.
            "sleep" => Box::pin(async move {
                let ms: u64 = codec
                    .decode(&payload)
                    .map_err(RpcError::from_decode_error)?;
                probe.started.fetch_add(1, Ordering::SeqCst);
                let mut watch = DropWatch {
                    probe,
                    finished: false,
                };
                tokio::time::sleep(Duration::from_millis(ms)).await;
                watch.finished = true;
                Ok(codec.encode(&ms).unwrap())
            }),
            "panic" => Box::pin(async move { panic!("handler bug") }),
            "fail" => Box::pin(async move {
                Err(RpcError::invalid_argument(
                    "field `weight` must be positive",
                ))
            }),
            // Reports the remaining deadline (ms) and the `k` metadata value.
            "context" => Box::pin(async move {
                let ctx = CallContext::current().expect("context is set for handlers");
                let reply = (
                    ctx.remaining().as_millis() as u64,
                    ctx.metadata().get("k").map(str::to_owned),
                );
                Ok(codec.encode(&reply).unwrap())
            }),
            _ => return None,
        })
    }
}

struct Fixture {
    server: ServerHandle,
    probe: Arc<Probe>,
}

async fn start(config: ServerConfig) -> Fixture {
    let probe = Arc::new(Probe::default());
    let server = Server::builder()
        .config(config)
        .add_service(TestService {
            probe: Arc::clone(&probe),
        })
        .bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    Fixture { server, probe }
}

fn client(addr: SocketAddr, codec: Codec) -> Client {
    Client::new(
        addr,
        ClientConfig {
            codec,
            ..Default::default()
        },
    )
    .unwrap()
}

fn timeout(ms: u64) -> CallOptions {
    CallOptions::with_timeout(Duration::from_millis(ms))
}

/// Polls `cond` every 5 ms until it holds or `within` passes.
async fn eventually(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + within;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    cond()
}

#[tokio::test]
async fn round_trip_with_both_codecs() {
    let f = start(ServerConfig::default()).await;
    for codec in [Codec::Json, Codec::MsgPack] {
        let c = client(f.server.local_addr(), codec);
        let out: u64 = c
            .call_typed("test.Svc/sleep", &1u64, &timeout(2000))
            .await
            .unwrap();
        assert_eq!(out, 1, "{codec}");
        let raw = codec.encode(&vec!["a", "b"]).unwrap();
        let echoed = c
            .call("test.Svc/echo", codec, raw.clone(), &timeout(2000))
            .await
            .unwrap();
        assert_eq!(echoed, raw);
        let err = c
            .call_typed::<_, u64>("test.Svc/fail", &(), &timeout(2000))
            .await
            .unwrap_err();
        assert_eq!(err.status(), Status::InvalidArgument);
        assert!(err.message().contains("weight"), "{err}");
    }
}

#[tokio::test]
async fn deadline_and_metadata_travel_with_the_request() {
    let f = start(ServerConfig::default()).await;
    let c = client(f.server.local_addr(), Codec::Json);
    let mut opts = timeout(3000);
    opts.metadata.insert("k", "trace-1");
    let (remaining_ms, k): (u64, Option<String>) =
        c.call_typed("test.Svc/context", &(), &opts).await.unwrap();
    assert!((2500..=3000).contains(&remaining_ms), "{remaining_ms}");
    assert_eq!(k.as_deref(), Some("trace-1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_concurrent_calls_on_one_connection() {
    const CALLS: usize = 10_000;
    let f = start(ServerConfig {
        max_in_flight_per_connection: CALLS,
        max_in_flight_total: CALLS,
        ..Default::default()
    })
    .await;
    let c = Client::new(
        f.server.local_addr(),
        ClientConfig {
            connections: 1,
            max_in_flight_per_connection: CALLS,
            codec: Codec::MsgPack,
            ..Default::default()
        },
    )
    .unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..CALLS {
        let c = c.clone();
        tasks.spawn(async move {
            let payload = Codec::MsgPack.encode(&(i as u64)).unwrap();
            let out = c
                .call("test.Svc/echo", Codec::MsgPack, payload, &timeout(30_000))
                .await
                .unwrap();
            assert_eq!(Codec::MsgPack.decode::<u64>(&out).unwrap(), i as u64);
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    assert_eq!(c.connections(), 1);
    assert_eq!(c.pending_calls(), 0);
}

#[tokio::test]
async fn deadline_expiry_leaves_no_pending_entry_and_stops_the_handler() {
    let f = start(ServerConfig::default()).await;
    let c = client(f.server.local_addr(), Codec::MsgPack);
    let started = Instant::now();
    let err = c
        .call_typed::<_, u64>("test.Svc/sleep", &60_000u64, &timeout(150))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Status::DeadlineExceeded, "{err}");
    assert!(started.elapsed() < Duration::from_millis(1000));
    assert_eq!(c.pending_calls(), 0);
    assert!(
        eventually(Duration::from_secs(2), || f
            .probe
            .dropped_unfinished
            .load(Ordering::SeqCst)
            == 1)
        .await,
        "server handler was not dropped"
    );
    assert!(eventually(Duration::from_secs(2), || f.server.in_flight() == 0).await);
    assert_eq!(f.probe.finished.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_call_given_a_deadline_ends_by_it_and_the_earlier_of_deadline_and_timeout_counts() {
    let f = start(ServerConfig::default()).await;
    let c = client(f.server.local_addr(), Codec::MsgPack);
    // Each case's options, made as it starts: a deadline alone and a deadline well before a
    // long timeout end at the deadline; a timeout well before a far deadline, at the timeout.
    let cases: [fn() -> CallOptions; 3] = [
        || CallOptions::with_deadline(Instant::now() + Duration::from_millis(150)),
        || CallOptions {
            timeout: Some(Duration::from_secs(60)),
            ..CallOptions::with_deadline(Instant::now() + Duration::from_millis(150))
        },
        || CallOptions {
            deadline: Some(Instant::now() + Duration::from_secs(60)),
            ..timeout(150)
        },
    ];
    for (i, options) in cases.iter().enumerate() {
        let started = Instant::now();
        let err = c
            .call_typed::<_, u64>("test.Svc/sleep", &60_000u64, &options())
            .await
            .unwrap_err();
        assert_eq!(err.status(), Status::DeadlineExceeded, "case {i}: {err}");
        let took = started.elapsed();
        assert!(
            took < Duration::from_millis(1000),
            "case {i}: the call took {took:?}"
        );
        // The server got the deadline with the request and dropped its handler by itself.
        assert!(
            eventually(Duration::from_secs(2), || f
                .probe
                .dropped_unfinished
                .load(Ordering::SeqCst)
                == i + 1)
            .await,
            "case {i}: the server handler was not dropped"
        );
    }
    assert_eq!(c.pending_calls(), 0);
    // A deadline already passed: refused without waiting.
    let started = Instant::now();
    let err = c
        .call_typed::<_, u64>(
            "test.Svc/sleep",
            &60_000u64,
            &CallOptions::with_deadline(Instant::now()),
        )
        .await
        .unwrap_err();
    assert_eq!(err.status(), Status::DeadlineExceeded, "{err}");
    assert!(started.elapsed() < Duration::from_millis(500));
    assert_eq!(f.probe.finished.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn server_enforces_the_deadline_even_if_the_client_does_not_cancel() {
    // A raw request with a 100 ms deadline and no Cancel: the server must answer
    // DeadlineExceeded by itself.
    let f = start(ServerConfig::default()).await;
    let mut raw = TcpStream::connect(f.server.local_addr()).await.unwrap();
    let mut req = tideway_wire::Request::new(
        1,
        "test.Svc/sleep",
        Codec::Json,
        Bytes::from_static(b"60000"),
    );
    req.deadline = Some(Duration::from_millis(100));
    let mut buf = bytes::BytesMut::new();
    tideway_wire::Frame::Request(req).encode(&mut buf).unwrap();
    raw.write_all(&buf).await.unwrap();
    let frame = read_frame(&mut raw, Duration::from_secs(2)).await.unwrap();
    match frame {
        tideway_wire::Frame::Response(r) => assert_eq!(r.status, Status::DeadlineExceeded),
        other => panic!("unexpected {other:?}"),
    }
    assert!(eventually(Duration::from_secs(1), || f.server.in_flight() == 0).await);
}

#[tokio::test]
async fn dropped_client_future_cancels_the_server_handler() {
    let f = start(ServerConfig::default()).await;
    let c = client(f.server.local_addr(), Codec::MsgPack);
    let call = {
        let c = c.clone();
        tokio::spawn(async move {
            c.call_typed::<_, u64>("test.Svc/sleep", &60_000u64, &timeout(60_000))
                .await
        })
    };
    assert!(
        eventually(Duration::from_secs(2), || f
            .probe
            .started
            .load(Ordering::SeqCst)
            == 1)
        .await
    );
    call.abort();
    assert!(
        eventually(Duration::from_secs(2), || f
            .probe
            .dropped_unfinished
            .load(Ordering::SeqCst)
            == 1)
        .await,
        "Cancel did not drop the server handler"
    );
    assert_eq!(c.pending_calls(), 0);
    assert!(eventually(Duration::from_secs(1), || f.server.in_flight() == 0).await);
}

#[test]
fn killing_the_server_fails_every_pending_call_within_100ms() {
    // The server runs on its own runtime; shutting that runtime down closes every socket at once,
    // as the kernel does for a killed process.
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let f = server_rt.block_on(start(ServerConfig::default()));
    let addr = f.server.local_addr();
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    client_rt.block_on(async {
        let c = client(addr, Codec::MsgPack);
        let mut calls = tokio::task::JoinSet::new();
        for _ in 0..50 {
            let c = c.clone();
            calls.spawn(async move {
                let r = c
                    .call_typed::<_, u64>("test.Svc/sleep", &60_000u64, &timeout(60_000))
                    .await;
                (r, Instant::now())
            });
        }
        assert!(
            eventually(Duration::from_secs(5), || f
                .probe
                .started
                .load(Ordering::SeqCst)
                == 50)
            .await
        );
        server_rt.shutdown_background();
        let killed_at = Instant::now();
        while let Some(done) = calls.join_next().await {
            let (result, at) = done.unwrap();
            let err = result.unwrap_err();
            assert_eq!(err.status(), Status::Unavailable, "{err}");
            assert!(err.is_connection_lost() && !err.is_retry_safe(), "{err}");
            let took = at - killed_at;
            assert!(took < Duration::from_millis(100), "failed after {took:?}");
        }
        assert_eq!(c.pending_calls(), 0);
        // The next call fails fast too instead of hanging.
        let err = c
            .call_typed::<_, u64>("test.Svc/sleep", &1u64, &timeout(5_000))
            .await
            .unwrap_err();
        assert_eq!(err.status(), Status::Unavailable);
    });
}

#[tokio::test]
async fn unknown_service_and_method_answer_not_found() {
    let f = start(ServerConfig::default()).await;
    let c = client(f.server.local_addr(), Codec::Json);
    for method in ["test.Svc/nope", "nope.Svc/echo", "no-slash"] {
        let err = c
            .call(
                method,
                Codec::Json,
                Bytes::from_static(b"{}"),
                &timeout(2000),
            )
            .await
            .unwrap_err();
        assert_eq!(err.status(), Status::NotFound, "{method}: {err}");
    }
}

#[tokio::test]
async fn handler_panic_is_internal_and_the_connection_lives_on() {
    let f = start(ServerConfig::default()).await;
    let c = client(f.server.local_addr(), Codec::Json);
    let err = c
        .call("test.Svc/panic", Codec::Json, Bytes::new(), &timeout(2000))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Status::Internal);
    let ok = c
        .call(
            "test.Svc/echo",
            Codec::Json,
            Bytes::from_static(b"1"),
            &timeout(2000),
        )
        .await
        .unwrap();
    assert_eq!(&ok[..], b"1");
    assert_eq!(f.server.connections(), 1);
    assert_eq!(f.server.in_flight(), 0);
}

#[tokio::test]
async fn over_the_limits_calls_are_refused_at_once() {
    let f = start(ServerConfig {
        max_in_flight_per_connection: 2,
        max_in_flight_total: 3,
        ..Default::default()
    })
    .await;
    let addr = f.server.local_addr();
    let a = client(addr, Codec::MsgPack);
    let b = client(addr, Codec::MsgPack);
    let slow = |c: &Client| {
        let c = c.clone();
        tokio::spawn(async move {
            c.call_typed::<_, u64>("test.Svc/sleep", &500u64, &timeout(5_000))
                .await
        })
    };
    let a1 = slow(&a);
    let a2 = slow(&a);
    assert!(
        eventually(Duration::from_secs(2), || f
            .probe
            .started
            .load(Ordering::SeqCst)
            == 2)
        .await
    );
    // Per-connection limit.
    let t = Instant::now();
    let err = a
        .call_typed::<_, u64>("test.Svc/sleep", &500u64, &timeout(5_000))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Status::Overloaded, "{err}");
    assert!(err.is_retry_safe());
    assert!(
        t.elapsed() < Duration::from_millis(100),
        "{:?}",
        t.elapsed()
    );
    // Server-wide limit: b may start one, the next is refused.
    let b1 = slow(&b);
    assert!(
        eventually(Duration::from_secs(2), || f
            .probe
            .started
            .load(Ordering::SeqCst)
            == 3)
        .await
    );
    let err = b
        .call_typed::<_, u64>("test.Svc/sleep", &500u64, &timeout(5_000))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Status::Overloaded, "{err}");
    for h in [a1, a2, b1] {
        assert_eq!(h.await.unwrap().unwrap(), 500);
    }
    assert_eq!(f.server.in_flight(), 0);
}

#[tokio::test]
async fn client_refuses_locally_over_its_pending_limit() {
    let f = start(ServerConfig::default()).await;
    let c = Client::new(
        f.server.local_addr(),
        ClientConfig {
            max_in_flight_per_connection: 1,
            ..Default::default()
        },
    )
    .unwrap();
    let first = {
        let c = c.clone();
        tokio::spawn(async move {
            c.call_typed::<_, u64>("test.Svc/sleep", &300u64, &timeout(5_000))
                .await
        })
    };
    assert!(
        eventually(Duration::from_secs(2), || f
            .probe
            .started
            .load(Ordering::SeqCst)
            == 1)
        .await
    );
    let err = c
        .call_typed::<_, u64>("test.Svc/sleep", &1u64, &timeout(5_000))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Status::Overloaded);
    assert!(err.is_retry_safe());
    assert_eq!(
        f.probe.started.load(Ordering::SeqCst),
        1,
        "refused call reached the server"
    );
    first.await.unwrap().unwrap();
}

/// Reads one frame from a raw socket, or `None` on EOF/timeout.
async fn read_frame(sock: &mut TcpStream, within: Duration) -> Option<tideway_wire::Frame> {
    let mut decoder = tideway_wire::FrameDecoder::new(1 << 20).unwrap();
    let mut buf = bytes::BytesMut::new();
    let end = Instant::now() + within;
    loop {
        if let Some(frame) = decoder.decode(&mut buf).unwrap() {
            return Some(frame);
        }
        let n = tokio::time::timeout_at(end, sock.read_buf(&mut buf))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
    }
}

/// Whether the server closed `sock` (EOF or reset) within `within`.
async fn closed_by_peer(sock: &mut TcpStream, within: Duration) -> bool {
    let mut scratch = [0u8; 1024];
    let end = Instant::now() + within;
    loop {
        match tokio::time::timeout_at(end, sock.read(&mut scratch)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

#[tokio::test]
async fn malformed_and_oversized_frames_close_only_that_connection() {
    let f = start(ServerConfig {
        max_frame_len: 64 * 1024,
        ..Default::default()
    })
    .await;
    let addr = f.server.local_addr();
    let good = client(addr, Codec::Json);
    good.call(
        "test.Svc/echo",
        Codec::Json,
        Bytes::from_static(b"1"),
        &timeout(2000),
    )
    .await
    .unwrap();

    // A 4-byte prefix announcing 1 GiB: the server must hang up at once, without waiting for (or
    // reserving room for) the body.
    let mut huge = TcpStream::connect(addr).await.unwrap();
    huge.write_all(&(1u32 << 30).to_be_bytes()).await.unwrap();
    assert!(closed_by_peer(&mut huge, Duration::from_secs(2)).await);

    // A well-sized frame with a bad version byte.
    let mut garbage = TcpStream::connect(addr).await.unwrap();
    garbage
        .write_all(&[0, 0, 0, 12, 9, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1])
        .await
        .unwrap();
    assert!(closed_by_peer(&mut garbage, Duration::from_secs(2)).await);

    // A request frame whose method is not UTF-8.
    let mut bad_utf8 = TcpStream::connect(addr).await.unwrap();
    let mut frame = vec![0, 0, 0, 0, 1, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1];
    frame.extend_from_slice(&[0, 0, 0, 0, 0, 2, 0xff, 0xfe, 0, 0]);
    let len = (frame.len() - 4) as u32;
    frame[..4].copy_from_slice(&len.to_be_bytes());
    bad_utf8.write_all(&frame).await.unwrap();
    assert!(closed_by_peer(&mut bad_utf8, Duration::from_secs(2)).await);

    // The well-behaved connection is untouched.
    let out = good
        .call(
            "test.Svc/echo",
            Codec::Json,
            Bytes::from_static(b"2"),
            &timeout(2000),
        )
        .await
        .unwrap();
    assert_eq!(&out[..], b"2");
    assert_eq!(good.connections(), 1);
    assert!(eventually(Duration::from_secs(1), || f.server.connections() == 1).await);
}

#[tokio::test]
async fn goaway_drains_in_flight_calls_then_closes() {
    let f = start(ServerConfig {
        drain_timeout: Duration::from_secs(5),
        ..Default::default()
    })
    .await;
    let addr = f.server.local_addr();
    let c = client(addr, Codec::MsgPack);
    let mut calls = Vec::new();
    for _ in 0..20 {
        let c = c.clone();
        calls.push(tokio::spawn(async move {
            c.call_typed::<_, u64>("test.Svc/sleep", &300u64, &timeout(5_000))
                .await
        }));
    }
    assert!(
        eventually(Duration::from_secs(2), || f
            .probe
            .started
            .load(Ordering::SeqCst)
            == 20)
        .await
    );
    let probe = Arc::clone(&f.probe);
    let shutdown = tokio::spawn(f.server.shutdown());
    for call in calls {
        assert_eq!(
            call.await.unwrap().unwrap(),
            300,
            "in-flight call was not drained"
        );
    }
    tokio::time::timeout(Duration::from_secs(5), shutdown)
        .await
        .expect("shutdown finished")
        .unwrap();
    assert_eq!(probe.finished.load(Ordering::SeqCst), 20);
    assert_eq!(probe.dropped_unfinished.load(Ordering::SeqCst), 0);
    // Nothing listens any more: new calls fail fast with Unavailable.
    let err = c
        .call_typed::<_, u64>("test.Svc/sleep", &1u64, &timeout(2_000))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Status::Unavailable, "{err}");
}

/// After its GoAway the server half-closes and keeps reading until the client closes (a
/// lingering close): bytes the client sends meanwhile are read and discarded, not answered with a
/// reset that could destroy what the client has not read yet.
#[tokio::test]
async fn a_drained_connection_lingers_instead_of_resetting() {
    let f = start(ServerConfig {
        drain_timeout: Duration::from_secs(5),
        ..Default::default()
    })
    .await;
    let mut raw = TcpStream::connect(f.server.local_addr()).await.unwrap();
    let mut ping = bytes::BytesMut::new();
    tideway_wire::Frame::Ping { nonce: 7 }
        .encode(&mut ping)
        .unwrap();
    raw.write_all(&ping).await.unwrap();
    let mut pong = vec![0u8; ping.len()];
    raw.read_exact(&mut pong).await.unwrap();
    let shutdown = tokio::spawn(f.server.shutdown());
    // GoAway, then the server's FIN.
    let mut received = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), raw.read_to_end(&mut received))
        .await
        .expect("the server half-closed")
        .expect("no reset");
    let mut decoder = tideway_wire::FrameDecoder::new(1 << 20).unwrap();
    let mut buf = bytes::BytesMut::from(&received[..]);
    assert!(
        matches!(
            decoder.decode(&mut buf).unwrap(),
            Some(tideway_wire::Frame::GoAway(_))
        ),
        "GoAway first"
    );
    // The client still sends (it has not read the GoAway yet, say). A server that closed its
    // socket now would answer with a reset, and the second write would fail.
    raw.write_all(&[0u8; 1024]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    raw.write_all(&[0u8; 1024])
        .await
        .expect("the server is still reading: no reset");
    // The client closes its side; the server's linger ends and shutdown completes.
    raw.shutdown().await.unwrap();
    tokio::time::timeout(Duration::from_secs(3), shutdown)
        .await
        .expect("shutdown finished after the client closed")
        .unwrap();
}

#[tokio::test]
async fn drain_timeout_drops_calls_that_run_too_long() {
    let f = start(ServerConfig {
        drain_timeout: Duration::from_millis(200),
        ..Default::default()
    })
    .await;
    let c = client(f.server.local_addr(), Codec::MsgPack);
    let call = {
        let c = c.clone();
        tokio::spawn(async move {
            c.call_typed::<_, u64>("test.Svc/sleep", &60_000u64, &timeout(60_000))
                .await
        })
    };
    assert!(
        eventually(Duration::from_secs(2), || f
            .probe
            .started
            .load(Ordering::SeqCst)
            == 1)
        .await
    );
    let probe = Arc::clone(&f.probe);
    let t = Instant::now();
    f.server.shutdown().await;
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert_eq!(probe.dropped_unfinished.load(Ordering::SeqCst), 1);
    let err = call.await.unwrap().unwrap_err();
    assert_eq!(err.status(), Status::Unavailable, "{err}");
}

#[tokio::test]
async fn keepalive_detects_a_server_that_stopped_answering() {
    // A "server" that accepts and reads but never writes: only the keep-alive can notice.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&accepted);
    tokio::spawn(async move {
        loop {
            let (mut sock, _) = listener.accept().await.unwrap();
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut sink = vec![0u8; 4096];
                while sock.read(&mut sink).await.map(|n| n > 0).unwrap_or(false) {}
            });
        }
    });
    let c = Client::new(
        addr,
        ClientConfig {
            keepalive_interval: Duration::from_millis(100),
            keepalive_timeout: Duration::from_millis(100),
            ..Default::default()
        },
    )
    .unwrap();
    // A call in flight when the ping goes unanswered keeps its deadline: the server has not
    // failed it, it has not answered in time.
    let t = Instant::now();
    let err = c
        .call_typed::<_, u64>("test.Svc/sleep", &1u64, &timeout(1_000))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Status::DeadlineExceeded, "{err}");
    assert!(
        t.elapsed() >= Duration::from_millis(950),
        "{:?}",
        t.elapsed()
    );
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert_eq!(c.pending_calls(), 0);
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    // The silent connection takes no new call: the next one opens a second connection.
    let err = c
        .call_typed::<_, u64>("test.Svc/sleep", &1u64, &timeout(100))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Status::DeadlineExceeded, "{err}");
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        2,
        "a new connection for the new call"
    );
    assert_eq!(c.pending_calls(), 0);
}

#[tokio::test]
async fn keepalive_keeps_an_idle_connection_to_a_server_that_answers_pings() {
    let f = start(ServerConfig::default()).await;
    let c = Client::new(
        f.server.local_addr(),
        ClientConfig {
            keepalive_interval: Duration::from_millis(100),
            keepalive_timeout: Duration::from_millis(100),
            ..Default::default()
        },
    )
    .unwrap();
    let payload = Codec::MsgPack.encode(&7u64).unwrap();
    c.call(
        "test.Svc/echo",
        Codec::MsgPack,
        payload.clone(),
        &timeout(2000),
    )
    .await
    .unwrap();
    // Idle for several ping rounds: each ping is answered, so the connection stays usable.
    for step in 0..16 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(c.connections(), 1, "connection unusable after {step} steps");
    }
    c.call("test.Svc/echo", Codec::MsgPack, payload, &timeout(2000))
        .await
        .unwrap();
    assert_eq!(c.connections(), 1);
    assert_eq!(f.server.connections(), 1);
}

#[tokio::test]
async fn unreachable_endpoint_fails_fast_and_backs_off_then_reconnects() {
    // Take a free port, then close it so nothing listens there.
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let c = Client::new(
        addr,
        ClientConfig {
            reconnect_backoff_min: Duration::from_millis(200),
            reconnect_backoff_max: Duration::from_millis(400),
            ..Default::default()
        },
    )
    .unwrap();
    let err = c
        .call_typed::<_, u64>("test.Svc/sleep", &1u64, &timeout(2_000))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Status::Unavailable);
    assert!(err.is_retry_safe(), "{err}");
    let err = c
        .call_typed::<_, u64>("test.Svc/sleep", &1u64, &timeout(2_000))
        .await
        .unwrap_err();
    assert!(err.message().contains("next connect attempt"), "{err}");

    // The client reports the backoff, so a balancer can skip the endpoint without a failed call.
    let until = c.unreachable_until().expect("in reconnect backoff");
    assert!(until > Instant::now());

    // Start a server on that port; after the backoff the client connects.
    let probe = Arc::new(Probe::default());
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let _server = Server::builder()
        .add_service(TestService { probe })
        .serve(listener)
        .unwrap();
    tokio::time::sleep(Duration::from_millis(450)).await;
    let out: u64 = c
        .call_typed("test.Svc/sleep", &1u64, &timeout(2_000))
        .await
        .unwrap();
    assert_eq!(out, 1);
}

#[tokio::test]
async fn oversized_request_is_refused_before_sending() {
    let f = start(ServerConfig::default()).await;
    let c = Client::new(
        f.server.local_addr(),
        ClientConfig {
            max_frame_len: 1024,
            ..Default::default()
        },
    )
    .unwrap();
    let err = c
        .call(
            "test.Svc/echo",
            Codec::Json,
            Bytes::from(vec![b'1'; 2048]),
            &timeout(2000),
        )
        .await
        .unwrap_err();
    assert_eq!(err.status(), Status::InvalidArgument);
    assert_eq!(f.server.connections(), 0, "nothing should have been sent");
}

/// A raw "server" that answers the first request of the first connection after sending GoAway
/// with the given cut-off: with `answer`, an Unavailable response; without, it closes.
async fn goaway_server(last_request_id: u64, answer: bool) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        let Some(tideway_wire::Frame::Request(req)) =
            read_frame(&mut sock, Duration::from_secs(5)).await
        else {
            panic!("expected a request");
        };
        let mut out = bytes::BytesMut::new();
        tideway_wire::Frame::GoAway(tideway_wire::GoAway {
            last_request_id,
            reason: "test".into(),
        })
        .encode(&mut out)
        .unwrap();
        if answer {
            tideway_wire::Frame::Response(tideway_wire::Response::error(
                req.id,
                req.codec,
                Status::Unavailable,
                "server is shutting down",
            ))
            .encode(&mut out)
            .unwrap();
        }
        sock.write_all(&out).await.unwrap();
        if !answer {
            drop(sock);
        } else {
            // Keep the connection open until the client goes.
            let _ = closed_by_peer(&mut sock, Duration::from_secs(5)).await;
        }
    });
    addr
}

#[tokio::test]
async fn calls_past_the_goaway_cut_off_are_reported_as_not_started() {
    for answer in [true, false] {
        let c = client(goaway_server(0, answer).await, Codec::MsgPack);
        assert_eq!(c.goaways_received(), 0);
        let err = c
            .call_typed::<_, u64>("test.Svc/sleep", &1u64, &timeout(2_000))
            .await
            .unwrap_err();
        assert_eq!(err.status(), Status::Unavailable, "{err}");
        assert!(err.is_retry_safe(), "answer={answer}: {err}");
        assert!(!err.is_connection_lost(), "{err}");
        assert_eq!(c.goaways_received(), 1);
    }
}

#[tokio::test]
async fn calls_within_the_goaway_cut_off_keep_their_outcome() {
    // The server says it accepted request 1 (the call): its Unavailable is the server's answer,
    // and a connection closed without an answer is a lost call, not retry-safe.
    let c = client(goaway_server(1, true).await, Codec::MsgPack);
    let err = c
        .call_typed::<_, u64>("test.Svc/sleep", &1u64, &timeout(2_000))
        .await
        .unwrap_err();
    assert!(!err.is_retry_safe() && !err.is_connection_lost(), "{err}");
    let c = client(goaway_server(1, false).await, Codec::MsgPack);
    let err = c
        .call_typed::<_, u64>("test.Svc/sleep", &1u64, &timeout(2_000))
        .await
        .unwrap_err();
    assert!(!err.is_retry_safe(), "{err}");
    assert!(err.is_connection_lost(), "{err}");
}

#[tokio::test]
async fn calls_that_find_the_write_queue_full_wait_for_room_only_until_their_deadline() {
    // A peer that accepts and never reads: once the kernel's buffers are full the connection's
    // writer stops, its small write queue fills, and later calls wait for room in it.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            held.push(sock);
        }
    });
    let c = Client::new(
        addr,
        ClientConfig {
            connections: 1,
            write_queue_capacity: 2,
            ..Default::default()
        },
    )
    .unwrap();
    let payload = Bytes::from(vec![b'x'; 512 * 1024]);
    let deadline = Duration::from_millis(500);
    let started = Instant::now();
    let calls = (0..64).map(|_| {
        let c = c.clone();
        let payload = payload.clone();
        async move {
            let result = c
                .call("test.Svc/echo", Codec::Json, payload, &timeout(500))
                .await;
            (result, started.elapsed())
        }
    });
    let outcomes = futures::future::join_all(calls).await;
    let mut waited_for_room = 0;
    for (result, took) in outcomes {
        let err = result.expect_err("nobody answers");
        assert_eq!(err.status(), Status::DeadlineExceeded, "{err}");
        assert!(took < deadline + Duration::from_millis(400), "{took:?}");
        if err.message().contains("waiting to write the request") {
            waited_for_room += 1;
        }
    }
    assert!(
        waited_for_room > 0,
        "no call found the write queue full: the test did not fill it"
    );
    assert_eq!(c.pending_calls(), 0);
}

#[tokio::test]
async fn calls_fill_connections_in_order_and_open_the_next_only_when_needed() {
    let f = start(ServerConfig::default()).await;
    let c = Client::new(
        f.server.local_addr(),
        ClientConfig {
            connections: 4,
            ..Default::default()
        },
    )
    .unwrap();
    let calls = |n: usize| {
        let c = c.clone();
        futures::future::join_all((0..n).map(move |_| {
            let c = c.clone();
            async move {
                c.call_typed::<_, u64>("test.Svc/sleep", &200u64, &timeout(5_000))
                    .await
            }
        }))
    };
    // 100 calls at once fit on the first connection: one write carries many of them.
    for r in calls(100).await {
        r.unwrap();
    }
    assert_eq!(c.connections(), 1);
    // 300 at once: the first connection takes 128; the others find it full and wait for the
    // second to open (one connect), which takes 128 more, and the last 44 open a third.
    let burst = tokio::spawn(calls(300));
    assert!(eventually(Duration::from_secs(2), || c.pending_calls() == 300).await);
    assert_eq!(c.connections(), 3);
    for r in burst.await.unwrap() {
        r.unwrap();
    }
    // Open connections stay open; past 128 calls on each of the four, the least loaded takes
    // the call (up to the per-connection limit), so a larger burst opens nothing more.
    let burst = tokio::spawn(calls(1_000));
    assert!(eventually(Duration::from_secs(3), || c.pending_calls() == 1_000).await);
    assert_eq!(c.connections(), 4);
    for r in burst.await.unwrap() {
        r.unwrap();
    }
}
