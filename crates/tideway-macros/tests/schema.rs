//! `#[service(schema)]`: every argument's descriptor carries the JSON Schema of its type, with the
//! argument's `#[schemars(..)]` attributes applied, in the OpenAPI 3.0 form the gateway reads.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tideway_macros::service;
use tideway_rpc::{JsonSchema, RpcError};

/// How fast.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema)]
#[schemars(crate = "tideway_rpc::schemars")]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// Slow.
    Standard,
    /// Fast.
    SameDay,
}

/// The body of `create`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[schemars(crate = "tideway_rpc::schemars")]
pub struct CreateWaybill {
    /// Who sends the parcel.
    #[schemars(length(min = 1, max = 200))]
    pub sender: String,
    /// Its weight.
    #[schemars(range(min = 1, max = 70_000))]
    pub grams: u32,
    /// How fast.
    pub level: Level,
    /// A note.
    #[serde(default)]
    pub note: Option<String>,
}

/// With schemas.
#[service(name = "demo.Schemas", schema)]
pub trait Schemas {
    /// Creates.
    #[route(POST, "/api/waybills/{region}")]
    async fn create(
        &self,
        region: String,
        #[body] req: CreateWaybill,
        dry_run: Option<bool>,
    ) -> Result<String, RpcError>;

    /// Pages.
    #[route(GET, "/api/waybills")]
    async fn list(
        &self,
        #[schemars(range(max = 1000))] offset: Option<u32>,
        #[schemars(range(min = 1, max = 100))] limit: Option<u32>,
    ) -> Result<Vec<String>, RpcError>;
}

/// Without.
#[service(name = "demo.Plain")]
pub trait Plain {
    /// Echoes.
    async fn say(&self, text: String) -> Result<String, RpcError>;
}

fn schema_of(method: &str, param: &str) -> Value {
    let method = SchemasClient::DESCRIPTOR.method(method).unwrap();
    let param = method.params.iter().find(|p| p.name == param).unwrap();
    (param.schema.expect("schema published"))()
}

#[test]
fn body_schema_refers_to_its_definitions() {
    let body = schema_of("create", "req");
    assert_eq!(
        body,
        json!({"$ref": "#/components/schemas/CreateWaybill", "components": body["components"].clone()})
    );
    let create = &body["components"]["schemas"]["CreateWaybill"];
    assert_eq!(create["type"], "object");
    assert_eq!(create["required"], json!(["sender", "grams", "level"]));
    assert_eq!(create["properties"]["sender"]["minLength"], 1);
    assert_eq!(create["properties"]["sender"]["maxLength"], 200);
    assert_eq!(create["properties"]["grams"]["minimum"], 1);
    assert_eq!(create["properties"]["grams"]["maximum"], 70_000);
    assert_eq!(create["properties"]["note"]["nullable"], true);
    assert_eq!(
        create["properties"]["level"]["allOf"][0]["$ref"],
        "#/components/schemas/Level"
    );
    let level = &body["components"]["schemas"]["Level"];
    // Documented variants: one branch each, with its doc.
    let variants: Vec<&Value> = level["oneOf"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| &v["enum"][0])
        .collect();
    assert_eq!(variants, [&json!("standard"), &json!("same_day")]);
    assert!(body.get("$schema").is_none());
}

#[test]
fn scalar_arguments_have_their_types_and_attributes() {
    assert_eq!(schema_of("create", "region"), json!({"type": "string"}));
    // `Option<bool>`: the schema of `bool`; optional is said by the parameter.
    assert_eq!(schema_of("create", "dry_run"), json!({"type": "boolean"}));
    let limit = schema_of("list", "limit");
    assert_eq!(limit["type"], "integer");
    assert_eq!(
        (limit["minimum"].clone(), limit["maximum"].clone()),
        (json!(1), json!(100))
    );
    assert!(limit.get("nullable").is_none(), "{limit}");
    assert_eq!(schema_of("list", "offset")["maximum"], 1000);
}

#[test]
fn services_without_the_option_publish_no_schema() {
    let say = PlainClient::DESCRIPTOR.method("say").unwrap();
    assert!(say.params[0].schema.is_none());
}

#[test]
fn descriptors_compare_by_schema() {
    let a = SchemasClient::DESCRIPTOR;
    assert_eq!(a, SchemasClient::DESCRIPTOR);
    let mut params = a.methods[0].params.to_vec();
    assert_eq!(params[0], a.methods[0].params[0]);
    params[0].schema = None;
    assert_ne!(params[0], a.methods[0].params[0]);
}
