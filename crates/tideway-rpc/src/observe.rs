//! Hooks that watch calls as they are made and served, so a tracer can open a span per call and
//! carry its context in the call metadata (W3C `traceparent` / `tracestate`).
//!
//! - Server side: [`ServerBuilder::observer`](crate::ServerBuilder::observer). For each call that
//!   starts a handler, the observer sees the method, the caller's address and the metadata (it may
//!   rewrite `traceparent` to its own span, so the handler's [`CallContext`](crate::CallContext)
//!   carries the server span and calls the handler makes continue the trace).
//! - Client side: [`observe_client_calls`] runs a future with an observer that every
//!   [`Client::call`](crate::Client::call) made inside it (each attempt of a retried or hedged
//!   call) reports to, with the endpoint's address; the observer may add metadata to the request.
//!
//! Nothing is observed unless an observer is installed: the server checks an `Option`, the client
//! reads a task-local that is unset, so neither allocates.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use tideway_wire::{Metadata, Status};

/// Which side of a call an observer is told about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CallSide {
    /// This process sends the call (to `peer`).
    Client,
    /// This process serves the call (from `peer`).
    Server,
}

/// Watches calls. Implementations must be cheap: `start` runs on the call's path.
pub trait CallObserver: Send + Sync + fmt::Debug + 'static {
    /// A call starts: `method` is `service/method`, `peer` the other end. `metadata` is what
    /// travels with the request (client side: before it is sent; server side: what the handler
    /// will see) and may be changed. Returns what to tell when the call ends, if anything.
    fn start(
        &self,
        side: CallSide,
        method: &str,
        peer: SocketAddr,
        metadata: &mut Metadata,
    ) -> Option<Box<dyn ObservedCall>>;
}

/// A call being observed. [`finish`](ObservedCall::finish) is called with the call's status when
/// it ends with an answer; a call dropped before that (cancelled, caller gone, connection lost on
/// the server side) just drops this, and implementations should treat a drop without `finish` as
/// cancelled.
pub trait ObservedCall: Send {
    /// The call ended with `status`; `message` is the error message when it failed.
    fn finish(self: Box<Self>, status: Status, message: Option<&str>);
}

tokio::task_local! {
    static CLIENT_OBSERVER: Arc<dyn CallObserver>;
}

/// Runs `fut` with `observer` watching every client call made while it is polled (calls made in
/// tasks it spawns are not watched: a task-local does not cross `spawn`).
pub async fn observe_client_calls<F: Future>(observer: Arc<dyn CallObserver>, fut: F) -> F::Output {
    CLIENT_OBSERVER.scope(observer, fut).await
}

/// Starts the client-side observation of a call, when an observer is installed: the metadata to
/// send (the caller's, as the observer changed it) and the observation.
pub(crate) fn start_client_call(
    method: &str,
    peer: SocketAddr,
    metadata: &Metadata,
) -> Option<(Metadata, Box<dyn ObservedCall>)> {
    CLIENT_OBSERVER
        .try_with(|o| {
            let mut metadata = metadata.clone();
            o.start(CallSide::Client, method, peer, &mut metadata)
                .map(|observed| (metadata, observed))
        })
        .ok()
        .flatten()
}
