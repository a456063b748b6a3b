//! Test backends: real hyper servers (HTTP/1.1 and h2c) on 127.0.0.1:0, started by the test.

#![allow(dead_code, unreachable_pub)]

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tideway_http_upstream::{BoxError, ClientInfo, Scheme};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// The body type backends answer with.
pub type BoxBody = UnsyncBoxBody<Bytes, BoxError>;

/// Upper bound on any single wait in these tests.
pub const WAIT: Duration = Duration::from_secs(10);

/// A running backend; stops accepting when dropped.
pub struct Backend {
    pub addr: SocketAddr,
    /// TCP connections accepted so far.
    pub accepted: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Backend {
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts a backend that serves HTTP/1.1 and h2c (prior knowledge) with `handler`.
pub async fn backend<F, Fut>(handler: F) -> Backend
where
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<BoxBody>> + Send + 'static,
{
    serve(TcpListener::bind("127.0.0.1:0").await.unwrap(), handler)
}

/// Like [`backend`], with `SO_RCVBUF` fixed on accepted sockets (no kernel autotuning), so
/// the bytes a non-reading backend lets queue in the kernel are bounded.
pub async fn backend_with_recv_buffer<F, Fut>(recv_buffer: u32, handler: F) -> Backend
where
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<BoxBody>> + Send + 'static,
{
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(recv_buffer).unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    serve(socket.listen(128).unwrap(), handler)
}

fn serve<F, Fut>(listener: TcpListener, handler: F) -> Backend
where
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<BoxBody>> + Send + 'static,
{
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let handler = Arc::new(handler);
    let count = Arc::clone(&accepted);
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            count.fetch_add(1, Ordering::SeqCst);
            let handler = Arc::clone(&handler);
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let handler = Arc::clone(&handler);
                    async move { Ok::<_, Infallible>(handler(req).await) }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Backend {
        addr,
        accepted,
        task,
    }
}

/// A backend that accepts connections and holds them open without ever answering.
pub async fn silent_backend() -> Backend {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            held.push(stream);
        }
    });
    Backend {
        addr,
        accepted,
        task,
    }
}

pub fn full(body: impl Into<Bytes>) -> BoxBody {
    Full::new(body.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

pub fn empty() -> BoxBody {
    full(Bytes::new())
}

pub fn client() -> ClientInfo {
    ClientInfo {
        addr: "10.0.0.5:40000".parse().unwrap(),
        scheme: Scheme::Https,
        request_id: None,
    }
}

/// Reads a whole (small) body.
pub async fn read_all<B>(body: B) -> Bytes
where
    B: http_body::Body<Data = Bytes>,
    B::Error: std::fmt::Debug,
{
    tokio::time::timeout(WAIT, body.collect())
        .await
        .expect("body within the wait")
        .unwrap()
        .to_bytes()
}

/// A buffer that records when the last `Bytes` sharing it is dropped.
struct WatchedBuffer {
    bytes: Vec<u8>,
    dropped: Arc<AtomicBool>,
}

impl AsRef<[u8]> for WatchedBuffer {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl Drop for WatchedBuffer {
    fn drop(&mut self) {
        self.dropped.store(true, Ordering::SeqCst);
    }
}

/// Whether the buffer of [`request_sharing_one_buffer`] has been freed.
pub struct Dropped(Arc<AtomicBool>);

impl Dropped {
    pub fn is_dropped(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// `GET /items/7?x=1` with `x-shared: shared-value`, whose target and field share one buffer,
/// as a request the gateway read does; and a way to tell when that buffer is freed.
pub fn request_sharing_one_buffer() -> (Request<BoxBody>, Dropped) {
    let dropped = Arc::new(AtomicBool::new(false));
    let buffer = Bytes::from_owner(WatchedBuffer {
        bytes: b"/items/7?x=1shared-value".to_vec(),
        dropped: Arc::clone(&dropped),
    });
    let mut req = Request::get(http::Uri::from_maybe_shared(buffer.slice(..12)).unwrap())
        .body(empty())
        .unwrap();
    req.headers_mut().insert(
        "x-shared",
        http::HeaderValue::from_maybe_shared(buffer.slice(12..)).unwrap(),
    );
    (req, Dropped(dropped))
}
