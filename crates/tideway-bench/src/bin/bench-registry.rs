//! The registry benchmark's tool (`scripts/bench registry`; crate feature `etcd`). Subcommands:
//!
//! - `propagation`: registers `--count` instances in etcd one after another, each a tiny RPC
//!   service of its own (`bench.Who-N`, on its own port, answering `GET /who/N` with its instance
//!   id), and for each measures the time from `Registry::register` returning to the first call
//!   that the gateway (the real `tideway gateway`, following the same etcd prefix) routes to it:
//!   `GET /who/N` is polled every millisecond on a keep-alive connection until it answers 200
//!   with that id (404 until the gateway knows the route).
//! - `fill`: puts `--services` × `--instances` instance records (one published route per
//!   service) straight into etcd with batched transactions, no leases.
//! - `sync`: starts `tideway gateway --config FILE` and polls its `/metrics` every 5 ms until the
//!   catalog holds `--expect-instances` instances (`tideway_registry_instances`) and the route
//!   table `--expect-routes` routes (`tideway_routes`, set when the table is swapped in); reports
//!   both times from the spawn, and the gateway's VmRSS then and after `--settle-secs`.
//! - `lookup`: `RouteTable::lookup` cost with tables of each `--routes` size, routes shaped like
//!   those `fill` publishes.
//!
//! Every subcommand prints its results as JSON lines on stdout.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use clap::{Parser, Subcommand};
use futures::StreamExt as _;
use http::Method;
use http_body_util::{BodyExt as _, Empty};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tideway_bench::procfs;
use tideway_gateway::binding::{Param, ParamKind};
use tideway_gateway::router::Match;
use tideway_gateway::{Route, RouteTable, RouteTarget};
use tideway_registry::etcd_client::{Client as EtcdClient, Txn, TxnOp};
use tideway_registry::{
    EtcdConfig, EtcdRegistry, ParamMeta, Registry, RouteMeta, ServiceInstance, instance_key,
};
use tideway_rpc::{
    Codec, HandlerFuture, MethodDescriptor, RpcError, Server, ServerConfig, ServiceDescriptor,
    ServiceDispatch,
};

/// Command line.
#[derive(Debug, Parser)]
struct Args {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Time from `register` returning to the first call routed to the new instance.
    Propagation {
        /// etcd client URL.
        #[arg(long)]
        etcd: String,
        /// Key prefix the gateway follows.
        #[arg(long, default_value = "/tideway")]
        prefix: String,
        /// The gateway's HTTP address.
        #[arg(long)]
        gateway: SocketAddr,
        /// Instances to register, one after another.
        #[arg(long, default_value_t = 100)]
        count: usize,
        /// Longest wait for one instance to become routable, in seconds.
        #[arg(long, default_value_t = 10)]
        timeout_secs: u64,
    },
    /// Puts services × instances records into etcd directly.
    Fill {
        /// etcd client URL.
        #[arg(long)]
        etcd: String,
        /// Key prefix.
        #[arg(long, default_value = "/tideway")]
        prefix: String,
        /// Services, each publishing one route.
        #[arg(long)]
        services: usize,
        /// Instances of each service.
        #[arg(long)]
        instances: usize,
    },
    /// Starts the gateway and times its first full sync.
    Sync {
        /// The `tideway` binary.
        #[arg(long)]
        gateway_bin: PathBuf,
        /// Its config file (with `[registry]` and `admin_listen`).
        #[arg(long)]
        config: PathBuf,
        /// The admin address set in the config.
        #[arg(long)]
        admin: SocketAddr,
        /// Routes the gateway has once synced (the file's plus the published ones).
        #[arg(long)]
        expect_routes: u64,
        /// Instances its catalog holds once synced.
        #[arg(long)]
        expect_instances: u64,
        /// Where the gateway's stdout and stderr go (`{log}.out`, `{log}.err`).
        #[arg(long)]
        log: PathBuf,
        /// How long to wait after the sync before the second RSS reading.
        #[arg(long, default_value_t = 2)]
        settle_secs: u64,
        /// Longest wait for the sync, in seconds.
        #[arg(long, default_value_t = 60)]
        timeout_secs: u64,
        /// Leave the gateway running (its pid is in the output) instead of stopping it.
        #[arg(long)]
        keep: bool,
        /// CPUs to pin the gateway to (`taskset -c` list); none: not pinned.
        #[arg(long)]
        cpus: Option<String>,
        /// A name for this run in the output.
        #[arg(long, default_value = "")]
        label: String,
    },
    /// `RouteTable::lookup` cost by table size.
    Lookup {
        /// Table sizes, comma separated.
        #[arg(long, default_value = "10,1000", value_delimiter = ',')]
        routes: Vec<usize>,
        /// Lookups per size.
        #[arg(long, default_value_t = 2_000_000)]
        iterations: usize,
    },
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    match args.command {
        Cmd::Propagation {
            etcd,
            prefix,
            gateway,
            count,
            timeout_secs,
        } => tideway_bench::block_on_current_thread(propagation(
            etcd,
            prefix,
            gateway,
            count,
            Duration::from_secs(timeout_secs),
        ))?,
        Cmd::Fill {
            etcd,
            prefix,
            services,
            instances,
        } => tideway_bench::block_on_current_thread(fill(etcd, prefix, services, instances))?,
        Cmd::Sync {
            gateway_bin,
            config,
            admin,
            expect_routes,
            expect_instances,
            log,
            settle_secs,
            timeout_secs,
            keep,
            cpus,
            label,
        } => sync(SyncArgs {
            gateway_bin,
            config,
            admin,
            expect_routes,
            expect_instances,
            log,
            settle: Duration::from_secs(settle_secs),
            timeout: Duration::from_secs(timeout_secs),
            keep,
            cpus,
            label,
        }),
        Cmd::Lookup { routes, iterations } => {
            lookup(&routes, iterations);
            Ok(())
        }
    }
}

// ---- propagation ---------------------------------------------------------------------------

/// `bench.Who-N`: one method, `whoami`, answering the instance's id. The descriptor is built
/// at run time (and leaked: one per instance, for the life of the process).
struct Who {
    descriptor: &'static ServiceDescriptor,
    id: String,
}

impl Who {
    fn new(n: usize) -> Who {
        let name: &'static str = Box::leak(format!("bench.Who-{n}").into_boxed_str());
        let methods: &'static [MethodDescriptor] = Box::leak(Box::new([MethodDescriptor {
            name: "whoami",
            full_name: Box::leak(format!("{name}/whoami").into_boxed_str()),
            http_method: "GET",
            path: Box::leak(format!("/who/{n}").into_boxed_str()),
            conventional_route: false,
            timeout_ms: Some(2000),
            params: &[],
        }]));
        Who {
            descriptor: Box::leak(Box::new(ServiceDescriptor { name, methods })),
            id: format!("who-{n}"),
        }
    }
}

impl ServiceDispatch for Who {
    fn descriptor(&self) -> &'static ServiceDescriptor {
        self.descriptor
    }

    fn dispatch(&self, method: &str, codec: Codec, _payload: Bytes) -> Option<HandlerFuture> {
        if method != "whoami" {
            return None;
        }
        let reply = codec
            .encode(&self.id)
            .map_err(|e| RpcError::internal(e.to_string()));
        Some(Box::pin(async move { reply }))
    }
}

/// A keep-alive HTTP/1.1 connection to the gateway, reopened when it closes.
struct Poller {
    gateway: SocketAddr,
    sender: Option<SendRequest<Empty<Bytes>>>,
}

impl Poller {
    /// `GET path`: status and body.
    async fn get(&mut self, path: &str) -> anyhow::Result<(u16, Bytes)> {
        if self.sender.as_ref().is_none_or(SendRequest::is_closed) {
            let stream = tokio::net::TcpStream::connect(self.gateway).await?;
            stream.set_nodelay(true)?;
            let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(connection);
            self.sender = Some(sender);
        }
        let sender = self.sender.as_mut().context("connected above")?;
        sender.ready().await?;
        let request = http::Request::get(path)
            .header(http::header::HOST, self.gateway.to_string())
            .body(Empty::new())?;
        let response = match sender.send_request(request).await {
            Ok(response) => response,
            Err(e) => {
                self.sender = None;
                return Err(e.into());
            }
        };
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }
}

async fn propagation(
    etcd: String,
    prefix: String,
    gateway: SocketAddr,
    count: usize,
    timeout: Duration,
) -> anyhow::Result<()> {
    let registry = EtcdRegistry::connect(EtcdConfig {
        prefix,
        ..EtcdConfig::new([etcd])
    })
    .await?;
    let mut poller = Poller {
        gateway,
        sender: None,
    };
    let mut servers = Vec::new();
    let mut registrations = Vec::new();
    let mut delays = Vec::new();
    let mut failed = 0usize;
    for n in 0..count {
        let who = Who::new(n);
        let descriptor = who.descriptor;
        let expected = format!("\"{}\"", who.id);
        let server = Server::builder()
            .config(ServerConfig::default())
            .add_service(who)
            .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await?;
        let path = format!("/who/{n}");
        let instance =
            ServiceInstance::for_service(descriptor, format!("who-{n}"), server.local_addr());
        servers.push(server);
        registrations.push(registry.register(instance).await?);
        let registered = Instant::now();
        let (mut polls, mut other_status) = (0u64, 0u64);
        let routed = loop {
            polls += 1;
            match poller.get(&path).await {
                Ok((200, body)) if body == expected.as_bytes() => break Some(registered.elapsed()),
                Ok((404, _)) => {}
                Ok((status, body)) => {
                    other_status += 1;
                    if other_status <= 3 {
                        eprintln!(
                            "bench-registry: {path}: {status} {}",
                            String::from_utf8_lossy(&body)
                        );
                    }
                }
                Err(e) => {
                    other_status += 1;
                    eprintln!("bench-registry: {path}: {e:#}");
                }
            }
            if registered.elapsed() > timeout {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        let ms = routed.map(|d| d.as_secs_f64() * 1000.0);
        match ms {
            Some(ms) => delays.push(ms),
            None => failed += 1,
        }
        println!(
            "{}",
            json!({"mode": "propagation_one", "n": n, "ms": ms, "polls": polls, "other_status": other_status})
        );
    }
    delays.sort_by(f64::total_cmp);
    println!(
        "{}",
        json!({
            "mode": "propagation",
            "count": count,
            "routed": delays.len(),
            "unrouted": failed,
            "p50_ms": percentile(&delays, 0.50),
            "p99_ms": percentile(&delays, 0.99),
            "max_ms": delays.last(),
            "min_ms": delays.first(),
        })
    );
    for registration in registrations {
        let _ = registration.deregister().await;
    }
    for server in servers {
        server.shutdown().await;
    }
    if failed > 0 {
        bail!("{failed} of {count} instances never became routable within {timeout:?}");
    }
    Ok(())
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

// ---- fill ----------------------------------------------------------------------------------

/// etcd's default `--max-txn-ops` is 128.
const PUTS_PER_TXN: usize = 100;
/// Transactions in flight at once.
const TXNS_IN_FLIGHT: usize = 8;

/// The route service `s` publishes: `GET /svc{s}/items/{id}`.
fn published_route(s: usize) -> RouteMeta {
    RouteMeta {
        name: "get".into(),
        full_name: format!("bench.Svc{s}/get"),
        http_method: "GET".into(),
        path: format!("/svc{s}/items/{{id}}"),
        conventional_route: false,
        timeout_ms: None,
        params: vec![ParamMeta {
            name: "id".into(),
            rust_type: "String".into(),
            body: false,
            schema: None,
        }],
    }
}

async fn fill(
    etcd: String,
    prefix: String,
    services: usize,
    instances: usize,
) -> anyhow::Result<()> {
    let client = EtcdClient::connect([etcd], None).await?;
    let mut puts = Vec::with_capacity(services * instances);
    for s in 0..services {
        let service = format!("bench.Svc{s}");
        for i in 0..instances {
            // A distinct address per instance; nothing listens there (no call is made).
            let addr = SocketAddr::from((
                [
                    127,
                    1,
                    u8::try_from(s / 250).unwrap_or(255),
                    (s % 250 + 1) as u8,
                ],
                7000 + u16::try_from(i).unwrap_or(0),
            ));
            let id = format!("i{i}");
            let instance =
                ServiceInstance::new(&service, &id, addr).with_routes(vec![published_route(s)]);
            puts.push((instance_key(&prefix, &service, &id), instance.to_json()?));
        }
    }
    let bytes: usize = puts.iter().map(|(k, v)| k.len() + v.len()).sum();
    let started = Instant::now();
    let results: Vec<_> = futures::stream::iter(puts.chunks(PUTS_PER_TXN).map(|chunk| {
        let mut client = client.clone();
        let ops: Vec<TxnOp> = chunk
            .iter()
            .map(|(k, v)| TxnOp::put(k.as_str(), v.as_slice(), None))
            .collect();
        async move { client.txn(Txn::new().and_then(ops)).await }
    }))
    .buffer_unordered(TXNS_IN_FLIGHT)
    .collect()
    .await;
    for result in results {
        result?;
    }
    println!(
        "{}",
        json!({
            "mode": "fill",
            "services": services,
            "instances_per_service": instances,
            "keys": services * instances,
            "bytes": bytes,
            "ms": started.elapsed().as_secs_f64() * 1000.0,
        })
    );
    Ok(())
}

// ---- sync ----------------------------------------------------------------------------------

#[derive(Debug)]
struct SyncArgs {
    gateway_bin: PathBuf,
    config: PathBuf,
    admin: SocketAddr,
    expect_routes: u64,
    expect_instances: u64,
    log: PathBuf,
    settle: Duration,
    timeout: Duration,
    keep: bool,
    cpus: Option<String>,
    label: String,
}

/// A gauge of a Prometheus text exposition.
fn gauge(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?.strip_prefix(' ')?;
        rest.trim().parse().ok()
    })
}

/// `GET /metrics` on a fresh connection (blocking; a bench helper, not a client).
fn scrape(admin: SocketAddr) -> Option<String> {
    use std::io::{Read as _, Write as _};
    let timeout = Duration::from_secs(2);
    let mut stream = std::net::TcpStream::connect_timeout(&admin, timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_owned())
}

fn sync(args: SyncArgs) -> anyhow::Result<()> {
    let out = std::fs::File::create(args.log.with_extension("out"))?;
    let err = std::fs::File::create(args.log.with_extension("err"))?;
    let mut command = match &args.cpus {
        Some(cpus) => {
            let mut c = Command::new("taskset");
            c.args(["-c", cpus]).arg(&args.gateway_bin);
            c
        }
        None => Command::new(&args.gateway_bin),
    };
    command
        .arg("gateway")
        .arg("--config")
        .arg(&args.config)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    let started = Instant::now();
    let spawned_wall = std::time::SystemTime::now();
    let mut child = command.spawn().context("start the gateway")?;
    let pid = child.id();
    let ms = |at: Instant| at.duration_since(started).as_secs_f64() * 1000.0;
    let (mut admin_up, mut catalog, mut routes) = (None, None, None);
    let mut last = (None, None);
    while routes.is_none() || catalog.is_none() {
        if let Some(status) = child.try_wait()? {
            bail!(
                "the gateway exited with {status}; see {}",
                args.log.display()
            );
        }
        if started.elapsed() > args.timeout {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "not synced after {:?}: tideway_registry_instances {:?}, tideway_routes {:?} (expected {}, {})",
                args.timeout,
                last.0,
                last.1,
                args.expect_instances,
                args.expect_routes
            );
        }
        if let Some(text) = scrape(args.admin) {
            let now = Instant::now();
            admin_up.get_or_insert(now);
            let instances = gauge(&text, "tideway_registry_instances");
            let table = gauge(&text, "tideway_routes");
            last = (instances, table);
            if catalog.is_none() && instances == Some(args.expect_instances as f64) {
                catalog = Some(now);
            }
            if catalog.is_some() && table == Some(args.expect_routes as f64) {
                routes = Some(now);
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let synced_at = routes.context("loop ends once synced")?;
    let rss_synced = procfs::rss_bytes(pid).ok();
    // The same moment from the gateway's own log, independent of the polling: the timestamp of
    // its first "registry change applied" line with every instance.
    let applied_log_ms = std::fs::read_to_string(args.log.with_extension("err"))
        .ok()
        .and_then(|log| applied_at(&log, args.expect_instances))
        .and_then(|at| at.duration_since(spawned_wall).ok())
        .map(|d| d.as_secs_f64() * 1000.0);
    std::thread::sleep(args.settle);
    let rss_settled = procfs::rss_bytes(pid).ok();
    println!(
        "{}",
        json!({
            "mode": "sync",
            "label": args.label,
            "pid": pid,
            "expect_instances": args.expect_instances,
            "expect_routes": args.expect_routes,
            "admin_up_ms": admin_up.map(ms),
            "catalog_ms": catalog.map(ms),
            "routes_ms": ms(synced_at),
            "applied_log_ms": applied_log_ms,
            "rss_synced": rss_synced,
            "rss_settled": rss_settled,
            "settle_secs": args.settle.as_secs(),
        })
    );
    if !args.keep {
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        let _ = child.wait();
    }
    Ok(())
}

/// When the gateway's log says it applied a catalog of `instances` instances: the timestamp
/// (`2026-11-24T06:12:46.555760Z`, UTC) of the first such "registry change applied" line.
fn applied_at(log: &str, instances: u64) -> Option<std::time::SystemTime> {
    let needle = format!("instances={instances} ");
    log.lines()
        .map(strip_ansi)
        .find(|line| line.contains("registry change applied") && line.contains(&needle))
        .and_then(|line| parse_utc(line.split_whitespace().next()?))
}

/// Removes terminal colour sequences (`ESC [ ... m`).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// `YYYY-MM-DDTHH:MM:SS[.ffffff]Z` as a time.
fn parse_utc(text: &str) -> Option<std::time::SystemTime> {
    let text = text.strip_suffix('Z')?;
    let (date, time) = text.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':').map(|p| p.parse::<u64>().ok());
    let (hh, mm, ss) = (t.next()??, t.next()??, t.next()??);
    let nanos: u64 = format!("{frac:0<9}").get(..9)?.parse().ok()?;
    // Days from 1970-01-01 (Howard Hinnant's days_from_civil).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = u64::try_from(era * 146_097 + doe - 719_468).ok()?;
    let secs = days * 86_400 + hh * 3600 + mm * 60 + ss;
    Some(std::time::UNIX_EPOCH + Duration::new(secs, u32::try_from(nanos).ok()?))
}

// ---- lookup --------------------------------------------------------------------------------

fn lookup(sizes: &[usize], iterations: usize) {
    for &size in sizes {
        let routes = (0..size).map(|s| {
            let meta = published_route(s);
            Route {
                method: Some(Method::GET),
                path: meta.path,
                timeout: None,
                target: RouteTarget::Rpc {
                    service: format!("bench.Svc{s}"),
                    full_name: meta.full_name,
                    params: vec![Param {
                        name: "id".into(),
                        kind: ParamKind::from_rust_type("String"),
                        body: false,
                        schema: None,
                    }],
                },
                origin: format!("registry service bench.Svc{s}"),
                limit: None,
                call: tideway_gateway::CallSettings::default(),
            }
        });
        let built = Instant::now();
        let table = RouteTable::new(routes).expect("distinct paths");
        let build_ms = built.elapsed().as_secs_f64() * 1000.0;
        // Paths spread over every route, in a scrambled order, generated up front.
        let paths: Vec<String> = (0..4096usize)
            .map(|k| format!("/svc{}/items/{}", (k * 7919) % size, k))
            .collect();
        let method = Method::GET;
        let mut found = 0usize;
        let started = Instant::now();
        for k in 0..iterations {
            let path = &paths[k % paths.len()];
            if matches!(
                std::hint::black_box(table.lookup(&method, std::hint::black_box(path))),
                Match::Found { .. }
            ) {
                found += 1;
            }
        }
        let elapsed = started.elapsed();
        assert_eq!(found, iterations, "every path has a route");
        println!(
            "{}",
            json!({
                "mode": "lookup",
                "routes": size,
                "iterations": iterations,
                "ns_per_lookup": elapsed.as_nanos() as f64 / iterations as f64,
                "build_ms": build_ms,
            })
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_timestamps_parse() {
        let at = |s: &str| {
            parse_utc(s).map(|t| {
                t.duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs_f64()
            })
        };
        assert_eq!(at("1970-01-01T00:00:01.5Z"), Some(1.5));
        assert_eq!(at("2000-02-29T23:59:59Z"), Some(951_868_799.0));
        assert_eq!(
            at("2026-11-24T06:12:46.555760Z"),
            Some(1_795_500_766.555_76)
        );
        assert_eq!(at("2026-11-24 06:12:46Z"), None);
        let log = "\u{1b}[2m2026-11-24T06:12:46.555760Z\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m registry change applied \u{1b}[3mrevision\u{1b}[0m=102 instances=10000 routes=1000\n";
        assert!(applied_at(log, 10_000).is_some());
        assert!(applied_at(log, 100).is_none());
    }

    #[test]
    fn nearest_rank_percentiles() {
        let xs: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&xs, 0.5), Some(50.0));
        assert_eq!(percentile(&xs, 0.99), Some(99.0));
        assert_eq!(percentile(&[], 0.99), None);
    }
}
