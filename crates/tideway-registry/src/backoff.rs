//! Exponential backoff with jitter, for reconnecting and re-registering.

use std::time::Duration;

/// Doubling waits from `min` to `max`; each wait is drawn from [half, all] of the current step so
/// that many gateways losing the same etcd do not come back in lockstep.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    step: Duration,
}

impl Backoff {
    pub(crate) fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            min,
            max: max.max(min),
            step: min,
        }
    }

    /// The next wait.
    pub(crate) fn next_wait(&mut self) -> Duration {
        let step = self.step;
        self.step = step.saturating_mul(2).min(self.max);
        let half = step / 2;
        let jitter_nanos = fastrand::u64(0..=u64::try_from(half.as_nanos()).unwrap_or(u64::MAX));
        half + Duration::from_nanos(jitter_nanos)
    }

    /// Back to the shortest wait, after a success.
    pub(crate) fn reset(&mut self) {
        self.step = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_ceiling_with_jitter() {
        let min = Duration::from_millis(100);
        let max = Duration::from_secs(1);
        let mut b = Backoff::new(min, max);
        let mut step = min;
        for _ in 0..10 {
            let wait = b.next_wait();
            assert!(
                wait >= step / 2 && wait <= step,
                "{wait:?} vs step {step:?}"
            );
            step = (step * 2).min(max);
        }
        b.reset();
        assert!(b.next_wait() <= min);
    }
}
