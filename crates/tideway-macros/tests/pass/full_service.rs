//! A service using every feature of `#[service]` compiles, and the generated items are
//! lint-clean under the workspace's lints.
#![deny(missing_docs, missing_debug_implementations, unreachable_pub, unused, warnings)]

use serde::{Deserialize, Serialize};
use tideway_macros::service;
use tideway_rpc::{CallOptions, Client, RpcError, ServiceDispatch};

/// A new waybill.
#[derive(Debug, Serialize, Deserialize)]
pub struct CreateWaybill {
    /// Who sends it.
    pub sender: String,
}

/// A waybill.
#[derive(Debug, Serialize, Deserialize)]
pub struct Waybill {
    /// Its id.
    pub id: String,
}

/// Waybills.
#[service(name = "logistics.Waybills")]
pub trait Waybills {
    /// Creates one.
    #[route(POST, "/api/waybills")]
    async fn create(&self, #[body] req: CreateWaybill, dry_run: Option<bool>)
        -> Result<Waybill, RpcError>;
    /// Gets one.
    #[route("get", "/api/waybills/{id}", timeout_ms = 2000)]
    async fn get(&self, id: String) -> Result<Waybill, RpcError>;
    /// Replaces one.
    #[route(Put, "/api/waybills/{id}",)]
    async fn replace(&self, id: String, #[body] req: CreateWaybill) -> Result<Waybill, RpcError>;
    /// Edits one.
    #[route(PATCH, "/api/waybills/{id}/sender/{sender}")]
    async fn set_sender(&self, id: String, sender: String) -> Result<(), RpcError>;
    /// Deletes one.
    #[route(DELETE, "/api/waybills/{id}")]
    async fn delete(&self, id: String) -> Result<(), tideway_rpc::RpcError>;
    /// Lists some, at the conventional route.
    async fn list(
        &self,
        offset: u32,
        limit: std::option::Option<u32>,
    ) -> std::result::Result<Vec<Waybill>, RpcError>;
    /// A raw identifier and no arguments.
    async fn r#type(&self) -> Result<std::collections::HashMap<String, (u32, Vec<u8>)>, RpcError>;
}

/// A crate-private service with supertraits of its own, reaching the runtime by an explicit
/// path.
#[service(crate = "::tideway_rpc")]
pub(crate) trait Echo: Send + Sync {
    /// Says it back.
    async fn say(&self, text: String) -> Result<String, RpcError>;
}

/// Argument types whose names would clash with names in generated code.
pub mod clashing_names {
    use serde::{Deserialize, Serialize};
    use tideway_macros::service;
    use tideway_rpc::RpcError;

    /// A type called `T`.
    #[derive(Debug, Serialize, Deserialize)]
    pub struct T(pub u32);

    /// A service with no methods yet.
    #[service]
    pub trait Empty {}

    /// Uses `T`.
    #[service]
    pub trait Generic {
        /// Takes a `T` and arguments named like generated locals.
        async fn take(
            &self,
            t: T,
            codec: u8,
            payload: Option<String>,
            method: String,
        ) -> Result<T, RpcError>;
    }
}

mod private {
    use tideway_macros::service;
    use tideway_rpc::RpcError;

    // A private trait: no docs needed, nothing generated is `pub`.
    #[service(crate = "crate::rt")]
    trait Hidden {
        async fn ping(&self) -> Result<(), RpcError>;
    }
}

/// The runtime under another name.
pub mod rt {
    pub use tideway_rpc::*;
}

struct Store;

impl Waybills for Store {
    async fn create(&self, req: CreateWaybill, _: Option<bool>) -> Result<Waybill, RpcError> {
        Ok(Waybill { id: req.sender })
    }
    async fn get(&self, id: String) -> Result<Waybill, RpcError> {
        Ok(Waybill { id })
    }
    async fn replace(&self, id: String, _: CreateWaybill) -> Result<Waybill, RpcError> {
        Ok(Waybill { id })
    }
    async fn set_sender(&self, _: String, _: String) -> Result<(), RpcError> {
        Ok(())
    }
    async fn delete(&self, _: String) -> Result<(), RpcError> {
        Ok(())
    }
    async fn list(&self, _: u32, _: Option<u32>) -> Result<Vec<Waybill>, RpcError> {
        Ok(Vec::new())
    }
    async fn r#type(
        &self,
    ) -> Result<std::collections::HashMap<String, (u32, Vec<u8>)>, RpcError> {
        Ok(Default::default())
    }
}

struct Parrot;

impl Echo for Parrot {
    async fn say(&self, text: String) -> Result<String, RpcError> {
        Ok(text)
    }
}

/// Client calls are `Send` futures with the declared result type.
pub async fn use_client(client: Client) -> Result<(), RpcError> {
    let waybills = WaybillsClient::new(client.clone()).with_options(CallOptions::default());
    let created: Waybill = waybills
        .create(CreateWaybill { sender: "a".into() }, None)
        .await?;
    let _: Waybill = waybills.get(created.id).await?;
    let _: Vec<Waybill> = waybills.list(0, Some(10)).await?;
    let _ = waybills.r#type().await?;
    let echo = EchoClient::new(client);
    let _: String = echo.say("hi".into()).await?;
    Ok(())
}

fn main() {
    fn spawnable<F: std::future::Future + Send + 'static>(_: F) {}
    if false {
        // Needs a real connection; type-checked only.
        let client: Client = unimplemented_client();
        spawnable(use_client(client));
    }

    let services: Vec<Box<dyn ServiceDispatch>> = vec![
        Box::new(WaybillsServer::new(Store)),
        Box::new(EchoServer::from_arc(std::sync::Arc::new(Parrot))),
    ];
    assert_eq!(services[0].descriptor().methods.len(), 7);
    assert_eq!(services[1].descriptor().name, "Echo");
    assert_eq!(WaybillsClient::descriptor().methods[6].name, "type");
    assert_eq!(EchoClient::DESCRIPTOR.methods[0].path, "/api/echo/say");
}

fn unimplemented_client() -> Client {
    panic!("not called")
}
