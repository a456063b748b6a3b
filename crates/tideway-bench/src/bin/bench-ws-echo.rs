//! The WebSocket server of the WebSocket benchmark: accepts every handshake (tungstenite) and
//! sends every text or binary message back, on one current-thread runtime. It is what nginx
//! and the gateway proxy to.
//!
//! Prints `LISTENING <addr>` once bound, then serves until SIGTERM or Ctrl-C.
//!
//! ```text
//! bench-ws-echo [--addr 127.0.0.1:0]
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use futures::{SinkExt as _, StreamExt as _};
use tokio::signal::unix::{SignalKind, signal};

/// Pause after a failed accept (such as running out of file descriptors), so the loop does not
/// spin.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// Command line.
#[derive(Debug, Parser)]
struct Args {
    /// Where to listen.
    #[arg(long, default_value = "127.0.0.1:0")]
    addr: SocketAddr,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(serve(args))
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(args.addr).await?;
    println!("LISTENING {}", listener.local_addr()?);
    let mut term = signal(SignalKind::terminate())?;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = term.recv() => return Ok(()),
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                eprintln!("accept failed: {e}");
                tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                return;
            };
            while let Some(Ok(msg)) = ws.next().await {
                if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                    return;
                }
            }
        });
    }
}
