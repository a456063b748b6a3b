//! Tideway: a microservice engine and API gateway in Rust whose memory stays bounded under any
//! traffic.
//!
//! This facade is what service authors depend on. It re-exports the RPC engine
//! (`tideway-rpc`: [`Server`], [`Client`], [`RpcError`], ...) and the [`service`] macro
//! (`tideway-macros`), and the wire protocol as [`wire`].
//!
//! ```ignore
//! #[tideway::service(name = "logistics.Waybills")]
//! pub trait Waybills {
//!     #[route(GET, "/api/waybills/{id}")]
//!     async fn get(&self, id: String) -> Result<Waybill, tideway::RpcError>;
//! }
//! // generates WaybillsClient (typed stub) and WaybillsServer<T> (dispatch)
//! ```
//!
//! The `tideway` binary (`src/main.rs`) runs the demo and, later, the gateway.

pub use tideway_macros::service;
pub use tideway_rpc::*;
pub use tideway_wire as wire;
