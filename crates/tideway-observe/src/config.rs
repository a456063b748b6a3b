//! The `[observability]` configuration section: tracing (`[observability.tracing]`) and access logs
//! (`[observability.access_log]`). Both are off by default.
//!
//! ```toml
//! [observability.tracing]
//! endpoint = "http://127.0.0.1:4318"   # OTLP/HTTP collector; spans go to {endpoint}/v1/traces
//! service_name = "tideway-gateway"
//! sample_ratio = 1.0
//!
//! [observability.access_log]
//! enabled = true
//! format = "json"                       # or "common"
//! output = "stdout"                     # "stdout", "stderr" or a file path (appended to)
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize, Serializer};

/// Resource `service.name` of the spans a gateway exports.
pub const DEFAULT_SERVICE_NAME: &str = "tideway-gateway";
/// Spans waiting for export at most (the SDK default); more are dropped, never waited for.
pub const DEFAULT_MAX_QUEUE_SIZE: usize = 2048;
/// Spans per export request at most (the SDK default).
pub const DEFAULT_MAX_EXPORT_BATCH_SIZE: usize = 512;
/// A batch is exported at least this often (the SDK default).
pub const DEFAULT_EXPORT_DELAY: Duration = Duration::from_secs(5);
/// One export request may take this long before it is given up.
pub const DEFAULT_EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// Access log lines waiting for the writer at most; more are dropped and counted.
pub const DEFAULT_ACCESS_LOG_BUFFER: usize = 8192;
/// No queue is configured above this (lines or spans): a bound that cannot be reached is none.
pub const MAX_QUEUE_CEILING: usize = 1 << 20;

/// `[observability]`: tracing and access logs.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ObservabilityConfig {
    /// Spans exported over OTLP/HTTP (`[observability.tracing]`).
    pub tracing: TracingConfig,
    /// One line per request (`[observability.access_log]`).
    pub access_log: AccessLogConfig,
}

/// `[observability.tracing]`: on when `endpoint` is set.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TracingConfig {
    /// The OTLP/HTTP collector, e.g. `http://127.0.0.1:4318` (spans are posted to
    /// `{endpoint}/v1/traces`, unless the URL already ends with `/v1/traces`). Plain `http://`
    /// only. None: no spans, no exporter, nothing on the request path.
    pub endpoint: Option<String>,
    /// The resource's `service.name`.
    pub service_name: String,
    /// Fraction of new traces recorded (0.0..=1.0); a request that arrives with a `traceparent`
    /// follows its sampled flag.
    pub sample_ratio: f64,
    /// Spans waiting for export at most; when full, new spans are dropped.
    pub max_queue_size: usize,
    /// Spans per export request at most.
    pub max_export_batch_size: usize,
    /// Time between exports of a partial batch.
    #[serde(with = "humantime_serde")]
    pub export_delay: Duration,
    /// Deadline of one export request.
    #[serde(with = "humantime_serde")]
    pub export_timeout: Duration,
    /// Extra HTTP headers on export requests (for example a collector's auth token).
    /// Serialized with their values redacted: the names show, the tokens do not.
    #[serde(serialize_with = "serialize_header_names")]
    pub headers: BTreeMap<String, String>,
}

/// What a redacted value is serialized as.
const REDACTED: &str = "<redacted>";

fn serialize_header_names<S: Serializer>(
    headers: &BTreeMap<String, String>,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_map(headers.keys().map(|name| (name, REDACTED)))
}

impl Default for TracingConfig {
    fn default() -> Self {
        TracingConfig {
            endpoint: None,
            service_name: DEFAULT_SERVICE_NAME.to_owned(),
            sample_ratio: 1.0,
            max_queue_size: DEFAULT_MAX_QUEUE_SIZE,
            max_export_batch_size: DEFAULT_MAX_EXPORT_BATCH_SIZE,
            export_delay: DEFAULT_EXPORT_DELAY,
            export_timeout: DEFAULT_EXPORT_TIMEOUT,
            headers: BTreeMap::new(),
        }
    }
}

impl TracingConfig {
    /// Tracing to `endpoint` with every other setting at its default.
    pub fn to_endpoint(endpoint: impl Into<String>) -> Self {
        TracingConfig {
            endpoint: Some(endpoint.into()),
            ..TracingConfig::default()
        }
    }

    /// Whether spans are made and exported.
    pub fn enabled(&self) -> bool {
        self.endpoint.is_some()
    }

    /// The URL spans are posted to.
    pub fn traces_url(&self) -> Option<String> {
        let endpoint = self.endpoint.as_deref()?.trim_end_matches('/');
        Some(if endpoint.ends_with("/v1/traces") {
            endpoint.to_owned()
        } else {
            format!("{endpoint}/v1/traces")
        })
    }
}

/// The shape of access log lines.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AccessLogFormat {
    /// One JSON object per line.
    #[default]
    Json,
    /// NCSA common log format, with Tideway's fields appended.
    Common,
}

/// `[observability.access_log]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AccessLogConfig {
    /// Whether lines are written.
    pub enabled: bool,
    /// `json` or `common`.
    pub format: AccessLogFormat,
    /// `stdout`, `stderr` or a file path (created if missing, appended to).
    pub output: String,
    /// Lines waiting for the writer at most; when full, lines are dropped and counted in
    /// `tideway_access_log_dropped_total`.
    pub buffer: usize,
}

impl Default for AccessLogConfig {
    fn default() -> Self {
        AccessLogConfig {
            enabled: false,
            format: AccessLogFormat::Json,
            output: "stdout".to_owned(),
            buffer: DEFAULT_ACCESS_LOG_BUFFER,
        }
    }
}

impl ObservabilityConfig {
    /// Whether anything is on; when not, the gateway does no observability work per request.
    pub fn enabled(&self) -> bool {
        self.tracing.enabled() || self.access_log.enabled
    }

    /// Every problem, as (key path under `observability`, message).
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut issues = Vec::new();
        let mut issue = |key: &str, message: String| {
            issues.push((format!("observability.{key}"), message));
        };
        let t = &self.tracing;
        if let Some(url) = t.traces_url() {
            match url.parse::<http::Uri>() {
                Ok(uri) if uri.scheme_str() == Some("http") && uri.host().is_some() => {}
                Ok(_) => issue(
                    "tracing.endpoint",
                    format!("{url:?} is not an http:// URL with a host (https is not supported)"),
                ),
                Err(e) => issue("tracing.endpoint", format!("{url:?} is not a URL: {e}")),
            }
        }
        if !(0.0..=1.0).contains(&t.sample_ratio) {
            issue(
                "tracing.sample_ratio",
                format!("{} is not between 0.0 and 1.0", t.sample_ratio),
            );
        }
        if t.max_queue_size == 0 || t.max_queue_size > MAX_QUEUE_CEILING {
            issue(
                "tracing.max_queue_size",
                format!("must be 1..={MAX_QUEUE_CEILING}"),
            );
        }
        if t.max_export_batch_size == 0 || t.max_export_batch_size > t.max_queue_size {
            issue(
                "tracing.max_export_batch_size",
                "must be at least 1 and at most max_queue_size".to_owned(),
            );
        }
        if t.export_delay.is_zero() {
            issue("tracing.export_delay", "must be above zero".to_owned());
        }
        if t.export_timeout.is_zero() {
            issue("tracing.export_timeout", "must be above zero".to_owned());
        }
        if t.service_name.is_empty() {
            issue("tracing.service_name", "must not be empty".to_owned());
        }
        let a = &self.access_log;
        if a.buffer == 0 || a.buffer > MAX_QUEUE_CEILING {
            issue(
                "access_log.buffer",
                format!("must be 1..={MAX_QUEUE_CEILING}"),
            );
        }
        if a.output.is_empty() {
            issue(
                "access_log.output",
                "must be stdout, stderr or a file path".to_owned(),
            );
        }
        issues
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_header_values_serialize_redacted() {
        let mut t = TracingConfig::to_endpoint("http://127.0.0.1:4318");
        t.headers
            .insert("authorization".into(), "Bearer collector-token".into());
        let text = serde_json::to_string(&t).unwrap();
        assert!(!text.contains("collector-token"), "{text}");
        assert!(
            text.contains(r#""headers":{"authorization":"<redacted>"}"#),
            "{text}"
        );
        assert!(text.contains(r#""export_delay":"5s""#), "{text}");
    }

    #[test]
    fn defaults_are_off_and_valid() {
        let c = ObservabilityConfig::default();
        assert!(!c.enabled());
        assert!(c.validate().is_empty());
    }

    #[test]
    fn traces_url_appends_the_signal_path_once() {
        let t = TracingConfig::to_endpoint("http://127.0.0.1:4318/");
        assert_eq!(
            t.traces_url().as_deref(),
            Some("http://127.0.0.1:4318/v1/traces")
        );
        let t = TracingConfig::to_endpoint("http://c:4318/v1/traces");
        assert_eq!(t.traces_url().as_deref(), Some("http://c:4318/v1/traces"));
    }

    #[test]
    fn bad_values_are_reported_with_their_keys() {
        let c = ObservabilityConfig {
            tracing: TracingConfig {
                endpoint: Some("https://x".into()),
                sample_ratio: 2.0,
                max_queue_size: 0,
                ..TracingConfig::default()
            },
            access_log: AccessLogConfig {
                buffer: 0,
                ..AccessLogConfig::default()
            },
        };
        let keys: Vec<String> = c.validate().into_iter().map(|(k, _)| k).collect();
        for key in [
            "observability.tracing.endpoint",
            "observability.tracing.sample_ratio",
            "observability.tracing.max_queue_size",
            "observability.tracing.max_export_batch_size",
            "observability.access_log.buffer",
        ] {
            assert!(keys.iter().any(|k| k == key), "{key} missing from {keys:?}");
        }
    }
}
