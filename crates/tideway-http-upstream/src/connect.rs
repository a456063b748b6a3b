//! Opening upstream connections, each one counted from connect to close: the gauge behind
//! [`HttpUpstream::open_connections`](crate::HttpUpstream::open_connections).
//!
//! - [`TcpConnector`] opens the HTTP/1.1 client's connections (`client.rs`): name resolution,
//!   connect timeout, `TCP_NODELAY`, socket buffer sizes.
//! - [`CountingConnector`] wraps hyper-util's `HttpConnector` for the HTTP/2 (h2c) client.
//!
//! Both hold an [`OpenGuard`] per connection, which gives its slot of the gauge back on drop.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use http::uri::Authority;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use tokio::net::{TcpSocket, TcpStream};

use crate::error::BoxError;

/// One open connection's slot in the open-connections gauge: taken when the connection is
/// made, given back when this guard is dropped with it, on every path (closed by either side,
/// evicted from a pool, a future dropped mid-request).
#[derive(Debug)]
pub(crate) struct OpenGuard(Arc<AtomicUsize>);

impl OpenGuard {
    pub(crate) fn new(open: &Arc<AtomicUsize>) -> Self {
        open.fetch_add(1, Ordering::Relaxed);
        OpenGuard(Arc::clone(open))
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Where the HTTP/1.1 client connects: an address fixed at construction when the base URL
/// names an IP, else a host name resolved at each connect (the system resolver's caching
/// applies; connects are rare next to requests, as connections are pooled).
#[derive(Debug, Clone)]
enum Target {
    Addr(SocketAddr),
    Name { host: String, port: u16 },
}

/// Opens TCP connections to one upstream for the HTTP/1.1 client.
#[derive(Debug)]
pub(crate) struct TcpConnector {
    target: Target,
    connect_timeout: Duration,
    send_buffer: Option<u32>,
    recv_buffer: Option<u32>,
    open: Arc<AtomicUsize>,
}

impl TcpConnector {
    /// A connector to `authority` (port 80 when it has none). Buffer sizes are `SO_SNDBUF` and
    /// `SO_RCVBUF` (`None`: the kernel's autotuning); `open` is the shared gauge.
    pub(crate) fn new(
        authority: &Authority,
        connect_timeout: Duration,
        send_buffer: Option<usize>,
        recv_buffer: Option<usize>,
        open: Arc<AtomicUsize>,
    ) -> Self {
        let port = authority.port_u16().unwrap_or(80);
        let host = authority.host();
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let target = match bare.parse::<IpAddr>() {
            Ok(ip) => Target::Addr(SocketAddr::new(ip, port)),
            Err(_) => Target::Name {
                host: host.to_owned(),
                port,
            },
        };
        // The config validates sizes to at most 64 MiB, so they fit.
        let size = |s: Option<usize>| s.map(|s| u32::try_from(s).unwrap_or(u32::MAX));
        TcpConnector {
            target,
            connect_timeout,
            send_buffer: size(send_buffer),
            recv_buffer: size(recv_buffer),
            open,
        }
    }

    /// Resolves (when the target is a name) and connects, trying each address in turn, all
    /// within the connect timeout. The stream comes with its gauge slot.
    pub(crate) async fn connect(&self) -> io::Result<(TcpStream, OpenGuard)> {
        let stream = match tokio::time::timeout(self.connect_timeout, self.connect_any()).await {
            Ok(result) => result?,
            Err(_elapsed) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("connect timed out after {:?}", self.connect_timeout),
                ));
            }
        };
        Ok((stream, OpenGuard::new(&self.open)))
    }

    async fn connect_any(&self) -> io::Result<TcpStream> {
        match &self.target {
            Target::Addr(addr) => self.connect_addr(*addr).await,
            Target::Name { host, port } => {
                let mut last = None;
                for addr in tokio::net::lookup_host((host.as_str(), *port)).await? {
                    match self.connect_addr(addr).await {
                        Ok(stream) => return Ok(stream),
                        Err(e) => last = Some(e),
                    }
                }
                Err(last.unwrap_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::NotFound,
                        format!("{host} resolved to no address"),
                    )
                }))
            }
        }
    }

    async fn connect_addr(&self, addr: SocketAddr) -> io::Result<TcpStream> {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        socket.set_nodelay(true)?;
        if let Some(size) = self.send_buffer {
            socket.set_send_buffer_size(size)?;
        }
        if let Some(size) = self.recv_buffer {
            socket.set_recv_buffer_size(size)?;
        }
        socket.connect(addr).await
    }
}

/// Connects with `HttpConnector` (HTTP/2 client) and wraps each stream in a [`Counted`] that holds a slot of the
/// shared gauge until the connection is dropped (closed by either side, evicted from the pool).
#[derive(Debug, Clone)]
pub(crate) struct CountingConnector {
    inner: HttpConnector,
    open: Arc<AtomicUsize>,
}

impl CountingConnector {
    pub(crate) fn new(inner: HttpConnector, open: Arc<AtomicUsize>) -> Self {
        CountingConnector { inner, open }
    }
}

type ConnectFuture<T> = Pin<Box<dyn Future<Output = Result<T, BoxError>> + Send>>;

impl tower_service::Service<Uri> for CountingConnector {
    type Response = Counted<<HttpConnector as tower_service::Service<Uri>>::Response>;
    type Error = BoxError;
    type Future = ConnectFuture<Self::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let connecting = self.inner.call(dst);
        let open = Arc::clone(&self.open);
        Box::pin(async move {
            let io = connecting.await?;
            Ok(Counted::new(io, open))
        })
    }
}

/// A connection's I/O plus its slot in the open-connections gauge, released on drop.
#[derive(Debug)]
pub(crate) struct Counted<T> {
    io: T,
    _open: OpenGuard,
}

impl<T> Counted<T> {
    fn new(io: T, open: Arc<AtomicUsize>) -> Self {
        Counted {
            io,
            _open: OpenGuard::new(&open),
        }
    }
}

impl<T: Connection> Connection for Counted<T> {
    fn connected(&self) -> Connected {
        self.io.connected()
    }
}

impl<T: Read + Unpin> Read for Counted<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<T: Write + Unpin> Write for Counted<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(authority: &str) -> Target {
        let authority: Authority = authority.parse().unwrap();
        let open = Arc::new(AtomicUsize::new(0));
        TcpConnector::new(&authority, Duration::from_secs(1), None, None, open).target
    }

    #[test]
    fn ip_literals_skip_resolution_and_names_keep_their_port() {
        assert!(
            matches!(target("127.0.0.1:9000"), Target::Addr(a) if a == "127.0.0.1:9000".parse().unwrap())
        );
        assert!(
            matches!(target("[::1]:9000"), Target::Addr(a) if a == "[::1]:9000".parse().unwrap())
        );
        assert!(matches!(target("10.1.2.3"), Target::Addr(a) if a.port() == 80));
        assert!(
            matches!(target("svc.local:81"), Target::Name { host, port: 81 } if host == "svc.local")
        );
        assert!(matches!(target("localhost"), Target::Name { port: 80, .. }));
    }

    #[tokio::test]
    async fn the_gauge_counts_connections_until_dropped() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let authority: Authority = listener.local_addr().unwrap().to_string().parse().unwrap();
        let open = Arc::new(AtomicUsize::new(0));
        let connector = TcpConnector::new(
            &authority,
            Duration::from_secs(1),
            Some(64 * 1024),
            Some(64 * 1024),
            Arc::clone(&open),
        );
        let (a, guard_a) = connector.connect().await.unwrap();
        let (b, guard_b) = connector.connect().await.unwrap();
        assert!(a.nodelay().unwrap());
        assert_eq!(open.load(Ordering::Relaxed), 2);
        drop((a, guard_a));
        assert_eq!(open.load(Ordering::Relaxed), 1);
        drop((b, guard_b));
        assert_eq!(open.load(Ordering::Relaxed), 0);
        drop(listener);
        assert!(connector.connect().await.is_err());
        assert_eq!(open.load(Ordering::Relaxed), 0);
    }
}
