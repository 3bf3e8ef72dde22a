//! What the hub's API and DNS read of the registry: a worker or tenant as `pico hub ls` shows
//! it, and where a name leads. Computed at the time asked (a worker is alive or not then).

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use worker::tenant::TenantState;

use super::Registry;

/// A worker as `pico hub ls workers` shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkerView {
    pub name: String,
    pub alive: bool,
    pub api: SocketAddr,
    pub public_addr: IpAddr,
    /// Milliseconds since its last heartbeat.
    pub last_seen_ms: u64,
    pub memory_total_bytes: u64,
    pub memory_available_bytes: u64,
    pub load: f64,
    pub tenants: usize,
    /// An operator drained it (`pico worker drain`): the hub places nothing on it.
    #[serde(default)]
    pub draining: bool,
}

/// A tenant as `pico hub ls tenants` shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TenantView {
    pub name: String,
    pub worker: String,
    pub worker_alive: bool,
    pub address: IpAddr,
    pub port: u16,
    pub state: Option<TenantState>,
    pub checkpoint: Option<String>,
    pub generation: Option<u64>,
    pub rss_bytes: Option<u64>,
    pub placed_because: String,
}

/// Where a DNS name leads: the tenant's worker and what the hub knows of it.
#[derive(Clone, Debug, PartialEq)]
pub struct Whereabouts {
    pub worker: String,
    pub worker_alive: bool,
    pub api: SocketAddr,
    pub address: IpAddr,
    pub state: Option<TenantState>,
}

impl Registry {
    /// Where tenant `name` is, if the hub knows it and its worker.
    pub fn whereabouts(&self, name: &str, now: Instant) -> Option<Whereabouts> {
        let tenant = self.tenants.get(name)?;
        let worker = self.workers.get(&tenant.record.worker)?;
        Some(Whereabouts {
            worker: tenant.record.worker.clone(),
            worker_alive: self.is_alive_at(worker.last_seen, now),
            api: worker.record.api,
            address: worker.record.public_addr,
            state: tenant.state,
        })
    }

    pub fn workers(&self, now: Instant) -> Vec<WorkerView> {
        self.workers
            .iter()
            .map(|(name, w)| WorkerView {
                name: name.clone(),
                alive: self.is_alive_at(w.last_seen, now),
                api: w.record.api,
                public_addr: w.record.public_addr,
                last_seen_ms: now.saturating_duration_since(w.last_seen).as_millis() as u64,
                memory_total_bytes: w.memory_total_bytes,
                memory_available_bytes: w.memory_available_bytes,
                load: w.load,
                tenants: self
                    .tenants
                    .values()
                    .filter(|t| &t.record.worker == name)
                    .count(),
                draining: w.record.draining,
            })
            .collect()
    }

    pub fn tenants(&self, now: Instant) -> Vec<TenantView> {
        self.tenants
            .iter()
            .filter_map(|(name, t)| {
                let worker = self.workers.get(&t.record.worker)?;
                Some(TenantView {
                    name: name.clone(),
                    worker: t.record.worker.clone(),
                    worker_alive: self.is_alive_at(worker.last_seen, now),
                    address: worker.record.public_addr,
                    port: t.record.port,
                    state: t.state,
                    checkpoint: t.record.checkpoint.clone(),
                    generation: t.record.generation,
                    rss_bytes: t.rss_bytes,
                    placed_because: t.record.placed_because.clone(),
                })
            })
            .collect()
    }
}
