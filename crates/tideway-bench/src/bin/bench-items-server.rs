//! The RPC service behind the gateway in the HTTP benchmark: `bench.Items` served by one
//! current-thread tokio runtime.
//!
//! Prints `LISTENING <addr>` once bound, then serves until SIGTERM or Ctrl-C, when it shuts
//! down gracefully.
//!
//! ```text
//! bench-items-server [--addr 127.0.0.1:0]
//! ```

use std::net::SocketAddr;

use clap::Parser;
use tideway_bench::items::{ItemsImpl, ItemsServer};
use tideway_rpc::{Server, ServerConfig};

/// Command line.
#[derive(Debug, Parser)]
struct Args {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    addr: SocketAddr,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tideway_bench::block_on_current_thread(serve(args))?
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let term = tideway_bench::register_sigterm()?;
    let handle = Server::builder()
        .config(ServerConfig::default())
        .add_service(ItemsServer::new(ItemsImpl::default()))
        .bind(args.addr)
        .await?;
    tideway_bench::announce_listening(handle.local_addr())?;
    tideway_bench::stop_signal(term).await;
    handle.shutdown().await;
    Ok(())
}
