//! The `tideway` command.
//!
//! - `tideway demo`: the logistics services on a Tideway RPC server and the gateway in front of
//!   them on 127.0.0.1:8080, in one process; prints curl commands to try. With
//!   `--otlp-endpoint URL` both export their spans over OTLP/HTTP.
//! - `tideway gateway --config FILE`: the gateway alone, routing to the services and upstreams
//!   the file names.
//! - `tideway check-config FILE`: validates a config file and reports every problem with its line.
//! - `tideway serve-demo --registry etcd://HOST:PORT`: the logistics services alone, registered
//!   in etcd (with their routes) for gateways that follow the same registry.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tideway_gateway::config::ServerSettings;
use tideway_gateway::discovery::StaticSources;
use tideway_gateway::{
    DEFAULT_DRAIN_TIMEOUT, Gateway, GatewayConfig, RouteTable, RpcBackends, assemble,
};
use tideway_logistics::{
    Logistics, PricingClient, PricingServer, TrackingClient, TrackingServer, WaybillsClient,
    WaybillsServer,
};
use tideway_registry::{
    Catalog, CatalogConfig, EmbeddedRegistry, EtcdConfig, Registration, Registry, RegistryConfig,
    ServiceInstance,
};
use tideway_rpc::{ClientConfig, Server, ServerConfig, ServerHandle, ServiceDescriptor};

/// jemalloc returns freed memory to the OS (background purging), so RSS falls back after a
/// burst instead of staying at its peak as with glibc's malloc. Feature `system-alloc` keeps the
/// system allocator instead, for heap profilers that see only malloc (valgrind's DHAT).
#[cfg(all(not(target_env = "msvc"), not(feature = "system-alloc")))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Debug, Parser)]
#[command(
    name = "tideway",
    version,
    about = "Tideway microservice engine and API gateway"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the logistics demo: RPC services and the gateway in one process.
    Demo {
        /// Where the gateway listens.
        #[arg(long, default_value = "127.0.0.1:8080", env = "TIDEWAY_DEMO_LISTEN")]
        listen: SocketAddr,
        /// Where the RPC server of the demo services listens (port 0: any free port).
        #[arg(long, default_value = "127.0.0.1:0", env = "TIDEWAY_DEMO_RPC_ADDR")]
        rpc_addr: SocketAddr,
        /// Where the admin listener (/metrics, /healthz, /readyz) listens.
        #[arg(
            long,
            default_value = "127.0.0.1:9901",
            env = "TIDEWAY_DEMO_ADMIN_LISTEN"
        )]
        admin_listen: SocketAddr,
        /// Export spans over OTLP/HTTP to this collector (e.g. `http://127.0.0.1:4318`; spans
        /// are posted to `{URL}/v1/traces`): the gateway's as `tideway-gateway`, the demo
        /// services' as `tideway-demo-services`, one trace per request. Off when unset.
        #[arg(long, env = "TIDEWAY_DEMO_OTLP_ENDPOINT", value_name = "URL")]
        otlp_endpoint: Option<String>,
    },
    /// Run the gateway with a configuration file.
    Gateway {
        /// TOML configuration (see README); TIDEWAY__SECTION__KEY variables override keys.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Check a configuration file and report every problem with its location.
    CheckConfig {
        /// The file to check.
        file: PathBuf,
    },
    /// Run the logistics services alone and register them (with their routes) in a registry,
    /// for gateways that follow it.
    ServeDemo {
        /// The registry: `etcd://HOST:PORT[,HOST:PORT...]`.
        #[arg(long, env = "TIDEWAY_REGISTRY")]
        registry: String,
        /// Where the RPC server listens (port 0: any free port).
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// Lease time to live in etcd: a killed process leaves routing within it.
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        lease_ttl: Duration,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    #[cfg(not(target_env = "msvc"))]
    if let Err(e) = tikv_jemalloc_ctl::background_thread::write(true) {
        tracing::warn!(error = %e, "cannot enable jemalloc background purging");
    }
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo {
            listen,
            rpc_addr,
            admin_listen,
            otlp_endpoint,
        } => demo_observability(otlp_endpoint.as_deref()).and_then(|observability| {
            runtime(0)
                .and_then(|rt| rt.block_on(demo(listen, rpc_addr, admin_listen, observability)))
        }),
        Command::Gateway { config } => gateway(config),
        Command::CheckConfig { file } => return check_config(&file),
        Command::ServeDemo {
            registry,
            listen,
            lease_ttl,
        } => runtime(0).and_then(|rt| rt.block_on(serve_demo(&registry, listen, lease_ttl))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime(worker_threads: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    // One worker: a current-thread runtime does the same work without the cross-thread
    // scheduling machinery (work stealing, atomics on every wake).
    let mut builder = if worker_threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    if worker_threads > 1 {
        builder.worker_threads(worker_threads);
    }
    builder
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Ctrl-C and SIGTERM, registered when created: a signal that arrives before [`wait`] is
/// awaited is not lost (and does not kill the process with the default action).
///
/// [`wait`]: StopSignals::wait
struct StopSignals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn register() -> anyhow::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(StopSignals {
                interrupt: signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
                terminate: signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
            })
        }
        #[cfg(not(unix))]
        Ok(StopSignals {})
    }

    async fn wait(mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// The demo's memory budget: far above what it needs, so only a real leak would reach it.
const DEMO_MEMORY_BUDGET: u64 = 256 << 20;

const DEMO_SERVICES: [ServiceDescriptor; 3] = [
    WaybillsClient::DESCRIPTOR,
    TrackingClient::DESCRIPTOR,
    PricingClient::DESCRIPTOR,
];

/// How often a one-worker gateway decides who purges the allocator's freed pages.
const PURGE_SWITCH_PERIOD: Duration = Duration::from_secs(1);
/// A runtime busy for at least this share of a period purges with its own allocations.
const BUSY_SHARE_FOR_INLINE_PURGING: f64 = 0.25;

/// Who gives jemalloc's freed pages back to the kernel in a one-worker gateway: jemalloc's
/// background thread while the gateway is mostly idle, the gateway's own thread while it is
/// busy.
///
/// jemalloc purges freed ("dirty") pages as they age past its decay time: in its background
/// thread when one runs, else on the threads that allocate, which check the decay curve every
/// so many allocations. A busy gateway allocates all the time, so its own thread keeps the heap
/// purged; an idle one does not, and then the background thread must, or memory would not
/// return to baseline after load (ARCHITECTURE.md). The background thread is stopped while the
/// gateway is busy because a second thread costs every socket call: when threads share the
/// file table, the kernel takes and drops a reference on the socket's file for each call
/// (`fdget`: 1.56 % of a loaded one-worker gateway's CPU samples with its former three threads,
/// 1.23 % alone; BENCHMARKS.md, "A one-thread process"). With more workers the threads are
/// there anyway, and the background thread stays on.
///
/// Starting or stopping the background thread creates or joins a thread: a blocking call on
/// the runtime's thread, made only when the gateway goes from idle to busy or back, and at most
/// once per period.
#[cfg(not(target_env = "msvc"))]
async fn switch_background_purging() {
    let metrics = tokio::runtime::Handle::current().metrics();
    let busy_so_far = || {
        (0..metrics.num_workers())
            .map(|worker| metrics.worker_total_busy_duration(worker))
            .sum::<Duration>()
    };
    let mut every = tokio::time::interval(PURGE_SWITCH_PERIOD);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    every.tick().await;
    let (mut last_busy, mut last_at) = (busy_so_far(), tokio::time::Instant::now());
    loop {
        every.tick().await;
        let (busy, at) = (busy_so_far(), tokio::time::Instant::now());
        let share = busy.saturating_sub(last_busy).as_secs_f64()
            / at.saturating_duration_since(last_at)
                .as_secs_f64()
                .max(1e-3);
        (last_busy, last_at) = (busy, at);
        let background = share < BUSY_SHARE_FOR_INLINE_PURGING;
        match tikv_jemalloc_ctl::background_thread::read() {
            Ok(running) if running == background => {}
            Ok(_) => match tikv_jemalloc_ctl::background_thread::write(background) {
                Ok(_) => {
                    tracing::debug!(background, busy_share = share, "jemalloc purging switched")
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot switch jemalloc background purging; leaving it as it is");
                    return;
                }
            },
            // Without background threads in this jemalloc there is nothing to switch.
            Err(_) => return,
        }
    }
}

/// jemalloc's own account of the heap, for `/metrics`.
fn allocator_stats() -> tideway_gateway::telemetry::AllocatorStats {
    std::sync::Arc::new(|| {
        #[cfg(not(target_env = "msvc"))]
        {
            tikv_jemalloc_ctl::epoch::advance().ok()?;
            let allocated = tikv_jemalloc_ctl::stats::allocated::read().ok()? as u64;
            let resident = tikv_jemalloc_ctl::stats::resident::read().ok()? as u64;
            Some((allocated, resident))
        }
        #[cfg(target_env = "msvc")]
        None
    })
}

/// `service.name` of the demo services' spans (the gateway's are [`DEFAULT_SERVICE_NAME`]).
///
/// [`DEFAULT_SERVICE_NAME`]: tideway_observe::config::DEFAULT_SERVICE_NAME
const DEMO_SERVICES_TRACE_NAME: &str = "tideway-demo-services";

/// The demo's `[observability]`: tracing to `otlp_endpoint` (every other tracing setting at
/// its default, as `[observability.tracing] endpoint = ...` in a gateway config), or all off.
fn demo_observability(
    otlp_endpoint: Option<&str>,
) -> anyhow::Result<tideway_observe::ObservabilityConfig> {
    let mut config = tideway_observe::ObservabilityConfig::default();
    if let Some(endpoint) = otlp_endpoint {
        config.tracing = tideway_observe::TracingConfig::to_endpoint(endpoint);
        let problems: Vec<String> = config
            .validate()
            .into_iter()
            .map(|(_, message)| message)
            .collect();
        if !problems.is_empty() {
            anyhow::bail!("--otlp-endpoint: {}", problems.join("; "));
        }
    }
    Ok(config)
}

/// The demo services' tracing: the gateway's settings under their own `service.name`.
fn services_observability(
    gateway: &tideway_observe::ObservabilityConfig,
) -> tideway_observe::ObservabilityConfig {
    tideway_observe::ObservabilityConfig {
        tracing: tideway_observe::TracingConfig {
            service_name: DEMO_SERVICES_TRACE_NAME.to_owned(),
            ..gateway.tracing.clone()
        },
        access_log: tideway_observe::AccessLogConfig::default(),
    }
}

async fn demo(
    listen: SocketAddr,
    rpc_addr: SocketAddr,
    admin_listen: SocketAddr,
    observability: tideway_observe::ObservabilityConfig,
) -> anyhow::Result<()> {
    let stop = StopSignals::register()?;
    // The services' spans continue the trace the gateway's call carries in its metadata.
    let services_observe =
        tideway_observe::Observability::start(&services_observability(&observability))
            .context("cannot start the services' tracing")?;
    let observer = services_observe
        .as_ref()
        .and_then(|o| o.tracing())
        .map(tideway_observe::Tracing::rpc_server_observer);
    let rpc = serve_logistics(rpc_addr, observer).await?;

    let config = GatewayConfig {
        server: ServerSettings {
            listen,
            admin_listen: Some(admin_listen),
            max_memory: Some(DEMO_MEMORY_BUDGET),
            ..Default::default()
        },
        // What the demo runs, for /admin/config: routes and services come from this registry.
        registry: Some(RegistryConfig::Embedded),
        observability,
        ..Default::default()
    };
    let observe = tideway_observe::Observability::start(&config.observability)
        .context("cannot start the gateway's tracing")?;
    // The services register in an embedded registry, and the gateway learns their routes and
    // address from it, as it would from etcd across machines.
    let registry: Arc<dyn Registry> = Arc::new(EmbeddedRegistry::new());
    let registrations = register_services(&registry, rpc.local_addr()).await?;
    let catalog = Catalog::spawn(Arc::clone(&registry), CatalogConfig::default())?;
    if let Err(status) = catalog.wait_synced(Duration::from_secs(5)).await {
        anyhow::bail!("the embedded registry did not sync: {status:?}");
    }
    let client = ClientConfig {
        connections: assemble::connections_for(
            config.server.max_in_flight,
            &ClientConfig::default(),
        ),
        ..ClientConfig::default()
    };
    let gateway = Gateway::start(
        config.server.clone(),
        RouteTable::default(),
        RpcBackends::new(),
    )
    .await
    .context("cannot start the gateway")?;
    gateway.set_observability(observe.clone());
    let traces_url = config.observability.tracing.traces_url();
    gateway.set_config(config);
    gateway.follow_registry(catalog, StaticSources::default(), client);
    gateway.set_allocator_stats(allocator_stats());
    let base = format!("http://{}", gateway.local_addr());
    println!("Tideway gateway listening on {base}");
    println!("Logistics RPC services on {}", rpc.local_addr());
    if let Some(admin) = gateway.admin_addr() {
        println!("Admin: http://{admin}/metrics  /healthz  /readyz");
    }
    if let Some(url) = traces_url {
        println!("Tracing: spans of the gateway and the services go to {url}");
    }
    print_routes(&gateway.routes());
    println!("\nTry:");
    println!(
        r#"  curl -s -X POST {base}/api/waybills -H 'content-type: application/json' \
    -d '{{"sender":{{"name":"Harbour Books","address":"1 Quay St","zone":1}},"recipient":{{"name":"Ada","address":"12 Hill Rd","zone":3}},"weight_grams":1250,"service_level":"express"}}'"#
    );
    println!("  curl -s {base}/api/waybills/WB0000000001");
    println!(
        r#"  curl -s -X POST {base}/api/waybills/WB0000000001/events -H 'content-type: application/json' -d '{{"status":"picked_up","location":"Port Town depot"}}'"#
    );
    println!("  curl -s {base}/api/waybills/WB0000000001/events");
    println!("  curl -s '{base}/api/waybills?offset=0&limit=10'");
    println!(
        r#"  curl -s -X POST {base}/api/quotes -H 'content-type: application/json' -d '{{"weight_grams":2000,"from_zone":1,"to_zone":4,"service_level":"standard"}}'"#
    );
    println!(
        r#"  curl -s -i -X POST {base}/api/waybills -H 'content-type: application/json' -d '{{"weight_grams":0}}'   # 400, field named"#
    );
    println!("\nPress Ctrl-C to stop.");

    stop.wait().await;
    println!("Draining and stopping...");
    deregister(registrations).await;
    gateway.shutdown(DEFAULT_DRAIN_TIMEOUT).await;
    rpc.shutdown().await;
    // Queued spans are exported before the process exits.
    for observe in [observe, services_observe].into_iter().flatten() {
        observe.shutdown(OBSERVE_SHUTDOWN_TIMEOUT).await;
    }
    Ok(())
}

/// The logistics services on an RPC server at `addr`; `observer` (a tracer's) sees every call.
async fn serve_logistics(
    addr: SocketAddr,
    observer: Option<Arc<dyn tideway_rpc::CallObserver>>,
) -> anyhow::Result<ServerHandle> {
    let services = Logistics::default();
    let mut builder = Server::builder()
        .config(ServerConfig::default())
        .add_service(WaybillsServer::new(services.clone()))
        .add_service(TrackingServer::new(services.clone()))
        .add_service(PricingServer::new(services));
    if let Some(observer) = observer {
        builder = builder.observer(observer);
    }
    builder
        .bind(addr)
        .await
        .with_context(|| format!("cannot serve RPC on {addr}"))
}

/// Registers every demo service, with its routes, as served at `addr`.
async fn register_services(
    registry: &Arc<dyn Registry>,
    addr: SocketAddr,
) -> anyhow::Result<Vec<Registration>> {
    let mut registrations = Vec::new();
    for descriptor in &DEMO_SERVICES {
        // One instance per service and address; `:` and `.` are allowed in ids.
        let instance = ServiceInstance::for_service(descriptor, addr.to_string(), addr);
        let registration = registry
            .register(instance)
            .await
            .with_context(|| format!("cannot register {}", descriptor.name))?;
        registrations.push(registration);
    }
    Ok(registrations)
}

async fn deregister(registrations: Vec<Registration>) {
    for registration in registrations {
        if let Err(e) = registration.deregister().await {
            tracing::warn!(error = %e, "deregistration failed; the lease will expire instead");
        }
    }
}

/// `etcd://HOST:PORT[,HOST:PORT...]` as a registry configuration.
fn parse_registry_url(url: &str) -> anyhow::Result<RegistryConfig> {
    let Some(hosts) = url.strip_prefix("etcd://") else {
        anyhow::bail!("unsupported registry {url:?}: expected etcd://HOST:PORT[,HOST:PORT...]");
    };
    let endpoints: Vec<String> = hosts
        .trim_end_matches('/')
        .split(',')
        .filter(|h| !h.is_empty())
        .map(|h| format!("http://{h}"))
        .collect();
    if endpoints.is_empty() {
        anyhow::bail!("registry {url:?} names no etcd endpoint");
    }
    Ok(RegistryConfig::Etcd(EtcdConfig::new(endpoints)))
}

async fn serve_demo(registry: &str, listen: SocketAddr, lease_ttl: Duration) -> anyhow::Result<()> {
    let mut config = parse_registry_url(registry)?;
    if let RegistryConfig::Etcd(etcd) = &mut config {
        etcd.lease_ttl = lease_ttl;
        etcd.keep_alive_interval = etcd.keep_alive_interval.min(lease_ttl / 3);
    }
    let stop = StopSignals::register()?;
    let rpc = serve_logistics(listen, None).await?;
    let url = registry;
    let registry = tideway_registry::open(&config)
        .await
        .with_context(|| format!("cannot open the registry {url}"))?;
    let registrations = register_services(&registry, rpc.local_addr()).await?;
    println!("Logistics RPC services on {}", rpc.local_addr());
    println!("Registered in {url} (lease {lease_ttl:?})");
    stop.wait().await;
    println!("Deregistering and stopping...");
    deregister(registrations).await;
    rpc.shutdown().await;
    Ok(())
}

fn print_routes(table: &RouteTable) {
    println!("\nRoutes:");
    for route in table.routes() {
        let target = match &route.target {
            tideway_gateway::RouteTarget::Rpc { full_name, .. } => format!("rpc {full_name}"),
            tideway_gateway::RouteTarget::Http { .. } => "http upstream".to_owned(),
        };
        println!("  {:<48} -> {target}", route.label());
    }
}

fn load(path: &Path) -> anyhow::Result<(GatewayConfig, RouteTable, RpcBackends)> {
    let config = GatewayConfig::load(path)?;
    let routes = assemble::route_table(&config, &[])?;
    let backends = assemble::backends(&config, &ClientConfig::default())?;
    Ok((config, routes, backends))
}

fn gateway(path: PathBuf) -> anyhow::Result<()> {
    // The runtime is built after the config is read: worker_threads comes from it.
    let config = GatewayConfig::load(&path)?;
    let rt = runtime(config.server.worker_threads)?;
    rt.block_on(async move {
        let stop = StopSignals::register()?;
        // The metrics recorder first: what is built below (edge policies) takes metric handles,
        // and handles taken before a recorder exists record nothing.
        tideway_gateway::telemetry::prometheus();
        let (config, routes, backends) = load(&path)?;
        let client = ClientConfig {
            connections: assemble::connections_for(
                config.server.max_in_flight,
                &ClientConfig::default(),
            ),
            ..ClientConfig::default()
        };
        let reload_client = client.clone();
        let registry = config.registry.clone();
        let sources = match &registry {
            Some(_) => Some(assemble::static_sources(&config, &[])?),
            None => None,
        };
        let edge = if config.edge.is_some() || !config.route_policies.is_empty() {
            let edge_config = config.edge.clone().unwrap_or_default();
            Some(
                tideway_gateway::edge::EdgePolicies::new(&edge_config, &config.route_policies)
                    .context("cannot set up the edge policies")?,
            )
        } else {
            None
        };
        let observe = tideway_observe::Observability::start(&config.observability)
            .context("cannot start tracing or the access log")?;
        // What `/admin/config` shows (with secrets redacted) until a reload replaces it.
        let effective = config.clone();
        let scheme = if config.server.tls.is_some() {
            "https"
        } else {
            "http"
        };
        #[cfg(not(target_env = "msvc"))]
        let one_worker = config.server.worker_threads == 1;
        let gateway = Gateway::start(config.server, routes, backends).await?;
        #[cfg(not(target_env = "msvc"))]
        let _purging = one_worker.then(|| {
            tokio_util::task::AbortOnDropHandle::new(tokio::spawn(switch_background_purging()))
        });
        gateway.set_config(effective);
        gateway.set_observability(observe.clone());
        gateway.set_allocator_stats(allocator_stats());
        gateway.set_edge(edge);
        // The first line of output: scripts wait for it.
        println!(
            "Tideway gateway listening on {scheme}://{}",
            gateway.local_addr()
        );
        if let (Some(registry_config), Some(sources)) = (registry, sources) {
            if registry_config == RegistryConfig::Embedded {
                tracing::warn!(
                    "registry backend \"embedded\" in a gateway of its own: nothing else can register in it"
                );
            }
            let registry = tideway_registry::open(&registry_config)
                .await
                .context("cannot open the registry")?;
            let catalog = Catalog::spawn(registry, CatalogConfig::default())?;
            // Start serving either way: without a registry the file's routes still work, and
            // published routes arrive when it answers (/readyz says not ready until then).
            match catalog.wait_synced(REGISTRY_STARTUP_WAIT).await {
                Ok(snapshot) => println!(
                    "Registry synced: {} services, {} instances (revision {})",
                    snapshot.service_count(),
                    snapshot.instance_count(),
                    snapshot.revision()
                ),
                Err(status) => println!(
                    "Registry not synced after {REGISTRY_STARTUP_WAIT:?} ({status:?}); serving the file's routes, following it in the background"
                ),
            }
            gateway.follow_registry(catalog, sources, client);
        }
        // The config file is read again on SIGHUP and on `POST /admin/reload`.
        let hook = reload_hook(path.clone(), gateway.reloader(), reload_client);
        gateway.set_reload_hook(std::sync::Arc::clone(&hook));
        let _sighup = reload_on_sighup(hook)?;
        if let Some(admin) = gateway.admin_addr() {
            println!("Admin: http://{admin}/metrics  /healthz  /readyz");
        }
        print_routes(&gateway.routes());
        stop.wait().await;
        gateway.shutdown(DEFAULT_DRAIN_TIMEOUT).await;
        if let Some(observe) = observe {
            // Queued access log lines and spans are written before the process exits.
            observe.shutdown(OBSERVE_SHUTDOWN_TIMEOUT).await;
        }
        Ok(())
    })
}

/// Reads `path` again and reloads the gateway with it (routes, services, clusters, edge).
fn reload_hook(
    path: PathBuf,
    reloader: tideway_gateway::reload::Reloader,
    client: ClientConfig,
) -> tideway_gateway::reload::ReloadHook {
    std::sync::Arc::new(move || {
        let (path, reloader, client) = (path.clone(), reloader.clone(), client.clone());
        Box::pin(async move {
            // A config file is small; reading it on a worker is fine.
            let config = GatewayConfig::load(&path).map_err(|e| {
                let error = format!("{e:#}");
                tideway_gateway::reload::refused(&error);
                error
            })?;
            reloader
                .reload(&config, &client)
                .await
                .map_err(|e| e.to_string())
        })
    })
}

/// Reloads on every SIGHUP until the returned task is dropped with the runtime.
fn reload_on_sighup(
    hook: tideway_gateway::reload::ReloadHook,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangups = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
        Ok(tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                // The outcome is logged by the reload itself.
                let _ = hook().await;
            }
        }))
    }
    #[cfg(not(unix))]
    Ok(tokio::spawn(async move {
        let _ = hook;
    }))
}

/// How long the exit waits for queued access log lines and spans to be written.
const OBSERVE_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// How long `tideway gateway` waits for its registry before it starts serving anyway.
const REGISTRY_STARTUP_WAIT: Duration = Duration::from_secs(5);

fn check_config(path: &Path) -> ExitCode {
    // Route assembly needs a runtime for the upstream clients' connection pools.
    let checked = runtime(1).and_then(|rt| rt.block_on(async { load(path) }));
    match checked {
        Ok((config, routes, _)) => {
            println!(
                "{}: OK ({} routes, {} services, listen {})",
                path.display(),
                routes.routes().len(),
                config.services.len(),
                config.server.listen
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(all(not(target_env = "msvc"), not(feature = "system-alloc")))]
    #[test]
    fn jemalloc_is_built_with_the_workspace_options() {
        // .cargo/config.toml sets them at build time; a build without them (another build
        // tool, a renamed variable) would run on jemalloc's defaults, silently.
        let conf = tikv_jemalloc_ctl::config::malloc_conf::read().unwrap();
        for option in [
            "background_thread:true",
            "dirty_decay_ms:1000",
            "muzzy_decay_ms:0",
            "tcache_nslots_small_min:64",
        ] {
            assert!(conf.contains(option), "{option} not in {conf:?}");
        }
    }

    #[test]
    fn demo_otlp_endpoint_turns_on_tracing_for_gateway_and_services() {
        let cli = Cli::try_parse_from([
            "tideway",
            "demo",
            "--otlp-endpoint",
            "http://127.0.0.1:4318",
        ])
        .unwrap();
        let Command::Demo { otlp_endpoint, .. } = cli.command else {
            panic!("not the demo: {cli:?}");
        };
        let gateway = demo_observability(otlp_endpoint.as_deref()).unwrap();
        assert!(gateway.tracing.enabled());
        assert!(!gateway.access_log.enabled);
        assert_eq!(
            gateway.tracing.traces_url().as_deref(),
            Some("http://127.0.0.1:4318/v1/traces")
        );
        assert_eq!(
            gateway.tracing.service_name,
            tideway_observe::config::DEFAULT_SERVICE_NAME
        );
        let services = services_observability(&gateway);
        assert_eq!(services.tracing.service_name, DEMO_SERVICES_TRACE_NAME);
        assert_eq!(services.tracing.traces_url(), gateway.tracing.traces_url());
    }

    #[test]
    fn demo_without_an_endpoint_traces_nothing_and_a_bad_one_is_refused() {
        let off = demo_observability(None).unwrap();
        assert!(!off.enabled());
        assert!(!services_observability(&off).enabled());
        let error = demo_observability(Some("https://collector:4318")).unwrap_err();
        assert!(error.to_string().contains("--otlp-endpoint"), "{error}");
    }
}
