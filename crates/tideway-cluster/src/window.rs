//! A sliding window of bucketed counter pairs: what the breakers (calls, failures) and the retry
//! budget (deposits, withdrawals) count over the last `span`, instead of lifetime counters.
//!
//! Sans clock: every method takes `now`. The window is divided into buckets; a bucket is reused
//! (zeroed) when time has moved a whole window past it, so old counts fall out one bucket at a
//! time and memory is fixed.

use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    /// Which bucket-width tick since `epoch` the counts belong to.
    tick: u64,
    a: u64,
    b: u64,
}

/// Whole nanoseconds, saturating at `u64::MAX` (584 years).
fn nanos_u64(d: Duration) -> u64 {
    d.as_secs()
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::from(d.subsec_nanos()))
}

/// Two counters over the last `span`.
#[derive(Debug, Clone)]
pub(crate) struct SlidingWindow {
    epoch: Instant,
    /// 64 bits, not `as_nanos`'s 128: dividing those is a library call, made several times per
    /// call; 2^64 ns is 584 years.
    width_nanos: u64,
    buckets: Box<[Bucket]>,
}

impl SlidingWindow {
    /// A window over `span` in `buckets` buckets (both validated non-zero by the config).
    pub(crate) fn new(now: Instant, span: Duration, buckets: u32) -> Self {
        debug_assert!(buckets > 0 && !span.is_zero());
        let buckets = buckets.max(1);
        let width_nanos = (nanos_u64(span) / u64::from(buckets)).max(1);
        SlidingWindow {
            epoch: now,
            width_nanos,
            buckets: vec![Bucket::default(); buckets as usize].into_boxed_slice(),
        }
    }

    fn tick(&self, now: Instant) -> u64 {
        nanos_u64(now.saturating_duration_since(self.epoch)) / self.width_nanos
    }

    /// Adds to the two counters at `now`.
    pub(crate) fn add(&mut self, now: Instant, a: u64, b: u64) {
        let tick = self.tick(now);
        let len = self.buckets.len() as u64;
        let bucket = &mut self.buckets[(tick % len) as usize];
        if bucket.tick != tick {
            *bucket = Bucket { tick, a: 0, b: 0 };
        }
        bucket.a += a;
        bucket.b += b;
    }

    /// The two counters summed over the window ending at `now`.
    pub(crate) fn sum(&self, now: Instant) -> (u64, u64) {
        let tick = self.tick(now);
        let len = self.buckets.len() as u64;
        self.buckets
            .iter()
            .filter(|b| b.tick <= tick && tick - b.tick < len)
            .fold((0, 0), |(a, b), bucket| (a + bucket.a, b + bucket.b))
    }

    /// Forgets everything.
    pub(crate) fn clear(&mut self) {
        self.buckets.fill(Bucket {
            tick: u64::MAX,
            a: 0,
            b: 0,
        });
    }
}

/// Calls and failures of one instance or service: whether the failure rate trips a breaker.
#[derive(Debug, Clone)]
pub(crate) struct FailureWindow(SlidingWindow);

impl FailureWindow {
    pub(crate) fn new(now: Instant, span: Duration, buckets: u32) -> Self {
        FailureWindow(SlidingWindow::new(now, span, buckets))
    }

    pub(crate) fn record(&mut self, now: Instant, failed: bool) {
        self.0.add(now, 1, u64::from(failed));
    }

    /// (calls, failures) in the window.
    pub(crate) fn counts(&self, now: Instant) -> (u64, u64) {
        self.0.sum(now)
    }

    /// Whether the window holds at least `min_requests` calls and at least `rate` of them failed.
    pub(crate) fn trips(&self, now: Instant, min_requests: u32, rate: f64) -> bool {
        let (calls, failures) = self.counts(now);
        calls >= u64::from(min_requests) && failures as f64 >= rate * calls as f64
    }

    pub(crate) fn clear(&mut self) {
        self.0.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_fall_out_bucket_by_bucket() {
        let t0 = Instant::now();
        // 10 s in 10 buckets of 1 s.
        let mut w = FailureWindow::new(t0, Duration::from_secs(10), 10);
        for i in 0..10u64 {
            // One call per second, every other one failed.
            w.record(t0 + Duration::from_secs(i), i % 2 == 0);
        }
        assert_eq!(w.counts(t0 + Duration::from_millis(9_999)), (10, 5));
        // At 10 s the bucket of second 0 (a failure) has left the window.
        assert_eq!(w.counts(t0 + Duration::from_secs(10)), (9, 4));
        assert_eq!(w.counts(t0 + Duration::from_secs(15)), (4, 2));
        assert_eq!(w.counts(t0 + Duration::from_secs(19)), (0, 0));
        // A new record reuses a stale bucket without its old counts.
        w.record(t0 + Duration::from_secs(25), true);
        assert_eq!(w.counts(t0 + Duration::from_secs(25)), (1, 1));
    }

    #[test]
    fn rate_trips_only_with_enough_calls() {
        let t0 = Instant::now();
        let mut w = FailureWindow::new(t0, Duration::from_secs(10), 10);
        for _ in 0..9 {
            w.record(t0, true);
        }
        assert!(!w.trips(t0, 10, 0.5), "9 calls is below min_requests");
        w.record(t0, false);
        assert!(w.trips(t0, 10, 0.5));
        assert!(w.trips(t0, 10, 0.9));
        assert!(!w.trips(t0, 10, 0.95));
        // Once they age out, nothing trips.
        assert!(!w.trips(t0 + Duration::from_secs(10), 10, 0.5));
        w.clear();
        assert_eq!(w.counts(t0), (0, 0));
    }

    #[test]
    fn lifetime_counts_do_not_accumulate() {
        // The original engine's bug: counters over the process lifetime. Here a long run of
        // calls at a steady 1 % failure never looks like more than the last window.
        let t0 = Instant::now();
        let mut w = FailureWindow::new(t0, Duration::from_secs(10), 10);
        for i in 0..100_000u64 {
            w.record(t0 + Duration::from_millis(i), i % 100 == 0);
        }
        let (calls, failures) = w.counts(t0 + Duration::from_millis(99_999));
        assert!((9_000..=10_000).contains(&calls), "{calls}");
        assert!((90..=100).contains(&failures), "{failures}");
    }
}
