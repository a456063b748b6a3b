//! Tideway's traffic management for RPC services: a [`Cluster`] per service spreads calls over
//! the service's instances and keeps answering when some are slow, dying or restarting.
//!
//! # How the pieces fit
//!
//! A [`Cluster`] holds one [`tideway_rpc::Client`] per instance (an endpoint), replaced as a
//! set by [`Cluster::update_endpoints`] (endpoints that stay keep their state; removed ones
//! drain). [`Cluster::call`] runs the call path, drawn in `cluster.rs`:
//!
//! - **Service breaker** (`breaker.rs`): a failure rate over a sliding window (`window.rs`)
//!   opens it; open, calls fail at once; after the ejection time one probe call decides.
//! - **Pick** (`balance.rs`): p2c over PeakEWMA (`ewma.rs`, the default), round robin, random,
//!   smooth weighted round robin with slow start, or weighted rendezvous hashing on a key
//!   ([`Balancer`]). Only available endpoints are candidates; when none is, the call waits for a
//!   change, at most `fail_fast_after` (1 s) and its deadline, among a bounded number of
//!   waiters, then fails with `Unavailable`.
//! - **Health** (`endpoint.rs`): per instance, consecutive failures or a failure rate eject it
//!   for an exponential, jittered time (1 s to 60 s, `backoff.rs`); then one probe call readmits
//!   or re-ejects it. A GoAway from the instance (surfaced by the RPC client) or its removal
//!   drains it: no new calls while its calls in flight finish. The RPC client's keep-alive pings
//!   close silent connections and its reconnect backoff marks unreachable instances; the
//!   cluster reads both instead of probing on its own.
//! - **Retries** (`outcome.rs`, `budget.rs`): only when safe (not sent, refused, `Unavailable`
//!   answered, or a lost connection of an idempotent call), on another instance, after a
//!   jittered delay, within a retry budget (20 % of calls + 10/s over 10 s), never past the
//!   deadline. Idempotent calls may be hedged ([`HedgeConfig`]).
//! - **Errors** ([`ClusterError`]): the RPC status to answer with, the attempts made, and
//!   whether every attempt failed (when a route's fallback applies).
//! - **Observability**: every decision is counted ([`metrics`], [`ClusterStats`]);
//!   [`Cluster::endpoints`] and [`Cluster::status`] feed an admin API.
//!
//! [`Clusters`] maps service names to clusters for a gateway.
//!
//! # Example
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use tideway_cluster::{CallPolicy, Cluster, ClusterConfig, EndpointSpec};
//! use tideway_rpc::{CallOptions, ClientConfig, Codec};
//!
//! let cluster = Arc::new(Cluster::new(
//!     "logistics.Waybills",
//!     ClusterConfig::default(),
//!     ClientConfig::default(),
//! )?);
//! cluster.update_endpoints(&[
//!     EndpointSpec::new("wb-1", "10.0.0.5:7001".parse()?),
//!     EndpointSpec::new("wb-2", "10.0.0.6:7001".parse()?),
//! ]);
//! let options = CallOptions::with_timeout(std::time::Duration::from_secs(2));
//! let policy = CallPolicy { idempotent: true, ..Default::default() };
//! let reply = cluster
//!     .call("logistics.Waybills/get", Codec::Json, r#"{"id":"WB1"}"#.into(), &options, &policy)
//!     .await;
//! match reply {
//!     Ok(body) => println!("{}", String::from_utf8_lossy(&body)),
//!     Err(e) if e.every_attempt_failed() => println!("use the fallback: {e}"),
//!     Err(e) => println!("{}: {e}", e.status()),
//! }
//! # Ok(()) }
//! ```
//!
//! # Cancel safety
//!
//! Dropping a [`Cluster::call`] future at any await point is safe: attempts in flight are
//! cancelled (the RPC client sends Cancel), and in-flight counts, probes, breaker permits and
//! waiting slots are released by guards.

mod backoff;
mod balance;
mod breaker;
mod budget;
mod cluster;
mod clusters;
pub mod config;
mod endpoint;
mod error;
mod ewma;
pub mod metrics;
mod outcome;
mod status;
mod window;

pub use cluster::{CallPolicy, Cluster};
pub use clusters::Clusters;
pub use config::{
    Balancer, BreakerConfig, ClusterConfig, ConfigError, HashKey, HedgeConfig, OutlierConfig,
    RetryConfig,
};
pub use endpoint::EndpointSpec;
pub use error::{ClusterError, ClusterErrorKind};
pub use status::{BreakerState, ClusterStats, ClusterStatus, EndpointState, EndpointStatus};
