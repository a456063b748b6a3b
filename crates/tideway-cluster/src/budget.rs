//! The retry budget (Finagle's `RetryBudget`, tower's `TpsBudget`): every call deposits, every
//! retry or hedge withdraws, and a withdrawal succeeds while the withdrawals of the last `ttl`
//! stay below `ratio × deposits + min_per_second × ttl`. When every instance fails, retries
//! therefore add at most `ratio` of the traffic plus a small constant, instead of multiplying it
//! by the attempt count.

use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

use crate::window::SlidingWindow;

/// Buckets of the budget's window.
const BUDGET_BUCKETS: u32 = 10;

/// A retry budget shared by the calls of one cluster.
#[derive(Debug)]
pub(crate) struct RetryBudget {
    ratio: f64,
    reserve: f64,
    /// (deposits, withdrawals)
    window: Mutex<SlidingWindow>,
}

impl RetryBudget {
    pub(crate) fn new(now: Instant, ratio: f64, min_per_second: u32, ttl: Duration) -> Self {
        RetryBudget {
            ratio,
            reserve: f64::from(min_per_second) * ttl.as_secs_f64(),
            window: Mutex::new(SlidingWindow::new(now, ttl, BUDGET_BUCKETS)),
        }
    }

    /// A call was made.
    pub(crate) fn deposit(&self, now: Instant) {
        self.window.lock().add(now, 1, 0);
    }

    /// Takes one retry from the budget, if it has one.
    pub(crate) fn try_withdraw(&self, now: Instant) -> bool {
        let mut window = self.window.lock();
        let (deposits, withdrawals) = window.sum(now);
        if (withdrawals + 1) as f64 <= self.reserve + self.ratio * deposits as f64 {
            window.add(now, 0, 1);
            true
        } else {
            false
        }
    }

    /// Retries the budget would allow now.
    pub(crate) fn balance(&self, now: Instant) -> f64 {
        let (deposits, withdrawals) = self.window.lock().sum(now);
        (self.reserve + self.ratio * deposits as f64 - withdrawals as f64).max(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserve_then_ratio_of_deposits() {
        let t0 = Instant::now();
        // ratio 0.2, 10/s over 10 s: a reserve of 100 retries.
        let b = RetryBudget::new(t0, 0.2, 10, Duration::from_secs(10));
        assert_eq!(b.balance(t0), 100.0);
        let granted = (0..1000).filter(|_| b.try_withdraw(t0)).count();
        assert_eq!(granted, 100, "the reserve alone");
        // 1000 calls deposit 200 more retries.
        for _ in 0..1000 {
            b.deposit(t0);
        }
        let granted = (0..1000).filter(|_| b.try_withdraw(t0)).count();
        assert_eq!(granted, 200);
        assert_eq!(b.balance(t0), 0.0);
    }

    #[test]
    fn withdrawals_expire_with_the_ttl() {
        let t0 = Instant::now();
        let b = RetryBudget::new(t0, 0.0, 1, Duration::from_secs(10));
        assert_eq!((0..50).filter(|_| b.try_withdraw(t0)).count(), 10);
        assert!(!b.try_withdraw(t0 + Duration::from_secs(9)));
        // The bucket of t0 leaves the window at 10 s.
        assert!(b.try_withdraw(t0 + Duration::from_secs(10)));
    }

    #[test]
    fn zero_reserve_and_ratio_allow_nothing() {
        let t0 = Instant::now();
        let b = RetryBudget::new(t0, 0.0, 0, Duration::from_secs(10));
        b.deposit(t0);
        assert!(!b.try_withdraw(t0));
    }

    #[test]
    fn steady_failure_retries_at_most_ratio_plus_minimum() {
        // 100 calls/s for 60 s, each wanting 2 retries: retries granted over any 10 s are at
        // most 0.2 × 1000 + 100.
        let t0 = Instant::now();
        let b = RetryBudget::new(t0, 0.2, 10, Duration::from_secs(10));
        let mut granted = Vec::new();
        for i in 0..6000u64 {
            let now = t0 + Duration::from_millis(i * 10);
            b.deposit(now);
            for _ in 0..2 {
                if b.try_withdraw(now) {
                    granted.push(now);
                }
            }
        }
        for start in 0..50u64 {
            let from = t0 + Duration::from_secs(start);
            let to = from + Duration::from_secs(10);
            let n = granted.iter().filter(|t| **t >= from && **t < to).count();
            assert!(n <= 300, "{n} retries in 10 s from {start} s");
        }
        // And the budget is used, not starved: about 30/s once steady.
        let last_10s = granted
            .iter()
            .filter(|t| **t >= t0 + Duration::from_secs(50))
            .count();
        assert!(last_10s >= 250, "{last_10s}");
    }
}
