//! The in-process registry: services and the gateway share one process (`tideway demo`, tests,
//! single-binary deployments).

use std::sync::{Arc, Weak};

use futures::future::BoxFuture;
use parking_lot::Mutex;

use crate::config::DEFAULT_EVENT_CAPACITY;
use crate::error::RegistryError;
use crate::instance::ServiceInstance;
use crate::registry::{
    Listing, Registration, RegistrationHandle, RegistrationState, Registry, Revision, WatchStream,
};
use crate::store::Store;

const BACKEND: &str = "embedded";

/// An in-process registry. Cheap to clone; clones share the state.
///
/// Registrations are removed when their handle is deregistered or dropped, at once. Watchers
/// that fall more than `event_capacity` changes behind get a fresh snapshot.
#[derive(Debug, Clone)]
pub struct EmbeddedRegistry {
    store: Arc<Store>,
}

impl Default for EmbeddedRegistry {
    fn default() -> Self {
        EmbeddedRegistry::new()
    }
}

impl EmbeddedRegistry {
    /// An empty registry buffering [`DEFAULT_EVENT_CAPACITY`] changes per watcher.
    pub fn new() -> Self {
        EmbeddedRegistry::with_event_capacity(DEFAULT_EVENT_CAPACITY)
    }

    /// An empty registry buffering `capacity` changes per watcher (at least 1).
    pub fn with_event_capacity(capacity: usize) -> Self {
        EmbeddedRegistry {
            store: Store::new(BACKEND, capacity),
        }
    }
}

impl Registry for EmbeddedRegistry {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn register(
        &self,
        instance: ServiceInstance,
    ) -> BoxFuture<'_, Result<Registration, RegistryError>> {
        let result = instance.validate().map_err(RegistryError::from).map(|()| {
            let instance = Arc::new(instance);
            let token = self.store.upsert(instance.clone());
            let handle = EmbeddedHandle {
                store: Arc::downgrade(&self.store),
                service: instance.service.clone(),
                id: instance.id.clone(),
                token,
                state: Mutex::new(RegistrationState::Active),
            };
            Registration::new(instance, Box::new(handle))
        });
        Box::pin(async move { result })
    }

    fn deregister<'a>(
        &'a self,
        service: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, Result<bool, RegistryError>> {
        let removed = self.store.remove(service, id, None);
        Box::pin(async move { Ok(removed) })
    }

    fn list(&self) -> BoxFuture<'_, Result<Listing, RegistryError>> {
        let listing = self.store.list();
        Box::pin(async move { Ok(listing) })
    }

    fn watch(&self, after: Option<Revision>) -> WatchStream {
        self.store.watch(after)
    }
}

#[derive(Debug)]
struct EmbeddedHandle {
    store: Weak<Store>,
    service: String,
    id: String,
    token: u64,
    state: Mutex<RegistrationState>,
}

impl EmbeddedHandle {
    fn remove(&self) {
        let mut state = self.state.lock();
        if *state == RegistrationState::Closed {
            return;
        }
        *state = RegistrationState::Closed;
        if let Some(store) = self.store.upgrade() {
            store.remove(&self.service, &self.id, Some(self.token));
        }
    }
}

impl RegistrationHandle for EmbeddedHandle {
    fn state(&self) -> RegistrationState {
        self.state.lock().clone()
    }

    fn deregister(self: Box<Self>) -> BoxFuture<'static, Result<(), RegistryError>> {
        self.remove();
        Box::pin(async { Ok(()) })
    }
}

impl Drop for EmbeddedHandle {
    fn drop(&mut self) {
        self.remove();
    }
}
