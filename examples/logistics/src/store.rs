//! The bounded in-memory store behind the services.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::RwLock;
use tideway_rpc::RpcError;

use crate::model::{
    NewTrackingEvent, NewWaybill, TrackingEvent, Waybill, WaybillPage, WaybillStatus,
};

/// Waybills the demo store holds by default.
pub const DEFAULT_MAX_WAYBILLS: usize = 100_000;
/// Tracking events one waybill may collect by default.
pub const DEFAULT_MAX_EVENTS_PER_WAYBILL: usize = 100;

/// How much the store may hold. Past a limit, writes are refused with `Overloaded`; nothing is
/// evicted silently.
#[derive(Debug, Clone, Copy)]
pub struct StoreLimits {
    /// Most waybills.
    pub max_waybills: usize,
    /// Most events per waybill.
    pub max_events_per_waybill: usize,
}

impl Default for StoreLimits {
    fn default() -> Self {
        StoreLimits {
            max_waybills: DEFAULT_MAX_WAYBILLS,
            max_events_per_waybill: DEFAULT_MAX_EVENTS_PER_WAYBILL,
        }
    }
}

/// Waybills and their events, in memory, bounded by [`StoreLimits`].
#[derive(Debug)]
pub struct Store {
    limits: StoreLimits,
    inner: RwLock<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    next_id: u64,
    /// Ids in creation order, for paging.
    order: Vec<String>,
    waybills: HashMap<String, Entry>,
}

#[derive(Debug)]
struct Entry {
    waybill: Waybill,
    events: Vec<TrackingEvent>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Store {
    /// An empty store.
    pub fn new(limits: StoreLimits) -> Self {
        Store {
            limits,
            inner: RwLock::new(Inner::default()),
        }
    }

    /// Waybills stored.
    pub fn len(&self) -> usize {
        self.inner.read().waybills.len()
    }

    /// Whether no waybill is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn insert_waybill(&self, new: NewWaybill) -> Result<Waybill, RpcError> {
        let mut inner = self.inner.write();
        if inner.waybills.len() >= self.limits.max_waybills {
            return Err(RpcError::overloaded(format!(
                "the waybill store is full ({} waybills)",
                self.limits.max_waybills
            )));
        }
        inner.next_id += 1;
        let id = format!("WB{:010}", inner.next_id);
        let waybill = Waybill {
            id: id.clone(),
            sender: new.sender,
            recipient: new.recipient,
            weight_grams: new.weight_grams,
            service_level: new.service_level,
            status: WaybillStatus::Created,
            created_at_ms: now_ms(),
        };
        inner.order.push(id.clone());
        inner.waybills.insert(
            id,
            Entry {
                waybill: waybill.clone(),
                events: Vec::new(),
            },
        );
        Ok(waybill)
    }

    pub(crate) fn waybill(&self, id: &str) -> Option<Waybill> {
        self.inner
            .read()
            .waybills
            .get(id)
            .map(|e| e.waybill.clone())
    }

    pub(crate) fn page(&self, offset: u32, limit: u32) -> WaybillPage {
        let inner = self.inner.read();
        let total = inner.order.len();
        let start = (offset as usize).min(total);
        let end = start.saturating_add(limit as usize).min(total);
        let items = inner.order[start..end]
            .iter()
            .filter_map(|id| inner.waybills.get(id).map(|e| e.waybill.clone()))
            .collect();
        WaybillPage {
            items,
            offset,
            total: total as u32,
            next_offset: (end < total).then_some(end as u32),
        }
    }

    pub(crate) fn append_event(
        &self,
        waybill_id: &str,
        event: NewTrackingEvent,
    ) -> Result<TrackingEvent, RpcError> {
        let mut inner = self.inner.write();
        let entry = inner
            .waybills
            .get_mut(waybill_id)
            .ok_or_else(|| RpcError::not_found(format!("no waybill with id {waybill_id:?}")))?;
        if entry.events.len() >= self.limits.max_events_per_waybill {
            return Err(RpcError::overloaded(format!(
                "waybill {waybill_id} has the maximum of {} events",
                self.limits.max_events_per_waybill
            )));
        }
        if entry.waybill.status == WaybillStatus::Delivered {
            return Err(RpcError::new(
                tideway_rpc::Status::FailedPrecondition,
                format!("status: waybill {waybill_id} is already delivered"),
            ));
        }
        let recorded = TrackingEvent {
            waybill_id: waybill_id.to_owned(),
            sequence: entry.events.len() as u32 + 1,
            status: event.status,
            location: event.location,
            note: event.note,
            recorded_at_ms: now_ms(),
        };
        entry.waybill.status = recorded.status;
        entry.events.push(recorded.clone());
        Ok(recorded)
    }

    pub(crate) fn events(&self, waybill_id: &str) -> Option<Vec<TrackingEvent>> {
        self.inner
            .read()
            .waybills
            .get(waybill_id)
            .map(|e| e.events.clone())
    }
}
