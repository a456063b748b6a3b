//! The `tideway` binary against real etcd servers, as processes, the way it is deployed:
//! `tideway gateway --config FILE` following `[registry] backend = "etcd"`, and
//! `tideway serve-demo --registry etcd://...` instances registering the logistics services with
//! their routes. Needs the crate feature `etcd` (scripts/test enables it) and Debian's
//! `etcd-server`.
//!
//! What the gateway routes to is read from its admin API: `/admin/services` lists each service's
//! instances with their state and the calls each took (a removed instance is listed as
//! `draining` while calls are still in flight on it, then not at all). The gateway balances
//! round-robin here, so that a few calls reach every instance; the default balancer (p2c over
//! PeakEWMA latency) keeps sequential calls on the instance it has measured fastest.
//!
//! Every child process (etcd, gateway, services) is killed by pid when its guard drops, so a
//! failing test leaves nothing behind. Waits poll with deadlines; none is a fixed sleep.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tideway_testkit::http::{self, metric};
use tideway_testkit::{EtcdCluster, EtcdServer, Process, poll_until};

const BIN: &str = env!("CARGO_BIN_EXE_tideway");

/// Bound for anything that should happen "soon" on a loaded 2-core machine.
const SOON: Duration = Duration::from_secs(15);
/// Lease TTL of instances that are expected to vanish in these tests (`--lease-ttl`).
const SHORT_TTL: Duration = Duration::from_secs(2);
/// Instances each serve-demo process registers: Waybills, Tracking, Pricing.
const SERVICES_PER_DEMO: f64 = 3.0;
/// The service `POST /api/quotes` calls.
const PRICING: &str = "logistics.Pricing";

const QUOTE: &str = r#"{"weight_grams":2000,"from_zone":1,"to_zone":4,"service_level":"standard"}"#;

/// One test's processes and temporary directory (configs, stderr logs).
struct Scene {
    dir: tempfile::TempDir,
    gateway: Option<Process>,
    demos: Vec<Process>,
}

impl Scene {
    fn new() -> Scene {
        Scene {
            dir: tempfile::tempdir().expect("temp dir"),
            gateway: None,
            demos: Vec::new(),
        }
    }

    /// Starts `tideway gateway` following etcd at `endpoints` (client URLs).
    fn start_gateway(&mut self, endpoints: &[String]) -> Gw {
        let config = self.dir.path().join("gateway.toml");
        let endpoints = endpoints
            .iter()
            .map(|e| format!("{e:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        std::fs::write(
            &config,
            format!(
                r#"[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
worker_threads = 2

[clusters.default]
balancer = "round_robin"

[registry]
backend = "etcd"
endpoints = [{endpoints}]
"#
            ),
        )
        .expect("write the gateway config");
        let mut command = std::process::Command::new(BIN);
        command.arg("gateway").arg("--config").arg(&config);
        let mut gateway = Process::spawn("gateway", command, self.dir.path());
        let http = gateway.wait_for_line("Tideway gateway listening on http://", SOON);
        let admin = gateway.wait_for_line("Admin: http://", SOON);
        self.gateway = Some(gateway);
        Gw {
            http: http.parse().expect("gateway address"),
            admin: admin
                .split('/')
                .next()
                .and_then(|a| a.parse().ok())
                .expect("admin address"),
        }
    }

    /// Starts `tideway serve-demo` registering in etcd at `endpoints` with lease `ttl`; returns
    /// its index in `demos` and its RPC address once it has registered.
    fn start_demo(&mut self, name: &str, endpoints: &[String], ttl: Duration) -> (usize, String) {
        let hosts = endpoints
            .iter()
            .map(|e| e.trim_start_matches("http://"))
            .collect::<Vec<_>>()
            .join(",");
        let mut command = std::process::Command::new(BIN);
        command.args([
            "serve-demo",
            "--registry",
            &format!("etcd://{hosts}"),
            "--listen",
            "127.0.0.1:0",
            "--lease-ttl",
            &format!("{}s", ttl.as_secs()),
        ]);
        let mut demo = Process::spawn(name, command, self.dir.path());
        let addr = demo.wait_for_line("Logistics RPC services on ", SOON);
        demo.wait_for_line("Registered in ", SOON);
        self.demos.push(demo);
        (self.demos.len() - 1, addr)
    }

    /// Everything the processes printed, for failure messages.
    fn diagnostics(&mut self) -> String {
        let mut out = String::new();
        for p in self.gateway.iter_mut().chain(self.demos.iter_mut()) {
            out.push_str(&p.diagnostics());
            out.push('\n');
        }
        out
    }

    /// Polls `check` until it returns `Some`, at most `timeout`; panics with every process's
    /// output otherwise.
    fn wait<T>(&mut self, timeout: Duration, what: &str, check: impl FnMut() -> Option<T>) -> T {
        match poll_until(timeout, Duration::from_millis(25), check) {
            Some(value) => value,
            None => {
                let diagnostics = self.diagnostics();
                panic!("timed out after {timeout:?} waiting for {what}\n{diagnostics}")
            }
        }
    }

    /// Panics with `message` and every process's output when `result` is an error.
    fn check<T>(&mut self, result: Result<T, String>) -> T {
        result.unwrap_or_else(|message| {
            let diagnostics = self.diagnostics();
            panic!("{message}\n{diagnostics}")
        })
    }
}

/// One instance of a service as the gateway's `/admin/services` shows it.
#[derive(Debug, Clone, PartialEq)]
struct Endpoint {
    addr: String,
    state: String,
    window_calls: u64,
}

/// The gateway's addresses; cheap to copy into the checks [`Scene::wait`] polls.
#[derive(Debug, Clone, Copy)]
struct Gw {
    /// Where it serves HTTP.
    http: SocketAddr,
    /// Its admin listener.
    admin: SocketAddr,
}

impl Gw {
    fn quote(&self) -> Result<(), String> {
        quote(self.http)
    }

    /// `n` quotes in a row, each of which must succeed.
    fn quotes(&self, n: usize) -> Result<(), String> {
        (0..n).try_for_each(|_| self.quote())
    }

    /// A gauge of the gateway's `/metrics`.
    fn gauge(&self, name: &str) -> Option<f64> {
        let response = http::get(self.admin, "/metrics").ok()?;
        metric(&response.body, name)
    }

    fn healthz(&self) -> String {
        http::get(self.admin, "/healthz")
            .map(|r| format!("{} {}", r.status, r.body))
            .unwrap_or_else(|e| format!("error: {e}"))
    }

    fn readyz(&self) -> u16 {
        http::get(self.admin, "/readyz").map_or(0, |r| r.status)
    }

    /// The instances of `service` the gateway knows, draining ones included.
    fn endpoints(&self, service: &str) -> Option<Vec<Endpoint>> {
        let response = http::get(self.admin, "/admin/services").ok()?;
        let json: serde_json::Value = serde_json::from_str(&response.body).ok()?;
        let entry = json["services"]
            .as_array()?
            .iter()
            .find(|s| s["name"] == service)?;
        entry["endpoints"]
            .as_array()?
            .iter()
            .map(|e| {
                Some(Endpoint {
                    addr: e["addr"].as_str()?.to_owned(),
                    state: e["state"].as_str()?.to_owned(),
                    window_calls: e["window_calls"].as_u64()?,
                })
            })
            .collect()
    }

    /// The addresses new calls of `service` may go to (every instance but draining ones),
    /// sorted.
    fn routable(&self, service: &str) -> Vec<String> {
        let mut addrs: Vec<String> = self
            .endpoints(service)
            .unwrap_or_default()
            .into_iter()
            .filter(|e| e.state != "draining")
            .map(|e| e.addr)
            .collect();
        addrs.sort();
        addrs
    }

    /// Calls `quote` until every instance in `addrs` has taken calls (within the breaker
    /// window) and the gateway routes to exactly those; every call must succeed.
    fn every_instance_serves(&self, addrs: &[&str]) -> Result<(), String> {
        let mut wanted: Vec<String> = addrs.iter().map(|a| (*a).to_owned()).collect();
        wanted.sort();
        for _ in 0..10 {
            self.quotes(addrs.len())?;
            let endpoints = self.endpoints(PRICING).unwrap_or_default();
            let serving: Vec<&Endpoint> =
                endpoints.iter().filter(|e| e.state != "draining").collect();
            let mut routed: Vec<String> = serving.iter().map(|e| e.addr.clone()).collect();
            routed.sort();
            if routed == wanted && serving.iter().all(|e| e.window_calls > 0) {
                return Ok(());
            }
        }
        Err(format!(
            "not every one of {addrs:?} took calls: {:?}",
            self.endpoints(PRICING)
        ))
    }
}

fn quote(gateway: SocketAddr) -> Result<(), String> {
    match http::post_json(gateway, "/api/quotes", QUOTE) {
        Ok(r) if r.status == 200 && r.body.contains(r#""currency":"EUR""#) => Ok(()),
        Ok(r) => Err(format!("POST /api/quotes: {} {}", r.status, r.body)),
        Err(e) => Err(format!("POST /api/quotes: {e}")),
    }
}

/// Calls made in the background until stopped, counting what failed.
struct Caller {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<(usize, Vec<String>)>,
}

impl Caller {
    fn start(gateway: SocketAddr) -> Caller {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let (mut ok, mut failures) = (0, Vec::new());
            while !flag.load(Ordering::Relaxed) {
                match quote(gateway) {
                    Ok(()) => ok += 1,
                    Err(e) => failures.push(e),
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            (ok, failures)
        });
        Caller { stop, thread }
    }

    /// Stops the calls; returns (succeeded, failures).
    fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("caller thread")
    }
}

#[test]
fn instances_register_become_routable_and_leave_gracefully() {
    let etcd = EtcdServer::start();
    let endpoints = [etcd.endpoint()];
    let mut scene = Scene::new();
    let gw = scene.start_gateway(&endpoints);
    scene.wait(SOON, "the gateway ready (first registry sync)", || {
        (gw.readyz() == 200).then_some(())
    });
    // Nothing registered: the demo routes are unknown.
    let before = http::post_json(gw.http, "/api/quotes", QUOTE).unwrap();
    assert_eq!(before.status, 404, "{}", before.body);

    let (_, a) = scene.start_demo("demo-a", &endpoints, SHORT_TTL);
    scene.wait(SOON, "POST /api/quotes routed to demo-a", || {
        gw.quote().ok()
    });
    assert_eq!(gw.routable(PRICING), vec![a.clone()]);
    assert_eq!(
        gw.gauge("tideway_registry_instances"),
        Some(SERVICES_PER_DEMO)
    );

    // A second instance: calls reach both.
    let (b, b_addr) = scene.start_demo("demo-b", &endpoints, SHORT_TTL);
    scene.wait(SOON, "demo-b routable", || {
        gw.every_instance_serves(&[&a, &b_addr]).ok()
    });
    assert_eq!(
        gw.gauge("tideway_registry_instances"),
        Some(2.0 * SERVICES_PER_DEMO)
    );

    // SIGTERM: demo-b deregisters (revokes its lease), then drains. No call fails meanwhile, and
    // the gateway drops it well before its lease could have expired.
    let caller = Caller::start(gw.http);
    scene.wait(SOON, "background calls under way", || gw.quote().ok());
    let stopped = Instant::now();
    scene.demos[b].signal("TERM");
    scene.wait(SOON, "demo-b out of the gateway's routing", || {
        (gw.routable(PRICING) == vec![a.clone()]).then_some(())
    });
    let dropped_after = stopped.elapsed();
    let status = scene.demos[b].wait_exit(SOON);
    assert!(
        status.is_some_and(|s| s.success()),
        "demo-b exit after SIGTERM: {status:?}\n{}",
        scene.diagnostics()
    );
    let after = gw.quotes(20);
    scene.check(after.map_err(|e| format!("a call failed after demo-b left: {e}")));
    let (succeeded, failures) = caller.finish();
    assert!(
        failures.is_empty(),
        "{} of {} calls failed while demo-b stopped gracefully: {:?}\n{}",
        failures.len(),
        succeeded + failures.len(),
        &failures[..failures.len().min(5)],
        scene.diagnostics()
    );
    assert!(succeeded > 0);
    // "Quickly": deregistration is immediate, well inside the (short) lease TTL plus slack.
    assert!(
        dropped_after < SHORT_TTL + Duration::from_secs(3),
        "demo-b left routing {dropped_after:?} after SIGTERM"
    );
    scene.wait(SOON, "demo-b drained from the gateway's view", || {
        (gw.endpoints(PRICING).map(|e| e.len()) == Some(1)).then_some(())
    });
    assert_eq!(
        gw.gauge("tideway_registry_instances"),
        Some(SERVICES_PER_DEMO)
    );
    assert!(
        gw.healthz().contains("registry: synced"),
        "{}",
        gw.healthz()
    );
}

#[test]
fn a_killed_instance_leaves_routing_when_its_lease_expires() {
    let etcd = EtcdServer::start();
    let endpoints = [etcd.endpoint()];
    let mut scene = Scene::new();
    let gw = scene.start_gateway(&endpoints);
    let a_registered = Instant::now();
    let (_, a) = scene.start_demo("demo-a", &endpoints, SHORT_TTL);
    scene.wait(SOON, "demo-a routable", || gw.quote().ok());
    let (b, b_addr) = scene.start_demo("demo-b", &endpoints, SHORT_TTL);
    scene.wait(SOON, "demo-b routable", || {
        gw.every_instance_serves(&[&a, &b_addr]).ok()
    });
    let routes = gw.gauge("tideway_routes").expect("tideway_routes");

    // SIGKILL: no deregistration. Until its lease expires the gateway still has it (its
    // refused calls are retried on demo-a); then it is out of routing.
    scene.demos[b].kill();
    let killed = Instant::now();
    // TTL after the last keep-alive, plus etcd's expiry check and a loaded machine.
    let limit = SHORT_TTL + Duration::from_secs(6);
    scene.wait(limit, "demo-b out of the gateway's routing", || {
        (gw.routable(PRICING) == vec![a.clone()]).then_some(())
    });
    let took = killed.elapsed();
    assert!(took <= limit, "left routing {took:?} after SIGKILL");

    // From now on no call can go to demo-b: every call succeeds through demo-a, which keeps its
    // own lease alive for several TTLs.
    let mut calls = 0;
    while calls < 20 || a_registered.elapsed() < 3 * SHORT_TTL {
        let call = gw.quote();
        scene.check(call.map_err(|e| format!("call {calls} after demo-b expired: {e}")));
        calls += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    let pricing = gw.endpoints(PRICING).unwrap_or_default();
    assert!(
        pricing.len() == 1 && pricing[0].addr == a && pricing[0].window_calls > 0,
        "{pricing:?}"
    );
    assert_eq!(
        gw.gauge("tideway_registry_instances"),
        Some(SERVICES_PER_DEMO)
    );
    // The admin endpoints stay sane: routes unchanged (demo-a publishes them), registry synced
    // and connected, ready.
    assert_eq!(gw.gauge("tideway_routes"), Some(routes));
    assert_eq!(gw.gauge("tideway_registry_connected"), Some(1.0));
    assert_eq!(gw.gauge("tideway_registry_services"), Some(3.0));
    let health = gw.healthz();
    assert!(
        health.starts_with("200 ok\n") && health.contains("registry: synced"),
        "{health}"
    );
    assert_eq!(gw.readyz(), 200);
    let metrics = http::get(gw.admin, "/metrics").unwrap().body;
    assert!(
        metrics.contains(r#"tideway_requests_total{route="POST /api/quotes",status="200"}"#),
        "{metrics}"
    );
}

#[test]
fn the_gateway_keeps_routing_while_etcd_is_down_and_catches_up_after() {
    let mut etcd = EtcdServer::start();
    let endpoints = [etcd.endpoint()];
    let mut scene = Scene::new();
    let gw = scene.start_gateway(&endpoints);
    // demo-a keeps the default lease (10 s): it outlives the outage without re-registering.
    let (_, a) = scene.start_demo("demo-a", &endpoints, Duration::from_secs(10));
    scene.wait(SOON, "demo-a routable", || gw.quote().ok());
    let (b, b_addr) = scene.start_demo("demo-b", &endpoints, SHORT_TTL);
    scene.wait(SOON, "demo-b routable", || {
        gw.every_instance_serves(&[&a, &b_addr]).ok()
    });

    // etcd goes away (SIGKILL by pid): the gateway says so and keeps its last known state.
    etcd.stop();
    scene.wait(SOON, "/healthz reporting the registry disconnected", || {
        gw.healthz()
            .contains("registry: disconnected")
            .then_some(())
    });
    assert_eq!(
        gw.readyz(),
        200,
        "a lost registry does not make the gateway unready"
    );
    let during = gw.every_instance_serves(&[&a, &b_addr]);
    scene.check(during.map_err(|e| format!("while etcd was down: {e}")));
    assert_eq!(gw.gauge("tideway_registry_connected"), Some(0.0));

    // A change while etcd is down: demo-b stops (killed; it could not deregister anyway).
    scene.demos[b].kill();

    // etcd comes back on the same data dir and ports; a new instance starts after it. Both
    // changes are applied: demo-b's lease expires once etcd is back, demo-c joins.
    etcd.restart();
    let (_, c) = scene.start_demo("demo-c", &endpoints, SHORT_TTL);
    let mut expected = vec![a.clone(), c.clone()];
    expected.sort();
    scene.wait(SOON, "demo-b gone and demo-c in", || {
        (gw.routable(PRICING) == expected).then_some(())
    });
    scene.wait(SOON, "the registry synced again", || {
        gw.healthz().contains("registry: synced").then_some(())
    });
    let after = gw.every_instance_serves(&[&a, &c]);
    scene.check(after.map_err(|e| format!("after etcd came back: {e}")));
    assert_eq!(gw.gauge("tideway_registry_connected"), Some(1.0));
    // demo-b's other services go with their own keys, possibly a moment after its pricing one.
    scene.wait(SOON, "only demo-a's and demo-c's instances left", || {
        (gw.gauge("tideway_registry_instances") == Some(2.0 * SERVICES_PER_DEMO)).then_some(())
    });
    assert_eq!(gw.readyz(), 200);
}

#[test]
fn registration_watch_and_routing_survive_losing_the_etcd_leader() {
    let mut cluster = EtcdCluster::start(3);
    let endpoints = cluster.endpoints();
    let mut scene = Scene::new();
    let gw = scene.start_gateway(&endpoints);
    let (_, a) = scene.start_demo("demo-a", &endpoints, Duration::from_secs(3));
    scene.wait(SOON, "demo-a routable", || gw.quote().ok());

    let leader = scene.wait(SOON, "a cluster leader", || cluster.leader());
    cluster.kill(leader);
    let killed = Instant::now();
    // Routing carries on through the election.
    let during = gw.quotes(10);
    scene.check(during.map_err(|e| format!("a call failed after the leader died: {e}")));
    scene.wait(SOON, "a new leader among the survivors", || {
        cluster.leader().filter(|l| *l != leader)
    });

    // A registration after the kill, given all three endpoints (one of them dead), reaches the
    // gateway through its watch (re-established if it was on the dead member).
    let (_, c) = scene.start_demo("demo-c", &endpoints, Duration::from_secs(3));
    scene.wait(SOON, "demo-c routable", || {
        gw.every_instance_serves(&[&a, &c]).ok()
    });
    scene.wait(SOON, "the gateway's watch synced", || {
        gw.healthz().contains("registry: synced").then_some(())
    });
    // demo-a's and demo-c's leases (3 s) are kept alive past the leader change.
    while killed.elapsed() < Duration::from_secs(6) {
        let call = gw.quotes(2);
        scene.check(call.map_err(|e| format!("a call failed after the new leader: {e}")));
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut expected = vec![a, c];
    expected.sort();
    assert_eq!(gw.routable(PRICING), expected);
    assert_eq!(
        gw.gauge("tideway_registry_instances"),
        Some(2.0 * SERVICES_PER_DEMO)
    );
}
