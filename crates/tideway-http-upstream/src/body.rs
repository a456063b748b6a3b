//! [`UpstreamBody`]: the response body [`HttpUpstream::forward`](crate::HttpUpstream::forward)
//! returns, read from the upstream connection only as the caller polls it.
//!
//! For HTTP/1.1 the body owns its connection (`H1Body`): each poll reads at most one bounded
//! piece from the socket, decodes it (Content-Length, chunked, or until close) and hands it out
//! as one data frame; bytes that came with the head are handed out first. While the request
//! body is still being sent (the upstream answered before reading all of it), each poll also
//! moves the request body on. When the response is complete and the connection can carry
//! another request, it goes back to the pool at once, before the caller's final poll returns;
//! in every other case (an error, the body dropped early) the connection is closed with the
//! body. For HTTP/2 it is hyper's `Incoming`, driven by hyper's connection task.

use std::error::Error as StdError;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

use crate::chunked::{ChunkedDecoder, Event};
use crate::client::{SendError, Upload, poll_read_buf};
use crate::error::BoxError;
use crate::pool::{Conn, Pool};

/// The body of an upstream response, streamed from the upstream as it is polled.
///
/// `Send`, `Sync` and `'static`, so it boxes into `http_body_util::combinators::BoxBody`.
/// Dropping it before its end closes the upstream connection (it is never pooled half-read).
/// A body whose next bytes do not come within the upstream's `body_idle_timeout` ends with
/// [`UpstreamBodyError::IdleTimeout`] (and its connection is closed).
#[derive(Debug)]
pub struct UpstreamBody {
    kind: Kind,
    idle: IdleDeadline,
}

/// The wait for a body's next frame, bounded. The timer is made the first time the body has to
/// wait (a body that is whole when its head arrives never makes one), boxed so that an idle
/// body stays small, and reset, not remade, for every later wait.
#[derive(Debug)]
struct IdleDeadline {
    timeout: Duration,
    timer: Option<Pin<Box<Sleep>>>,
    /// Whether the timer is set for the current wait (cleared by every frame).
    armed: bool,
}

impl IdleDeadline {
    /// Whether the body has now waited too long; arms the timer on a wait's first poll.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        let timer = match &mut self.timer {
            Some(timer) => {
                if !self.armed {
                    timer.as_mut().reset(Instant::now() + self.timeout);
                }
                timer
            }
            None => self
                .timer
                .insert(Box::pin(tokio::time::sleep(self.timeout))),
        };
        self.armed = true;
        timer.as_mut().poll(cx).is_ready()
    }
}

#[derive(Debug)]
enum Kind {
    H1(H1Body),
    H2(Incoming),
}

impl UpstreamBody {
    pub(crate) fn h1(body: H1Body, idle_timeout: Duration) -> Self {
        UpstreamBody {
            kind: Kind::H1(body),
            idle: IdleDeadline::new(idle_timeout),
        }
    }

    pub(crate) fn h2(body: Incoming, idle_timeout: Duration) -> Self {
        UpstreamBody {
            kind: Kind::H2(body),
            idle: IdleDeadline::new(idle_timeout),
        }
    }

    /// Takes the body's bytes when it arrived whole with the response head (its HTTP/1.1
    /// connection is then already back in the pool, or closed): empty for no body. `None`, and
    /// the body is left as it was, when it is still to be read from the upstream.
    pub fn take_whole(&mut self) -> Option<Bytes> {
        match &mut self.kind {
            Kind::H1(H1Body {
                state: state @ (State::Whole(_) | State::Done),
            }) => match std::mem::replace(state, State::Done) {
                State::Whole(bytes) => Some(bytes.unwrap_or_default()),
                _ => Some(Bytes::new()),
            },
            _ => None,
        }
    }
}

impl UpstreamBody {
    /// The upstream connection of a `101 Switching Protocols` answer (to
    /// [`HttpUpstream::forward_as_is_switching`](crate::HttpUpstream::forward_as_is_switching)),
    /// now the caller's to splice; `None` for any other answer. The body is empty either way.
    pub fn take_tunnel(&mut self) -> Option<crate::UpstreamTunnel> {
        match &mut self.kind {
            Kind::H1(H1Body {
                state: state @ State::Switched(_),
            }) => match std::mem::replace(state, State::Done) {
                State::Switched(tunnel) => Some(*tunnel),
                _ => None,
            },
            _ => None,
        }
    }
}

impl IdleDeadline {
    fn new(timeout: Duration) -> Self {
        IdleDeadline {
            timeout,
            timer: None,
            armed: false,
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = UpstreamBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, UpstreamBodyError>>> {
        let this = self.get_mut();
        let polled = match &mut this.kind {
            Kind::H1(body) => Pin::new(body).poll_frame(cx),
            Kind::H2(body) => Pin::new(body)
                .poll_frame(cx)
                .map_err(|source| UpstreamBodyError::Http2 { source }),
        };
        if polled.is_ready() {
            this.idle.armed = false;
            return polled;
        }
        if !this.idle.expired(cx) {
            return Poll::Pending;
        }
        let after = this.idle.timeout;
        tracing::debug!(
            ?after,
            "upstream response body idle too long; closing its connection"
        );
        // Dropping the body's connection closes it (never pooled half-read); the body ends.
        this.kind = Kind::H1(H1Body::closed());
        Poll::Ready(Some(Err(UpstreamBodyError::IdleTimeout { after })))
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::H1(body) => body.is_end_stream(),
            Kind::H2(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::H1(body) => body.size_hint(),
            Kind::H2(body) => body.size_hint(),
        }
    }
}

/// Why an upstream response body ended before its end. The upstream connection is closed after
/// any of these. Display texts are for logs and are not stable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UpstreamBodyError {
    /// The upstream closed the connection before the end its framing announced
    /// (`Content-Length` or the last chunk).
    #[error("upstream closed the connection before the end of the response body")]
    Incomplete,
    /// Reading from the upstream connection failed (e.g. reset).
    #[error("reading the response body from the upstream failed")]
    Io {
        /// The socket's error.
        #[source]
        source: io::Error,
    },
    /// The body's framing is broken (a malformed chunk, oversized trailers).
    #[error("upstream response body is malformed")]
    Protocol {
        /// What is wrong with it.
        #[source]
        source: BoxError,
    },
    /// The downstream request body, still being sent to the upstream while its response was
    /// streaming, failed; the exchange is abandoned.
    #[error("request body failed while streaming to the upstream")]
    RequestBody {
        /// The request body's error, as the body returned it.
        #[source]
        source: Arc<dyn StdError + Send + Sync>,
    },
    /// No bytes of the body came within the upstream's `body_idle_timeout`.
    #[error("upstream sent no response body bytes for {after:?}")]
    IdleTimeout {
        /// The timeout that passed.
        after: Duration,
    },
    /// hyper's HTTP/2 response body failed.
    #[error("upstream HTTP/2 response body failed")]
    Http2 {
        /// hyper's error.
        #[source]
        source: hyper::Error,
    },
}

/// How the rest of a streaming HTTP/1.1 body is delimited.
#[derive(Debug)]
pub(crate) enum Framing {
    /// This many bytes to go (bytes in the buffer not yet handed out included).
    Length(u64),
    Chunked(ChunkedDecoder),
    /// Until the upstream closes.
    Eof,
}

/// An HTTP/1.1 response body.
///
/// ```text
///   Whole(data) ──poll──▶ Done        (complete when the head was read; connection already
///                                      pooled or closed)
///   Streaming ──poll: last data / trailers / end──▶ Done (connection pooled or closed)
///        └──────poll: error──────────────────────▶ Done (connection closed)
/// ```
#[derive(Debug)]
pub(crate) struct H1Body {
    state: State,
}

#[derive(Debug)]
enum State {
    /// The whole body, already read; `None` once handed out (or for no body).
    Whole(Option<Bytes>),
    /// Boxed, as `Switched`: a response is moved whole from the function that reads its head
    /// up to the one that writes it to the client, several times per request, and most
    /// answers are small ones read whole with their head. Inline, these two would make every
    /// response 120 bytes larger for the sake of the few that stream.
    Streaming(Box<Streaming>),
    /// The upstream switched protocols (`101`): no body; the connection waits to be taken as a
    /// tunnel ([`UpstreamBody::take_tunnel`]).
    Switched(Box<crate::UpstreamTunnel>),
    Done,
}

/// What a streaming body owns: the connection, the bytes read but not yet handed out, and the
/// rest of the request body if it is still being sent.
#[derive(Debug)]
pub(crate) struct Streaming {
    pub(crate) conn: Conn,
    pub(crate) pool: Arc<Pool>,
    pub(crate) buf: BytesMut,
    pub(crate) framing: Framing,
    /// Whether the connection may carry another request once this body is complete (the
    /// response's framing and `Connection` allow it, and the request was sent whole).
    pub(crate) keep_alive: bool,
    /// Boxed: it exists only when the upstream answered before the whole request was sent,
    /// and is most of a streaming body's size.
    pub(crate) upload: Option<Box<Upload>>,
    /// Most bytes read from the socket per poll.
    pub(crate) read_chunk: usize,
}

/// What one poll of a streaming body found.
enum Step {
    Data(Bytes, bool),
    Trailers(HeaderMap),
    End,
    Error(UpstreamBodyError),
}

impl H1Body {
    /// A body that was complete when the head was read (no body, or all of it in the buffer).
    pub(crate) fn whole(data: Bytes) -> Self {
        H1Body {
            state: State::Whole(Some(data).filter(|d| !d.is_empty())),
        }
    }

    /// A body that ended with an error: it yields nothing more.
    fn closed() -> Self {
        H1Body { state: State::Done }
    }

    /// The "body" of a `101 Switching Protocols` answer: none, and the switched connection.
    pub(crate) fn switched(tunnel: crate::UpstreamTunnel) -> Self {
        H1Body {
            state: State::Switched(Box::new(tunnel)),
        }
    }

    /// A body still to be read from its connection.
    pub(crate) fn streaming(streaming: Streaming) -> Self {
        H1Body {
            state: State::Streaming(Box::new(streaming)),
        }
    }

    /// Ends the body: its connection goes back to the pool when it can carry another request,
    /// else it is closed.
    fn finish(&mut self) {
        if let State::Streaming(s) = std::mem::replace(&mut self.state, State::Done) {
            (*s).release();
        }
    }
}

impl Streaming {
    fn release(self) {
        if self.keep_alive && self.upload.is_none() && self.buf.is_empty() {
            self.pool.checkin(self.conn);
        } else {
            tracing::trace!(
                keep_alive = self.keep_alive,
                uploading = self.upload.is_some(),
                extra_bytes = self.buf.len(),
                "closing upstream connection after its response"
            );
        }
    }

    /// Gives the buffer's memory back once everything read was handed out: the data frames
    /// keep the allocation alive only as long as the caller holds them, and an idle wait for
    /// the next bytes holds no buffer at all.
    fn drop_empty_buffer(&mut self) {
        if self.buf.is_empty() {
            self.buf = BytesMut::new();
        }
    }

    fn poll_step(&mut self, cx: &mut Context<'_>) -> Poll<Step> {
        // Move the request body on first: the upstream may need more of it to go on answering.
        if let Some(upload) = &mut self.upload {
            match upload.poll_send(cx, &self.conn.stream) {
                Poll::Ready(Ok(())) => self.upload = None,
                Poll::Ready(Err(SendError::Body(e))) => {
                    return Poll::Ready(Step::Error(UpstreamBodyError::RequestBody {
                        source: Arc::from(e),
                    }));
                }
                Poll::Ready(Err(SendError::Io(e))) => {
                    // The upstream stopped reading the request; its response may still come.
                    tracing::trace!(error = %e, "upstream stopped reading the request body");
                    self.upload = None;
                    self.keep_alive = false;
                }
                Poll::Pending => {}
            }
        }
        loop {
            match &mut self.framing {
                Framing::Length(remaining) => {
                    if *remaining == 0 {
                        return Poll::Ready(Step::End);
                    }
                    if !self.buf.is_empty() {
                        let n = (*remaining).min(self.buf.len() as u64);
                        *remaining -= n;
                        let last = *remaining == 0;
                        let data = self.buf.split_to(n as usize).freeze();
                        self.drop_empty_buffer();
                        return Poll::Ready(Step::Data(data, last));
                    }
                }
                Framing::Chunked(decoder) => match decoder.decode(&mut self.buf) {
                    Ok(Some(Event::Data(data))) => {
                        self.drop_empty_buffer();
                        return Poll::Ready(Step::Data(data, false));
                    }
                    Ok(Some(Event::Trailers(trailers))) => {
                        return Poll::Ready(Step::Trailers(trailers));
                    }
                    Ok(Some(Event::End)) => return Poll::Ready(Step::End),
                    Ok(None) => {}
                    Err(e) => {
                        return Poll::Ready(Step::Error(UpstreamBodyError::Protocol {
                            source: Box::new(e),
                        }));
                    }
                },
                Framing::Eof => {
                    if !self.buf.is_empty() {
                        let data = std::mem::take(&mut self.buf).freeze();
                        return Poll::Ready(Step::Data(data, false));
                    }
                }
            }
            let max = match self.framing {
                Framing::Length(remaining) => remaining.min(self.read_chunk as u64) as usize,
                _ => self.read_chunk,
            };
            match ready!(poll_read_buf(&self.conn.stream, cx, &mut self.buf, max)) {
                Ok(0) => {
                    return Poll::Ready(match self.framing {
                        Framing::Eof => Step::End,
                        _ => Step::Error(UpstreamBodyError::Incomplete),
                    });
                }
                Ok(_) => {}
                Err(source) => return Poll::Ready(Step::Error(UpstreamBodyError::Io { source })),
            }
        }
    }
}

impl Body for H1Body {
    type Data = Bytes;
    type Error = UpstreamBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, UpstreamBodyError>>> {
        let this = self.get_mut();
        let step = match &mut this.state {
            State::Done | State::Switched(_) => return Poll::Ready(None),
            State::Whole(data) => {
                let data = data.take();
                if data.is_none() {
                    this.state = State::Done;
                }
                return Poll::Ready(data.map(|d| Ok(Frame::data(d))));
            }
            State::Streaming(streaming) => ready!(streaming.poll_step(cx)),
        };
        Poll::Ready(match step {
            Step::Data(data, last) => {
                if last {
                    this.finish();
                }
                Some(Ok(Frame::data(data)))
            }
            Step::Trailers(trailers) => {
                this.finish();
                Some(Ok(Frame::trailers(trailers)))
            }
            Step::End => {
                this.finish();
                None
            }
            Step::Error(e) => {
                // Dropping the connection closes it.
                this.state = State::Done;
                Some(Err(e))
            }
        })
    }

    fn is_end_stream(&self) -> bool {
        match &self.state {
            State::Done | State::Whole(None) | State::Switched(_) => true,
            State::Whole(Some(_)) => false,
            State::Streaming(s) => match &s.framing {
                Framing::Length(n) => *n == 0,
                Framing::Chunked(decoder) => decoder.is_done(),
                Framing::Eof => false,
            },
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.state {
            State::Done | State::Whole(None) | State::Switched(_) => SizeHint::with_exact(0),
            State::Whole(Some(data)) => SizeHint::with_exact(data.len() as u64),
            State::Streaming(s) => match s.framing {
                Framing::Length(n) => SizeHint::with_exact(n),
                _ => SizeHint::default(),
            },
        }
    }
}
