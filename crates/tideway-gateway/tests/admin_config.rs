//! `/admin/config` on a real admin listener: the effective config of the running generation
//! (environment overrides applied, defaults filled in, then whatever a reload swapped in), with
//! every secret redacted: the HS256 secret, the API key hash and the admin token appear nowhere
//! in the body, while routes, policies and settings do.

use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use tideway_gateway::config::GatewayConfig;
use tideway_gateway::edge::EdgePolicies;
use tideway_gateway::{Gateway, assemble};
use tideway_rpc::ClientConfig;

const HS256_SECRET: &str = "hs256-secret-that-must-never-show-0123456789";
/// An API key as the config stores it: 64 hex digits of SHA-256.
const API_KEY_SHA256: &str = "5c8d31b3d0f3e0f0ea7f2d1b07ae2b5a4c6d0b1f4ec7a3c2e3a5b4d6f7a8b9c0";
/// Set in the file, replaced by the environment.
const FILE_ADMIN_TOKEN: &str = "file-admin-token-0123456789";
/// The token the gateway runs with (from `TIDEWAY__SERVER__ADMIN_TOKEN`).
const ADMIN_TOKEN: &str = "env-admin-token-0123456789";

/// A config with an RPC route, an upstream route named by `prefix`, an HS256 key, an API key
/// and policies on both routes.
fn config_text(prefix: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
admin_token = "{FILE_ADMIN_TOKEN}"

[[services]]
name = "test.Svc"
endpoints = ["127.0.0.1:9"]

[[routes]]
methods = ["GET"]
path = "/items/{{id}}"
service = "test.Svc"
rpc_method = "get"

[[routes]]
path = "/{prefix}/{{*rest}}"
upstream = "http://127.0.0.1:9"
strip_prefix = "/{prefix}"

[edge]
[[edge.jwt_keys]]
id = "k1"
algorithm = "HS256"
secret = "{HS256_SECRET}"

[[edge.api_keys]]
name = "scanner"
sha256 = "{API_KEY_SHA256}"

[route_policies."GET /items/{{id}}"]
auth = {{ methods = "either" }}
rate_limit = {{ rate = 5.0, burst = 10, key = "subject" }}

[route_policies."/{prefix}/{{*rest}}"]
ip = {{ allow = ["127.0.0.0/8"], deny = ["203.0.113.0/24"] }}
"#
    )
}

fn parse(prefix: &str) -> GatewayConfig {
    let env = [
        ("TIDEWAY__SERVER__ADMIN_TOKEN", ADMIN_TOKEN),
        ("TIDEWAY__SERVER__MAX_BODY_BYTES", "2048"),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()));
    GatewayConfig::parse(&config_text(prefix), "admin.toml", env).unwrap()
}

/// Status and body of an admin GET with the admin token.
fn admin_get(admin: std::net::SocketAddr, path: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "5", "-w", "\n%{http_code}", "-H"])
        .arg(format!("authorization: Bearer {ADMIN_TOKEN}"))
        .arg(format!("http://{admin}{path}"))
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.parse().unwrap_or(0), body.to_owned())
}

fn assert_no_secret(body: &str) {
    for secret in [HS256_SECRET, API_KEY_SHA256, FILE_ADMIN_TOKEN, ADMIN_TOKEN] {
        assert!(!body.contains(secret), "{secret} shown in {body}");
    }
}

fn route<'a>(doc: &'a Value, path: &str) -> &'a Value {
    doc["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["path"] == path)
        .unwrap_or_else(|| panic!("{path} not in {doc:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_config_shows_the_live_generation_with_secrets_redacted() {
    let config = parse("legacy");
    let routes = assemble::route_table(&config, &[]).unwrap();
    let backends = assemble::backends(&config, &ClientConfig::default()).unwrap();
    let edge = EdgePolicies::new(config.edge.as_ref().unwrap(), &config.route_policies).unwrap();
    let gateway = Gateway::start(config.server.clone(), routes, backends)
        .await
        .unwrap();
    gateway.set_edge(Some(edge));
    gateway.set_config(config);
    let admin = gateway.admin_addr().unwrap();

    // The token is needed, as for every admin endpoint.
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("http://{admin}/admin/config"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "401");

    let (status, body) = admin_get(admin, "/admin/config");
    assert_eq!(status, 200, "{body}");
    assert_no_secret(&body);
    let doc: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["generation"], 1);
    assert_eq!(doc["source"], "config");
    let c = &doc["config"];
    // Settings after the environment's overrides, defaults filled in.
    assert_eq!(c["server"]["max_body_bytes"], 2048, "{c:#}");
    assert_eq!(c["server"]["request_timeout"], "10s");
    assert_eq!(c["server"]["admin_token"], "<redacted>");
    // Routes, services and policies as configured.
    assert_eq!(c["routes"][0]["path"], "/items/{id}");
    assert_eq!(c["routes"][0]["service"], "test.Svc");
    assert_eq!(c["routes"][1]["path"], "/legacy/{*rest}");
    assert_eq!(c["routes"][1]["upstream"], "http://127.0.0.1:9");
    assert_eq!(c["services"][0]["endpoints"], json!(["127.0.0.1:9"]));
    assert_eq!(
        c["route_policies"]["/legacy/{*rest}"]["ip"]["deny"],
        json!(["203.0.113.0/24"])
    );
    // Secrets: the keys are there (so an operator sees they are set), the values are not.
    let key = &c["edge"]["jwt_keys"][0];
    assert_eq!(key["id"], "k1");
    assert_eq!(key["algorithm"], "HS256");
    assert_eq!(key["secret"], "<redacted>");
    assert_eq!(c["edge"]["api_keys"][0]["name"], "scanner");
    assert_eq!(c["edge"]["api_keys"][0]["sha256"], "<redacted>");

    // /admin/routes shows each route's policy, found as requests find it.
    let (status, body) = admin_get(admin, "/admin/routes");
    assert_eq!(status, 200, "{body}");
    assert_no_secret(&body);
    let doc: Value = serde_json::from_str(&body).unwrap();
    let items = &route(&doc, "/items/{id}")["policy"];
    assert_eq!(items["key"], "GET /items/{id}");
    assert_eq!(items["auth"]["methods"], "either");
    assert_eq!(items["auth"]["jwt_keys"][0]["algorithm"], "HS256");
    assert_eq!(items["auth"]["api_keys"], json!(["scanner"]));
    assert_eq!(items["auth"]["api_key_header"], "x-api-key");
    assert_eq!(items["rate_limit"]["key"], "subject");
    assert_eq!(items["rate_limit"]["burst"], 10);
    let legacy = &route(&doc, "/legacy/{*rest}")["policy"];
    assert_eq!(legacy["ip"]["allow"], json!(["127.0.0.0/8"]));
    assert_eq!(legacy["ip"]["deny"], json!(["203.0.113.0/24"]));
    assert!(legacy.get("auth").is_none(), "{legacy:#}");

    // A reload: the new generation is what both show. `[server]` stays as running, and the
    // key the file changed is reported as waiting for a restart.
    let mut next = parse("v2");
    next.server.max_body_bytes = 4096;
    let outcome = gateway
        .reloader()
        .reload(&next, &ClientConfig::default())
        .await
        .unwrap();
    assert_eq!(outcome.needs_restart, vec!["max_body_bytes"]);
    let (status, body) = admin_get(admin, "/admin/config");
    assert_eq!(status, 200, "{body}");
    assert_no_secret(&body);
    let doc: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["generation"], 2);
    assert_eq!(doc["needs_restart"], json!(["max_body_bytes"]));
    assert_eq!(doc["config"]["server"]["max_body_bytes"], 2048);
    assert_eq!(doc["config"]["routes"][1]["path"], "/v2/{*rest}");
    assert!(
        doc["config"]["route_policies"]
            .get("/legacy/{*rest}")
            .is_none(),
        "{doc:#}"
    );
    let (_, body) = admin_get(admin, "/admin/routes");
    let doc: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(route(&doc, "/v2/{*rest}")["policy"]["key"], "/v2/{*rest}");
    assert!(
        doc["routes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["path"] != "/legacy/{*rest}"),
        "{doc:#}"
    );
    gateway.shutdown(Duration::from_secs(1)).await;
}
