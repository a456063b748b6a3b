//! Upstream settings. Every default is a named const with the reason for its value; `validate`
//! rejects zero and absurd values (and base URLs this crate cannot serve) before anything starts.

use std::time::Duration;

use http::uri::{Authority, Scheme as UriScheme, Uri};

/// TCP connect timeout (ARCHITECTURE.md: fail fast after 1 s when nothing is reachable). On
/// loopback or in one data centre a healthy peer accepts in well under a millisecond.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long an idle keep-alive connection stays in the pool: the gateway's own idle keep-alive
/// (ARCHITECTURE.md: 60 s). Upstreams with a shorter idle timeout are handled by the pool,
/// which checks that a connection is still open before reusing it, and by sending an
/// idempotent request once more when a reused connection closes before any response byte.
pub const DEFAULT_POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Idle connections kept per upstream authority. Bounds the sockets and buffers a traffic burst
/// leaves behind; busy connections are bounded by the gateway's in-flight limit, not by this.
/// 128 covers a few hundred concurrent clients without reconnect churn (32 made the gateway open
/// ~100 upstream connections a second under 64 concurrent clients in `scripts/bench http`).
pub const DEFAULT_POOL_MAX_IDLE_PER_HOST: usize = 128;
/// Per-connection HTTP/1 buffer ceiling: the largest response head (and chunked trailer
/// section) accepted, and a cap on the body bytes read per poll. hyper's default (~400 KiB) is
/// far more than any sane head needs (nginx reads proxied heads into 4-8 KiB); 64 KiB keeps
/// each busy connection cheap while leaving room for large cookies.
pub const DEFAULT_HTTP1_MAX_BUF_SIZE: usize = 64 * 1024;
/// Header fields accepted in one upstream response (and one trailer section): hyper's default,
/// kept explicit.
pub const DEFAULT_MAX_RESPONSE_HEADERS: usize = 100;

/// Longest wait for the next bytes of a response body once its head has arrived (the head
/// itself is bounded by the request's deadline). nginx's `proxy_read_timeout` and its default:
/// a body may take as long as it likes in all, but an upstream that stops sending mid-body
/// does not hold the connection, the client's and their buffers for ever.
pub const DEFAULT_BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Kernel send buffer of upstream sockets: `None` leaves it to the kernel's autotuning, bounded
/// by `net.ipv4.tcp_wmem`. Set it to bound the bytes a slow upstream leaves queued in the kernel.
pub const DEFAULT_TCP_SEND_BUFFER_SIZE: Option<usize> = None;
/// Kernel receive buffer of upstream sockets: `None` leaves it to the kernel's autotuning,
/// bounded by `net.ipv4.tcp_rmem`.
pub const DEFAULT_TCP_RECV_BUFFER_SIZE: Option<usize> = None;

/// Smallest `http1_max_buf_size` accepted: hyper's own minimum (it panics below this), kept so
/// configs stay valid for either client; any real response head fits.
pub const MIN_HTTP1_MAX_BUF_SIZE: usize = 8 * 1024;
/// Largest `http1_max_buf_size` accepted: past this one slow connection holds too much memory.
pub const MAX_HTTP1_MAX_BUF_SIZE: usize = 16 * 1024 * 1024;
/// Longest connect timeout accepted: waiting longer only pins requests to a dead host.
pub const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest body idle timeout accepted.
pub const MAX_BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
/// Longest idle timeout accepted: idle sockets past an hour are almost surely dead at a NAT.
pub const MAX_POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
/// Most idle connections per host accepted.
pub const MAX_POOL_MAX_IDLE_PER_HOST: usize = 10_000;
/// Most response header fields accepted.
pub const MAX_MAX_RESPONSE_HEADERS: usize = 1_000;
/// Smallest socket buffer size accepted (one page).
pub const MIN_TCP_BUFFER_SIZE: usize = 4 * 1024;
/// Largest socket buffer size accepted.
pub const MAX_TCP_BUFFER_SIZE: usize = 64 * 1024 * 1024;

/// Settings of one HTTP upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamConfig {
    /// Where requests go: `http://host:port` plus an optional path prefix, e.g.
    /// `http://127.0.0.1:9000/prefix`. No query, fragment or user info. `https` is refused: this
    /// crate speaks plain HTTP only.
    pub base_url: String,
    /// TCP connect timeout. A connect that fails or runs out becomes
    /// [`UpstreamError::Connect`](crate::UpstreamError::Connect).
    pub connect_timeout: Duration,
    /// How long an idle pooled connection is kept before it is closed.
    pub pool_idle_timeout: Duration,
    /// Idle pooled connections kept per upstream; when the pool is full, releasing one more
    /// closes the oldest idle one.
    pub pool_max_idle_per_host: usize,
    /// Send the downstream `Host` to the upstream instead of the upstream's own authority.
    pub preserve_host: bool,
    /// Speak HTTP/2 with prior knowledge (h2c) to the upstream instead of HTTP/1.1.
    pub http2_prior_knowledge: bool,
    /// HTTP/1 per-connection buffer ceiling: the largest response head (and trailer section)
    /// accepted, and at most this many body bytes are read per poll.
    pub http1_max_buf_size: usize,
    /// Most header fields accepted in one response head (HTTP/1).
    pub max_response_headers: usize,
    /// Longest wait for the next bytes of a response body; past it the body ends with
    /// [`UpstreamBodyError::IdleTimeout`](crate::UpstreamBodyError::IdleTimeout) and the
    /// connection is closed.
    pub body_idle_timeout: Duration,
    /// `SO_SNDBUF` for upstream sockets (the kernel doubles it); `None` for autotuning.
    pub tcp_send_buffer_size: Option<usize>,
    /// `SO_RCVBUF` for upstream sockets (the kernel doubles it); `None` for autotuning.
    pub tcp_recv_buffer_size: Option<usize>,
}

impl Default for UpstreamConfig {
    /// Defaults with an empty `base_url`, which `validate` rejects: set it.
    fn default() -> Self {
        UpstreamConfig {
            base_url: String::new(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            pool_idle_timeout: DEFAULT_POOL_IDLE_TIMEOUT,
            pool_max_idle_per_host: DEFAULT_POOL_MAX_IDLE_PER_HOST,
            preserve_host: false,
            http2_prior_knowledge: false,
            http1_max_buf_size: DEFAULT_HTTP1_MAX_BUF_SIZE,
            max_response_headers: DEFAULT_MAX_RESPONSE_HEADERS,
            body_idle_timeout: DEFAULT_BODY_IDLE_TIMEOUT,
            tcp_send_buffer_size: DEFAULT_TCP_SEND_BUFFER_SIZE,
            tcp_recv_buffer_size: DEFAULT_TCP_RECV_BUFFER_SIZE,
        }
    }
}

impl UpstreamConfig {
    /// Defaults with the given base URL.
    pub fn new(base_url: impl Into<String>) -> Self {
        UpstreamConfig {
            base_url: base_url.into(),
            ..UpstreamConfig::default()
        }
    }

    /// Checks every setting; the same checks [`HttpUpstream::new`](crate::HttpUpstream::new) runs.
    pub fn validate(&self) -> Result<(), UpstreamConfigError> {
        self.base().map(|_| ())?;
        duration("connect_timeout", self.connect_timeout, MAX_CONNECT_TIMEOUT)?;
        duration(
            "pool_idle_timeout",
            self.pool_idle_timeout,
            MAX_POOL_IDLE_TIMEOUT,
        )?;
        duration(
            "body_idle_timeout",
            self.body_idle_timeout,
            MAX_BODY_IDLE_TIMEOUT,
        )?;
        range(
            "pool_max_idle_per_host",
            self.pool_max_idle_per_host,
            1,
            MAX_POOL_MAX_IDLE_PER_HOST,
        )?;
        range(
            "http1_max_buf_size",
            self.http1_max_buf_size,
            MIN_HTTP1_MAX_BUF_SIZE,
            MAX_HTTP1_MAX_BUF_SIZE,
        )?;
        range(
            "max_response_headers",
            self.max_response_headers,
            1,
            MAX_MAX_RESPONSE_HEADERS,
        )?;
        for (field, value) in [
            ("tcp_send_buffer_size", self.tcp_send_buffer_size),
            ("tcp_recv_buffer_size", self.tcp_recv_buffer_size),
        ] {
            if let Some(size) = value {
                range(field, size, MIN_TCP_BUFFER_SIZE, MAX_TCP_BUFFER_SIZE)?;
            }
        }
        Ok(())
    }

    /// The base URL split into what requests are built from.
    pub(crate) fn base(&self) -> Result<BaseUrl, UpstreamConfigError> {
        BaseUrl::parse(&self.base_url)
    }
}

/// A setting that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UpstreamConfigError {
    /// `base_url` is not an absolute `http://authority[/path]` URL.
    #[error("invalid base_url {url:?}: {reason}")]
    InvalidBaseUrl {
        /// The URL as configured.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A numeric or duration setting is zero or out of range.
    #[error("invalid {field}: {reason}")]
    InvalidSetting {
        /// The setting.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

fn duration(
    field: &'static str,
    value: Duration,
    max: Duration,
) -> Result<(), UpstreamConfigError> {
    if value.is_zero() || value > max {
        return Err(UpstreamConfigError::InvalidSetting {
            field,
            reason: format!("{value:?} is outside (0, {max:?}]"),
        });
    }
    Ok(())
}

fn range(
    field: &'static str,
    value: usize,
    min: usize,
    max: usize,
) -> Result<(), UpstreamConfigError> {
    if !(min..=max).contains(&value) {
        return Err(UpstreamConfigError::InvalidSetting {
            field,
            reason: format!("{value} is outside {min}..={max}"),
        });
    }
    Ok(())
}

/// A validated base URL: authority plus a path prefix without its trailing slash.
#[derive(Debug, Clone)]
pub(crate) struct BaseUrl {
    pub(crate) authority: Authority,
    /// `""` for the root, else `/prefix` (never ends in `/`).
    pub(crate) prefix: String,
    /// Whether the configured path ended in `/` (kept when nothing is appended).
    pub(crate) trailing_slash: bool,
}

impl BaseUrl {
    fn parse(url: &str) -> Result<BaseUrl, UpstreamConfigError> {
        let bad = |reason: &str| UpstreamConfigError::InvalidBaseUrl {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        if url.is_empty() {
            return Err(bad("is empty"));
        }
        if url.contains('#') {
            return Err(bad("has a fragment"));
        }
        let uri: Uri = url
            .parse()
            .map_err(|e: http::uri::InvalidUri| bad(&e.to_string()))?;
        match uri.scheme() {
            Some(s) if *s == UriScheme::HTTP => {}
            Some(s) if *s == UriScheme::HTTPS => {
                return Err(bad("https upstreams are not supported (plain HTTP only)"));
            }
            Some(_) => return Err(bad("scheme must be http")),
            None => return Err(bad("must be absolute (http://host:port/...)")),
        }
        let authority = uri.authority().ok_or_else(|| bad("has no host"))?.clone();
        if authority.as_str().contains('@') {
            return Err(bad("must not carry user info"));
        }
        if authority.host().is_empty() {
            return Err(bad("has no host"));
        }
        if uri.query().is_some() {
            return Err(bad("must not have a query"));
        }
        let path = uri.path();
        let trimmed = path.trim_end_matches('/');
        Ok(BaseUrl {
            authority,
            prefix: trimmed.to_owned(),
            trailing_slash: path.len() > 1 && trimmed.len() < path.len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_once_base_url_is_set() {
        assert!(UpstreamConfig::default().validate().is_err());
        UpstreamConfig::new("http://127.0.0.1:9000")
            .validate()
            .unwrap();
        UpstreamConfig::new("http://svc.local/api/")
            .validate()
            .unwrap();
    }

    #[test]
    fn rejects_bad_base_urls() {
        for url in [
            "",
            "127.0.0.1:9000",
            "/just/a/path",
            "https://127.0.0.1:9000",
            "ftp://127.0.0.1",
            "http://user:pw@127.0.0.1",
            "http://127.0.0.1/a?b=c",
            "http://127.0.0.1/a#frag",
            "http:// bad",
        ] {
            let err = UpstreamConfig::new(url).validate().unwrap_err();
            assert!(
                matches!(err, UpstreamConfigError::InvalidBaseUrl { .. }),
                "{url}: {err}"
            );
        }
    }

    #[test]
    fn rejects_zero_and_absurd_values() {
        let base = UpstreamConfig::new("http://127.0.0.1:1");
        let cases = [
            UpstreamConfig {
                connect_timeout: Duration::ZERO,
                ..base.clone()
            },
            UpstreamConfig {
                connect_timeout: MAX_CONNECT_TIMEOUT * 2,
                ..base.clone()
            },
            UpstreamConfig {
                pool_idle_timeout: Duration::ZERO,
                ..base.clone()
            },
            UpstreamConfig {
                pool_max_idle_per_host: 0,
                ..base.clone()
            },
            UpstreamConfig {
                http1_max_buf_size: 100,
                ..base.clone()
            },
            UpstreamConfig {
                max_response_headers: 0,
                ..base.clone()
            },
            UpstreamConfig {
                tcp_send_buffer_size: Some(0),
                ..base.clone()
            },
        ];
        for c in cases {
            let err = c.validate().unwrap_err();
            assert!(
                matches!(err, UpstreamConfigError::InvalidSetting { .. }),
                "{err}"
            );
        }
    }

    #[test]
    fn base_url_prefix_is_normalised() {
        let b = BaseUrl::parse("http://h:1").unwrap();
        assert_eq!((b.prefix.as_str(), b.trailing_slash), ("", false));
        let b = BaseUrl::parse("http://h:1/").unwrap();
        assert_eq!((b.prefix.as_str(), b.trailing_slash), ("", false));
        let b = BaseUrl::parse("http://h:1/api/v1/").unwrap();
        assert_eq!((b.prefix.as_str(), b.trailing_slash), ("/api/v1", true));
        assert_eq!(b.authority.as_str(), "h:1");
    }
}
