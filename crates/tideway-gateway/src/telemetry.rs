//! What the gateway tells operators: Prometheus metrics, a scheduler-stall watchdog, process and
//! allocator memory.
//!
//! Metrics are recorded with the `metrics` crate and rendered by `metrics-exporter-prometheus`.
//! Label values come from bounded sets only (route templates, HTTP status codes, shed reasons),
//! never from request input, so the number of series cannot grow with traffic.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Requests answered, by route template and status code.
pub const REQUESTS_TOTAL: &str = "tideway_requests_total";
/// Request latency in seconds, by route template.
pub const REQUEST_DURATION: &str = "tideway_request_duration_seconds";
/// Requests or connections refused to protect the gateway, by reason.
pub const SHED_TOTAL: &str = "tideway_shed_total";
/// Requests answered with their route's fallback because every attempt failed.
pub const FALLBACKS_TOTAL: &str = "tideway_fallbacks_total";
/// Label value for requests that matched no route.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// Latency buckets in seconds: 1 ms to 30 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// How often the stall probe wakes up.
pub const STALL_PROBE_PERIOD: Duration = Duration::from_millis(50);
/// A probe that wakes up this much later than asked counts as a stall: some task held a worker
/// thread instead of yielding (the failure that took the original gateway down).
pub const STALL_THRESHOLD: Duration = Duration::from_millis(100);

/// How often recorded histogram samples are folded into their buckets.
pub const METRICS_UPKEEP_PERIOD: Duration = Duration::from_secs(1);

static PROMETHEUS: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process-wide Prometheus recorder, installed on first use. Later calls return the same
/// handle, so several gateways in one process (tests) share one registry. Its histogram
/// samples are folded by each running gateway's upkeep ([`spawn_upkeep`]).
pub fn prometheus() -> &'static PrometheusHandle {
    PROMETHEUS.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(REQUEST_DURATION.into()), LATENCY_BUCKETS)
            .expect("the bucket list is not empty")
            .build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed by an embedding program; then its
        // registry gets the samples and this handle renders only what it sees.
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!(
                "a metrics recorder was already installed; /metrics shows only Tideway's own gauges"
            );
        }
        describe();
        handle
    })
}

/// Starts the metrics upkeep on the current runtime; it stops when `stop` is cancelled.
///
/// The recorder keeps every histogram sample until "upkeep" folds it into the buckets; without
/// it samples pile up between scrapes, and forever when nobody scrapes: memory growing with
/// traffic, the very failure this gateway exists to prevent. Each pass also samples the
/// dashboard's memory history when one is due.
///
/// A task on the gateway's runtime, not a thread of its own: a second thread in the process
/// makes every socket call of a one-worker gateway take the kernel's shared-file-table path
/// (see BENCHMARKS.md, "A one-thread process"). A pass folds the samples of the last second
/// (one per request) and, every [`crate::history::MEMORY_SAMPLE_PERIOD`], reads
/// `/proc/self/status` (memory-backed, no disk). Several gateways in one process (tests) each
/// run one; a pass with nothing new to fold does nothing.
pub(crate) fn spawn_upkeep(stop: CancellationToken) {
    spawn_every(METRICS_UPKEEP_PERIOD, stop, || {
        if let Some(handle) = PROMETHEUS.get() {
            handle.run_upkeep();
        }
        crate::history::upkeep();
    });
}

/// Runs `work` on the current runtime every `period` (the first time at once; a late tick is
/// not caught up) until `stop` is cancelled.
pub(crate) fn spawn_every(
    period: Duration,
    stop: CancellationToken,
    mut work: impl FnMut() + Send + 'static,
) {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(period);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = every.tick() => {}
            }
            work();
        }
    });
}

/// HELP text for every series (promtool requires it).
fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        REQUESTS_TOTAL,
        "Requests answered, by route template and status code."
    );
    describe_histogram!(
        REQUEST_DURATION,
        Unit::Seconds,
        "Time from request head to response head, by route template."
    );
    describe_counter!(
        SHED_TOTAL,
        "Requests or connections refused to protect the gateway, by reason."
    );
    describe_counter!(
        FALLBACKS_TOTAL,
        "Requests answered with their route's fallback because every attempt failed."
    );
    tideway_cluster::metrics::describe();
    tideway_edge::describe_metrics();
    describe_gauge!("tideway_in_flight_requests", "Requests being served now.");
    describe_gauge!(
        "tideway_in_flight_limit",
        "Requests the gateway serves at once before it sheds."
    );
    describe_gauge!(
        "tideway_pending_rpc_calls",
        "RPC calls sent and waiting for a response."
    );
    describe_gauge!("tideway_open_connections", "Client connections open now.");
    describe_gauge!(
        "tideway_rpc_write_queue_frames",
        "Frames queued for RPC connection writers and not yet written (each queue is bounded)."
    );
    describe_gauge!(
        "tideway_rpc_connections",
        "Open connections to RPC service instances."
    );
    describe_gauge!(
        "tideway_parked_connections",
        "Idle HTTP/1.1 connections parked with no buffers."
    );
    describe_gauge!(
        "tideway_websocket_tunnels",
        "WebSocket tunnels open now (client connections spliced to an upstream)."
    );
    describe_counter!(
        "tideway_scheduler_stalls_total",
        "Times the stall probe woke up 100 ms or more late."
    );
    describe_gauge!(
        "tideway_scheduler_worst_stall_seconds",
        Unit::Seconds,
        "The latest the stall probe ever woke up."
    );
    describe_gauge!(
        "tideway_process_resident_memory_bytes",
        Unit::Bytes,
        "Resident set size of the process."
    );
    describe_gauge!(
        "tideway_allocator_allocated_bytes",
        Unit::Bytes,
        "Bytes the allocator has handed out and not had back."
    );
    describe_gauge!(
        "tideway_memory_budget_bytes",
        Unit::Bytes,
        "The configured memory budget."
    );
    describe_gauge!(
        "tideway_memory_used_bytes",
        Unit::Bytes,
        "Memory in use at the overload manager's last sample."
    );
    describe_gauge!(
        "tideway_held_body_bytes",
        Unit::Bytes,
        "Request and RPC reply body bytes held against the memory budget by requests in flight."
    );
    describe_gauge!(
        "tideway_memory_pressure",
        "Overload level: 0 normal, 1 elevated (idle connections closed), 2 shedding."
    );
    describe_gauge!(
        "tideway_routes",
        "Routes in the route table now (config file and registry)."
    );
    describe_gauge!(
        "tideway_route_conflicts",
        "Published routes left out of the route table because they collide with another."
    );
    describe_counter!(
        "tideway_route_table_updates_total",
        "Route tables built from registry changes."
    );
    describe_gauge!(
        "tideway_allocator_resident_bytes",
        Unit::Bytes,
        "Bytes of physical memory the allocator holds."
    );
}

/// Status codes whose request counters a route keeps at hand; others are looked up by name.
const COMMON_STATUSES: [u16; 20] = [
    200, 201, 202, 204, 301, 302, 304, 400, 401, 403, 404, 405, 408, 413, 429, 500, 502, 503, 504,
    499,
];

/// One route's request metrics: its label, latency histogram and per-status counters, registered
/// on first use and then recorded with an atomic operation, no lookup or formatting per request.
#[derive(Debug)]
pub struct RouteMetrics {
    label: metrics::SharedString,
    duration: OnceLock<metrics::Histogram>,
    by_status: [OnceLock<metrics::Counter>; COMMON_STATUSES.len()],
}

impl RouteMetrics {
    /// Metrics labelled `route="<label>"`.
    pub fn new(label: String) -> Self {
        RouteMetrics {
            label: label.into(),
            duration: OnceLock::new(),
            by_status: std::array::from_fn(|_| OnceLock::new()),
        }
    }

    /// The metrics of requests that matched no route.
    pub fn unmatched() -> &'static RouteMetrics {
        static UNMATCHED: OnceLock<RouteMetrics> = OnceLock::new();
        UNMATCHED.get_or_init(|| RouteMetrics::new(UNMATCHED_ROUTE.to_owned()))
    }

    /// The route's label: method and path template.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Counts one answered request and its latency.
    pub fn record(&self, status: http::StatusCode, elapsed: Duration) {
        let code = status.as_u16();
        match COMMON_STATUSES.iter().position(|&c| c == code) {
            Some(i) => self.by_status[i]
                .get_or_init(|| self.status_counter(status))
                .increment(1),
            None => self.status_counter(status).increment(1),
        }
        self.duration
            .get_or_init(|| metrics::histogram!(REQUEST_DURATION, "route" => self.label.clone()))
            .record(elapsed.as_secs_f64());
    }

    fn status_counter(&self, status: http::StatusCode) -> metrics::Counter {
        metrics::counter!(REQUESTS_TOTAL, "route" => self.label.clone(), "status" => status.as_str().to_owned())
    }
}

/// Counts scheduler stalls seen by a probe task.
#[derive(Debug, Default)]
pub struct StallWatchdog {
    stalls: AtomicU64,
    worst_micros: AtomicU64,
}

impl StallWatchdog {
    /// Starts the probe on the current runtime; it stops when `stop` is cancelled.
    pub fn spawn(stop: CancellationToken) -> Arc<StallWatchdog> {
        let watchdog = Arc::new(StallWatchdog::default());
        let probe = Arc::clone(&watchdog);
        tokio::spawn(async move {
            loop {
                let asked = Instant::now() + STALL_PROBE_PERIOD;
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep_until(asked) => {}
                }
                probe.record_lateness(Instant::now().saturating_duration_since(asked));
            }
        });
        watchdog
    }

    /// Records how late the probe woke up.
    pub fn record_lateness(&self, late: Duration) {
        let micros = late.as_micros().min(u128::from(u64::MAX)) as u64;
        self.worst_micros.fetch_max(micros, Ordering::Relaxed);
        if late >= STALL_THRESHOLD {
            self.stalls.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                late_ms = late.as_millis() as u64,
                "scheduler stall: a task held a worker thread; requests on it were not served"
            );
        }
    }

    /// Stalls seen so far.
    pub fn stalls(&self) -> u64 {
        self.stalls.load(Ordering::Relaxed)
    }

    /// The latest the probe ever woke up.
    pub fn worst(&self) -> Duration {
        Duration::from_micros(self.worst_micros.load(Ordering::Relaxed))
    }
}

/// Reports allocator statistics: `(allocated, resident)` bytes. The binary provides one for its
/// allocator (jemalloc); without one the metrics are left out.
pub type AllocatorStats = Arc<dyn Fn() -> Option<(u64, u64)> + Send + Sync>;

/// This process's resident set size in bytes, from `/proc/self/status` (Linux only).
pub fn process_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stalls_are_counted_above_the_threshold_and_the_worst_is_kept() {
        let w = StallWatchdog::default();
        w.record_lateness(Duration::from_millis(3));
        assert_eq!(w.stalls(), 0);
        w.record_lateness(Duration::from_millis(250));
        w.record_lateness(Duration::from_millis(120));
        assert_eq!(w.stalls(), 2);
        assert_eq!(w.worst(), Duration::from_millis(250));
    }

    #[tokio::test]
    async fn the_probe_sees_a_blocked_worker() {
        let stop = CancellationToken::new();
        let w = StallWatchdog::spawn(stop.clone());
        tokio::time::sleep(STALL_PROBE_PERIOD / 2).await;
        // Block the only worker thread of this current-thread runtime, as a handler that waits
        // synchronously on I/O would.
        std::thread::sleep(Duration::from_millis(300));
        tokio::time::sleep(STALL_PROBE_PERIOD * 2).await;
        stop.cancel();
        assert!(w.stalls() >= 1, "stall not seen");
        assert!(w.worst() >= Duration::from_millis(150), "{:?}", w.worst());
    }

    #[test]
    fn rss_is_read_from_proc() {
        if cfg!(target_os = "linux") {
            assert!(process_rss_bytes().unwrap() > 1024 * 1024);
        }
    }
}
