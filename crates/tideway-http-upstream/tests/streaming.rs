//! Bodies stream with backpressure and bounded memory: 50 MiB up, 50 MiB down, and a slow reader,
//! with this process's RSS sampled every 10 ms.
//!
//! One test in its own binary, so no other test's allocations land in the RSS figures.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{backend, backend_with_recv_buffer, client, empty, full, read_all};
use futures::{StreamExt, stream};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use tideway_http_upstream::{BoxError, HttpUpstream, UpstreamConfig};

const CHUNK: usize = 64 * 1024;
const CHUNKS: u64 = 800;
/// 50 MiB.
const TOTAL: u64 = CHUNK as u64 * CHUNKS;
/// Allowed RSS growth over the warmed-up baseline.
const RSS_BUDGET: u64 = 16 * 1024 * 1024;
/// `SO_RCVBUF`/`SO_SNDBUF` of the slow exchange's sockets (the kernel doubles them).
const KERNEL_BUFFER: usize = 128 * 1024;
/// Bytes produced but not yet read that the slow exchange may have in flight: both kernel
/// buffers (doubled), hyper's buffers on both sides (≤ 64 KiB client, ~400 KiB server) and a
/// chunk, with room to spare. Without backpressure it would be all 50 MiB.
const IN_FLIGHT_BOUND: u64 = 4 * 1024 * 1024;
/// How long the slow backend stops reading after its first frame.
const STALL: Duration = Duration::from_millis(300);

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS in /proc/self/status");
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("VmRSS value");
    kib * 1024
}

/// Samples RSS every 10 ms on its own thread until stopped; returns the peak.
struct RssSampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RssSampler {
    fn start() -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(rss_bytes()));
        let (s, p) = (Arc::clone(&stop), Arc::clone(&peak));
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                p.fetch_max(rss_bytes(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        RssSampler {
            stop,
            peak,
            thread: Some(thread),
        }
    }

    fn peak(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }

    fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        self.peak.fetch_max(rss_bytes(), Ordering::Relaxed);
        self.peak()
    }
}

/// A request body of `CHUNKS` fresh 64 KiB chunks made as they are polled; `produced` counts
/// the bytes handed out so far.
fn generated_body(
    produced: Arc<AtomicU64>,
) -> StreamBody<impl futures::Stream<Item = Result<Frame<Bytes>, BoxError>> + Send + 'static> {
    StreamBody::new(stream::unfold(0u64, move |n| {
        let produced = Arc::clone(&produced);
        async move {
            if n == CHUNKS {
                return None;
            }
            produced.fetch_add(CHUNK as u64, Ordering::SeqCst);
            Some((Ok(Frame::data(Bytes::from(vec![0xAB; CHUNK]))), n + 1))
        }
    }))
}

/// Reads a body frame by frame, keeping only a count: the backends' request bodies (hyper's
/// `Incoming`) and the upstream's response bodies (`UpstreamBody`).
async fn count_body<B>(body: B) -> Result<u64, B::Error>
where
    B: http_body::Body<Data = Bytes>,
{
    let mut body = std::pin::pin!(body);
    let mut n = 0;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            n += data.len() as u64;
        }
    }
    Ok(n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_mib_each_way_with_bounded_memory_and_backpressure() {
    // Bytes the slow backend had received, and the client had produced, when its stall ended.
    let stall_report = Arc::new(slot::Slot::default());
    let report = Arc::clone(&stall_report);
    let producer_in_backend = Arc::new(AtomicU64::new(0));
    let producer = Arc::clone(&producer_in_backend);
    let b = backend(|req: Request<Incoming>| async move {
        match (req.method().clone(), req.uri().path()) {
            (Method::POST, "/upload") => {
                let n = count_body(req.into_body()).await.unwrap_or(0);
                Response::new(full(n.to_string()))
            }
            (Method::GET, "/download") => {
                let frames = stream::iter(0..CHUNKS)
                    .map(|_| Ok::<_, BoxError>(Frame::data(Bytes::from(vec![0xCD; CHUNK]))));
                Response::new(StreamBody::new(frames).boxed_unsync())
            }
            _ => Response::builder()
                .status(StatusCode::NOT_FOUND)
                .body(empty())
                .unwrap(),
        }
    })
    .await;
    // Reads one frame, stops reading for STALL, reports, then reads the rest. Its socket has a
    // fixed receive buffer, and so has the client's (below), so the bytes the kernel may hold
    // are small and known; all the rest of what the client produced would be in this process.
    let slow = backend_with_recv_buffer(KERNEL_BUFFER as u32, move |req: Request<Incoming>| {
        let report = Arc::clone(&report);
        let producer = Arc::clone(&producer);
        async move {
            let mut body = req.into_body();
            let mut n = 0u64;
            if let Some(Ok(f)) = body.frame().await {
                n += f.into_data().map(|d| d.len() as u64).unwrap_or(0);
            }
            tokio::time::sleep(STALL).await;
            report.set(n, producer.load(Ordering::SeqCst));
            n += count_body(body).await.unwrap_or(0);
            Response::new(full(n.to_string()))
        }
    })
    .await;
    let slow_up = HttpUpstream::new(UpstreamConfig {
        tcp_send_buffer_size: Some(KERNEL_BUFFER),
        ..UpstreamConfig::new(slow.url(""))
    })
    .unwrap();
    let up = HttpUpstream::new(UpstreamConfig::new(b.url(""))).unwrap();
    let head_deadline = Duration::from_secs(15);

    // Warm up runtime, pool and buffers with a small round trip each way, then take a baseline.
    let warm = Request::post("/").body(full(vec![1u8; CHUNK])).unwrap();
    let resp = up
        .forward(warm, "/upload", &client(), head_deadline)
        .await
        .unwrap();
    assert_eq!(read_all(resp.into_body()).await, CHUNK.to_string());
    let baseline = rss_bytes();
    let sampler = RssSampler::start();
    let started = Instant::now();

    // 50 MiB up.
    let produced = Arc::new(AtomicU64::new(0));
    let req = Request::post("/")
        .body(generated_body(Arc::clone(&produced)))
        .unwrap();
    let resp = up
        .forward(req, "/upload", &client(), head_deadline)
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(read_all(resp.into_body()).await, TOTAL.to_string());
    let upload_peak = sampler.peak();
    let upload_time = started.elapsed();

    // 50 MiB down, consumed chunk by chunk.
    let t = Instant::now();
    let req = Request::get("/").body(empty()).unwrap();
    let resp = up
        .forward(req, "/download", &client(), head_deadline)
        .await
        .unwrap();
    assert_eq!(count_body(resp.into_body()).await.unwrap(), TOTAL);
    let download_peak = sampler.peak();
    let download_time = t.elapsed();

    // A backend that stops reading: the sender must stop producing.
    let t = Instant::now();
    let req = Request::post("/")
        .body(generated_body(Arc::clone(&producer_in_backend)))
        .unwrap();
    let resp = slow_up
        .forward(req, "/slow", &client(), head_deadline)
        .await
        .unwrap();
    assert_eq!(read_all(resp.into_body()).await, TOTAL.to_string());
    let slow_time = t.elapsed();
    let (received_at_stall, produced_at_stall) = stall_report.get().expect("stall reported");

    let peak = sampler.stop();
    let growth = peak.saturating_sub(baseline);
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    eprintln!(
        "rss baseline {:.1} MiB; peak growth: after upload {:.1} MiB, after download {:.1} MiB, \
         overall {:.1} MiB (budget {:.0} MiB)",
        mib(baseline),
        mib(upload_peak.saturating_sub(baseline)),
        mib(download_peak.saturating_sub(baseline)),
        mib(growth),
        mib(RSS_BUDGET)
    );
    eprintln!(
        "times: upload {upload_time:?}, download {download_time:?}, slow {slow_time:?}; \
         during the {STALL:?} stall the backend had {:.2} MiB and the client had produced \
         {:.2} MiB of {:.0} MiB",
        mib(received_at_stall),
        mib(produced_at_stall),
        mib(TOTAL)
    );
    assert!(
        growth < RSS_BUDGET,
        "RSS grew by {:.1} MiB streaming 50 MiB each way",
        mib(growth)
    );
    // Without backpressure the generator would have produced all 50 MiB during the stall; with
    // it, only what fits in hyper's buffers and the socket buffers is in flight.
    let in_flight = produced_at_stall.saturating_sub(received_at_stall);
    assert!(
        in_flight < IN_FLIGHT_BOUND,
        "{:.1} MiB produced but not read during the stall",
        mib(in_flight)
    );
}

/// A write-once pair of numbers shared between the backend and the test.
mod slot {
    use std::sync::OnceLock;

    #[derive(Default)]
    pub(crate) struct Slot(OnceLock<(u64, u64)>);

    impl Slot {
        pub(crate) fn set(&self, a: u64, b: u64) {
            let _ = self.0.set((a, b));
        }

        pub(crate) fn get(&self) -> Option<(u64, u64)> {
            self.0.get().copied()
        }
    }
}
