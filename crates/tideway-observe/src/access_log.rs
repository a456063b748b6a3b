//! Access logs: one line per request, formatted and written by a dedicated thread.
//!
//! The request path only moves an [`AccessRecord`] into a bounded channel with `try_send`; when
//! the writer falls behind and the channel is full, the line is dropped and counted in
//! `tideway_access_log_dropped_total`, so a slow disk never slows requests. The writer drains
//! what is queued, writes it through one buffer and flushes when the queue is empty.

use std::fmt::Write as _;
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::config::{AccessLogConfig, AccessLogFormat};
use crate::error::ObserveError;

/// Lines dropped because the writer's queue was full.
pub const ACCESS_LOG_DROPPED_TOTAL: &str = "tideway_access_log_dropped_total";
/// Lines waiting for the writer.
pub const ACCESS_LOG_QUEUED: &str = "tideway_access_log_queued";
/// Write errors of the access log output.
pub const ACCESS_LOG_WRITE_ERRORS_TOTAL: &str = "tideway_access_log_write_errors_total";
/// Buffer of the writer between flushes.
const WRITE_BUFFER_BYTES: usize = 64 * 1024;

/// Where a request went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upstream {
    /// The RPC instance of the last attempt.
    Instance(SocketAddr),
    /// An HTTP upstream's base URL.
    Url(Arc<str>),
}

/// One request, as logged.
#[derive(Debug, Clone)]
pub struct AccessRecord {
    /// When the request arrived.
    pub time: SystemTime,
    /// The request id (`x-request-id`).
    pub request_id: String,
    /// The client's address.
    pub client: SocketAddr,
    /// HTTP method.
    pub method: http::Method,
    /// Request path (no query string: it may carry secrets).
    pub path: String,
    /// HTTP version.
    pub version: http::Version,
    /// The matched route's label (`GET /api/x/{id}`); `None` when no route matched.
    pub route: Option<String>,
    /// The instance or upstream that answered, when one was called.
    pub upstream: Option<Upstream>,
    /// Response status.
    pub status: u16,
    /// Request body bytes read.
    pub bytes_in: u64,
    /// Response body bytes sent.
    pub bytes_out: u64,
    /// From arrival to the last response byte handed to the connection.
    pub duration: Duration,
    /// The trace id, when tracing is on.
    pub trace_id: Option<String>,
    /// The client went away before the response was complete.
    pub aborted: bool,
}

enum Message {
    Line(Box<AccessRecord>),
    Flush(oneshot::Sender<()>),
}

/// The access log: a bounded queue and the thread that writes it.
#[derive(Debug)]
pub struct AccessLog {
    tx: mpsc::Sender<Message>,
    dropped: AtomicU64,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Message::Line(r) => f.debug_tuple("Line").field(r).finish(),
            Message::Flush(_) => f.write_str("Flush"),
        }
    }
}

impl AccessLog {
    /// Opens the output and starts the writer thread. The thread ends when the log is dropped,
    /// after writing what was queued.
    pub fn start(config: &AccessLogConfig) -> Result<AccessLog, ObserveError> {
        let out: Box<dyn Write + Send> = match config.output.as_str() {
            "stdout" => Box::new(io::stdout()),
            "stderr" => Box::new(io::stderr()),
            path => Box::new(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| ObserveError::AccessLog(format!("cannot open {path}: {e}")))?,
            ),
        };
        Self::with_writer(out, config.format, config.buffer)
    }

    /// An access log writing to `out`.
    pub fn with_writer(
        out: Box<dyn Write + Send>,
        format: AccessLogFormat,
        buffer: usize,
    ) -> Result<AccessLog, ObserveError> {
        let (tx, rx) = mpsc::channel(buffer.max(1));
        std::thread::Builder::new()
            .name("tideway-access-log".into())
            .spawn(move || write_loop(rx, out, format, buffer))
            .map_err(|e| ObserveError::AccessLog(format!("cannot start the writer: {e}")))?;
        Ok(AccessLog {
            tx,
            dropped: AtomicU64::new(0),
        })
    }

    /// Queues a line without waiting; drops (and counts) it when the queue is full.
    pub fn log(&self, record: AccessRecord) {
        if self.tx.try_send(Message::Line(Box::new(record))).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            metrics::counter!(ACCESS_LOG_DROPPED_TOTAL).increment(1);
        }
    }

    /// Lines dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Waits (at most `timeout`) until every line queued before this call is written and
    /// flushed. `false` when that did not happen in time.
    pub async fn flush(&self, timeout: Duration) -> bool {
        let (done, written) = oneshot::channel();
        let flushed = async {
            self.tx.send(Message::Flush(done)).await.ok()?;
            written.await.ok()
        };
        matches!(tokio::time::timeout(timeout, flushed).await, Ok(Some(())))
    }
}

fn write_loop(
    mut rx: mpsc::Receiver<Message>,
    out: Box<dyn Write + Send>,
    format: AccessLogFormat,
    capacity: usize,
) {
    let mut out = io::BufWriter::with_capacity(WRITE_BUFFER_BYTES, out);
    let mut line = String::with_capacity(512);
    let mut waiting: Vec<oneshot::Sender<()>> = Vec::new();
    let queued = metrics::gauge!(ACCESS_LOG_QUEUED);
    let mut handle = |msg: Message, out: &mut io::BufWriter<_>, waiting: &mut Vec<_>| match msg {
        Message::Line(record) => {
            line.clear();
            format_record(&record, format, &mut line);
            if let Err(e) = out.write_all(line.as_bytes()) {
                write_failed(&e);
            }
        }
        Message::Flush(done) => waiting.push(done),
    };
    while let Some(msg) = rx.blocking_recv() {
        handle(msg, &mut out, &mut waiting);
        // Everything queued now goes out in this batch; the batch is bounded so a steady stream
        // still gets flushed.
        for _ in 0..capacity {
            match rx.try_recv() {
                Ok(msg) => handle(msg, &mut out, &mut waiting),
                Err(_) => break,
            }
        }
        if let Err(e) = out.flush() {
            write_failed(&e);
        }
        for done in waiting.drain(..) {
            let _ = done.send(());
        }
        queued.set(rx.len() as f64);
    }
    let _ = out.flush();
}

fn write_failed(e: &io::Error) {
    metrics::counter!(ACCESS_LOG_WRITE_ERRORS_TOTAL).increment(1);
    tracing::warn!(error = %e, "cannot write the access log");
}

#[derive(Serialize)]
struct JsonLine<'a> {
    time: &'a str,
    request_id: &'a str,
    client: String,
    method: &'a str,
    path: &'a str,
    route: Option<&'a str>,
    upstream: Option<String>,
    status: u16,
    bytes_in: u64,
    bytes_out: u64,
    duration_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    trace_id: Option<&'a str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    aborted: bool,
}

fn upstream_text(u: &Upstream) -> String {
    match u {
        Upstream::Instance(addr) => addr.to_string(),
        Upstream::Url(url) => url.to_string(),
    }
}

/// Appends one line (with its newline) for `record` in `format`.
pub fn format_record(record: &AccessRecord, format: AccessLogFormat, out: &mut String) {
    let duration_ms = (record.duration.as_micros() as f64) / 1000.0;
    match format {
        AccessLogFormat::Json => {
            let time = rfc3339(record.time);
            let line = JsonLine {
                time: &time,
                request_id: &record.request_id,
                client: record.client.to_string(),
                method: record.method.as_str(),
                path: &record.path,
                route: record.route.as_deref(),
                upstream: record.upstream.as_ref().map(upstream_text),
                status: record.status,
                bytes_in: record.bytes_in,
                bytes_out: record.bytes_out,
                duration_ms,
                trace_id: record.trace_id.as_deref(),
                aborted: record.aborted,
            };
            // Serializing plain fields into a String cannot fail.
            if let Ok(json) = serde_json::to_string(&line) {
                out.push_str(&json);
            }
        }
        AccessLogFormat::Common => {
            // host ident authuser [date] "request" status bytes, then Tideway's fields.
            let _ = write!(
                out,
                "{} - - [{}] \"{} ",
                record.client.ip(),
                clf_time(record.time),
                record.method
            );
            push_escaped(out, &record.path);
            let _ = write!(
                out,
                " {:?}\" {} {} rid=",
                record.version, record.status, record.bytes_out,
            );
            push_escaped(out, &record.request_id);
            out.push_str(" route=\"");
            push_escaped(out, record.route.as_deref().unwrap_or("-"));
            let _ = write!(
                out,
                "\" upstream={} in={} ms={duration_ms:.3}",
                record
                    .upstream
                    .as_ref()
                    .map_or_else(|| "-".to_owned(), upstream_text),
                record.bytes_in,
            );
            if let Some(trace) = &record.trace_id {
                let _ = write!(out, " trace={trace}");
            }
            if record.aborted {
                out.push_str(" aborted");
            }
        }
    }
    out.push('\n');
}

/// Copies `s`, escaping quotes, backslashes and non-printable bytes (`\xNN`).
fn push_escaped(out: &mut String, s: &str) {
    for b in s.bytes() {
        match b {
            b'"' | b'\\' => {
                out.push('\\');
                out.push(b as char);
            }
            0x20..=0x7e => out.push(b as char),
            _ => {
                let _ = write!(out, "\\x{b:02x}");
            }
        }
    }
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (Howard Hinnant's
/// `civil_from_days`).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

struct Utc {
    year: i64,
    month: u32,
    day: u32,
    hour: u64,
    minute: u64,
    second: u64,
    millis: u32,
}

fn utc(time: SystemTime) -> Utc {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (year, month, day) = civil((secs / 86_400) as i64);
    let rem = secs % 86_400;
    Utc {
        year,
        month,
        day,
        hour: rem / 3600,
        minute: rem % 3600 / 60,
        second: rem % 60,
        millis: since.subsec_millis(),
    }
}

/// `2024-05-01T13:55:36.123Z`.
fn rfc3339(time: SystemTime) -> String {
    let t = utc(time);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year, t.month, t.day, t.hour, t.minute, t.second, t.millis
    )
}

/// `01/May/2024:13:55:36 +0000`.
fn clf_time(time: SystemTime) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let t = utc(time);
    format!(
        "{:02}/{}/{:04}:{:02}:{:02}:{:02} +0000",
        t.day,
        MONTHS[(t.month as usize - 1) % 12],
        t.year,
        t.hour,
        t.minute,
        t.second
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> AccessRecord {
        AccessRecord {
            time: UNIX_EPOCH + Duration::from_millis(1_714_571_736_123),
            request_id: "abc".into(),
            client: "127.0.0.1:5000".parse().unwrap(),
            method: http::Method::GET,
            path: "/api/x/\"1\"".into(),
            version: http::Version::HTTP_11,
            route: Some("GET /api/x/{id}".into()),
            upstream: Some(Upstream::Instance("127.0.0.1:7070".parse().unwrap())),
            status: 200,
            bytes_in: 0,
            bytes_out: 12,
            duration: Duration::from_micros(1500),
            trace_id: None,
            aborted: false,
        }
    }

    #[test]
    fn times_are_utc() {
        assert_eq!(rfc3339(record().time), "2024-05-01T13:55:36.123Z");
        assert_eq!(clf_time(record().time), "01/May/2024:13:55:36 +0000");
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        // A leap day.
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00.000Z"
        );
    }

    #[test]
    fn json_lines_parse_and_carry_every_field() {
        let mut line = String::new();
        format_record(&record(), AccessLogFormat::Json, &mut line);
        assert!(line.ends_with('\n'));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["request_id"], "abc");
        assert_eq!(v["route"], "GET /api/x/{id}");
        assert_eq!(v["upstream"], "127.0.0.1:7070");
        assert_eq!(v["status"], 200);
        assert_eq!(v["bytes_out"], 12);
        assert_eq!(v["duration_ms"], 1.5);
        assert_eq!(v["path"], "/api/x/\"1\"");
    }

    #[test]
    fn common_lines_escape_quotes() {
        let mut line = String::new();
        format_record(&record(), AccessLogFormat::Common, &mut line);
        assert_eq!(
            line,
            "127.0.0.1 - - [01/May/2024:13:55:36 +0000] \"GET /api/x/\\\"1\\\" HTTP/1.1\" 200 12 \
             rid=abc route=\"GET /api/x/{id}\" upstream=127.0.0.1:7070 in=0 ms=1.500\n"
        );
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_counts_instead_of_waiting() {
        // A writer that blocks until released: the queue fills.
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        struct Stuck(std::sync::mpsc::Receiver<()>);
        impl Write for Stuck {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                Ok(buf.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                let _ = self.0.recv();
                Ok(())
            }
        }
        let log =
            AccessLog::with_writer(Box::new(Stuck(release_rx)), AccessLogFormat::Json, 4).unwrap();
        let started = std::time::Instant::now();
        for _ in 0..100 {
            log.log(record());
        }
        assert!(started.elapsed() < Duration::from_secs(1), "never waits");
        // At most the queue (4) plus the batch in the writer's hands were taken.
        assert!(log.dropped() >= 100 - 4 - 5, "dropped {}", log.dropped());
        drop(release_tx);
    }
}
