//! `#[service(schema)]` with `#[schemars]` attributes on arguments compiles lint-clean, through
//! the runtime's re-export of schemars (no direct dependency).
#![deny(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    unused,
    warnings
)]

use serde::{Deserialize, Serialize};
use tideway_macros::service;
use tideway_rpc::{JsonSchema, RpcError};

/// A new waybill.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[schemars(crate = "tideway_rpc::schemars")]
pub struct CreateWaybill {
    /// Who sends it.
    #[schemars(length(min = 1))]
    pub sender: String,
}

/// Waybills.
#[service(name = "logistics.Waybills", schema)]
pub trait Waybills {
    /// Creates one.
    #[route(POST, "/api/waybills")]
    async fn create(
        &self,
        #[body] req: CreateWaybill,
        dry_run: Option<bool>,
    ) -> Result<u32, RpcError>;
    /// Lists some.
    async fn list(
        &self,
        #[schemars(range(min = 1, max = 100))] limit: std::option::Option<u32>,
    ) -> Result<Vec<u32>, RpcError>;
}

fn main() {
    let create = WaybillsClient::DESCRIPTOR.method("create").unwrap();
    assert!(create.params.iter().all(|p| p.schema.is_some()));
}
