//! The [`Registry`] trait every backend implements, the events its watch streams carry, and the
//! [`Registration`] handle a service keeps while it is registered.

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use serde::Serialize;

use crate::error::RegistryError;
use crate::instance::ServiceInstance;

/// A registry's change counter. It grows with every change; a watcher that saw revision `r`
/// resumes with `watch(Some(r))`. Each backend counts on its own (etcd's store revision, an
/// in-process counter), so revisions of two registries cannot be compared. 0 means "nothing yet".
pub type Revision = u64;

/// The stream [`Registry::watch`] returns.
pub type WatchStream = BoxStream<'static, Result<WatchEvent, RegistryError>>;

/// Every instance a registry holds, at one revision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    /// The revision the list is consistent at.
    pub revision: Revision,
    /// The instances, ordered by service then id.
    pub instances: Vec<Arc<ServiceInstance>>,
}

/// One item of a watch stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// The complete state at `revision`: replaces everything the watcher knew. Sent first by a
    /// watch that starts from nothing, and whenever the backend cannot resume from the revision
    /// asked for (etcd compacted it, the watcher fell behind the bounded event buffer).
    Snapshot {
        /// Revision of the state.
        revision: Revision,
        /// Every instance, ordered by service then id.
        instances: Vec<Arc<ServiceInstance>>,
    },
    /// An instance was registered or changed.
    Put {
        /// Revision of the change.
        revision: Revision,
        /// The instance as it is now.
        instance: Arc<ServiceInstance>,
    },
    /// An instance was deregistered, or its lease expired, or its record became invalid.
    Delete {
        /// Revision of the change.
        revision: Revision,
        /// Its service.
        service: String,
        /// Its id.
        id: String,
    },
    /// The source is reachable and healthy, and the watcher has every change up to `revision`.
    /// Sent when a watch resumes without a snapshot, and when a problem the stream reported
    /// earlier (a registry file that did not parse) is gone.
    Synced {
        /// The revision the watcher is caught up to.
        revision: Revision,
    },
}

impl WatchEvent {
    /// The revision the event brings the watcher to.
    pub fn revision(&self) -> Revision {
        match self {
            WatchEvent::Snapshot { revision, .. }
            | WatchEvent::Put { revision, .. }
            | WatchEvent::Delete { revision, .. }
            | WatchEvent::Synced { revision } => *revision,
        }
    }
}

/// A service registry: where services announce their instances and gateways learn them.
///
/// Object safe: hold it as `Arc<dyn Registry>`. Implementations: [`EmbeddedRegistry`]
/// (in-process), [`FileRegistry`] (a watched file, read-only) and `EtcdRegistry` (feature
/// `etcd`). Most consumers do not call [`watch`](Registry::watch) themselves but run a
/// [`Catalog`](crate::Catalog) on top, which reconnects, resyncs and keeps the last known state.
///
/// [`EmbeddedRegistry`]: crate::EmbeddedRegistry
/// [`FileRegistry`]: crate::FileRegistry
pub trait Registry: Send + Sync + fmt::Debug + 'static {
    /// Short name of the backend for logs and errors: `embedded`, `file`, `etcd`.
    fn backend(&self) -> &'static str;

    /// Validates and registers an instance, replacing one with the same service and id (the
    /// last writer wins). The instance stays registered while the returned handle lives (etcd:
    /// while its lease is kept alive); [`Registration::deregister`] removes it gracefully.
    ///
    /// Cancel safety: dropping the future before it completes may leave the instance stored
    /// without a handle; an etcd registration then disappears when its lease expires.
    fn register(
        &self,
        instance: ServiceInstance,
    ) -> BoxFuture<'_, Result<Registration, RegistryError>>;

    /// Removes an instance whoever registered it (an operator's action). `Ok(false)` when there
    /// was none. A live registrant is not told; an etcd registrant does not put it back unless
    /// its lease is lost later.
    fn deregister<'a>(
        &'a self,
        service: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, Result<bool, RegistryError>>;

    /// Every instance, at one revision.
    fn list(&self) -> BoxFuture<'_, Result<Listing, RegistryError>>;

    /// A stream of changes after revision `after`; from nothing (a [`WatchEvent::Snapshot`]
    /// first) when `after` is `None`. When the backend cannot resume from `after` the stream
    /// starts with a snapshot instead, so a watcher never misses a change.
    ///
    /// Errors: an `Err` item reports a problem. When the stream ends right after it (the
    /// connection is gone), the watcher should wait and call `watch(Some(last_revision))`
    /// again; when it goes on (a registry file that does not parse), the source keeps serving
    /// its last good state and a later [`WatchEvent::Synced`] says the problem is gone.
    fn watch(&self, after: Option<Revision>) -> WatchStream;
}

/// Where a registration stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum RegistrationState {
    /// Registered and (etcd) kept alive.
    Active,
    /// The lease was lost (keep-alives failed past the TTL, or etcd forgot it); the instance is
    /// being registered again with a new lease, with backoff, until the registry answers.
    Recovering {
        /// When the lease was declared lost.
        since: SystemTime,
        /// The last error.
        last_error: String,
    },
    /// Deregistered (or the handle's task ended).
    Closed,
}

/// The backend half of a [`Registration`]. Backends implement it; tests and wrappers may too.
/// Dropping the box is what dropping the registration does (see [`Registration`]).
pub trait RegistrationHandle: Send + Sync + fmt::Debug + 'static {
    /// Where the registration stands.
    fn state(&self) -> RegistrationState;

    /// Removes the instance and waits until the backend confirmed it.
    fn deregister(self: Box<Self>) -> BoxFuture<'static, Result<(), RegistryError>>;
}

/// A registered instance. Keep it for as long as the instance should stay registered.
///
/// - [`deregister`](Registration::deregister) removes the instance and waits for the backend to
///   confirm: call it on graceful shutdown, before the RPC server stops accepting calls.
/// - Dropping it also removes the instance, as well as a drop can: the embedded registry removes
///   it at once; etcd stops the keep-alive and revokes the lease from a background task (when a
///   Tokio runtime is still running), and otherwise the instance disappears when its lease
///   expires (TTL). A registration never outlives its handle for longer than the TTL.
#[derive(Debug)]
pub struct Registration {
    instance: Arc<ServiceInstance>,
    handle: Box<dyn RegistrationHandle>,
}

impl Registration {
    /// A registration of `instance` that `handle` keeps.
    pub fn new(instance: Arc<ServiceInstance>, handle: Box<dyn RegistrationHandle>) -> Self {
        Registration { instance, handle }
    }

    /// The registered instance.
    pub fn instance(&self) -> &Arc<ServiceInstance> {
        &self.instance
    }

    /// Where the registration stands (etcd: whether its lease is being kept alive).
    pub fn state(&self) -> RegistrationState {
        self.handle.state()
    }

    /// Removes the instance and waits until the backend confirmed it. On error (etcd
    /// unreachable) the instance still disappears when its lease expires.
    pub async fn deregister(self) -> Result<(), RegistryError> {
        self.handle.deregister().await
    }
}
