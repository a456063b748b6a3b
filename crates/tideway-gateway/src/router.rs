//! The route table: a radix tree (matchit) from path templates to per-method routes, so a lookup
//! costs the same with ten routes or ten thousand.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use http::Method;
use tideway_cluster::Balancer;
use tideway_http_upstream::HttpUpstream;
use tideway_rpc::ServiceDescriptor;

use crate::adaptive::{AdaptiveLimit, AdaptivePermit};
use crate::binding::{Param, ParamKind};
use crate::telemetry::RouteMetrics;

/// Where a route sends requests.
#[derive(Debug, Clone)]
pub enum RouteTarget {
    /// An RPC method.
    Rpc {
        /// Service name, e.g. `logistics.Waybills`.
        service: String,
        /// `service/method`, as sent on the wire.
        full_name: String,
        /// The method's arguments.
        params: Vec<Param>,
    },
    /// A plain HTTP service.
    Http {
        /// The pooled client for it.
        upstream: HttpUpstream,
        /// Removed from the request path before forwarding.
        strip_prefix: Option<String>,
        /// WebSocket handshakes are passed on, and a tunnel carrying nothing either way for
        /// this long is closed; `None`: refused (`Upgrade` is removed as hop-by-hop).
        websocket_idle_timeout: Option<Duration>,
    },
}

/// One route.
#[derive(Debug, Clone)]
pub struct Route {
    /// HTTP method; `None` matches any.
    pub method: Option<Method>,
    /// Path template, e.g. `/api/waybills/{id}`.
    pub path: String,
    /// Deadline for this route; `None` uses the server default.
    pub timeout: Option<Duration>,
    /// Where requests go.
    pub target: RouteTarget,
    /// Where the route came from, for diagnostics (`config routes[2]`, `service logistics.Waybills`).
    pub origin: String,
    /// Caps the requests this route serves at once.
    pub limit: Option<ConcurrencyLimit>,
    /// How its RPC calls are made (idempotency, balancer, fallback).
    pub call: CallSettings,
}

/// How a route's RPC calls are made, beyond their target.
#[derive(Debug, Clone, Default)]
pub struct CallSettings {
    /// The calls may be retried after a lost connection and hedged: safe to repeat. By default
    /// `true` for GET and HEAD routes.
    pub idempotent: bool,
    /// A balancer for this route's calls instead of the service's; health state is shared.
    pub balancer: Option<Balancer>,
    /// The answer when every attempt of a call failed.
    pub fallback: Option<Fallback>,
}

impl CallSettings {
    /// Settings for a route of this HTTP method: idempotent for GET and HEAD.
    pub fn for_method(method: Option<&Method>) -> Self {
        CallSettings {
            idempotent: method.is_some_and(|m| m == Method::GET || m == Method::HEAD),
            ..CallSettings::default()
        }
    }
}

/// A canned response for when a route's service cannot answer.
#[derive(Debug, Clone)]
pub struct Fallback {
    /// Its status.
    pub status: http::StatusCode,
    /// Its body.
    pub body: bytes::Bytes,
    /// Its `Content-Type`.
    pub content_type: http::HeaderValue,
}

/// A cap on concurrent requests that refuses rather than waits: fixed, or adaptive (a gradient
/// controller that follows the backend's latency, see [`crate::adaptive`]).
#[derive(Debug, Clone)]
pub struct ConcurrencyLimit {
    kind: LimitKind,
}

#[derive(Debug, Clone)]
enum LimitKind {
    Fixed {
        permits: Arc<tokio::sync::Semaphore>,
        max: usize,
    },
    Adaptive(Arc<AdaptiveLimit>),
}

/// A slot under a [`ConcurrencyLimit`], released on drop. An adaptive limit learns the request's
/// latency from it.
/// Small (a pointer and a count): every request in flight holds one or two inside its future.
#[derive(Debug)]
pub struct LimitPermit {
    kind: PermitKind,
}

#[derive(Debug)]
enum PermitKind {
    Fixed(#[allow(dead_code)] tokio::sync::OwnedSemaphorePermit),
    Adaptive(Box<(AdaptivePermit, Arc<AdaptiveLimit>, tokio::time::Instant)>),
}

impl Drop for LimitPermit {
    fn drop(&mut self) {
        if let PermitKind::Adaptive(adaptive) = &self.kind {
            let (_, limit, started) = &**adaptive;
            limit.record(started.elapsed());
        }
    }
}

impl ConcurrencyLimit {
    /// A fixed limit of `max` concurrent requests.
    pub fn new(max: usize) -> Self {
        ConcurrencyLimit {
            kind: LimitKind::Fixed {
                permits: Arc::new(tokio::sync::Semaphore::new(max)),
                max,
            },
        }
    }

    /// An adaptive limit that never exceeds `max`.
    pub fn adaptive(max: usize) -> Self {
        ConcurrencyLimit {
            kind: LimitKind::Adaptive(Arc::new(AdaptiveLimit::new(max))),
        }
    }

    /// A permit, or `None` at once when the limit is reached.
    pub fn try_acquire(&self) -> Option<LimitPermit> {
        match &self.kind {
            LimitKind::Fixed { permits, .. } => {
                let permit = Arc::clone(permits).try_acquire_owned().ok()?;
                Some(LimitPermit {
                    kind: PermitKind::Fixed(permit),
                })
            }
            LimitKind::Adaptive(limit) => {
                let permit = limit.try_acquire()?;
                Some(LimitPermit {
                    kind: PermitKind::Adaptive(Box::new((
                        permit,
                        Arc::clone(limit),
                        tokio::time::Instant::now(),
                    ))),
                })
            }
        }
    }

    /// The cap now (an adaptive limit's current value).
    pub fn max(&self) -> usize {
        match &self.kind {
            LimitKind::Fixed { max, .. } => *max,
            LimitKind::Adaptive(limit) => limit.limit(),
        }
    }

    /// Permits taken now.
    pub fn in_use(&self) -> usize {
        match &self.kind {
            LimitKind::Fixed { permits, max } => max - permits.available_permits(),
            LimitKind::Adaptive(limit) => limit.in_flight(),
        }
    }
}

impl Route {
    /// Routes for every method of a service, from its published descriptor.
    pub fn from_descriptor(descriptor: &ServiceDescriptor) -> Vec<Route> {
        descriptor
            .methods
            .iter()
            .map(|m| Route {
                method: Method::from_bytes(m.http_method.as_bytes()).ok(),
                path: m.path.to_owned(),
                timeout: m.timeout_ms.map(Duration::from_millis),
                target: RouteTarget::Rpc {
                    service: descriptor.name.to_owned(),
                    full_name: m.full_name.to_owned(),
                    params: m
                        .params
                        .iter()
                        .map(|p| Param {
                            name: p.name.to_owned(),
                            kind: ParamKind::from_rust_type(p.rust_type),
                            body: p.body,
                            schema: p.schema.map(|schema| schema()),
                        })
                        .collect(),
                },
                origin: format!("service {}", descriptor.name),
                limit: None,
                call: CallSettings::for_method(
                    Method::from_bytes(m.http_method.as_bytes()).ok().as_ref(),
                ),
            })
            .collect()
    }

    /// A short label for logs and metrics: `GET /api/waybills/{id}`.
    pub fn label(&self) -> String {
        format!(
            "{} {}",
            self.method.as_ref().map_or("*", Method::as_str),
            self.path
        )
    }
}

/// Two routes that cannot live in one table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("route {route} ({origin}): {reason}")]
pub struct RouteConflict {
    /// The route that could not be added.
    pub route: String,
    /// Where it came from.
    pub origin: String,
    /// Why.
    pub reason: String,
}

/// What a lookup found.
#[derive(Debug)]
pub enum Match<'a> {
    /// A route, with the path parameters it captured.
    Found {
        /// The route.
        route: &'a Arc<Route>,
        /// Its request metrics.
        metrics: &'a Arc<RouteMetrics>,
        /// Captured `{name}` values, percent-decoded (RPC routes only: an HTTP route binds
        /// none, and gets none).
        params: Vec<(String, String)>,
    },
    /// The path exists but not for this method; `allow` lists the methods that do.
    MethodNotAllowed {
        /// Value for the `Allow` header.
        allow: String,
    },
    /// No route has this path.
    NotFound,
}

#[derive(Debug, Default)]
struct PathRoutes {
    /// Indexes into [`RouteTable::routes`].
    by_method: Vec<(Method, usize)>,
    any_method: Option<usize>,
}

/// An immutable route table; a new one is built and swapped in when routes change.
#[derive(Debug, Default)]
pub struct RouteTable {
    tree: matchit::Router<usize>,
    paths: Vec<PathRoutes>,
    routes: Vec<Arc<Route>>,
    /// Parallel to `routes`.
    metrics: Vec<Arc<RouteMetrics>>,
}

impl RouteTable {
    /// Builds a table; fails on the first route that conflicts with an earlier one.
    pub fn new(routes: impl IntoIterator<Item = Route>) -> Result<Self, RouteConflict> {
        let mut table = RouteTable::default();
        let mut index_of = BTreeMap::new();
        for route in routes {
            table.add(route, &mut index_of)?;
        }
        Ok(table)
    }

    /// Builds a table from routes in priority order, leaving out each route that conflicts with
    /// an earlier one; the conflicts are returned. For routes from sources the gateway does not
    /// control (a registry), where one bad route must not take the others down.
    pub fn build_skipping_conflicts(
        routes: impl IntoIterator<Item = Route>,
    ) -> (Self, Vec<RouteConflict>) {
        let mut table = RouteTable::default();
        let mut index_of = BTreeMap::new();
        let mut conflicts = Vec::new();
        for route in routes {
            if let Err(conflict) = table.add(route, &mut index_of) {
                conflicts.push(conflict);
            }
        }
        (table, conflicts)
    }

    /// Adds a route unless it conflicts; on error the table is unchanged.
    fn add(
        &mut self,
        route: Route,
        index_of: &mut BTreeMap<String, usize>,
    ) -> Result<(), RouteConflict> {
        let route = Arc::new(route);
        let conflict = |reason: String| RouteConflict {
            route: route.label(),
            origin: route.origin.clone(),
            reason,
        };
        // Request paths start with a slash; a template that does not could only match by accident.
        if !route.path.starts_with('/') {
            return Err(conflict("a path template must start with '/'".to_owned()));
        }
        // matchit accepts a name twice; the second value would overwrite the first when bound.
        let names = crate::openapi::openapi_path(&route.path).params;
        if let Some(twice) = names
            .iter()
            .enumerate()
            .find_map(|(i, name)| names[..i].contains(name).then_some(name))
        {
            return Err(conflict(format!(
                "parameter {{{twice}}} appears twice in the path template"
            )));
        }
        let idx = match index_of.get(&route.path) {
            Some(&idx) => idx,
            None => {
                let idx = self.paths.len();
                self.tree
                    .insert(route.path.clone(), idx)
                    .map_err(|e| conflict(e.to_string()))?;
                self.paths.push(PathRoutes::default());
                index_of.insert(route.path.clone(), idx);
                idx
            }
        };
        let index = self.routes.len();
        let entry = &mut self.paths[idx];
        match &route.method {
            Some(method) => {
                if let Some(&(_, other)) = entry.by_method.iter().find(|(m, _)| m == method) {
                    let other = &self.routes[other].origin;
                    return Err(conflict(format!("already routed by {other}")));
                }
                entry.by_method.push((method.clone(), index));
            }
            None => {
                if let Some(other) = entry.any_method {
                    let other = &self.routes[other].origin;
                    return Err(conflict(format!("already routed by {other}")));
                }
                entry.any_method = Some(index);
            }
        }
        self.metrics
            .push(Arc::new(RouteMetrics::new(route.label())));
        self.routes.push(route);
        Ok(())
    }

    /// Every route, in insertion order.
    pub fn routes(&self) -> &[Arc<Route>] {
        &self.routes
    }

    /// Finds the route for a method and path.
    pub fn lookup(&self, method: &Method, path: &str) -> Match<'_> {
        let Ok(found) = self.tree.at(path) else {
            return Match::NotFound;
        };
        let entry = &self.paths[*found.value];
        let index = entry
            .by_method
            .iter()
            .find(|(m, _)| m == method)
            .map(|&(_, i)| i)
            // HEAD is served by a GET route.
            .or_else(|| {
                (method == Method::HEAD)
                    .then(|| entry.by_method.iter().find(|(m, _)| m == Method::GET))
                    .flatten()
                    .map(|&(_, i)| i)
            })
            .or(entry.any_method);
        match index {
            Some(i) => {
                let route = &self.routes[i];
                // Only RPC routes bind parameters; an HTTP route forwards the path as it came.
                let params = match route.target {
                    RouteTarget::Rpc { .. } => found
                        .params
                        .iter()
                        .map(|(k, v)| (k.to_owned(), percent_decode(v)))
                        .collect(),
                    RouteTarget::Http { .. } => Vec::new(),
                };
                Match::Found {
                    route,
                    metrics: &self.metrics[i],
                    params,
                }
            }
            None => {
                let mut allow: Vec<&str> =
                    entry.by_method.iter().map(|(m, _)| m.as_str()).collect();
                if allow.contains(&"GET") {
                    allow.push("HEAD");
                }
                Match::MethodNotAllowed {
                    allow: allow.join(", "),
                }
            }
        }
    }
}

/// Decodes `%XX` escapes in a path segment; invalid escapes and non-UTF-8 results are kept as
/// they came.
fn percent_decode(s: &str) -> String {
    if !s.contains('%') {
        return s.to_owned();
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push(h << 4 | l);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap_or_else(|_| s.to_owned())
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rpc(method: &str, path: &str) -> Route {
        Route {
            method: Some(Method::from_bytes(method.as_bytes()).unwrap()),
            path: path.into(),
            timeout: None,
            target: RouteTarget::Rpc {
                service: "s".into(),
                full_name: format!("s/{method}{path}"),
                params: vec![],
            },
            origin: "test".into(),
            limit: None,
            call: CallSettings::default(),
        }
    }

    #[test]
    fn matches_by_path_then_method() {
        let t = RouteTable::new([
            rpc("GET", "/api/waybills/{id}"),
            rpc("DELETE", "/api/waybills/{id}"),
            rpc("POST", "/api/waybills"),
        ])
        .unwrap();
        match t.lookup(&Method::GET, "/api/waybills/WB%201") {
            Match::Found { route, params, .. } => {
                assert_eq!(route.path, "/api/waybills/{id}");
                assert_eq!(params, vec![("id".to_string(), "WB 1".to_string())]);
            }
            other => panic!("{other:?}"),
        }
        match t.lookup(&Method::PUT, "/api/waybills/1") {
            Match::MethodNotAllowed { allow } => assert_eq!(allow, "GET, DELETE, HEAD"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(t.lookup(&Method::GET, "/nope"), Match::NotFound));
        assert!(matches!(
            t.lookup(&Method::HEAD, "/api/waybills/1"),
            Match::Found { .. }
        ));
    }

    #[test]
    fn duplicate_routes_are_conflicts() {
        let err = RouteTable::new([rpc("GET", "/a/{id}"), rpc("GET", "/a/{id}")]).unwrap_err();
        assert!(err.reason.contains("already routed"), "{err}");
        let err = RouteTable::new([rpc("GET", "/a/{id}"), rpc("GET", "/a/{name}")]).unwrap_err();
        assert!(err.to_string().contains("/a/{name}"), "{err}");
    }

    #[test]
    fn a_parameter_named_twice_is_refused() {
        let err = RouteTable::new([rpc("GET", "/a/{id}/b/{id}")]).unwrap_err();
        assert!(err.reason.contains("{id} appears twice"), "{err}");
        let err = RouteTable::new([rpc("GET", "/a/{id}/b/{*id}")]).unwrap_err();
        assert!(err.reason.contains("{id} appears twice"), "{err}");
        let err = RouteTable::new([rpc("GET", "")]).unwrap_err();
        assert!(err.reason.contains("must start with '/'"), "{err}");
        assert!(RouteTable::new([rpc("GET", "a/{id}")]).is_err());
        // Escaped braces are text, not parameters.
        assert!(RouteTable::new([rpc("GET", "/a/{{id}}/{id}")]).is_ok());
        assert_eq!(
            crate::openapi::openapi_path("/a/{{x}}/{x}/b{y}c/{*rest}").params,
            ["x", "y", "rest"]
        );
        let (table, conflicts) =
            RouteTable::build_skipping_conflicts([rpc("GET", "/x/{a}/{a}"), rpc("GET", "/y/{a}")]);
        assert_eq!(conflicts.len(), 1);
        assert!(matches!(
            table.lookup(&Method::GET, "/y/1"),
            Match::Found { .. }
        ));
    }

    #[test]
    fn percent_decoding_is_lenient() {
        assert_eq!(percent_decode("a%2Fb"), "a/b");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert_eq!(percent_decode("%ff"), "%ff");
    }
}
