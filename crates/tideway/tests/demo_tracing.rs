//! `tideway demo --otlp-endpoint URL`: one request through the demo gives one trace, exported
//! over OTLP/HTTP by both sides: the gateway's request span and RPC call span
//! (`tideway-gateway`), and the logistics service's span (`tideway-demo-services`), each the
//! child of the one before. The receiver is a plain TCP listener that decodes the protobuf
//! bodies with opentelemetry-proto's generated messages.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message as _;

const BIN: &str = env!("CARGO_BIN_EXE_tideway");
/// Largest export body accepted by the receiver.
const MAX_BODY: usize = 16 << 20;

/// One exported span and the `service.name` it came with.
#[derive(Debug)]
struct Received {
    service: String,
    span: Span,
}

/// Serves `POST /v1/traces` on 127.0.0.1 until the test ends, sending every span it decodes.
fn otlp_receiver() -> (SocketAddr, mpsc::Receiver<Received>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let tx = tx.clone();
            std::thread::spawn(move || serve(stream, &tx));
        }
    });
    (addr, rx)
}

/// HTTP/1.1 keep-alive: requests with a content-length, each answered 200 (or 400 when the
/// body is not an export request).
fn serve(stream: TcpStream, tx: &mpsc::Sender<Received>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    loop {
        let mut length = 0usize;
        let mut line = String::new();
        let mut first = true;
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if first {
                assert!(line.starts_with("POST /v1/traces "), "{line:?}");
                first = false;
            }
            let trimmed = line.trim_end();
            if trimmed.is_empty() {
                break;
            }
            if let Some((name, value)) = trimmed.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap();
            }
        }
        assert!(length <= MAX_BODY, "export of {length} bytes");
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let status = match ExportTraceServiceRequest::decode(body.as_slice()) {
            Ok(export) => {
                for rs in export.resource_spans {
                    let service = rs
                        .resource
                        .iter()
                        .flat_map(|r| &r.attributes)
                        .find(|kv| kv.key == "service.name")
                        .and_then(|kv| kv.value.as_ref())
                        .and_then(|v| match &v.value {
                            Some(AnyValue::StringValue(s)) => Some(s.clone()),
                            _ => None,
                        })
                        .unwrap_or_default();
                    for span in rs.scope_spans.into_iter().flat_map(|ss| ss.spans) {
                        let _ = tx.send(Received {
                            service: service.clone(),
                            span,
                        });
                    }
                }
                "200 OK"
            }
            Err(_) => "400 Bad Request",
        };
        let answer = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n"
        );
        if writer.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}

struct Demo(Child);

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn demo_exports_gateway_and_service_spans_of_one_trace() {
    let (receiver, spans) = otlp_receiver();
    let mut child = Command::new(BIN)
        .args([
            "demo",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--otlp-endpoint",
        ])
        .arg(format!("http://{receiver}"))
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut demo = Demo(child);
    let mut lines = BufReader::new(stdout).lines().map_while(Result::ok);
    let base = lines
        .next()
        .and_then(|l| {
            l.strip_prefix("Tideway gateway listening on ")
                .map(str::to_owned)
        })
        .expect("the demo's first line names its address");
    let mut admin = None;
    let mut tracing_line = None;
    for line in lines.by_ref() {
        if let Some(rest) = line.strip_prefix("Admin: ") {
            admin = rest.split("/metrics").next().map(|a| a.trim().to_owned());
        }
        if line.starts_with("Tracing: ") {
            tracing_line = Some(line);
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    let tracing_line = tracing_line.expect("the demo says where spans go");
    assert!(
        tracing_line.ends_with(&format!("http://{receiver}/v1/traces")),
        "{tracing_line}"
    );

    // The effective config names the collector.
    let admin = admin.expect("the demo printed its admin address");
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .arg(format!("{admin}/admin/config"))
        .output()
        .unwrap();
    let config: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        config["config"]["observability"]["tracing"]["endpoint"],
        format!("http://{receiver}"),
        "{config:#}"
    );

    // One request that calls the pricing service, continuing a trace we name.
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent = "00f067aa0ba902b7";
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ])
        .args(["-X", "POST", "-H", "content-type: application/json", "-H"])
        .arg(format!("traceparent: 00-{trace}-{parent}-01"))
        .args([
            "-d",
            r#"{"weight_grams":2000,"from_zone":1,"to_zone":4,"service_level":"standard"}"#,
        ])
        .arg(format!("{base}/api/quotes"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200");

    // SIGTERM: the demo drains and exports what is queued before it exits.
    assert!(
        Command::new("kill")
            .args(["-TERM", &demo.0.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut received: Vec<Received> = Vec::new();
    let complete = |received: &[Received]| {
        let in_trace = received.iter().filter(|r| hex(&r.span.trace_id) == trace);
        in_trace.count() >= 3
    };
    while !complete(&received) {
        let left = deadline.saturating_duration_since(Instant::now());
        match spans.recv_timeout(left) {
            Ok(span) => received.push(span),
            Err(_) => panic!("spans of trace {trace} missing; received {received:#?}"),
        }
    }
    let in_trace: Vec<&Received> = received
        .iter()
        .filter(|r| hex(&r.span.trace_id) == trace)
        .collect();
    let gateway = in_trace
        .iter()
        .find(|r| r.service == "tideway-gateway" && r.span.kind == SpanKind::Server as i32)
        .unwrap_or_else(|| panic!("no gateway span: {in_trace:#?}"));
    assert_eq!(hex(&gateway.span.parent_span_id), parent);
    let call = in_trace
        .iter()
        .find(|r| r.service == "tideway-gateway" && r.span.kind == SpanKind::Client as i32)
        .unwrap_or_else(|| panic!("no RPC call span: {in_trace:#?}"));
    assert_eq!(call.span.parent_span_id, gateway.span.span_id);
    assert!(
        call.span.name.starts_with("logistics.Pricing/"),
        "{}",
        call.span.name
    );
    let service = in_trace
        .iter()
        .find(|r| r.service == "tideway-demo-services")
        .unwrap_or_else(|| panic!("no service span: {in_trace:#?}"));
    assert_eq!(service.span.kind, SpanKind::Server as i32);
    assert_eq!(service.span.parent_span_id, call.span.span_id);
    let status = demo.0.wait().unwrap();
    assert!(
        status.success(),
        "the demo exits cleanly on SIGTERM: {status}"
    );
}
