//! Turning configuration (and the descriptors of services hosted in-process) into a route table
//! and RPC backends.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode};
use tideway_http_upstream::{HttpUpstream, UpstreamConfig};
use tideway_rpc::{ClientConfig, ServiceDescriptor};

use crate::backends::RpcBackends;
use crate::binding::{Param, ParamKind};
use crate::config::{GatewayConfig, RouteConfig};
use crate::discovery::StaticSources;
use crate::router::{CallSettings, Fallback, Route, RouteTable, RouteTarget};

/// Ceiling of an adaptive route limit when the route sets no `max_in_flight`.
pub const DEFAULT_ADAPTIVE_CEILING: usize = 1000;

/// How long a WebSocket tunnel may carry nothing either way before it is closed, unless its
/// route says otherwise. Long enough for applications that ping every minute or so (browsers
/// send no pings of their own), short enough that abandoned tunnels do not pile up.
pub const DEFAULT_WEBSOCKET_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// Routes and backends could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AssembleError {
    /// Two routes collide.
    #[error(transparent)]
    Conflict(#[from] crate::router::RouteConflict),
    /// A route's upstream is unusable.
    #[error("routes[{index}]: {reason}")]
    Upstream {
        /// Index of the route in the config.
        index: usize,
        /// Why.
        reason: String,
    },
    /// A service's client settings are invalid.
    #[error("service {service}: {reason}")]
    Client {
        /// The service.
        service: String,
        /// Why.
        reason: String,
    },
}

/// The routes of a config file plus those of `descriptors` (services that publish their routes).
pub fn route_table(
    config: &GatewayConfig,
    descriptors: &[ServiceDescriptor],
) -> Result<RouteTable, AssembleError> {
    let mut routes: Vec<Route> = descriptors
        .iter()
        .flat_map(Route::from_descriptor)
        .collect();
    for (index, rc) in config.routes.iter().enumerate() {
        routes.extend(config_routes(index, rc, descriptors)?);
    }
    Ok(RouteTable::new(routes)?)
}

/// What a config file fixes when the gateway follows a registry: its routes (with parameter
/// kinds from `descriptors` where a hosted service declares them) and the services it lists.
pub fn static_sources(
    config: &GatewayConfig,
    descriptors: &[ServiceDescriptor],
) -> Result<StaticSources, AssembleError> {
    let mut routes = Vec::new();
    for (index, rc) in config.routes.iter().enumerate() {
        routes.extend(config_routes(index, rc, descriptors)?);
    }
    // Collisions among the file's own routes are the file's error, reported as one.
    RouteTable::new(routes.iter().cloned())?;
    Ok(StaticSources {
        routes,
        services: config.services.iter().map(|s| s.name.clone()).collect(),
        clusters: config.clusters.clone(),
    })
}

/// Most connections the gateway opens to one endpoint when it sizes the pool itself.
pub const MAX_DERIVED_CONNECTIONS_PER_ENDPOINT: usize = 16;

/// Connections to each endpoint so that `max_in_flight` concurrent calls (the gateway's global
/// limit) fit under the client's per-connection limit: one slow service may hold every call the
/// gateway admits, and a call that finds its connection full is refused at once (Overloaded).
/// Capped at [`MAX_DERIVED_CONNECTIONS_PER_ENDPOINT`]; at least 1.
pub fn connections_for(max_in_flight: usize, client: &ClientConfig) -> usize {
    max_in_flight
        .div_ceil(client.max_in_flight_per_connection.max(1))
        .clamp(1, MAX_DERIVED_CONNECTIONS_PER_ENDPOINT)
}

/// RPC clients for the `[[services]]` of a config. A service without `connections_per_endpoint`
/// gets [`connections_for`] the gateway's `max_in_flight`.
pub fn backends(
    config: &GatewayConfig,
    client: &ClientConfig,
) -> Result<RpcBackends, AssembleError> {
    let mut backends = RpcBackends::new();
    let derived = connections_for(config.server.max_in_flight, client);
    for svc in &config.services {
        let client = ClientConfig {
            connections: svc.connections_per_endpoint.unwrap_or(derived),
            ..client.clone()
        };
        let cluster = crate::discovery::cluster_config(&config.clusters, &svc.name);
        backends
            .insert_with(svc.name.clone(), &svc.endpoints, cluster, &client)
            .map_err(|e| AssembleError::Client {
                service: svc.name.clone(),
                reason: e.to_string(),
            })?;
    }
    Ok(backends)
}

fn config_routes(
    index: usize,
    rc: &RouteConfig,
    descriptors: &[ServiceDescriptor],
) -> Result<Vec<Route>, AssembleError> {
    let origin = format!("config routes[{index}]");
    let timeout: Option<Duration> = rc.timeout;
    let target = if let Some(service) = &rc.service {
        let method = rc.rpc_method.clone().unwrap_or_default();
        // Prefer the parameter kinds a hosted service declares; the config's `params` win.
        let declared = descriptors
            .iter()
            .find(|d| d.name == service)
            .and_then(|d| d.method(&method));
        let mut params: Vec<Param> = declared
            .map(|m| {
                m.params
                    .iter()
                    .map(|p| Param {
                        name: p.name.to_owned(),
                        kind: ParamKind::from_rust_type(p.rust_type),
                        body: p.body,
                        schema: p.schema.map(|schema| schema()),
                    })
                    .collect()
            })
            .unwrap_or_default();
        for (name, kind) in &rc.params {
            match params.iter_mut().find(|p| &p.name == name) {
                Some(p) => p.kind = *kind,
                None => params.push(Param {
                    name: name.clone(),
                    kind: *kind,
                    body: false,
                    schema: None,
                }),
            }
        }
        if let Some(body) = &rc.body {
            match params.iter_mut().find(|p| &p.name == body) {
                Some(p) => p.body = true,
                None => params.push(Param {
                    name: body.clone(),
                    kind: ParamKind::String,
                    body: true,
                    schema: None,
                }),
            }
        }
        RouteTarget::Rpc {
            service: service.clone(),
            full_name: format!("{service}/{method}"),
            params,
        }
    } else {
        let base_url = rc.upstream.clone().unwrap_or_default();
        let mut upstream_config = UpstreamConfig::new(base_url);
        upstream_config.preserve_host = rc.preserve_host;
        if let Some(max_idle) = rc.upstream_max_idle {
            upstream_config.pool_max_idle_per_host = max_idle;
        }
        if let Some(idle) = rc.upstream_body_idle_timeout {
            upstream_config.body_idle_timeout = idle;
        }
        let upstream = HttpUpstream::new(upstream_config).map_err(|e| AssembleError::Upstream {
            index,
            reason: e.to_string(),
        })?;
        RouteTarget::Http {
            upstream,
            strip_prefix: rc.strip_prefix.clone(),
            websocket_idle_timeout: rc.websocket.unwrap_or(true).then_some(
                rc.websocket_idle_timeout
                    .unwrap_or(DEFAULT_WEBSOCKET_IDLE_TIMEOUT),
            ),
        }
    };
    let is_rpc = matches!(target, RouteTarget::Rpc { .. });
    // One limit shared by all methods of the route.
    let limit = if rc.adaptive_concurrency {
        Some(crate::router::ConcurrencyLimit::adaptive(
            rc.max_in_flight.unwrap_or(DEFAULT_ADAPTIVE_CEILING),
        ))
    } else {
        rc.max_in_flight.map(crate::router::ConcurrencyLimit::new)
    };
    let fallback = match &rc.fallback {
        None => None,
        Some(f) => Some(Fallback {
            status: StatusCode::from_u16(f.status).map_err(|_| AssembleError::Upstream {
                index,
                reason: format!("fallback status {} is not an HTTP status", f.status),
            })?,
            body: Bytes::from(serde_json::to_vec(&f.body).unwrap_or_default()),
            content_type: HeaderValue::from_static("application/json"),
        }),
    };
    let methods: Vec<Option<Method>> = if rc.methods.is_empty() {
        vec![is_rpc.then_some(Method::GET)]
    } else {
        rc.methods
            .iter()
            .map(|m| {
                if m == "*" {
                    None
                } else {
                    Method::from_bytes(m.to_ascii_uppercase().as_bytes()).ok()
                }
            })
            .collect()
    };
    Ok(methods
        .into_iter()
        .map(|method| Route {
            call: CallSettings {
                idempotent: rc
                    .idempotent
                    .unwrap_or_else(|| CallSettings::for_method(method.as_ref()).idempotent),
                balancer: rc.balancer.clone(),
                fallback: fallback.clone(),
            },
            method,
            path: rc.path.clone(),
            timeout,
            target: target.clone(),
            origin: origin.clone(),
            limit: limit.clone(),
        })
        .collect())
}
