//! What the `#[service]` macro generates code against: the server-side dispatch trait and the
//! route metadata of each method.

use std::fmt;
use std::pin::Pin;

use bytes::Bytes;
use tideway_wire::Codec;

use crate::error::RpcError;

/// The future a dispatched call runs: the encoded result or an error.
pub type HandlerFuture = Pin<Box<dyn Future<Output = Result<Bytes, RpcError>> + Send + 'static>>;

/// A service the server can route calls to. `#[service]` generates an implementation
/// (`<Trait>Server<T>`) for every service trait; hand-written ones are fine too.
pub trait ServiceDispatch: Send + Sync + 'static {
    /// The service's name and methods.
    fn descriptor(&self) -> &'static ServiceDescriptor;

    /// Starts the call to `method` (the part after `/`). Returns `None` at once for a method the
    /// service does not have, so the server answers `NotFound` without spawning anything. The
    /// future decodes `payload` with `codec` and encodes its result with the same codec.
    fn dispatch(&self, method: &str, codec: Codec, payload: Bytes) -> Option<HandlerFuture>;
}

impl fmt::Debug for dyn ServiceDispatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceDispatch")
            .field("service", &self.descriptor().name)
            .finish()
    }
}

/// A service: its name and methods. Published with each instance so gateways learn routes
/// without being redeployed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceDescriptor {
    /// Fully qualified name, e.g. `logistics.Waybills`.
    pub name: &'static str,
    /// The methods, in declaration order.
    pub methods: &'static [MethodDescriptor],
}

impl ServiceDescriptor {
    /// The method with this (short) name.
    pub fn method(&self, name: &str) -> Option<&'static MethodDescriptor> {
        self.methods.iter().find(|m| m.name == name)
    }
}

/// One method and its HTTP route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MethodDescriptor {
    /// Method name as declared, e.g. `create`.
    pub name: &'static str,
    /// `service/method`, the name that travels in Request frames.
    pub full_name: &'static str,
    /// HTTP method of the route, upper case (`GET`, `POST`, ...).
    pub http_method: &'static str,
    /// Path template of the route, with `{name}` parameters, e.g. `/api/waybills/{id}`.
    pub path: &'static str,
    /// `true` when no `#[route]` was given and the route is the conventional
    /// `POST /api/{service}/{method}`.
    pub conventional_route: bool,
    /// Per-route deadline in milliseconds, when `#[route(.., timeout_ms = N)]` set one.
    pub timeout_ms: Option<u64>,
    /// The arguments, bound by name from the payload object.
    pub params: &'static [ParamDescriptor],
}

/// One argument of a method.
#[derive(Debug, Clone, Copy)]
pub struct ParamDescriptor {
    /// Argument name: the key it is bound from in the payload object.
    pub name: &'static str,
    /// The Rust type as written, for documentation.
    pub rust_type: &'static str,
    /// `true` for a `#[body]` argument: it is the whole payload object (its fields sit at the top
    /// level of the payload, beside the other arguments), not a key in it.
    pub body: bool,
    /// Builds the argument's JSON Schema, when the service publishes schemas
    /// (`#[service(schema)]`): an OpenAPI 3.0 Schema Object (schemars' `openapi3` settings),
    /// with the definitions it refers to as `#/components/schemas/NAME` under
    /// `components.schemas` at its root. For an `Option<T>` argument other than the body, the
    /// schema of `T` (a missing key is `None`). `None` when the service publishes none.
    pub schema: Option<fn() -> serde_json::Value>,
}

impl PartialEq for ParamDescriptor {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
            && self.rust_type == other.rust_type
            && self.body == other.body
            && match (self.schema, other.schema) {
                (Some(a), Some(b)) => std::ptr::fn_addr_eq(a, b) || a() == b(),
                (None, None) => true,
                _ => false,
            }
    }
}

impl Eq for ParamDescriptor {}
