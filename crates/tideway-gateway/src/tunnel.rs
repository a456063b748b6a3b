//! WebSocket tunnels: after a handshake the upstream accepted (`101 Switching Protocols`), the
//! client's connection and the upstream's are spliced, byte for byte, both ways.
//!
//! How a tunnel comes to be: the handler forwards the handshake
//! ([`HttpUpstream::forward_as_is_switching`]); on `101` it puts the upstream connection in a
//! [`TunnelHandoff`] on the response. The connection's service moves it to the connection's
//! [`TunnelSlot`] before hyper writes the `101`; hyper's HTTP/1 connection then ends (its
//! upgrade is "manual"), and the connection's driver takes its socket and unread bytes back
//! and calls [`splice`].
//!
//! Bounded: a tunnel holds its client connection's permit (so `max_connections` bounds
//! tunnels too) and one upstream connection. Bytes are read into a scratch buffer of the
//! thread's and written on at once; a tunnel holds a buffer of its own only for what the
//! receiving side could not take yet (at most one chunk per direction, and it reads nothing
//! more that way until that is written), so an idle tunnel holds none and bytes move no faster
//! than the receiver takes them. A tunnel over which nothing moves for its idle timeout is
//! closed (checked when the timer fires, so after one to two timeouts: no clock is read per
//! chunk), and gateway shutdown closes every tunnel.
//!
//! Hand-written rather than `tokio::io::copy_bidirectional`, which keeps an 8 KiB buffer per
//! direction for the tunnel's whole life (16 KiB for each idle WebSocket) and has no idle
//! timeout.
//!
//! [`HttpUpstream::forward_as_is_switching`]: tideway_http_upstream::HttpUpstream::forward_as_is_switching

use std::cell::RefCell;
use std::future::poll_fn;
use std::io;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use parking_lot::Mutex;
use tideway_http_upstream::UpstreamTunnel;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Most bytes read from one side per read: a TLS record's worth.
const CHUNK: usize = 16 * 1024;

thread_local! {
    /// What pumps read into: one per runtime thread, borrowed only within one poll of one pump.
    /// (Allocating a chunk per read, and freeing it when the read found nothing, cost about 1 %
    /// of the gateway's CPU in the WebSocket benchmark.)
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; CHUNK].into_boxed_slice());
}

/// The upstream side of a tunnel and the tunnel's idle timeout (its route's).
pub(crate) type PendingTunnel = (UpstreamTunnel, Duration);

/// An upstream connection that switched protocols, on its way from the handler to the
/// connection's driver as an extension of the `101` response (extensions must be `Clone`).
#[derive(Debug, Clone)]
pub(crate) struct TunnelHandoff(Arc<Mutex<Option<PendingTunnel>>>);

impl TunnelHandoff {
    pub(crate) fn new(tunnel: UpstreamTunnel, idle_timeout: Duration) -> Self {
        TunnelHandoff(Arc::new(Mutex::new(Some((tunnel, idle_timeout)))))
    }

    fn take(&self) -> Option<PendingTunnel> {
        self.0.lock().take()
    }
}

/// Where an HTTP/1 connection's service leaves the upstream side of a tunnel for the
/// connection's driver; one per hyper-served HTTP/1 connection.
#[derive(Debug, Default)]
pub(crate) struct TunnelSlot(Mutex<Option<PendingTunnel>>);

impl TunnelSlot {
    /// Moves the tunnel out of a `101` response about to be written, if it carries one.
    pub(crate) fn receive<B>(&self, response: &mut http::Response<B>) {
        if response.status() != http::StatusCode::SWITCHING_PROTOCOLS {
            return;
        }
        if let Some(handoff) = response.extensions_mut().remove::<TunnelHandoff>() {
            *self.0.lock() = handoff.take();
        }
    }

    /// The tunnel whose `101` was written, if any.
    pub(crate) fn take(&self) -> Option<PendingTunnel> {
        self.0.lock().take()
    }
}

/// How a tunnel ended.
#[derive(Debug)]
pub(crate) enum TunnelEnd {
    /// Both sides closed their sending half.
    Closed,
    /// Nothing moved either way for the idle timeout.
    Idle,
    /// The gateway is shutting down.
    Shutdown,
    /// Reading or writing one side failed (a reset, usually).
    Failed,
}

/// Copies bytes both ways between the client (`downstream`) and `upstream` until both have
/// finished sending, one fails, nothing moves for `idle` (noticed within twice that), or
/// `shutdown` is cancelled. `early` (bytes the client sent behind its handshake, already read)
/// goes to the upstream first. An end of stream from one side is passed on as a shutdown of
/// the other's sending half.
pub(crate) async fn splice<D>(
    downstream: D,
    early: BytesMut,
    upstream: UpstreamTunnel,
    idle: Duration,
    shutdown: &CancellationToken,
) -> TunnelEnd
where
    D: AsyncRead + AsyncWrite + Unpin,
{
    let mut down = downstream;
    let mut up = upstream;
    let mut to_upstream = Pump {
        pending: (!early.is_empty()).then_some(early),
        ..Pump::default()
    };
    let mut to_downstream = Pump::default();
    let mut timer = pin!(tokio::time::sleep(idle));
    // Whether anything moved since the timer was last set.
    let mut moved = false;
    let pumping = poll_fn(|cx| {
        if to_upstream
            .step(cx, &mut down, &mut up, &mut moved)
            .is_err()
            || to_downstream
                .step(cx, &mut up, &mut down, &mut moved)
                .is_err()
        {
            return Poll::Ready(TunnelEnd::Failed);
        }
        if to_upstream.finished && to_downstream.finished {
            return Poll::Ready(TunnelEnd::Closed);
        }
        while timer.as_mut().poll(cx).is_ready() {
            if !moved {
                return Poll::Ready(TunnelEnd::Idle);
            }
            moved = false;
            timer.as_mut().reset(Instant::now() + idle);
        }
        Poll::Pending
    });
    tokio::select! {
        end = pumping => end,
        () = shutdown.cancelled() => TunnelEnd::Shutdown,
    }
}

/// One direction of a tunnel.
#[derive(Debug, Default)]
struct Pump {
    /// Read from one side and not yet all written to the other.
    pending: Option<BytesMut>,
    /// Written and not yet flushed (TLS buffers records).
    unflushed: bool,
    /// The reading side sent its end of stream.
    eof: bool,
    /// The end of stream was passed on: this direction is done.
    finished: bool,
}

impl Pump {
    /// One poll of this direction, unless it is finished; `Err` when it failed (logged).
    fn step<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        from: &mut R,
        to: &mut W,
        moved: &mut bool,
    ) -> Result<(), ()>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        if self.finished {
            return Ok(());
        }
        match self.poll(cx, from, to, moved) {
            Poll::Ready(Ok(())) => self.finished = true,
            Poll::Ready(Err(e)) => {
                tracing::debug!(error = %e, "WebSocket tunnel failed; closing both sides");
                return Err(());
            }
            Poll::Pending => {}
        }
        Ok(())
    }

    /// Moves bytes from `from` to `to` until `from` has nothing more to read right now, or `to`
    /// takes no more; `Ready(Ok)` once `from`'s end of stream has been passed on to `to`.
    fn poll<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        from: &mut R,
        to: &mut W,
        moved: &mut bool,
    ) -> Poll<io::Result<()>>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        loop {
            if let Some(chunk) = &mut self.pending {
                while chunk.has_remaining() {
                    let n = ready!(Pin::new(&mut *to).poll_write(cx, chunk.chunk()))?;
                    if n == 0 {
                        return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                    }
                    chunk.advance(n);
                    *moved = true;
                }
                self.pending = None;
                self.unflushed = true;
            }
            if self.unflushed {
                ready!(Pin::new(&mut *to).poll_flush(cx))?;
                self.unflushed = false;
            }
            if self.eof {
                ready!(Pin::new(&mut *to).poll_shutdown(cx))?;
                return Poll::Ready(Ok(()));
            }
            ready!(SCRATCH.with_borrow_mut(|scratch| self.relay(cx, from, to, scratch, moved)))?;
        }
    }

    /// Reads what `from` has into `scratch` and writes it to `to`, keeping what `to` does not
    /// take now in `pending`; notes an end of stream.
    fn relay<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        from: &mut R,
        to: &mut W,
        scratch: &mut [u8],
        moved: &mut bool,
    ) -> Poll<io::Result<()>>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let mut read = ReadBuf::new(scratch);
        ready!(Pin::new(&mut *from).poll_read(cx, &mut read))?;
        let n = read.filled().len();
        if n == 0 {
            self.eof = true;
            return Poll::Ready(Ok(()));
        }
        *moved = true;
        let mut written = 0;
        while written < n {
            match Pin::new(&mut *to).poll_write(cx, &scratch[written..n]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(k)) => written += k,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    // The receiver is slow: what it has not taken waits in a buffer of this
                    // tunnel's, and nothing more is read this way until it is written.
                    self.pending = Some(BytesMut::from(&scratch[written..n]));
                    return Poll::Pending;
                }
            }
        }
        self.unflushed = true;
        Poll::Ready(Ok(()))
    }
}
