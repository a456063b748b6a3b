//! The embedded registry and the catalog on top of it, including a registry that goes away and
//! comes back (a wrapper that cuts the watch), so the catalog's reconnect path is covered without
//! etcd.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::init_tracing;
use futures::StreamExt;
use futures::future::BoxFuture;
use tideway_registry::{
    Catalog, CatalogConfig, CatalogSnapshot, CatalogStatus, EmbeddedRegistry, Listing,
    Registration, RegistrationState, Registry, RegistryError, Revision, ServiceInstance,
    WatchEvent, WatchStream,
};
use tokio_util::sync::CancellationToken;

const SOON: Duration = Duration::from_secs(10);

fn instance(service: &str, id: &str, port: u16) -> ServiceInstance {
    ServiceInstance::new(service, id, SocketAddr::from(([127, 0, 0, 1], port)))
}

fn fast() -> CatalogConfig {
    CatalogConfig {
        backoff_min: Duration::from_millis(10),
        backoff_max: Duration::from_millis(100),
        ..CatalogConfig::default()
    }
}

async fn wait_for(catalog: &Catalog, what: &str, condition: impl FnMut(&CatalogSnapshot) -> bool) {
    catalog
        .wait_until(SOON, condition)
        .await
        .unwrap_or_else(|| {
            panic!(
                "timed out waiting for {what}; status {:?}",
                catalog.status()
            )
        });
}

#[tokio::test]
async fn register_watch_deregister() {
    init_tracing();
    let registry = Arc::new(EmbeddedRegistry::new());
    let a = registry.register(instance("svc", "a", 1)).await.unwrap();
    let catalog = Catalog::spawn(registry.clone(), fast()).unwrap();
    let snapshot = catalog.wait_synced(SOON).await.unwrap();
    assert_eq!(snapshot.instance_count(), 1);
    assert_eq!(snapshot.revision(), 1);

    let b = registry.register(instance("svc", "b", 2)).await.unwrap();
    let other = registry.register(instance("other", "x", 3)).await.unwrap();
    wait_for(&catalog, "three instances", |s| s.instance_count() == 3).await;
    let snapshot = catalog.snapshot();
    assert_eq!(snapshot.service_count(), 2);
    let ids: Vec<_> = snapshot
        .service("svc")
        .unwrap()
        .instances()
        .iter()
        .map(|i| i.id.as_str())
        .collect();
    assert_eq!(ids, ["a", "b"]);
    assert!(matches!(
        catalog.status(),
        CatalogStatus::Synced { revision: 3, .. }
    ));

    // Unchanged services keep their Arc across snapshots.
    let svc_before = snapshot.service("svc").unwrap().clone();
    drop(other); // dropping the handle removes the instance
    wait_for(&catalog, "other gone", |s| s.service("other").is_none()).await;
    assert!(Arc::ptr_eq(
        &svc_before,
        catalog.snapshot().service("svc").unwrap()
    ));

    a.deregister().await.unwrap();
    assert_eq!(b.state(), RegistrationState::Active);
    wait_for(&catalog, "a gone", |s| s.instance("svc", "a").is_none()).await;
    assert_eq!(registry.list().await.unwrap().instances.len(), 1);

    // Operator removal.
    assert!(registry.deregister("svc", "b").await.unwrap());
    assert!(!registry.deregister("svc", "b").await.unwrap());
    wait_for(&catalog, "empty", |s| s.instance_count() == 0).await;
    drop(b); // its instance is gone already: nothing happens
}

#[tokio::test]
async fn the_last_writer_wins_and_an_old_handle_does_not_remove_the_new_one() {
    let registry = EmbeddedRegistry::new();
    let old = registry.register(instance("svc", "a", 1)).await.unwrap();
    let new = registry.register(instance("svc", "a", 2)).await.unwrap();
    drop(old);
    let listing = registry.list().await.unwrap();
    assert_eq!(listing.instances.len(), 1);
    assert_eq!(listing.instances[0].addr.port(), 2);
    new.deregister().await.unwrap();
    assert!(registry.list().await.unwrap().instances.is_empty());
}

#[tokio::test]
async fn invalid_instances_are_refused() {
    let registry = EmbeddedRegistry::new();
    for bad in [
        instance("", "a", 1),
        instance("svc", "", 1),
        instance("svc", "a", 1).with_weight(0),
        instance("svc", "a", 0),
        ServiceInstance::new("svc", "a", "0.0.0.0:80".parse().unwrap()),
    ] {
        let err = registry.register(bad.clone()).await.unwrap_err();
        assert!(matches!(err, RegistryError::Invalid(_)), "{bad:?}: {err}");
        assert!(!err.is_retryable());
    }
    assert!(registry.list().await.unwrap().instances.is_empty());
}

#[tokio::test]
async fn the_catalog_holds_at_most_max_instances() {
    let registry = Arc::new(EmbeddedRegistry::new());
    let mut kept = Vec::new();
    for i in 0..5 {
        kept.push(
            registry
                .register(instance("svc", &format!("i{i}"), 1000 + i))
                .await
                .unwrap(),
        );
    }
    let catalog = Catalog::spawn(
        registry.clone(),
        CatalogConfig {
            max_instances: 3,
            ..fast()
        },
    )
    .unwrap();
    let snapshot = catalog.wait_synced(SOON).await.unwrap();
    assert_eq!(snapshot.instance_count(), 3);
    kept.push(
        registry
            .register(instance("svc", "late", 2000))
            .await
            .unwrap(),
    );
    catalog
        .wait_until(SOON, |s| s.revision() == 6)
        .await
        .expect("revision 6 applied");
    assert_eq!(catalog.snapshot().instance_count(), 3);
    assert_eq!(catalog.counters().skipped_instances, 3);
}

/// An embedded registry behind a switch: while "down", watches fail at once and live streams
/// are cut, like a registry whose network went away.
#[derive(Debug)]
struct Flaky {
    inner: EmbeddedRegistry,
    down: AtomicBool,
    cut: parking_lot::Mutex<CancellationToken>,
}

impl Flaky {
    fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
        if down {
            let mut cut = self.cut.lock();
            cut.cancel();
            *cut = CancellationToken::new();
        }
    }
}

impl Registry for Flaky {
    fn backend(&self) -> &'static str {
        "flaky"
    }
    fn register(
        &self,
        instance: ServiceInstance,
    ) -> BoxFuture<'_, Result<Registration, RegistryError>> {
        self.inner.register(instance)
    }
    fn deregister<'a>(
        &'a self,
        service: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, Result<bool, RegistryError>> {
        self.inner.deregister(service, id)
    }
    fn list(&self) -> BoxFuture<'_, Result<Listing, RegistryError>> {
        self.inner.list()
    }
    fn watch(&self, after: Option<Revision>) -> WatchStream {
        if self.down.load(Ordering::SeqCst) {
            return futures::stream::once(async {
                Err(RegistryError::Unavailable {
                    backend: "flaky",
                    op: "watch",
                    source: "switched off".into(),
                })
            })
            .boxed();
        }
        let cut = self.cut.lock().clone();
        let lost = futures::stream::once(async {
            Err(RegistryError::Unavailable {
                backend: "flaky",
                op: "watch",
                source: "connection lost".into(),
            })
        });
        // The inner stream until cut, then one error, then the end.
        self.inner
            .watch(after)
            .take_until(cut.cancelled_owned())
            .chain(lost)
            .boxed()
    }
}

#[tokio::test]
async fn catalog_keeps_last_state_while_disconnected_and_resumes() {
    init_tracing();
    let flaky = Arc::new(Flaky {
        inner: EmbeddedRegistry::new(),
        down: AtomicBool::new(false),
        cut: parking_lot::Mutex::new(CancellationToken::new()),
    });
    let _a = flaky.register(instance("svc", "a", 1)).await.unwrap();
    let catalog = Catalog::spawn(flaky.clone(), fast()).unwrap();
    catalog.wait_synced(SOON).await.unwrap();
    let before = catalog.snapshot();

    flaky.set_down(true);
    let mut status = catalog.subscribe_status();
    tokio::time::timeout(
        SOON,
        status.wait_for(
            |s| matches!(s, CatalogStatus::Disconnected { attempts, .. } if *attempts >= 2),
        ),
    )
    .await
    .expect("Disconnected with retries")
    .unwrap();
    let CatalogStatus::Disconnected {
        last_error,
        revision,
        ..
    } = catalog.status()
    else {
        unreachable!()
    };
    assert!(last_error.contains("switched off"), "{last_error}");
    assert_eq!(revision, 1);
    // Changes while down are not seen; the last state stays.
    let _b = flaky.register(instance("svc", "b", 2)).await.unwrap();
    assert_eq!(catalog.snapshot(), before);

    let resyncs = catalog.counters().resyncs;
    flaky.set_down(false);
    wait_for(&catalog, "b after reconnecting", |s| {
        s.instance("svc", "b").is_some()
    })
    .await;
    catalog.wait_synced(SOON).await.unwrap();
    // The embedded registry cannot replay from revision 1 (it is at 2): a resync.
    assert_eq!(catalog.counters().resyncs, resyncs + 1);
    assert!(catalog.counters().reconnects >= 2);

    // Cut again with nothing changed: resuming at the same revision needs no resync.
    flaky.set_down(true);
    tokio::time::timeout(
        SOON,
        status.wait_for(|s| matches!(s, CatalogStatus::Disconnected { .. })),
    )
    .await
    .unwrap()
    .unwrap();
    flaky.set_down(false);
    catalog.wait_synced(SOON).await.unwrap();
    assert_eq!(catalog.counters().resyncs, resyncs + 1);
}

#[tokio::test]
async fn watch_resumes_or_resyncs() {
    let registry = EmbeddedRegistry::new();
    let _a = registry.register(instance("svc", "a", 1)).await.unwrap();
    let mut watch = registry.watch(None);
    let Some(Ok(WatchEvent::Snapshot {
        revision: 1,
        instances,
    })) = watch.next().await
    else {
        panic!("snapshot first")
    };
    assert_eq!(instances.len(), 1);
    let mut resumed = registry.watch(Some(1));
    assert_eq!(
        resumed.next().await.unwrap().unwrap(),
        WatchEvent::Synced { revision: 1 }
    );
    let _b = registry.register(instance("svc", "b", 2)).await.unwrap();
    for stream in [&mut watch, &mut resumed] {
        let event = stream.next().await.unwrap().unwrap();
        assert!(
            matches!(event, WatchEvent::Put { revision: 2, ref instance } if instance.id == "b")
        );
    }
}
