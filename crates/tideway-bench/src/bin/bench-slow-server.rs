//! The service behind the gateway in the overload benchmark and the soak: `bench.Slow` (`fast`,
//! `delay`, `fail`) served by one current-thread tokio runtime, with its handler counters (in
//! flight, peak, started, completed, cancelled) as JSON at `GET /stats` on a second port.
//!
//! Prints `LISTENING <rpc addr>` and then `STATS <stats addr>` once bound, then serves until
//! SIGTERM or Ctrl-C, when it shuts down gracefully.
//!
//! ```text
//! bench-slow-server [--addr 127.0.0.1:0] [--stats-addr 127.0.0.1:0] [--max-in-flight N]
//! ```

use std::io::Write as _;
use std::net::SocketAddr;

use clap::Parser;
use tideway_bench::slow::{SlowImpl, SlowServer};
use tideway_rpc::{Server, ServerConfig};

/// Command line.
#[derive(Debug, Parser)]
struct Args {
    /// Address of the RPC listener; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    addr: SocketAddr,
    /// Address of the `/stats` HTTP listener; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    stats_addr: SocketAddr,
    /// Raise (or lower) both the per-connection and the total in-flight limit of the RPC server.
    /// Unset: `ServerConfig` defaults (1024 per connection, 10,000 in all).
    #[arg(long)]
    max_in_flight: Option<usize>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tideway_bench::block_on_current_thread(serve(args))?
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let mut config = ServerConfig::default();
    if let Some(n) = args.max_in_flight {
        config.max_in_flight_per_connection = n;
        config.max_in_flight_total = n;
    }
    let term = tideway_bench::register_sigterm()?;
    let service = SlowImpl::default();
    let counters = service.counters();
    let stats_listener =
        tideway_bench::bind_with_backlog(args.stats_addr, tideway_bench::LISTEN_BACKLOG)?;
    let stats_addr = stats_listener.local_addr()?;
    let handle = Server::builder()
        .config(config)
        .add_service(SlowServer::new(service))
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
