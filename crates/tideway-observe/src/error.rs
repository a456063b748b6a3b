//! The one error type of this crate.

/// What could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ObserveError {
    /// The span exporter could not be built, flushed or stopped.
    #[error("tracing: {0}")]
    Tracing(String),
    /// The access log output could not be opened or its writer started.
    #[error("access log: {0}")]
    AccessLog(String),
}
