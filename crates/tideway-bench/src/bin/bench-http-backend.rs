//! The plain HTTP backend of the HTTP benchmark: a hyper HTTP/1.1 server on one current-thread
//! runtime that answers `GET /api/item` with [`Item::sample`] as JSON, keep-alive on.
//!
//! It is what nginx and the gateway proxy to, and it is measured directly as a baseline. The
//! response is encoded once at start, so the server does no per-request serialization.
//!
//! `GET /stats` answers `{"accepted":N}`, the connections accepted since start (that request's
//! own included), so the harness can tell how many upstream connections a proxy opened.
//!
//! With `--delay-ms`, every answer to `GET /api/item` is held that long first (a slow upstream,
//! for the overload benchmark); `/stats` is always answered at once.
//!
//! Prints `LISTENING <addr>` once bound, then serves until SIGTERM or Ctrl-C.
//!
//! ```text
//! bench-http-backend [--addr 127.0.0.1:0] [--delay-ms 0]
//! ```

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tideway_bench::items::{ITEM_PATH, Item};
use tokio::signal::unix::{SignalKind, signal};

/// Pause after a failed accept (such as running out of file descriptors), so the loop does not
/// spin.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);
/// Where the connection count is served.
const STATS_PATH: &str = "/stats";

/// Command line.
#[derive(Debug, Parser)]
struct Args {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    addr: SocketAddr,
    /// Hold every `GET /api/item` answer this many milliseconds.
    #[arg(long, default_value_t = 0)]
    delay_ms: u64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tideway_bench::block_on_current_thread(serve(args))?
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let listener = tideway_bench::bind_with_backlog(args.addr, tideway_bench::LISTEN_BACKLOG)?;
    let delay = Duration::from_millis(args.delay_ms);
    tideway_bench::announce_listening(listener.local_addr()?)?;
    let item = Bytes::from(Item::sample_json());
    let accepted = Arc::new(AtomicU64::new(0));
    let mut term = signal(SignalKind::terminate())?;
    loop {
        let next = tokio::select! {
            next = listener.accept() => next,
            _ = term.recv() => return Ok(()),
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        let stream = match next {
            Ok((stream, _)) => stream,
            Err(e) => {
                eprintln!("bench-http-backend: accept failed: {e}");
                tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                continue;
            }
        };
        accepted.fetch_add(1, Ordering::Relaxed);
        let _ = stream.set_nodelay(true);
        let item = item.clone();
        let accepted = Arc::clone(&accepted);
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let hold = !delay.is_zero() && req.uri().path() == ITEM_PATH;
                let response = respond(&req, &item, &accepted);
                async move {
                    if hold {
                        tokio::time::sleep(delay).await;
                    }
                    Ok::<_, Infallible>(response)
                }
            });
            // Errors are clients going away mid-request; nothing to do about them here.
            let _ = http1::Builder::new()
                .timer(TokioTimer::new())
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn respond(req: &Request<Incoming>, item: &Bytes, accepted: &AtomicU64) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    let (status, body) = if path != ITEM_PATH && path != STATS_PATH {
        (StatusCode::NOT_FOUND, Bytes::from_static(b"not found\n"))
    } else if req.method() != Method::GET {
        (
            StatusCode::METHOD_NOT_ALLOWED,
            Bytes::from_static(b"GET only\n"),
        )
    } else if path == STATS_PATH {
        let stats = format!(r#"{{"accepted":{}}}"#, accepted.load(Ordering::Relaxed));
        (StatusCode::OK, Bytes::from(stats))
    } else {
        (StatusCode::OK, item.clone())
    };
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    let content_type = if status == StatusCode::OK {
        "application/json"
    } else {
        "text/plain"
    };
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    response
}
