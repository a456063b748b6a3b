//! Tideway's operator view of requests: OpenTelemetry spans with W3C trace context, exported over
//! OTLP/HTTP, and one structured access log line per request.
//!
//! Both are off by default, and then the gateway does no per-request work for them: it holds no
//! [`Observability`] at all. When one is on:
//!
//! - [`Observability::request`] opens a [`RequestObservation`] when a request arrives (the
//!   gateway span, when tracing, continues the request's `traceparent`);
//! - [`RequestObservation::rpc_observer`] watches the RPC calls made for the request (one CLIENT
//!   span per attempt, its context carried in the call metadata; the instance that answered);
//! - [`RequestObservation::finish`] wraps the response body, and when the body is done (or
//!   dropped: client gone) the span ends and the access log line is queued.
//!
//! Modules: `config.rs` (the `[observability]` section), `trace.rs` (spans, propagation, the
//! RPC server observer), `access_log.rs` (the bounded queue, the writer thread, the formats).

pub mod access_log;
pub mod config;
mod error;
pub mod trace;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::Buf;
use http_body::{Body, Frame, SizeHint};
use parking_lot::Mutex;
use tideway_rpc::{CallObserver, CallSide, Metadata, ObservedCall};

pub use access_log::{AccessLog, AccessRecord, Upstream};
pub use config::{AccessLogConfig, AccessLogFormat, ObservabilityConfig, TracingConfig};
pub use error::ObserveError;
pub use trace::{RequestSpan, Tracing};

/// Tracing and access logs, as configured. Shared by every request.
#[derive(Debug, Default)]
pub struct Observability {
    tracing: Option<Tracing>,
    access_log: Option<AccessLog>,
}

impl Observability {
    /// Starts what `config` turns on; `None` when nothing is.
    pub fn start(config: &ObservabilityConfig) -> Result<Option<Arc<Observability>>, ObserveError> {
        if !config.enabled() {
            return Ok(None);
        }
        let tracing = match config.tracing.enabled() {
            true => Some(Tracing::start(&config.tracing)?),
            false => None,
        };
        let access_log = match config.access_log.enabled {
            true => Some(AccessLog::start(&config.access_log)?),
            false => None,
        };
        Ok(Some(Arc::new(Observability::new(tracing, access_log))))
    }

    /// From parts (tests build their own exporter or writer).
    pub fn new(tracing: Option<Tracing>, access_log: Option<AccessLog>) -> Self {
        Observability {
            tracing,
            access_log,
        }
    }

    /// The tracer, when tracing is on.
    pub fn tracing(&self) -> Option<&Tracing> {
        self.tracing.as_ref()
    }

    /// The access log, when on.
    pub fn access_log(&self) -> Option<&AccessLog> {
        self.access_log.as_ref()
    }

    /// Starts observing a request that just arrived.
    pub fn request<B>(
        self: &Arc<Self>,
        req: &http::Request<B>,
        request_id: &http::HeaderValue,
        client: SocketAddr,
    ) -> RequestObservation {
        let span = self
            .tracing
            .as_ref()
            .map(|t| t.start_request(req.headers(), req.method(), req.uri().path()));
        let record = self.access_log.as_ref().map(|_| {
            Box::new(AccessRecord {
                time: SystemTime::now(),
                request_id: request_id.to_str().unwrap_or_default().to_owned(),
                client,
                method: req.method().clone(),
                path: req.uri().path().to_owned(),
                version: req.version(),
                route: None,
                upstream: None,
                status: 0,
                bytes_in: 0,
                bytes_out: 0,
                duration: Duration::ZERO,
                trace_id: span
                    .as_ref()
                    .map(|s| s.span_context().trace_id().to_string()),
                aborted: false,
            })
        });
        RequestObservation {
            observability: Arc::clone(self),
            started: Instant::now(),
            span,
            record,
            calls: None,
            bytes_in: None,
        }
    }

    /// Writes out what is queued (access log lines, spans) within `timeout`, then stops the span
    /// exporter. Lines logged later are still written while the log lives.
    pub async fn shutdown(&self, timeout: Duration) {
        if let Some(log) = &self.access_log
            && !log.flush(timeout).await
        {
            tracing::warn!("the access log was not flushed within {timeout:?}");
        }
        if let Some(tracing) = self.tracing.clone() {
            // The SDK's shutdown blocks on its exporter thread.
            let stopped = tokio::task::spawn_blocking(move || tracing.shutdown(timeout)).await;
            if let Ok(Err(e)) = stopped {
                tracing::warn!(error = %e, "span exporter shutdown");
            }
        }
    }
}

/// One request being observed.
#[derive(Debug)]
pub struct RequestObservation {
    observability: Arc<Observability>,
    started: Instant,
    span: Option<RequestSpan>,
    record: Option<Box<AccessRecord>>,
    calls: Option<Arc<RequestCalls>>,
    bytes_in: Option<Arc<AtomicU64>>,
}

impl RequestObservation {
    /// The route matched: its label (`GET /api/x/{id}`) and path template.
    pub fn set_route(&mut self, label: &str, template: &str) {
        if let Some(span) = &mut self.span {
            span.set_route(label, template);
        }
        if let Some(record) = &mut self.record {
            record.route = Some(label.to_owned());
        }
    }

    /// The request was sent to an HTTP upstream.
    pub fn set_upstream_url(&mut self, url: &str) {
        if let Some(record) = &mut self.record {
            record.upstream = Some(Upstream::Url(Arc::from(url)));
        }
    }

    /// The request body had `n` bytes (when read whole).
    pub fn add_bytes_in(&mut self, n: u64) {
        if let Some(record) = &mut self.record {
            record.bytes_in += n;
        }
    }

    /// Wraps a streamed request body so its bytes are counted as they pass.
    pub fn count_request_body<B>(&mut self, body: B) -> CountedBody<B> {
        let counter = match (&self.record, &self.bytes_in) {
            (None, _) => None,
            (Some(_), Some(c)) => Some(Arc::clone(c)),
            (Some(_), None) => Some(Arc::clone(self.bytes_in.insert(Arc::default()))),
        };
        CountedBody {
            inner: body,
            counter,
        }
    }

    /// `traceparent` naming the gateway span (for an HTTP upstream), when tracing.
    pub fn traceparent(&self) -> Option<String> {
        self.span.as_ref().map(RequestSpan::traceparent)
    }

    /// The observer to run the request's RPC calls under
    /// (`tideway_rpc::observe_client_calls`): a CLIENT span per attempt, carried in the call
    /// metadata, and the instance that answered for the access log.
    pub fn rpc_observer(&mut self) -> Arc<dyn CallObserver> {
        let calls = self.calls.get_or_insert_with(|| {
            Arc::new(RequestCalls {
                parent: self.span.as_ref().map(RequestSpan::call_parent),
                last_peer: Mutex::new(None),
            })
        });
        Arc::clone(calls) as Arc<dyn CallObserver>
    }

    /// The response is ready: adds `traceresponse` (when tracing) and wraps the body so the span
    /// ends and the log line is written when the body is done.
    pub fn finish<B: Body>(
        self,
        mut response: http::Response<B>,
    ) -> http::Response<ObservedBody<B>> {
        if let Some(tp) = self.traceparent()
            && let Ok(v) = http::HeaderValue::from_str(&tp)
        {
            response.headers_mut().insert(trace::TRACERESPONSE, v);
        }
        let status = response.status().as_u16();
        response.map(|inner| ObservedBody {
            complete: inner.is_end_stream(),
            inner,
            bytes_out: 0,
            done: Some(Done {
                observation: self,
                status,
            }),
        })
    }

    fn end(mut self, status: u16, bytes_out: u64, aborted: bool) {
        if let Some(span) = self.span.take() {
            span.finish(status, aborted);
        }
        if let (Some(mut record), Some(log)) =
            (self.record.take(), self.observability.access_log.as_ref())
        {
            record.status = status;
            record.bytes_out = bytes_out;
            record.duration = self.started.elapsed();
            record.aborted = aborted;
            if let Some(n) = &self.bytes_in {
                record.bytes_in += n.load(Ordering::Relaxed);
            }
            if record.upstream.is_none()
                && let Some(calls) = &self.calls
            {
                record.upstream = calls.last_peer.lock().map(Upstream::Instance);
            }
            log.log(*record);
        }
    }
}

/// The parent context for call spans, shared with the calls' observer.
#[derive(Debug)]
struct RequestCalls {
    parent: Option<trace::CallParent>,
    last_peer: Mutex<Option<SocketAddr>>,
}

impl CallObserver for RequestCalls {
    fn start(
        &self,
        side: CallSide,
        method: &str,
        peer: SocketAddr,
        metadata: &mut Metadata,
    ) -> Option<Box<dyn ObservedCall>> {
        if side != CallSide::Client {
            return None;
        }
        *self.last_peer.lock() = Some(peer);
        let parent = self.parent.as_ref()?;
        Some(Box::new(parent.start_call(method, peer, metadata)))
    }
}

struct Done {
    observation: RequestObservation,
    status: u16,
}

/// A response body that ends its request's observation when it is done or dropped.
#[derive(Debug)]
pub struct ObservedBody<B> {
    inner: B,
    bytes_out: u64,
    /// The body had nothing left to send.
    complete: bool,
    done: Option<Done>,
}

impl std::fmt::Debug for Done {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Done")
            .field("status", &self.status)
            .finish()
    }
}

impl<B> ObservedBody<B> {
    fn end(&mut self, aborted: bool) {
        if let Some(done) = self.done.take() {
            done.observation.end(done.status, self.bytes_out, aborted);
        }
    }
}

impl<B: Body + Unpin> Body for ObservedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.bytes_out += data.remaining() as u64;
                }
                if this.inner.is_end_stream() {
                    this.complete = true;
                    this.end(false);
                }
            }
            Poll::Ready(Some(Err(_))) => this.end(true),
            Poll::Ready(None) => {
                this.complete = true;
                this.end(false);
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for ObservedBody<B> {
    fn drop(&mut self) {
        // Dropped before its end was seen: the client went away, unless the body had nothing
        // to send (hyper drops such a body without polling it).
        let aborted = !self.complete;
        self.end(aborted);
    }
}

/// A request body whose bytes are counted as they pass.
#[derive(Debug)]
pub struct CountedBody<B> {
    inner: B,
    counter: Option<Arc<AtomicU64>>,
}

impl<B: Body + Unpin> Body for CountedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let (Poll::Ready(Some(Ok(frame))), Some(counter)) = (&polled, &this.counter)
            && let Some(data) = frame.data_ref()
        {
            counter.fetch_add(data.remaining() as u64, Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
