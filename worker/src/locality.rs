//! The worker's side of locality packs (`pagestore::locality`): at swap-out, which pages of the
//! new checkpoint the next swap-in will read first, so that the ingest also stores them together
//! in one object; at swap-in, the checkpoint's locality pack to prefetch them from.
//!
//! It exists because 4 KiB dedup scatters a tenant's restore set over many packs: fetched the
//! ordinary way it costs ~18 ranged GETs (~100 ms through a 20 ms-latency link), from a locality
//! pack one or a few. The copies are bounded by `activeset_max_pages` and reported
//! (`locality_pages`, `locality_bytes` of the swap-out).
//!
//! After the restore set, the pack also holds the pages the tenant wrote since its previous
//! checkpoint (`locality_written_pages`): a set learned from earlier restores misses the memory
//! a tenant took into use since (redis growing a table), and each such miss on a later wake-up
//! was a cold round trip of its own, one after another. This kernel has no soft-dirty bits to
//! say which pages were written; a page whose content the previous checkpoint lacks was.

use std::path::Path;
use std::sync::Arc;

use criu_image::{ImageLayout, ImageSpaces};
use pager::activeset::ActiveSet;
use pagestore::ingest::IngestReport;
use pagestore::locality::{ChangedSince, LocalitySource};
use pagestore::Manifest;
use tracing::{debug, info, warn};

use crate::host::{lock_std, TenantSlot, Worker};
use crate::program_sets::BorrowedSet;
use crate::tenant::{FillReleasedBy, FillWait};

/// How many pages on each side of the tenant's own ActiveSet its next locality pack also holds:
/// `configured` while the set may still miss (young, or missing: `ActiveSet::may_miss`; nearly
/// all of its misses lie next to one of its pages) and the last swap-in held the rest of the
/// image back for the first answer (else the rest, neighbours included, is fetched alongside the
/// restore set); none otherwise. A set that foresaw every fault of the restores it keeps would
/// only pay for them, and a borrowed set (no set of its own) is a guess at a first restore's
/// working set, whose cold bytes are bounded by what it reads.
fn neighbour_reach(
    own: Option<&ActiveSet>,
    window: usize,
    last_fill: Option<FillWait>,
    configured: u64,
) -> u64 {
    let rest_held = last_fill.is_some_and(|w| w.released_by != FillReleasedBy::Nothing);
    match own {
        Some(set) if set.may_miss(window) && rest_held => configured,
        _ => 0,
    }
}

impl Worker {
    /// Ingests a dump, also storing its restore set (the tenant's current ActiveSet applied to
    /// the dump's pagemaps, plus CRIU's own eager pages; then, while the tenant's own set may
    /// still miss and its swap-in holds the rest of its image back, the lazy pages next to the set:
    /// `activeset_neighbours`; then the pages written since `previous`, the checkpoint the
    /// tenant last came from) in a locality pack when enabled, and
    /// keeping its pages in memory when it is small enough to be restored whole.
    pub(crate) async fn ingest_with_locality(
        &self,
        slot: &TenantSlot,
        name: &str,
        staging: &Path,
        previous: Option<Arc<Manifest>>,
    ) -> pagestore::Result<IngestReport> {
        let mut options = criu_image::ingest_options();
        if self.config.activeset && self.config.locality_pack {
            let set = self.activeset_for_locality(slot, name).await;
            // None of its own: its program's, for this checkpoint's locality pack and the
            // swap-in that reads it (a set borrowed later would name pages outside the pack).
            let borrowed = match set {
                Some(_) => None,
                None => self.borrowed_activeset(slot, staging).await,
            };
            let around = neighbour_reach(
                set.as_deref(),
                self.config.activeset_window,
                slot.last_fill_wait(),
                self.config.activeset_neighbours,
            );
            let set = set.or_else(|| borrowed.as_ref().map(|b| b.set.clone()));
            *lock_std(&slot.borrowed) = borrowed;
            let max = self.config.activeset_max_pages;
            let dir = staging.to_path_buf();
            let (positions, set_positions) = tokio::task::spawn_blocking(move || {
                let wanted = set.map(|s| s.pages(max)).unwrap_or_default();
                let wanted = || wanted.iter().map(|p| (p.pagemap.as_str(), p.vaddr));
                let layout = ImageLayout::of_dir(&dir);
                // The restore set first, in the order `criu restore` reads it; the neighbours
                // after it, so that its pages are decoded and handed on first.
                let mut positions = layout.restore_positions(wanted(), max);
                let set_positions = positions.len();
                if around > 0 {
                    positions.extend(layout.neighbour_positions(wanted(), around, max));
                }
                (positions, set_positions)
            })
            .await
            .unwrap_or_default();
            debug!(
                pages = positions.len(),
                neighbours = positions.len() - set_positions,
                "restore set of the new checkpoint"
            );
            options.locality = positions;
            options.locality_changed = previous
                .filter(|_| self.config.locality_written_pages > 0)
                .map(|earlier| ChangedSince {
                    earlier,
                    max_pages: self.config.locality_written_pages,
                });
        }
        options.keep_in_memory =
            crate::swap_in::whole::dump_small_enough(staging, self.config.whole_restore_below_mib);
        self.store.ingest_with(name, staging, &options).await
    }

    /// The tenant's own ActiveSet (read back from the store after a restart); none if it cannot
    /// be read (the locality pack then holds CRIU's eager pages only).
    async fn activeset_for_locality(
        &self,
        slot: &TenantSlot,
        name: &str,
    ) -> Option<Arc<ActiveSet>> {
        match crate::activeset::own_activeset(&self.store, slot, name).await {
            Ok(set) => set,
            Err(e) => {
                warn!(error = %e, "no ActiveSet for the locality pack");
                None
            }
        }
    }

    /// The ActiveSet another tenant of the tenant's program learned, for a tenant with none of
    /// its own, moved to its places in the dump in `staging` (see `program_sets`).
    pub(crate) async fn borrowed_activeset(
        &self,
        slot: &TenantSlot,
        staging: &Path,
    ) -> Option<BorrowedSet> {
        let lent = self.program_sets.borrow(&slot.program)?;
        let dir = staging.to_path_buf();
        let spaces = tokio::task::spawn_blocking(move || ImageSpaces::of_dir(&dir))
            .await
            .unwrap_or_default();
        let borrowed = lent.moved_to(&spaces);
        info!(
            lender = %borrowed.set.tenant,
            pages = borrowed.set.pages(usize::MAX).len(),
            lent = lent.set.pages(usize::MAX).len(),
            moved = borrowed.moved,
            "no ActiveSet yet: borrowing its program's"
        );
        Some(borrowed)
    }

    /// The locality pack a swap-in prefetches its restore set from (none when disabled).
    pub(crate) fn locality_source(&self, manifest: &Manifest) -> Option<LocalitySource> {
        (self.config.locality_pack)
            .then(|| LocalitySource::of(manifest))
            .flatten()
    }
}

#[cfg(test)]
mod tests {
    use pager::activeset::RestoreTrace;

    use super::*;

    #[test]
    fn neighbours_go_with_a_set_that_may_miss_when_the_rest_was_held() {
        let held = |released_by| {
            Some(FillWait {
                released_by,
                ms: 90,
                cold_bytes: 1 << 20,
                cold_waves: 1,
            })
        };
        let young = ActiveSet::new("t");
        let mut missing = ActiveSet::new("t");
        let mut foreseeing = ActiveSet::new("t");
        for _ in 0..4 {
            let trace = |faults| RestoreTrace {
                eager_pages: 400,
                faults,
                ..Default::default()
            };
            missing.record(trace(1), 4);
            foreseeing.record(trace(0), 4);
        }
        let m = Some(&missing);
        assert_eq!(neighbour_reach(m, 4, held(FillReleasedBy::Answer), 2), 2);
        assert_eq!(neighbour_reach(m, 4, held(FillReleasedBy::Misses), 2), 2);
        assert_eq!(
            neighbour_reach(Some(&young), 4, held(FillReleasedBy::Answer), 2),
            2
        );
        // The rest came alongside the restore set, or nothing says how it came.
        assert_eq!(neighbour_reach(m, 4, held(FillReleasedBy::Nothing), 2), 0);
        assert_eq!(neighbour_reach(m, 4, None, 2), 0);
        let f = Some(&foreseeing);
        assert_eq!(neighbour_reach(f, 4, held(FillReleasedBy::Answer), 2), 0);
        assert_eq!(neighbour_reach(None, 4, held(FillReleasedBy::Answer), 2), 0);
        assert_eq!(neighbour_reach(m, 4, held(FillReleasedBy::Answer), 0), 0);
    }
}
