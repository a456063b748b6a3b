//! `#[service]`: turns a Rust trait into a Tideway RPC service — a typed client, a server
//! adapter and the route table the gateway learns its HTTP routes from.
//!
//! Service authors use it through the facade (`tideway::service`) or directly
//! (`tideway_macros::service`); the generated code only names the runtime (`tideway_rpc`, or
//! `tideway` when the calling crate depends on the facade), so a service crate needs neither
//! `serde` nor `bytes` as a direct dependency.
//!
//! # Example
//!
//! ```
//! use serde::{Deserialize, Serialize};
//! use tideway_macros::service;
//! use tideway_rpc::RpcError;
//!
//! #[derive(Debug, Serialize, Deserialize)]
//! pub struct CreateWaybill {
//!     pub sender: String,
//!     pub grams: u32,
//! }
//!
//! #[derive(Debug, Clone, Serialize, Deserialize)]
//! pub struct Waybill {
//!     pub id: String,
//!     pub grams: u32,
//! }
//!
//! /// Waybills of the logistics demo.
//! #[service(name = "logistics.Waybills")]
//! pub trait Waybills {
//!     /// Creates a waybill from the request body.
//!     #[route(POST, "/api/waybills")]
//!     async fn create(&self, #[body] req: CreateWaybill) -> Result<Waybill, RpcError>;
//!
//!     /// One waybill by id.
//!     #[route(GET, "/api/waybills/{id}", timeout_ms = 2000)]
//!     async fn get(&self, id: String) -> Result<Waybill, RpcError>;
//!
//!     /// A page of waybills, at the conventional route `POST /api/logistics/waybills/list`.
//!     async fn list(&self, offset: u32, limit: Option<u32>) -> Result<Vec<Waybill>, RpcError>;
//! }
//!
//! struct Store;
//!
//! impl Waybills for Store {
//!     async fn create(&self, req: CreateWaybill) -> Result<Waybill, RpcError> {
//!         Ok(Waybill { id: "WB1".into(), grams: req.grams })
//!     }
//!     async fn get(&self, id: String) -> Result<Waybill, RpcError> {
//!         Err(RpcError::not_found(format!("no waybill {id}")))
//!     }
//!     async fn list(&self, _offset: u32, _limit: Option<u32>) -> Result<Vec<Waybill>, RpcError> {
//!         Ok(Vec::new())
//!     }
//! }
//!
//! // The server side: register `server` with the RPC server.
//! let server = WaybillsServer::new(Store);
//! # let _ = server;
//! // The client side: `WaybillsClient::new(client).get("WB1".into()).await`.
//! let route = WaybillsClient::DESCRIPTOR.method("get").unwrap();
//! assert_eq!((route.http_method, route.path), ("GET", "/api/waybills/{id}"));
//! ```
//!
//! # What it generates
//!
//! For a trait `Waybills`, in the trait's module and with the trait's visibility:
//!
//! - **`Waybills`** itself, rewritten so that every method returns an
//!   `impl Future<Output = Result<T, RpcError>> + Send`, and with `Send + Sync + 'static`
//!   supertraits, so the server can run calls on any task. Implementations still write
//!   `async fn`. `#[route]`, `#[body]` and `#[schemars]` are removed; docs and other attributes
//!   stay.
//! - **`WaybillsClient`**: `new(Client)`, `with_options(CallOptions)`, the associated const
//!   `DESCRIPTOR` and `descriptor()`, and one `async fn` per method that sends the arguments as
//!   an object keyed by argument name and decodes the result.
//! - **`WaybillsServer<T: Waybills>`**: `new(T)`, `from_arc(Arc<T>)`, `Clone` and `Debug` (for
//!   any `T`), and `ServiceDispatch`, which decodes a call's arguments, runs the method and
//!   encodes its result.
//!
//! # Routes and argument binding
//!
//! `#[route(METHOD, "/path/{param}", timeout_ms = N)]` gives a method its HTTP route; `METHOD` is
//! `GET`, `POST`, `PUT`, `PATCH` or `DELETE`. Every `{param}` must name an argument. Without
//! `#[route]` a method gets the conventional route `POST /api/{service}/{method}`, where
//! `{service}` is the service name lower-cased with `.` as `/`. `#[service(name = "..")]` sets
//! the service name (by default the trait's name); `#[service(crate = "..")]` overrides the
//! path to the runtime; `#[service(schema)]` publishes argument schemas (see below).
//!
//! Arguments travel as one object whose keys are the argument names. A `#[body]` argument (at
//! most one, not on `GET` or `DELETE` routes) is flattened into that object: its fields sit at
//! the top level beside the other arguments, which is how an HTTP JSON body maps onto it.
//! A missing `Option<_>` argument is `None`; keys that name no argument are ignored.
//!
//! # Schemas
//!
//! `#[service(schema)]` makes the descriptor carry a JSON Schema of every argument
//! (`ParamDescriptor::schema`), which the registry publishes and the gateway's OpenAPI document
//! uses for request bodies and parameters. Every argument type must then implement
//! `JsonSchema`: derive it through the runtime's re-export (`#[derive(tideway_rpc::JsonSchema)]`
//! with `#[schemars(crate = "tideway_rpc::schemars")]`), and state the rules the service enforces
//! with schemars attributes (`length`, `range`, `regex`, ...), so that what the schema accepts
//! the service accepts too. An argument takes `#[schemars(..)]` attributes itself, e.g.
//! `#[schemars(range(min = 1, max = 100))] limit: Option<u32>`; an `Option<T>` argument other
//! than the body publishes the schema of `T`. Without `schema` nothing is required of the types
//! and no schema is published.
//!
//! # Errors
//!
//! Every problem is a compile error pointing at the offending tokens, all reported in one go:
//! methods that are not `async fn (&self, ..) -> Result<T, RpcError>`, generics, argument
//! patterns, borrowed argument or result types, bad routes and path parameters, duplicate
//! methods or routes, default bodies, and trait items other than methods.
//!
//! # Pieces
//!
//! - `args`: the `#[service(..)]` arguments and the path to the runtime.
//! - `route`: `#[route(..)]` and the syntax of path templates.
//! - `model`: reads the trait into a checked `Service` (methods, arguments, routes).
//! - `expand`: generates the code from a `Service`.

use proc_macro::TokenStream;

mod args;
mod expand;
mod model;
mod route;

/// Makes a trait a Tideway service: see the [crate docs](crate) for the generated items, the
/// routes and the rules.
#[proc_macro_attribute]
pub fn service(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand::service(attr.into(), item.into()).into()
}
