//! The memory history behind the dashboard's memory chart: process RSS and allocator bytes,
//! sampled every [`MEMORY_SAMPLE_PERIOD`] by each gateway's metrics upkeep task (see
//! `telemetry::spawn_upkeep`) into a ring buffer that holds the last hour
//! ([`MEMORY_HISTORY_LEN`] samples) and drops the oldest sample when full.
//!
//! Memory belongs to the process, not to one gateway, so there is one history per process
//! ([`global`]); the admin listener serves it as `/admin/memory`.

use std::collections::VecDeque;
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::{Mutex, RwLock};
use serde::Serialize;

use crate::telemetry::{self, AllocatorStats};

/// Time between two memory samples.
pub const MEMORY_SAMPLE_PERIOD: Duration = Duration::from_secs(5);
/// Samples kept: one hour at [`MEMORY_SAMPLE_PERIOD`].
pub const MEMORY_HISTORY_LEN: usize = 720;

/// One reading of the process's memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MemorySample {
    /// When it was taken, in milliseconds since the Unix epoch.
    pub unix_ms: u64,
    /// Resident set size of the process (`None` where `/proc` is not available).
    pub rss_bytes: Option<u64>,
    /// Bytes the allocator has handed out and not had back (`None` without allocator stats).
    pub allocated_bytes: Option<u64>,
    /// Bytes of physical memory the allocator holds (`None` without allocator stats).
    pub allocator_resident_bytes: Option<u64>,
}

/// A bounded ring buffer of memory samples, taken at most once per period.
#[derive(Debug)]
pub struct MemoryHistory {
    period: Duration,
    capacity: usize,
    samples: Mutex<VecDeque<MemorySample>>,
    last_taken: Mutex<Option<Instant>>,
}

impl MemoryHistory {
    /// An empty history that keeps `capacity` samples (at least one), one per `period`.
    pub fn new(capacity: usize, period: Duration) -> Self {
        let capacity = capacity.max(1);
        MemoryHistory {
            period,
            capacity,
            samples: Mutex::new(VecDeque::with_capacity(capacity)),
            last_taken: Mutex::new(None),
        }
    }

    /// Adds a sample, dropping the oldest when full.
    pub fn push(&self, sample: MemorySample) {
        let mut samples = self.samples.lock();
        if samples.len() == self.capacity {
            samples.pop_front();
        }
        samples.push_back(sample);
    }

    /// Takes a sample with `take` when a period has passed since the last one (or there was
    /// none); called often, samples seldom. Returns whether it sampled.
    pub fn tick(&self, now: Instant, take: impl FnOnce() -> MemorySample) -> bool {
        {
            let mut last = self.last_taken.lock();
            if last.is_some_and(|t| now.saturating_duration_since(t) < self.period) {
                return false;
            }
            *last = Some(now);
        }
        self.push(take());
        true
    }

    /// The samples, oldest first.
    pub fn samples(&self) -> Vec<MemorySample> {
        self.samples.lock().iter().copied().collect()
    }

    /// Samples kept at most.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Time between samples.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// The `/admin/memory` document.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "period_ms": self.period.as_millis() as u64,
            "capacity": self.capacity,
            "samples": self.samples(),
        })
    }
}

/// The process's memory history.
pub fn global() -> &'static MemoryHistory {
    static HISTORY: OnceLock<MemoryHistory> = OnceLock::new();
    HISTORY.get_or_init(|| MemoryHistory::new(MEMORY_HISTORY_LEN, MEMORY_SAMPLE_PERIOD))
}

/// The allocator statistics the samples read, set by the binary that knows its allocator.
static ALLOCATOR: RwLock<Option<AllocatorStats>> = RwLock::new(None);

/// Makes the samples include allocator bytes.
pub fn set_allocator_stats(stats: AllocatorStats) {
    *ALLOCATOR.write() = Some(stats);
}

/// Reads the process's memory now.
pub fn sample_now() -> MemorySample {
    let allocator = ALLOCATOR.read().clone();
    let (allocated, resident) = match allocator.and_then(|f| f()) {
        Some((a, r)) => (Some(a), Some(r)),
        None => (None, None),
    };
    MemorySample {
        unix_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        rss_bytes: telemetry::process_rss_bytes(),
        allocated_bytes: allocated,
        allocator_resident_bytes: resident,
    }
}

/// Called by the metrics upkeep on every pass: samples the global history when due.
pub(crate) fn upkeep() {
    global().tick(Instant::now(), sample_now);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(n: u64) -> MemorySample {
        MemorySample {
            unix_ms: n,
            rss_bytes: Some(n),
            allocated_bytes: None,
            allocator_resident_bytes: None,
        }
    }

    #[test]
    fn the_ring_keeps_the_newest_samples() {
        let h = MemoryHistory::new(3, Duration::from_secs(5));
        for n in 0..5 {
            h.push(sample(n));
        }
        let kept: Vec<u64> = h.samples().iter().map(|s| s.unix_ms).collect();
        assert_eq!(kept, vec![2, 3, 4]);
    }

    #[test]
    fn ticks_sample_once_per_period() {
        let h = MemoryHistory::new(10, Duration::from_secs(5));
        let t0 = Instant::now();
        let mut n = 0;
        let mut take = || {
            n += 1;
            sample(n)
        };
        assert!(h.tick(t0, &mut take));
        assert!(!h.tick(t0 + Duration::from_secs(1), &mut take));
        assert!(!h.tick(t0 + Duration::from_millis(4999), &mut take));
        assert!(h.tick(t0 + Duration::from_secs(5), &mut take));
        assert_eq!(h.samples().len(), 2);
    }

    #[test]
    fn a_real_sample_reads_rss() {
        let s = sample_now();
        assert!(s.unix_ms > 0);
        if cfg!(target_os = "linux") {
            assert!(s.rss_bytes.unwrap() > 0);
        }
        let doc = global().to_json();
        assert_eq!(doc["capacity"], MEMORY_HISTORY_LEN);
    }
}
