//! Moving a tenant from one live worker to another (`pico tenant move NAME --to WORKER`): the
//! destination checks the source's CPU first (a mismatch is reported before the source stops the
//! tenant), the source checkpoints it, the hub records the new place, the source gives the
//! sleeping tenant up (refused if it woke meanwhile: then it stays), and the destination adopts
//! that checkpoint and wakes it. A failed adoption gives it back to the source, from the same
//! checkpoint: nothing is lost at any step.
//!
//! The destination reads the pages from its own tiers first, then from the cold tier (a peer
//! worker's local tier is not a source yet). The downtime is the source's swap-out, the adoption
//! and the destination's swap-in.

use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tracing::info;
use worker::protocol::{Client, Request};
use worker::tenant::{SwapInReport, SwapOutReport, TenantInfo, TenantState};

use crate::hub::Hub;

/// What a move did, and what it cost.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MoveReport {
    pub tenant: String,
    pub from: String,
    pub to: String,
    pub checkpoint: String,
    /// From the source's swap-out to the destination's restored tenant: no client is answered
    /// meanwhile (connections to the destination are held).
    pub downtime_ms: u64,
    pub cpu_check_ms: u64,
    pub swap_out_ms: u64,
    pub adopt_ms: u64,
    pub swap_in_ms: u64,
    /// Pages the destination's restore read first (its restore set), those it held in memory
    /// already, and what came from the cold tier; the rest of the image follows in the
    /// background.
    pub restore_pages: u64,
    pub restore_pages_held: u64,
    pub restore_cold_pages: u64,
    pub restore_cold_bytes: u64,
}

/// One worker a move talks to.
struct Party {
    name: String,
    client: Client,
}

impl Party {
    async fn ask(&self, request: Request, what: &str) -> Result<serde_json::Value, String> {
        self.client
            .call(&request)
            .await
            .map_err(|e| format!("{what} on {}: {e}", self.name))
    }
}

/// Moves tenant `name` to worker `to`; why not, when it cannot.
pub async fn move_tenant(hub: &Arc<Hub>, name: &str, to: &str) -> Result<MoveReport, String> {
    let _one_at_a_time = hub.placing.lock().await;
    let now = Instant::now();
    let place = hub
        .registry()
        .whereabouts(name, now)
        .ok_or_else(|| format!("no tenant {name}"))?;
    if place.worker == to {
        return Err(format!("{name} is on {to} already"));
    }
    if !place.worker_alive {
        return Err(format!(
            "its worker {} is dead: its next query places it (failover)",
            place.worker
        ));
    }
    let destination = hub
        .registry()
        .workers(now)
        .into_iter()
        .find(|w| w.name == to && w.alive)
        .ok_or_else(|| format!("no live worker {to}"))?;
    let source = Party {
        name: place.worker.clone(),
        client: Client::tcp(place.api, hub.worker_token.clone()),
    };
    let target = Party {
        name: to.to_string(),
        client: Client::tcp(destination.api, hub.worker_token.clone()),
    };
    let started = Instant::now();
    let record = source.ask(Request::CpuRecord, "CPU record").await?;
    let record = record["record"].as_str().unwrap_or_default().to_string();
    target
        .ask(Request::CpuCheck { record }, "CPU check")
        .await?;
    let cpu_check_ms = elapsed_ms(started);

    let stopped = Instant::now();
    let status = source
        .ask(Request::Status { name: name.into() }, "status")
        .await?;
    let status: TenantInfo = serde_json::from_value(status).map_err(|e| format!("status: {e}"))?;
    let checkpoint = match (status.state, status.checkpoint) {
        (TenantState::SwappedOut, Some(checkpoint)) => checkpoint,
        _ => {
            let out = source
                .ask(Request::SwapOut { name: name.into() }, "swap-out")
                .await?;
            let out: SwapOutReport =
                serde_json::from_value(out).map_err(|e| format!("swap-out report: {e}"))?;
            out.checkpoint
        }
    };
    let swap_out_ms = elapsed_ms(stopped);

    // From here the hub places it on the destination: the source's heartbeats are told to let
    // it go, and the destination's report of it is its own.
    hub.registry().moved(
        name,
        to,
        "moved by an operator".into(),
        Some(&checkpoint),
        Instant::now(),
    );
    let back = |why: String| {
        hub.registry().moved(
            name,
            &place.worker,
            format!("a move to {to} failed ({why}); back on its worker"),
            None,
            Instant::now(),
        );
        why
    };
    // Refused if it woke on the source meanwhile: then it stays there.
    source
        .ask(Request::Release { name: name.into() }, "release")
        .await
        .map_err(back)?;
    let adopting = Instant::now();
    let adopted = target
        .ask(
            Request::Adopt {
                name: name.into(),
                checkpoint: checkpoint.clone(),
            },
            "adopt",
        )
        .await;
    if let Err(e) = adopted {
        // Released on the source: it takes its own checkpoint back.
        let readopted = source
            .ask(
                Request::Adopt {
                    name: name.into(),
                    checkpoint: checkpoint.clone(),
                },
                "adopt again",
            )
            .await;
        return Err(back(match readopted {
            Ok(_) => e,
            Err(again) => format!("{e}; {again}"),
        }));
    }
    let adopt_ms = elapsed_ms(adopting);
    let swapped_in = target
        .ask(
            Request::SwapIn {
                name: name.into(),
                no_activeset: false,
                install: None,
            },
            "swap-in",
        )
        .await?;
    let swap_in: SwapInReport =
        serde_json::from_value(swapped_in).map_err(|e| format!("swap-in report: {e}"))?;
    let report = MoveReport {
        tenant: name.to_string(),
        from: place.worker.clone(),
        to: to.to_string(),
        checkpoint,
        downtime_ms: elapsed_ms(stopped),
        cpu_check_ms,
        swap_out_ms,
        adopt_ms,
        swap_in_ms: swap_in.total_ms,
        restore_pages: swap_in.prefetch.requested,
        restore_pages_held: swap_in.prefetch.already_hot,
        restore_cold_pages: swap_in.prefetch.cold_pages,
        restore_cold_bytes: swap_in.prefetch.cold_bytes,
    };
    info!(tenant = name, from = %report.from, to, downtime_ms = report.downtime_ms, cold_bytes = report.restore_cold_bytes, "tenant moved");
    Ok(report)
}

fn elapsed_ms(since: Instant) -> u64 {
    since.elapsed().as_millis() as u64
}
