//! One instance of the `bench.Lb` RPC service of the load-balancing benchmark
//! (`scripts/bench lb`): `work(key)` answers after this instance's `--delay-ms`, so three
//! processes started with different delays are three instances of one service of which some are
//! slow. The answer names the instance, and the handler counters (in flight, started,
//! completed, cancelled) are served as JSON at `GET /stats` on a second port.
//!
//! Prints `LISTENING <rpc addr>` and then `STATS <stats addr>` once bound, then serves until
//! SIGTERM or Ctrl-C, when it shuts down gracefully: it stops accepting, sends GoAway on every
//! connection, lets the calls in flight finish (within the drain timeout) and exits. It binds
//! with `SO_REUSEADDR`, so a restarted instance can take the same port at once.
//!
//! ```text
//! bench-lb --name a --addr 127.0.0.1:0 [--delay-ms 0] [--stats-addr 127.0.0.1:0]
//! ```

use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use serde::{Deserialize, Serialize};
use tideway_bench::slow::SlowCounters;
use tideway_rpc::{RpcError, Server, ServerConfig};

/// Longest `--delay-ms` accepted: the deadline of the calls bounds the work anyway.
const MAX_DELAY_MS: u64 = 60_000;
/// Longest key accepted from a call; a longer one is `InvalidArgument`.
const MAX_KEY_BYTES: usize = 256;

/// The answer of `work`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    /// The instance that answered (`--name`).
    pub instance: String,
    /// The key of the call, echoed.
    pub key: String,
}

/// The service the gateway balances over.
#[tideway_macros::service(name = "bench.Lb")]
pub trait Lb {
    /// Answers after the instance's delay.
    async fn work(&self, key: String) -> Result<Reply, RpcError>;
}

/// One instance: its name, its delay and its handler counters.
#[derive(Debug, Clone)]
struct LbImpl {
    name: Arc<str>,
    delay: Duration,
    counters: Arc<SlowCounters>,
}

impl Lb for LbImpl {
    async fn work(&self, key: String) -> Result<Reply, RpcError> {
        let guard = self.counters.enter();
        if key.len() > MAX_KEY_BYTES {
            guard.finish();
            return Err(RpcError::invalid_argument(format!(
                "key: at most {MAX_KEY_BYTES} bytes"
            )));
        }
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        guard.finish();
        Ok(Reply {
            instance: self.name.to_string(),
            key,
        })
    }
}

/// Command line.
#[derive(Debug, Parser)]
struct Args {
    /// Name of this instance, echoed in every answer.
    #[arg(long)]
    name: String,
    /// Address of the RPC listener; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    addr: SocketAddr,
    /// Every call is answered after this many milliseconds.
    #[arg(long, default_value_t = 0)]
    delay_ms: u64,
    /// Address of the `/stats` HTTP listener; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    stats_addr: SocketAddr,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        args.delay_ms <= MAX_DELAY_MS,
        "--delay-ms: at most {MAX_DELAY_MS}"
    );
    tideway_bench::block_on_current_thread(serve(args))?
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let term = tideway_bench::register_sigterm()?;
    let counters = Arc::new(SlowCounters::default());
    let service = LbImpl {
        name: args.name.into(),
        delay: Duration::from_millis(args.delay_ms),
        counters: Arc::clone(&counters),
    };
    let stats_listener =
        tideway_bench::bind_with_backlog(args.stats_addr, tideway_bench::LISTEN_BACKLOG)?;
    let stats_addr = stats_listener.local_addr()?;
    let handle = Server::builder()
        .config(ServerConfig::default())
        .add_service(LbServer::new(service))
        .bind(args.addr)
        .await?;
    tokio::spawn(tideway_bench::stats::serve_stats(
        stats_listener,
        move || serde_json::to_string(&counters.snapshot()).expect("counters always serialize"),
    ));
    tideway_bench::announce_listening(handle.local_addr())?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "STATS {stats_addr}")?;
        out.flush()?;
    }
    tideway_bench::stop_signal(term).await;
    handle.shutdown().await;
    Ok(())
}
