//! The HTTP listener: accept loop with a connection limit, HTTP/1.1 and HTTP/2 (h2c by preface,
//! or by ALPN over TLS) on hyper, and per connection a watchdog that enforces the whole-header
//! deadline and the keep-alive idle timeout.
//!
//! # Connection timers
//!
//! hyper's own `header_read_timeout` also runs while a keep-alive connection waits for its next
//! request, which would make the idle timeout equal to the header deadline. So both timers live
//! here instead: [`WatchedIo`] notes when bytes of a new request head start arriving and when the
//! connection was last active; the service marks when a request is being served. The watchdog
//! closes a connection whose head has been arriving for longer than the header deadline
//! (slowloris), or that has been idle, with no request in service, for the keep-alive timeout.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tideway_http_upstream::Scheme;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backends::RpcBackends;
use crate::config::ServerSettings;
use crate::handler::{Downstream, GatewayState, RequestIds, handle};
use crate::router::RouteTable;
use crate::tls;

/// How long graceful shutdown waits for in-flight requests.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections being refused (503 written) at once; past this, refused connections are closed
/// without an answer so a flood cannot pile up refusal tasks.
const MAX_CONCURRENT_REFUSALS: usize = 256;
/// Time allowed to write the refusal of an over-limit connection.
const REFUSAL_WRITE_TIMEOUT: Duration = Duration::from_secs(1);
/// Pause after an accept error (such as running out of file descriptors).
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);
/// Bounds of the connection watchdog's tick.
const MIN_WATCH_TICK: Duration = Duration::from_millis(10);
const MAX_WATCH_TICK: Duration = Duration::from_secs(1);
/// The HTTP/2 connection preface starts with these bytes.
const H2_PREFACE_START: &[u8] = b"PRI * HTTP/2.0";

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: io::Error,
    },
    /// The TLS certificate or key could not be loaded.
    #[error("TLS: {0}")]
    Tls(String),
}

/// A running gateway listener.
#[derive(Debug)]
pub struct Gateway {
    local_addr: SocketAddr,
    state: Arc<GatewayState>,
    shutdown: CancellationToken,
    connections: TaskTracker,
    connection_permits: Arc<Semaphore>,
    accept: tokio::task::JoinHandle<()>,
}

impl Gateway {
    /// Binds the listener and starts serving `routes` with `backends`.
    pub async fn start(
        settings: ServerSettings,
        routes: RouteTable,
        backends: RpcBackends,
    ) -> Result<Gateway, StartError> {
        let listener =
            TcpListener::bind(settings.listen)
                .await
                .map_err(|source| StartError::Bind {
                    addr: settings.listen,
                    source,
                })?;
        let local_addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: settings.listen,
            source,
        })?;
        let tls = match &settings.tls {
            Some(t) => Some(tls::acceptor(&t.cert, &t.key).map_err(StartError::Tls)?),
            None => None,
        };
        let connection_permits = Arc::new(Semaphore::new(settings.max_connections));
        let state = Arc::new(GatewayState {
            settings,
            routes: ArcSwap::from_pointee(routes),
            backends: ArcSwap::from_pointee(backends),
            ids: RequestIds::new(),
        });
        let shutdown = CancellationToken::new();
        let connections = TaskTracker::new();
        let accept = tokio::spawn(accept_loop(
            listener,
            Arc::clone(&state),
            tls,
            Arc::clone(&connection_permits),
            shutdown.clone(),
            connections.clone(),
        ));
        Ok(Gateway {
            local_addr,
            state,
            shutdown,
            connections,
            connection_permits,
            accept,
        })
    }

    /// The address the gateway listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Swaps in a new route table; requests already routed finish on the old one.
    pub fn set_routes(&self, routes: RouteTable) {
        self.state.routes.store(Arc::new(routes));
    }

    /// Swaps in new RPC backends.
    pub fn set_backends(&self, backends: RpcBackends) {
        self.state.backends.store(Arc::new(backends));
    }

    /// The current route table.
    pub fn routes(&self) -> Arc<RouteTable> {
        self.state.routes.load_full()
    }

    /// RPC calls waiting for a response.
    pub fn pending_rpc_calls(&self) -> usize {
        self.state.backends.load().pending_calls()
    }

    /// Client connections open now.
    pub fn open_connections(&self) -> usize {
        self.state.settings.max_connections - self.connection_permits.available_permits()
    }

    /// Stops accepting, lets in-flight requests finish (up to `drain_timeout`), closes.
    pub async fn shutdown(self, drain_timeout: Duration) {
        self.shutdown.cancel();
        let _ = self.accept.await;
        self.connections.close();
        if tokio::time::timeout(drain_timeout, self.connections.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                open = self.connections.len(),
                "drain timeout passed; dropping the remaining connections"
            );
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    state: Arc<GatewayState>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    permits: Arc<Semaphore>,
    shutdown: CancellationToken,
    connections: TaskTracker,
) {
    let refusals = Arc::new(Semaphore::new(MAX_CONCURRENT_REFUSALS));
    loop {
        let accepted = tokio::select! {
            biased;
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            if tls.is_none()
                && let Ok(refusal) = Arc::clone(&refusals).try_acquire_owned()
            {
                tokio::spawn(refuse(stream, refusal));
            }
            tracing::debug!(%peer, "connection limit reached; refusing connection");
            continue;
        };
        let _ = stream.set_nodelay(true);
        connections.spawn(serve_connection(
            stream,
            peer,
            Arc::clone(&state),
            tls.clone(),
            permit,
            shutdown.clone(),
        ));
    }
}

/// Answers an over-limit connection with a 503 and closes it.
async fn refuse(mut stream: TcpStream, _refusal: OwnedSemaphorePermit) {
    let body = r#"{"code":"overloaded","message":"connection limit reached","request_id":null}"#;
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: {}\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        crate::error::RETRY_AFTER_SECS,
        body.len()
    );
    let _ = tokio::time::timeout(REFUSAL_WRITE_TIMEOUT, async {
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await
    })
    .await;
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    state: Arc<GatewayState>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    _permit: OwnedSemaphorePermit,
    shutdown: CancellationToken,
) {
    let settings = &state.settings;
    let watch = Arc::new(ConnWatch::new());
    let io = WatchedIo {
        inner: stream,
        watch: Arc::clone(&watch),
    };
    let scheme = if tls.is_some() {
        Scheme::Https
    } else {
        Scheme::Http
    };
    let downstream = Downstream { peer, scheme };
    let service = {
        let state = Arc::clone(&state);
        let watch = Arc::clone(&watch);
        service_fn(move |req| {
            let in_service = watch.request_started();
            let state = Arc::clone(&state);
            async move {
                let response = handle(state, downstream, req).await;
                drop(in_service);
                Ok::<_, Infallible>(response)
            }
        })
    };

    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .max_buf_size(settings.max_header_bytes.max(8192))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(settings.http2_max_concurrent_streams)
        .max_header_list_size(settings.max_header_bytes as u32);

    match tls {
        None => {
            let conn = builder.serve_connection(TokioIo::new(io), service);
            drive(conn, &watch, settings, &shutdown, peer).await;
        }
        Some(acceptor) => {
            // The handshake counts as header time.
            let handshake =
                tokio::time::timeout(settings.header_read_timeout, acceptor.accept(io)).await;
            let stream = match handshake {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
                watch.is_h2.store(true, Ordering::Relaxed);
            }
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            drive(conn, &watch, settings, &shutdown, peer).await;
        }
    }
}

/// Drives a hyper connection to its end, closing it early when the watchdog says so and
/// gracefully when the gateway shuts down.
async fn drive<C>(
    conn: C,
    watch: &ConnWatch,
    settings: &ServerSettings,
    shutdown: &CancellationToken,
    peer: SocketAddr,
) where
    C: Future<Output = Result<(), Box<dyn std::error::Error + Send + Sync>>> + GracefulConn,
{
    let tick = (settings
        .header_read_timeout
        .min(settings.keep_alive_timeout)
        / 4)
    .clamp(MIN_WATCH_TICK, MAX_WATCH_TICK);
    let mut ticker = tokio::time::interval(tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut conn = std::pin::pin!(conn);
    let mut draining = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                return;
            }
            () = shutdown.cancelled(), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = ticker.tick() => {
                match watch.verdict(settings.header_read_timeout, settings.keep_alive_timeout) {
                    Verdict::Keep => {}
                    Verdict::HeaderTimeout => {
                        tracing::debug!(%peer, "request head not complete within the header deadline; closing");
                        return;
                    }
                    Verdict::Idle => {
                        tracing::trace!(%peer, "keep-alive connection idle; closing");
                        return;
                    }
                }
            }
        }
    }
}

/// hyper-util's auto connections have an inherent `graceful_shutdown`; this trait lets [`drive`]
/// take either IO type.
trait GracefulConn {
    fn graceful_shutdown(self: Pin<&mut Self>);
}

impl<I, S, E> GracefulConn for auto::Connection<'_, I, S, E>
where
    S: hyper::service::HttpService<hyper::body::Incoming>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::ResBody: http_body::Body + Send + 'static,
    <S::ResBody as http_body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, S::ResBody>,
{
    fn graceful_shutdown(self: Pin<&mut Self>) {
        auto::Connection::graceful_shutdown(self);
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Keep,
    HeaderTimeout,
    Idle,
}

/// Shared between a connection's IO wrapper, its service and its watchdog.
#[derive(Debug)]
struct ConnWatch {
    epoch: Instant,
    /// Requests being served (HTTP/2 may have many).
    in_service: AtomicUsize,
    /// When the first byte of the current request head arrived (ms since epoch + 1; 0 = none).
    head_started: AtomicU64,
    /// Last read or write (ms since epoch).
    last_activity: AtomicU64,
    /// HTTP/2 has no per-request head phase on the connection; only the idle timer applies.
    is_h2: AtomicBool,
    /// Bytes seen at the start of the connection, to recognise the HTTP/2 preface.
    sniffed: AtomicUsize,
}

impl ConnWatch {
    fn new() -> Self {
        ConnWatch {
            epoch: Instant::now(),
            in_service: AtomicUsize::new(0),
            head_started: AtomicU64::new(0),
            last_activity: AtomicU64::new(0),
            is_h2: AtomicBool::new(false),
            sniffed: AtomicUsize::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn touch(&self) {
        self.last_activity.store(self.now_ms(), Ordering::Relaxed);
    }

    fn request_started(self: &Arc<Self>) -> InService {
        self.in_service.fetch_add(1, Ordering::AcqRel);
        self.head_started.store(0, Ordering::Relaxed);
        InService(Arc::clone(self))
    }

    fn on_read(&self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        self.touch();
        let seen = self.sniffed.load(Ordering::Relaxed);
        if seen < H2_PREFACE_START.len() {
            let n = bytes.len().min(H2_PREFACE_START.len() - seen);
            if bytes[..n] == H2_PREFACE_START[seen..seen + n] {
                self.sniffed.store(seen + n, Ordering::Relaxed);
                if seen + n == H2_PREFACE_START.len() {
                    self.is_h2.store(true, Ordering::Relaxed);
                }
            } else {
                // Not HTTP/2; stop looking.
                self.sniffed.store(usize::MAX, Ordering::Relaxed);
            }
        }
        if self.in_service.load(Ordering::Acquire) == 0
            && self.head_started.load(Ordering::Relaxed) == 0
        {
            self.head_started
                .store(self.now_ms() + 1, Ordering::Relaxed);
        }
    }

    fn verdict(&self, header_timeout: Duration, idle_timeout: Duration) -> Verdict {
        let now = self.now_ms();
        let busy = self.in_service.load(Ordering::Acquire) > 0;
        if busy {
            return Verdict::Keep;
        }
        let head = self.head_started.load(Ordering::Relaxed);
        if head != 0 && !self.is_h2.load(Ordering::Relaxed) {
            if now.saturating_sub(head - 1) >= header_timeout.as_millis() as u64 {
                return Verdict::HeaderTimeout;
            }
            return Verdict::Keep;
        }
        let last = self.last_activity.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= idle_timeout.as_millis() as u64 {
            return Verdict::Idle;
        }
        Verdict::Keep
    }
}

/// Held by a request's future: the request counts as in service until it is dropped.
struct InService(Arc<ConnWatch>);

impl Drop for InService {
    fn drop(&mut self) {
        self.0.in_service.fetch_sub(1, Ordering::AcqRel);
        self.0.touch();
    }
}

/// A socket that reports reads and writes to its [`ConnWatch`].
struct WatchedIo<T> {
    inner: T,
    watch: Arc<ConnWatch>,
}

impl<T: AsyncRead + Unpin> AsyncRead for WatchedIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &result {
            self.watch.on_read(&buf.filled()[before..]);
        }
        result
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WatchedIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, data);
        if let Poll::Ready(Ok(n)) = &result
            && *n > 0
        {
            self.watch.touch();
        }
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = &result
            && *n > 0
        {
            self.watch.touch();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn h2_preface_is_recognised_across_reads() {
        let w = ConnWatch::new();
        w.on_read(b"PRI * HT");
        assert!(!w.is_h2.load(Ordering::Relaxed));
        w.on_read(b"TP/2.0\r\n\r\nSM\r\n\r\n");
        assert!(w.is_h2.load(Ordering::Relaxed));
        let w = ConnWatch::new();
        w.on_read(b"GET / HTTP/1.1\r\n");
        assert!(!w.is_h2.load(Ordering::Relaxed));
    }

    #[test]
    fn in_service_requests_are_never_timed_out() {
        let w = Arc::new(ConnWatch::new());
        w.on_read(b"GET /");
        let guard = w.request_started();
        assert_eq!(w.verdict(Duration::ZERO, Duration::ZERO), Verdict::Keep);
        drop(guard);
        assert_eq!(
            w.verdict(Duration::from_secs(5), Duration::ZERO),
            Verdict::Idle
        );
        w.on_read(b"GET /");
        assert_eq!(
            w.verdict(Duration::ZERO, Duration::from_secs(5)),
            Verdict::HeaderTimeout
        );
    }
}
