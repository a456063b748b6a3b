//! One instance of a service: its RPC client, its load (PeakEWMA, calls in flight) and its
//! health, a small state machine:
//!
//! ```text
//!            failure × consecutive_failures,
//!            or window failure rate ≥ instance_failure_rate
//!   Healthy ───────────────────────────────────────────────► Ejected { until }
//!     ▲  │ GoAway received                                     │ until passes
//!     │  └──────────────► Draining { until } ──until passes──► │
//!     │                                                        ▼
//!     └──────────── probe succeeds ◄──────────────────── Probation (one probe at a time)
//!                                                              │ probe fails
//!                                 Ejected { until: longer } ◄──┘
//!   removed from the set ──► draining for good: no new calls; the client closes when the
//!                            last call holding it ends
//! ```
//!
//! Transitions happen under the endpoint's health lock, driven by the calls themselves (no
//! timer tasks): an ejection ends when a pick finds `until` passed. Outcomes of calls that
//! started before an ejection or drain do not move the state.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tideway_rpc::Client;
use tokio::time::Instant;

use crate::backoff::ejection_time;
use crate::balance::stable_hash;
use crate::cluster::Shared;
use crate::config::{DEFAULT_WEIGHT, SLOW_START_MIN_FACTOR};
use crate::ewma::PeakEwma;
use crate::metrics::EjectReason;
use crate::outcome::Verdict;
use crate::status::{EndpointState, EndpointStatus, bump};
use crate::window::FailureWindow;

/// An instance the cluster balances over, as the registry (or the config file) describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointSpec {
    /// Unique among the service's instances. An endpoint keeps its state (client, latency,
    /// health) across [`Cluster::update_endpoints`](crate::Cluster::update_endpoints) while its
    /// id and address stay the same.
    pub id: String,
    /// RPC address.
    pub addr: SocketAddr,
    /// Share of traffic relative to the others, 1..=[`MAX_WEIGHT`](crate::config::MAX_WEIGHT)
    /// (clamped). Used by weighted round robin, consistent hashing and p2c.
    pub weight: u32,
}

impl EndpointSpec {
    /// An endpoint of the default weight.
    pub fn new(id: impl Into<String>, addr: SocketAddr) -> Self {
        EndpointSpec {
            id: id.into(),
            addr,
            weight: DEFAULT_WEIGHT,
        }
    }

    /// With this weight.
    pub fn with_weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }
}

/// Whether an endpoint may be picked now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Avail {
    /// Healthy.
    Ready,
    /// On probation (or its ejection just ended) with no probe in flight: the next call probes.
    Probe,
    /// Not now; maybe at the given time (ejection ends, reconnect backoff ends), or when told.
    Later(Option<Instant>),
}

impl Avail {
    pub(crate) fn pickable(self) -> bool {
        matches!(self, Avail::Ready | Avail::Probe)
    }
}

#[derive(Debug, Clone, Copy)]
enum HealthState {
    Healthy,
    Ejected { until: Instant },
    Draining { until: Instant },
    Probation { probing: bool },
}

#[derive(Debug)]
struct Health {
    state: HealthState,
    consecutive_failures: u32,
    /// Ejections in a row: the backoff exponent.
    ejections: u32,
    window: FailureWindow,
    /// The client's GoAway count last seen.
    goaways_seen: u64,
}

#[derive(Debug)]
pub(crate) struct Endpoint {
    /// Unique in the process, for "not this one again" during a call.
    pub(crate) serial: u64,
    pub(crate) id: String,
    pub(crate) addr: SocketAddr,
    /// Hash of the id, for consistent hashing.
    pub(crate) id_hash: u64,
    weight: AtomicU32,
    pub(crate) client: Client,
    added_at: Instant,
    in_flight: AtomicUsize,
    /// Sum of the start times (µs since `added_at`) of the attempts in flight: with
    /// `in_flight`, their mean age.
    started_sum_us: AtomicU64,
    ewma: Mutex<PeakEwma>,
    health: Mutex<Health>,
    removed: AtomicBool,
    shared: Arc<Shared>,
}

impl Endpoint {
    pub(crate) fn new(
        serial: u64,
        spec: &EndpointSpec,
        weight: u32,
        client: Client,
        shared: Arc<Shared>,
        now: Instant,
        peer_estimate: Option<Duration>,
    ) -> Self {
        let (decay, default_rtt) = shared.ewma_settings();
        // A new instance among measured ones starts as an average peer: with the fixed prior
        // (30 ms) it would look worse than every measured instance answering in 1 ms, and p2c
        // would send it nothing until the prior decayed (tens of seconds at low load).
        let prior = peer_estimate.unwrap_or(default_rtt);
        let breaker = &shared.config.breaker;
        Endpoint {
            serial,
            id: spec.id.clone(),
            addr: spec.addr,
            id_hash: stable_hash(spec.id.as_bytes()),
            weight: AtomicU32::new(weight),
            added_at: now,
            in_flight: AtomicUsize::new(0),
            started_sum_us: AtomicU64::new(0),
            ewma: Mutex::new(PeakEwma::new(now, prior, decay)),
            health: Mutex::new(Health {
                state: HealthState::Healthy,
                consecutive_failures: 0,
                ejections: 0,
                window: FailureWindow::new(now, breaker.window, breaker.buckets),
                goaways_seen: client.goaways_received(),
            }),
            client,
            removed: AtomicBool::new(false),
            shared,
        }
    }

    pub(crate) fn weight(&self) -> u32 {
        self.weight.load(Ordering::Relaxed)
    }

    pub(crate) fn set_weight(&self, weight: u32) {
        self.weight.store(weight, Ordering::Relaxed);
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Removed from the set: takes no new calls, for good.
    pub(crate) fn mark_removed(&self) {
        self.removed.store(true, Ordering::Relaxed);
    }

    fn is_removed(&self) -> bool {
        self.removed.load(Ordering::Relaxed)
    }

    /// Applies a GoAway the client saw since the last look: draining, then a probe after the
    /// base ejection time.
    fn catch_up_goaway(&self, health: &mut Health, now: Instant) {
        let goaways = self.client.goaways_received();
        if goaways == health.goaways_seen {
            return;
        }
        health.goaways_seen = goaways;
        if matches!(health.state, HealthState::Draining { .. }) {
            return;
        }
        let until = now + self.shared.config.outlier.base_ejection;
        health.state = HealthState::Draining { until };
        health.consecutive_failures = 0;
        self.shared.metrics.drain_goaway.increment(1);
        bump(&self.shared.stats.drains);
        tracing::info!(service = %self.shared.service, endpoint = %self.id, addr = %self.addr, "endpoint sent GoAway; draining");
    }

    /// Whether the endpoint may be picked now. `check_client` also asks the RPC client whether
    /// it is in reconnect backoff (a lock per connection slot), which picks leave to
    /// [`try_acquire`](Self::try_acquire).
    pub(crate) fn availability(&self, now: Instant, check_client: bool) -> Avail {
        if self.is_removed() {
            return Avail::Later(None);
        }
        let avail = {
            let mut health = self.health.lock();
            self.catch_up_goaway(&mut health, now);
            match health.state {
                HealthState::Healthy => Avail::Ready,
                HealthState::Ejected { until } | HealthState::Draining { until } => {
                    if now >= until {
                        Avail::Probe
                    } else {
                        Avail::Later(Some(until))
                    }
                }
                HealthState::Probation { probing: false } => Avail::Probe,
                HealthState::Probation { probing: true } => Avail::Later(None),
            }
        };
        if check_client
            && avail.pickable()
            && let Some(until) = self.client.unreachable_until()
        {
            return Avail::Later(Some(until));
        }
        avail
    }

    /// The health state's name, for tests.
    #[cfg(test)]
    pub(crate) fn health_state_name(&self) -> &'static str {
        match self.health.lock().state {
            HealthState::Healthy => "healthy",
            HealthState::Ejected { .. } => "ejected",
            HealthState::Draining { .. } => "draining",
            HealthState::Probation { .. } => "probation",
        }
    }

    /// Whether the endpoint is out only because outlier detection ejected it (not draining, not
    /// removed, not on probation): what the panic mode may ignore.
    pub(crate) fn is_ejected(&self, now: Instant) -> bool {
        if self.is_removed() {
            return false;
        }
        matches!(self.health.lock().state, HealthState::Ejected { until } if now < until)
    }

    /// Takes an ejected endpoint for one normal attempt, in panic mode (too few endpoints
    /// left to trust ejection): its state is left as it is, so its ejection still runs out and
    /// a probe still decides. Otherwise as [`try_acquire`](Self::try_acquire).
    pub(crate) fn try_acquire_in_panic(self: &Arc<Self>, now: Instant) -> Option<AttemptGuard> {
        if !self.is_ejected(now) {
            return self.try_acquire(now);
        }
        if self.client.unreachable_until().is_some() {
            return None;
        }
        Some(self.start_attempt(now, false))
    }

    /// Takes the endpoint for one attempt: a normal one when healthy, the probe when on
    /// probation. `None` when it cannot be used now (state changed since the pick, probe taken,
    /// reconnect backoff).
    pub(crate) fn try_acquire(self: &Arc<Self>, now: Instant) -> Option<AttemptGuard> {
        if self.is_removed() || self.client.unreachable_until().is_some() {
            return None;
        }
        let probe = {
            let mut health = self.health.lock();
            self.catch_up_goaway(&mut health, now);
            match health.state {
                HealthState::Healthy => false,
                HealthState::Ejected { until } | HealthState::Draining { until }
                    if now >= until =>
                {
                    health.state = HealthState::Probation { probing: true };
                    true
                }
                HealthState::Probation { probing: false } => {
                    health.state = HealthState::Probation { probing: true };
                    true
                }
                _ => return None,
            }
        };
        Some(self.start_attempt(now, probe))
    }

    fn start_attempt(self: &Arc<Self>, now: Instant, probe: bool) -> AttemptGuard {
        let started_us = now.saturating_duration_since(self.added_at).as_micros() as u64;
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.started_sum_us.fetch_add(started_us, Ordering::Relaxed);
        AttemptGuard {
            endpoint: Arc::clone(self),
            started: now,
            started_us,
            probe,
            finished: false,
        }
    }

    /// The latency estimate now, when at least one sample was taken.
    pub(crate) fn sampled_estimate(&self, now: Instant) -> Option<f64> {
        let ewma = self.ewma.lock();
        ewma.is_sampled().then(|| ewma.estimate_ns(now))
    }

    /// The balancer's cost: PeakEWMA latency (or the mean age of the attempts in flight, when
    /// larger: a stalled instance looks slow before its first timeout), times (in flight + 1),
    /// divided by the relative weight.
    pub(crate) fn cost(&self, now: Instant) -> f64 {
        let estimate = self.ewma.lock().estimate_ns(now);
        let in_flight = self.in_flight.load(Ordering::Relaxed);
        let latency = estimate.max(self.mean_in_flight_age_ns(now, in_flight));
        let weight = f64::from(self.weight().max(1)) / f64::from(DEFAULT_WEIGHT);
        latency * (in_flight as f64 + 1.0) / weight
    }

    fn mean_in_flight_age_ns(&self, now: Instant, in_flight: usize) -> f64 {
        if in_flight == 0 {
            return 0.0;
        }
        let sum = self.started_sum_us.load(Ordering::Relaxed);
        let now_us = now.saturating_duration_since(self.added_at).as_micros() as f64;
        let mean_start = sum as f64 / in_flight as f64;
        ((now_us - mean_start) * 1000.0).max(0.0)
    }

    /// Weight for smooth weighted round robin, scaled by slow start: from 10 % when added to
    /// 100 % after `slow_start`.
    pub(crate) fn ramped_weight(&self, now: Instant, slow_start: Duration) -> i64 {
        let weight = f64::from(self.weight().max(1));
        let factor = if slow_start.is_zero() {
            1.0
        } else {
            let age = now.saturating_duration_since(self.added_at).as_secs_f64();
            (age / slow_start.as_secs_f64()).clamp(SLOW_START_MIN_FACTOR, 1.0)
        };
        // Scaled by 1000 so the ramp has resolution even for weight 1.
        ((weight * factor * 1000.0).round() as i64).max(1)
    }

    /// Records an attempt's outcome in the latency estimate and the health state.
    fn record(&self, now: Instant, elapsed: Duration, verdict: Verdict, probe: bool) {
        {
            let mut ewma = self.ewma.lock();
            let sample = if verdict == Verdict::Failure {
                // A fast failure must not make the instance look fast.
                elapsed.max(Duration::from_nanos(ewma.estimate_ns(now) as u64))
            } else {
                elapsed
            };
            ewma.observe(now, sample);
        }
        if verdict == Verdict::Neutral {
            if probe {
                self.release_probe();
            }
            return;
        }
        let failed = verdict == Verdict::Failure;
        let shared = &self.shared;
        let outlier = &shared.config.outlier;
        let breaker = &shared.config.breaker;
        let mut health = self.health.lock();
        health.window.record(now, failed);
        match health.state {
            HealthState::Probation { .. } if probe => {
                if failed {
                    shared.metrics.probe_failure.increment(1);
                    bump(&shared.stats.probes_failed);
                    self.eject(&mut health, now, EjectReason::ProbeFailed);
                } else {
                    shared.metrics.probe_success.increment(1);
                    bump(&shared.stats.probes_succeeded);
                    health.state = HealthState::Healthy;
                    health.consecutive_failures = 0;
                    health.ejections = 0;
                    health.window.clear();
                    drop(health);
                    tracing::info!(service = %shared.service, endpoint = %self.id, "probe succeeded; endpoint readmitted");
                    shared.changed.notify_waiters();
                }
            }
            HealthState::Healthy if failed => {
                health.consecutive_failures = health.consecutive_failures.saturating_add(1);
                if health.consecutive_failures >= outlier.consecutive_failures {
                    self.eject(&mut health, now, EjectReason::ConsecutiveFailures);
                } else if health.window.trips(
                    now,
                    breaker.min_requests,
                    breaker.instance_failure_rate,
                ) {
                    self.eject(&mut health, now, EjectReason::FailureRate);
                }
            }
            HealthState::Healthy => health.consecutive_failures = 0,
            // The outcome of a call that started before an ejection or drain.
            _ => {}
        }
    }

    fn eject(&self, health: &mut Health, now: Instant, reason: EjectReason) {
        let outlier = &self.shared.config.outlier;
        let time = ejection_time(
            outlier.base_ejection,
            outlier.max_ejection,
            health.ejections,
            fastrand::f64(),
        );
        health.ejections = health.ejections.saturating_add(1);
        health.consecutive_failures = 0;
        health.state = HealthState::Ejected { until: now + time };
        self.shared.metrics.ejections[reason as usize].increment(1);
        bump(&self.shared.stats.ejections);
        tracing::info!(
            service = %self.shared.service,
            endpoint = %self.id,
            addr = %self.addr,
            reason = reason.as_str(),
            ejection = ?time,
            "endpoint ejected"
        );
    }

    /// A probe ended without a verdict (cancelled, or refused locally): the next call probes.
    fn release_probe(&self) {
        let mut health = self.health.lock();
        if let HealthState::Probation { probing: true } = health.state {
            health.state = HealthState::Probation { probing: false };
            drop(health);
            self.shared.changed.notify_waiters();
        }
    }

    pub(crate) fn status(&self, now: Instant) -> EndpointStatus {
        let (state, consecutive_failures, ejections, (window_calls, window_failures)) = {
            let mut health = self.health.lock();
            if !self.is_removed() {
                self.catch_up_goaway(&mut health, now);
            }
            let state = if self.is_removed() {
                EndpointState::Draining
            } else {
                match health.state {
                    HealthState::Healthy => EndpointState::Healthy,
                    HealthState::Ejected { until } if until > now => EndpointState::Ejected {
                        remaining: until - now,
                    },
                    HealthState::Draining { until } if until > now => EndpointState::Draining,
                    _ => EndpointState::Probation,
                }
            };
            (
                state,
                health.consecutive_failures,
                health.ejections,
                health.window.counts(now),
            )
        };
        EndpointStatus {
            id: self.id.clone(),
            addr: self.addr,
            weight: self.weight(),
            state,
            in_flight: self.in_flight(),
            ewma_latency: Duration::from_nanos(self.ewma.lock().estimate_ns(now) as u64),
            consecutive_failures,
            ejections,
            window_calls,
            window_failures,
            connections: self.client.connections(),
        }
    }
}

/// One attempt's hold on an endpoint: counts it in flight, and on drop takes it out again. An
/// attempt dropped before [`finish`](Self::finish) (caller gone, hedge lost) still feeds its
/// elapsed time to the latency estimate, and gives back the probe if it was one.
#[derive(Debug)]
pub(crate) struct AttemptGuard {
    endpoint: Arc<Endpoint>,
    started: Instant,
    started_us: u64,
    probe: bool,
    finished: bool,
}

impl AttemptGuard {
    pub(crate) fn endpoint(&self) -> &Arc<Endpoint> {
        &self.endpoint
    }

    /// Records the attempt's outcome.
    pub(crate) fn finish(mut self, now: Instant, verdict: Verdict) {
        self.finished = true;
        let elapsed = now.saturating_duration_since(self.started);
        self.endpoint.record(now, elapsed, verdict, self.probe);
    }
}

impl Drop for AttemptGuard {
    fn drop(&mut self) {
        let endpoint = &self.endpoint;
        endpoint.in_flight.fetch_sub(1, Ordering::Relaxed);
        endpoint
            .started_sum_us
            .fetch_sub(self.started_us, Ordering::Relaxed);
        if !self.finished {
            let now = Instant::now();
            let elapsed = now.saturating_duration_since(self.started);
            // The attempt took at least `elapsed`: news only when that is slower than the
            // estimate (a lower bound must not pull the estimate down).
            let mut ewma = endpoint.ewma.lock();
            if crate::ewma::nanos_f64(elapsed) > ewma.estimate_ns(now) {
                ewma.observe(now, elapsed);
            }
            drop(ewma);
            if self.probe {
                endpoint.release_probe();
            }
        }
    }
}
