//! PeakEWMA (linkerd, Finagle): a latency estimate that jumps to any sample slower than itself
//! and moves towards faster ones with a time-based weight, and decays towards zero while no
//! sample comes, so an instance avoided for a while gets tried again.
//!
//! One departure from linkerd: the initial estimate (`default_rtt`) is a prior that the first
//! sample replaces, rather than a value later samples blend into over the decay time (10 s). With
//! blending, healthy instances keep looking ~30 ms slow for tens of seconds, and a burst of
//! calls then makes a stalled instance look cheaper than their queues.
//!
//! Sans clock: every method takes `now`.

use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug, Clone)]
pub(crate) struct PeakEwma {
    estimate_ns: f64,
    /// Whether a sample came yet; until then `estimate_ns` is the prior.
    sampled: bool,
    updated: Instant,
    decay_ns: f64,
}

impl PeakEwma {
    /// An estimate of `initial`, as of `now`.
    pub(crate) fn new(now: Instant, initial: Duration, decay: Duration) -> Self {
        PeakEwma {
            estimate_ns: initial.as_nanos() as f64,
            sampled: false,
            updated: now,
            decay_ns: (decay.as_nanos() as f64).max(1.0),
        }
    }

    fn weight(&self, now: Instant) -> f64 {
        let elapsed = nanos_f64(now.saturating_duration_since(self.updated));
        (-elapsed / self.decay_ns).exp()
    }

    /// Adds a sample.
    pub(crate) fn observe(&mut self, now: Instant, rtt: Duration) {
        let rtt = nanos_f64(rtt);
        let w = self.weight(now);
        let decayed = self.estimate_ns * w;
        if !self.sampled || rtt > decayed {
            self.sampled = true;
            self.estimate_ns = rtt;
        } else {
            self.estimate_ns = decayed + rtt * (1.0 - w);
        }
        self.updated = now;
    }

    /// Whether a sample has replaced the prior.
    pub(crate) fn is_sampled(&self) -> bool {
        self.sampled
    }

    /// The estimate in nanoseconds at `now`, decayed since the last sample.
    pub(crate) fn estimate_ns(&self, now: Instant) -> f64 {
        self.estimate_ns * self.weight(now)
    }
}

/// Nanoseconds as a float, without the 128-bit integer of `as_nanos` (converting that to a
/// float is a library call; this runs a few times per call).
pub(crate) fn nanos_f64(d: Duration) -> f64 {
    d.as_secs_f64() * 1e9
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn the_first_sample_replaces_the_prior() {
        let t0 = Instant::now();
        let mut e = PeakEwma::new(t0, 30 * MS, Duration::from_secs(10));
        assert_eq!(e.estimate_ns(t0), 30e6);
        e.observe(t0, MS);
        assert_eq!(e.estimate_ns(t0), 1e6);
        // Later faster samples blend in.
        e.observe(t0 + Duration::from_secs(10), Duration::ZERO);
        let blended = e.estimate_ns(t0 + Duration::from_secs(10)) / 1e6;
        assert!((0.3..0.4).contains(&blended), "{blended}");
    }

    #[test]
    fn peaks_at_once_and_recovers_with_the_decay() {
        let t0 = Instant::now();
        let mut e = PeakEwma::new(t0, 10 * MS, Duration::from_secs(10));
        assert_eq!(e.estimate_ns(t0), 10e6);
        e.observe(t0, 1000 * MS);
        assert_eq!(
            e.estimate_ns(t0),
            1000e6,
            "one slow sample is the new estimate"
        );
        // Fast samples every 10 ms pull it down gradually: after 10 s (one decay time) about
        // 1/e of the way is left.
        let mut now = t0;
        for _ in 0..1000 {
            now += 10 * MS;
            e.observe(now, MS);
        }
        let left = e.estimate_ns(now) / 1e6;
        assert!((300.0..450.0).contains(&left), "{left} ms");
    }

    #[test]
    fn decays_towards_zero_while_idle() {
        let t0 = Instant::now();
        let e = PeakEwma::new(t0, 30 * MS, Duration::from_secs(10));
        let later = e.estimate_ns(t0 + Duration::from_secs(10)) / 1e6;
        assert!((10.0..12.0).contains(&later), "{later}");
    }
}
