//! The `tideway` binary as a user runs it: `demo` answered with curl, `check-config` on good and
//! bad files.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_tideway");

struct Demo {
    child: Child,
    base: String,
    admin: String,
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_demo() -> Demo {
    let mut child = Command::new(BIN)
        .args([
            "demo",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let first = lines.next().expect("demo printed nothing").unwrap();
    let base = first
        .strip_prefix("Tideway gateway listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
        .to_owned();
    let admin = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| {
            l.strip_prefix("Admin: ")
                .and_then(|rest| rest.split("/metrics").next())
                .map(str::to_owned)
        })
        .expect("demo printed no admin address");
    // Keep draining stdout so the demo never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Demo { child, base, admin }
}

fn curl(args: &[&str]) -> (u16, serde_json::Value) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl is installed by scripts/test");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap();
    let json = serde_json::from_str(body).unwrap_or(serde_json::Value::Null);
    (code.parse().unwrap(), json)
}

#[test]
fn demo_serves_the_logistics_api_over_http() {
    let demo = start_demo();
    let base = &demo.base;
    let create = format!("{base}/api/waybills");
    let (code, waybill) = curl(&[
        "-X",
        "POST",
        &create,
        "-H",
        "content-type: application/json",
        "-d",
        r#"{"sender":{"name":"A","address":"1 St","zone":1},"recipient":{"name":"B","address":"2 St","zone":2},"weight_grams":500,"service_level":"standard"}"#,
    ]);
    assert_eq!(code, 200, "{waybill}");
    let id = waybill["id"].as_str().unwrap().to_owned();

    let (code, got) = curl(&[&format!("{base}/api/waybills/{id}")]);
    assert_eq!((code, &got["id"]), (200, &waybill["id"]));

    let (code, event) = curl(&[
        "-X",
        "POST",
        &format!("{base}/api/waybills/{id}/events"),
        "-d",
        r#"{"status":"picked_up","location":"Depot"}"#,
    ]);
    assert_eq!(
        (code, event["sequence"].as_u64()),
        (200, Some(1)),
        "{event}"
    );
    let (code, history) = curl(&[&format!("{base}/api/waybills/{id}/events")]);
    assert_eq!((code, history.as_array().map(Vec::len)), (200, Some(1)));

    let (code, page) = curl(&[&format!("{base}/api/waybills?offset=0&limit=5")]);
    assert_eq!((code, page["total"].as_u64()), (200, Some(1)), "{page}");

    let (code, quote) = curl(&[
        "-X",
        "POST",
        &format!("{base}/api/quotes"),
        "-d",
        r#"{"weight_grams":2000,"from_zone":1,"to_zone":4,"service_level":"standard"}"#,
    ]);
    assert_eq!(
        (code, quote["currency"].as_str()),
        (200, Some("EUR")),
        "{quote}"
    );

    let (code, err) = curl(&["-X", "POST", &create, "-d", r#"{"weight_grams":0}"#]);
    assert_eq!(code, 400, "{err}");
    assert_eq!(err["code"], "invalid_argument");
    let mut bad = waybill.clone();
    bad["weight_grams"] = 0.into();
    let (code, err) = curl(&["-X", "POST", &create, "-d", &bad.to_string()]);
    assert_eq!(code, 400);
    assert!(
        err["message"].as_str().unwrap().starts_with("weight_grams"),
        "{err}"
    );

    let (code, err) = curl(&[&format!("{base}/api/waybills/WB404")]);
    assert_eq!((code, err["code"].as_str()), (404, Some("not_found")));
    let (code, _) = curl(&[&format!("{base}/nope")]);
    assert_eq!(code, 404);

    // The admin listener reports the traffic above and the allocator.
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            &format!("{}/metrics", demo.admin),
        ])
        .output()
        .unwrap();
    let metrics = String::from_utf8_lossy(&out.stdout);
    for series in [
        r#"tideway_requests_total{route="POST /api/waybills",status="200"}"#,
        r#"tideway_requests_total{route="POST /api/waybills",status="400"}"#,
        "tideway_allocator_allocated_bytes ",
        "tideway_allocator_resident_bytes ",
        "tideway_memory_budget_bytes 268435456",
        "tideway_memory_pressure 0",
    ] {
        assert!(metrics.contains(series), "missing {series} in:\n{metrics}");
    }
    // The exposition passes Prometheus's own linter (promtool from Debian's prometheus package,
    // installed by scripts/test).
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is installed by scripts/test (Debian package prometheus)");
    use std::io::Write as _;
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(metrics.as_bytes())
        .unwrap();
    let checked = promtool.wait_with_output().unwrap();
    assert!(
        checked.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
}

#[test]
fn demo_stops_cleanly_on_sigterm() {
    let mut demo = start_demo();
    let pid = demo.child.id().to_string();
    // The shell's builtin kill: no dependency on a procps binary.
    assert!(
        Command::new("sh")
            .args(["-c", &format!("kill -TERM {pid}")])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = demo.child.try_wait().unwrap() {
            assert!(status.success(), "{status}");
            break;
        }
        assert!(Instant::now() < deadline, "demo did not stop after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn check_config(text: &str) -> (bool, String) {
    let dir =
        std::env::temp_dir().join(format!("tideway-cli-{}-{}", std::process::id(), text.len()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("gateway.toml");
    std::fs::write(&file, text).unwrap();
    let out = Command::new(BIN)
        .args(["check-config", file.to_str().unwrap()])
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn check_config_accepts_a_good_file_and_reports_every_problem_of_a_bad_one() {
    let (ok, out) = check_config(
        r#"
[server]
listen = "127.0.0.1:8080"

[[services]]
name = "logistics.Pricing"
endpoints = ["127.0.0.1:7070"]

[[routes]]
path = "/api/rates/{from_zone}/{to_zone}"
service = "logistics.Pricing"
rpc_method = "quote"
params = { from_zone = "integer", to_zone = "integer" }

[[routes]]
path = "/legacy/{*rest}"
upstream = "http://127.0.0.1:9000"
strip_prefix = "/legacy"
"#,
    );
    assert!(ok, "{out}");
    assert!(out.contains("OK (2 routes, 1 services"), "{out}");

    let (ok, out) = check_config(
        r#"[server]
max_connections = 0
request_timeout = "0s"

[[routes]]
path = "no-slash"
upstream = "http://127.0.0.1:9000"

[[routes]]
path = "/x"
service = "missing.Service"
"#,
    );
    assert!(!ok);
    for expected in [
        "line 2: server.max_connections",
        "line 3: server.request_timeout",
        "line 6: routes[0].path",
        "line 9: routes[1].rpc_method",
        "line 11: routes[1].service",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
}
