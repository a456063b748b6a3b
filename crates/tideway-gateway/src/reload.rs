//! Config reload: a new generation of routes, services, cluster settings and edge policies is
//! built from a config file and swapped in, without dropping a connection.
//!
//! What a generation owns is released when the last request using it ends: route tables and
//! their per-route limits and metric handles, clusters of services that changed (their clients
//! drain and close), edge policies (their key-reload and pruning tasks stop, their limiter
//! state goes). What stays the same is kept, not rebuilt: a service whose cluster and client
//! settings are unchanged keeps its cluster (connections, latency estimates, health, breakers)
//! and only its endpoint list is updated; rate-limit buckets with the same name and limit keep
//! their counts (see `tideway-edge`).
//!
//! Settings of the listener itself (`[server]`: addresses, limits, TLS) need a restart; a
//! reload that changes them applies the rest and reports those keys.
//!
//! When the gateway follows a registry, the new generation goes to the discovery task, which
//! rebuilds the route table from the new config routes and the routes services publish: one
//! writer of the route table and backends at all times.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tideway_cluster::Cluster;
use tideway_rpc::ClientConfig;
use tokio::sync::{mpsc, oneshot};

use crate::assemble::{self, AssembleError};
use crate::backends::{RpcBackends, static_endpoints};
use crate::config::{GatewayConfig, ServerSettings};
use crate::discovery::{StaticSources, cluster_config};
use crate::edge::EdgePolicies;
use crate::handler::GatewayState;
use crate::router::RouteTable;

/// How long a reload waits for the discovery task to apply it.
const APPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// Metric: reloads by result (`ok`, `error`).
pub const RELOADS_TOTAL: &str = "tideway_config_reloads_total";

/// Why a reload was refused; the running generation stays in place.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReloadError {
    /// Routes or services could not be built.
    #[error(transparent)]
    Assemble(#[from] AssembleError),
    /// The edge policies could not be built.
    #[error("edge policies: {0}")]
    Edge(String),
    /// A service's cluster settings are invalid.
    #[error("service {service}: {reason}")]
    Cluster {
        /// The service.
        service: String,
        /// Why.
        reason: String,
    },
    /// The discovery task did not take the new generation in time (or has stopped).
    #[error("the registry follower did not apply the new config")]
    NotApplied,
}

/// What a reload changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ReloadOutcome {
    /// Routes from the config file in the new generation.
    pub config_routes: usize,
    /// Config services whose cluster was kept (only their endpoints updated).
    pub services_kept: usize,
    /// Config services with a new cluster (new, or their settings changed).
    pub services_rebuilt: usize,
    /// Whether edge policies are on in the new generation.
    pub edge: bool,
    /// `[server]` keys that changed but need a restart to apply.
    pub needs_restart: Vec<&'static str>,
}

/// A new generation for the registry follower: the config's routes and cluster settings, and
/// the clusters of the services the config lists.
pub(crate) struct Reconfigure {
    pub(crate) sources: StaticSources,
    pub(crate) static_clusters: BTreeMap<String, Arc<Cluster>>,
    pub(crate) applied: oneshot::Sender<()>,
}

/// Channel to the registry follower, when there is one.
pub(crate) type FollowerLink = mpsc::Sender<Reconfigure>;

/// Builds the generation of `config` and swaps it into `state`. `client` is the RPC client
/// template (its `connections` is derived per service as at start).
pub(crate) async fn reload(
    state: &GatewayState,
    follower: Option<&FollowerLink>,
    config: &GatewayConfig,
    client: &ClientConfig,
) -> Result<ReloadOutcome, ReloadError> {
    let result = build_and_swap(state, follower, config, client).await;
    let label = if result.is_ok() { "ok" } else { "error" };
    metrics::counter!(RELOADS_TOTAL, "result" => label).increment(1);
    match &result {
        Ok(outcome) => {
            tracing::info!(?outcome, "config reloaded");
            if !outcome.needs_restart.is_empty() {
                tracing::warn!(keys = ?outcome.needs_restart, "these [server] settings changed; they apply after a restart");
            }
        }
        Err(e) => tracing::warn!(error = %e, "config reload refused; the running config stays"),
    }
    result
}

/// Counts and logs a reload refused before it reached the gateway (the file could not be
/// read or parsed).
pub fn refused(error: &str) {
    metrics::counter!(RELOADS_TOTAL, "result" => "error").increment(1);
    tracing::warn!(error, "config reload refused; the running config stays");
}

async fn build_and_swap(
    state: &GatewayState,
    follower: Option<&FollowerLink>,
    config: &GatewayConfig,
    client: &ClientConfig,
) -> Result<ReloadOutcome, ReloadError> {
    // Everything is built before anything is swapped: a bad file changes nothing.
    let sources = assemble::static_sources(config, &[])?;
    let edge = if config.edge.is_some() || !config.route_policies.is_empty() {
        let edge_config = config.edge.clone().unwrap_or_default();
        Some(
            EdgePolicies::new(&edge_config, &config.route_policies)
                .map_err(|e| ReloadError::Edge(e.to_string()))?,
        )
    } else {
        None
    };
    let previous = state.backends.load_full();
    let derived = assemble::connections_for(state.settings.max_in_flight, client);
    let mut static_clusters = BTreeMap::new();
    let (mut kept, mut rebuilt) = (0, 0);
    for svc in &config.services {
        let client = ClientConfig {
            connections: svc.connections_per_endpoint.unwrap_or(derived),
            ..client.clone()
        };
        let settings = cluster_config(&config.clusters, &svc.name);
        let endpoints = static_endpoints(&svc.endpoints);
        let cluster = match previous.cluster(&svc.name) {
            Some(c) if c.config() == &settings && c.client_config() == &client => {
                kept += 1;
                Arc::clone(c)
            }
            _ => {
                rebuilt += 1;
                Arc::new(
                    Cluster::new(svc.name.clone(), settings, client).map_err(|e| {
                        ReloadError::Cluster {
                            service: svc.name.clone(),
                            reason: e.to_string(),
                        }
                    })?,
                )
            }
        };
        static_clusters.insert(svc.name.clone(), (cluster, endpoints));
    }
    let outcome = ReloadOutcome {
        config_routes: sources.routes.len(),
        services_kept: kept,
        services_rebuilt: rebuilt,
        edge: edge.is_some(),
        needs_restart: restart_keys(&state.settings, &config.server),
    };
    // From here on nothing can fail but the hand-over to the follower.
    let static_clusters: BTreeMap<String, Arc<Cluster>> = static_clusters
        .into_iter()
        .map(|(name, (cluster, endpoints))| {
            cluster.update_endpoints(&endpoints);
            (name, cluster)
        })
        .collect();
    match follower {
        Some(link) => {
            let (applied, done) = oneshot::channel();
            let message = Reconfigure {
                sources,
                static_clusters,
                applied,
            };
            // One deadline for queueing behind other reloads and for the apply itself.
            let handed_over = tokio::time::timeout(APPLY_TIMEOUT, async {
                link.send(message).await.ok()?;
                done.await.ok()
            })
            .await;
            if !matches!(handed_over, Ok(Some(()))) {
                return Err(ReloadError::NotApplied);
            }
        }
        None => {
            // Collisions were checked by `static_sources`.
            let table = RouteTable::new(sources.routes)
                .map_err(|e| ReloadError::Assemble(AssembleError::Conflict(e)))?;
            let mut backends = RpcBackends::new();
            for cluster in static_clusters.into_values() {
                backends.insert_cluster(cluster);
            }
            metrics::gauge!("tideway_routes").set(table.routes().len() as f64);
            state.backends.store(Arc::new(backends));
            state.routes.store(Arc::new(table));
        }
    }
    state.edge.store(edge.map(Arc::new));
    Ok(outcome)
}

/// The `[server]` keys that differ between the running settings and `new`.
fn restart_keys(running: &ServerSettings, new: &ServerSettings) -> Vec<&'static str> {
    let mut keys = Vec::new();
    let mut check = |key: &'static str, same: bool| {
        if !same {
            keys.push(key);
        }
    };
    check("listen", running.listen == new.listen);
    check(
        "listen_backlog",
        running.listen_backlog == new.listen_backlog,
    );
    check(
        "worker_threads",
        running.worker_threads == new.worker_threads,
    );
    check(
        "max_connections",
        running.max_connections == new.max_connections,
    );
    check("max_in_flight", running.max_in_flight == new.max_in_flight);
    check(
        "header_read_timeout",
        running.header_read_timeout == new.header_read_timeout,
    );
    check(
        "keep_alive_timeout",
        running.keep_alive_timeout == new.keep_alive_timeout,
    );
    check(
        "max_header_bytes",
        running.max_header_bytes == new.max_header_bytes,
    );
    check(
        "max_body_bytes",
        running.max_body_bytes == new.max_body_bytes,
    );
    check(
        "request_timeout",
        running.request_timeout == new.request_timeout,
    );
    check(
        "http2_max_concurrent_streams",
        running.http2_max_concurrent_streams == new.http2_max_concurrent_streams,
    );
    check(
        "http1_fast_path",
        running.http1_fast_path == new.http1_fast_path,
    );
    check("tls", running.tls == new.tls);
    check("admin_listen", running.admin_listen == new.admin_listen);
    check("admin_token", running.admin_token == new.admin_token);
    check("max_memory", running.max_memory == new.max_memory);
    // Any key added to ServerSettings later and not listed above still shows up here.
    if keys.is_empty() && running != new {
        keys.push("server");
    }
    keys
}

/// The config of the running generation, as `/admin/config` shows it.
#[derive(Debug)]
pub(crate) struct LiveConfig {
    /// 0: the gateway was started with its `[server]` settings only (no config given); 1: the
    /// config given at start ([`crate::Gateway::set_config`]); +1 per applied reload.
    pub(crate) generation: u64,
    /// The effective config: the file as parsed (environment overrides applied, defaults filled
    /// in), with the `[server]` settings the listener runs with and the `[observability]` it
    /// started with (a reload applies neither).
    pub(crate) config: Arc<GatewayConfig>,
    /// `[server]` keys the last reloaded file changed that wait for a restart.
    pub(crate) needs_restart: Vec<&'static str>,
}

/// The live config and the lock that makes reloads one at a time, so the config shown is the
/// one of the generation that was swapped in last.
#[derive(Debug)]
pub(crate) struct ConfigSlot {
    pub(crate) live: parking_lot::RwLock<LiveConfig>,
    reloading: tokio::sync::Mutex<()>,
}

impl ConfigSlot {
    /// Before any config is given: only the listener's settings are known.
    pub(crate) fn new(settings: &ServerSettings) -> Self {
        ConfigSlot {
            live: parking_lot::RwLock::new(LiveConfig {
                generation: 0,
                config: Arc::new(GatewayConfig {
                    server: settings.clone(),
                    ..GatewayConfig::default()
                }),
                needs_restart: Vec::new(),
            }),
            reloading: tokio::sync::Mutex::new(()),
        }
    }

    /// The config the gateway was started from; its `[server]` is replaced by `running`.
    pub(crate) fn set(&self, config: GatewayConfig, running: &ServerSettings) {
        let mut live = self.live.write();
        live.generation = 1;
        live.config = Arc::new(GatewayConfig {
            server: running.clone(),
            ..config
        });
        live.needs_restart.clear();
    }

    /// A reload of `config` was applied.
    fn reloaded(&self, config: &GatewayConfig, running: &ServerSettings, outcome: &ReloadOutcome) {
        let mut live = self.live.write();
        let observability = live.config.observability.clone();
        live.generation += 1;
        live.config = Arc::new(GatewayConfig {
            server: running.clone(),
            observability,
            ..config.clone()
        });
        live.needs_restart.clone_from(&outcome.needs_restart);
    }
}

/// Reloads a running gateway's config; cheap to clone (see [`crate::Gateway::reloader`]).
#[derive(Clone)]
pub struct Reloader {
    state: Arc<GatewayState>,
    follower: Arc<parking_lot::Mutex<Option<FollowerLink>>>,
    config: Arc<ConfigSlot>,
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader")
            .field("follows_registry", &self.follower.lock().is_some())
            .finish_non_exhaustive()
    }
}

impl Reloader {
    pub(crate) fn new(
        state: Arc<GatewayState>,
        follower: Arc<parking_lot::Mutex<Option<FollowerLink>>>,
        config: Arc<ConfigSlot>,
    ) -> Self {
        Reloader {
            state,
            follower,
            config,
        }
    }

    /// Builds the generation of `config` and swaps it in; on error the running one stays.
    /// `client` is the RPC client template, as at start. Reloads run one at a time.
    pub async fn reload(
        &self,
        config: &GatewayConfig,
        client: &ClientConfig,
    ) -> Result<ReloadOutcome, ReloadError> {
        // Held until the config shown by `/admin/config` is the one swapped in. Bounded: a
        // reload's only wait (the hand-over to the registry follower) has its deadline.
        let _one_at_a_time = self.config.reloading.lock().await;
        let link = self.follower.lock().clone();
        let outcome = reload(&self.state, link.as_ref(), config, client).await?;
        self.config.reloaded(config, &self.state.settings, &outcome);
        Ok(outcome)
    }
}

/// What the admin listener's `POST /admin/reload` (and the binary's SIGHUP handler) run: reads
/// the config file again and reloads it. Set by the binary, which knows the file.
pub type ReloadHook = Arc<
    dyn Fn() -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<ReloadOutcome, String>> + Send>,
        > + Send
        + Sync,
>;
