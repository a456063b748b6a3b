//! Tracing and access logs end to end: a gateway and an RPC service on 127.0.0.1, both exporting
//! spans over OTLP/HTTP to a small receiver that decodes them with opentelemetry-proto's
//! generated messages; the gateway writes JSON access log lines to a file.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use parking_lot::Mutex;
use prost::Message as _;
use serde_json::{Value, json};
use tideway_gateway::config::ServerSettings;
use tideway_gateway::{Gateway, Route, RouteTable, RpcBackends};
use tideway_observe::{
    AccessLog, AccessLogConfig, AccessLogFormat, Observability, Tracing, TracingConfig,
};
use tideway_rpc::{CallContext, ClientConfig, RpcError, Server, ServerHandle};
use tokio::net::TcpListener;
use tokio::time::Instant;

#[tideway_macros::service(name = "test.Traced")]
trait Traced {
    /// Answers with the trace context the handler sees.
    #[route(GET, "/traced/{id}")]
    async fn get(&self, id: String) -> Result<Value, RpcError>;

    /// Fails with Unavailable (503).
    #[route(GET, "/broken")]
    async fn broken(&self) -> Result<Value, RpcError>;
}

#[derive(Debug, Clone, Default)]
struct TracedImpl;

impl Traced for TracedImpl {
    async fn get(&self, id: String) -> Result<Value, RpcError> {
        let ctx = CallContext::current().expect("in a call");
        Ok(json!({"id": id, "traceparent": ctx.metadata().get("traceparent")}))
    }

    async fn broken(&self) -> Result<Value, RpcError> {
        Err(RpcError::unavailable("asked to fail"))
    }
}

/// One exported span and the `service.name` of the resource it came with.
#[derive(Debug, Clone)]
struct Received {
    service: String,
    span: Span,
}

/// An OTLP/HTTP receiver: decodes every `POST /v1/traces` body.
async fn otlp_receiver() -> (SocketAddr, Arc<Mutex<Vec<Received>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let spans = Arc::new(Mutex::new(Vec::new()));
    let store = Arc::clone(&spans);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                        let store = Arc::clone(&store);
                        async move {
                            let path_ok = req.uri().path() == "/v1/traces";
                            let body = req.into_body().collect().await.map(|b| b.to_bytes());
                            let status = match (path_ok, body) {
                                (true, Ok(body)) => match ExportTraceServiceRequest::decode(body) {
                                    Ok(export) => {
                                        let mut store = store.lock();
                                        for rs in export.resource_spans {
                                            let service = rs
                                                .resource
                                                .iter()
                                                .flat_map(|r| &r.attributes)
                                                .find(|kv| kv.key == "service.name")
                                                .and_then(|kv| kv.value.as_ref())
                                                .and_then(|v| match &v.value {
                                                    Some(AnyValue::StringValue(s)) => {
                                                        Some(s.clone())
                                                    }
                                                    _ => None,
                                                })
                                                .unwrap_or_default();
                                            for ss in rs.scope_spans {
                                                for span in ss.spans {
                                                    store.push(Received {
                                                        service: service.clone(),
                                                        span,
                                                    });
                                                }
                                            }
                                        }
                                        StatusCode::OK
                                    }
                                    Err(_) => StatusCode::BAD_REQUEST,
                                },
                                _ => StatusCode::NOT_FOUND,
                            };
                            let mut resp = http::Response::new(Full::new(Bytes::new()));
                            *resp.status_mut() = status;
                            resp.headers_mut().insert(
                                "content-type",
                                http::HeaderValue::from_static("application/x-protobuf"),
                            );
                            Ok::<_, Infallible>(resp)
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, spans)
}

fn tracing_to(receiver: SocketAddr, service_name: &str) -> Tracing {
    Tracing::start(&TracingConfig {
        service_name: service_name.to_owned(),
        export_delay: Duration::from_millis(100),
        ..TracingConfig::to_endpoint(format!("http://{receiver}"))
    })
    .unwrap()
}

struct Fixture {
    gateway: Gateway,
    service: ServerHandle,
    observe: Arc<Observability>,
    service_tracing: Tracing,
    spans: Arc<Mutex<Vec<Received>>>,
    log_path: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

async fn start() -> Fixture {
    let (receiver, spans) = otlp_receiver().await;
    let service_tracing = tracing_to(receiver, "test-service");
    let service = Server::builder()
        .observer(service_tracing.rpc_server_observer())
        .add_service(TracedServer::new(TracedImpl))
        .bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let mut backends = RpcBackends::new();
    backends
        .insert(
            "test.Traced",
            &[service.local_addr()],
            &ClientConfig::default(),
        )
        .unwrap();
    let settings = ServerSettings {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..ServerSettings::default()
    };
    let routes = RouteTable::new(Route::from_descriptor(&TracedClient::DESCRIPTOR)).unwrap();
    let gateway = Gateway::start(settings, routes, backends).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("access.log");
    let access_log = AccessLog::start(&AccessLogConfig {
        enabled: true,
        format: AccessLogFormat::Json,
        output: log_path.to_str().unwrap().to_owned(),
        ..AccessLogConfig::default()
    })
    .unwrap();
    let observe = Arc::new(Observability::new(
        Some(tracing_to(receiver, "test-gateway")),
        Some(access_log),
    ));
    gateway.set_observability(Some(Arc::clone(&observe)));
    Fixture {
        gateway,
        service,
        observe,
        service_tracing,
        spans,
        log_path,
        _dir: dir,
    }
}

struct Reply {
    status: StatusCode,
    headers: http::HeaderMap,
    body: Bytes,
}

async fn get(url: &str, headers: &[(&str, &str)]) -> Reply {
    let mut req = Request::builder().method(Method::GET).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let client = HttpClient::builder(TokioExecutor::new()).build_http();
    let resp = client
        .request(req.body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        headers,
        body,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Waits (bounded) until the receiver holds at least `n` spans, flushing both exporters.
async fn spans_eventually(f: &Fixture, n: usize) -> Vec<Received> {
    let end = Instant::now() + Duration::from_secs(15);
    loop {
        let (g, s) = (
            f.observe.tracing().unwrap().clone(),
            f.service_tracing.clone(),
        );
        tokio::task::spawn_blocking(move || {
            let _ = g.force_flush();
            let _ = s.force_flush();
        })
        .await
        .unwrap();
        let got = f.spans.lock().clone();
        if got.len() >= n || Instant::now() > end {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// (trace id, span id, flags) of a `traceparent`.
fn parse_traceparent(tp: &str) -> (String, String, String) {
    let parts: Vec<&str> = tp.split('-').collect();
    assert_eq!(parts.len(), 4, "{tp}");
    assert_eq!(parts[0], "00");
    (parts[1].into(), parts[2].into(), parts[3].into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_context_continues_from_the_client_through_the_gateway_into_the_service() {
    let f = start().await;
    let base = format!("http://{}", f.gateway.local_addr());
    let incoming_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let incoming_span = "00f067aa0ba902b7";
    let with_parent = get(
        &format!("{base}/traced/a"),
        &[
            (
                "traceparent",
                &format!("00-{incoming_trace}-{incoming_span}-01"),
            ),
            ("tracestate", "vendor=x"),
            ("x-request-id", "req-with-parent"),
        ],
    )
    .await;
    assert_eq!(with_parent.status, StatusCode::OK);
    let fresh = get(
        &format!("{base}/traced/b"),
        &[("x-request-id", "req-fresh")],
    )
    .await;
    assert_eq!(fresh.status, StatusCode::OK);

    // 2 requests x (gateway span, call span, service span).
    let spans = spans_eventually(&f, 6).await;
    for (reply, expect_trace) in [(&with_parent, Some(incoming_trace)), (&fresh, None)] {
        // The gateway names its span in `traceresponse`.
        let (trace, gateway_span_id, _) =
            parse_traceparent(reply.headers["traceresponse"].to_str().unwrap());
        if let Some(expected) = expect_trace {
            assert_eq!(trace, expected, "an incoming trace id is kept");
        } else {
            assert_ne!(trace, incoming_trace);
        }
        let in_trace: Vec<&Received> = spans
            .iter()
            .filter(|r| hex(&r.span.trace_id) == trace)
            .collect();
        let gateway = in_trace
            .iter()
            .find(|r| r.service == "test-gateway" && r.span.kind == SpanKind::Server as i32)
            .unwrap_or_else(|| panic!("no gateway span in trace {trace}: {spans:#?}"));
        assert_eq!(hex(&gateway.span.span_id), gateway_span_id);
        assert_eq!(gateway.span.name, "GET /traced/{id}");
        match expect_trace {
            Some(_) => assert_eq!(hex(&gateway.span.parent_span_id), incoming_span),
            None => assert!(gateway.span.parent_span_id.is_empty(), "a root span"),
        }
        let call = in_trace
            .iter()
            .find(|r| r.service == "test-gateway" && r.span.kind == SpanKind::Client as i32)
            .expect("the gateway's RPC call span");
        assert_eq!(call.span.name, "test.Traced/get");
        assert_eq!(call.span.parent_span_id, gateway.span.span_id);
        let service = in_trace
            .iter()
            .find(|r| r.service == "test-service")
            .expect("the service's span, in the same trace");
        assert_eq!(service.span.kind, SpanKind::Server as i32);
        assert_eq!(
            service.span.parent_span_id, call.span.span_id,
            "the service span's parent is the gateway's call span"
        );
        // The handler saw the service span's context in its metadata.
        let body: Value = serde_json::from_slice(&reply.body).unwrap();
        let (seen_trace, seen_span, _) = parse_traceparent(
            body["traceparent"]
                .as_str()
                .expect("handler saw traceparent"),
        );
        assert_eq!(seen_trace, trace);
        assert_eq!(seen_span, hex(&service.span.span_id));
    }
    f.observe.shutdown(Duration::from_secs(5)).await;
    f.service.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_lines_parse_and_match_the_requests() {
    let f = start().await;
    let base = format!("http://{}", f.gateway.local_addr());
    let service_addr = f.service.local_addr().to_string();
    // (path, request id, status, route, whether a service instance answered)
    let sent = [
        ("/traced/1", "log-1", 200, Some("GET /traced/{id}"), true),
        ("/traced/2", "log-2", 200, Some("GET /traced/{id}"), true),
        ("/broken", "log-3", 503, Some("GET /broken"), true),
        ("/nowhere", "log-4", 404, None, false),
    ];
    for (path, id, status, _, _) in &sent {
        let reply = get(&format!("{base}{path}"), &[("x-request-id", id)]).await;
        assert_eq!(reply.status.as_u16(), *status, "{path}");
    }
    let log = f.observe.access_log().unwrap();
    // Lines are queued when a response body is done; give the last one a moment, bounded.
    let end = Instant::now() + Duration::from_secs(10);
    let lines = loop {
        assert!(log.flush(Duration::from_secs(5)).await, "flushed");
        let text = std::fs::read_to_string(&f.log_path).unwrap_or_default();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        if lines.len() >= sent.len() || Instant::now() > end {
            break lines;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(lines.len(), sent.len(), "one line per request: {lines:#?}");
    assert_eq!(log.dropped(), 0);
    for (path, id, status, route, upstream) in &sent {
        let line = lines
            .iter()
            .find(|l| l["request_id"] == *id)
            .unwrap_or_else(|| panic!("no line for {id}: {lines:#?}"));
        assert_eq!(line["method"], "GET");
        assert_eq!(line["path"], *path);
        assert_eq!(line["status"], *status);
        assert_eq!(line["route"], route.map_or(Value::Null, Value::from));
        match upstream {
            true => assert_eq!(line["upstream"], service_addr.as_str()),
            false => assert!(line["upstream"].is_null()),
        }
        assert_eq!(line["bytes_in"], 0);
        assert!(line["bytes_out"].as_u64().unwrap() > 0, "{line}");
        assert!(line["duration_ms"].as_f64().unwrap() >= 0.0);
        assert_eq!(line["trace_id"].as_str().map(str::len), Some(32));
        assert!(line["time"].as_str().unwrap().ends_with('Z'));
    }
    f.observe.shutdown(Duration::from_secs(5)).await;
}
