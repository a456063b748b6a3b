//! Tideway: a microservice engine and API gateway in Rust whose memory stays bounded under any
//! traffic.
//!
//! This facade is what service authors depend on. It re-exports the RPC engine
//! (`tideway-rpc`: [`Server`], [`Client`], [`RpcError`], ...) and the [`service`] macro
//! (`tideway-macros`), and the wire protocol as [`wire`].
//!
//! ```
//! use tideway::{Client, ClientConfig, RpcError, Server};
//!
//! #[tideway::service(name = "demo.Greeter")]
//! pub trait Greeter {
//!     #[route(GET, "/api/greet/{name}")]
//!     async fn greet(&self, name: String) -> Result<String, RpcError>;
//! }
//!
//! struct Polite;
//! impl Greeter for Polite {
//!     async fn greet(&self, name: String) -> Result<String, RpcError> {
//!         Ok(format!("Hello, {name}"))
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let server = Server::builder()
//!     .add_service(GreeterServer::new(Polite))
//!     .bind("127.0.0.1:0".parse()?)
//!     .await?;
//! let greeter = GreeterClient::new(Client::new(server.local_addr(), ClientConfig::default())?);
//! assert_eq!(greeter.greet("Ada".into()).await?, "Hello, Ada");
//! assert_eq!(GreeterClient::DESCRIPTOR.methods[0].path, "/api/greet/{name}");
//! server.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! The `tideway` binary (`src/main.rs`) runs the demo and, later, the gateway.

pub use tideway_macros::service;
pub use tideway_rpc::*;
pub use tideway_wire as wire;
