//! The fill of a lazy swap-in: the restore set fetched ahead of `criu restore`, then the rest of
//! the image filled into memory behind it, so that neither the restore nor CRIU's lazy-pages
//! daemon waits on the cold tier one small read at a time.
//!
//! The restore set's fetch starts as soon as the plan knows it ([`RestoreSetFetch`]), the fill
//! of the rest before the checkpoint is mounted ([`start`]), so that the restore set's round
//! trip overlaps the rest of the plan, the mount and the start of CRIU: the restore set's
//! requests go first. The rest comes in two parts (planned in `plan`): the mappings the installed set
//! touches, where its misses most likely are, then the others.
//!
//! When an ActiveSet was installed, the first answer needs none of the fill, and fetching,
//! decoding and checking the rest of the image (the large heap's 274 MB) would only take the cold
//! tier's bandwidth and the CPU from it: the rest then waits for the tenant's first answer to a
//! client, for the learning window's close when no client waits, or for [`SET_MISSES`] faults
//! the set did not foresee, each a cold round trip of its own, whichever comes first; unless
//! the rest is small ([`HOLD_ABOVE_BYTES`], [`HOLD_ABOVE_PAGES`]), when it costs less than one
//! such miss. A set
//! borrowed from a tenant whose mappings lie elsewhere (ASLR) is a guess: the mappings it touches
//! are fetched at once, alongside the restore set, and only the others wait. Without a set the
//! fill goes on at once: every page the tenant touches would otherwise be a fault and a cold
//! round trip of its own (measured: the counter's first cold wake-up took 108 sequential round
//! trips, 5.3 s, held; 2, 240 ms, not), at the price of fetching pages the first answer does not
//! need. A rest small in the store is fetched alongside the restore set
//! ([`FillPlan::all_at_once`]): its round trip overlaps the set's instead of following it
//! (behind an installed set, only a rest of few pages: [`RestSize::comes_alongside`]). When a
//! set was installed, what the fill fetches is decoded and checked on the store's background
//! pool (`ReadPriority::Ahead`), behind the restore set, CRIU and the faults: it is fetched
//! ahead of need. The rest goes paced (`PageStore::fill_at`: a budget of bytes in flight, so
//! the faults' own reads are not queued behind it). Once the fill is done, [`finish`] records
//! what it read.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pager::reads::{MountReads, RestorePhase};
use pagestore::locality::LocalitySource;
use pagestore::prefetch::PrefetchReport;
use pagestore::read::ReadPriority;
use pagestore::stats::LiveCounters;
use pagestore::{PageId, PageStore};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::{info, warn, Instrument};

use crate::host::TenantSlot;
use crate::tenant::{FillReleasedBy, FillWait};

/// What a fill fetches, planned before the mount.
pub(super) struct FillPlan {
    /// Everything `criu restore` reads before the tenant runs, already on its way.
    pub restore_set: RestoreSetFetch,
    /// Pages fetched right after the restore set, never held and all at once: the mappings a
    /// guessed set touches (see `plan`), or a rest small enough to come alongside the set
    /// (paced in 1 MiB ranges like the rest, redis's 2.3 MB made its first answer 15-25 ms
    /// later).
    pub at_once: Vec<PageId>,
    /// The rest of the image, filled in behind the restore; a fill that waits holds it.
    pub held: Vec<PageId>,
    /// How soon the fill's pages are needed: ahead of need when a set was installed (the
    /// restore set holds what the first answer needs); else every page the tenant touches is a
    /// fault whose page the fill brings, so they are decoded as a reader's would be (on the
    /// background pool instead, redis's first answer without a set took 195-205 ms against
    /// 182-184).
    pub priority: ReadPriority,
}

/// The fetch of everything `criu restore` reads before the tenant runs (from the checkpoint's
/// locality pack when it has one), started as soon as the plan knows those pages: its round
/// trip then overlaps the rest of the planning (splitting the large heap's 68k lazy pages for
/// the fill took ~10 ms of its swap-in), the mount and the start of CRIU.
pub(super) struct RestoreSetFetch(JoinHandle<pagestore::Result<PrefetchReport>>);

impl RestoreSetFetch {
    pub(super) fn start(
        store: Arc<PageStore>,
        pages: Vec<PageId>,
        locality: Option<LocalitySource>,
    ) -> RestoreSetFetch {
        let fetch = async move {
            store
                .prefetch_with_locality(&pages, locality.as_ref())
                .await
        };
        RestoreSetFetch(tokio::spawn(fetch.in_current_span()))
    }
}

/// A running fill.
pub(super) struct Fill {
    /// The restore set's prefetch report, once it is in memory.
    pub prefetched: oneshot::Receiver<pagestore::Result<PrefetchReport>>,
    /// Sent (or dropped) when the learning window closes: a fill that waits goes on.
    pub window_closed: oneshot::Sender<()>,
    /// The restored tenant's reads by phase, sent once it runs: a fill that waits goes on when
    /// [`SET_MISSES`] of its faults had to be fetched from the cold tier.
    pub faults: oneshot::Sender<Arc<MountReads>>,
    /// The fill itself; its report once the whole image is in memory.
    pub task: JoinHandle<pagestore::Result<PrefetchReport>>,
    /// Sent when the whole image is in memory (dropped if the fill fails): from then on CRIU's
    /// background copy reads only memory (see `background::first_moments`).
    pub filled: oneshot::Receiver<()>,
}

/// Faults served from the cold tier (pages) after which a fill waiting for the first answer
/// goes on: the installed set has missed part of the working set (a set borrowed from another
/// tenant under ASLR foresaw 60-99% of it), and each further miss would be a round trip of its
/// own (the counter's first cold wake-up with such a set: 106 round trips, 5.4 s, with the fill
/// held; 2 round trips without a set).
const SET_MISSES: u64 = 2;

/// The most bytes (as stored, 4 MiB) a fill fetches at once even when an ActiveSet was
/// installed: about one round trip's worth at 100 MB/s, in flight while CRIU restores the
/// tenant, so the faults the set did not foresee find their pages arriving instead of paying a
/// cold round trip each. (A small image the local tier holds whole is restored whole, never
/// filled.)
const HOLD_ABOVE_BYTES: u64 = 4 << 20;

/// The most pages (16 MiB decoded) a fill fetches at once even when an ActiveSet was installed:
/// each is decoded, checked and handed to the lazy-pages daemon on the two cores the restore and
/// the first answer need. Redis's rest is 2.3 MB stored but 28k pages: fetched alongside its
/// restore set, its first answer from the cold tier came at 125 ms (p50 of 6) against 95 held.
const HOLD_ABOVE_PAGES: usize = 4096;

/// How large the rest of the image is, as the plan weighs it ([`FillPlan::rest_size`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct RestSize {
    /// More than [`HOLD_ABOVE_PAGES`] pages.
    pub many_pages: bool,
    /// At most [`HOLD_ABOVE_BYTES`] in the store.
    pub small_in_store: bool,
}

impl RestSize {
    /// Whether the rest is worth holding back for the first answer (when a set was installed):
    /// when its pages are more than [`HOLD_ABOVE_PAGES`] or take more than [`HOLD_ABOVE_BYTES`]
    /// in the store.
    pub(super) fn worth_holding(self) -> bool {
        self.many_pages || !self.small_in_store
    }

    /// Whether the rest comes alongside the restore set rather than after it
    /// ([`FillPlan::all_at_once`]): a rest small in the store, and with a set installed
    /// (`set_installed`) also of few pages. The page bound is for the decoding: behind a set the
    /// first answer needs none of the rest, and decoding many pages took the cores from it
    /// (redis's 28k pages from 2.3 MB: p50 125 against 95 ms held). Without a set the rest is
    /// what the faults need and follows the set at once anyway: its round trip may as well
    /// overlap the set's (redis `lazy-cold` p50 211-221 -> 157-158 ms,
    /// bench/results/restore-small-rest).
    pub(super) fn comes_alongside(self, set_installed: bool) -> bool {
        self.small_in_store && !(set_installed && self.many_pages)
    }
}

impl FillPlan {
    /// How large the rest is ([`RestSize`]); its stored size is summed once.
    pub(super) fn rest_size(&self, store: &PageStore) -> RestSize {
        RestSize {
            many_pages: self.held.len() > HOLD_ABOVE_PAGES,
            small_in_store: store.catalog().stored_within(&self.held, HOLD_ABOVE_BYTES),
        }
    }

    /// The plan with the rest fetched alongside the restore set, for a rest that comes
    /// alongside ([`RestSize::comes_alongside`]): its round trip then overlaps the set's instead of following it, so that a fault the set
    /// did not foresee finds its page in memory or arriving. (The counter's own set missed a
    /// page or two a wake-up, which waited ~50 ms for the rest fetched after the set: the first
    /// answer 150-160 ms from the cold tier, against ~105 with a set that missed none.)
    pub(super) fn all_at_once(mut self) -> FillPlan {
        self.at_once.append(&mut self.held);
        self
    }
}

/// How often a waiting fill looks at the faults.
const MISS_POLL: Duration = Duration::from_millis(2);

/// Resolves when `reads` (once sent) show [`SET_MISSES`] faults served from the cold tier;
/// never, if they are not sent.
async fn set_missed(reads: oneshot::Receiver<Arc<MountReads>>) {
    let Ok(reads) = reads.await else {
        return std::future::pending().await;
    };
    let enough = SET_MISSES * pagestore::PAGE_SIZE as u64;
    while reads.tally(RestorePhase::Faults).counts().cold_bytes < enough {
        tokio::time::sleep(MISS_POLL).await;
    }
}

/// Starts fetching the plan's restore set (from its locality pack when it has one), then the
/// rest of the image; with `waits`, the fill waits in between for the tenant's first answer,
/// for [`Fill::window_closed`] or for the set's misses ([`Fill::faults`]), whichever comes
/// first. What it waited for, and what the
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
        at_once,
        held,
        priority,
    } = plan;
    let (prefetched_tx, prefetched) = oneshot::channel();
    let (window_closed, window_closed_rx) = oneshot::channel::<()>();
    let (faults, faults_rx) = oneshot::channel();
    let (filled_tx, filled) = oneshot::channel();
    let first_answer = waits.then(|| slot.await_first_answer());
    let slot = slot.clone();
    let (started, at_start) = swap_in_started;
    // In the swap-in's span, so that what it logs names the checkpoint.
    let task = tokio::spawn(
        async move {
            // The pages fetched at once go alongside the restore set (their own round trip
            // overlaps its), which is reported as soon as it is in.
            let restore_set = async {
                // A fetch that panicked drops the sender: the restore set is reported missing.
                if let Ok(fetched) = restore_set.0.await {
                    let _ = prefetched_tx.send(fetched);
                }
            };
            let ((), first) = tokio::join!(restore_set, store.prefetch_at(&at_once, priority));
            let first = first?;
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
                        () = set_missed(faults_rx) => FillReleasedBy::Misses,
                    }
                }
            };
            let now = store.live_counters();
            let wait = FillWait {
                released_by,
                ms: crate::tenant::elapsed_ms(started),
                cold_bytes: now.cold_get_bytes.saturating_sub(at_start.cold_get_bytes),
                cold_waves: now.cold_waves.saturating_sub(at_start.cold_waves),
            };
            if released_by != FillReleasedBy::Nothing {
                // Why the rest came when it did: what a slow first answer is read against.
                info!(
                    released_by = ?released_by,
                    after_ms = wait.ms,
                    cold_bytes = wait.cold_bytes,
                    cold_waves = wait.cold_waves,
                    pages = held.len(),
                    "rest of the image released"
                );
            }
            slot.set_last_fill_wait(wait);
            // Paced: it may be the large heap's 272 MB (`pagestore::read::FILL_BYTES_IN_FLIGHT`).
            let rest = store.fill_at(&held, priority).await?;
            let _ = filled_tx.send(());
            Ok(first.and(rest))
        }
        .in_current_span(),
    );
    Fill {
        prefetched,
        window_closed,
        faults,
        task,
        filled,
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
            record_cold_reads(
                usage_log,
                tenant,
                restore_set.cold_gets + r.cold_gets,
                restore_set.cold_bytes + r.cold_bytes,
            );
            slot.set_last_fill(r);
        }
        Ok(Err(e)) => warn!(error = %e, "background fill failed"),
        Err(e) => warn!(error = %e, "background fill task failed"),
    }
}

/// Appends a swap-in's cold reads to the usage log (what `pico report cost` bills per tenant).
pub(super) fn record_cold_reads(usage_log: &Path, tenant: &str, cold_gets: u64, cold_bytes: u64) {
    let record = pagestore::usage::UsageRecord {
        at_ms: pagestore::clock::now_ms(),
        tenant: tenant.to_string(),
        cold_gets,
        cold_bytes,
    };
    if let Err(e) = pagestore::usage::append(usage_log, &record) {
        warn!(error = %e, "could not record the swap-in's cold reads");
    }
}

#[cfg(test)]
mod tests {
    use super::RestSize;

    #[test]
    fn a_small_rest_comes_alongside_unless_behind_a_set_with_many_pages() {
        let rest = |many_pages, small_in_store| RestSize {
            many_pages,
            small_in_store,
        };
        // The counter's or nginx's rest: alongside, set or none, never held.
        assert!(rest(false, true).comes_alongside(true));
        assert!(rest(false, true).comes_alongside(false));
        assert!(!rest(false, true).worth_holding());
        // Redis's (28k pages from 2.3 MB): alongside only when nothing was installed.
        assert!(!rest(true, true).comes_alongside(true));
        assert!(rest(true, true).comes_alongside(false));
        assert!(rest(true, true).worth_holding());
        // A large heap's: after the set, and held behind an installed one.
        assert!(!rest(true, false).comes_alongside(false));
        assert!(!rest(false, false).comes_alongside(true));
        assert!(rest(false, false).worth_holding());
    }
}
