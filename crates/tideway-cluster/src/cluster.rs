//! [`Cluster`]: one service's endpoints, and the call path through them.
//!
//! # A call's life
//!
//! ```text
//!  call ─► service breaker open? ──yes──► BreakerOpen (shed)
//!            │ no: deposit in the retry budget
//!            ▼
//!  ┌──► pick (balancer over available endpoints, tried ones last)
//!  │         │ none: wait for a change ≤ min(fail_fast_after, deadline) ──still none──► NoEndpoint
//!  │         ▼                       (bounded waiters, else WaitQueueFull)
//!  │      attempt (RPC call, remaining deadline) ──idempotent + hedge delay passes──► hedge on
//!  │         │                                                    another endpoint (budget)
//!  │         ├─ ok ─────────────────────────────────────────────────────► result
//!  │         ├─ an answer about the call (not found, invalid, ...) ─────► Rejected
//!  │         └─ failure: record (EWMA, instance health, service breaker)
//!  │               retry safe? attempts left? time left after the backoff? budget?
//!  └──────────────────── yes ◄──┘                  no ──► Exhausted (last error)
//! ```
//!
//! Every exit drops the attempt guards: in-flight counts, probes and breaker permits are
//! released on every path, including the caller dropping the future (which cancels the RPC).

use std::collections::{HashMap, HashSet};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::task::Poll;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use parking_lot::Mutex;
use tideway_rpc::{CallOptions, Client, ClientConfig, Codec, RpcError};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::backoff::retry_delay;
use crate::balance;
use crate::breaker::ServiceBreaker;
use crate::budget::RetryBudget;
use crate::config::{
    Balancer, ClusterConfig, ConfigError, DEFAULT_EWMA_DECAY, DEFAULT_RTT, MAX_ENDPOINTS,
    MAX_WEIGHT,
};
use crate::endpoint::{AttemptGuard, Avail, Endpoint, EndpointSpec};
use crate::error::{ClusterError, ClusterErrorKind};
use crate::metrics::{ClusterMetrics, ShedReason};
use crate::outcome::{Verdict, retry_reason, verdict};
use crate::status::{BreakerState, ClusterStats, ClusterStatus, EndpointStatus, Stats, bump};

/// A retry or hedge needs at least this much of the deadline left to be worth sending.
const MIN_ATTEMPT_TIME: Duration = Duration::from_millis(2);
/// Shortest sleep of a call waiting for an endpoint, so a state that flips back and forth cannot
/// make it spin.
const MIN_WAIT_STEP: Duration = Duration::from_millis(1);
/// Picks per attempt before giving up for now: a picked endpoint can turn out unusable (its
/// probe taken meanwhile, reconnect backoff), and is then skipped.
const MAX_PICK_ROUNDS: usize = 8;
/// Endpoints remembered as tried in one call (attempts are capped far below).
const MAX_TRIED: usize = 16;

/// How one call may be treated.
#[derive(Debug, Clone, Copy, Default)]
pub struct CallPolicy<'a> {
    /// The method may run twice without harm (a read, or a write keyed by an idempotency key):
    /// allows retrying after a connection was lost with the call in flight, and hedging.
    pub idempotent: bool,
    /// The consistent-hash key (from the header, parameter or path the balancer names).
    /// Ignored by other balancers; a consistent-hash call without one goes by p2c.
    pub hash_key: Option<&'a str>,
    /// A balancer for this call instead of the cluster's (a route that names its own, from
    /// route metadata); the endpoints' health and load state is the same whichever picks.
    /// Check it with [`Balancer::validate`] when the route is loaded.
    pub balancer: Option<&'a Balancer>,
}

/// What every endpoint of a cluster shares with it.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) service: Arc<str>,
    pub(crate) config: ClusterConfig,
    /// Woken when an endpoint may have become available (set changed, probe done).
    pub(crate) changed: Notify,
    pub(crate) metrics: ClusterMetrics,
    pub(crate) stats: Stats,
}

impl Shared {
    pub(crate) fn ewma_settings(&self) -> (Duration, Duration) {
        match self.config.balancer {
            Balancer::P2cPeakEwma { decay, default_rtt } => (decay, default_rtt),
            _ => (DEFAULT_EWMA_DECAY, DEFAULT_RTT),
        }
    }
}

/// The endpoints at one moment; replaced whole by `update_endpoints`.
#[derive(Debug)]
struct EndpointSet {
    endpoints: Vec<Arc<Endpoint>>,
    /// Round-robin position.
    next: AtomicUsize,
    /// Smooth weighted round robin credits, one per endpoint.
    credits: Mutex<Vec<i64>>,
}

impl EndpointSet {
    fn new(endpoints: Vec<Arc<Endpoint>>) -> Self {
        let credits = Mutex::new(vec![0; endpoints.len()]);
        EndpointSet {
            endpoints,
            next: AtomicUsize::new(0),
            credits,
        }
    }
}

/// How a call picks: the balancer and the hashed key.
#[derive(Debug, Clone, Copy)]
struct Pick<'a> {
    balancer: &'a Balancer,
    key: Option<u64>,
}

/// Endpoint serials a call has tried (or a pick found unusable), on the stack.
#[derive(Debug, Default)]
struct Serials {
    items: [u64; MAX_TRIED],
    len: usize,
}

impl Serials {
    fn push(&mut self, serial: u64) {
        if self.len < MAX_TRIED && !self.contains(serial) {
            self.items[self.len] = serial;
            self.len += 1;
        }
    }

    fn contains(&self, serial: u64) -> bool {
        self.items[..self.len].contains(&serial)
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// One service's instances behind one handle: load balancing, passive health (outlier
/// ejection with probes), circuit breakers, retries within a budget, hedging, draining.
///
/// Share it in an `Arc`; [`call`](Self::call) takes `&self` and costs a few atomic operations
/// and short locks beyond the RPC itself. No background task: state changes happen on calls
/// and on [`update_endpoints`](Self::update_endpoints), so dropping the cluster (a config
/// generation) leaves nothing running.
#[derive(Debug)]
pub struct Cluster {
    shared: Arc<Shared>,
    client_config: ClientConfig,
    set: ArcSwap<EndpointSet>,
    /// Endpoints removed from the set whose calls may still be in flight.
    draining: Mutex<Vec<Weak<Endpoint>>>,
    /// Serialises `update_endpoints`.
    updating: Mutex<()>,
    waiting: AtomicUsize,
    breaker: ServiceBreaker,
    budget: RetryBudget,
}

/// Endpoint serials are unique in the process, so a call never confuses an endpoint with its
/// replacement.
static SERIALS: AtomicU64 = AtomicU64::new(1);

impl Cluster {
    /// A cluster for `service` with no endpoints yet. `client` configures the RPC client of
    /// each endpoint. Registers its metric handles (install the recorder first).
    pub fn new(
        service: impl Into<String>,
        config: ClusterConfig,
        client: ClientConfig,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        client.validate()?;
        crate::metrics::describe();
        let service: String = service.into();
        let now = Instant::now();
        let shared = Arc::new(Shared {
            metrics: ClusterMetrics::new(&service),
            service: service.into(),
            changed: Notify::new(),
            stats: Stats::default(),
            config,
        });
        let retry = &shared.config.retry;
        let budget = RetryBudget::new(
            now,
            retry.budget_ratio,
            retry.budget_min_per_second,
            retry.budget_ttl,
        );
        Ok(Cluster {
            breaker: ServiceBreaker::new(now, &shared),
            budget,
            shared,
            client_config: client,
            set: ArcSwap::from_pointee(EndpointSet::new(Vec::new())),
            draining: Mutex::new(Vec::new()),
            updating: Mutex::new(()),
            waiting: AtomicUsize::new(0),
        })
    }

    /// The service's name.
    pub fn service(&self) -> &str {
        &self.shared.service
    }

    /// The settings.
    pub fn config(&self) -> &ClusterConfig {
        &self.shared.config
    }

    /// The RPC client settings of its endpoints.
    pub fn client_config(&self) -> &ClientConfig {
        &self.client_config
    }

    /// Replaces the endpoint set. An endpoint whose id and address stay keeps everything: its
    /// client and connections, latency estimate, health and breaker (its weight is updated).
    /// New endpoints start with the default latency estimate (p2c) or slow start (weighted
    /// round robin). Removed endpoints drain: no new calls; their calls in flight finish, and
    /// their client closes when the last one ends. Waiting calls are woken.
    ///
    /// At most [`MAX_ENDPOINTS`] are kept; duplicate ids after the first are left out.
    pub fn update_endpoints(&self, specs: &[EndpointSpec]) {
        let _updating = self.updating.lock();
        let now = Instant::now();
        let old = self.set.load_full();
        let by_id: HashMap<&str, &Arc<Endpoint>> =
            old.endpoints.iter().map(|e| (e.id.as_str(), e)).collect();
        let mut seen = HashSet::new();
        let mut endpoints = Vec::with_capacity(specs.len().min(MAX_ENDPOINTS));
        // The median latency estimate of the measured endpoints (one slow instance does not
        // move it): where new ones start.
        let mut measured: Vec<f64> = old
            .endpoints
            .iter()
            .filter_map(|e| e.sampled_estimate(now))
            .collect();
        measured.sort_by(f64::total_cmp);
        let peer_estimate = measured
            .get(measured.len() / 2)
            .map(|ns| Duration::from_nanos(*ns as u64));
        for spec in specs {
            if !seen.insert(spec.id.as_str()) {
                tracing::warn!(service = %self.shared.service, endpoint = %spec.id, "duplicate endpoint id; left out");
                continue;
            }
            if endpoints.len() == MAX_ENDPOINTS {
                tracing::warn!(service = %self.shared.service, limit = MAX_ENDPOINTS, "too many endpoints; the rest are left out");
                break;
            }
            let weight = spec.weight.clamp(1, MAX_WEIGHT);
            if let Some(kept) = by_id.get(spec.id.as_str()).filter(|e| e.addr == spec.addr) {
                kept.set_weight(weight);
                endpoints.push(Arc::clone(kept));
                continue;
            }
            match Client::new(spec.addr, self.client_config.clone()) {
                Ok(client) => endpoints.push(Arc::new(Endpoint::new(
                    SERIALS.fetch_add(1, Ordering::Relaxed),
                    spec,
                    weight,
                    client,
                    Arc::clone(&self.shared),
                    now,
                    peer_estimate,
                ))),
                // Cannot happen: the settings were validated in `new`.
                Err(e) => {
                    tracing::error!(service = %self.shared.service, endpoint = %spec.id, error = %e, "cannot make a client; endpoint left out");
                }
            }
        }
        {
            let mut draining = self.draining.lock();
            draining.retain(|w| w.strong_count() > 0);
            for gone in &old.endpoints {
                if !endpoints.iter().any(|e| Arc::ptr_eq(e, gone)) {
                    gone.mark_removed();
                    self.shared.metrics.drain_removed.increment(1);
                    bump(&self.shared.stats.drains);
                    tracing::info!(service = %self.shared.service, endpoint = %gone.id, in_flight = gone.in_flight(), "endpoint removed; draining");
                    draining.push(Arc::downgrade(gone));
                }
            }
        }
        self.set.store(Arc::new(EndpointSet::new(endpoints)));
        self.shared.changed.notify_waiters();
    }

    /// Calls `method` (`service/method`) on one of the endpoints, retrying and hedging as the
    /// config and `policy` allow, by the options' deadline (`options.deadline`, or
    /// `options.timeout` from now, the earlier if both are set; the RPC client's default
    /// timeout when neither is), which covers waiting for an endpoint, every attempt and the
    /// delays between them.
    ///
    /// Cancel safety: dropping the future cancels the attempts in flight (Cancel frames) and
    /// releases everything the call held.
    pub async fn call(
        &self,
        method: &str,
        codec: Codec,
        payload: Bytes,
        options: &CallOptions,
        policy: &CallPolicy<'_>,
    ) -> Result<Bytes, ClusterError> {
        bump(&self.shared.stats.calls);
        let result = self
            .call_inner(method, codec, payload, options, policy)
            .await;
        if result.is_err() {
            bump(&self.shared.stats.failed_calls);
        }
        result
    }

    async fn call_inner(
        &self,
        method: &str,
        codec: Codec,
        payload: Bytes,
        options: &CallOptions,
        policy: &CallPolicy<'_>,
    ) -> Result<Bytes, ClusterError> {
        let shared = &*self.shared;
        let start = Instant::now();
        let deadline = options.deadline_from(|| start, self.client_config.default_timeout);
        let Ok(mut permit) = self.breaker.try_enter(start, shared) else {
            self.shed(ShedReason::BreakerOpen);
            return Err(ClusterError::new(
                ClusterErrorKind::BreakerOpen,
                RpcError::unavailable(format!("the circuit breaker of {} is open", shared.service)),
                0,
            ));
        };
        self.budget.deposit(start);
        let pick = Pick {
            balancer: policy.balancer.unwrap_or(&shared.config.balancer),
            key: policy.hash_key.map(|k| balance::stable_hash(k.as_bytes())),
        };
        let retry = &shared.config.retry;
        let hedge = shared.config.hedge.as_ref().filter(|_| policy.idempotent);
        let mut tried = Serials::default();
        let (mut attempts, mut retries, mut hedges) = (0u32, 0u32, 0u32);
        let mut last_error: Option<RpcError> = None;
        // Attempts in flight when hedging: a hedge runs beside the attempt it backs up. Made
        // only then: even empty, a `FuturesUnordered` allocates a task of the attempt's size.
        let mut running = None::<FuturesUnordered<_>>;
        // Without hedging one attempt runs at a time, and it lives here, in this future: a
        // `FuturesUnordered` would allocate two tasks of the attempt's size per call (its stub
        // and the attempt), held for as long as the call waits on a slow service.
        let mut single = std::pin::pin!(None);
        let mut hedge_at: Option<Instant> = None;
        // The first pick is made at the call's start (no second clock reading for it); a
        // retry's reads the clock.
        let mut first_pick = true;
        loop {
            if running.as_ref().is_none_or(FuturesUnordered::is_empty) && single.is_none() {
                let now = if std::mem::take(&mut first_pick) {
                    start
                } else {
                    Instant::now()
                };
                // Waiting for an endpoint is the rare path: its state lives in its own
                // allocation so that it does not widen the future of every call.
                let acquired = match self.try_acquire(&tried, pick, now, false) {
                    Some(guard) => Ok(guard),
                    None => Box::pin(self.acquire(&tried, pick, deadline)).await,
                };
                let guard = match acquired {
                    Ok(guard) => guard,
                    Err(refused) => {
                        return Err(match last_error {
                            Some(error) => {
                                ClusterError::new(ClusterErrorKind::Exhausted, error, attempts)
                            }
                            None => refused,
                        });
                    }
                };
                attempts += 1;
                bump(&shared.stats.attempts);
                tried.push(guard.endpoint().serial);
                let next = attempt(guard, method, codec, payload.clone(), options, deadline);
                if hedge.is_some() {
                    running.get_or_insert_with(FuturesUnordered::new).push(next);
                } else {
                    single.set(Some(next));
                }
                hedge_at = hedge
                    .filter(|h| hedges < h.max_hedges)
                    .map(|h| Instant::now() + h.delay);
            }
            let (guard, result) = tokio::select! {
                biased;
                done = poll_slot(single.as_mut()), if single.is_some() => {
                    single.set(None);
                    done
                }
                Some(done) = next_done(&mut running) => done,
                () = sleep_until_opt(hedge_at) => {
                    hedge_at = None;
                    let now = Instant::now();
                    let Some(h) = hedge else { continue };
                    if deadline.saturating_duration_since(now) < MIN_ATTEMPT_TIME {
                        continue;
                    }
                    // A hedge does not wait for an endpoint: it only helps if one is free now.
                    let Some(guard) = self.try_acquire(&tried, pick, now, true) else { continue };
                    if !self.budget.try_withdraw(now) {
                        self.budget_exhausted();
                        continue;
                    }
                    hedges += 1;
                    attempts += 1;
                    bump(&shared.stats.attempts);
                    bump(&shared.stats.hedges);
                    shared.metrics.hedges.increment(1);
                    tried.push(guard.endpoint().serial);
                    running
                        .get_or_insert_with(FuturesUnordered::new)
                        .push(attempt(guard, method, codec, payload.clone(), options, deadline));
                    if hedges < h.max_hedges {
                        hedge_at = Some(now + h.delay);
                    }
                    continue;
                }
            };
            let now = Instant::now();
            let error = match result {
                Ok(body) => {
                    guard.finish(now, Verdict::Success);
                    permit.record(now, false);
                    return Ok(body);
                }
                Err(error) => error,
            };
            let verdict = verdict(&error);
            guard.finish(now, verdict);
            if verdict != Verdict::Neutral {
                permit.record(now, verdict == Verdict::Failure);
            }
            if verdict != Verdict::Failure {
                return Err(ClusterError::new(
                    ClusterErrorKind::Rejected,
                    error,
                    attempts,
                ));
            }
            let reason = retry_reason(&error, policy.idempotent);
            if running.as_ref().is_some_and(|r| !r.is_empty()) {
                // A hedge is still out; its outcome decides.
                last_error = Some(error);
                continue;
            }
            let give_up = |error| {
                Err(ClusterError::new(
                    ClusterErrorKind::Exhausted,
                    error,
                    attempts,
                ))
            };
            let Some(reason) = reason else {
                return give_up(error);
            };
            if retries + 1 >= retry.max_attempts {
                return give_up(error);
            }
            let delay = retry_delay(
                retry.backoff,
                retry.backoff_max,
                retries + 1,
                fastrand::f64(),
            );
            // Never past the deadline: the retry needs its delay and some time to run.
            if now + delay + MIN_ATTEMPT_TIME >= deadline {
                return give_up(error);
            }
            if !self.budget.try_withdraw(now) {
                self.budget_exhausted();
                return give_up(error);
            }
            last_error = Some(error);
            retries += 1;
            bump(&shared.stats.retries);
            shared.metrics.retries[reason as usize].increment(1);
            tracing::debug!(service = %shared.service, reason = reason.as_str(), attempt = attempts, ?delay, "retrying on another endpoint");
            if !delay.is_zero() {
                // Boxed: a retry's pause is rare, and its timer would otherwise widen the future
                // of every call.
                Box::pin(tokio::time::sleep(delay)).await;
            }
        }
    }

    fn shed(&self, reason: ShedReason) {
        self.shared.metrics.shed[reason as usize].increment(1);
        bump(&self.shared.stats.shed);
    }

    fn budget_exhausted(&self) {
        self.shared.metrics.budget_exhausted.increment(1);
        bump(&self.shared.stats.budget_exhausted);
    }

    /// An endpoint for the next attempt, waiting (bounded) for one to become available.
    async fn acquire(
        &self,
        tried: &Serials,
        pick: Pick<'_>,
        deadline: Instant,
    ) -> Result<AttemptGuard, ClusterError> {
        let start = Instant::now();
        if let Some(guard) = self.try_acquire(tried, pick, start, false) {
            return Ok(guard);
        }
        let wait_until = (start + self.shared.config.fail_fast_after).min(deadline);
        let Some(_slot) = WaitSlot::take(self) else {
            self.shed(ShedReason::WaitQueueFull);
            return Err(ClusterError::new(
                ClusterErrorKind::WaitQueueFull,
                RpcError::overloaded(format!(
                    "{} calls are already waiting for an endpoint of {}",
                    self.shared.config.max_waiting_calls, self.shared.service
                )),
                0,
            ));
        };
        loop {
            let notified = self.shared.changed.notified();
            tokio::pin!(notified);
            // Registered before the check below, so a change between the two is not missed.
            notified.as_mut().enable();
            let now = Instant::now();
            if let Some(guard) = self.try_acquire(tried, pick, now, false) {
                return Ok(guard);
            }
            if now >= wait_until {
                break;
            }
            let wake = self
                .next_change(now)
                .map_or(wait_until, |t| t.min(wait_until))
                .max(now + MIN_WAIT_STEP);
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep_until(wake) => {}
            }
        }
        self.shed(ShedReason::NoEndpoint);
        Err(ClusterError::new(
            ClusterErrorKind::NoEndpoint,
            RpcError::unavailable(format!(
                "no endpoint of {} available within {:?} ({})",
                self.shared.service,
                start.elapsed(),
                self.summary(Instant::now())
            )),
            0,
        ))
    }

    /// Picks and takes an endpoint now: one not tried by this call if possible, else any.
    /// `only_untried`: never one already tried (hedges).
    fn try_acquire(
        &self,
        tried: &Serials,
        pick: Pick<'_>,
        now: Instant,
        only_untried: bool,
    ) -> Option<AttemptGuard> {
        let set = self.set.load();
        if let Some(guard) = self.pick_and_take(&set, tried, pick, now) {
            return Some(guard);
        }
        if tried.is_empty() || only_untried {
            return None;
        }
        self.pick_and_take(&set, &Serials::default(), pick, now)
    }

    fn pick_and_take(
        &self,
        set: &EndpointSet,
        tried: &Serials,
        pick: Pick<'_>,
        now: Instant,
    ) -> Option<AttemptGuard> {
        if let Some(guard) = self.pick_and_take_once(set, tried, pick, now, false) {
            return Some(guard);
        }
        if !self.in_panic(set, now) {
            return None;
        }
        // Too few endpoints left to trust outlier detection: ejecting more would only turn a
        // partial failure into a full outage (and a lone instance's application errors into
        // refusals). Like Envoy's panic threshold, balance over the ejected ones too.
        let guard = self.pick_and_take_once(set, tried, pick, now, true)?;
        metrics::counter!(crate::metrics::PANIC_PICKS_TOTAL, "service" => self.shared.service.clone())
            .increment(1);
        Some(guard)
    }

    /// Whether the endpoints not ejected are fewer than the panic threshold allows.
    fn in_panic(&self, set: &EndpointSet, now: Instant) -> bool {
        let threshold = self.shared.config.outlier.panic_threshold;
        if threshold <= 0.0 {
            return false;
        }
        let ejected = set.endpoints.iter().filter(|e| e.is_ejected(now)).count();
        if ejected == 0 {
            return false;
        }
        let usable = set
            .endpoints
            .iter()
            .filter(|e| e.is_ejected(now) || e.availability(now, false).pickable())
            .count();
        let healthy = usable - ejected;
        (healthy as f64) < threshold * usable as f64
    }

    fn pick_and_take_once(
        &self,
        set: &EndpointSet,
        tried: &Serials,
        pick: Pick<'_>,
        now: Instant,
        panic: bool,
    ) -> Option<AttemptGuard> {
        let mut skipped = Serials::default();
        for _ in 0..MAX_PICK_ROUNDS.min(set.endpoints.len()) {
            let i = self.pick(set, tried, &skipped, pick, now, panic)?;
            let endpoint = &set.endpoints[i];
            let taken = if panic {
                endpoint.try_acquire_in_panic(now)
            } else {
                endpoint.try_acquire(now)
            };
            if let Some(guard) = taken {
                self.shared.metrics.picks.increment(1);
                return Some(guard);
            }
            skipped.push(endpoint.serial);
        }
        None
    }

    /// The balancer's choice among the endpoints that are available and not excluded.
    fn pick(
        &self,
        set: &EndpointSet,
        tried: &Serials,
        skipped: &Serials,
        pick: Pick<'_>,
        now: Instant,
        panic: bool,
    ) -> Option<usize> {
        let endpoints = &set.endpoints;
        let n = endpoints.len();
        let eligible = |i: usize| {
            let e = &endpoints[i];
            !tried.contains(e.serial)
                && !skipped.contains(e.serial)
                && (e.availability(now, false).pickable() || (panic && e.is_ejected(now)))
        };
        let p2c = || balance::p2c(n, eligible, |i| endpoints[i].cost(now));
        match pick.balancer {
            Balancer::P2cPeakEwma { .. } => p2c(),
            Balancer::RoundRobin => {
                let start = set.next.fetch_add(1, Ordering::Relaxed);
                balance::round_robin(n, start, eligible)
            }
            Balancer::Random => balance::random(n, eligible),
            Balancer::WeightedRoundRobin { slow_start } => {
                let mut credits = set.credits.lock();
                balance::smooth_weighted(&mut credits, |i| {
                    if eligible(i) {
                        endpoints[i].ramped_weight(now, *slow_start)
                    } else {
                        0
                    }
                })
            }
            Balancer::ConsistentHash { .. } => match pick.key {
                Some(key) => balance::rendezvous(
                    n,
                    key,
                    |i| endpoints[i].id_hash,
                    |i| f64::from(endpoints[i].weight()),
                    eligible,
                ),
                None => p2c(),
            },
        }
    }

    /// The earliest time an unavailable endpoint may become available by itself.
    fn next_change(&self, now: Instant) -> Option<Instant> {
        self.set
            .load()
            .endpoints
            .iter()
            .filter_map(|e| match e.availability(now, true) {
                Avail::Later(at) => at,
                Avail::Ready | Avail::Probe => Some(now),
            })
            .min()
    }

    /// "3 endpoints: 1 healthy, 2 ejected" for error messages.
    fn summary(&self, now: Instant) -> String {
        let statuses = self
            .set
            .load()
            .endpoints
            .iter()
            .map(|e| e.status(now))
            .collect::<Vec<_>>();
        if statuses.is_empty() {
            return "no endpoints registered".into();
        }
        let mut counts = [0usize; 4];
        for s in &statuses {
            counts[s.state.index()] += 1;
        }
        let parts: Vec<String> = crate::metrics::STATE_LABELS
            .iter()
            .zip(counts)
            .filter(|(_, n)| *n > 0)
            .map(|(label, n)| format!("{n} {label}"))
            .collect();
        let unreachable = self
            .set
            .load()
            .endpoints
            .iter()
            .filter(|e| e.client.unreachable_until().is_some())
            .count();
        let mut summary = format!("{} endpoints: {}", statuses.len(), parts.join(", "));
        if unreachable > 0 {
            summary.push_str(&format!("; {unreachable} in reconnect backoff"));
        }
        summary
    }

    /// Every endpoint's state, draining ones that still have calls in flight included.
    pub fn endpoints(&self) -> Vec<EndpointStatus> {
        let now = Instant::now();
        let mut out: Vec<EndpointStatus> = self
            .set
            .load()
            .endpoints
            .iter()
            .map(|e| e.status(now))
            .collect();
        out.extend(self.draining_endpoints().iter().map(|e| e.status(now)));
        out
    }

    fn draining_endpoints(&self) -> Vec<Arc<Endpoint>> {
        let mut draining = self.draining.lock();
        draining.retain(|w| w.strong_count() > 0);
        draining.iter().filter_map(Weak::upgrade).collect()
    }

    fn all_clients(&self) -> Vec<Client> {
        let set = self.set.load();
        set.endpoints
            .iter()
            .map(|e| e.client.clone())
            .chain(self.draining_endpoints().iter().map(|e| e.client.clone()))
            .collect()
    }

    /// The cluster's state for the admin API.
    pub fn status(&self) -> ClusterStatus {
        let now = Instant::now();
        ClusterStatus {
            service: self.shared.service.to_string(),
            balancer: self.shared.config.balancer.name(),
            breaker: self.breaker.state(now),
            waiting_calls: self.waiting_calls(),
            retry_budget: self.budget.balance(now),
            endpoints: self.endpoints(),
            stats: self.stats(),
        }
    }

    /// The service circuit breaker's state.
    pub fn breaker(&self) -> BreakerState {
        self.breaker.state(Instant::now())
    }

    /// Counters since the cluster was made.
    pub fn stats(&self) -> ClusterStats {
        self.shared.stats.snapshot()
    }

    /// Calls waiting for an endpoint now.
    pub fn waiting_calls(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// RPC calls waiting for a response, over every endpoint (draining ones included).
    pub fn pending_calls(&self) -> usize {
        self.all_clients().iter().map(Client::pending_calls).sum()
    }

    /// Frames queued for RPC connection writers, over every endpoint.
    pub fn queued_frames(&self) -> usize {
        self.all_clients().iter().map(Client::queued_frames).sum()
    }

    /// Open RPC connections, over every endpoint.
    pub fn connections(&self) -> usize {
        self.all_clients().iter().map(Client::connections).sum()
    }

    /// Sets the endpoint-state gauges (`tideway_cluster_endpoints{service,state}`); call it
    /// before rendering metrics (ejections end lazily, so the gauges are not kept live).
    pub fn record_gauges(&self) {
        let mut counts = [0usize; 4];
        for status in self.endpoints() {
            counts[status.state.index()] += 1;
        }
        for (gauge, n) in self.shared.metrics.endpoints.iter().zip(counts) {
            gauge.set(n as f64);
        }
    }
}

/// A place among the calls waiting for an endpoint; bounded by `max_waiting_calls`.
struct WaitSlot<'a>(&'a Cluster);

impl<'a> WaitSlot<'a> {
    fn take(cluster: &'a Cluster) -> Option<Self> {
        let max = cluster.shared.config.max_waiting_calls;
        cluster
            .waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        cluster.shared.metrics.waiting.increment(1.0);
        Some(WaitSlot(cluster))
    }
}

impl Drop for WaitSlot<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::AcqRel);
        self.0.shared.metrics.waiting.decrement(1.0);
    }
}

/// One attempt: the RPC call with what is left of the deadline. Returns the guard so the caller
/// records the outcome.
async fn attempt(
    guard: AttemptGuard,
    method: &str,
    codec: Codec,
    payload: Bytes,
    options: &CallOptions,
    deadline: Instant,
) -> (AttemptGuard, Result<Bytes, RpcError>) {
    // The call's deadline and metadata as they are: not copied per attempt, and no clock
    // reading to turn the deadline into a timeout.
    let result = guard
        .endpoint()
        .client
        .call_until(method, codec, payload, deadline, &options.metadata)
        .await;
    (guard, result)
}

/// The next attempt to finish among those running; `None` at once when none is running.
async fn next_done<F: Future>(running: &mut Option<FuturesUnordered<F>>) -> Option<F::Output> {
    match running {
        Some(running) => running.next().await,
        None => None,
    }
}

/// Polls the future in `slot`; pending forever while the slot is empty. The caller empties the
/// slot once the future is done.
fn poll_slot<F: Future>(mut slot: Pin<&mut Option<F>>) -> impl Future<Output = F::Output> + '_ {
    std::future::poll_fn(move |cx| match slot.as_mut().as_pin_mut() {
        Some(running) => running.poll(cx),
        None => Poll::Pending,
    })
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        // Boxed: only hedged calls arm this timer; inline, it would widen every call's future.
        Some(at) => Box::pin(tokio::time::sleep_until(at)).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::config::{BreakerConfig, OutlierConfig};
    use crate::status::EndpointState;

    fn addr(i: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 1000 + i))
    }

    fn cluster(balancer: Balancer) -> Cluster {
        Cluster::new(
            "test.Svc",
            ClusterConfig {
                balancer,
                ..Default::default()
            },
            ClientConfig::default(),
        )
        .unwrap()
    }

    /// Picks `n` times (no network: picking does not connect) and counts per endpoint id.
    fn picks(c: &Cluster, n: usize, key: Option<&str>) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        let pick = Pick {
            balancer: &c.shared.config.balancer,
            key: key.map(|k| balance::stable_hash(k.as_bytes())),
        };
        for _ in 0..n {
            let guard = c
                .try_acquire(&Serials::default(), pick, Instant::now(), false)
                .expect("an endpoint");
            *counts.entry(guard.endpoint().id.clone()).or_default() += 1;
        }
        counts
    }

    fn default_pick(c: &Cluster) -> Pick<'_> {
        Pick {
            balancer: &c.shared.config.balancer,
            key: None,
        }
    }

    fn specs(weights: &[u32]) -> Vec<EndpointSpec> {
        weights
            .iter()
            .enumerate()
            .map(|(i, w)| EndpointSpec::new(format!("e{i}"), addr(i as u16)).with_weight(*w))
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn weighted_round_robin_follows_weights() {
        let c = cluster(Balancer::WeightedRoundRobin {
            slow_start: Duration::ZERO,
        });
        c.update_endpoints(&specs(&[100, 200, 300]));
        let counts = picks(&c, 600, None);
        assert_eq!(counts["e0"], 100);
        assert_eq!(counts["e1"], 200);
        assert_eq!(counts["e2"], 300);
    }

    #[tokio::test(start_paused = true)]
    async fn slow_start_ramps_a_new_endpoint_linearly_from_ten_percent() {
        let c = cluster(Balancer::WeightedRoundRobin {
            slow_start: Duration::from_secs(30),
        });
        c.update_endpoints(&specs(&[100, 100]));
        tokio::time::advance(Duration::from_secs(60)).await;
        c.update_endpoints(&specs(&[100, 100, 100]));
        let share = |c: &Cluster| picks(c, 2100, None).get("e2").copied().unwrap_or(0);
        // Just added: 10 of 210.
        assert_eq!(share(&c), 100);
        tokio::time::advance(Duration::from_secs(15)).await;
        // Half way: 50 of 250.
        let half = share(&c);
        assert!((420..=421).contains(&half), "{half}");
        tokio::time::advance(Duration::from_secs(15)).await;
        assert_eq!(share(&c), 700);
        // The endpoints that stayed kept their state (no slow start for them).
        let e0 = c.endpoints().into_iter().find(|e| e.id == "e0").unwrap();
        assert_eq!(e0.state, EndpointState::Healthy);
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_may_name_its_own_balancer() {
        // The cluster's balancer is p2c; a route asks for round robin.
        let c = cluster(Balancer::default());
        c.update_endpoints(&specs(&[100, 100, 100]));
        let rr = Balancer::RoundRobin;
        let pick = Pick {
            balancer: &rr,
            key: None,
        };
        let seq: Vec<String> = (0..6)
            .map(|_| {
                c.try_acquire(&Serials::default(), pick, Instant::now(), false)
                    .unwrap()
                    .endpoint()
                    .id
                    .clone()
            })
            .collect();
        assert_eq!(seq, ["e0", "e1", "e2", "e0", "e1", "e2"]);
    }

    #[tokio::test(start_paused = true)]
    async fn round_robin_and_random_spread_evenly() {
        let c = cluster(Balancer::RoundRobin);
        c.update_endpoints(&specs(&[1, 100, 10_000]));
        let counts = picks(&c, 300, None);
        assert!(counts.values().all(|&n| n == 100), "{counts:?}");
        let c = cluster(Balancer::Random);
        c.update_endpoints(&specs(&[100, 100, 100]));
        let counts = picks(&c, 3000, None);
        assert!(
            counts.values().all(|&n| (850..1150).contains(&n)),
            "{counts:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn consistent_hash_keeps_keys_when_the_set_changes() {
        let c = cluster(Balancer::ConsistentHash {
            key: crate::HashKey::Header("x-tenant".into()),
        });
        c.update_endpoints(&specs(&[100, 100, 100]));
        let owner = |c: &Cluster, key: &str| {
            let counts = picks(c, 3, Some(key));
            assert_eq!(counts.len(), 1, "one key, one endpoint: {counts:?}");
            counts.into_keys().next().unwrap()
        };
        let keys: Vec<String> = (0..300).map(|i| format!("tenant-{i}")).collect();
        let before: Vec<String> = keys.iter().map(|k| owner(&c, k)).collect();
        c.update_endpoints(&specs(&[100, 100, 100, 100]));
        let mut moved = 0;
        for (k, b) in keys.iter().zip(&before) {
            let now = owner(&c, k);
            if &now != b {
                assert_eq!(now, "e3", "{k} moved between old endpoints");
                moved += 1;
            }
        }
        assert!((40..120).contains(&moved), "{moved}");
        // Back to three: every key is where it was.
        c.update_endpoints(&specs(&[100, 100, 100]));
        for (k, b) in keys.iter().zip(&before) {
            assert_eq!(&owner(&c, k), b);
        }
    }

    fn strict(outlier: OutlierConfig) -> Cluster {
        Cluster::new(
            "test.Svc",
            ClusterConfig {
                outlier,
                breaker: BreakerConfig {
                    min_requests: 1000,
                    ..Default::default()
                },
                ..Default::default()
            },
            ClientConfig::default(),
        )
        .unwrap()
    }

    fn state(c: &Cluster) -> EndpointState {
        c.endpoints()[0].state
    }

    #[tokio::test(start_paused = true)]
    async fn panic_mode_uses_ejected_endpoints_when_too_few_are_healthy() {
        let c = strict(OutlierConfig {
            consecutive_failures: 1,
            ..OutlierConfig::default()
        });
        c.update_endpoints(&specs(&[100, 100, 100]));
        let take = |c: &Cluster, tried: &Serials| {
            c.try_acquire(tried, default_pick(c), Instant::now(), true)
        };
        let ejected = |c: &Cluster| {
            c.endpoints()
                .iter()
                .filter(|e| matches!(e.state, EndpointState::Ejected { .. }))
                .count()
        };
        // One of three ejected: two healthy of three is above the 50 % threshold; the ejected
        // one is never picked.
        take(&c, &Serials::default())
            .unwrap()
            .finish(Instant::now(), Verdict::Failure);
        assert_eq!(ejected(&c), 1);
        for _ in 0..30 {
            let g = take(&c, &Serials::default()).unwrap();
            assert_eq!(g.endpoint().health_state_name(), "healthy");
            g.finish(Instant::now(), Verdict::Success);
        }
        // Two of three ejected: one healthy of three is below it; calls that find no healthy
        // endpoint (here: the healthy one already tried) go to the ejected ones, which stay
        // ejected.
        let mut tried = Serials::default();
        loop {
            let g = take(&c, &tried).unwrap();
            if g.endpoint().health_state_name() == "healthy" {
                tried.push(g.endpoint().serial);
                if ejected(&c) == 2 {
                    g.finish(Instant::now(), Verdict::Success);
                    break;
                }
                g.finish(Instant::now(), Verdict::Failure);
                tried = Serials::default();
            } else {
                g.finish(Instant::now(), Verdict::Success);
            }
        }
        assert_eq!(ejected(&c), 2);
        let g = take(&c, &tried).expect("panic mode picks an ejected endpoint");
        assert_eq!(g.endpoint().health_state_name(), "ejected");
        drop(g);
        // Without panic mode the same call finds nothing.
        let no_panic = strict(OutlierConfig {
            consecutive_failures: 1,
            panic_threshold: 0.0,
            ..OutlierConfig::default()
        });
        no_panic.update_endpoints(&specs(&[100]));
        take(&no_panic, &Serials::default())
            .unwrap()
            .finish(Instant::now(), Verdict::Failure);
        assert!(take(&no_panic, &Serials::default()).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn consecutive_failures_eject_then_one_probe_decides() {
        let c = strict(OutlierConfig {
            consecutive_failures: 3,
            base_ejection: Duration::from_secs(1),
            max_ejection: Duration::from_secs(60),
            // A lone instance is ejected too (no panic mode).
            panic_threshold: 0.0,
        });
        c.update_endpoints(&specs(&[100]));
        let take = |c: &Cluster| {
            c.try_acquire(&Serials::default(), default_pick(c), Instant::now(), false)
        };
        // Two failures, a success (resets), then three failures eject.
        for v in [Verdict::Failure, Verdict::Failure, Verdict::Success] {
            take(&c).unwrap().finish(Instant::now(), v);
        }
        for _ in 0..3 {
            assert_eq!(state(&c), EndpointState::Healthy);
            take(&c).unwrap().finish(Instant::now(), Verdict::Failure);
        }
        let EndpointState::Ejected { remaining } = state(&c) else {
            panic!("{:?}", state(&c))
        };
        assert!(
            remaining >= Duration::from_millis(999) && remaining <= Duration::from_millis(1250)
        );
        assert!(take(&c).is_none(), "ejected endpoints are not picked");
        tokio::time::advance(remaining).await;
        // One probe at a time.
        let probe = take(&c).expect("the probe");
        assert_eq!(state(&c), EndpointState::Probation);
        assert!(take(&c).is_none());
        // A failed probe ejects for longer (second ejection: 1.5 s to 2.5 s).
        probe.finish(Instant::now(), Verdict::Failure);
        let EndpointState::Ejected { remaining } = state(&c) else {
            panic!("{:?}", state(&c))
        };
        assert!(
            remaining >= Duration::from_millis(1499) && remaining <= Duration::from_millis(2500)
        );
        tokio::time::advance(remaining).await;
        // A probe dropped without an outcome lets the next call probe.
        drop(take(&c).expect("probe"));
        let probe = take(&c).expect("probe again");
        probe.finish(Instant::now(), Verdict::Success);
        assert_eq!(state(&c), EndpointState::Healthy);
        assert_eq!(c.endpoints()[0].ejections, 0, "backoff reset");
        let stats = c.stats();
        assert_eq!(
            (stats.ejections, stats.probes_failed, stats.probes_succeeded),
            (2, 1, 1)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn failure_rate_over_the_window_ejects() {
        let c = Cluster::new(
            "test.Svc",
            ClusterConfig {
                breaker: BreakerConfig {
                    min_requests: 10,
                    instance_failure_rate: 0.5,
                    ..Default::default()
                },
                ..Default::default()
            },
            ClientConfig::default(),
        )
        .unwrap();
        c.update_endpoints(&specs(&[100]));
        let take = |c: &Cluster| {
            c.try_acquire(&Serials::default(), default_pick(c), Instant::now(), false)
        };
        // Alternating: never 5 in a row, but half fail.
        for i in 0..9 {
            let v = if i % 2 == 0 {
                Verdict::Failure
            } else {
                Verdict::Success
            };
            take(&c).unwrap().finish(Instant::now(), v);
        }
        assert_eq!(
            state(&c),
            EndpointState::Healthy,
            "9 calls: below min_requests"
        );
        take(&c).unwrap().finish(Instant::now(), Verdict::Failure);
        assert!(
            matches!(state(&c), EndpointState::Ejected { .. }),
            "{:?}",
            state(&c)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn service_breaker_opens_on_the_window_rate_and_probes() {
        let c = Cluster::new(
            "test.Svc",
            ClusterConfig {
                breaker: BreakerConfig {
                    min_requests: 10,
                    service_failure_rate: 0.9,
                    ..Default::default()
                },
                ..Default::default()
            },
            ClientConfig::default(),
        )
        .unwrap();
        let shared = &*c.shared;
        let now = Instant::now();
        for _ in 0..9 {
            c.breaker.try_enter(now, shared).unwrap().record(now, true);
        }
        assert_eq!(c.breaker(), BreakerState::Closed);
        c.breaker.try_enter(now, shared).unwrap().record(now, true);
        let BreakerState::Open { remaining } = c.breaker() else {
            panic!("{:?}", c.breaker())
        };
        assert!(c.breaker.try_enter(Instant::now(), shared).is_err());
        tokio::time::advance(remaining).await;
        let mut probe = c.breaker.try_enter(Instant::now(), shared).expect("probe");
        assert!(
            c.breaker.try_enter(Instant::now(), shared).is_err(),
            "one probe"
        );
        probe.record(Instant::now(), false);
        drop(probe);
        assert_eq!(c.breaker(), BreakerState::Closed);
        assert_eq!(c.stats().breaker_opens, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn removed_endpoints_drain_and_kept_ones_keep_their_state() {
        let c = cluster(Balancer::RoundRobin);
        c.update_endpoints(&specs(&[100, 100]));
        let held = c
            .try_acquire(&Serials::default(), default_pick(&c), Instant::now(), false)
            .unwrap();
        let held_id = held.endpoint().id.clone();
        held.endpoint().set_weight(7); // marks it, to see it is the same endpoint after the update
        let other = if held_id == "e0" { "e1" } else { "e0" };
        // Keep the held one, drop the other.
        let keep: Vec<EndpointSpec> = specs(&[100, 100])
            .into_iter()
            .filter(|s| s.id == held_id)
            .collect();
        c.update_endpoints(&[keep[0].clone().with_weight(7)]);
        let status = c.endpoints();
        assert_eq!(status.len(), 1, "the removed one has no call in flight");
        assert_eq!(status[0].id, held_id);
        assert_eq!(status[0].in_flight, 1, "same endpoint, same in-flight call");
        // Now remove the held one: it drains while its call is in flight.
        c.update_endpoints(&specs(&[100, 100, 100])[2..]);
        let status = c.endpoints();
        let draining = status.iter().find(|s| s.id == held_id).unwrap();
        assert_eq!(draining.state, EndpointState::Draining);
        assert!(status.iter().all(|s| s.id != other));
        for _ in 0..10 {
            let g = c
                .try_acquire(&Serials::default(), default_pick(&c), Instant::now(), false)
                .unwrap();
            assert_eq!(g.endpoint().id, "e2", "no new calls to a draining endpoint");
        }
        drop(held);
        assert!(c.endpoints().iter().all(|s| s.id == "e2"), "gone once idle");
        assert_eq!(c.stats().drains, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn no_endpoint_fails_fast_within_the_configured_time() {
        let c = Cluster::new(
            "test.Svc",
            ClusterConfig {
                fail_fast_after: Duration::from_millis(300),
                ..Default::default()
            },
            ClientConfig::default(),
        )
        .unwrap();
        let t = Instant::now();
        let err = c
            .call(
                "test.Svc/x",
                Codec::Json,
                Bytes::new(),
                &CallOptions::with_timeout(Duration::from_secs(10)),
                &CallPolicy::default(),
            )
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ClusterErrorKind::NoEndpoint);
        assert_eq!(err.status(), tideway_rpc::Status::Unavailable);
        assert!(err.every_attempt_failed());
        assert_eq!(err.attempts(), 0);
        assert_eq!(t.elapsed(), Duration::from_millis(300));
        // A shorter deadline bounds the wait.
        let t = Instant::now();
        let err = c
            .call(
                "test.Svc/x",
                Codec::Json,
                Bytes::new(),
                &CallOptions::with_timeout(Duration::from_millis(100)),
                &CallPolicy::default(),
            )
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ClusterErrorKind::NoEndpoint);
        assert_eq!(t.elapsed(), Duration::from_millis(100));
        assert_eq!(c.waiting_calls(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_calls_are_bounded_and_woken_by_new_endpoints() {
        let c = Arc::new(
            Cluster::new(
                "test.Svc",
                ClusterConfig {
                    max_waiting_calls: 2,
                    ..Default::default()
                },
                ClientConfig::default(),
            )
            .unwrap(),
        );
        let acquire = |c: Arc<Cluster>| async move {
            let deadline = Instant::now() + Duration::from_secs(10);
            c.acquire(&Serials::default(), default_pick(&c), deadline)
                .await
                .map(|g| g.endpoint().id.clone())
        };
        let a = tokio::spawn(acquire(Arc::clone(&c)));
        let b = tokio::spawn(acquire(Arc::clone(&c)));
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(c.waiting_calls(), 2);
        let third = acquire(Arc::clone(&c)).await.unwrap_err();
        assert_eq!(third.kind(), ClusterErrorKind::WaitQueueFull);
        assert_eq!(third.status(), tideway_rpc::Status::Overloaded);
        c.update_endpoints(&specs(&[100]));
        assert_eq!(a.await.unwrap().unwrap(), "e0");
        assert_eq!(b.await.unwrap().unwrap(), "e0");
        assert_eq!(c.waiting_calls(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_call_takes_the_probe_when_the_ejection_ends() {
        let c = strict(OutlierConfig {
            consecutive_failures: 1,
            base_ejection: Duration::from_secs(1),
            max_ejection: Duration::from_secs(1),
            // A lone instance is ejected too (no panic mode).
            panic_threshold: 0.0,
        });
        c.update_endpoints(&specs(&[100]));
        c.try_acquire(&Serials::default(), default_pick(&c), Instant::now(), false)
            .unwrap()
            .finish(Instant::now(), Verdict::Failure);
        let t = Instant::now();
        let deadline = t + Duration::from_secs(5);
        // fail_fast_after is 1 s: the ejection ends just in time.
        let guard = c
            .acquire(&Serials::default(), default_pick(&c), deadline)
            .await
            .unwrap();
        assert_eq!(t.elapsed(), Duration::from_secs(1));
        assert_eq!(state(&c), EndpointState::Probation);
        drop(guard);
    }
}
