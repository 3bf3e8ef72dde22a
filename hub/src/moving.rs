//! Moving a tenant from one live worker to another (`pico tenant move NAME --to WORKER`): the
//! destination checks the source's CPU first (a mismatch is reported before the source stops the
//! tenant), the source checkpoints it, the hub records the new place, the source gives the
//! sleeping tenant up (refused if it woke meanwhile: then it stays), and the destination adopts
//! that checkpoint and wakes it. A failed adoption gives it back to the source, from the same
//! checkpoint: nothing is lost at any step. A drain (`draining`) moves a worker's tenants the same
//! way, but leaves a sleeping one asleep on its new worker (no restore until its next client).
//!
//! The destination reads the pages from its own tiers first, then from the source's local tier
//! (a peer tier, over the source's API), then from the cold tier. The downtime is the source's
//! swap-out, the adoption and the destination's swap-in; the report waits for the rest of the
//! image to arrive (in the background, the tenant answering meanwhile) to say how many bytes
//! came from each source.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pagestore::stats::LiveCounters;
use serde::{Deserialize, Serialize};
use tracing::info;
use worker::protocol::{Client, PeerRef, Request};
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
    /// The whole image's pages by where the destination read them (bytes of pages): what it
    /// held, what the source sent (peer tier), what the cold tier did; `None` when its restore
    /// did not finish within [`REST_WAIT`] or was not counted (a drain).
    pub bytes: Option<BytesBySource>,
    /// It was asleep and was adopted asleep (a drain): no restore yet, so no downtime; its next
    /// client wakes it on the destination.
    #[serde(default)]
    pub asleep: bool,
}

/// Bytes of a moved tenant's pages by where its new worker read them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BytesBySource {
    /// The checkpoint's pages (non-zero), in bytes.
    pub checkpoint: u64,
    pub held: u64,
    pub peer: u64,
    pub cold: u64,
    /// Everything read from the cold tier meanwhile, as stored (compressed pages, and the
    /// checkpoint's manifest, record and files).
    pub cold_read: u64,
}

/// How long a move's report waits for the rest of the image after the tenant runs.
const REST_WAIT: Duration = Duration::from_secs(60);

/// A page's bytes.
const PAGE: u64 = 4096;

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

    /// [`Party::ask`], the answer read as a `T`.
    async fn ask_as<T: serde::de::DeserializeOwned>(
        &self,
        request: Request,
        what: &str,
    ) -> Result<T, String> {
        let answer = self.ask(request, what).await?;
        serde_json::from_value(answer).map_err(|e| format!("{what} on {}: {e}", self.name))
    }

    /// Tenant `name` as this worker has it.
    async fn status(&self, name: &str) -> Result<TenantInfo, String> {
        self.ask_as(Request::Status { name: name.into() }, "status")
            .await
    }
}

/// How a move goes beyond its stages: why the hub records it, and what it waits for.
pub(crate) struct Relocation {
    /// The placement's reason in the hub's record (`pico hub ls tenants`).
    pub because: String,
    /// A sleeping tenant is woken on the destination (an operator's move); otherwise it is
    /// adopted there asleep, without a restore (a drain), and wakes at its next client.
    pub wake_sleeping: bool,
    /// The report waits for the rest of the image to say where its pages came from.
    pub count_bytes: bool,
}

/// Moves tenant `name` to worker `to` (an operator's move: woken there, its bytes counted); why
/// not, when it cannot.
pub async fn move_tenant(hub: &Arc<Hub>, name: &str, to: &str) -> Result<MoveReport, String> {
    let how = Relocation {
        because: "moved by an operator".into(),
        wake_sleeping: true,
        count_bytes: true,
    };
    relocate(hub, name, to, &how).await
}

/// Moves tenant `name` to worker `to` as `how` says; why not, when it cannot.
pub(crate) async fn relocate(
    hub: &Arc<Hub>,
    name: &str,
    to: &str,
    how: &Relocation,
) -> Result<MoveReport, String> {
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
    if destination.draining {
        return Err(format!(
            "{to} is draining: it takes no tenant (`pico worker undrain {to}` first)"
        ));
    }
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
    let status = source.status(name).await?;
    let (checkpoint, asleep) = match (status.state, status.checkpoint) {
        (TenantState::SwappedOut, Some(checkpoint)) => (checkpoint, true),
        _ => {
            let out: SwapOutReport = source
                .ask_as(Request::SwapOut { name: name.into() }, "swap-out")
                .await?;
            (out.checkpoint, false)
        }
    };
    let swap_out_ms = elapsed_ms(stopped);

    // From here the hub places it on the destination: the source's heartbeats are told to let
    // it go, and the destination's report of it is its own.
    hub.registry().moved(
        name,
        to,
        how.because.clone(),
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
    // The destination's reads from here on are the move's (see `bytes_by_source`).
    let before = match how.count_bytes {
        true => Some(counters(&target).await.map_err(back)?),
        false => None,
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
                // The source still holds its pages: the destination reads them from there first.
                peer: Some(PeerRef {
                    name: place.worker.clone(),
                    api: place.api,
                }),
            },
            "adopt",
        )
        .await;
    if let Err(e) = adopted {
        return Err(back(give_back(&source, name, &checkpoint, e).await));
    }
    let adopt_ms = elapsed_ms(adopting);
    let mut report = MoveReport {
        tenant: name.to_string(),
        from: place.worker.clone(),
        to: to.to_string(),
        checkpoint,
        downtime_ms: 0,
        cpu_check_ms,
        swap_out_ms,
        adopt_ms,
        swap_in_ms: 0,
        restore_pages: 0,
        restore_pages_held: 0,
        restore_cold_pages: 0,
        restore_cold_bytes: 0,
        bytes: None,
        asleep: asleep && !how.wake_sleeping,
    };
    if report.asleep {
        // It was asleep and stays so: its next client wakes it there.
        info!(tenant = name, from = %report.from, to, "tenant moved asleep");
        return Ok(report);
    }
    let checkpoint = report.checkpoint.clone();
    let swapped_in = target
        .ask_as::<SwapInReport>(
            Request::SwapIn {
                name: name.into(),
                no_activeset: false,
                install: None,
            },
            "swap-in",
        )
        .await;
    let swap_in = match swapped_in {
        Ok(report) => report,
        Err(e) => match woken_meanwhile(&target, name).await {
            // A client's connection to the destination woke it first: that is the swap-in.
            Some(report) => report,
            None => {
                // It cannot run there (a system file differs, say): the destination lets it
                // go and the source takes it back from the same checkpoint.
                let e = match target
                    .ask(Request::Release { name: name.into() }, "release")
                    .await
                {
                    Ok(_) => e,
                    Err(stuck) => format!("{e}; {stuck}"),
                };
                return Err(back(give_back(&source, name, &checkpoint, e).await));
            }
        },
    };
    report.downtime_ms = elapsed_ms(stopped);
    report.swap_in_ms = swap_in.total_ms;
    report.restore_pages = swap_in.prefetch.requested;
    report.restore_pages_held = swap_in.prefetch.already_hot;
    report.restore_cold_pages = swap_in.prefetch.cold_pages;
    report.restore_cold_bytes = swap_in.prefetch.cold_bytes;
    if let Some(before) = &before {
        report.bytes = bytes_by_source(&target, name, &checkpoint, before).await;
    }
    info!(tenant = name, from = %report.from, to, downtime_ms = report.downtime_ms, bytes = ?report.bytes, "tenant moved");
    Ok(report)
}

/// Where the destination read the moved tenant's pages: its store's counters from before the
/// adoption (`before`) until its restore has every page (at most [`REST_WAIT`]), so reads of
/// other tenants there meanwhile count too.
async fn bytes_by_source(
    target: &Party,
    name: &str,
    checkpoint: &str,
    before: &LiveCounters,
) -> Option<BytesBySource> {
    let waited = Instant::now();
    loop {
        if !target.status(name).await.ok()?.pages_pending {
            break;
        }
        if waited.elapsed() > REST_WAIT {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let after = counters(target).await.ok()?;
    let held = target
        .ask(
            Request::Held {
                checkpoint: checkpoint.to_string(),
            },
            "held",
        )
        .await
        .ok()?;
    let checkpoint = held["pages"].as_u64()? * PAGE;
    let peer = (after.peer_pages - before.peer_pages) * PAGE;
    let cold = (after.cold_pages - before.cold_pages) * PAGE;
    Some(BytesBySource {
        checkpoint,
        held: checkpoint.saturating_sub(peer + cold),
        peer,
        cold,
        cold_read: after.cold_get_bytes - before.cold_get_bytes,
    })
}

/// The store counters of `party`.
async fn counters(party: &Party) -> Result<LiveCounters, String> {
    party.ask_as(Request::Counters, "store counters").await
}

/// The swap-in of `name` on `party` when it runs there already (a connection woke it while the
/// move asked for it), or `None`.
async fn woken_meanwhile(party: &Party, name: &str) -> Option<SwapInReport> {
    let status = party.status(name).await.ok()?;
    match status.state {
        TenantState::Running => status.last_swap_in,
        _ => None,
    }
}

/// After a move failed with `why` past the source's release: the source adopts `checkpoint`
/// again, so the tenant is where it was. Says why the move failed, and whether that failed too.
async fn give_back(source: &Party, name: &str, checkpoint: &str, why: String) -> String {
    let readopted = source
        .ask(
            Request::Adopt {
                name: name.into(),
                checkpoint: checkpoint.to_string(),
                peer: None,
            },
            "adopt again",
        )
        .await;
    match readopted {
        Ok(_) => format!("{why}; it stays on {}", source.name),
        Err(again) => format!("{why}; {again}"),
    }
}

fn elapsed_ms(since: Instant) -> u64 {
    since.elapsed().as_millis() as u64
}
