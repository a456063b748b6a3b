//! Shared test helpers: a real etcd server on ephemeral ports with a temporary data dir (from
//! `tideway-testkit`, shared with the `tideway` binary's tests), a client for it, a TCP proxy
//! that can cut the network between a client and etcd, and bounded waits.
//!
//! Each test file compiles this module on its own and uses part of it.
#![allow(dead_code, unreachable_pub, unused_imports)]

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

pub use tideway_testkit::{EtcdServer, free_port};

/// A client connected directly to `etcd` (not through any proxy).
#[cfg(feature = "etcd")]
pub async fn etcd_client(etcd: &EtcdServer) -> tideway_registry::etcd_client::Client {
    tideway_registry::etcd_client::Client::connect([etcd.endpoint()], None)
        .await
        .expect("etcd client")
}

/// Logs to the test's captured output, filtered by `RUST_LOG` (default: warnings), so a failing
/// test shows what the registry saw.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

/// Polls `check` every 20 ms until it returns `Some`, at most `timeout`; panics naming `what`
/// otherwise. Never a fixed sleep standing in for a condition.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A TCP proxy on 127.0.0.1 that forwards to `upstream` until cut: then it closes every
/// connection and refuses new ones (accepts and closes them) until restored. A network
/// partition between one client and a server that stays up.
pub struct Proxy {
    addr: SocketAddr,
    state: Arc<Mutex<ProxyState>>,
    accept: tokio::task::JoinHandle<()>,
}

struct ProxyState {
    open: bool,
    connections: CancellationToken,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let state = Arc::new(Mutex::new(ProxyState {
            open: true,
            connections: CancellationToken::new(),
        }));
        let accept_state = state.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                let token = {
                    let s = accept_state.lock();
                    if !s.open {
                        continue; // dropping the socket closes it
                    }
                    s.connections.clone()
                };
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = token.cancelled() => {}
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    }
                });
            }
        });
        Proxy {
            addr,
            state,
            accept,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Closes every connection and refuses new ones.
    pub fn cut(&self) {
        let mut s = self.state.lock();
        s.open = false;
        s.connections.cancel();
        s.connections = CancellationToken::new();
    }

    /// Lets connections through again.
    pub fn restore(&self) {
        self.state.lock().open = true;
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.state.lock().connections.cancel();
    }
}
