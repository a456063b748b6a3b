//! The file registry: instances and routes listed in a TOML (or JSON) file, reloaded when the
//! file changes.
//!
//! ```toml
//! [[services]]
//! name = "logistics.Waybills"
//!
//! [[services.routes]]
//! name = "get"                      # method name; full_name defaults to "{service}/{name}"
//! http_method = "GET"
//! path = "/api/waybills/{id}"
//! timeout_ms = 2000                 # optional
//! params = [{ name = "id", rust_type = "String" }]
//!
//! [[services.instances]]
//! id = "wb-1"
//! addr = "10.0.0.5:7001"
//! weight = 100                      # optional, default 100
//! zone = "eu-west-1a"               # optional
//! version = "1.4.2"                 # optional
//! tags = ["canary"]                 # optional
//! ```
//!
//! A file named `*.json` is read as JSON with the same structure.
//!
//! Every `poll_interval` the registry compares the file's modification time and length with the
//! last look (and re-reads a file modified within the last two seconds, whose time stamp cannot
//! be trusted to change again); when they differ it reads the file and compares its content. A
//! file that cannot be read or parsed leaves the last good state in place; the error, with its
//! line and column, is logged, reported on watch streams (a [`Catalog`](crate::Catalog) shows it
//! as `Degraded`) and kept in [`FileRegistry::last_error`]. Records that parse but are invalid
//! (weight 0, bad names, a duplicate id) are skipped, counted and logged; the rest apply.

use std::collections::BTreeSet;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use parking_lot::Mutex;
use serde::Deserialize;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::config::{DEFAULT_WEIGHT, FileConfig};
use crate::error::{FileError, RegistryError};
use crate::instance::{RouteMeta, ServiceInstance};
use crate::metrics::invalid_record;
use crate::registry::{Listing, Registration, Registry, Revision, WatchStream};
use crate::store::Store;

const BACKEND: &str = "file";

/// A file modified this recently is re-read even when its time stamp and length look unchanged:
/// a second write within the file system's time stamp granularity would otherwise go unseen.
const RACY_WINDOW: Duration = Duration::from_secs(2);

/// A read-only registry backed by a watched file (format in the module docs). Cheap to share
/// behind an `Arc`; the polling task stops when the registry is dropped.
#[derive(Debug)]
pub struct FileRegistry {
    store: Arc<Store>,
    shared: Arc<FileShared>,
    _poller: DropGuard,
}

#[derive(Debug)]
struct FileShared {
    config: FileConfig,
    seen: Mutex<Seen>,
}

/// What the last look at the file found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Seen {
    modified: Option<SystemTime>,
    len: u64,
    content_hash: Option<u64>,
}

impl FileRegistry {
    /// Reads the file and starts watching it. Fails when the file cannot be read or parsed at
    /// all (there is no last good state to fall back on yet); invalid records only are skipped.
    /// Must be called within a Tokio runtime.
    pub async fn open(config: FileConfig) -> Result<FileRegistry, RegistryError> {
        config.validate()?;
        let store = Store::new(BACKEND, config.event_capacity);
        let shared = Arc::new(FileShared {
            config,
            seen: Mutex::new(Seen::default()),
        });
        check(&shared, &store, true)
            .await
            .map_err(RegistryError::File)?;
        let cancel = CancellationToken::new();
        tokio::spawn(poll(
            Arc::downgrade(&shared),
            Arc::downgrade(&store),
            cancel.clone(),
        ));
        Ok(FileRegistry {
            store,
            shared,
            _poller: cancel.drop_guard(),
        })
    }

    /// The watched file.
    pub fn path(&self) -> &Path {
        &self.shared.config.path
    }

    /// The problem the file has now, if any; the registry serves its last good state meanwhile.
    pub fn last_error(&self) -> Option<FileError> {
        self.store.problem()
    }

    /// Reads the file now (e.g. on SIGHUP) instead of waiting for the next poll. Returns how many
    /// instances changed; on error the last good state stays.
    pub async fn reload(&self) -> Result<usize, RegistryError> {
        match check(&self.shared, &self.store, true).await {
            Ok(changed) => Ok(changed.unwrap_or(0)),
            Err(e) => Err(RegistryError::File(e)),
        }
    }
}

impl Registry for FileRegistry {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn register(
        &self,
        _instance: ServiceInstance,
    ) -> BoxFuture<'_, Result<Registration, RegistryError>> {
        Box::pin(async { Err(RegistryError::ReadOnly { backend: BACKEND }) })
    }

    fn deregister<'a>(
        &'a self,
        _service: &'a str,
        _id: &'a str,
    ) -> BoxFuture<'a, Result<bool, RegistryError>> {
        Box::pin(async { Err(RegistryError::ReadOnly { backend: BACKEND }) })
    }

    fn list(&self) -> BoxFuture<'_, Result<Listing, RegistryError>> {
        let listing = self.store.list();
        Box::pin(async move { Ok(listing) })
    }

    fn watch(&self, after: Option<Revision>) -> WatchStream {
        self.store.watch(after)
    }
}

async fn poll(
    shared: std::sync::Weak<FileShared>,
    store: std::sync::Weak<Store>,
    cancel: CancellationToken,
) {
    let Some(period) = shared.upgrade().map(|s| s.config.poll_interval) else {
        return;
    };
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let (Some(shared), Some(store)) = (shared.upgrade(), store.upgrade()) else {
            return;
        };
        // Errors are logged and reported by `check`.
        let _ = check(&shared, &store, false).await;
    }
}

/// Looks at the file and applies it when it changed. `Ok(None)`: nothing to do.
async fn check(
    shared: &FileShared,
    store: &Store,
    force: bool,
) -> Result<Option<usize>, FileError> {
    let path = &shared.config.path;
    let result = read_if_changed(shared, store, force).await;
    let outcome = match result {
        Ok(None) => return Ok(None),
        Ok(Some(text)) => parse(path, &text),
        Err(e) => Err(e),
    };
    match outcome {
        Ok(instances) => {
            let changed = store.replace_all(instances);
            if changed > 0 {
                tracing::info!(path = %path.display(), changed, "registry file reloaded");
            }
            Ok(Some(changed))
        }
        Err(e) => {
            // Watchers are told through the store (a catalog counts it as a watch error).
            if store.set_problem(e.clone()) {
                tracing::warn!(error = %e, "registry file not applied; serving its last good state");
            }
            Err(e)
        }
    }
}

/// The file's bytes when it may have changed since the last look, `None` when it did not.
async fn read_if_changed(
    shared: &FileShared,
    store: &Store,
    force: bool,
) -> Result<Option<Vec<u8>>, FileError> {
    let config = &shared.config;
    let io_error = |e: std::io::Error| file_error(&config.path, 0, 0, e.to_string());
    let meta = tokio::fs::metadata(&config.path).await.map_err(io_error)?;
    let modified = meta.modified().ok();
    let len = meta.len();
    // While a problem is reported, always re-read: the file may have been put back as it was.
    let has_problem = store.problem().is_some();
    let recent = modified.is_none_or(|m| m.elapsed().map_or(true, |age| age < RACY_WINDOW));
    {
        let seen = shared.seen.lock();
        if !force && !has_problem && !recent && seen.modified == modified && seen.len == len {
            return Ok(None);
        }
    }
    if len > config.max_bytes {
        return Err(file_error(
            &config.path,
            0,
            0,
            format!("{len} bytes, more than the limit of {}", config.max_bytes),
        ));
    }
    let bytes = tokio::fs::read(&config.path).await.map_err(io_error)?;
    if bytes.len() as u64 > config.max_bytes {
        return Err(file_error(
            &config.path,
            0,
            0,
            format!(
                "{} bytes, more than the limit of {}",
                bytes.len(),
                config.max_bytes
            ),
        ));
    }
    let mut hasher = DefaultHasher::new();
    bytes.hash(&mut hasher);
    let content_hash = Some(hasher.finish());
    let mut seen = shared.seen.lock();
    let same_content = seen.content_hash == content_hash;
    *seen = Seen {
        modified,
        len,
        content_hash,
    };
    if same_content && !force && !has_problem {
        return Ok(None);
    }
    Ok(Some(bytes))
}

fn file_error(path: &Path, line: usize, column: usize, message: String) -> FileError {
    FileError {
        path: path.to_owned(),
        line,
        column,
        message,
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDoc {
    #[serde(default)]
    services: Vec<FileService>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileService {
    name: String,
    #[serde(default)]
    routes: Vec<RouteMeta>,
    #[serde(default)]
    instances: Vec<FileInstance>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileInstance {
    id: String,
    addr: SocketAddr,
    #[serde(default)]
    weight: Option<u32>,
    #[serde(default)]
    zone: Option<String>,
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
}

/// 1-based line and column of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before
        .get(line_start..)
        .map_or(1, |s| s.chars().count() + 1);
    (line, column)
}

/// Parses a registry file into instances, skipping invalid records.
fn parse(path: &Path, bytes: &[u8]) -> Result<Vec<ServiceInstance>, FileError> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let valid = bytes.get(..e.valid_up_to()).unwrap_or_default();
        let (line, column) =
            line_column(std::str::from_utf8(valid).unwrap_or_default(), valid.len());
        file_error(path, line, column, "not valid UTF-8".into())
    })?;
    let json = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    let doc: FileDoc = if json {
        serde_json::from_str(text)
            .map_err(|e| file_error(path, e.line(), e.column(), e.to_string()))?
    } else {
        toml::from_str(text).map_err(|e| {
            let (line, column) = e
                .span()
                .map_or((0, 0), |span| line_column(text, span.start));
            file_error(path, line, column, e.message().trim().to_owned())
        })?
    };

    let mut instances = Vec::new();
    let mut keys = BTreeSet::new();
    for service in doc.services {
        let routes: Vec<RouteMeta> = service
            .routes
            .into_iter()
            .map(|mut r| {
                if r.full_name.is_empty() {
                    r.full_name = format!("{}/{}", service.name, r.name);
                }
                r
            })
            .collect();
        for record in service.instances {
            let instance = ServiceInstance {
                service: service.name.clone(),
                id: record.id,
                addr: record.addr,
                weight: record.weight.unwrap_or(DEFAULT_WEIGHT),
                zone: record.zone,
                version: record.version,
                tags: record.tags,
                routes: routes.clone(),
            };
            if let Err(e) = instance.validate() {
                invalid_record();
                tracing::warn!(path = %path.display(), service = %instance.service, id = %instance.id, error = %e, "registry file: invalid instance skipped");
                continue;
            }
            if !keys.insert((instance.service.clone(), instance.id.clone())) {
                invalid_record();
                tracing::warn!(path = %path.display(), service = %instance.service, id = %instance.id, "registry file: duplicate instance id skipped");
                continue;
            }
            instances.push(instance);
        }
    }
    Ok(instances)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_toml_with_defaults() {
        let text = r#"
[[services]]
name = "logistics.Waybills"

[[services.routes]]
name = "get"
http_method = "GET"
path = "/api/waybills/{id}"
params = [{ name = "id", rust_type = "String" }]

[[services.instances]]
id = "wb-1"
addr = "10.0.0.5:7001"

[[services.instances]]
id = "wb-2"
addr = "10.0.0.6:7001"
weight = 5
zone = "b"
"#;
        let instances = parse(Path::new("s.toml"), text.as_bytes()).unwrap();
        assert_eq!(instances.len(), 2);
        assert_eq!(instances[0].weight, DEFAULT_WEIGHT);
        assert_eq!(instances[0].routes[0].full_name, "logistics.Waybills/get");
        assert_eq!(instances[1].zone.as_deref(), Some("b"));
    }

    #[test]
    fn syntax_errors_carry_line_and_column() {
        let text = "[[services]]\nname = \"a\"\n[[services.instances]]\nid = \"x\"\naddr = 12\n";
        let e = parse(Path::new("s.toml"), text.as_bytes()).unwrap_err();
        assert_eq!(e.line, 5, "{e}");
        assert!(e.column >= 1, "{e}");
        assert!(e.to_string().starts_with("s.toml:5:"), "{e}");

        let e = parse(
            Path::new("s.json"),
            b"{\n  \"services\": [\n    {\"name\": }\n]}",
        )
        .unwrap_err();
        assert_eq!(e.line, 3, "{e}");

        let e = parse(Path::new("s.toml"), b"[[services]]\nnmae = \"a\"\n").unwrap_err();
        assert_eq!(e.line, 2, "unknown keys are errors: {e}");
    }

    #[test]
    fn invalid_records_are_skipped() {
        let text = r#"
[[services]]
name = "a"
instances = [
  { id = "ok", addr = "10.0.0.1:1" },
  { id = "zero", addr = "10.0.0.1:2", weight = 0 },
  { id = "ok", addr = "10.0.0.1:3" },
  { id = "bad/id", addr = "10.0.0.1:4" },
]
[[services]]
name = ""
instances = [{ id = "x", addr = "10.0.0.1:5" }]
"#;
        let instances = parse(Path::new("s.toml"), text.as_bytes()).unwrap();
        let ids: Vec<_> = instances.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(ids, vec!["ok"]);
        assert_eq!(instances[0].addr.port(), 1);
    }

    #[test]
    fn the_readme_example_parses() {
        // Kept in step with README.md's Registry section.
        let text = r#"
[[services]]
name = "logistics.Waybills"
routes = [{ name = "get", http_method = "GET", path = "/api/waybills/{id}", params = [{ name = "id", rust_type = "String" }] }]
instances = [
  { id = "wb-1", addr = "10.0.0.5:7001" },                              # weight 100
  { id = "wb-2", addr = "10.0.0.6:7001", weight = 50, zone = "eu-1b", version = "1.4.2", tags = ["canary"] },
]
"#;
        let instances = parse(Path::new("s.toml"), text.as_bytes()).unwrap();
        assert_eq!(instances.len(), 2);
        assert_eq!(instances[1].tags, ["canary"]);
        assert_eq!(instances[1].routes[0].params[0].name, "id");
    }

    #[test]
    fn line_column_counts_from_one() {
        assert_eq!(line_column("abc", 0), (1, 1));
        assert_eq!(line_column("ab\ncd", 4), (2, 2));
        assert_eq!(line_column("ab\ncd", 99), (2, 3));
    }
}
