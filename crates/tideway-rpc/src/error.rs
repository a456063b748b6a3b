//! The one error type of calls, on both sides of the wire.

use std::fmt;

use tideway_wire::{CodecError, Status};

/// A failed call: a [`Status`] saying what kind of failure, and a message for humans.
///
/// Service methods return it; clients receive it. Transport failures are mapped onto the same
/// statuses (a lost connection is [`Status::Unavailable`], a local limit [`Status::Overloaded`]),
/// so callers handle one type. [`RpcError::is_retry_safe`] says whether the callee certainly did
/// no work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct RpcError {
    status: Status,
    message: String,
}

impl fmt::Display for RpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.status, self.message)
    }
}

impl RpcError {
    /// An error with the given status. `Status::Ok` is not an error and becomes `Unknown`.
    pub fn new(status: Status, message: impl Into<String>) -> Self {
        let status = if status == Status::Ok {
            Status::Unknown
        } else {
            status
        };
        RpcError {
            status,
            message: message.into(),
        }
    }

    /// The status.
    pub fn status(&self) -> Status {
        self.status
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The caller sent bad arguments. Name the field in the message.
    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new(Status::InvalidArgument, message)
    }

    /// The named entity does not exist.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(Status::NotFound, message)
    }

    /// A broken invariant on the callee's side.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(Status::Internal, message)
    }

    /// The callee cannot be reached (or is going away).
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(Status::Unavailable, message)
    }

    /// A limit was reached and the call was refused without doing any work.
    pub fn overloaded(message: impl Into<String>) -> Self {
        Self::new(Status::Overloaded, message)
    }

    /// The deadline passed.
    pub fn deadline_exceeded(message: impl Into<String>) -> Self {
        Self::new(Status::DeadlineExceeded, message)
    }

    /// The call was cancelled.
    pub fn cancelled(message: impl Into<String>) -> Self {
        Self::new(Status::Cancelled, message)
    }

    /// Whether the callee certainly did not act on the call, so sending it again (to the same or
    /// another instance) cannot apply it twice.
    pub fn is_retry_safe(&self) -> bool {
        matches!(self.status, Status::Overloaded) || self.message.starts_with(NOT_SENT_PREFIX)
    }

    /// Whether the connection died after the request was written and before its answer came:
    /// the callee may or may not have acted on the call, so only an idempotent call may be sent
    /// again. (The status is [`Status::Unavailable`].)
    pub fn is_connection_lost(&self) -> bool {
        self.message.starts_with(CONNECTION_LOST_PREFIX)
    }

    /// An error for a call whose connection died after the request was written.
    pub(crate) fn connection_lost(why: impl fmt::Display) -> Self {
        Self::new(
            Status::Unavailable,
            format!("{CONNECTION_LOST_PREFIX}{why}"),
        )
    }

    /// An error for a call that never left this process (no connection, queue full).
    pub(crate) fn not_sent(status: Status, why: impl fmt::Display) -> Self {
        Self::new(status, format!("{NOT_SENT_PREFIX}{why}"))
    }

    /// Arguments that could not be decoded.
    pub fn from_decode_error(err: CodecError) -> Self {
        Self::invalid_argument(format!("bad arguments: {err}"))
    }

    /// A result that could not be encoded.
    pub fn from_encode_error(err: CodecError) -> Self {
        Self::internal(format!("cannot encode result: {err}"))
    }
}

/// Messages of errors raised before a call was written start with this, which is how
/// [`RpcError::is_retry_safe`] knows the callee never saw them.
const NOT_SENT_PREFIX: &str = "not sent: ";
/// Messages of errors raised when a connection died with the call in flight start with this
/// ([`RpcError::is_connection_lost`]).
const CONNECTION_LOST_PREFIX: &str = "connection lost: ";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ok_is_never_an_error_status() {
        assert_eq!(RpcError::new(Status::Ok, "x").status(), Status::Unknown);
    }

    #[test]
    fn only_unsent_or_refused_calls_are_retry_safe() {
        assert!(RpcError::overloaded("full").is_retry_safe());
        assert!(RpcError::not_sent(Status::Unavailable, "connect refused").is_retry_safe());
        assert!(!RpcError::unavailable("connection lost").is_retry_safe());
        let lost = RpcError::connection_lost("peer reset");
        assert!(lost.is_connection_lost() && !lost.is_retry_safe());
        assert_eq!(lost.status(), Status::Unavailable);
        assert!(!RpcError::unavailable("server busy").is_connection_lost());
        assert!(!RpcError::deadline_exceeded("late").is_retry_safe());
    }
}
