//! A hung service: accepts TCP connections and holds them, never reading from them or writing
//! to them. What a caller sees is a peer whose process is alive but stuck: connects succeed,
//! requests go into the socket buffers, and no answer ever comes.
//!
//! Prints `LISTENING <addr>` once bound, then holds connections until SIGTERM or Ctrl-C. Past
//! `--max-held` connections the oldest is closed, so the process stays bounded.
//!
//! ```text
//! bench-dead-host [--addr 127.0.0.1:0] [--max-held N]
//! ```

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;

/// Pause after a failed accept (such as running out of file descriptors).
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// Command line.
#[derive(Debug, Parser)]
struct Args {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    addr: SocketAddr,
    /// Connections held at most; the oldest is closed to make room for a new one.
    #[arg(long, default_value_t = 10_000)]
    max_held: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tideway_bench::block_on_current_thread(serve(args))?
}

async fn serve(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(args.max_held > 0, "--max-held must be at least 1");
    let term = tideway_bench::register_sigterm()?;
    let listener = tideway_bench::bind_with_backlog(args.addr, tideway_bench::LISTEN_BACKLOG)?;
    tideway_bench::announce_listening(listener.local_addr()?)?;
    let mut held = VecDeque::new();
    let stop = tideway_bench::stop_signal(term);
    tokio::pin!(stop);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut stop => return Ok(()),
        };
        match accepted {
            Ok((stream, _)) => {
                if held.len() == args.max_held {
                    held.pop_front();
                }
                held.push_back(stream);
            }
            Err(e) => {
                eprintln!("bench-dead-host: accept failed: {e}");
                tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
            }
        }
    }
}
