//! A DNS query for a tenant is its first sign of a client: answering it is the hub's chance to
//! start the tenant's swap-in before the client connects. A query for a sleeping tenant asks its
//! worker to wake it (once, however many queries arrive meanwhile) and is answered once the
//! tenant runs, or after `wake_wait_ms` anyway: the worker holds the client's connection until
//! the tenant answers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::{info, warn};
use worker::protocol::{Client, Request};
use worker::tenant::TenantState;

use crate::dns::{Names, Resolution};
use crate::hub::{lock, Hub};
use crate::registry::Whereabouts;

/// The zone's names as the hub resolves them.
pub struct HubNames(pub Arc<Hub>);

impl Names for HubNames {
    async fn resolve(&self, label: &str) -> Resolution {
        let hub = &self.0;
        let Some(place) = hub.registry().whereabouts(label, Instant::now()) else {
            return Resolution::Unknown;
        };
        if !place.worker_alive {
            warn!(tenant = label, worker = %place.worker, "its worker is silent; answered with its address (failover to another worker is not built yet)");
            return Resolution::Address(place.address);
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
