//! Tideway's HTTP ingress: the API gateway that routes HTTP requests to RPC services and to plain
//! HTTP upstreams, and stays bounded when what is behind it is slow.
//!
//! A request's path, one file per step:
//!
//! ```text
//! server.rs   accept (connection limit) ─► HTTP/1.1 fast path (h1.rs) for the common request,
//!             hyper for the rest and for HTTP/2 ─► header deadline, idle timeout, hang-ups;
//!             a WebSocket handshake the upstream accepted ─► a tunnel (tunnel.rs)
//! handler.rs  request id ─► route match ─► deadline ─► RPC or HTTP target ─► finish
//! router.rs   radix-tree match of path templates, then method (404 / 405 + Allow)
//! binding.rs  path + query + JSON body ─► the RPC payload object
//! backends.rs service name ─► tideway_rpc::Client
//! discovery.rs registry catalog ─► new route table + backends, swapped in on every change
//! reload.rs   config file ─► a new generation (routes, services, clusters, edge) swapped in
//! edge.rs     edge policies per route: CORS preflight, IP rules, rate limits, auth (tideway-edge)
//! error.rs    every failure ─► status + JSON {code, message, request_id}
//! admin.rs    the admin listener: /metrics, /healthz, /readyz (telemetry.rs: metrics, stalls),
//!             the admin API, /openapi.json + /docs (openapi.rs), /dashboard (dashboard/,
//!             memory chart from history.rs); redact.rs keeps secrets out of what it shows
//! ```
//!
//! HTTP upstream routes go through `tideway-http-upstream`, which streams bodies both ways.
//! Configuration (TOML, environment overrides, validation with locations) is in [`config`].

pub mod adaptive;
mod admin;
pub mod assemble;
pub mod backends;
pub mod binding;
pub mod body;
pub mod config;
mod dashboard;
pub mod discovery;
pub mod edge;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
mod h1;
mod handler;
pub mod history;
mod log_throttle;
pub mod openapi;
pub mod overload;
mod redact;
pub mod reload;
pub mod router;
mod server;
pub mod telemetry;
mod tls;
mod tunnel;

pub use backends::RpcBackends;
pub use config::{ConfigError, GatewayConfig, RouteConfig, ServerSettings};
pub use error::GatewayError;
pub use handler::{FALLBACK_HEADER, REQUEST_ID_HEADER};
pub use router::{CallSettings, Fallback, Route, RouteConflict, RouteTable, RouteTarget};
pub use server::{DEFAULT_DRAIN_TIMEOUT, Gateway, StartError};
