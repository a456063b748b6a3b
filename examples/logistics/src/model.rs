//! The domain's messages and their validation.

use serde::{Deserialize, Serialize};
use tideway_rpc::RpcError;

/// Page size of [`Waybills::list`](crate::Waybills::list) when none is asked for.
pub const DEFAULT_PAGE_SIZE: u32 = 20;
/// Largest page [`Waybills::list`](crate::Waybills::list) returns.
pub const MAX_PAGE_SIZE: u32 = 100;
/// Heaviest parcel accepted, in grams (a courier's usual 70 kg limit).
pub const MAX_WEIGHT_GRAMS: u32 = 70_000;
/// Longest free-text field (names, addresses, notes), in bytes.
pub const MAX_TEXT_LEN: usize = 200;
/// Shipping zones are numbered 1 to this.
pub const MAX_ZONE: u8 = 8;

/// How fast a parcel travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Party {
    /// Full name.
    pub name: String,
    /// Postal address.
    pub address: String,
    /// Shipping zone, 1 to [`MAX_ZONE`].
    pub zone: u8,
}

/// What a client sends to create a waybill.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewWaybill {
    /// Who sends.
    pub sender: Party,
    /// Who receives.
    pub recipient: Party,
    /// Parcel weight in grams, 1 to [`MAX_WEIGHT_GRAMS`].
    pub weight_grams: u32,
    /// Delivery speed.
    pub service_level: ServiceLevel,
}

/// Where a waybill's parcel is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewTrackingEvent {
    /// The new status.
    pub status: WaybillStatus,
    /// Where it happened (hub, city).
    pub location: String,
    /// Free text.
    #[serde(default)]
    pub note: Option<String>,
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuoteRequest {
    /// Parcel weight in grams.
    pub weight_grams: u32,
    /// Zone of the sender.
    pub from_zone: u8,
    /// Zone of the recipient.
    pub to_zone: u8,
    /// Delivery speed.
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
    if value.len() > MAX_TEXT_LEN {
        return Err(RpcError::invalid_argument(format!(
            "{field}: at most {MAX_TEXT_LEN} bytes, got {}",
            value.len()
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
        if let Some(note) = &self.note
            && note.len() > MAX_TEXT_LEN
        {
            return Err(RpcError::invalid_argument(format!(
                "note: at most {MAX_TEXT_LEN} bytes, got {}",
                note.len()
            )));
        }
        Ok(())
    }
}
