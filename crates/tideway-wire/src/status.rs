//! The status code carried by every response.

use std::fmt;

/// Outcome of a call, carried in every [`Response`](crate::Response).
///
/// Numbering follows gRPC's codes where a code exists there, so that operators who know gRPC
/// read them without a table. [`Status::Overloaded`] takes gRPC's `RESOURCE_EXHAUSTED` slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
#[non_exhaustive]
pub enum Status {
    /// The call succeeded; the response carries a payload.
    Ok = 0,
    /// The caller cancelled the call.
    Cancelled = 1,
    /// An error with no better code.
    Unknown = 2,
    /// The arguments were malformed or failed validation (caller's fault; do not retry).
    InvalidArgument = 3,
    /// The deadline passed before the callee answered.
    DeadlineExceeded = 4,
    /// The method, or the entity the call named, does not exist.
    NotFound = 5,
    /// The entity the call tried to create exists already.
    AlreadyExists = 6,
    /// The caller is known but not allowed to do this.
    PermissionDenied = 7,
    /// The callee refused the call because a limit was reached; it did no work, so a retry
    /// elsewhere or later is safe.
    Overloaded = 8,
    /// The system is not in a state in which the call can run.
    FailedPrecondition = 9,
    /// The callee failed; a bug or a broken invariant.
    Internal = 13,
    /// The callee could not be reached or is shutting down; the call may be retried.
    Unavailable = 14,
    /// The caller did not prove who it is.
    Unauthenticated = 16,
}

impl Status {
    /// Every status, in code order.
    pub const ALL: [Status; 13] = [
        Status::Ok,
        Status::Cancelled,
        Status::Unknown,
        Status::InvalidArgument,
        Status::DeadlineExceeded,
        Status::NotFound,
        Status::AlreadyExists,
        Status::PermissionDenied,
        Status::Overloaded,
        Status::FailedPrecondition,
        Status::Internal,
        Status::Unavailable,
        Status::Unauthenticated,
    ];

    /// The status for a code read off the wire, or `None` for a code this version does not know.
    pub fn from_code(code: u8) -> Option<Status> {
        Status::ALL.into_iter().find(|s| *s as u8 == code)
    }

    /// The wire code of this status.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// A stable, machine-readable name (`snake_case`), used in logs, metrics and JSON errors.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Cancelled => "cancelled",
            Status::Unknown => "unknown",
            Status::InvalidArgument => "invalid_argument",
            Status::DeadlineExceeded => "deadline_exceeded",
            Status::NotFound => "not_found",
            Status::AlreadyExists => "already_exists",
            Status::PermissionDenied => "permission_denied",
            Status::Overloaded => "overloaded",
            Status::FailedPrecondition => "failed_precondition",
            Status::Internal => "internal",
            Status::Unavailable => "unavailable",
            Status::Unauthenticated => "unauthenticated",
        }
    }

    /// The HTTP status a gateway answers with for this RPC status.
    pub fn http_status(self) -> u16 {
        match self {
            Status::Ok => 200,
            Status::Cancelled => 499,
            Status::Unknown | Status::Internal => 500,
            Status::InvalidArgument => 400,
            Status::DeadlineExceeded => 504,
            Status::NotFound => 404,
            Status::AlreadyExists => 409,
            Status::PermissionDenied => 403,
            Status::Overloaded | Status::Unavailable => 503,
            Status::FailedPrecondition => 412,
            Status::Unauthenticated => 401,
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_unknown_codes_are_rejected() {
        for s in Status::ALL {
            assert_eq!(Status::from_code(s.code()), Some(s));
        }
        let known: Vec<u8> = Status::ALL.iter().map(|s| s.code()).collect();
        for code in 0..=u8::MAX {
            assert_eq!(Status::from_code(code).is_some(), known.contains(&code));
        }
    }
}
