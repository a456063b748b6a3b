//! Drives a generated `<Trait>Server` through `ServiceDispatch::dispatch` directly (no network),
//! with both codecs, and checks the generated route table.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tideway_macros::service;
use tideway_rpc::{Codec, ParamDescriptor, RpcError, ServiceDispatch, Status};

/// The body of `create`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreateWaybill {
    /// Who sends the parcel.
    pub sender: String,
    /// Its weight.
    pub grams: u32,
}

/// A waybill.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Waybill {
    /// Its id.
    pub id: String,
    /// Who sends the parcel.
    pub sender: String,
    /// Its weight.
    pub grams: u32,
    /// A free-form note, from an optional argument.
    pub note: Option<String>,
}

/// Waybills, as the logistics demo has them.
#[service(name = "logistics.Waybills")]
pub trait Waybills {
    /// Creates a waybill from the request body.
    #[route(POST, "/api/waybills")]
    async fn create(
        &self,
        #[body] req: CreateWaybill,
        note: Option<String>,
    ) -> Result<Waybill, RpcError>;

    /// One waybill.
    #[route(GET, "/api/waybills/{id}", timeout_ms = 2000)]
    async fn get(&self, id: String) -> Result<Waybill, RpcError>;

    /// Ids, a page at a time.
    async fn list(&self, offset: u32, limit: Option<u32>) -> Result<Vec<String>, RpcError>;

    /// How many calls this instance served.
    async fn count(&self) -> Result<u64, RpcError>;

    /// Raw identifiers as method and argument names.
    #[route(delete, "/api/waybills/{type}")]
    async fn r#move(
        &self,
        r#type: String,
        r#for: Option<String>,
    ) -> Result<Option<String>, RpcError>;
}

#[derive(Debug, Default)]
struct Store {
    calls: AtomicU64,
}

impl Waybills for Store {
    async fn create(&self, req: CreateWaybill, note: Option<String>) -> Result<Waybill, RpcError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        Ok(Waybill {
            id: "WB1".into(),
            sender: req.sender,
            grams: req.grams,
            note,
        })
    }

    async fn get(&self, id: String) -> Result<Waybill, RpcError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        Err(RpcError::not_found(format!("no waybill {id}")))
    }

    async fn list(&self, offset: u32, limit: Option<u32>) -> Result<Vec<String>, RpcError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let limit = limit.unwrap_or(2);
        Ok((offset..offset + limit).map(|i| format!("WB{i}")).collect())
    }

    async fn count(&self) -> Result<u64, RpcError> {
        Ok(self.calls.load(Ordering::Relaxed))
    }

    async fn r#move(
        &self,
        r#type: String,
        r#for: Option<String>,
    ) -> Result<Option<String>, RpcError> {
        Ok(r#for.map(|f| format!("{type} for {f}")))
    }
}

const CODECS: [Codec; 2] = [Codec::Json, Codec::MsgPack];

/// Dispatches `method` with `args` encoded in `codec`; panics on an unknown method.
async fn call(
    server: &dyn ServiceDispatch,
    method: &str,
    codec: Codec,
    args: &Value,
) -> Result<Bytes, RpcError> {
    let payload = codec.encode(args).expect("encode args");
    let future = server
        .dispatch(method, codec, payload)
        .unwrap_or_else(|| panic!("`{method}` is not dispatched"));
    future.await
}

async fn call_ok<R: serde::de::DeserializeOwned>(
    server: &dyn ServiceDispatch,
    method: &str,
    codec: Codec,
    args: &Value,
) -> R {
    let reply = call(server, method, codec, args)
        .await
        .unwrap_or_else(|e| panic!("{method} over {codec}: {e}"));
    codec.decode(&reply).expect("decode reply")
}

#[tokio::test]
async fn body_argument_is_flattened_beside_the_others() {
    let server = WaybillsServer::new(Store::default());
    for codec in CODECS {
        let args = json!({ "sender": "ACME", "grams": 1200, "note": "fragile" });
        let waybill: Waybill = call_ok(&server, "create", codec, &args).await;
        assert_eq!(
            waybill,
            Waybill {
                id: "WB1".into(),
                sender: "ACME".into(),
                grams: 1200,
                note: Some("fragile".into()),
            },
            "{codec}"
        );
    }
}

#[tokio::test]
async fn missing_option_arguments_are_none_and_extra_keys_are_ignored() {
    let server = WaybillsServer::new(Store::default());
    for codec in CODECS {
        let args = json!({ "sender": "ACME", "grams": 1 });
        let waybill: Waybill = call_ok(&server, "create", codec, &args).await;
        assert_eq!(waybill.note, None, "{codec}");

        let ids: Vec<String> = call_ok(&server, "list", codec, &json!({ "offset": 3 })).await;
        assert_eq!(ids, ["WB3", "WB4"], "{codec}");

        let args = json!({ "offset": 0, "limit": 1, "utm_source": "mail", "page": "x" });
        let ids: Vec<String> = call_ok(&server, "list", codec, &args).await;
        assert_eq!(ids, ["WB0"], "{codec}");
    }
}

#[tokio::test]
async fn method_errors_come_back_as_they_were() {
    let server = WaybillsServer::new(Store::default());
    let err = call(&server, "get", Codec::Json, &json!({ "id": "WB9" }))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Status::NotFound);
    assert_eq!(err.message(), "no waybill WB9");
}

#[tokio::test]
async fn bad_payloads_are_invalid_arguments_that_name_the_problem() {
    let server = WaybillsServer::new(Store::default());
    for codec in CODECS {
        let err = call(&server, "list", codec, &json!({ "limit": 1 }))
            .await
            .unwrap_err();
        assert_eq!(err.status(), Status::InvalidArgument, "{codec}: {err}");
        assert!(err.message().contains("offset"), "{codec}: {err}");

        let err = call(&server, "list", codec, &json!({ "offset": "ten" }))
            .await
            .unwrap_err();
        assert_eq!(err.status(), Status::InvalidArgument, "{codec}: {err}");
        assert!(
            err.message().contains("argument `offset`"),
            "{codec}: {err}"
        );

        let err = call(&server, "create", codec, &json!({ "sender": "ACME" }))
            .await
            .unwrap_err();
        assert_eq!(err.status(), Status::InvalidArgument, "{codec}: {err}");
        assert!(err.message().contains("grams"), "{codec}: {err}");
    }

    let not_json = server
        .dispatch("list", Codec::Json, Bytes::from_static(b"{offset: 1"))
        .unwrap()
        .await
        .unwrap_err();
    assert_eq!(not_json.status(), Status::InvalidArgument, "{not_json}");
}

#[tokio::test]
async fn methods_without_arguments_accept_an_empty_payload_or_an_object() {
    let store = Arc::new(Store::default());
    let server = WaybillsServer::from_arc(Arc::clone(&store));
    for codec in CODECS {
        let _: Vec<String> = call_ok(&server, "list", codec, &json!({ "offset": 0 })).await;
    }

    let empty = server
        .dispatch("count", Codec::MsgPack, Bytes::new())
        .unwrap()
        .await
        .unwrap();
    assert_eq!(Codec::MsgPack.decode::<u64>(&empty).unwrap(), 2);
    let count: u64 = call_ok(&server, "count", Codec::Json, &json!({})).await;
    assert_eq!(count, 2);
    assert_eq!(store.calls.load(Ordering::Relaxed), 2, "the Arc is shared");

    let garbage = server
        .dispatch("count", Codec::Json, Bytes::from_static(b"[1, 2"))
        .unwrap()
        .await
        .unwrap_err();
    assert_eq!(garbage.status(), Status::InvalidArgument);
}

#[tokio::test]
async fn raw_identifiers_dispatch_by_their_plain_name() {
    let server = WaybillsServer::new(Store::default());
    for codec in CODECS {
        let args = json!({ "type": "WB1", "for": "ACME" });
        let out: Option<String> = call_ok(&server, "move", codec, &args).await;
        assert_eq!(out.as_deref(), Some("WB1 for ACME"), "{codec}");
    }
    assert!(
        server
            .dispatch("r#move", Codec::Json, Bytes::new())
            .is_none()
    );
}

#[test]
fn unknown_methods_are_not_dispatched() {
    let server = WaybillsServer::new(Store::default());
    for method in ["", "nope", "Create", "logistics.Waybills/create"] {
        assert!(
            server
                .dispatch(method, Codec::Json, Bytes::from_static(b"{}"))
                .is_none(),
            "{method:?}"
        );
    }
}

#[test]
fn descriptor_lists_routes_and_params() {
    let server = WaybillsServer::new(Store::default());
    let descriptor = server.descriptor();
    assert!(std::ptr::eq(descriptor, WaybillsClient::descriptor()));
    assert_eq!(*descriptor, WaybillsClient::DESCRIPTOR);
    assert_eq!(descriptor.name, "logistics.Waybills");
    let names: Vec<&str> = descriptor.methods.iter().map(|m| m.name).collect();
    assert_eq!(names, ["create", "get", "list", "count", "move"]);

    let create = descriptor.method("create").unwrap();
    assert_eq!(create.full_name, "logistics.Waybills/create");
    assert_eq!((create.http_method, create.path), ("POST", "/api/waybills"));
    assert!(!create.conventional_route);
    assert_eq!(create.timeout_ms, None);
    assert_eq!(
        create.params,
        [
            ParamDescriptor {
                name: "req",
                rust_type: "CreateWaybill",
                body: true,
                schema: None,
            },
            ParamDescriptor {
                name: "note",
                rust_type: "Option<String>",
                body: false,
                schema: None,
            },
        ]
    );

    let get = descriptor.method("get").unwrap();
    assert_eq!((get.http_method, get.path), ("GET", "/api/waybills/{id}"));
    assert_eq!(get.timeout_ms, Some(2000));
    assert_eq!(get.params.len(), 1);

    let list = descriptor.method("list").unwrap();
    assert_eq!(
        (list.http_method, list.path),
        ("POST", "/api/logistics/waybills/list")
    );
    assert!(list.conventional_route);
    assert_eq!(list.full_name, "logistics.Waybills/list");

    let count = descriptor.method("count").unwrap();
    assert!(count.params.is_empty());

    let moved = descriptor.method("move").unwrap();
    assert_eq!(
        (moved.http_method, moved.path),
        ("DELETE", "/api/waybills/{type}")
    );
    assert_eq!(moved.full_name, "logistics.Waybills/move");
    assert_eq!(moved.params[0].name, "type");
    assert_eq!(moved.params[1].name, "for");
}

#[test]
fn server_is_clone_and_debug_without_requiring_them_of_the_service() {
    struct Opaque;
    impl Waybills for Opaque {
        async fn create(&self, _: CreateWaybill, _: Option<String>) -> Result<Waybill, RpcError> {
            Err(RpcError::internal("unused"))
        }
        async fn get(&self, _: String) -> Result<Waybill, RpcError> {
            Err(RpcError::internal("unused"))
        }
        async fn list(&self, _: u32, _: Option<u32>) -> Result<Vec<String>, RpcError> {
            Ok(Vec::new())
        }
        async fn count(&self) -> Result<u64, RpcError> {
            Ok(0)
        }
        async fn r#move(&self, _: String, _: Option<String>) -> Result<Option<String>, RpcError> {
            Ok(None)
        }
    }
    let server = WaybillsServer::new(Opaque);
    let clone = server.clone();
    let debug = format!("{clone:?}");
    assert!(debug.contains("WaybillsServer"), "{debug}");
    assert!(debug.contains("logistics.Waybills"), "{debug}");
    assert!(debug.contains("Opaque"), "{debug}");
    // Usable as a trait object, as the RPC server holds services.
    let boxed: Box<dyn ServiceDispatch> = Box::new(server);
    assert_eq!(boxed.descriptor().methods.len(), 5);
}

/// Never called: proves at compile time that client calls and dispatched futures are `Send`, so
/// they can be spawned on a multi-threaded runtime.
#[allow(dead_code)]
fn futures_are_send(client: &WaybillsClient, server: &WaybillsServer<Store>) {
    fn send<T: Send>(_: T) {}
    send(client.create(
        CreateWaybill {
            sender: "a".into(),
            grams: 1,
        },
        None,
    ));
    send(client.get("WB1".into()));
    send(client.count());
    send(server.dispatch("count", Codec::Json, Bytes::new()));
    fn clone_debug_sync<T: Clone + std::fmt::Debug + Send + Sync + 'static>() {}
    clone_debug_sync::<WaybillsClient>();
    clone_debug_sync::<WaybillsServer<Store>>();
}
