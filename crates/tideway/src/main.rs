//! The `tideway` command.
//!
//! `tideway demo` starts the logistics services on a Tideway RPC server, runs a short scripted
//! session of typed client calls against them (printing each request and answer), then keeps
//! serving until Ctrl-C, when it drains and stops.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use serde::Serialize;
use tideway_logistics::{
    Logistics, NewTrackingEvent, NewWaybill, Party, PricingClient, PricingServer, QuoteRequest,
    ServiceLevel, TrackingClient, TrackingServer, WaybillStatus, WaybillsClient, WaybillsServer,
};
use tideway_rpc::{Client, ClientConfig, RpcError, Server, ServerConfig, ServiceDescriptor};

#[derive(Debug, Parser)]
#[command(
    name = "tideway",
    version,
    about = "Tideway microservice engine and API gateway"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the logistics demo services and a scripted client session against them.
    Demo {
        /// Address of the RPC server.
        #[arg(long, default_value = "127.0.0.1:7070", env = "TIDEWAY_DEMO_RPC_ADDR")]
        rpc_addr: SocketAddr,
        /// Exit after the scripted session instead of serving until Ctrl-C.
        #[arg(long)]
        exit_after_session: bool,
    },
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    match cli.command {
        Command::Demo {
            rpc_addr,
            exit_after_session,
        } => runtime.block_on(demo(rpc_addr, exit_after_session)),
    }
}

async fn demo(rpc_addr: SocketAddr, exit_after_session: bool) -> anyhow::Result<()> {
    let services = Logistics::default();
    let server = Server::builder()
        .config(ServerConfig::default())
        .add_service(WaybillsServer::new(services.clone()))
        .add_service(TrackingServer::new(services.clone()))
        .add_service(PricingServer::new(services))
        .bind(rpc_addr)
        .await
        .with_context(|| format!("cannot serve RPC on {rpc_addr}"))?;
    let addr = server.local_addr();
    println!("Tideway RPC server listening on {addr}\n");
    for descriptor in [
        WaybillsClient::DESCRIPTOR,
        TrackingClient::DESCRIPTOR,
        PricingClient::DESCRIPTOR,
    ] {
        print_routes(descriptor);
    }

    let client = Client::new(addr, ClientConfig::default())?;
    session(&client).await?;

    if exit_after_session {
        server.shutdown().await;
        return Ok(());
    }
    println!("\nServing on {addr}; press Ctrl-C to stop.");
    tokio::signal::ctrl_c()
        .await
        .context("cannot listen for Ctrl-C")?;
    println!("Draining in-flight calls and stopping...");
    server.shutdown().await;
    Ok(())
}

fn print_routes(descriptor: ServiceDescriptor) {
    println!("service {}", descriptor.name);
    for m in descriptor.methods {
        println!("  {:<6} {:<40} -> {}", m.http_method, m.path, m.full_name);
    }
}

fn show<T: Serialize>(what: &str, result: &Result<T, RpcError>) {
    match result {
        Ok(value) => println!(
            "\n{what}\n  -> {}",
            serde_json::to_string(value).unwrap_or_else(|e| format!("<unprintable: {e}>"))
        ),
        Err(err) => println!("\n{what}\n  -> error {err}"),
    }
}

/// A short tour of the services through the generated typed clients.
async fn session(client: &Client) -> anyhow::Result<()> {
    let waybills = WaybillsClient::new(client.clone());
    let tracking = TrackingClient::new(client.clone());
    let pricing = PricingClient::new(client.clone());

    let new = NewWaybill {
        sender: Party {
            name: "Harbour Books".into(),
            address: "1 Quay Street, Port Town".into(),
            zone: 1,
        },
        recipient: Party {
            name: "Ada Lovelace".into(),
            address: "12 Hill Road, Upton".into(),
            zone: 3,
        },
        weight_grams: 1_250,
        service_level: ServiceLevel::Express,
    };
    let created = waybills.create(new.clone()).await;
    show("Waybills/create (express, 1.25 kg, zone 1 -> 3)", &created);
    let id = created.context("the demo's first call failed")?.id;

    show(
        &format!("Waybills/get {id}"),
        &waybills.get(id.clone()).await,
    );
    for (status, location) in [
        (WaybillStatus::PickedUp, "Port Town depot"),
        (WaybillStatus::InTransit, "Central hub"),
    ] {
        let event = NewTrackingEvent {
            status,
            location: location.into(),
            note: None,
        };
        show(
            &format!("Tracking/append {id} {status:?} at {location}"),
            &tracking.append(id.clone(), event).await,
        );
    }
    show(
        &format!("Tracking/history {id}"),
        &tracking.history(id.clone()).await,
    );
    show(
        "Pricing/quote (2 kg, zone 1 -> 4, standard)",
        &pricing
            .quote(QuoteRequest {
                weight_grams: 2_000,
                from_zone: 1,
                to_zone: 4,
                service_level: ServiceLevel::Standard,
            })
            .await,
    );
    show(
        "Waybills/list (offset 0, limit 10)",
        &waybills.list(Some(0), Some(10)).await,
    );
    let mut invalid = new;
    invalid.weight_grams = 0;
    show(
        "Waybills/create with weight 0 (rejected, field named)",
        &waybills.create(invalid).await,
    );
    show(
        "Waybills/get WB-missing (not found)",
        &waybills
            .clone()
            .with_options(tideway_rpc::CallOptions::with_timeout(Duration::from_secs(
                1,
            )))
            .get("WB-missing".into())
            .await,
    );
    Ok(())
}
