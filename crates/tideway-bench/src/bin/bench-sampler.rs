//! Samples, at a fixed interval, the resident memory of processes, the gateway's Prometheus
//! `/metrics` and a bench service's `/stats`, and writes one CSV row per sample.
//!
//! Columns: `t_s` (seconds since start), `unix_s` (wall-clock time, to line samples up with
//! events the harness timestamps with `date +%s.%N`), then for every `--pid name=PID`
//! `<name>_rss_kib` (VmRSS of `/proc/PID/status`) and `<name>_cpu_wait_ms` (time its threads
//! have waited for a CPU since they started, from `schedstat`), then with `--metrics` the gateway's series
//! ([`METRIC_COLUMNS`]; counters summed over their labels, bytes in KiB), then with `--stats`
//! the `bench-slow-server` counters (`svc_in_flight`, `svc_started`, `svc_completed`,
//! `svc_cancelled`). A reading that failed is an empty cell. Rows are flushed as they are
//! written, so the file can be read while the sampler runs.
//!
//! Runs until `--duration-secs` has passed, every watched process has exited, or SIGTERM/Ctrl-C.
//!
//! ```text
//! bench-sampler --pid gateway=1234 --metrics http://127.0.0.1:9901/metrics \
//!     --stats http://127.0.0.1:7001/stats --interval-ms 200 --out samples.csv
//! ```

use std::io::Write as _;
use std::net::{SocketAddr, ToSocketAddrs as _};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use tideway_bench::procfs;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// Gateway series sampled with `--metrics`: (column, metric name, divisor). Counters and
/// labelled gauges are summed over their label sets.
const METRIC_COLUMNS: [(&str, &str, f64); 10] = [
    ("pending_rpc_calls", "tideway_pending_rpc_calls", 1.0),
    ("in_flight_requests", "tideway_in_flight_requests", 1.0),
    ("open_connections", "tideway_open_connections", 1.0),
    ("shed_total", "tideway_shed_total", 1.0),
    ("requests_total", "tideway_requests_total", 1.0),
    ("memory_used_kib", "tideway_memory_used_bytes", 1024.0),
    (
        "allocator_allocated_kib",
        "tideway_allocator_allocated_bytes",
        1024.0,
    ),
    (
        "allocator_resident_kib",
        "tideway_allocator_resident_bytes",
        1024.0,
    ),
    ("scheduler_stalls", "tideway_scheduler_stalls_total", 1.0),
    (
        "worst_stall_ms",
        "tideway_scheduler_worst_stall_seconds",
        0.001,
    ),
];
/// Counters of `bench-slow-server`'s `/stats` sampled with `--stats`: (column, JSON key).
const STATS_COLUMNS: [(&str, &str); 4] = [
    ("svc_in_flight", "in_flight"),
    ("svc_started", "started"),
    ("svc_completed", "completed"),
    ("svc_cancelled", "cancelled"),
];
/// A scrape that takes longer than this leaves its cells empty.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(1);
/// Largest response read from a scraped endpoint.
const MAX_SCRAPE_BYTES: usize = 4 << 20;

/// Command line.
#[derive(Debug, Parser)]
struct Args {
    /// `name=PID`: a process whose VmRSS is sampled (repeatable).
    #[arg(long = "pid")]
    pids: Vec<String>,
    /// URL of the gateway's Prometheus `/metrics`.
    #[arg(long)]
    metrics: Option<String>,
    /// URL of a bench service's `/stats` (JSON counters).
    #[arg(long)]
    stats: Option<String>,
    /// Time between samples.
    #[arg(long, default_value_t = 200)]
    interval_ms: u64,
    /// Stop after this many seconds (default: on SIGTERM, or when the processes are gone).
    #[arg(long)]
    duration_secs: Option<f64>,
    /// CSV file to write (default: stdout).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// An `http://host:port/path` URL, resolved.
#[derive(Debug)]
struct Endpoint {
    addr: SocketAddr,
    authority: String,
    path: String,
}

impl Endpoint {
    fn parse(url: &str) -> anyhow::Result<Endpoint> {
        let uri: http::Uri = url.parse().with_context(|| format!("bad URL {url}"))?;
        anyhow::ensure!(uri.scheme_str() == Some("http"), "{url}: http:// only");
        let authority = uri
            .authority()
            .with_context(|| format!("{url}: no host:port"))?
            .as_str()
            .to_owned();
        let addr = authority
            .to_socket_addrs()
            .with_context(|| format!("cannot resolve {authority}"))?
            .next()
            .with_context(|| format!("{authority} resolves to nothing"))?;
        let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
        Ok(Endpoint {
            addr,
            authority,
            path,
        })
    }

    /// GET over a fresh connection (`Connection: close`); the body of a 200, else `None`.
    async fn get(&self) -> Option<String> {
        let fetch = async {
            let mut s = TcpStream::connect(self.addr).await.ok()?;
            let req = format!(
                "GET {} HTTP/1.1\r\nhost: {}\r\nconnection: close\r\n\r\n",
                self.path, self.authority
            );
            s.write_all(req.as_bytes()).await.ok()?;
            let mut buf = Vec::new();
            s.take(MAX_SCRAPE_BYTES as u64)
                .read_to_end(&mut buf)
                .await
                .ok()?;
            let text = String::from_utf8(buf).ok()?;
            let (head, body) = text.split_once("\r\n\r\n")?;
            let ok = head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200");
            let chunked = head
                .to_ascii_lowercase()
                .contains("transfer-encoding: chunked");
            ok.then(|| {
                if chunked {
                    dechunk(body)
                } else {
                    body.to_owned()
                }
            })
        };
        tokio::time::timeout(SCRAPE_TIMEOUT, fetch).await.ok()?
    }
}

/// Joins the chunks of a chunked body (enough for the small bodies scraped here).
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = size.split(';').next().unwrap_or("").trim();
        let Ok(n) = usize::from_str_radix(size, 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].strip_prefix("\r\n").unwrap_or(&rest[n..]);
    }
    out
}

/// Sum of the samples of `name` (any labels) in Prometheus text; `None` when there is none.
fn metric_sum(text: &str, name: &str) -> Option<f64> {
    let mut sum = None;
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let value = if rest.starts_with('{') {
            rest.rsplit_once('}').map(|(_, v)| v)
        } else if rest.starts_with(' ') {
            Some(rest)
        } else {
            None // a longer name with this one as prefix
        };
        if let Some(v) = value.and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok()) {
            *sum.get_or_insert(0.0) += v;
        }
    }
    sum
}

fn cell(v: Option<f64>) -> String {
    match v {
        Some(v) if v.fract() == 0.0 && v.abs() < 1e15 => format!("{}", v as i64),
        Some(v) => format!("{v:.1}"),
        None => String::new(),
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tideway_bench::block_on_current_thread(run(args))?
}

async fn run(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(args.interval_ms > 0, "--interval-ms must be at least 1");
    let mut pids = Vec::new();
    for p in &args.pids {
        let (name, pid) = p
            .split_once('=')
            .with_context(|| format!("--pid {p}: expected name=PID"))?;
        let pid: u32 = pid.parse().with_context(|| format!("--pid {p}: bad PID"))?;
        pids.push((name.to_owned(), pid));
    }
    let metrics = args.metrics.as_deref().map(Endpoint::parse).transpose()?;
    let stats = args.stats.as_deref().map(Endpoint::parse).transpose()?;
    let mut out: Box<dyn std::io::Write> = match &args.out {
        Some(path) => Box::new(
            std::fs::File::create(path).with_context(|| format!("cannot create {path:?}"))?,
        ),
        None => Box::new(std::io::stdout()),
    };

    let mut header = vec!["t_s".to_owned(), "unix_s".to_owned()];
    for (name, _) in &pids {
        header.push(format!("{name}_rss_kib"));
        header.push(format!("{name}_cpu_wait_ms"));
    }
    if metrics.is_some() {
        header.extend(METRIC_COLUMNS.iter().map(|(c, _, _)| (*c).to_owned()));
    }
    if stats.is_some() {
        header.extend(STATS_COLUMNS.iter().map(|(c, _)| (*c).to_owned()));
    }
    writeln!(out, "{}", header.join(","))?;
    out.flush()?;

    let term = tideway_bench::register_sigterm()?;
    let stop = tideway_bench::stop_signal(term);
    tokio::pin!(stop);
    let started = Instant::now();
    let end = args
        .duration_secs
        .map(|s| started + Duration::from_secs_f64(s));
    let mut tick = tokio::time::interval(Duration::from_millis(args.interval_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = &mut stop => return Ok(()),
        }
        if end.is_some_and(|e| Instant::now() >= e) {
            return Ok(());
        }
        let t = started.elapsed().as_secs_f64();
        let unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let mut row = vec![format!("{t:.3}"), format!("{unix:.3}")];
        let mut alive = pids.is_empty();
        for (_, pid) in &pids {
            let rss = procfs::rss_bytes(*pid).ok();
            alive |= rss.is_some();
            row.push(cell(rss.map(|b| (b / 1024) as f64)));
            let wait = procfs::run_delay_ns(*pid).ok();
            row.push(cell(wait.map(|ns| (ns / 1_000_000) as f64)));
        }
        if !alive {
            return Ok(());
        }
        if let Some(m) = &metrics {
            let text = m.get().await;
            for (_, name, div) in METRIC_COLUMNS {
                let v = text.as_deref().and_then(|t| metric_sum(t, name));
                row.push(cell(v.map(|v| (v / div).round())));
            }
        }
        if let Some(s) = &stats {
            let json: Option<serde_json::Value> = s
                .get()
                .await
                .and_then(|body| serde_json::from_str(&body).ok());
            for (_, key) in STATS_COLUMNS {
                row.push(cell(json.as_ref().and_then(|j| j[key].as_f64())));
            }
        }
        writeln!(out, "{}", row.join(","))?;
        out.flush()?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_summed_over_labels_and_prefixes_do_not_match() {
        let text = "# HELP tideway_shed_total x\n# TYPE tideway_shed_total counter\n\
            tideway_shed_total{reason=\"memory\"} 3\ntideway_shed_total{reason=\"route_in_flight\"} 4\n\
            tideway_pending_rpc_calls 0\ntideway_pending_rpc_calls_extra 9\n";
        assert_eq!(metric_sum(text, "tideway_shed_total"), Some(7.0));
        assert_eq!(metric_sum(text, "tideway_pending_rpc_calls"), Some(0.0));
        assert_eq!(metric_sum(text, "tideway_open_connections"), None);
    }

    #[test]
    fn chunked_bodies_are_joined() {
        assert_eq!(dechunk("3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"), "abcde");
    }
}
