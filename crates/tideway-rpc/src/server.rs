//! The RPC server: an accept loop, and per connection a reader that decodes and hands each
//! request to its own task, and a writer fed by a bounded queue.
//!
//! # A call's life on the server
//!
//! ```text
//!  reader: Request ──► draining? ──yes──► Unavailable (at once)
//!                        │no
//!                        ▼
//!           known service/method? ──no──► NotFound (at once)
//!                        │yes
//!                        ▼
//!       connection + server permits? ──no──► Overloaded (at once)
//!                        │yes
//!                        ▼
//!     spawn handler task, register its abort handle under the request id
//!                        │
//!   handler: ──► Ok / Err ──────────────► Response
//!            ──► panic ─────────────────► Internal
//!            ──► deadline passes ───────► DeadlineExceeded (future dropped)
//!            ──► Cancel frame ──────────► future dropped, no response
//!            ──► connection lost ───────► future dropped
//! ```
//!
//! The reader never awaits a handler: it only awaits the socket and, for the answers it gives
//! itself, room in its own connection's write queue. The registration and both permits are owned
//! by a guard inside the handler task, so every exit path above releases them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::{FutureExt, StreamExt};
use parking_lot::Mutex;
use tideway_wire::{Frame, FrameDecoder, GoAway, Request, Response, Status};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{ConfigError, ServerConfig};
use crate::context::CallContext;
use crate::error::RpcError;
use crate::observe::{CallObserver, CallSide};
use crate::service::ServiceDispatch;
use crate::transport::{CallMap, WireCodec, write_loop};

/// Pause after an accept error (such as running out of file descriptors) before accepting
/// again, so the loop does not spin while the condition lasts.
const ACCEPT_ERROR_BACKOFF: std::time::Duration = std::time::Duration::from_millis(50);

/// Entry point: `Server::builder()`.
#[derive(Debug)]
pub struct Server;

impl Server {
    /// A builder with default settings and no services.
    pub fn builder() -> ServerBuilder {
        ServerBuilder {
            config: ServerConfig::default(),
            services: ServiceMap::default(),
            observer: None,
        }
    }
}

/// Services by name, looked up for every call: foldhash, as SipHash (std's default) costs
/// several times more on these short names and their set is fixed at start.
type ServiceMap = HashMap<&'static str, Arc<dyn ServiceDispatch>, foldhash::fast::RandomState>;

/// Collects settings and services, then binds.
#[derive(Debug)]
pub struct ServerBuilder {
    config: ServerConfig,
    services: ServiceMap,
    observer: Option<Arc<dyn CallObserver>>,
}

impl ServerBuilder {
    /// Replaces the settings.
    pub fn config(mut self, config: ServerConfig) -> Self {
        self.config = config;
        self
    }

    /// Adds a service; a later service with the same name replaces an earlier one.
    pub fn add_service(mut self, service: impl ServiceDispatch) -> Self {
        let name = service.descriptor().name;
        self.services.insert(name, Arc::new(service));
        self
    }

    /// Watches every call that starts a handler (tracing: a span per call, its context in the
    /// handler's metadata). None by default.
    pub fn observer(mut self, observer: Arc<dyn CallObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Binds `addr` and starts serving.
    pub async fn bind(self, addr: SocketAddr) -> Result<ServerHandle, ServeError> {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()
        } else {
            tokio::net::TcpSocket::new_v6()
        }
        .map_err(ServeError::Bind)?;
        socket.set_reuseaddr(true).map_err(ServeError::Bind)?;
        socket.bind(addr).map_err(ServeError::Bind)?;
        let listener = socket
            .listen(self.config.listen_backlog)
            .map_err(ServeError::Bind)?;
        self.serve(listener)
    }

    /// Starts serving on a bound listener. Must be called inside a tokio runtime.
    pub fn serve(self, listener: TcpListener) -> Result<ServerHandle, ServeError> {
        self.config.validate()?;
        let local_addr = listener.local_addr().map_err(ServeError::Bind)?;
        let shared = Arc::new(Shared {
            global_permits: Arc::new(Semaphore::new(self.config.max_in_flight_total)),
            connection_permits: Arc::new(Semaphore::new(self.config.max_connections)),
            config: self.config,
            services: self.services,
            observer: self.observer,
            shutdown: CancellationToken::new(),
            connections: TaskTracker::new(),
        });
        let accept = tokio::spawn(accept_loop(listener, Arc::clone(&shared)));
        Ok(ServerHandle {
            local_addr,
            shared,
            accept,
        })
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The settings are invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The listener could not be bound or read.
    #[error("cannot bind listener: {0}")]
    Bind(std::io::Error),
}

/// A running server. Dropping it leaves the server running; call [`shutdown`](Self::shutdown)
/// to drain and stop it.
#[derive(Debug)]
pub struct ServerHandle {
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    accept: tokio::task::JoinHandle<()>,
}

impl ServerHandle {
    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Calls running now, on all connections.
    pub fn in_flight(&self) -> usize {
        self.shared.config.max_in_flight_total - self.shared.global_permits.available_permits()
    }

    /// Connections open now.
    pub fn connections(&self) -> usize {
        self.shared.config.max_connections - self.shared.connection_permits.available_permits()
    }

    /// Graceful shutdown: stop accepting, send GoAway on every connection, let in-flight calls
    /// finish within the drain timeout (then drop them), close every connection.
    pub async fn shutdown(self) {
        self.shared.shutdown.cancel();
        let _ = self.accept.await;
        self.shared.connections.close();
        // Each connection enforces the drain timeout itself; this bound only guards against a
        // writer stuck on a peer that never reads.
        let bound = self.shared.config.drain_timeout * 2;
        if tokio::time::timeout(bound, self.shared.connections.wait())
            .await
            .is_err()
        {
            tracing::warn!("connections still open after twice the drain timeout; abandoning them");
        }
    }
}

#[derive(Debug)]
struct Shared {
    config: ServerConfig,
    services: ServiceMap,
    observer: Option<Arc<dyn CallObserver>>,
    global_permits: Arc<Semaphore>,
    connection_permits: Arc<Semaphore>,
    shutdown: CancellationToken,
    connections: TaskTracker,
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let accepted = tokio::select! {
            biased;
            () = shared.shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                let Ok(permit) = Arc::clone(&shared.connection_permits).try_acquire_owned() else {
                    tracing::warn!(%peer, limit = shared.config.max_connections, "connection limit reached; closing new connection");
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let shared2 = Arc::clone(&shared);
                shared
                    .connections
                    .spawn(serve_connection(stream, peer, shared2, permit));
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
            }
        }
    }
}

/// State of one connection shared by its reader and its handler tasks.
#[derive(Debug)]
struct Connection {
    /// Abort handles of running handlers by request id. Bounded by the per-connection permits.
    handlers: Mutex<CallMap<AbortHandle>>,
    permits: Arc<Semaphore>,
    /// Highest request id accepted, for GoAway.
    last_accepted: AtomicU64,
    /// The client's address.
    peer: SocketAddr,
}

/// Owned by a handler task: on drop (completion, abort, panic) it unregisters the call and
/// releases both permits.
struct HandlerGuard {
    conn: Arc<Connection>,
    id: u64,
    _conn_permit: OwnedSemaphorePermit,
    _global_permit: OwnedSemaphorePermit,
}

impl Drop for HandlerGuard {
    fn drop(&mut self) {
        self.conn.handlers.lock().remove(&self.id);
    }
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    _permit: OwnedSemaphorePermit,
) {
    let config = &shared.config;
    let (read_half, write_half) = stream.into_split();
    let (tx, rx) = mpsc::channel::<Frame>(config.write_queue_capacity);
    let closed = CancellationToken::new();
    let writer = tokio::spawn(write_loop(write_half, rx, closed.clone()));
    let decoder =
        FrameDecoder::new(config.max_frame_len).expect("validated in ServeBuilder::serve");
    let mut frames = FramedRead::new(read_half, WireCodec(decoder));
    let conn = Arc::new(Connection {
        handlers: Mutex::new(CallMap::default()),
        permits: Arc::new(Semaphore::new(config.max_in_flight_per_connection)),
        last_accepted: AtomicU64::new(0),
        peer,
    });
    let handlers = TaskTracker::new();
    let mut drain_deadline: Option<Instant> = None;

    loop {
        let draining = drain_deadline.is_some();
        let frame = tokio::select! {
            biased;
            () = closed.cancelled() => break,
            () = shared.shutdown.cancelled(), if !draining => {
                drain_deadline = Some(Instant::now() + config.drain_timeout);
                handlers.close();
                let goaway = Frame::GoAway(GoAway {
                    last_request_id: conn.last_accepted.load(Ordering::Relaxed),
                    reason: "server shutting down".into(),
                });
                if tx.send(goaway).await.is_err() {
                    break;
                }
                continue;
            }
            () = handlers.wait(), if draining => break,
            () = sleep_until_opt(drain_deadline) => {
                tracing::warn!(%peer, in_flight = handlers.len(), "drain timeout; dropping unfinished calls");
                break;
            }
            frame = frames.next() => frame,
        };
        match frame {
            Some(Ok(Frame::Request(req))) => {
                if let Some(answer) = start_call(req, draining, &shared, &conn, &handlers, &tx)
                    && tx.send(Frame::Response(answer)).await.is_err()
                {
                    break;
                }
            }
            Some(Ok(Frame::Cancel { id })) => {
                if let Some(handle) = conn.handlers.lock().remove(&id) {
                    handle.abort();
                }
            }
            Some(Ok(Frame::Ping { nonce })) => {
                if tx.send(Frame::Pong { nonce }).await.is_err() {
                    break;
                }
            }
            Some(Ok(Frame::Pong { .. } | Frame::GoAway(_))) => {}
            Some(Ok(other)) => {
                tracing::warn!(%peer, kind = ?other.kind(), "protocol violation: unexpected frame from client; closing connection");
                break;
            }
            Some(Err(e)) => {
                tracing::warn!(%peer, error = %e, "closing connection");
                break;
            }
            None => break,
        }
    }

    // Whatever is still running has no one to answer to (or outlived the drain): drop it.
    let running: Vec<AbortHandle> = conn.handlers.lock().take_all().map(|(_, h)| h).collect();
    for handle in running {
        handle.abort();
    }
    handlers.close();
    handlers.wait().await;
    drop(tx);
    // The writer ends once the queued answers are written (every sender is gone now) or the
    // socket fails.
    if tokio::time::timeout(config.drain_timeout, writer)
        .await
        .is_err()
    {
        tracing::warn!(%peer, "writer did not finish within the drain timeout");
        closed.cancel();
        return;
    }
    if drain_deadline.is_some() {
        // Lingering close, as web servers do: the writer has sent everything and half-closed
        // (FIN). Closing the socket now, with bytes the client sent after our GoAway still
        // unread, would make the kernel answer with a reset, and a reset can destroy the GoAway
        // and answers the client has not read yet. So read and discard until the client
        // closes its side (it does once its calls on this connection are answered), for at
        // most LINGER_AFTER_GOAWAY.
        let mut read_half = frames.into_inner();
        let linger = config.drain_timeout.min(LINGER_AFTER_GOAWAY);
        let _ = tokio::time::timeout(
            linger,
            tokio::io::copy(&mut read_half, &mut tokio::io::sink()),
        )
        .await;
    }
}

/// Longest a drained connection is kept half-closed, reading what the client still sends, before
/// it is closed (see the end of `serve_connection`).
const LINGER_AFTER_GOAWAY: std::time::Duration = std::time::Duration::from_secs(2);

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Starts a handler for `req`, or returns the answer to send at once when the call cannot run.
fn start_call(
    req: Request,
    draining: bool,
    shared: &Arc<Shared>,
    conn: &Arc<Connection>,
    handlers: &TaskTracker,
    tx: &mpsc::Sender<Frame>,
) -> Option<Response> {
    let Request {
        id,
        codec,
        method,
        deadline,
        mut metadata,
        payload,
    } = req;
    let refuse = |status, message: String| Some(Response::error(id, codec, status, message));
    if draining {
        return refuse(Status::Unavailable, "server is shutting down".into());
    }
    // Only this connection's reader inserts, so a check here holds until the insert below.
    if conn.handlers.lock().contains_key(&id) {
        return refuse(
            Status::InvalidArgument,
            format!("request id {id} is already in flight on this connection"),
        );
    }
    let Some((service_name, method_name)) = method.split_once('/') else {
        return refuse(
            Status::NotFound,
            format!("method name {method:?} is not of the form service/method"),
        );
    };
    let Some(service) = shared.services.get(service_name) else {
        return refuse(
            Status::NotFound,
            format!("unknown service {service_name:?}"),
        );
    };
    let Ok(conn_permit) = Arc::clone(&conn.permits).try_acquire_owned() else {
        return refuse(
            Status::Overloaded,
            format!(
                "connection in-flight limit of {} calls reached",
                shared.config.max_in_flight_per_connection
            ),
        );
    };
    let Ok(global_permit) = Arc::clone(&shared.global_permits).try_acquire_owned() else {
        return refuse(
            Status::Overloaded,
            format!(
                "server in-flight limit of {} calls reached",
                shared.config.max_in_flight_total
            ),
        );
    };
    let Some(call) = service.dispatch(method_name, codec, payload) else {
        return refuse(
            Status::NotFound,
            format!("service {service_name:?} has no method {method_name:?}"),
        );
    };
    let config = &shared.config;
    let budget = deadline
        .unwrap_or(config.default_deadline)
        .min(config.max_deadline);
    let deadline = Instant::now() + budget;
    let observed = shared
        .observer
        .as_ref()
        .and_then(|o| o.start(CallSide::Server, &method, conn.peer, &mut metadata));
    let ctx = CallContext::new(method, id, deadline, codec, metadata);
    let guard = HandlerGuard {
        conn: Arc::clone(conn),
        id,
        _conn_permit: conn_permit,
        _global_permit: global_permit,
    };
    let tx = tx.clone();
    let max_frame_len = config.max_frame_len;
    let task = async move {
        let outcome =
            tokio::time::timeout_at(deadline, AssertUnwindSafe(ctx.scope(call)).catch_unwind())
                .await;
        let response = match outcome {
            Ok(Ok(Ok(payload))) => Response::ok(id, codec, payload),
            Ok(Ok(Err(err))) => Response::error(id, codec, err.status(), err.message()),
            Ok(Err(_panic)) => {
                tracing::error!(request_id = id, "handler panicked");
                Response::error(id, codec, Status::Internal, "handler panicked")
            }
            Err(_elapsed) => Response::error(
                id,
                codec,
                Status::DeadlineExceeded,
                format!("deadline of {budget:?} passed before the handler finished"),
            ),
        };
        let response = fit_response(response, max_frame_len);
        if let Some(observed) = observed {
            let message = (response.status != Status::Ok).then(|| response.message());
            observed.finish(response.status, message.as_deref());
        }
        // The answer is queued before the permits are released, so the write queue, not the
        // handler count, absorbs a slow reader.
        let _ = tx.send(Frame::Response(response)).await;
        drop(guard);
    };
    // The map lock is held across spawn so the task's guard cannot remove the entry before it is
    // inserted.
    let mut running = conn.handlers.lock();
    let handle = handlers.spawn(task);
    running.insert(id, handle.abort_handle());
    conn.last_accepted.fetch_max(id, Ordering::Relaxed);
    None
}

/// A result too large for one frame becomes an `Internal` error rather than a frame the peer
/// would reject by closing the connection.
fn fit_response(response: Response, max_frame_len: usize) -> Response {
    // Header, status byte, body.
    let frame_len = tideway_wire::FRAME_HEADER_LEN + 1 + response.body.len();
    if frame_len <= max_frame_len {
        return response;
    }
    Response::error(
        response.id,
        response.codec,
        Status::Internal,
        RpcError::internal(format!(
            "result of {frame_len} bytes exceeds the frame limit of {max_frame_len} bytes"
        ))
        .message(),
    )
}
