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
//!
//! Every server prints `LISTENING <addr>` as its first line on stdout, so the harness can start
//! it on port 0 and learn the port.
//!
//! # Library
//!
//! What the binaries share: the generated tonic code ([`tonic_echo`]), the Tideway service traits
//! ([`tideway_echo`], [`items`]) and readers of `/proc` ([`procfs`]).

use std::io::Write;
use std::net::SocketAddr;

pub mod items;
pub mod procfs;
pub mod tideway_echo;

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
