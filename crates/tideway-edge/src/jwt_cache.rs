//! A bounded cache of verified tokens, so that a client sending the same bearer token on every
//! request pays for its signature check once (as Envoy's `jwt_authn` `jwt_cache_config`).
//!
//! - Keyed by the token's exact bytes: a hit needs the very token that was verified, so a
//!   tampered or re-signed token is never answered from here.
//! - Only tokens that verified are kept, each until its `exp` (no leeway: once `exp` has
//!   passed the token is verified again, which applies the leeway and then refuses it). Tokens
//!   without a numeric `exp`, or longer than [`MAX_CACHED_TOKEN_BYTES`], are not cached.
//! - At most `max_entries` tokens: when full, expired entries among a sample of
//!   [`EVICTION_SAMPLE`] go first, else the one of the sample that expires soonest.
//! - Emptied whenever the key set changes (a JWKS reload), so a removed key stops accepting
//!   tokens at once.
//! - Counted in `tideway_jwt_cache_{hits,misses,evictions}_total` and `tideway_jwt_cache_entries`.
//!
//! - Each entry also keeps the principals made from its token, one per route policy that saw
//!   it (at most [`MAX_PRINCIPALS_PER_TOKEN`](crate::principal::MAX_PRINCIPALS_PER_TOKEN)), so
//!   a hit finds its call metadata ready.
//!
//! Memory: at most `max_entries` × ([`MAX_CACHED_TOKEN_BYTES`] + the claims + the principals).

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};

use parking_lot::Mutex;
use serde_json::Value;

use crate::jwt::Verified;
use crate::metrics as m;

/// Longest token cached; longer ones are verified every time.
pub(crate) const MAX_CACHED_TOKEN_BYTES: usize = 4096;

/// Entries looked at to choose one to evict when the cache is full.
pub(crate) const EVICTION_SAMPLE: usize = 8;

struct Entry {
    verified: Verified,
    /// The token's `exp`, Unix seconds; the entry is unusable from then on.
    expires_at: u64,
}

/// The cache; see the module docs.
pub(crate) struct TokenCache {
    max_entries: usize,
    map: Mutex<HashMap<Box<str>, Entry, TokenHash>>,
    hits: metrics::Counter,
    misses: metrics::Counter,
}

/// A fast hash of token bytes for the cache map (SipHash over a ~700-byte token costs more than
/// the rest of a cache hit). A lookup still compares the whole token, so the hash decides only
/// where to look. Flooding the map with colliding keys is not possible: only tokens whose
/// signature verified are inserted. Seeded per cache all the same.
#[derive(Clone, Copy)]
struct TokenHash {
    seed: u64,
}

impl BuildHasher for TokenHash {
    type Hasher = TokenHasher;

    fn build_hasher(&self) -> TokenHasher {
        TokenHasher { state: self.seed }
    }
}

/// Multiply-rotate over 8-byte words (as rustc's FxHasher), finished with a mix.
struct TokenHasher {
    state: u64,
}

const HASH_K: u64 = 0xf135_7aea_2e62_a9c5;

/// How much of a token's end the cache hashes (see [`TokenHasher::write`]).
const HASHED_TAIL_BYTES: usize = 64;

impl TokenHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.state = (self.state.rotate_left(26) ^ word).wrapping_mul(HASH_K);
    }
}

impl Hasher for TokenHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        // Only the last HASHED_TAIL_BYTES: a token ends with its signature (43 to 342
        // base64url characters), which differs between any two tokens, so the tail spreads them
        // as well as the whole would, at a fraction of the cost for a 700-byte RS256 token.
        let len = bytes.len();
        let bytes = &bytes[len.saturating_sub(HASHED_TAIL_BYTES)..];
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word));
        }
        self.add(len as u64);
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    #[inline]
    fn finish(&self) -> u64 {
        // Spread the high bits down: hashbrown takes its control bits from the top.
        let x = self.state ^ (self.state >> 29);
        x.wrapping_mul(0xbf58_476d_1ce4_e5b9) ^ (x >> 32)
    }
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache")
            .field("max_entries", &self.max_entries)
            .field("len", &self.map.lock().len())
            .finish_non_exhaustive()
    }
}

impl TokenCache {
    /// A cache of at most `max_entries` tokens (at least 1). The hit and miss counters are
    /// taken here (once, not per request), so the metrics recorder must be installed before.
    pub(crate) fn new(max_entries: usize) -> TokenCache {
        let seed = std::collections::hash_map::RandomState::new().hash_one(0x7469_6465_u64);
        TokenCache {
            max_entries: max_entries.max(1),
            map: Mutex::new(HashMap::with_hasher(TokenHash { seed })),
            hits: metrics::counter!(m::JWT_CACHE_HITS),
            misses: metrics::counter!(m::JWT_CACHE_MISSES),
        }
    }

    /// The verified token, if it is cached and `now` (Unix seconds) is before its `exp`. An
    /// expired entry is dropped.
    pub(crate) fn get(&self, token: &str, now: u64) -> Option<Verified> {
        let mut map = self.map.lock();
        let found = match map.get(token) {
            Some(entry) if now < entry.expires_at => Some(entry.verified.clone()),
            Some(_) => {
                map.remove(token);
                metrics::gauge!(m::JWT_CACHE_ENTRIES).set(map.len() as f64);
                None
            }
            None => None,
        };
        drop(map);
        match &found {
            Some(_) => self.hits.increment(1),
            None => self.misses.increment(1),
        }
        found
    }

    /// Keeps a token that has just verified, until its `exp`.
    pub(crate) fn insert(&self, token: &str, verified: &Verified, now: u64) {
        if token.len() > MAX_CACHED_TOKEN_BYTES {
            return;
        }
        let Some(expires_at) = verified.claims.get("exp").and_then(exp_seconds) else {
            return;
        };
        if expires_at <= now {
            return;
        }
        let mut map = self.map.lock();
        if !map.contains_key(token) && map.len() >= self.max_entries {
            let victim = map
                .iter()
                .take(EVICTION_SAMPLE)
                .min_by_key(|(_, e)| e.expires_at)
                .map(|(k, e)| (k.clone(), e.expires_at));
            if let Some((key, victim_expires)) = victim {
                map.remove(&key);
                if victim_expires > now {
                    metrics::counter!(m::JWT_CACHE_EVICTIONS).increment(1);
                }
            }
        }
        map.insert(
            token.into(),
            Entry {
                verified: verified.clone(),
                expires_at,
            },
        );
        metrics::gauge!(m::JWT_CACHE_ENTRIES).set(map.len() as f64);
    }

    /// Forgets every token (the key set changed).
    pub(crate) fn clear(&self) {
        let mut map = self.map.lock();
        map.clear();
        metrics::gauge!(m::JWT_CACHE_ENTRIES).set(0.0);
    }

    /// Tokens cached.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map.lock().len()
    }
}

/// `exp` as whole Unix seconds (a fractional `exp` is rounded down, so the entry never outlives
/// the token); `None` for anything but a non-negative number.
fn exp_seconds(exp: &Value) -> Option<u64> {
    match exp {
        Value::Number(n) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| *f >= 0.0 && f.is_finite())
                .map(|f| f as u64)
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::{Map, json};

    use super::*;
    use crate::config::{JwtAlgorithm, JwtKeyConfig};

    fn verified(sub: &str, exp: Value) -> Verified {
        let config = JwtKeyConfig {
            id: "k".into(),
            algorithm: JwtAlgorithm::HS256,
            secret: Some(crate::config::Secret::new(
                "0123456789abcdef0123456789abcdef",
            )),
            secret_file: None,
            public_key_file: None,
            jwks_file: None,
            issuer: None,
            audience: Vec::new(),
            leeway: std::time::Duration::ZERO,
        };
        let key = crate::jwt::test_key(&config);
        let mut claims = Map::new();
        claims.insert("sub".into(), json!(sub));
        claims.insert("exp".into(), exp);
        Verified {
            key,
            claims: Arc::new(claims),
            principals: Arc::default(),
        }
    }

    fn sub(v: &Verified) -> &str {
        v.claims["sub"].as_str().unwrap()
    }

    #[test]
    fn a_cached_token_is_answered_until_its_exp_and_not_after() {
        let cache = TokenCache::new(10);
        cache.insert("t1", &verified("alice", json!(1_000)), 900);
        assert_eq!(sub(&cache.get("t1", 900).expect("cached")), "alice");
        assert_eq!(sub(&cache.get("t1", 999).expect("still valid")), "alice");
        assert!(cache.get("t1", 1_000).is_none(), "expired at exp");
        assert_eq!(cache.len(), 0, "the expired entry is dropped");
        assert!(cache.get("t2", 900).is_none(), "never cached");
    }

    #[test]
    fn only_the_exact_token_hits() {
        let cache = TokenCache::new(10);
        cache.insert("aaa.bbb.ccc", &verified("alice", json!(1_000)), 0);
        assert!(cache.get("aaa.bbb.ccd", 0).is_none());
        assert!(cache.get("aaa.bbb.cc", 0).is_none());
        assert!(cache.get("aaa.bbb.ccc", 0).is_some());
    }

    #[test]
    fn tokens_that_differ_only_before_the_hashed_tail_are_told_apart() {
        let cache = TokenCache::new(10);
        let tail = "s".repeat(HASHED_TAIL_BYTES);
        let alice = format!("header.alice.{tail}");
        let mallory = format!("header.malory.{tail}");
        cache.insert(&alice, &verified("alice", json!(1_000)), 0);
        assert!(cache.get(&mallory, 0).is_none(), "same tail, other token");
        cache.insert(&mallory, &verified("mallory", json!(1_000)), 0);
        assert_eq!(sub(&cache.get(&alice, 0).unwrap()), "alice");
        assert_eq!(sub(&cache.get(&mallory, 0).unwrap()), "mallory");
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn tokens_without_a_usable_exp_or_already_expired_or_too_long_are_not_cached() {
        let cache = TokenCache::new(10);
        cache.insert("a", &verified("x", json!("1000")), 0);
        cache.insert("b", &verified("x", json!(-5)), 0);
        cache.insert("c", &verified("x", json!(500)), 500);
        let long = "x".repeat(MAX_CACHED_TOKEN_BYTES + 1);
        cache.insert(&long, &verified("x", json!(1_000)), 0);
        assert_eq!(cache.len(), 0);
        // A fractional exp is rounded down.
        cache.insert("d", &verified("x", json!(100.9)), 0);
        assert!(cache.get("d", 99).is_some());
        assert!(cache.get("d", 100).is_none());
    }

    #[test]
    fn the_cache_is_bounded_and_evicts_expired_entries_first() {
        let cache = TokenCache::new(4);
        for i in 0..4 {
            cache.insert(&format!("t{i}"), &verified("x", json!(100 + i)), 0);
        }
        assert_eq!(cache.len(), 4);
        // t0 (exp 100) is the soonest to expire: it goes when a fifth token arrives.
        cache.insert("t4", &verified("x", json!(1_000)), 0);
        assert_eq!(cache.len(), 4);
        assert!(cache.get("t0", 0).is_none());
        assert!(cache.get("t4", 0).is_some());
        for i in 5..1_000 {
            cache.insert(&format!("t{i}"), &verified("x", json!(2_000)), 0);
            assert!(cache.len() <= 4);
        }
        // Re-inserting a cached token does not evict another.
        cache.insert("t999", &verified("x", json!(2_000)), 0);
        assert_eq!(cache.len(), 4);
    }

    #[test]
    fn clear_forgets_everything() {
        let cache = TokenCache::new(4);
        cache.insert("t", &verified("x", json!(1_000)), 0);
        cache.clear();
        assert!(cache.get("t", 0).is_none());
    }
}
