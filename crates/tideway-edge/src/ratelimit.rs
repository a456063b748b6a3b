//! Rate limits: the GCRA (generic cell rate algorithm), kept locally in a bounded store or
//! shared by several gateways in Redis.
//!
//! # GCRA
//!
//! A limit of `rate` requests per second with bursts of `burst` has an emission interval
//! `T = 1/rate` and a tolerance `τ = T · burst`. Each key keeps one number, its theoretical
//! arrival time `TAT`. A request at `now`:
//!
//! ```text
//! tat      = max(TAT, now)
//! new_tat  = tat + T
//! admitted when new_tat - now <= τ        (then TAT := new_tat)
//! else retry after (new_tat - τ) - now
//! ```
//!
//! So a fresh key admits `burst` requests at once, then one per `T`; over a window `w` at most
//! `burst + w · rate` requests pass. A key whose `TAT <= now` is indistinguishable from a key
//! never seen, which is what makes pruning lossless: dropping it changes no decision. The local
//! store and the Redis script compute exactly this (the script in microseconds of the Redis
//! server's clock, so gateways with skewed clocks still agree).
//!
//! # Local store: bounded
//!
//! Keys live in `max_keys / shards` sized hash maps behind `parking_lot` mutexes (16 shards from
//! 4096 keys up, else one). Keys back at full burst are dropped every `prune_interval` by the
//! [`Edge`](crate::Edge)'s prune task. When a shard is full and a new key arrives, the new key
//! **evicts** the entry with the earliest `TAT` among the first [`EVICTION_SAMPLE`] entries of
//! the shard (approximately the least recently limited key, the way Redis approximates LRU):
//! that key loses at most what it had used of its burst. New keys are never refused for lack of
//! room, so an attacker who sprays addresses cannot lock legitimate clients out; what the bound
//! costs under such a spray is precision for the keys evicted, never memory. Evictions are
//! counted in `tideway_rate_limit_evictions_total`.
//!
//! # Shared store: Redis
//!
//! One Lua script per check (atomic on the server), a [`ConnectionManager`] that reconnects by
//! itself, and a deadline per check. When Redis fails or is late, the configured
//! [`RedisFallback`] decides (default: this gateway's local store for the same bucket) and Redis
//! is left alone for `retry_interval`, so an outage costs one timeout per interval rather than
//! one per request.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};
use parking_lot::Mutex;
use redis::aio::ConnectionManager;
use tokio::time::Instant;

use crate::config::{RateLimitKey, RedisConfig, RedisFallback};
use crate::metrics as m;

/// Entries looked at to choose an eviction victim when a shard is full.
pub const EVICTION_SAMPLE: usize = 8;
/// Keys per store from which it is split into [`SHARDS`] shards.
const SHARD_THRESHOLD: usize = 4096;
/// Shards of a large store: fewer threads contend for one lock.
const SHARDS: usize = 16;

/// `RateLimit-Limit`.
pub const RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
/// `RateLimit-Remaining`.
pub const RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
/// `RateLimit-Reset`: seconds until the key is back at full burst.
pub const RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

/// The GCRA parameters of one limit, in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Gcra {
    interval: u64,
    tolerance: u64,
    burst: u32,
}

/// What a check decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Admitted; `remaining` more would be admitted right now; full again after `reset`.
    Allow { remaining: u32, reset: Duration },
    /// Refused; the next request would be admitted after `retry_after`.
    Deny {
        retry_after: Duration,
        reset: Duration,
    },
}

impl Gcra {
    pub(crate) fn new(rate: f64, burst: u32) -> Gcra {
        let burst = burst.max(1);
        let interval = ((1e9 / rate).round() as u64).max(1);
        Gcra {
            interval,
            tolerance: interval.saturating_mul(u64::from(burst)),
            burst,
        }
    }

    pub(crate) fn burst(&self) -> u32 {
        self.burst
    }

    /// Emission interval and tolerance in microseconds, for the Redis script.
    fn micros(&self) -> (u64, u64) {
        let interval = (self.interval / 1000).max(1);
        (interval, interval.saturating_mul(u64::from(self.burst)))
    }

    /// Decides a request at `now` for a key whose TAT is `tat` (none: never seen); returns the
    /// decision and the TAT to store when admitted.
    pub(crate) fn check(&self, tat: Option<u64>, now: u64) -> (Decision, Option<u64>) {
        let tat = tat.unwrap_or(now).max(now);
        let new_tat = tat.saturating_add(self.interval);
        let ahead = new_tat - now;
        if ahead > self.tolerance {
            let retry_after = ahead - self.tolerance;
            (
                Decision::Deny {
                    retry_after: Duration::from_nanos(retry_after),
                    reset: Duration::from_nanos(tat - now),
                },
                None,
            )
        } else {
            let remaining = (self.tolerance - ahead) / self.interval;
            (
                Decision::Allow {
                    remaining: u32::try_from(remaining).unwrap_or(u32::MAX),
                    reset: Duration::from_nanos(ahead),
                },
                Some(new_tat),
            )
        }
    }

    /// The decision the Redis script's answer stands for.
    fn decode_script(&self, allowed: bool, retry_after_us: i64, ahead_us: i64) -> Decision {
        let ahead = Duration::from_micros(ahead_us.max(0) as u64);
        if allowed {
            let (interval, tolerance) = self.micros();
            let ahead_us = ahead_us.max(0) as u64;
            let remaining = tolerance.saturating_sub(ahead_us) / interval;
            Decision::Allow {
                remaining: u32::try_from(remaining).unwrap_or(u32::MAX),
                reset: ahead,
            }
        } else {
            Decision::Deny {
                retry_after: Duration::from_micros(retry_after_us.max(0) as u64),
                reset: ahead,
            }
        }
    }
}

impl Decision {
    /// `RateLimit-*` headers (and `Retry-After` for a refusal).
    #[cfg(test)]
    pub(crate) fn headers(&self, limit: u32) -> HeaderMap {
        self.headers_with(&HeaderValue::from(limit))
    }

    /// [`headers`](Self::headers) with the `RateLimit-Limit` value made beforehand (it is the
    /// bucket's burst, the same on every answer).
    pub(crate) fn headers_with(&self, limit: &HeaderValue) -> HeaderMap {
        let mut h = HeaderMap::with_capacity(4);
        self.rate_headers(limit).apply(&mut h);
        h
    }

    /// The answer's `RateLimit-*` (and `Retry-After`) values, to be written into a response's
    /// headers. Small numbers come from a table of values built once, so this allocates nothing
    /// in the common case.
    pub(crate) fn rate_headers(&self, limit: &HeaderValue) -> RateHeaders {
        let (remaining, reset, retry_after) = match *self {
            Decision::Allow { remaining, reset } => (u64::from(remaining), reset, None),
            Decision::Deny { retry_after, reset } => (0, reset, Some(retry_after)),
        };
        RateHeaders {
            values: Some(Box::new(RateHeaderValues {
                limit: limit.clone(),
                remaining: number_value(remaining),
                reset: number_value(ceil_secs(reset)),
                retry_after: retry_after.map(|d| number_value(ceil_secs(d).max(1))),
            })),
        }
    }
}

/// The `RateLimit-Limit`, `-Remaining` and `-Reset` headers (and `Retry-After` on a refusal) of
/// one rate-limit decision, or none (no limit on the route, or `headers = false`). Written into
/// the response's own header map ([`apply`](Self::apply)) rather than kept as a map of their own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RateHeaders {
    // Boxed: an `Admitted` travels in every request future, and most routes have no limit.
    values: Option<Box<RateHeaderValues>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct RateHeaderValues {
    limit: HeaderValue,
    remaining: HeaderValue,
    reset: HeaderValue,
    retry_after: Option<HeaderValue>,
}

impl RateHeaders {
    /// Whether there are no headers to add.
    pub fn is_empty(&self) -> bool {
        self.values.is_none()
    }

    /// Sets the headers in `headers` (replacing values of the same names).
    pub fn apply(&self, headers: &mut HeaderMap) {
        let Some(v) = &self.values else { return };
        headers.reserve(3 + usize::from(v.retry_after.is_some()));
        headers.insert(RATELIMIT_LIMIT, v.limit.clone());
        headers.insert(RATELIMIT_REMAINING, v.remaining.clone());
        headers.insert(RATELIMIT_RESET, v.reset.clone());
        if let Some(retry_after) = &v.retry_after {
            headers.insert(http::header::RETRY_AFTER, retry_after.clone());
        }
    }

    /// The headers as a map of their own.
    pub fn to_header_map(&self) -> HeaderMap {
        let mut h = HeaderMap::new();
        self.apply(&mut h);
        h
    }
}

/// Numbers below this have a header value made once (cloning one costs no allocation).
const SMALL_NUMBERS: u64 = 1024;

/// `n` as a header value.
fn number_value(n: u64) -> HeaderValue {
    static SMALL: std::sync::LazyLock<Vec<HeaderValue>> =
        std::sync::LazyLock::new(|| (0..SMALL_NUMBERS).map(HeaderValue::from).collect());
    match usize::try_from(n).ok().and_then(|i| SMALL.get(i)) {
        Some(v) => v.clone(),
        None => HeaderValue::from(n),
    }
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// What a limit counts per, once resolved for a request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum LimitKey {
    Ip(IpAddr),
    Name(Arc<str>),
}

impl LimitKey {
    fn redis_suffix(&self) -> String {
        match self {
            LimitKey::Ip(ip) => format!("ip:{ip}"),
            LimitKey::Name(name) => format!("id:{name}"),
        }
    }
}

/// Hashes limit keys: foldhash, randomly seeded per store. Keys are client addresses and
/// subjects, so the seed keeps clients from choosing colliding keys; SipHash (std's default)
/// cost more than the rest of a rate-limit check.
type KeyHasher = foldhash::fast::RandomState;
type KeyMap = HashMap<LimitKey, u64, KeyHasher>;

/// The local, bounded key store of one bucket.
#[derive(Debug)]
pub(crate) struct LocalStore {
    hasher: KeyHasher,
    shards: Box<[Mutex<KeyMap>]>,
    per_shard: usize,
    epoch: Instant,
}

impl LocalStore {
    pub(crate) fn new(max_keys: usize) -> LocalStore {
        let max_keys = max_keys.max(1);
        let n = if max_keys >= SHARD_THRESHOLD {
            SHARDS
        } else {
            1
        };
        let per_shard = max_keys.div_ceil(n);
        LocalStore {
            hasher: KeyHasher::default(),
            shards: (0..n)
                .map(|_| Mutex::new(KeyMap::with_hasher(KeyHasher::default())))
                .collect(),
            per_shard,
            epoch: Instant::now(),
        }
    }

    /// Nanoseconds since this store was made, on tokio's clock (paused in tests).
    pub(crate) fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn shard(&self, key: &LimitKey) -> &Mutex<KeyMap> {
        let i = (self.hasher.hash_one(key) as usize) % self.shards.len();
        &self.shards[i]
    }

    /// Checks and records one request for `key` at `now`.
    pub(crate) fn check(&self, gcra: &Gcra, key: &LimitKey, now: u64) -> Decision {
        let mut shard = self.shard(key).lock();
        let tat = shard.get(key).copied();
        let (decision, new_tat) = gcra.check(tat, now);
        if let Some(new_tat) = new_tat {
            match shard.get_mut(key) {
                Some(slot) => *slot = new_tat,
                None => {
                    if shard.len() >= self.per_shard {
                        let victim = shard
                            .iter()
                            .take(EVICTION_SAMPLE)
                            .min_by_key(|(_, tat)| **tat)
                            .map(|(k, _)| k.clone());
                        if let Some(victim) = victim {
                            shard.remove(&victim);
                            metrics::counter!(m::RATE_LIMIT_EVICTIONS).increment(1);
                        }
                    }
                    shard.insert(key.clone(), new_tat);
                }
            }
        }
        decision
    }

    /// Drops keys back at full burst (they decide nothing); returns the keys left.
    pub(crate) fn prune(&self, now: u64) -> usize {
        let mut left = 0;
        for shard in self.shards.iter() {
            let mut shard = shard.lock();
            shard.retain(|_, tat| *tat > now);
            // Give memory back after a spray of keys has gone.
            if shard.capacity() > 4 * shard.len().max(16) {
                shard.shrink_to_fit();
            }
            left += shard.len();
        }
        left
    }

    /// Keys tracked now.
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }
}

/// The GCRA check as one atomic script, on the Redis server's clock (microseconds).
/// KEYS[1]: the key. ARGV[1]: emission interval, ARGV[2]: tolerance.
/// Returns {admitted (0/1), retry_after, TAT - now after the call}.
const GCRA_SCRIPT: &str = r"
if redis.replicate_commands then redis.replicate_commands() end
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]))
if tat == nil or tat < now then tat = now end
local new_tat = tat + interval
local ahead = new_tat - now
if ahead > tolerance then
  return {0, ahead - tolerance, tat - now}
end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.floor(ahead / 1000) + 1)
return {1, 0, ahead}
";

/// Why a shared check gave no answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SharedError {
    #[error("Redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("Redis failed: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("Redis is being left alone after a recent failure")]
    Backoff,
}

/// The connection to Redis shared by every shared bucket of an `Edge`.
pub(crate) struct SharedStore {
    conn: ConnectionManager,
    script: redis::Script,
    prefix: String,
    timeout: Duration,
    retry_interval: Duration,
    pub(crate) fallback: RedisFallback,
    /// Nanoseconds after `epoch` before which Redis is not tried (after a failure).
    down_until: AtomicU64,
    epoch: Instant,
}

impl std::fmt::Debug for SharedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedStore")
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .field("fallback", &self.fallback)
            .finish_non_exhaustive()
    }
}

impl SharedStore {
    /// Makes the connection manager; it connects on first use and reconnects by itself. Needs
    /// a Tokio runtime.
    pub(crate) fn new(config: &RedisConfig) -> Result<SharedStore, redis::RedisError> {
        let client = redis::Client::open(config.url.expose())?;
        let manager_config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.timeout.max(Duration::from_millis(250))))
            .set_response_timeout(Some(config.timeout))
            .set_number_of_retries(2)
            .set_max_delay(config.retry_interval);
        let conn = ConnectionManager::new_lazy_with_config(client, manager_config)?;
        Ok(SharedStore {
            conn,
            script: redis::Script::new(GCRA_SCRIPT),
            prefix: config.key_prefix.clone(),
            timeout: config.timeout,
            retry_interval: config.retry_interval,
            fallback: config.on_error,
            down_until: AtomicU64::new(0),
            epoch: Instant::now(),
        })
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// One shared check. Bucket names are length-prefixed in the key, so no bucket and key pair
    /// can collide with another.
    pub(crate) async fn check(
        &self,
        gcra: &Gcra,
        bucket: &str,
        key: &LimitKey,
    ) -> Result<Decision, SharedError> {
        if self.now() < self.down_until.load(Ordering::Relaxed) {
            return Err(SharedError::Backoff);
        }
        let redis_key = format!(
            "{}{}:{bucket}:{}",
            self.prefix,
            bucket.len(),
            key.redis_suffix()
        );
        let (interval, tolerance) = gcra.micros();
        let mut conn = self.conn.clone();
        let mut invocation = self.script.key(redis_key);
        invocation.arg(interval).arg(tolerance);
        let result = tokio::time::timeout(
            self.timeout,
            invocation.invoke_async::<(i64, i64, i64)>(&mut conn),
        )
        .await;
        let failure = match result {
            Ok(Ok((allowed, retry_after, ahead))) => {
                return Ok(gcra.decode_script(allowed == 1, retry_after, ahead));
            }
            Ok(Err(e)) => {
                metrics::counter!(m::RATE_LIMIT_REDIS_ERRORS, "kind" => "error").increment(1);
                SharedError::Redis(e)
            }
            Err(_) => {
                metrics::counter!(m::RATE_LIMIT_REDIS_ERRORS, "kind" => "timeout").increment(1);
                SharedError::Timeout(self.timeout)
            }
        };
        let until = self
            .now()
            .saturating_add(u64::try_from(self.retry_interval.as_nanos()).unwrap_or(u64::MAX));
        self.down_until.store(until, Ordering::Relaxed);
        Err(failure)
    }
}

/// One rate-limit bucket: a GCRA limit, what it counts per, and its local store. Shared by
/// every route policy that names it while any of them lives.
#[derive(Debug)]
pub(crate) struct Bucket {
    pub(crate) name: Arc<str>,
    pub(crate) gcra: Gcra,
    pub(crate) key: RateLimitKey,
    pub(crate) shared: bool,
    pub(crate) max_keys: usize,
    pub(crate) headers: bool,
    /// `RateLimit-Limit` (the burst), made once.
    pub(crate) limit_value: HeaderValue,
    pub(crate) local: LocalStore,
    pub(crate) limited_local: metrics::Counter,
    pub(crate) limited_shared: metrics::Counter,
}

impl Bucket {
    pub(crate) fn new(
        name: Arc<str>,
        gcra: Gcra,
        key: RateLimitKey,
        shared: bool,
        max_keys: usize,
        headers: bool,
    ) -> Bucket {
        let label = name.to_string();
        Bucket {
            limited_local: metrics::counter!(m::RATE_LIMITED, "bucket" => label.clone(), "store" => "local"),
            limited_shared: metrics::counter!(m::RATE_LIMITED, "bucket" => label, "store" => "shared"),
            name,
            limit_value: HeaderValue::from(gcra.burst()),
            gcra,
            key,
            shared,
            max_keys,
            headers,
            local: LocalStore::new(max_keys),
        }
    }

    /// Whether `other` would make the same decisions (so the state may be reused).
    pub(crate) fn same_limit(&self, other: &Bucket) -> bool {
        self.gcra == other.gcra
            && self.key == other.key
            && self.shared == other.shared
            && self.max_keys == other.max_keys
            && self.headers == other.headers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    #[test]
    fn gcra_admits_a_burst_then_the_rate() {
        let g = Gcra::new(10.0, 5);
        let store = LocalStore::new(100);
        let key = LimitKey::Name("k".into());
        let t0 = 1000 * SEC;
        for i in 0..5 {
            match store.check(&g, &key, t0) {
                Decision::Allow { remaining, .. } => assert_eq!(remaining, 4 - i),
                d => panic!("request {i} of the burst refused: {d:?}"),
            }
        }
        let Decision::Deny { retry_after, .. } = store.check(&g, &key, t0) else {
            panic!("sixth request at once admitted")
        };
        assert_eq!(retry_after, Duration::from_millis(100));
        // One emission interval later exactly one more.
        assert!(matches!(
            store.check(&g, &key, t0 + SEC / 10),
            Decision::Allow { remaining: 0, .. }
        ));
        assert!(matches!(
            store.check(&g, &key, t0 + SEC / 10),
            Decision::Deny { .. }
        ));
        // Over 10 s of requests every millisecond: burst + 10 s · rate.
        let key2 = LimitKey::Name("k2".into());
        let admitted = (0..10_000)
            .filter(|ms| {
                matches!(
                    store.check(&g, &key2, t0 + ms * SEC / 1000),
                    Decision::Allow { .. }
                )
            })
            .count();
        assert_eq!(
            admitted,
            5 + 100 - 1,
            "the 100th interval ends exactly at 10 s"
        );
    }

    #[test]
    fn fractional_rates_work() {
        let g = Gcra::new(0.5, 1);
        let store = LocalStore::new(10);
        let key = LimitKey::Name("slow".into());
        assert!(matches!(store.check(&g, &key, 0), Decision::Allow { .. }));
        let Decision::Deny { retry_after, .. } = store.check(&g, &key, SEC) else {
            panic!()
        };
        assert_eq!(retry_after, Duration::from_secs(1));
        assert!(matches!(
            store.check(&g, &key, 2 * SEC),
            Decision::Allow { .. }
        ));
    }

    #[test]
    fn pruning_drops_only_keys_back_at_full_burst() {
        let g = Gcra::new(1.0, 2);
        let store = LocalStore::new(100);
        store.check(&g, &LimitKey::Name("idle".into()), 0);
        store.check(&g, &LimitKey::Name("busy".into()), 5 * SEC);
        assert_eq!(store.len(), 2);
        assert_eq!(
            store.prune(3 * SEC),
            1,
            "idle's TAT (1 s) has passed, busy's (6 s) not"
        );
        assert_eq!(store.prune(7 * SEC), 0);
    }

    #[test]
    fn a_full_store_evicts_instead_of_growing() {
        let g = Gcra::new(1.0, 1);
        let store = LocalStore::new(50);
        for i in 0..500u32 {
            let d = store.check(&g, &LimitKey::Name(i.to_string().into()), u64::from(i));
            assert!(matches!(d, Decision::Allow { .. }), "new keys are admitted");
            assert!(store.len() <= 50);
        }
        assert_eq!(store.len(), 50);
        // The newest keys are still limited: eviction took old ones.
        let d = store.check(&g, &LimitKey::Name("499".into()), 500);
        assert!(matches!(d, Decision::Deny { .. }), "{d:?}");
    }

    #[test]
    fn large_stores_are_sharded_and_bounded() {
        let g = Gcra::new(1.0, 1);
        let store = LocalStore::new(5000);
        assert_eq!(store.shards.len(), SHARDS);
        for i in 0..20_000u32 {
            store.check(&g, &LimitKey::Ip(IpAddr::from(i.to_be_bytes())), 0);
        }
        let len = store.len();
        assert!(
            (4900..=5000 + SHARDS).contains(&len),
            "{len} keys for a bound of 5000"
        );
    }

    #[test]
    fn headers_follow_the_draft() {
        let h = Decision::Deny {
            retry_after: Duration::from_millis(1500),
            reset: Duration::from_millis(2500),
        }
        .headers(10);
        assert_eq!(h["ratelimit-limit"], "10");
        assert_eq!(h["ratelimit-remaining"], "0");
        assert_eq!(h["ratelimit-reset"], "3");
        assert_eq!(h["retry-after"], "2");
        let h = Decision::Deny {
            retry_after: Duration::from_millis(10),
            reset: Duration::ZERO,
        }
        .headers(1);
        assert_eq!(h["retry-after"], "1", "never Retry-After: 0");
    }
}
