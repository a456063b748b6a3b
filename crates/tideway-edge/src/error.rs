//! The two ways things fail here: building an [`Edge`](crate::Edge) ([`EdgeError`]: the
//! operator's configuration), and admitting a request ([`Rejection`]: the client's request,
//! answered with a status, a stable code and a clear message).

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};

/// Why an [`Edge`](crate::Edge) or a route policy could not be built. Never caused by a request.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum EdgeError {
    /// The configuration has problems: every one, as `(key path, message)`.
    #[error("invalid edge configuration:\n{}", list(.0))]
    Invalid(Vec<(String, String)>),
    /// A route's policy has problems (paths relative to the policy).
    #[error("route {route}: invalid edge policy:\n{}", list(.problems))]
    Route {
        /// The route's id.
        route: String,
        /// The problems.
        problems: Vec<(String, String)>,
    },
    /// A key or key file is unusable.
    #[error("key {key}: {message}")]
    Key {
        /// The `jwt_keys` id (or `token_issuer`).
        key: String,
        /// What is wrong with it.
        message: String,
    },
    /// The Redis client could not be set up (the URL; connecting happens later, lazily).
    #[error("redis: {0}")]
    Redis(String),
    /// [`Edge::new`](crate::Edge::new) was called outside a Tokio runtime.
    #[error(
        "an Edge must be built inside a Tokio runtime (it runs the JWKS reload and prune tasks)"
    )]
    NoRuntime,
}

fn list(problems: &[(String, String)]) -> String {
    problems
        .iter()
        .map(|(path, message)| format!("  {path}: {message}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A request the edge refused. The gateway answers it with [`status`](Self::status), its usual
/// JSON error body (`code` and `message`) and [`headers`](Self::headers) (`WWW-Authenticate`
/// on 401, `Retry-After` and `RateLimit-*` on 429, `Retry-After` on 503), or simply with
/// [`into_response`](Self::into_response).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct Rejection {
    /// 401, 403, 429 or 503.
    pub status: StatusCode,
    /// Stable machine-readable code, matching the gateway's codes: `unauthenticated` (401),
    /// `permission_denied` (403), `rate_limited` (429), `unavailable` (503).
    pub code: &'static str,
    /// Finer, bounded reason (metrics label): for 401 one of
    /// [`AuthError::reason`](crate::AuthError::reason)'s values; `ip_denied`, `ip_not_allowed`;
    /// `rate_limited`; `rate_limiter_unavailable`.
    pub reason: &'static str,
    /// What the client did wrong, in words (no secrets; quoted request values are truncated).
    pub message: String,
    /// Headers the answer must carry.
    pub headers: HeaderMap,
}

impl Rejection {
    pub(crate) fn new(
        status: StatusCode,
        code: &'static str,
        reason: &'static str,
        message: String,
    ) -> Rejection {
        Rejection {
            status,
            code,
            reason,
            message,
            headers: HeaderMap::new(),
        }
    }

    /// A complete answer in the gateway's error shape: JSON `{"code", "message", "reason",
    /// "request_id"}` plus the headers.
    pub fn into_response(self, request_id: &str) -> Response<Bytes> {
        let body = serde_json::json!({
            "code": self.code,
            "message": self.message,
            "reason": self.reason,
            "request_id": request_id,
        });
        let mut r = Response::new(Bytes::from(body.to_string()));
        *r.status_mut() = self.status;
        *r.headers_mut() = self.headers;
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        r
    }
}
