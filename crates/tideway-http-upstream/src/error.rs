//! The one error type of forwarding, and how client errors are sorted into it.

use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;

/// A boxed error, as hyper and `http-body` use.
pub type BoxError = Box<dyn StdError + Send + Sync>;

/// Why a request could not be forwarded, or its response head not obtained.
///
/// Each variant says what failed and on which side. [`UpstreamError::http_status`] is the one
/// mapping to a downstream status; [`UpstreamError::is_retry_safe`] says whether the upstream
/// certainly never saw the request. Display texts are for logs and are not stable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UpstreamError {
    /// No connection to the upstream could be made: refused, unreachable, connect timeout, or a
    /// failed HTTP/2 handshake. The request was not sent. 502, safe to retry elsewhere.
    #[error("cannot connect to upstream {authority}")]
    Connect {
        /// The upstream's `host:port`.
        authority: String,
        /// The connector's error.
        #[source]
        source: BoxError,
    },
    /// The upstream did not send a response head within the caller's deadline. It may have
    /// received and be processing the request. 504.
    #[error("upstream sent no response head within {timeout:?}")]
    Timeout {
        /// The deadline the caller gave.
        timeout: Duration,
    },
    /// The upstream closed or reset the connection before a complete response head arrived.
    /// The request may have been (partly) received and processed. 502. (An idempotent request
    /// sent whole on a pooled connection the upstream had closed is sent once more on a new
    /// connection before this is reported; see the crate docs.)
    #[error("upstream closed the connection before responding")]
    Disconnected {
        /// The socket's error (or hyper's, for HTTP/2).
        #[source]
        source: BoxError,
    },
    /// The upstream's response was not valid HTTP, too large a head, too many header fields or
    /// interim responses, an invalid `Content-Length`, or `101 Switching Protocols`. 502.
    #[error("upstream protocol error")]
    Protocol {
        /// What is wrong (the HTTP/1.1 head parser's error, or hyper's for HTTP/2).
        #[source]
        source: BoxError,
    },
    /// The downstream request body failed while it was being streamed to the upstream (the
    /// client went away, or a body limit wrapped around it by the gateway fired), or delivered
    /// fewer or more bytes than its size hint (or `Content-Length`) announced. The source is
    /// the body's own error, so the gateway can downcast it to its limit type (e.g. for a 413).
    /// 400.
    #[error("request body failed while streaming to the upstream")]
    RequestBody {
        /// The request body's error, as the body returned it.
        #[source]
        source: Arc<dyn StdError + Send + Sync>,
    },
    /// The joined upstream URI is not valid (the path the gateway passed has characters a URI
    /// cannot carry). Nothing was sent. 502.
    #[error("cannot build the upstream URI")]
    InvalidUri {
        /// `http`'s error.
        #[source]
        source: http::Error,
    },
}

impl UpstreamError {
    /// The status the gateway should answer with: 504 for [`Timeout`](Self::Timeout), 400 for
    /// [`RequestBody`](Self::RequestBody) (the downstream's own body broke), 502 otherwise.
    pub fn http_status(&self) -> StatusCode {
        match self {
            UpstreamError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            UpstreamError::RequestBody { .. } => StatusCode::BAD_REQUEST,
            UpstreamError::Connect { .. }
            | UpstreamError::Disconnected { .. }
            | UpstreamError::Protocol { .. }
            | UpstreamError::InvalidUri { .. } => StatusCode::BAD_GATEWAY,
        }
    }

    /// True only when the upstream certainly did not receive the request and another attempt
    /// (on this or another endpoint) could succeed: connect failures. A retry still needs a
    /// replayable request body, which is the caller's business.
    pub fn is_retry_safe(&self) -> bool {
        matches!(self, UpstreamError::Connect { .. })
    }

    /// Sorts an error of hyper-util's client (HTTP/2) into a variant.
    pub(crate) fn from_client(err: hyper_util::client::legacy::Error, authority: &str) -> Self {
        if let Some(body) = find::<RequestBodyError>(&err) {
            return UpstreamError::RequestBody {
                source: Arc::clone(&body.0),
            };
        }
        if err.is_connect() {
            return UpstreamError::Connect {
                authority: authority.to_owned(),
                source: Box::new(err),
            };
        }
        let disconnected = match find::<hyper::Error>(&err) {
            Some(h) if h.is_parse() => false,
            Some(h) if h.is_incomplete_message() || h.is_canceled() || h.is_closed() => true,
            _ => find::<io::Error>(&err).is_some(),
        };
        if disconnected {
            UpstreamError::Disconnected {
                source: Box::new(err),
            }
        } else {
            UpstreamError::Protocol {
                source: Box::new(err),
            }
        }
    }
}

/// The first error of type `T` in `err`'s source chain, `err` included.
fn find<'a, T: StdError + 'static>(err: &'a (dyn StdError + 'static)) -> Option<&'a T> {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(t) = e.downcast_ref::<T>() {
            return Some(t);
        }
        cur = e.source();
    }
    None
}

/// Wraps the downstream body's error on its way through hyper (HTTP/2), so that it can be told
/// apart from hyper's own errors and handed back to the caller unchanged.
#[derive(Debug, Clone)]
pub(crate) struct RequestBodyError(pub(crate) Arc<dyn StdError + Send + Sync>);

impl fmt::Display for RequestBodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "request body error: {}", self.0)
    }
}

impl StdError for RequestBodyError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&*self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_retry_safety() {
        let connect = UpstreamError::Connect {
            authority: "h:1".into(),
            source: "refused".into(),
        };
        assert_eq!(connect.http_status(), StatusCode::BAD_GATEWAY);
        assert!(connect.is_retry_safe());
        let timeout = UpstreamError::Timeout {
            timeout: Duration::from_secs(1),
        };
        assert_eq!(timeout.http_status(), StatusCode::GATEWAY_TIMEOUT);
        assert!(!timeout.is_retry_safe());
        let gone = UpstreamError::Disconnected {
            source: "reset".into(),
        };
        assert_eq!(gone.http_status(), StatusCode::BAD_GATEWAY);
        assert!(!gone.is_retry_safe());
        let body = UpstreamError::RequestBody {
            source: Arc::new(io::Error::other("client went away")),
        };
        assert_eq!(body.http_status(), StatusCode::BAD_REQUEST);
        assert!(!body.is_retry_safe());
    }

    #[test]
    fn find_walks_the_source_chain() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer")]
        struct Outer(#[source] RequestBodyError);
        let outer = Outer(RequestBodyError(Arc::new(io::Error::other("x"))));
        assert!(find::<RequestBodyError>(&outer).is_some());
        assert!(find::<hyper::Error>(&outer).is_none());
    }
}
