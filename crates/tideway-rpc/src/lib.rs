//! Tideway's RPC transport: calls multiplexed over TCP, with deadlines, cancellation and a bound on
//! every queue and map.
//!
//! The bytes on the wire are `tideway-wire`'s frames; this crate owns the sockets and tasks.
//!
//! # Pieces
//!
//! - [`Server`] (`server.rs`): accept loop; per connection a reader task that decodes frames and
//!   spawns one task per request, and a writer task fed by a bounded queue that coalesces frames
//!   into few writes. The reader never waits for a handler. Limits (per connection, per server)
//!   are enforced with permits taken without waiting: over a limit the answer is `Overloaded` at
//!   once. Unknown methods get `NotFound` at once; panics become `Internal`; a handler past its
//!   deadline is dropped and answered `DeadlineExceeded`; a Cancel frame drops it.
//!   [`ServerHandle::shutdown`] sends GoAway, drains in-flight calls within a timeout, closes.
//! - [`Client`] (`client.rs`): a handle to one endpoint with a configurable number of lazily
//!   opened connections, reconnect backoff and keep-alive pings. Each call registers in a bounded
//!   pending map through a drop guard, so the entry goes away on every path: reply, deadline,
//!   caller dropped (which also sends Cancel), connection lost (which fails every pending call at
//!   once with `Unavailable`). A connection whose keep-alive ping goes unanswered takes no new
//!   calls; the calls already on it keep their deadlines (a silent server has not answered in
//!   time: `DeadlineExceeded`), and it closes once they are gone.
//! - [`CallContext`]: the deadline, metadata and method of the call a handler serves.
//! - [`ServiceDispatch`] and the descriptors: what `#[service]` (crate `tideway-macros`)
//!   generates code against. A descriptor may carry a JSON Schema of each argument
//!   ([`ParamDescriptor::schema`], with `#[service(schema)]`), built with the re-exported
//!   [`schemars`].
//! - [`RpcError`]: the one error type of calls, a [`Status`] and a message.
//! - [`CallObserver`] (`observe.rs`): hooks on both sides of a call for tracing; the server's is
//!   set on its builder, a client's with [`observe_client_calls`] around the calls.
//!
//! # Deadlines
//!
//! A call's timeout covers connecting, queueing and the call. What is left of it travels in the
//! Request frame; the server starts its own clock on arrival and drops the handler when it runs
//! out, so neither side waits longer than the caller.
//!
//! # Cancel safety
//!
//! Dropping a [`Client::call`] future at any await point is safe and is how callers cancel: the
//! pending entry is removed and, if the request was already written, a Cancel frame follows.

mod client;
mod config;
mod context;
mod error;
mod observe;
mod server;
mod service;
mod transport;

#[doc(hidden)]
pub mod __private;

pub use client::{CallOptions, Client};
pub use config::*;
pub use context::CallContext;
pub use error::RpcError;
pub use observe::{CallObserver, CallSide, ObservedCall, observe_client_calls};
pub use server::{ServeError, Server, ServerBuilder, ServerHandle};
pub use service::{
    HandlerFuture, MethodDescriptor, ParamDescriptor, ServiceDescriptor, ServiceDispatch,
};
pub use tideway_wire::{Codec, Metadata, Status};

/// The `schemars` crate, for the JSON Schemas `#[service(schema)]` publishes: derive
/// [`JsonSchema`] on argument types with `#[schemars(crate = "tideway_rpc::schemars")]` (or
/// `"tideway::schemars"` through the facade), so a service crate need not depend on it.
pub use schemars;
/// Derive (and trait) for the argument types of a `#[service(schema)]` service.
pub use schemars::JsonSchema;
