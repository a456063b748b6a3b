//! The crate's errors: [`RegistryError`] for every operation, [`ValidationError`] for an instance
//! that cannot be registered, [`FileError`] for a registry file that cannot be used.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// A boxed error from a backend's client library.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why an instance cannot be registered (or was skipped when read back from a backend). Caused by
/// the caller or by whoever wrote the record; retrying the same data fails the same way.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ValidationError {
    /// A required text field is empty.
    #[error("{field} is empty")]
    Empty {
        /// The field, e.g. `service`.
        field: &'static str,
    },
    /// A text field is longer than [`MAX_NAME_LEN`](crate::MAX_NAME_LEN).
    #[error("{field} is {len} bytes long, more than {max}")]
    TooLong {
        /// The field.
        field: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A name has a character that is not allowed (it would break the etcd key layout or logs).
    #[error("{field} {value:?} may only have ASCII letters, digits, '.', '_', '-' and ':'")]
    BadName {
        /// The field, `service` or `id`.
        field: &'static str,
        /// The value.
        value: String,
    },
    /// A free-text field (zone, version, tag) has a control character.
    #[error("{field} {value:?} has a control character")]
    ControlCharacter {
        /// The field.
        field: &'static str,
        /// The value.
        value: String,
    },
    /// Weight 0: the instance would never be picked; deregister it instead.
    #[error("weight is 0; weights are 1..={max}", max = crate::MAX_WEIGHT)]
    ZeroWeight,
    /// Weight above [`MAX_WEIGHT`](crate::MAX_WEIGHT).
    #[error("weight {0} is above {max}", max = crate::MAX_WEIGHT)]
    WeightTooLarge(u32),
    /// `0.0.0.0` or `::`: a listening address, not one a gateway can connect to.
    #[error("address {0} is unspecified; register an address clients can reach")]
    UnspecifiedAddress(SocketAddr),
    /// Port 0.
    #[error("address {0} has port 0")]
    ZeroPort(SocketAddr),
    /// A list is longer than its limit.
    #[error("{field} has {count} entries, more than {max}")]
    TooMany {
        /// The list, e.g. `tags`.
        field: &'static str,
        /// Its length.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A route is malformed.
    #[error("route {route:?}: {reason}")]
    Route {
        /// The route's method name (or full name).
        route: String,
        /// What is wrong.
        reason: String,
    },
    /// The JSON encoding is larger than [`MAX_INSTANCE_JSON_BYTES`](crate::MAX_INSTANCE_JSON_BYTES).
    #[error("the instance encodes to {len} bytes, more than {max}")]
    TooLarge {
        /// Encoded length.
        len: usize,
        /// The limit.
        max: usize,
    },
}

/// A registry file that cannot be used: unreadable, too large, or not parsable. The registry
/// keeps serving the last good state. `line` and `column` are 1-based; 0 when the problem has no
/// position (the file is missing, say).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct FileError {
    /// The file.
    pub path: PathBuf,
    /// Line of the problem, from 1; 0 when unknown.
    pub line: usize,
    /// Column of the problem, from 1; 0 when unknown.
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// What went wrong in a registry operation. [`RegistryError::is_retryable`] says whether the same
/// call may succeed later.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// The instance is invalid (caller's fault; not retryable).
    #[error("invalid instance: {0}")]
    Invalid(#[from] ValidationError),
    /// A setting cannot work (caller's fault; not retryable).
    #[error("invalid registry setting {field}: {reason}")]
    Config {
        /// The setting.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The backend does not take registrations (the file backend: edit the file instead).
    #[error("the {backend} registry is read-only")]
    ReadOnly {
        /// `file`.
        backend: &'static str,
    },
    /// The registry file cannot be used; the last good state is still served.
    #[error("registry file {0}")]
    File(FileError),
    /// The backend could not be reached or failed the request (retryable).
    #[error("{backend} registry: {op} failed: {source}")]
    Unavailable {
        /// `etcd`, ...
        backend: &'static str,
        /// The operation, e.g. `watch`.
        op: &'static str,
        /// The client library's error.
        #[source]
        source: BoxError,
    },
    /// The backend did not answer in time (retryable).
    #[error("{backend} registry: {op} timed out after {after:?}")]
    Timeout {
        /// `etcd`, ...
        backend: &'static str,
        /// The operation.
        op: &'static str,
        /// The deadline that passed.
        after: Duration,
    },
    /// The registry was dropped; its watch streams end with this.
    #[error("the {backend} registry is closed")]
    Closed {
        /// `embedded`, `file`, `etcd`.
        backend: &'static str,
    },
    /// The backend is not compiled in (enable the crate feature of that name).
    #[error("the {0} registry backend is not compiled in; enable tideway-registry's `{0}` feature")]
    NotCompiled(&'static str),
}

impl RegistryError {
    /// Whether the same call may succeed later: the backend was unreachable, slow, or the file
    /// may be fixed. Invalid input and settings fail the same way every time.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            RegistryError::Unavailable { .. }
                | RegistryError::Timeout { .. }
                | RegistryError::File(_)
        )
    }
}
