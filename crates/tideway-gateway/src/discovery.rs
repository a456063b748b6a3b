//! Routes and endpoints from a service registry, kept current.
//!
//! A task follows a [`Catalog`] (see `tideway-registry`). Each snapshot becomes a new route
//! table and new RPC backends, swapped in whole:
//!
//! - routes: the config file's routes first (they win a collision), then the routes each service
//!   publishes with its instances. A published route that collides is left out and logged; the
//!   others stay.
//! - backends: the services the config file lists keep their endpoints; every other service has
//!   a [`Cluster`] whose endpoint set is updated in place: an instance that stays keeps its
//!   connections, calls in flight and health state; a removed one drains (no new calls; its
//!   client closes when its last call ends); a new one joins (slow start where the balancer has
//!   it). The settings of each service's cluster come from `[clusters]`.
//!
//! When a service loses its last instance its routes stay, answering 503 (no endpoint) rather
//! than 404, so clients see a retryable outage instead of a wrong URL. Those remembered routes
//! are bounded ([`MAX_REMEMBERED_SERVICES`]). When the registry is unreachable the catalog keeps
//! its last snapshot, so the gateway keeps serving what it knew.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use http::Method;
use tideway_cluster::{Cluster, ClusterConfig, EndpointSpec};
use tideway_registry::{Catalog, CatalogSnapshot, RouteMeta};
use tideway_rpc::ClientConfig;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::backends::RpcBackends;
use crate::binding::{Param, ParamKind};
use crate::handler::GatewayState;
use crate::reload::Reconfigure;
use crate::router::{CallSettings, Route, RouteTable, RouteTarget};

/// Services that lost all their instances whose routes are still served (503).
pub const MAX_REMEMBERED_SERVICES: usize = 1024;

/// What the config file fixes, whatever the registry says.
#[derive(Debug, Clone, Default)]
pub struct StaticSources {
    /// Routes from the config file; they win over published routes that collide with them.
    pub routes: Vec<Route>,
    /// Services whose endpoints the config file lists (`[[services]]`); the registry does not
    /// change them.
    pub services: BTreeSet<String>,
    /// Cluster settings by service name, `default` for the others (`[clusters.NAME]`).
    pub clusters: BTreeMap<String, ClusterConfig>,
}

impl StaticSources {
    /// The cluster settings of `service`: its own, else `default`, else the built-in defaults.
    pub fn cluster_config(&self, service: &str) -> ClusterConfig {
        cluster_config(&self.clusters, service)
    }
}

/// The cluster settings of `service` in a `[clusters]` table: its own entry, else `default`,
/// else the built-in defaults.
pub fn cluster_config(clusters: &BTreeMap<String, ClusterConfig>, service: &str) -> ClusterConfig {
    clusters
        .get(service)
        .or_else(|| clusters.get(DEFAULT_CLUSTER))
        .cloned()
        .unwrap_or_default()
}

/// The `[clusters]` key whose settings apply to services without their own.
pub const DEFAULT_CLUSTER: &str = "default";

/// Follows `catalog` until `stop`: applies every snapshot to the gateway's state, and every
/// new config generation that arrives on `reconfigure` (see [`crate::reload`]).
pub(crate) fn spawn(
    state: Arc<GatewayState>,
    catalog: Catalog,
    sources: StaticSources,
    client: ClientConfig,
    stop: CancellationToken,
    mut reconfigure: mpsc::Receiver<Reconfigure>,
) -> tokio::task::JoinHandle<()> {
    let mut snapshots = catalog.subscribe();
    // The clusters of the services the config file lists, as the gateway started with them.
    let backends = state.backends.load_full();
    let static_clusters = sources
        .services
        .iter()
        .filter_map(|name| Some((name.clone(), Arc::clone(backends.cluster(name)?))))
        .collect();
    let mut follower = Follower {
        sources,
        static_clusters,
        client,
        remembered: Remembered::default(),
    };
    // The current state at once, so a caller that waited for the catalog to sync finds its
    // routes in place when this returns.
    let snapshot = Arc::clone(&snapshots.borrow_and_update());
    follower.apply(&state, &snapshot);
    tokio::spawn(async move {
        // The catalog's own task lives as long as this one (dropping the catalog stops it).
        let _catalog = catalog;
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                changed = snapshots.changed() => if changed.is_err() { return },
                Some(next) = reconfigure.recv() => {
                    follower.sources = next.sources;
                    follower.static_clusters = next.static_clusters;
                    let snapshot = Arc::clone(&snapshots.borrow());
                    follower.apply(&state, &snapshot);
                    let _ = next.applied.send(());
                    continue;
                }
            }
            let snapshot = Arc::clone(&snapshots.borrow_and_update());
            follower.apply(&state, &snapshot);
        }
    })
}

struct Follower {
    sources: StaticSources,
    /// Clusters of the services the config file lists; the registry does not change them.
    static_clusters: BTreeMap<String, Arc<Cluster>>,
    client: ClientConfig,
    remembered: Remembered,
}

impl Follower {
    fn apply(&mut self, state: &GatewayState, snapshot: &CatalogSnapshot) {
        // Backends first: a new route never finds its service missing. Clusters live on from
        // one snapshot to the next (their endpoints' health, connections and calls in flight);
        // only their endpoint sets change.
        let previous = state.backends.load_full();
        let mut backends = RpcBackends::new();
        for cluster in self.static_clusters.values() {
            backends.insert_cluster(Arc::clone(cluster));
        }
        let mut published: Vec<(String, Vec<RouteMeta>)> = Vec::new();
        for entry in snapshot.services() {
            let name = entry.name();
            let routes: Vec<RouteMeta> = entry.routes().into_iter().cloned().collect();
            published.push((name.to_owned(), routes));
            if self.sources.services.contains(name) {
                continue;
            }
            let specs: Vec<EndpointSpec> = entry
                .instances()
                .iter()
                .map(|i| EndpointSpec::new(i.id.clone(), i.addr).with_weight(i.weight))
                .collect();
            if let Some(cluster) = self.cluster(&previous, name) {
                cluster.update_endpoints(&specs);
                backends.insert_cluster(cluster);
            }
        }
        // Services that were published before and are gone now keep their routes.
        self.remembered.update(&published);
        for (name, routes) in self.remembered.gone() {
            published.push((name.clone(), routes.clone()));
            // No endpoints: its instances drain, new calls fail fast (503).
            if let Some(cluster) = self.cluster(&previous, name) {
                cluster.update_endpoints(&[]);
                backends.insert_cluster(cluster);
            }
        }

        let routes =
            self.sources
                .routes
                .iter()
                .cloned()
                .chain(published.iter().flat_map(|(name, metas)| {
                    metas.iter().filter_map(move |m| route_from_meta(name, m))
                }));
        let (table, conflicts) = RouteTable::build_skipping_conflicts(routes);
        for conflict in &conflicts {
            tracing::warn!(%conflict, "published route left out");
        }
        metrics::gauge!("tideway_route_conflicts").set(conflicts.len() as f64);
        metrics::gauge!("tideway_routes").set(table.routes().len() as f64);
        metrics::counter!("tideway_route_table_updates_total").increment(1);
        tracing::info!(
            revision = snapshot.revision(),
            services = snapshot.service_count(),
            instances = snapshot.instance_count(),
            routes = table.routes().len(),
            "registry change applied"
        );
        state.backends.store(Arc::new(backends));
        state.routes.store(Arc::new(table));
    }
}

impl Follower {
    /// The cluster of `service`: the one already serving it, else a new one.
    /// A service whose `[clusters]` settings changed (config reload) gets a new cluster; the old
    /// one drains.
    fn cluster(&self, previous: &RpcBackends, service: &str) -> Option<Arc<Cluster>> {
        let settings = self.sources.cluster_config(service);
        if let Some(cluster) = previous.cluster(service)
            && cluster.config() == &settings
        {
            return Some(Arc::clone(cluster));
        }
        match Cluster::new(service, settings, self.client.clone()) {
            Ok(cluster) => Some(Arc::new(cluster)),
            Err(e) => {
                tracing::warn!(service, error = %e, "cannot make the service's cluster; its routes answer 503");
                None
            }
        }
    }
}

/// Routes of services seen before, bounded: the latest published routes of each service, and
/// those of services that have lost every instance (oldest forgotten first).
#[derive(Default)]
struct Remembered {
    current: BTreeMap<String, Vec<RouteMeta>>,
    gone: BTreeMap<String, Vec<RouteMeta>>,
    gone_order: VecDeque<String>,
}

impl Remembered {
    /// `published`: every service of the new snapshot with its routes.
    fn update(&mut self, published: &[(String, Vec<RouteMeta>)]) {
        let now: BTreeMap<String, Vec<RouteMeta>> = published.iter().cloned().collect();
        for name in now.keys() {
            if self.gone.remove(name).is_some() {
                self.gone_order.retain(|n| n != name);
            }
        }
        let before = std::mem::replace(&mut self.current, now);
        for (name, routes) in before {
            if !self.current.contains_key(&name) && self.gone.insert(name.clone(), routes).is_none()
            {
                self.gone_order.push_back(name);
            }
        }
        while self.gone_order.len() > MAX_REMEMBERED_SERVICES {
            if let Some(oldest) = self.gone_order.pop_front() {
                self.gone.remove(&oldest);
            }
        }
    }

    fn gone(&self) -> impl Iterator<Item = (&String, &Vec<RouteMeta>)> {
        self.gone.iter()
    }
}

/// A route from published metadata. The RPC name is rebuilt from the service and method names,
/// so a record cannot point a route at another service.
fn route_from_meta(service: &str, meta: &RouteMeta) -> Option<Route> {
    let method = match Method::from_bytes(meta.http_method.as_bytes()) {
        Ok(m) => m,
        Err(_) => {
            tracing::warn!(service, method = %meta.name, http_method = %meta.http_method, "published route has a bad HTTP method; left out");
            return None;
        }
    };
    Some(Route {
        path: meta.path.clone(),
        timeout: meta.timeout_ms.map(Duration::from_millis),
        target: RouteTarget::Rpc {
            service: service.to_owned(),
            full_name: format!("{service}/{}", meta.name),
            params: meta
                .params
                .iter()
                .map(|p| Param {
                    name: p.name.clone(),
                    kind: ParamKind::from_rust_type(&p.rust_type),
                    body: p.body,
                    schema: p.schema.clone(),
                })
                .collect(),
        },
        call: CallSettings::for_method(Some(&method)),
        method: Some(method),
        origin: format!("registry service {service}"),
        limit: None,
    })
}
