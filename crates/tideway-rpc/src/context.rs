//! The context of the call being served: deadline, metadata, method. Handlers read it with
//! [`CallContext::current`]; the server sets it for the duration of each handler.

use std::time::Duration;

use tideway_wire::{Codec, Metadata};
use tokio::time::Instant;

tokio::task_local! {
    static CURRENT: CallContext;
}

/// What a handler may want to know about the call it serves.
#[derive(Debug, Clone)]
pub struct CallContext {
    method: String,
    request_id: u64,
    deadline: Instant,
    codec: Codec,
    metadata: Metadata,
}

impl CallContext {
    /// A context; the server builds one per call, tests may build their own.
    pub fn new(
        method: impl Into<String>,
        request_id: u64,
        deadline: Instant,
        codec: Codec,
        metadata: Metadata,
    ) -> Self {
        CallContext {
            method: method.into(),
            request_id,
            deadline,
            codec,
            metadata,
        }
    }

    /// The context of the call the current task is serving, or `None` outside a handler.
    pub fn current() -> Option<CallContext> {
        CURRENT.try_with(Clone::clone).ok()
    }

    /// Runs `fut` with this context as [`CallContext::current`].
    pub async fn scope<F: Future>(self, fut: F) -> F::Output {
        CURRENT.scope(self, fut).await
    }

    /// `service/method`.
    pub fn method(&self) -> &str {
        &self.method
    }

    /// The request id on its connection.
    pub fn request_id(&self) -> u64 {
        self.request_id
    }

    /// When the caller stops waiting. The server drops the handler at this instant.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Time left before the deadline (zero once it passed). Pass it on to downstream calls.
    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// The payload codec the caller used.
    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// Metadata the caller sent (trace context, principal).
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }
}
