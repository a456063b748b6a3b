//! The etcd v3 backend (crate feature `etcd`), through the `etcd-client` crate.
//!
//! Key layout: `{prefix}/services/{service}/{instance_id}` → the instance as JSON, bound to the
//! registrant's lease. See the crate docs.
//!
//! A registration's lease lifecycle (one task per registration):
//!
//! ```text
//!  register: grant(TTL) + put(key, lease) ──► Active ── keep-alive every interval ──┐
//!                                              ▲   │ ttl > 0: lease good until now + ttl
//!                                              │   │ error: retry at the next tick
//!                          grant + put (backoff)│   ▼ etcd says the lease is gone, or errors
//!                                          Recovering ◄──────── past the lease's expiry
//!  deregister / drop (any state): revoke the lease ──► Closed
//! ```
//!
//! Every request has a deadline (`request_timeout`): the client's balanced channel waits rather
//! than fails while no endpoint is reachable. With several endpoints, a request the balancer
//! sent to a member that refuses connections (one that is down) is sent again: the balancer keeps
//! picking dead members, so without that one member down would fail a share of all requests.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use etcd_client::{
    Client, ConnectOptions, GetOptions, KeyValue, LeaseKeepAliveStream, LeaseKeeper, PutOptions,
    WatchOptions,
};
use futures::future::BoxFuture;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use crate::backoff::Backoff;
use crate::config::{EtcdConfig, MAX_INSTANCE_JSON_BYTES};
use crate::error::RegistryError;
use crate::instance::ServiceInstance;
use crate::metrics::{self, invalid_record};
use crate::registry::{
    Listing, Registration, RegistrationHandle, RegistrationState, Registry, Revision, WatchEvent,
    WatchStream,
};

const BACKEND: &str = "etcd";

/// The key prefix every instance lives under: `{prefix}/services/`.
pub fn services_prefix(prefix: &str) -> String {
    format!("{prefix}/services/")
}

/// The key of one instance: `{prefix}/services/{service}/{id}`.
pub fn instance_key(prefix: &str, service: &str, id: &str) -> String {
    format!("{prefix}/services/{service}/{id}")
}

/// The first key after every key that starts with `prefix` (etcd's range end for a prefix).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

fn unavailable(op: &'static str, e: impl Into<crate::error::BoxError>) -> RegistryError {
    RegistryError::Unavailable {
        backend: BACKEND,
        op,
        source: e.into(),
    }
}

/// Pause before sending again a request that an endpoint refused.
const RESEND_PAUSE: Duration = Duration::from_millis(20);

/// Whether a request an endpoint refused is sent again: only with several endpoints, where the
/// balancer may pick a live member next (it picks at random and does not avoid dead ones). With
/// a single endpoint there is nobody else to ask, and an unreachable etcd is reported at once.
fn resend_refused(config: &EtcdConfig) -> bool {
    config.endpoints.len() > 1
}

/// Whether `e` says the request was never sent: the endpoint refused the connection.
fn is_not_sent(e: &etcd_client::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = match e {
        etcd_client::Error::GRpcStatus(status) => Some(status),
        etcd_client::Error::TransportError(e) => Some(e),
        etcd_client::Error::IoError(e) => Some(e),
        _ => None,
    };
    while let Some(e) = source {
        if e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
        {
            return true;
        }
        source = e.source();
    }
    false
}

/// Runs one etcd request (`request` makes an attempt) with a deadline over every attempt. With
/// several endpoints, an attempt an endpoint refused is made again until the deadline (see
/// [`resend_refused`]); the last refusal is the error when none got through.
async fn call<T, Fut>(
    config: &EtcdConfig,
    op: &'static str,
    mut request: impl FnMut() -> Fut,
) -> Result<T, RegistryError>
where
    Fut: Future<Output = Result<T, etcd_client::Error>>,
{
    let deadline = Instant::now() + config.request_timeout;
    let mut attempt = 1u32;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, request()).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(e))
                if resend_refused(config)
                    && is_not_sent(&e)
                    && Instant::now() + RESEND_PAUSE < deadline =>
            {
                tracing::debug!(op, attempt, error = %e, "etcd endpoint refused the connection; sending again");
                attempt += 1;
                tokio::time::sleep(RESEND_PAUSE).await;
            }
            Ok(Err(e)) => return Err(unavailable(op, e)),
            Err(_) => {
                return Err(RegistryError::Timeout {
                    backend: BACKEND,
                    op,
                    after: config.request_timeout,
                });
            }
        }
    }
}

/// Whether etcd said the lease does not exist (expired, revoked, or etcd lost its data).
fn is_lease_not_found(e: &etcd_client::Error) -> bool {
    // etcd-client reports it as a message, not a code: "lease not found" when opening a
    // keep-alive stream, "etcdserver: requested lease not found" from other calls.
    e.to_string().contains("lease not found")
}

/// A registry in etcd. Cheap to clone; clones share the connection.
#[derive(Clone)]
pub struct EtcdRegistry {
    client: Client,
    config: Arc<EtcdConfig>,
}

impl fmt::Debug for EtcdRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdRegistry")
            .field("endpoints", &self.config.endpoints)
            .field("prefix", &self.config.prefix)
            .finish_non_exhaustive()
    }
}

impl EtcdRegistry {
    /// Validates `config` and creates the client. Connections are made lazily: this succeeds
    /// while etcd is down (a catalog then reports `Disconnected` until it is up), except with
    /// `user` set, which authenticates at once.
    pub async fn connect(config: EtcdConfig) -> Result<EtcdRegistry, RegistryError> {
        config.validate()?;
        let mut options = ConnectOptions::new()
            // A member cut off from its cluster's leader fails requests and cancels watches
            // instead of serving stale data silently.
            .with_require_leader(true)
            .with_connect_timeout(config.connect_timeout)
            .with_keep_alive(
                config.http2_keep_alive_interval,
                config.http2_keep_alive_timeout,
            );
        if let Some(user) = &config.user {
            options = options.with_user(user.name.clone(), user.password.clone());
        }
        let client = call(&config, "connect", || {
            Client::connect(&config.endpoints, Some(options.clone()))
        })
        .await?;
        Ok(EtcdRegistry {
            client,
            config: Arc::new(config),
        })
    }

    /// The etcd client (for health checks and tools).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The settings.
    pub fn config(&self) -> &EtcdConfig {
        &self.config
    }

    /// The key of one instance under this registry's prefix.
    pub fn key_of(&self, service: &str, id: &str) -> String {
        instance_key(&self.config.prefix, service, id)
    }
}

/// Grants a lease and puts the instance under it; returns the lease id.
async fn grant_and_put(
    client: &Client,
    config: &EtcdConfig,
    key: &str,
    value: &[u8],
) -> Result<i64, RegistryError> {
    let ttl = config.lease_ttl_secs();
    let lease = call(config, "lease grant", || {
        let mut client = client.clone();
        async move { client.lease_grant(ttl, None).await }
    })
    .await?
    .id();
    let put = call(config, "put", || {
        let mut client = client.clone();
        let (key, value) = (key.to_owned(), value.to_vec());
        async move {
            client
                .put(key, value, Some(PutOptions::new().with_lease(lease)))
                .await
        }
    })
    .await;
    if let Err(e) = put {
        // The lease would expire by itself; revoking it is only tidier.
        revoke_in_background(client.clone(), Arc::new(config.clone()), lease);
        return Err(e);
    }
    Ok(lease)
}

/// Revokes `lease` (one attempt, with a deadline; the lease expires by itself otherwise).
async fn revoke(client: &Client, config: &EtcdConfig, lease: i64) -> Result<(), RegistryError> {
    call(config, "lease revoke", || {
        let mut client = client.clone();
        async move { client.lease_revoke(lease).await }
    })
    .await
    .map(drop)
}

fn revoke_in_background(client: Client, config: Arc<EtcdConfig>, lease: i64) {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move {
            let _ = revoke(&client, &config, lease).await;
        });
    }
}

/// Decodes the (service, id) of a key under `prefix` (`{prefix}{service}/{id}`).
fn parse_key<'k>(prefix: &str, key: &'k [u8]) -> Option<(&'k str, &'k str)> {
    let key = std::str::from_utf8(key).ok()?;
    let rest = key.strip_prefix(prefix)?;
    let (service, id) = rest.split_once('/')?;
    if service.is_empty() || id.is_empty() || id.contains('/') {
        return None;
    }
    Some((service, id))
}

/// Decodes a stored instance; `Err` carries the key's (service, id) when the key itself is
/// valid, so a watcher can drop a record that turned bad.
fn decode(prefix: &str, kv: &KeyValue) -> Result<ServiceInstance, Option<(String, String)>> {
    let Some((service, id)) = parse_key(prefix, kv.key()) else {
        invalid_record();
        tracing::warn!(key = %String::from_utf8_lossy(kv.key()), "etcd registry: key outside the layout {{prefix}}/services/{{service}}/{{id}} skipped");
        return Err(None);
    };
    let skip = |reason: String| {
        invalid_record();
        tracing::warn!(%service, %id, %reason, "etcd registry: invalid instance record skipped");
        Err(Some((service.to_owned(), id.to_owned())))
    };
    match ServiceInstance::from_json(kv.value()) {
        Ok(instance) if instance.service == service && instance.id == id => Ok(instance),
        Ok(instance) => skip(format!(
            "the value names {}/{}, the key {service}/{id}",
            instance.service, instance.id
        )),
        Err(reason) => skip(reason),
    }
}

/// Lists every instance at one revision, in pages at that revision.
async fn list_at(
    client: &Client,
    config: &EtcdConfig,
) -> Result<(Revision, Vec<Arc<ServiceInstance>>), RegistryError> {
    let prefix = services_prefix(&config.prefix);
    let end = prefix_end(prefix.as_bytes());
    let page = i64::try_from(config.list_page_size).unwrap_or(i64::MAX);
    // Room for a full page of the largest instances plus keys and headers.
    let max_message = config
        .list_page_size
        .saturating_mul(MAX_INSTANCE_JSON_BYTES + 1024)
        .saturating_add(64 * 1024)
        .max(4 * 1024 * 1024);
    let kv = client.kv_client().max_decoding_message_size(max_message);
    let mut start = prefix.clone().into_bytes();
    let mut revision: i64 = 0;
    let mut instances = Vec::new();
    loop {
        let mut options = GetOptions::new().with_range(end.clone()).with_limit(page);
        if revision > 0 {
            options = options.with_revision(revision);
        }
        let response = call(config, "list", || {
            let (mut kv, start, options) = (kv.clone(), start.clone(), options.clone());
            async move { kv.get(start, Some(options)).await }
        })
        .await?;
        if revision == 0 {
            revision = response.header().map_or(0, |h| h.revision());
            if revision <= 0 {
                return Err(unavailable("list", "etcd sent no revision"));
            }
        }
        for kv in response.kvs() {
            if let Ok(instance) = decode(&prefix, kv) {
                instances.push(Arc::new(instance));
            }
        }
        match response.kvs().last() {
            Some(last) if response.more() => {
                start = last.key().to_vec();
                start.push(0);
            }
            _ => break,
        }
    }
    Ok((u64::try_from(revision).unwrap_or(0), instances))
}

impl Registry for EtcdRegistry {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn register(
        &self,
        instance: ServiceInstance,
    ) -> BoxFuture<'_, Result<Registration, RegistryError>> {
        Box::pin(async move {
            let value = instance.to_json()?;
            let key = self.key_of(&instance.service, &instance.id);
            let lease = grant_and_put(&self.client, &self.config, &key, &value).await?;
            tracing::info!(%key, lease, "registered in etcd");
            let (state_tx, state_rx) = watch::channel(RegistrationState::Active);
            let (stop_tx, stop_rx) = oneshot::channel();
            let keeper = Keeper {
                client: self.client.clone(),
                config: self.config.clone(),
                key,
                value,
                lease,
                state: state_tx,
                stop: stop_rx,
            };
            tokio::spawn(keeper.run());
            Ok(Registration::new(
                Arc::new(instance),
                Box::new(EtcdHandle {
                    state: state_rx,
                    stop: Some(stop_tx),
                }),
            ))
        })
    }

    fn deregister<'a>(
        &'a self,
        service: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, Result<bool, RegistryError>> {
        Box::pin(async move {
            let key = self.key_of(service, id);
            let response = call(&self.config, "delete", || {
                let (mut client, key) = (self.client.clone(), key.clone());
                async move { client.delete(key, None).await }
            })
            .await?;
            Ok(response.deleted() > 0)
        })
    }

    fn list(&self) -> BoxFuture<'_, Result<Listing, RegistryError>> {
        Box::pin(async move {
            let (revision, instances) = list_at(&self.client, &self.config).await?;
            Ok(Listing {
                revision,
                instances,
            })
        })
    }

    fn watch(&self, after: Option<Revision>) -> WatchStream {
        let client = self.client.clone();
        let config = self.config.clone();
        Box::pin(async_stream::stream! {
            let client = client;
            let prefix = services_prefix(&config.prefix);
            let mut after = after;
            'resync: loop {
                // Where to watch from: the revision asked for, or a fresh list's.
                let start = match after {
                    Some(revision) => revision,
                    None => match list_at(&client, &config).await {
                        Ok((revision, instances)) => {
                            yield Ok(WatchEvent::Snapshot { revision, instances });
                            revision
                        }
                        Err(e) => {
                            yield Err(e);
                            return;
                        }
                    },
                };
                let resuming = after.is_some();
                let options = WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(i64::try_from(start).unwrap_or(i64::MAX - 1) + 1)
                    // Large revisions arrive in several responses rather than one over the
                    // message limit (which would fail the same way after every reconnect).
                    .with_fragment();
                let watch = call(&config, "watch", || {
                    let (mut client, prefix, options) =
                        (client.clone(), prefix.clone(), options.clone());
                    async move { client.watch(prefix, Some(options)).await }
                })
                .await;
                let mut stream = match watch {
                    Ok(stream) => stream,
                    Err(e) => {
                        yield Err(e);
                        return;
                    }
                };
                loop {
                    let response = match stream.message().await {
                        Ok(Some(response)) => response,
                        Ok(None) => {
                            yield Err(unavailable("watch", "etcd closed the watch stream"));
                            return;
                        }
                        Err(e) => {
                            yield Err(unavailable("watch", e));
                            return;
                        }
                    };
                    if response.canceled() {
                        if response.compact_revision() > 0 {
                            tracing::info!(
                                after = start,
                                compacted = response.compact_revision(),
                                "etcd compacted the revisions this watcher needs; listing again"
                            );
                            after = None;
                            continue 'resync;
                        }
                        yield Err(unavailable(
                            "watch",
                            format!("etcd cancelled the watch: {}", response.cancel_reason()),
                        ));
                        return;
                    }
                    if response.created() && resuming {
                        let now = response.header().map_or(0, |h| h.revision());
                        if u64::try_from(now).unwrap_or(0) < start {
                            // The store's revision went backwards: this is another etcd (its
                            // data was lost or replaced). Nothing known can be trusted.
                            tracing::warn!(
                                after = start,
                                revision = now,
                                "etcd is behind the revision this watcher saw; listing again"
                            );
                            after = None;
                            continue 'resync;
                        }
                        yield Ok(WatchEvent::Synced { revision: start });
                    }
                    for event in response.events() {
                        let Some(kv) = event.kv() else { continue };
                        let revision = u64::try_from(kv.mod_revision()).unwrap_or(0);
                        // A deleted key comes back with version 0 (etcd's tombstone); reading
                        // that rather than `event_type()` avoids its panic on unknown types.
                        if kv.version() == 0 {
                            if let Some((service, id)) = parse_key(&prefix, kv.key()) {
                                yield Ok(WatchEvent::Delete {
                                    revision,
                                    service: service.to_owned(),
                                    id: id.to_owned(),
                                });
                            }
                            continue;
                        }
                        match decode(&prefix, kv) {
                            Ok(instance) => {
                                yield Ok(WatchEvent::Put { revision, instance: Arc::new(instance) });
                            }
                            // The key now holds garbage: whatever it described is gone.
                            Err(Some((service, id))) => {
                                yield Ok(WatchEvent::Delete { revision, service, id });
                            }
                            Err(None) => {}
                        }
                    }
                }
            }
        })
    }
}

type Reply = oneshot::Sender<Result<(), RegistryError>>;

#[derive(Debug)]
struct EtcdHandle {
    state: watch::Receiver<RegistrationState>,
    /// Sending asks the keeper to revoke and reply; dropping it asks the same without a reply.
    stop: Option<oneshot::Sender<Reply>>,
}

impl RegistrationHandle for EtcdHandle {
    fn state(&self) -> RegistrationState {
        self.state.borrow().clone()
    }

    fn deregister(mut self: Box<Self>) -> BoxFuture<'static, Result<(), RegistryError>> {
        let stop = self.stop.take();
        Box::pin(async move {
            let Some(stop) = stop else { return Ok(()) };
            let (reply_tx, reply_rx) = oneshot::channel();
            if stop.send(reply_tx).is_err() {
                return Ok(()); // the keeper is gone: nothing left to revoke
            }
            reply_rx.await.unwrap_or(Ok(()))
        })
    }
}

/// Keeps one registration's lease alive and registers again when it is lost.
struct Keeper {
    client: Client,
    config: Arc<EtcdConfig>,
    key: String,
    value: Vec<u8>,
    lease: i64,
    state: watch::Sender<RegistrationState>,
    stop: oneshot::Receiver<Reply>,
}

enum Phase {
    /// Deregistered (with someone waiting for the result) or dropped.
    Stop(Option<Reply>),
    /// The lease is gone; register again.
    Lost(String),
}

impl Keeper {
    async fn run(mut self) {
        let reply = loop {
            let reason = match self.keep_alive().await {
                Phase::Stop(reply) => break reply,
                Phase::Lost(reason) => reason,
            };
            ::metrics::counter!(metrics::LEASES_LOST_TOTAL).increment(1);
            tracing::warn!(key = %self.key, lease = self.lease, %reason, "etcd lease lost; registering again");
            self.state.send_replace(RegistrationState::Recovering {
                since: SystemTime::now(),
                last_error: reason,
            });
            if let Some(reply) = self.register_again().await {
                break reply;
            }
            self.state.send_replace(RegistrationState::Active);
            tracing::info!(key = %self.key, lease = self.lease, "registered in etcd again");
        };
        let result = match revoke(&self.client, &self.config, self.lease).await {
            Err(RegistryError::Unavailable { source, .. })
                if source
                    .downcast_ref::<etcd_client::Error>()
                    .is_some_and(is_lease_not_found) =>
            {
                Ok(()) // expired already: the key is gone either way
            }
            other => other,
        };
        match &result {
            Ok(()) => tracing::info!(key = %self.key, "deregistered from etcd"),
            Err(e) => {
                tracing::warn!(key = %self.key, error = %e, "etcd lease revoke failed; the instance disappears when the lease expires")
            }
        }
        self.state.send_replace(RegistrationState::Closed);
        if let Some(reply) = reply {
            let _ = reply.send(result);
        }
    }

    /// Keeps the lease alive until it is lost or the registration stops.
    async fn keep_alive(&mut self) -> Phase {
        let period = self.config.keep_alive_interval;
        let mut expires = Instant::now() + self.config.lease_ttl;
        let mut stream: Option<(LeaseKeeper, LeaseKeepAliveStream)> = None;
        let mut ticker = tokio::time::interval_at(Instant::now() + period, period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                reply = &mut self.stop => return Phase::Stop(reply.ok()),
                _ = ticker.tick() => {}
            }
            let sent = Instant::now();
            let outcome = tokio::select! {
                biased;
                reply = &mut self.stop => return Phase::Stop(reply.ok()),
                outcome = tokio::time::timeout(
                    self.config.request_timeout,
                    keep_alive_once(&self.client, &self.config, self.lease, &mut stream),
                ) => outcome,
            };
            let error = match outcome {
                Ok(Ok(Some(ttl))) if ttl > 0 => {
                    expires = sent + Duration::from_secs(ttl.unsigned_abs());
                    continue;
                }
                Ok(Ok(None)) => {
                    // A new keep-alive stream: its first answer renewed the lease to the TTL.
                    expires = sent + self.config.lease_ttl;
                    continue;
                }
                Ok(Ok(Some(_))) => {
                    return Phase::Lost("etcd no longer has the lease".into());
                }
                Ok(Err(e)) if is_lease_not_found(&e) => {
                    return Phase::Lost(format!("etcd no longer has the lease: {e}"));
                }
                Ok(Err(e)) => e.to_string(),
                Err(_) => format!(
                    "keep-alive timed out after {:?}",
                    self.config.request_timeout
                ),
            };
            stream = None;
            if Instant::now() >= expires {
                return Phase::Lost(format!(
                    "no keep-alive succeeded within the lease TTL; last error: {error}"
                ));
            }
            tracing::debug!(key = %self.key, %error, "etcd keep-alive failed; retrying");
        }
    }

    /// Grants a new lease and puts the instance again, with backoff, until it works or the
    /// registration stops. `Some(reply)`: stopped.
    async fn register_again(&mut self) -> Option<Option<Reply>> {
        let mut backoff = Backoff::new(self.config.backoff_min, self.config.backoff_max);
        loop {
            let attempt = tokio::select! {
                biased;
                reply = &mut self.stop => return Some(reply.ok()),
                attempt = grant_and_put(&self.client, &self.config, &self.key, &self.value) => attempt,
            };
            match attempt {
                Ok(lease) => {
                    // The old lease may live on (etcd restarted and restored it); it no longer
                    // holds the key.
                    revoke_in_background(self.client.clone(), self.config.clone(), self.lease);
                    self.lease = lease;
                    return None;
                }
                Err(e) => {
                    tracing::debug!(key = %self.key, error = %e, "registering in etcd again failed; retrying");
                    self.state.send_modify(|s| {
                        if let RegistrationState::Recovering { last_error, .. } = s {
                            *last_error = e.to_string();
                        }
                    });
                }
            }
            tokio::select! {
                biased;
                reply = &mut self.stop => return Some(reply.ok()),
                _ = tokio::time::sleep(backoff.next_wait()) => {}
            }
        }
    }
}

/// Sends one keep-alive on the open stream (opening one if needed) and returns the TTL etcd
/// answered; `None` when the stream was just opened (its first answer was checked to be > 0).
/// Opening is tried again when an endpoint refused it, as [`call`] does.
async fn keep_alive_once(
    client: &Client,
    config: &EtcdConfig,
    lease: i64,
    stream: &mut Option<(LeaseKeeper, LeaseKeepAliveStream)>,
) -> Result<Option<i64>, etcd_client::Error> {
    let Some((keeper, responses)) = stream else {
        // The caller's deadline bounds the attempts.
        let opened = loop {
            match client.clone().lease_keep_alive(lease).await {
                Err(e) if resend_refused(config) && is_not_sent(&e) => {
                    tokio::time::sleep(RESEND_PAUSE).await;
                }
                result => break result?,
            }
        };
        *stream = Some(opened);
        return Ok(None);
    };
    keeper.keep_alive().await?;
    match responses.message().await? {
        Some(response) => Ok(Some(response.ttl())),
        None => Err(etcd_client::Error::LeaseKeepAliveError(
            "etcd closed the keep-alive stream".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_layout() {
        assert_eq!(
            instance_key("/tideway", "logistics.Waybills", "wb-1"),
            "/tideway/services/logistics.Waybills/wb-1"
        );
        let prefix = services_prefix("/tideway");
        assert_eq!(
            parse_key(&prefix, b"/tideway/services/logistics.Waybills/wb-1"),
            Some(("logistics.Waybills", "wb-1"))
        );
        for bad in [
            &b"/tideway/services/a"[..],
            b"/tideway/services//x",
            b"/tideway/services/a/",
            b"/tideway/services/a/b/c",
            b"/other/services/a/b",
            b"/tideway/services/\xff/b",
        ] {
            assert_eq!(parse_key(&prefix, bad), None, "{bad:?}");
        }
        assert_eq!(prefix_end(b"/tideway/services/"), b"/tideway/services0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
    }
}
