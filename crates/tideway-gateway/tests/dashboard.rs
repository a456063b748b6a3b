//! The admin listener's pages and the OpenAPI document, on real sockets: the dashboard's static
//! files load without the admin token while the data they fetch needs it, `/admin/memory`
//! fills from the metrics upkeep, and on the public listener `/openapi.json` and `/docs` give way
//! to a route that takes their path.

use std::net::SocketAddr;
use std::time::Duration;

use http::Method;
use tideway_gateway::config::ServerSettings;
use tideway_gateway::router::CallSettings;
use tideway_gateway::{Gateway, Route, RouteTable, RouteTarget, RpcBackends};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TOKEN: &str = "dashboard-test-token-0123456789";

struct Reply {
    status: u16,
    head: String,
    body: String,
}

/// One request on its own connection (`Connection: close`), read to the end, within 10 s.
async fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> Reply {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.unwrap();
        raw
    };
    let raw = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .expect("the exchange took more than 10 s");
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").expect("a response head");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status code");
    Reply {
        status,
        head: head.to_ascii_lowercase(),
        body: body.to_owned(),
    }
}

fn rpc_route(method: Method, path: &str) -> Route {
    Route {
        method: Some(method.clone()),
        path: path.into(),
        timeout: None,
        target: RouteTarget::Rpc {
            service: "test.Nobody".into(),
            full_name: format!("test.Nobody/{}", method.as_str().to_lowercase()),
            params: vec![],
        },
        origin: "test".into(),
        limit: None,
        call: CallSettings::for_method(Some(&method)),
    }
}

async fn start(routes: Vec<Route>) -> Gateway {
    let settings = ServerSettings {
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_listen: Some("127.0.0.1:0".parse().unwrap()),
        admin_token: Some(TOKEN.into()),
        ..Default::default()
    };
    Gateway::start(
        settings,
        RouteTable::new(routes).unwrap(),
        RpcBackends::new(),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn dashboard_pages_load_without_the_token_and_their_data_needs_it() {
    let gateway = start(vec![rpc_route(Method::GET, "/api/things/{id}")]).await;
    let admin = gateway.admin_addr().unwrap();

    for (path, content_type) in [
        ("/dashboard", "text/html"),
        ("/dashboard/app.js", "text/javascript"),
        ("/dashboard/style.css", "text/css"),
        ("/docs", "text/html"),
    ] {
        let r = get(admin, path, None).await;
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        assert!(
            r.head.contains(&format!("content-type: {content_type}")),
            "{path}: {}",
            r.head
        );
    }
    for path in [
        "/openapi.json",
        "/admin/memory",
        "/admin/services",
        "/metrics",
    ] {
        assert_eq!(get(admin, path, None).await.status, 401, "{path}");
        assert_eq!(
            get(admin, path, Some("wrong-token-wrong-token"))
                .await
                .status,
            401,
            "{path}"
        );
    }

    // The admin listener's document points at the public listener.
    let r = get(admin, "/openapi.json", Some(TOKEN)).await;
    assert_eq!(r.status, 200);
    let doc: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(
        doc["servers"][0]["url"],
        format!("http://{}", gateway.local_addr())
    );
    let op = &doc["paths"]["/api/things/{id}"]["get"];
    assert_eq!(op["parameters"][0]["name"], "id");
    assert_eq!(op["parameters"][0]["in"], "path");

    // The metrics upkeep samples memory at once and then every few seconds.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let samples = loop {
        let r = get(admin, "/admin/memory", Some(TOKEN)).await;
        assert_eq!(r.status, 200);
        let doc: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        let samples = doc["samples"].as_array().cloned().unwrap_or_default();
        if !samples.is_empty() {
            assert_eq!(doc["capacity"], 720);
            break samples;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no memory sample within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let last = samples.last().unwrap();
    assert!(last["rss_bytes"].as_u64().unwrap() > 1 << 20, "{last}");
    assert!(last["unix_ms"].as_u64().unwrap() > 0);
    gateway.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn public_docs_give_way_to_a_route_on_their_path() {
    let gateway = start(vec![
        rpc_route(Method::GET, "/docs"),
        rpc_route(Method::GET, "/api/things/{id}"),
    ])
    .await;
    let public = gateway.local_addr();

    let r = get(public, "/openapi.json", None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.head.contains("content-type: application/json"));
    let doc: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert!(
        doc.get("servers").is_none(),
        "relative to where it was fetched"
    );
    assert!(doc["paths"]["/docs"]["get"].is_object());

    // `/docs` is a route here: the route answers (its service is unknown: 503), not the page.
    let r = get(public, "/docs", None).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.body.contains("\"code\":\"unavailable\""), "{}", r.body);
    gateway.shutdown(Duration::from_secs(1)).await;
}
