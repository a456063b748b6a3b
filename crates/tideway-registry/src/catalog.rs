//! A gateway's view of the registry: a task that watches a [`Registry`], keeps every instance
//! grouped by service, and publishes immutable snapshots through a `tokio::sync::watch` channel.
//!
//! ```text
//!             watch(after)          ready_chunks(max_batch)         send_replace
//!  Registry ───────────────► stream ───────────────────► working set ───────────► Arc<CatalogSnapshot>
//!     ▲  stream ended: Disconnected, wait (backoff + jitter), watch(Some(last revision)) │
//!     └──────────────────────────────────────────────────────────────────────────────────┘
//! ```
//!
//! - The last published snapshot stays when the registry becomes unreachable: the gateway keeps
//!   routing to what it knew. [`CatalogStatus`] says whether that knowledge is current.
//! - Everything is bounded: the snapshot channel holds one value (readers always see the
//!   latest; nobody queues), backends buffer a bounded number of changes per watcher and send a
//!   full snapshot to one that falls behind, and the catalog holds at most `max_instances`.
//! - Unchanged services keep their `Arc<ServiceEntry>` from one snapshot to the next, so a
//!   consumer can rebuild only what changed (`Arc::ptr_eq`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use serde::Serialize;
use tokio::sync::watch;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::backoff::Backoff;
use crate::config::CatalogConfig;
use crate::error::RegistryError;
use crate::instance::{RouteMeta, ServiceInstance};
use crate::metrics;
use crate::registry::{Registry, Revision, WatchEvent};

/// The instances of one service, ordered by id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceEntry {
    name: String,
    instances: Vec<Arc<ServiceInstance>>,
}

impl ServiceEntry {
    /// The service's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its instances, ordered by id; never empty.
    pub fn instances(&self) -> &[Arc<ServiceInstance>] {
        &self.instances
    }

    /// The routes the instances publish, each (HTTP method, path) once: the first instance (by
    /// id) that declares it wins. During a rolling deploy instances may disagree; a route stays
    /// while any instance still serves it.
    pub fn routes(&self) -> Vec<&RouteMeta> {
        let mut seen = BTreeSet::new();
        self.instances
            .iter()
            .flat_map(|i| i.routes.iter())
            .filter(|r| seen.insert((r.http_method.as_str(), r.path.as_str())))
            .collect()
    }
}

/// Everything the catalog knows, at one revision. Immutable; a new one replaces it on change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CatalogSnapshot {
    revision: Revision,
    services: BTreeMap<String, Arc<ServiceEntry>>,
    instance_count: usize,
}

impl CatalogSnapshot {
    /// The registry revision this state is at (0: nothing received yet).
    pub fn revision(&self) -> Revision {
        self.revision
    }

    /// One service, when it has instances.
    pub fn service(&self, name: &str) -> Option<&Arc<ServiceEntry>> {
        self.services.get(name)
    }

    /// Every service with instances, ordered by name.
    pub fn services(&self) -> impl Iterator<Item = &Arc<ServiceEntry>> {
        self.services.values()
    }

    /// One instance.
    pub fn instance(&self, service: &str, id: &str) -> Option<&Arc<ServiceInstance>> {
        self.services
            .get(service)?
            .instances
            .iter()
            .find(|i| i.id == id)
    }

    /// Every instance, ordered by service then id.
    pub fn instances(&self) -> impl Iterator<Item = &Arc<ServiceInstance>> {
        self.services.values().flat_map(|s| s.instances.iter())
    }

    /// How many instances.
    pub fn instance_count(&self) -> usize {
        self.instance_count
    }

    /// How many services.
    pub fn service_count(&self) -> usize {
        self.services.len()
    }
}

/// Whether the catalog's state is current. Report it on health endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum CatalogStatus {
    /// Nothing received yet, first connection under way.
    Starting,
    /// Watching; the snapshot is current.
    Synced {
        /// Revision of the snapshot.
        revision: Revision,
        /// Since when.
        since: SystemTime,
    },
    /// Watching, but the source reports a problem (a registry file that does not parse); the
    /// snapshot is the last good state.
    Degraded {
        /// Revision of the snapshot.
        revision: Revision,
        /// Since when.
        since: SystemTime,
        /// The problem.
        error: String,
    },
    /// The registry is unreachable; the snapshot is the last known state, kept as it was.
    /// Reconnect attempts continue with backoff.
    Disconnected {
        /// Revision of the snapshot (0: never synced).
        revision: Revision,
        /// Since when.
        since: SystemTime,
        /// Why the last attempt failed.
        last_error: String,
        /// Failed attempts since the connection was lost.
        attempts: u32,
    },
}

impl CatalogStatus {
    /// `true` when the snapshot is current.
    pub fn is_synced(&self) -> bool {
        matches!(self, CatalogStatus::Synced { .. })
    }

    /// `true` while the watch is established (synced or degraded).
    pub fn is_connected(&self) -> bool {
        matches!(
            self,
            CatalogStatus::Synced { .. } | CatalogStatus::Degraded { .. }
        )
    }
}

/// Running totals of one catalog (also exported as metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CatalogCounters {
    /// Full snapshots received after the first (compaction, lagging, reconnect without resume).
    pub resyncs: u64,
    /// Errors the watch reported.
    pub watch_errors: u64,
    /// Times the watch was started again after it ended.
    pub reconnects: u64,
    /// Instances skipped because the catalog was full.
    pub skipped_instances: u64,
}

#[derive(Debug, Default)]
struct Counters {
    resyncs: AtomicU64,
    watch_errors: AtomicU64,
    reconnects: AtomicU64,
    skipped_instances: AtomicU64,
}

/// Keeps the last known state of a registry and whether it is current. See the module docs.
///
/// Dropping the catalog stops its task; receivers obtained from it keep the last values.
#[derive(Debug)]
pub struct Catalog {
    snapshot: watch::Receiver<Arc<CatalogSnapshot>>,
    status: watch::Receiver<CatalogStatus>,
    counters: Arc<Counters>,
    _task: DropGuard,
}

impl Catalog {
    /// Starts watching `registry`. Returns at once: the status is `Starting` until the first
    /// snapshot arrives (see [`Catalog::wait_synced`]). Must be called within a Tokio runtime.
    pub fn spawn(
        registry: Arc<dyn Registry>,
        config: CatalogConfig,
    ) -> Result<Catalog, RegistryError> {
        config.validate()?;
        metrics::describe_metrics();
        ::metrics::gauge!(metrics::CONNECTED).set(0.0);
        let (snapshot_tx, snapshot) = watch::channel(Arc::new(CatalogSnapshot::default()));
        let (status_tx, status) = watch::channel(CatalogStatus::Starting);
        let counters = Arc::new(Counters::default());
        let cancel = CancellationToken::new();
        let task = Task {
            registry,
            backoff: Backoff::new(config.backoff_min, config.backoff_max),
            config,
            snapshot_tx,
            status_tx,
            counters: counters.clone(),
            working: Working::default(),
            synced_once: false,
            status_since: SystemTime::now(),
        };
        tokio::spawn(task.run(cancel.clone()));
        Ok(Catalog {
            snapshot,
            status,
            counters,
            _task: cancel.drop_guard(),
        })
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<CatalogSnapshot> {
        self.snapshot.borrow().clone()
    }

    /// A receiver of snapshots: `changed().await` wakes on every new one. Holds only the latest.
    pub fn subscribe(&self) -> watch::Receiver<Arc<CatalogSnapshot>> {
        self.snapshot.clone()
    }

    /// The current status.
    pub fn status(&self) -> CatalogStatus {
        self.status.borrow().clone()
    }

    /// A receiver of status changes.
    pub fn subscribe_status(&self) -> watch::Receiver<CatalogStatus> {
        self.status.clone()
    }

    /// Running totals.
    pub fn counters(&self) -> CatalogCounters {
        CatalogCounters {
            resyncs: self.counters.resyncs.load(Ordering::Relaxed),
            watch_errors: self.counters.watch_errors.load(Ordering::Relaxed),
            reconnects: self.counters.reconnects.load(Ordering::Relaxed),
            skipped_instances: self.counters.skipped_instances.load(Ordering::Relaxed),
        }
    }

    /// Waits until the status is `Synced`, at most `timeout`. On timeout returns the status
    /// then (e.g. `Disconnected` with the reason), for the caller to decide whether to start
    /// with what it has.
    pub async fn wait_synced(
        &self,
        timeout: Duration,
    ) -> Result<Arc<CatalogSnapshot>, CatalogStatus> {
        let mut status = self.status.clone();
        let synced = tokio::time::timeout(timeout, async {
            status.wait_for(CatalogStatus::is_synced).await.is_ok()
        })
        .await;
        match synced {
            Ok(true) => Ok(self.snapshot()),
            _ => Err(self.status()),
        }
    }

    /// Waits until a snapshot satisfies `condition`, at most `timeout`; `None` on timeout.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        mut condition: impl FnMut(&CatalogSnapshot) -> bool,
    ) -> Option<Arc<CatalogSnapshot>> {
        let mut snapshot = self.snapshot.clone();
        let found = tokio::time::timeout(timeout, async {
            snapshot
                .wait_for(|s| condition(s))
                .await
                .ok()
                .map(|s| s.clone())
        })
        .await;
        found.ok().flatten()
    }
}

/// The catalog's working set: instances by service and id.
#[derive(Debug, Default)]
struct Working {
    services: BTreeMap<String, BTreeMap<String, Arc<ServiceInstance>>>,
    count: usize,
    revision: Revision,
}

struct Task {
    registry: Arc<dyn Registry>,
    config: CatalogConfig,
    backoff: Backoff,
    snapshot_tx: watch::Sender<Arc<CatalogSnapshot>>,
    status_tx: watch::Sender<CatalogStatus>,
    counters: Arc<Counters>,
    working: Working,
    /// A snapshot was applied at least once: later ones are resyncs, and resuming is possible.
    synced_once: bool,
    /// Start of the current status (kept while the status stays the same kind).
    status_since: SystemTime,
}

#[derive(Debug, Clone, Copy)]
enum StatusKind {
    Synced,
    Degraded,
    Disconnected,
}

/// What one connection of the watch has seen so far.
#[derive(Debug, Default)]
struct Connection {
    /// Received an event (not only errors): the registry answered.
    healthy: bool,
    /// The problem the source reports now (cleared by a snapshot or `Synced`).
    problem: Option<String>,
    /// The last error, for the `Disconnected` status.
    last_error: Option<String>,
}

impl Task {
    async fn run(mut self, cancel: CancellationToken) {
        let backend = self.registry.backend();
        let mut attempts: u32 = 0;
        loop {
            let after = self.synced_once.then_some(self.working.revision);
            let mut batches = self
                .registry
                .watch(after)
                .ready_chunks(self.config.max_batch);
            let mut conn = Connection::default();
            loop {
                let batch = tokio::select! {
                    _ = cancel.cancelled() => return,
                    batch = batches.next() => batch,
                };
                let Some(batch) = batch else { break };
                let was_healthy = conn.healthy;
                let dirty = self.apply(batch, &mut conn);
                if conn.healthy && !was_healthy {
                    if attempts > 0 || !self.status_tx.borrow().is_connected() {
                        tracing::info!(
                            backend,
                            revision = self.working.revision,
                            "service registry watch established"
                        );
                    }
                    attempts = 0;
                    self.backoff.reset();
                    ::metrics::gauge!(metrics::CONNECTED).set(1.0);
                }
                self.publish(&dirty);
                if conn.healthy && self.synced_once {
                    let status = match &conn.problem {
                        None => CatalogStatus::Synced {
                            revision: self.working.revision,
                            since: self.since(StatusKind::Synced),
                        },
                        Some(error) => CatalogStatus::Degraded {
                            revision: self.working.revision,
                            since: self.since(StatusKind::Degraded),
                            error: error.clone(),
                        },
                    };
                    self.set_status(status);
                }
            }
            // The stream ended: keep the state, report, wait, resume.
            drop(batches);
            ::metrics::gauge!(metrics::CONNECTED).set(0.0);
            attempts = attempts.saturating_add(1);
            let last_error = conn
                .last_error
                .unwrap_or_else(|| "the watch stream ended".to_owned());
            if attempts == 1 {
                tracing::warn!(backend, error = %last_error, revision = self.working.revision, "service registry unreachable; serving the last known state");
            } else {
                tracing::debug!(backend, error = %last_error, attempts, "service registry still unreachable");
            }
            let since = self.since(StatusKind::Disconnected);
            self.set_status(CatalogStatus::Disconnected {
                revision: self.working.revision,
                since,
                last_error,
                attempts,
            });
            let wait = self.backoff.next_wait();
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            self.counters.reconnects.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// When the status of `kind` began: kept while the current status is of that kind, now
    /// otherwise.
    fn since(&mut self, kind: StatusKind) -> SystemTime {
        let same = matches!(
            (&*self.status_tx.borrow(), kind),
            (CatalogStatus::Synced { .. }, StatusKind::Synced)
                | (CatalogStatus::Degraded { .. }, StatusKind::Degraded)
                | (CatalogStatus::Disconnected { .. }, StatusKind::Disconnected)
        );
        if !same {
            self.status_since = SystemTime::now();
        }
        self.status_since
    }

    fn set_status(&self, status: CatalogStatus) {
        self.status_tx.send_if_modified(|current| {
            if *current == status {
                false
            } else {
                *current = status;
                true
            }
        });
    }

    /// Applies a batch to the working set; returns the services that changed.
    fn apply(
        &mut self,
        batch: Vec<Result<WatchEvent, RegistryError>>,
        conn: &mut Connection,
    ) -> BTreeSet<String> {
        let mut dirty = BTreeSet::new();
        for item in batch {
            let event = match item {
                Ok(event) => event,
                Err(e) => {
                    self.counters.watch_errors.fetch_add(1, Ordering::Relaxed);
                    ::metrics::counter!(metrics::WATCH_ERRORS_TOTAL).increment(1);
                    let message = e.to_string();
                    tracing::debug!(backend = self.registry.backend(), error = %message, "service registry watch error");
                    conn.problem = Some(message.clone());
                    conn.last_error = Some(message);
                    continue;
                }
            };
            conn.healthy = true;
            match event {
                WatchEvent::Snapshot {
                    revision,
                    instances,
                } => {
                    if self.synced_once {
                        self.counters.resyncs.fetch_add(1, Ordering::Relaxed);
                        ::metrics::counter!(metrics::RESYNCS_TOTAL).increment(1);
                        tracing::info!(
                            backend = self.registry.backend(),
                            revision,
                            "service registry resynced from a full snapshot"
                        );
                    }
                    self.replace_all(instances, &mut dirty);
                    self.working.revision = revision;
                    self.synced_once = true;
                    conn.problem = None;
                }
                WatchEvent::Synced { revision } => {
                    self.working.revision = self.working.revision.max(revision);
                    conn.problem = None;
                }
                WatchEvent::Put { revision, instance } => {
                    self.put(instance, &mut dirty);
                    self.working.revision = self.working.revision.max(revision);
                }
                WatchEvent::Delete {
                    revision,
                    service,
                    id,
                } => {
                    self.delete(&service, &id, &mut dirty);
                    self.working.revision = self.working.revision.max(revision);
                }
            }
        }
        dirty
    }

    fn skip_full(&self, instance: &ServiceInstance) {
        self.counters
            .skipped_instances
            .fetch_add(1, Ordering::Relaxed);
        metrics::invalid_record();
        tracing::warn!(
            service = %instance.service,
            id = %instance.id,
            max_instances = self.config.max_instances,
            "service registry catalog is full; instance skipped"
        );
    }

    fn put(&mut self, instance: Arc<ServiceInstance>, dirty: &mut BTreeSet<String>) {
        let exists = self
            .working
            .services
            .get(&instance.service)
            .is_some_and(|s| s.contains_key(&instance.id));
        if !exists && self.working.count >= self.config.max_instances {
            self.skip_full(&instance);
            return;
        }
        let service = self
            .working
            .services
            .entry(instance.service.clone())
            .or_default();
        if service
            .insert(instance.id.clone(), instance.clone())
            .is_none()
        {
            self.working.count += 1;
        }
        dirty.insert(instance.service.clone());
    }

    fn delete(&mut self, service: &str, id: &str, dirty: &mut BTreeSet<String>) {
        let Some(instances) = self.working.services.get_mut(service) else {
            return;
        };
        if instances.remove(id).is_some() {
            self.working.count -= 1;
            dirty.insert(service.to_owned());
        }
        if instances.is_empty() {
            self.working.services.remove(service);
        }
    }

    fn replace_all(&mut self, instances: Vec<Arc<ServiceInstance>>, dirty: &mut BTreeSet<String>) {
        let mut next: BTreeMap<String, BTreeMap<String, Arc<ServiceInstance>>> = BTreeMap::new();
        let mut count = 0;
        for instance in instances {
            let service = next.entry(instance.service.clone()).or_default();
            if service.contains_key(&instance.id) {
                service.insert(instance.id.clone(), instance);
                continue;
            }
            if count >= self.config.max_instances {
                self.skip_full(&instance);
                continue;
            }
            service.insert(instance.id.clone(), instance);
            count += 1;
        }
        next.retain(|_, s| !s.is_empty());
        for (name, instances) in &self.working.services {
            if next.get(name) != Some(instances) {
                dirty.insert(name.clone());
            }
        }
        for name in next.keys() {
            if !self.working.services.contains_key(name) {
                dirty.insert(name.clone());
            }
        }
        self.working.services = next;
        self.working.count = count;
    }

    /// Publishes a new snapshot when something changed; unchanged services keep their `Arc`.
    fn publish(&self, dirty: &BTreeSet<String>) {
        let previous = self.snapshot_tx.borrow().clone();
        if dirty.is_empty() && previous.revision == self.working.revision {
            return;
        }
        let mut services = previous.services.clone();
        for name in dirty {
            match self.working.services.get(name) {
                Some(instances) if !instances.is_empty() => {
                    services.insert(
                        name.clone(),
                        Arc::new(ServiceEntry {
                            name: name.clone(),
                            instances: instances.values().cloned().collect(),
                        }),
                    );
                }
                _ => {
                    services.remove(name);
                }
            }
        }
        let snapshot = CatalogSnapshot {
            revision: self.working.revision,
            services,
            instance_count: self.working.count,
        };
        ::metrics::gauge!(metrics::INSTANCES).set(snapshot.instance_count as f64);
        ::metrics::gauge!(metrics::SERVICES).set(snapshot.services.len() as f64);
        ::metrics::gauge!(metrics::REVISION).set(snapshot.revision as f64);
        self.snapshot_tx.send_replace(Arc::new(snapshot));
    }
}
