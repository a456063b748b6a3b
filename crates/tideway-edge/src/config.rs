//! Configuration: plain serde data (TOML or JSON), every default a named `DEFAULT_*` const, and
//! `validate()` methods that return every problem as `(key path, message)` rather than stopping
//! at the first, like the gateway's own config.
//!
//! Two levels:
//!
//! - [`EdgeConfig`]: what a gateway instance knows once (keys, API keys, trusted proxies, the
//!   token issuer, Redis). An [`Edge`](crate::Edge) is built from it per config generation.
//! - [`RoutePolicyConfig`]: what one route asks for (authentication, IP rules, a rate limit,
//!   CORS), compiled against an `Edge` with [`Edge::route_policy`](crate::Edge::route_policy).
//!
//! ```toml
//! [edge]
//! trusted_proxies = ["10.0.0.0/8"]
//!
//! [[edge.jwt_keys]]
//! id = "idp-2024"
//! algorithm = "RS256"
//! public_key_file = "/etc/tideway/idp.pem"
//! issuer = "https://idp.example.com"
//! audience = "tideway"
//!
//! [[edge.jwt_keys]]
//! id = "partners"
//! algorithm = "ES256"
//! jwks_file = "/etc/tideway/partners.jwks.json"
//!
//! [[edge.api_keys]]
//! name = "warehouse-scanner"
//! sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
//!
//! [edge.redis]
//! url = "redis://127.0.0.1:6379"
//!
//! # on a route:
//! [routes.edge]
//! auth = { methods = "either", forward_claims = ["roles"] }
//! ip = { deny = ["203.0.113.0/24"] }
//! rate_limit = { rate = 50.0, burst = 100, key = "subject", shared = true }
//! cors = { allow_origins = ["https://app.example.com"], allow_methods = ["GET", "POST"] }
//! ```

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::ip::IpSet;

/// Allowed clock skew when checking `exp` and `nbf`.
pub const DEFAULT_JWT_LEEWAY: Duration = Duration::from_secs(30);
/// A leeway above this defeats `exp`; `validate()` rejects it.
pub const MAX_JWT_LEEWAY: Duration = Duration::from_secs(300);
/// How often JWKS files are checked for changes (modification time, length, content).
pub const DEFAULT_JWKS_POLL_INTERVAL: Duration = Duration::from_secs(5);
/// Longest bearer token looked at; longer ones are rejected before any decoding. Tokens of
/// common identity providers are 1-2 KiB.
pub const DEFAULT_MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Verified tokens kept so a repeated token skips its signature check (0: no cache).
pub const DEFAULT_JWT_CACHE_ENTRIES: usize = 4096;
/// Most verified tokens the cache may be configured to keep.
pub const MAX_JWT_CACHE_ENTRIES: usize = 1_000_000;
/// Header carrying API keys.
pub const DEFAULT_API_KEY_HEADER: &str = "x-api-key";
/// Realm named in `WWW-Authenticate`.
pub const DEFAULT_REALM: &str = "tideway";
/// IPv6 clients are rate-limited per prefix of this length: one subscriber usually holds a
/// whole /64, so per-address keys would let one client mint unlimited keys.
pub const DEFAULT_IPV6_RATE_LIMIT_PREFIX: u8 = 64;
/// How often idle rate-limit keys (those back at full burst) are dropped.
pub const DEFAULT_PRUNE_INTERVAL: Duration = Duration::from_secs(10);
/// Keys one rate-limit bucket tracks at most (about 50 bytes each: ~5 MiB at this bound). When
/// full, a new key evicts the least recently due of a small sample (see `ratelimit`).
pub const DEFAULT_RATE_LIMIT_MAX_KEYS: usize = 100_000;
/// Lifetime of access tokens the token issuer signs.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(15 * 60);
/// Path of the token endpoint.
pub const DEFAULT_TOKEN_PATH: &str = "/oauth2/token";
/// How long a shared (Redis) rate-limit check may take before the fallback applies.
pub const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_millis(50);
/// After a Redis failure, requests use the fallback for this long before Redis is tried again,
/// so an outage costs one timeout per interval, not one per request.
pub const DEFAULT_REDIS_RETRY_INTERVAL: Duration = Duration::from_secs(1);
/// Prefix of the rate-limit keys in Redis.
pub const DEFAULT_REDIS_KEY_PREFIX: &str = "tideway:rl:";
/// How long browsers may cache a preflight answer.
pub const DEFAULT_CORS_MAX_AGE: Duration = Duration::from_secs(600);

/// RFC 7518 §3.2: an HS256 key must be at least as long as the hash output.
pub const MIN_HS256_SECRET_BYTES: usize = 32;
/// Requests per second above which a limit is meaningless for a gateway (and the emission
/// interval would round to nothing).
const MAX_RATE: f64 = 1_000_000.0;
/// Shortest token lifetime worth issuing.
const MIN_TOKEN_TTL: Duration = Duration::from_secs(10);

/// A secret from the config file: never printed by `Debug`.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(secret: impl Into<String>) -> Self {
        Secret(secret.into())
    }

    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// What a secret is serialized as (the admin API's `/admin/config`): the key stays, so an
/// operator sees that it is set, and the value never leaves the process.
pub const REDACTED: &str = "<redacted>";

/// Serialized as [`REDACTED`], never as the secret: a config that holds one can be shown.
impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(REDACTED)
    }
}

/// `serialize_with` for a string field that is a secret without being a [`Secret`] (an API key
/// hash, a token): written as [`REDACTED`].
pub fn serialize_redacted<T, S: Serializer>(_: &T, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(REDACTED)
}

/// `serialize_with` for an optional secret: `None` stays `null` (not set), `Some` is
/// [`REDACTED`].
pub fn serialize_redacted_option<T, S: Serializer>(
    value: &Option<T>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(_) => s.serialize_str(REDACTED),
        None => s.serialize_none(),
    }
}

/// A URL with the password of its user info (`scheme://user:password@host`) replaced by
/// [`REDACTED`]; a user info without a password is replaced whole (it may be a bare token, as
/// in `redis://TOKEN@host`). Everything else is kept.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_owned();
    };
    let userinfo = &authority[..at];
    let shown = match userinfo.split_once(':') {
        Some((user, _)) => format!("{user}:{REDACTED}"),
        None => REDACTED.to_owned(),
    };
    format!("{}{shown}{}", &url[..scheme_end + 3], &rest[at..])
}

fn serialize_secret_url<S: Serializer>(url: &Secret, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&redact_url(url.expose()))
}

/// A JWT signature algorithm Tideway accepts. Each key is pinned to one: a token whose header
/// names another algorithm is rejected before its signature is looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
pub enum JwtAlgorithm {
    /// HMAC with SHA-256 and a shared secret.
    HS256,
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RS256,
    /// ECDSA on P-256 with SHA-256.
    ES256,
    /// Ed25519.
    EdDSA,
}

impl JwtAlgorithm {
    /// The name used in JWT headers.
    pub fn as_str(self) -> &'static str {
        match self {
            JwtAlgorithm::HS256 => "HS256",
            JwtAlgorithm::RS256 => "RS256",
            JwtAlgorithm::ES256 => "ES256",
            JwtAlgorithm::EdDSA => "EdDSA",
        }
    }

    pub(crate) fn to_jsonwebtoken(self) -> jsonwebtoken::Algorithm {
        match self {
            JwtAlgorithm::HS256 => jsonwebtoken::Algorithm::HS256,
            JwtAlgorithm::RS256 => jsonwebtoken::Algorithm::RS256,
            JwtAlgorithm::ES256 => jsonwebtoken::Algorithm::ES256,
            JwtAlgorithm::EdDSA => jsonwebtoken::Algorithm::EdDSA,
        }
    }

    /// Whether keys of this algorithm are shared secrets.
    pub fn is_symmetric(self) -> bool {
        self == JwtAlgorithm::HS256
    }
}

impl fmt::Display for JwtAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything an [`Edge`](crate::Edge) needs besides per-route policies.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct EdgeConfig {
    /// Keys that verify JWT bearer tokens.
    pub jwt_keys: Vec<JwtKeyConfig>,
    /// API keys, stored as SHA-256 hashes.
    pub api_keys: Vec<ApiKeyConfig>,
    /// Header that carries API keys.
    pub api_key_header: String,
    /// Peers (CIDR ranges or addresses) whose `X-Forwarded-For` is believed. Empty: the client
    /// is always the TCP peer.
    pub trusted_proxies: Vec<String>,
    /// Signs tokens for the token endpoint.
    pub token_issuer: Option<TokenIssuerConfig>,
    /// Shared rate limits.
    pub redis: Option<RedisConfig>,
    /// How often JWKS files are checked for changes.
    #[serde(with = "humantime_serde")]
    pub jwks_poll_interval: Duration,
    /// Longest bearer token accepted, in bytes.
    pub max_token_bytes: usize,
    /// Verified tokens kept (by their exact bytes, each until its `exp`) so that a repeated
    /// token skips its signature check; 0 turns the cache off. Emptied when the keys change.
    pub jwt_cache_entries: usize,
    /// Realm in `WWW-Authenticate` challenges.
    pub realm: String,
    /// IPv6 clients are rate-limited per prefix of this many bits (1..=128).
    pub ipv6_rate_limit_prefix: u8,
    /// How often idle rate-limit keys are dropped.
    #[serde(with = "humantime_serde")]
    pub prune_interval: Duration,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        EdgeConfig {
            jwt_keys: Vec::new(),
            api_keys: Vec::new(),
            api_key_header: DEFAULT_API_KEY_HEADER.to_owned(),
            trusted_proxies: Vec::new(),
            token_issuer: None,
            redis: None,
            jwks_poll_interval: DEFAULT_JWKS_POLL_INTERVAL,
            max_token_bytes: DEFAULT_MAX_TOKEN_BYTES,
            jwt_cache_entries: DEFAULT_JWT_CACHE_ENTRIES,
            realm: DEFAULT_REALM.to_owned(),
            ipv6_rate_limit_prefix: DEFAULT_IPV6_RATE_LIMIT_PREFIX,
            prune_interval: DEFAULT_PRUNE_INTERVAL,
        }
    }
}

/// One JWT verification key, or a JWKS file of keys, pinned to one algorithm and with the
/// issuer and audience its tokens must carry.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JwtKeyConfig {
    /// The key id (`kid`) tokens name this key by; for a JWKS file, a label (its keys have their
    /// own `kid`s).
    pub id: String,
    /// The one algorithm this key verifies.
    pub algorithm: JwtAlgorithm,
    /// HS256: the shared secret (at least 32 bytes).
    pub secret: Option<Secret>,
    /// HS256: a file holding the shared secret (trailing newline ignored).
    pub secret_file: Option<PathBuf>,
    /// RS256, ES256, EdDSA: the public key, PEM (`PUBLIC KEY`, `RSA PUBLIC KEY` or a
    /// `CERTIFICATE`).
    pub public_key_file: Option<PathBuf>,
    /// A JWKS file (`{"keys": [...]}`), re-read when it changes. Keys whose `alg` is not
    /// `algorithm` are skipped.
    pub jwks_file: Option<PathBuf>,
    /// Required `iss`; none: any issuer.
    pub issuer: Option<String>,
    /// Accepted `aud` values (one string or a list); the token must carry one. Empty: tokens
    /// must carry no `aud` (a token meant for someone else is not accepted).
    #[serde(default, deserialize_with = "one_or_many")]
    pub audience: Vec<String>,
    /// Allowed clock skew for `exp` and `nbf`.
    #[serde(default = "default_leeway", with = "humantime_serde")]
    pub leeway: Duration,
}

fn default_leeway() -> Duration {
    DEFAULT_JWT_LEEWAY
}

fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

/// An API key: a name (the principal's subject) and the SHA-256 of the key, hex. Keys must be
/// random (128 bits or more, e.g. `openssl rand -hex 32`): an unsalted hash protects a random
/// key, not a guessable one.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// Who holds the key; sent to services as the subject.
    pub name: String,
    /// `sha256(key)`, 64 hex digits (`printf %s "$KEY" | sha256sum`).
    #[serde(serialize_with = "serialize_redacted")]
    pub sha256: String,
}

/// The token issuer: signs access tokens for the token endpoint with one of the `jwt_keys`, so
/// the gateway accepts every token it issues.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TokenIssuerConfig {
    /// Id of the `jwt_keys` entry to sign with (not a JWKS entry); its algorithm, `id` (as
    /// `kid`), issuer and first audience go into every token. It must set `issuer` and
    /// `audience`.
    pub key: String,
    /// RS256, ES256, EdDSA: the private key matching that entry's public key, PEM (PKCS#8
    /// `PRIVATE KEY`, or `RSA PRIVATE KEY`). HS256 signs with the entry's secret. Prefer
    /// EdDSA or ES256 for signing: RS256 signs with the pure-Rust `rsa` crate, whose private-key
    /// operations are not constant-time (RUSTSEC-2023-0071); verifying RS256 is unaffected.
    pub private_key_file: Option<PathBuf>,
    /// Lifetime of access tokens.
    #[serde(default = "default_token_ttl", with = "humantime_serde")]
    pub ttl: Duration,
    /// Lifetime of refresh tokens; none: no refresh tokens are issued.
    #[serde(default, with = "humantime_serde")]
    pub refresh_ttl: Option<Duration>,
    /// Path of the token endpoint (the gateway serves it; `POST` only).
    #[serde(default = "default_token_path")]
    pub path: String,
    /// The RPC service the gateway asks to check credentials, e.g. `logistics.Accounts`.
    pub auth_service: String,
    /// Its method (short name); it receives [`TokenRequest::auth_payload`](crate::TokenRequest::auth_payload)
    /// and answers [`AuthServiceReply`](crate::AuthServiceReply).
    pub auth_method: String,
}

fn default_token_ttl() -> Duration {
    DEFAULT_TOKEN_TTL
}

fn default_token_path() -> String {
    DEFAULT_TOKEN_PATH.to_owned()
}

/// What to do with a shared rate-limit check when Redis does not answer in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RedisFallback {
    /// Use this gateway's local limiter for the same bucket (each gateway then enforces the
    /// whole limit on its own: N gateways admit up to N times the limit). The default: neither
    /// an open door nor an outage.
    #[default]
    Local,
    /// Admit the request (fail open).
    Allow,
    /// Refuse it with 503 (fail closed).
    Deny,
}

/// The Redis server shared rate limits live in.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://[user:password@]host:port[/db]`. Serialized with its password redacted.
    #[serde(serialize_with = "serialize_secret_url")]
    pub url: Secret,
    /// Prefix of every key this gateway writes.
    #[serde(default = "default_key_prefix")]
    pub key_prefix: String,
    /// Deadline of one check; past it the fallback applies.
    #[serde(default = "default_redis_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// After a failure, how long the fallback is used before Redis is tried again.
    #[serde(default = "default_redis_retry", with = "humantime_serde")]
    pub retry_interval: Duration,
    /// What a check does when Redis fails.
    #[serde(default)]
    pub on_error: RedisFallback,
}

fn default_key_prefix() -> String {
    DEFAULT_REDIS_KEY_PREFIX.to_owned()
}

fn default_redis_timeout() -> Duration {
    DEFAULT_REDIS_TIMEOUT
}

fn default_redis_retry() -> Duration {
    DEFAULT_REDIS_RETRY_INTERVAL
}

/// What one route asks of the edge. Every part is optional; an empty policy costs nothing.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoutePolicyConfig {
    /// Who may call the route.
    pub auth: Option<AuthPolicy>,
    /// Which client addresses may call it.
    pub ip: Option<IpPolicy>,
    /// How often.
    pub rate_limit: Option<RateLimitPolicy>,
    /// Which browser origins may call it.
    pub cors: Option<CorsPolicy>,
}

/// Which credentials a route accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethods {
    /// `Authorization: Bearer <JWT>`.
    Jwt,
    /// An API key in the API key header.
    ApiKey,
    /// Either; a bearer token is used when both are sent.
    Either,
}

/// Authentication of a route.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuthPolicy {
    /// Accepted credentials.
    pub methods: AuthMethods,
    /// JWT claims sent to the service as `x-auth-claim-<name>` metadata (names: ASCII letters,
    /// digits, `_`, `-`, `.`).
    #[serde(default)]
    pub forward_claims: Vec<String>,
    /// Let requests without credentials through anonymously (bad credentials are still
    /// rejected).
    #[serde(default)]
    pub optional: bool,
}

/// IP rules of a route. Deny wins over allow; a non-empty allow list admits only its ranges.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct IpPolicy {
    /// CIDR ranges or addresses admitted; empty: any not denied.
    pub allow: Vec<String>,
    /// CIDR ranges or addresses refused.
    pub deny: Vec<String>,
}

/// What a rate limit counts per.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RateLimitKey {
    /// The client address (IPv6: its prefix, see `ipv6_rate_limit_prefix`).
    #[default]
    Ip,
    /// The API key's name; requests without one are keyed by client address.
    ApiKey,
    /// The authenticated subject (JWT `sub` or API key name); anonymous requests are keyed by
    /// client address.
    Subject,
}

/// A GCRA rate limit: `rate` requests per second on average, with bursts of up to `burst`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitPolicy {
    /// Sustained requests per second (may be fractional: 0.5 is one every two seconds).
    pub rate: f64,
    /// Requests admitted at once from a full bucket (at least 1).
    pub burst: u32,
    /// What is counted per.
    #[serde(default)]
    pub key: RateLimitKey,
    /// Count in Redis, shared by every gateway using it (needs `[edge.redis]`).
    #[serde(default)]
    pub shared: bool,
    /// Name of the counter set; routes naming the same bucket share one limit. Default: the
    /// route's id.
    pub bucket: Option<String>,
    /// Keys tracked locally at most.
    #[serde(default = "default_max_keys")]
    pub max_keys: usize,
    /// Send `RateLimit-*` headers on admitted responses too (429s always carry them).
    #[serde(default = "default_true")]
    pub headers: bool,
}

fn default_max_keys() -> usize {
    DEFAULT_RATE_LIMIT_MAX_KEYS
}

fn default_true() -> bool {
    true
}

/// CORS of a route.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CorsPolicy {
    /// Origins allowed: `"*"`, exact origins (`https://app.example.com`), or one-level
    /// wildcards (`https://*.example.com`).
    pub allow_origins: Vec<String>,
    /// Methods allowed (`"*"`: whatever the preflight asks).
    #[serde(default = "default_cors_methods")]
    pub allow_methods: Vec<String>,
    /// Request headers allowed beyond the CORS-safelisted ones (`"*"`: whatever is asked).
    #[serde(default)]
    pub allow_headers: Vec<String>,
    /// Response headers scripts may read.
    #[serde(default)]
    pub expose_headers: Vec<String>,
    /// How long a preflight answer may be cached.
    #[serde(default = "default_cors_max_age", with = "humantime_serde")]
    pub max_age: Duration,
    /// Allow cookies and `Authorization` (not with `"*"` origins).
    #[serde(default)]
    pub allow_credentials: bool,
}

fn default_cors_methods() -> Vec<String> {
    vec!["GET".into(), "HEAD".into(), "POST".into()]
}

fn default_cors_max_age() -> Duration {
    DEFAULT_CORS_MAX_AGE
}

impl EdgeConfig {
    /// Semantic checks; returns `(key path, message)` for every problem. Files named by the
    /// config are checked to exist; their contents are checked by [`Edge::new`](crate::Edge::new).
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut ids: Vec<&str> = Vec::new();
        for (i, key) in self.jwt_keys.iter().enumerate() {
            let p = format!("jwt_keys[{i}]");
            if key.id.is_empty() {
                out.push((format!("{p}.id"), "must not be empty".into()));
            } else if ids.contains(&key.id.as_str()) {
                out.push((format!("{p}.id"), format!("{:?} is used twice", key.id)));
            }
            ids.push(&key.id);
            let sources = [
                key.secret.is_some(),
                key.secret_file.is_some(),
                key.public_key_file.is_some(),
                key.jwks_file.is_some(),
            ]
            .iter()
            .filter(|s| **s)
            .count();
            if sources != 1 {
                out.push((
                    p.clone(),
                    "set exactly one of secret, secret_file, public_key_file, jwks_file".into(),
                ));
            }
            if key.algorithm.is_symmetric() {
                if key.public_key_file.is_some() {
                    out.push((
                        format!("{p}.public_key_file"),
                        "HS256 keys are secrets (secret or secret_file), not public keys".into(),
                    ));
                }
                if let Some(secret) = &key.secret
                    && secret.expose().len() < MIN_HS256_SECRET_BYTES
                {
                    out.push((
                        format!("{p}.secret"),
                        format!("an HS256 secret must be at least {MIN_HS256_SECRET_BYTES} bytes"),
                    ));
                }
            } else if key.secret.is_some() || key.secret_file.is_some() {
                out.push((
                    p.clone(),
                    format!(
                        "{} verifies with a public key (public_key_file or jwks_file), not a secret",
                        key.algorithm
                    ),
                ));
            }
            for (name, file) in [
                ("secret_file", &key.secret_file),
                ("public_key_file", &key.public_key_file),
                ("jwks_file", &key.jwks_file),
            ] {
                if let Some(file) = file
                    && !file.is_file()
                {
                    out.push((
                        format!("{p}.{name}"),
                        format!("{} is not a readable file", file.display()),
                    ));
                }
            }
            if key.leeway > MAX_JWT_LEEWAY {
                out.push((
                    format!("{p}.leeway"),
                    format!(
                        "must be at most {}",
                        humantime::format_duration(MAX_JWT_LEEWAY)
                    ),
                ));
            }
            if key.issuer.as_deref() == Some("") {
                out.push((format!("{p}.issuer"), "must not be empty".into()));
            }
            if key.audience.iter().any(String::is_empty) {
                out.push((format!("{p}.audience"), "must not contain \"\"".into()));
            }
        }
        let mut names: Vec<&str> = Vec::new();
        for (i, key) in self.api_keys.iter().enumerate() {
            let p = format!("api_keys[{i}]");
            if key.name.is_empty() {
                out.push((format!("{p}.name"), "must not be empty".into()));
            } else if names.contains(&key.name.as_str()) {
                out.push((format!("{p}.name"), format!("{:?} is used twice", key.name)));
            }
            names.push(&key.name);
            if key.sha256.len() != 64 || !key.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                out.push((
                    format!("{p}.sha256"),
                    "must be 64 hex digits (the SHA-256 of the key)".into(),
                ));
            }
        }
        if http::HeaderName::from_bytes(self.api_key_header.as_bytes()).is_err() {
            out.push((
                "api_key_header".into(),
                format!("{:?} is not a header name", self.api_key_header),
            ));
        }
        if let Err(e) = IpSet::parse(&self.trusted_proxies) {
            out.push(("trusted_proxies".into(), e));
        }
        if let Some(t) = &self.token_issuer {
            self.validate_issuer(t, &mut out);
        }
        if let Some(r) = &self.redis {
            let url = r.url.expose();
            if !(url.starts_with("redis://") || url.starts_with("unix://"))
                || redis::Client::open(url).is_err()
            {
                out.push((
                    "redis.url".into(),
                    "must be a redis:// or unix:// URL (TLS is not built in)".into(),
                ));
            }
            if r.timeout.is_zero() {
                out.push(("redis.timeout".into(), "must be longer than zero".into()));
            }
        }
        if self.jwks_poll_interval < Duration::from_millis(10) {
            out.push(("jwks_poll_interval".into(), "must be at least 10ms".into()));
        }
        if self.prune_interval < Duration::from_millis(10) {
            out.push(("prune_interval".into(), "must be at least 10ms".into()));
        }
        if !(256..=1024 * 1024).contains(&self.max_token_bytes) {
            out.push((
                "max_token_bytes".into(),
                "must be between 256 and 1048576".into(),
            ));
        }
        if self.jwt_cache_entries > MAX_JWT_CACHE_ENTRIES {
            out.push((
                "jwt_cache_entries".into(),
                format!("must be at most {MAX_JWT_CACHE_ENTRIES}"),
            ));
        }
        if !(1..=128).contains(&self.ipv6_rate_limit_prefix) {
            out.push((
                "ipv6_rate_limit_prefix".into(),
                "must be between 1 and 128".into(),
            ));
        }
        if self.realm.contains('"') || self.realm.contains('\\') {
            out.push((
                "realm".into(),
                "must not contain quotes or backslashes".into(),
            ));
        }
        out
    }

    fn validate_issuer(&self, t: &TokenIssuerConfig, out: &mut Vec<(String, String)>) {
        let p = "token_issuer";
        match self.jwt_keys.iter().find(|k| k.id == t.key) {
            None => out.push((
                format!("{p}.key"),
                format!(
                    "no jwt_keys entry with id {:?}: the gateway must be able to verify the tokens it issues",
                    t.key
                ),
            )),
            Some(key) => {
                if key.jwks_file.is_some() {
                    out.push((
                        format!("{p}.key"),
                        "names a JWKS entry; name a single key".into(),
                    ));
                }
                if key.issuer.is_none() || key.audience.is_empty() {
                    out.push((
                        format!("{p}.key"),
                        format!(
                            "jwt_keys entry {:?} must set issuer and audience: they go into every issued token",
                            t.key
                        ),
                    ));
                }
                match (key.algorithm.is_symmetric(), &t.private_key_file) {
                    (true, Some(_)) => out.push((
                        format!("{p}.private_key_file"),
                        "HS256 signs with the key's secret; remove private_key_file".into(),
                    )),
                    (false, None) => out.push((
                        format!("{p}.private_key_file"),
                        format!("{} needs the private key to sign with", key.algorithm),
                    )),
                    (false, Some(file)) if !file.is_file() => out.push((
                        format!("{p}.private_key_file"),
                        format!("{} is not a readable file", file.display()),
                    )),
                    _ => {}
                }
            }
        }
        if t.ttl < MIN_TOKEN_TTL {
            out.push((
                format!("{p}.ttl"),
                format!(
                    "must be at least {}",
                    humantime::format_duration(MIN_TOKEN_TTL)
                ),
            ));
        }
        if let Some(refresh) = t.refresh_ttl
            && refresh <= t.ttl
        {
            out.push((format!("{p}.refresh_ttl"), "must be longer than ttl".into()));
        }
        if !t.path.starts_with('/') {
            out.push((format!("{p}.path"), "must start with '/'".into()));
        }
        if t.auth_service.is_empty() {
            out.push((format!("{p}.auth_service"), "must not be empty".into()));
        }
        if t.auth_method.is_empty() {
            out.push((format!("{p}.auth_method"), "must not be empty".into()));
        }
    }

    /// Checks a route's policy against this config: its own values, and what it needs from the
    /// edge (keys for `auth`, Redis for a shared limit). Paths are relative to the policy.
    pub fn validate_route(&self, policy: &RoutePolicyConfig) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if let Some(auth) = &policy.auth {
            let jwt = matches!(auth.methods, AuthMethods::Jwt | AuthMethods::Either);
            let api = matches!(auth.methods, AuthMethods::ApiKey | AuthMethods::Either);
            if jwt && !api && self.jwt_keys.is_empty() {
                out.push((
                    "auth.methods".into(),
                    "jwt needs at least one [[edge.jwt_keys]] entry".into(),
                ));
            }
            if api && !jwt && self.api_keys.is_empty() {
                out.push((
                    "auth.methods".into(),
                    "api_key needs at least one [[edge.api_keys]] entry".into(),
                ));
            }
            if jwt && api && self.jwt_keys.is_empty() && self.api_keys.is_empty() {
                out.push((
                    "auth.methods".into(),
                    "needs jwt_keys or api_keys in [edge]".into(),
                ));
            }
            for name in &auth.forward_claims {
                if name.is_empty()
                    || name.len() > 64
                    || !name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
                {
                    out.push((
                        "auth.forward_claims".into(),
                        format!(
                            "{name:?}: claim names are 1-64 ASCII letters, digits, '_', '-' or '.'"
                        ),
                    ));
                }
            }
        }
        if let Some(ip) = &policy.ip {
            if let Err(e) = IpSet::parse(&ip.allow) {
                out.push(("ip.allow".into(), e));
            }
            if let Err(e) = IpSet::parse(&ip.deny) {
                out.push(("ip.deny".into(), e));
            }
        }
        if let Some(rl) = &policy.rate_limit {
            if !(rl.rate.is_finite() && rl.rate > 0.0 && rl.rate <= MAX_RATE) {
                out.push((
                    "rate_limit.rate".into(),
                    format!("must be above 0 and at most {MAX_RATE} per second"),
                ));
            }
            if rl.burst == 0 {
                out.push(("rate_limit.burst".into(), "must be at least 1".into()));
            }
            if rl.max_keys == 0 {
                out.push(("rate_limit.max_keys".into(), "must be at least 1".into()));
            }
            if rl.shared && self.redis.is_none() {
                out.push((
                    "rate_limit.shared".into(),
                    "a shared limit needs [edge.redis]".into(),
                ));
            }
            if let Some(bucket) = &rl.bucket
                && (bucket.is_empty() || bucket.len() > 128)
            {
                out.push((
                    "rate_limit.bucket".into(),
                    "must be 1 to 128 characters".into(),
                ));
            }
        }
        if let Some(cors) = &policy.cors {
            out.extend(
                crate::cors::validate(cors)
                    .into_iter()
                    .map(|(k, m)| (format!("cors.{k}"), m)),
            );
        }
        out
    }
}

#[cfg(test)]
mod redaction_tests {
    use super::*;

    #[test]
    fn secrets_serialize_redacted() {
        let config: EdgeConfig = toml::from_str(
            r#"
[[jwt_keys]]
id = "k1"
algorithm = "HS256"
secret = "hs256-secret-hs256-secret-hs256-secret"

[[api_keys]]
name = "scanner"
sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"

[redis]
url = "redis://user:redis-password@127.0.0.1:6379/0"
"#,
        )
        .unwrap();
        let text = serde_json::to_string(&config).unwrap();
        for secret in [
            "hs256-secret",
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
            "redis-password",
        ] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert!(text.contains(r#""secret":"<redacted>""#), "{text}");
        assert!(text.contains(r#""sha256":"<redacted>""#), "{text}");
        assert!(
            text.contains(r#""url":"redis://user:<redacted>@127.0.0.1:6379/0""#),
            "{text}"
        );
        assert!(text.contains(r#""name":"scanner""#), "{text}");
    }

    #[test]
    fn urls_lose_only_their_password() {
        assert_eq!(
            redact_url("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
        assert_eq!(
            redact_url("redis://:pw@h:1/2?x=a@b"),
            "redis://:<redacted>@h:1/2?x=a@b"
        );
        assert_eq!(redact_url("redis://token@h"), "redis://<redacted>@h");
        assert_eq!(
            redact_url("unix:///tmp/redis.sock"),
            "unix:///tmp/redis.sock"
        );
        assert_eq!(redact_url("not a url"), "not a url");
    }
}
