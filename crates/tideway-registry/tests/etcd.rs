//! The etcd backend against a real etcd server (Debian's etcd-server, started per test on
//! ephemeral ports with a temporary data dir). Needs the crate feature `etcd`.

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{EtcdServer, Proxy, etcd_client, eventually, free_port, init_tracing};
use tideway_registry::etcd_client::{CompactionOptions, PutOptions};
use tideway_registry::{
    Catalog, CatalogConfig, CatalogSnapshot, CatalogStatus, EtcdConfig, EtcdRegistry,
    RegistrationState, Registry, RouteMeta, ServiceInstance, instance_key,
};
use tideway_rpc::{MethodDescriptor, ParamDescriptor, ServiceDescriptor};

/// Generous bound for anything that should happen "soon" on a loaded 2-core machine.
const SOON: Duration = Duration::from_secs(15);

const PRICING: ServiceDescriptor = ServiceDescriptor {
    name: "logistics.Pricing",
    methods: &[MethodDescriptor {
        name: "quote",
        full_name: "logistics.Pricing/quote",
        http_method: "POST",
        path: "/api/quotes",
        conventional_route: false,
        timeout_ms: Some(2000),
        params: &[ParamDescriptor {
            name: "request",
            rust_type: "QuoteRequest",
            body: true,
            schema: None,
        }],
    }],
};

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Settings for tests: short deadlines and backoff so failures show quickly.
fn config(endpoint: String, lease_ttl: Duration) -> EtcdConfig {
    EtcdConfig {
        lease_ttl,
        keep_alive_interval: (lease_ttl / 4).max(Duration::from_millis(200)),
        connect_timeout: Duration::from_millis(500),
        request_timeout: Duration::from_secs(2),
        backoff_min: Duration::from_millis(50),
        backoff_max: Duration::from_millis(500),
        ..EtcdConfig::new([endpoint])
    }
}

fn catalog_config() -> CatalogConfig {
    CatalogConfig {
        backoff_min: Duration::from_millis(50),
        backoff_max: Duration::from_millis(500),
        ..CatalogConfig::default()
    }
}

async fn catalog_of(registry: &EtcdRegistry) -> Catalog {
    init_tracing();
    let registry: Arc<dyn Registry> = Arc::new(registry.clone());
    let catalog = Catalog::spawn(registry, catalog_config()).unwrap();
    catalog.wait_synced(SOON).await.expect("catalog synced");
    catalog
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

fn has(s: &CatalogSnapshot, service: &str, id: &str) -> bool {
    s.instance(service, id).is_some()
}

async fn lease_of(client: &mut tideway_registry::etcd_client::Client, key: &str) -> i64 {
    let response = client.get(key, None).await.unwrap();
    response.kvs().first().map_or(0, |kv| kv.lease())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_watch_deregister_and_bad_records() {
    let etcd = EtcdServer::start();
    let registry = EtcdRegistry::connect(config(etcd.endpoint(), Duration::from_secs(10)))
        .await
        .unwrap();
    let catalog = catalog_of(&registry).await;
    let mut admin = etcd_client(&etcd).await;

    // Register: the catalog sees the instance with its routes; the key follows the layout.
    let instance = ServiceInstance::for_service(&PRICING, "p-1", addr(7001))
        .with_weight(7)
        .with_zone("eu-1");
    let registration = registry.register(instance.clone()).await.unwrap();
    assert_eq!(registration.state(), RegistrationState::Active);
    wait_for(&catalog, "p-1 registered", |s| {
        has(s, "logistics.Pricing", "p-1")
    })
    .await;
    let snapshot = catalog.snapshot();
    let seen = snapshot.instance("logistics.Pricing", "p-1").unwrap();
    assert_eq!(**seen, instance);
    assert_eq!(
        snapshot.service("logistics.Pricing").unwrap().routes(),
        vec![&RouteMeta::from(&PRICING.methods[0])]
    );
    let key = instance_key("/tideway", "logistics.Pricing", "p-1");
    let stored = admin.get(key.as_str(), None).await.unwrap();
    let kv = &stored.kvs()[0];
    assert_ne!(kv.lease(), 0, "bound to a lease");
    let decoded: ServiceInstance = serde_json::from_slice(kv.value()).unwrap();
    assert_eq!(decoded, instance);
    let listing = registry.list().await.unwrap();
    assert_eq!(listing.instances.len(), 1);
    assert!(listing.revision >= 2);

    // Bad records are skipped, never a panic; a key that turns bad drops its instance.
    let prefix = "/tideway/services";
    admin
        .put(
            format!("{prefix}/logistics.Pricing/junk"),
            "{not json",
            None,
        )
        .await
        .unwrap();
    admin
        .put(
            format!("{prefix}/logistics.Pricing/other-id"),
            serde_json::to_vec(&ServiceInstance::new(
                "logistics.Pricing",
                "p-9",
                addr(7009),
            ))
            .unwrap(),
            None,
        )
        .await
        .unwrap();
    admin
        .put(format!("{prefix}/no-id"), "x", None)
        .await
        .unwrap();
    admin
        .put(
            format!("{prefix}/svc/zero"),
            br#"{"service":"svc","id":"zero","addr":"127.0.0.1:1","weight":0}"#.to_vec(),
            None,
        )
        .await
        .unwrap();
    admin
        .put(
            format!("{prefix}/svc/good"),
            serde_json::to_vec(&ServiceInstance::new("svc", "good", addr(7100))).unwrap(),
            None,
        )
        .await
        .unwrap();
    wait_for(&catalog, "svc/good after the bad records", |s| {
        has(s, "svc", "good")
    })
    .await;
    let snapshot = catalog.snapshot();
    assert_eq!(snapshot.instance_count(), 2, "{snapshot:?}");
    // A fresh list skips them too.
    assert_eq!(registry.list().await.unwrap().instances.len(), 2);
    admin
        .put(format!("{prefix}/svc/good"), "garbage", None)
        .await
        .unwrap();
    wait_for(
        &catalog,
        "svc/good dropped once its value is garbage",
        |s| !has(s, "svc", "good"),
    )
    .await;

    // etcd forgets the lease (revoked behind the registrant's back): it registers again.
    let first_lease = kv.lease();
    admin.lease_revoke(first_lease).await.unwrap();
    let mut admin2 = admin.clone();
    eventually(SOON, "re-registration with a new lease", || {
        let mut admin = admin2.clone();
        let key = key.clone();
        async move {
            let lease = lease_of(&mut admin, &key).await;
            (lease != 0 && lease != first_lease).then_some(())
        }
    })
    .await;
    eventually(SOON, "registration active again", || {
        let state = registration.state();
        async move { (state == RegistrationState::Active).then_some(()) }
    })
    .await;
    wait_for(&catalog, "p-1 back", |s| has(s, "logistics.Pricing", "p-1")).await;

    // Graceful deregistration revokes the lease: gone at once, not after the TTL.
    let started = Instant::now();
    registration.deregister().await.unwrap();
    wait_for(&catalog, "p-1 deregistered", |s| {
        !has(s, "logistics.Pricing", "p-1")
    })
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(lease_of(&mut admin2, &key).await, 0, "key deleted");

    // Dropping the handle revokes too (in the background).
    let dropped = registry
        .register(ServiceInstance::new("svc", "dropped", addr(7200)))
        .await
        .unwrap();
    wait_for(&catalog, "svc/dropped registered", |s| {
        has(s, "svc", "dropped")
    })
    .await;
    let started = Instant::now();
    drop(dropped);
    wait_for(&catalog, "svc/dropped gone after drop", |s| {
        !has(s, "svc", "dropped")
    })
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "took {:?}",
        started.elapsed()
    );

    // An operator's deregister.
    let _kept = registry
        .register(ServiceInstance::new("svc", "evicted", addr(7300)))
        .await
        .unwrap();
    wait_for(&catalog, "svc/evicted registered", |s| {
        has(s, "svc", "evicted")
    })
    .await;
    assert!(registry.deregister("svc", "evicted").await.unwrap());
    assert!(!registry.deregister("svc", "evicted").await.unwrap());
    wait_for(&catalog, "svc/evicted removed", |s| {
        !has(s, "svc", "evicted")
    })
    .await;

    // Invalid input is refused before anything is written.
    let err = registry
        .register(ServiceInstance::new("svc", "w0", addr(7400)).with_weight(0))
        .await
        .unwrap_err();
    assert!(!err.is_retryable(), "{err}");
    assert!(catalog.status().is_synced(), "{:?}", catalog.status());
}

/// The registrant example, built by `cargo test` next to the test binaries.
fn registrant_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let debug_dir = exe.parent().and_then(|deps| deps.parent()).unwrap();
    let path = debug_dir.join("examples").join("registrant");
    assert!(
        path.exists(),
        "{} is missing: run the whole test suite (`cargo test -p tideway-registry --features etcd`), which builds the examples",
        path.display()
    );
    path
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_registrant_disappears_when_its_lease_expires() {
    const TTL: Duration = Duration::from_secs(2);
    let etcd = EtcdServer::start();
    let registry = EtcdRegistry::connect(config(etcd.endpoint(), Duration::from_secs(10)))
        .await
        .unwrap();
    let catalog = catalog_of(&registry).await;

    let mut registrant = KillOnDrop(
        Command::new(registrant_binary())
            .args([
                etcd.endpoint().as_str(),
                "logistics.Pricing",
                "doomed",
                "127.0.0.1:7001",
                &TTL.as_secs().to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("run the registrant example"),
    );
    wait_for(&catalog, "the registrant's instance", |s| {
        has(s, "logistics.Pricing", "doomed")
    })
    .await;
    // Several keep-alives go through: the instance outlives its first TTL.
    tokio::time::sleep(TTL + Duration::from_millis(500)).await;
    assert!(
        has(&catalog.snapshot(), "logistics.Pricing", "doomed"),
        "kept alive"
    );

    registrant.0.kill().unwrap(); // SIGKILL: no chance to deregister
    let killed = Instant::now();
    let _ = registrant.0.wait();
    assert!(
        has(&catalog.snapshot(), "logistics.Pricing", "doomed"),
        "a killed process is only noticed through its lease"
    );
    wait_for(
        &catalog,
        "the killed registrant's instance to expire",
        |s| !has(s, "logistics.Pricing", "doomed"),
    )
    .await;
    let took = killed.elapsed();
    // TTL after the last keep-alive, plus etcd's expiry check (500 ms) and a loaded machine.
    assert!(
        took <= TTL + Duration::from_secs(6),
        "disappeared after {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_keeps_last_state_while_etcd_is_down_and_catches_up() {
    const TTL: Duration = Duration::from_secs(2);
    let mut etcd = EtcdServer::start();
    let registry = EtcdRegistry::connect(config(etcd.endpoint(), TTL))
        .await
        .unwrap();
    let catalog = catalog_of(&registry).await;
    let registration = registry
        .register(ServiceInstance::new("svc", "a", addr(7001)))
        .await
        .unwrap();
    wait_for(&catalog, "svc/a", |s| has(s, "svc", "a")).await;
    let key = registry.key_of("svc", "a");
    let first_lease = lease_of(&mut etcd_client(&etcd).await, &key).await;
    let before = catalog.snapshot();

    etcd.stop();
    let mut status = catalog.subscribe_status();
    tokio::time::timeout(
        SOON,
        status.wait_for(|s| matches!(s, CatalogStatus::Disconnected { .. })),
    )
    .await
    .expect("Disconnected reported")
    .unwrap();
    assert_eq!(catalog.snapshot(), before, "the last known state is kept");
    let CatalogStatus::Disconnected {
        revision,
        last_error,
        ..
    } = catalog.status()
    else {
        panic!("{:?}", catalog.status())
    };
    assert_eq!(revision, before.revision());
    assert!(!last_error.is_empty());
    // Down for longer than the TTL: the registrant declares its lease lost.
    eventually(SOON, "registration recovering", || {
        let state = registration.state();
        async move { matches!(state, RegistrationState::Recovering { .. }).then_some(()) }
    })
    .await;
    assert_eq!(catalog.snapshot(), before, "still the last known state");

    etcd.restart();
    // A change made after etcd is back, through the same client.
    let _b = tokio::time::timeout(SOON, async {
        loop {
            match registry
                .register(ServiceInstance::new("svc", "b", addr(7002)))
                .await
            {
                Ok(registration) => break registration,
                Err(e) => {
                    assert!(e.is_retryable(), "{e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    })
    .await
    .expect("register after restart");
    wait_for(&catalog, "svc/a and svc/b after the restart", |s| {
        has(s, "svc", "a") && has(s, "svc", "b")
    })
    .await;
    catalog.wait_synced(SOON).await.expect("synced again");
    eventually(SOON, "registration active again", || {
        let state = registration.state();
        async move { (state == RegistrationState::Active).then_some(()) }
    })
    .await;
    let lease = lease_of(&mut etcd_client(&etcd).await, &key).await;
    assert!(
        lease != 0 && lease != first_lease,
        "registered again with a new lease"
    );
    registration.deregister().await.unwrap();
    wait_for(&catalog, "svc/a gone", |s| !has(s, "svc", "a")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_while_disconnected_forces_a_full_resync() {
    let etcd = EtcdServer::start();
    let proxy = Proxy::start(etcd.addr()).await;
    let registry = EtcdRegistry::connect(config(proxy.endpoint(), Duration::from_secs(10)))
        .await
        .unwrap();
    let mut admin = etcd_client(&etcd).await;
    let put = |id: &str, port: u16| {
        (
            instance_key("/tideway", "svc", id),
            serde_json::to_vec(&ServiceInstance::new("svc", id, addr(port))).unwrap(),
        )
    };
    for (id, port) in [("a", 7001), ("b", 7002)] {
        let (key, value) = put(id, port);
        admin.put(key, value, None).await.unwrap();
    }
    let catalog = catalog_of(&registry).await;
    wait_for(&catalog, "svc/a and svc/b", |s| {
        has(s, "svc", "a") && has(s, "svc", "b")
    })
    .await;
    let seen = catalog.snapshot().revision();
    let resyncs_before = catalog.counters().resyncs;

    proxy.cut();
    let mut status = catalog.subscribe_status();
    tokio::time::timeout(
        SOON,
        status.wait_for(|s| matches!(s, CatalogStatus::Disconnected { .. })),
    )
    .await
    .expect("Disconnected reported")
    .unwrap();

    // While the watcher is away: a delete, a new instance, churn, then compaction past it all.
    admin
        .delete(instance_key("/tideway", "svc", "a"), None)
        .await
        .unwrap();
    let (key, value) = put("c", 7003);
    admin.put(key, value, None).await.unwrap();
    for i in 0..20u16 {
        let (key, value) = put("b", 8000 + i);
        admin
            .put(key, value, Some(PutOptions::new()))
            .await
            .unwrap();
    }
    let current = admin
        .get("/", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    assert!(current > i64::try_from(seen).unwrap() + 20);
    admin
        .compact(current, Some(CompactionOptions::new().with_physical()))
        .await
        .unwrap();

    proxy.restore();
    wait_for(&catalog, "the state after compaction", |s| {
        !has(s, "svc", "a")
            && has(s, "svc", "c")
            && s.instance("svc", "b")
                .is_some_and(|b| b.addr.port() == 8019)
    })
    .await;
    let synced = catalog.wait_synced(SOON).await.expect("synced");
    assert!(synced.revision() >= u64::try_from(current).unwrap());
    assert!(
        catalog.counters().resyncs > resyncs_before,
        "a full resync, not a resumed watch: {:?}",
        catalog.counters()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_reports_an_unreachable_etcd_from_the_start() {
    init_tracing();
    // Nothing listens there: the client is created (lazily connected), the catalog reports.
    let registry = EtcdRegistry::connect(config(
        format!("http://127.0.0.1:{}", free_port()),
        Duration::from_secs(10),
    ))
    .await
    .expect("connect is lazy");
    let registry: Arc<dyn Registry> = Arc::new(registry);
    let catalog = Catalog::spawn(registry.clone(), catalog_config()).unwrap();
    let status = catalog
        .wait_synced(Duration::from_millis(1500))
        .await
        .unwrap_err();
    let CatalogStatus::Disconnected {
        revision: 0,
        last_error,
        ..
    } = status
    else {
        panic!("{status:?}")
    };
    assert!(!last_error.is_empty());
    assert_eq!(catalog.snapshot().instance_count(), 0);
    let err = registry
        .register(ServiceInstance::new("svc", "a", addr(7001)))
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_etcd_that_lost_its_data_is_listed_again() {
    let mut etcd = EtcdServer::start();
    let registry = EtcdRegistry::connect(config(etcd.endpoint(), Duration::from_secs(10)))
        .await
        .unwrap();
    let mut admin = etcd_client(&etcd).await;
    for i in 0..5u16 {
        let id = format!("old-{i}");
        let value = serde_json::to_vec(&ServiceInstance::new("svc", &id, addr(7000 + i))).unwrap();
        admin
            .put(instance_key("/tideway", "svc", &id), value, None)
            .await
            .unwrap();
    }
    let catalog = catalog_of(&registry).await;
    wait_for(&catalog, "the old instances", |s| s.instance_count() == 5).await;

    etcd.restart_empty();
    let mut admin = etcd_client(&etcd).await;
    let value = serde_json::to_vec(&ServiceInstance::new("svc", "fresh", addr(7100))).unwrap();
    admin
        .put(instance_key("/tideway", "svc", "fresh"), value, None)
        .await
        .unwrap();
    // Its revision (2) is below what the catalog saw (6): resuming would wait for revision 7
    // and keep the old instances forever.
    wait_for(&catalog, "only the new etcd's instance", |s| {
        s.instance_count() == 1 && has(s, "svc", "fresh")
    })
    .await;
    assert!(catalog.counters().resyncs >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_endpoint_among_several_fails_no_request() {
    let etcd = EtcdServer::start();
    // Nothing listens on the first endpoint: a cluster member that is down.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let registry = EtcdRegistry::connect(EtcdConfig {
        endpoints: vec![dead, etcd.endpoint()],
        ..config(etcd.endpoint(), Duration::from_secs(10))
    })
    .await
    .unwrap();
    // The client's balancer picks either endpoint at random: unless refused requests are sent
    // again, about half of these fail.
    let mut registrations = Vec::new();
    for i in 0..20u16 {
        let instance = ServiceInstance::new("svc", format!("i{i}"), addr(7000 + i));
        registrations.push(registry.register(instance).await.unwrap());
        let listed = registry.list().await.unwrap().instances.len();
        assert_eq!(listed, usize::from(i) + 1);
    }
    let catalog = catalog_of(&registry).await;
    wait_for(&catalog, "the 20 instances", |s| s.instance_count() == 20).await;
    for registration in registrations {
        registration.deregister().await.unwrap();
    }
    wait_for(&catalog, "every instance deregistered", |s| {
        s.instance_count() == 0
    })
    .await;
    assert!(catalog.status().is_synced(), "{:?}", catalog.status());
}
