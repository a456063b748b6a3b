//! The tonic peer of the RPC benchmark: `bench.Echo` over gRPC (HTTP/2), served by one
//! current-thread tokio runtime.
//!
//! Prints `LISTENING <addr>` once bound, then serves until killed.
//!
//! ```text
//! bench-tonic-server [--addr 127.0.0.1:0] [--max-concurrent-streams 1024]
//!                    [--connection-window-bytes N]
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use tideway_bench::tonic_echo::echo_server::{Echo, EchoServer};
use tideway_bench::tonic_echo::{EchoReply, EchoRequest, Empty, SleepRequest};
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

/// Command line.
#[derive(Debug, Parser)]
struct Args {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    addr: SocketAddr,
    /// HTTP/2 streams a connection may have open at once. hyper's default is 200; the benchmark
    /// matches Tideway's per-connection in-flight default (1024) so that concurrency 1000 is
    /// served, not queued in the client.
    #[arg(long, default_value_t = 1024)]
    max_concurrent_streams: u32,
    /// HTTP/2 connection-level receive window in bytes (hyper's default: 1 MiB). h2 also sizes
    /// its budget for small unconsumed DATA frames from it (half the window), and a burst of
    /// thousands of tiny requests exceeds the default budget (GOAWAY `too_many_data_frames`), so
    /// the pending-call measurement raises it.
    #[arg(long)]
    connection_window_bytes: Option<u32>,
}

/// Echoes payloads; sleeps on request.
#[derive(Debug, Default)]
struct EchoImpl;

#[tonic::async_trait]
impl Echo for EchoImpl {
    async fn echo(&self, request: Request<EchoRequest>) -> Result<Response<EchoReply>, Status> {
        let data = request.into_inner().data;
        Ok(Response::new(EchoReply { data }))
    }

    async fn sleep(&self, request: Request<SleepRequest>) -> Result<Response<Empty>, Status> {
        tokio::time::sleep(Duration::from_millis(request.into_inner().ms)).await;
        Ok(Response::new(Empty {}))
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tideway_bench::block_on_current_thread(serve(args))?
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(args.addr).await?;
    tideway_bench::announce_listening(listener.local_addr()?)?;
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    tonic::transport::Server::builder()
        .max_concurrent_streams(args.max_concurrent_streams)
        .initial_connection_window_size(args.connection_window_bytes)
        .add_service(EchoServer::new(EchoImpl))
        .serve_with_incoming(incoming)
        .await?;
    Ok(())
}
