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
//! has been read (`statuses`), and again until its last bytes reached the socket by the
//! kernel's receive stamp (`wire`: the same answers without this process's own delay in
//! getting round to them under a burst, see `tideway_bench::wire_clock`), on a connection that is already open (connecting is not included). Each
//! connection is one task that writes its request and reads the response itself (a small
//! HTTP/1.1 client: Content-Length, chunked and close-delimited bodies). Runs on one
//! current-thread runtime: the harness pins it to one core with `taskset`.
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
use bytes::{Buf as _, BytesMut};
use clap::Parser;
use hdrhistogram::Histogram;
use http::Uri;
use serde_json::json;
use tideway_bench::{procfs, wire_clock};
use tokio::io::{AsyncWriteExt as _, Interest};
use tokio::net::TcpStream;

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
    /// The whole GET request, written as is.
    request: Vec<u8>,
}

/// What every connection task reads.
#[derive(Debug)]
struct Plan {
    started: Instant,
    addr: SocketAddr,
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
    /// As `statuses`, but ending when the response's last bytes reached the socket (the
    /// kernel's receive stamp) rather than when this process read them.
    wire: BTreeMap<u16, StatusStats>,
    /// Answers after the warm-up that came without a kernel stamp (counted in `wire` with
    /// the read time instead).
    unstamped: u64,
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
    /// Slowest answer per status, in microseconds.
    max_us_by_status: BTreeMap<u16, u64>,
    late: u64,
    timeouts: u64,
    errors: u64,
}

impl Second {
    fn merge(&mut self, other: &Second) {
        for (status, n) in &other.by_status {
            *self.by_status.entry(*status).or_default() += n;
        }
        for (status, us) in &other.max_us_by_status {
            let max = self.max_us_by_status.entry(*status).or_default();
            *max = (*max).max(*us);
        }
        self.late += other.late;
        self.timeouts += other.timeouts;
        self.errors += other.errors;
    }

    /// The slowest answer of the second, whatever its status.
    fn max_us(&self) -> u64 {
        self.max_us_by_status.values().copied().max().unwrap_or(0)
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
    let mut paths = Vec::new();
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
        paths.push(path_and_query);
    }
    let authority = authority.context("no --url")?;
    let targets = paths
        .iter()
        .map(|path| Target {
            request: format!(
                "GET {path} HTTP/1.1\r\nhost: {authority}\r\nuser-agent: bench-http-load\r\n\r\n"
            )
            .into_bytes(),
        })
        .collect();
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
    let mut wire: BTreeMap<u16, StatusStats> = BTreeMap::new();
    let mut all = ConnResult::default();
    for task in tasks {
        let r = task.await?;
        all.unstamped += r.unstamped;
        for (into, from) in [
            (&mut statuses, &r.statuses),
            (&mut warmup, &r.warmup),
            (&mut wire, &r.wire),
        ] {
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
    let wire = Summary::of(&wire);
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
                "max_ms": ms(sec.max_us()),
                "max_ms_by_status": sec
                    .max_us_by_status
                    .iter()
                    .map(|(status, us)| (status.to_string(), json!(ms(*us))))
                    .collect::<serde_json::Map<_, _>>(),
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
        // The same answers, timed to when their last bytes reached this process's socket.
        "wire": json!({
            "statuses": wire.per_status,
            "p99_ms": ms(wire.overall.value_at_quantile(0.99)),
            "unstamped": all.unstamped,
        }),
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

/// An open keep-alive connection and the bytes read past the last response.
///
/// The client is written by hand rather than with hyper's client on purpose: the request is
/// written by the same task, in the same poll, that takes the start timestamp, and the response
/// is read by that task too (no driver task, no channel between them), so the latency it records
/// is the server's answer time plus one wake-up of this task, not a tour of this process's run
/// queue. hyper's client needs a second task per connection; with 2,000 connections on one core
/// its hops showed up as milliseconds of tail that belonged to the load generator.
struct Conn {
    stream: TcpStream,
    buf: BytesMut,
    requests: u64,
    /// The server said `Connection: close`, or the response ended at EOF.
    closing: bool,
    /// The kernel's receive stamp of the last bytes read ([`wire_clock`]).
    last_stamp_ns: Option<i128>,
    /// Where `recvmsg` reads into (it needs initialised memory); the bytes are then appended
    /// to `buf`.
    scratch: Box<[u8]>,
}

async fn connect(plan: &Plan) -> anyhow::Result<Conn> {
    let stream = tokio::time::timeout(plan.connect_timeout, TcpStream::connect(plan.addr))
        .await
        .context("connect timed out")?
        .context("connect")?;
    stream.set_nodelay(true)?;
    wire_clock::enable(&stream)?;
    Ok(Conn {
        stream,
        buf: BytesMut::with_capacity(4096),
        requests: 0,
        closing: false,
        last_stamp_ns: None,
        scratch: vec![0; 4096].into_boxed_slice(),
    })
}

/// How one request ended.
enum Outcome {
    /// The status, and how long after the request was written its last bytes reached the
    /// socket, by the kernel's stamp (`None` if the kernel sent none).
    Answered(u16, Option<u64>),
    TimedOut,
    Failed(anyhow::Error),
}

/// Writes one request and reads its whole response; `start` is taken just before the write.
async fn exchange(conn: &mut Conn, plan: &Plan, target: &Target) -> (Instant, Outcome) {
    conn.last_stamp_ns = None;
    let start = Instant::now();
    let sent_ns = wire_clock::now_ns();
    let call = async {
        conn.stream
            .write_all(&target.request)
            .await
            .context("request")?;
        read_response(conn).await
    };
    let outcome = match tokio::time::timeout(plan.timeout, call).await {
        Ok(Ok(status)) => Outcome::Answered(
            status,
            conn.last_stamp_ns
                .map(|at| u64::try_from((at - sent_ns).max(0) / 1000).unwrap_or(u64::MAX)),
        ),
        Ok(Err(e)) => Outcome::Failed(e),
        Err(_) => Outcome::TimedOut,
    };
    (start, outcome)
}

/// Reads more bytes into the connection's buffer; an EOF is an error unless `eof_ok`.
async fn fill(conn: &mut Conn, eof_ok: bool) -> anyhow::Result<bool> {
    let Conn {
        stream,
        buf,
        last_stamp_ns,
        scratch,
        ..
    } = conn;
    let read = loop {
        if let Err(e) = stream.readable().await {
            break Err(e);
        }
        match stream.try_io(Interest::READABLE, || wire_clock::recv(&*stream, scratch)) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            other => break other,
        }
    };
    let (n, stamp) = read.context("read")?;
    buf.extend_from_slice(&scratch[..n]);
    if stamp.is_some() {
        *last_stamp_ns = stamp;
    }
    anyhow::ensure!(n > 0 || eof_ok, "connection closed mid-response");
    Ok(n > 0)
}

/// How a response's body is delimited.
enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
}

/// Reads one response (head and body) and returns its status.
async fn read_response(conn: &mut Conn) -> anyhow::Result<u16> {
    let (status, framing, head_len) = loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(&conn.buf).context("bad response head")? {
            httparse::Status::Complete(head_len) => {
                let status = resp.code.context("no status")?;
                let mut framing = None;
                for h in resp.headers.iter() {
                    if h.name.eq_ignore_ascii_case("content-length") {
                        let n = std::str::from_utf8(h.value)
                            .ok()
                            .and_then(|v| v.trim().parse().ok())
                            .context("bad content-length")?;
                        framing.get_or_insert(Framing::Length(n));
                    } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                        framing = Some(Framing::Chunked);
                    } else if h.name.eq_ignore_ascii_case("connection")
                        && h.value.eq_ignore_ascii_case(b"close")
                    {
                        conn.closing = true;
                    }
                }
                let framing = if matches!(status, 204 | 304) || (100..200).contains(&status) {
                    Framing::Length(0)
                } else {
                    framing.unwrap_or(Framing::UntilClose)
                };
                break (status, framing, head_len);
            }
            httparse::Status::Partial => {
                anyhow::ensure!(conn.buf.len() < 64 * 1024, "response head over 64 KiB");
                fill(conn, false).await?;
            }
        }
    };
    conn.buf.advance(head_len);
    match framing {
        Framing::Length(len) => skip(conn, len).await?,
        Framing::UntilClose => {
            conn.closing = true;
            conn.buf.clear();
            while fill(conn, true).await? {
                conn.buf.clear();
            }
        }
        Framing::Chunked => read_chunked(conn).await?,
    }
    Ok(status)
}

/// Skips a chunked body, trailers included (sizes are parsed, data is discarded).
async fn read_chunked(conn: &mut Conn) -> anyhow::Result<()> {
    loop {
        let line_end = loop {
            if let Some(i) = conn.buf.windows(2).position(|w| w == b"\r\n") {
                break i;
            }
            anyhow::ensure!(conn.buf.len() < 4096, "chunk-size line over 4 KiB");
            fill(conn, false).await?;
        };
        let line = &conn.buf[..line_end];
        let digits = line.split(|b| *b == b';').next().unwrap_or_default();
        let size = std::str::from_utf8(digits)
            .ok()
            .and_then(|d| usize::from_str_radix(d.trim(), 16).ok())
            .context("bad chunk size")?;
        conn.buf.advance(line_end + 2);
        if size == 0 {
            // Trailers, if any, end with an empty line.
            loop {
                if let Some(i) = conn.buf.windows(2).position(|w| w == b"\r\n") {
                    conn.buf.advance(i + 2);
                    if i == 0 {
                        return Ok(());
                    }
                    continue;
                }
                fill(conn, false).await?;
            }
        }
        // The chunk's data and the CRLF after it.
        skip(conn, size + 2).await?;
    }
}

/// Reads and drops the next `len` bytes of the response.
async fn skip(conn: &mut Conn, mut len: usize) -> anyhow::Result<()> {
    while len > 0 {
        if conn.buf.is_empty() {
            fill(conn, false).await?;
        }
        let n = len.min(conn.buf.len());
        conn.buf.advance(n);
        len -= n;
    }
    Ok(())
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
            if spent || c.closing {
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
        let (start, outcome) = exchange(c, &plan, target).await;
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
            Outcome::Answered(status, wire_us) => {
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
                let status_max = second.max_us_by_status.entry(status).or_default();
                *status_max = (*status_max).max(us);
                if plan.late_us.is_some_and(|late| us > late) {
                    s.late += 1;
                    second.late += 1;
                }
                if start >= plan.warmup_until {
                    if wire_us.is_none() {
                        result.unstamped += 1;
                    }
                    let wire_us = wire_us.unwrap_or(us);
                    let w = result.wire.entry(status).or_insert_with(StatusStats::new);
                    w.latencies_us.saturating_record(wire_us.max(1));
                    w.max_us = w.max_us.max(wire_us);
                    if plan.late_us.is_some_and(|late| wire_us > late) {
                        w.late += 1;
                    }
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
