//! OpenTelemetry spans with W3C trace context, exported over OTLP/HTTP (protobuf) by the SDK's
//! batch processor (its own thread, a bounded queue that drops when full).
//!
//! ```text
//! HTTP request (traceparent?) ─► gateway span (SERVER, "GET /route")
//!                                  └─► one span per RPC attempt (CLIENT, "service/method");
//!                                      its context goes in the call metadata (traceparent)
//!                                        └─► service span (SERVER), child of the attempt span;
//!                                            the handler's metadata carries it on
//! ```

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{
    Span as _, SpanBuilder, SpanContext, SpanKind, Status as SpanStatus, TraceContextExt,
    Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracer, SdkTracerProvider, SpanExporter,
};
use tideway_rpc::{CallObserver, CallSide, Metadata, ObservedCall, Status};

use crate::config::TracingConfig;
use crate::error::ObserveError;

/// The W3C trace context header (and call metadata key).
pub const TRACEPARENT: &str = "traceparent";
/// The W3C vendor trace state header (and call metadata key).
pub const TRACESTATE: &str = "tracestate";
/// The response header naming the gateway's span (W3C Trace Context Level 2).
pub const TRACERESPONSE: &str = "traceresponse";

/// A tracer and its exporter. Cheap to clone.
#[derive(Clone)]
pub struct Tracing {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
}

impl fmt::Debug for Tracing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tracing").finish_non_exhaustive()
    }
}

impl Tracing {
    /// Starts the OTLP/HTTP exporter configured by `config` (its `endpoint` must be set).
    pub fn start(config: &TracingConfig) -> Result<Tracing, ObserveError> {
        let url = config
            .traces_url()
            .ok_or_else(|| ObserveError::Tracing("no endpoint configured".into()))?;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_endpoint(url)
            .with_timeout(config.export_timeout)
            .with_headers(config.headers.clone().into_iter().collect())
            .build()
            .map_err(|e| ObserveError::Tracing(e.to_string()))?;
        Ok(Self::with_exporter(exporter, config))
    }

    /// A tracer whose batches go to `exporter` (tests use an in-memory one).
    pub fn with_exporter<E: SpanExporter + 'static>(exporter: E, config: &TracingConfig) -> Self {
        let batch = BatchConfigBuilder::default()
            .with_max_queue_size(config.max_queue_size)
            .with_max_export_batch_size(config.max_export_batch_size)
            .with_scheduled_delay(config.export_delay)
            .build();
        let processor = BatchSpanProcessor::builder(exporter)
            .with_batch_config(batch)
            .build();
        let root = if config.sample_ratio >= 1.0 {
            Sampler::AlwaysOn
        } else {
            Sampler::TraceIdRatioBased(config.sample_ratio)
        };
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(Sampler::ParentBased(Box::new(root)))
            .with_resource(
                Resource::builder_empty()
                    .with_service_name(config.service_name.clone())
                    .build(),
            )
            .build();
        let tracer = provider.tracer("tideway");
        Tracing { provider, tracer }
    }

    /// The observer to give an RPC server (`ServerBuilder::observer`): a SERVER span per call,
    /// child of the caller's `traceparent`, whose context replaces it in the handler's metadata.
    pub fn rpc_server_observer(&self) -> Arc<dyn CallObserver> {
        Arc::new(ServerCalls {
            tracer: self.tracer.clone(),
        })
    }

    /// Starts the span of a gateway request: a child of the request's `traceparent` when it has
    /// a valid one, else the root of a new trace.
    pub fn start_request(
        &self,
        headers: &http::HeaderMap,
        method: &http::Method,
        path: &str,
    ) -> RequestSpan {
        let parent = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
        let builder = SpanBuilder::from_name(method.as_str().to_owned())
            .with_kind(SpanKind::Server)
            .with_attributes([
                KeyValue::new("http.request.method", method.as_str().to_owned()),
                KeyValue::new("url.path", path.to_owned()),
            ]);
        let span = self.tracer.build_with_context(builder, &parent);
        let cx = Context::new().with_remote_span_context(span.span_context().clone());
        RequestSpan {
            span,
            cx,
            tracer: self.tracer.clone(),
        }
    }

    /// Exports what is queued now; blocks until done (call it off the async threads, e.g. in
    /// `spawn_blocking`).
    pub fn force_flush(&self) -> Result<(), ObserveError> {
        self.provider
            .force_flush()
            .map_err(|e| ObserveError::Tracing(e.to_string()))
    }

    /// Exports what is queued and stops the exporter thread, within `timeout`; blocks (call it
    /// off the async threads).
    pub fn shutdown(&self, timeout: Duration) -> Result<(), ObserveError> {
        self.provider
            .shutdown_with_timeout(timeout)
            .map_err(|e| ObserveError::Tracing(e.to_string()))
    }
}

/// The span of one gateway request.
pub struct RequestSpan {
    span: opentelemetry_sdk::trace::Span,
    /// A context whose span is this one: the parent of the request's call spans.
    cx: Context,
    tracer: SdkTracer,
}

impl fmt::Debug for RequestSpan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestSpan")
            .field("context", self.span.span_context())
            .finish_non_exhaustive()
    }
}

impl RequestSpan {
    /// The route matched: the span is renamed `METHOD /template`.
    pub fn set_route(&mut self, label: &str, template: &str) {
        self.span.update_name(label.to_owned());
        self.span
            .set_attribute(KeyValue::new("http.route", template.to_owned()));
    }

    /// Adds an attribute.
    pub fn set_attribute(&mut self, kv: KeyValue) {
        self.span.set_attribute(kv);
    }

    /// The span's identity.
    pub fn span_context(&self) -> &SpanContext {
        self.span.span_context()
    }

    /// `traceparent` naming this span, for an HTTP upstream or the `traceresponse` header.
    pub fn traceparent(&self) -> String {
        traceparent(self.span.span_context())
    }

    /// What the request's call spans are started from.
    pub(crate) fn call_parent(&self) -> CallParent {
        CallParent {
            cx: self.cx.clone(),
            tracer: self.tracer.clone(),
        }
    }

    /// Ends the span with the response status (5xx marks it failed).
    pub fn finish(mut self, status: u16, aborted: bool) {
        self.span.set_attribute(KeyValue::new(
            "http.response.status_code",
            i64::from(status),
        ));
        if status >= 500 {
            self.span.set_status(SpanStatus::error(status.to_string()));
        }
        if aborted {
            self.span
                .set_attribute(KeyValue::new("tideway.aborted", true));
        }
        self.span.end();
    }
}

/// The parent of a request's call spans: the gateway span's context and the tracer.
#[derive(Clone)]
pub(crate) struct CallParent {
    cx: Context,
    tracer: SdkTracer,
}

impl fmt::Debug for CallParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallParent").finish_non_exhaustive()
    }
}

impl CallParent {
    /// Starts a CLIENT span for an RPC call made on this request's behalf, and writes its context
    /// into `metadata`.
    pub(crate) fn start_call(
        &self,
        method: &str,
        peer: SocketAddr,
        metadata: &mut Metadata,
    ) -> CallSpan {
        let (service, short) = method.split_once('/').unwrap_or((method, ""));
        let builder = SpanBuilder::from_name(method.to_owned())
            .with_kind(SpanKind::Client)
            .with_attributes([
                KeyValue::new("rpc.system", "tideway"),
                KeyValue::new("rpc.service", service.to_owned()),
                KeyValue::new("rpc.method", short.to_owned()),
                KeyValue::new("server.address", peer.ip().to_string()),
                KeyValue::new("server.port", i64::from(peer.port())),
            ]);
        let span = self.tracer.build_with_context(builder, &self.cx);
        inject(span.span_context(), metadata);
        CallSpan { span: Some(span) }
    }
}

/// The W3C `traceparent` value of a span context.
pub fn traceparent(cx: &SpanContext) -> String {
    format!(
        "00-{}-{}-{:02x}",
        cx.trace_id(),
        cx.span_id(),
        cx.trace_flags().to_u8()
    )
}

/// Writes `cx` into call metadata (`traceparent`, and `tracestate` when it has one).
fn inject(cx: &SpanContext, metadata: &mut Metadata) {
    if !cx.is_valid() {
        return;
    }
    metadata.insert(TRACEPARENT, traceparent(cx));
    let state = cx.trace_state().header();
    if !state.is_empty() {
        metadata.insert(TRACESTATE, state);
    }
}

/// A span for one RPC call (either side), ended by the transport's [`ObservedCall`] hook.
pub(crate) struct CallSpan {
    span: Option<opentelemetry_sdk::trace::Span>,
}

impl ObservedCall for CallSpan {
    fn finish(mut self: Box<Self>, status: Status, message: Option<&str>) {
        if let Some(mut span) = self.span.take() {
            end_call(&mut span, status, message);
        }
    }
}

impl Drop for CallSpan {
    fn drop(&mut self) {
        // Dropped without an answer: cancelled (caller gone, deadline, connection lost).
        if let Some(mut span) = self.span.take() {
            end_call(&mut span, Status::Cancelled, Some("cancelled"));
        }
    }
}

fn end_call(span: &mut opentelemetry_sdk::trace::Span, status: Status, message: Option<&str>) {
    span.set_attribute(KeyValue::new("rpc.tideway.status", status.as_str()));
    if status != Status::Ok {
        span.set_status(SpanStatus::error(
            message.unwrap_or(status.as_str()).to_owned(),
        ));
    }
    span.end();
}

/// Server side of RPC calls: a SERVER span per call.
struct ServerCalls {
    tracer: SdkTracer,
}

impl fmt::Debug for ServerCalls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerCalls").finish_non_exhaustive()
    }
}

impl CallObserver for ServerCalls {
    fn start(
        &self,
        side: CallSide,
        method: &str,
        peer: SocketAddr,
        metadata: &mut Metadata,
    ) -> Option<Box<dyn ObservedCall>> {
        if side != CallSide::Server {
            return None;
        }
        let parent = TraceContextPropagator::new().extract(&MetadataExtractor(metadata));
        let (service, short) = method.split_once('/').unwrap_or((method, ""));
        let builder = SpanBuilder::from_name(method.to_owned())
            .with_kind(SpanKind::Server)
            .with_attributes([
                KeyValue::new("rpc.system", "tideway"),
                KeyValue::new("rpc.service", service.to_owned()),
                KeyValue::new("rpc.method", short.to_owned()),
                KeyValue::new("client.address", peer.ip().to_string()),
                KeyValue::new("client.port", i64::from(peer.port())),
            ]);
        let span = self.tracer.build_with_context(builder, &parent);
        inject(span.span_context(), metadata);
        Some(Box::new(CallSpan { span: Some(span) }))
    }
}

/// Reads trace context from HTTP headers.
struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// Reads trace context from call metadata.
struct MetadataExtractor<'a>(&'a Metadata);

impl Extractor for MetadataExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| k).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_span_continues_an_incoming_trace_and_parents_its_calls() {
        let exporter = opentelemetry_sdk::trace::InMemorySpanExporter::default();
        let tracing = Tracing::with_exporter(exporter.clone(), &TracingConfig::default());
        let mut headers = http::HeaderMap::new();
        headers.insert(
            TRACEPARENT,
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                .parse()
                .unwrap(),
        );
        let request = tracing.start_request(&headers, &http::Method::GET, "/x");
        let tp = request.traceparent();
        assert!(
            tp.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
            "{tp}"
        );
        let mut metadata = Metadata::new();
        let call = request.call_parent().start_call(
            "svc/m",
            "127.0.0.1:1".parse().unwrap(),
            &mut metadata,
        );
        let sent = metadata.get(TRACEPARENT).unwrap().to_owned();
        assert!(sent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
        assert_ne!(sent, tp, "the call has its own span id");
        // The server side continues from the metadata.
        let server = tracing.rpc_server_observer();
        let mut received = metadata.clone();
        let observed = server
            .start(
                CallSide::Server,
                "svc/m",
                "127.0.0.1:2".parse().unwrap(),
                &mut received,
            )
            .unwrap();
        observed.finish(Status::Ok, None);
        Box::new(call).finish(Status::Ok, None);
        request.finish(200, false);
        tracing.force_flush().unwrap();
        let spans = exporter.get_finished_spans().unwrap();
        assert_eq!(spans.len(), 3);
        let by_kind = |k: SpanKind| spans.iter().find(|s| s.span_kind == k).unwrap();
        let client = by_kind(SpanKind::Client);
        let gateway = spans
            .iter()
            .find(|s| s.span_kind == SpanKind::Server && s.name == "GET")
            .unwrap();
        let service = spans
            .iter()
            .find(|s| s.name == "svc/m" && s.span_kind == SpanKind::Server)
            .unwrap();
        assert_eq!(client.parent_span_id, gateway.span_context.span_id());
        assert_eq!(service.parent_span_id, client.span_context.span_id());
        assert_eq!(
            gateway.parent_span_id.to_string(),
            "00f067aa0ba902b7",
            "the incoming span is the gateway span's parent"
        );
    }

    #[test]
    fn garbage_traceparent_starts_a_new_trace() {
        let exporter = opentelemetry_sdk::trace::InMemorySpanExporter::default();
        let tracing = Tracing::with_exporter(exporter, &TracingConfig::default());
        let mut headers = http::HeaderMap::new();
        headers.insert(TRACEPARENT, "00-zz-yy-01".parse().unwrap());
        let request = tracing.start_request(&headers, &http::Method::GET, "/x");
        assert!(request.span_context().is_valid());
        request.finish(200, false);
    }
}
