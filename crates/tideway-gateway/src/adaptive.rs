//! An adaptive concurrency limit: a gradient controller in the manner of Envoy's adaptive
//! concurrency filter and Netflix's Gradient2.
//!
//! Every window of [`WINDOW_SAMPLES`] completed requests, the mean latency of the window
//! (`sample`) is compared with a slowly moving baseline (`long`, an exponential average of past
//! samples):
//!
//! ```text
//! gradient  = clamp(TOLERANCE * long / sample, 0.5, 1.0)
//! new_limit = limit * gradient + sqrt(limit)          (sqrt: room for the queue to probe upward)
//! limit     = limit * (1 - SMOOTHING) + new_limit * SMOOTHING, within [min, max]
//! ```
//!
//! While latency stays near its baseline the gradient is 1 and the limit creeps up by the square
//! root term; when a backend slows down, latency rises above `TOLERANCE * long` and the limit
//! shrinks, so the gateway stops piling requests (and their memory) onto it. Requests over the
//! limit are refused at once, like every other limit here.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

/// Completed requests per adjustment.
pub const WINDOW_SAMPLES: u32 = 50;
/// How far latency may rise above its baseline before the limit shrinks.
pub const TOLERANCE: f64 = 2.0;
/// Weight of a new limit against the old one.
pub const SMOOTHING: f64 = 0.2;
/// Weight of a new window in the latency baseline.
const BASELINE_WEIGHT: f64 = 0.05;
/// The limit never falls below this, so a slow backend still gets probed.
pub const MIN_LIMIT: usize = 4;
/// Starting limit.
pub const INITIAL_LIMIT: usize = 20;

#[derive(Debug)]
struct Window {
    count: u32,
    total: Duration,
    /// Baseline latency in seconds; `None` until the first window.
    long: Option<f64>,
    limit: f64,
}

/// A concurrency limit that follows the latency of what is behind it.
#[derive(Debug)]
pub struct AdaptiveLimit {
    max: usize,
    limit: AtomicUsize,
    in_flight: Arc<AtomicUsize>,
    window: Mutex<Window>,
}

/// A request admitted by an [`AdaptiveLimit`]; releases its slot on drop.
#[derive(Debug)]
pub struct AdaptivePermit {
    in_flight: Arc<AtomicUsize>,
}

impl Drop for AdaptivePermit {
    fn drop(&mut self) {
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl AdaptiveLimit {
    /// A limit that starts at [`INITIAL_LIMIT`] (or `max` if lower) and never exceeds `max`.
    pub fn new(max: usize) -> Self {
        let max = max.max(MIN_LIMIT);
        let start = INITIAL_LIMIT.min(max);
        AdaptiveLimit {
            max,
            limit: AtomicUsize::new(start),
            in_flight: Arc::new(AtomicUsize::new(0)),
            window: Mutex::new(Window {
                count: 0,
                total: Duration::ZERO,
                long: None,
                limit: start as f64,
            }),
        }
    }

    /// The current limit.
    pub fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    /// Requests admitted and not yet finished.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Admits a request, or `None` at once when the limit is reached.
    pub fn try_acquire(&self) -> Option<AdaptivePermit> {
        let limit = self.limit();
        let mut current = self.in_flight.load(Ordering::Relaxed);
        loop {
            if current >= limit {
                return None;
            }
            match self.in_flight.compare_exchange_weak(
                current,
                current + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    return Some(AdaptivePermit {
                        in_flight: Arc::clone(&self.in_flight),
                    });
                }
                Err(actual) => current = actual,
            }
        }
    }

    /// Records the latency of a completed request; adjusts the limit at the end of a window.
    pub fn record(&self, latency: Duration) {
        let mut w = self.window.lock();
        w.count += 1;
        w.total += latency;
        if w.count < WINDOW_SAMPLES {
            return;
        }
        let sample = (w.total.as_secs_f64() / f64::from(w.count)).max(1e-6);
        w.count = 0;
        w.total = Duration::ZERO;
        let long = match w.long {
            None => sample,
            Some(long) => long * (1.0 - BASELINE_WEIGHT) + sample * BASELINE_WEIGHT,
        };
        w.long = Some(long);
        let gradient = (TOLERANCE * long / sample).clamp(0.5, 1.0);
        let new_limit = w.limit * gradient + w.limit.sqrt();
        // Shrink at once (a slowing backend must stop receiving more work now), grow smoothly.
        let limit = if new_limit < w.limit {
            new_limit
        } else {
            w.limit * (1.0 - SMOOTHING) + new_limit * SMOOTHING
        }
        .clamp(MIN_LIMIT as f64, self.max as f64);
        w.limit = limit;
        self.limit.store(limit.round() as usize, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn windows(limit: &AdaptiveLimit, latency: Duration, n: u32) {
        for _ in 0..n * WINDOW_SAMPLES {
            limit.record(latency);
        }
    }

    #[test]
    fn steady_latency_lets_the_limit_grow_to_its_maximum() {
        let l = AdaptiveLimit::new(200);
        assert_eq!(l.limit(), INITIAL_LIMIT);
        windows(&l, Duration::from_millis(5), 100);
        assert_eq!(l.limit(), 200);
    }

    #[test]
    fn a_slowing_backend_shrinks_the_limit_and_recovery_grows_it_again() {
        let l = AdaptiveLimit::new(1000);
        windows(&l, Duration::from_millis(5), 100);
        let healthy = l.limit();
        assert!(healthy > 100, "{healthy}");
        // Latency ten times its baseline: the limit falls steeply.
        windows(&l, Duration::from_millis(50), 10);
        let degraded = l.limit();
        assert!(degraded < healthy / 2, "{healthy} -> {degraded}");
        assert!(degraded >= MIN_LIMIT);
        // Back to normal: it climbs again.
        windows(&l, Duration::from_millis(5), 100);
        assert!(l.limit() > degraded * 2, "{degraded} -> {}", l.limit());
    }

    #[test]
    fn admission_stops_at_the_limit_and_permits_release_on_drop() {
        let l = AdaptiveLimit::new(4);
        let permits: Vec<_> = (0..4).map(|_| l.try_acquire().unwrap()).collect();
        assert!(l.try_acquire().is_none());
        assert_eq!(l.in_flight(), 4);
        drop(permits);
        assert_eq!(l.in_flight(), 0);
        assert!(l.try_acquire().is_some());
    }
}
