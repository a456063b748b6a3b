//! The RPC client: a few multiplexed connections to one endpoint, a bounded pending-call map per
//! connection, deadlines, cancellation and keep-alive.
//!
//! # A call's life on the client
//!
//! ```text
//!  call ──► pick connection (packed fill) ──► connected? ──no──► in backoff? ──yes──► Unavailable (not sent)
//!                                               │yes                 │no
//!                                               │                    ▼
//!                                               │           connect (connect timeout) ──fail──► Unavailable (not sent)
//!                                               ▼◄───────────────────┘
//!            register in pending map (PendingGuard) ──full──► Overloaded (not sent)
//!                                               │
//!                                   queue Request frame (waits ≤ deadline)
//!                                               │
//!                        ┌──────────────────────┼───────────────────────┬──────────────────────┐
//!                  Response arrives       deadline passes         caller drops future     connection dies
//!                  reader removes entry   guard removes entry,    guard removes entry,    reader drains map:
//!                  → result               sends Cancel            sends Cancel            every call Unavailable
//! ```
//!
//! Connections are filled in order (see `Client::next_slot`): a call goes to the first usable
//! connection with fewer than 128 calls in flight, so that calls share writes; the next
//! connection is opened only when every open one has that many.
//!
//! The entry is owned by a [`PendingGuard`] whose `Drop` removes it, so no exit path can leave
//! one behind. The map's size is bounded by the per-connection in-flight limit.
//!
//! A GoAway from the server makes its connection unusable for new calls (the next call opens a
//! new one) and counts in [`Client::goaways_received`]. Calls with an id above the GoAway's
//! `last_request_id` were never started by the server, so their `Unavailable` (answered, or a
//! connection closed without an answer) is reported as not sent, which makes it retry-safe. A
//! connection lost with a call in flight otherwise gives an error whose
//! [`RpcError::is_connection_lost`] is true: only an idempotent call may be sent again.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use parking_lot::Mutex;
use serde::{Serialize, de::DeserializeOwned};
use tideway_wire::{
    Codec, FRAME_HEADER_LEN, Frame, FrameDecoder, Metadata, Request, Response, Status,
};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;

use crate::config::{ClientConfig, ConfigError};
use crate::error::RpcError;
use crate::transport::{CallMap, WireCodec, write_loop};

/// Per-call settings.
#[derive(Debug, Clone, Default)]
pub struct CallOptions {
    /// How long the caller waits, covering connect, queueing and the call itself; it travels with
    /// the request so the callee stops at the same moment. `None` uses the client's default.
    pub timeout: Option<Duration>,
    /// The instant by which the call must be done, for a caller that already holds one (a
    /// gateway request's deadline): the call then needs no clock reading to set its own. With
    /// `timeout` as well, the earlier of the two counts; with neither, the client's default
    /// timeout.
    pub deadline: Option<Instant>,
    /// Sent with the request (trace context, principal).
    pub metadata: Metadata,
}

impl CallOptions {
    /// Options with this timeout.
    pub fn with_timeout(timeout: Duration) -> Self {
        CallOptions {
            timeout: Some(timeout),
            ..CallOptions::default()
        }
    }

    /// Options with this deadline.
    pub fn with_deadline(deadline: Instant) -> Self {
        CallOptions {
            deadline: Some(deadline),
            ..CallOptions::default()
        }
    }

    /// The call's deadline for a call starting `now`, with `default_timeout` where these
    /// options set none. `now` is asked only when a timeout counts (a deadline alone needs no
    /// clock reading); a caller that holds a reading already passes `|| reading`.
    pub fn deadline_from(
        &self,
        now: impl FnOnce() -> Instant,
        default_timeout: Duration,
    ) -> Instant {
        match (self.deadline, self.timeout) {
            (Some(deadline), None) => deadline,
            (Some(deadline), Some(timeout)) => deadline.min(now() + timeout),
            (None, timeout) => now() + timeout.unwrap_or(default_timeout),
        }
    }
}

/// A handle to one endpoint. Cheap to clone; clones share connections. Connections are opened
/// lazily on the first call and closed when the last clone is dropped.
#[derive(Clone)]
pub struct Client {
    inner: Arc<ClientInner>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("addr", &self.inner.addr)
            .field("pending_calls", &self.pending_calls())
            .finish()
    }
}

struct ClientInner {
    addr: SocketAddr,
    config: ClientConfig,
    slots: Vec<Slot>,
    /// GoAway frames received over every connection this client opened; shared with them.
    goaways: Arc<AtomicU64>,
}

impl Drop for ClientInner {
    fn drop(&mut self) {
        for slot in &self.slots {
            if let Some(conn) = slot.state.lock().conn.take() {
                conn.close();
            }
        }
    }
}

/// One connection position: the live connection, or the backoff state after failed connects.
struct Slot {
    state: Mutex<SlotState>,
    /// Serialises connect attempts so a burst of calls opens one connection, not hundreds.
    connecting: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct SlotState {
    conn: Option<Arc<Connection>>,
    failures: u32,
    retry_at: Option<Instant>,
}

impl Client {
    /// A client for `addr`. Does not connect; the first call does.
    pub fn new(addr: SocketAddr, config: ClientConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let slots = (0..config.connections)
            .map(|_| Slot {
                state: Mutex::new(SlotState::default()),
                connecting: tokio::sync::Mutex::new(()),
            })
            .collect();
        Ok(Client {
            inner: Arc::new(ClientInner {
                addr,
                config,
                slots,
                goaways: Arc::new(AtomicU64::new(0)),
            }),
        })
    }

    /// The endpoint.
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// The codec of typed calls.
    pub fn codec(&self) -> Codec {
        self.inner.config.codec
    }

    /// Calls waiting for a response, over all connections.
    pub fn pending_calls(&self) -> usize {
        self.inner
            .slots
            .iter()
            .filter_map(|s| s.state.lock().conn.clone())
            .map(|c| c.pending.lock().len())
            .sum()
    }

    /// Frames queued for the connections' writers and not yet written, over all connections.
    /// Each queue is bounded (`write_queue_capacity`); this is the depth to watch.
    pub fn queued_frames(&self) -> usize {
        self.inner
            .slots
            .iter()
            .filter_map(|s| s.state.lock().conn.clone())
            .map(|c| c.tx.max_capacity() - c.tx.capacity())
            .sum()
    }

    /// Open connections.
    pub fn connections(&self) -> usize {
        self.inner
            .slots
            .iter()
            .filter(|s| s.state.lock().conn.as_ref().is_some_and(|c| c.is_usable()))
            .count()
    }

    /// GoAway frames received so far, over every connection: a server announcing that it is
    /// shutting down. Only ever grows; a caller that balances over endpoints compares it with the
    /// value it saw last to learn that this endpoint is draining.
    pub fn goaways_received(&self) -> u64 {
        self.inner.goaways.load(Ordering::Acquire)
    }

    /// When the endpoint is in reconnect backoff: no connection is usable and every connection
    /// slot failed its last connect attempt, so calls fail at once (`Unavailable`, not sent)
    /// until the returned instant. `None` when a call would use or try a connection now.
    pub fn unreachable_until(&self) -> Option<Instant> {
        // The clock is read only once a slot has no usable connection: asked before every
        // call, the answer is nearly always the first slot's usable one.
        let mut clock: Option<Instant> = None;
        let mut earliest: Option<Instant> = None;
        for slot in &self.inner.slots {
            let state = slot.state.lock();
            if state.conn.as_ref().is_some_and(|c| c.is_usable()) {
                return None;
            }
            let now = *clock.get_or_insert_with(Instant::now);
            match state.retry_at {
                Some(at) if at > now => earliest = Some(earliest.map_or(at, |e| e.min(at))),
                _ => return None,
            }
        }
        earliest
    }

    /// Calls `method` (`service/method`) with arguments serialised in the client's codec.
    pub async fn call_typed<A, R>(
        &self,
        method: &str,
        args: &A,
        options: &CallOptions,
    ) -> Result<R, RpcError>
    where
        A: Serialize + ?Sized,
        R: DeserializeOwned,
    {
        let codec = self.codec();
        let payload = codec
            .encode(args)
            .map_err(|e| RpcError::not_sent(Status::InvalidArgument, e))?;
        let reply = self.call(method, codec, payload, options).await?;
        codec
            .decode(&reply)
            .map_err(|e| RpcError::internal(format!("cannot decode the result of {method}: {e}")))
    }

    /// Calls `method` (`service/method`) with an encoded payload; returns the encoded result.
    pub async fn call(
        &self,
        method: &str,
        codec: Codec,
        payload: Bytes,
        options: &CallOptions,
    ) -> Result<Bytes, RpcError> {
        let deadline = options.deadline_from(Instant::now, self.inner.config.default_timeout);
        self.call_until(method, codec, payload, deadline, &options.metadata)
            .await
    }

    /// [`call`](Self::call) with the deadline and metadata given apart, so a caller making
    /// several attempts with one metadata set (retries, hedges) need not copy it for each, nor
    /// read the clock to turn its deadline into a timeout and back.
    pub async fn call_until(
        &self,
        method: &str,
        codec: Codec,
        payload: Bytes,
        deadline: Instant,
        metadata: &Metadata,
    ) -> Result<Bytes, RpcError> {
        // An observer (tracing) installed with `observe_client_calls` sees the call and may add
        // metadata; without one, nothing is cloned or allocated here.
        let Some((observed_metadata, observed)) =
            crate::observe::start_client_call(method, self.inner.addr, metadata)
        else {
            return self
                .send_call(method, codec, payload, deadline, metadata)
                .await;
        };
        let result = self
            .send_call(method, codec, payload, deadline, &observed_metadata)
            .await;
        match &result {
            Ok(_) => observed.finish(Status::Ok, None),
            Err(e) => observed.finish(e.status(), Some(e.message())),
        }
        result
    }

    async fn send_call(
        &self,
        method: &str,
        codec: Codec,
        payload: Bytes,
        deadline: Instant,
        metadata: &Metadata,
    ) -> Result<Bytes, RpcError> {
        let config = &self.inner.config;
        let metadata_len: usize = metadata
            .iter()
            .map(|(k, v)| 1 + k.len() + 2 + v.len())
            .sum();
        let frame_len = FRAME_HEADER_LEN + 4 + 2 + method.len() + 2 + metadata_len + payload.len();
        if frame_len > config.max_frame_len {
            return Err(RpcError::not_sent(
                Status::InvalidArgument,
                format!(
                    "request of {frame_len} bytes exceeds the frame limit of {} bytes",
                    config.max_frame_len
                ),
            ));
        }
        // The common case (a usable connection, room in its write queue) awaits nothing until
        // the reply. Connecting and waiting for queue room are rare and keep their state in
        // their own allocation, so they do not widen the future of every call that waits on
        // a reply (and of every gateway request holding one).
        let (slot, usable) = self.next_slot();
        let conn = match usable {
            Some(conn) => conn,
            None => Box::pin(self.connect_and_pick(slot, deadline)).await?,
        };
        let (mut guard, reply) = conn.register(config.max_in_flight_per_connection)?;
        // The request goes straight into the queue: no local holds it (or the `try_send`
        // result) across an await, where it would take room in the future for the whole call.
        let wait_for_room = match conn.tx.try_send(request_frame(
            guard.id, method, codec, payload, deadline, metadata,
        )) {
            Ok(()) => None,
            Err(mpsc::error::TrySendError::Closed(_)) => {
                return Err(RpcError::not_sent(
                    Status::Unavailable,
                    format!("connection to {} closed", self.inner.addr),
                ));
            }
            Err(mpsc::error::TrySendError::Full(frame)) => Some(Box::pin(conn.tx.send(frame))),
        };
        if let Some(send) = wait_for_room {
            match tokio::time::timeout_at(deadline, send).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => {
                    return Err(RpcError::not_sent(
                        Status::Unavailable,
                        format!("connection to {} closed", self.inner.addr),
                    ));
                }
                Err(_) => {
                    return Err(RpcError::not_sent(
                        Status::DeadlineExceeded,
                        "deadline passed while waiting to write the request",
                    ));
                }
            }
        }
        guard.sent = true;
        match tokio::time::timeout_at(deadline, reply).await {
            Ok(Ok(response)) => {
                guard.answered = true;
                if response.status == Status::Unavailable && conn.refused_after_goaway(guard.id) {
                    return Err(RpcError::not_sent(
                        Status::Unavailable,
                        format!(
                            "{} is shutting down and did not start the call",
                            self.inner.addr
                        ),
                    ));
                }
                response_to_result(response)
            }
            Ok(Err(_)) => {
                guard.answered = true;
                if conn.refused_after_goaway(guard.id) {
                    return Err(RpcError::not_sent(
                        Status::Unavailable,
                        format!(
                            "{} closed the connection after GoAway without starting the call",
                            self.inner.addr
                        ),
                    ));
                }
                Err(RpcError::connection_lost(format!(
                    "connection to {} lost before the response arrived",
                    self.inner.addr
                )))
            }
            Err(_) => Err(RpcError::deadline_exceeded(format!(
                "no response from {} by the call's deadline",
                self.inner.addr
            ))),
        }
    }

    /// The slot for the next call, and its connection if it is usable now.
    ///
    /// Connections are filled in order, as an HTTP/2 client fills one connection's streams:
    /// the first usable one with fewer than [`PACK_CALLS`] calls in flight takes the call.
    /// Calls that share a connection share its writes and the server's reads (one syscall
    /// carries many frames), where spreading them over every connection sends one or two
    /// frames per write. When every open connection has that many, an unopened slot is
    /// connected; when none is left, the least loaded connection takes the call (each up to
    /// `max_in_flight_per_connection`). A slot backing off after failed connects is used only
    /// when nothing else is (its call then fails at once, as the slot says).
    fn next_slot(&self) -> (usize, Option<Arc<Connection>>) {
        let slots = &self.inner.slots;
        let mut least: Option<(usize, Arc<Connection>, usize)> = None;
        let mut unopened = None;
        let mut backing_off = None;
        for (index, slot) in slots.iter().enumerate() {
            // The slot's lock is not held while the connection's is taken.
            let (usable, backing) = {
                let state = slot.state.lock();
                (
                    state.conn.as_ref().filter(|c| c.is_usable()).cloned(),
                    state.retry_at.is_some_and(|at| Instant::now() < at),
                )
            };
            match usable {
                Some(conn) => {
                    let load = conn.in_flight();
                    if load < PACK_CALLS {
                        return (index, Some(conn));
                    }
                    if least.as_ref().is_none_or(|(_, _, l)| load < *l) {
                        least = Some((index, conn, load));
                    }
                }
                None if backing => {
                    backing_off.get_or_insert(index);
                }
                None => {
                    unopened.get_or_insert(index);
                }
            }
        }
        if let Some(index) = unopened {
            return (index, None);
        }
        if let Some((index, conn, _)) = least {
            return (index, Some(conn));
        }
        (backing_off.unwrap_or(0), None)
    }

    /// The slow path of picking a connection: opens slot `slot` (or waits for the call that is
    /// opening it) and takes it if it has room under [`PACK_CALLS`]; else picks again. So the
    /// calls of a burst that waited for one connect spread over the next slots (opening them
    /// in turn) instead of all piling onto the one they waited for.
    async fn connect_and_pick(
        &self,
        mut slot: usize,
        deadline: Instant,
    ) -> Result<Arc<Connection>, RpcError> {
        // Each round opens a slot that was not open, so there are at most as many rounds as
        // slots.
        loop {
            let conn = match tokio::time::timeout_at(deadline, self.connect_slot(slot)).await {
                Ok(conn) => conn?,
                Err(_) => {
                    return Err(RpcError::not_sent(
                        Status::DeadlineExceeded,
                        format!("deadline passed while connecting to {}", self.inner.addr),
                    ));
                }
            };
            if conn.in_flight() < PACK_CALLS {
                return Ok(conn);
            }
            match self.next_slot() {
                (_, Some(conn)) => return Ok(conn),
                (next, None) => slot = next,
            }
        }
    }

    /// A usable connection from slot `index`, connecting if needed (one connect at a time per
    /// slot; callers that queue behind it use its result).
    async fn connect_slot(&self, index: usize) -> Result<Arc<Connection>, RpcError> {
        let inner = &self.inner;
        let slot = &inner.slots[index];
        let _connecting = slot.connecting.lock().await;
        // Someone else may have connected while we waited.
        if let Some(conn) = slot.usable() {
            return Ok(conn);
        }
        if let Some(retry_at) = slot.state.lock().retry_at
            && Instant::now() < retry_at
        {
            return Err(RpcError::not_sent(
                Status::Unavailable,
                format!(
                    "{} is unreachable; next connect attempt in {:?}",
                    inner.addr,
                    retry_at - Instant::now()
                ),
            ));
        }
        let connected =
            tokio::time::timeout(inner.config.connect_timeout, TcpStream::connect(inner.addr))
                .await;
        let failure = match connected {
            Ok(Ok(stream)) => {
                let conn = Connection::start(stream, &inner.config, Arc::clone(&inner.goaways));
                let mut state = slot.state.lock();
                state.conn = Some(Arc::clone(&conn));
                state.failures = 0;
                state.retry_at = None;
                return Ok(conn);
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("connect timed out after {:?}", inner.config.connect_timeout),
        };
        let mut state = slot.state.lock();
        state.failures = state.failures.saturating_add(1);
        let backoff = backoff(&inner.config, state.failures);
        state.retry_at = Some(Instant::now() + backoff);
        tracing::debug!(addr = %inner.addr, failures = state.failures, ?backoff, error = %failure, "connect failed");
        Err(RpcError::not_sent(
            Status::Unavailable,
            format!("cannot connect to {}: {failure}", inner.addr),
        ))
    }
}

impl Slot {
    fn usable(&self) -> Option<Arc<Connection>> {
        self.state
            .lock()
            .conn
            .as_ref()
            .filter(|c| c.is_usable())
            .cloned()
    }
}

/// Exponential backoff with full jitter in its upper half: `min * 2^(failures-1)`, capped, then
/// scaled by a factor in `[0.5, 1)` so that many clients do not reconnect in step.
fn backoff(config: &ClientConfig, failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(20);
    let base = config
        .reconnect_backoff_min
        .saturating_mul(1 << exp)
        .min(config.reconnect_backoff_max);
    // Jitter from the clock's sub-second nanos: good enough to spread reconnects, needs no RNG.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let factor = 0.5 + f64::from(nanos % 1000) / 2000.0;
    base.mul_f64(factor)
}

/// The request frame of a call: its deadline is what is left of `deadline` now.
fn request_frame(
    id: u64,
    method: &str,
    codec: Codec,
    payload: Bytes,
    deadline: Instant,
    metadata: &Metadata,
) -> Frame {
    let mut request = Request::new(id, method, codec, payload);
    request.deadline = Some(deadline.saturating_duration_since(Instant::now()));
    request.metadata = metadata.clone();
    Frame::Request(request)
}

fn response_to_result(response: Response) -> Result<Bytes, RpcError> {
    if response.status == Status::Ok {
        Ok(response.body)
    } else {
        Err(RpcError::new(response.status, response.message()))
    }
}

/// How often a connection whose keep-alive went unanswered checks whether its calls in flight
/// have all ended (by answer or deadline), so it can close.
const UNRESPONSIVE_DRAIN_POLL: Duration = Duration::from_millis(50);

/// Calls one connection takes before the client moves on to the next (see
/// [`Client::next_slot`]): about what HTTP/2 servers allow per connection by default (100
/// streams), rounded to a power of two.
const PACK_CALLS: usize = 128;

/// One TCP connection: a writer task fed by `tx`, a reader task that completes pending calls,
/// and a keep-alive task.
struct Connection {
    tx: mpsc::Sender<Frame>,
    pending: Mutex<PendingMap>,
    next_id: AtomicU64,
    /// Cancelled when the connection is finished, from any side.
    closed: CancellationToken,
    /// Set with every cancel of `closed` made here ([`Connection::close`]); the writer's own
    /// cancel shows as `tx` closed. Read instead of `closed.is_cancelled()`, which takes the
    /// token's lock, by the checks made before every call.
    shut: AtomicBool,
    /// The server sent GoAway: no new calls here.
    going_away: AtomicBool,
    /// The last request id the server accepted, from its GoAway (`u64::MAX` before one came).
    /// Calls with a higher id were refused or never read: the server did not start them.
    goaway_last_id: AtomicU64,
    /// The client's GoAway counter.
    goaways: Arc<AtomicU64>,
    /// A keep-alive ping went unanswered: no new calls here (see [`Connection::keepalive`]).
    unresponsive: AtomicBool,
    /// Frames read so far: the keep-alive task tells from it whether the server was silent
    /// (a count, not a time: reading the clock per frame cost more than the rest of the
    /// bookkeeping).
    frames_read: AtomicU64,
}

#[derive(Default)]
struct PendingMap {
    calls: CallMap<oneshot::Sender<Response>>,
    /// Set (under the lock) when the connection died; no call may register after.
    closed: bool,
}

impl PendingMap {
    fn len(&self) -> usize {
        self.calls.len()
    }
}

/// Owns one pending-call entry; removes it on drop and, if the request went out and no answer
/// came, tells the server to stop.
struct PendingGuard {
    conn: Arc<Connection>,
    id: u64,
    sent: bool,
    answered: bool,
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        let removed = self.conn.pending.lock().calls.remove(&self.id).is_some();
        if removed && self.sent {
            // Best effort: when the write queue is full the server's own deadline stops the
            // handler instead.
            let _ = self.conn.tx.try_send(Frame::Cancel { id: self.id });
        }
    }
}

impl Connection {
    fn start(stream: TcpStream, config: &ClientConfig, goaways: Arc<AtomicU64>) -> Arc<Connection> {
        let _ = stream.set_nodelay(true);
        let (read_half, write_half) = stream.into_split();
        let (tx, rx) = mpsc::channel(config.write_queue_capacity);
        let closed = CancellationToken::new();
        let conn = Arc::new(Connection {
            tx,
            pending: Mutex::new(PendingMap::default()),
            next_id: AtomicU64::new(1),
            closed: closed.clone(),
            shut: AtomicBool::new(false),
            going_away: AtomicBool::new(false),
            goaway_last_id: AtomicU64::new(u64::MAX),
            goaways,
            unresponsive: AtomicBool::new(false),
            frames_read: AtomicU64::new(0),
        });
        tokio::spawn(write_loop(write_half, rx, closed));
        let decoder =
            FrameDecoder::new(config.max_frame_len).expect("validated in ClientConfig::validate");
        let frames = FramedRead::new(read_half, WireCodec(decoder));
        tokio::spawn(Arc::clone(&conn).read_loop(frames));
        tokio::spawn(
            Arc::clone(&conn).keepalive(config.keepalive_interval, config.keepalive_timeout),
        );
        conn
    }

    /// Calls registered and not yet answered.
    fn in_flight(&self) -> usize {
        self.pending.lock().len()
    }

    fn is_usable(&self) -> bool {
        !self.is_finished()
            && !self.going_away.load(Ordering::Relaxed)
            && !self.unresponsive.load(Ordering::Relaxed)
    }

    /// Whether the connection is finished, from any side, without the token's lock: shut here,
    /// or the writer gone (it cancels `closed` as it ends, and its queue's receiver goes with it).
    fn is_finished(&self) -> bool {
        self.shut.load(Ordering::Acquire) || self.tx.is_closed()
    }

    /// Finishes the connection: every task of it stops.
    fn close(&self) {
        self.shut.store(true, Ordering::Release);
        self.closed.cancel();
    }

    /// Whether call `id` came after the server's GoAway cut-off, so the server never started it.
    fn refused_after_goaway(&self, id: u64) -> bool {
        self.going_away.load(Ordering::Acquire) && id > self.goaway_last_id.load(Ordering::Acquire)
    }

    fn register(
        self: &Arc<Self>,
        limit: usize,
    ) -> Result<(PendingGuard, oneshot::Receiver<Response>), RpcError> {
        let (reply_tx, reply_rx) = oneshot::channel();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut pending = self.pending.lock();
        if pending.closed {
            return Err(RpcError::not_sent(Status::Unavailable, "connection closed"));
        }
        if pending.len() >= limit {
            return Err(RpcError::not_sent(
                Status::Overloaded,
                format!("connection in-flight limit of {limit} calls reached"),
            ));
        }
        pending.calls.insert(id, reply_tx);
        drop(pending);
        Ok((
            PendingGuard {
                conn: Arc::clone(self),
                id,
                sent: false,
                answered: false,
            },
            reply_rx,
        ))
    }

    async fn read_loop(
        self: Arc<Self>,
        mut frames: FramedRead<tokio::net::tcp::OwnedReadHalf, WireCodec>,
    ) {
        // One waiter on `closed` for the whole loop, polled only when no frame is ready:
        // making, polling and dropping one per frame took the token's lock three times per
        // answer.
        let closed = self.closed.cancelled();
        tokio::pin!(closed);
        loop {
            let frame = tokio::select! {
                biased;
                frame = frames.next() => frame,
                () = &mut closed => break,
            };
            // Closed while frames were ready: stop all the same (they go with the connection).
            if self.is_finished() {
                break;
            }
            self.frames_read.fetch_add(1, Ordering::Relaxed);
            match frame {
                Some(Ok(Frame::Response(response))) => {
                    let waiter = self.pending.lock().calls.remove(&response.id);
                    // No waiter: the caller gave up (deadline or drop) before the answer came.
                    if let Some(waiter) = waiter {
                        let _ = waiter.send(response);
                    }
                }
                Some(Ok(Frame::Ping { nonce })) => {
                    let _ = self.tx.try_send(Frame::Pong { nonce });
                }
                Some(Ok(Frame::Pong { .. })) => {}
                Some(Ok(Frame::GoAway(goaway))) => {
                    tracing::debug!(reason = %goaway.reason, last_request_id = goaway.last_request_id, "server sent GoAway");
                    self.goaway_last_id
                        .fetch_min(goaway.last_request_id, Ordering::AcqRel);
                    if !self.going_away.swap(true, Ordering::AcqRel) {
                        self.goaways.fetch_add(1, Ordering::AcqRel);
                    }
                }
                Some(Ok(other)) => {
                    tracing::warn!(kind = ?other.kind(), "protocol violation: unexpected frame from server; closing connection");
                    break;
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "closing connection");
                    break;
                }
                None => break,
            }
        }
        self.close();
        // Fail every pending call at once: dropping the senders wakes their callers with
        // "connection lost".
        let failed = {
            let mut pending = self.pending.lock();
            pending.closed = true;
            std::mem::take(&mut pending.calls)
        };
        drop(failed);
    }

    async fn keepalive(self: Arc<Self>, interval: Duration, timeout: Duration) {
        let mut nonce = 0u64;
        // Frames read by the last look: the server was silent for an interval when the count
        // has not moved since.
        let mut seen = self.frames_read.load(Ordering::Relaxed);
        loop {
            tokio::select! {
                () = self.closed.cancelled() => return,
                () = tokio::time::sleep(interval) => {}
            }
            let read = self.frames_read.load(Ordering::Relaxed);
            if read != seen {
                seen = read;
                continue;
            }
            nonce += 1;
            if self.tx.try_send(Frame::Ping { nonce }).is_err() {
                // Queue full means traffic is flowing or the writer is stuck; the next round
                // tells which.
                continue;
            }
            tokio::select! {
                () = self.closed.cancelled() => return,
                () = tokio::time::sleep(timeout) => {}
            }
            let read = self.frames_read.load(Ordering::Relaxed);
            if read == seen {
                // The server is silent: no new calls go here (the next call opens another
                // connection). The calls already waiting keep their own deadlines, each bounded,
                // and end with DeadlineExceeded unless a late answer comes: a silent peer has
                // not failed them, it has not answered in time. The connection closes once
                // they are gone.
                tracing::warn!(
                    ?timeout,
                    pending = self.pending.lock().len(),
                    "no answer to keep-alive ping; no new calls on this connection, closing it when its calls in flight end"
                );
                self.unresponsive.store(true, Ordering::Release);
                loop {
                    if self.pending.lock().len() == 0 {
                        break;
                    }
                    tokio::select! {
                        () = self.closed.cancelled() => return,
                        () = tokio::time::sleep(UNRESPONSIVE_DRAIN_POLL) => {}
                    }
                }
                self.close();
                return;
            }
            seen = read;
        }
    }
}
