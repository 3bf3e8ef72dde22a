//! The part of the registry that outlives the hub: workers' addresses and each tenant's
//! worker, port, checkpoint and placement reason. `durable` writes it to the cold tier; a hub
//! starting anywhere rebuilds its registry from it, and gives every recorded worker the grace
//! of a live one.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{Registry, TenantEntry, WorkerEntry};

/// The durable part of the registry.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HubRecord {
    pub workers: BTreeMap<String, WorkerRecord>,
    pub tenants: BTreeMap<String, TenantRecord>,
}

/// A worker as the hub remembers it across restarts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkerRecord {
    pub api: SocketAddr,
    pub public_addr: IpAddr,
    /// Drained by an operator (`pico worker drain`): the hub places nothing on it until it is
    /// undrained, across restarts of the hub.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub draining: bool,
}

/// A tenant as the hub remembers it across restarts: where it lives and why.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TenantRecord {
    pub worker: String,
    pub port: u16,
    /// Its newest checkpoint the hub has seen committed, and its generation: what another
    /// worker restores if its own dies.
    #[serde(default)]
    pub checkpoint: Option<String>,
    pub generation: Option<u64>,
    /// Why it is on that worker (the placement decision, or how the hub learnt of it).
    pub placed_because: String,
}

impl Registry {
    /// The registry a hub starting at `now` rebuilds from `record`.
    pub fn from_record(record: HubRecord, dead_after: Duration, now: Instant) -> Registry {
        let workers = record
            .workers
            .into_iter()
            .map(|(name, record)| {
                let entry = WorkerEntry {
                    record,
                    last_seen: now,
                    memory_total_bytes: 0,
                    memory_available_bytes: 0,
                    load: 0.0,
                };
                (name, entry)
            })
            .collect();
        let tenants = record
            .tenants
            .into_iter()
            .map(|(name, record)| {
                let entry = TenantEntry {
                    record,
                    claimed_at: None,
                    state: None,
                    rss_bytes: None,
                };
                (name, entry)
            })
            .collect();
        Registry {
            workers,
            tenants,
            dead_after,
            changed: false,
        }
    }

    /// The durable part, if it changed since the last call.
    pub fn take_record(&mut self) -> Option<HubRecord> {
        if !std::mem::take(&mut self.changed) {
            return None;
        }
        Some(HubRecord {
            workers: self
                .workers
                .iter()
                .map(|(name, w)| (name.clone(), w.record.clone()))
                .collect(),
            tenants: self
                .tenants
                .iter()
                .map(|(name, t)| (name.clone(), t.record.clone()))
                .collect(),
        })
    }

    /// Marks the durable part changed again (its save failed: the next pass retries).
    pub fn unsaved(&mut self) {
        self.changed = true;
    }
}
