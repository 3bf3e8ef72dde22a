//! What the hub knows of the cluster: its workers (from their heartbeats) and its tenants (where
//! each is, its port, state and generation), and the rules that keep it consistent: a worker
//! silent for `dead_after` is dead; a tenant's port is its own across the cluster; a tenant
//! lives on one worker at a time.
//!
//! Time is passed in, so the rules are tested without waiting. The part that must outlive the
//! hub (tenants' placements, workers' addresses) is [`HubRecord`] (`record`), which `durable`
//! keeps in the cold tier; what the API and DNS read of it are the `views`.

mod record;
mod views;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tracing::{info, warn};
use worker::hub_wire::{Heartbeat, HostedTenant};
use worker::tenant::TenantState;

pub use record::{HubRecord, TenantRecord, WorkerRecord};
pub use views::{TenantView, Whereabouts, WorkerView};

/// One worker, live view.
#[derive(Clone, Debug)]
struct WorkerEntry {
    record: WorkerRecord,
    /// When the hub last heard from it (or, for a worker known only from the record, when the
    /// hub started: it gets the same grace as a live one).
    last_seen: Instant,
    memory_total_bytes: u64,
    memory_available_bytes: u64,
    load: f64,
}

/// How long a claimed tenant stays the claimer's without being reported: long enough for a
/// worker to start it (`start_timeout_ms`, 10 s by default).
const CLAIM_GRACE: Duration = Duration::from_secs(30);

/// One tenant, live view.
#[derive(Clone, Debug)]
struct TenantEntry {
    record: TenantRecord,
    /// When its worker claimed it, until its heartbeats report it.
    claimed_at: Option<Instant>,
    /// As its worker last reported it (`None`: not reported yet, or a swap was under way).
    state: Option<TenantState>,
    rss_bytes: Option<u64>,
}

impl TenantEntry {
    /// A tenant a worker added (claimed at `claimed_at`, or found in its report).
    fn added_on(worker: &str, port: u16, claimed_at: Option<Instant>) -> TenantEntry {
        TenantEntry {
            record: TenantRecord {
                worker: worker.to_string(),
                port,
                checkpoint: None,
                generation: None,
                placed_because: format!("added on worker {worker}"),
            },
            claimed_at,
            state: None,
            rss_bytes: None,
        }
    }

    /// Takes in `worker`'s report of this tenant; whether its durable part changed.
    fn take_report(&mut self, worker: &str, hosted: &HostedTenant) -> bool {
        self.claimed_at = None;
        // A busy tenant is reported without its checkpoint: the last known one stays.
        let (checkpoint, generation) = match &hosted.checkpoint {
            Some(c) => (Some(c.clone()), hosted.generation),
            None => (self.record.checkpoint.clone(), self.record.generation),
        };
        let placed_because = if self.record.worker == worker {
            self.record.placed_because.clone()
        } else {
            format!(
                "reported by worker {worker} (its worker {} was dead)",
                self.record.worker
            )
        };
        let record = TenantRecord {
            worker: worker.to_string(),
            port: hosted.port,
            checkpoint,
            generation,
            placed_because,
        };
        if hosted.state.is_some() {
            self.state = hosted.state;
        }
        self.rss_bytes = hosted.rss_bytes.or(self.rss_bytes);
        if record == self.record {
            return false;
        }
        self.record = record;
        true
    }
}

/// The hub's registry.
#[derive(Debug)]
pub struct Registry {
    workers: BTreeMap<String, WorkerEntry>,
    tenants: BTreeMap<String, TenantEntry>,
    dead_after: Duration,
    /// Set by every change of the durable part, cleared by [`Registry::take_record`].
    changed: bool,
}

impl Registry {
    /// Takes in a worker's heartbeat received at `now`; the tenants it reported that live on
    /// another worker now, which it must give up.
    pub fn heartbeat(&mut self, beat: &Heartbeat, now: Instant) -> Vec<String> {
        let record = WorkerRecord {
            api: beat.api,
            public_addr: beat.public_addr,
            draining: false,
        };
        let dead_after = self.dead_after;
        match self.workers.get_mut(&beat.worker) {
            Some(entry) => {
                if (entry.record.api, entry.record.public_addr) != (record.api, record.public_addr)
                {
                    info!(worker = %beat.worker, api = %beat.api, public_addr = %beat.public_addr, "worker moved");
                    entry.record.api = record.api;
                    entry.record.public_addr = record.public_addr;
                    self.changed = true;
                }
                if now.saturating_duration_since(entry.last_seen) >= dead_after {
                    info!(worker = %beat.worker, "worker is back");
                }
                entry.last_seen = now;
                entry.memory_total_bytes = beat.memory_total_bytes;
                entry.memory_available_bytes = beat.memory_available_bytes;
                entry.load = beat.load;
            }
            None => {
                info!(worker = %beat.worker, api = %beat.api, public_addr = %beat.public_addr, "worker joined");
                self.workers.insert(
                    beat.worker.clone(),
                    WorkerEntry {
                        record,
                        last_seen: now,
                        memory_total_bytes: beat.memory_total_bytes,
                        memory_available_bytes: beat.memory_available_bytes,
                        load: beat.load,
                    },
                );
                self.changed = true;
            }
        }
        let release = beat
            .tenants
            .iter()
            .filter(|hosted| !self.hosted(&beat.worker, hosted, now))
            .map(|hosted| hosted.name.clone())
            .collect();
        self.forget_unreported(beat, now);
        release
    }

    /// One tenant a worker says it hosts; false if it is another worker's (that worker is
    /// alive and has it), which the reporting one must give up.
    fn hosted(&mut self, worker: &str, hosted: &HostedTenant, now: Instant) -> bool {
        if let Some(keep) = self.refused(worker, hosted, now) {
            return keep;
        }
        let mut new = false;
        let entry = self.tenants.entry(hosted.name.clone()).or_insert_with(|| {
            info!(tenant = %hosted.name, worker, port = hosted.port, "tenant registered by its worker");
            new = true;
            TenantEntry::added_on(worker, hosted.port, None)
        });
        if entry.take_report(worker, hosted) || new {
            self.changed = true;
        }
        true
    }

    /// Whether a report of `hosted` by `worker` is not taken: `Some(true)` when its port is
    /// another tenant's (the worker keeps it, unregistered), `Some(false)` when it lives on
    /// another live worker (this one must give it up).
    fn refused(&self, worker: &str, hosted: &HostedTenant, now: Instant) -> Option<bool> {
        if let Some(holder) = self.port_holder(hosted.port, &hosted.name) {
            warn!(tenant = %hosted.name, port = hosted.port, holder = %holder, worker, "port already held by another tenant of the cluster: not registered");
            return Some(true);
        }
        let known = self.tenants.get(&hosted.name)?;
        if self.lives_elsewhere(known, worker, now) {
            warn!(tenant = %hosted.name, worker, on = %known.record.worker, "tenant reported by a worker while it lives on another: released there");
            return Some(false);
        }
        None
    }

    /// Tenants recorded on `beat`'s worker that it no longer reports (nor claimed lately):
    /// removed there.
    fn forget_unreported(&mut self, beat: &Heartbeat, now: Instant) {
        let gone: Vec<String> = self
            .tenants
            .iter()
            .filter(|(name, t)| {
                t.record.worker == beat.worker
                    && !beat.tenants.iter().any(|h| &h.name == *name)
                    && t.claimed_at
                        .is_none_or(|at| now.saturating_duration_since(at) >= CLAIM_GRACE)
            })
            .map(|(name, _)| name.clone())
            .collect();
        for name in gone {
            info!(tenant = %name, worker = %beat.worker, "tenant removed from its worker");
            self.tenants.remove(&name);
            self.changed = true;
        }
    }

    /// The tenant other than `name` that holds `port`, if any.
    fn port_holder(&self, port: u16, name: &str) -> Option<&str> {
        self.tenants
            .iter()
            .find(|(other, t)| t.record.port == port && other.as_str() != name)
            .map(|(other, _)| other.as_str())
    }

    /// Whether `tenant` lives on a live worker other than `worker`.
    fn lives_elsewhere(&self, tenant: &TenantEntry, worker: &str, now: Instant) -> bool {
        tenant.record.worker != worker
            && self
                .workers
                .get(&tenant.record.worker)
                .is_some_and(|w| self.is_alive_at(w.last_seen, now))
    }

    fn is_alive_at(&self, last_seen: Instant, now: Instant) -> bool {
        now.saturating_duration_since(last_seen) < self.dead_after
    }

    /// Gives `name` and `port` to a tenant `worker` is adding, or says why not: another tenant
    /// holds the port, or a tenant of that name lives on another live worker. The claim stands
    /// until the worker's heartbeats stop reporting the tenant.
    pub fn claim(
        &mut self,
        worker: &str,
        name: &str,
        port: u16,
        now: Instant,
    ) -> Result<(), String> {
        if let Some(holder) = self.port_holder(port, name) {
            return Err(format!("port {port} is tenant {holder}'s in this cluster"));
        }
        if let Some(t) = self.tenants.get(name) {
            if self.lives_elsewhere(t, worker, now) {
                return Err(format!("tenant {name} lives on worker {}", t.record.worker));
            }
            if t.record.port != port {
                return Err(format!(
                    "tenant {name} has port {} in this cluster",
                    t.record.port
                ));
            }
            return Ok(());
        }
        if self.is_draining(worker) {
            return Err(format!(
                "worker {worker} is draining: it takes no new tenant (add it through the hub, \
                 or `pico worker undrain {worker}` first)"
            ));
        }
        info!(tenant = name, worker, port, "name and port claimed");
        self.tenants.insert(
            name.to_string(),
            TenantEntry::added_on(worker, port, Some(now)),
        );
        self.changed = true;
        Ok(())
    }

    /// Records that tenant `name` now lives on `worker` (adopted there, asleep), and why.
    /// Until that worker reports it, the placement stands as a claim does (its heartbeats in
    /// between do not forget it).
    /// `checkpoint`, when given, is the one it was placed with (newer than any report).
    pub fn moved(
        &mut self,
        name: &str,
        worker: &str,
        because: String,
        checkpoint: Option<&str>,
        now: Instant,
    ) {
        if let Some(t) = self.tenants.get_mut(name) {
            info!(tenant = name, from = %t.record.worker, to = worker, because = %because, "tenant placed");
            if let Some(checkpoint) = checkpoint {
                t.record.checkpoint = Some(checkpoint.to_string());
            }
            t.record.worker = worker.to_string();
            t.record.placed_because = because;
            t.state = Some(TenantState::SwappedOut);
            t.claimed_at = Some(now);
            self.changed = true;
        }
    }

    /// Records why tenant `name` is where its claim put it (the hub chose that worker).
    pub fn placed(&mut self, name: &str, because: &str) {
        if let Some(t) = self.tenants.get_mut(name) {
            t.record.placed_because = because.to_string();
            self.changed = true;
        }
    }

    /// What placing tenant `name` elsewhere needs: its checkpoint and its memory when it last ran.
    pub fn placement_of(&self, name: &str) -> Option<(Option<String>, u64)> {
        let t = self.tenants.get(name)?;
        Some((t.record.checkpoint.clone(), t.rss_bytes.unwrap_or(0)))
    }

    /// Marks `worker` draining (nothing new is placed on it) or not; says so when the hub does
    /// not know it.
    pub fn set_draining(&mut self, worker: &str, draining: bool) -> Result<(), String> {
        let entry = self
            .workers
            .get_mut(worker)
            .ok_or_else(|| format!("no worker {worker} at the hub"))?;
        if entry.record.draining != draining {
            info!(worker, draining, "worker drain changed");
            entry.record.draining = draining;
            self.changed = true;
        }
        Ok(())
    }

    /// Whether `worker` is draining (an unknown worker is not).
    pub fn is_draining(&self, worker: &str) -> bool {
        self.workers.get(worker).is_some_and(|w| w.record.draining)
    }

    /// The tenants recorded on `worker`, by name.
    pub fn tenants_on(&self, worker: &str) -> Vec<String> {
        self.tenants
            .iter()
            .filter(|(_, t)| t.record.worker == worker)
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Records that the hub asked `name`'s worker to wake it: until a heartbeat says otherwise
    /// it counts as waking, so that further queries do not ask again.
    pub fn waking(&mut self, name: &str) {
        if let Some(t) = self.tenants.get_mut(name) {
            t.state = Some(TenantState::SwappingIn);
        }
    }
}

#[cfg(test)]
mod tests;
