//! The registry's metrics, recorded with the `metrics` crate. No labels: a process runs one
//! catalog (per config generation), so every series is a single number.

/// Gauge: 1 while the catalog's watch is established (synced or degraded), 0 while
/// disconnected.
pub const CONNECTED: &str = "tideway_registry_connected";
/// Gauge: instances in the catalog.
pub const INSTANCES: &str = "tideway_registry_instances";
/// Gauge: services with at least one instance in the catalog.
pub const SERVICES: &str = "tideway_registry_services";
/// Gauge: the catalog's revision.
pub const REVISION: &str = "tideway_registry_revision";
/// Counter: full resyncs (a snapshot after the first), e.g. after etcd compacted the history a
/// watcher needed, or a watcher fell behind its bounded buffer.
pub const RESYNCS_TOTAL: &str = "tideway_registry_resyncs_total";
/// Counter: errors reported by watch streams (connection lost, bad registry file, ...).
pub const WATCH_ERRORS_TOTAL: &str = "tideway_registry_watch_errors_total";
/// Counter: records skipped because they were invalid (bad JSON, failed validation, key and
/// value disagree) or over the catalog's instance limit.
pub const INVALID_RECORDS_TOTAL: &str = "tideway_registry_invalid_records_total";
/// Counter: registrations whose lease was lost and that were registered again.
pub const LEASES_LOST_TOTAL: &str = "tideway_registry_leases_lost_total";

/// Registers the HELP text of every series above. Call it after installing the metrics recorder
/// (the gateway's `describe()` does); [`Catalog::spawn`](crate::Catalog::spawn) calls it too.
/// Calling it again is harmless.
pub fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge};
    describe_gauge!(
        CONNECTED,
        "1 while the service registry watch is established, 0 while disconnected."
    );
    describe_gauge!(INSTANCES, "Service instances known from the registry.");
    describe_gauge!(SERVICES, "Services with instances known from the registry.");
    describe_gauge!(REVISION, "Registry revision the known state is at.");
    describe_counter!(
        RESYNCS_TOTAL,
        "Full resyncs of the registry state (compaction, lagging watcher)."
    );
    describe_counter!(
        WATCH_ERRORS_TOTAL,
        "Errors reported by the registry watch (connection lost, bad file)."
    );
    describe_counter!(
        INVALID_RECORDS_TOTAL,
        "Registry records skipped as invalid or over the instance limit."
    );
    describe_counter!(
        LEASES_LOST_TOTAL,
        "Registrations whose etcd lease was lost and that were registered again."
    );
}

pub(crate) fn invalid_record() {
    metrics::counter!(INVALID_RECORDS_TOTAL).increment(1);
}
