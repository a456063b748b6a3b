//! The HTTP/1.1 client's idle keep-alive connections: a small LIFO stack behind a mutex, bounded
//! in size and age, with no task of its own.
//!
//! # Lifecycle of a connection
//!
//! ```text
//!   connect ──▶ busy (owned by one request: its forward future, then its response body)
//!                 │ response complete, reusable        │ anything else (error, early drop,
//!                 ▼                                    │ `connection: close`, not framed)
//!               idle (here) ──checkout, alive──▶ busy  ▼
//!                 │ too old / dead / pool full       closed (dropped: socket closed,
//!                 └───────────────────────────────▶  gauge slot released)
//! ```
//!
//! A connection is only ever owned by one request or by the pool, never shared, so a request
//! dropped at any point closes its connection instead of returning it half-used.
//!
//! Idle connections are checked when found, not by a timer: [`Pool::checkout`] closes those
//! idle longer than the idle timeout and those the upstream closed meanwhile (as far as the
//! socket tells: see [`Conn::is_alive`]). So an upstream
//! that sees no traffic keeps at most `pool_max_idle_per_host` idle sockets open (possibly
//! half-closed by the peer) until the next request.

use std::collections::VecDeque;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Waker};
use std::time::Duration;

use parking_lot::Mutex;
use socket2::SockRef;
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use crate::clock;
use crate::connect::OpenGuard;

/// One upstream connection of the HTTP/1.1 client, with its slot in the open-connections gauge.
#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) stream: TcpStream,
    /// The timer bounding each request's wait for its response head on this connection: made
    /// on the first request, then moved to each next request's deadline (see [`Conn::arm`]).
    deadline: Option<Pin<Box<Sleep>>>,
    _open: OpenGuard,
}

impl Conn {
    pub(crate) fn new(stream: TcpStream, open: OpenGuard) -> Self {
        Conn {
            stream,
            deadline: None,
            _open: open,
        }
    }

    /// The connection after its upstream switched protocols: a tunnel, never pooled.
    /// `unread` is what was read behind the `101` head.
    pub(crate) fn into_tunnel(self, unread: bytes::Bytes) -> crate::UpstreamTunnel {
        crate::UpstreamTunnel::new(self.stream, unread, self._open)
    }

    /// The socket and this connection's response-head timer, set to fire at `at`.
    ///
    /// Why one timer per connection, not one per request: a timer registered for a request and
    /// dropped when its answer comes costs a lock on the runtime's timer wheel twice (insert
    /// and remove) for every proxied request. This one stays in the wheel; moving it to a later
    /// deadline, as each next request does, is an atomic update of its entry (tokio re-files
    /// the entry when its old deadline comes round). An earlier deadline (a shorter budget)
    /// re-registers it. Between requests it may keep the last request task's waker, which is
    /// then woken once for nothing; it holds at most one task per pooled connection.
    pub(crate) fn arm(&mut self, at: Instant) -> (&mut TcpStream, Pin<&mut Sleep>) {
        let timer = self
            .deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
        if timer.deadline() != at {
            timer.as_mut().reset(at);
        }
        (&mut self.stream, timer.as_mut())
    }

    /// Whether an idle connection can carry a request: nothing to read and not closed.
    ///
    /// A connection back in the pool for less than [`TRUST_READINESS_FOR`] is judged by tokio's
    /// readiness cache alone, which costs no syscall: the reactor marks it readable once it has
    /// seen the upstream's FIN or a stray byte. Older ones, and any the cache reports readable,
    /// are asked directly (`recv` with `MSG_PEEK` on the non-blocking socket): "would block"
    /// means alive; end of stream, unexpected bytes (a stray response, or a 408 the upstream
    /// sent before closing) or an error mean it must not be used.
    ///
    /// Why the cache is trusted only briefly: it may not yet hold an event that arrived since
    /// the reactor last polled. Upstreams close idle connections after their keep-alive timeout
    /// (seconds: 2 s for gunicorn, 5 s for Node.js and Apache, 75 s for nginx), so a connection
    /// idle for a fraction of a second is almost never being closed; when it is (the upstream
    /// restarts), the request fails as it would had the upstream closed a moment later, and
    /// an idempotent request sent whole is retried on a new connection (see `client`). Under
    /// load, where connections idle for microseconds, this saves one syscall per request.
    fn is_alive(&self, idle_for: Duration) -> bool {
        if idle_for < TRUST_READINESS_FOR {
            let mut cx = Context::from_waker(Waker::noop());
            // Pending: no event since the last read drained the socket. (The no-op waker it
            // leaves is replaced by the next real read's.)
            if self.stream.poll_read_ready(&mut cx).is_pending() {
                return true;
            }
        }
        let mut byte = [MaybeUninit::<u8>::uninit(); 1];
        match SockRef::from(&self.stream).peek(&mut byte) {
            Err(e) => e.kind() == io::ErrorKind::WouldBlock,
            Ok(_) => false,
        }
    }
}

/// How long after its last use an idle connection is handed out on tokio's readiness cache
/// alone, without asking the socket (see [`Conn::is_alive`]).
pub(crate) const TRUST_READINESS_FOR: Duration = Duration::from_millis(250);

#[derive(Debug)]
struct Idle {
    conn: Conn,
    /// When it came back, on the coarse clock: idle ages are compared with hundreds of
    /// milliseconds at least, and the stamp is taken twice per request.
    since_ms: u64,
}

impl Idle {
    fn idle_for(&self, now_ms: u64) -> Duration {
        Duration::from_millis(now_ms.saturating_sub(self.since_ms))
    }
}

/// Idle connections to one upstream, most recently used last.
#[derive(Debug)]
pub(crate) struct Pool {
    idle: Mutex<VecDeque<Idle>>,
    max_idle: usize,
    idle_timeout: Duration,
}

impl Pool {
    /// A pool keeping at most `max_idle` connections (≥ 1), each for at most `idle_timeout`.
    pub(crate) fn new(max_idle: usize, idle_timeout: Duration) -> Self {
        debug_assert!(max_idle > 0, "a pool of no connections");
        Pool {
            // Grown on demand: most upstreams never need the full bound.
            idle: Mutex::new(VecDeque::new()),
            max_idle,
            idle_timeout,
        }
    }

    /// Idle connections held now.
    pub(crate) fn idle(&self) -> usize {
        self.idle.lock().len()
    }

    /// The most recently used idle connection that is still usable, if any. Connections found
    /// too old or dead on the way are closed (outside the lock).
    pub(crate) fn checkout(&self) -> Option<Conn> {
        let now = clock::now_millis();
        loop {
            let mut idle = self.idle.lock();
            let newest = idle.pop_back()?;
            if newest.idle_for(now) > self.idle_timeout {
                // The newest is too old, so all are: close them all.
                let stale = std::mem::take(&mut *idle);
                drop(idle);
                drop(stale);
                tracing::trace!("idle upstream connections expired");
                return None;
            }
            // Also retire the oldest when it has expired, so a pool that is used from one end
            // only does not keep dead sockets at the other for ever.
            let expired = match idle.front() {
                Some(oldest) if oldest.idle_for(now) > self.idle_timeout => idle.pop_front(),
                _ => None,
            };
            drop(idle);
            drop(expired);
            if newest.conn.is_alive(newest.idle_for(now)) {
                return Some(newest.conn);
            }
            tracing::trace!("idle upstream connection was closed by the upstream");
        }
    }

    /// Keeps `conn` for the next request; when the pool is full, the oldest idle connection is
    /// closed to make room (the newest is the likeliest to still be open upstream).
    pub(crate) fn checkin(&self, conn: Conn) {
        let entry = Idle {
            conn,
            since_ms: clock::now_millis(),
        };
        let mut idle = self.idle.lock();
        let evicted = if idle.len() >= self.max_idle {
            idle.pop_front()
        } else {
            None
        };
        idle.push_back(entry);
        drop(idle);
        drop(evicted);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    use super::*;

    /// A connected pair: our side as a pooled `Conn`, and the peer.
    async fn pair(open: &Arc<AtomicUsize>, listener: &TcpListener) -> (Conn, TcpStream) {
        let ours = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (theirs, _) = listener.accept().await.unwrap();
        (Conn::new(ours, OpenGuard::new(open)), theirs)
    }

    #[tokio::test]
    async fn lifo_bounded_and_dead_connections_are_skipped() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let open = Arc::new(AtomicUsize::new(0));
        let pool = Pool::new(2, Duration::from_secs(60));
        let (a, _pa) = pair(&open, &listener).await;
        let (b, pb) = pair(&open, &listener).await;
        let (c, mut pc) = pair(&open, &listener).await;
        let a_port = a.stream.local_addr().unwrap().port();
        let c_port = c.stream.local_addr().unwrap().port();
        pool.checkin(a);
        pool.checkin(b);
        pool.checkin(c);
        // Full at 2: the oldest (a) was closed.
        assert_eq!(pool.idle(), 2);
        assert_eq!(open.load(Ordering::Relaxed), 2);

        // LIFO: c first.
        let got = pool.checkout().unwrap();
        assert_eq!(got.stream.local_addr().unwrap().port(), c_port);
        assert_ne!(c_port, a_port);
        // c's peer sends stray bytes: c must not be reused.
        pc.write_all(b"HTTP/1.1 408 Request Timeout\r\n\r\n")
            .await
            .unwrap();
        pool.checkin(got);
        // b's peer closes.
        drop(pb);
        // Let the FIN and the bytes arrive.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(pool.checkout().is_none());
        assert_eq!(pool.idle(), 0);
        assert_eq!(open.load(Ordering::Relaxed), 0);
    }

    /// The two ways a connection is judged. The thread sleeps without yielding, so the
    /// reactor never polls and tokio's readiness cache never learns of the peer's FIN: what the
    /// pool then sees is what it sees on a busy runtime between two reactor turns.
    #[tokio::test]
    async fn recently_used_connections_are_judged_by_readiness_older_ones_by_the_socket() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let open = Arc::new(AtomicUsize::new(0));
        let pool = Pool::new(4, Duration::from_secs(60));

        // Used just now: handed out on the cache's word, though the FIN is in the socket.
        let (recent, peer) = pair(&open, &listener).await;
        pool.checkin(recent);
        drop(peer);
        std::thread::sleep(Duration::from_millis(20));
        assert!(pool.checkout().is_some(), "trusted the readiness cache");

        // Idle past the trust window: the socket is asked, and the FIN is found.
        let (older, peer) = pair(&open, &listener).await;
        pool.checkin(older);
        drop(peer);
        std::thread::sleep(TRUST_READINESS_FOR + Duration::from_millis(50));
        assert!(pool.checkout().is_none(), "the peek saw the FIN");
        assert_eq!(pool.idle(), 0);

        // Once the reactor has seen the FIN, even a recent connection is refused.
        let (seen, peer) = pair(&open, &listener).await;
        pool.checkin(seen);
        drop(peer);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(pool.checkout().is_none(), "the cache reported the FIN");
    }

    #[tokio::test]
    async fn expired_connections_are_closed_when_found() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let open = Arc::new(AtomicUsize::new(0));
        let pool = Pool::new(8, Duration::from_millis(100));
        let mut peers = Vec::new();
        for _ in 0..3 {
            let (conn, peer) = pair(&open, &listener).await;
            pool.checkin(conn);
            peers.push(peer);
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
        let (fresh, _peer) = pair(&open, &listener).await;
        pool.checkin(fresh);
        // The fresh one is handed out, and the oldest expired one retired on the way.
        assert!(pool.checkout().is_some());
        assert_eq!(pool.idle(), 2);
        // The newest left is expired, so everything goes.
        assert!(pool.checkout().is_none());
        assert_eq!(pool.idle(), 0);
        assert_eq!(open.load(Ordering::Relaxed), 0);
    }
}
