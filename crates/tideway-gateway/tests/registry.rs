//! The gateway following a registry (the embedded backend; the etcd backend is exercised the same
//! way in `crates/tideway/tests/etcd.rs`): instances and routes arrive and leave without a
//! restart, on real sockets.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tideway_cluster::{Balancer, ClusterConfig};
use tideway_gateway::config::{GatewayConfig, ServerSettings};
use tideway_gateway::discovery::StaticSources;
use tideway_gateway::{Gateway, RouteTable, RpcBackends, assemble};
use tideway_registry::{
    Catalog, CatalogConfig, EmbeddedRegistry, Registration, Registry, ServiceInstance,
};
use tideway_rpc::{ClientConfig, RpcError, Server, ServerHandle};
use tokio::time::Instant;

/// Answers with the name of the instance that served the call.
#[tideway_macros::service(name = "test.Who")]
trait Who {
    #[route(GET, "/who")]
    async fn who(&self) -> Result<String, RpcError>;
}

#[derive(Clone)]
struct Named(&'static str);

impl Who for Named {
    async fn who(&self) -> Result<String, RpcError> {
        Ok(self.0.to_owned())
    }
}

async fn instance(name: &'static str) -> ServerHandle {
    Server::builder()
        .add_service(WhoServer::new(Named(name)))
        .bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

async fn register(registry: &Arc<dyn Registry>, id: &str, addr: SocketAddr) -> Registration {
    registry
        .register(ServiceInstance::for_service(
            &WhoClient::DESCRIPTOR,
            id,
            addr,
        ))
        .await
        .unwrap()
}

async fn gateway_following(registry: &Arc<dyn Registry>, sources: StaticSources) -> Gateway {
    let gateway = Gateway::start(
        ServerSettings {
            listen: "127.0.0.1:0".parse().unwrap(),
            ..Default::default()
        },
        RouteTable::default(),
        RpcBackends::new(),
    )
    .await
    .unwrap();
    let catalog = Catalog::spawn(Arc::clone(registry), CatalogConfig::default()).unwrap();
    catalog.wait_synced(Duration::from_secs(5)).await.unwrap();
    gateway.follow_registry(catalog, sources, ClientConfig::default());
    gateway
}

/// Status and body of `GET path` through the gateway, with curl.
fn get(gateway: &Gateway, path: &str) -> (u16, String) {
    let out = std::process::Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}", "--max-time", "5"])
        .arg(format!("http://{}{path}", gateway.local_addr()))
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

/// Polls `GET path` until `accept` says yes; panics with the last answer after 5 s.
async fn eventually(gateway: &Gateway, path: &str, accept: impl Fn(u16, &str) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, body) = get(gateway, path);
        if accept(status, &body) {
            return;
        }
        assert!(Instant::now() < deadline, "still {status} {body} after 5 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_and_routes_follow_the_registry() {
    let registry: Arc<dyn Registry> = Arc::new(EmbeddedRegistry::new());
    // Round robin, so every instance takes calls at once (p2c prefers the instance with latency
    // samples while the load is one call at a time).
    let mut sources = StaticSources::default();
    sources.clusters.insert(
        "default".into(),
        ClusterConfig {
            balancer: Balancer::RoundRobin,
            ..ClusterConfig::default()
        },
    );
    let gateway = gateway_following(&registry, sources).await;
    // Nothing registered: the route is unknown.
    assert_eq!(get(&gateway, "/who").0, 404);

    // A new instance becomes routable, with the route its service publishes.
    let a = instance("a").await;
    let reg_a = register(&registry, "a", a.local_addr()).await;
    eventually(&gateway, "/who", |s, b| s == 200 && b == "\"a\"").await;

    // A second instance shares the calls.
    let b = instance("b").await;
    let reg_b = register(&registry, "b", b.local_addr()).await;
    eventually(&gateway, "/who", |s, b| s == 200 && b == "\"b\"").await;

    // Deregistered: no call reaches `a` any more.
    reg_a.deregister().await.unwrap();
    eventually(&gateway, "/who", |_, _| {
        gateway.routes().routes().len() == 1
            && (0..20).all(|_| get(&gateway, "/who") == (200, "\"b\"".to_owned()))
    })
    .await;

    // The last instance gone: the route stays and answers 503 (retryable), not 404.
    reg_b.deregister().await.unwrap();
    eventually(&gateway, "/who", |s, b| {
        s == 503 && b.contains("unavailable")
    })
    .await;

    // It comes back: routable again.
    let _reg_b = register(&registry, "b", b.local_addr()).await;
    eventually(&gateway, "/who", |s, b| s == 200 && b == "\"b\"").await;
    gateway.shutdown(Duration::from_secs(1)).await;
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_routes_win_over_published_ones() {
    let registry: Arc<dyn Registry> = Arc::new(EmbeddedRegistry::new());
    let config = GatewayConfig::parse(
        r#"
[[routes]]
path = "/who"
methods = ["GET"]
upstream = "http://127.0.0.1:9"
"#,
        "test.toml",
        std::iter::empty(),
    )
    .unwrap();
    let sources = assemble::static_sources(&config, &[]).unwrap();
    let gateway = gateway_following(&registry, sources).await;
    let a = instance("a").await;
    let _reg = register(&registry, "a", a.local_addr()).await;
    // The file's route stays after the registry change is applied (an absence, so a bounded
    // wait): the upstream on port 9 refuses connections, so 502, never the instance's answer.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let routes = gateway.routes();
    assert_eq!(routes.routes().len(), 1, "{:?}", routes.routes());
    assert!(routes.routes()[0].origin.starts_with("config"));
    assert_eq!(get(&gateway, "/who").0, 502);
    gateway.shutdown(Duration::from_secs(1)).await;
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_fallback_answers_when_every_attempt_failed() {
    let registry: Arc<dyn Registry> = Arc::new(EmbeddedRegistry::new());
    let config = GatewayConfig::parse(
        r#"
[registry]
backend = "embedded"

[clusters.default]
fail_fast_after = "100ms"

[[routes]]
path = "/who-or-nobody"
service = "test.Who"
rpc_method = "who"
fallback = { status = 200, body = { who = "nobody" } }
"#,
        "test.toml",
        std::iter::empty(),
    )
    .unwrap();
    let sources = assemble::static_sources(&config, &[]).unwrap();
    let gateway = gateway_following(&registry, sources).await;
    // No instance: the call fails fast and the route's fallback answers, marked as such.
    let out = std::process::Command::new("curl")
        .args(["-s", "-i", "--max-time", "5"])
        .arg(format!("http://{}/who-or-nobody", gateway.local_addr()))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_lowercase();
    assert!(text.starts_with("http/1.1 200"), "{text}");
    assert!(text.contains("x-tideway-fallback: true"), "{text}");
    assert!(text.contains(r#"{"who":"nobody"}"#), "{text}");
    // An instance registers: the service answers itself.
    let a = instance("a").await;
    let reg = register(&registry, "a", a.local_addr()).await;
    eventually(&gateway, "/who-or-nobody", |s, b| s == 200 && b == "\"a\"").await;
    // It leaves: the service's cluster has no endpoint, the call fails fast (100 ms here) and
    // the fallback answers again.
    reg.deregister().await.unwrap();
    eventually(&gateway, "/who-or-nobody", |s, b| {
        s == 200 && b == r#"{"who":"nobody"}"#
    })
    .await;
    gateway.shutdown(Duration::from_secs(1)).await;
    a.shutdown().await;
}
