//! WebSocket load generator of the WebSocket benchmark (tungstenite clients on one
//! current-thread runtime; the harness pins it to a core).
//!
//! - Ping-pong (default): `--connections` WebSockets to `--url`, each sending one binary
//!   message of `--message-bytes` and waiting for its echo before the next, for
//!   `--duration-secs`. Prints one JSON line: messages echoed, seconds, latency percentiles
//!   (microseconds, from just before the send to the echo's arrival), errors.
//! - Idle (`--idle N`): opens N WebSockets (each echoes one message first, so the tunnel has
//!   carried data both ways), prints `OPEN <n>` and holds them for `--hold-secs`, then prints
//!   one JSON line (opened, failed, closed by the other side meanwhile).
//!
//! ```text
//! bench-ws-load --url ws://127.0.0.1:8080/ws/echo --connections 64 --duration-secs 5
//! bench-ws-load --url ws://127.0.0.1:8080/ws/echo --idle 2000 --hold-secs 20
//! ```

use std::io::Write as _;
use std::net::ToSocketAddrs as _;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use futures::{SinkExt as _, StreamExt as _};
use hdrhistogram::Histogram;
use serde_json::json;
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

/// Latencies are recorded in microseconds up to this bound, with three significant digits.
const HISTOGRAM_MAX_US: u64 = 60_000_000;
/// Handshakes in progress at once in idle mode.
const OPENING_AT_ONCE: usize = 64;

/// Command line.
#[derive(Debug, Parser)]
struct Args {
    /// `ws://host:port/path` (a proxy's address).
    #[arg(long)]
    url: String,
    /// WebSockets in ping-pong mode.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Length of the ping-pong run.
    #[arg(long, default_value_t = 5.0)]
    duration_secs: f64,
    /// Size of each message.
    #[arg(long, default_value_t = 128)]
    message_bytes: usize,
    /// Idle mode: open this many WebSockets and hold them.
    #[arg(long)]
    idle: Option<usize>,
    /// Idle mode: how long to hold them.
    #[arg(long, default_value_t = 20.0)]
    hold_secs: f64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let uri: http::Uri = args.url.parse().context("--url")?;
    let authority = uri.authority().context("--url has no host:port")?.as_str();
    let addr = authority
        .to_socket_addrs()?
        .next()
        .context("--url's host resolves to nothing")?;
    let open = move || {
        let url = args.url.clone();
        async move {
            let stream = TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            let (ws, _) = tokio_tungstenite::client_async(url, stream).await?;
            anyhow::Ok(ws)
        }
    };
    let message = Message::binary(vec![0x5a; args.message_bytes]);
    match args.idle {
        Some(n) => idle(n, Duration::from_secs_f64(args.hold_secs), open, message).await,
        None => {
            ping_pong(
                args.connections,
                Duration::from_secs_f64(args.duration_secs),
                open,
                message,
            )
            .await
        }
    }
}

/// One echo of `message` on `ws`: the time it took.
async fn echo(ws: &mut WebSocketStream<TcpStream>, message: &Message) -> anyhow::Result<Duration> {
    let sent = Instant::now();
    ws.send(message.clone()).await?;
    loop {
        match ws.next().await.context("closed by the other side")?? {
            Message::Binary(b) if b.len() == message.len() => return Ok(sent.elapsed()),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => anyhow::bail!("unexpected message: {other:?}"),
        }
    }
}

async fn ping_pong<F, Fut>(
    connections: usize,
    duration: Duration,
    open: F,
    message: Message,
) -> anyhow::Result<()>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<WebSocketStream<TcpStream>>>,
{
    let mut sockets = Vec::with_capacity(connections);
    for _ in 0..connections {
        sockets.push(open().await?);
    }
    let started = Instant::now();
    let end = started + duration;
    let workers = sockets.into_iter().map(|mut ws| {
        let message = message.clone();
        async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1, HISTOGRAM_MAX_US, 3)?;
            let mut errors = 0u64;
            while Instant::now() < end {
                match echo(&mut ws, &message).await {
                    Ok(took) => hist.saturating_record(took.as_micros() as u64),
                    Err(_) => {
                        errors += 1;
                        break;
                    }
                }
            }
            let _ = ws.close(None).await;
            anyhow::Ok((hist, errors))
        }
    });
    let results = futures::future::join_all(workers).await;
    let secs = started.elapsed().as_secs_f64();
    let mut hist = Histogram::<u64>::new_with_bounds(1, HISTOGRAM_MAX_US, 3)?;
    let mut errors = 0;
    for r in results {
        let (h, e) = r?;
        hist.add(h)?;
        errors += e;
    }
    println!(
        "{}",
        json!({
            "messages": hist.len(),
            "secs": secs,
            "p50_us": hist.value_at_quantile(0.5),
            "p99_us": hist.value_at_quantile(0.99),
            "max_us": hist.max(),
            "errors": errors,
        })
    );
    Ok(())
}

async fn idle<F, Fut>(n: usize, hold: Duration, open: F, message: Message) -> anyhow::Result<()>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<WebSocketStream<TcpStream>>>,
{
    let opened: Vec<anyhow::Result<WebSocketStream<TcpStream>>> = futures::stream::iter(0..n)
        .map(|_| {
            let open = &open;
            let message = &message;
            async move {
                let mut ws = open().await?;
                echo(&mut ws, message).await?;
                anyhow::Ok(ws)
            }
        })
        .buffer_unordered(OPENING_AT_ONCE)
        .collect()
        .await;
    let failed = opened.iter().filter(|r| r.is_err()).count();
    let mut sockets: Vec<_> = opened.into_iter().filter_map(Result::ok).collect();
    println!("OPEN {}", sockets.len());
    std::io::stdout().flush()?;
    tokio::time::sleep(hold).await;
    // Any that the other side closed meanwhile has something to read (its close).
    let mut closed = 0;
    for ws in &mut sockets {
        if let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(1), ws.next()).await {
            closed += 1;
        }
    }
    println!(
        "{}",
        json!({ "opened": sockets.len(), "failed": failed, "closed_by_peer": closed })
    );
    Ok(())
}
