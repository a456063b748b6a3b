//! The domain's messages and their validation.
//!
//! The messages clients send derive `JsonSchema`, and the services publish their schemas
//! (`#[service(schema)]`), so the gateway's OpenAPI document describes them exactly: every rule
//! [`validate`](NewWaybill::validate) enforces is in the schema too (lengths, ranges, enums, the
//! `same_day` rule as one branch per zone), so a body the schema accepts is one the service
//! accepts, and the other way round.

use serde::{Deserialize, Serialize};
use tideway_rpc::schemars::{Schema, SchemaGenerator, json_schema};
use tideway_rpc::{JsonSchema, RpcError};

/// Page size of [`Waybills::list`](crate::Waybills::list) when none is asked for.
pub const DEFAULT_PAGE_SIZE: u32 = 20;
/// Largest page [`Waybills::list`](crate::Waybills::list) returns.
pub const MAX_PAGE_SIZE: u32 = 100;
/// Heaviest parcel accepted, in grams (a courier's usual 70 kg limit).
pub const MAX_WEIGHT_GRAMS: u32 = 70_000;
/// Longest free-text field (names, addresses, notes), in characters (Unicode scalar values, as
/// JSON Schema's `maxLength` counts them).
pub const MAX_TEXT_LEN: usize = 200;
/// The characters Rust's `char::is_whitespace` takes for white space (Unicode `White_Space`),
/// as a regular-expression class body: a text field must hold one character outside it. Written
/// out, not `\s`, whose meaning differs between regex engines (a client's schema validator, the
/// service's `trim`).
const WHITE_SPACE: &str =
    "\\t\\n\\u000b\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000";

/// The schema of a required free-text field: 1 to [`MAX_TEXT_LEN`] characters, not all white
/// space.
fn text_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_TEXT_LEN,
        "pattern": format!("[^{WHITE_SPACE}]"),
    })
}
/// Shipping zones are numbered 1 to this.
pub const MAX_ZONE: u8 = 8;

/// How fast a parcel travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(crate = "tideway_rpc::schemars")]
#[serde(rename_all = "snake_case")]
pub enum ServiceLevel {
    /// Three to five days.
    Standard,
    /// Next day.
    Express,
    /// Same day, within a zone.
    SameDay,
}

/// A party of a shipment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(crate = "tideway_rpc::schemars")]
pub struct Party {
    /// Full name.
    #[schemars(schema_with = "text_schema")]
    pub name: String,
    /// Postal address.
    #[schemars(schema_with = "text_schema")]
    pub address: String,
    /// Shipping zone, 1 to [`MAX_ZONE`].
    #[schemars(range(min = 1, max = MAX_ZONE))]
    pub zone: u8,
}

/// What a client sends to create a waybill.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(crate = "tideway_rpc::schemars")]
#[schemars(transform = same_day_within_one_zone::<true>)]
pub struct NewWaybill {
    /// Who sends.
    pub sender: Party,
    /// Who receives.
    pub recipient: Party,
    /// Parcel weight in grams, 1 to [`MAX_WEIGHT_GRAMS`].
    #[schemars(range(min = 1, max = MAX_WEIGHT_GRAMS))]
    pub weight_grams: u32,
    /// Delivery speed; `same_day` only when sender and recipient share a zone.
    pub service_level: ServiceLevel,
}

/// The `same_day` rule in schema form, added to a message's schema: any level but `same_day`, or
/// `same_day` with both zones the same. JSON Schema cannot compare two fields, so the second is
/// one branch per zone. `NESTED`: the zones are the parties' (`sender.zone`, `recipient.zone`),
/// else the message's own (`from_zone`, `to_zone`).
fn same_day_within_one_zone<const NESTED: bool>(schema: &mut Schema) {
    let other_levels: Vec<&str> = SERVICE_LEVELS
        .iter()
        .filter(|level| **level != ServiceLevel::SameDay)
        .map(|level| level.as_str())
        .collect();
    let mut branches = vec![serde_json::json!({
        "properties": {"service_level": {"enum": other_levels}},
    })];
    for zone in 1..=MAX_ZONE {
        let zone = serde_json::json!({"enum": [zone]});
        let zones = if NESTED {
            serde_json::json!({
                "sender": {"properties": {"zone": zone}},
                "recipient": {"properties": {"zone": zone}},
            })
        } else {
            serde_json::json!({"from_zone": zone, "to_zone": zone})
        };
        let mut branch = serde_json::json!({
            "properties": {"service_level": {"enum": [ServiceLevel::SameDay.as_str()]}},
        });
        if let (Some(props), serde_json::Value::Object(zones)) =
            (branch["properties"].as_object_mut(), zones)
        {
            props.extend(zones);
        }
        branches.push(branch);
    }
    schema.insert("anyOf".into(), serde_json::Value::Array(branches));
}

/// Every service level.
const SERVICE_LEVELS: [ServiceLevel; 3] = [
    ServiceLevel::Standard,
    ServiceLevel::Express,
    ServiceLevel::SameDay,
];

impl ServiceLevel {
    /// The name clients send, e.g. `same_day`.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceLevel::Standard => "standard",
            ServiceLevel::Express => "express",
            ServiceLevel::SameDay => "same_day",
        }
    }
}

/// Where a waybill's parcel is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(crate = "tideway_rpc::schemars")]
#[serde(rename_all = "snake_case")]
pub enum WaybillStatus {
    /// Created, not yet picked up.
    Created,
    /// Picked up from the sender.
    PickedUp,
    /// Moving between hubs.
    InTransit,
    /// With the courier for delivery.
    OutForDelivery,
    /// Handed to the recipient.
    Delivered,
    /// Delivery failed; see the events.
    Exception,
}

/// A stored waybill.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Waybill {
    /// Id, e.g. `WB0000000001`.
    pub id: String,
    /// Who sends.
    pub sender: Party,
    /// Who receives.
    pub recipient: Party,
    /// Parcel weight in grams.
    pub weight_grams: u32,
    /// Delivery speed.
    pub service_level: ServiceLevel,
    /// Latest status, from the last tracking event.
    pub status: WaybillStatus,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_at_ms: u64,
}

/// A page of waybills.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaybillPage {
    /// The waybills, in creation order.
    pub items: Vec<Waybill>,
    /// Offset of the first item.
    pub offset: u32,
    /// All waybills stored.
    pub total: u32,
    /// Offset of the next page, if there is one.
    pub next_offset: Option<u32>,
}

/// What a client sends to record a tracking event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(crate = "tideway_rpc::schemars")]
pub struct NewTrackingEvent {
    /// The new status; any but `created`, which a waybill has from its creation.
    #[schemars(schema_with = "event_status_schema")]
    pub status: WaybillStatus,
    /// Where it happened (hub, city).
    #[schemars(schema_with = "text_schema")]
    pub location: String,
    /// Free text, at most [`MAX_TEXT_LEN`] characters.
    #[serde(default)]
    #[schemars(length(max = MAX_TEXT_LEN))]
    pub note: Option<String>,
}

/// Every waybill status.
const WAYBILL_STATUSES: [WaybillStatus; 6] = [
    WaybillStatus::Created,
    WaybillStatus::PickedUp,
    WaybillStatus::InTransit,
    WaybillStatus::OutForDelivery,
    WaybillStatus::Delivered,
    WaybillStatus::Exception,
];

impl WaybillStatus {
    /// The name clients send, e.g. `picked_up`.
    pub fn as_str(self) -> &'static str {
        match self {
            WaybillStatus::Created => "created",
            WaybillStatus::PickedUp => "picked_up",
            WaybillStatus::InTransit => "in_transit",
            WaybillStatus::OutForDelivery => "out_for_delivery",
            WaybillStatus::Delivered => "delivered",
            WaybillStatus::Exception => "exception",
        }
    }
}

/// The statuses a tracking event may set: all but `created`.
fn event_status_schema(_: &mut SchemaGenerator) -> Schema {
    let settable: Vec<&str> = WAYBILL_STATUSES
        .iter()
        .filter(|status| **status != WaybillStatus::Created)
        .map(|status| status.as_str())
        .collect();
    json_schema!({"type": "string", "enum": settable})
}

/// A recorded tracking event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackingEvent {
    /// The waybill.
    pub waybill_id: String,
    /// Position in the waybill's history, from 1.
    pub sequence: u32,
    /// The new status.
    pub status: WaybillStatus,
    /// Where it happened.
    pub location: String,
    /// Free text.
    pub note: Option<String>,
    /// When it was recorded, milliseconds since the Unix epoch.
    pub recorded_at_ms: u64,
}

/// What a client sends for a price quote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(crate = "tideway_rpc::schemars")]
#[schemars(transform = same_day_within_one_zone::<false>)]
pub struct QuoteRequest {
    /// Parcel weight in grams, 1 to [`MAX_WEIGHT_GRAMS`].
    #[schemars(range(min = 1, max = MAX_WEIGHT_GRAMS))]
    pub weight_grams: u32,
    /// Zone of the sender, 1 to [`MAX_ZONE`].
    #[schemars(range(min = 1, max = MAX_ZONE))]
    pub from_zone: u8,
    /// Zone of the recipient, 1 to [`MAX_ZONE`].
    #[schemars(range(min = 1, max = MAX_ZONE))]
    pub to_zone: u8,
    /// Delivery speed; `same_day` only within one zone.
    pub service_level: ServiceLevel,
}

/// A price quote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quote {
    /// Price in cents.
    pub price_cents: u64,
    /// Currency code.
    pub currency: String,
    /// Promised delivery time in days (0 = same day).
    pub delivery_days: u8,
    /// The weight the price is based on (rounded up to the next 500 g).
    pub billable_grams: u32,
}

fn text(field: &str, value: &str) -> Result<(), RpcError> {
    if value.trim().is_empty() {
        return Err(RpcError::invalid_argument(format!(
            "{field}: must not be empty"
        )));
    }
    max_chars(field, value)
}

fn max_chars(field: &str, value: &str) -> Result<(), RpcError> {
    let chars = value.chars().count();
    if chars > MAX_TEXT_LEN {
        return Err(RpcError::invalid_argument(format!(
            "{field}: at most {MAX_TEXT_LEN} characters, got {chars}"
        )));
    }
    Ok(())
}

pub(crate) fn zone(field: &str, zone: u8) -> Result<(), RpcError> {
    if zone == 0 || zone > MAX_ZONE {
        return Err(RpcError::invalid_argument(format!(
            "{field}: must be between 1 and {MAX_ZONE}, got {zone}"
        )));
    }
    Ok(())
}

pub(crate) fn weight(field: &str, grams: u32) -> Result<(), RpcError> {
    if grams == 0 || grams > MAX_WEIGHT_GRAMS {
        return Err(RpcError::invalid_argument(format!(
            "{field}: must be between 1 and {MAX_WEIGHT_GRAMS} grams, got {grams}"
        )));
    }
    Ok(())
}

impl Party {
    fn validate(&self, prefix: &str) -> Result<(), RpcError> {
        text(&format!("{prefix}.name"), &self.name)?;
        text(&format!("{prefix}.address"), &self.address)?;
        zone(&format!("{prefix}.zone"), self.zone)
    }
}

impl NewWaybill {
    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), RpcError> {
        self.sender.validate("sender")?;
        self.recipient.validate("recipient")?;
        weight("weight_grams", self.weight_grams)?;
        if self.service_level == ServiceLevel::SameDay && self.sender.zone != self.recipient.zone {
            return Err(RpcError::invalid_argument(
                "service_level: same_day is only offered within one zone",
            ));
        }
        Ok(())
    }
}

impl NewTrackingEvent {
    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), RpcError> {
        text("location", &self.location)?;
        if self.status == WaybillStatus::Created {
            return Err(RpcError::invalid_argument(
                "status: `created` is set when the waybill is made, not by an event",
            ));
        }
        if let Some(note) = &self.note {
            max_chars("note", note)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::{PricingClient, TrackingClient, WaybillsClient};

    /// The schema `method`'s argument `param` publishes.
    fn published(descriptor: &tideway_rpc::ServiceDescriptor, method: &str, param: &str) -> Value {
        let method = descriptor.method(method).unwrap();
        let param = method.params.iter().find(|p| p.name == param).unwrap();
        (param.schema.expect("the demo publishes schemas"))()
    }

    fn component<'a>(schema: &'a Value, name: &str) -> &'a Value {
        &schema["components"]["schemas"][name]
    }

    #[test]
    fn enum_names_are_the_serialized_ones_and_lists_are_complete() {
        for status in WAYBILL_STATUSES {
            assert_eq!(json!(status), json!(status.as_str()));
        }
        for level in SERVICE_LEVELS {
            assert_eq!(json!(level), json!(level.as_str()));
        }
        // As many variants as the derived schemas list.
        let schema = tideway_rpc::schemars::schema_for!(WaybillStatus).to_value();
        assert_eq!(
            schema["oneOf"].as_array().unwrap().len(),
            WAYBILL_STATUSES.len()
        );
        let schema = tideway_rpc::schemars::schema_for!(ServiceLevel).to_value();
        assert_eq!(
            schema["oneOf"].as_array().unwrap().len(),
            SERVICE_LEVELS.len()
        );
    }

    #[test]
    fn the_waybill_schema_states_the_rules() {
        let schema = published(&WaybillsClient::DESCRIPTOR, "create", "waybill");
        assert_eq!(schema["$ref"], "#/components/schemas/NewWaybill");
        let waybill = component(&schema, "NewWaybill");
        assert_eq!(
            waybill["required"],
            json!(["sender", "recipient", "weight_grams", "service_level"])
        );
        let weight = &waybill["properties"]["weight_grams"];
        assert_eq!(
            (weight["minimum"].clone(), weight["maximum"].clone()),
            (json!(1), json!(MAX_WEIGHT_GRAMS))
        );
        // Standard or express; or same_day with one branch per zone.
        let branches = waybill["anyOf"].as_array().unwrap();
        assert_eq!(branches.len(), 1 + usize::from(MAX_ZONE));
        assert_eq!(
            branches[0]["properties"]["service_level"]["enum"],
            json!(["standard", "express"])
        );
        assert_eq!(
            branches[3]["properties"]["sender"]["properties"]["zone"]["enum"],
            json!([3])
        );
        assert_eq!(
            branches[3]["properties"]["recipient"]["properties"]["zone"]["enum"],
            json!([3])
        );
        let party = component(&schema, "Party");
        assert_eq!(party["required"], json!(["name", "address", "zone"]));
        assert_eq!(party["properties"]["zone"]["maximum"], MAX_ZONE);
        let name = &party["properties"]["name"];
        assert_eq!(name["maxLength"], MAX_TEXT_LEN);
        assert_eq!(name["minLength"], 1);
        assert!(
            name["pattern"].as_str().unwrap().starts_with("[^\\t\\n"),
            "{name}"
        );
    }

    #[test]
    fn the_event_and_quote_schemas_state_the_rules() {
        let schema = published(&TrackingClient::DESCRIPTOR, "append", "event");
        let event = component(&schema, "NewTrackingEvent");
        assert_eq!(event["required"], json!(["status", "location"]));
        let statuses = event["properties"]["status"]["enum"].as_array().unwrap();
        assert!(!statuses.contains(&json!("created")));
        assert_eq!(statuses.len(), WAYBILL_STATUSES.len() - 1);
        assert_eq!(event["properties"]["note"]["maxLength"], MAX_TEXT_LEN);
        assert_eq!(event["properties"]["note"]["nullable"], true);
        assert_eq!(
            published(&TrackingClient::DESCRIPTOR, "append", "waybill_id"),
            json!({"type": "string"})
        );

        let schema = published(&PricingClient::DESCRIPTOR, "quote", "request");
        let quote = component(&schema, "QuoteRequest");
        assert_eq!(
            quote["required"],
            json!(["weight_grams", "from_zone", "to_zone", "service_level"])
        );
        assert_eq!(quote["properties"]["to_zone"]["minimum"], 1);
        let branches = quote["anyOf"].as_array().unwrap();
        assert_eq!(branches[8]["properties"]["from_zone"]["enum"], json!([8]));
        assert_eq!(branches[8]["properties"]["to_zone"]["enum"], json!([8]));

        let limit = published(&WaybillsClient::DESCRIPTOR, "list", "limit");
        assert_eq!(
            (limit["minimum"].clone(), limit["maximum"].clone()),
            (json!(1), json!(MAX_PAGE_SIZE))
        );
    }

    #[test]
    fn text_counts_characters_and_white_space_as_rust_does() {
        let long = "é".repeat(MAX_TEXT_LEN);
        assert!(long.len() > MAX_TEXT_LEN);
        text("name", &long).unwrap();
        assert!(text("name", &format!("{long}é")).is_err());
        // Each white-space character the schema's pattern lists is white space to `trim`, and
        // the characters just outside the listed ranges are not.
        for c in [
            '\t', '\n', '\u{b}', '\u{c}', '\r', ' ', '\u{85}', '\u{a0}', '\u{1680}', '\u{2000}',
            '\u{2005}', '\u{200a}', '\u{2028}', '\u{2029}', '\u{202f}', '\u{205f}', '\u{3000}',
        ] {
            assert!(text("name", &c.to_string()).is_err(), "{c:?}");
        }
        for c in [
            '\u{8}', '\u{e}', '\u{1c}', '\u{200b}', '\u{feff}', '\u{1f}', 'x',
        ] {
            text("name", &c.to_string()).unwrap();
        }
    }
}
