//! An upstream connection that switched protocols: what a WebSocket handshake leaves behind.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::connect::OpenGuard;

/// An HTTP/1.1 upstream connection that answered `101 Switching Protocols`
/// ([`HttpUpstream::forward_as_is_switching`](crate::HttpUpstream::forward_as_is_switching)). From
/// here on it carries the new protocol's bytes (WebSocket frames) both ways, read and written
/// as they are; the caller splices it to its client.
///
/// It is never pooled: dropping it closes the connection. It counts among the upstream's
/// [open connections](crate::HttpUpstream::open_connections) while it lives.
#[derive(Debug)]
pub struct UpstreamTunnel {
    stream: TcpStream,
    /// What the upstream sent right behind its `101` head, read with it: read first.
    unread: Bytes,
    _open: OpenGuard,
}

impl UpstreamTunnel {
    pub(crate) fn new(stream: TcpStream, unread: Bytes, open: OpenGuard) -> Self {
        UpstreamTunnel {
            stream,
            unread,
            _open: open,
        }
    }

    /// Bytes the upstream sent behind its `101` head that have not been read yet.
    pub fn unread(&self) -> &[u8] {
        &self.unread
    }
}

impl AsyncRead for UpstreamTunnel {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.unread.is_empty() {
            let n = this.unread.len().min(buf.remaining());
            buf.put_slice(&this.unread[..n]);
            this.unread.advance(n);
            if this.unread.is_empty() {
                // Let go of the buffer the head was read into.
                this.unread = Bytes::new();
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for UpstreamTunnel {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}
