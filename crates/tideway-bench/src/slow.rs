//! The `bench.Slow` RPC service of the overload benchmark and the soak: calls that answer at
//! once, after a delay, or with a chosen error, and counters of the handlers it runs.
//!
//! Every handler holds a [`HandlerGuard`] while it runs. The guard counts the handler in flight
//! and, when it is dropped, records how the handler ended: it ran to the end
//! ([`SlowStats::completed`]) or it was dropped before that ([`SlowStats::cancelled`]), which is
//! what a Cancel frame or an expired deadline does to a handler. `bench-slow-server` serves these
//! counters as JSON, so the harness can tell whether calls that the gateway gave up on were
//! really stopped at the service.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use tideway_rpc::{RpcError, Status};

use crate::items::Item;

/// Longest delay a `delay` call may ask for; more is `InvalidArgument` (the deadline of the
/// call bounds it anyway, but a bench service should not accept hour-long sleeps).
pub const MAX_DELAY_MS: u64 = 60_000;

/// What the overload benchmark and the soak call.
#[tideway_macros::service(name = "bench.Slow")]
pub trait Slow {
    /// Answers [`Item::sample`] at once.
    async fn fast(&self) -> Result<Item, RpcError>;

    /// Answers [`Item::sample`] after `ms` milliseconds.
    async fn delay(&self, ms: u64) -> Result<Item, RpcError>;

    /// Fails with the status named by `status` (`not_found`, `invalid_argument`, `internal`,
    /// ... as in [`Status::as_str`]).
    async fn fail(&self, status: String) -> Result<Item, RpcError>;
}

/// Counters of the handlers a [`SlowImpl`] has run.
#[derive(Debug, Default)]
pub struct SlowCounters {
    in_flight: AtomicI64,
    peak_in_flight: AtomicI64,
    started: AtomicU64,
    completed: AtomicU64,
    cancelled: AtomicU64,
}

/// A snapshot of [`SlowCounters`], as `/stats` serves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SlowStats {
    /// Handlers running now.
    pub in_flight: i64,
    /// Most handlers that ran at once since start.
    pub peak_in_flight: i64,
    /// Handlers started since start.
    pub started: u64,
    /// Handlers that ran to their end (answered, successfully or not).
    pub completed: u64,
    /// Handlers dropped before their end: cancelled by the caller or stopped at the deadline.
    pub cancelled: u64,
}

impl SlowCounters {
    /// The counters now.
    pub fn snapshot(&self) -> SlowStats {
        SlowStats {
            in_flight: self.in_flight.load(Ordering::Relaxed),
            peak_in_flight: self.peak_in_flight.load(Ordering::Relaxed),
            started: self.started.load(Ordering::Relaxed),
            completed: self.completed.load(Ordering::Relaxed),
            cancelled: self.cancelled.load(Ordering::Relaxed),
        }
    }

    /// Counts a handler in; the guard counts it out when dropped.
    pub fn enter(self: &Arc<Self>) -> HandlerGuard {
        self.started.fetch_add(1, Ordering::Relaxed);
        let now = self.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak_in_flight.fetch_max(now, Ordering::Relaxed);
        HandlerGuard {
            counters: Arc::clone(self),
            finished: false,
        }
    }
}

/// Held by a running handler; see the module docs.
#[derive(Debug)]
pub struct HandlerGuard {
    counters: Arc<SlowCounters>,
    finished: bool,
}

impl HandlerGuard {
    /// The handler reached its end; dropping the guard now counts it as completed.
    pub fn finish(mut self) {
        self.finished = true;
    }
}

impl Drop for HandlerGuard {
    fn drop(&mut self) {
        self.counters.in_flight.fetch_sub(1, Ordering::Relaxed);
        let outcome = if self.finished {
            &self.counters.completed
        } else {
            &self.counters.cancelled
        };
        outcome.fetch_add(1, Ordering::Relaxed);
    }
}

/// The service: shares its counters with whoever serves `/stats`.
#[derive(Debug, Clone, Default)]
pub struct SlowImpl {
    counters: Arc<SlowCounters>,
}

impl SlowImpl {
    /// The counters of this service's handlers.
    pub fn counters(&self) -> Arc<SlowCounters> {
        Arc::clone(&self.counters)
    }
}

impl Slow for SlowImpl {
    async fn fast(&self) -> Result<Item, RpcError> {
        let guard = self.counters.enter();
        let item = Item::sample();
        guard.finish();
        Ok(item)
    }

    async fn delay(&self, ms: u64) -> Result<Item, RpcError> {
        let guard = self.counters.enter();
        let result = if ms > MAX_DELAY_MS {
            Err(RpcError::invalid_argument(format!(
                "ms: at most {MAX_DELAY_MS}, got {ms}"
            )))
        } else {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok(Item::sample())
        };
        guard.finish();
        result
    }

    async fn fail(&self, status: String) -> Result<Item, RpcError> {
        let guard = self.counters.enter();
        let error = match Status::ALL.into_iter().find(|s| s.as_str() == status) {
            Some(Status::Ok) | None => {
                RpcError::invalid_argument(format!("status: not an error status: {status}"))
            }
            Some(s) => RpcError::new(s, format!("asked to fail with {status}")),
        };
        guard.finish();
        Err(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn handlers_are_counted_completed_or_cancelled() {
        let service = SlowImpl::default();
        let counters = service.counters();
        assert_eq!(service.fast().await.unwrap(), Item::sample());
        let err = service.fail("not_found".into()).await.unwrap_err();
        assert_eq!(err.status(), Status::NotFound);
        let err = service.fail("ok".into()).await.unwrap_err();
        assert_eq!(err.status(), Status::InvalidArgument);

        // A delayed call dropped half-way counts as cancelled, and leaves nothing in flight.
        let call = service.delay(1000);
        let dropped = tokio::time::timeout(Duration::from_millis(100), call).await;
        assert!(dropped.is_err());
        assert_eq!(service.delay(10).await.unwrap(), Item::sample());

        let s = counters.snapshot();
        assert_eq!(
            s,
            SlowStats {
                in_flight: 0,
                peak_in_flight: 1,
                started: 5,
                completed: 4,
                cancelled: 1,
            }
        );
    }
}
