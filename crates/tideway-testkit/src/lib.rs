//! Test helpers shared by Tideway's crates (a dev-dependency only, never published): real etcd
//! servers on ephemeral ports, child processes that die with the test, a tiny HTTP client and
//! bounded waits.
//!
//! # Pieces
//!
//! - [`EtcdServer`] and [`EtcdCluster`] (`etcd.rs`): Debian's `etcd` (3.4) started on
//!   127.0.0.1 with ephemeral client and peer ports and a temporary data dir; one member, or a
//!   cluster of several bootstrapped with `--initial-cluster`. Members are stopped by process id
//!   (SIGKILL) and can be started again on the same ports and data dir. Health is read from
//!   etcd's `/health` endpoint, the leader from `/v3/maintenance/status`, so this crate needs no
//!   etcd client library (and no `protoc`).
//! - [`Process`] (`process.rs`): a child process killed (by pid) and reaped when dropped, with
//!   its stdout read line by line in the background and its stderr kept in a file for failure
//!   messages.
//! - [`http`]: a blocking HTTP/1.1 client for one request per connection, enough to call a
//!   gateway and read `/metrics`.
//! - [`corpus`]: fuzz seed corpora replayed, and mutated, in `cargo test`.
//! - [`free_port`], [`eventually`], [`poll_until`]: ports and bounded waits. Never a fixed sleep
//!   standing in for a condition.
//!
//! Everything is blocking and uses only `std`. An async test on a multi-thread runtime may call
//! it from its body: `#[tokio::test]` runs the body with `block_on` on the test's own thread,
//! not on a worker, so the tasks under test keep running.

pub mod corpus;
mod etcd;
pub mod http;
mod process;

use std::net::TcpListener;
use std::time::{Duration, Instant};

pub use etcd::{EtcdCluster, EtcdServer};
pub use process::Process;

/// How often [`eventually`] checks its condition.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// A port on 127.0.0.1 that was free a moment ago (bound to port 0, then released). Another
/// process may take it before it is used: callers that bind it retry with another one.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// Calls `check` every `interval` until it returns `Some`, at most `timeout`; `None` on
/// timeout. `check` runs at least once, and once more at the deadline.
pub fn poll_until<T>(
    timeout: Duration,
    interval: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        std::thread::sleep(interval.min(deadline - now));
    }
}

/// Polls `check` every [`POLL_INTERVAL`] until it returns `Some`, at most `timeout`; panics
/// naming `what` otherwise.
pub fn eventually<T>(timeout: Duration, what: &str, check: impl FnMut() -> Option<T>) -> T {
    poll_until(timeout, POLL_INTERVAL, check)
        .unwrap_or_else(|| panic!("timed out after {timeout:?} waiting for {what}"))
}
