//! The admin listener: `/metrics` (Prometheus text), `/healthz` (liveness, plus the registry's
//! state) and `/readyz` (readiness: not ready while draining, over the memory budget, or before
//! the first registry sync). It runs on its own address so that it can be kept off
//! the public network, and its own connection cap keeps scrapers from piling up.

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
pub(crate) const ADMIN_API: [&str; 4] = [
    "/admin/routes",
    "/admin/services",
    "/admin/overload",
    "/admin/registry",
];

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
                    let authorized = token.as_ref().is_none_or(|expected| {
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

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<GatewayBody> {
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn route<B>(view: &dyn AdminView, req: &Request<B>) -> Response<GatewayBody> {
    match req.uri().path() {
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
                    "admin endpoints: /metrics /healthz /readyz {}\n",
                    ADMIN_API.join(" ")
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
