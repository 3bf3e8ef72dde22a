//! The fill of a lazy swap-in: the restore set fetched ahead of `criu restore`, then the rest of
//! the image filled into memory behind it, so that neither the restore nor CRIU's lazy-pages
//! daemon waits on the cold tier one small read at a time.
//!
//! Both run on one task, started before the checkpoint is mounted ([`start`]), so that the
//! restore set's round trip overlaps the mount and the start of CRIU: the restore set's requests
//! go first. When an ActiveSet was installed, the first answer needs none of the fill, and
//! fetching, decoding and checking the rest of the image (the large heap's 274 MB) would only
//! take the cold tier's bandwidth and the CPU from it: the rest then waits for the tenant's first
//! answer to a client, or for the learning window's close when no client waits. A fault the set
//! missed meanwhile fetches its own page. Without a set the fill goes on at once: every page the
//! tenant touches would otherwise be a fault and a cold round trip of its own (measured: the
//! counter's first cold wake-up took 108 sequential round trips, 5.3 s, held; 2, 240 ms, not),
//! at the price of fetching pages the first answer does not need. Once the fill is done,
//! [`finish`] records what it read.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use pagestore::locality::LocalitySource;
use pagestore::prefetch::PrefetchReport;
use pagestore::stats::LiveCounters;
use pagestore::{PageId, PageStore};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::host::TenantSlot;
use crate::tenant::{FillReleasedBy, FillWait};

/// What a fill fetches, planned before the mount.
pub(super) struct FillPlan {
    /// Everything `criu restore` reads before the tenant runs, fetched ahead of it.
    pub restore_set: Vec<PageId>,
    /// The locality pack the restore set is fetched from, if the checkpoint has one.
    pub locality: Option<LocalitySource>,
    /// The rest of the image, filled in behind the restore.
    pub fill_ids: Vec<PageId>,
}

/// A running fill.
pub(super) struct Fill {
    /// The restore set's prefetch report, once it is in memory.
    pub prefetched: oneshot::Receiver<pagestore::Result<PrefetchReport>>,
    /// Sent (or dropped) when the learning window closes: a fill that waits goes on.
    pub window_closed: oneshot::Sender<()>,
    /// The fill itself; its report once the whole image is in memory.
    pub task: JoinHandle<pagestore::Result<PrefetchReport>>,
}

/// Starts fetching the plan's restore set (from its locality pack when it has one), then the
/// rest of the image; with `waits`, the fill waits in between for the tenant's first answer
/// or for [`Fill::window_closed`], whichever comes first. What it waited for, and what the
/// cold tier read from `swap_in_started` until then, become the slot's `last_fill_wait`.
pub(super) fn start(
    store: Arc<PageStore>,
    plan: FillPlan,
    slot: &Arc<TenantSlot>,
    waits: bool,
    swap_in_started: (Instant, LiveCounters),
) -> Fill {
    let FillPlan {
        restore_set,
        locality,
        fill_ids,
    } = plan;
    let (prefetched_tx, prefetched) = oneshot::channel();
    let (window_closed, window_closed_rx) = oneshot::channel::<()>();
    let first_answer = waits.then(|| slot.await_first_answer());
    let slot = slot.clone();
    let (started, at_start) = swap_in_started;
    let task = tokio::spawn(async move {
        let restore_set = store.prefetch_with_locality(&restore_set, locality.as_ref());
        let _ = prefetched_tx.send(restore_set.await);
        let released_by = match first_answer {
            None => FillReleasedBy::Nothing,
            Some(answered) => {
                // A dropped window sender (the swap-in failed) lets it go too; a dropped
                // answer sender (a later swap-in took its place) does not.
                let answered = async {
                    if answered.await.is_err() {
                        std::future::pending::<()>().await;
                    }
                };
                tokio::select! {
                    _ = window_closed_rx => FillReleasedBy::Window,
                    () = answered => FillReleasedBy::Answer,
                }
            }
        };
        let now = store.live_counters();
        slot.set_last_fill_wait(FillWait {
            released_by,
            ms: crate::tenant::elapsed_ms(started),
            cold_bytes: now.cold_get_bytes.saturating_sub(at_start.cold_get_bytes),
            cold_waves: now.cold_waves.saturating_sub(at_start.cold_waves),
        });
        store.prefetch(&fill_ids).await
    });
    Fill {
        prefetched,
        window_closed,
        task,
    }
}

/// The end of the restore stage: waits for the restore set to be in memory; its report (an empty one if the prefetch failed:
/// that only costs speed, the restore read what it needed itself).
pub(super) async fn restore_set_fetched(
    prefetched: oneshot::Receiver<pagestore::Result<PrefetchReport>>,
) -> PrefetchReport {
    match prefetched.await {
        Ok(Ok(r)) => {
            info!(
                pages = r.requested,
                already_hot = r.already_hot,
                cold_pages = r.cold_pages,
                cold_gets = r.cold_gets,
                cold_bytes = r.cold_bytes,
                locality = ?r.locality,
                ms = r.ms,
                "restore set prefetched"
            );
            r
        }
        Ok(Err(e)) => {
            warn!(error = %e, "prefetch failed");
            Default::default()
        }
        Err(_) => {
            warn!("prefetch task ended early");
            Default::default()
        }
    }
}

/// The background stage of the fill: waits for it, appends the swap-in's cold reads (restore
/// set and fill) to the usage log, and keeps its report as the tenant's `last_fill`.
pub(super) async fn finish(
    task: JoinHandle<pagestore::Result<PrefetchReport>>,
    tenant: &str,
    restore_set: &PrefetchReport,
    usage_log: &Path,
    slot: &TenantSlot,
) {
    match task.await {
        Ok(Ok(r)) => {
            info!(
                tenant = %tenant,
                pages = r.requested,
                cold_pages = r.cold_pages,
                cold_gets = r.cold_gets,
                cold_bytes = r.cold_bytes,
                ms = r.ms,
                "image filled in behind the restore"
            );
            let record = pagestore::usage::UsageRecord {
                at_ms: pagestore::clock::now_ms(),
                tenant: tenant.to_string(),
                cold_gets: restore_set.cold_gets + r.cold_gets,
                cold_bytes: restore_set.cold_bytes + r.cold_bytes,
            };
            if let Err(e) = pagestore::usage::append(usage_log, &record) {
                warn!(error = %e, "could not record the swap-in's cold reads");
            }
            slot.set_last_fill(r);
        }
        Ok(Err(e)) => warn!(error = %e, "background fill failed"),
        Err(e) => warn!(error = %e, "background fill task failed"),
    }
}
