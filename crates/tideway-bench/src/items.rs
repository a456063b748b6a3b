//! The document the HTTP benchmark fetches, and the `bench.Items` RPC service that answers it.
//!
//! `bench-http-backend` serves [`Item::sample`] as JSON at [`ITEM_PATH`]; `bench-items-server`
//! serves the same value through [`Items::item`], which the gateway exposes over HTTP. Both
//! encode it with serde_json, so the bodies clients see are byte for byte the same.

use serde::{Deserialize, Serialize};
use tideway_rpc::RpcError;

/// The path of the item on the plain HTTP backend (and the route the service publishes).
pub const ITEM_PATH: &str = "/api/item";

/// A small parcel record: about 90 bytes of JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    /// Waybill number.
    pub id: String,
    /// Where the parcel is in its journey.
    pub status: String,
    /// Last place it was scanned.
    pub location: String,
    /// Weight in grams.
    pub weight_grams: u32,
}

impl Item {
    /// The one item every target serves.
    pub fn sample() -> Item {
        Item {
            id: "WB0000000001".to_owned(),
            status: "in_transit".to_owned(),
            location: "Central hub".to_owned(),
            weight_grams: 1250,
        }
    }

    /// [`Item::sample`] as the JSON bytes both servers send.
    pub fn sample_json() -> Vec<u8> {
        serde_json::to_vec(&Item::sample()).expect("an Item always serializes")
    }
}

/// What the HTTP benchmark's RPC target calls.
#[tideway_macros::service(name = "bench.Items")]
pub trait Items {
    /// The sample item.
    #[route(GET, "/api/item")]
    async fn item(&self) -> Result<Item, RpcError>;
}

/// Answers every call with [`Item::sample`].
#[derive(Debug, Clone)]
pub struct ItemsImpl {
    item: Item,
}

impl Default for ItemsImpl {
    fn default() -> Self {
        ItemsImpl {
            item: Item::sample(),
        }
    }
}

impl Items for ItemsImpl {
    async fn item(&self) -> Result<Item, RpcError> {
        Ok(self.item.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_is_small_json_with_every_field() {
        let json = Item::sample_json();
        assert!((80..=120).contains(&json.len()), "{} bytes", json.len());
        let back: Item = serde_json::from_slice(&json).unwrap();
        assert_eq!(back, Item::sample());
        assert_eq!(
            std::str::from_utf8(&json).unwrap(),
            r#"{"id":"WB0000000001","status":"in_transit","location":"Central hub","weight_grams":1250}"#
        );
    }
}
