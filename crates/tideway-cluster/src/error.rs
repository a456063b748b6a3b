//! The one error of [`Cluster::call`](crate::Cluster::call): what kind of failure, the
//! [`RpcError`] to map to a response, and how many attempts were made.

use std::fmt;

use tideway_rpc::{RpcError, Status};

/// Why a call through the cluster failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClusterErrorKind {
    /// No endpoint could take the call within the fail-fast time (or the deadline): none
    /// registered, or every one ejected, draining or unreachable. No attempt, or none after
    /// the failed ones. Status `Unavailable`.
    NoEndpoint,
    /// The service's circuit breaker is open. No attempt. Status `Unavailable`.
    BreakerOpen,
    /// Too many calls were already waiting for an endpoint. No attempt. Status `Overloaded`.
    WaitQueueFull,
    /// Every attempt failed for availability reasons (unreachable, refused, overloaded, timed
    /// out, lost, internal error) and no retry was left (not safe, attempts, budget or
    /// deadline). The status is the last attempt's.
    Exhausted,
    /// The instance answered with an error about the call itself (invalid argument, not found,
    /// permission denied, ...), or the call was refused locally for what it is (too large):
    /// an answer, passed through, not an outage.
    Rejected,
}

impl ClusterErrorKind {
    /// A stable name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            ClusterErrorKind::NoEndpoint => "no_endpoint",
            ClusterErrorKind::BreakerOpen => "breaker_open",
            ClusterErrorKind::WaitQueueFull => "wait_queue_full",
            ClusterErrorKind::Exhausted => "exhausted",
            ClusterErrorKind::Rejected => "rejected",
        }
    }
}

impl fmt::Display for ClusterErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed call through a [`Cluster`](crate::Cluster).
///
/// Map the response from [`status`](Self::status) (the same table as any RPC error). Use a
/// route's fallback when [`every_attempt_failed`](Self::every_attempt_failed): the service
/// could not answer at all, as opposed to answering with an error.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{kind} after {attempts} attempt(s): {error}")]
pub struct ClusterError {
    kind: ClusterErrorKind,
    error: RpcError,
    attempts: u32,
}

impl ClusterError {
    pub(crate) fn new(kind: ClusterErrorKind, error: RpcError, attempts: u32) -> Self {
        ClusterError {
            kind,
            error,
            attempts,
        }
    }

    /// What kind of failure.
    pub fn kind(&self) -> ClusterErrorKind {
        self.kind
    }

    /// The status to answer with.
    pub fn status(&self) -> Status {
        self.error.status()
    }

    /// The last attempt's error, or the cluster's own (no endpoint, breaker open, queue full).
    pub fn rpc_error(&self) -> &RpcError {
        &self.error
    }

    /// The error, for code that handles [`RpcError`]s.
    pub fn into_rpc_error(self) -> RpcError {
        self.error
    }

    /// Attempts made: first, retries and hedges. Zero when the call was refused before any.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Whether the service could not answer at all: no endpoint, breaker open, queue full, or
    /// every attempt failed. False when an instance answered with an error about the call
    /// (`Rejected`). This is when a route's fallback response applies.
    pub fn every_attempt_failed(&self) -> bool {
        self.kind != ClusterErrorKind::Rejected
    }
}

impl From<ClusterError> for RpcError {
    fn from(err: ClusterError) -> Self {
        err.error
    }
}
