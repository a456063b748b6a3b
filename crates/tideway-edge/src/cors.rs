//! CORS (the Fetch standard's CORS protocol) per route: preflight answers and the headers of
//! actual responses. Header values are built once, when the policy is compiled.
//!
//! - A **preflight** is `OPTIONS` with `Origin` and `Access-Control-Request-Method`. It is
//!   answered by the gateway (never forwarded): `204` with the `Access-Control-Allow-*` headers
//!   when the origin, method and every requested header are allowed, else `403` without them
//!   (the browser then refuses the real request). Preflights carry no credentials, so they are
//!   answered before authentication and rate limits. The router must find a route for a
//!   preflight by the method it asks about ([`preflight_method`]), since the route itself
//!   usually does not accept `OPTIONS`.
//! - An **actual** response to an allowed origin gets `Access-Control-Allow-Origin` (the origin
//!   itself, or `*` for `"*"` without credentials), `-Allow-Credentials` and `-Expose-Headers`;
//!   every response of a route whose answer depends on `Origin` gets `Vary: Origin`. A route
//!   with a CORS policy owns CORS: `access-control-*` headers from an HTTP upstream are
//!   replaced.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Method, Response, StatusCode};

use crate::config::CorsPolicy;
use crate::metrics as m;

/// One allowed origin.
#[derive(Debug, Clone)]
enum OriginRule {
    /// `scheme://host[:port]`, lowercase.
    Exact(String),
    /// `scheme://*.suffix[:port]`: `prefix` is `scheme://`, `suffix` is `.suffix[:port]`.
    Wildcard { prefix: String, suffix: String },
}

/// A compiled CORS policy.
#[derive(Debug, Clone)]
pub(crate) struct Cors {
    any_origin: bool,
    origins: Vec<OriginRule>,
    any_method: bool,
    methods: Vec<Method>,
    methods_value: Option<HeaderValue>,
    any_header: bool,
    /// Lowercase.
    headers: Vec<String>,
    headers_value: Option<HeaderValue>,
    expose_value: Option<HeaderValue>,
    max_age_value: HeaderValue,
    credentials: bool,
}

/// Problems with a CORS policy, as `(key, message)`.
pub(crate) fn validate(p: &CorsPolicy) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if p.allow_origins.is_empty() {
        out.push((
            "allow_origins".into(),
            "must list at least one origin".into(),
        ));
    }
    for origin in &p.allow_origins {
        if origin == "*" {
            if p.allow_credentials {
                out.push((
                    "allow_origins".into(),
                    "\"*\" cannot be combined with allow_credentials (browsers refuse it); list the origins".into(),
                ));
            }
        } else if let Err(e) = parse_origin(origin) {
            out.push(("allow_origins".into(), format!("{origin:?}: {e}")));
        }
    }
    for method in &p.allow_methods {
        if method != "*" && Method::from_bytes(method.as_bytes()).is_err() {
            out.push((
                "allow_methods".into(),
                format!("{method:?} is not an HTTP method"),
            ));
        }
    }
    for (key, list) in [
        ("allow_headers", &p.allow_headers),
        ("expose_headers", &p.expose_headers),
    ] {
        for h in list {
            if h != "*" && HeaderName::from_bytes(h.as_bytes()).is_err() {
                out.push((key.into(), format!("{h:?} is not a header name")));
            }
        }
    }
    out
}

fn parse_origin(origin: &str) -> Result<OriginRule, &'static str> {
    let lower = origin.to_ascii_lowercase();
    let Some((scheme, rest)) = lower.split_once("://") else {
        return Err("an origin is scheme://host[:port]");
    };
    if scheme.is_empty()
        || !scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
    {
        return Err("bad scheme");
    }
    if rest.is_empty() || rest.contains('/') || rest.contains('?') || rest.contains('#') {
        return Err("an origin has no path, query or trailing slash");
    }
    if let Some(suffix) = rest.strip_prefix('*') {
        if !suffix.starts_with('.') || suffix.len() < 2 || suffix.contains('*') {
            return Err("a wildcard origin is scheme://*.domain");
        }
        return Ok(OriginRule::Wildcard {
            prefix: format!("{scheme}://"),
            suffix: suffix.to_owned(),
        });
    }
    if rest.contains('*') {
        return Err("'*' may only start the host");
    }
    Ok(OriginRule::Exact(lower))
}

fn join(items: &[String]) -> Option<HeaderValue> {
    if items.is_empty() {
        None
    } else {
        HeaderValue::from_str(&items.join(", ")).ok()
    }
}

impl Cors {
    /// Compiles a policy that [`validate`] accepted.
    pub(crate) fn new(p: &CorsPolicy) -> Cors {
        let any_origin = p.allow_origins.iter().any(|o| o == "*");
        let origins = p
            .allow_origins
            .iter()
            .filter(|o| *o != "*")
            .filter_map(|o| parse_origin(o).ok())
            .collect();
        let any_method = p.allow_methods.iter().any(|m| m == "*");
        let methods: Vec<Method> = p
            .allow_methods
            .iter()
            .filter_map(|m| Method::from_bytes(m.as_bytes()).ok())
            .collect();
        let any_header = p.allow_headers.iter().any(|h| h == "*");
        let headers: Vec<String> = p
            .allow_headers
            .iter()
            .filter(|h| *h != "*")
            .map(|h| h.to_ascii_lowercase())
            .collect();
        Cors {
            any_origin,
            origins,
            any_method,
            methods_value: join(&methods.iter().map(|m| m.to_string()).collect::<Vec<_>>()),
            methods,
            any_header,
            headers_value: join(&headers),
            headers,
            expose_value: join(&p.expose_headers),
            max_age_value: HeaderValue::from(p.max_age.as_secs()),
            credentials: p.allow_credentials,
        }
    }

    fn origin_allowed(&self, origin: &str) -> bool {
        if self.any_origin {
            return true;
        }
        self.origins.iter().any(|rule| match rule {
            OriginRule::Exact(o) => o.eq_ignore_ascii_case(origin),
            OriginRule::Wildcard { prefix, suffix } => {
                origin.len() > prefix.len() + suffix.len()
                    && origin.is_char_boundary(prefix.len())
                    && origin.is_char_boundary(origin.len() - suffix.len())
                    && origin[..prefix.len()].eq_ignore_ascii_case(prefix)
                    && origin[origin.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
                    && {
                        let label = &origin[prefix.len()..origin.len() - suffix.len()];
                        !label.contains(['/', ':', '@'])
                    }
            }
        })
    }

    /// `*` only for any-origin without credentials; else the origin itself.
    fn allow_origin_value(&self, origin: &HeaderValue) -> HeaderValue {
        if self.any_origin && !self.credentials {
            HeaderValue::from_static("*")
        } else {
            origin.clone()
        }
    }

    fn varies_by_origin(&self) -> bool {
        !self.any_origin || self.credentials
    }

    /// The answer to a preflight, or `None` when `parts` is not one.
    pub(crate) fn preflight(&self, parts: &Parts) -> Option<Response<()>> {
        let requested = preflight_method(parts)?;
        let origin = parts.headers.get(header::ORIGIN)?;
        let refuse = |why: &str| {
            tracing::debug!(origin = ?origin, why, "CORS preflight refused");
            metrics::counter!(m::CORS_PREFLIGHTS, "result" => "refused").increment(1);
            let mut r = Response::new(());
            *r.status_mut() = StatusCode::FORBIDDEN;
            add_vary(
                r.headers_mut(),
                "origin, access-control-request-method, access-control-request-headers",
            );
            Some(r)
        };
        let Ok(origin_str) = origin.to_str() else {
            return refuse("origin is not text");
        };
        if !self.origin_allowed(origin_str) {
            return refuse("origin not allowed");
        }
        if !self.any_method && !self.methods.contains(&requested) {
            return refuse("method not allowed");
        }
        let requested_headers: Vec<&str> = parts
            .headers
            .get_all(header::ACCESS_CONTROL_REQUEST_HEADERS)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .collect();
        if !self.any_header {
            for h in &requested_headers {
                if !self.headers.iter().any(|a| a.eq_ignore_ascii_case(h)) {
                    return refuse("header not allowed");
                }
            }
        }
        metrics::counter!(m::CORS_PREFLIGHTS, "result" => "allowed").increment(1);
        let mut r = Response::new(());
        *r.status_mut() = StatusCode::NO_CONTENT;
        let h = r.headers_mut();
        h.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            self.allow_origin_value(origin),
        );
        if self.any_method {
            h.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_str(requested.as_str())
                    .unwrap_or(HeaderValue::from_static("GET")),
            );
        } else if let Some(v) = &self.methods_value {
            h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, v.clone());
        }
        if self.any_header {
            if !requested_headers.is_empty()
                && let Ok(v) = HeaderValue::from_str(&requested_headers.join(", "))
            {
                h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v);
            }
        } else if let Some(v) = &self.headers_value {
            h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v.clone());
        }
        h.insert(header::ACCESS_CONTROL_MAX_AGE, self.max_age_value.clone());
        if self.credentials {
            h.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        add_vary(
            h,
            "origin, access-control-request-method, access-control-request-headers",
        );
        Some(r)
    }

    /// Sets the CORS headers of an actual response.
    pub(crate) fn apply(&self, request: &HeaderMap, response: &mut HeaderMap) {
        remove_cors_headers(response);
        if self.varies_by_origin() {
            add_vary(response, "origin");
        }
        let Some(origin) = request.get(header::ORIGIN) else {
            return;
        };
        let allowed = origin.to_str().is_ok_and(|o| self.origin_allowed(o));
        if !allowed {
            return;
        }
        response.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            self.allow_origin_value(origin),
        );
        if self.credentials {
            response.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        if let Some(v) = &self.expose_value {
            response.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, v.clone());
        }
    }
}

fn remove_cors_headers(h: &mut HeaderMap) {
    for name in [
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        header::ACCESS_CONTROL_ALLOW_METHODS,
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        header::ACCESS_CONTROL_MAX_AGE,
    ] {
        h.remove(name);
    }
}

fn add_vary(h: &mut HeaderMap, value: &'static str) {
    h.append(header::VARY, HeaderValue::from_static(value));
}

/// The method a CORS preflight asks about, when `parts` is a preflight (`OPTIONS` with `Origin`
/// and a valid `Access-Control-Request-Method`). The gateway looks the route up by this method.
pub fn preflight_method(parts: &Parts) -> Option<Method> {
    if parts.method != Method::OPTIONS || !parts.headers.contains_key(header::ORIGIN) {
        return None;
    }
    let m = parts.headers.get(header::ACCESS_CONTROL_REQUEST_METHOD)?;
    Method::from_bytes(m.as_bytes()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn policy(origins: &[&str], credentials: bool) -> CorsPolicy {
        CorsPolicy {
            allow_origins: origins.iter().map(|s| s.to_string()).collect(),
            allow_methods: vec!["GET".into(), "POST".into()],
            allow_headers: vec!["Content-Type".into(), "Authorization".into()],
            expose_headers: vec!["X-Request-Id".into()],
            max_age: Duration::from_secs(600),
            allow_credentials: credentials,
        }
    }

    #[test]
    fn origins_match_exactly_or_by_one_wildcard() {
        let c = Cors::new(&policy(
            &["https://App.example.com", "https://*.example.org:8443"],
            false,
        ));
        assert!(c.origin_allowed("https://app.example.com"));
        assert!(!c.origin_allowed("http://app.example.com"));
        assert!(!c.origin_allowed("https://app.example.com.evil.net"));
        assert!(c.origin_allowed("https://a.example.org:8443"));
        assert!(c.origin_allowed("https://a.b.example.org:8443"));
        assert!(!c.origin_allowed("https://example.org:8443"));
        assert!(!c.origin_allowed("https://evilexample.org:8443"));
        assert!(!c.origin_allowed("https://a.example.org"));
        assert!(!c.origin_allowed("null"));
    }

    #[test]
    fn validation_catches_what_browsers_refuse() {
        let errs = validate(&policy(&["*"], true));
        assert!(
            errs.iter().any(|(_, m)| m.contains("allow_credentials")),
            "{errs:?}"
        );
        let errs = validate(&policy(
            &["https://a.com/", "app.com", "https://a.*.com"],
            false,
        ));
        assert_eq!(errs.len(), 3, "{errs:?}");
    }
}
