//! Edge policies on the gateway, end to end with curl: the token endpoint issues a token through
//! an auth service and the gateway then accepts it; bad tokens get 401; the subject reaches the
//! service as call metadata; CORS preflight; a rate limit's 429. (Token verification against an
//! independent implementation, IP rules and shared limits are tested in `crates/tideway-edge`.)

use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use tideway_gateway::config::{GatewayConfig, ServerSettings};
use tideway_gateway::edge::EdgePolicies;
use tideway_gateway::{Gateway, Route, RouteTable, RpcBackends};
use tideway_rpc::{CallContext, ClientConfig, RpcError, Server, ServerHandle};

/// The auth service the token endpoint asks.
#[tideway_macros::service(name = "test.Auth")]
trait Auth {
    async fn login(&self, username: String, password: String) -> Result<Value, RpcError>;
}

/// A service that tells who the gateway said the caller is.
#[tideway_macros::service(name = "test.Me")]
trait Me {
    #[route(GET, "/me")]
    async fn me(&self) -> Result<Value, RpcError>;
    #[route(GET, "/limited")]
    async fn limited(&self) -> Result<Value, RpcError>;
}

struct AuthImpl;
impl Auth for AuthImpl {
    async fn login(&self, username: String, password: String) -> Result<Value, RpcError> {
        if username == "alice" && password == "wonderland" {
            Ok(json!({"subject": "alice", "claims": {"role": "dispatcher"}}))
        } else {
            Err(RpcError::new(
                tideway_rpc::Status::Unauthenticated,
                "wrong user name or password",
            ))
        }
    }
}

struct MeImpl;
impl Me for MeImpl {
    async fn me(&self) -> Result<Value, RpcError> {
        let ctx = CallContext::current().expect("in a call");
        let md = ctx.metadata();
        Ok(json!({
            "subject": md.get("x-auth-subject"),
            "role": md.get("x-auth-claim-role"),
        }))
    }
    async fn limited(&self) -> Result<Value, RpcError> {
        let ctx = CallContext::current().expect("in a call");
        Ok(json!({"subject": ctx.metadata().get("x-auth-subject")}))
    }
}

const CONFIG: &str = r#"
[edge]
[[edge.jwt_keys]]
id = "k1"
algorithm = "HS256"
secret = "0123456789abcdef0123456789abcdef-test-only"
issuer = "tideway-test"
audience = ["api"]

[edge.token_issuer]
key = "k1"
ttl = "5m"
auth_service = "test.Auth"
auth_method = "login"

[route_policies."GET /me"]
auth = { methods = "jwt", forward_claims = ["role"] }
cors = { allow_origins = ["https://app.example"] }

[route_policies."/limited"]
rate_limit = { rate = 1.0, burst = 2, key = "ip" }
"#;

struct Fixture {
    gateway: Gateway,
    _auth: ServerHandle,
    _me: ServerHandle,
}

async fn start() -> Fixture {
    let auth = Server::builder()
        .add_service(AuthServer::new(AuthImpl))
        .bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let me = Server::builder()
        .add_service(MeServer::new(MeImpl))
        .bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let mut backends = RpcBackends::new();
    let client = ClientConfig::default();
    backends
        .insert("test.Auth", &[auth.local_addr()], &client)
        .unwrap();
    backends
        .insert("test.Me", &[me.local_addr()], &client)
        .unwrap();
    let routes = RouteTable::new(Route::from_descriptor(&MeClient::DESCRIPTOR)).unwrap();
    let config = GatewayConfig::parse(CONFIG, "edge.toml", std::iter::empty()).unwrap();
    let edge = EdgePolicies::new(config.edge.as_ref().unwrap(), &config.route_policies).unwrap();
    let gateway = Gateway::start(
        ServerSettings {
            listen: "127.0.0.1:0".parse().unwrap(),
            admin_listen: Some("127.0.0.1:0".parse().unwrap()),
            ..Default::default()
        },
        routes,
        backends,
    )
    .await
    .unwrap();
    gateway.set_edge(Some(edge));
    gateway.set_config(config);
    Fixture {
        gateway,
        _auth: auth,
        _me: me,
    }
}

/// Status, headers (lower-cased) and body of a curl request.
fn curl(args: &[&str]) -> (u16, String, String) {
    let out = Command::new("curl")
        .args(["-s", "-i", "--max-time", "5"])
        .args(args)
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).replace("\r\n", "\n");
    let (head, body) = text.split_once("\n\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head.to_lowercase(), body.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issued_tokens_are_accepted_and_bad_ones_refused() {
    let f = start().await;
    let base = format!("http://{}", f.gateway.local_addr());
    let me = format!("{base}/me");

    // No token: 401 with a bearer challenge.
    let (status, head, body) = curl(&[&me]);
    assert_eq!(status, 401, "{head}{body}");
    assert!(head.contains("www-authenticate: bearer"), "{head}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["code"],
        "unauthenticated"
    );

    // Wrong credentials: the auth service refuses, the token endpoint says invalid_grant.
    let token_url = format!("{base}/oauth2/token");
    let (status, _, body) = curl(&[
        "-X",
        "POST",
        "-d",
        "grant_type=password&username=alice&password=nope",
        &token_url,
    ]);
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["error"],
        "invalid_grant"
    );

    // Right credentials: a token.
    let (status, head, body) = curl(&[
        "-X",
        "POST",
        "-d",
        "grant_type=password&username=alice&password=wonderland",
        &token_url,
    ]);
    assert_eq!(status, 200, "{body}");
    assert!(head.contains("cache-control: no-store"), "{head}");
    let issued: Value = serde_json::from_str(&body).unwrap();
    let token = issued["access_token"].as_str().unwrap().to_owned();
    assert_eq!(issued["token_type"], "Bearer");

    // The gateway accepts it, and the service learns who the caller is.
    let bearer = format!("authorization: Bearer {token}");
    let (status, head, body) = curl(&["-H", &bearer, "-H", "origin: https://app.example", &me]);
    assert_eq!(status, 200, "{head}{body}");
    let who: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(who["subject"], "alice");
    assert_eq!(who["role"], "dispatcher");
    assert!(
        head.contains("access-control-allow-origin: https://app.example"),
        "{head}"
    );

    // A tampered token (one signature character changed) is refused.
    let mut tampered = token.clone().into_bytes();
    let last = tampered.len() - 2;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    let tampered = format!(
        "authorization: Bearer {}",
        String::from_utf8(tampered).unwrap()
    );
    let (status, _, body) = curl(&["-H", &tampered, &me]);
    assert_eq!(status, 401, "{body}");

    // A CORS preflight for the route is answered by the edge.
    let (status, head, _) = curl(&[
        "-X",
        "OPTIONS",
        "-H",
        "origin: https://app.example",
        "-H",
        "access-control-request-method: GET",
        &me,
    ]);
    assert!(status == 204 || status == 200, "{head}");
    assert!(
        head.contains("access-control-allow-origin: https://app.example"),
        "{head}"
    );
    f.gateway.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_route_answers_429_with_retry_after() {
    let f = start().await;
    let url = format!("http://{}/limited", f.gateway.local_addr());
    // Burst 2 at 1/s: of 4 requests at once, at least one is refused.
    let answers: Vec<(u16, String, String)> = (0..4).map(|_| curl(&[&url])).collect();
    let ok = answers.iter().filter(|(s, _, _)| *s == 200).count();
    let limited: Vec<_> = answers.iter().filter(|(s, _, _)| *s == 429).collect();
    assert!(ok >= 2, "{answers:?}");
    assert!(!limited.is_empty(), "{answers:?}");
    let (_, head, body) = limited[0];
    assert!(head.contains("retry-after:"), "{head}");
    assert_eq!(
        serde_json::from_str::<Value>(body).unwrap()["code"],
        "rate_limited"
    );
    // After a second the bucket has room again; a client cannot claim an identity with a
    // header: headers are not call metadata.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (status, _, body) = curl(&["-H", "x-auth-subject: mallory", &url]);
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["subject"],
        Value::Null
    );
    f.gateway.shutdown(Duration::from_secs(1)).await;
}

/// The HS256 secret of [`CONFIG`], which the admin API must never show.
const HS256_SECRET: &str = "0123456789abcdef0123456789abcdef-test-only";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_routes_show_each_routes_edge_policy_without_secrets() {
    let f = start().await;
    let admin = f.gateway.admin_addr().unwrap();
    let (status, _, body) = curl(&[&format!("http://{admin}/admin/routes")]);
    assert_eq!(status, 200, "{body}");
    assert!(!body.contains(HS256_SECRET), "{body}");
    let doc: Value = serde_json::from_str(&body).unwrap();
    let route = |path: &str| {
        doc["routes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["path"] == path)
            .unwrap_or_else(|| panic!("{path} not in {doc:#}"))
            .clone()
    };

    // `[route_policies."GET /me"]`: JWT with the key that verifies it, and CORS.
    let me = route("/me")["policy"].clone();
    assert_eq!(me["key"], "GET /me", "{me:#}");
    assert_eq!(me["auth"]["methods"], "jwt", "{me:#}");
    assert_eq!(me["auth"]["forward_claims"], json!(["role"]));
    assert_eq!(
        me["auth"]["jwt_keys"],
        json!([{"id": "k1", "algorithm": "HS256", "jwks": false,
                "issuer": "tideway-test", "audience": ["api"]}]),
        "{me:#}"
    );
    assert_eq!(me["auth"]["api_keys"], json!([]));
    assert_eq!(me["cors"]["allow_origins"], json!(["https://app.example"]));
    assert!(me.get("rate_limit").is_none(), "{me:#}");

    // `[route_policies."/limited"]` (any method): the rate limit, its key kind and bucket.
    let limited = route("/limited")["policy"].clone();
    assert_eq!(limited["key"], "/limited", "{limited:#}");
    assert_eq!(limited["rate_limit"]["rate"], 1.0);
    assert_eq!(limited["rate_limit"]["burst"], 2);
    assert_eq!(limited["rate_limit"]["key"], "ip");
    assert_eq!(limited["rate_limit"]["shared"], false);
    assert_eq!(limited["rate_limit_bucket"], "/limited");
    assert!(limited.get("auth").is_none(), "{limited:#}");
    f.gateway.shutdown(Duration::from_secs(1)).await;
}
