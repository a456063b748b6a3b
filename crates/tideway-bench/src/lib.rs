//! Benchmarks of Tideway against its peers: the servers and the load generator that
//! `scripts/bench` runs.
//!
//! # Binaries
//!
//! - `bench-tideway-server`: a Tideway `bench.Echo` server on one current-thread runtime.
//! - `bench-tonic-server`: the same service over gRPC with tonic, also on one current-thread
//!   runtime; the peer Tideway is compared with.
//! - `bench-rpc-load`: the load generator. One connection, N tasks each looping calls, latencies
//!   in an HDR histogram; or N calls held pending to measure memory per pending call.
//! - `bench-http-backend`: a plain hyper HTTP/1.1 server answering `GET /api/item` with a small
//!   JSON document: the upstream nginx and the gateway proxy to in `scripts/bench http`.
//! - `bench-items-server`: the `bench.Items` RPC service answering the same document, which the
//!   gateway routes to; also on one current-thread runtime.
//! - `bench-slow-server`: the `bench.Slow` RPC service of the overload benchmark and the soak
//!   (answer at once, after a delay, or with an error), counting its handlers in flight and
//!   serving the counts at `GET /stats` on a second port.
//! - `bench-dead-host`: accepts TCP connections and never reads from them or answers: a hung
//!   service.
//! - `bench-http-load`: an HTTP/1.1 load generator holding N keep-alive connections, with a
//!   per-request client timeout (it gives up by closing the connection), a duration or a
//!   request count, and latency percentiles per response status.
//! - `bench-sampler`: samples VmRSS of processes, the gateway's `/metrics` and a `/stats`
//!   endpoint at a fixed interval and writes them as CSV.
//!
//! Every server prints `LISTENING <addr>` as its first line on stdout, so the harness can start
//! it on port 0 and learn the port.
//!
//! # Library
//!
//! What the binaries share: the generated tonic code ([`tonic_echo`]), the Tideway service traits
//! ([`tideway_echo`], [`items`], [`slow`]), readers of `/proc` ([`procfs`]), the kernel's receive
//! timestamps ([`wire_clock`]), the `/stats`
//! endpoint ([`stats`]) and a listener with a deep accept queue ([`bind_with_backlog`]).

use std::io::Write;
use std::net::SocketAddr;

pub mod items;
pub mod procfs;
pub mod slow;
pub mod stats;
pub mod tideway_echo;
pub mod wire_clock;

/// Accept queue of the bench servers' listeners. tokio's `TcpListener::bind` uses 1024, and
/// std's 128: when 2,000 clients (or nginx's 2,000 upstream connections) connect at once, a short
/// queue drops SYNs and costs the clients a 1 s retransmit, which would show up as latency of the
/// process under test. The kernel caps it at `net.core.somaxconn`.
pub const LISTEN_BACKLOG: u32 = 4096;

/// Binds a TCP listener on `addr` with an accept queue of `backlog` connections.
pub fn bind_with_backlog(
    addr: SocketAddr,
    backlog: u32,
) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// The tonic client and server generated from `proto/echo.proto`.
#[allow(
    missing_docs,
    unreachable_pub,
    missing_debug_implementations,
    clippy::all
)]
pub mod tonic_echo {
    tonic::include_proto!("bench");
}

/// Prints the line the harness waits for, `LISTENING <addr>`, and flushes it.
pub fn announce_listening(addr: SocketAddr) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "LISTENING {addr}")?;
    out.flush()
}

/// Runs `fut` on a current-thread runtime: every bench process is one thread, so a process's CPU
/// time is one core's worth of work.
pub fn block_on_current_thread<F: std::future::Future>(fut: F) -> std::io::Result<F::Output> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    Ok(runtime.block_on(fut))
}

/// Resolves on SIGTERM (the harness stops servers with it) or Ctrl-C. Registered before the
/// server announces itself, so an early signal is not lost.
pub async fn stop_signal(mut term: tokio::signal::unix::Signal) {
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// The SIGTERM handler for [`stop_signal`].
pub fn register_sigterm() -> std::io::Result<tokio::signal::unix::Signal> {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
}
