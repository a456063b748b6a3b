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
use bytes::{Bytes, BytesMut};
use http_body::Body as _;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tideway_http_upstream::Scheme;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use tideway_registry::{Catalog, CatalogStatus};
use tideway_rpc::ClientConfig;

use crate::backends::RpcBackends;
use crate::body::{GatewayBody, IngressBody};
use crate::config::{GatewayConfig, ServerSettings};
use crate::discovery::StaticSources;
use crate::handler::{Downstream, GatewayState, RequestIds, handle};
use crate::overload::{OverloadState, Pressure};
use crate::router::RouteTable;
use crate::telemetry::{self, AllocatorStats, StallWatchdog};
use crate::tls;
use crate::tunnel::{self, PendingTunnel, TunnelSlot};

/// Config reloads queued for the registry follower; more wait their turn (each reload waits
/// for its own to be applied).
const RELOAD_QUEUE: usize = 4;
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
/// An HTTP/1.1 keep-alive connection quiet for this long is parked: hyper's state and buffers
/// are freed until the next request arrives. Long enough that busy clients never pay for
/// rebuilding the connection state; short enough that idle connections cost little.
const PARK_AFTER_IDLE: Duration = Duration::from_secs(1);
/// How far a connection's activity stamps (coarse clock) may lag tokio's timers.
const COARSE_CLOCK_SLACK: Duration =
    Duration::from_millis(tideway_http_upstream::clock::RESOLUTION_MS);
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
    admin_addr: Option<SocketAddr>,
    view: Arc<GatewayView>,
    telemetry_stop: CancellationToken,
    state: Arc<GatewayState>,
    protocols: Arc<Protocols>,
    shutdown: CancellationToken,
    connections: TaskTracker,
    connection_permits: Arc<Semaphore>,
    accept: tokio::task::JoinHandle<()>,
    /// The registry follower's inbox for config reloads, once the gateway follows a registry.
    follower: Arc<parking_lot::Mutex<Option<crate::reload::FollowerLink>>>,
    /// The config of the running generation (`/admin/config`).
    config: Arc<crate::reload::ConfigSlot>,
}

impl Gateway {
    /// Binds the listener and starts serving `routes` with `backends`.
    pub async fn start(
        settings: ServerSettings,
        routes: RouteTable,
        backends: RpcBackends,
    ) -> Result<Gateway, StartError> {
        let listener = listen(settings.listen, settings.listen_backlog).map_err(|source| {
            StartError::Bind {
                addr: settings.listen,
                source,
            }
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
            in_flight: crate::router::ConcurrencyLimit::new(settings.max_in_flight),
            overload: Arc::new(OverloadState::new(settings.max_memory)),
            settings,
            routes: ArcSwap::from_pointee(routes),
            backends: ArcSwap::from_pointee(backends),
            ids: RequestIds::new(),
            edge: arc_swap::ArcSwapOption::empty(),
            observe: arc_swap::ArcSwapOption::empty(),
        });
        let shutdown = CancellationToken::new();
        let connections = TaskTracker::new();
        let protocols = Arc::new(Protocols::new(&state.settings));
        tokio::spawn(close_parked_connections(
            Arc::clone(&protocols),
            Arc::clone(&state.overload),
            shutdown.clone(),
        ));
        let telemetry_stop = CancellationToken::new();
        telemetry::spawn_upkeep(telemetry_stop.clone());
        let config = Arc::new(crate::reload::ConfigSlot::new(&state.settings));
        let view = Arc::new(GatewayView {
            state: Arc::clone(&state),
            protocols: Arc::clone(&protocols),
            connection_permits: Arc::clone(&connection_permits),
            shutdown: shutdown.clone(),
            stalls: StallWatchdog::spawn(telemetry_stop.clone()),
            allocator: parking_lot::RwLock::new(None),
            registry: parking_lot::RwLock::new(None),
            public_url: public_url(local_addr, state.settings.tls.is_some()),
            reload_hook: parking_lot::RwLock::new(None),
            config: Arc::clone(&config),
        });
        {
            // Allocator resident bytes when the binary reports them, else the process RSS.
            let view = Arc::clone(&view);
            let sampler: crate::overload::MemorySampler = Arc::new(move || {
                view.allocator
                    .read()
                    .as_ref()
                    .and_then(|f| f())
                    .map(|(_, resident)| resident)
                    .or_else(telemetry::process_rss_bytes)
            });
            state
                .overload
                .spawn_sampler(sampler, telemetry_stop.clone());
        }
        let admin_addr = match state.settings.admin_listen {
            Some(addr) => Some(
                crate::admin::start(
                    addr,
                    state.settings.admin_token.clone(),
                    Arc::clone(&view) as _,
                    telemetry_stop.clone(),
                )
                .await
                .map_err(|source| StartError::Bind { addr, source })?,
            ),
            None => None,
        };
        let accept = tokio::spawn(accept_loop(
            listener,
            Arc::clone(&state),
            Arc::clone(&protocols),
            tls,
            Arc::clone(&connection_permits),
            shutdown.clone(),
            connections.clone(),
        ));
        Ok(Gateway {
            local_addr,
            admin_addr,
            view,
            telemetry_stop,
            state,
            protocols,
            shutdown,
            connections,
            connection_permits,
            accept,
            follower: Arc::default(),
            config,
        })
    }

    /// The address the gateway listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The admin listener's address, when one is configured.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// Reports allocator statistics in `/metrics` (the binary knows its allocator).
    pub fn set_allocator_stats(&self, stats: AllocatorStats) {
        // The dashboard's memory chart samples it too.
        crate::history::set_allocator_stats(Arc::clone(&stats));
        *self.view.allocator.write() = Some(stats);
    }

    /// Scheduler stalls seen by the watchdog.
    pub fn stalls(&self) -> &StallWatchdog {
        &self.view.stalls
    }

    /// Swaps in a new route table; requests already routed finish on the old one.
    pub fn set_routes(&self, routes: RouteTable) {
        self.state.routes.store(Arc::new(routes));
    }

    /// Swaps in edge policies (auth, IP rules, rate limits, CORS); `None` removes them. The
    /// previous generation (its key-reload task, limiter state) is released when the last
    /// request using it ends.
    pub fn set_edge(&self, edge: Option<crate::edge::EdgePolicies>) {
        self.state.edge.store(edge.map(Arc::new));
    }

    /// Swaps in new RPC backends.
    pub fn set_backends(&self, backends: RpcBackends) {
        self.state.backends.store(Arc::new(backends));
    }

    /// Turns tracing and access logs on (or off with `None`) for requests that arrive from now.
    pub fn set_observability(&self, observe: Option<Arc<tideway_observe::Observability>>) {
        self.state.observe.store(observe);
    }

    /// The current route table.
    pub fn routes(&self) -> Arc<RouteTable> {
        self.state.routes.load_full()
    }

    /// RPC calls waiting for a response.
    pub fn pending_rpc_calls(&self) -> usize {
        self.state.backends.load().pending_calls()
    }

    /// Idle HTTP/1.1 connections parked now (holding a socket and no buffers).
    pub fn parked_connections(&self) -> usize {
        self.protocols.parked.load(Ordering::Relaxed)
    }

    /// WebSocket tunnels open now (client connections spliced to an upstream).
    pub fn websocket_tunnels(&self) -> usize {
        self.protocols.tunnels.load(Ordering::Relaxed)
    }

    /// Requests being served now.
    pub fn in_flight(&self) -> usize {
        self.state.in_flight.in_use()
    }

    /// Client connections open now.
    pub fn open_connections(&self) -> usize {
        self.state.settings.max_connections - self.connection_permits.available_permits()
    }

    /// Follows a registry: from now on every change of `catalog` becomes a new route table
    /// (`sources.routes` first, then the routes services publish) and new RPC backends
    /// (`client` settings for the clients of new instances). See [`crate::discovery`].
    /// `/readyz` reports not ready until the catalog has synced once; `/healthz` shows its
    /// state. Runs until the gateway shuts down.
    pub fn follow_registry(&self, catalog: Catalog, sources: StaticSources, client: ClientConfig) {
        *self.view.registry.write() = Some(catalog.subscribe_status());
        let (link, inbox) = tokio::sync::mpsc::channel(RELOAD_QUEUE);
        *self.follower.lock() = Some(link);
        crate::discovery::spawn(
            Arc::clone(&self.state),
            catalog,
            sources,
            client,
            self.telemetry_stop.clone(),
            inbox,
        );
    }

    /// What `POST /admin/reload` runs (the binary re-reads its config file and calls
    /// [`crate::reload::Reloader::reload`]).
    pub fn set_reload_hook(&self, hook: crate::reload::ReloadHook) {
        *self.view.reload_hook.write() = Some(hook);
    }

    /// A handle that reloads this gateway's config: routes, services, cluster settings and
    /// edge policies (see [`crate::reload`]). Each applied reload also becomes what
    /// `/admin/config` shows.
    pub fn reloader(&self) -> crate::reload::Reloader {
        crate::reload::Reloader::new(
            Arc::clone(&self.state),
            Arc::clone(&self.follower),
            Arc::clone(&self.config),
        )
    }

    /// Tells the gateway the config it runs (as loaded: environment overrides applied), for
    /// `/admin/config`, which shows it with every secret redacted. Its `[server]` is replaced by
    /// the settings the gateway was started with. Without it, `/admin/config` shows only those
    /// settings.
    pub fn set_config(&self, config: GatewayConfig) {
        self.config.set(config, &self.state.settings);
    }

    /// The registry's state, when the gateway follows one.
    pub fn registry_status(&self) -> Option<CatalogStatus> {
        self.view
            .registry
            .read()
            .as_ref()
            .map(|status| status.borrow().clone())
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
        self.telemetry_stop.cancel();
    }
}

/// A listener with our own accept-queue length (std's and mio's 128 drops SYNs under bursts).
fn listen(addr: SocketAddr, backlog: u32) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

async fn accept_loop(
    listener: TcpListener,
    state: Arc<GatewayState>,
    protocols: Arc<Protocols>,
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
            metrics::counter!(telemetry::SHED_TOTAL, "reason" => "connections").increment(1);
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
            Arc::clone(&protocols),
            tls.clone(),
            permit,
            shutdown.clone(),
        ));
    }
}

/// Answers an over-limit connection with a 503 and closes it.
async fn refuse(mut stream: TcpStream, _refusal: OwnedSemaphorePermit) {
    let status = format!(
        "503 Service Unavailable\r\nretry-after: {}",
        crate::error::RETRY_AFTER_SECS
    );
    answer_and_close(
        &mut stream,
        &status,
        r#"{"code":"overloaded","message":"connection limit reached","request_id":null}"#,
    )
    .await;
}

/// Writes a JSON error answer (`status`: the status line's code and reason, and any extra
/// header lines) and closes the connection, within [`REFUSAL_WRITE_TIMEOUT`]: for connections
/// refused before any request is served.
async fn answer_and_close(stream: &mut TcpStream, status: &str, body: &str) {
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(REFUSAL_WRITE_TIMEOUT, async {
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await
    })
    .await;
}

/// What the admin endpoints read.
struct GatewayView {
    state: Arc<GatewayState>,
    protocols: Arc<Protocols>,
    connection_permits: Arc<Semaphore>,
    shutdown: CancellationToken,
    stalls: Arc<StallWatchdog>,
    allocator: parking_lot::RwLock<Option<AllocatorStats>>,
    /// The registry's state, when the gateway follows one.
    registry: parking_lot::RwLock<Option<tokio::sync::watch::Receiver<CatalogStatus>>>,
    /// The public listener's base URL, for the OpenAPI document the admin listener serves.
    public_url: String,
    /// `POST /admin/reload`, when the binary set it up.
    reload_hook: parking_lot::RwLock<Option<crate::reload::ReloadHook>>,
    /// The config of the running generation.
    config: Arc<crate::reload::ConfigSlot>,
}

/// `http://127.0.0.1:8080`; an unspecified address (`0.0.0.0`) is shown as `localhost`.
fn public_url(addr: SocketAddr, tls: bool) -> String {
    let scheme = if tls { "https" } else { "http" };
    if addr.ip().is_unspecified() {
        format!("{scheme}://localhost:{}", addr.port())
    } else {
        format!("{scheme}://{addr}")
    }
}

impl std::fmt::Debug for GatewayView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayView")
            .field("draining", &self.shutdown.is_cancelled())
            .finish_non_exhaustive()
    }
}

impl crate::admin::AdminView for GatewayView {
    fn reload_hook(&self) -> Option<crate::reload::ReloadHook> {
        self.reload_hook.read().clone()
    }

    fn readiness(&self) -> Result<(), &'static str> {
        if self.shutdown.is_cancelled() {
            Err("draining")
        } else if self.state.overload.pressure() == Pressure::Shedding {
            Err("over the memory budget")
        } else if self
            .registry
            .read()
            .as_ref()
            .is_some_and(|status| !has_synced(&status.borrow()))
        {
            // Before the first sync the gateway knows no published routes. Once synced, a lost
            // registry does not make it unready: it keeps serving the last known state.
            Err("waiting for the first registry sync")
        } else {
            Ok(())
        }
    }

    fn openapi(&self) -> Bytes {
        crate::openapi::document_bytes(&self.state.routes.load(), Some(&self.public_url))
    }

    fn admin_json(&self, path: &str) -> Option<serde_json::Value> {
        use serde_json::json;
        Some(match path {
            "/admin/routes" => {
                let table = self.state.routes.load();
                let edge = self.state.edge.load_full();
                let config = Arc::clone(&self.config.live.read().config);
                let routes: Vec<serde_json::Value> = table
                    .routes()
                    .iter()
                    .map(|r| {
                        let target = match &r.target {
                            crate::router::RouteTarget::Rpc { service, full_name, .. } => {
                                json!({"kind": "rpc", "service": service, "method": full_name})
                            }
                            crate::router::RouteTarget::Http { upstream, strip_prefix, websocket_idle_timeout } => json!({
                                "kind": "http",
                                "upstream": upstream.base_url(),
                                "strip_prefix": strip_prefix,
                                "websocket": websocket_idle_timeout.is_some(),
                                "open_connections": upstream.open_connections(),
                            }),
                        };
                        json!({
                            "method": r.method.as_ref().map(http::Method::as_str),
                            "path": r.path,
                            "origin": r.origin,
                            "timeout_ms": r.timeout.unwrap_or(self.state.settings.request_timeout).as_millis() as u64,
                            "limit": r.limit.as_ref().map(|l| json!({"max": l.max(), "in_use": l.in_use()})),
                            "target": target,
                            "policy": edge.as_deref().and_then(|edge| route_policy_json(edge, &config, &r.label(), &r.path)),
                        })
                    })
                    .collect();
                json!({ "routes": routes })
            }
            "/admin/services" => {
                let backends = self.state.backends.load();
                let mut services: Vec<serde_json::Value> = backends
                    .clusters()
                    .iter()
                    .map(|cluster| cluster_json(&cluster.status(), cluster.pending_calls()))
                    .collect();
                services.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
                json!({ "services": services })
            }
            "/admin/overload" => {
                let overload = &self.state.overload;
                json!({
                    "pressure": overload.pressure().as_str(),
                    "memory_budget_bytes": overload.budget(),
                    "memory_used_bytes": overload.budget().map(|_| overload.last_used()),
                    "held_body_bytes": overload.held(),
                    "in_flight_requests": self.state.in_flight.in_use(),
                    "in_flight_limit": self.state.settings.max_in_flight,
                    "open_connections": self.state.settings.max_connections - self.connection_permits.available_permits(),
                    "parked_connections": self.protocols.parked.load(Ordering::Relaxed),
                    "pending_rpc_calls": self.state.backends.load().pending_calls(),
                    "scheduler_stalls": self.stalls.stalls(),
                    "worst_stall_ms": self.stalls.worst().as_millis() as u64,
                    "draining": self.shutdown.is_cancelled(),
                })
            }
            CONFIG_PATH => {
                let (generation, config, needs_restart) = {
                    let live = self.config.live.read();
                    (
                        live.generation,
                        Arc::clone(&live.config),
                        live.needs_restart.clone(),
                    )
                };
                // Secrets serialize redacted at their types; the name-based pass is the net for
                // fields added later (see `crate::redact`).
                let mut config = serde_json::to_value(&*config).unwrap_or_default();
                crate::redact::redact(&mut config);
                json!({
                    "generation": generation,
                    "source": if generation == 0 { "server_settings" } else { "config" },
                    "needs_restart": needs_restart,
                    "config": config,
                })
            }
            "/admin/registry" => match self.registry.read().as_ref() {
                Some(status) => json!({ "status": &*status.borrow() }),
                None => json!({ "status": null }),
            },
            _ => return None,
        })
    }

    fn health_details(&self) -> String {
        match self.registry.read().as_ref() {
            None => String::new(),
            Some(status) => match &*status.borrow() {
                CatalogStatus::Starting => "registry: starting\n".to_owned(),
                CatalogStatus::Synced { revision, .. } => {
                    format!("registry: synced at revision {revision}\n")
                }
                CatalogStatus::Degraded {
                    revision, error, ..
                } => format!("registry: degraded, serving revision {revision}: {error}\n"),
                CatalogStatus::Disconnected {
                    revision,
                    last_error,
                    attempts,
                    since,
                } => format!(
                    "registry: disconnected for {:?} ({attempts} attempts), serving the last known state (revision {revision}): {last_error}\n",
                    since.elapsed().unwrap_or_default()
                ),
            },
        }
    }

    fn refresh_gauges(&self) {
        let settings = &self.state.settings;
        metrics::gauge!("tideway_in_flight_requests").set(self.state.in_flight.in_use() as f64);
        metrics::gauge!("tideway_in_flight_limit").set(settings.max_in_flight as f64);
        let backends = self.state.backends.load();
        metrics::gauge!("tideway_pending_rpc_calls").set(backends.pending_calls() as f64);
        metrics::gauge!("tideway_rpc_write_queue_frames").set(backends.queued_frames() as f64);
        metrics::gauge!("tideway_rpc_connections").set(backends.connections() as f64);
        backends.clusters().record_gauges();
        drop(backends);
        metrics::gauge!("tideway_open_connections")
            .set((settings.max_connections - self.connection_permits.available_permits()) as f64);
        metrics::gauge!("tideway_parked_connections")
            .set(self.protocols.parked.load(Ordering::Relaxed) as f64);
        metrics::gauge!("tideway_websocket_tunnels")
            .set(self.protocols.tunnels.load(Ordering::Relaxed) as f64);
        metrics::counter!("tideway_scheduler_stalls_total").absolute(self.stalls.stalls());
        metrics::gauge!("tideway_scheduler_worst_stall_seconds")
            .set(self.stalls.worst().as_secs_f64());
        let overload = &self.state.overload;
        metrics::gauge!("tideway_memory_pressure").set(f64::from(overload.pressure() as u8));
        metrics::gauge!("tideway_held_body_bytes").set(overload.held() as f64);
        if let Some(budget) = overload.budget() {
            metrics::gauge!("tideway_memory_budget_bytes").set(budget as f64);
            metrics::gauge!("tideway_memory_used_bytes").set(overload.last_used() as f64);
        }
        if let Some(rss) = telemetry::process_rss_bytes() {
            metrics::gauge!("tideway_process_resident_memory_bytes").set(rss as f64);
        }
        if let Some((allocated, resident)) = self.allocator.read().as_ref().and_then(|f| f()) {
            metrics::gauge!("tideway_allocator_allocated_bytes").set(allocated as f64);
            metrics::gauge!("tideway_allocator_resident_bytes").set(resident as f64);
        }
    }
}

/// `/admin/config`: the effective config of the running generation, secrets redacted.
pub(crate) const CONFIG_PATH: &str = "/admin/config";

/// The edge policy of a route for `/admin/routes`, found as the request path finds it: which
/// `[route_policies]` entry applies, and what it checks (credentials with the key ids and
/// algorithms that verify them, never a secret; IP rules; rate limit; CORS). `None` when no
/// policy applies.
fn route_policy_json(
    edge: &crate::edge::EdgePolicies,
    config: &GatewayConfig,
    label: &str,
    path: &str,
) -> Option<serde_json::Value> {
    use serde_json::json;
    let policy = edge.policy_for(label, path)?;
    // A compiled policy is named after its `[route_policies]` key.
    let key = policy.route();
    let mut doc = json!({
        "key": key,
        "rate_limit_bucket": policy.rate_limit_bucket(),
    });
    // The policy's settings come from the config of the same generation; a gateway given edge
    // policies without a config (`set_edge` alone) shows the key only.
    let Some(settings) = config.route_policies.get(key) else {
        return Some(doc);
    };
    let keys = edge.edge().config();
    if let Some(auth) = &settings.auth {
        use tideway_edge::AuthMethods;
        let jwt = matches!(auth.methods, AuthMethods::Jwt | AuthMethods::Either);
        let api = matches!(auth.methods, AuthMethods::ApiKey | AuthMethods::Either);
        let jwt_keys: Vec<serde_json::Value> = keys
            .jwt_keys
            .iter()
            .filter(|_| jwt)
            .map(|k| {
                json!({
                    "id": k.id,
                    "algorithm": k.algorithm.as_str(),
                    "jwks": k.jwks_file.is_some(),
                    "issuer": k.issuer,
                    "audience": k.audience,
                })
            })
            .collect();
        let api_keys: Vec<&str> = keys
            .api_keys
            .iter()
            .filter(|_| api)
            .map(|k| k.name.as_str())
            .collect();
        doc["auth"] = json!({
            "methods": auth.methods,
            "optional": auth.optional,
            "forward_claims": auth.forward_claims,
            "jwt_keys": jwt_keys,
            "api_keys": api_keys,
            "api_key_header": api.then_some(keys.api_key_header.as_str()),
        });
    }
    for (name, part) in [
        ("ip", settings.ip.as_ref().map(serde_json::to_value)),
        (
            "rate_limit",
            settings.rate_limit.as_ref().map(serde_json::to_value),
        ),
        ("cors", settings.cors.as_ref().map(serde_json::to_value)),
    ] {
        if let Some(Ok(value)) = part {
            doc[name] = value;
        }
    }
    crate::redact::redact(&mut doc);
    Some(doc)
}

/// One service's cluster for `/admin/services`.
fn cluster_json(
    status: &tideway_cluster::ClusterStatus,
    pending_calls: usize,
) -> serde_json::Value {
    use serde_json::json;
    let breaker = |b: &tideway_cluster::BreakerState| match b {
        tideway_cluster::BreakerState::Closed => json!({"state": "closed"}),
        tideway_cluster::BreakerState::Open { remaining } => {
            json!({"state": "open", "remaining_ms": remaining.as_millis() as u64})
        }
        tideway_cluster::BreakerState::HalfOpen => json!({"state": "half_open"}),
    };
    let endpoints: Vec<serde_json::Value> = status
        .endpoints
        .iter()
        .map(|e| {
            json!({
                "id": e.id,
                "addr": e.addr.to_string(),
                "weight": e.weight,
                "state": e.state.as_str(),
                "breaker": breaker(&e.state.breaker()),
                "in_flight": e.in_flight,
                "ewma_latency_ms": e.ewma_latency.as_secs_f64() * 1000.0,
                "consecutive_failures": e.consecutive_failures,
                "ejections": e.ejections,
                "window_calls": e.window_calls,
                "window_failures": e.window_failures,
                "connections": e.connections,
            })
        })
        .collect();
    let s = &status.stats;
    json!({
        "name": status.service,
        "balancer": status.balancer,
        "breaker": breaker(&status.breaker),
        "waiting_calls": status.waiting_calls,
        "pending_calls": pending_calls,
        "retry_budget": status.retry_budget,
        "endpoints": endpoints,
        "stats": {
            "calls": s.calls, "failed_calls": s.failed_calls, "attempts": s.attempts,
            "retries": s.retries, "hedges": s.hedges, "budget_exhausted": s.budget_exhausted,
            "ejections": s.ejections, "probes_succeeded": s.probes_succeeded,
            "probes_failed": s.probes_failed, "drains": s.drains,
            "breaker_opens": s.breaker_opens, "shed": s.shed,
        },
    })
}

/// Whether the catalog has had a full state from its registry at least once.
fn has_synced(status: &CatalogStatus) -> bool {
    match status {
        CatalogStatus::Synced { .. } => true,
        CatalogStatus::Degraded { revision, .. } | CatalogStatus::Disconnected { revision, .. } => {
            *revision > 0
        }
        CatalogStatus::Starting => false,
    }
}

/// The HTTP/1 and HTTP/2 connection settings, built once per listener.
#[derive(Debug)]
struct Protocols {
    h1: http1::Builder,
    h2: http2::Builder<TokioExecutor>,
    header_timeout: Duration,
    keep_alive: Duration,
    tick: Duration,
    /// Connections parked now.
    parked: AtomicUsize,
    /// WebSocket tunnels open now.
    tunnels: AtomicUsize,
    /// Wakes every parked connection to close (see [`close_parked_connections`]). Sent with
    /// [`Protocols::notify_close_parked`] only.
    close_parked: tokio::sync::Notify,
    /// How many times `close_parked` has been sent: a parked connection polls its
    /// registration only when this has moved since its last poll (see [`poll_closing`]).
    close_parked_sent: AtomicU64,
    /// The gateway is shutting down: set (just before `close_parked` is notified) by
    /// [`close_parked_connections`]. Read per request where `CancellationToken::is_cancelled`
    /// would take a lock; it may lag the token by a scheduler turn, and the notification that
    /// follows it closes any connection that parked meanwhile.
    draining: AtomicBool,
}

impl Protocols {
    /// Wakes every parked connection to close: counts the notification first, so that a
    /// connection woken by it sees the count moved (see [`poll_closing`]).
    fn notify_close_parked(&self) {
        self.close_parked_sent.fetch_add(1, Ordering::Release);
        self.close_parked.notify_waiters();
    }

    fn new(settings: &ServerSettings) -> Self {
        // No timer for HTTP/1: hyper's header timeout would arm a boxed timer per request and
        // also cut idle keep-alive connections; the connection watchdog does both jobs.
        let mut h1 = http1::Builder::new();
        h1.max_buf_size(settings.max_header_bytes.max(8192))
            .keep_alive(true);
        let mut h2 = http2::Builder::new(TokioExecutor::new());
        h2.timer(TokioTimer::new())
            .max_concurrent_streams(settings.http2_max_concurrent_streams)
            .max_header_list_size(settings.max_header_bytes as u32);
        let tick = (settings
            .header_read_timeout
            .min(settings.keep_alive_timeout)
            / 4)
        .clamp(MIN_WATCH_TICK, MAX_WATCH_TICK);
        Protocols {
            h1,
            h2,
            header_timeout: settings.header_read_timeout,
            keep_alive: settings.keep_alive_timeout,
            tick,
            parked: AtomicUsize::new(0),
            tunnels: AtomicUsize::new(0),
            close_parked: tokio::sync::Notify::new(),
            close_parked_sent: AtomicU64::new(0),
            draining: AtomicBool::new(false),
        }
    }
}

type BoxedResponseFuture =
    Pin<Box<dyn Future<Output = Result<http::Response<GatewayBody>, Infallible>> + Send>>;

/// The per-connection service: marks the request in service for the watchdog while it runs.
/// Its future is boxed so that hyper's HTTP/1 connection can be taken apart when parked.
///
/// On an HTTP/2 connection (`h2`), a response's field values are given bytes of their own
/// before hyper encodes them: values read from an upstream share the buffer its answer was
/// read into, and the connection's HPACK encoder keeps the fields it indexes for as long as
/// the connection lives (up to a table of 4 KiB), which would keep one such buffer allocated
/// per indexed field.
///
/// On an HTTP/1.1 connection, a `101` answer to a WebSocket handshake leaves its upstream
/// connection in `tunnel`, for the connection's driver to splice once hyper has written it.
fn connection_service(
    state: &Arc<GatewayState>,
    watch: &Arc<ConnWatch>,
    downstream: Downstream,
    protocol: ServiceProtocol,
) -> impl hyper::service::Service<
    http::Request<hyper::body::Incoming>,
    Response = http::Response<GatewayBody>,
    Error = Infallible,
    Future = BoxedResponseFuture,
> + Clone
+ Send
+ Unpin
+ 'static {
    let state = Arc::clone(state);
    let watch = Arc::clone(watch);
    service_fn(move |req: http::Request<hyper::body::Incoming>| {
        let in_service = watch.request_started();
        let response = respond(
            Arc::clone(&state),
            downstream,
            req.map(IngressBody::Streamed),
        );
        let protocol = protocol.clone();
        Box::pin(async move {
            let mut response = response.await;
            drop(in_service);
            if let Ok(response) = &mut response {
                match &protocol {
                    ServiceProtocol::Http2 => {
                        tideway_http_upstream::headers::own_values(response.headers_mut());
                    }
                    ServiceProtocol::Http1(tunnel) => tunnel.receive(response),
                }
            }
            response
        }) as BoxedResponseFuture
    })
}

/// What [`connection_service`] does for its protocol.
#[derive(Debug, Clone)]
enum ServiceProtocol {
    /// HTTP/1.1: where a WebSocket tunnel's upstream side is left.
    Http1(Arc<TunnelSlot>),
    /// HTTP/2: field values copied before HPACK sees them.
    Http2,
}

/// A request's answer on hyper's path: the request path of [`handle`], boxed.
fn respond(
    state: Arc<GatewayState>,
    downstream: Downstream,
    req: http::Request<IngressBody>,
) -> BoxedResponseFuture {
    let req = Box::new(req);
    Box::pin(async move { Ok(handle(state, downstream, req, true).await.0) })
}

/// A connection's task. Not an `async fn` of its own: its future is the plain connection's, or
/// a boxed TLS one, so a connection's task holds no second copy of its arguments (every open
/// connection has one of these tasks, idle ones included).
fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    state: Arc<GatewayState>,
    protocols: Arc<Protocols>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    permit: OwnedSemaphorePermit,
    shutdown: CancellationToken,
) -> impl Future<Output = ()> + Send {
    match tls {
        None => futures::future::Either::Left(serve_plain(
            stream, peer, state, protocols, permit, shutdown,
        )),
        // Boxed: a TLS handshake's state is large and must not size every connection's task.
        Some(acceptor) => futures::future::Either::Right(Box::pin(async move {
            let _permit = permit;
            serve_tls(stream, peer, &state, &protocols, acceptor, &shutdown).await;
        })),
    }
}

/// Wakes the parked connections (which then close) when the gateway shuts down and each time
/// memory pressure rises to [`Pressure::Elevated`]. One task for all of them, so a parked
/// connection waits on one shared `Notify` rather than holding a pressure receiver and a
/// cancellation future of its own: an idle connection's task stays small.
async fn close_parked_connections(
    protocols: Arc<Protocols>,
    overload: Arc<OverloadState>,
    shutdown: CancellationToken,
) {
    let mut pressure = overload.subscribe();
    let mut elevated = false;
    loop {
        let changed = tokio::select! {
            biased;
            () = shutdown.cancelled() => {
                protocols.draining.store(true, Ordering::Relaxed);
                protocols.notify_close_parked();
                return;
            }
            changed = pressure.wait_for(|p| (*p >= Pressure::Elevated) != elevated) => changed.is_ok(),
        };
        if !changed {
            // The overload state is gone: only shutdown is left to wait for.
            shutdown.cancelled().await;
            protocols.draining.store(true, Ordering::Relaxed);
            protocols.notify_close_parked();
            return;
        }
        elevated = !elevated;
        if elevated {
            protocols.notify_close_parked();
        }
    }
}

/// Cleartext: HTTP/2 by its connection preface, else HTTP/1.1. Between requests an HTTP/1.1
/// connection holds only its socket: no buffer, no parser state. Each request is read by the
/// fast path ([`serve_h1_request`]); one it does not take goes to hyper, with the bytes read so
/// far, and hyper keeps the connection until it has been idle for [`PARK_AFTER_IDLE`] (then it
/// is taken apart and the fast path has the connection again).
async fn serve_plain(
    mut stream: TcpStream,
    peer: SocketAddr,
    state: Arc<GatewayState>,
    protocols: Arc<Protocols>,
    _permit: OwnedSemaphorePermit,
    shutdown: CancellationToken,
) {
    let (state, protocols, shutdown) = (&state, &*protocols, &shutdown);
    let watch = Arc::new(ConnWatch::new());
    let downstream = Downstream {
        peer,
        scheme: Scheme::Http,
    };
    // Boxed: its timers would otherwise size the task of every connection, idle ones included.
    match Box::pin(sniff_h2_preface(&stream, protocols.header_timeout)).await {
        None => return,
        Some(true) => {
            watch.is_h2.store(true, Ordering::Relaxed);
            let service = connection_service(state, &watch, downstream, ServiceProtocol::Http2);
            let io = WatchedIo {
                inner: stream,
                prefix: Bytes::new(),
                watch: Arc::clone(&watch),
            };
            let conn = protocols.h2.serve_connection(TokioIo::new(io), service);
            Box::pin(drive_h2(conn, &watch, protocols, shutdown, peer)).await;
            return;
        }
        Some(false) => {}
    }
    // Bytes read but not yet served: a pipelined request, or what hyper left when parked.
    let mut unread = BytesMut::new();
    // Between requests the connection waits for its next one, for a shutdown or memory
    // pressure (idle connections are the first thing to let go of: one shared `Notify` wakes
    // every parked connection), and for its keep-alive timeout. The notification and the timer
    // are set up once per connection, not once per request: a registered timer and a `Notify`
    // waiter each cost a lock and a list update to add and again to remove.
    // - `closing` is registered here, before any check, so no notification is lost. One sent
    //   while a request is in service closes the connection when it next parks.
    // - `keep_alive` may fire early: it was set from an older last activity. It is then moved
    //   to the real deadline, at most once per timeout period.
    let mut closing = std::pin::pin!(protocols.close_parked.notified());
    closing.as_mut().enable();
    let mut polls = ParkedPolls::default();
    let mut keep_alive = std::pin::pin!(tokio::time::sleep(protocols.keep_alive));
    loop {
        if unread.is_empty()
            && !wait_parked(
                &stream,
                state,
                protocols,
                &watch,
                closing.as_mut(),
                keep_alive.as_mut(),
                &mut polls,
            )
            .await
        {
            tracing::trace!(%peer, "idle keep-alive connection timed out or shutting down; closing");
            return;
        }
        let read = if state.settings.http1_fast_path {
            // Boxed, so an idle connection's task keeps none of the serving state.
            let outcome = crate::handler::boxed_in_place(|| {
                serve_h1_request(
                    &mut stream,
                    std::mem::take(&mut unread),
                    state,
                    downstream,
                    protocols,
                )
            })
            .await;
            watch.touch();
            match outcome {
                FastOutcome::KeepAlive(rest) => {
                    unread = rest;
                    continue;
                }
                FastOutcome::Close => return,
                FastOutcome::Fallback(read) => read,
            }
        } else {
            // Every request to hyper (`server.http1_fast_path = false`).
            std::mem::take(&mut unread).freeze()
        };
        // hyper serves this request and the connection's next ones until it parks.
        match Box::pin(serve_with_hyper(
            stream, read, state, &watch, downstream, protocols, shutdown, peer,
        ))
        .await
        {
            Some(rest) => (stream, unread) = rest,
            None => return,
        }
    }
}

/// A parked HTTP/1.1 connection's wait between requests: `true` when its next request has
/// begun to arrive, `false` when it should close (its keep-alive timeout, a shutdown, memory
/// pressure). It holds the socket only: no buffer, no parser state. `closing`, `keep_alive`
/// and `polls` belong to the connection and are reused by each of its waits (see
/// [`serve_plain`]).
///
/// A `poll_fn` rather than an `async fn` with `select!`: this future is part of every idle
/// connection's task, and as an `async fn` it kept each argument twice and the `select!`'s
/// futures besides (176 bytes, against the 56 of the references it needs).
fn wait_parked<'a>(
    stream: &'a TcpStream,
    state: &GatewayState,
    protocols: &'a Protocols,
    watch: &'a ConnWatch,
    mut closing: Pin<&'a mut tokio::sync::futures::Notified<'_>>,
    mut keep_alive: Pin<&'a mut tokio::time::Sleep>,
    polls: &'a mut ParkedPolls,
) -> impl Future<Output = bool> + 'a {
    protocols.parked.fetch_add(1, Ordering::Relaxed);
    // Shutting down or short of memory: a request that has already arrived is served; only
    // idle connections are let go.
    let letting_go = protocols.draining.load(Ordering::Relaxed)
        || state.overload.pressure() >= Pressure::Elevated;
    std::future::poll_fn(move |cx| {
        let woken = if letting_go {
            matches!(stream.poll_read_ready(cx), Poll::Ready(Ok(())))
        } else {
            loop {
                let closing_fired = poll_closing(
                    closing.as_mut(),
                    &mut polls.closing_seen,
                    &protocols.close_parked_sent,
                    cx,
                );
                if closing_fired.is_ready() {
                    break false;
                }
                // Before the timer: a request that has arrived is served.
                // `poll_read_ready`, not `readable()`: see `until_hangup`.
                if let Poll::Ready(ready) = stream.poll_read_ready(cx) {
                    break ready.is_ok();
                }
                if poll_keep_alive(keep_alive.as_mut(), &mut polls.keep_alive_polled, cx)
                    .is_pending()
                {
                    return Poll::Pending;
                }
                let idle = watch.idle_for();
                // The activity clock may be a tick behind this timer's: what is left within
                // that is not worth another wake-up.
                if idle + COARSE_CLOCK_SLACK >= protocols.keep_alive {
                    break false;
                }
                keep_alive
                    .as_mut()
                    .reset(Instant::now() + (protocols.keep_alive - idle));
                // Set again: polled again (once per keep-alive period at most) rather than
                // counting on the waker its last poll left.
                polls.keep_alive_polled = false;
            }
        };
        protocols.parked.fetch_sub(1, Ordering::Relaxed);
        Poll::Ready(woken)
    })
}

/// What a parked connection has registered with its close notification and its keep-alive
/// timer, kept across its waits so that a wait polls each only when it may have fired.
/// Polling either registers the task's waker again: for a waiting `Notified` that takes the
/// `Notify`'s lock, which every connection shares, and for a timer it swaps the waker (two
/// reference-count updates), each twice per request. The connection's task, and so its waker,
/// stays the same for the connection's whole life: the waker a first poll registered stays good.
#[derive(Debug)]
struct ParkedPolls {
    /// How many close notifications had been sent when `closing` was last polled
    /// ([`NEVER_POLLED`]: not yet). A plain count, not an `Option`: this is in every
    /// connection's task.
    closing_seen: u64,
    /// The keep-alive timer has been polled since it was last set: it holds the waker.
    keep_alive_polled: bool,
}

/// [`ParkedPolls::closing_seen`] before the first poll: a count of notifications never reaches
/// it (one per shutdown and per rise of memory pressure).
const NEVER_POLLED: u64 = u64::MAX;

impl Default for ParkedPolls {
    fn default() -> Self {
        ParkedPolls {
            closing_seen: NEVER_POLLED,
            keep_alive_polled: false,
        }
    }
}

/// Polls a parked connection's `closing` registration, but only when a notification may have
/// been sent since its last poll (`seen`: how many had been sent then, or [`NEVER_POLLED`];
/// see [`ParkedPolls`]).
/// A notification wakes the task, and the count, bumped before it, has moved when the task
/// looks.
fn poll_closing(
    closing: Pin<&mut tokio::sync::futures::Notified<'_>>,
    seen: &mut u64,
    sent: &AtomicU64,
    cx: &mut Context<'_>,
) -> Poll<()> {
    let sent_now = sent.load(Ordering::Acquire);
    if *seen == sent_now {
        return Poll::Pending;
    }
    let polled = closing.poll(cx);
    if polled.is_pending() {
        *seen = sent_now;
    }
    polled
}

/// Polls a parked connection's keep-alive timer, but only when it has not been polled since it
/// was set or it has fired (the driver marks it fired before waking the task; see
/// [`ParkedPolls`]).
fn poll_keep_alive(
    timer: Pin<&mut tokio::time::Sleep>,
    polled: &mut bool,
    cx: &mut Context<'_>,
) -> Poll<()> {
    if *polled && !timer.is_elapsed() {
        return Poll::Pending;
    }
    *polled = true;
    timer.poll(cx)
}

/// hyper serves the connection from `read` (bytes already read from it) until it has been idle
/// for [`PARK_AFTER_IDLE`]; then its socket and unread bytes come back (`None`: it is done).
// The connection's pieces are passed as they are rather than in a bag made for the occasion.
#[allow(clippy::too_many_arguments)]
async fn serve_with_hyper(
    stream: TcpStream,
    read: Bytes,
    state: &Arc<GatewayState>,
    watch: &Arc<ConnWatch>,
    downstream: Downstream,
    protocols: &Protocols,
    shutdown: &CancellationToken,
    peer: SocketAddr,
) -> Option<(TcpStream, BytesMut)> {
    watch.on_read(&read);
    let io = WatchedIo {
        inner: stream,
        prefix: read,
        watch: Arc::clone(watch),
    };
    let tunnel = Arc::new(TunnelSlot::default());
    let service = connection_service(
        state,
        watch,
        downstream,
        ServiceProtocol::Http1(Arc::clone(&tunnel)),
    );
    let conn = Box::new(protocols.h1.serve_connection(TokioIo::new(io), service));
    // The tunnel (if any) is awaited after the match, so that the connection's pieces that
    // `drive_h1` handed back take no room in this future while it runs.
    let tunnel = match drive_h1(conn, watch, protocols, shutdown, peer, true, &tunnel).await {
        H1End::Done => return None,
        H1End::Parked(io, read_buf) => {
            let WatchedIo { inner, prefix, .. } = io.into_inner();
            return Some((inner, unread_copy(&prefix, &read_buf)));
        }
        // Boxed: a tunnel's state must not size every hyper-served connection's future.
        H1End::Upgraded(io, read_buf, upstream) => Box::pin(run_tunnel(
            io.into_inner(),
            read_buf,
            upstream,
            protocols,
            shutdown,
            peer,
        )),
    };
    tunnel.await;
    None
}

/// A connection whose WebSocket handshake the upstream accepted: spliced to the upstream until
/// either closes, it idles out or the gateway shuts down. `read_buf` is what hyper read behind
/// the handshake (the client's first frames, perhaps): it goes to the upstream first.
async fn run_tunnel<T>(
    io: WatchedIo<T>,
    read_buf: Bytes,
    (upstream, idle_timeout): PendingTunnel,
    protocols: &Protocols,
    shutdown: &CancellationToken,
    peer: SocketAddr,
) where
    T: AsyncRead + AsyncWrite + Unpin,
{
    // The watch has nothing more to watch: the tunnel has its own idle timeout.
    let WatchedIo { inner, prefix, .. } = io;
    let early = unread_copy(&prefix, &read_buf);
    // Copied: what hyper had read (a view of its read buffer) is let go of now, not when the
    // tunnel closes.
    drop(read_buf);
    drop(prefix);
    protocols.tunnels.fetch_add(1, Ordering::Relaxed);
    tracing::debug!(%peer, "WebSocket tunnel open");
    let end = tunnel::splice(inner, early, upstream, idle_timeout, shutdown).await;
    protocols.tunnels.fetch_sub(1, Ordering::Relaxed);
    tracing::debug!(%peer, ?end, "WebSocket tunnel closed");
}

/// What a parked hyper connection had read and not served: the rest of its prefix, then
/// hyper's buffer. Copied: a slice of hyper's buffer would keep that whole buffer alive.
fn unread_copy(prefix: &[u8], read_buf: &[u8]) -> BytesMut {
    let mut unread = BytesMut::with_capacity(prefix.len() + read_buf.len());
    unread.extend_from_slice(prefix);
    unread.extend_from_slice(read_buf);
    unread
}

/// First size of a fast-path read buffer: most request heads fit; bigger ones grow it.
const FAST_READ_BUF: usize = 2048;
/// A response body up to this size is written in the same `write` as its head.
const COALESCE_BODY: usize = 16 * 1024;

/// How a fast-path request ended for its connection.
#[derive(Debug)]
enum FastOutcome {
    /// Answered; the connection stays open, holding any bytes of the next request already read.
    KeepAlive(BytesMut),
    /// The connection is done: closed by the client, cut at a deadline, or asked to close.
    Close,
    /// Not for the fast path: hyper serves the connection from these bytes (a request's first).
    Fallback(Bytes),
}

/// Reads one request (under the header deadline), answers it, and writes the response. While
/// the request is in service the connection holds no read or write buffer, and a client that
/// hangs up cancels it (its RPC call with it).
async fn serve_h1_request(
    stream: &mut TcpStream,
    mut buf: BytesMut,
    state: &Arc<GatewayState>,
    downstream: Downstream,
    protocols: &Protocols,
) -> FastOutcome {
    let max_head = state.settings.max_header_bytes;
    let max_body = crate::h1::MAX_WHOLE_BODY.min(state.settings.max_body_bytes);
    let mut deadline = None;
    let (request, asked_close) = loop {
        match crate::h1::parse_request(&mut buf, max_head, max_body) {
            crate::h1::Parsed::Request { request, close } => break (request, close),
            crate::h1::Parsed::Partial => {}
            crate::h1::Parsed::Fallback(why) => {
                tracing::trace!(peer = %downstream.peer, why, "request left to hyper");
                return FastOutcome::Fallback(buf.freeze());
            }
            crate::h1::Parsed::BadRequest => {
                // See `h1::Parsed::BadRequest`.
                answer_and_close(
                    stream,
                    "400 Bad Request",
                    r#"{"code":"bad_request","message":"invalid request target or header","request_id":null}"#,
                )
                .await;
                return FastOutcome::Close;
            }
        }
        if buf.capacity() - buf.len() < FAST_READ_BUF / 2 {
            // Doubles as it fills; `parse_request` bounds it (head + whole-body limits).
            buf.reserve(buf.len().max(FAST_READ_BUF));
        }
        // `read_buf` (not `try_read_buf`): a read shorter than the room given tells tokio the
        // socket is drained, so the hang-up watch below costs no `recv` that would only say
        // EAGAIN.
        let read = match futures::FutureExt::now_or_never(stream.read_buf(&mut buf)) {
            Some(read) => read,
            None => {
                // The whole head (and a whole body taken with it) within the header deadline,
                // from the moment its first byte could be read: a slowloris client is cut here.
                let until =
                    *deadline.get_or_insert_with(|| Instant::now() + protocols.header_timeout);
                match tokio::time::timeout_at(until, stream.read_buf(&mut buf)).await {
                    Ok(read) => read,
                    Err(_) => {
                        tracing::debug!(peer = %downstream.peer, "request head not complete within the header deadline; closing");
                        return FastOutcome::Close;
                    }
                }
            }
        };
        match read {
            Ok(0) | Err(_) => return FastOutcome::Close,
            Ok(_) => {}
        }
    };
    // What follows the request is kept only when there is some: an empty remainder would hold
    // the whole read buffer while the request waits.
    let rest = if buf.is_empty() {
        drop(buf);
        BytesMut::new()
    } else {
        buf
    };
    let watch_hangup = rest.is_empty();
    // The request's work runs inline, in this (boxed) future: one allocation per request for
    // reading, serving and writing, freed when the response is written. Pinned where it is
    // made and lent to the hang-up watch: moving it would give this future room for two.
    let answered = {
        let answer = std::pin::pin!(handle(Arc::clone(state), downstream, request, false));
        until_hangup(stream, watch_hangup, answer).await
    };
    let Some((response, request_id)) = answered else {
        tracing::debug!(peer = %downstream.peer, "client went away; request cancelled");
        return FastOutcome::Close;
    };
    // Writing lives in its own future: its locals then share room with the handler's (this
    // future is awaited where the handler no longer is) instead of adding to the request's.
    let close = asked_close || protocols.draining.load(Ordering::Relaxed);
    let written = write_response(
        stream,
        response,
        request_id.as_ref(),
        close,
        watch_hangup,
        protocols.keep_alive,
    );
    if !written.await {
        return FastOutcome::Close;
    }
    FastOutcome::KeepAlive(rest)
}

/// Writes `response` (head, then body) on the fast path. `false`: the connection closes (the
/// write failed, the response or `close` asks for it).
async fn write_response(
    stream: &mut TcpStream,
    response: http::Response<GatewayBody>,
    request_id: Option<&http::HeaderValue>,
    close: bool,
    watch_hangup: bool,
    keep_alive: Duration,
) -> bool {
    let (parts, body) = response.into_parts();
    let (framing, closes) =
        crate::h1::response_framing(parts.status, &parts.headers, body.size_hint().exact());
    let close = close || closes;
    let small = matches!(framing, crate::h1::Framing::Length(n) if n as usize <= COALESCE_BODY);
    let mut out = Vec::with_capacity(
        256 + if small {
            COALESCE_BODY.min(body.size_hint().lower() as usize)
        } else {
            0
        },
    );
    let date = DATE.with(|cache| {
        let now = tideway_http_upstream::clock::unix_seconds();
        let mut cache = cache.borrow_mut();
        *cache.get(now).first_chunk::<29>().unwrap_or(&[b' '; 29])
    });
    crate::h1::encode_head(
        &mut out,
        parts.status,
        &parts.headers,
        framing,
        close,
        &date,
        request_id,
    );
    drop(parts);
    let written = write_body(stream, out, body, framing, watch_hangup, keep_alive).await;
    if !written || close {
        let _ = stream.shutdown().await;
        return false;
    }
    true
}

thread_local! {
    static DATE: std::cell::RefCell<crate::h1::DateCache> = std::cell::RefCell::default();
}

/// Runs `work` while watching the socket for a hang-up (read end of stream or error): `None`
/// when the client went away first, and `work` is dropped (cancelled). Bytes that arrive
/// meanwhile (a pipelined request) stay unread and end the watch.
async fn until_hangup<F: Future>(
    stream: &TcpStream,
    watch: bool,
    mut work: Pin<&mut F>,
) -> Option<F::Output> {
    let mut watch = watch;
    let mut probe = [0u8; 1];
    // `poll_peek`, not `peek().await`: it waits in the socket's one reader slot, which keeps
    // its waker from one poll to the next, where a `peek` future would join (and on drop
    // leave) the socket's waiter list under its lock for every request.
    std::future::poll_fn(|cx| {
        if let Poll::Ready(out) = work.as_mut().poll(cx) {
            return Poll::Ready(Some(out));
        }
        if watch {
            let mut probe = tokio::io::ReadBuf::new(&mut probe);
            match stream.poll_peek(cx, &mut probe) {
                Poll::Ready(Ok(0) | Err(_)) => return Poll::Ready(None),
                Poll::Ready(Ok(_)) => watch = false,
                Poll::Pending => {}
            }
        }
        Poll::Pending
    })
    .await
}

/// Writes a response's head (in `out`) and body with the given framing. A small body goes out
/// in the head's `write`; a streamed one as it comes, flushed whenever the body has nothing
/// ready. Each write waits at most `stall` for the client to take bytes. `false`: the
/// connection cannot go on (write failed or stalled, body failed, or the client hung up).
async fn write_body(
    stream: &mut TcpStream,
    mut out: Vec<u8>,
    mut body: GatewayBody,
    framing: crate::h1::Framing,
    watch_hangup: bool,
    stall: Duration,
) -> bool {
    use futures::FutureExt as _;
    use http_body_util::BodyExt as _;
    let mut sent: u64 = 0;
    if framing != crate::h1::Framing::Empty {
        loop {
            let next = {
                let mut frame = body.frame();
                match (&mut frame).now_or_never() {
                    Some(next) => next,
                    None => {
                        if !out.is_empty() {
                            if !write_within(stream, &out, stall).await {
                                return false;
                            }
                            out.clear();
                        }
                        match until_hangup(stream, watch_hangup, Pin::new(&mut frame)).await {
                            Some(next) => next,
                            None => return false,
                        }
                    }
                }
            };
            let data = match next {
                None => break,
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "response body failed; closing the connection");
                    return false;
                }
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => data,
                    // Trailers: not sent (fast-path requests never accept them).
                    Err(_) => continue,
                },
            };
            if data.is_empty() {
                continue;
            }
            sent += data.len() as u64;
            if let crate::h1::Framing::Length(n) = framing
                && sent > n
            {
                tracing::debug!(
                    "response body longer than its content-length; closing the connection"
                );
                return false;
            }
            let chunked = framing == crate::h1::Framing::Chunked;
            if chunked {
                crate::h1::encode_chunk_size(&mut out, data.len());
            }
            if out.len() + data.len() <= COALESCE_BODY {
                out.extend_from_slice(&data);
            } else {
                if !out.is_empty() {
                    if !write_within(stream, &out, stall).await {
                        return false;
                    }
                    out.clear();
                }
                if !write_within(stream, &data, stall).await {
                    return false;
                }
            }
            if chunked {
                out.extend_from_slice(b"\r\n");
            }
        }
    }
    drop(body);
    match framing {
        crate::h1::Framing::Chunked => out.extend_from_slice(crate::h1::LAST_CHUNK),
        crate::h1::Framing::Length(n) if sent != n => {
            if !out.is_empty() {
                let _ = write_within(stream, &out, stall).await;
            }
            tracing::debug!(
                sent,
                declared = n,
                "response body shorter than its content-length; closing the connection"
            );
            return false;
        }
        _ => {}
    }
    out.is_empty() || write_within(stream, &out, stall).await
}

/// Writes all of `bytes`, waiting at most `stall` for the client to take them.
async fn write_within(stream: &mut TcpStream, bytes: &[u8], stall: Duration) -> bool {
    // Most writes are taken whole at once: only one that has to wait starts the clock (a timer
    // costs a clock read to make, and a lock to register and to drop).
    let mut rest = bytes;
    match stream.try_write(rest) {
        Ok(n) if n == rest.len() => return true,
        Ok(n) => rest = &rest[n..],
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        Err(_) => return false,
    }
    matches!(
        tokio::time::timeout(stall, stream.write_all(rest)).await,
        Ok(Ok(()))
    )
}

async fn serve_tls(
    stream: TcpStream,
    peer: SocketAddr,
    state: &Arc<GatewayState>,
    protocols: &Protocols,
    acceptor: tokio_rustls::TlsAcceptor,
    shutdown: &CancellationToken,
) {
    let watch = Arc::new(ConnWatch::new());
    // The watch sees the ciphertext: bytes from the client start the header deadline even when
    // they never make a whole TLS record (a slow-loris client trickling records).
    let stream = WatchedIo {
        inner: stream,
        prefix: Bytes::new(),
        watch: Arc::clone(&watch),
    };
    // The handshake counts as header time.
    let stream = match tokio::time::timeout(protocols.header_timeout, acceptor.accept(stream)).await
    {
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
    let downstream = Downstream {
        peer,
        scheme: Scheme::Https,
    };
    // And the plaintext: this layer also carries the bytes a parked connection had read.
    let io = WatchedIo {
        inner: stream,
        prefix: Bytes::new(),
        watch: Arc::clone(&watch),
    };
    if io.inner.get_ref().1.alpn_protocol() == Some(b"h2") {
        watch.is_h2.store(true, Ordering::Relaxed);
        let service = connection_service(state, &watch, downstream, ServiceProtocol::Http2);
        let conn = protocols.h2.serve_connection(TokioIo::new(io), service);
        // Boxed: an HTTP/2 connection's state must not size the task of every TLS connection.
        Box::pin(drive_h2(conn, &watch, protocols, shutdown, peer)).await;
        return;
    }
    // HTTP/1.1: hyper serves the connection until it has been idle for [`PARK_AFTER_IDLE`];
    // then it is taken apart, and the connection waits for its next request holding its TLS
    // session and socket only (rustls keeps a 4 KiB read buffer of its own), as a cleartext one
    // does.
    let mut io = io;
    let mut closing = std::pin::pin!(protocols.close_parked.notified());
    closing.as_mut().enable();
    let mut polls = ParkedPolls::default();
    let mut keep_alive = std::pin::pin!(tokio::time::sleep(protocols.keep_alive));
    loop {
        // The slot belongs to the served requests: made in this block, it is gone before the
        // parked wait.
        let (parked, read_buf) = 'served: {
            let tunnel = Arc::new(TunnelSlot::default());
            let service = connection_service(
                state,
                &watch,
                downstream,
                ServiceProtocol::Http1(Arc::clone(&tunnel)),
            );
            let conn = Box::new(protocols.h1.serve_connection(TokioIo::new(io), service));
            let tunnel =
                match drive_h1(conn, &watch, protocols, shutdown, peer, true, &tunnel).await {
                    H1End::Done => return,
                    H1End::Parked(parked, read_buf) => break 'served (parked, read_buf),
                    // Boxed, and awaited after the match: a tunnel's state (with a copy of the
                    // TLS stream) must not size every TLS connection's task.
                    H1End::Upgraded(io, read_buf, upstream) => Box::pin(run_tunnel(
                        io.into_inner(),
                        read_buf,
                        upstream,
                        protocols,
                        shutdown,
                        peer,
                    )),
                };
            tunnel.await;
            return;
        };
        io = parked.into_inner();
        if !io.prefix.is_empty() || !read_buf.is_empty() {
            // Bytes of a next request already read: hyper serves them at once.
            io.prefix = unread_copy(&io.prefix, &read_buf).freeze();
            continue;
        }
        // rustls holds no plaintext here: hyper read until there was none. What is left of a
        // record (if anything) is completed by bytes the socket has yet to deliver.
        let socket = &io.inner.get_ref().0.inner;
        if !wait_parked(
            socket,
            state,
            protocols,
            &watch,
            closing.as_mut(),
            keep_alive.as_mut(),
            &mut polls,
        )
        .await
        {
            tracing::trace!(%peer, "idle TLS keep-alive connection timed out or shutting down; closing");
            return;
        }
    }
}

/// Waits for the first bytes of a connection and tells whether they are the HTTP/2 preface.
/// `None`: the peer closed or sent nothing within `within`.
async fn sniff_h2_preface(stream: &TcpStream, within: Duration) -> Option<bool> {
    let deadline = Instant::now() + within;
    let mut buf = [0u8; H2_PREFACE_START.len()];
    loop {
        let n = tokio::time::timeout_at(deadline, stream.peek(&mut buf))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        if buf[..n] != H2_PREFACE_START[..n] {
            return Some(false);
        }
        if n == H2_PREFACE_START.len() {
            return Some(true);
        }
        // A piece of the preface so far: wait for the rest (peek would return at once).
        tokio::time::sleep(MIN_WATCH_TICK).await;
        if Instant::now() >= deadline {
            return None;
        }
    }
}

/// What hyper read and did not serve, as [`drive_h1`] hands it on: nothing when it is empty.
/// hyper's `read_buf` is a view of its whole read buffer (8 KiB), empty or not; kept by a
/// parked connection or a tunnel it would stay allocated for their whole life
/// (`connection_memory` measures both).
fn unread_part(read_buf: Bytes) -> Bytes {
    if read_buf.is_empty() {
        Bytes::new()
    } else {
        read_buf
    }
}

/// How [`drive_h1`] let go of a connection.
enum H1End<I> {
    /// Finished (and its socket shut down).
    Done,
    /// Parked (only if `may_park`): its socket and the bytes hyper read but did not serve.
    Parked(I, Bytes),
    /// Its `101` to a WebSocket handshake was written: its socket, the bytes hyper read behind
    /// the handshake, and the upstream side of the tunnel.
    Upgraded(I, Bytes, PendingTunnel),
}

/// Drives an HTTP/1 connection until it finishes, parks (only if `may_park`), or switches to a
/// WebSocket tunnel (whose upstream side its service left in `tunnel`).
// The connection's pieces are passed as they are rather than in a bag made for the occasion.
#[allow(clippy::too_many_arguments)]
async fn drive_h1<I, S>(
    mut conn: Box<http1::Connection<I, S>>,
    watch: &ConnWatch,
    protocols: &Protocols,
    shutdown: &CancellationToken,
    peer: SocketAddr,
    may_park: bool,
    tunnel: &TunnelSlot,
) -> H1End<I>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = GatewayBody> + Unpin,
    S::Future: Unpin,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut ticker = tokio::time::interval(protocols.tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut draining = false;
    let mut parking = false;
    loop {
        tokio::select! {
            result = std::future::poll_fn(|cx| conn.poll_without_shutdown(cx)) => {
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                    return H1End::Done;
                }
                // hyper ends a connection once it has written a `101` ("manual" upgrade).
                if let Some(upstream) = tunnel.take() {
                    let parts = conn.into_parts();
                    return H1End::Upgraded(parts.io, unread_part(parts.read_buf), upstream);
                }
                if parking && !draining {
                    let parts = conn.into_parts();
                    return H1End::Parked(parts.io, unread_part(parts.read_buf));
                }
                // Finished on its own (Connection: close, or draining): close the socket.
                let mut io = conn.into_parts().io;
                let _ = std::future::poll_fn(|cx| Pin::new(&mut io).poll_shutdown(cx)).await;
                return H1End::Done;
            }
            () = shutdown.cancelled(), if !draining => {
                draining = true;
                Pin::new(&mut *conn).graceful_shutdown();
            }
            _ = ticker.tick() => {
                match watch.verdict(protocols.header_timeout, protocols.keep_alive) {
                    Verdict::Keep => {}
                    Verdict::HeaderTimeout => {
                        tracing::debug!(%peer, "request head not complete within the header deadline; closing");
                        return H1End::Done;
                    }
                    Verdict::Idle => {
                        tracing::trace!(%peer, "keep-alive connection idle; closing");
                        return H1End::Done;
                    }
                }
                if may_park && !parking && watch.parkable(PARK_AFTER_IDLE) {
                    parking = true;
                    Pin::new(&mut *conn).graceful_shutdown();
                }
            }
        }
    }
}

/// Drives an HTTP/2 connection to its end, closing it early when the watchdog says so and
/// gracefully when the gateway shuts down.
async fn drive_h2<I, S>(
    conn: http2::Connection<I, S, TokioExecutor>,
    watch: &ConnWatch,
    protocols: &Protocols,
    shutdown: &CancellationToken,
    peer: SocketAddr,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = GatewayBody>,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut ticker = tokio::time::interval(protocols.tick);
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
                if watch.verdict(protocols.header_timeout, protocols.keep_alive) == Verdict::Idle {
                    tracing::trace!(%peer, "HTTP/2 connection idle; closing");
                    return;
                }
            }
        }
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
    /// Origin of the millisecond stamps below, on the coarse clock
    /// ([`tideway_http_upstream::clock`]).
    epoch_ms: u64,
    /// Requests being served (HTTP/2 may have many).
    in_service: AtomicUsize,
    /// When the first byte of the current request head arrived (ms since epoch + 1; 0 = none).
    head_started: AtomicU64,
    /// Last read or write (ms since epoch).
    last_activity: AtomicU64,
    /// HTTP/2 has no per-request head phase on the connection; only the idle timer applies.
    is_h2: AtomicBool,
}

impl ConnWatch {
    fn new() -> Self {
        ConnWatch {
            epoch_ms: tideway_http_upstream::clock::now_millis(),
            in_service: AtomicUsize::new(0),
            head_started: AtomicU64::new(0),
            last_activity: AtomicU64::new(0),
            is_h2: AtomicBool::new(false),
        }
    }

    /// The coarse clock: stamped at every read and write, compared with timeouts of seconds.
    fn now_ms(&self) -> u64 {
        tideway_http_upstream::clock::now_millis().saturating_sub(self.epoch_ms)
    }

    fn touch(&self) {
        self.last_activity.store(self.now_ms(), Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        Duration::from_millis(
            self.now_ms()
                .saturating_sub(self.last_activity.load(Ordering::Relaxed)),
        )
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
        if self.in_service.load(Ordering::Acquire) == 0
            && self.head_started.load(Ordering::Relaxed) == 0
        {
            self.head_started
                .store(self.now_ms() + 1, Ordering::Relaxed);
        }
    }

    /// Nothing in service, no request head arriving, and quiet for `after`.
    fn parkable(&self, after: Duration) -> bool {
        self.in_service.load(Ordering::Acquire) == 0
            && self.head_started.load(Ordering::Relaxed) == 0
            && self.idle_for() >= after
    }

    fn verdict(&self, header_timeout: Duration, idle_timeout: Duration) -> Verdict {
        if self.in_service.load(Ordering::Acquire) > 0 {
            return Verdict::Keep;
        }
        let head = self.head_started.load(Ordering::Relaxed);
        if head != 0 && !self.is_h2.load(Ordering::Relaxed) {
            if self.now_ms().saturating_sub(head - 1) >= header_timeout.as_millis() as u64 {
                return Verdict::HeaderTimeout;
            }
            return Verdict::Keep;
        }
        if self.idle_for() >= idle_timeout {
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

/// A socket that reports reads and writes to its [`ConnWatch`]. `prefix` holds bytes already
/// read from the socket that must be read again first: what hyper had buffered but not parsed
/// when its connection was parked.
struct WatchedIo<T> {
    inner: T,
    prefix: Bytes,
    watch: Arc<ConnWatch>,
}

impl<T: AsyncRead + Unpin> AsyncRead for WatchedIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            let chunk = self.prefix.split_to(n);
            buf.put_slice(&chunk);
            if self.prefix.is_empty() {
                // Release the buffer the prefix was cut from.
                self.prefix = Bytes::new();
            }
            return Poll::Ready(Ok(()));
        }
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

#[cfg(test)]
mod size_tests {
    use super::*;

    fn test_state(settings: ServerSettings) -> Arc<GatewayState> {
        Arc::new(GatewayState {
            in_flight: crate::router::ConcurrencyLimit::new(settings.max_in_flight),
            overload: Arc::new(OverloadState::new(None)),
            settings,
            routes: ArcSwap::from_pointee(RouteTable::default()),
            backends: ArcSwap::from_pointee(RpcBackends::new()),
            ids: RequestIds::new(),
            edge: arc_swap::ArcSwapOption::empty(),
            observe: arc_swap::ArcSwapOption::empty(),
        })
    }

    #[tokio::test]
    async fn connection_task_is_small() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let _client = client.unwrap();
        let (mut stream, peer) = accepted.unwrap();
        let settings = ServerSettings::default();
        let protocols = Arc::new(Protocols::new(&settings));
        let state = test_state(settings);
        // For the record (printed with --nocapture): what one request in service holds besides
        // the connection task. The request future is allocated once per request, for its life.
        let downstream = Downstream {
            peer,
            scheme: Scheme::Http,
        };
        let request =
            serve_h1_request(&mut stream, BytesMut::new(), &state, downstream, &protocols);
        let request_size = std::mem::size_of_val(&request);
        eprintln!("serve_h1_request future (one per request in service): {request_size} bytes");
        drop(request);
        // A request waiting on a slow service holds this future (boxed), its connection's task
        // and little else: it must fit jemalloc's 3 KiB size class, the next one being 3.5 KiB.
        // What keeps it there: the request is boxed once (not copied into every level of the
        // handler), permits are a pointer and a count, rare paths (connecting, a full write
        // queue, waiting for an endpoint, retry and hedge timers) are boxed, and writing the
        // response is a future of its own that shares room with the handler's.
        assert!(
            request_size <= 3072,
            "request future is {request_size} bytes"
        );

        let permit = Arc::new(Semaphore::new(1)).try_acquire_owned().unwrap();
        let fut = serve_connection(
            stream,
            peer,
            state,
            protocols,
            None,
            permit,
            CancellationToken::new(),
        );
        let size = std::mem::size_of_val(&fut);
        eprintln!("serve_connection future: {size} bytes");
        // What an idle connection keeps besides its socket: this future and the task around it.
        // Everything used while serving is boxed and freed between requests. Tokio's task cell
        // (32-byte header, the task tracker's 8 bytes, 24 bytes of core, this future, a 48-byte
        // trailer; aligned to 128 bytes on x86_64) must fit jemalloc's 896-byte size class, the
        // next one being 1,024: 784 bytes at most for this future.
        assert!(size <= 784, "connection task future is {size} bytes");
    }
}
