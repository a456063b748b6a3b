//! Server and client settings. Every default is a named const with the reason for its value;
//! `validate` rejects zero and absurd values before anything starts.

use std::time::Duration;

use tideway_wire::{Codec, DEFAULT_MAX_FRAME_LEN, FRAME_HEADER_LEN, MAX_FRAME_LEN_CEILING};

/// Calls one connection may have in flight: tarpc's default. Past it the server answers
/// `Overloaded` at once and the client refuses locally.
pub const DEFAULT_MAX_IN_FLIGHT_PER_CONNECTION: usize = 1024;
/// Calls the whole server may run at once (ARCHITECTURE.md: 10,000 then shed).
pub const DEFAULT_MAX_IN_FLIGHT_TOTAL: usize = 10_000;
/// Connections the kernel queues for the accept loop (std and mio use 128, which drops SYNs when
/// many clients connect at once; the kernel caps it at `net.core.somaxconn`).
pub const DEFAULT_LISTEN_BACKLOG: u32 = 4096;
/// Connections the server keeps open at once; more are closed on accept.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Deadline for a request that arrives without one, and the client's default timeout (tarpc).
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(10);
/// Longest deadline the server honours; a caller cannot pin a handler for longer.
pub const DEFAULT_MAX_DEADLINE: Duration = Duration::from_secs(300);
/// How long graceful shutdown lets in-flight calls finish after GoAway.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Frames queued for one connection's writer. Senders wait (within their deadline) when it is
/// full, which is the backpressure of a peer that does not read.
pub const DEFAULT_WRITE_QUEUE_CAPACITY: usize = 1024;
/// Connections the client opens to one endpoint.
pub const DEFAULT_CONNECTIONS_PER_ENDPOINT: usize = 1;
/// TCP connect timeout (ARCHITECTURE.md: fail fast after 1 s when nothing is reachable).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Silence after which the client pings the server.
pub const DEFAULT_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// How long the client waits for any frame after a ping before it declares the peer dead and
/// fails every call pending on the connection.
pub const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);
/// First reconnect backoff after a failed connect; doubles per failure.
pub const DEFAULT_RECONNECT_BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Ceiling of the reconnect backoff.
pub const DEFAULT_RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(10);

/// A setting that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {reason}")]
pub struct ConfigError {
    /// The setting.
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

fn positive(field: &'static str, value: usize) -> Result<(), ConfigError> {
    if value == 0 {
        return Err(ConfigError {
            field,
            reason: "must be at least 1".into(),
        });
    }
    Ok(())
}

fn nonzero(field: &'static str, value: Duration) -> Result<(), ConfigError> {
    if value.is_zero() {
        return Err(ConfigError {
            field,
            reason: "must be longer than zero".into(),
        });
    }
    Ok(())
}

fn frame_len(field: &'static str, value: usize) -> Result<(), ConfigError> {
    if !(FRAME_HEADER_LEN..=MAX_FRAME_LEN_CEILING).contains(&value) {
        return Err(ConfigError {
            field,
            reason: format!("{value} is outside {FRAME_HEADER_LEN}..={MAX_FRAME_LEN_CEILING}"),
        });
    }
    Ok(())
}

/// Server settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Largest frame accepted or sent (prefix excluded). A larger incoming frame closes that
    /// connection; a larger result is answered `Internal`.
    pub max_frame_len: usize,
    /// Calls one connection may run at once; more get `Overloaded` at once.
    pub max_in_flight_per_connection: usize,
    /// Calls the server may run at once; more get `Overloaded` at once.
    pub max_in_flight_total: usize,
    /// Connections open at once; more are closed when accepted.
    pub max_connections: usize,
    /// Accept queue length of the listener made by `ServerBuilder::bind`.
    pub listen_backlog: u32,
    /// Deadline for requests that carry none.
    pub default_deadline: Duration,
    /// Cap on any request's deadline.
    pub max_deadline: Duration,
    /// Graceful shutdown waits this long for in-flight calls.
    pub drain_timeout: Duration,
    /// Frames queued per connection writer.
    pub write_queue_capacity: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            max_in_flight_per_connection: DEFAULT_MAX_IN_FLIGHT_PER_CONNECTION,
            max_in_flight_total: DEFAULT_MAX_IN_FLIGHT_TOTAL,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            listen_backlog: DEFAULT_LISTEN_BACKLOG,
            default_deadline: DEFAULT_DEADLINE,
            max_deadline: DEFAULT_MAX_DEADLINE,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            write_queue_capacity: DEFAULT_WRITE_QUEUE_CAPACITY,
        }
    }
}

impl ServerConfig {
    /// Checks every setting.
    pub fn validate(&self) -> Result<(), ConfigError> {
        frame_len("max_frame_len", self.max_frame_len)?;
        positive(
            "max_in_flight_per_connection",
            self.max_in_flight_per_connection,
        )?;
        positive("max_in_flight_total", self.max_in_flight_total)?;
        positive("max_connections", self.max_connections)?;
        positive("listen_backlog", self.listen_backlog as usize)?;
        positive("write_queue_capacity", self.write_queue_capacity)?;
        nonzero("default_deadline", self.default_deadline)?;
        nonzero("max_deadline", self.max_deadline)?;
        nonzero("drain_timeout", self.drain_timeout)?;
        Ok(())
    }
}

/// Client settings, per endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientConfig {
    /// Most connections to open to the endpoint. Calls fill them in order: the next one is
    /// opened when every open one has 128 calls in flight; past that, the least loaded takes
    /// the call.
    pub connections: usize,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// Calls pending on one connection; more fail locally with `Overloaded`.
    pub max_in_flight_per_connection: usize,
    /// Timeout of calls that set none.
    pub default_timeout: Duration,
    /// Codec of typed calls.
    pub codec: Codec,
    /// Ping after this much silence.
    pub keepalive_interval: Duration,
    /// Declare the peer dead this long after an unanswered ping.
    pub keepalive_timeout: Duration,
    /// Largest frame accepted or sent (prefix excluded).
    pub max_frame_len: usize,
    /// Frames queued for the connection writer.
    pub write_queue_capacity: usize,
    /// First reconnect backoff.
    pub reconnect_backoff_min: Duration,
    /// Longest reconnect backoff.
    pub reconnect_backoff_max: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            connections: DEFAULT_CONNECTIONS_PER_ENDPOINT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            max_in_flight_per_connection: DEFAULT_MAX_IN_FLIGHT_PER_CONNECTION,
            default_timeout: DEFAULT_DEADLINE,
            codec: Codec::MsgPack,
            keepalive_interval: DEFAULT_KEEPALIVE_INTERVAL,
            keepalive_timeout: DEFAULT_KEEPALIVE_TIMEOUT,
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            write_queue_capacity: DEFAULT_WRITE_QUEUE_CAPACITY,
            reconnect_backoff_min: DEFAULT_RECONNECT_BACKOFF_MIN,
            reconnect_backoff_max: DEFAULT_RECONNECT_BACKOFF_MAX,
        }
    }
}

impl ClientConfig {
    /// Checks every setting.
    pub fn validate(&self) -> Result<(), ConfigError> {
        positive("connections", self.connections)?;
        positive(
            "max_in_flight_per_connection",
            self.max_in_flight_per_connection,
        )?;
        positive("write_queue_capacity", self.write_queue_capacity)?;
        frame_len("max_frame_len", self.max_frame_len)?;
        nonzero("connect_timeout", self.connect_timeout)?;
        nonzero("default_timeout", self.default_timeout)?;
        nonzero("keepalive_interval", self.keepalive_interval)?;
        nonzero("keepalive_timeout", self.keepalive_timeout)?;
        nonzero("reconnect_backoff_min", self.reconnect_backoff_min)?;
        if self.reconnect_backoff_max < self.reconnect_backoff_min {
            return Err(ConfigError {
                field: "reconnect_backoff_max",
                reason: "must not be shorter than reconnect_backoff_min".into(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_zeros_are_not() {
        ServerConfig::default().validate().unwrap();
        ClientConfig::default().validate().unwrap();
        let err = ServerConfig {
            max_in_flight_total: 0,
            ..Default::default()
        }
        .validate()
        .unwrap_err();
        assert_eq!(err.field, "max_in_flight_total");
        let err = ClientConfig {
            max_frame_len: MAX_FRAME_LEN_CEILING + 1,
            ..Default::default()
        }
        .validate()
        .unwrap_err();
        assert_eq!(err.field, "max_frame_len");
    }
}
