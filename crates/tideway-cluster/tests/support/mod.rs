//! Real RPC instances on 127.0.0.1 for the cluster tests, each on its own thread and runtime so
//! it can be killed (runtime dropped: every socket closes at once, as for a killed process) or
//! shut down gracefully (GoAway, drain), and restarted on the same port.

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tideway_cluster::{CallPolicy, Cluster, ClusterError};
use tideway_rpc::{CallOptions, Codec, RpcError, Server};
use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// The service every instance runs.
#[tideway_macros::service(name = "test.Work")]
pub trait Work {
    /// Waits for the instance's delay, then answers its name, or fails as the instance is told.
    async fn work(&self, n: u64) -> Result<String, RpcError>;
}

/// How an instance answers; shared by the test and every incarnation of the instance.
#[derive(Debug, Default)]
pub struct Behaviour {
    pub name: String,
    pub delay_ms: AtomicU64,
    /// 0 ok, 1 Unavailable, 2 Overloaded, 3 Internal.
    pub fail: AtomicU8,
    /// Calls that reached the handler.
    pub calls: AtomicU64,
}

impl Behaviour {
    pub fn new(name: &str) -> Arc<Self> {
        Arc::new(Behaviour {
            name: name.into(),
            ..Default::default()
        })
    }

    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }
}

pub const OK: u8 = 0;
pub const UNAVAILABLE: u8 = 1;
pub const OVERLOADED: u8 = 2;

#[derive(Clone)]
struct WorkImpl(Arc<Behaviour>);

impl Work for WorkImpl {
    async fn work(&self, _n: u64) -> Result<String, RpcError> {
        let b = &self.0;
        b.calls.fetch_add(1, Ordering::SeqCst);
        let delay = b.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        match b.fail.load(Ordering::SeqCst) {
            OK => Ok(b.name.clone()),
            UNAVAILABLE => Err(RpcError::unavailable("told to fail")),
            OVERLOADED => Err(RpcError::overloaded("told to refuse")),
            _ => Err(RpcError::internal("told to break")),
        }
    }
}

enum Stop {
    Graceful,
    Kill,
}

/// One running instance.
pub struct Instance {
    pub addr: SocketAddr,
    pub behaviour: Arc<Behaviour>,
    stop: Option<oneshot::Sender<Stop>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Instance {
    /// Starts an instance on `addr` (port 0: any free port).
    pub async fn start(addr: SocketAddr, behaviour: Arc<Behaviour>) -> Instance {
        let (addr_tx, addr_rx) = oneshot::channel();
        let (stop_tx, stop_rx) = oneshot::channel::<Stop>();
        let b = Arc::clone(&behaviour);
        let thread = std::thread::Builder::new()
            .name(format!("instance-{}", behaviour.name))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    let server = Server::builder()
                        .add_service(WorkServer::new(WorkImpl(b)))
                        .bind(addr)
                        .await
                        .expect("bind");
                    let _ = addr_tx.send(server.local_addr());
                    match stop_rx.await {
                        Ok(Stop::Graceful) => server.shutdown().await,
                        Ok(Stop::Kill) | Err(_) => {}
                    }
                });
                // Dropping the runtime drops every task and closes every socket.
                drop(rt);
            })
            .unwrap();
        let addr = addr_rx.await.expect("instance started");
        Instance {
            addr,
            behaviour,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    pub async fn any_port(name: &str) -> Instance {
        Instance::start("127.0.0.1:0".parse().unwrap(), Behaviour::new(name)).await
    }

    async fn stop(mut self, how: Stop) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(how);
        }
        if let Some(thread) = self.thread.take() {
            tokio::task::spawn_blocking(move || thread.join().unwrap())
                .await
                .unwrap();
        }
    }

    /// Closes every socket at once.
    pub async fn kill(self) {
        self.stop(Stop::Kill).await;
    }

    /// GoAway, drain, close.
    pub async fn shutdown(self) {
        self.stop(Stop::Graceful).await;
    }

    /// Graceful shutdown, then a new incarnation on the same port with the same behaviour.
    pub async fn restart(self) -> Instance {
        let addr = self.addr;
        let behaviour = Arc::clone(&self.behaviour);
        self.shutdown().await;
        Instance::start(addr, behaviour).await
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(Stop::Kill);
        }
    }
}

pub const METHOD: &str = "test.Work/work";

pub fn payload() -> Bytes {
    Bytes::from_static(br#"{"n":1}"#)
}

/// One call: when it started and ended, and how it went.
#[derive(Debug)]
pub struct Record {
    pub started: Instant,
    pub ended: Instant,
    pub result: Result<String, ClusterError>,
}

/// Open-loop load: `rate` calls per second for `duration`, each with `timeout`; returns every
/// call's record once all have ended.
pub async fn steady_load(
    cluster: Arc<Cluster>,
    rate: u32,
    duration: Duration,
    timeout: Duration,
    idempotent: bool,
) -> Vec<Record> {
    let mut calls = JoinSet::new();
    let period = Duration::from_secs(1) / rate;
    let mut ticks = tokio::time::interval(period);
    let end = Instant::now() + duration;
    while Instant::now() < end {
        ticks.tick().await;
        let cluster = Arc::clone(&cluster);
        calls.spawn(async move {
            let started = Instant::now();
            let policy = CallPolicy {
                idempotent,
                ..Default::default()
            };
            let result = cluster
                .call(
                    METHOD,
                    Codec::Json,
                    payload(),
                    &CallOptions::with_timeout(timeout),
                    &policy,
                )
                .await
                .map(|body| serde_json::from_slice::<String>(&body).expect("a name"));
            Record {
                started,
                ended: Instant::now(),
                result,
            }
        });
    }
    let mut records = Vec::with_capacity(calls.len());
    while let Some(done) = calls.join_next().await {
        records.push(done.unwrap());
    }
    records.sort_by_key(|r| r.started);
    records
}

/// Share of successful calls.
pub fn success_rate(records: &[Record]) -> f64 {
    let ok = records.iter().filter(|r| r.result.is_ok()).count();
    ok as f64 / records.len().max(1) as f64
}

/// Polls `cond` every 5 ms until it holds or `within` passes.
pub async fn eventually(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + within;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    cond()
}
