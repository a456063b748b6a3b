//! The in-memory state behind the embedded and file registries: instances by (service, id), a
//! revision counter, and a bounded broadcast of changes to watchers.
//!
//! Every change and every new subscription happens under one lock, so a watcher's snapshot and
//! the changes it receives after it never overlap or leave a gap. A watcher that falls more than
//! the channel's capacity behind gets a fresh snapshot instead of a growing queue.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use tokio::sync::broadcast;

use crate::error::{FileError, RegistryError};
use crate::instance::ServiceInstance;
use crate::registry::{Listing, Revision, WatchEvent, WatchStream};

type Key = (String, String);

#[derive(Debug)]
struct Entry {
    instance: Arc<ServiceInstance>,
    /// Which registration put the entry there, so an older registration's deregister does not
    /// remove a newer one with the same key.
    token: u64,
}

#[derive(Debug, Default)]
struct State {
    revision: Revision,
    instances: BTreeMap<Key, Entry>,
    /// The problem the source has now (a registry file that does not parse), told to watchers.
    problem: Option<FileError>,
}

#[derive(Debug, Clone)]
enum StoreEvent {
    Put {
        revision: Revision,
        instance: Arc<ServiceInstance>,
    },
    Delete {
        revision: Revision,
        service: String,
        id: String,
    },
    Synced {
        revision: Revision,
    },
    Problem(FileError),
}

#[derive(Debug)]
pub(crate) struct Store {
    backend: &'static str,
    state: Mutex<State>,
    events: broadcast::Sender<StoreEvent>,
    next_token: AtomicU64,
}

/// Token of entries no registration owns (file records).
const NO_TOKEN: u64 = 0;

impl Store {
    pub(crate) fn new(backend: &'static str, capacity: usize) -> Arc<Store> {
        let (events, _) = broadcast::channel(capacity.max(1));
        Arc::new(Store {
            backend,
            state: Mutex::new(State::default()),
            events,
            next_token: AtomicU64::new(NO_TOKEN + 1),
        })
    }

    fn send(&self, event: StoreEvent) {
        // No receivers is fine: nobody watches.
        let _ = self.events.send(event);
    }

    /// Inserts or replaces an instance; returns the token its registration removes it with.
    pub(crate) fn upsert(&self, instance: Arc<ServiceInstance>) -> u64 {
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        let mut state = self.state.lock();
        state.revision += 1;
        let revision = state.revision;
        let key = (instance.service.clone(), instance.id.clone());
        state.instances.insert(
            key,
            Entry {
                instance: instance.clone(),
                token,
            },
        );
        self.send(StoreEvent::Put { revision, instance });
        token
    }

    /// Removes an instance; with a token, only if that registration still owns it.
    pub(crate) fn remove(&self, service: &str, id: &str, token: Option<u64>) -> bool {
        let mut state = self.state.lock();
        let key = (service.to_owned(), id.to_owned());
        match state.instances.get(&key) {
            Some(entry) if token.is_none_or(|t| t == entry.token) => {}
            _ => return false,
        }
        state.instances.remove(&key);
        state.revision += 1;
        let revision = state.revision;
        self.send(StoreEvent::Delete {
            revision,
            service: key.0,
            id: key.1,
        });
        true
    }

    /// Makes `instances` the whole state (a file reload): the differences become changes at one
    /// new revision. Clears a reported problem. Returns how many instances changed.
    pub(crate) fn replace_all(&self, instances: Vec<ServiceInstance>) -> usize {
        let mut state = self.state.lock();
        let mut next: BTreeMap<Key, ServiceInstance> = BTreeMap::new();
        for instance in instances {
            next.insert((instance.service.clone(), instance.id.clone()), instance);
        }
        let removed: Vec<Key> = state
            .instances
            .keys()
            .filter(|k| !next.contains_key(*k))
            .cloned()
            .collect();
        let changed: Vec<(Key, ServiceInstance)> = next
            .into_iter()
            .filter(|(k, v)| state.instances.get(k).is_none_or(|e| *e.instance != *v))
            .collect();
        let count = removed.len() + changed.len();
        if count > 0 {
            state.revision += 1;
        }
        let revision = state.revision;
        for key in removed {
            state.instances.remove(&key);
            self.send(StoreEvent::Delete {
                revision,
                service: key.0,
                id: key.1,
            });
        }
        for (key, instance) in changed {
            let instance = Arc::new(instance);
            state.instances.insert(
                key,
                Entry {
                    instance: instance.clone(),
                    token: NO_TOKEN,
                },
            );
            self.send(StoreEvent::Put { revision, instance });
        }
        if state.problem.take().is_some() {
            self.send(StoreEvent::Synced { revision });
        }
        count
    }

    /// Reports a problem to watchers (once per distinct problem). Returns whether it is new.
    pub(crate) fn set_problem(&self, problem: FileError) -> bool {
        let mut state = self.state.lock();
        if state.problem.as_ref() == Some(&problem) {
            return false;
        }
        state.problem = Some(problem.clone());
        self.send(StoreEvent::Problem(problem));
        true
    }

    pub(crate) fn problem(&self) -> Option<FileError> {
        self.state.lock().problem.clone()
    }

    pub(crate) fn list(&self) -> Listing {
        let state = self.state.lock();
        Listing {
            revision: state.revision,
            instances: state
                .instances
                .values()
                .map(|e| e.instance.clone())
                .collect(),
        }
    }

    /// Subscribes and takes the first event, under the lock so nothing falls between them.
    fn subscribe(
        &self,
        after: Option<Revision>,
    ) -> (
        broadcast::Receiver<StoreEvent>,
        WatchEvent,
        Option<FileError>,
    ) {
        let state = self.state.lock();
        let rx = self.events.subscribe();
        let first = match after {
            Some(r) if r == state.revision => WatchEvent::Synced { revision: r },
            _ => WatchEvent::Snapshot {
                revision: state.revision,
                instances: state
                    .instances
                    .values()
                    .map(|e| e.instance.clone())
                    .collect(),
            },
        };
        (rx, first, state.problem.clone())
    }

    /// The stream behind `Registry::watch`. It holds the store weakly: when the registry is
    /// dropped the stream ends with `Closed`.
    pub(crate) fn watch(self: &Arc<Self>, after: Option<Revision>) -> WatchStream {
        let store: Weak<Store> = Arc::downgrade(self);
        let backend = self.backend;
        Box::pin(async_stream::stream! {
            let Some(s) = store.upgrade() else {
                yield Err(RegistryError::Closed { backend });
                return;
            };
            let (mut rx, first, problem) = s.subscribe(after);
            drop(s);
            yield Ok(first);
            if let Some(problem) = problem {
                yield Err(RegistryError::File(problem));
            }
            loop {
                match rx.recv().await {
                    Ok(StoreEvent::Put { revision, instance }) => {
                        yield Ok(WatchEvent::Put { revision, instance });
                    }
                    Ok(StoreEvent::Delete { revision, service, id }) => {
                        yield Ok(WatchEvent::Delete { revision, service, id });
                    }
                    Ok(StoreEvent::Synced { revision }) => {
                        yield Ok(WatchEvent::Synced { revision });
                    }
                    Ok(StoreEvent::Problem(problem)) => {
                        yield Err(RegistryError::File(problem));
                    }
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        // Fell behind the bounded buffer: start over from a snapshot.
                        let Some(s) = store.upgrade() else {
                            yield Err(RegistryError::Closed { backend });
                            return;
                        };
                        tracing::debug!(backend, missed, "registry watcher lagged; resyncing with a snapshot");
                        let (fresh, first, _) = s.subscribe(None);
                        drop(s);
                        rx = fresh;
                        yield Ok(first);
                    }
                    Err(broadcast::error::RecvError::Closed) => {
                        yield Err(RegistryError::Closed { backend });
                        return;
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;

    fn instance(service: &str, id: &str, port: u16) -> ServiceInstance {
        ServiceInstance::new(service, id, ([127, 0, 0, 1], port).into())
    }

    #[tokio::test]
    async fn watch_sees_snapshot_then_changes() {
        let store = Store::new("test", 16);
        let token = store.upsert(Arc::new(instance("a", "1", 1)));
        let mut watch = store.watch(None);
        let first = watch.next().await.unwrap().unwrap();
        assert!(
            matches!(first, WatchEvent::Snapshot { revision: 1, ref instances } if instances.len() == 1)
        );
        store.upsert(Arc::new(instance("a", "2", 2)));
        assert!(!store.remove("a", "1", Some(token + 100)), "wrong token");
        assert!(store.remove("a", "1", Some(token)));
        assert!(matches!(
            watch.next().await.unwrap().unwrap(),
            WatchEvent::Put { revision: 2, .. }
        ));
        assert_eq!(
            watch.next().await.unwrap().unwrap(),
            WatchEvent::Delete {
                revision: 3,
                service: "a".into(),
                id: "1".into()
            }
        );
    }

    #[tokio::test]
    async fn resume_at_current_revision_sends_synced() {
        let store = Store::new("test", 16);
        store.upsert(Arc::new(instance("a", "1", 1)));
        let mut watch = store.watch(Some(1));
        assert_eq!(
            watch.next().await.unwrap().unwrap(),
            WatchEvent::Synced { revision: 1 }
        );
        // An unknown revision: a snapshot.
        let mut watch = store.watch(Some(7));
        assert!(matches!(
            watch.next().await.unwrap().unwrap(),
            WatchEvent::Snapshot { revision: 1, .. }
        ));
    }

    #[tokio::test]
    async fn lagging_watcher_gets_a_snapshot_not_a_queue() {
        let store = Store::new("test", 4);
        let mut watch = store.watch(None);
        assert!(matches!(
            watch.next().await.unwrap().unwrap(),
            WatchEvent::Snapshot { .. }
        ));
        for i in 0..100 {
            store.upsert(Arc::new(instance("a", &i.to_string(), 1000 + i)));
        }
        match watch.next().await.unwrap().unwrap() {
            WatchEvent::Snapshot {
                revision,
                instances,
            } => {
                assert_eq!(revision, 100);
                assert_eq!(instances.len(), 100);
            }
            other => panic!("expected a resync snapshot, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn replace_all_diffs_at_one_revision() {
        let store = Store::new("test", 16);
        store.replace_all(vec![instance("a", "1", 1), instance("a", "2", 2)]);
        let mut watch = store.watch(None);
        watch.next().await.unwrap().unwrap();
        let changed = store.replace_all(vec![instance("a", "2", 22), instance("b", "1", 3)]);
        assert_eq!(changed, 3);
        let mut revisions = Vec::new();
        for _ in 0..3 {
            revisions.push(watch.next().await.unwrap().unwrap().revision());
        }
        assert_eq!(revisions, vec![2, 2, 2]);
        // Same content again: no change, no revision.
        assert_eq!(
            store.replace_all(vec![instance("a", "2", 22), instance("b", "1", 3)]),
            0
        );
        assert_eq!(store.list().revision, 2);
    }

    #[tokio::test]
    async fn stream_ends_when_the_store_is_dropped() {
        let store = Store::new("test", 16);
        let mut watch = store.watch(None);
        watch.next().await.unwrap().unwrap();
        drop(store);
        assert!(matches!(
            watch.next().await,
            Some(Err(RegistryError::Closed { .. }))
        ));
        assert!(watch.next().await.is_none());
    }
}
