//! The admin listener: `/metrics` (Prometheus text), `/healthz` (liveness, plus the registry's
//! state) and `/readyz` (readiness: not ready while draining, over the memory budget, or before
//! the first registry sync). It runs on its own address so that it can be kept off
//! the public network, and its own connection cap keeps scrapers from piling up.
//!
//! It also serves the JSON admin API ([`ADMIN_API`], with `/admin/memory`: the last hour of
//! memory samples, see [`crate::history`]), `/openapi.json` and `/docs` (the route table as an
//! OpenAPI document, see [`crate::openapi`]) and the web dashboard at `/dashboard`
//! ([`crate::dashboard`]). The dashboard's and the docs' static files carry no data and are
//! served without the admin token; everything they fetch needs it.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::body::{GatewayBody, full};
use crate::telemetry;

/// The JSON admin API: read-only views of the gateway's state.
pub(crate) const ADMIN_API: [&str; 6] = [
    "/admin/routes",
    "/admin/services",
    "/admin/overload",
    "/admin/registry",
    crate::server::CONFIG_PATH,
    MEMORY_PATH,
];
/// The memory history (RSS and allocator bytes over the last hour), for the dashboard's chart.
const MEMORY_PATH: &str = "/admin/memory";

/// Admin connections served at once; more are closed.
const MAX_ADMIN_CONNECTIONS: usize = 64;
/// An admin connection must finish its request within this time.
const ADMIN_CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);

/// Readings the admin endpoints report, taken when asked.
pub(crate) trait AdminView: Send + Sync + 'static {
    /// Ready for traffic, or why not.
    fn readiness(&self) -> Result<(), &'static str>;
    /// Sets the gauges that are read at scrape time.
    fn refresh_gauges(&self);
    /// Lines for `/healthz` after `ok` (the registry's state, when there is one).
    fn health_details(&self) -> String;
    /// The JSON document of an admin API path (`/admin/routes`, ...), or `None` for an unknown
    /// one.
    fn admin_json(&self, path: &str) -> Option<serde_json::Value>;
    /// The OpenAPI document of the current route table, pointing at the public listener.
    fn openapi(&self) -> bytes::Bytes;
    /// The config reload the binary set up, when there is one (`POST /admin/reload`).
    fn reload_hook(&self) -> Option<crate::reload::ReloadHook>;
}

/// Binds the admin listener and serves it until `stop` is cancelled.
pub(crate) async fn start(
    addr: SocketAddr,
    token: Option<String>,
    view: Arc<dyn AdminView>,
    stop: CancellationToken,
) -> std::io::Result<SocketAddr> {
    if !addr.ip().is_loopback() && token.is_none() {
        // The config check refuses this too; the listener never serves it unprotected.
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            "the admin listener needs admin_token when it is not on loopback",
        ));
    }
    let token: Option<Arc<[u8]>> = token.map(|t| Arc::from(format!("Bearer {t}").into_bytes()));
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    // Install the recorder before the first request is counted.
    telemetry::prometheus();
    tokio::spawn(async move {
        let permits = Arc::new(Semaphore::new(MAX_ADMIN_CONNECTIONS));
        loop {
            let accepted = tokio::select! {
                () = stop.cancelled() => return,
                accepted = listener.accept() => accepted,
            };
            let Ok((stream, _)) = accepted else { continue };
            let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
                continue;
            };
            let view = Arc::clone(&view);
            let token = token.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let view = Arc::clone(&view);
                    // Static pages hold no data: the browser loads them, then asks for the token.
                    let authorized = crate::dashboard::asset(req.uri().path()).is_some()
                        || token.as_ref().is_none_or(|expected| {
                            req.headers()
                                .get(header::AUTHORIZATION)
                                .is_some_and(|given| constant_time_eq(given.as_bytes(), expected))
                        });
                    async move {
                        if !authorized {
                            let mut r = text(
                                StatusCode::UNAUTHORIZED,
                                "text/plain",
                                "admin endpoints need Authorization: Bearer <admin_token>\n".into(),
                            );
                            r.headers_mut().insert(
                                header::WWW_AUTHENTICATE,
                                HeaderValue::from_static("Bearer realm=\"tideway-admin\""),
                            );
                            return Ok::<_, Infallible>(r);
                        }
                        if req.uri().path() == RELOAD_PATH {
                            return Ok::<_, Infallible>(reload(&*view, req.method()).await);
                        }
                        Ok::<_, Infallible>(route(&*view, &req))
                    }
                });
                let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
                let _ = tokio::time::timeout(ADMIN_CONNECTION_TIMEOUT, conn).await;
                drop(permit);
            });
        }
    });
    Ok(local)
}

/// `POST /admin/reload`: reads the config file again and swaps in the new generation.
const RELOAD_PATH: &str = "/admin/reload";

async fn reload(view: &dyn AdminView, method: &http::Method) -> Response<GatewayBody> {
    if method != http::Method::POST {
        let mut r = text(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            format!("{RELOAD_PATH} takes POST\n"),
        );
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return r;
    }
    let Some(hook) = view.reload_hook() else {
        return text(
            StatusCode::NOT_FOUND,
            "text/plain",
            "this gateway has no config file to reload\n".into(),
        );
    };
    let (status, doc) = match hook().await {
        Ok(outcome) => (
            StatusCode::OK,
            serde_json::json!({ "reloaded": true, "outcome": outcome }),
        ),
        Err(error) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            serde_json::json!({ "reloaded": false, "error": error }),
        ),
    };
    let mut body = serde_json::to_string_pretty(&doc).unwrap_or_default();
    body.push('\n');
    text(status, "application/json", body)
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<GatewayBody> {
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn route<B>(view: &dyn AdminView, req: &Request<B>) -> Response<GatewayBody> {
    if let Some(asset) = crate::dashboard::asset(req.uri().path()) {
        return crate::openapi::page(
            asset.content_type,
            bytes::Bytes::from_static(asset.body.as_bytes()),
        );
    }
    match req.uri().path() {
        crate::openapi::OPENAPI_PATH => crate::openapi::page("application/json", view.openapi()),
        MEMORY_PATH => {
            let mut body =
                serde_json::to_string(&crate::history::global().to_json()).unwrap_or_default();
            body.push('\n');
            text(StatusCode::OK, "application/json", body)
        }
        "/metrics" => {
            view.refresh_gauges();
            text(
                StatusCode::OK,
                "text/plain; version=0.0.4",
                telemetry::prometheus().render(),
            )
        }
        // Alive whatever the registry's state: restarting would not bring it back.
        "/healthz" => text(
            StatusCode::OK,
            "text/plain",
            format!("ok\n{}", view.health_details()),
        ),
        "/readyz" => match view.readiness() {
            Ok(()) => text(StatusCode::OK, "text/plain", "ready\n".into()),
            Err(why) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                format!("not ready: {why}\n"),
            ),
        },
        path => match view.admin_json(path) {
            Some(doc) => {
                let mut body = serde_json::to_string_pretty(&doc).unwrap_or_default();
                body.push('\n');
                text(StatusCode::OK, "application/json", body)
            }
            None => text(
                StatusCode::NOT_FOUND,
                "text/plain",
                format!(
                    "admin endpoints: /metrics /healthz /readyz {} {} /docs /dashboard\n",
                    ADMIN_API.join(" "),
                    crate::openapi::OPENAPI_PATH,
                ),
            ),
        },
    }
}

/// Compares without stopping at the first difference, so the time taken does not tell how much
/// of a guessed token was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
