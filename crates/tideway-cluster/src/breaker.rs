//! The service's circuit breaker: a failure rate over a sliding window (not lifetime counters)
//! opens it; while open, calls fail at once; after the ejection time (the same jittered
//! exponential backoff as instances) one call passes as a probe, and its first attempt decides.
//!
//! ```text
//!  Closed ──rate ≥ service_failure_rate (≥ min_requests in window)──► Open { until }
//!    ▲                                                                  │ until passes
//!    └────── probe succeeds ◄──── HalfOpen (one probe call) ◄──────────┘
//!                                   │ probe fails ──► Open { until: longer }
//! ```

use parking_lot::Mutex;
use tokio::time::Instant;

use crate::backoff::ejection_time;
use crate::cluster::Shared;
use crate::status::{BreakerState, bump};
use crate::window::FailureWindow;

#[derive(Debug, Clone, Copy)]
enum State {
    Closed,
    Open { until: Instant },
    HalfOpen { probing: bool },
}

#[derive(Debug)]
struct Inner {
    state: State,
    /// Openings in a row: the backoff exponent.
    opens: u32,
    window: FailureWindow,
}

#[derive(Debug)]
pub(crate) struct ServiceBreaker {
    inner: Mutex<Inner>,
}

/// A call's passage through the breaker. A probe's first recorded attempt decides the
/// breaker's state; a probe dropped undecided lets the next call probe.
#[derive(Debug)]
pub(crate) struct Permit<'a> {
    breaker: &'a ServiceBreaker,
    shared: &'a Shared,
    probe: bool,
}

impl ServiceBreaker {
    pub(crate) fn new(now: Instant, shared: &Shared) -> Self {
        let b = &shared.config.breaker;
        ServiceBreaker {
            inner: Mutex::new(Inner {
                state: State::Closed,
                opens: 0,
                window: FailureWindow::new(now, b.window, b.buckets),
            }),
        }
    }

    /// Lets a call pass, or says when the breaker may let one through.
    pub(crate) fn try_enter<'a>(
        &'a self,
        now: Instant,
        shared: &'a Shared,
    ) -> Result<Permit<'a>, ()> {
        let mut inner = self.inner.lock();
        let probe = match inner.state {
            State::Closed => false,
            State::Open { until } if now >= until => true,
            State::HalfOpen { probing: false } => true,
            State::Open { .. } | State::HalfOpen { probing: true } => return Err(()),
        };
        if probe {
            inner.state = State::HalfOpen { probing: true };
        }
        Ok(Permit {
            breaker: self,
            shared,
            probe,
        })
    }

    pub(crate) fn state(&self, now: Instant) -> BreakerState {
        match self.inner.lock().state {
            State::Closed => BreakerState::Closed,
            State::Open { until } if until > now => BreakerState::Open {
                remaining: until - now,
            },
            State::Open { .. } | State::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }
}

impl Permit<'_> {
    /// Records an attempt that reached an instance (or failed trying).
    pub(crate) fn record(&mut self, now: Instant, failed: bool) {
        let shared = self.shared;
        let cfg = &shared.config;
        let mut inner = self.breaker.inner.lock();
        inner.window.record(now, failed);
        let open = match inner.state {
            State::Closed => {
                failed
                    && inner.window.trips(
                        now,
                        cfg.breaker.min_requests,
                        cfg.breaker.service_failure_rate,
                    )
            }
            State::HalfOpen { .. } if self.probe => {
                self.probe = false;
                if !failed {
                    inner.state = State::Closed;
                    inner.opens = 0;
                    inner.window.clear();
                    tracing::info!(service = %shared.service, "service circuit breaker closed");
                }
                failed
            }
            _ => false,
        };
        if open {
            let time = ejection_time(
                cfg.outlier.base_ejection,
                cfg.outlier.max_ejection,
                inner.opens,
                fastrand::f64(),
            );
            inner.opens = inner.opens.saturating_add(1);
            inner.state = State::Open { until: now + time };
            inner.window.clear();
            shared.metrics.breaker_opens.increment(1);
            bump(&shared.stats.breaker_opens);
            tracing::warn!(service = %shared.service, open_for = ?time, "service circuit breaker opened");
        }
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if self.probe {
            let mut inner = self.breaker.inner.lock();
            if let State::HalfOpen { probing: true } = inner.state {
                inner.state = State::HalfOpen { probing: false };
            }
        }
    }
}
