//! What the cluster reports: per-endpoint state for the admin API, counters for tests and
//! dashboards.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Where an endpoint stands with the balancer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointState {
    /// Takes calls.
    Healthy,
    /// Failed too often; takes no calls for `remaining`, then one probe.
    Ejected {
        /// Time left until the endpoint is on probation.
        remaining: Duration,
    },
    /// After an ejection or a drain: the next call is a probe whose outcome readmits or ejects
    /// the endpoint. One probe at a time.
    Probation,
    /// Takes no new calls while its in-flight calls finish: it sent GoAway (then, after the
    /// base ejection time, a probe tells whether it is back), or it was removed from the set.
    Draining,
}

impl EndpointState {
    /// `healthy`, `ejected`, `probation` or `draining`.
    pub fn as_str(&self) -> &'static str {
        crate::metrics::STATE_LABELS[self.index()]
    }

    pub(crate) fn index(&self) -> usize {
        match self {
            EndpointState::Healthy => 0,
            EndpointState::Ejected { .. } => 1,
            EndpointState::Probation => 2,
            EndpointState::Draining => 3,
        }
    }

    /// The same state seen as the instance's circuit breaker: ejection is the open breaker,
    /// probation the half-open one.
    pub fn breaker(&self) -> BreakerState {
        match *self {
            EndpointState::Healthy => BreakerState::Closed,
            EndpointState::Ejected { remaining } => BreakerState::Open { remaining },
            EndpointState::Probation => BreakerState::HalfOpen,
            EndpointState::Draining => BreakerState::Open {
                remaining: Duration::ZERO,
            },
        }
    }
}

/// A circuit breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls pass.
    Closed,
    /// Calls fail at once for `remaining`, then one passes as a probe.
    Open {
        /// Time left until the probe.
        remaining: Duration,
    },
    /// One probe call decides: success closes the breaker, failure opens it for longer.
    HalfOpen,
}

impl BreakerState {
    /// `closed`, `open` or `half_open`.
    pub fn as_str(&self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open { .. } => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

/// One endpoint, for the admin API.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct EndpointStatus {
    /// The instance id it was registered with.
    pub id: String,
    /// Its RPC address.
    pub addr: SocketAddr,
    /// Its weight.
    pub weight: u32,
    /// Where it stands.
    pub state: EndpointState,
    /// Attempts in flight on it.
    pub in_flight: usize,
    /// PeakEWMA latency estimate (decayed to now).
    pub ewma_latency: Duration,
    /// Failures since its last success.
    pub consecutive_failures: u32,
    /// Ejections in a row (the backoff exponent); reset by a successful probe.
    pub ejections: u32,
    /// Calls and failures in the breaker's sliding window.
    pub window_calls: u64,
    /// Failures in the breaker's sliding window.
    pub window_failures: u64,
    /// Open RPC connections to it.
    pub connections: usize,
}

/// One cluster, for the admin API.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClusterStatus {
    /// The service.
    pub service: String,
    /// The balancer's name.
    pub balancer: &'static str,
    /// The service's circuit breaker.
    pub breaker: BreakerState,
    /// Calls waiting for an endpoint.
    pub waiting_calls: usize,
    /// Retries the budget allows now.
    pub retry_budget: f64,
    /// Every endpoint, draining ones that still have calls in flight included.
    pub endpoints: Vec<EndpointStatus>,
    /// Counters since the cluster was made.
    pub stats: ClusterStats,
}

/// Counters since the cluster was made (the same decisions the metrics count).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClusterStats {
    /// Calls made.
    pub calls: u64,
    /// Calls that failed (any error).
    pub failed_calls: u64,
    /// Attempts made: first attempts, retries and hedges.
    pub attempts: u64,
    /// Retries.
    pub retries: u64,
    /// Hedges.
    pub hedges: u64,
    /// Retries or hedges the budget refused.
    pub budget_exhausted: u64,
    /// Instance ejections.
    pub ejections: u64,
    /// Probes that readmitted an instance.
    pub probes_succeeded: u64,
    /// Probes that failed.
    pub probes_failed: u64,
    /// Endpoints that started draining.
    pub drains: u64,
    /// Openings of the service breaker.
    pub breaker_opens: u64,
    /// Calls shed without an attempt (no endpoint, breaker open, waiting queue full).
    pub shed: u64,
}

/// The live counters behind [`ClusterStats`].
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub(crate) calls: AtomicU64,
    pub(crate) failed_calls: AtomicU64,
    pub(crate) attempts: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) hedges: AtomicU64,
    pub(crate) budget_exhausted: AtomicU64,
    pub(crate) ejections: AtomicU64,
    pub(crate) probes_succeeded: AtomicU64,
    pub(crate) probes_failed: AtomicU64,
    pub(crate) drains: AtomicU64,
    pub(crate) breaker_opens: AtomicU64,
    pub(crate) shed: AtomicU64,
}

pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Stats {
    pub(crate) fn snapshot(&self) -> ClusterStats {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ClusterStats {
            calls: r(&self.calls),
            failed_calls: r(&self.failed_calls),
            attempts: r(&self.attempts),
            retries: r(&self.retries),
            hedges: r(&self.hedges),
            budget_exhausted: r(&self.budget_exhausted),
            ejections: r(&self.ejections),
            probes_succeeded: r(&self.probes_succeeded),
            probes_failed: r(&self.probes_failed),
            drains: r(&self.drains),
            breaker_opens: r(&self.breaker_opens),
            shed: r(&self.shed),
        }
    }
}
