//! The request path, in phase order, with one finish path:
//!
//! ```text
//! request id ─► route match ─► (RPC)  read body (bounded) ─► bind ─► call with deadline ─► JSON
//!                          └─► (HTTP) forward, bodies streamed both ways
//!            ─► finish: error → JSON error body; x-request-id on every response
//!            ─► (observability on) the body is wrapped: when it is done, the request's span
//!               ends and its access log line is queued
//! ```
//!
//! Tracing and access logs (`tideway-observe`) cost one pointer check per request when off.
//!
//! The whole request runs under its route's deadline. If the client goes away, hyper drops this
//! future, which drops the RPC call, which sends Cancel to the service.

use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, Response, header};
use http_body::Body as _;
use http_body_util::{BodyExt, Limited};
use tideway_cluster::{CallPolicy, HashKey};
use tideway_http_upstream::headers::{first_value, lists_token};
use tideway_http_upstream::{ClientInfo, Scheme};
use tideway_observe::{Observability, RequestObservation};
use tideway_rpc::{CallOptions, Codec, RpcError};
use tokio::time::Instant;

use crate::backends::RpcBackends;
use crate::binding;
use crate::body::{GatewayBody, IngressBody, full};
use crate::config::ServerSettings;
use crate::edge::EdgePolicies;
use crate::error::GatewayError;
use crate::overload::{ELEVATED_DEADLINE, OverloadState, Pressure};
use crate::router::{Fallback, Match, Route, RouteTable, RouteTarget};
use crate::telemetry::{self, RouteMetrics};

/// Header carrying the request id, in and out.
pub const REQUEST_ID_HEADER: &str = "x-request-id";
/// [`REQUEST_ID_HEADER`] as a header name (the one the upstream client writes too). Inserting
/// with it costs no allocation: `insert` with a `&str` copies a name that is not a standard one
/// into a new buffer every time. Looking up with a `&str` parses (and lower-cases) the name on
/// every call.
pub(crate) const REQUEST_ID_NAME: HeaderName = tideway_http_upstream::headers::X_REQUEST_ID;
/// The W3C trace-context headers passed on to services in the call's metadata, with their
/// metadata keys (the same names, as constants: the metadata keeps them without a copy).
const TRACE_CONTEXT: [(HeaderName, &str); 2] = [
    (HeaderName::from_static("traceparent"), "traceparent"),
    (HeaderName::from_static("tracestate"), "tracestate"),
];
/// Set on a response that is a route's fallback, not the service's answer.
pub const FALLBACK_HEADER: &str = "x-tideway-fallback";
/// Longest request id accepted from a client; longer ones are replaced.
const MAX_REQUEST_ID_LEN: usize = 128;

/// What every request handler shares.
#[derive(Debug)]
pub(crate) struct GatewayState {
    pub(crate) settings: ServerSettings,
    pub(crate) routes: ArcSwap<RouteTable>,
    pub(crate) backends: ArcSwap<RpcBackends>,
    pub(crate) ids: RequestIds,
    /// Caps requests served at once, gateway-wide.
    pub(crate) in_flight: crate::router::ConcurrencyLimit,
    /// Memory pressure, set by the overload manager.
    pub(crate) overload: Arc<OverloadState>,
    /// Edge policies (auth, IP rules, rate limits, CORS), when configured.
    pub(crate) edge: arc_swap::ArcSwapOption<EdgePolicies>,
    /// Tracing and access logs, when either is on.
    pub(crate) observe: arc_swap::ArcSwapOption<Observability>,
}

/// The request's observation, when tracing or access logs are on.
type Obs<'a> = Option<&'a mut RequestObservation>;

/// The downstream connection a request came on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Downstream {
    pub(crate) peer: SocketAddr,
    pub(crate) scheme: Scheme,
}

/// WARN lines for failed requests: at most this many per second, the rest counted and reported.
const FAILURE_LOG_LINES_PER_SECOND: u32 = 20;
static FAILURE_LOG: std::sync::LazyLock<crate::log_throttle::LogThrottle> =
    std::sync::LazyLock::new(|| {
        crate::log_throttle::LogThrottle::new(FAILURE_LOG_LINES_PER_SECOND)
    });

/// Payloads up to this size are copied out of hyper's read buffer before an RPC call.
const SMALL_PAYLOAD_COPY: usize = 4096;

/// A request as the handler takes it: boxed, so that the futures of the request path (one
/// inside the other, each keeping room for its arguments) hold a pointer, not the request's
/// 264 bytes, at every level. That is most of a request's memory while it waits on a service.
pub(crate) type GatewayRequest = Box<Request<IngressBody>>;

/// Handles one request; never fails (every failure is a response).
///
/// The request id goes on the response as `x-request-id`: with `id_in_headers` it is set in
/// the response's headers, else it is returned for the caller to write in the head (the
/// HTTP/1.1 fast path's writer: one field written, where a map insert hashes the name and may
/// grow the map). `None` comes back when the id is in the headers or no id applies.
pub(crate) async fn handle(
    state: Arc<GatewayState>,
    downstream: Downstream,
    req: GatewayRequest,
    id_in_headers: bool,
) -> (Response<GatewayBody>, Option<HeaderValue>) {
    // `/openapi.json` and `/docs`, unless a route takes those paths.
    if let Some(response) = crate::openapi::public_answer(&state, &req) {
        return (response, None);
    }
    let request_id_header = state.ids.for_request(&req);
    let Some(observe) = state.observe.load_full() else {
        let response = serve(
            &state,
            &downstream,
            req,
            &request_id_header,
            None,
            id_in_headers,
        )
        .await;
        return (response, (!id_in_headers).then_some(request_id_header));
    };
    // Boxed: the observed branch must not size the future of every request when tracing and
    // access logs are off (the future is allocated whole per request in flight).
    Box::pin(async move {
        let mut observation = observe.request(&req, &request_id_header, downstream.peer);
        let response = serve(
            &state,
            &downstream,
            req,
            &request_id_header,
            Some(&mut observation),
            id_in_headers,
        )
        .await;
        let response = observation.finish(response).map(GatewayBody::new);
        (response, (!id_in_headers).then_some(request_id_header))
    })
    .await
}

async fn serve(
    state: &GatewayState,
    downstream: &Downstream,
    req: GatewayRequest,
    request_id_header: &HeaderValue,
    obs: Obs<'_>,
    id_in_headers: bool,
) -> Response<GatewayBody> {
    // Ids are visible ASCII: taken only when they are, generated as hex otherwise.
    let request_id = request_id_header.to_str().unwrap_or_default();
    let started = Instant::now();
    // Refused before anything else is done: no body read, no route lookup.
    if state.overload.pressure() == Pressure::Shedding {
        metrics::counter!(telemetry::SHED_TOTAL, "reason" => "memory").increment(1);
        return refused(
            GatewayError::Overloaded("the gateway is over its memory budget; retry later".into()),
            request_id_header,
        );
    }
    let Some(_in_flight) = state.in_flight.try_acquire() else {
        metrics::counter!(telemetry::SHED_TOTAL, "reason" => "gateway_in_flight").increment(1);
        let limit = state.in_flight.max();
        return refused(
            GatewayError::Overloaded(format!(
                "the gateway is serving its limit of {limit} requests; retry later"
            )),
            request_id_header,
        );
    };
    // Cheap clones (an enum and a shared buffer), kept for the log line of a failure.
    let method = req.method().clone();
    // The path is copied for the log line of a failure. Cloning the `Uri` would share hyper's
    // read buffer and keep all 8 KiB of it alive while the request waits on a slow service.
    let path = LoggedPath::new(req.uri().path());
    let mut matched: Option<Arc<RouteMetrics>> = None;
    let mut response = match dispatch(state, downstream, req, request_id_header, &mut matched, obs)
        .await
    {
        Ok(response) => response,
        Err(err) => {
            let (status, _) = err.status_and_code();
            if status.is_server_error() {
                // At most a few lines a second: under overload, writing one per failure would
                // cost as much as serving (every request is in the access log when it is on).
                if let Some(suppressed) = FAILURE_LOG.allow() {
                    tracing::warn!(%request_id, %method, path = %path, %status, error = %err, suppressed, "request failed");
                } else {
                    tracing::debug!(%request_id, %method, path = %path, %status, error = %err, "request failed");
                }
            } else {
                tracing::debug!(%request_id, %method, path = %path, %status, error = %err, "request refused");
            }
            err.into_response(request_id)
        }
    };
    if id_in_headers {
        response
            .headers_mut()
            .insert(REQUEST_ID_NAME, request_id_header.clone());
    }
    let route_metrics: &RouteMetrics = match &matched {
        Some(m) => m,
        None => RouteMetrics::unmatched(),
    };
    route_metrics.record(response.status(), started.elapsed());
    tracing::trace!(%request_id, %method, path = %path, status = %response.status(), elapsed = ?started.elapsed(), "request done");
    response
}

/// Longest request path a log line shows; a longer one is cut, and marked so.
const LOGGED_PATH_MAX: usize = 80;

/// A request path kept for the log line of a failure: a copy, so it shares no read buffer;
/// inline, so it costs no allocation on the requests (nearly all) that never log it; and
/// bounded, so a long path cannot make long log lines.
struct LoggedPath {
    bytes: [u8; LOGGED_PATH_MAX],
    len: u8,
    cut: bool,
}

impl LoggedPath {
    fn new(path: &str) -> Self {
        let mut len = path.len().min(LOGGED_PATH_MAX);
        while !path.is_char_boundary(len) {
            len -= 1;
        }
        let mut bytes = [0; LOGGED_PATH_MAX];
        bytes[..len].copy_from_slice(&path.as_bytes()[..len]);
        LoggedPath {
            bytes,
            len: len as u8,
            cut: len < path.len(),
        }
    }

    fn as_str(&self) -> &str {
        // Cut at a character boundary of a `str`: still UTF-8.
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or_default()
    }
}

impl std::fmt::Display for LoggedPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())?;
        if self.cut {
            f.write_str("...")?;
        }
        Ok(())
    }
}

/// The answer to a request refused before it was routed.
fn refused(err: GatewayError, request_id: &HeaderValue) -> Response<GatewayBody> {
    let mut response = err.into_response(request_id.to_str().unwrap_or_default());
    response
        .headers_mut()
        .insert(REQUEST_ID_NAME, request_id.clone());
    response
}

async fn dispatch(
    state: &GatewayState,
    downstream: &Downstream,
    mut req: GatewayRequest,
    request_id_header: &HeaderValue,
    matched: &mut Option<Arc<RouteMetrics>>,
    mut obs: Obs<'_>,
) -> Result<Response<GatewayBody>, GatewayError> {
    let request_id = request_id_header.to_str().unwrap_or_default();
    let edge = state.edge.load_full();
    if let Some(edge) = &edge
        && let Some(issuer) = edge.edge().token_issuer()
        && req.uri().path() == issuer.path()
        && req.method() == Method::POST
    {
        // Boxed, as every branch off the RPC path: the request future is allocated whole for
        // each request in flight, so a rare branch must not size it.
        return Ok(Box::pin(token_endpoint(state, edge, req, request_id)).await);
    }
    let (route, path_params, policy) = {
        let table = state.routes.load();
        // A CORS preflight asks about another method of the route; the edge answers it.
        if let Some(edge) = &edge
            && req.method() == Method::OPTIONS
            && let Some(answer) = preflight(edge, &table, &req)
        {
            return Ok(answer);
        }
        match table.lookup(req.method(), req.uri().path()) {
            Match::Found {
                route,
                metrics,
                params,
            } => {
                let policy = edge
                    .as_ref()
                    .and_then(|e| e.policy_for(metrics.label(), &route.path))
                    .cloned();
                *matched = Some(Arc::clone(metrics));
                if let Some(o) = obs.as_deref_mut() {
                    o.set_route(metrics.label(), &route.path);
                }
                (Arc::clone(route), params, policy)
            }
            Match::MethodNotAllowed { allow } => {
                return Err(GatewayError::MethodNotAllowed {
                    method: req.method().to_string(),
                    allow,
                });
            }
            Match::NotFound => {
                return Err(GatewayError::RouteNotFound(format!(
                    "{} {}",
                    req.method(),
                    req.uri().path()
                )));
            }
        }
    };
    // Edge policies (IP rules, rate limits, authentication) before any work for the route.
    let mut admitted = None;
    let mut cors_request = None;
    if let (Some(edge), Some(policy)) = (&edge, &policy) {
        let (parts, body) = (*req).into_parts();
        let client = edge.edge().client_ip(downstream.peer.ip(), &parts.headers);
        if policy.has_cors() {
            let mut origin = http::HeaderMap::new();
            if let Some(v) = parts.headers.get(header::ORIGIN) {
                origin.insert(header::ORIGIN, v.clone());
            }
            // Boxed: a rare branch must not size the request future.
            cors_request = Some(Box::new(origin));
        }
        match Box::pin(edge.edge().admit(policy, &parts, client)).await {
            Ok(a) => admitted = Some(a),
            Err(rejection) => {
                let mut response = rejection.into_response(request_id).map(full);
                edge.edge()
                    .apply_cors(policy, &parts.headers, response.headers_mut());
                return Ok(response);
            }
        }
        req = Box::new(Request::from_parts(parts, body));
    }
    let identity = admitted.as_ref().and_then(|a| a.principal.as_deref());
    let mut response = serve_route(
        state,
        downstream,
        &route,
        path_params,
        req,
        request_id_header,
        identity,
        obs,
    )
    .await?;
    if let Some(admitted) = admitted {
        admitted.rate_headers.apply(response.headers_mut());
    }
    if let (Some(edge), Some(policy), Some(origin)) = (&edge, &policy, &cors_request) {
        edge.edge()
            .apply_cors(policy, origin, response.headers_mut());
    }
    Ok(response)
}

/// Most bytes of a token request (a form with credentials).
const MAX_TOKEN_REQUEST_BYTES: usize = 16 * 1024;

/// `POST {token path}`: the credentials go to the configured auth service method; when it
/// accepts them (answers `{"subject", "claims"}`), a signed token is issued. Refresh tokens are
/// checked by the issuer and the auth service is asked again about the subject. Errors are
/// OAuth 2.0 JSON errors.
async fn token_endpoint(
    state: &GatewayState,
    edge: &EdgePolicies,
    req: GatewayRequest,
    request_id: &str,
) -> Response<GatewayBody> {
    use tideway_edge::token::{AuthServiceReply, Grant, OAuthError, TokenRequest};
    let Some(issuer) = edge.edge().token_issuer() else {
        return OAuthError::server_error("no token issuer")
            .into_response()
            .map(full);
    };
    let deadline = Instant::now() + state.settings.request_timeout;
    let (parts, body) = (*req).into_parts();
    let body = match tokio::time::timeout_at(
        deadline,
        read_body(&parts.headers, body, MAX_TOKEN_REQUEST_BYTES),
    )
    .await
    {
        Ok(Ok(body)) => body,
        Ok(Err(e)) => {
            return OAuthError::invalid_request(e.to_string())
                .into_response()
                .map(full);
        }
        Err(_) => {
            return OAuthError::invalid_request("the request body did not arrive in time")
                .into_response()
                .map(full);
        }
    };
    let answer = async {
        let request = TokenRequest::parse(&parts.headers, &body)?;
        let payload = match &request.grant {
            Grant::RefreshToken { refresh_token } => {
                issuer.refresh(refresh_token.expose())?.auth_payload()
            }
            _ => request
                .auth_payload()
                .ok_or_else(|| OAuthError::invalid_request("no credentials"))?,
        };
        let service = issuer.auth_service();
        let cluster = state
            .backends
            .load()
            .cluster(service)
            .cloned()
            .ok_or_else(|| {
                OAuthError::unavailable(format!("the auth service {service} is not known"))
            })?;
        let mut options = CallOptions::with_deadline(deadline);
        options.metadata.insert(REQUEST_ID_HEADER, request_id);
        let method = format!("{service}/{}", issuer.auth_method());
        let reply = cluster
            .call(
                &method,
                Codec::Json,
                Bytes::from(serde_json::to_vec(&payload).unwrap_or_default()),
                &options,
                &CallPolicy::default(),
            )
            .await
            .map_err(|e| match e.status() {
                tideway_rpc::Status::Unauthenticated
                | tideway_rpc::Status::PermissionDenied
                | tideway_rpc::Status::InvalidArgument
                | tideway_rpc::Status::NotFound => {
                    OAuthError::invalid_grant(e.rpc_error().message().to_owned())
                }
                _ => OAuthError::unavailable(format!("the auth service failed: {e}")),
            })?;
        let accepted = AuthServiceReply::from_json(&reply)?;
        issuer
            .issue(&accepted.subject, &accepted.claims)
            .map_err(|e| OAuthError::server_error(e.to_string()))
    }
    .await;
    match answer {
        Ok(token) => token.into_response().map(full),
        Err(e) => {
            tracing::debug!(%request_id, error = ?e.to_json(), "token request refused");
            e.into_response().map(full)
        }
    }
}

/// The edge's answer to a CORS preflight for a route that has a CORS policy.
fn preflight<B>(
    edge: &EdgePolicies,
    table: &RouteTable,
    req: &Request<B>,
) -> Option<Response<GatewayBody>> {
    let (parts, ()) = Request::builder()
        .method(req.method())
        .uri(req.uri())
        .body(())
        .ok()?
        .into_parts();
    let mut parts = parts;
    parts.headers = req.headers().clone();
    let asked = tideway_edge::preflight_method(&parts)?;
    let Match::Found { route, metrics, .. } = table.lookup(&asked, parts.uri.path()) else {
        return None;
    };
    let policy = edge.policy_for(metrics.label(), &route.path)?;
    let answer = edge.edge().cors_preflight(policy, &parts)?;
    Some(answer.map(|()| crate::body::empty()))
}

/// The route's work once admitted: its limit, its deadline, its target.
// The request path in phase order passes its pieces explicitly rather than in a bag.
#[allow(clippy::too_many_arguments)]
async fn serve_route(
    state: &GatewayState,
    downstream: &Downstream,
    route: &Arc<Route>,
    path_params: Vec<(String, String)>,
    req: GatewayRequest,
    request_id_header: &HeaderValue,
    identity: Option<&tideway_edge::Principal>,
    obs: Obs<'_>,
) -> Result<Response<GatewayBody>, GatewayError> {
    let request_id = request_id_header.to_str().unwrap_or_default();
    let _route_permit = match &route.limit {
        Some(limit) => Some(limit.try_acquire().ok_or_else(|| {
            metrics::counter!(telemetry::SHED_TOTAL, "reason" => "route_in_flight").increment(1);
            GatewayError::Overloaded(format!(
                "route {} is serving its limit of {} requests; retry later",
                route.label(),
                limit.max()
            ))
        })?),
        None => None,
    };
    let mut budget = route.timeout.unwrap_or(state.settings.request_timeout);
    if state.overload.pressure() >= Pressure::Elevated {
        // Under memory pressure, work that holds memory for long is cut short.
        budget = budget.min(ELEVATED_DEADLINE);
    }
    // Each step below is bounded by the budget itself (body read, RPC call, upstream head), so
    // no outer timer is needed.
    match &route.target {
        RouteTarget::Rpc { .. } => {
            let deadline = Instant::now() + budget;
            call_rpc(
                state,
                route,
                path_params,
                req,
                request_id,
                (deadline, budget),
                identity,
                obs,
            )
            .await
        }
        RouteTarget::Http { .. } => {
            boxed_in_place(|| {
                proxy_http(
                    route,
                    downstream,
                    req,
                    request_id_header,
                    budget,
                    identity,
                    obs,
                )
            })
            .await
        }
    }
}

/// `Box::pin(make())`, written so that the future can be built in its box: a future's type is
/// as large as its largest state (kilobytes for a request's), and `Box::pin(future)` builds it
/// on the stack and then copies all of it, though only its arguments are set yet.
#[inline(always)]
pub(crate) fn boxed_in_place<F: Future>(make: impl FnOnce() -> F) -> std::pin::Pin<Box<F>> {
    Box::into_pin(Box::write(Box::new_uninit(), make()))
}

fn deadline_passed(budget: Duration) -> GatewayError {
    GatewayError::Rpc(RpcError::deadline_exceeded(format!(
        "no answer within the route's deadline of {budget:?}"
    )))
}

// The request path in phase order passes its pieces explicitly rather than in a bag.
#[allow(clippy::too_many_arguments)]
async fn call_rpc(
    state: &GatewayState,
    route: &Route,
    path_params: Vec<(String, String)>,
    req: GatewayRequest,
    request_id: &str,
    (deadline, budget): (Instant, Duration),
    identity: Option<&tideway_edge::Principal>,
    mut obs: Obs<'_>,
) -> Result<Response<GatewayBody>, GatewayError> {
    let RouteTarget::Rpc {
        service,
        full_name,
        params,
    } = &route.target
    else {
        unreachable!("call_rpc on a non-RPC route {}", route.label());
    };
    // Everything the call needs is made in this block, and the request's head dies at its end:
    // it may share a read buffer (hyper's is 8 KiB), and a local that outlives its last use
    // keeps its room in this future, which waits as long as the service does.
    let (_held, cluster, payload, options, hash_key) = {
        let (parts, body) = (*req).into_parts();
        // The body, and the call that carries it, count against the memory budget until the
        // response is built: reserved before a byte is read (the declared length, or the limit when
        // none is declared), refused with 503 when it does not fit.
        let _held = if body.is_end_stream() {
            None
        } else {
            let limit = state.settings.max_body_bytes as u64;
            let declared = content_length(&parts.headers).unwrap_or(limit).min(limit);
            Some(state.overload.try_hold(declared).ok_or_else(|| {
                metrics::counter!(telemetry::SHED_TOTAL, "reason" => "memory").increment(1);
                GatewayError::Overloaded(format!(
                    "a {declared}-byte body does not fit in the memory budget now; retry later"
                ))
            })?)
        };
        let body = if body.is_end_stream() {
            Bytes::new()
        } else {
            tokio::time::timeout_at(
                deadline,
                read_body(&parts.headers, body, state.settings.max_body_bytes),
            )
            .await
            .map_err(|_| deadline_passed(budget))??
        };
        if let Some(o) = obs.as_deref_mut() {
            o.add_bytes_in(body.len() as u64);
        }
        let body_start = (!body.is_empty()).then(|| body.as_ptr());
        let payload = binding::bind(params, &path_params, parts.uri.query(), body)?;
        // A body forwarded as it came may be a slice of the connection's read buffer; a small
        // one is copied so that the whole buffer is not kept for the length of the call. A
        // payload the binding made (merged, or the empty object) holds no such buffer.
        let forwarded = body_start == Some(payload.as_ptr());
        let payload = if forwarded && payload.len() <= SMALL_PAYLOAD_COPY {
            Bytes::copy_from_slice(&payload)
        } else {
            payload
        };

        // The cluster is taken out of the shared set before the call, so no guard on that set is
        // held across the wait.
        let Some(cluster) = state.backends.load().cluster(service).cloned() else {
            // A service nobody has published (yet): nothing to try.
            if let Some(fallback) = &route.call.fallback {
                return Ok(fallback_answer(
                    fallback,
                    request_id,
                    route,
                    "no such service",
                ));
            }
            return Err(GatewayError::NoEndpoint(service.clone()));
        };
        let mut options = CallOptions::with_deadline(deadline);
        options.metadata.insert(REQUEST_ID_HEADER, request_id);
        for (name, key) in &TRACE_CONTEXT {
            if let Some(v) = first_value(&parts.headers, name).and_then(|v| v.to_str().ok()) {
                options.metadata.insert(*key, v);
            }
        }
        // Who the edge authenticated, for the service to authorize (`x-auth-subject`, ...).
        // Made once per token and route policy, added here without a copy.
        if let Some(principal) = identity {
            options
                .metadata
                .extend_shared(Arc::clone(principal.metadata()));
        }
        let balancer = route
            .call
            .balancer
            .as_ref()
            .unwrap_or(&cluster.config().balancer);
        let hash_key = balancer
            .hash_key()
            .and_then(|key| hash_key_of(key, &parts, &path_params, &payload));
        // The path's parameters are in the payload now; their strings go before the wait.
        drop(path_params);
        (_held, cluster, payload, options, hash_key)
    };
    let policy = CallPolicy {
        idempotent: route.call.idempotent,
        hash_key: hash_key.as_deref(),
        balancer: route.call.balancer.as_ref(),
    };
    // With tracing, each attempt gets a span whose context replaces the client's `traceparent`
    // in the metadata; the access log learns the instance that answered. The call's future is
    // made where it is awaited: made first and awaited after, its state (1.3 KiB) was
    // copied into this future's on every call.
    let result = match obs {
        Some(o) => {
            let call = cluster.call(full_name, Codec::Json, payload, &options, &policy);
            Box::pin(tideway_rpc::observe_client_calls(o.rpc_observer(), call)).await
        }
        None => {
            cluster
                .call(full_name, Codec::Json, payload, &options, &policy)
                .await
        }
    };
    let reply = match result {
        Ok(reply) => reply,
        Err(e) => {
            return match &route.call.fallback {
                Some(fallback) if e.every_attempt_failed() => {
                    Ok(fallback_answer(fallback, request_id, route, &e.to_string()))
                }
                _ => Err(GatewayError::Rpc(e.into_rpc_error())),
            };
        }
    };
    // The reply counts against the memory budget until the connection has taken it.
    let held = state.overload.hold(reply.len() as u64);
    let mut response = Response::new(crate::body::held(reply, held));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

/// The key a consistent-hash balancer hashes for this request: a header, a parameter (path,
/// then query, then a top-level field of the JSON payload), or the path. `None` when absent.
fn hash_key_of(
    key: &HashKey,
    parts: &http::request::Parts,
    path_params: &[(String, String)],
    payload: &Bytes,
) -> Option<String> {
    match key {
        HashKey::Header(name) => parts
            .headers
            .get(name.as_str())
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        HashKey::Path => Some(parts.uri.path().to_owned()),
        HashKey::Param(name) => path_params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .or_else(|| {
                let query = parts.uri.query()?;
                serde_urlencoded::from_str::<Vec<(String, String)>>(query)
                    .ok()?
                    .into_iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v)
            })
            .or_else(|| {
                let body: serde_json::Map<String, serde_json::Value> =
                    serde_json::from_slice(payload).ok()?;
                match body.get(name)? {
                    serde_json::Value::String(s) => Some(s.clone()),
                    other => Some(other.to_string()),
                }
            }),
    }
}

/// The route's fallback, counted and logged.
fn fallback_answer(
    fallback: &Fallback,
    request_id: &str,
    route: &Route,
    why: &str,
) -> Response<GatewayBody> {
    metrics::counter!(telemetry::FALLBACKS_TOTAL).increment(1);
    tracing::debug!(%request_id, route = %route.label(), error = why, "answered with the route's fallback");
    fallback_response(fallback)
}

fn fallback_response(fallback: &Fallback) -> Response<GatewayBody> {
    let mut response = Response::new(crate::body::full(fallback.body.clone()));
    *response.status_mut() = fallback.status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, fallback.content_type.clone());
    headers.insert(FALLBACK_HEADER, HeaderValue::from_static("true"));
    response
}

fn content_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

/// Reads a whole request body, refusing (413) as soon as it is known to exceed `limit`: from
/// `Content-Length` before reading, or when the bytes read pass it.
async fn read_body(
    headers: &http::HeaderMap,
    body: IngressBody,
    limit: usize,
) -> Result<Bytes, GatewayError> {
    let declared = content_length(headers);
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(GatewayError::PayloadTooLarge { limit });
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(GatewayError::PayloadTooLarge { limit })
        }
        Err(e) => Err(GatewayError::BodyRead(e.to_string())),
    }
}

async fn proxy_http(
    route: &Route,
    downstream: &Downstream,
    req: GatewayRequest,
    request_id: &HeaderValue,
    budget: Duration,
    identity: Option<&tideway_edge::Principal>,
    obs: Obs<'_>,
) -> Result<Response<GatewayBody>, GatewayError> {
    let RouteTarget::Http {
        upstream,
        strip_prefix,
        websocket_idle_timeout,
    } = &route.target
    else {
        unreachable!("proxy_http on a non-HTTP route {}", route.label());
    };
    let strip_prefix = strip_prefix.as_deref();
    let mut req = req;
    // Identity headers come from the edge only, never from the client.
    tideway_edge::strip_identity_headers(req.headers_mut());
    if let Some(principal) = identity {
        principal.apply_to_headers(req.headers_mut());
    }
    // The request id goes with the client's details: the upstream client writes it in place
    // of any the request carries (an insert into the map would hash its name).
    let client = ClientInfo {
        addr: downstream.peer,
        scheme: downstream.scheme,
        request_id: Some(request_id.clone()),
    };
    // The route's whole budget: nothing before this took measurable time (the deadline was
    // set just before), and re-reading the clock for it would cost more than it says.
    let timeout = budget;
    // A WebSocket handshake the route lets through: the upstream may switch protocols.
    let switch = websocket_idle_timeout.is_some()
        && upstream.supports_upgrades()
        && is_websocket_handshake(&req);
    let response = match obs {
        None => {
            upstream
                .forward_as_is_switching(*req, strip_prefix, &client, timeout, switch)
                .await?
        }
        Some(o) => {
            o.set_upstream_url(upstream.base_url());
            // The upstream continues the gateway's span.
            if let Some(tp) = o.traceparent()
                && let Ok(v) = HeaderValue::from_str(&tp)
            {
                req.headers_mut()
                    .insert(tideway_observe::trace::TRACEPARENT, v);
            }
            let req = (*req).map(|body| o.count_request_body(body));
            upstream
                .forward_as_is_switching(req, strip_prefix, &client, timeout, switch)
                .await?
        }
    };
    if switch && let Some(idle_timeout) = *websocket_idle_timeout {
        return websocket_answer(response, idle_timeout);
    }
    // An answer read whole with its head (most small ones) is passed on inline, not boxed.
    Ok(response.map(|mut body| match body.take_whole() {
        Some(bytes) => crate::body::full(bytes),
        None => GatewayBody::new(body),
    }))
}

/// Whether `req` is a WebSocket handshake (RFC 6455 §4.1) that can become a tunnel: an
/// HTTP/1.1 `GET` with `Connection: upgrade` and `Upgrade: websocket`, read by hyper (whose
/// connection can then be handed over). `Upgrade` must name `websocket` alone: the client's
/// value goes to the upstream, and one offering `h2c` as well could let the upstream switch to
/// HTTP/2, over which the client would send requests the gateway never sees (h2c smuggling).
fn is_websocket_handshake(req: &Request<IngressBody>) -> bool {
    // hyper's upgrade handle first: a request without one (every request of the fast path)
    // is ruled out by that check alone.
    req.extensions()
        .get::<hyper::upgrade::OnUpgrade>()
        .is_some()
        && req.version() == http::Version::HTTP_11
        && req.method() == Method::GET
        && req
            .headers()
            .get(header::UPGRADE)
            .is_some_and(|v| names_websocket(v.as_bytes()))
        && req
            .headers()
            .get_all(header::CONNECTION)
            .iter()
            .any(|v| lists_token(v, b"upgrade"))
}

/// `websocket`, alone (a version suffix is not part of RFC 6455's token).
fn names_websocket(value: &[u8]) -> bool {
    value.trim_ascii().eq_ignore_ascii_case(b"websocket")
}

/// The client's answer to a WebSocket handshake the upstream answered. A `101` carries the
/// upstream connection to the connection's driver (see `crate::tunnel`); any other answer is
/// passed on as it is. A switch to anything but `websocket` is refused (502).
fn websocket_answer(
    response: Response<tideway_http_upstream::UpstreamBody>,
    idle_timeout: Duration,
) -> Result<Response<GatewayBody>, GatewayError> {
    let mut response = response;
    let Some(tunnel) = response.body_mut().take_tunnel() else {
        return Ok(response.map(GatewayBody::new));
    };
    if !response
        .headers()
        .get(header::UPGRADE)
        .is_some_and(|v| names_websocket(v.as_bytes()))
    {
        // Dropping the tunnel closes the upstream connection.
        drop(tunnel);
        return Err(GatewayError::BadUpstreamSwitch);
    }
    let (mut parts, _) = response.into_parts();
    parts
        .extensions
        .insert(crate::tunnel::TunnelHandoff::new(tunnel, idle_timeout));
    Ok(Response::from_parts(parts, crate::body::empty()))
}

/// Request ids: the client's `x-request-id` when it is sane, else a fresh one.
///
/// The id's header value is made once, in one allocation that also holds its reference count
/// (`Bytes::from_owner`), and then shared: the response, the upstream request and the
/// observation each take a clone that costs no allocation. (A value made by copying into a
/// `Vec`, as `HeaderValue::from_bytes` does, allocates again on its first clone.)
#[derive(Debug)]
pub(crate) struct RequestIds {
    seed: u64,
    counter: AtomicU64,
}

/// A client's request id, copied for [`RequestIds::for_request`].
struct RequestIdBytes {
    bytes: [u8; MAX_REQUEST_ID_LEN],
    len: usize,
}

impl AsRef<[u8]> for RequestIdBytes {
    fn as_ref(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl RequestIds {
    pub(crate) fn new() -> Self {
        // A per-process random seed from std's randomly keyed hasher; ids need to be unique, not
        // secret.
        let seed = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        RequestIds {
            seed,
            counter: AtomicU64::new(0),
        }
    }

    fn for_request<B>(&self, req: &Request<B>) -> HeaderValue {
        if let Some(given) = first_value(req.headers(), &REQUEST_ID_NAME).filter(|v| {
            let v = v.as_bytes();
            !v.is_empty() && v.len() <= MAX_REQUEST_ID_LEN && v.iter().all(u8::is_ascii_graphic)
        }) {
            // Copied, not shared: a shared value would keep hyper's whole read buffer (8 KiB)
            // alive for as long as the request is in flight.
            let mut copy = RequestIdBytes {
                bytes: [0; MAX_REQUEST_ID_LEN],
                len: given.len(),
            };
            copy.bytes[..given.len()].copy_from_slice(given.as_bytes());
            return HeaderValue::from_maybe_shared(Bytes::from_owner(copy))
                .unwrap_or_else(|_| given.clone());
        }
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        // splitmix64 of seed + counter: unique per process, spread over the whole range.
        let mut z = self
            .seed
            .wrapping_add(n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let mut hex = [0u8; 16];
        for (i, digit) in hex.iter_mut().enumerate() {
            *digit = b"0123456789abcdef"[((z >> (60 - 4 * i)) & 0xf) as usize];
        }
        HeaderValue::from_maybe_shared(Bytes::from_owner(hex))
            .expect("hex digits are a valid header value")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_request_ids_are_unique_hex_and_a_sane_client_id_is_kept() {
        let (a, b) = (RequestIds::new(), RequestIds::new());
        let bare = Request::new(());
        let mut seen = std::collections::HashSet::new();
        for i in 0..100 {
            let ids = if i % 3 == 0 { &b } else { &a };
            let id = ids.for_request(&bare).to_str().unwrap().to_owned();
            assert_eq!(id.len(), 16, "{id}");
            assert!(
                id.bytes()
                    .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()),
                "{id}"
            );
            assert!(seen.insert(id.clone()), "{id} handed out twice");
        }
        let given = Request::builder()
            .header(REQUEST_ID_HEADER, "client-id-42")
            .body(())
            .unwrap();
        assert_eq!(a.for_request(&given), "client-id-42");
        let unprintable = Request::builder()
            .header(REQUEST_ID_HEADER, "has space")
            .body(())
            .unwrap();
        assert_eq!(a.for_request(&unprintable).len(), 16);
    }

    #[test]
    fn logged_paths_are_kept_whole_or_cut_at_a_character_boundary_and_marked() {
        assert_eq!(LoggedPath::new("/api/items/7").to_string(), "/api/items/7");
        assert_eq!(LoggedPath::new("").to_string(), "");
        let exact = format!("/{}", "a".repeat(LOGGED_PATH_MAX - 1));
        assert_eq!(LoggedPath::new(&exact).to_string(), exact);
        let long = format!("/{}", "b".repeat(200));
        assert_eq!(
            LoggedPath::new(&long).to_string(),
            format!("{}...", &long[..LOGGED_PATH_MAX])
        );
        // A two-byte character across the limit is left out whole.
        let multibyte = format!("/{}é", "c".repeat(LOGGED_PATH_MAX - 2));
        assert_eq!(
            LoggedPath::new(&multibyte).to_string(),
            format!("/{}...", "c".repeat(LOGGED_PATH_MAX - 2))
        );
    }
}
