//! [`Edge`]: everything one config generation owns (keys, the JWKS reload task, rate-limit
//! state and its prune task, the Redis connection), and the per-request checks.

// A `Rejection` (160 bytes, most of it the `HeaderMap`) is returned by value on the cold path:
// moving it costs less than the allocation boxing it would add to every refusal.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Response, StatusCode};
use parking_lot::Mutex;
use serde_json::Value;
use tokio::task::AbortHandle;

use crate::config::{AuthMethods, EdgeConfig, RateLimitKey, RedisFallback, RoutePolicyConfig};
use crate::cors::Cors;
use crate::error::{EdgeError, Rejection};
use crate::ip::{self, ClientIp, IpSet};
use crate::jwt::{AuthError, JwtVerifier, Verified};
use crate::metrics as m;
use crate::principal::{ApiKeys, AuthMethod, MAX_CLAIM_VALUE_BYTES, Principal};
use crate::ratelimit::{Bucket, Decision, Gcra, LimitKey, RateHeaders, SharedError, SharedStore};
use crate::token::TokenIssuer;

static GENERATIONS: AtomicU64 = AtomicU64::new(1);

/// The edge policies of one config generation. Build one per configuration with [`Edge::new`]
/// (inside a Tokio runtime), compile each route's policy with [`Edge::route_policy`], and call
/// the per-request methods from the request path. Dropping it stops its tasks (JWKS reload,
/// pruning) and, once the last route policy compiled from it is dropped too, frees its
/// rate-limit state and Redis connection.
///
/// Share it between requests with an `Arc`; every method takes `&self`.
pub struct Edge {
    inner: Arc<Inner>,
    tasks: Vec<AbortHandle>,
}

struct Inner {
    generation: u64,
    config: EdgeConfig,
    trusted: IpSet,
    jwt: Arc<JwtVerifier>,
    api_keys: ApiKeys,
    api_key_header: HeaderName,
    challenge_bearer: HeaderValue,
    challenge_api_key: HeaderValue,
    realm: String,
    issuer: Option<TokenIssuer>,
    shared: Option<Arc<SharedStore>>,
    buckets: Arc<Mutex<HashMap<Arc<str>, Weak<Bucket>>>>,
    /// `tideway_auth_accepted_total{method="jwt"}` and `{method="api_key"}`, taken once.
    accepted_jwt: metrics::Counter,
    accepted_api_key: metrics::Counter,
}

impl std::fmt::Debug for Edge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Edge")
            .field("generation", &self.inner.generation)
            .field("jwt", &self.inner.jwt)
            .field("api_keys", &self.inner.api_keys)
            .field("trusted_proxies", &self.inner.trusted)
            .field("issuer", &self.inner.issuer)
            .field("shared", &self.inner.shared)
            .field("tasks", &self.tasks.len())
            .finish()
    }
}

impl Drop for Edge {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// What the edge let through.
#[derive(Debug, Default)]
pub struct Admitted {
    /// Who the caller is; `None` on routes without authentication or with optional
    /// authentication and no credentials.
    pub principal: Option<Arc<Principal>>,
    /// `RateLimit-*` headers for the response (empty when the route has no limit, or its limit
    /// sets `headers = false`). Add them with [`RateHeaders::apply`].
    pub rate_headers: RateHeaders,
}

impl Admitted {
    /// The principal's metadata pairs for the RPC call (empty when anonymous).
    pub fn metadata(&self) -> &[(String, String)] {
        self.principal.as_ref().map_or(&[], |p| &p.metadata()[..])
    }
}

/// Source of [`CompiledAuth::id`].
static NEXT_AUTH_POLICY_ID: AtomicU64 = AtomicU64::new(1);

#[derive(Debug)]
struct CompiledAuth {
    /// Unique per compiled policy (process-wide): names the policy's principal of a cached
    /// token (`PrincipalSlots`).
    id: u64,
    methods: AuthMethods,
    forward_claims: Vec<String>,
    optional: bool,
}

#[derive(Debug)]
struct CompiledIp {
    allow: IpSet,
    deny: IpSet,
}

/// A route's policy, compiled against one [`Edge`] (CIDR sets parsed, CORS header values built,
/// its rate-limit bucket attached). Keep it with the route, e.g. in an `Arc`. The default value
/// is the empty policy, which admits everything at no cost.
#[derive(Debug, Default)]
pub struct RoutePolicy {
    generation: u64,
    route: Arc<str>,
    auth: Option<CompiledAuth>,
    ip: Option<CompiledIp>,
    rate: Option<Arc<Bucket>>,
    cors: Option<Cors>,
}

impl RoutePolicy {
    /// Whether the policy checks nothing (no auth, IP rules, rate limit or CORS).
    pub fn is_empty(&self) -> bool {
        self.auth.is_none() && self.ip.is_none() && self.rate.is_none() && self.cors.is_none()
    }

    /// Whether the route has a CORS policy (then preflights and responses need the CORS calls).
    pub fn has_cors(&self) -> bool {
        self.cors.is_some()
    }

    /// The route id it was compiled for.
    pub fn route(&self) -> &str {
        &self.route
    }

    /// The rate-limit bucket's name, when the route has a limit.
    pub fn rate_limit_bucket(&self) -> Option<&str> {
        self.rate.as_deref().map(|b| &*b.name)
    }
}

/// Installs the RustCrypto provider for `jsonwebtoken`, unless one is installed already (by the
/// program, or a crate enabling its `aws_lc_rs` feature too, which would otherwise make
/// jsonwebtoken's automatic choice panic).
fn install_crypto_provider() {
    let _ = jsonwebtoken::crypto::CryptoProvider::install_default(
        &jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER,
    );
}

fn quoted_header(value: &str) -> HeaderValue {
    HeaderValue::from_str(value).unwrap_or_else(|_| HeaderValue::from_static("Bearer"))
}

impl Edge {
    /// Validates `config`, loads every key (failing on any unusable key or file), and starts
    /// the JWKS reload task (when a JWKS file is configured) and the prune task. Must be called
    /// inside a Tokio runtime. Redis is connected lazily: an unreachable Redis does not fail the
    /// build, its checks use the fallback until it answers.
    pub fn new(config: &EdgeConfig) -> Result<Edge, EdgeError> {
        let problems = config.validate();
        if !problems.is_empty() {
            return Err(EdgeError::Invalid(problems));
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| EdgeError::NoRuntime)?;
        install_crypto_provider();
        let jwt = Arc::new(JwtVerifier::new(
            &config.jwt_keys,
            config.max_token_bytes,
            config.jwt_cache_entries,
        )?);
        let api_keys = ApiKeys::new(&config.api_keys)
            .map_err(|m| EdgeError::Invalid(vec![("api_keys".into(), m)]))?;
        let trusted = IpSet::parse(&config.trusted_proxies)
            .map_err(|m| EdgeError::Invalid(vec![("trusted_proxies".into(), m)]))?;
        let api_key_header = HeaderName::from_bytes(config.api_key_header.as_bytes())
            .map_err(|e| EdgeError::Invalid(vec![("api_key_header".into(), e.to_string())]))?;
        let issuer = match &config.token_issuer {
            None => None,
            Some(t) => {
                let key_config =
                    config
                        .jwt_keys
                        .iter()
                        .find(|k| k.id == t.key)
                        .ok_or_else(|| {
                            EdgeError::Invalid(vec![(
                                "token_issuer.key".into(),
                                "no such key".into(),
                            )])
                        })?;
                let verify = jwt.static_key(&t.key).ok_or_else(|| {
                    EdgeError::Invalid(vec![("token_issuer.key".into(), "not a single key".into())])
                })?;
                Some(TokenIssuer::new(t, key_config, &verify.key)?)
            }
        };
        let shared = match &config.redis {
            None => None,
            Some(r) => Some(Arc::new(
                SharedStore::new(r).map_err(|e| EdgeError::Redis(e.to_string()))?,
            )),
        };
        let realm = config.realm.clone();
        let inner = Arc::new(Inner {
            generation: GENERATIONS.fetch_add(1, Ordering::Relaxed),
            config: config.clone(),
            trusted,
            jwt,
            api_keys,
            challenge_bearer: quoted_header(&format!("Bearer realm=\"{realm}\"")),
            challenge_api_key: quoted_header(&format!(
                "ApiKey realm=\"{realm}\", header=\"{}\"",
                api_key_header.as_str()
            )),
            api_key_header,
            realm,
            issuer,
            shared,
            buckets: Arc::new(Mutex::new(HashMap::new())),
            accepted_jwt: metrics::counter!(m::AUTH_ACCEPTED, "method" => AuthMethod::Jwt.as_str()),
            accepted_api_key: metrics::counter!(
                m::AUTH_ACCEPTED,
                "method" => AuthMethod::ApiKey.as_str()
            ),
        });
        let mut tasks = Vec::new();
        if inner.jwt.has_jwks() {
            let jwt = Arc::downgrade(&inner.jwt);
            let period = config.jwks_poll_interval;
            tasks.push(
                runtime
                    .spawn(async move {
                        let mut tick = tokio::time::interval(period);
                        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                        tick.tick().await;
                        loop {
                            tick.tick().await;
                            let Some(jwt) = jwt.upgrade() else { return };
                            // File reads are small and rare; off the async workers anyway.
                            let _ = tokio::task::spawn_blocking(move || jwt.reload()).await;
                        }
                    })
                    .abort_handle(),
            );
        }
        let buckets = Arc::downgrade(&inner.buckets);
        let period = config.prune_interval;
        tasks.push(
            runtime
                .spawn(async move {
                    let mut tick = tokio::time::interval(period);
                    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    tick.tick().await;
                    loop {
                        tick.tick().await;
                        let Some(buckets) = buckets.upgrade() else {
                            return;
                        };
                        prune(&buckets);
                    }
                })
                .abort_handle(),
        );
        Ok(Edge { inner, tasks })
    }

    /// Compiles a route's policy. `route` identifies the route (e.g. `GET /api/waybills/{id}`);
    /// it names the route's rate-limit bucket unless the policy names one. Policies compiled
    /// with the same bucket name and limit share one state (so rebuilding a route table keeps
    /// counts), also across routes; the state lives as long as any policy using it.
    pub fn route_policy(
        &self,
        route: &str,
        config: &RoutePolicyConfig,
    ) -> Result<Arc<RoutePolicy>, EdgeError> {
        let problems = self.inner.config.validate_route(config);
        if !problems.is_empty() {
            return Err(EdgeError::Route {
                route: route.to_owned(),
                problems,
            });
        }
        let bad = |path: &str, message: String| EdgeError::Route {
            route: route.to_owned(),
            problems: vec![(path.to_owned(), message)],
        };
        let ip = match &config.ip {
            None => None,
            Some(p) => Some(CompiledIp {
                allow: IpSet::parse(&p.allow).map_err(|m| bad("ip.allow", m))?,
                deny: IpSet::parse(&p.deny).map_err(|m| bad("ip.deny", m))?,
            }),
        };
        let rate = config.rate_limit.as_ref().map(|rl| {
            let name: Arc<str> = Arc::from(rl.bucket.as_deref().unwrap_or(route));
            let fresh = Bucket::new(
                Arc::clone(&name),
                Gcra::new(rl.rate, rl.burst),
                rl.key,
                rl.shared,
                rl.max_keys,
                rl.headers,
            );
            let mut buckets = self.inner.buckets.lock();
            buckets.retain(|_, b| b.strong_count() > 0);
            match buckets.get(&name).and_then(Weak::upgrade) {
                Some(existing) if existing.same_limit(&fresh) => existing,
                _ => {
                    let bucket = Arc::new(fresh);
                    buckets.insert(name, Arc::downgrade(&bucket));
                    bucket
                }
            }
        });
        Ok(Arc::new(RoutePolicy {
            generation: self.inner.generation,
            route: Arc::from(route),
            auth: config.auth.as_ref().map(|a| CompiledAuth {
                id: NEXT_AUTH_POLICY_ID.fetch_add(1, Ordering::Relaxed),
                methods: a.methods,
                forward_claims: a.forward_claims.clone(),
                optional: a.optional,
            }),
            ip,
            rate,
            cors: config.cors.as_ref().map(Cors::new),
        }))
    }

    /// The client address: the TCP `peer`, or what `X-Forwarded-For` says when the peer is a
    /// trusted proxy (walked from the right; see [`crate::ip`]).
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> ClientIp {
        ClientIp::new(ip::client_ip(&self.inner.trusted, peer, headers))
    }

    /// The answer to a CORS preflight on a route with a CORS policy: `Some(204 or 403)` when
    /// `parts` is a preflight, `None` otherwise (or when the route has no CORS policy). Call it
    /// before [`admit`](Self::admit): preflights carry no credentials.
    pub fn cors_preflight(&self, policy: &RoutePolicy, parts: &Parts) -> Option<Response<()>> {
        policy.cors.as_ref()?.preflight(parts)
    }

    /// Sets the CORS headers of a response (including a rejection) on a route with a CORS
    /// policy; does nothing otherwise.
    pub fn apply_cors(&self, policy: &RoutePolicy, request: &HeaderMap, response: &mut HeaderMap) {
        if let Some(cors) = &policy.cors {
            cors.apply(request, response);
        }
    }

    /// Runs a route's checks, in this order: IP rules (403), a rate limit keyed by IP (429,
    /// before spending CPU on signatures), authentication (401), a rate limit keyed by API key
    /// or subject (429; failed authentications are counted per client address in the same
    /// bucket, so credential guessing gets 429 too). Returns at once for an empty policy. Awaits
    /// only for a shared rate limit (bounded by the Redis timeout).
    pub async fn admit(
        &self,
        policy: &RoutePolicy,
        parts: &Parts,
        client: ClientIp,
    ) -> Result<Admitted, Rejection> {
        debug_assert!(
            policy.generation == 0 || policy.generation == self.inner.generation,
            "route policy {} compiled by another Edge generation",
            policy.route
        );
        let mut admitted = Admitted::default();
        if policy.auth.is_none() && policy.ip.is_none() && policy.rate.is_none() {
            return Ok(admitted);
        }
        if let Some(rules) = &policy.ip {
            self.check_ip(rules, client)?;
        }
        let ip_key = || {
            LimitKey::Ip(ip::masked(
                client.ip(),
                self.inner.config.ipv6_rate_limit_prefix,
            ))
        };
        if let Some(bucket) = &policy.rate
            && bucket.key == RateLimitKey::Ip
        {
            admitted.rate_headers = self.rate_check(bucket, ip_key()).await?;
        }
        if let Some(auth) = &policy.auth {
            match self.authenticate(auth, &parts.headers) {
                Ok(principal) => admitted.principal = principal,
                Err(rejection) => {
                    // On a limit keyed by API key or subject, failed attempts have no key of
                    // their own: they count against the client address in the same bucket, so
                    // guessing credentials is throttled too (429 once over the limit).
                    if let Some(bucket) = &policy.rate
                        && bucket.key != RateLimitKey::Ip
                    {
                        self.rate_check(bucket, ip_key()).await?;
                    }
                    return Err(rejection);
                }
            }
        }
        if let Some(bucket) = &policy.rate
            && bucket.key != RateLimitKey::Ip
        {
            let key = match (&admitted.principal, bucket.key) {
                (Some(p), RateLimitKey::Subject) => LimitKey::Name(Arc::clone(p.subject())),
                (Some(p), RateLimitKey::ApiKey) if p.via() == AuthMethod::ApiKey => {
                    LimitKey::Name(Arc::clone(p.subject()))
                }
                _ => ip_key(),
            };
            admitted.rate_headers = self.rate_check(bucket, key).await?;
        }
        Ok(admitted)
    }

    fn check_ip(&self, rules: &CompiledIp, client: ClientIp) -> Result<(), Rejection> {
        let ip = client.ip();
        let refusal = if rules.deny.contains(ip) {
            Some((
                "ip_denied",
                format!("client address {ip} is denied on this route"),
            ))
        } else if !rules.allow.is_empty() && !rules.allow.contains(ip) {
            Some((
                "ip_not_allowed",
                format!("client address {ip} is not allowed on this route"),
            ))
        } else {
            None
        };
        match refusal {
            None => Ok(()),
            Some((reason, message)) => {
                metrics::counter!(m::IP_REJECTIONS, "reason" => reason).increment(1);
                Err(Rejection::new(
                    StatusCode::FORBIDDEN,
                    "permission_denied",
                    reason,
                    message,
                ))
            }
        }
    }

    fn authenticate(
        &self,
        auth: &CompiledAuth,
        headers: &HeaderMap,
    ) -> Result<Option<Arc<Principal>>, Rejection> {
        let jwt_ok = matches!(auth.methods, AuthMethods::Jwt | AuthMethods::Either);
        let api_ok = matches!(auth.methods, AuthMethods::ApiKey | AuthMethods::Either);
        let result = (|| {
            if jwt_ok {
                let mut values = headers.get_all(header::AUTHORIZATION).iter();
                if let Some(value) = values.next() {
                    if values.next().is_some() {
                        return Err(AuthError::Malformed(
                            "more than one Authorization header".into(),
                        ));
                    }
                    if let Some(token) = bearer_token(value)? {
                        return self.principal_from_jwt(auth, token).map(Some);
                    }
                }
            }
            if api_ok && let Some(value) = headers.get(&self.inner.api_key_header) {
                let name = self
                    .inner
                    .api_keys
                    .verify(value.as_bytes())
                    .ok_or(AuthError::BadApiKey)?;
                return Ok(Some(Arc::new(Principal::new(
                    Arc::clone(&name),
                    AuthMethod::ApiKey,
                    name,
                    None,
                    Vec::new(),
                ))));
            }
            if auth.optional {
                return Ok(None);
            }
            Err(AuthError::Missing(match auth.methods {
                AuthMethods::Jwt => "credentials required: send Authorization: Bearer <token>",
                AuthMethods::ApiKey => "credentials required: send an API key",
                AuthMethods::Either => {
                    "credentials required: send Authorization: Bearer <token> or an API key"
                }
            }))
        })();
        match result {
            Ok(principal) => {
                match principal.as_ref().map(|p| p.via()) {
                    Some(AuthMethod::Jwt) => self.inner.accepted_jwt.increment(1),
                    Some(AuthMethod::ApiKey) => self.inner.accepted_api_key.increment(1),
                    None => {}
                }
                Ok(principal)
            }
            Err(e) => {
                metrics::counter!(m::AUTH_REJECTIONS, "reason" => e.reason()).increment(1);
                Err(self.unauthenticated(auth, &e))
            }
        }
    }

    /// The principal of a bearer token for a route policy. With the verified-token cache, a
    /// token seen before comes with its principal for this policy already made.
    fn principal_from_jwt(
        &self,
        auth: &CompiledAuth,
        token: &str,
    ) -> Result<Arc<Principal>, AuthError> {
        let verified = self.inner.jwt.verify(token)?;
        verified
            .principals
            .get_or_make(auth.id, || principal_of_claims(auth, &verified))
    }

    fn unauthenticated(&self, auth: &CompiledAuth, e: &AuthError) -> Rejection {
        let mut r = Rejection::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            e.reason(),
            e.to_string(),
        );
        let jwt_ok = matches!(auth.methods, AuthMethods::Jwt | AuthMethods::Either);
        let api_ok = matches!(auth.methods, AuthMethods::ApiKey | AuthMethods::Either);
        if jwt_ok {
            let challenge = if matches!(e, AuthError::Missing(_) | AuthError::BadApiKey) {
                self.inner.challenge_bearer.clone()
            } else {
                // RFC 6750 §3: the error and a fixed description (never request input).
                quoted_header(&format!(
                    "Bearer realm=\"{}\", error=\"invalid_token\", error_description=\"{}\"",
                    self.inner.realm,
                    e.description()
                ))
            };
            r.headers.append(header::WWW_AUTHENTICATE, challenge);
        }
        if api_ok {
            r.headers.append(
                header::WWW_AUTHENTICATE,
                self.inner.challenge_api_key.clone(),
            );
        }
        r
    }

    async fn rate_check(&self, bucket: &Bucket, key: LimitKey) -> Result<RateHeaders, Rejection> {
        let mut store = "local";
        let decision = match (&self.inner.shared, bucket.shared) {
            (Some(shared), true) => match shared.check(&bucket.gcra, &bucket.name, &key).await {
                Ok(d) => {
                    store = "shared";
                    d
                }
                Err(e) => {
                    if !matches!(e, SharedError::Backoff) {
                        tracing::warn!(bucket = %bucket.name, error = %e, fallback = ?shared.fallback, "shared rate limit unavailable");
                    }
                    match shared.fallback {
                        RedisFallback::Local => {
                            metrics::counter!(m::RATE_LIMIT_FALLBACKS, "action" => "local")
                                .increment(1);
                            bucket.local.check(&bucket.gcra, &key, bucket.local.now())
                        }
                        RedisFallback::Allow => {
                            metrics::counter!(m::RATE_LIMIT_FALLBACKS, "action" => "allow")
                                .increment(1);
                            return Ok(RateHeaders::default());
                        }
                        RedisFallback::Deny => {
                            metrics::counter!(m::RATE_LIMIT_FALLBACKS, "action" => "deny")
                                .increment(1);
                            let mut r = Rejection::new(
                                StatusCode::SERVICE_UNAVAILABLE,
                                "unavailable",
                                "rate_limiter_unavailable",
                                "the rate limiter is unavailable; retry later".into(),
                            );
                            r.headers
                                .insert(header::RETRY_AFTER, HeaderValue::from(1u32));
                            return Err(r);
                        }
                    }
                }
            },
            _ => bucket.local.check(&bucket.gcra, &key, bucket.local.now()),
        };
        match decision {
            Decision::Allow { .. } => Ok(if bucket.headers {
                decision.rate_headers(&bucket.limit_value)
            } else {
                RateHeaders::default()
            }),
            Decision::Deny { retry_after, .. } => {
                if store == "shared" {
                    bucket.limited_shared.increment(1);
                } else {
                    bucket.limited_local.increment(1);
                }
                let mut r = Rejection::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    "rate_limited",
                    format!(
                        "rate limit of {} exceeded; retry in {} ms",
                        bucket.name,
                        retry_after.as_millis().max(1)
                    ),
                );
                r.headers = decision.headers_with(&bucket.limit_value);
                Err(r)
            }
        }
    }

    /// The token issuer, when `token_issuer` is configured.
    pub fn token_issuer(&self) -> Option<&TokenIssuer> {
        self.inner.issuer.as_ref()
    }

    /// Re-reads the JWKS files now (the reload task does this every `jwks_poll_interval`);
    /// returns whether the keys changed.
    pub fn reload_keys(&self) -> bool {
        self.inner.jwt.reload()
    }

    /// Drops idle rate-limit keys now (the prune task does this every `prune_interval`);
    /// returns the keys left in every local store.
    pub fn prune_rate_limits(&self) -> usize {
        prune(&self.inner.buckets)
    }

    /// Keys in the local rate-limit stores.
    pub fn rate_limit_keys(&self) -> usize {
        live_buckets(&self.inner.buckets)
            .iter()
            .map(|b| b.local.len())
            .sum()
    }

    /// The configuration this edge was built from.
    pub fn config(&self) -> &EdgeConfig {
        &self.inner.config
    }
}

/// Makes the principal of a verified token for a route policy: its subject, issuer and the
/// claims the policy forwards.
fn principal_of_claims(auth: &CompiledAuth, verified: &Verified) -> Result<Principal, AuthError> {
    let claims = &verified.claims;
    let Some(Value::String(subject)) = claims.get("sub") else {
        return Err(AuthError::BadClaim("sub".into()));
    };
    let issuer = match claims.get("iss") {
        Some(Value::String(iss)) => Some(Arc::from(iss.as_str())),
        _ => None,
    };
    let mut forwarded = Vec::with_capacity(auth.forward_claims.len());
    for name in &auth.forward_claims {
        // The subject travels as the principal's subject, not as a claim.
        if name == "sub" {
            continue;
        }
        let value = match claims.get(name) {
            None | Some(Value::Null) => continue,
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
        };
        if value.len() > MAX_CLAIM_VALUE_BYTES {
            tracing::debug!(claim = %name, len = value.len(), "claim too long to forward; left out");
            continue;
        }
        forwarded.push((name.clone(), value));
    }
    Ok(Principal::new(
        Arc::from(subject.as_str()),
        AuthMethod::Jwt,
        Arc::clone(&verified.key.kid),
        issuer,
        forwarded,
    ))
}

fn live_buckets(buckets: &Mutex<HashMap<Arc<str>, Weak<Bucket>>>) -> Vec<Arc<Bucket>> {
    let mut map = buckets.lock();
    map.retain(|_, b| b.strong_count() > 0);
    map.values().filter_map(Weak::upgrade).collect()
}

fn prune(buckets: &Mutex<HashMap<Arc<str>, Weak<Bucket>>>) -> usize {
    let left: usize = live_buckets(buckets)
        .iter()
        .map(|b| b.local.prune(b.local.now()))
        .sum();
    metrics::gauge!(m::RATE_LIMIT_KEYS).set(left as f64);
    left
}

/// The token of `Authorization: Bearer <token>`; `None` for another scheme.
fn bearer_token(value: &HeaderValue) -> Result<Option<&str>, AuthError> {
    let value = value
        .to_str()
        .map_err(|_| AuthError::Malformed("the Authorization header is not ASCII".into()))?;
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Ok(None);
    }
    let token = rest.trim();
    if token.is_empty() {
        return Err(AuthError::Malformed("the bearer token is empty".into()));
    }
    Ok(Some(token))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{JwtAlgorithm, JwtKeyConfig};
    use std::time::Duration;

    #[tokio::test]
    async fn dropping_an_edge_stops_its_tasks_and_frees_its_state() {
        use base64::Engine as _;
        let dir = tempfile::tempdir().unwrap();
        let jwks = dir.path().join("keys.json");
        let k = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode("0123456789abcdef0123456789abcdef");
        std::fs::write(
            &jwks,
            format!(r#"{{"keys":[{{"kty":"oct","kid":"o1","alg":"HS256","k":"{k}"}}]}}"#),
        )
        .unwrap();
        let config = EdgeConfig {
            jwt_keys: vec![JwtKeyConfig {
                id: "oct".into(),
                algorithm: JwtAlgorithm::HS256,
                secret: None,
                secret_file: None,
                public_key_file: None,
                jwks_file: Some(jwks),
                issuer: None,
                audience: vec![],
                leeway: Duration::from_secs(1),
            }],
            jwks_poll_interval: Duration::from_millis(10),
            prune_interval: Duration::from_millis(10),
            ..EdgeConfig::default()
        };
        let edge = Edge::new(&config).unwrap();
        assert_eq!(edge.tasks.len(), 2, "JWKS reload and prune");
        let policy = edge
            .route_policy(
                "GET /x",
                &toml::from_str("rate_limit = { rate = 1.0, burst = 1 }").unwrap(),
            )
            .unwrap();
        let jwt = Arc::downgrade(&edge.inner.jwt);
        let buckets = Arc::downgrade(&edge.inner.buckets);
        let inner = Arc::downgrade(&edge.inner);
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(edge);
        // Aborted tasks release what they held at their next poll.
        for _ in 0..100 {
            if jwt.strong_count() == 0 && buckets.strong_count() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(inner.strong_count(), 0, "nothing keeps the edge alive");
        assert_eq!(jwt.strong_count(), 0, "the JWKS reload task is gone");
        assert_eq!(buckets.strong_count(), 0, "the prune task is gone");
        // A policy outlives its edge safely and keeps only its own bucket.
        let bucket = Arc::downgrade(policy.rate.as_ref().unwrap());
        drop(policy);
        assert_eq!(
            bucket.strong_count(),
            0,
            "the limiter state went with the last policy"
        );
    }
}
