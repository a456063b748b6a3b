//! Forwarding gateway requests to plain-HTTP upstream services, with pooled keep-alive
//! connections and bodies streamed in both directions, never buffered whole.
//!
//! The gateway (`tideway-gateway`) builds one [`HttpUpstream`] per configured upstream and calls
//! [`HttpUpstream::forward`] for each request routed to it. Everything about the downstream side
//! (routing, body size limits, memory budget, overload) stays in the gateway; this crate owns the
//! upstream side.
//!
//! # Two clients
//!
//! **HTTP/1.1** (the default) uses this crate's own client, driven entirely by the caller's
//! task, as Cloudflare's pingora drives its upstream `HttpSession`: the `forward` future writes
//! the request and reads the response head on the socket itself, and the returned
//! [`UpstreamBody`] owns the connection and reads the rest as the caller polls it. There is no
//! connection task and no channel between the caller and the socket, so a request costs no
//! task wake-ups beyond the socket's own readiness. It replaced hyper-util's legacy pooled
//! client, whose dispatch channel and per-connection task added two wake-ups per request.
//! Measured through the gateway (BENCHMARKS.md, HTTP run 5) the saving was small: the kernel's
//! share of each request dominates, and this client pays one `recv(MSG_PEEK)` per request to
//! check that a pooled connection is still open.
//!
//! It is hand-written because no maintained crate for tokio and the `http` types offers a
//! caller-driven HTTP/1 client with a pool: hyper's HTTP/1 client (and everything built on it:
//! hyper-util, reqwest) always puts a channel between the request sender and a connection
//! future that runs as its own task; pingora's session and connector types come with pingora's
//! runtime and server framework; the nearest fit, http-rs's `async-h1` with `http-client`'s
//! pooled backend, is built on async-std and `http-types`. What is hand-written is kept small
//! and sans-IO where it parses: response heads are parsed by `httparse` (hyper's parser),
//! `h1.rs` encodes request heads and decides body framing (RFC 9112 §6), and `chunked.rs`
//! decodes chunked bodies as a state machine (bytes in, events out), unit-tested over every
//! split of its input and fuzzed (`fuzz/`, targets `chunked_body` and, for the response-head
//! reader, `h1_response`; their bodies are the hidden `fuzzing` module, which
//! `tests/chunked_corpus.rs` and `tests/h1_response_corpus.rs` also run over the seed corpora).
//!
//! **h2c with prior knowledge** ([`UpstreamConfig::http2_prior_knowledge`]) stays on
//! hyper-util's client: one multiplexed connection per upstream, driven by hyper's task.
//!
//! # Pieces
//!
//! - [`UpstreamConfig`] (`config.rs`): base URL, timeouts, pool bounds; every default a
//!   `DEFAULT_*` const with its reason, and [`UpstreamConfig::validate`] rejecting zero and absurd
//!   values with an [`UpstreamConfigError`].
//! - [`HttpUpstream`] (`upstream.rs`): the forwarding function and header rewriting; picks the
//!   client.
//! - `client.rs`: the HTTP/1.1 exchange (write the request, read the head, hand the connection
//!   to the body); `body.rs`: [`UpstreamBody`] and [`UpstreamBodyError`]; `pool.rs`: idle
//!   connections; `connect.rs`: TCP connects (name resolution, connect timeout, `TCP_NODELAY`,
//!   socket buffer sizes) and the open-connections gauge ([`HttpUpstream::open_connections`]).
//! - `h1.rs`, `chunked.rs`: the HTTP/1.1 wire format, sans IO.
//! - [`UpstreamTunnel`] (`tunnel.rs`): a connection that switched protocols.
//! - [`headers`]: the header rules below, public so the gateway can reuse them. An HTTP/1.1
//!   request gets `Host` and `X-Forwarded-*` written by its encoder (`headers::Forwarding`);
//!   an HTTP/2 one in its map (`set_forwarded`); a test holds the two to the same fields.
//! - `target.rs`: joining the base URL's path with the path the gateway passes.
//! - [`clock`]: a coarse monotonic millisecond clock (pool idle ages, the gateway's connection
//!   activity) and coarse wall-clock seconds (`Date`): stamps taken on every request but only
//!   compared with timeouts of seconds.
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
//!    (the original host) replace whatever the client sent, and so does `X-Request-Id` when
//!    the caller gives one ([`ClientInfo::request_id`]).
//! 4. `Host` becomes the upstream's authority, or stays the client's when
//!    [`UpstreamConfig::preserve_host`] is set.
//! 5. The version becomes HTTP/1.1 (or HTTP/2 for h2c) whatever the downstream spoke, and the
//!    downstream connection's request extensions are dropped.
//! 6. HTTP/1.1 framing is this crate's: a body whose size is known (its `size_hint`) is sent
//!    with `Content-Length` (none for an empty GET, HEAD, DELETE, OPTIONS or TRACE); one whose
//!    size is not known, with the client's `Content-Length` if it sent a valid one, else
//!    chunked. Request trailers are dropped.
//!
//! The response head gets the same hop-by-hop removal; status, other fields and the body
//! (including trailers of a chunked body) pass through untouched. Interim 1xx responses are
//! skipped; `101 Switching Protocols` is an error. A custom reason phrase is not kept.
//!
//! # Switching protocols (WebSocket)
//!
//! [`HttpUpstream::forward_as_is_switching`] forwards a request that asks to switch protocols
//! with its `Upgrade` field kept (and `Connection: upgrade`). A `101` answer is then final: its
//! head keeps `Upgrade` and `Connection: upgrade`, and its body holds the connection as an
//! [`UpstreamTunnel`] ([`UpstreamBody::take_tunnel`]): raw bytes both ways from there, never
//! pooled. Which protocols may be switched to is the caller's choice. HTTP/1.1 upstreams only.
//!
//! # HTTP/1.1 connections
//!
//! - Idle keep-alive connections wait in a bounded per-upstream pool
//!   ([`UpstreamConfig::pool_max_idle_per_host`]; [`HttpUpstream::idle_connections`]); the most
//!   recently used one is taken first. Before reuse it is checked without blocking (a
//!   non-blocking `MSG_PEEK`): closed by the upstream, carrying stray bytes, or idle longer than
//!   [`UpstreamConfig::pool_idle_timeout`], it is closed instead. There is no reaper task, so
//!   idle connections are checked when found: with no traffic, up to the pool bound of them may
//!   stay open (or half-closed by the upstream) until the next request.
//! - A connection goes back to the pool only when its response was read to the end, the
//!   request was sent whole, the response was HTTP/1.1 without `Connection: close`, its body
//!   was delimited by length or chunks, and nothing followed it. Anything else closes it.
//! - A stale pooled connection: when an upstream closes an idle connection just as a request is
//!   written to it, the request fails before any response byte. If the request was sent whole
//!   from memory (a body of known size up to 16 KiB) and its method is idempotent (GET, HEAD,
//!   OPTIONS, PUT, DELETE, TRACE), it is sent once more on a new connection, as hyper and
//!   browsers do; otherwise the failure is reported ([`UpstreamError::Disconnected`], not
//!   retry-safe).
//! - The upstream may answer before it has read the whole request body (e.g. 413): the head is
//!   read while the body is being sent, the response is returned at once, and the rest of the
//!   body goes on being sent as the response body is polled (full duplex, as hyper does); a
//!   connection whose request was not sent whole is never reused.
//!
//! # Streaming and memory
//!
//! The request body is polled only as fast as the upstream connection drains it (each frame is
//! written whole before the next is polled), and the response body is read from the socket
//! only as fast as the caller polls it, at most 64 KiB (and at most
//! [`UpstreamConfig::http1_max_buf_size`]) per poll, so one forwarded request holds at most a
//! frame each way and the response head (at most `http1_max_buf_size`) in the process, plus the
//! kernel's socket buffers (autotuned up to `net.ipv4.tcp_wmem` / `tcp_rmem`, or fixed with
//! [`UpstreamConfig::tcp_send_buffer_size`] and [`UpstreamConfig::tcp_recv_buffer_size`]),
//! whatever the body sizes. A response waiting for its next bytes holds no read buffer.
//! Bodies of known size up to 16 KiB are collected before the request is sent, so that the
//! head and body go out in one `write`. The crate's streaming test (`tests/streaming.rs`) moves
//! 50 MiB up and 50 MiB down with about 1.5 MiB of process RSS growth (its bound is 16 MiB),
//! and shows that a sender to an upstream that stops reading stops being polled after about
//! 0.5 MiB.
//!
//! # Deadlines and cancellation
//!
//! The `timeout` given to `forward` covers everything up to the response head (collecting a
//! small body, pool checkout, connect, writing, reading the head); past it the result is
//! [`UpstreamError::Timeout`] (504). Reading the response body afterwards is the caller's to
//! bound. Dropping a `forward` future, or the returned body, at any point is safe: the
//! connection in use is closed rather than returned to the pool half-used, which is also how a
//! downstream disconnect cancels the upstream request.
//!
//! # Not supported
//!
//! TLS to upstreams, protocol upgrades other than through `forward_as_is_switching`, `CONNECT`,
//! request trailers over HTTP/1.1, and retries beyond the one stale-connection case above (the
//! caller decides, using [`UpstreamError::is_retry_safe`]).

mod body;
mod chunked;
mod client;
pub mod clock;
mod config;
mod connect;
mod error;
#[doc(hidden)]
pub mod fuzzing;
mod h1;
pub mod headers;
mod pool;
mod target;
mod tunnel;
mod upstream;

pub use body::{UpstreamBody, UpstreamBodyError};
pub use config::*;
pub use error::{BoxError, UpstreamError};
pub use tunnel::UpstreamTunnel;
pub use upstream::{ClientInfo, HttpUpstream, Scheme};
