//! Forwarding gateway requests to plain-HTTP upstream services, with pooled keep-alive
//! connections and bodies streamed in both directions, never buffered whole.
//!
//! The gateway (`tideway-gateway`) builds one [`HttpUpstream`] per configured upstream and calls
//! [`HttpUpstream::forward`] for each request routed to it. Everything about the downstream side
//! (routing, body size limits, memory budget, overload) stays in the gateway; this crate owns the
//! upstream side.
//!
//! # Pieces
//!
//! - [`UpstreamConfig`] (`config.rs`): base URL, timeouts, pool bounds; every default a
//!   `DEFAULT_*` const with its reason, and [`UpstreamConfig::validate`] rejecting zero and absurd
//!   values with an [`UpstreamConfigError`].
//! - [`HttpUpstream`] (`upstream.rs`): hyper-util's pooled client over a TCP connector
//!   (`TCP_NODELAY`, connect timeout) that counts open connections
//!   ([`HttpUpstream::open_connections`], `connect.rs`). Idle connections are bounded per host
//!   and closed after an idle timeout. HTTP/1.1 by default, h2c with prior knowledge on request.
//! - [`headers`]: the header rules below, public so the gateway can reuse them.
//! - `target.rs`: joining the base URL's path with the path the gateway passes.
//! - [`UpstreamError`] (`error.rs`): what failed, its HTTP status ([`UpstreamError::http_status`]:
//!   502, or 504 for a deadline) and whether a retry is safe ([`UpstreamError::is_retry_safe`]:
//!   only when the request certainly never reached the upstream).
//!
//! # What `forward` does to a request
//!
//! 1. The URI becomes the base URL plus `path_and_query`, joined with exactly one `/`, the query
//!    kept as is, dot segments resolved and clamped at the base path (a request can never climb
//!    above the prefix).
//! 2. Hop-by-hop fields are removed (RFC 9110 §7.6.1): `Connection`, `Keep-Alive`,
//!    `Proxy-Connection`, `TE`, `Trailer`, `Transfer-Encoding`, `Upgrade`, `Proxy-Authenticate`,
//!    `Proxy-Authorization`, and every field named in `Connection`. If the client's `TE` listed
//!    `trailers`, `TE: trailers` is sent on (with `Connection: te` on HTTP/1.1), so trailers can
//!    still flow end to end; no other `TE` value is.
//! 3. `X-Forwarded-For` gets the client IP appended to any value already there;
//!    `X-Forwarded-Proto` (`http`/`https` of the client's connection) and `X-Forwarded-Host`
//!    (the original host) replace whatever the client sent.
//! 4. `Host` becomes the upstream's authority, or stays the client's when
//!    [`UpstreamConfig::preserve_host`] is set.
//! 5. The version becomes HTTP/1.1 (or HTTP/2 for h2c) whatever the downstream spoke, and the
//!    downstream connection's request extensions are dropped.
//!
//! The response head gets the same hop-by-hop removal; status, other fields and the body
//! (`hyper::body::Incoming`, including any trailers) pass through untouched.
//!
//! # Streaming and memory
//!
//! The request body is polled only as fast as the upstream connection drains it, and the
//! response body is read from the socket only as fast as the caller polls it, so one forwarded
//! request holds at most hyper's per-connection buffers ([`UpstreamConfig::http1_max_buf_size`])
//! in the process, plus the kernel's socket buffers (autotuned up to `net.ipv4.tcp_wmem` /
//! `tcp_rmem`, or fixed with [`UpstreamConfig::tcp_send_buffer_size`] and
//! [`UpstreamConfig::tcp_recv_buffer_size`]), whatever the body sizes. The crate's streaming
//! test (`tests/streaming.rs`) moves 50 MiB up and 50 MiB down with about 1.5 MiB of process RSS
//! growth (its bound is 16 MiB), and shows that a sender to an upstream that stops reading
//! stops being polled after about 0.5 MiB.
//!
//! # Deadlines and cancellation
//!
//! The `timeout` given to `forward` covers everything up to the response head; past it the
//! result is [`UpstreamError::Timeout`] (504). Reading the response body afterwards is the
//! caller's to bound. Dropping a `forward` future, or the returned body, at any point is safe:
//! the connection in use is closed rather than returned to the pool half-used, which is also how
//! a downstream disconnect cancels the upstream request.
//!
//! # Not supported
//!
//! TLS to upstreams, protocol upgrades (`Upgrade` is removed, so no WebSocket), `CONNECT`, and
//! retries (the caller decides, using [`UpstreamError::is_retry_safe`]).

mod config;
mod connect;
mod error;
pub mod headers;
mod target;
mod upstream;

pub use config::*;
pub use error::{BoxError, UpstreamError};
pub use upstream::{ClientInfo, HttpUpstream, Scheme};
