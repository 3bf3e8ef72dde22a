//! A DNS query for a tenant is its first sign of a client: answering it is the hub's chance to
//! start the tenant's swap-in before the client connects. A query for a sleeping tenant asks its
//! worker to wake it (once, however many queries arrive meanwhile) and is answered once the
//! tenant runs, or after `wake_wait_ms` anyway: the worker holds the client's connection until
//! the tenant answers.
//!
//! A tenant whose worker is dead is placed on a live one first (failover): the chosen worker
//! adopts it from the newest checkpoint the hub recorded, in the shared cold tier, and wakes it
//! like any other. What it did since that checkpoint is lost with its worker.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::{info, warn};
use worker::adopt::HeldPages;
use worker::protocol::{Client, Request};
use worker::tenant::TenantState;

use crate::dns::{Names, Resolution};
use crate::hub::{lock, Hub};
use crate::placement::{self, Candidate};
use crate::registry::WorkerView;

/// How long placement waits for a worker to say how much of a checkpoint it holds.
const HELD_WAIT: Duration = Duration::from_millis(500);
use crate::registry::Whereabouts;

/// The zone's names as the hub resolves them.
pub struct HubNames(pub Arc<Hub>);

impl Names for HubNames {
    async fn resolve(&self, label: &str) -> Resolution {
        let hub = &self.0;
        let Some(mut place) = hub.registry().whereabouts(label, Instant::now()) else {
            return Resolution::Unknown;
        };
        if !place.worker_alive {
            match place_elsewhere(hub, label).await {
                Ok(moved) => place = moved,
                Err(why) => {
                    warn!(tenant = label, worker = %place.worker, why = %why, "its worker is dead and it could not be placed elsewhere");
                    return Resolution::Address(place.address);
                }
            }
        }
        if matches!(
            place.state,
            Some(TenantState::SwappedOut | TenantState::SwappingOut)
        ) || hub_is_waking(hub, label)
        {
            let mut done = wake(hub, label, &place);
            let wait = Duration::from_millis(hub.config.wake_wait_ms);
            let woke = tokio::time::timeout(wait, done.wait_for(|ended| *ended)).await;
            if woke.is_err() {
                info!(
                    tenant = label,
                    wait_ms = hub.config.wake_wait_ms,
                    "answered before its swap-in ended (its worker holds the connection)"
                );
            }
        }
        Resolution::Address(place.address)
    }
}

/// Places tenant `name`, whose worker is dead, on the live worker the placement rule picks,
/// which adopts it from its newest recorded checkpoint; where it is then. One placement at a
/// time: a query that waited finds the tenant placed by the one before.
pub(crate) async fn place_elsewhere(hub: &Arc<Hub>, name: &str) -> Result<Whereabouts, String> {
    let _one_at_a_time = hub.placing.lock().await;
    let now = Instant::now();
    let place = hub
        .registry()
        .whereabouts(name, now)
        .ok_or("it was removed")?;
    if place.worker_alive {
        return Ok(place);
    }
    let (checkpoint, rss) = hub.registry().placement_of(name).ok_or("it was removed")?;
    let checkpoint = checkpoint
        .ok_or("it has no checkpoint: it never slept, so nothing of it outlived its worker")?;
    let workers = hub.registry().workers(now);
    let candidates = candidates(hub, &workers, Some(&checkpoint)).await;
    let live = candidates.iter().filter(|c| c.alive).count();
    let chosen = placement::choose(&candidates, rss).ok_or("no live worker has room for it")?;
    let to = workers
        .iter()
        .find(|w| w.name == chosen.worker)
        .ok_or("its chosen worker left")?;
    let because = format!(
        "its worker {} was dead; {}",
        place.worker,
        placement::reason(chosen, live)
    );
    let client = Client::tcp(to.api, hub.worker_token.clone());
    let started = Instant::now();
    client
        .call(&Request::Adopt {
            name: name.to_string(),
            checkpoint: checkpoint.clone(),
            // Its worker is dead: nothing to read pages from.
            peer: None,
        })
        .await
        .map_err(|e| format!("{} could not adopt it: {e}", to.name))?;
    info!(tenant = name, worker = %to.name, %checkpoint, ms = started.elapsed().as_millis() as u64, because = %because, "tenant failed over");
    hub.registry()
        .moved(name, &to.name, because, Some(&checkpoint), Instant::now());
    hub.registry()
        .whereabouts(name, Instant::now())
        .ok_or_else(|| "it was removed".to_string())
}

/// `workers` as the placement rule sees them, each with how many pages of `checkpoint` it holds
/// (none: 0 each).
pub(crate) async fn candidates(
    hub: &Hub,
    workers: &[WorkerView],
    checkpoint: Option<&str>,
) -> Vec<Candidate> {
    let held = match checkpoint {
        Some(checkpoint) => held_by_each(hub, workers, checkpoint).await,
        None => vec![0; workers.len()],
    };
    workers
        .iter()
        .zip(held)
        .map(|(w, held)| Candidate::of(w, held))
        .collect()
}

/// How many pages of `checkpoint` each live worker holds (0 for a dead or draining one, which
/// placement never picks, or one that does not answer within [`HELD_WAIT`]), asked of all at
/// once.
async fn held_by_each(hub: &Hub, workers: &[WorkerView], checkpoint: &str) -> Vec<u64> {
    let asks = workers.iter().map(|w| async move {
        if !w.alive || w.draining {
            return 0;
        }
        let client = Client::tcp(w.api, hub.worker_token.clone());
        let request = Request::Held {
            checkpoint: checkpoint.to_string(),
        };
        match tokio::time::timeout(HELD_WAIT, client.call(&request)).await {
            Ok(Ok(answer)) => serde_json::from_value::<HeldPages>(answer).map_or(0, |h| h.held),
            Ok(Err(e)) => {
                warn!(worker = %w.name, error = %e, "could not say what it holds");
                0
            }
            Err(_) => 0,
        }
    });
    futures::future::join_all(asks).await
}

fn hub_is_waking(hub: &Hub, name: &str) -> bool {
    lock(&hub.wakes).contains_key(name)
}

/// The wake-up of `name` under way, or a new one asked of its worker.
fn wake(hub: &Arc<Hub>, name: &str, place: &Whereabouts) -> watch::Receiver<bool> {
    let mut wakes = lock(&hub.wakes);
    if let Some(done) = wakes.get(name) {
        return done.clone();
    }
    let (tell, done) = watch::channel(false);
    wakes.insert(name.to_string(), done.clone());
    drop(wakes);
    hub.registry().waking(name);
    let hub = hub.clone();
    let name = name.to_string();
    let (worker, api) = (place.worker.clone(), place.api);
    tokio::spawn(async move {
        let started = Instant::now();
        let client = Client::tcp(api, hub.worker_token.clone());
        let asked = client
            .call(&Request::SwapIn {
                name: name.clone(),
                no_activeset: false,
                install: None,
            })
            .await;
        let ms = started.elapsed().as_millis() as u64;
        match asked {
            Ok(_) => info!(tenant = %name, worker = %worker, ms, "woken by a DNS query"),
            // Woken meanwhile by a connection to its worker, most often.
            Err(e) => {
                info!(tenant = %name, worker = %worker, ms, error = %e, "its worker did not swap it in for the DNS query")
            }
        }
        lock(&hub.wakes).remove(&name);
        let _ = tell.send(true);
    });
    done
}
