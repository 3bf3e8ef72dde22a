//! Draining a worker (`pico worker drain NAME`), before its host is upgraded or removed: the hub
//! stops placing anything on it (no new tenant, no failover, no move; the mark is in the hub's
//! record, so it outlives a restart) and moves each of its tenants to the worker the placement
//! rule picks among the others. A running tenant moves as an operator's move does (checkpointed,
//! adopted and restored there); a sleeping one is adopted there asleep, without a restore, and
//! wakes at its next client. A tenant that cannot move stays where it is, and the drain says why.
//!
//! The drain runs on the hub, one tenant at a time, whatever happens to the client that asked:
//! its progress is kept here and read with `GET /v1/workers/{name}/drain`. `undrain` lifts the
//! mark (and stops a drain under way before its next tenant). A dead worker's tenants are placed
//! elsewhere at once, from their last checkpoints, as a DNS query would.

use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::hub::{lock, Hub};
use crate::moving::{relocate, Relocation};
use crate::placement;
use crate::wake::{candidates, place_elsewhere};

/// A drain and how far it got.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DrainStatus {
    pub worker: String,
    /// Its tenants when the drain started, by name.
    pub tenants: Vec<String>,
    /// What happened to each, in the order the drain took them.
    pub steps: Vec<DrainStep>,
    pub done: bool,
}

impl DrainStatus {
    /// The tenants that stayed on the worker, by name.
    pub fn stayed(&self) -> Vec<&str> {
        self.steps
            .iter()
            .filter(|s| matches!(s.outcome, Outcome::Stayed { .. }))
            .map(|s| s.tenant.as_str())
            .collect()
    }
}

/// What the drain did with one tenant.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DrainStep {
    pub tenant: String,
    #[serde(flatten)]
    pub outcome: Outcome,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum Outcome {
    /// It ran, and runs on `to` now: checkpointed, adopted and restored there.
    Moved { to: String, downtime_ms: u64 },
    /// It slept, and sleeps on `to` now (adopted without a restore).
    MovedAsleep { to: String },
    /// It had left for `to` before the drain came to it (an operator's move, a failover).
    Left { to: String },
    /// It is still on the drained worker.
    Stayed { why: String },
}

/// Marks `worker` draining and starts moving its tenants away (a drain under way goes on); the
/// drain as it is now.
pub fn start(hub: &Arc<Hub>, worker: &str) -> Result<DrainStatus, String> {
    hub.registry().set_draining(worker, true)?;
    let tenants = hub.registry().tenants_on(worker);
    let mut drains = lock(&hub.drains);
    if let Some(under_way) = drains.get(worker).filter(|d| !d.done) {
        return Ok(under_way.clone());
    }
    let status = DrainStatus {
        worker: worker.to_string(),
        tenants,
        steps: Vec::new(),
        done: false,
    };
    info!(worker, tenants = status.tenants.len(), "drain started");
    drains.insert(worker.to_string(), status.clone());
    drop(drains);
    tokio::spawn(drain(
        hub.clone(),
        worker.to_string(),
        status.tenants.clone(),
    ));
    Ok(status)
}

/// The last drain of `worker` this hub ran, if any.
pub fn status(hub: &Hub, worker: &str) -> Option<DrainStatus> {
    lock(&hub.drains).get(worker).cloned()
}

/// Lets the hub place tenants on `worker` again; a drain under way stops before its next tenant.
pub fn undrain(hub: &Hub, worker: &str) -> Result<(), String> {
    hub.registry().set_draining(worker, false)?;
    info!(worker, "undrained");
    Ok(())
}

/// Moves `tenants` off `worker`, one at a time, each step kept in its status.
async fn drain(hub: Arc<Hub>, worker: String, tenants: Vec<String>) {
    for tenant in tenants {
        let draining = hub.registry().is_draining(&worker);
        let outcome = match draining {
            true => move_away(&hub, &worker, &tenant).await,
            false => Outcome::Stayed {
                why: "the drain was stopped (undrain)".into(),
            },
        };
        match &outcome {
            Outcome::Stayed { why } => {
                warn!(worker = %worker, tenant = %tenant, why = %why, "tenant stays on its drained worker")
            }
            moved => info!(worker = %worker, tenant = %tenant, outcome = ?moved, "tenant drained"),
        }
        if let Some(status) = lock(&hub.drains).get_mut(&worker) {
            status.steps.push(DrainStep { tenant, outcome });
        }
    }
    if let Some(status) = lock(&hub.drains).get_mut(&worker) {
        status.done = true;
        info!(worker = %worker, stayed = ?status.stayed(), "drain ended");
    }
}

/// Moves `tenant` off `worker`: where it went, or why it stays.
async fn move_away(hub: &Arc<Hub>, worker: &str, tenant: &str) -> Outcome {
    let now = Instant::now();
    let Some(place) = hub.registry().whereabouts(tenant, now) else {
        return Outcome::Stayed {
            why: "the hub no longer knows it (removed meanwhile)".into(),
        };
    };
    if place.worker != worker {
        return Outcome::Left { to: place.worker };
    }
    if !place.worker_alive {
        return match place_elsewhere(hub, tenant).await {
            Ok(there) => Outcome::MovedAsleep { to: there.worker },
            Err(why) => Outcome::Stayed { why },
        };
    }
    let (to, because) = match destination(hub, worker, tenant).await {
        Ok(chosen) => chosen,
        Err(why) => return Outcome::Stayed { why },
    };
    let how = Relocation {
        because,
        wake_sleeping: false,
        count_bytes: false,
    };
    match relocate(hub, tenant, &to, &how).await {
        Ok(report) if report.asleep => Outcome::MovedAsleep { to },
        Ok(report) => Outcome::Moved {
            to,
            downtime_ms: report.downtime_ms,
        },
        Err(why) => Outcome::Stayed { why },
    }
}

/// The worker the placement rule picks for `tenant` among the live workers that are not
/// draining (`worker` is), by the pages of its newest checkpoint each holds; and why.
async fn destination(hub: &Hub, worker: &str, tenant: &str) -> Result<(String, String), String> {
    let now = Instant::now();
    let (checkpoint, rss) = hub
        .registry()
        .placement_of(tenant)
        .ok_or("the hub no longer knows it (removed meanwhile)")?;
    let workers = hub.registry().workers(now);
    let candidates = candidates(hub, &workers, checkpoint.as_deref()).await;
    let live = candidates.iter().filter(|c| c.alive && !c.draining).count();
    let chosen = placement::choose(&candidates, rss).ok_or(
        "no other live worker that is not draining has room for it (add a worker, or undrain one)",
    )?;
    let because = format!(
        "its worker {worker} was drained; {}",
        placement::reason(chosen, live)
    );
    Ok((chosen.worker.clone(), because))
}
