//! How an attempt's result counts: for the instance's health and the breakers ([`verdict`]), and
//! whether it may be retried ([`retry_reason`]).

use tideway_rpc::{RpcError, Status};

use crate::metrics::RetryReason;

/// What an attempt says about the instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// It answered: a result, or an error about the call itself (bad argument, not found, ...).
    Success,
    /// It could not serve the call: unreachable, refused, overloaded, too slow, or failed
    /// (the statuses a gateway turns into 5xx).
    Failure,
    /// Nothing about the instance: the call was refused locally for what it is, or cancelled.
    Neutral,
}

pub(crate) fn verdict(err: &RpcError) -> Verdict {
    match err.status() {
        Status::Unavailable
        | Status::Overloaded
        | Status::DeadlineExceeded
        | Status::Internal
        | Status::Unknown => Verdict::Failure,
        Status::Cancelled => Verdict::Neutral,
        // Refused before sending (a request over the frame limit): the instance never saw it.
        _ if err.is_retry_safe() => Verdict::Neutral,
        _ => Verdict::Success,
    }
}

/// Why the attempt may be sent again (to another instance), or `None` when it must not be:
/// only when the instance certainly did not run it, or refused it, or when the call is
/// idempotent and its connection was lost.
pub(crate) fn retry_reason(err: &RpcError, idempotent: bool) -> Option<RetryReason> {
    match err.status() {
        Status::Overloaded => Some(RetryReason::Overloaded),
        Status::Unavailable if err.is_retry_safe() => Some(RetryReason::NotSent),
        Status::Unavailable if err.is_connection_lost() => {
            idempotent.then_some(RetryReason::ConnectionLost)
        }
        // The instance answered Unavailable: by the protocol it did not serve the call.
        Status::Unavailable => Some(RetryReason::Unavailable),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_safe_attempts_are_retried() {
        let refused = RpcError::overloaded("full");
        assert_eq!(retry_reason(&refused, false), Some(RetryReason::Overloaded));
        let answered = RpcError::unavailable("shutting down");
        assert_eq!(
            retry_reason(&answered, false),
            Some(RetryReason::Unavailable)
        );
        for status in [
            Status::DeadlineExceeded,
            Status::Internal,
            Status::InvalidArgument,
            Status::NotFound,
        ] {
            let err = RpcError::new(status, "x");
            assert_eq!(retry_reason(&err, false), None, "{status}");
            assert_eq!(retry_reason(&err, true), None, "{status}");
        }
    }

    #[test]
    fn verdicts_follow_the_gateway_5xx_line() {
        assert_eq!(verdict(&RpcError::not_found("x")), Verdict::Success);
        assert_eq!(verdict(&RpcError::invalid_argument("x")), Verdict::Success);
        assert_eq!(verdict(&RpcError::internal("x")), Verdict::Failure);
        assert_eq!(verdict(&RpcError::deadline_exceeded("x")), Verdict::Failure);
        assert_eq!(verdict(&RpcError::unavailable("x")), Verdict::Failure);
        assert_eq!(verdict(&RpcError::cancelled("x")), Verdict::Neutral);
    }
}
