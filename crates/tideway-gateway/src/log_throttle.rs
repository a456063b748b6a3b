//! A cap on how many lines per second one kind of log event may write.
//!
//! Under overload every failed request could log a line, and writing lines then costs as much
//! as serving the requests (measured: a third fewer requests served with a WARN line per 503).
//! A [`LogThrottle`] lets the first `per_second` events of each second through and counts the
//! rest; the first event let through in a later second reports how many were suppressed.
//! Per-request records belong in the access log, which has its own bounded writer.
//!
//! Written by hand: `tracing` has no rate limiting, and the crates that add it wrap the whole
//! subscriber, not one call site.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Lets at most `per_second` events through in each one-second window.
#[derive(Debug)]
pub(crate) struct LogThrottle {
    per_second: u64,
    origin: Instant,
    /// The current window (whole seconds since `origin`) in the high 32 bits, events counted
    /// in it in the low 32 bits: one atomic word, so no lock on the request path.
    window_and_count: AtomicU64,
    /// Events refused since the last one let through.
    suppressed: AtomicU64,
}

impl LogThrottle {
    /// A throttle letting `per_second` events through per second.
    pub(crate) fn new(per_second: u32) -> Self {
        LogThrottle {
            per_second: u64::from(per_second),
            origin: Instant::now(),
            window_and_count: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(suppressed)` when this event may be logged (with the number of events refused
    /// since the last one that was), `None` when it must not.
    pub(crate) fn allow(&self) -> Option<u64> {
        self.allow_at(Instant::now())
    }

    fn allow_at(&self, now: Instant) -> Option<u64> {
        let window = now.saturating_duration_since(self.origin).as_secs() & 0xffff_ffff;
        let mut current = self.window_and_count.load(Ordering::Relaxed);
        loop {
            let (w, count) = (current >> 32, current & 0xffff_ffff);
            let next = if w == window {
                if count >= self.per_second {
                    self.suppressed.fetch_add(1, Ordering::Relaxed);
                    return None;
                }
                current + 1
            } else {
                (window << 32) | 1
            };
            match self.window_and_count.compare_exchange_weak(
                current,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(self.suppressed.swap(0, Ordering::Relaxed)),
                Err(seen) => current = seen,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn lets_the_first_events_of_each_second_through_and_counts_the_rest() {
        let throttle = LogThrottle::new(3);
        let t0 = throttle.origin;
        let allowed: Vec<_> = (0..10).map(|_| throttle.allow_at(t0)).collect();
        assert_eq!(allowed[..3], [Some(0), Some(0), Some(0)]);
        assert!(allowed[3..].iter().all(Option::is_none));
        // The next second: the first event reports the 7 refused ones.
        let t1 = t0 + Duration::from_millis(1500);
        assert_eq!(throttle.allow_at(t1), Some(7));
        assert_eq!(throttle.allow_at(t1), Some(0));
        assert_eq!(throttle.allow_at(t1), Some(0));
        assert_eq!(throttle.allow_at(t1), None);
        // A much later second starts afresh.
        assert_eq!(throttle.allow_at(t0 + Duration::from_secs(90)), Some(1));
    }

    #[test]
    fn holds_under_concurrent_callers() {
        let throttle = std::sync::Arc::new(LogThrottle::new(50));
        let t0 = throttle.origin;
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let throttle = throttle.clone();
                std::thread::spawn(move || {
                    (0..1000)
                        .filter(|_| throttle.allow_at(t0).is_some())
                        .count()
                })
            })
            .collect();
        let allowed: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(allowed, 50);
        assert_eq!(throttle.allow_at(t0 + Duration::from_secs(1)), Some(3950));
    }
}
