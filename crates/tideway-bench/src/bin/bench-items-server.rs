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
use tokio::signal::unix::{SignalKind, signal};

/// Command line.
#[derive(Debug, Parser)]
struct Args {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    addr: SocketAddr,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(serve(args))
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let handle = Server::builder()
        .config(ServerConfig::default())
        .add_service(ItemsServer::new(ItemsImpl::default()))
        .bind(args.addr)
        .await?;
    tideway_bench::announce_listening(handle.local_addr())?;
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    handle.shutdown().await;
    Ok(())
}
