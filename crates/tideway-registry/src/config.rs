//! Settings of the backends and the catalog. Every default and limit is a named const with the
//! reason for its value; `validate` rejects zero and absurd values before anything starts.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize, Serializer};

use crate::error::RegistryError;

// ---- instances -----------------------------------------------------------------------------

/// Weight of an instance that sets none. 100 rather than 1, so an instance can be weighed down to
/// 1% of its peers without the others being changed.
pub const DEFAULT_WEIGHT: u32 = 100;
/// Largest weight: 100x the default is plenty for load balancing, and small enough that sums of
/// weights over any realistic endpoint set stay far from overflow.
pub const MAX_WEIGHT: u32 = 10_000;
/// Longest service name, instance id, zone, version or tag, in bytes (a DNS name's limit).
pub const MAX_NAME_LEN: usize = 253;
/// Tags one instance may carry.
pub const MAX_TAGS: usize = 64;
/// Routes one instance may publish (a service with more methods than this is several services).
pub const MAX_ROUTES: usize = 256;
/// Parameters one route may declare.
pub const MAX_PARAMS: usize = 64;
/// Largest JSON encoding of one instance (a typical one with a dozen routes is 2-4 KiB). etcd
/// refuses requests over 1.5 MiB by default; a far smaller cap keeps a page of a list, and the
/// memory a watcher holds per instance, small.
pub const MAX_INSTANCE_JSON_BYTES: usize = 64 * 1024;

// ---- embedded and file backends ------------------------------------------------------------

/// Changes buffered for each watcher of an embedded or file registry. A watcher that falls
/// further behind is not queued for: it gets a full snapshot instead (a resync).
pub const DEFAULT_EVENT_CAPACITY: usize = 1024;
/// How often a file registry looks at its file's modification time and length.
pub const DEFAULT_FILE_POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Largest registry file read; a larger one is an error and the last good state stays.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

// ---- etcd backend --------------------------------------------------------------------------

/// Root of Tideway's keys in etcd; instances live under `{prefix}/services/`.
pub const DEFAULT_ETCD_PREFIX: &str = "/tideway";
/// Lease TTL of a registration: a killed process disappears this long after its last keep-alive
/// (ARCHITECTURE.md: registry liveness, 10 s lease).
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(10);
/// Keep-alive period of a lease: three tries within the default TTL.
pub const DEFAULT_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(3);
/// TCP connect timeout to an etcd endpoint.
pub const DEFAULT_ETCD_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Deadline of every etcd request (and of opening a watch or keep-alive stream). Needed because
/// the client's balanced channel waits, rather than fails, while no endpoint is reachable.
pub const DEFAULT_ETCD_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// HTTP/2 ping period on the etcd connection, so a silent peer (host gone, partition) is noticed
/// without waiting for TCP. Not below 5 s: etcd answers more frequent pings with GOAWAY
/// (`--grpc-keepalive-min-time`).
pub const DEFAULT_ETCD_HTTP2_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// How long an HTTP/2 ping may go unanswered before the connection is declared dead.
pub const DEFAULT_ETCD_HTTP2_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(5);
/// Instances fetched per request when listing. With [`MAX_INSTANCE_JSON_BYTES`] this bounds one
/// response to 4 MiB, gRPC's usual message limit.
pub const DEFAULT_LIST_PAGE_SIZE: usize = 64;

// ---- reconnecting --------------------------------------------------------------------------

/// First wait before reconnecting (catalog) or re-registering (lease lost); doubles per failure.
pub const DEFAULT_BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Ceiling of that wait. Jitter takes each wait from [half, all] of the current step.
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(10);

// ---- catalog -------------------------------------------------------------------------------

/// Instances a catalog holds; past it new instances are skipped (counted and logged), so a
/// runaway registrant cannot grow a gateway without bound.
pub const DEFAULT_MAX_INSTANCES: usize = 100_000;
/// Changes applied before the catalog publishes a new snapshot (when more are waiting). Bounds
/// the work between publications while keeping a burst to a few snapshots.
pub const DEFAULT_MAX_BATCH: usize = 1024;

fn nonzero(field: &'static str, value: Duration) -> Result<(), RegistryError> {
    if value.is_zero() {
        return Err(RegistryError::Config {
            field,
            reason: "must be longer than zero".into(),
        });
    }
    Ok(())
}

fn positive(field: &'static str, value: usize) -> Result<(), RegistryError> {
    if value == 0 {
        return Err(RegistryError::Config {
            field,
            reason: "must be at least 1".into(),
        });
    }
    Ok(())
}

fn backoff(min: Duration, max: Duration) -> Result<(), RegistryError> {
    nonzero("backoff_min", min)?;
    if max < min {
        return Err(RegistryError::Config {
            field: "backoff_max",
            reason: format!("{max:?} is below backoff_min {min:?}"),
        });
    }
    Ok(())
}

/// Which registry to use, as a gateway's or service's configuration names it (`backend = "..."`).
///
/// ```toml
/// [registry]
/// backend = "etcd"
/// endpoints = ["http://127.0.0.1:2379"]
/// lease_ttl = "10s"
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(tag = "backend", rename_all = "snake_case")]
pub enum RegistryConfig {
    /// In-process ([`EmbeddedRegistry`](crate::EmbeddedRegistry)): services and gateway share
    /// one process.
    #[default]
    Embedded,
    /// A watched file ([`FileRegistry`](crate::FileRegistry)).
    File(FileConfig),
    /// etcd v3 (`EtcdRegistry`, crate feature `etcd`).
    Etcd(EtcdConfig),
}

impl RegistryConfig {
    /// Checks every setting.
    pub fn validate(&self) -> Result<(), RegistryError> {
        match self {
            RegistryConfig::Embedded => Ok(()),
            RegistryConfig::File(c) => c.validate(),
            RegistryConfig::Etcd(c) => c.validate(),
        }
    }
}

/// Settings of a [`FileRegistry`](crate::FileRegistry).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// The file: TOML, or JSON when its name ends in `.json`. Format in the crate docs.
    pub path: PathBuf,
    /// How often the file's modification time and length are checked.
    #[serde(default = "default_poll_interval", with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Largest file read.
    #[serde(default = "default_max_file_bytes")]
    pub max_bytes: u64,
    /// Changes buffered per watcher before it is resynced with a snapshot.
    #[serde(default = "default_event_capacity")]
    pub event_capacity: usize,
}

fn default_poll_interval() -> Duration {
    DEFAULT_FILE_POLL_INTERVAL
}
fn default_max_file_bytes() -> u64 {
    DEFAULT_MAX_FILE_BYTES
}
fn default_event_capacity() -> usize {
    DEFAULT_EVENT_CAPACITY
}

impl FileConfig {
    /// Settings for `path`, everything else default.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FileConfig {
            path: path.into(),
            poll_interval: DEFAULT_FILE_POLL_INTERVAL,
            max_bytes: DEFAULT_MAX_FILE_BYTES,
            event_capacity: DEFAULT_EVENT_CAPACITY,
        }
    }

    /// Checks every setting.
    pub fn validate(&self) -> Result<(), RegistryError> {
        if self.path.as_os_str().is_empty() {
            return Err(RegistryError::Config {
                field: "path",
                reason: "is empty".into(),
            });
        }
        nonzero("poll_interval", self.poll_interval)?;
        positive("max_bytes", self.max_bytes.try_into().unwrap_or(usize::MAX))?;
        positive("event_capacity", self.event_capacity)?;
        Ok(())
    }
}

/// Settings of an `EtcdRegistry` (crate feature `etcd`). Plain data, compiled without the
/// feature too, so configuration can be parsed and checked anywhere.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct EtcdConfig {
    /// etcd client URLs, e.g. `http://127.0.0.1:2379` (a bare `host:port` means `http://`).
    pub endpoints: Vec<String>,
    /// Key prefix; instances are stored under `{prefix}/services/{service}/{id}`.
    pub prefix: String,
    /// Lease TTL of registrations made through this client.
    #[serde(with = "humantime_serde")]
    pub lease_ttl: Duration,
    /// Keep-alive period of those leases; below `lease_ttl`.
    #[serde(with = "humantime_serde")]
    pub keep_alive_interval: Duration,
    /// TCP connect timeout.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Deadline of each request and of opening each stream.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// HTTP/2 ping period (at least 5 s, etcd's default `--grpc-keepalive-min-time`).
    #[serde(with = "humantime_serde")]
    pub http2_keep_alive_interval: Duration,
    /// How long a ping may go unanswered.
    #[serde(with = "humantime_serde")]
    pub http2_keep_alive_timeout: Duration,
    /// Instances fetched per request when listing.
    pub list_page_size: usize,
    /// First wait before re-registering after a lost lease.
    #[serde(with = "humantime_serde")]
    pub backoff_min: Duration,
    /// Ceiling of that wait.
    #[serde(with = "humantime_serde")]
    pub backoff_max: Duration,
    /// User name and password, when etcd has authentication enabled.
    pub user: Option<EtcdUser>,
}

/// etcd credentials.
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdUser {
    /// User name.
    pub name: String,
    /// Password; serialized as `"<redacted>"`.
    #[serde(serialize_with = "serialize_redacted")]
    pub password: String,
}

fn serialize_redacted<S: Serializer>(_: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str("<redacted>")
}

impl std::fmt::Debug for EtcdUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdUser")
            .field("name", &self.name)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl Default for EtcdConfig {
    fn default() -> Self {
        EtcdConfig {
            endpoints: vec!["http://127.0.0.1:2379".into()],
            prefix: DEFAULT_ETCD_PREFIX.into(),
            lease_ttl: DEFAULT_LEASE_TTL,
            keep_alive_interval: DEFAULT_KEEP_ALIVE_INTERVAL,
            connect_timeout: DEFAULT_ETCD_CONNECT_TIMEOUT,
            request_timeout: DEFAULT_ETCD_REQUEST_TIMEOUT,
            http2_keep_alive_interval: DEFAULT_ETCD_HTTP2_KEEP_ALIVE_INTERVAL,
            http2_keep_alive_timeout: DEFAULT_ETCD_HTTP2_KEEP_ALIVE_TIMEOUT,
            list_page_size: DEFAULT_LIST_PAGE_SIZE,
            backoff_min: DEFAULT_BACKOFF_MIN,
            backoff_max: DEFAULT_BACKOFF_MAX,
            user: None,
        }
    }
}

impl EtcdConfig {
    /// Default settings for these endpoints.
    pub fn new<S: Into<String>>(endpoints: impl IntoIterator<Item = S>) -> Self {
        EtcdConfig {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            ..EtcdConfig::default()
        }
    }

    /// Checks every setting.
    pub fn validate(&self) -> Result<(), RegistryError> {
        if self.endpoints.is_empty() || self.endpoints.iter().any(|e| e.trim().is_empty()) {
            return Err(RegistryError::Config {
                field: "endpoints",
                reason: "needs at least one non-empty endpoint".into(),
            });
        }
        if !self.prefix.starts_with('/') || self.prefix.ends_with('/') {
            return Err(RegistryError::Config {
                field: "prefix",
                reason: format!(
                    "{:?} must start with '/' and not end with one (e.g. \"/tideway\")",
                    self.prefix
                ),
            });
        }
        if self.lease_ttl < Duration::from_secs(1) {
            return Err(RegistryError::Config {
                field: "lease_ttl",
                reason: "must be at least 1s (etcd counts leases in whole seconds)".into(),
            });
        }
        nonzero("keep_alive_interval", self.keep_alive_interval)?;
        if self.keep_alive_interval >= self.lease_ttl {
            return Err(RegistryError::Config {
                field: "keep_alive_interval",
                reason: format!(
                    "{:?} must be shorter than lease_ttl {:?}",
                    self.keep_alive_interval, self.lease_ttl
                ),
            });
        }
        nonzero("connect_timeout", self.connect_timeout)?;
        nonzero("request_timeout", self.request_timeout)?;
        nonzero("http2_keep_alive_interval", self.http2_keep_alive_interval)?;
        nonzero("http2_keep_alive_timeout", self.http2_keep_alive_timeout)?;
        positive("list_page_size", self.list_page_size)?;
        if self.list_page_size > 1024 {
            return Err(RegistryError::Config {
                field: "list_page_size",
                reason: format!("{} is above 1024", self.list_page_size),
            });
        }
        backoff(self.backoff_min, self.backoff_max)?;
        Ok(())
    }

    /// The lease TTL in whole seconds, as etcd takes it (rounded up).
    pub fn lease_ttl_secs(&self) -> i64 {
        let secs = self.lease_ttl.as_secs() + u64::from(self.lease_ttl.subsec_nanos() > 0);
        i64::try_from(secs).unwrap_or(i64::MAX)
    }
}

/// Settings of a [`Catalog`](crate::Catalog).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CatalogConfig {
    /// First wait before reconnecting after the watch failed; doubles per failure.
    #[serde(with = "humantime_serde")]
    pub backoff_min: Duration,
    /// Ceiling of that wait.
    #[serde(with = "humantime_serde")]
    pub backoff_max: Duration,
    /// Instances held at most; more are skipped, counted and logged.
    pub max_instances: usize,
    /// Changes applied before a new snapshot is published.
    pub max_batch: usize,
}

impl Default for CatalogConfig {
    fn default() -> Self {
        CatalogConfig {
            backoff_min: DEFAULT_BACKOFF_MIN,
            backoff_max: DEFAULT_BACKOFF_MAX,
            max_instances: DEFAULT_MAX_INSTANCES,
            max_batch: DEFAULT_MAX_BATCH,
        }
    }
}

impl CatalogConfig {
    /// Checks every setting.
    pub fn validate(&self) -> Result<(), RegistryError> {
        backoff(self.backoff_min, self.backoff_max)?;
        positive("max_instances", self.max_instances)?;
        positive("max_batch", self.max_batch)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etcd_password_serializes_redacted() {
        let config = RegistryConfig::Etcd(EtcdConfig {
            user: Some(EtcdUser {
                name: "gateway".into(),
                password: "etcd-password".into(),
            }),
            ..EtcdConfig::default()
        });
        let text = serde_json::to_string(&config).unwrap();
        assert!(!text.contains("etcd-password"), "{text}");
        assert!(
            text.contains(r#""user":{"name":"gateway","password":"<redacted>"}"#),
            "{text}"
        );
        assert!(text.contains(r#""backend":"etcd""#), "{text}");
    }

    #[test]
    fn defaults_are_valid() {
        EtcdConfig::default().validate().unwrap();
        CatalogConfig::default().validate().unwrap();
        FileConfig::new("services.toml").validate().unwrap();
        assert_eq!(EtcdConfig::default().lease_ttl_secs(), 10);
    }

    #[test]
    fn bad_settings_are_rejected() {
        let bad = EtcdConfig {
            keep_alive_interval: Duration::from_secs(10),
            ..EtcdConfig::default()
        };
        assert!(matches!(
            bad.validate(),
            Err(RegistryError::Config {
                field: "keep_alive_interval",
                ..
            })
        ));
        let bad = EtcdConfig {
            prefix: "tideway/".into(),
            ..EtcdConfig::default()
        };
        assert!(bad.validate().is_err());
        let bad = CatalogConfig {
            max_batch: 0,
            ..CatalogConfig::default()
        };
        assert!(bad.validate().is_err());
    }

    #[test]
    fn registry_config_parses_from_toml() {
        let c: RegistryConfig = toml::from_str(
            r#"
            backend = "etcd"
            endpoints = ["http://10.0.0.1:2379"]
            lease_ttl = "5s"
            keep_alive_interval = "1500ms"
            "#,
        )
        .unwrap();
        let RegistryConfig::Etcd(etcd) = &c else {
            panic!("parsed {c:?}")
        };
        assert_eq!(etcd.lease_ttl, Duration::from_secs(5));
        assert_eq!(etcd.prefix, DEFAULT_ETCD_PREFIX);
        c.validate().unwrap();

        let c: RegistryConfig =
            toml::from_str("backend = \"file\"\npath = \"/etc/tideway/services.toml\"").unwrap();
        assert!(
            matches!(c, RegistryConfig::File(ref f) if f.poll_interval == DEFAULT_FILE_POLL_INTERVAL)
        );
        let c: RegistryConfig = toml::from_str("backend = \"embedded\"").unwrap();
        assert_eq!(c, RegistryConfig::Embedded);
    }
}
