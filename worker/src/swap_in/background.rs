//! The background of a lazy swap-in, once the tenant runs: three stages side by side on one
//! task, kept as the tenant's `restoring` (a swap-out or removal waits for it, or aborts it).
//!
//! - **first moments** ([`first_moments`]): until the tenant has gone quiet (its first request
//!   answered), CRIU's lazy-pages daemon serves its faults alone; their faults are learned into
//!   its ActiveSet if this restore learns; when the window closes, CRIU's background copy is
//!   released and a fill that waits goes on (a restore that learns nothing releases the copy
//!   as soon as the fill has the whole image in memory, if that comes first);
//! - **fill** (`fill::finish`): the rest of the image arrives in memory and is accounted;
//! - **copy** ([`copy`]): CRIU's lazy-pages daemon copies in every remaining page and exits
//!   (meanwhile the faults it drops are woken to fault again, see `lost_faults`); then the
//!   reads are reported, the access log saved, and the checkpoint unmounted.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use pager::reads::{MountReads, RestorePhase};
use pager::ImageMount;
use tokio::process::Child;
use tokio::sync::oneshot;
use tracing::{info, warn};

use crate::activeset::{Learn, Window};
use crate::criu::log_tail;
use crate::host::TenantSlot;
use crate::lazy_gate::LazyGate;
use crate::swap_in::fill;
use crate::swap_in::restore::LazyRestore;

/// Everything the background stages of one lazy restore own.
pub(super) struct Background {
    pub restored: LazyRestore,
    /// The tenant's first moments, for which the background copy is held.
    pub window: Window,
    /// `None` when this restore learns nothing (no ActiveSet in use).
    pub learn: Option<Learn>,
    /// The store, whose peer for this tenant (a move's source) is dropped at the end.
    pub store: Arc<pagestore::PageStore>,
    pub slot: Arc<TenantSlot>,
    pub tenant: String,
    /// Where the swap-in's cold reads are appended.
    pub usage_log: PathBuf,
    /// Where the restore's access log is saved.
    pub access_file: PathBuf,
}

impl Background {
    /// Runs the three stages to their end.
    pub(super) async fn run(self) {
        let Background {
            restored,
            window,
            learn,
            store,
            slot,
            tenant,
            usage_log,
            access_file,
        } = self;
        let LazyRestore {
            daemon,
            daemon_work,
            gate,
            prefetch,
            window_closed,
            fill,
            filled,
            mount,
            ..
        } = restored;
        let reads = mount.reads().clone();
        tokio::join!(
            first_moments(window, learn, &reads, gate, window_closed, filled),
            fill::finish(fill, &tenant, &prefetch, &usage_log, &slot),
            copy(daemon, &daemon_work, mount, &access_file, &slot, &tenant),
        );
        // Every page is in the tenant (or the restore ended): a peer is not asked for it any more.
        crate::peer::done_with_peer(&store, &tenant);
    }
}

/// Holds CRIU's background copy until the first moments' window closes, learning from their
/// faults (with `learn`); then releases the copy and the fill. Without learning the copy is held
/// all the same while the fill is still fetching: it reads up to 4 MiB at a time in the daemon's
/// one thread, and each fault of the tenant's first request waited behind it
/// (bench/results/restore-gate). Once the fill has the whole image in memory (`filled`), that
/// reason is gone: the copy reads memory, and a tenant whose first request touches most of its
/// image would otherwise have each page served by a fault of its own (py-dict from the cold tier:
/// ~22k faults of ~85 µs one after another, its first answer at 1.4 s p50, the fill done at
/// 225-329 ms), so a restore that learns nothing releases the copy then. A restore that learns
/// keeps it held: the pages the copy brings in would never fault, and its set would miss them.
async fn first_moments(
    window: Window,
    learn: Option<Learn>,
    reads: &Arc<MountReads>,
    mut gate: LazyGate,
    window_closed: oneshot::Sender<()>,
    filled: oneshot::Receiver<()>,
) {
    // A learning restore waits for its window; one that learns nothing, also for its image.
    let learned = match learn {
        Some(learn) => Some((window.closed().await, learn)),
        None => {
            tokio::select! {
                _ = window.closed() => {}
                () = in_memory(filled) => info!(
                    after_ms = window.access.elapsed_us() / 1000,
                    "image in memory before the tenant went quiet: background copy released"
                ),
            }
            None
        }
    };
    reads.set_phase(RestorePhase::Background);
    gate.release();
    let _ = window_closed.send(());
    if let Some((until, learn)) = learned {
        let faults = learn.faults(&window.access, until);
        if let Err(e) = learn.save(faults).await {
            warn!(tenant = %learn.tenant, error = %e, "could not save the ActiveSet");
        }
    }
}

/// Resolves when the fill reports the whole image in memory; never if the fill failed (its
/// sender dropped): the window alone decides then.
async fn in_memory(filled: oneshot::Receiver<()>) {
    if filled.await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Waits for the lazy-pages daemon to copy in every page and exit; then keeps the restore's
/// reads by tier as the tenant's `last_reads`, saves its access log and unmounts the checkpoint.
async fn copy(
    mut daemon: Child,
    daemon_work: &Path,
    mount: ImageMount,
    access_file: &Path,
    slot: &TenantSlot,
    tenant: &str,
) {
    crate::crashpoint::hit("swap-in:filling");
    // While the daemon serves the tenant, the faults it drops are woken to fault again.
    let waking = crate::lost_faults::wake_while_serving(daemon.id(), tenant);
    let exited = daemon.wait();
    tokio::pin!(exited);
    let status = tokio::select! {
        status = &mut exited => status,
        () = waking => exited.await,
    };
    let accesses = mount.access_log().snapshot();
    let by_tier = mount.reads().report();
    info!(
        tenant,
        restore = ?by_tier.restore,
        faults = ?by_tier.faults,
        background = ?by_tier.background,
        "lazy restore reads by tier"
    );
    slot.set_last_reads(by_tier);
    if let Err(e) = pager::access::write_jsonl(access_file, &accesses) {
        warn!(tenant, error = %e, "could not save the access log");
    }
    if let Err(e) = tokio::task::spawn_blocking(move || mount.unmount()).await {
        warn!(tenant, error = %e, "unmount task failed");
    }
    match status {
        Ok(s) if s.success() => {
            // Every page is in the tenant: a worker that stops now leaves it whole.
            if let Err(e) = crate::recovery::mark_restore_complete(&slot.dirs) {
                warn!(tenant, error = %e, "could not mark the restore complete");
            }
            info!(tenant, page_reads = accesses.len(), "lazy restore complete")
        }
        other => warn!(
            tenant,
            status = ?other,
            log = %log_tail(&daemon_work.join("lazy-pages.log"), 5),
            "lazy-pages daemon ended badly"
        ),
    }
}
