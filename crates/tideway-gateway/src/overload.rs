//! The overload manager: keeps the gateway inside its memory budget.
//!
//! A task samples memory (the allocator's resident bytes when the binary reports them, else the
//! process RSS) every [`SAMPLE_PERIOD`] and sets a [`Pressure`] level:
//!
//! ```text
//!            used < low                  low <= used < high              used >= high
//!  Normal ───────────────── Elevated ─────────────────────── Shedding
//!                            close idle connections,         + refuse new requests (503),
//!                            shorten new requests' deadlines  not ready
//! ```
//!
//! Leaving `Shedding` needs `used < low` (hysteresis), so the level does not flap at the high
//! watermark. Nothing is ever queued to wait for memory: work is refused at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How often memory is sampled.
pub const SAMPLE_PERIOD: Duration = Duration::from_millis(100);
/// Fraction of the budget at which new requests are refused.
pub const HIGH_WATERMARK: f64 = 0.9;
/// Fraction of the budget at which idle connections are closed and deadlines shortened; also the
/// level shedding must fall below to stop.
pub const LOW_WATERMARK: f64 = 0.8;
/// Deadline given to new requests under elevated pressure, when their route's is longer.
pub const ELEVATED_DEADLINE: Duration = Duration::from_secs(2);

/// How close the gateway is to its memory budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Pressure {
    /// Below the low watermark.
    Normal = 0,
    /// Between the watermarks: idle connections are closed, deadlines shortened.
    Elevated = 1,
    /// Above the high watermark: new requests are refused.
    Shedding = 2,
}

impl Pressure {
    fn from_u8(v: u8) -> Pressure {
        match v {
            0 => Pressure::Normal,
            1 => Pressure::Elevated,
            _ => Pressure::Shedding,
        }
    }

    /// The next level for a sample, given the current one.
    pub fn next(self, used: u64, budget: u64) -> Pressure {
        let fraction = used as f64 / budget as f64;
        if fraction >= HIGH_WATERMARK {
            Pressure::Shedding
        } else if fraction >= LOW_WATERMARK {
            // Hysteresis: shedding continues until memory falls below the low watermark.
            if self == Pressure::Shedding {
                Pressure::Shedding
            } else {
                Pressure::Elevated
            }
        } else {
            Pressure::Normal
        }
    }

    /// Lower-case name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Pressure::Normal => "normal",
            Pressure::Elevated => "elevated",
            Pressure::Shedding => "shedding",
        }
    }
}

/// Reads how many bytes the gateway uses now.
pub type MemorySampler = Arc<dyn Fn() -> Option<u64> + Send + Sync>;

/// The current pressure level, shared with request handlers and connections.
#[derive(Debug)]
pub struct OverloadState {
    budget: Option<u64>,
    level: AtomicU8,
    last_used: AtomicU64,
    /// Bytes reserved now by requests buffering bodies and waiting on RPC calls, and by RPC
    /// replies not yet handed to the client connection.
    held: AtomicU64,
    changes: watch::Sender<Pressure>,
}

/// Bytes a request holds against the budget; released on drop, on every path.
#[derive(Debug)]
pub struct HeldBytes {
    state: Arc<OverloadState>,
    bytes: u64,
}

impl Drop for HeldBytes {
    fn drop(&mut self) {
        self.state.held.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

impl OverloadState {
    /// A state for this budget (`None`: no budget, always normal).
    pub fn new(budget: Option<u64>) -> Self {
        OverloadState {
            budget,
            level: AtomicU8::new(Pressure::Normal as u8),
            last_used: AtomicU64::new(0),
            held: AtomicU64::new(0),
            changes: watch::channel(Pressure::Normal).0,
        }
    }

    /// The level now.
    pub fn pressure(&self) -> Pressure {
        Pressure::from_u8(self.level.load(Ordering::Relaxed))
    }

    /// The budget in bytes.
    pub fn budget(&self) -> Option<u64> {
        self.budget
    }

    /// Bytes used at the last sample.
    pub fn last_used(&self) -> u64 {
        self.last_used.load(Ordering::Relaxed)
    }

    /// Bytes reserved now by requests (buffered bodies and the RPC calls carrying them).
    pub fn held(&self) -> u64 {
        self.held.load(Ordering::Relaxed)
    }

    /// Counts `bytes` already in memory (an RPC reply on its way to the client) without
    /// refusing: refusing would only throw away finished work. They raise the projection that
    /// later reservations are checked against.
    pub fn hold(self: &Arc<Self>, bytes: u64) -> HeldBytes {
        self.held.fetch_add(bytes, Ordering::Relaxed);
        HeldBytes {
            state: Arc::clone(self),
            bytes,
        }
    }

    /// Reserves `bytes` before they are buffered. Refused (`None`) when the last memory sample
    /// plus everything reserved since plus `bytes` would pass the high watermark, so a burst of
    /// large bodies is refused before it is read rather than noticed at the next sample. Counts
    /// without refusing when there is no budget.
    pub fn try_hold(self: &Arc<Self>, bytes: u64) -> Option<HeldBytes> {
        let mut held = self.held.load(Ordering::Relaxed);
        loop {
            if let Some(budget) = self.budget {
                let ceiling = (budget as f64 * HIGH_WATERMARK) as u64;
                let projected = self.last_used().saturating_add(held).saturating_add(bytes);
                if projected > ceiling {
                    return None;
                }
            }
            match self.held.compare_exchange_weak(
                held,
                held + bytes,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    return Some(HeldBytes {
                        state: Arc::clone(self),
                        bytes,
                    });
                }
                Err(actual) => held = actual,
            }
        }
    }

    /// Level changes, for connections that wait (parked ones close on pressure).
    pub fn subscribe(&self) -> watch::Receiver<Pressure> {
        self.changes.subscribe()
    }

    /// Applies one sample.
    pub fn record(&self, used: u64) {
        let Some(budget) = self.budget else { return };
        self.last_used.store(used, Ordering::Relaxed);
        let before = self.pressure();
        let after = before.next(used, budget);
        if after != before {
            self.level.store(after as u8, Ordering::Relaxed);
            self.changes.send_replace(after);
            if after > before {
                tracing::warn!(
                    used,
                    budget,
                    from = before.as_str(),
                    to = after.as_str(),
                    "memory pressure rising"
                );
            } else {
                tracing::info!(
                    used,
                    budget,
                    from = before.as_str(),
                    to = after.as_str(),
                    "memory pressure easing"
                );
            }
        }
    }

    /// Samples memory every [`SAMPLE_PERIOD`] until `stop` is cancelled. Does nothing without a
    /// budget.
    pub fn spawn_sampler(self: &Arc<Self>, sampler: MemorySampler, stop: CancellationToken) {
        if self.budget.is_none() {
            return;
        }
        let state = Arc::clone(self);
        crate::telemetry::spawn_every(SAMPLE_PERIOD, stop, move || {
            if let Some(used) = sampler() {
                state.record(used);
            }
        });
    }
}

/// Parses a size: a number of bytes, or a number with a unit (`KiB`, `MiB`, `GiB`, `KB`, `MB`,
/// `GB`, `B`), e.g. `"256MiB"`. Written here because it is ten lines; a crate would add more.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size like \"256MiB\""))?;
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => {
            return Err(format!(
                "unknown size unit {other:?} (use B, KiB, MiB, GiB, KB, MB, GB)"
            ));
        }
    };
    Ok((number * factor as f64) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_follow_the_watermarks_with_hysteresis() {
        let s = OverloadState::new(Some(1000));
        let mut changes = s.subscribe();
        s.record(500);
        assert_eq!(s.pressure(), Pressure::Normal);
        s.record(850);
        assert_eq!(s.pressure(), Pressure::Elevated);
        s.record(950);
        assert_eq!(s.pressure(), Pressure::Shedding);
        assert!(changes.has_changed().unwrap());
        assert_eq!(*changes.borrow_and_update(), Pressure::Shedding);
        // Between the watermarks: still shedding.
        s.record(850);
        assert_eq!(s.pressure(), Pressure::Shedding);
        s.record(700);
        assert_eq!(s.pressure(), Pressure::Normal);
        assert_eq!(s.last_used(), 700);
    }

    #[test]
    fn holds_are_refused_past_the_high_watermark_and_released_on_drop() {
        let s = Arc::new(OverloadState::new(Some(1000)));
        s.record(500);
        let a = s.try_hold(300).expect("500 + 300 <= 900");
        assert!(s.try_hold(101).is_none(), "500 + 300 + 101 > 900");
        let b = s.try_hold(100).expect("exactly at the watermark");
        assert_eq!(s.held(), 400);
        drop(a);
        drop(b);
        assert_eq!(s.held(), 0);
        let unbudgeted = Arc::new(OverloadState::new(None));
        let big = unbudgeted
            .try_hold(u64::MAX / 2)
            .expect("no budget: counted only");
        assert_eq!(unbudgeted.held(), u64::MAX / 2);
        drop(big);
    }

    #[test]
    fn without_a_budget_nothing_changes() {
        let s = OverloadState::new(None);
        s.record(u64::MAX);
        assert_eq!(s.pressure(), Pressure::Normal);
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("256MiB"), Ok(256 << 20));
        assert_eq!(parse_size("1.5 GiB"), Ok(3 << 29));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert_eq!(parse_size("2MB"), Ok(2_000_000));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("5 parsecs").is_err());
    }
}
