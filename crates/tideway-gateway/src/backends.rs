//! RPC backends: for each service, the clients of its endpoints, picked round-robin.
//! (Load balancing with health and circuit breaking replaces the round-robin in a later step.)

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

use tideway_rpc::{Client, ClientConfig, ConfigError};

/// The endpoints of one service.
#[derive(Debug)]
struct ServiceClients {
    clients: Vec<Client>,
    next: AtomicUsize,
}

/// Clients for every service the gateway routes to.
#[derive(Debug, Default)]
pub struct RpcBackends {
    services: HashMap<String, ServiceClients>,
}

impl RpcBackends {
    /// No services.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) a service's endpoints. Connections open lazily on the first call.
    pub fn insert(
        &mut self,
        service: impl Into<String>,
        endpoints: &[SocketAddr],
        config: &ClientConfig,
    ) -> Result<(), ConfigError> {
        let clients = endpoints
            .iter()
            .map(|addr| Client::new(*addr, config.clone()))
            .collect::<Result<Vec<_>, _>>()?;
        self.services.insert(
            service.into(),
            ServiceClients {
                clients,
                next: AtomicUsize::new(0),
            },
        );
        Ok(())
    }

    /// Adds (or replaces) a service with clients built elsewhere (clones share connections).
    pub fn insert_clients(&mut self, service: impl Into<String>, clients: Vec<Client>) {
        self.services.insert(
            service.into(),
            ServiceClients {
                clients,
                next: AtomicUsize::new(0),
            },
        );
    }

    /// The clients of `service`'s endpoints (empty for an unknown service).
    pub fn clients(&self, service: &str) -> &[Client] {
        self.services
            .get(service)
            .map_or(&[], |s| s.clients.as_slice())
    }

    /// The client to send the next call of `service` to.
    pub fn pick(&self, service: &str) -> Option<&Client> {
        let svc = self.services.get(service)?;
        if svc.clients.is_empty() {
            return None;
        }
        let i = svc.next.fetch_add(1, Ordering::Relaxed) % svc.clients.len();
        svc.clients.get(i)
    }

    /// Calls waiting for a response, over every service.
    pub fn pending_calls(&self) -> usize {
        self.services
            .values()
            .flat_map(|s| s.clients.iter())
            .map(Client::pending_calls)
            .sum()
    }

    /// Frames queued for RPC connection writers, over every service.
    pub fn queued_frames(&self) -> usize {
        self.services
            .values()
            .flat_map(|s| s.clients.iter())
            .map(Client::queued_frames)
            .sum()
    }

    /// Open RPC connections, over every service.
    pub fn connections(&self) -> usize {
        self.services
            .values()
            .flat_map(|s| s.clients.iter())
            .map(Client::connections)
            .sum()
    }

    /// Names of the services known.
    pub fn services(&self) -> impl Iterator<Item = &str> {
        self.services.keys().map(String::as_str)
    }
}
