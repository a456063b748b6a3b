//! Ejection backoff: exponential from a base to a ceiling, with jitter that stays inside those
//! bounds, so that gateways that ejected an instance together do not all probe it together.

use std::time::Duration;

/// Jitter of an ejection time: uniform within ±25 % of the exponential value.
pub(crate) const EJECTION_JITTER: f64 = 0.25;

/// The ejection time after `ejections` earlier ones in a row (0 for the first): with `e =
/// base × 2^ejections` capped at `max`, uniform in `[e × (1 - J), e × (1 + J)]` intersected
/// with `[base, max]`. `unit` is a uniform sample in `[0, 1]`.
pub(crate) fn ejection_time(base: Duration, max: Duration, ejections: u32, unit: f64) -> Duration {
    let exp = base
        .saturating_mul(1u32 << ejections.min(20))
        .min(max)
        .as_secs_f64();
    let lo = (exp * (1.0 - EJECTION_JITTER)).max(base.as_secs_f64());
    let hi = (exp * (1.0 + EJECTION_JITTER))
        .min(max.as_secs_f64())
        .max(lo);
    Duration::from_secs_f64(lo + (hi - lo) * unit.clamp(0.0, 1.0))
}

/// The delay before retry number `retry` (1 for the first): full jitter, uniform in
/// `[0, min(max, base × 2^(retry-1))]`.
pub(crate) fn retry_delay(base: Duration, max: Duration, retry: u32, unit: f64) -> Duration {
    let bound = base
        .saturating_mul(1u32 << retry.saturating_sub(1).min(20))
        .min(max);
    bound.mul_f64(unit.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: Duration = Duration::from_secs(1);
    const MAX: Duration = Duration::from_secs(60);

    #[test]
    fn ejection_times_double_within_bounds_and_jitter() {
        for ejections in 0..30 {
            let exp = BASE.saturating_mul(1 << ejections.min(20)).min(MAX);
            let samples: Vec<Duration> = (0..1000)
                .map(|_| ejection_time(BASE, MAX, ejections, fastrand::f64()))
                .collect();
            let lo = *samples.iter().min().unwrap();
            let hi = *samples.iter().max().unwrap();
            assert!(lo >= BASE && hi <= MAX, "{ejections}: {lo:?}..{hi:?}");
            assert!(
                lo >= exp.mul_f64(0.75) && hi <= exp.mul_f64(1.25),
                "{ejections}"
            );
            // Jittered: 1000 samples spread over most of the allowed range.
            let allowed = exp.mul_f64(1.25).min(MAX) - exp.mul_f64(0.75).max(BASE);
            assert!(
                hi - lo >= allowed.mul_f64(0.8),
                "{ejections}: {lo:?}..{hi:?}"
            );
        }
        // The extremes of the unit sample.
        assert_eq!(ejection_time(BASE, MAX, 0, 0.0), BASE);
        assert_eq!(ejection_time(BASE, MAX, 3, 0.0), Duration::from_secs(6));
        assert_eq!(ejection_time(BASE, MAX, 3, 1.0), Duration::from_secs(10));
        assert_eq!(ejection_time(BASE, MAX, 10, 1.0), MAX);
        assert_eq!(ejection_time(BASE, MAX, 10, 0.0), Duration::from_secs(45));
    }

    #[test]
    fn retry_delays_are_full_jitter_and_capped() {
        let base = Duration::from_millis(10);
        let max = Duration::from_millis(200);
        assert_eq!(retry_delay(base, max, 1, 1.0), base);
        assert_eq!(retry_delay(base, max, 3, 1.0), Duration::from_millis(40));
        assert_eq!(retry_delay(base, max, 9, 1.0), max);
        assert_eq!(retry_delay(base, max, 9, 0.0), Duration::ZERO);
        for retry in 1..10 {
            let d = retry_delay(base, max, retry, fastrand::f64());
            assert!(d <= max);
        }
    }
}
