//! HTTP/1.1 load generator of the overload benchmark and the soak: holds `--connections`
//! keep-alive connections, each sending one GET at a time, and prints one JSON line of results
//! with counts and latency percentiles **per response status**.
//!
//! - `--url` may be given several times; each connection cycles through the list (starting at
//!   a different place per connection), so repeating a URL weights it. All URLs must name the
//!   same `host:port`.
//! - The run ends after `--duration-secs` or `--requests` (whichever comes first): no request is
//!   started after that, and the ones in flight are waited for (each is bounded by the timeout).
//! - `--timeout-ms`: a request not answered in full within this time is given up by closing
//!   its connection (as an impatient client does); the next request opens a new one. It is
//!   counted under `timeouts`, not in the latencies.
//! - `--think-ms`: mean pause after each answer (or give-up) before the next request on that
//!   connection, drawn uniformly from 0.5x to 1.5x so that connections do not move in lockstep;
//!   `--requests-per-connection`: reconnect after that many requests.
//! - `--late-ms`: also count, per status, the answers that took longer than this.
//! - `--warmup-secs`: requests started in the first seconds of the run (connections being
//!   opened, first requests) are reported apart, under `warmup`, and left out of `statuses`;
//!   give-ups and errors are counted over the whole run.
//!
//! Besides totals, the report has a `timeline`: per second of the run (by when each request
//! ended), the answers by status, the late ones, the give-ups and the slowest answer, so that
//! a burst of errors or latency can be placed in time.
//!
//! Latency is measured from just before the request is written until the whole response body
//! has been read, on a connection that is already open (connecting is not included). Runs on
//! one current-thread runtime: the harness pins it to one core with `taskset`.
//!
//! ```text
//! bench-http-load --url http://127.0.0.1:8080/slow/2000 --connections 2000 --duration-secs 10
//! ```

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs as _};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use clap::Parser;
use hdrhistogram::Histogram;
use http::{Request, Uri, header};
use http_body_util::{BodyExt as _, Empty};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tideway_bench::procfs;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// Latencies are recorded in microseconds up to this bound (longer ones saturate at it), with
/// three significant digits.
const HISTOGRAM_MAX_US: u64 = 600_000_000;
/// Pause after a failed connect or a broken connection, so a dead target does not make every
/// connection spin.
const ERROR_BACKOFF: Duration = Duration::from_millis(20);

/// Command line.
#[derive(Debug, Parser)]
struct Args {
    /// Target URL (`http://host:port/path?query`); repeat to cycle through several.
    #[arg(long = "url", required = true)]
    urls: Vec<String>,
    /// Connections held at once; each has at most one request in flight.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Start no request after this many seconds.
    #[arg(long)]
    duration_secs: Option<f64>,
    /// Start no more than this many requests in all.
    #[arg(long)]
    requests: Option<u64>,
    /// Give up on a request after this many milliseconds, closing its connection.
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
    /// Mean pause after each request before the next one on the same connection (uniform
    /// between half and one and a half times this).
    #[arg(long, default_value_t = 0)]
    think_ms: u64,
    /// Close and reopen a connection after this many requests on it (0: never).
    #[arg(long, default_value_t = 0)]
    requests_per_connection: u64,
    /// Report requests started in the first this many seconds apart (`warmup`).
    #[arg(long, default_value_t = 0.0)]
    warmup_secs: f64,
    /// Count, per status, the answers slower than this many milliseconds.
    #[arg(long)]
    late_ms: Option<u64>,
    /// Give up on a TCP connect after this many milliseconds.
    #[arg(long, default_value_t = 5_000)]
    connect_timeout_ms: u64,
    /// Spread the connections' first connects evenly over this many milliseconds.
    #[arg(long, default_value_t = 0)]
    ramp_ms: u64,
    /// Print cumulative counts to stderr every this many seconds (0: never).
    #[arg(long, default_value_t = 0.0)]
    progress_secs: f64,
}

/// One URL, resolved.
#[derive(Debug)]
struct Target {
    path_and_query: String,
}

/// What every connection task reads.
#[derive(Debug)]
struct Plan {
    started: Instant,
    addr: SocketAddr,
    authority: String,
    targets: Vec<Target>,
    stop_at: Option<Instant>,
    max_requests: Option<u64>,
    timeout: Duration,
    think: Duration,
    requests_per_connection: u64,
    late_us: Option<u64>,
    warmup_until: Instant,
    connect_timeout: Duration,
    ramp: Duration,
    connections: usize,
}

/// Counters shared by all connections, for the stop condition and the progress lines.
#[derive(Debug, Default)]
struct Totals {
    issued: AtomicU64,
    responses: AtomicU64,
    status_2xx: AtomicU64,
    status_4xx: AtomicU64,
    status_5xx: AtomicU64,
    timeouts: AtomicU64,
    io_errors: AtomicU64,
    connect_errors: AtomicU64,
}

/// Latencies and counts of one response status.
#[derive(Debug)]
struct StatusStats {
    latencies_us: Histogram<u64>,
    late: u64,
    max_us: u64,
}

impl StatusStats {
    fn new() -> StatusStats {
        StatusStats {
            latencies_us: new_histogram(),
            late: 0,
            max_us: 0,
        }
    }

    fn merge(&mut self, other: &StatusStats) {
        self.latencies_us
            .add(&other.latencies_us)
            .expect("histograms with the same bounds merge");
        self.late += other.late;
        self.max_us = self.max_us.max(other.max_us);
    }
}

/// What one connection task saw.
#[derive(Debug, Default)]
struct ConnResult {
    statuses: BTreeMap<u16, StatusStats>,
    warmup: BTreeMap<u16, StatusStats>,
    timeline: BTreeMap<u64, Second>,
    timeouts: u64,
    io_errors: u64,
    connect_errors: u64,
    connects: u64,
    first_error: Option<String>,
}

/// What ended in one second of the run.
#[derive(Debug, Default, Clone)]
struct Second {
    by_status: BTreeMap<u16, u64>,
    late: u64,
    timeouts: u64,
    errors: u64,
    max_us: u64,
}

impl Second {
    fn merge(&mut self, other: &Second) {
        for (status, n) in &other.by_status {
            *self.by_status.entry(*status).or_default() += n;
        }
        self.late += other.late;
        self.timeouts += other.timeouts;
        self.errors += other.errors;
        self.max_us = self.max_us.max(other.max_us);
    }
}

/// Milliseconds from microseconds.
fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// Per-status figures as reported, and their totals.
struct Summary {
    per_status: serde_json::Map<String, serde_json::Value>,
    overall: Histogram<u64>,
    responses: u64,
    late: u64,
    worst_us: u64,
}

impl Summary {
    fn of(statuses: &BTreeMap<u16, StatusStats>) -> Summary {
        let mut sum = Summary {
            per_status: serde_json::Map::new(),
            overall: new_histogram(),
            responses: 0,
            late: 0,
            worst_us: 0,
        };
        for (status, s) in statuses {
            let h = &s.latencies_us;
            sum.overall
                .add(h)
                .expect("histograms with the same bounds merge");
            sum.responses += h.len();
            sum.late += s.late;
            sum.worst_us = sum.worst_us.max(s.max_us);
            sum.per_status.insert(
                status.to_string(),
                json!({
                    "count": h.len(),
                    "p50_ms": ms(h.value_at_quantile(0.50)),
                    "p90_ms": ms(h.value_at_quantile(0.90)),
                    "p99_ms": ms(h.value_at_quantile(0.99)),
                    "p999_ms": ms(h.value_at_quantile(0.999)),
                    "max_ms": ms(s.max_us),
                    "late": s.late,
                }),
            );
        }
        sum
    }
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HISTOGRAM_MAX_US, 3).expect("static histogram bounds are valid")
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let report = tideway_bench::block_on_current_thread(run(args))??;
    println!("{report}");
    Ok(())
}

fn plan(args: &Args, started: Instant) -> anyhow::Result<Plan> {
    anyhow::ensure!(args.connections > 0, "--connections must be at least 1");
    anyhow::ensure!(
        args.duration_secs.is_some() || args.requests.is_some(),
        "give --duration-secs or --requests (or both)"
    );
    anyhow::ensure!(args.timeout_ms > 0, "--timeout-ms must be at least 1");
    let mut authority: Option<String> = None;
    let mut targets = Vec::new();
    for url in &args.urls {
        let uri: Uri = url.parse().with_context(|| format!("bad URL {url}"))?;
        anyhow::ensure!(
            uri.scheme_str() == Some("http"),
            "{url}: only http:// URLs are supported"
        );
        let a = uri
            .authority()
            .with_context(|| format!("{url}: no host:port"))?
            .as_str()
            .to_owned();
        match &authority {
            None => authority = Some(a),
            Some(first) => anyhow::ensure!(
                *first == a,
                "all URLs must name the same host:port ({first} and {a})"
            ),
        }
        let path_and_query = uri
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_else(|| "/".to_owned());
        targets.push(Target { path_and_query });
    }
    let authority = authority.context("no --url")?;
    let with_port = if authority.contains(':') {
        authority.clone()
    } else {
        format!("{authority}:80")
    };
    let addr = with_port
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {with_port}"))?
        .next()
        .with_context(|| format!("{with_port} resolves to nothing"))?;
    Ok(Plan {
        started,
        addr,
        authority,
        targets,
        stop_at: args
            .duration_secs
            .map(|s| started + Duration::from_secs_f64(s)),
        max_requests: args.requests,
        timeout: Duration::from_millis(args.timeout_ms),
        think: Duration::from_millis(args.think_ms),
        requests_per_connection: args.requests_per_connection,
        late_us: args.late_ms.map(|ms| ms * 1000),
        warmup_until: started + Duration::from_secs_f64(args.warmup_secs),
        connect_timeout: Duration::from_millis(args.connect_timeout_ms),
        ramp: Duration::from_millis(args.ramp_ms),
        connections: args.connections,
    })
}

async fn run(args: Args) -> anyhow::Result<serde_json::Value> {
    let me = std::process::id();
    let cpu_ticks_0 = procfs::cpu_ticks(me)?;
    let run_delay_0 = procfs::run_delay_ns(me)?;
    let started = Instant::now();
    let plan = Arc::new(plan(&args, started)?);
    let totals = Arc::new(Totals::default());
    let tasks: Vec<_> = (0..plan.connections)
        .map(|i| tokio::spawn(connection_loop(i, Arc::clone(&plan), Arc::clone(&totals))))
        .collect();
    let progress = (args.progress_secs > 0.0).then(|| {
        tokio::spawn(progress(
            Duration::from_secs_f64(args.progress_secs),
            Arc::clone(&totals),
            started,
        ))
    });

    let mut statuses: BTreeMap<u16, StatusStats> = BTreeMap::new();
    let mut warmup: BTreeMap<u16, StatusStats> = BTreeMap::new();
    let mut all = ConnResult::default();
    for task in tasks {
        let r = task.await?;
        for (into, from) in [(&mut statuses, &r.statuses), (&mut warmup, &r.warmup)] {
            for (status, s) in from {
                into.entry(*status)
                    .or_insert_with(StatusStats::new)
                    .merge(s);
            }
        }
        all.timeouts += r.timeouts;
        all.io_errors += r.io_errors;
        all.connect_errors += r.connect_errors;
        all.connects += r.connects;
        for (t, sec) in &r.timeline {
            all.timeline.entry(*t).or_default().merge(sec);
        }
        if all.first_error.is_none() {
            all.first_error = r.first_error;
        }
    }
    if let Some(p) = progress {
        p.abort();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu_s =
        (procfs::cpu_ticks(me)? - cpu_ticks_0) as f64 / procfs::clock_ticks_per_sec()? as f64;
    let cpu_wait_ms = (procfs::run_delay_ns(me)? - run_delay_0) as f64 / 1e6;

    let measured = Summary::of(&statuses);
    let warmup = Summary::of(&warmup);
    let timeline: Vec<_> = all
        .timeline
        .iter()
        .map(|(t, sec)| {
            let by_status: serde_json::Map<_, _> = sec
                .by_status
                .iter()
                .map(|(status, n)| (status.to_string(), json!(n)))
                .collect();
            json!({
                "t": t,
                "by_status": by_status,
                "late": sec.late,
                "timeouts": sec.timeouts,
                "errors": sec.errors,
                "max_ms": ms(sec.max_us),
            })
        })
        .collect();
    let issued = totals.issued.load(Ordering::Relaxed);
    Ok(json!({
        "connections": plan.connections,
        "urls": args.urls,
        "duration_secs": args.duration_secs,
        "requests_limit": args.requests,
        "timeout_ms": args.timeout_ms,
        "think_ms": args.think_ms,
        "late_ms": args.late_ms,
        "elapsed_secs": elapsed,
        // `issued` counts requests started; the counter can overshoot a --requests limit by one
        // per connection (each checks it before starting), so it is capped here.
        "requests": args.requests.map_or(issued, |max| issued.min(max)),
        "responses": measured.responses,
        "responses_per_s": (measured.responses + warmup.responses) as f64 / elapsed,
        "statuses": measured.per_status,
        "warmup": json!({
            "secs": args.warmup_secs,
            "responses": warmup.responses,
            "statuses": warmup.per_status,
            "late_responses": warmup.late,
            "worst_ms": ms(warmup.worst_us),
        }),
        "timeouts": all.timeouts,
        "io_errors": all.io_errors,
        "connect_errors": all.connect_errors,
        "connects": all.connects,
        "first_error": all.first_error,
        "late_responses": measured.late,
        "worst_ms": ms(measured.worst_us),
        "p50_ms": ms(measured.overall.value_at_quantile(0.50)),
        "p99_ms": ms(measured.overall.value_at_quantile(0.99)),
        // This process's CPU time and time spent waiting for a CPU during the run: a load
        // generator held back by other work on its core reports latencies that are not only
        // the server's.
        "cpu_s": cpu_s,
        "cpu_wait_ms": cpu_wait_ms,
        "timeline": timeline,
    }))
}

async fn progress(every: Duration, totals: Arc<Totals>, started: Instant) {
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tick.tick().await;
        let t = &*totals;
        eprintln!(
            "{}",
            json!({
                "progress_secs": started.elapsed().as_secs_f64(),
                "responses": t.responses.load(Ordering::Relaxed),
                "status_2xx": t.status_2xx.load(Ordering::Relaxed),
                "status_4xx": t.status_4xx.load(Ordering::Relaxed),
                "status_5xx": t.status_5xx.load(Ordering::Relaxed),
                "timeouts": t.timeouts.load(Ordering::Relaxed),
                "io_errors": t.io_errors.load(Ordering::Relaxed),
                "connect_errors": t.connect_errors.load(Ordering::Relaxed),
            })
        );
    }
}

/// An open connection: the request handle and the task driving the socket. Dropping it closes
/// the socket.
struct Conn {
    sender: SendRequest<Empty<Bytes>>,
    driver: JoinHandle<()>,
    requests: u64,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

async fn connect(plan: &Plan) -> anyhow::Result<Conn> {
    let stream = tokio::time::timeout(plan.connect_timeout, TcpStream::connect(plan.addr))
        .await
        .context("connect timed out")?
        .context("connect")?;
    stream.set_nodelay(true)?;
    let (sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .context("handshake")?;
    let driver = tokio::spawn(async move {
        // Errors surface on the request that was in flight.
        let _ = connection.await;
    });
    Ok(Conn {
        sender,
        driver,
        requests: 0,
    })
}

/// How one request ended.
enum Outcome {
    Answered(u16),
    TimedOut,
    Failed(anyhow::Error),
}

async fn exchange(conn: &mut Conn, plan: &Plan, target: &Target) -> Outcome {
    let req = Request::get(target.path_and_query.as_str())
        .header(header::HOST, plan.authority.as_str())
        .header(header::USER_AGENT, "bench-http-load")
        .body(Empty::<Bytes>::new())
        .expect("a GET with a valid path builds");
    let call = async {
        let resp = conn.sender.send_request(req).await.context("request")?;
        let status = resp.status().as_u16();
        resp.into_body().collect().await.context("body")?;
        anyhow::Ok(status)
    };
    match tokio::time::timeout(plan.timeout, call).await {
        Ok(Ok(status)) => Outcome::Answered(status),
        Ok(Err(e)) => Outcome::Failed(e),
        Err(_) => Outcome::TimedOut,
    }
}

fn may_start(plan: &Plan, totals: &Totals) -> bool {
    if plan.stop_at.is_some_and(|t| Instant::now() >= t) {
        return false;
    }
    match plan.max_requests {
        Some(max) => totals.issued.fetch_add(1, Ordering::Relaxed) < max,
        None => {
            totals.issued.fetch_add(1, Ordering::Relaxed);
            true
        }
    }
}

/// Sleeps `d`, unless that would end past the stop time; returns whether to go on.
async fn pause(plan: &Plan, d: Duration) -> bool {
    if d.is_zero() {
        return true;
    }
    if plan.stop_at.is_some_and(|t| Instant::now() + d >= t) {
        return false;
    }
    tokio::time::sleep(d).await;
    true
}

async fn connection_loop(index: usize, plan: Arc<Plan>, totals: Arc<Totals>) -> ConnResult {
    let mut result = ConnResult::default();
    if !plan.ramp.is_zero() {
        tokio::time::sleep(plan.ramp.mul_f64(index as f64 / plan.connections as f64)).await;
    }
    let mut next_target = index % plan.targets.len();
    let mut rng = XorShift::new(index as u64);
    let mut conn: Option<Conn> = None;
    loop {
        // A connection that the server closed, or that served its quota, is replaced.
        if let Some(c) = &mut conn {
            let spent =
                plan.requests_per_connection > 0 && c.requests >= plan.requests_per_connection;
            if spent || c.sender.ready().await.is_err() {
                conn = None;
            }
        }
        if plan.stop_at.is_some_and(|t| Instant::now() >= t) {
            return result;
        }
        let c = match &mut conn {
            Some(c) => c,
            None => match connect(&plan).await {
                Ok(c) => {
                    result.connects += 1;
                    conn.insert(c)
                }
                Err(e) => {
                    result.connect_errors += 1;
                    totals.connect_errors.fetch_add(1, Ordering::Relaxed);
                    result.first_error.get_or_insert_with(|| format!("{e:#}"));
                    if !pause(&plan, ERROR_BACKOFF).await {
                        return result;
                    }
                    continue;
                }
            },
        };
        if !may_start(&plan, &totals) {
            return result;
        }
        let target = &plan.targets[next_target];
        next_target = (next_target + 1) % plan.targets.len();
        c.requests += 1;
        let start = Instant::now();
        let outcome = exchange(c, &plan, target).await;
        let us = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
        let second = result
            .timeline
            .entry(plan.started.elapsed().as_secs())
            .or_default();
        let mut backoff = if plan.think.is_zero() {
            Duration::ZERO
        } else {
            plan.think.mul_f64(0.5 + rng.next_unit())
        };
        match outcome {
            Outcome::Answered(status) => {
                totals.responses.fetch_add(1, Ordering::Relaxed);
                let class = match status {
                    200..=299 => Some(&totals.status_2xx),
                    400..=499 => Some(&totals.status_4xx),
                    500..=599 => Some(&totals.status_5xx),
                    _ => None,
                };
                if let Some(class) = class {
                    class.fetch_add(1, Ordering::Relaxed);
                }
                let into = if start < plan.warmup_until {
                    &mut result.warmup
                } else {
                    &mut result.statuses
                };
                let s = into.entry(status).or_insert_with(StatusStats::new);
                s.latencies_us.saturating_record(us.max(1));
                s.max_us = s.max_us.max(us);
                *second.by_status.entry(status).or_default() += 1;
                second.max_us = second.max_us.max(us);
                if plan.late_us.is_some_and(|late| us > late) {
                    s.late += 1;
                    second.late += 1;
                }
            }
            Outcome::TimedOut => {
                // Give up the way an impatient client does: close the connection.
                conn = None;
                second.timeouts += 1;
                result.timeouts += 1;
                totals.timeouts.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Failed(e) => {
                conn = None;
                second.errors += 1;
                result.io_errors += 1;
                totals.io_errors.fetch_add(1, Ordering::Relaxed);
                result.first_error.get_or_insert_with(|| format!("{e:#}"));
                backoff = backoff.max(ERROR_BACKOFF);
            }
        }
        if !pause(&plan, backoff).await {
            return result;
        }
    }
}

/// A small per-connection random source for think-time jitter (xorshift64*; quality does not
/// matter here, independence between connections does).
#[derive(Debug)]
struct XorShift(u64);

impl XorShift {
    fn new(index: u64) -> XorShift {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos() as u64);
        // Never zero: xorshift stays at zero forever.
        XorShift((index.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ nanos) | 1)
    }

    /// Uniform in [0, 1).
    fn next_unit(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}
