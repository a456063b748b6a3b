//! The HTTP/1.1 client: one request at a time per connection, driven entirely by the caller's
//! task, in the manner of pingora's `HttpSession`. No connection task, no channel: the
//! `forward` future writes the request and reads the response head on the socket itself, and
//! the response body ([`H1Body`]) reads the rest as the caller polls it.
//!
//! # One exchange
//!
//! 1. The request body is looked at first. A body of known size up to [`MAX_INLINE_BODY`] is
//!    collected and written in the same `write` as the head (one syscall in the common case,
//!    and the request can be sent again as is). Any other body is streamed after the head:
//!    `Content-Length` when its size is known, else chunked; each frame is written (and the
//!    write awaited) before the next is polled, so it is never buffered whole.
//! 2. A connection is taken from the pool (the most recently used one that is still open) or
//!    made.
//! 3. The head is written, then, together: the streamed body is sent on while the response head
//!    is read (an upstream may answer early, e.g. 413, without reading the whole body). Interim
//!    1xx responses are skipped; 101 is final for a request asking to switch protocols (its
//!    connection becomes the response's tunnel) and an error for any other.
//! 4. The response is handed back with an [`H1Body`] that owns the connection, the bytes read
//!    past the head and, if the upstream answered before the request body was all sent, the
//!    rest of the request body.
//!
//! The caller's deadline bounds steps 1 to 3 (collecting a small body, connecting, writing,
//! reading the head). Connecting and collecting, which are rare or usually immediate, get a
//! timer of their own; the exchange itself waits on the connection's timer, which stays
//! registered from one request to the next and is only moved (see `pool::Conn::arm`).
//!
//! # A pooled connection the upstream closed
//!
//! An upstream may close an idle keep-alive connection just as a request is written to it. When
//! a reused connection fails before any response byte arrived, the request was sent whole from
//! memory and its method is idempotent, it is sent once more on a new connection (as hyper and
//! browsers do). Anything else is reported.

use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::header::{CONTENT_LENGTH, HeaderMap};
use http::{Method, Response};
use http_body::{Body, SizeHint};
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use parking_lot::Mutex;
use tokio::io::AsyncWriteExt;
use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use crate::body::{Framing, H1Body, Streaming};
use crate::chunked::{ChunkedDecoder, encode_size_line};
use crate::config::UpstreamConfig;
use crate::connect::TcpConnector;
use crate::error::{BoxError, UpstreamError};
use crate::h1::{self, HeadError, RequestFraming, ResponseFraming};
use crate::headers::{self, Forwarding};
use crate::pool::{Conn, Pool};

/// Largest request body collected and written together with its head. Bodies of known size up
/// to this are sent in one `write` and can be retried on a stale pooled connection; larger or
/// unsized bodies are streamed. 16 KiB is the gateway's own whole-body limit on its fast path
/// (`tideway-gateway` `h1::MAX_WHOLE_BODY`), so such requests never wait on a second write.
pub(crate) const MAX_INLINE_BODY: usize = 16 * 1024;
/// First size of the buffer a response head is read into; doubled as needed up to
/// `http1_max_buf_size`. Most response heads fit in 2 KiB (nginx's own default for proxied
/// heads is one 4-8 KiB page).
pub(crate) const INITIAL_HEAD_BUFFER: usize = 2 * 1024;
/// Most response body bytes read from the socket per poll (further capped by
/// `http1_max_buf_size`): one data frame at most this big, so a response in flight holds at
/// most this in the process, whatever its size. 64 KiB is the largest TCP segment
/// offload unit, and hyper's default read size upper bound is of the same order.
pub(crate) const MAX_BODY_READ: usize = 64 * 1024;

/// The HTTP/1.1 client of one upstream: its connector, its pool and its limits.
#[derive(Debug)]
pub(crate) struct H1Client {
    connector: TcpConnector,
    pool: Arc<Pool>,
    /// `host:port`, for errors.
    authority: String,
    /// Largest response head (and trailer section) accepted.
    max_head: usize,
    /// Most header fields in a response head (and a trailer section).
    max_fields: usize,
    /// Most body bytes read per poll.
    read_chunk: usize,
}

/// Why an attempt failed, and whether the connection died before the upstream could have
/// answered (so a reused connection may have been stale: see the module docs).
#[derive(Debug)]
struct Failure {
    error: UpstreamError,
    stale: bool,
}

impl Failure {
    fn fatal(error: UpstreamError) -> Self {
        Failure {
            error,
            stale: false,
        }
    }
}

impl From<UpstreamError> for Failure {
    fn from(error: UpstreamError) -> Self {
        Failure::fatal(error)
    }
}

/// A `101` answer passed on: hop-by-hop fields removed but for the switch itself (`Upgrade`
/// and `Connection: upgrade`, which the client needs to see), the connection its tunnel.
fn switched(response: Response<()>, conn: Conn, buf: BytesMut) -> Response<H1Body> {
    let mut response = response;
    let protocol = response.headers().get(http::header::UPGRADE).cloned();
    headers::remove_hop_by_hop(response.headers_mut());
    if let Some(protocol) = protocol {
        let headers = response.headers_mut();
        headers.insert(http::header::UPGRADE, protocol);
        headers.insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("upgrade"),
        );
    }
    let tunnel = conn.into_tunnel(buf.freeze());
    response.map(|()| H1Body::switched(tunnel))
}

fn protocol(e: HeadError) -> UpstreamError {
    UpstreamError::Protocol {
        source: Box::new(e),
    }
}

fn request_body_error(e: BoxError) -> UpstreamError {
    UpstreamError::RequestBody {
        source: Arc::from(e),
    }
}

/// Errors that mean the peer closed (or reset) the connection.
fn is_closed(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::NotConnected
            | io::ErrorKind::UnexpectedEof
    )
}

/// A request body that did not deliver the length it announced.
#[derive(Debug, thiserror::Error)]
#[error("request body {0} than its announced length of {1} bytes")]
pub(crate) struct BodyLengthError(&'static str, u64);

impl H1Client {
    pub(crate) fn new(config: &UpstreamConfig, connector: TcpConnector, authority: String) -> Self {
        H1Client {
            connector,
            pool: Arc::new(Pool::new(
                config.pool_max_idle_per_host,
                config.pool_idle_timeout,
            )),
            authority,
            max_head: config.http1_max_buf_size,
            max_fields: config.max_response_headers,
            read_chunk: MAX_BODY_READ.min(config.http1_max_buf_size),
        }
    }

    /// Idle pooled connections now.
    pub(crate) fn idle_connections(&self) -> usize {
        self.pool.idle()
    }

    /// Encodes a request head for this client and decides how its body follows (see the
    /// module docs). `headers` have had their hop-by-hop fields removed; `forwarding` sets
    /// `Host` and the `X-Forwarded-*` fields; `target` is the origin-form path and query;
    /// `body_size` is the body's size hint. The result borrows nothing, so the caller can let
    /// go of its request (and of the read buffer its fields may share) before the wait for the
    /// answer.
    pub(crate) fn encode(
        &self,
        method: &Method,
        target: &str,
        headers: &HeaderMap,
        forwarding: &Forwarding,
        body_size: &SizeHint,
    ) -> EncodedRequest {
        // The framing is this client's to decide; a declared length is only used when the body
        // itself does not know its size.
        // The request's own `Content-Length` stays in the map: `encode_request_head` skips it.
        let (declared, had_length) = {
            let mut values = headers.get_all(CONTENT_LENGTH).iter();
            let first = values.next();
            let declared = first
                .and_then(|v| headers::parse_content_length(v.as_bytes()))
                .filter(|_| values.next().is_none());
            (declared, first.is_some())
        };
        let (framing, body, room) = match body_size.exact() {
            Some(n) if n <= MAX_INLINE_BODY as u64 => {
                let framing = if n == 0 && !had_length && h1::empty_body_needs_no_length(method) {
                    RequestFraming::None
                } else {
                    RequestFraming::Length(n)
                };
                (framing, BodyPlan::Inline(n), n as usize)
            }
            exact => match exact.or(declared) {
                Some(n) => (
                    RequestFraming::Length(n),
                    BodyPlan::Streamed { remaining: Some(n) },
                    0,
                ),
                None => (
                    RequestFraming::Chunked,
                    BodyPlan::Streamed { remaining: None },
                    0,
                ),
            },
        };
        let mut head =
            Vec::with_capacity(h1::request_head_capacity(target, headers, forwarding, room));
        h1::encode_request_head(&mut head, method, target, headers, forwarding, framing);
        EncodedRequest {
            method: method.clone(),
            head,
            body,
        }
    }

    /// Sends a request [`encode`](Self::encode)d for this client, with its body, and reads
    /// the response head by `deadline`. With `switch` (the request asks to switch protocols)
    /// a `101` answer is final: its body holds the connection as an
    /// [`UpstreamTunnel`](crate::UpstreamTunnel).
    pub(crate) async fn send<B>(
        &self,
        request: EncodedRequest,
        body: B,
        deadline: HeadDeadline,
        switch: bool,
    ) -> Result<Response<H1Body>, UpstreamError>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let EncodedRequest {
            method,
            mut head,
            body: plan,
        } = request;
        match plan {
            BodyPlan::Inline(n) => {
                if n > 0 {
                    tokio::time::timeout_at(deadline.at, collect_into(body, &mut head, n))
                        .await
                        .map_err(|_| deadline.passed())??;
                } else {
                    drop(body);
                }
                self.send_whole(&method, &head, deadline, switch).await
            }
            BodyPlan::Streamed { remaining } => {
                let upload = Upload::new(body.map_err(Into::into).boxed_unsync(), remaining);
                let conn = match self.pool.checkout() {
                    Some(conn) => conn,
                    None => self.connect(deadline).await?,
                };
                self.exchange(conn, &head, Some(upload), &method, deadline, switch)
                    .await
                    .map_err(|f| f.error)
            }
        }
    }

    /// Sends a request held whole in memory, once more on a new connection if a pooled one
    /// turns out to have been closed by the upstream (see the module docs).
    async fn send_whole(
        &self,
        method: &Method,
        request: &[u8],
        deadline: HeadDeadline,
        switch: bool,
    ) -> Result<Response<H1Body>, UpstreamError> {
        let mut pooled = self.pool.checkout();
        loop {
            let reused = pooled.is_some();
            let conn = match pooled.take() {
                Some(conn) => conn,
                None => self.connect(deadline).await?,
            };
            match self
                .exchange(conn, request, None, method, deadline, switch)
                .await
            {
                Ok(response) => return Ok(response),
                Err(f) if f.stale && reused && h1::is_idempotent(method) => {
                    tracing::debug!(
                        error = %f.error,
                        "pooled upstream connection was closed; sending again on a new one"
                    );
                }
                Err(f) => return Err(f.error),
            }
        }
    }

    async fn connect(&self, deadline: HeadDeadline) -> Result<Conn, UpstreamError> {
        match tokio::time::timeout_at(deadline.at, self.connector.connect()).await {
            Err(_) => Err(deadline.passed()),
            Ok(Ok((stream, open))) => Ok(Conn::new(stream, open)),
            Ok(Err(e)) => Err(UpstreamError::Connect {
                authority: self.authority.clone(),
                source: Box::new(e),
            }),
        }
    }

    /// Writes `head` (with a whole body, or followed by `upload`) and reads the response head,
    /// both by `deadline`. With `switch`, a `101` head is final and the connection becomes the
    /// response's tunnel.
    async fn exchange(
        &self,
        mut conn: Conn,
        head: &[u8],
        mut upload: Option<Upload>,
        method: &Method,
        deadline: HeadDeadline,
        switch: bool,
    ) -> Result<Response<H1Body>, Failure> {
        let (stream, mut timer) = conn.arm(deadline.at);
        match within(timer.as_mut(), stream.write_all(head)).await {
            Some(Ok(())) => {}
            Some(Err(e)) => {
                return Err(Failure {
                    stale: is_closed(&e),
                    error: UpstreamError::Disconnected {
                        source: Box::new(e),
                    },
                });
            }
            None => return Err(Failure::fatal(deadline.passed())),
        }
        let mut buf = BytesMut::new();
        // Whether any byte of a response came back.
        let mut received = false;
        let mut interim = 0;
        // The upstream stopped reading the request body: its answer may still come.
        let mut write_error: Option<io::Error> = None;
        let stream = &*stream;
        let reading = poll_fn(|cx| -> Poll<Result<Response<()>, Failure>> {
            if let Some(up) = &mut upload {
                match up.poll_send(cx, stream) {
                    Poll::Ready(Ok(())) => upload = None,
                    Poll::Ready(Err(SendError::Body(e))) => {
                        return Poll::Ready(Err(request_body_error(e).into()));
                    }
                    Poll::Ready(Err(SendError::Io(e))) => {
                        tracing::trace!(error = %e, "upstream stopped reading the request body");
                        upload = None;
                        write_error = Some(e);
                    }
                    Poll::Pending => {}
                }
            }
            loop {
                match h1::take_final_head(
                    &mut buf,
                    &mut interim,
                    self.max_head,
                    self.max_fields,
                    switch,
                ) {
                    Ok(Some(head)) => return Poll::Ready(Ok(head)),
                    Ok(None) => {}
                    Err(e) => return Poll::Ready(Err(protocol(e).into())),
                }
                // Doubling from INITIAL_HEAD_BUFFER, never past the head limit.
                let room = self.max_head - buf.len();
                let want = room.min(buf.len().max(INITIAL_HEAD_BUFFER));
                match ready!(poll_read_buf(stream, cx, &mut buf, want)) {
                    Ok(0) => {
                        let source = write_error.take().unwrap_or_else(|| {
                            io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                "upstream closed the connection before a complete response head",
                            )
                        });
                        return Poll::Ready(Err(Failure {
                            stale: !received,
                            error: UpstreamError::Disconnected {
                                source: Box::new(source),
                            },
                        }));
                    }
                    Ok(_) => received = true,
                    Err(e) => {
                        return Poll::Ready(Err(Failure {
                            stale: !received && is_closed(&e),
                            error: UpstreamError::Disconnected {
                                source: Box::new(e),
                            },
                        }));
                    }
                }
            }
        });
        let response = within(timer, reading)
            .await
            .unwrap_or_else(|| Err(Failure::fatal(deadline.passed())))?;
        if response.status() == http::StatusCode::SWITCHING_PROTOCOLS {
            // Only with `switch` (else refused above), and for a request sent whole.
            return Ok(switched(response, conn, buf));
        }

        let (framing, keep_alive) = h1::response_framing(method, &response).map_err(protocol)?;
        let keep_alive = keep_alive && write_error.is_none();
        let mut response = response;
        headers::remove_hop_by_hop(response.headers_mut());
        let body = self.body(conn, buf, framing, keep_alive, upload);
        Ok(response.map(|()| body))
    }

    /// The response body: complete at once when there is none or all of it was read with the
    /// head (the connection is pooled or closed right here), else streaming.
    fn body(
        &self,
        conn: Conn,
        mut buf: BytesMut,
        framing: ResponseFraming,
        keep_alive: bool,
        upload: Option<Upload>,
    ) -> H1Body {
        let whole = match framing {
            ResponseFraming::Empty => Some(Bytes::new()),
            ResponseFraming::Length(n) if buf.len() as u64 >= n => {
                Some(buf.split_to(n as usize).freeze())
            }
            _ => None,
        };
        if let Some(data) = whole {
            // Bytes past the body, or a request still being sent, leave the connection in a
            // state no next request can use.
            if keep_alive && upload.is_none() && buf.is_empty() {
                self.pool.checkin(conn);
            }
            return H1Body::whole(data);
        }
        let framing = match framing {
            ResponseFraming::Length(n) => Framing::Length(n),
            ResponseFraming::Chunked => {
                Framing::Chunked(ChunkedDecoder::new(self.max_head, self.max_fields))
            }
            ResponseFraming::Eof | ResponseFraming::Empty => Framing::Eof,
        };
        H1Body::streaming(Streaming {
            conn,
            pool: Arc::clone(&self.pool),
            buf,
            framing,
            keep_alive,
            upload: upload.map(Box::new),
            read_chunk: self.read_chunk,
        })
    }
}

/// A request head encoded by [`H1Client::encode`], and how its body follows it.
#[derive(Debug)]
pub(crate) struct EncodedRequest {
    method: Method,
    /// The head; for an inline body, with room for the body after it.
    head: Vec<u8>,
    body: BodyPlan,
}

/// How a request body goes out after its head.
#[derive(Debug, Clone, Copy)]
enum BodyPlan {
    /// Collected and written in the head's `write`: this many bytes (0: none).
    Inline(u64),
    /// Streamed after the head: with `Content-Length` when the size is known, else chunked.
    Streamed { remaining: Option<u64> },
}

/// When a request's response head must have come: at `at`, `budget` after the request began.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HeadDeadline {
    pub(crate) at: Instant,
    pub(crate) budget: Duration,
}

impl HeadDeadline {
    /// `budget` from now (a budget too long to add is as good as none).
    pub(crate) fn after(budget: Duration) -> Self {
        let now = Instant::now();
        let at = now
            .checked_add(budget)
            .unwrap_or_else(|| now + Duration::from_secs(86_400 * 365));
        HeadDeadline { at, budget }
    }

    fn passed(&self) -> UpstreamError {
        UpstreamError::Timeout {
            timeout: self.budget,
        }
    }
}

/// `work`'s output, or `None` if `timer` fires first. `work` is polled first, so a timer whose
/// work completes at once is never polled (nor registered).
async fn within<F: Future>(mut timer: Pin<&mut Sleep>, work: F) -> Option<F::Output> {
    let mut work = pin!(work);
    poll_fn(|cx| {
        if let Poll::Ready(out) = work.as_mut().poll(cx) {
            return Poll::Ready(Some(out));
        }
        timer.as_mut().poll(cx).map(|()| None)
    })
    .await
}

/// Polls `body` to its end (or to `expected` bytes) and appends its data to `out`. Trailers
/// are dropped.
async fn collect_into<B>(body: B, out: &mut Vec<u8>, expected: u64) -> Result<(), UpstreamError>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let mut body = pin!(body);
    let mut collected = 0u64;
    while collected < expected {
        let Some(frame) = body.as_mut().frame().await else {
            break;
        };
        let frame = frame.map_err(|e| request_body_error(e.into()))?;
        if let Ok(data) = frame.into_data() {
            collected += data.len() as u64;
            if collected > expected {
                return Err(request_body_error(Box::new(BodyLengthError(
                    "is longer",
                    expected,
                ))));
            }
            out.extend_from_slice(&data);
        }
    }
    if collected < expected {
        return Err(request_body_error(Box::new(BodyLengthError(
            "is shorter",
            expected,
        ))));
    }
    Ok(())
}

/// Why sending a streamed request body stopped.
#[derive(Debug)]
pub(crate) enum SendError {
    /// The body itself failed (the downstream client went away, a limit fired).
    Body(BoxError),
    /// Writing to the upstream failed: it closed or reset the connection.
    Io(io::Error),
}

/// The bytes of one body frame on their way to the socket: a chunk-size line (chunked only),
/// the data, and what follows it (CRLF after a chunk, or the last chunk).
#[derive(Debug, Default)]
struct Outgoing {
    line: [u8; 18],
    line_pos: usize,
    line_len: usize,
    data: Bytes,
    tail: &'static [u8],
}

impl Outgoing {
    fn is_empty(&self) -> bool {
        self.line_pos == self.line_len && self.data.is_empty() && self.tail.is_empty()
    }

    fn advance(&mut self, mut n: usize) {
        let line = (self.line_len - self.line_pos).min(n);
        self.line_pos += line;
        n -= line;
        let data = self.data.len().min(n);
        self.data.advance(data);
        n -= data;
        let tail = self.tail.len().min(n);
        self.tail = &self.tail[tail..];
        debug_assert_eq!(n - tail, 0, "wrote more than was queued");
    }
}

/// A request body being streamed to the upstream: `Content-Length` framing (checked against
/// what the body delivers) or chunked. Polled by the `forward` future while it waits for the
/// response head, then by the response body if the upstream answered first.
#[derive(Debug)]
pub(crate) struct Upload {
    /// The body. The mutex is never locked (only `get_mut` is used): it only makes `Upload`
    /// `Sync` without requiring it of the caller's body, so that the response body that may
    /// own it stays `Sync` (the gateway boxes it into a `BoxBody`).
    body: Mutex<UnsyncBoxBody<Bytes, BoxError>>,
    /// Bytes still to send under `Content-Length`; `None` when chunked.
    remaining: Option<u64>,
    out: Outgoing,
    /// The body ended; once `out` is written, the upload is complete.
    ended: bool,
}

impl Upload {
    fn new(body: UnsyncBoxBody<Bytes, BoxError>, remaining: Option<u64>) -> Self {
        Upload {
            body: Mutex::new(body),
            remaining,
            out: Outgoing::default(),
            ended: false,
        }
    }

    /// Sends as much of the body as the socket takes: `Ready(Ok)` once all of it (and the last
    /// chunk) is written. A frame is polled from the body only once the previous one is written
    /// whole, so at most one frame is held.
    pub(crate) fn poll_send(
        &mut self,
        cx: &mut Context<'_>,
        stream: &TcpStream,
    ) -> Poll<Result<(), SendError>> {
        loop {
            while !self.out.is_empty() {
                let out = &self.out;
                let slices = [
                    IoSlice::new(&out.line[out.line_pos..out.line_len]),
                    IoSlice::new(&out.data),
                    IoSlice::new(out.tail),
                ];
                let n = ready!(poll_write_vectored(stream, cx, &slices)).map_err(SendError::Io)?;
                if n == 0 {
                    return Poll::Ready(Err(SendError::Io(io::ErrorKind::WriteZero.into())));
                }
                self.out.advance(n);
            }
            if self.ended {
                return Poll::Ready(Ok(()));
            }
            if self.remaining == Some(0) {
                // All announced bytes are sent: the body's end need not be waited for.
                self.ended = true;
                continue;
            }
            let frame = ready!(Pin::new(self.body.get_mut()).poll_frame(cx));
            match frame {
                Some(Ok(frame)) => {
                    // Request trailers are dropped: few upstreams read them.
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    if data.is_empty() {
                        continue;
                    }
                    match &mut self.remaining {
                        Some(remaining) => {
                            if data.len() as u64 > *remaining {
                                let announced = *remaining;
                                return Poll::Ready(Err(SendError::Body(Box::new(
                                    BodyLengthError("is longer", announced),
                                ))));
                            }
                            *remaining -= data.len() as u64;
                            self.out.data = data;
                        }
                        None => {
                            let (line, len) = encode_size_line(data.len());
                            self.out = Outgoing {
                                line,
                                line_pos: 0,
                                line_len: len,
                                data,
                                tail: b"\r\n",
                            };
                        }
                    }
                }
                Some(Err(e)) => return Poll::Ready(Err(SendError::Body(e))),
                None => {
                    match self.remaining {
                        Some(remaining) => {
                            return Poll::Ready(Err(SendError::Body(Box::new(BodyLengthError(
                                "is shorter",
                                remaining,
                            )))));
                        }
                        None => self.out.tail = b"0\r\n\r\n",
                    }
                    self.ended = true;
                }
            }
        }
    }
}

/// Reads once from `stream` into `buf`, at most `max` bytes. Room is reserved only once the
/// socket is readable, so a wait holds no buffer.
pub(crate) fn poll_read_buf(
    stream: &TcpStream,
    cx: &mut Context<'_>,
    buf: &mut BytesMut,
    max: usize,
) -> Poll<io::Result<usize>> {
    debug_assert!(max > 0, "a read of nothing");
    loop {
        ready!(stream.poll_read_ready(cx))?;
        if buf.capacity() - buf.len() < max {
            buf.reserve(max);
        }
        // A read shorter than asked drained the socket: its readiness is cleared then, as
        // tokio's own `poll_read` does (epoll is edge-triggered, and `try_io` clears only the
        // readiness seen before the read, so data arriving meanwhile is not missed). Without
        // this the next read on the connection (the next request's, or the body's after the
        // head) would first cost a `recv` that only says EAGAIN.
        let mut read = None;
        let result = stream.try_io(Interest::READABLE, || {
            let n = stream.try_read_buf(&mut (&mut *buf).limit(max))?;
            read = Some(n);
            if n > 0 && n < max {
                Err(io::ErrorKind::WouldBlock.into())
            } else {
                Ok(())
            }
        });
        match (result, read) {
            (_, Some(n)) => return Poll::Ready(Ok(n)),
            (Err(e), None) if e.kind() == io::ErrorKind::WouldBlock => continue,
            (Err(e), None) => return Poll::Ready(Err(e)),
            (Ok(()), None) => unreachable!("a successful read records its length"),
        }
    }
}

fn poll_write_vectored(
    stream: &TcpStream,
    cx: &mut Context<'_>,
    bufs: &[IoSlice<'_>],
) -> Poll<io::Result<usize>> {
    loop {
        ready!(stream.poll_write_ready(cx))?;
        match stream.try_write_vectored(bufs) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            result => return Poll::Ready(result),
        }
    }
}
