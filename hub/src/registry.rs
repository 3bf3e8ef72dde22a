//! What the hub knows of the cluster: its workers (from their heartbeats) and its tenants (where
//! each is, its port, state and generation), and the rules that keep it consistent: a worker
//! silent for `dead_after` is dead; a tenant's port is its own across the cluster; a tenant
//! lives on one worker at a time.
//!
//! Time is passed in, so the rules are tested without waiting. The part that must outlive the
//! hub (tenants' placements, workers' addresses) is [`HubRecord`], which `durable` keeps in the
//! cold tier.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tracing::{info, warn};
use worker::hub_wire::{Heartbeat, HostedTenant};
use worker::tenant::TenantState;

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

    /// Takes in a worker's heartbeat received at `now`; the tenants it reported that live on
    /// another worker now, which it must give up.
    pub fn heartbeat(&mut self, beat: &Heartbeat, now: Instant) -> Vec<String> {
        let record = WorkerRecord {
            api: beat.api,
            public_addr: beat.public_addr,
        };
        let dead_after = self.dead_after;
        match self.workers.get_mut(&beat.worker) {
            Some(entry) => {
                if entry.record != record {
                    info!(worker = %beat.worker, api = %beat.api, public_addr = %beat.public_addr, "worker moved");
                    entry.record = record;
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
        if let Some(holder) = self.port_holder(hosted.port, &hosted.name) {
            warn!(tenant = %hosted.name, port = hosted.port, holder = %holder, worker, "port already held by another tenant of the cluster: not registered");
            return true;
        }
        let alive = |name: &str| {
            self.workers
                .get(name)
                .is_some_and(|w| self.is_alive_at(w.last_seen, now))
        };
        match self.tenants.get(&hosted.name) {
            Some(known) if known.record.worker != worker && alive(&known.record.worker) => {
                warn!(tenant = %hosted.name, worker, on = %known.record.worker, "tenant reported by a worker while it lives on another: released there");
                return false;
            }
            _ => {}
        }
        let entry = self
            .tenants
            .entry(hosted.name.clone())
            .or_insert_with(|| {
                info!(tenant = %hosted.name, worker, port = hosted.port, "tenant registered by its worker");
                TenantEntry {
                    record: TenantRecord {
                        worker: worker.to_string(),
                        port: hosted.port,
                        checkpoint: hosted.checkpoint.clone(),
                        generation: hosted.generation,
                        placed_because: format!("added on worker {worker}"),
                    },
                    claimed_at: None,
                    state: None,
                    rss_bytes: None,
                }
            });
        entry.claimed_at = None;
        // A busy tenant is reported without its checkpoint: the last known one stays.
        let (checkpoint, generation) = match &hosted.checkpoint {
            Some(c) => (Some(c.clone()), hosted.generation),
            None => (entry.record.checkpoint.clone(), entry.record.generation),
        };
        let record = TenantRecord {
            worker: worker.to_string(),
            port: hosted.port,
            checkpoint,
            generation,
            placed_because: if entry.record.worker == worker {
                entry.record.placed_because.clone()
            } else {
                format!(
                    "reported by worker {worker} (its worker {} was dead)",
                    entry.record.worker
                )
            },
        };
        if record != entry.record {
            entry.record = record;
            self.changed = true;
        }
        if hosted.state.is_some() {
            entry.state = hosted.state;
        }
        entry.rss_bytes = hosted.rss_bytes.or(entry.rss_bytes);
        true
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

    fn is_alive_at(&self, last_seen: Instant, now: Instant) -> bool {
        now.saturating_duration_since(last_seen) < self.dead_after
    }

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
            let elsewhere = t.record.worker != worker
                && self
                    .workers
                    .get(&t.record.worker)
                    .is_some_and(|w| self.is_alive_at(w.last_seen, now));
            if elsewhere {
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
        info!(tenant = name, worker, port, "name and port claimed");
        self.tenants.insert(
            name.to_string(),
            TenantEntry {
                record: TenantRecord {
                    worker: worker.to_string(),
                    port,
                    checkpoint: None,
                    generation: None,
                    placed_because: format!("added on worker {worker}"),
                },
                claimed_at: Some(now),
                state: None,
                rss_bytes: None,
            },
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

    /// Records that the hub asked `name`'s worker to wake it: until a heartbeat says otherwise
    /// it counts as waking, so that further queries do not ask again.
    pub fn waking(&mut self, name: &str) {
        if let Some(t) = self.tenants.get_mut(name) {
            t.state = Some(TenantState::SwappingIn);
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    const DEAD: Duration = Duration::from_secs(10);

    fn hosted(name: &str, port: u16, state: TenantState) -> HostedTenant {
        HostedTenant {
            name: name.into(),
            port,
            state: Some(state),
            checkpoint: Some(format!("{name}-1")),
            generation: Some(1),
            rss_bytes: Some(1 << 20),
        }
    }

    fn beat(worker: &str, tenants: Vec<HostedTenant>) -> Heartbeat {
        let n = worker.trim_start_matches('w').parse::<u8>().unwrap_or(9);
        Heartbeat {
            worker: worker.into(),
            api: SocketAddr::from(([127, 0, 0, n], 7070)),
            public_addr: IpAddr::from([127, 0, 0, n]),
            memory_total_bytes: 8 << 30,
            memory_available_bytes: 4 << 30,
            load: 0.1,
            tenants,
        }
    }

    #[test]
    fn a_heartbeat_registers_its_worker_and_tenants() {
        let t0 = Instant::now();
        let mut r = Registry::from_record(HubRecord::default(), DEAD, t0);
        r.heartbeat(
            &beat("w1", vec![hosted("web", 8080, TenantState::SwappedOut)]),
            t0,
        );
        let w = r.whereabouts("web", t0).unwrap();
        assert_eq!(w.worker, "w1");
        assert_eq!(w.address, IpAddr::from([127, 0, 0, 1]));
        assert_eq!(w.state, Some(TenantState::SwappedOut));
        assert!(w.worker_alive);
        assert!(r.whereabouts("nope", t0).is_none());
        let record = r.take_record().expect("changed");
        assert_eq!(record.tenants["web"].placed_because, "added on worker w1");
        assert!(r.take_record().is_none(), "nothing changed since");
    }

    #[test]
    fn a_silent_worker_is_dead_after_the_timeout_and_back_with_its_next_heartbeat() {
        let t0 = Instant::now();
        let mut r = Registry::from_record(HubRecord::default(), DEAD, t0);
        r.heartbeat(
            &beat("w1", vec![hosted("web", 8080, TenantState::Running)]),
            t0,
        );
        assert!(r.workers(t0 + DEAD / 2)[0].alive);
        assert!(!r.workers(t0 + DEAD)[0].alive);
        assert!(!r.whereabouts("web", t0 + DEAD).unwrap().worker_alive);
        r.heartbeat(
            &beat("w1", vec![hosted("web", 8080, TenantState::Running)]),
            t0 + DEAD,
        );
        assert!(r.whereabouts("web", t0 + DEAD).unwrap().worker_alive);
    }

    #[test]
    fn a_port_is_one_tenants_across_the_cluster() {
        let t0 = Instant::now();
        let mut r = Registry::from_record(HubRecord::default(), DEAD, t0);
        r.heartbeat(
            &beat("w1", vec![hosted("web", 8080, TenantState::Running)]),
            t0,
        );
        r.heartbeat(
            &beat("w2", vec![hosted("blog", 8080, TenantState::Running)]),
            t0,
        );
        assert!(r.whereabouts("blog", t0).is_none());
        assert_eq!(r.tenants(t0).len(), 1);
    }

    #[test]
    fn a_tenant_stays_with_its_live_worker_and_follows_it_once_dead() {
        let t0 = Instant::now();
        let mut r = Registry::from_record(HubRecord::default(), DEAD, t0);
        r.heartbeat(
            &beat("w1", vec![hosted("web", 8080, TenantState::Running)]),
            t0,
        );
        r.heartbeat(
            &beat("w2", vec![hosted("web", 8080, TenantState::Running)]),
            t0,
        );
        assert_eq!(r.whereabouts("web", t0).unwrap().worker, "w1");
        let later = t0 + DEAD;
        r.heartbeat(
            &beat("w2", vec![hosted("web", 8080, TenantState::Running)]),
            later,
        );
        let w = r.whereabouts("web", later).unwrap();
        assert_eq!((w.worker.as_str(), w.worker_alive), ("w2", true));
        assert!(r.tenants(later)[0].placed_because.contains("w1 was dead"));
    }

    #[test]
    fn a_tenant_placed_elsewhere_is_released_by_its_old_worker_when_it_returns() {
        let t0 = Instant::now();
        let mut r = Registry::from_record(HubRecord::default(), DEAD, t0);
        r.heartbeat(
            &beat("w1", vec![hosted("web", 8080, TenantState::SwappedOut)]),
            t0,
        );
        r.heartbeat(&beat("w2", vec![]), t0 + DEAD);
        assert_eq!(r.placement_of("web"), Some((Some("web-1".into()), 1 << 20)));
        r.moved(
            "web",
            "w2",
            "its worker w1 was dead".into(),
            None,
            t0 + DEAD,
        );
        // w2 reports before it has adopted it: the placement stands.
        r.heartbeat(&beat("w2", vec![]), t0 + DEAD);
        let w = r.whereabouts("web", t0 + DEAD).unwrap();
        assert_eq!(
            (w.worker.as_str(), w.state),
            ("w2", Some(TenantState::SwappedOut))
        );
        let back = t0 + DEAD + Duration::from_secs(1);
        r.heartbeat(
            &beat("w2", vec![hosted("web", 8080, TenantState::Running)]),
            back,
        );
        let release = r.heartbeat(
            &beat("w1", vec![hosted("web", 8080, TenantState::Running)]),
            back,
        );
        assert_eq!(release, ["web"]);
        assert_eq!(r.whereabouts("web", back).unwrap().worker, "w2");
    }

    #[test]
    fn a_claim_is_refused_a_port_or_name_another_tenant_holds() {
        let t0 = Instant::now();
        let mut r = Registry::from_record(HubRecord::default(), DEAD, t0);
        r.heartbeat(
            &beat("w1", vec![hosted("web", 8080, TenantState::Running)]),
            t0,
        );
        r.heartbeat(&beat("w2", vec![]), t0);
        let port_taken = r.claim("w2", "blog", 8080, t0).unwrap_err();
        assert!(port_taken.contains("tenant web's"), "{port_taken}");
        let name_taken = r.claim("w2", "web", 8080, t0).unwrap_err();
        assert!(name_taken.contains("lives on worker w1"), "{name_taken}");
        r.claim("w2", "blog", 8081, t0).unwrap();
        assert!(r.claim("w1", "other", 8081, t0).is_err(), "claimed already");
        // Not reported by its worker while it starts: the claim stands, then lapses.
        r.heartbeat(&beat("w2", vec![]), t0 + Duration::from_secs(1));
        assert!(r.claim("w1", "other", 8081, t0).is_err(), "still claimed");
        let later = t0 + CLAIM_GRACE;
        r.heartbeat(&beat("w1", vec![]), later);
        r.heartbeat(&beat("w2", vec![]), later);
        r.claim("w1", "other", 8081, later).unwrap();
    }

    #[test]
    fn a_tenant_its_worker_stops_reporting_is_forgotten() {
        let t0 = Instant::now();
        let mut r = Registry::from_record(HubRecord::default(), DEAD, t0);
        r.heartbeat(
            &beat(
                "w1",
                vec![
                    hosted("web", 8080, TenantState::Running),
                    hosted("db", 6379, TenantState::Running),
                ],
            ),
            t0,
        );
        r.take_record();
        r.heartbeat(
            &beat("w1", vec![hosted("web", 8080, TenantState::Running)]),
            t0,
        );
        assert!(r.whereabouts("db", t0).is_none());
        assert!(!r.take_record().unwrap().tenants.contains_key("db"));
    }

    #[test]
    fn a_restarted_hub_knows_what_its_record_holds_and_gives_workers_their_grace() {
        let t0 = Instant::now();
        let mut r = Registry::from_record(HubRecord::default(), DEAD, t0);
        r.heartbeat(
            &beat("w1", vec![hosted("web", 8080, TenantState::SwappedOut)]),
            t0,
        );
        let record = r.take_record().unwrap();
        let t1 = t0 + DEAD * 3;
        let again = Registry::from_record(record, DEAD, t1);
        let w = again.whereabouts("web", t1).unwrap();
        assert_eq!(
            (w.worker.as_str(), w.worker_alive, w.state),
            ("w1", true, None)
        );
        assert!(!again.whereabouts("web", t1 + DEAD).unwrap().worker_alive);
    }

    #[test]
    fn a_busy_tenant_keeps_its_last_known_state_and_a_wake_marks_it_waking() {
        let t0 = Instant::now();
        let mut r = Registry::from_record(HubRecord::default(), DEAD, t0);
        r.heartbeat(
            &beat("w1", vec![hosted("web", 8080, TenantState::SwappedOut)]),
            t0,
        );
        let mut busy = hosted("web", 8080, TenantState::Running);
        busy.state = None;
        r.heartbeat(&beat("w1", vec![busy]), t0);
        assert_eq!(
            r.whereabouts("web", t0).unwrap().state,
            Some(TenantState::SwappedOut)
        );
        r.waking("web");
        assert_eq!(
            r.whereabouts("web", t0).unwrap().state,
            Some(TenantState::SwappingIn)
        );
    }
}
