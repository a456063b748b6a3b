//! Metric names, and their HELP text for whoever installs the recorder. Label values come from
//! bounded sets only: rejection reasons, auth methods, configured bucket names, never request
//! input.

/// Requests refused by authentication, by `reason` (see [`Rejection::reason`](crate::Rejection)).
pub const AUTH_REJECTIONS: &str = "tideway_auth_rejections_total";
/// Requests authenticated, by `method` (`jwt`, `api_key`).
pub const AUTH_ACCEPTED: &str = "tideway_auth_accepted_total";
/// Requests refused by IP rules, by `reason` (`ip_denied`, `ip_not_allowed`).
pub const IP_REJECTIONS: &str = "tideway_ip_rejections_total";
/// Requests refused by a rate limit, by `bucket` and `store` (`local`, `shared`).
pub const RATE_LIMITED: &str = "tideway_rate_limited_total";
/// Keys tracked by the local rate-limit stores of an `Edge`, set by its prune task (while two
/// generations overlap during a reload, the last to prune wins).
pub const RATE_LIMIT_KEYS: &str = "tideway_rate_limit_keys";
/// Keys evicted from a full local store to make room for a new one.
pub const RATE_LIMIT_EVICTIONS: &str = "tideway_rate_limit_evictions_total";
/// Shared checks that failed, by `kind` (`error`, `timeout`).
pub const RATE_LIMIT_REDIS_ERRORS: &str = "tideway_rate_limit_redis_errors_total";
/// Shared checks answered by the fallback, by `action` (`local`, `allow`, `deny`).
pub const RATE_LIMIT_FALLBACKS: &str = "tideway_rate_limit_fallbacks_total";
/// JWKS file reloads, by `result` (`ok`, `error`).
pub const JWKS_RELOADS: &str = "tideway_jwks_reloads_total";
/// JWT verification keys in use (static and from JWKS files).
pub const JWT_KEYS: &str = "tideway_jwt_keys";
/// Bearer tokens answered from the verified-token cache (no signature check).
pub const JWT_CACHE_HITS: &str = "tideway_jwt_cache_hits_total";
/// Bearer tokens looked up in the verified-token cache and not found (or expired there).
pub const JWT_CACHE_MISSES: &str = "tideway_jwt_cache_misses_total";
/// Unexpired tokens dropped from the full verified-token cache to make room.
pub const JWT_CACHE_EVICTIONS: &str = "tideway_jwt_cache_evictions_total";
/// Tokens in the verified-token cache.
pub const JWT_CACHE_ENTRIES: &str = "tideway_jwt_cache_entries";
/// Tokens signed by the token issuer, by `kind` (`access`, `refresh`).
pub const TOKENS_ISSUED: &str = "tideway_tokens_issued_total";
/// CORS preflights answered, by `result` (`allowed`, `refused`).
pub const CORS_PREFLIGHTS: &str = "tideway_cors_preflights_total";

/// Registers HELP text for every series above with the installed recorder. Call once after
/// installing it (calling again is harmless).
pub fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge};
    describe_counter!(
        AUTH_REJECTIONS,
        "Requests refused by authentication, by reason"
    );
    describe_counter!(AUTH_ACCEPTED, "Requests authenticated, by method");
    describe_counter!(IP_REJECTIONS, "Requests refused by IP allow or deny rules");
    describe_counter!(
        RATE_LIMITED,
        "Requests refused by a rate limit, by bucket and store (local or shared)"
    );
    describe_gauge!(
        RATE_LIMIT_KEYS,
        "Keys tracked by local rate-limit stores after the last prune"
    );
    describe_counter!(
        RATE_LIMIT_EVICTIONS,
        "Keys evicted from a full local rate-limit store"
    );
    describe_counter!(
        RATE_LIMIT_REDIS_ERRORS,
        "Shared rate-limit checks that failed, by kind (error or timeout)"
    );
    describe_counter!(
        RATE_LIMIT_FALLBACKS,
        "Shared rate-limit checks answered by the fallback, by action"
    );
    describe_counter!(JWKS_RELOADS, "JWKS file reloads, by result");
    describe_gauge!(JWT_KEYS, "JWT verification keys in use");
    describe_counter!(
        JWT_CACHE_HITS,
        "Bearer tokens answered from the verified-token cache"
    );
    describe_counter!(
        JWT_CACHE_MISSES,
        "Bearer tokens not found in the verified-token cache"
    );
    describe_counter!(
        JWT_CACHE_EVICTIONS,
        "Unexpired tokens evicted from the full verified-token cache"
    );
    describe_gauge!(JWT_CACHE_ENTRIES, "Tokens in the verified-token cache");
    describe_counter!(TOKENS_ISSUED, "Tokens signed by the token issuer, by kind");
    describe_counter!(
        CORS_PREFLIGHTS,
        "CORS preflight requests answered, by result"
    );
}
