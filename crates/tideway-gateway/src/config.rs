//! Gateway configuration: TOML, with every key defaulted, environment overrides, and validation
//! that reports every problem with its location rather than stopping at the first.
//!
//! ```toml
//! [server]
//! listen = "127.0.0.1:8080"
//! max_body_bytes = 1048576
//! request_timeout = "10s"
//!
//! [[services]]                  # where RPC services run (until a registry is configured)
//! name = "logistics.Pricing"
//! endpoints = ["127.0.0.1:7070"]
//!
//! [[routes]]                    # an RPC route
//! methods = ["GET"]
//! path = "/api/rates/{from_zone}/{to_zone}"
//! service = "logistics.Pricing"
//! rpc_method = "quote"
//! params = { from_zone = "integer", to_zone = "integer" }
//!
//! [[routes]]                    # an HTTP upstream route
//! path = "/legacy/{*rest}"
//! upstream = "http://127.0.0.1:9000"
//! strip_prefix = "/legacy"
//! ```
//!
//! Environment variables `TIDEWAY__<SECTION>__<KEY>` override keys of tables (for example
//! `TIDEWAY__SERVER__LISTEN=0.0.0.0:8080`); the value is read as a TOML value when it parses as
//! one, else as a string.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::binding::ParamKind;

/// Listen address of the demo and of a config without one.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Open client connections; more are answered 503 and closed.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Connections the kernel queues for the accept loop. std and mio use 128, which drops SYNs
/// (and costs clients a 1 s retransmit) when a burst of a few hundred clients connects at once;
/// nginx uses 511. The kernel caps it at `net.core.somaxconn`.
pub const DEFAULT_LISTEN_BACKLOG: u32 = 4096;
/// Requests the gateway serves at once; more are answered 503 at once (ARCHITECTURE.md: 10,000
/// then shed).
pub const DEFAULT_MAX_IN_FLIGHT: usize = 10_000;
/// Whole-header read deadline: a client must send a complete request head within this time of
/// its first byte (slowloris defence; hyper and pingora use the same idea).
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// An idle keep-alive connection is closed after this long.
pub const DEFAULT_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest request head (request line and headers), in bytes.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 16 * 1024;
/// Largest request body buffered for an RPC route (nginx's `client_max_body_size` is 1 MiB).
/// Larger bodies get 413. HTTP upstream routes stream and are not buffered.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;
/// Deadline of a request when its route sets none (tarpc's 10 s).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Concurrent streams per HTTP/2 connection.
pub const DEFAULT_H2_MAX_CONCURRENT_STREAMS: u32 = 100;
/// A budget below this cannot hold the gateway's own baseline.
const MIN_MEMORY_BUDGET: u64 = 16 << 20;
/// hyper refuses head buffers below 8 KiB.
const MIN_HEADER_BYTES: usize = 8 * 1024;
/// No single request body above 1 GiB is ever buffered.
const MAX_BODY_BYTES_CEILING: usize = 1024 * 1024 * 1024;

/// The whole configuration file.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    /// The HTTP listener and its limits.
    pub server: ServerSettings,
    /// Where RPC services run.
    pub services: Vec<ServiceEndpoints>,
    /// Routes defined here, besides those services publish.
    pub routes: Vec<RouteConfig>,
    /// Where services register and publish their routes (`[registry]`); none: only
    /// `[[services]]` and `[[routes]]`.
    pub registry: Option<tideway_registry::RegistryConfig>,
    /// Load balancing, health, breakers and retries per service (`[clusters.NAME]`), with
    /// `[clusters.default]` for services without their own.
    pub clusters: BTreeMap<String, tideway_cluster::ClusterConfig>,
    /// Edge security (`[edge]`): JWT keys, API keys, trusted proxies, token issuer, Redis.
    pub edge: Option<tideway_edge::EdgeConfig>,
    /// Policies per route (`[route_policies."GET /path"]`, `[route_policies."/path"]`,
    /// `[route_policies.default]`): auth, IP rules, rate limit, CORS.
    pub route_policies: BTreeMap<String, tideway_edge::RoutePolicyConfig>,
    /// Tracing over OTLP and access logs (`[observability.tracing]`,
    /// `[observability.access_log]`); both off by default.
    pub observability: tideway_observe::ObservabilityConfig,
}

/// The HTTP listener and its limits.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSettings {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Accept queue length of the listener.
    pub listen_backlog: u32,
    /// Runtime worker threads; 0 means one per CPU core.
    pub worker_threads: usize,
    /// Open client connections at most.
    pub max_connections: usize,
    /// Requests served at once at most; more get 503 + Retry-After without waiting.
    pub max_in_flight: usize,
    /// Whole-header read deadline.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Idle keep-alive connections are closed after this.
    #[serde(with = "humantime_serde")]
    pub keep_alive_timeout: Duration,
    /// Largest request head in bytes.
    pub max_header_bytes: usize,
    /// Largest buffered request body in bytes (RPC routes); larger is 413.
    pub max_body_bytes: usize,
    /// Deadline of requests whose route sets none.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Concurrent streams per HTTP/2 connection.
    pub http2_max_concurrent_streams: u32,
    /// Serve the common HTTP/1.1 request with the gateway's own reader and writer (no buffer
    /// held while a request waits); `false` leaves every request to hyper.
    pub http1_fast_path: bool,
    /// TLS: serve HTTPS (HTTP/1.1 and HTTP/2 by ALPN) with this certificate.
    pub tls: Option<TlsSettings>,
    /// Address of the admin listener (`/metrics`, `/healthz`, `/readyz`); none when unset.
    pub admin_listen: Option<SocketAddr>,
    /// Bearer token the admin listener requires (`Authorization: Bearer ...`). Required when
    /// `admin_listen` is not a loopback address; optional on loopback. Serialized (in
    /// `/admin/config`) as `"<redacted>"`.
    #[serde(serialize_with = "tideway_edge::serialize_redacted_option")]
    pub admin_token: Option<String>,
    /// Memory budget in bytes (`"256MiB"` or a number); above 90% of it new requests are
    /// refused, above 80% idle connections are closed. None: no budget.
    #[serde(deserialize_with = "deserialize_size")]
    pub max_memory: Option<u64>,
}

fn deserialize_size<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Bytes(u64),
        Text(String),
    }
    match Size::deserialize(d)? {
        Size::Bytes(n) => Ok(Some(n)),
        Size::Text(t) => crate::overload::parse_size(&t)
            .map(Some)
            .map_err(serde::de::Error::custom),
    }
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            listen: DEFAULT_LISTEN.parse().expect("valid default address"),
            listen_backlog: DEFAULT_LISTEN_BACKLOG,
            worker_threads: 0,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            keep_alive_timeout: DEFAULT_KEEP_ALIVE_TIMEOUT,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            http2_max_concurrent_streams: DEFAULT_H2_MAX_CONCURRENT_STREAMS,
            http1_fast_path: true,
            tls: None,
            admin_listen: None,
            admin_token: None,
            max_memory: None,
        }
    }
}

/// Certificate and key files (PEM).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// Certificate chain, PEM.
    pub cert: PathBuf,
    /// Private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Endpoints of one RPC service.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceEndpoints {
    /// Service name, e.g. `logistics.Waybills`.
    pub name: String,
    /// `host:port` of its instances; calls are spread round-robin.
    pub endpoints: Vec<SocketAddr>,
    /// Connections to each endpoint; by default enough for `server.max_in_flight` concurrent
    /// calls (see [`crate::assemble::connections_for`]).
    #[serde(default)]
    pub connections_per_endpoint: Option<usize>,
}

/// A route from the config file: either an RPC route (`service` and `rpc_method`) or an HTTP
/// upstream route (`upstream`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Path template: `{name}` parameters, a trailing `{*rest}` catch-all.
    pub path: String,
    /// HTTP methods; empty means `GET` for RPC routes and any method for upstream routes.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Deadline for this route.
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    /// RPC service to call.
    pub service: Option<String>,
    /// Method of that service (its short name).
    pub rpc_method: Option<String>,
    /// How to type path and query parameters (`string`, `integer`, `number`, `boolean`);
    /// untyped ones are strings.
    #[serde(default)]
    pub params: BTreeMap<String, ParamKind>,
    /// Name of an argument that is the whole JSON body object.
    pub body: Option<String>,
    /// Base URL of an HTTP upstream, e.g. `http://127.0.0.1:9000/base`.
    pub upstream: Option<String>,
    /// Removed from the front of the request path before it is appended to the upstream URL.
    pub strip_prefix: Option<String>,
    /// Send the client's `Host` to the upstream instead of the upstream's.
    #[serde(default)]
    pub preserve_host: bool,
    /// Requests this route serves at once; more get 503 + Retry-After without waiting. With
    /// `adaptive_concurrency` it is the ceiling of the adaptive limit.
    pub max_in_flight: Option<usize>,
    /// Let the route's limit follow its backend's latency (a gradient controller).
    #[serde(default)]
    pub adaptive_concurrency: bool,
    /// Idle keep-alive connections kept to the upstream.
    pub upstream_max_idle: Option<usize>,
    /// Longest wait for the next bytes of the upstream's response body (default 60 s); past
    /// it the response is cut off and the upstream connection closed.
    #[serde(default, with = "humantime_serde")]
    pub upstream_body_idle_timeout: Option<Duration>,
    /// Pass WebSocket handshakes on to the upstream and splice the two connections when it
    /// accepts (default `true`). `false`: `Upgrade` is removed like any hop-by-hop field.
    pub websocket: Option<bool>,
    /// How long a WebSocket tunnel may carry nothing either way before it is closed (default
    /// 5 min; noticed within twice this).
    #[serde(default, with = "humantime_serde")]
    pub websocket_idle_timeout: Option<Duration>,
    /// The RPC calls may be repeated (retried after a lost connection, hedged); default: `true`
    /// for GET-only routes.
    pub idempotent: Option<bool>,
    /// A balancer for this route's calls instead of its service's (e.g. consistent hashing on a
    /// parameter): `"round_robin"`, or `{ kind = "consistent_hash", key = { param = "id" } }`.
    pub balancer: Option<tideway_cluster::Balancer>,
    /// Answered when every attempt of a call failed.
    pub fallback: Option<FallbackConfig>,
}

/// A route's canned answer for when its service cannot give one.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FallbackConfig {
    /// Its status (default 200).
    #[serde(default = "ok_status")]
    pub status: u16,
    /// Its body: a JSON value, written in TOML.
    pub body: serde_json::Value,
}

fn ok_status() -> u16 {
    200
}

/// One problem found in a configuration, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    /// Key path, e.g. `routes[2].upstream`.
    pub path: String,
    /// 1-based line in the file, when known.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "line {line}: {}: {}", self.path, self.message),
            None => write!(f, "{}: {}", self.path, self.message),
        }
    }
}

/// A configuration that cannot be used: every problem found.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{} problem(s) in {source_name}:\n{}", issues.len(), issues.iter().map(|i| format!("  {i}")).collect::<Vec<_>>().join("\n"))]
pub struct ConfigError {
    /// File name or `<inline>`.
    pub source_name: String,
    /// The problems, in file order where known.
    pub issues: Vec<ConfigIssue>,
}

impl GatewayConfig {
    /// Reads, overrides from the environment, and validates a config file.
    pub fn load(path: &Path) -> Result<GatewayConfig, ConfigError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            source_name: name.clone(),
            issues: vec![ConfigIssue {
                path: String::new(),
                line: None,
                message: format!("cannot read file: {e}"),
            }],
        })?;
        Self::parse(&text, &name, std::env::vars())
    }

    /// Parses config text, applying `TIDEWAY__...` overrides from `env`, and validates it.
    pub fn parse(
        text: &str,
        source_name: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<GatewayConfig, ConfigError> {
        let fail = |issues: Vec<ConfigIssue>| ConfigError {
            source_name: source_name.to_owned(),
            issues,
        };
        let mut table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            let line = e.span().map(|s| line_of(text, s.start));
            fail(vec![ConfigIssue {
                path: String::new(),
                line,
                message: e.message().to_owned(),
            }])
        })?;
        let mut issues = apply_env_overrides(&mut table, env);
        let locator = Locator::new(text);

        // Each part is read on its own so one bad route does not hide problems in another.
        let mut config = GatewayConfig::default();
        for (key, value) in &table {
            match key.as_str() {
                "server" => match value.clone().try_into::<ServerSettings>() {
                    Ok(server) => config.server = server,
                    Err(e) => issues.push(locator.issue("server", e.message())),
                },
                "services" | "routes" => {
                    let Some(items) = value.as_array() else {
                        issues.push(locator.issue(key, "must be an array of tables ([[...]])"));
                        continue;
                    };
                    for (i, item) in items.iter().enumerate() {
                        let path = format!("{key}[{i}]");
                        if key == "services" {
                            match item.clone().try_into::<ServiceEndpoints>() {
                                Ok(s) => config.services.push(s),
                                Err(e) => issues.push(locator.issue(&path, e.message())),
                            }
                        } else {
                            match item.clone().try_into::<RouteConfig>() {
                                Ok(r) => config.routes.push(r),
                                Err(e) => issues.push(locator.issue(&path, e.message())),
                            }
                        }
                    }
                }
                "clusters" => {
                    let Some(table) = value.as_table() else {
                        issues
                            .push(locator.issue(key, "must be a table of [clusters.NAME] tables"));
                        continue;
                    };
                    for (name, item) in table {
                        let path = format!("clusters.{name}");
                        match item.clone().try_into::<tideway_cluster::ClusterConfig>() {
                            Ok(c) => {
                                config.clusters.insert(name.clone(), c);
                            }
                            Err(e) => issues.push(locator.issue(&path, e.message())),
                        }
                    }
                }
                "edge" => match value.clone().try_into::<tideway_edge::EdgeConfig>() {
                    Ok(edge) => config.edge = Some(edge),
                    Err(e) => issues.push(locator.issue("edge", e.message())),
                },
                "route_policies" => {
                    let Some(table) = value.as_table() else {
                        issues.push(
                            locator
                                .issue(key, "must be a table of [route_policies.\"ROUTE\"] tables"),
                        );
                        continue;
                    };
                    for (name, item) in table {
                        match item.clone().try_into::<tideway_edge::RoutePolicyConfig>() {
                            Ok(p) => {
                                config.route_policies.insert(name.clone(), p);
                            }
                            Err(e) => issues.push(
                                locator.issue(&format!("route_policies.{name}"), e.message()),
                            ),
                        }
                    }
                }
                "observability" => {
                    match value
                        .clone()
                        .try_into::<tideway_observe::ObservabilityConfig>()
                    {
                        Ok(o) => config.observability = o,
                        Err(e) => issues.push(locator.issue("observability", e.message())),
                    }
                }
                "registry" => match value.clone().try_into::<tideway_registry::RegistryConfig>() {
                    Ok(registry) => config.registry = Some(registry),
                    Err(e) => issues.push(locator.issue("registry", e.message())),
                },
                other => issues.push(locator.issue(other, "unknown section")),
            }
        }
        if issues.is_empty() {
            issues.extend(
                config
                    .validate()
                    .into_iter()
                    .map(|(path, message)| locator.issue(&path, &message)),
            );
        }
        if issues.is_empty() {
            Ok(config)
        } else {
            issues.sort_by_key(|i| i.line.unwrap_or(usize::MAX));
            Err(fail(issues))
        }
    }

    /// Semantic checks; returns `(key path, message)` for every problem.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut out = self.observability.validate();
        if let Some(Err(e)) = self.registry.as_ref().map(|r| r.validate()) {
            out.push(("registry".to_owned(), e.to_string()));
        }
        match &self.edge {
            Some(edge) => {
                for (path, message) in edge.validate() {
                    out.push((format!("edge.{path}"), message));
                }
                for (name, policy) in &self.route_policies {
                    for (path, message) in edge.validate_route(policy) {
                        out.push((format!("route_policies.{name}.{path}"), message));
                    }
                }
            }
            None if !self.route_policies.is_empty() => {
                let empty = tideway_edge::EdgeConfig::default();
                for (name, policy) in &self.route_policies {
                    for (path, message) in empty.validate_route(policy) {
                        out.push((format!("route_policies.{name}.{path}"), message));
                    }
                }
            }
            None => {}
        }
        for (name, cluster) in &self.clusters {
            if let Err(e) = cluster.validate() {
                out.push((format!("clusters.{name}"), e.to_string()));
            }
        }
        let s = &self.server;
        if let Some(addr) = s.admin_listen
            && !addr.ip().is_loopback()
            && s.admin_token.as_deref().is_none_or(str::is_empty)
        {
            out.push((
                "server.admin_token".to_owned(),
                format!("the admin listener on {addr} is not on loopback: set admin_token (it exposes metrics, routes and the services behind the gateway)"),
            ));
        }
        if s.admin_token.as_ref().is_some_and(|t| t.len() < 16) {
            out.push((
                "server.admin_token".to_owned(),
                "must be at least 16 characters".to_owned(),
            ));
        }
        let mut check = |ok: bool, path: &str, message: String| {
            if !ok {
                out.push((path.to_owned(), message));
            }
        };
        check(
            s.max_connections > 0,
            "server.max_connections",
            "must be at least 1".into(),
        );
        if let Some(budget) = s.max_memory {
            check(
                budget >= MIN_MEMORY_BUDGET,
                "server.max_memory",
                format!("must be at least {} MiB", MIN_MEMORY_BUDGET >> 20),
            );
        }
        check(
            s.listen_backlog > 0,
            "server.listen_backlog",
            "must be at least 1".into(),
        );
        check(
            s.max_in_flight > 0,
            "server.max_in_flight",
            "must be at least 1".into(),
        );
        check(
            !s.header_read_timeout.is_zero(),
            "server.header_read_timeout",
            "must be longer than zero".into(),
        );
        check(
            !s.keep_alive_timeout.is_zero(),
            "server.keep_alive_timeout",
            "must be longer than zero".into(),
        );
        check(
            !s.request_timeout.is_zero(),
            "server.request_timeout",
            "must be longer than zero".into(),
        );
        check(
            s.max_header_bytes >= MIN_HEADER_BYTES,
            "server.max_header_bytes",
            format!("must be at least {MIN_HEADER_BYTES}"),
        );
        check(
            (1..=MAX_BODY_BYTES_CEILING).contains(&s.max_body_bytes),
            "server.max_body_bytes",
            format!("must be between 1 and {MAX_BODY_BYTES_CEILING}"),
        );
        check(
            s.http2_max_concurrent_streams > 0,
            "server.http2_max_concurrent_streams",
            "must be at least 1".into(),
        );
        if let Some(tls) = &s.tls {
            check(
                tls.cert.is_file(),
                "server.tls.cert",
                format!("{} is not a readable file", tls.cert.display()),
            );
            check(
                tls.key.is_file(),
                "server.tls.key",
                format!("{} is not a readable file", tls.key.display()),
            );
        }
        for (i, svc) in self.services.iter().enumerate() {
            let p = format!("services[{i}]");
            check(
                !svc.name.is_empty(),
                &format!("{p}.name"),
                "must not be empty".into(),
            );
            check(
                !svc.endpoints.is_empty(),
                &format!("{p}.endpoints"),
                "must list at least one host:port".into(),
            );
            check(
                svc.connections_per_endpoint != Some(0),
                &format!("{p}.connections_per_endpoint"),
                "must be at least 1".into(),
            );
        }
        for (i, route) in self.routes.iter().enumerate() {
            let p = format!("routes[{i}]");
            if route.max_in_flight == Some(0) {
                check(
                    false,
                    &format!("{p}.max_in_flight"),
                    "must be at least 1".into(),
                );
            }
            if !route.path.starts_with('/') {
                check(false, &format!("{p}.path"), "must start with '/'".into());
            }
            for m in &route.methods {
                if m != "*" && http::Method::from_bytes(m.as_bytes()).is_err() {
                    check(
                        false,
                        &format!("{p}.methods"),
                        format!("{m:?} is not an HTTP method"),
                    );
                }
            }
            match (&route.service, &route.upstream) {
                (Some(service), None) => {
                    if route.rpc_method.as_deref().unwrap_or("").is_empty() {
                        check(
                            false,
                            &format!("{p}.rpc_method"),
                            "an RPC route needs rpc_method".into(),
                        );
                    }
                    // With a registry, a service may be known only from it.
                    if self.registry.is_none() && !self.services.iter().any(|s| &s.name == service)
                    {
                        check(
                            false,
                            &format!("{p}.service"),
                            format!(
                                "no [[services]] entry named {service:?} (and no [registry] to learn it from)"
                            ),
                        );
                    }
                }
                (None, Some(upstream)) => {
                    if let Err(e) = upstream
                        .parse::<http::Uri>()
                        .map_err(|e| e.to_string())
                        .and_then(|u| {
                            if u.scheme_str() == Some("http") && u.authority().is_some() {
                                Ok(())
                            } else {
                                Err("must be an absolute http:// URL".into())
                            }
                        })
                    {
                        check(false, &format!("{p}.upstream"), e);
                    }
                    if route.websocket_idle_timeout == Some(Duration::ZERO) {
                        check(
                            false,
                            &format!("{p}.websocket_idle_timeout"),
                            "must be more than zero".into(),
                        );
                    }
                    if let Some(prefix) = &route.strip_prefix
                        && !route.path.starts_with(prefix.as_str())
                    {
                        check(
                            false,
                            &format!("{p}.strip_prefix"),
                            format!("{prefix:?} is not a prefix of the path"),
                        );
                    }
                }
                (Some(_), Some(_)) => check(
                    false,
                    &p,
                    "set either service (an RPC route) or upstream (an HTTP route), not both"
                        .into(),
                ),
                (None, None) => check(
                    false,
                    &p,
                    "needs a target: service + rpc_method, or upstream".into(),
                ),
            }
        }
        out
    }
}

/// Applies `TIDEWAY__A__B=value` to `table["a"]["b"]`.
fn apply_env_overrides(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Vec<ConfigIssue> {
    let mut issues = Vec::new();
    for (name, raw) in env {
        let Some(rest) = name.strip_prefix("TIDEWAY__") else {
            continue;
        };
        let keys: Vec<String> = rest.split("__").map(|k| k.to_ascii_lowercase()).collect();
        if keys.iter().any(String::is_empty) {
            continue;
        }
        let value = format!("v = {raw}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(raw.clone()));
        if !set_path(table, &keys, value) {
            issues.push(ConfigIssue {
                path: keys.join("."),
                line: None,
                message: format!("environment variable {name} names a key inside a non-table"),
            });
        }
    }
    issues
}

/// Sets `keys` (a path of table keys) to `value`, creating tables on the way; `false` when a
/// key on the way holds something other than a table.
fn set_path(table: &mut toml::Table, keys: &[String], value: toml::Value) -> bool {
    match keys {
        [] => false,
        [last] => {
            table.insert(last.clone(), value);
            true
        }
        [first, rest @ ..] => match table
            .entry(first.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        {
            toml::Value::Table(inner) => set_path(inner, rest, value),
            _ => false,
        },
    }
}

/// Finds the line of a key path in the source text, for messages. Understands `[table]`,
/// `[[array]]` headers and `key =` lines, which is what a gateway config uses.
struct Locator<'a> {
    text: &'a str,
}

impl<'a> Locator<'a> {
    fn new(text: &'a str) -> Self {
        Locator { text }
    }

    fn issue(&self, path: &str, message: &str) -> ConfigIssue {
        ConfigIssue {
            path: path.to_owned(),
            line: self.line_of(path, message),
            message: message.trim().to_owned(),
        }
    }

    fn line_of(&self, path: &str, message: &str) -> Option<usize> {
        let (section, index, key) = split_path(path);
        let lines: Vec<&str> = self.text.lines().collect();
        // Start of the section: the Nth `[[section]]` or the `[section]` header.
        let mut start = None;
        let mut seen = 0;
        for (n, line) in lines.iter().enumerate() {
            let t = line.trim();
            let header = match index {
                Some(_) => t == format!("[[{section}]]"),
                None => t == format!("[{section}]"),
            };
            if header {
                if index.is_none_or(|i| i == seen) {
                    start = Some(n);
                    break;
                }
                seen += 1;
            }
        }
        let start = start?;
        // The key named in the path, or failing that a key that serde's message quotes.
        let wanted = key
            .map(str::to_owned)
            .or_else(|| message.split('`').nth(1).map(str::to_owned));
        if let Some(wanted) = wanted {
            for (n, line) in lines.iter().enumerate().skip(start + 1) {
                let t = line.trim_start();
                if t.starts_with('[') {
                    break;
                }
                if let Some((k, _)) = t.split_once('=')
                    && k.trim() == wanted
                {
                    return Some(n + 1);
                }
            }
        }
        Some(start + 1)
    }
}

/// `routes[2].upstream` -> (`routes`, Some(2), Some(`upstream`)).
fn split_path(path: &str) -> (&str, Option<usize>, Option<&str>) {
    let (head, key) = match path.split_once('.') {
        Some((h, k)) => (h, Some(k.split('.').next().unwrap_or(k))),
        None => (path, None),
    };
    match head.split_once('[') {
        Some((section, rest)) => (section, rest.trim_end_matches(']').parse().ok(), key),
        None => (head, None, key),
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<GatewayConfig, ConfigError> {
        GatewayConfig::parse(text, "test.toml", Vec::new())
    }

    #[test]
    fn empty_config_is_all_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.server.listen, DEFAULT_LISTEN.parse().unwrap());
        assert_eq!(c.server.max_body_bytes, DEFAULT_MAX_BODY_BYTES);
    }

    #[test]
    fn full_config_parses() {
        let c = parse(
            r#"
[server]
listen = "127.0.0.1:9999"
request_timeout = "2s"

[[services]]
name = "logistics.Pricing"
endpoints = ["127.0.0.1:7070"]

[[routes]]
methods = ["GET"]
path = "/api/rates/{from_zone}"
service = "logistics.Pricing"
rpc_method = "quote"
params = { from_zone = "integer" }

[[routes]]
path = "/legacy/{*rest}"
upstream = "http://127.0.0.1:9000/base"
strip_prefix = "/legacy"
websocket_idle_timeout = "90s"

[[routes]]
path = "/files/{*rest}"
upstream = "http://127.0.0.1:9001"
websocket = false
"#,
        )
        .unwrap();
        assert_eq!(c.server.request_timeout, Duration::from_secs(2));
        assert_eq!(c.routes.len(), 3);
        assert_eq!(c.routes[0].params["from_zone"], ParamKind::Integer);
        assert_eq!(
            c.routes[1].websocket_idle_timeout,
            Some(Duration::from_secs(90))
        );
        assert_eq!(c.routes[1].websocket, None);
        assert_eq!(c.routes[2].websocket, Some(false));
    }

    #[test]
    fn a_websocket_idle_timeout_of_zero_is_refused() {
        let err = parse(
            r#"[[routes]]
path = "/ws/{*rest}"
upstream = "http://127.0.0.1:9000"
websocket_idle_timeout = "0s"
"#,
        )
        .unwrap_err();
        assert_eq!(err.issues.len(), 1, "{err}");
        assert_eq!(err.issues[0].path, "routes[0].websocket_idle_timeout");
        assert_eq!(err.issues[0].line, Some(4), "{err}");
    }

    #[test]
    fn every_problem_is_reported_with_its_line() {
        let err = parse(
            r#"[server]
listen = "127.0.0.1:8080"
max_body_bytes = 0

[[routes]]
path = "/a"
upstream = "ftp://x"

[[routes]]
path = "b"
service = "nope"
rpc_method = "m"

[[routes]]
path = "/c"
colour = "blue"
"#,
        )
        .unwrap_err();
        let text = err.to_string();
        assert_eq!(err.issues.len(), 1, "{text}");
        // Unknown key in routes[2] is a parse problem; fixing it reveals the semantic ones.
        assert_eq!(err.issues[0].path, "routes[2]");
        assert_eq!(err.issues[0].line, Some(16), "{text}");

        let err = parse(
            r#"[server]
max_body_bytes = 0

[[routes]]
path = "/a"
upstream = "ftp://x"

[[routes]]
path = "b"
service = "nope"
rpc_method = "m"
"#,
        )
        .unwrap_err();
        let found: Vec<(String, Option<usize>)> = err
            .issues
            .iter()
            .map(|i| (i.path.clone(), i.line))
            .collect();
        assert_eq!(
            found,
            vec![
                ("server.max_body_bytes".into(), Some(2)),
                ("routes[0].upstream".into(), Some(6)),
                ("routes[1].path".into(), Some(9)),
                ("routes[1].service".into(), Some(10)),
            ],
            "{err}"
        );
    }

    #[test]
    fn syntax_errors_have_a_line() {
        let err = parse("[server]\nlisten = \n").unwrap_err();
        assert_eq!(err.issues[0].line, Some(2), "{err}");
    }

    #[test]
    fn environment_overrides_keys() {
        let c = GatewayConfig::parse(
            "[server]\nlisten = \"127.0.0.1:1\"\n",
            "t",
            vec![
                ("TIDEWAY__SERVER__LISTEN".into(), "127.0.0.1:2".into()),
                ("TIDEWAY__SERVER__MAX_CONNECTIONS".into(), "7".into()),
                ("UNRELATED".into(), "x".into()),
            ],
        )
        .unwrap();
        assert_eq!(c.server.listen, "127.0.0.1:2".parse().unwrap());
        assert_eq!(c.server.max_connections, 7);
    }
}
