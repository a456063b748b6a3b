//! Registers one instance in etcd and keeps it registered until killed: the smallest use of
//! `EtcdRegistry` by a service. The etcd tests run it as a separate process and kill it with
//! SIGKILL to check that its instance disappears when the lease expires.
//!
//! ```sh
//! cargo run -p tideway-registry --features etcd --example registrant -- \
//!     http://127.0.0.1:2379 logistics.Pricing p-1 127.0.0.1:7001 10
//! ```
//!
//! Arguments: ENDPOINT SERVICE ID ADDR TTL_SECONDS [PREFIX]. Prints `registered` once the
//! instance is stored. SIGINT or SIGTERM deregister it gracefully.

use std::time::Duration;

use tideway_registry::{EtcdConfig, EtcdRegistry, Registry, ServiceInstance};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [endpoint, service, id, addr, ttl, rest @ ..] = args.as_slice() else {
        return Err("usage: registrant ENDPOINT SERVICE ID ADDR TTL_SECONDS [PREFIX]".into());
    };
    let ttl = Duration::from_secs(ttl.parse()?);
    let mut config = EtcdConfig::new([endpoint.as_str()]);
    config.lease_ttl = ttl;
    config.keep_alive_interval = (ttl / 3).max(Duration::from_millis(200));
    if let Some(prefix) = rest.first() {
        config.prefix = prefix.clone();
    }
    let registry = EtcdRegistry::connect(config).await?;
    let registration = registry
        .register(ServiceInstance::new(
            service.as_str(),
            id.as_str(),
            addr.parse()?,
        ))
        .await?;
    println!("registered");

    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    registration.deregister().await?;
    Ok(())
}
