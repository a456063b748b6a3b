//! Tideway's service registry: services announce their instances (address, weight, zone,
//! version, tags and the HTTP routes of their methods) and gateways learn them, so routes and
//! endpoints change without redeploying the gateway.
//!
//! # Pieces
//!
//! - [`ServiceInstance`], [`RouteMeta`], [`ParamMeta`] (`instance.rs`): what is stored; owned,
//!   serde types. [`ServiceInstance::for_service`] builds one from the `ServiceDescriptor` that
//!   `#[service]` generates. [`ServiceInstance::validate`] is applied on every write and on every
//!   read, so a bad record is skipped (counted, logged), never a panic.
//! - [`Registry`] (`registry.rs`): the object-safe trait (`Arc<dyn Registry>`): `register`
//!   returns a [`Registration`] handle; `deregister`, `list`, and `watch(after)`, a stream of
//!   [`WatchEvent`]s with revisions so a watcher can resume, starting with a full snapshot when
//!   it cannot.
//! - Backends: [`EmbeddedRegistry`] (in-process; `tideway demo`), [`FileRegistry`] (a TOML or
//!   JSON file, polled and reloaded; read-only), `EtcdRegistry` (etcd v3 with leases; crate
//!   feature `etcd`). [`open`] picks one from a [`RegistryConfig`].
//! - [`Catalog`] (`catalog.rs`): what a gateway runs on top of a registry. A task watches,
//!   reconnects with backoff and jitter, resyncs from a snapshot when told to, and publishes an
//!   `Arc<`[`CatalogSnapshot`]`>` (instances grouped by service, plus revision) through a
//!   `tokio::sync::watch` channel, with a [`CatalogStatus`] (`Synced`, `Degraded`,
//!   `Disconnected { since, last_error, .. }`). When the registry is unreachable the last
//!   snapshot stays: gateways keep serving what they knew.
//! - [`metrics`]: series names and [`describe_metrics`].
//!
//! Every default and limit is a `DEFAULT_*` or `MAX_*` const in `config.rs`.
//!
//! # etcd key layout
//!
//! ```text
//! {prefix}/services/{service}/{instance_id}  ->  ServiceInstance as JSON
//! ```
//!
//! `prefix` defaults to `/tideway`, e.g. `/tideway/services/logistics.Waybills/wb-1`. Service
//! names and ids may only contain ASCII letters, digits, `.`, `_`, `-` and `:`, so they are
//! single key segments. Each key is bound to the registrant's lease (TTL 10 s, kept alive every
//! 3 s): a killed process disappears when its lease expires; a graceful shutdown revokes the
//! lease. A registrant whose lease is lost (keep-alives failed past the TTL, etcd forgot it)
//! registers again with a new lease as soon as etcd answers. Readers ignore unknown JSON
//! fields, and skip (count, log) keys outside the layout, values that do not parse or validate,
//! and values whose service or id disagree with their key.
//!
//! Watchers list the prefix at one revision (paged), then watch from the next revision; after a
//! disconnect they resume from the last revision they saw, and when etcd has compacted it they
//! list again (a full resync).
//!
//! # Features
//!
//! - `etcd` (off): the etcd backend, through the `etcd-client` crate. Its build script runs
//!   `protoc` (Debian: `protobuf-compiler`), so it is off by default and a plain build needs no
//!   protoc.
//!
//! # Example
//!
//! ```
//! # async fn demo() -> Result<(), tideway_registry::RegistryError> {
//! use std::sync::Arc;
//! use std::time::Duration;
//! use tideway_registry::{Catalog, CatalogConfig, EmbeddedRegistry, Registry, ServiceInstance};
//!
//! let registry: Arc<dyn Registry> = Arc::new(EmbeddedRegistry::new());
//! // Service side: register, keep the handle, deregister on shutdown.
//! let registration = registry
//!     .register(ServiceInstance::new("logistics.Pricing", "p-1", "127.0.0.1:7001".parse().unwrap()))
//!     .await?;
//! // Gateway side: a catalog, read on every change.
//! let catalog = Catalog::spawn(registry.clone(), CatalogConfig::default())?;
//! let snapshot = catalog.wait_synced(Duration::from_secs(5)).await.expect("embedded is always up");
//! assert_eq!(snapshot.service("logistics.Pricing").unwrap().instances().len(), 1);
//! registration.deregister().await?;
//! # Ok(()) }
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(demo()).unwrap();
//! ```

mod backoff;
mod catalog;
mod config;
mod embedded;
mod error;
#[cfg(feature = "etcd")]
mod etcd;
mod file;
mod instance;
pub mod metrics;
mod registry;
mod store;

use std::sync::Arc;

pub use catalog::{Catalog, CatalogCounters, CatalogSnapshot, CatalogStatus, ServiceEntry};
pub use config::*;
pub use embedded::EmbeddedRegistry;
pub use error::{BoxError, FileError, RegistryError, ValidationError};
#[cfg(feature = "etcd")]
pub use etcd::{EtcdRegistry, instance_key, services_prefix};
/// The etcd client library the backend uses (feature `etcd`), for callers that need direct
/// access (health checks, tests, tools).
#[cfg(feature = "etcd")]
pub use etcd_client;
pub use file::FileRegistry;
pub use instance::{ParamMeta, RouteMeta, ServiceInstance};
pub use metrics::describe_metrics;
pub use registry::{
    Listing, Registration, RegistrationHandle, RegistrationState, Registry, Revision, WatchEvent,
    WatchStream,
};

/// Opens the registry `config` names. The embedded variant gets a new, empty registry (share one
/// `Arc` between the services and the gateway of a process instead when they should meet).
/// `Etcd` without the crate feature is [`RegistryError::NotCompiled`].
pub async fn open(config: &RegistryConfig) -> Result<Arc<dyn Registry>, RegistryError> {
    config.validate()?;
    match config {
        RegistryConfig::Embedded => Ok(Arc::new(EmbeddedRegistry::new())),
        RegistryConfig::File(c) => Ok(Arc::new(FileRegistry::open(c.clone()).await?)),
        #[cfg(feature = "etcd")]
        RegistryConfig::Etcd(c) => Ok(Arc::new(EtcdRegistry::connect(c.clone()).await?)),
        #[cfg(not(feature = "etcd"))]
        RegistryConfig::Etcd(_) => Err(RegistryError::NotCompiled("etcd")),
    }
}
