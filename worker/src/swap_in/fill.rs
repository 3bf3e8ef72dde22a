//! The fill of a lazy swap-in: the restore set fetched ahead of `criu restore`, then the rest of
//! the image filled into memory behind it, so that neither the restore nor CRIU's lazy-pages
//! daemon waits on the cold tier one small read at a time.
//!
//! Both run on one task, started before the checkpoint is mounted ([`start`]), so that the restore
//! set's round trip overlaps the mount and the start of CRIU: the restore set's requests go first. When an ActiveSet was installed, the first answer needs none of the fill,
//! and fetching, decoding and checking the rest of the image would only take the CPU from it
//! (the large-heap tenant's fill is 274 MB): the fill then waits for the learning window to
//! close. A fault the set missed meanwhile fetches its own page. Once the fill is done,
//! [`finish`] records what it read.

use std::path::Path;
use std::sync::Arc;

use pagestore::locality::LocalitySource;
use pagestore::prefetch::PrefetchReport;
use pagestore::{PageId, PageStore};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::host::TenantSlot;

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
    /// Sent (or dropped) when the learning window closes: a fill that waits for it goes on.
    pub window_closed: oneshot::Sender<()>,
    /// The fill itself; its report once the whole image is in memory.
    pub task: JoinHandle<pagestore::Result<PrefetchReport>>,
}

/// Starts fetching the plan's restore set (from its locality pack when it has one), then the
/// rest of the image; with `waits_for_window`, the fill waits for [`Fill::window_closed`] in
/// between.
pub(super) fn start(store: Arc<PageStore>, plan: FillPlan, waits_for_window: bool) -> Fill {
    let FillPlan {
        restore_set,
        locality,
        fill_ids,
    } = plan;
    let (prefetched_tx, prefetched) = oneshot::channel();
    let (window_closed, window_closed_rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let restore_set = store.prefetch_with_locality(&restore_set, locality.as_ref());
        let _ = prefetched_tx.send(restore_set.await);
        if waits_for_window {
            // A dropped sender (the swap-in failed) lets it go too.
            let _ = window_closed_rx.await;
        }
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
