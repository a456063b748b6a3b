//! Routes and endpoints from a service registry, kept current.
//!
//! A task follows a [`Catalog`] (see `tideway-registry`). Each snapshot becomes a new route
//! table and new RPC backends, swapped in whole:
//!
//! - routes: the config file's routes first (they win a collision), then the routes each service
//!   publishes with its instances. A published route that collides is left out and logged; the
//!   others stay.
//! - backends: the services the config file lists keep their endpoints; every other service gets
//!   one client per instance. A client whose instance is still there is kept, with its
//!   connections and the calls in flight on them; a removed instance gets no new calls, and its
//!   client closes when the last call that holds it ends.
//!
//! When a service loses its last instance its routes stay, answering 503 (no endpoint) rather
//! than 404, so clients see a retryable outage instead of a wrong URL. Those remembered routes
//! are bounded ([`MAX_REMEMBERED_SERVICES`]). When the registry is unreachable the catalog keeps
//! its last snapshot, so the gateway keeps serving what it knew.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use http::Method;
use tideway_registry::{Catalog, CatalogSnapshot, RouteMeta};
use tideway_rpc::{Client, ClientConfig};
use tokio_util::sync::CancellationToken;

use crate::backends::RpcBackends;
use crate::binding::{Param, ParamKind};
use crate::handler::GatewayState;
use crate::router::{Route, RouteTable, RouteTarget};

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
}

/// Follows `catalog` until `stop`: applies every snapshot to the gateway's state.
pub(crate) fn spawn(
    state: Arc<GatewayState>,
    catalog: Catalog,
    sources: StaticSources,
    client: ClientConfig,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let mut snapshots = catalog.subscribe();
    let mut follower = Follower {
        sources,
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
            }
            let snapshot = Arc::clone(&snapshots.borrow_and_update());
            follower.apply(&state, &snapshot);
        }
    })
}

struct Follower {
    sources: StaticSources,
    client: ClientConfig,
    remembered: Remembered,
}

impl Follower {
    fn apply(&mut self, state: &GatewayState, snapshot: &CatalogSnapshot) {
        // Backends first: a new route never finds its service missing.
        let previous = state.backends.load();
        let mut backends = RpcBackends::new();
        for name in &self.sources.services {
            backends.insert_clients(name.clone(), previous.clients(name).to_vec());
        }
        let mut published: Vec<(String, Vec<RouteMeta>)> = Vec::new();
        for entry in snapshot.services() {
            let name = entry.name();
            let routes: Vec<RouteMeta> = entry.routes().into_iter().cloned().collect();
            published.push((name.to_owned(), routes));
            if self.sources.services.contains(name) {
                continue;
            }
            let old = previous.clients(name);
            let clients: Vec<Client> = entry
                .instances()
                .iter()
                .filter_map(|instance| {
                    if let Some(kept) = old.iter().find(|c| c.addr() == instance.addr) {
                        return Some(kept.clone());
                    }
                    match Client::new(instance.addr, self.client.clone()) {
                        Ok(client) => Some(client),
                        Err(e) => {
                            tracing::warn!(service = name, instance = %instance.id, error = %e, "cannot make a client for an instance; skipped");
                            None
                        }
                    }
                })
                .collect();
            backends.insert_clients(name.to_owned(), clients);
        }
        // Services that were published before and are gone now keep their routes.
        self.remembered.update(&published);
        for (name, routes) in self.remembered.gone() {
            published.push((name.clone(), routes.clone()));
            backends.insert_clients(name.clone(), Vec::new());
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
        method: Some(method),
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
                })
                .collect(),
        },
        origin: format!("registry service {service}"),
        limit: None,
    })
}
