//! The Tideway side of the RPC benchmark: `bench.Echo` served by one current-thread tokio
//! runtime.
//!
//! Prints `LISTENING <addr>` once bound, then serves until SIGTERM or Ctrl-C, when it shuts
//! down gracefully.
//!
//! ```text
//! bench-tideway-server [--addr 127.0.0.1:0] [--max-in-flight N]
//! ```

use std::net::SocketAddr;

use clap::Parser;
use tideway_bench::tideway_echo::{EchoImpl, EchoServer};
use tideway_rpc::{Server, ServerConfig};

/// Command line.
#[derive(Debug, Parser)]
struct Args {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    addr: SocketAddr,
    /// Raise both the per-connection and the total in-flight limit to this (the pending-call
    /// measurement holds more calls than the defaults allow). Unset: `ServerConfig` defaults.
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
    let handle = Server::builder()
        .config(config)
        .add_service(EchoServer::new(EchoImpl))
        .bind(args.addr)
        .await?;
    tideway_bench::announce_listening(handle.local_addr())?;
    tideway_bench::stop_signal(term).await;
    handle.shutdown().await;
    Ok(())
}
