//! A new tenant added through the hub (`pico --hub URL tenant add ...`): the hub places it on
//! the live worker with most free memory (then the least loaded: it has no pages anywhere yet)
//! and has that worker start it; the worker claims its name and port at the hub as any add does.

use std::sync::Arc;
use std::time::Instant;

use tracing::info;
use worker::protocol::{Client, Request};
use worker::tenant::{TenantInfo, TenantSpec};

use crate::hub::Hub;
use crate::placement::{self, Candidate};

/// Starts the tenant of `spec` on the worker the placement rule picks; its record there.
pub async fn add_tenant(hub: &Arc<Hub>, spec: TenantSpec) -> Result<TenantInfo, String> {
    let now = Instant::now();
    let workers = hub.registry().workers(now);
    let candidates: Vec<Candidate> = workers.iter().map(|w| Candidate::of(w, 0)).collect();
    let live = candidates.iter().filter(|c| c.alive).count();
    let need = spec.limits.memory_limit.unwrap_or(0);
    let chosen = placement::choose(&candidates, need).ok_or("no live worker has room for it")?;
    let to = workers
        .iter()
        .find(|w| w.name == chosen.worker)
        .ok_or("its chosen worker left")?;
    let because = format!("placed when added: {}", placement::reason(chosen, live));
    let name = spec.name.clone();
    let client = Client::tcp(to.api, hub.worker_token.clone());
    let added = client
        .call(&Request::Add(spec))
        .await
        .map_err(|e| format!("add on {}: {e}", to.name))?;
    let info: TenantInfo =
        serde_json::from_value(added).map_err(|e| format!("add on {}: {e}", to.name))?;
    hub.registry().placed(&name, &because);
    info!(tenant = %name, worker = %to.name, because = %because, "tenant added");
    Ok(info)
}
