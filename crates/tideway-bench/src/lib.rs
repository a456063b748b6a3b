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
