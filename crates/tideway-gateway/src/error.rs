//! Every way a gateway request can fail, and the one mapping from failure to HTTP response: a
//! status, a JSON body `{"code", "message", "request_id"}`, and `Retry-After` where a retry later
//! is the right move.

use http::{HeaderValue, StatusCode, header};
use tideway_rpc::{RpcError, Status};

use crate::binding::BindError;
use crate::body::{GatewayBody, full};

/// Seconds a client is told to wait before retrying a shed request.
pub const RETRY_AFTER_SECS: u32 = 1;

/// Why the gateway could not answer with the target's own response.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GatewayError {
    /// No route has this path.
    #[error("no route for {0}")]
    RouteNotFound(String),
    /// The path is routed, but not for this method.
    #[error("method {method} is not allowed here; allowed: {allow}")]
    MethodNotAllowed {
        /// The request's method.
        method: String,
        /// The methods the path accepts.
        allow: String,
    },
    /// The body is larger than the configured limit.
    #[error("request body exceeds the limit of {limit} bytes")]
    PayloadTooLarge {
        /// The limit.
        limit: usize,
    },
    /// The request could not be bound to the method's arguments.
    #[error(transparent)]
    Bind(#[from] BindError),
    /// Reading the request body failed (client went away or sent a malformed body).
    #[error("cannot read request body: {0}")]
    BodyRead(String),
    /// The RPC call failed; its status decides the HTTP status.
    #[error("{}", .0.message())]
    Rpc(RpcError),
    /// The route names a service the gateway knows no endpoint for.
    #[error("no endpoint for service {0}")]
    NoEndpoint(String),
    /// A concurrency limit was reached; the request was refused without any work done.
    #[error("{0}")]
    Overloaded(String),
    /// The HTTP upstream failed.
    #[error(transparent)]
    Upstream(#[from] tideway_http_upstream::UpstreamError),
    /// The upstream answered a WebSocket handshake by switching to another protocol.
    #[error("the upstream switched protocols, but not to websocket")]
    BadUpstreamSwitch,
}

impl GatewayError {
    /// The HTTP status and machine-readable code of this failure.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            GatewayError::RouteNotFound(_) => (StatusCode::NOT_FOUND, "route_not_found"),
            GatewayError::MethodNotAllowed { .. } => {
                (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
            }
            GatewayError::PayloadTooLarge { .. } => {
                (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
            }
            GatewayError::Bind(_) => (StatusCode::BAD_REQUEST, "invalid_argument"),
            GatewayError::BodyRead(_) => (StatusCode::BAD_REQUEST, "bad_request_body"),
            GatewayError::Rpc(e) => (rpc_http_status(e.status()), e.status().as_str()),
            GatewayError::NoEndpoint(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            GatewayError::Overloaded(_) => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
            GatewayError::Upstream(e) => (e.http_status(), upstream_code(e.http_status())),
            GatewayError::BadUpstreamSwitch => (StatusCode::BAD_GATEWAY, "bad_gateway"),
        }
    }

    /// The response for this failure.
    pub fn into_response(self, request_id: &str) -> http::Response<GatewayBody> {
        let (status, code) = self.status_and_code();
        let body = serde_json::json!({
            "code": code,
            "message": self.to_string(),
            "request_id": request_id,
        });
        let mut response = http::Response::new(full(body.to_string()));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let GatewayError::MethodNotAllowed { allow, .. } = &self
            && let Ok(v) = HeaderValue::from_str(allow)
        {
            headers.insert(header::ALLOW, v);
        }
        if status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::TOO_MANY_REQUESTS {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        }
        response
    }
}

fn upstream_code(status: StatusCode) -> &'static str {
    if status == StatusCode::GATEWAY_TIMEOUT {
        "deadline_exceeded"
    } else {
        "bad_gateway"
    }
}

/// The HTTP status for an RPC status.
pub fn rpc_http_status(status: Status) -> StatusCode {
    StatusCode::from_u16(status.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpc_statuses_map_as_documented() {
        let cases = [
            (Status::InvalidArgument, 400),
            (Status::Unauthenticated, 401),
            (Status::PermissionDenied, 403),
            (Status::NotFound, 404),
            (Status::DeadlineExceeded, 504),
            (Status::Overloaded, 503),
            (Status::Unavailable, 503),
            (Status::Internal, 500),
        ];
        for (status, http) in cases {
            let resp = GatewayError::Rpc(RpcError::new(status, "x")).into_response("r1");
            assert_eq!(resp.status().as_u16(), http, "{status}");
            assert_eq!(
                resp.headers().contains_key(header::RETRY_AFTER),
                http == 503,
                "{status}"
            );
        }
    }
}
