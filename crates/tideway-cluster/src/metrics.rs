//! The cluster's metrics: every decision (pick, ejection, probe, drain, breaker opening, retry,
//! hedge, budget refusal, shed) is counted. Labels come from bounded sets only: the service name
//! and fixed reason strings, never instance addresses.
//!
//! Handles are registered when a [`Cluster`](crate::Cluster) is made, so install the recorder
//! first; [`describe`] gives every series its HELP text (call it after installing the recorder;
//! `Cluster::new` calls it too).

use metrics::{Counter, Gauge, counter, gauge};

/// Endpoints picked for an attempt, by service.
pub const LB_PICKS_TOTAL: &str = "tideway_lb_picks_total";
/// Instances ejected, by service and reason (`consecutive_failures`, `failure_rate`,
/// `probe_failed`).
pub const OUTLIER_EJECTIONS_TOTAL: &str = "tideway_outlier_ejections_total";
/// Probe calls to instances on probation, by service and result (`success`, `failure`).
pub const OUTLIER_PROBES_TOTAL: &str = "tideway_outlier_probes_total";
/// Instances that stopped taking new calls, by service and reason (`goaway`, `removed`).
pub const ENDPOINT_DRAINS_TOTAL: &str = "tideway_endpoint_drains_total";
/// Service circuit-breaker openings, by service.
pub const BREAKER_OPENS_TOTAL: &str = "tideway_breaker_opens_total";
/// Retries, by service and reason (`not_sent`, `overloaded`, `unavailable`,
/// `connection_lost`).
pub const RETRIES_TOTAL: &str = "tideway_retries_total";
/// Hedged attempts, by service.
pub const HEDGES_TOTAL: &str = "tideway_hedges_total";
/// Retries or hedges refused by the retry budget, by service.
pub const RETRY_BUDGET_EXHAUSTED_TOTAL: &str = "tideway_retry_budget_exhausted_total";
/// Calls failed without an attempt, by service and reason (`no_endpoint`, `breaker_open`,
/// `wait_queue_full`).
pub const CLUSTER_SHED_TOTAL: &str = "tideway_cluster_shed_total";
/// Picks made in panic mode: too few healthy instances, so ejected ones took calls too.
pub const PANIC_PICKS_TOTAL: &str = "tideway_cluster_panic_picks_total";
/// Calls waiting for an endpoint now, by service.
pub const CLUSTER_WAITING_CALLS: &str = "tideway_cluster_waiting_calls";
/// Endpoints by service and state (`healthy`, `ejected`, `probation`, `draining`), as of the
/// last [`Cluster::record_gauges`](crate::Cluster::record_gauges).
pub const CLUSTER_ENDPOINTS: &str = "tideway_cluster_endpoints";

/// HELP text for every series (promtool requires it).
pub fn describe() {
    use metrics::{describe_counter, describe_gauge};
    describe_counter!(
        LB_PICKS_TOTAL,
        "Endpoints picked by the load balancer, per attempt"
    );
    describe_counter!(
        OUTLIER_EJECTIONS_TOTAL,
        "Instances ejected by passive health checking, by reason"
    );
    describe_counter!(
        OUTLIER_PROBES_TOTAL,
        "Probe calls to instances on probation after an ejection, by result"
    );
    describe_counter!(
        ENDPOINT_DRAINS_TOTAL,
        "Instances that stopped taking new calls (GoAway received or removed from the registry)"
    );
    describe_counter!(
        BREAKER_OPENS_TOTAL,
        "Openings of a service's circuit breaker (failure rate over the sliding window)"
    );
    describe_counter!(RETRIES_TOTAL, "Retried attempts, by reason");
    describe_counter!(HEDGES_TOTAL, "Hedged attempts of idempotent calls");
    describe_counter!(
        PANIC_PICKS_TOTAL,
        "Picks of ejected instances in panic mode (too few healthy instances left to trust ejection)"
    );
    describe_counter!(
        RETRY_BUDGET_EXHAUSTED_TOTAL,
        "Retries or hedges refused because the retry budget was spent"
    );
    describe_counter!(
        CLUSTER_SHED_TOTAL,
        "Calls failed fast without an attempt, by reason"
    );
    describe_gauge!(
        CLUSTER_WAITING_CALLS,
        "Calls waiting for an endpoint to become available"
    );
    describe_gauge!(CLUSTER_ENDPOINTS, "Endpoints of a service by state");
}

/// Why an instance was ejected.
#[derive(Debug, Clone, Copy)]
pub(crate) enum EjectReason {
    ConsecutiveFailures = 0,
    FailureRate = 1,
    ProbeFailed = 2,
}

impl EjectReason {
    pub(crate) const ALL: [EjectReason; 3] = [
        EjectReason::ConsecutiveFailures,
        EjectReason::FailureRate,
        EjectReason::ProbeFailed,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            EjectReason::ConsecutiveFailures => "consecutive_failures",
            EjectReason::FailureRate => "failure_rate",
            EjectReason::ProbeFailed => "probe_failed",
        }
    }
}

/// Why an attempt was retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RetryReason {
    /// The call never reached the instance (no connection, refused connect, GoAway cut-off).
    NotSent = 0,
    /// The instance (or the local connection limit) refused it.
    Overloaded = 1,
    /// The instance answered `Unavailable`.
    Unavailable = 2,
    /// The connection died with an idempotent call in flight.
    ConnectionLost = 3,
}

impl RetryReason {
    pub(crate) const ALL: [RetryReason; 4] = [
        RetryReason::NotSent,
        RetryReason::Overloaded,
        RetryReason::Unavailable,
        RetryReason::ConnectionLost,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            RetryReason::NotSent => "not_sent",
            RetryReason::Overloaded => "overloaded",
            RetryReason::Unavailable => "unavailable",
            RetryReason::ConnectionLost => "connection_lost",
        }
    }
}

/// Why a call failed without an attempt.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ShedReason {
    NoEndpoint = 0,
    BreakerOpen = 1,
    WaitQueueFull = 2,
}

impl ShedReason {
    pub(crate) const ALL: [ShedReason; 3] = [
        ShedReason::NoEndpoint,
        ShedReason::BreakerOpen,
        ShedReason::WaitQueueFull,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ShedReason::NoEndpoint => "no_endpoint",
            ShedReason::BreakerOpen => "breaker_open",
            ShedReason::WaitQueueFull => "wait_queue_full",
        }
    }
}

/// Endpoint states as gauge labels, in `EndpointState` order.
pub(crate) const STATE_LABELS: [&str; 4] = ["healthy", "ejected", "probation", "draining"];

/// One cluster's metric handles, registered once.
#[derive(Debug)]
pub(crate) struct ClusterMetrics {
    pub(crate) picks: Counter,
    pub(crate) ejections: [Counter; 3],
    pub(crate) probe_success: Counter,
    pub(crate) probe_failure: Counter,
    pub(crate) drain_goaway: Counter,
    pub(crate) drain_removed: Counter,
    pub(crate) breaker_opens: Counter,
    pub(crate) retries: [Counter; 4],
    pub(crate) hedges: Counter,
    pub(crate) budget_exhausted: Counter,
    pub(crate) shed: [Counter; 3],
    pub(crate) waiting: Gauge,
    pub(crate) endpoints: [Gauge; 4],
}

impl ClusterMetrics {
    pub(crate) fn new(service: &str) -> Self {
        let s = service.to_owned();
        ClusterMetrics {
            picks: counter!(LB_PICKS_TOTAL, "service" => s.clone()),
            ejections: EjectReason::ALL.map(|r| {
                counter!(OUTLIER_EJECTIONS_TOTAL, "service" => s.clone(), "reason" => r.as_str())
            }),
            probe_success: counter!(OUTLIER_PROBES_TOTAL, "service" => s.clone(), "result" => "success"),
            probe_failure: counter!(OUTLIER_PROBES_TOTAL, "service" => s.clone(), "result" => "failure"),
            drain_goaway: counter!(ENDPOINT_DRAINS_TOTAL, "service" => s.clone(), "reason" => "goaway"),
            drain_removed: counter!(ENDPOINT_DRAINS_TOTAL, "service" => s.clone(), "reason" => "removed"),
            breaker_opens: counter!(BREAKER_OPENS_TOTAL, "service" => s.clone()),
            retries: RetryReason::ALL
                .map(|r| counter!(RETRIES_TOTAL, "service" => s.clone(), "reason" => r.as_str())),
            hedges: counter!(HEDGES_TOTAL, "service" => s.clone()),
            budget_exhausted: counter!(RETRY_BUDGET_EXHAUSTED_TOTAL, "service" => s.clone()),
            shed: ShedReason::ALL.map(|r| {
                counter!(CLUSTER_SHED_TOTAL, "service" => s.clone(), "reason" => r.as_str())
            }),
            waiting: gauge!(CLUSTER_WAITING_CALLS, "service" => s.clone()),
            endpoints: STATE_LABELS
                .map(|state| gauge!(CLUSTER_ENDPOINTS, "service" => s.clone(), "state" => state)),
        }
    }
}
