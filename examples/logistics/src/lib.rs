//! The logistics demo domain that `tideway demo` serves: an express-delivery company's waybills,
//! tracking events and price quotes, as three Tideway RPC services.
//!
//! - [`Waybills`]: create (validated), get, list with paging.
//! - [`Tracking`]: append a tracking event to a waybill, read its history.
//! - [`Pricing`]: quote a price from weight, zones and service level.
//!
//! The services share one bounded in-memory [`Store`]: it holds at most
//! [`StoreLimits::max_waybills`] waybills and [`StoreLimits::max_events_per_waybill`] events per
//! waybill, and refuses more with `Overloaded` rather than grow. Invalid input is
//! `InvalidArgument` with the offending field named.
//!
//! Each trait carries HTTP routes, so a gateway can expose them without knowing Rust types, and
//! publishes the JSON Schemas of its arguments (`#[service(schema)]`), which state every rule the
//! services check, so the gateway's OpenAPI document describes exactly what they accept.

mod model;
mod pricing;
mod store;

use std::sync::Arc;

pub use model::*;
pub use store::{DEFAULT_MAX_EVENTS_PER_WAYBILL, DEFAULT_MAX_WAYBILLS, Store, StoreLimits};
use tideway_rpc::RpcError;

/// Waybills: the consignment notes of parcels.
#[tideway_macros::service(name = "logistics.Waybills", schema)]
pub trait Waybills {
    /// Creates a waybill; every field is validated and a bad one is named in the error.
    #[route(POST, "/api/waybills")]
    async fn create(&self, #[body] waybill: NewWaybill) -> Result<Waybill, RpcError>;

    /// One waybill by id.
    #[route(GET, "/api/waybills/{id}")]
    async fn get(&self, id: String) -> Result<Waybill, RpcError>;

    /// Waybills in creation order, `limit` (default 20, at most 100) from `offset`.
    #[route(GET, "/api/waybills")]
    async fn list(
        &self,
        offset: Option<u32>,
        #[schemars(range(min = 1, max = MAX_PAGE_SIZE))] limit: Option<u32>,
    ) -> Result<WaybillPage, RpcError>;
}

/// Tracking events of waybills.
#[tideway_macros::service(name = "logistics.Tracking", schema)]
pub trait Tracking {
    /// Appends an event to a waybill's history and updates its status.
    #[route(POST, "/api/waybills/{waybill_id}/events")]
    async fn append(
        &self,
        waybill_id: String,
        #[body] event: NewTrackingEvent,
    ) -> Result<TrackingEvent, RpcError>;

    /// A waybill's events, oldest first.
    #[route(GET, "/api/waybills/{waybill_id}/events")]
    async fn history(&self, waybill_id: String) -> Result<Vec<TrackingEvent>, RpcError>;
}

/// Price quotes.
#[tideway_macros::service(name = "logistics.Pricing", schema)]
pub trait Pricing {
    /// The price of sending a parcel.
    #[route(POST, "/api/quotes")]
    async fn quote(&self, #[body] request: QuoteRequest) -> Result<Quote, RpcError>;
}

/// The implementation of all three services over one [`Store`].
#[derive(Debug, Clone)]
pub struct Logistics {
    store: Arc<Store>,
}

impl Logistics {
    /// Services over a new store with these limits.
    pub fn new(limits: StoreLimits) -> Self {
        Logistics {
            store: Arc::new(Store::new(limits)),
        }
    }

    /// The shared store.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }
}

impl Default for Logistics {
    fn default() -> Self {
        Self::new(StoreLimits::default())
    }
}

impl Waybills for Logistics {
    async fn create(&self, waybill: NewWaybill) -> Result<Waybill, RpcError> {
        waybill.validate()?;
        self.store.insert_waybill(waybill)
    }

    async fn get(&self, id: String) -> Result<Waybill, RpcError> {
        self.store
            .waybill(&id)
            .ok_or_else(|| RpcError::not_found(format!("no waybill with id {id:?}")))
    }

    async fn list(&self, offset: Option<u32>, limit: Option<u32>) -> Result<WaybillPage, RpcError> {
        let limit = limit.unwrap_or(DEFAULT_PAGE_SIZE);
        if limit == 0 || limit > MAX_PAGE_SIZE {
            return Err(RpcError::invalid_argument(format!(
                "limit: must be between 1 and {MAX_PAGE_SIZE}, got {limit}"
            )));
        }
        Ok(self.store.page(offset.unwrap_or(0), limit))
    }
}

impl Tracking for Logistics {
    async fn append(
        &self,
        waybill_id: String,
        event: NewTrackingEvent,
    ) -> Result<TrackingEvent, RpcError> {
        event.validate()?;
        self.store.append_event(&waybill_id, event)
    }

    async fn history(&self, waybill_id: String) -> Result<Vec<TrackingEvent>, RpcError> {
        self.store
            .events(&waybill_id)
            .ok_or_else(|| RpcError::not_found(format!("no waybill with id {waybill_id:?}")))
    }
}

impl Pricing for Logistics {
    async fn quote(&self, request: QuoteRequest) -> Result<Quote, RpcError> {
        pricing::quote(&request)
    }
}
