//! Load generator of the RPC benchmark: drives `bench.Echo` on a Tideway or a tonic server over
//! one shared connection and prints one JSON line of results.
//!
//! Two modes:
//!
//! - Throughput (default): `--concurrency N` tasks each loop `echo` calls with a `--payload`-byte
//!   payload for `--warmup-secs`, then for `--duration-secs` while latencies go into a per-task
//!   HDR histogram (merged at the end). With `--server-pid`, the server's CPU time (utime+stime
//!   from `/proc/PID/stat`) is read at the start and end of the measured window only.
//! - Pending (`--pending N`): N `sleep` calls of `--hold-secs` are started at once and
//!   `--sample-after-secs` later, while they are all held by the server, the resident memory of
//!   this process (and of `--server-pid`) is compared with what it was before they started.
//!
//! Runs on one current-thread runtime: the harness pins it to one core with `taskset`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use clap::{Parser, ValueEnum};
use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use hdrhistogram::Histogram;
use serde_bytes::ByteBuf;
use serde_json::json;
use tideway_bench::procfs;
use tideway_bench::tideway_echo::EchoClient as TidewayEchoClient;
use tideway_bench::tonic_echo::echo_client::EchoClient as TonicEchoClient;
use tideway_bench::tonic_echo::{EchoRequest, SleepRequest};
use tideway_rpc::{Client, ClientConfig, Codec};
use tonic::transport::{Channel, Endpoint};

/// Command line.
#[derive(Debug, Parser)]
struct Args {
    /// Which server speaks at `--addr`.
    #[arg(long, value_enum)]
    target: Target,
    /// The server's address.
    #[arg(long)]
    addr: SocketAddr,
    /// Calls kept in flight at once (throughput mode).
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Length of the measured window, after the warm-up.
    #[arg(long, default_value_t = 5.0)]
    duration_secs: f64,
    /// Load before the measured window starts.
    #[arg(long, default_value_t = 1.0)]
    warmup_secs: f64,
    /// Payload bytes per echo call.
    #[arg(long, default_value_t = 1024)]
    payload: usize,
    /// The server's process id: its CPU time (throughput mode) or resident memory (pending mode)
    /// is reported too.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Pending mode: start this many `sleep` calls at once.
    #[arg(long)]
    pending: Option<usize>,
    /// Pending mode: how long the server holds each call.
    #[arg(long, default_value_t = 5.0)]
    hold_secs: f64,
    /// Pending mode: when, after the calls were started, memory is sampled.
    #[arg(long, default_value_t = 2.0)]
    sample_after_secs: f64,
    /// Raise the client's limit of calls in flight on the connection (Tideway:
    /// `ClientConfig::max_in_flight_per_connection`; tonic: the channel's request buffer).
    #[arg(long)]
    max_in_flight: Option<usize>,
}

/// The server implementations the benchmark knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Target {
    /// Tideway RPC, MessagePack payloads.
    Tideway,
    /// tonic gRPC over HTTP/2, protobuf payloads.
    Tonic,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Tideway => "tideway",
            Target::Tonic => "tonic",
        }
    }
}

/// A handle on the one connection; each task owns a clone.
#[derive(Debug, Clone)]
enum Caller {
    Tideway(TidewayEchoClient),
    Tonic(TonicEchoClient<Channel>),
}

impl Caller {
    async fn connect(args: &Args) -> anyhow::Result<Caller> {
        match args.target {
            Target::Tonic => {
                let mut endpoint =
                    Endpoint::from_shared(format!("http://{}", args.addr))?.tcp_nodelay(true);
                if let Some(n) = args.max_in_flight {
                    endpoint = endpoint.buffer_size(n);
                }
                let channel = endpoint.connect().await.context("connecting to tonic")?;
                Ok(Caller::Tonic(TonicEchoClient::new(channel)))
            }
            Target::Tideway => {
                let mut config = ClientConfig {
                    codec: Codec::MsgPack,
                    ..ClientConfig::default()
                };
                if let Some(n) = args.max_in_flight {
                    config.max_in_flight_per_connection = n;
                }
                // Held calls must not time out: give them twice the hold time (at least).
                config.default_timeout = config
                    .default_timeout
                    .max(Duration::from_secs_f64(args.hold_secs * 2.0));
                let client = Client::new(args.addr, config)?;
                Ok(Caller::Tideway(TidewayEchoClient::new(client)))
            }
        }
    }

    /// One echo call; returns the length of the echoed payload.
    async fn echo(&mut self, payload: &Bytes) -> anyhow::Result<usize> {
        match self {
            Caller::Tideway(client) => {
                // The typed client takes the payload by value, as a service author would call it.
                let reply = client.echo(ByteBuf::from(payload.to_vec())).await?;
                Ok(reply.len())
            }
            Caller::Tonic(client) => {
                let reply = client
                    .echo(EchoRequest {
                        data: payload.clone(),
                    })
                    .await?;
                Ok(reply.into_inner().data.len())
            }
        }
    }

    /// One call the server holds for `ms` milliseconds.
    async fn sleep(&mut self, ms: u64) -> anyhow::Result<()> {
        match self {
            Caller::Tideway(client) => Ok(client.sleep(ms).await?),
            Caller::Tonic(client) => {
                client.sleep(SleepRequest { ms }).await?;
                Ok(())
            }
        }
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(async {
        match args.pending {
            Some(n) => pending(&args, n).await,
            None => throughput(&args).await,
        }
    })?;
    println!("{report}");
    Ok(())
}

/// Phases of a throughput run; tasks record only calls that complete in `MEASURE`.
const WARMUP: u8 = 0;
const MEASURE: u8 = 1;
const STOP: u8 = 2;

/// Latencies are recorded in nanoseconds up to this bound (longer ones saturate at it), with
/// three significant digits.
const HISTOGRAM_MAX_NS: u64 = 10_000_000_000;

/// What one task saw in the measured window.
#[derive(Debug)]
struct TaskResult {
    latencies_ns: Histogram<u64>,
    errors: u64,
    first_error: Option<String>,
}

async fn throughput(args: &Args) -> anyhow::Result<serde_json::Value> {
    anyhow::ensure!(args.concurrency > 0, "--concurrency must be at least 1");
    let caller = Caller::connect(args).await?;
    let payload = Bytes::from(vec![0xa5u8; args.payload]);
    // One call before the tasks start, so that a dead server fails fast and the connection is up.
    let echoed = caller.clone().echo(&payload).await.context("first call")?;
    anyhow::ensure!(echoed == args.payload, "echo returned {echoed} bytes");

    let phase = Arc::new(AtomicU8::new(WARMUP));
    let tasks: Vec<_> = (0..args.concurrency)
        .map(|_| tokio::spawn(call_loop(caller.clone(), payload.clone(), phase.clone())))
        .collect();

    let clk_tck = procfs::clock_ticks_per_sec()?;
    let me = std::process::id();
    tokio::time::sleep(Duration::from_secs_f64(args.warmup_secs)).await;
    let server_ticks_0 = args.server_pid.map(procfs::cpu_ticks).transpose()?;
    let client_ticks_0 = procfs::cpu_ticks(me)?;
    let t0 = Instant::now();
    phase.store(MEASURE, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs_f64(args.duration_secs)).await;
    phase.store(STOP, Ordering::Relaxed);
    let secs = t0.elapsed().as_secs_f64();
    let server_ticks_1 = args.server_pid.map(procfs::cpu_ticks).transpose()?;
    let client_ticks_1 = procfs::cpu_ticks(me)?;

    let mut latencies = new_histogram()?;
    let mut errors = 0;
    for task in tasks {
        let result = task.await?;
        latencies.add(&result.latencies_ns)?;
        errors += result.errors;
        if let Some(e) = result.first_error
            && errors == result.errors
        {
            eprintln!("bench-rpc-load: first error: {e}");
        }
    }
    let calls = latencies.len();
    let us = |q: f64| latencies.value_at_quantile(q) as f64 / 1000.0;
    let server_cpu_s = server_ticks_0
        .zip(server_ticks_1)
        .map(|(a, b)| (b - a) as f64 / clk_tck as f64);
    let client_cpu_s = (client_ticks_1 - client_ticks_0) as f64 / clk_tck as f64;
    Ok(json!({
        "mode": "throughput",
        "target": args.target.name(),
        "concurrency": args.concurrency,
        "payload": args.payload,
        "calls": calls,
        "errors": errors,
        "secs": secs,
        "calls_per_s": calls as f64 / secs,
        "p50_us": us(0.50),
        "p99_us": us(0.99),
        "p999_us": us(0.999),
        "max_us": latencies.max() as f64 / 1000.0,
        "server_cpu_s": server_cpu_s,
        "server_calls_per_cpu_s": server_cpu_s.filter(|&c| c > 0.0).map(|c| calls as f64 / c),
        "client_cpu_s": client_cpu_s,
        "clk_tck": clk_tck,
    }))
}

fn new_histogram() -> anyhow::Result<Histogram<u64>> {
    Ok(Histogram::new_with_bounds(1, HISTOGRAM_MAX_NS, 3)?)
}

async fn call_loop(mut caller: Caller, payload: Bytes, phase: Arc<AtomicU8>) -> TaskResult {
    let mut result = TaskResult {
        latencies_ns: new_histogram().expect("static histogram bounds are valid"),
        errors: 0,
        first_error: None,
    };
    loop {
        if phase.load(Ordering::Relaxed) == STOP {
            return result;
        }
        let start = Instant::now();
        let outcome = caller.echo(&payload).await;
        let elapsed = start.elapsed();
        if phase.load(Ordering::Relaxed) != MEASURE {
            continue;
        }
        match outcome {
            Ok(n) if n == payload.len() => {
                let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
                result.latencies_ns.saturating_record(ns);
            }
            Ok(n) => {
                result.errors += 1;
                result
                    .first_error
                    .get_or_insert_with(|| format!("echo returned {n} bytes"));
            }
            Err(e) => {
                result.errors += 1;
                result.first_error.get_or_insert_with(|| format!("{e:#}"));
            }
        }
    }
}

async fn pending(args: &Args, n: usize) -> anyhow::Result<serde_json::Value> {
    let caller = Caller::connect(args).await?;
    // Bring the connection and both ends' per-call paths up before the baseline is taken.
    caller.clone().sleep(0).await.context("first call")?;
    let payload = Bytes::from(vec![0xa5u8; args.payload]);
    caller.clone().echo(&payload).await.context("first echo")?;
    tokio::time::sleep(Duration::from_millis(200)).await;

    let me = std::process::id();
    let server_rss = || args.server_pid.map(procfs::rss_bytes).transpose();
    let client_before = procfs::rss_bytes(me)?;
    let server_before = server_rss()?;

    let hold_ms = (args.hold_secs * 1000.0) as u64;
    let started = Instant::now();
    let mut calls: FuturesUnordered<_> = (0..n)
        .map(|_| {
            let mut c = caller.clone();
            async move { c.sleep(hold_ms).await }
        })
        .collect();
    let sample_at = tokio::time::sleep(Duration::from_secs_f64(args.sample_after_secs));
    tokio::pin!(sample_at);
    let mut sample = None;
    let (mut ok, mut errors, mut first_error) = (0usize, 0usize, None);
    loop {
        tokio::select! {
            () = &mut sample_at, if sample.is_none() => {
                sample = Some((procfs::rss_bytes(me)?, server_rss()?, ok + errors));
            }
            done = calls.next() => match done {
                Some(Ok(())) => ok += 1,
                Some(Err(e)) => {
                    errors += 1;
                    first_error.get_or_insert_with(|| format!("{e:#}"));
                }
                None => break,
            }
        }
    }
    let all_done_secs = started.elapsed().as_secs_f64();
    if let Some(e) = &first_error {
        eprintln!("bench-rpc-load: first error: {e}");
    }
    let (client_during, server_during, completed_before_sample) =
        sample.context("the calls ended before memory was sampled; raise --hold-secs")?;
    let per_call = |before: u64, during: u64| (during as f64 - before as f64) / n as f64;
    Ok(json!({
        "mode": "pending",
        "target": args.target.name(),
        "pending": n,
        "hold_secs": args.hold_secs,
        "ok": ok,
        "errors": errors,
        "completed_before_sample": completed_before_sample,
        "all_done_secs": all_done_secs,
        "client_rss_before": client_before,
        "client_rss_during": client_during,
        "client_bytes_per_pending_call": per_call(client_before, client_during),
        "server_rss_before": server_before,
        "server_rss_during": server_during,
        "server_bytes_per_pending_call": server_before
            .zip(server_during)
            .map(|(b, d)| per_call(b, d)),
    }))
}
