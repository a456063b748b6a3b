//! Config reload of the real `tideway gateway` process: `POST /admin/reload` and SIGHUP swap in
//! a new generation of routes, services, cluster settings and edge policies without dropping
//! connections; a bad file is refused and changes nothing; 1,000 reloads leave RSS flat.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tideway_testkit::free_port;
use tideway_testkit::http::{self, metric};

const BIN: &str = env!("CARGO_BIN_EXE_tideway");

struct Gateway {
    child: Child,
    admin: SocketAddr,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Gateway {
    fn start(config: &Path, admin: SocketAddr) -> Gateway {
        let mut child = Command::new(BIN)
            .args(["gateway", "--config"])
            .arg(config)
            .env("RUST_LOG", "error")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let first = lines.next().expect("gateway printed nothing").unwrap();
        assert!(
            first.starts_with("Tideway gateway listening on"),
            "unexpected first line {first:?}"
        );
        std::thread::spawn(move || for _ in lines {});
        Gateway { child, admin }
    }

    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/PID/status")
    }

    fn reload(&self) -> http::Response {
        http::request(
            self.admin,
            "POST",
            "/admin/reload",
            Some(""),
            Duration::from_secs(10),
        )
        .unwrap()
    }

    fn metrics(&self) -> String {
        http::get(self.admin, "/metrics").unwrap().body
    }
}

/// Generation `a` or `b`: each has its own route (to the admin listener's `/healthz`, as an
/// HTTP upstream), its own cluster settings for an RPC service (so every reload builds a new
/// cluster and drops the old one), and its own edge policy with a rate-limit bucket.
fn config(addr: SocketAddr, admin: SocketAddr, generation: &str) -> String {
    let balancer = if generation == "a" {
        "p2c_peak_ewma"
    } else {
        "round_robin"
    };
    format!(
        r#"
[server]
listen = "{addr}"
admin_listen = "{admin}"
worker_threads = 1

[[services]]
name = "reload.Svc"
endpoints = ["127.0.0.1:9"]

[clusters."reload.Svc"]
balancer = "{balancer}"

[[routes]]
path = "/{generation}/{{*rest}}"
upstream = "http://{admin}"
strip_prefix = "/{generation}"

[[routes]]
path = "/rpc-{generation}"
service = "reload.Svc"
rpc_method = "get"

[route_policies."/{generation}/{{*rest}}"]
rate_limit = {{ rate = 100000.0, burst = 100000, key = "ip" }}
"#
    )
}

fn write(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn status(addr: SocketAddr, path: &str) -> u16 {
    http::get(addr, path).unwrap().status
}

/// One request on an open keep-alive connection; returns the status.
fn keep_alive_get(stream: &mut TcpStream, addr: SocketAddr, path: &str) -> u16 {
    // One write: a request split over several segments would wait on delayed ACKs.
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .expect("content-length");
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).unwrap();
    head[9..12].parse().unwrap()
}

fn median(mut xs: Vec<u64>) -> u64 {
    xs.sort_unstable();
    xs[xs.len() / 2]
}

#[test]
fn reloads_swap_generations_refuse_bad_files_and_keep_rss_flat() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    write(&path, &config(addr, admin, "a"));
    let gw = Gateway::start(&path, admin);
    tideway_testkit::eventually(Duration::from_secs(10), "gateway answers", || {
        (http::get(addr, "/a/healthz").ok()?.status == 200).then_some(())
    });
    assert_eq!(status(addr, "/b/healthz"), 404);

    // A connection opened before the reloads is served across all of them.
    let mut kept = TcpStream::connect(addr).unwrap();
    kept.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    kept.set_nodelay(true).unwrap();
    assert_eq!(keep_alive_get(&mut kept, addr, "/a/healthz"), 200);

    // SIGHUP: the file is read again.
    write(&path, &config(addr, admin, "b"));
    let pid = gw.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    tideway_testkit::eventually(Duration::from_secs(10), "SIGHUP reload applied", || {
        (status(addr, "/b/healthz") == 200).then_some(())
    });
    assert_eq!(status(addr, "/a/healthz"), 404);
    assert_eq!(keep_alive_get(&mut kept, addr, "/b/healthz"), 200);

    // A bad file is refused with its error, and the running generation stays.
    write(&path, "[server]\nlisten = \"not an address\"\n");
    let refused = gw.reload();
    assert_eq!(refused.status, 422, "{}", refused.body);
    assert!(
        refused.body.contains("\"reloaded\": false"),
        "{}",
        refused.body
    );
    assert!(
        refused.body.contains("invalid socket address"),
        "{}",
        refused.body
    );
    assert_eq!(status(addr, "/b/healthz"), 200);
    // So is one whose routes collide.
    let colliding = config(addr, admin, "b")
        + &format!("\n[[routes]]\npath = \"/b/{{*rest}}\"\nupstream = \"http://{admin}\"\n");
    write(&path, &colliding);
    assert_eq!(gw.reload().status, 422);
    assert_eq!(status(addr, "/b/healthz"), 200);

    // 1,000 reloads alternating the two generations, each checked by a request on the
    // connection kept open since the start and by the refused path of the other generation.
    const RELOADS: usize = 1000;
    let mut samples: Vec<(usize, u64)> = Vec::new();
    let started = Instant::now();
    for i in 0..RELOADS {
        let (now, other) = if i % 2 == 0 { ("a", "b") } else { ("b", "a") };
        write(&path, &config(addr, admin, now));
        let done = gw.reload();
        assert_eq!(done.status, 200, "reload {i}: {}", done.body);
        assert_eq!(
            keep_alive_get(&mut kept, addr, &format!("/{now}/healthz")),
            200,
            "reload {i}"
        );
        assert_eq!(
            keep_alive_get(&mut kept, addr, &format!("/{other}/healthz")),
            404,
            "reload {i}"
        );
        if i % 10 == 9 {
            samples.push((i + 1, gw.rss_kib()));
        }
    }
    let elapsed = started.elapsed();
    // Freed memory goes back to the OS within jemalloc's decay time.
    std::thread::sleep(Duration::from_secs(2));
    let end = gw.rss_kib();
    let early = median(
        samples
            .iter()
            .filter(|(n, _)| (100..=300).contains(n))
            .map(|s| s.1)
            .collect(),
    );
    let late = median(
        samples
            .iter()
            .filter(|(n, _)| *n >= 800)
            .map(|s| s.1)
            .collect(),
    );
    eprintln!(
        "{RELOADS} reloads in {elapsed:?}; RSS median after reloads 100-300: {early} KiB, \
         800-1000: {late} KiB, 2 s after the last: {end} KiB"
    );
    let metrics = gw.metrics();
    let ok = metric(&metrics, "tideway_config_reloads_total{result=\"ok\"}").unwrap_or(0.0);
    let failed = metric(&metrics, "tideway_config_reloads_total{result=\"error\"}").unwrap_or(0.0);
    // 1,000 by the admin call, one by SIGHUP; two refused.
    assert_eq!(ok as usize, RELOADS + 1);
    assert_eq!(failed as usize, 2);
    // Flat: the last 200 reloads hold no more than 5 % (and at most 1 MiB) above reloads
    // 100-300. A generation kept alive per reload (a cluster, an edge with its tasks, a route
    // table) would add well over that over 700 reloads.
    let allowed = (early / 20).min(1024);
    assert!(
        late <= early + allowed && end <= early + allowed,
        "RSS grew over the reloads: {early} KiB -> {late} KiB (end {end} KiB); samples {samples:?}"
    );
}
