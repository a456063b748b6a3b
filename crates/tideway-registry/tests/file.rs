//! The file registry: reload on change, a bad file keeps the last good state and reports where
//! it is wrong, recovery when it is fixed.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::{eventually, init_tracing};
use tideway_registry::{
    Catalog, CatalogConfig, CatalogSnapshot, CatalogStatus, FileConfig, FileRegistry, Registry,
    RegistryError, ServiceInstance,
};

const SOON: Duration = Duration::from_secs(10);

const GOOD: &str = r#"
[[services]]
name = "logistics.Waybills"

[[services.routes]]
name = "get"
http_method = "GET"
path = "/api/waybills/{id}"
params = [{ name = "id", rust_type = "String" }]

[[services.instances]]
id = "wb-1"
addr = "127.0.0.1:7001"
zone = "a"
"#;

const MORE: &str = r#"
[[services.instances]]
id = "wb-2"
addr = "127.0.0.1:7002"
weight = 50

[[services]]
name = "logistics.Pricing"
instances = [{ id = "p-1", addr = "127.0.0.1:7101" }]
"#;

/// Writes the file the way editors and config tools do: a temporary file renamed over it.
fn write(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn config(path: &Path) -> FileConfig {
    FileConfig {
        poll_interval: Duration::from_millis(50),
        ..FileConfig::new(path)
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

async fn wait_status(catalog: &Catalog, what: &str, condition: impl Fn(&CatalogStatus) -> bool) {
    let mut status = catalog.subscribe_status();
    tokio::time::timeout(SOON, status.wait_for(|s| condition(s)))
        .await
        .unwrap_or_else(|_| {
            panic!(
                "timed out waiting for {what}; status {:?}",
                catalog.status()
            )
        })
        .unwrap();
}

#[tokio::test]
async fn reloads_on_change_and_keeps_the_last_good_state() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("services.toml");
    write(&path, GOOD);
    let registry = Arc::new(FileRegistry::open(config(&path)).await.unwrap());
    assert_eq!(registry.path(), path);
    let catalog = Catalog::spawn(registry.clone(), CatalogConfig::default()).unwrap();
    let snapshot = catalog.wait_synced(SOON).await.unwrap();
    let wb1 = snapshot.instance("logistics.Waybills", "wb-1").unwrap();
    assert_eq!(wb1.zone.as_deref(), Some("a"));
    assert_eq!(wb1.routes[0].full_name, "logistics.Waybills/get");

    // A change is picked up.
    write(&path, &format!("{GOOD}{MORE}"));
    wait_for(&catalog, "the added instances", |s| s.instance_count() == 3).await;
    let good_state = catalog.snapshot();
    assert_eq!(
        good_state
            .instance("logistics.Waybills", "wb-2")
            .unwrap()
            .weight,
        50
    );

    // A file that does not parse: the state stays, the status says where the problem is.
    let bad = format!("{GOOD}{MORE}\n[[services]]\nname = 42\n");
    let bad_line = bad.lines().position(|l| l == "name = 42").unwrap() + 1;
    write(&path, &bad);
    wait_status(&catalog, "Degraded", |s| {
        matches!(s, CatalogStatus::Degraded { .. })
    })
    .await;
    let CatalogStatus::Degraded { error, .. } = catalog.status() else {
        unreachable!()
    };
    assert!(error.contains("services.toml:"), "{error}");
    let problem = registry.last_error().expect("last_error set");
    assert_eq!((problem.line, problem.column), (bad_line, 8), "{problem}");
    assert_eq!(catalog.snapshot(), good_state, "last good state kept");
    assert_eq!(registry.list().await.unwrap().instances.len(), 3);

    // Fixed (back to the very same content as the last good file): synced again.
    write(&path, &format!("{GOOD}{MORE}"));
    wait_status(&catalog, "Synced", CatalogStatus::is_synced).await;
    assert!(registry.last_error().is_none());
    assert_eq!(catalog.snapshot().instance_count(), 3);

    // Removed: the state stays, reported; restored with a change: applied.
    std::fs::remove_file(&path).unwrap();
    wait_status(&catalog, "Degraded after removal", |s| {
        matches!(s, CatalogStatus::Degraded { .. })
    })
    .await;
    assert_eq!(catalog.snapshot().instance_count(), 3);
    write(&path, GOOD);
    wait_for(&catalog, "back to one instance", |s| {
        s.instance_count() == 1
    })
    .await;
    wait_status(&catalog, "Synced after restore", CatalogStatus::is_synced).await;

    // Invalid records are skipped; the rest applies.
    write(
        &path,
        &format!(
            "{GOOD}\n[[services.instances]]\nid = \"zero\"\naddr = \"127.0.0.1:7003\"\nweight = 0\n\n[[services.instances]]\nid = \"wb-3\"\naddr = \"127.0.0.1:7004\"\n"
        ),
    );
    wait_for(&catalog, "wb-3 applied, zero skipped", |s| {
        s.instance("logistics.Waybills", "wb-3").is_some()
    })
    .await;
    assert!(
        catalog
            .snapshot()
            .instance("logistics.Waybills", "zero")
            .is_none()
    );
}

#[tokio::test]
async fn rewrites_within_the_same_second_are_seen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("services.toml");
    std::fs::write(&path, GOOD).unwrap();
    let registry = FileRegistry::open(config(&path)).await.unwrap();
    // In-place rewrites, same length, quickly after each other.
    for port in [7005, 7006, 7007] {
        std::fs::write(&path, GOOD.replace("7001", &port.to_string())).unwrap();
        eventually(SOON, "the rewrite", || {
            let registry = &registry;
            async move {
                let listing = registry.list().await.unwrap();
                (listing.instances[0].addr.port() == port).then_some(())
            }
        })
        .await;
    }
}

#[tokio::test]
async fn open_fails_on_a_bad_file_and_the_registry_is_read_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("services.json");
    std::fs::write(&path, "{\n  \"services\": [\n    {\"name\": }\n  ]\n}").unwrap();
    let err = FileRegistry::open(config(&path)).await.unwrap_err();
    let RegistryError::File(problem) = &err else {
        panic!("{err}")
    };
    assert_eq!(problem.line, 3, "{problem}");
    assert!(err.is_retryable());

    let missing = FileRegistry::open(config(&dir.path().join("nope.toml")))
        .await
        .unwrap_err();
    assert!(
        matches!(missing, RegistryError::File(ref p) if p.line == 0),
        "{missing}"
    );

    std::fs::write(
        &path,
        r#"{"services": [{"name": "svc", "instances": [{"id": "a", "addr": "127.0.0.1:1"}]}]}"#,
    )
    .unwrap();
    let registry = FileRegistry::open(config(&path)).await.unwrap();
    assert_eq!(registry.list().await.unwrap().instances.len(), 1);
    let err = registry
        .register(ServiceInstance::new(
            "svc",
            "b",
            "127.0.0.1:2".parse().unwrap(),
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(err, RegistryError::ReadOnly { backend: "file" }),
        "{err}"
    );
    assert!(registry.deregister("svc", "a").await.is_err());
    // reload() applies at once.
    std::fs::write(&path, r#"{"services": []}"#).unwrap();
    assert_eq!(registry.reload().await.unwrap(), 1);
    assert!(registry.list().await.unwrap().instances.is_empty());
}

#[tokio::test]
async fn open_by_config() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("services.toml");
    std::fs::write(&path, GOOD).unwrap();
    let config: tideway_registry::RegistryConfig = toml::from_str(&format!(
        "backend = \"file\"\npath = {:?}\npoll_interval = \"50ms\"",
        path
    ))
    .unwrap();
    let registry = tideway_registry::open(&config).await.unwrap();
    assert_eq!(registry.backend(), "file");
    assert_eq!(registry.list().await.unwrap().instances.len(), 1);
    let embedded = tideway_registry::open(&tideway_registry::RegistryConfig::Embedded)
        .await
        .unwrap();
    assert_eq!(embedded.backend(), "embedded");
    #[cfg(not(feature = "etcd"))]
    {
        let etcd = tideway_registry::RegistryConfig::Etcd(tideway_registry::EtcdConfig::default());
        assert!(matches!(
            tideway_registry::open(&etcd).await,
            Err(RegistryError::NotCompiled("etcd"))
        ));
    }
}
