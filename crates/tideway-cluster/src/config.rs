//! Cluster settings: plain data with a `Default`, deserialisable from TOML or JSON (durations in
//! humantime, `"250ms"`), and a [`ClusterConfig::validate`] that rejects zero and absurd values
//! before anything starts. Every default is a named `DEFAULT_*` const with its reason.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

/// How long a call waits for an endpoint when none is available before it fails with
/// `Unavailable` (ARCHITECTURE.md: fail fast after 1 s; linkerd waits 3 s).
pub const DEFAULT_FAIL_FAST_AFTER: Duration = Duration::from_secs(1);
/// Calls that may wait for an endpoint at once, per cluster; more are shed at once. The wait is
/// short (`fail_fast_after`), so this only matters when every endpoint is gone under load.
pub const DEFAULT_MAX_WAITING_CALLS: usize = 1024;
/// Consecutive failures that eject an instance (Envoy: 5; linkerd: 7).
pub const DEFAULT_CONSECUTIVE_FAILURES: u32 = 5;
/// First ejection time (linkerd's failure accrual backoff starts at 1 s).
pub const DEFAULT_BASE_EJECTION: Duration = Duration::from_secs(1);
/// Longest ejection time (linkerd: 60 s).
pub const DEFAULT_MAX_EJECTION: Duration = Duration::from_secs(60);
/// Share of usable instances that must be healthy before ejection is ignored (Envoy: 50 %).
pub const DEFAULT_PANIC_THRESHOLD: f64 = 0.5;
/// Span of the sliding window of the breakers (Hystrix, resilience4j: 10 s).
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(10);
/// Buckets of the sliding window: counts older than one bucket width fall out in steps.
pub const DEFAULT_WINDOW_BUCKETS: u32 = 10;
/// Calls the window must hold before a failure rate can trip a breaker (Hystrix: 20).
pub const DEFAULT_MIN_REQUESTS: u32 = 20;
/// Failure rate over the window that ejects an instance.
pub const DEFAULT_INSTANCE_FAILURE_RATE: f64 = 0.5;
/// Failure rate over the window that opens the service's breaker. High on purpose: failing
/// instances are ejected one by one; the service breaker is for when nearly everything fails.
pub const DEFAULT_SERVICE_FAILURE_RATE: f64 = 0.9;
/// Attempts per call, the first included.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
/// Retries allowed per call made, over the budget's TTL (Finagle, linkerd: 20 %).
pub const DEFAULT_RETRY_BUDGET_RATIO: f64 = 0.2;
/// Retries allowed per second whatever the traffic, so a quiet service can still retry
/// (Finagle, linkerd: 10/s).
pub const DEFAULT_RETRY_BUDGET_MIN_PER_SECOND: u32 = 10;
/// How long a call's deposit and a retry's withdrawal count (Finagle, linkerd: 10 s).
pub const DEFAULT_RETRY_BUDGET_TTL: Duration = Duration::from_secs(10);
/// Upper bound of the first retry's delay (full jitter: the delay is uniform in `0..=bound`,
/// the bound doubling per retry). Retries go to another instance, so the delay only needs to
/// break lockstep, not to wait out a failure.
pub const DEFAULT_RETRY_BACKOFF: Duration = Duration::from_millis(10);
/// Ceiling of the retry delay bound.
pub const DEFAULT_RETRY_BACKOFF_MAX: Duration = Duration::from_millis(200);
/// How fast PeakEWMA forgets (linkerd and Finagle: 10 s).
pub const DEFAULT_EWMA_DECAY: Duration = Duration::from_secs(10);
/// Latency assumed for an endpoint with no sample yet (linkerd: 30 ms): a new endpoint starts
/// neither favoured (a burst would land on a cold instance) nor shunned.
pub const DEFAULT_RTT: Duration = Duration::from_millis(30);
/// Ramp of a new instance's weight under `weighted_round_robin`.
pub const DEFAULT_SLOW_START: Duration = Duration::from_secs(30);
/// Share of its weight a new instance starts with under slow start (Envoy's
/// `min_weight_percent`: 10 %).
pub const SLOW_START_MIN_FACTOR: f64 = 0.1;
/// How long a hedged call waits for the first attempt before sending a second one.
pub const DEFAULT_HEDGE_DELAY: Duration = Duration::from_millis(50);
/// Weight of an instance that states none (the registry's default).
pub const DEFAULT_WEIGHT: u32 = 100;
/// Largest weight (the registry's limit): sums over any endpoint set stay far from overflow.
pub const MAX_WEIGHT: u32 = 10_000;
/// Endpoints one cluster keeps; more are left out (logged). Weighted round robin and
/// consistent hashing scan the set per pick, so the set is bounded.
pub const MAX_ENDPOINTS: usize = 4096;
/// Ceiling of `retry.max_attempts`: past a few attempts a call only adds load.
pub const MAX_ATTEMPTS_CEILING: u32 = 10;
/// Ceiling of `hedge.max_hedges`.
pub const MAX_HEDGES_CEILING: u32 = 3;
/// Ceiling of `breaker.buckets`.
pub const MAX_WINDOW_BUCKETS: u32 = 600;

/// A setting that cannot work.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A cluster setting.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The setting, e.g. `outlier.base_ejection`.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A setting of the RPC clients the cluster makes.
    #[error("invalid RPC client setting: {0}")]
    Client(#[from] tideway_rpc::ConfigError),
}

fn invalid(field: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field,
        reason: reason.into(),
    }
}

fn nonzero(field: &'static str, value: Duration) -> Result<(), ConfigError> {
    if value.is_zero() {
        return Err(invalid(field, "must be longer than zero"));
    }
    Ok(())
}

fn rate(field: &'static str, value: f64) -> Result<(), ConfigError> {
    if !(value > 0.0 && value <= 1.0) {
        return Err(invalid(field, format!("{value} is outside (0, 1]")));
    }
    Ok(())
}

/// How one service's calls are spread, checked and retried.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// The load balancer.
    pub balancer: Balancer,
    /// How long a call waits for an endpoint when none is available (all ejected, draining,
    /// unreachable, or none registered) before failing with `Unavailable`. The call's deadline
    /// bounds it too.
    #[serde(with = "humantime_serde")]
    pub fail_fast_after: Duration,
    /// Calls that may wait for an endpoint at once; more are refused at once (`Overloaded`).
    pub max_waiting_calls: usize,
    /// Passive health of each instance: ejection after consecutive failures, and how long.
    pub outlier: OutlierConfig,
    /// Failure-rate trips over a sliding window, per instance and per service.
    pub breaker: BreakerConfig,
    /// Retries: which attempts, how many, the budget and the delay.
    pub retry: RetryConfig,
    /// Hedged requests for idempotent calls; off when absent.
    pub hedge: Option<HedgeConfig>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            balancer: Balancer::default(),
            fail_fast_after: DEFAULT_FAIL_FAST_AFTER,
            max_waiting_calls: DEFAULT_MAX_WAITING_CALLS,
            outlier: OutlierConfig::default(),
            breaker: BreakerConfig::default(),
            retry: RetryConfig::default(),
            hedge: None,
        }
    }
}

impl ClusterConfig {
    /// Checks every setting.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.balancer.validate()?;
        nonzero("fail_fast_after", self.fail_fast_after)?;
        if self.max_waiting_calls == 0 {
            return Err(invalid("max_waiting_calls", "must be at least 1"));
        }
        self.outlier.validate()?;
        self.breaker.validate()?;
        self.retry.validate()?;
        if let Some(hedge) = &self.hedge {
            hedge.validate()?;
        }
        Ok(())
    }
}

/// Passive outlier ejection: an instance that fails `consecutive_failures` calls in a row (or
/// whose failure rate over the breaker window reaches `breaker.instance_failure_rate`) gets no
/// calls for an ejection time that doubles with each ejection, from `base_ejection` to
/// `max_ejection`, jittered by ±25 % (kept inside those bounds). Then one probe call decides:
/// success readmits it and resets the backoff, failure ejects it again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutlierConfig {
    /// Failures in a row that eject an instance.
    pub consecutive_failures: u32,
    /// First ejection time.
    #[serde(with = "humantime_serde")]
    pub base_ejection: Duration,
    /// Longest ejection time.
    #[serde(with = "humantime_serde")]
    pub max_ejection: Duration,
    /// Panic mode (Envoy's healthy panic threshold): when fewer than this share of the usable
    /// instances are healthy, calls go to ejected ones too rather than failing. 0 disables it.
    pub panic_threshold: f64,
}

impl Default for OutlierConfig {
    fn default() -> Self {
        OutlierConfig {
            consecutive_failures: DEFAULT_CONSECUTIVE_FAILURES,
            base_ejection: DEFAULT_BASE_EJECTION,
            max_ejection: DEFAULT_MAX_EJECTION,
            panic_threshold: DEFAULT_PANIC_THRESHOLD,
        }
    }
}

impl OutlierConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.consecutive_failures == 0 {
            return Err(invalid(
                "outlier.consecutive_failures",
                "must be at least 1",
            ));
        }
        if !(0.0..=1.0).contains(&self.panic_threshold) {
            return Err(invalid(
                "outlier.panic_threshold",
                "must be between 0 and 1",
            ));
        }
        nonzero("outlier.base_ejection", self.base_ejection)?;
        if self.max_ejection < self.base_ejection {
            return Err(invalid(
                "outlier.max_ejection",
                "must not be shorter than outlier.base_ejection",
            ));
        }
        Ok(())
    }
}

/// Circuit breaking on a sliding window of bucketed counters (not lifetime counters): an
/// instance whose failure rate reaches `instance_failure_rate` is ejected (see
/// [`OutlierConfig`] for how long); the service's breaker opens when the failure rate of all
/// its calls reaches `service_failure_rate`, fails calls at once while open, and lets one call
/// through after the ejection time (same backoff as instances) to decide whether to close.
/// Rates only count once the window holds `min_requests` calls.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerConfig {
    /// Span of the window.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// Buckets the window is divided into.
    pub buckets: u32,
    /// Calls the window must hold before a rate can trip.
    pub min_requests: u32,
    /// Failure rate (0, 1] that ejects an instance.
    pub instance_failure_rate: f64,
    /// Failure rate (0, 1] that opens the service's breaker.
    pub service_failure_rate: f64,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            window: DEFAULT_WINDOW,
            buckets: DEFAULT_WINDOW_BUCKETS,
            min_requests: DEFAULT_MIN_REQUESTS,
            instance_failure_rate: DEFAULT_INSTANCE_FAILURE_RATE,
            service_failure_rate: DEFAULT_SERVICE_FAILURE_RATE,
        }
    }
}

impl BreakerConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        nonzero("breaker.window", self.window)?;
        if !(1..=MAX_WINDOW_BUCKETS).contains(&self.buckets) {
            return Err(invalid(
                "breaker.buckets",
                format!("{} is outside 1..={MAX_WINDOW_BUCKETS}", self.buckets),
            ));
        }
        if self.window / self.buckets < Duration::from_millis(1) {
            return Err(invalid(
                "breaker.buckets",
                "buckets must be at least 1 ms wide",
            ));
        }
        if self.min_requests == 0 {
            return Err(invalid("breaker.min_requests", "must be at least 1"));
        }
        rate("breaker.instance_failure_rate", self.instance_failure_rate)?;
        rate("breaker.service_failure_rate", self.service_failure_rate)?;
        Ok(())
    }
}

/// Retries: only where safe, on another instance, within a budget, never past the deadline.
///
/// An attempt is retried when the call was certainly not run (not sent: no connection, refused
/// connect, GoAway cut-off), when the instance refused it (`Overloaded`, or an `Unavailable`
/// answer), or, for calls marked idempotent, when the connection was lost with the call in
/// flight. Each call deposits in the budget; each retry (and hedge) withdraws. A retry is
/// allowed while withdrawals over the last `budget_ttl` stay below
/// `budget_ratio × calls + budget_min_per_second × budget_ttl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    /// Attempts per call, the first included; 1 disables retries.
    pub max_attempts: u32,
    /// Retries per call over the TTL.
    pub budget_ratio: f64,
    /// Retries per second allowed whatever the traffic.
    pub budget_min_per_second: u32,
    /// How long deposits and withdrawals count.
    #[serde(with = "humantime_serde")]
    pub budget_ttl: Duration,
    /// Bound of the first retry's delay (full jitter); doubles per retry.
    #[serde(with = "humantime_serde")]
    pub backoff: Duration,
    /// Ceiling of the delay bound.
    #[serde(with = "humantime_serde")]
    pub backoff_max: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            budget_ratio: DEFAULT_RETRY_BUDGET_RATIO,
            budget_min_per_second: DEFAULT_RETRY_BUDGET_MIN_PER_SECOND,
            budget_ttl: DEFAULT_RETRY_BUDGET_TTL,
            backoff: DEFAULT_RETRY_BACKOFF,
            backoff_max: DEFAULT_RETRY_BACKOFF_MAX,
        }
    }
}

impl RetryConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=MAX_ATTEMPTS_CEILING).contains(&self.max_attempts) {
            return Err(invalid(
                "retry.max_attempts",
                format!(
                    "{} is outside 1..={MAX_ATTEMPTS_CEILING}",
                    self.max_attempts
                ),
            ));
        }
        if !(0.0..=10.0).contains(&self.budget_ratio) {
            return Err(invalid(
                "retry.budget_ratio",
                format!("{} is outside 0..=10", self.budget_ratio),
            ));
        }
        nonzero("retry.budget_ttl", self.budget_ttl)?;
        if self.budget_ttl > Duration::from_secs(3600) {
            return Err(invalid("retry.budget_ttl", "must be at most 1 h"));
        }
        if self.backoff_max < self.backoff {
            return Err(invalid(
                "retry.backoff_max",
                "must not be shorter than retry.backoff",
            ));
        }
        Ok(())
    }
}

/// Hedged requests: for a call marked idempotent, when the first attempt has not answered
/// after `delay`, a second goes to another instance (within the retry budget); the first answer
/// wins and the other attempt is cancelled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HedgeConfig {
    /// Wait before each hedge.
    #[serde(with = "humantime_serde")]
    pub delay: Duration,
    /// Hedges per call.
    pub max_hedges: u32,
}

impl Default for HedgeConfig {
    fn default() -> Self {
        HedgeConfig {
            delay: DEFAULT_HEDGE_DELAY,
            max_hedges: 1,
        }
    }
}

impl HedgeConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        nonzero("hedge.delay", self.delay)?;
        if !(1..=MAX_HEDGES_CEILING).contains(&self.max_hedges) {
            return Err(invalid(
                "hedge.max_hedges",
                format!("{} is outside 1..={MAX_HEDGES_CEILING}", self.max_hedges),
            ));
        }
        Ok(())
    }
}

/// The load balancer of a service.
///
/// In configuration either a name (`balancer = "round_robin"`) or a table with `kind` and the
/// variant's settings (`balancer = { kind = "consistent_hash", key = { header = "x-tenant" } }`).
/// In route metadata, the name form ([`FromStr`]), where consistent hashing reads
/// `consistent_hash:header:NAME`, `consistent_hash:param:NAME` or `consistent_hash:path`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Balancer {
    /// Power of two choices over PeakEWMA (linkerd, Finagle): two random instances, the one with
    /// the lower `latency × (in-flight + 1) / weight` wins. The latency estimate jumps to any
    /// slower sample and decays towards faster ones, and counts the age of calls still in
    /// flight, so a stalled instance is avoided before its first timeout.
    P2cPeakEwma {
        /// How fast the estimate forgets.
        #[serde(with = "humantime_serde")]
        decay: Duration,
        /// Estimate of an instance with no sample yet.
        #[serde(with = "humantime_serde")]
        default_rtt: Duration,
    },
    /// Each available instance in turn; weights ignored.
    RoundRobin,
    /// A uniformly random available instance; weights ignored.
    Random,
    /// Smooth weighted round robin (nginx): instances in proportion to their weights, spread
    /// evenly. A new instance's weight ramps up linearly over `slow_start` from 10 %.
    WeightedRoundRobin {
        /// Ramp of a new instance's weight; zero disables it.
        #[serde(with = "humantime_serde")]
        slow_start: Duration,
    },
    /// Weighted rendezvous hashing on a per-call key: one key goes to one instance while the set
    /// holds, and adding or removing an instance only moves the keys that belong to it. An
    /// ejected instance's keys go to their next choice. Calls without a key use p2c.
    ConsistentHash {
        /// Where the gateway takes the key from.
        key: HashKey,
    },
}

impl Default for Balancer {
    fn default() -> Self {
        Balancer::P2cPeakEwma {
            decay: DEFAULT_EWMA_DECAY,
            default_rtt: DEFAULT_RTT,
        }
    }
}

impl Balancer {
    /// The name used in metrics, logs and configuration.
    pub fn name(&self) -> &'static str {
        match self {
            Balancer::P2cPeakEwma { .. } => "p2c_peak_ewma",
            Balancer::RoundRobin => "round_robin",
            Balancer::Random => "random",
            Balancer::WeightedRoundRobin { .. } => "weighted_round_robin",
            Balancer::ConsistentHash { .. } => "consistent_hash",
        }
    }

    /// Where the gateway takes the hash key from, for consistent hashing.
    pub fn hash_key(&self) -> Option<&HashKey> {
        match self {
            Balancer::ConsistentHash { key } => Some(key),
            _ => None,
        }
    }

    /// Checks the settings (also done by [`ClusterConfig::validate`]).
    pub fn validate(&self) -> Result<(), ConfigError> {
        match self {
            Balancer::P2cPeakEwma { decay, default_rtt } => {
                nonzero("balancer.decay", *decay)?;
                nonzero("balancer.default_rtt", *default_rtt)
            }
            Balancer::ConsistentHash { key } => match key {
                HashKey::Header(name) | HashKey::Param(name) if name.is_empty() => {
                    Err(invalid("balancer.key", "the name must not be empty"))
                }
                _ => Ok(()),
            },
            Balancer::RoundRobin | Balancer::Random | Balancer::WeightedRoundRobin { .. } => Ok(()),
        }
    }
}

/// Where a consistent-hash key comes from. The gateway extracts it and passes it in
/// [`CallPolicy::hash_key`](crate::CallPolicy::hash_key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum HashKey {
    /// A request header (`{ header = "x-tenant" }`).
    Header(String),
    /// A bound parameter by name: path, query or body (`{ param = "waybill_id" }`).
    Param(String),
    /// The request path (`"path"`).
    Path,
}

impl fmt::Display for HashKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HashKey::Header(name) => write!(f, "header:{name}"),
            HashKey::Param(name) => write!(f, "param:{name}"),
            HashKey::Path => f.write_str("path"),
        }
    }
}

/// A balancer name that is not one of ours.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown balancer {0:?}: expected p2c_peak_ewma, round_robin, random, weighted_round_robin, \
     or consistent_hash:header:NAME | consistent_hash:param:NAME | consistent_hash:path"
)]
pub struct UnknownBalancer(String);

impl FromStr for Balancer {
    type Err = UnknownBalancer;

    /// A balancer by name, with default settings.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let unknown = || UnknownBalancer(s.to_owned());
        Ok(match s {
            "p2c_peak_ewma" | "p2c" => Balancer::default(),
            "round_robin" => Balancer::RoundRobin,
            "random" => Balancer::Random,
            "weighted_round_robin" => Balancer::WeightedRoundRobin {
                slow_start: DEFAULT_SLOW_START,
            },
            _ => {
                let rest = s.strip_prefix("consistent_hash:").ok_or_else(unknown)?;
                let key = match rest.split_once(':') {
                    Some(("header", name)) if !name.is_empty() => HashKey::Header(name.into()),
                    Some(("param", name)) if !name.is_empty() => HashKey::Param(name.into()),
                    None if rest == "path" => HashKey::Path,
                    _ => return Err(unknown()),
                };
                Balancer::ConsistentHash { key }
            }
        })
    }
}

/// The table form of [`Balancer`], with defaults for omitted settings.
#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum BalancerTable {
    P2cPeakEwma {
        #[serde(default = "default_decay", with = "humantime_serde")]
        decay: Duration,
        #[serde(default = "default_rtt", with = "humantime_serde")]
        default_rtt: Duration,
    },
    // Braces: serde's deny_unknown_fields ignores unit variants of tagged enums.
    RoundRobin {},
    Random {},
    WeightedRoundRobin {
        #[serde(default = "default_slow_start", with = "humantime_serde")]
        slow_start: Duration,
    },
    ConsistentHash {
        key: HashKey,
    },
}

fn default_decay() -> Duration {
    DEFAULT_EWMA_DECAY
}
fn default_rtt() -> Duration {
    DEFAULT_RTT
}
fn default_slow_start() -> Duration {
    DEFAULT_SLOW_START
}

impl From<BalancerTable> for Balancer {
    fn from(table: BalancerTable) -> Self {
        match table {
            BalancerTable::P2cPeakEwma { decay, default_rtt } => {
                Balancer::P2cPeakEwma { decay, default_rtt }
            }
            BalancerTable::RoundRobin {} => Balancer::RoundRobin,
            BalancerTable::Random {} => Balancer::Random,
            BalancerTable::WeightedRoundRobin { slow_start } => {
                Balancer::WeightedRoundRobin { slow_start }
            }
            BalancerTable::ConsistentHash { key } => Balancer::ConsistentHash { key },
        }
    }
}

impl<'de> Deserialize<'de> for Balancer {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct BalancerVisitor;

        impl<'de> Visitor<'de> for BalancerVisitor {
            type Value = Balancer;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a balancer name or a table with `kind`")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Balancer, E> {
                v.parse().map_err(E::custom)
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Balancer, A::Error> {
                BalancerTable::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(Balancer::from)
            }
        }

        deserializer.deserialize_any(BalancerVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_architecture_and_validate() {
        let c = ClusterConfig::default();
        c.validate().unwrap();
        assert_eq!(c.balancer.name(), "p2c_peak_ewma");
        assert_eq!(c.outlier.consecutive_failures, 5);
        assert_eq!(c.outlier.base_ejection, Duration::from_secs(1));
        assert_eq!(c.outlier.max_ejection, Duration::from_secs(60));
        assert_eq!(c.retry.budget_ratio, 0.2);
        assert_eq!(c.retry.budget_min_per_second, 10);
        assert_eq!(c.retry.budget_ttl, Duration::from_secs(10));
        assert_eq!(c.fail_fast_after, Duration::from_secs(1));
    }

    #[test]
    fn zeros_and_absurd_values_are_rejected_by_name() {
        let field = |c: ClusterConfig| match c.validate().unwrap_err() {
            ConfigError::Invalid { field, .. } => field,
            other => panic!("{other}"),
        };
        let mut c = ClusterConfig::default();
        c.outlier.consecutive_failures = 0;
        assert_eq!(field(c), "outlier.consecutive_failures");
        let mut c = ClusterConfig::default();
        c.outlier.max_ejection = Duration::from_millis(10);
        assert_eq!(field(c), "outlier.max_ejection");
        let mut c = ClusterConfig::default();
        c.breaker.instance_failure_rate = 1.5;
        assert_eq!(field(c), "breaker.instance_failure_rate");
        let mut c = ClusterConfig::default();
        c.retry.max_attempts = 0;
        assert_eq!(field(c), "retry.max_attempts");
        let c = ClusterConfig {
            fail_fast_after: Duration::ZERO,
            ..Default::default()
        };
        assert_eq!(field(c), "fail_fast_after");
        let c = ClusterConfig {
            hedge: Some(HedgeConfig {
                max_hedges: 0,
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(field(c), "hedge.max_hedges");
    }

    #[test]
    fn toml_with_names_tables_and_humantime() {
        let c: ClusterConfig = toml::from_str(
            r#"
            balancer = "round_robin"
            fail_fast_after = "250ms"
            [outlier]
            base_ejection = "2s"
            [retry]
            max_attempts = 2
            [hedge]
            delay = "20ms"
            "#,
        )
        .unwrap();
        assert_eq!(c.balancer, Balancer::RoundRobin);
        assert_eq!(c.fail_fast_after, Duration::from_millis(250));
        assert_eq!(c.outlier.base_ejection, Duration::from_secs(2));
        assert_eq!(c.outlier.consecutive_failures, 5);
        assert_eq!(c.retry.max_attempts, 2);
        assert_eq!(c.hedge.as_ref().unwrap().delay, Duration::from_millis(20));
        c.validate().unwrap();

        let c: ClusterConfig = toml::from_str(
            r#"balancer = { kind = "consistent_hash", key = { header = "x-tenant" } }"#,
        )
        .unwrap();
        assert_eq!(
            c.balancer.hash_key(),
            Some(&HashKey::Header("x-tenant".into()))
        );
        let c: ClusterConfig =
            toml::from_str(r#"balancer = { kind = "weighted_round_robin" }"#).unwrap();
        assert_eq!(
            c.balancer,
            Balancer::WeightedRoundRobin {
                slow_start: DEFAULT_SLOW_START
            }
        );
        let c: ClusterConfig =
            toml::from_str(r#"balancer = { kind = "p2c_peak_ewma", decay = "5s" }"#).unwrap();
        assert_eq!(
            c.balancer,
            Balancer::P2cPeakEwma {
                decay: Duration::from_secs(5),
                default_rtt: DEFAULT_RTT
            }
        );
    }

    #[test]
    fn unknown_fields_and_names_are_errors() {
        assert!(toml::from_str::<ClusterConfig>("balancr = \"random\"").is_err());
        assert!(toml::from_str::<ClusterConfig>("[outlier]\nconsecutive = 3").is_err());
        let err = toml::from_str::<ClusterConfig>("balancer = \"fastest\"").unwrap_err();
        assert!(err.to_string().contains("unknown balancer"), "{err}");
        assert!(
            toml::from_str::<ClusterConfig>(r#"balancer = { kind = "random", x = 1 }"#).is_err()
        );
        assert!(
            toml::from_str::<ClusterConfig>(
                r#"balancer = { kind = "weighted_round_robin", slow = "1s" }"#
            )
            .is_err()
        );
        let ok: ClusterConfig = toml::from_str(r#"balancer = { kind = "random" }"#).unwrap();
        assert_eq!(ok.balancer, Balancer::Random);
    }

    #[test]
    fn names_parse_for_route_metadata() {
        assert_eq!("random".parse::<Balancer>().unwrap(), Balancer::Random);
        assert_eq!(
            "consistent_hash:param:waybill_id"
                .parse::<Balancer>()
                .unwrap()
                .hash_key(),
            Some(&HashKey::Param("waybill_id".into()))
        );
        assert_eq!(
            "consistent_hash:path"
                .parse::<Balancer>()
                .unwrap()
                .hash_key(),
            Some(&HashKey::Path)
        );
        assert!("consistent_hash:header:".parse::<Balancer>().is_err());
        assert!("consistent_hash".parse::<Balancer>().is_err());
    }
}
