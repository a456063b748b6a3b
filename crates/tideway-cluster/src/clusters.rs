//! [`Clusters`]: the clusters of every service a gateway routes to, by service name.

use std::collections::HashMap;
use std::sync::Arc;

use crate::cluster::Cluster;

/// Service name → [`Cluster`]. Cheap to clone (the clusters are shared), so a gateway can build
/// the next generation from the current one and swap it in whole, keeping the clusters (and
/// their state) of services that stay.
#[derive(Debug, Clone, Default)]
pub struct Clusters {
    /// foldhash: looked up once per call, and SipHash (std's default) cost more than the rest
    /// of the lookup.
    map: HashMap<String, Arc<Cluster>, foldhash::fast::RandomState>,
}

impl Clusters {
    /// No clusters.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a cluster under its service name; returns the one it replaces.
    pub fn insert(&mut self, cluster: Arc<Cluster>) -> Option<Arc<Cluster>> {
        self.map.insert(cluster.service().to_owned(), cluster)
    }

    /// The cluster of `service`.
    pub fn get(&self, service: &str) -> Option<&Arc<Cluster>> {
        self.map.get(service)
    }

    /// Removes the cluster of `service`.
    pub fn remove(&mut self, service: &str) -> Option<Arc<Cluster>> {
        self.map.remove(service)
    }

    /// Every cluster.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Cluster>> {
        self.map.values()
    }

    /// The service names.
    pub fn services(&self) -> impl Iterator<Item = &str> {
        self.map.keys().map(String::as_str)
    }

    /// How many services.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// RPC calls waiting for a response, over every service.
    pub fn pending_calls(&self) -> usize {
        self.iter().map(|c| c.pending_calls()).sum()
    }

    /// Frames queued for RPC connection writers, over every service.
    pub fn queued_frames(&self) -> usize {
        self.iter().map(|c| c.queued_frames()).sum()
    }

    /// Open RPC connections, over every service.
    pub fn connections(&self) -> usize {
        self.iter().map(|c| c.connections()).sum()
    }

    /// [`Cluster::record_gauges`] for every service.
    pub fn record_gauges(&self) {
        for cluster in self.iter() {
            cluster.record_gauges();
        }
    }
}
