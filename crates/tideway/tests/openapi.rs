//! `/openapi.json` and `/docs` of `tideway demo`, on both listeners, and schemathesis (PyPI,
//! installed by scripts/test into `$HOME/.cache/tideway/venv`) run against the demo with the
//! document: every response must be documented (status, content type, headers, JSON schema),
//! no 5xx, input the schemas accept accepted, invalid input rejected, and the stateful checks
//! pass. The demo's services publish their argument schemas (`#[service(schema)]`), so the
//! document describes request bodies and parameters exactly.
//!
//! Without schemathesis the test is skipped, except under `CI=true`, where it fails.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use tideway_testkit::Process;

const BIN: &str = env!("CARGO_BIN_EXE_tideway");
/// Generated test cases per operation and phase: bounded, so the run takes well under a minute.
const MAX_EXAMPLES: &str = "40";
/// The whole schemathesis run may not take longer (coreutils `timeout`).
const SCHEMATHESIS_TIMEOUT_SECS: &str = "300";

struct Demo {
    _process: Process,
    _dir: tempfile::TempDir,
    base: String,
    admin: String,
}

fn start_demo() -> Demo {
    let dir = tempfile::tempdir().unwrap();
    let mut command = Command::new(BIN);
    command.args([
        "demo",
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
    ]);
    let mut process = Process::spawn("tideway-demo", command, dir.path());
    let base = process
        .wait_for_line("Tideway gateway listening on ", Duration::from_secs(30))
        .trim()
        .to_owned();
    let admin = process.wait_for_line("Admin: ", Duration::from_secs(10));
    let admin = admin.split("/metrics").next().unwrap().trim().to_owned();
    Demo {
        _process: process,
        _dir: dir,
        base,
        admin,
    }
}

fn curl(url: &str) -> (u16, String, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "-D", "-", url])
        .output()
        .expect("curl is installed by scripts/test");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head.to_ascii_lowercase(), body.to_owned())
}

fn document(url: &str) -> Value {
    let (status, head, body) = curl(url);
    assert_eq!(status, 200, "{url}: {body}");
    assert!(head.contains("content-type: application/json"), "{head}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{url}: not JSON ({e}): {body}"))
}

fn schemathesis() -> Option<PathBuf> {
    let venv = match std::env::var_os("TIDEWAY_VENV") {
        Some(v) => PathBuf::from(v),
        None => PathBuf::from(std::env::var_os("HOME")?).join(".cache/tideway/venv"),
    };
    let bin = venv.join("bin/schemathesis");
    bin.exists().then_some(bin)
}

#[test]
fn demo_documents_its_routes_on_both_listeners() {
    let demo = start_demo();
    let public = document(&format!("{}/openapi.json", demo.base));
    let admin = document(&format!("{}/openapi.json", demo.admin));
    assert_eq!(public["openapi"], "3.0.3");
    assert_eq!(
        public["paths"], admin["paths"],
        "one route table, one document"
    );
    assert_eq!(admin["servers"][0]["url"], demo.base.as_str());

    let paths = public["paths"].as_object().unwrap();
    let mut operations: Vec<String> = paths
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .map(move |m| format!("{} {path}", m.to_uppercase()))
        })
        .collect();
    operations.sort();
    assert_eq!(
        operations,
        [
            "GET /api/waybills",
            "GET /api/waybills/{id}",
            "GET /api/waybills/{waybill_id}/events",
            "POST /api/quotes",
            "POST /api/waybills",
            "POST /api/waybills/{waybill_id}/events",
        ]
    );
    let get = &public["paths"]["/api/waybills/{id}"]["get"];
    assert_eq!(get["parameters"][0]["name"], "id");
    assert_eq!(get["parameters"][0]["in"], "path");
    assert_eq!(get["parameters"][0]["required"], true);
    // `list(offset: Option<u32>, limit: Option<u32>)`: integer query parameters.
    let list = &public["paths"]["/api/waybills"]["get"]["parameters"];
    assert_eq!(list[0]["in"], "query");
    assert_eq!(list[1]["schema"]["type"], "integer");
    // `limit` is bounded as the service checks it.
    let limit = list
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "limit")
        .unwrap();
    assert_eq!(limit["schema"]["minimum"], 1);
    assert_eq!(limit["schema"]["maximum"], 100);
    // Bodies: the published schemas, their fields and rules under components/schemas.
    let schemas = &public["components"]["schemas"];
    let body_schema = |path: &str| {
        let reference = public["paths"][path]["post"]["requestBody"]["content"]["application/json"]
            ["schema"]["$ref"]
            .as_str()
            .unwrap_or_else(|| panic!("{path}: the body is a $ref"))
            .to_owned();
        let name = reference
            .strip_prefix("#/components/schemas/")
            .unwrap()
            .to_owned();
        schemas[&name].clone()
    };
    let waybill = body_schema("/api/waybills");
    assert_eq!(
        waybill["required"],
        serde_json::json!(["sender", "recipient", "weight_grams", "service_level"])
    );
    assert_eq!(waybill["properties"]["weight_grams"]["maximum"], 70_000);
    assert_eq!(
        schemas["Party"]["required"],
        serde_json::json!(["name", "address", "zone"])
    );
    let event = body_schema("/api/waybills/{waybill_id}/events");
    assert_eq!(event["required"], serde_json::json!(["status", "location"]));
    let quote = body_schema("/api/quotes");
    assert_eq!(
        quote["required"],
        serde_json::json!(["weight_grams", "from_zone", "to_zone", "service_level"])
    );
    // OpenAPI 3.0: no JSON Schema 2020 forms, and every reference resolves.
    let text = public.to_string();
    for absent in ["$schema", "$defs", "\"const\"", "\"null\""] {
        assert!(!text.contains(absent), "{absent} in the document");
    }
    for part in text.split("\"$ref\":\"#/components/").skip(1) {
        let target = part.split('"').next().unwrap();
        let mut node = &public["components"];
        for key in target.split('/') {
            node = &node[key];
        }
        assert!(!node.is_null(), "dangling $ref {target}");
    }
    let append = &public["paths"]["/api/waybills/{waybill_id}/events"]["post"];
    for status in [
        "200", "400", "401", "403", "404", "405", "413", "429", "503", "504",
    ] {
        assert!(
            append["responses"].get(status).is_some(),
            "{status} missing"
        );
    }
    assert_eq!(
        public["components"]["schemas"]["Error"]["required"],
        serde_json::json!(["code", "message", "request_id"])
    );

    for base in [&demo.base, &demo.admin] {
        let (status, head, body) = curl(&format!("{base}/docs"));
        assert_eq!(status, 200, "{base}/docs");
        assert!(head.contains("content-type: text/html"), "{head}");
        assert!(body.contains("/openapi.json"));
    }
}

#[test]
fn schemathesis_passes_against_the_demo() {
    let Some(schemathesis) = schemathesis() else {
        let msg =
            "schemathesis is not installed in $HOME/.cache/tideway/venv (scripts/test installs it)";
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{msg}");
        eprintln!("SKIPPED: {msg}");
        return;
    };
    let demo = start_demo();
    let work = tempfile::tempdir().unwrap();
    let url = format!("{}/openapi.json", demo.base);
    // Every check, positive_data_acceptance included: the services publish schemas that state
    // every rule they check, so whatever the document accepts the service accepts too.
    let out = Command::new("timeout")
        .arg(SCHEMATHESIS_TIMEOUT_SECS)
        .arg(&schemathesis)
        .args([
            "run",
            &url,
            "--checks",
            "all",
            "--max-examples",
            MAX_EXAMPLES,
            "--request-timeout",
            "10",
            "--no-color",
        ])
        .current_dir(work.path())
        .env("SCHEMATHESIS_HOOKS", "")
        .output()
        .expect("run schemathesis");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "schemathesis failed ({:?}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains("passed"),
        "no passed test cases reported:\n{stdout}"
    );
}
