//! Cheap clocks: monotonic milliseconds for idle bookkeeping, wall-clock seconds for `Date`.
//!
//! Some times are stamped on every request but only ever compared with timeouts of hundreds of
//! milliseconds or more: when a pooled upstream connection went idle, when a client connection
//! last read or wrote. `Instant::now()` reads the time stamp counter through the vDSO (about
//! 25 ns here, in a VM); the kernel's coarse clock is the time of the last scheduler tick, one
//! memory read through the vDSO (about 5 ns), and at most one tick (1 to 4 ms) behind.
//!
//! Written here, not taken from a crate: it is one call (rustix's safe `clock_gettime`, which
//! uses the vDSO). Elsewhere than Linux it falls back to `Instant`.

/// How far behind the real time a reading may be: one scheduler tick at the lowest common
/// tick rate (250 Hz), rounded up. Deadlines checked against this clock allow for it.
pub const RESOLUTION_MS: u64 = 5;

/// Milliseconds on a monotonic clock with an unspecified origin. Readings only make sense
/// compared with each other, in this process.
#[inline]
pub fn now_millis() -> u64 {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        let t = rustix::time::clock_gettime(rustix::time::ClockId::MonotonicCoarse);
        // Never negative on a monotonic clock; `as` keeps this a plain conversion.
        (t.tv_sec as u64) * 1_000 + (t.tv_nsec as u64) / 1_000_000
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        use std::sync::OnceLock;
        use std::time::Instant;
        static ORIGIN: OnceLock<Instant> = OnceLock::new();
        ORIGIN.get_or_init(Instant::now).elapsed().as_millis() as u64
    }
}

/// Whole seconds since the Unix epoch, from the kernel's coarse wall clock (as cheap as
/// [`now_millis`], at most one tick behind): for what is written at one-second resolution,
/// such as the `Date` field of every response.
#[inline]
pub fn unix_seconds() -> u64 {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        let t = rustix::time::clock_gettime(rustix::time::ClockId::RealtimeCoarse);
        u64::try_from(t.tv_sec).unwrap_or(0)
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn follows_the_precise_clock_within_its_resolution() {
        let coarse_start = now_millis();
        let precise_start = Instant::now();
        std::thread::sleep(Duration::from_millis(60));
        let coarse = now_millis() - coarse_start;
        let precise = precise_start.elapsed().as_millis() as u64;
        assert!(
            coarse + 2 * RESOLUTION_MS >= precise && coarse <= precise + 2 * RESOLUTION_MS,
            "coarse clock moved {coarse} ms while the precise one moved {precise} ms"
        );
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(
            unix_seconds().abs_diff(wall) <= 1,
            "coarse wall clock is off"
        );
        let mut last = now_millis();
        for _ in 0..10_000 {
            let now = now_millis();
            assert!(now >= last, "coarse clock went back from {last} to {now}");
            last = now;
        }
    }
}
