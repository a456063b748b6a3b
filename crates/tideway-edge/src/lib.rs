//! Tideway's edge security policies for the gateway: who may call a route (JWT bearer tokens
//! and API keys), from where (IP allow and deny lists, trusted proxies), how often (GCRA rate
//! limits, local or shared through Redis), from which browser origins (CORS), and the token
//! issuer behind the gateway's token endpoint.
//!
//! # Pieces
//!
//! ```text
//! config.rs     EdgeConfig (keys, API keys, trusted proxies, token issuer, Redis) and
//!               RoutePolicyConfig (auth, ip, rate_limit, cors); validate() lists every problem
//! edge.rs       Edge: one per config generation; owns the JWKS reload task, rate-limit state,
//!               the prune task and the Redis connection; per-request checks
//! ip.rs         CIDR sets (binary search over merged ranges) and X-Forwarded-For
//! jwt.rs        key set (static keys, JWKS files reloaded on change) and token verification
//! jwt_cache.rs  bounded cache of verified tokens (until their exp), so repeats skip the signature
//! principal.rs  the authenticated caller and its x-auth-* metadata; hashed API keys
//! ratelimit.rs  GCRA: bounded local store, atomic Redis script, fallback when Redis fails
//! cors.rs       preflight answers and response headers
//! token.rs      token endpoint pieces: request parsing, signing, refresh tokens, OAuth errors
//! metrics.rs    metric names and describe_metrics()
//! ```
//!
//! # The request path
//!
//! The gateway builds an [`Edge`] when it loads a configuration, compiles each route's
//! [`RoutePolicyConfig`] once with [`Edge::route_policy`], and per request:
//!
//! ```no_run
//! # async fn example(
//! #     edge: &tideway_edge::Edge,
//! #     policy: &tideway_edge::RoutePolicy,
//! #     parts: &http::request::Parts,
//! #     peer: std::net::SocketAddr,
//! # ) -> http::Response<()> {
//! let client = edge.client_ip(peer.ip(), &parts.headers);     // 1. who is the client
//! if let Some(answer) = edge.cors_preflight(policy, parts) {  // 2. preflight: answered here
//!     return answer;
//! }
//! match edge.admit(policy, parts, client).await {             // 3. IP, rate limit, auth
//!     Ok(admitted) => {
//!         // 4. call the service with admitted.metadata() in CallOptions.metadata (or, for an
//!         //    HTTP upstream, principal.apply_to_headers / strip_identity_headers), then add
//!         //    admitted.rate_headers and edge.apply_cors(..) to the response.
//! #       let _ = admitted;
//!     }
//!     Err(rejection) => {
//!         // 5. answer rejection.status with rejection.code, .message and .headers (plus
//!         //    apply_cors, so a browser can read the error).
//! #       let _ = rejection;
//!     }
//! }
//! # http::Response::new(())
//! # }
//! ```
//!
//! An empty policy costs a few branches: no allocation, no lock, no await.
//!
//! # Failure behaviour
//!
//! - Bad credentials: 401 with a clear message and an RFC 6750 `WWW-Authenticate` challenge.
//! - IP rules: 403. Rate limits: 429 with `Retry-After` and `RateLimit-Limit/-Remaining/-Reset`.
//! - Redis down or slow: the configured fallback ([`RedisFallback`], default: the local limiter
//!   for the same bucket), counted in `tideway_rate_limit_fallbacks_total`; Redis is retried
//!   after `retry_interval`.
//! - A JWKS file that changes into something unusable: the last good keys stay, the failure is
//!   logged and counted.
//! - Nothing here panics on request input.

mod config;
mod cors;
mod edge;
mod error;
pub mod ip;
mod jwt;
mod jwt_cache;
pub mod metrics;
mod principal;
pub mod ratelimit;
pub mod token;

pub use config::*;
pub use cors::preflight_method;
pub use edge::{Admitted, Edge, RoutePolicy};
pub use error::{EdgeError, Rejection};
pub use ip::{ClientIp, IpSet};
pub use jwt::AuthError;
pub use metrics::describe_metrics;
pub use principal::{
    AuthMethod, CLAIM_PREFIX, IDENTITY_PREFIX, ISSUER_KEY, KEY_ID_KEY, MAX_CLAIM_VALUE_BYTES,
    METHOD_KEY, Principal, SUBJECT_KEY, strip_identity_headers,
};
pub use ratelimit::RateHeaders;
pub use token::{
    AuthServiceReply, Grant, IssuedToken, OAuthError, RefreshGrant, SignError, TokenIssuer,
    TokenRequest,
};
