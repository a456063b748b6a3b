//! RPC backends: one [`Cluster`] per service (load balancing, outlier ejection, breakers,
//! retries within a budget; see `tideway-cluster`), looked up by service name.
//!
//! A set of backends is immutable once published to the request path; registry changes update
//! the endpoints of the clusters in place ([`Cluster::update_endpoints`]) and publish a new set
//! only when services come or go.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use tideway_cluster::{Cluster, ClusterConfig, Clusters, EndpointSpec};
use tideway_rpc::ClientConfig;

/// Why a service's cluster could not be made.
pub type BackendError = tideway_cluster::ConfigError;

/// The clusters of every service the gateway routes to.
#[derive(Debug, Default, Clone)]
pub struct RpcBackends {
    clusters: Clusters,
}

impl RpcBackends {
    /// No services.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) a service with fixed endpoints and the default cluster settings.
    /// Connections open lazily on the first call.
    pub fn insert(
        &mut self,
        service: impl Into<String>,
        endpoints: &[SocketAddr],
        client: &ClientConfig,
    ) -> Result<(), BackendError> {
        self.insert_with(service, endpoints, ClusterConfig::default(), client)
    }

    /// Adds (or replaces) a service with fixed endpoints and these cluster settings.
    pub fn insert_with(
        &mut self,
        service: impl Into<String>,
        endpoints: &[SocketAddr],
        config: ClusterConfig,
        client: &ClientConfig,
    ) -> Result<(), BackendError> {
        let cluster = Cluster::new(service, config, client.clone())?;
        cluster.update_endpoints(&static_endpoints(endpoints));
        self.clusters.insert(Arc::new(cluster));
        Ok(())
    }

    /// Adds (or replaces) a cluster made elsewhere.
    pub fn insert_cluster(&mut self, cluster: Arc<Cluster>) {
        self.clusters.insert(cluster);
    }

    /// The cluster of `service`.
    pub fn cluster(&self, service: &str) -> Option<&Arc<Cluster>> {
        self.clusters.get(service)
    }

    /// Every cluster.
    pub fn clusters(&self) -> &Clusters {
        &self.clusters
    }

    /// Calls waiting for a response, over every service.
    pub fn pending_calls(&self) -> usize {
        self.clusters.pending_calls()
    }

    /// Frames queued for RPC connection writers, over every service.
    pub fn queued_frames(&self) -> usize {
        self.clusters.queued_frames()
    }

    /// Open RPC connections, over every service.
    pub fn connections(&self) -> usize {
        self.clusters.connections()
    }

    /// Names of the services known.
    pub fn services(&self) -> impl Iterator<Item = &str> {
        self.clusters.services()
    }
}

/// Endpoints listed by address only (config files): ids are the addresses, weights equal.
pub fn static_endpoints(addrs: &[SocketAddr]) -> Vec<EndpointSpec> {
    // The same address listed twice is one endpoint.
    let unique: BTreeMap<String, SocketAddr> = addrs.iter().map(|a| (a.to_string(), *a)).collect();
    unique
        .into_iter()
        .map(|(id, addr)| EndpointSpec::new(id, addr))
        .collect()
}
