//! Whole restore: a small checkpoint whose pages are all on this worker is written out of the
//! memory and local tiers into a tmpfs of its own and restored by a plain `criu restore` from
//! there, without the lazy-pages daemon, userfaultfd, or the pager's FUSE mount.
//!
//! **Why.** A lazy restore costs a fixed ~25 ms over plain CRIU: a second CRIU process (the
//! lazy-pages daemon), the relay, and `criu restore` reading the pages it installs through FUSE
//! in hundreds of small requests (the ActiveSet splits the pagemaps into scattered runs). For a
//! tenant of a few MiB held in memory or on the local disk, reading every page is cheaper than
//! all of that: the Python counter (11 MiB) and nginx (2 MiB) answered 2.5-3x slower than
//! plain CRIU from tmpfs when restored lazily from the local tier. Even a plain `criu restore`
//! from the FUSE mount was 1.8-2.5x slower than from tmpfs (per-read round trips, see
//! `image_tmpfs.rs`), so the image is written to a tmpfs first (~1 ms for 11 MiB) and the
//! restore reads it at tmpfs speed. Large tenants stay lazy (redis with ~100 MB and a 256 MiB
//! heap answer faster lazily than plain CRIU restores them), unless their requests touch much of
//! their memory ([`dense_enough`]: their working set, as an ActiveSet saw it, is a large share of
//! the image), and so does any checkpoint with pages in the cold tier, which the lazy path
//! fetches in bulk ahead of the restore and behind it.
//!
//! **Where from**: the memory tier when it holds the whole image, else the tenant's kept image
//! (`pagestore::whole_image`: a small checkpoint's pages in one file, written behind its
//! swap-out), else the memory and local tiers page by page.
//!
//! **Integrity**: the pages written are those of the memory tier (checked against their ids
//! when they entered it), of the kept image and of the local tier (checked as they are read; a
//! kept image that fails is deleted and the tiers are read, a corrupt local page is a miss, and
//! the checkpoint then goes the lazy way, where the cold tier serves it or the restore fails
//! naming the page).
//!
//! **The ActiveSet** learns nothing from a whole restore (no page faults reach the pager) and
//! is left as it is: it is what the next lazy restore, from the cold tier, will use, and the
//! tenant's first lazy restore learns it. So a dense tenant, once found dense, is restored whole
//! from the local tier until a lazy restore (from the cold tier) learns a smaller set.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use pagestore::{FileContent, Manifest, PAGE_SIZE};
use tracing::{info, warn};

use crate::error::{Error, Result};
use crate::host::{TenantRuntime, TenantSlot, Worker};
use crate::image_tmpfs::ImageTmpfs;
use crate::tenant::{fresh_dir, SwapInReport, TenantState};
use crate::whole_staging::ImageDir;

/// Whether a tenant whose working set is `working_set` pages (as last seen; `None`: unknown) is
/// dense enough in an image of `pages` non-zero pages to be restored whole: the set covers at
/// least `share` of them, and they are fewer than `below_mib` MiB. Lazily, each page of the
/// set is a fault or part of CRIU's eager reads through the pager; whole, every page is
/// written to a tmpfs at memory speed and CRIU reads it at tmpfs speed. Measured here from the
/// local tier (p50 of 5 runs, same runs as plain CRIU's 92-133 ms from tmpfs): node walking a Map
/// (a working set of 39% of its 70 MiB image) woke for the second time in 147 ms lazily and
/// 113-127 ms whole, Python walking a dict (73% of 120 MiB) in 291 and 137-172 ms; their first
/// wake-ups (a set borrowed from another tenant of their program) in 420 and 233 ms lazily,
/// 294-307 and 134-159 ms whole. Redis and a 256 MiB heap whose requests touch under 1% of their
/// images stay lazy: they answer faster than plain CRIU restores them.
pub(crate) fn dense_enough(
    working_set: Option<usize>,
    pages: usize,
    share: f64,
    below_mib: u64,
) -> bool {
    match working_set {
        Some(set) if pages > 0 => covers(set, pages, share) && pages_under_mib(pages, below_mib),
        _ => false,
    }
}

/// Whether a checkpoint of `pages` non-zero pages is restored whole first, and what that
/// restore fetches: it is small (nothing), or its tenant's working set (`working_set` pages, as
/// last seen) is dense in it (a few pages; see [`dense_enough`]). Whole restores are off
/// altogether with `whole_restore_below_mib = 0`. The swap-in's test, and the swap-out's for
/// keeping the image whole on the local disk.
pub(crate) fn restored_whole(
    config: &crate::config::WorkerConfig,
    working_set: Option<usize>,
    pages: usize,
) -> Option<Fetch> {
    if config.whole_restore_below_mib == 0 {
        return None;
    }
    if pages_under_mib(pages, config.whole_restore_below_mib) {
        return Some(Fetch::Nothing);
    }
    dense_enough(
        working_set,
        pages,
        config.whole_restore_dense_share,
        config.whole_restore_dense_below_mib,
    )
    .then_some(Fetch::Few)
}

/// Whether a set of `set` pages is at least `share` (above 0) of an image of `pages` non-zero
/// pages: a dense tenant's, whatever its size.
pub(crate) fn covers(set: usize, pages: usize, share: f64) -> bool {
    share > 0.0 && set as f64 >= share * pages as f64
}

/// Whether `pages` pages are fewer than `below_mib` MiB (0: never): an image of so many
/// non-zero pages is small enough to be restored whole (whether this worker holds them all, the
/// restore finds out).
pub(crate) fn pages_under_mib(pages: usize, below_mib: u64) -> bool {
    below_mib > 0 && ((pages * PAGE_SIZE) as u64) < below_mib << 20
}

/// Whether a dump in `dir` is small enough to be restored whole (its page files, zero pages
/// included, under `below_mib` MiB): its checkpoint is then kept in memory at ingest, where
/// its next swap-in writes it out from.
pub(crate) fn dump_small_enough(dir: &Path, below_mib: u64) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    let bytes: u64 = entries
        .flatten()
        .filter(|e| criu_image::names::is_pages_file(&e.file_name().to_string_lossy()))
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum();
    below_mib > 0 && bytes < below_mib << 20
}

/// The most the image can take written out into a tmpfs of huge pages: its small files by the
/// page, its page files by the huge page (2 MiB), zero pages (holes) included, since a huge page
/// backs a hole inside it. Counting holes as nothing filled the tmpfs of `pico bench restore`'s
/// py-dict image ("No space left on device") before it was written.
fn image_bytes(manifest: &Manifest) -> u64 {
    const HUGE_PAGE: u64 = 2 << 20;
    manifest
        .files
        .iter()
        .map(|f| match &f.content {
            FileContent::Inline(_) => f.size.div_ceil(PAGE_SIZE as u64) * PAGE_SIZE as u64,
            FileContent::Paged(ids) => {
                ((ids.len() * PAGE_SIZE) as u64).div_ceil(HUGE_PAGE) * HUGE_PAGE
            }
        })
        .sum()
}

/// What a whole restore fetches from the cold tier when this worker lacks pages of the image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fetch {
    /// Nothing: the restore goes lazy (a small image, whose lazy restore is cheap).
    Nothing,
    /// The missing pages, if they are few (a dense tenant's image, see [`dense_enough`]);
    /// otherwise nothing.
    Few,
    /// Every page (a tenant restored only whole).
    All,
}

/// The most of a dense image's non-zero pages a whole restore fetches from the cold tier
/// (`Fetch::Few`): more, and the lazy restore, which fetches its working set first, is left to
/// bring them.
const FEW_MISSING: f64 = 0.25;

impl Worker {
    /// Restores the tenant whole from `manifest` (see the module doc) if every page of it is in
    /// the memory or local tier, or once the others are fetched into them: all of them with
    /// [`Fetch::All`], a few with [`Fetch::Few`]; `None` if a page is not (nothing restored: the
    /// caller restores it lazily). `rt` is its locked runtime, `started` when the swap-in began.
    pub(super) async fn swap_in_whole(
        &self,
        slot: &Arc<TenantSlot>,
        rt: &mut TenantRuntime,
        checkpoint: &pagestore::CheckpointRef,
        manifest: &Manifest,
        fetch: Fetch,
        started: Instant,
    ) -> Result<Option<SwapInReport>> {
        // The kept tmpfs takes images up to a dense tenant's; a larger one (a tenant restored
        // only whole), or one that finds it busy, gets a tmpfs of its own.
        let bytes = image_bytes(manifest);
        let image = match self.whole_staging.take(manifest, bytes) {
            Some(staged) => staged,
            None => {
                let mountpoint = self.fresh_mountpoint(&checkpoint.tenant)?;
                ImageDir::Own(ImageTmpfs::mount(&mountpoint, bytes)?)
            }
        };
        let mut written = self.write_image(manifest, image.path(), slot).await;
        let missing = match (fetch, matches!(written, Ok(Ok(false)))) {
            (_, false) | (Fetch::Nothing, _) => None,
            (Fetch::All, true) => Some(
                manifest
                    .files
                    .iter()
                    .flat_map(|f| f.pages())
                    .copied()
                    .collect(),
            ),
            (Fetch::Few, true) => self.few_missing(manifest).await,
        };
        let mut prefetch = pagestore::prefetch::PrefetchReport::default();
        if let Some(pages) = missing {
            let fetched = self.store.prefetch(&pages).await?;
            info!(
                cold_pages = fetched.cold_pages,
                cold_bytes = fetched.cold_bytes,
                ms = fetched.ms,
                "pages fetched for a whole restore"
            );
            // Billed to the tenant like a lazy restore's fill.
            super::fill::record_cold_reads(
                &self.config.usage_log,
                &checkpoint.tenant,
                fetched.cold_gets,
                fetched.cold_bytes,
            );
            prefetch = fetched;
            written = self.write_image(manifest, image.path(), slot).await;
        }
        if !matches!(written, Ok(Ok(true))) {
            match written {
                Ok(Err(e)) => warn!(error = %e, "could not write the image out: restoring lazily"),
                Err(e) => warn!(error = %e, "image writer failed: restoring lazily"),
                _ => info!("not every page is on this worker: restoring lazily"),
            }
            image.release()?;
            return Ok(None);
        }
        let mount_ms = started.elapsed().as_millis() as u64;
        let work = slot.dirs.criu_work("restore");
        fresh_dir(&work)?;
        let restored = self.restore_whole(image.path(), &work, slot).await;
        let kept_tmpfs = matches!(image, ImageDir::Staged { .. });
        // CRIU has read everything it needs: the tenant holds nothing of the image. The kept
        // tmpfs is free for the next restore at once; a tmpfs of its own unmounts behind.
        let released = match image {
            ImageDir::Staged { .. } => None,
            own => Some(tokio::task::spawn_blocking(move || own.release())),
        };
        let pid = restored?;
        let total_ms = started.elapsed().as_millis() as u64;
        let report = SwapInReport {
            checkpoint: checkpoint.id.to_string(),
            pid,
            eager_pages: 0,
            prefetched_pages: 0,
            whole: true,
            prefetch,
            mount_ms,
            restore_ms: total_ms - mount_ms,
            total_ms,
        };
        slot.forget_last_restore();
        rt.info.state = TenantState::Running;
        rt.info.pid = Some(pid);
        rt.info.last_swap_in = Some(report.clone());
        rt.info.pages_pending = false;
        rt.info.restore_failures = 0;
        rt.info.failure = None;
        rt.info.last_active = Some(pagestore::clock::now_ms());
        crate::crashpoint::hit("swap-in:restored");
        // The tenant runs: its state is written behind the reply (~0.5 ms off every swap-in).
        // A swap-out or removal waits for this task before it writes the state again.
        let (info, dirs, tenant) = (
            rt.info.clone(),
            slot.dirs.clone(),
            checkpoint.tenant.clone(),
        );
        rt.restoring = Some(tokio::spawn(async move {
            if let Some(released) = released {
                match released.await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => warn!(tenant, error = %e, "unmount failed"),
                    Err(e) => warn!(tenant, error = %e, "unmount task failed"),
                }
            }
            match tokio::task::spawn_blocking(move || info.save(&dirs)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => warn!(tenant, error = %e, "could not save the tenant's state"),
                Err(e) => warn!(tenant, error = %e, "state writer failed"),
            }
        }));
        info!(
            pid,
            image_written_ms = mount_ms,
            restore_ms = total_ms - mount_ms,
            total_ms,
            kept_tmpfs,
            "swapped in whole"
        );
        Ok(Some(report))
    }

    /// The pages of `manifest` on neither the memory nor the local tier (the others brought into
    /// memory meanwhile), if they are at most [`FEW_MISSING`] of its non-zero pages: a swap-in
    /// right after the swap-out finds some of a tenant's new pages still on their way to the
    /// local tier (it waits 250 ms for them), and fetching those beats restoring lazily.
    async fn few_missing(&self, manifest: &Manifest) -> Option<Vec<pagestore::PageId>> {
        let store = self.store.clone();
        let image = manifest.clone();
        let at_most = (FEW_MISSING * manifest.non_zero_pages().count() as f64) as usize;
        let missing = tokio::task::spawn_blocking(move || store.bring_resident(&image, at_most))
            .await
            .ok()
            .flatten();
        info!(
            missing = missing.as_ref().map(Vec::len),
            at_most, "pages of a dense image on neither local tier"
        );
        missing
    }

    /// Writes the image of `manifest` into `dir` from the memory tier, the tenant's kept image
    /// or the local tier (see `PageStore::materialize_resident`, `pagestore::whole_image`),
    /// readable by everyone when the tenant has a user namespace: CRIU's restored tasks open
    /// some images themselves, some before their ids are mapped (the mounts directory is root's
    /// alone).
    async fn write_image(
        &self,
        manifest: &Manifest,
        dir: &Path,
        slot: &TenantSlot,
    ) -> std::result::Result<Result<bool>, tokio::task::JoinError> {
        let store = self.store.clone();
        let (manifest, dir) = (manifest.clone(), dir.to_path_buf());
        let shared = slot.user_namespace.is_some();
        let kept = self.config.keep_whole_images;
        tokio::task::spawn_blocking(move || {
            // Out of memory when it is all there; else from the tenant's kept image, one file
            // read instead of a local-tier lookup per page; else the tiers, page by page.
            let complete = (kept
                && !store.in_memory(&manifest)
                && store.materialize_whole_image(&manifest, &dir)?)
                || store.materialize_resident(&manifest, &dir)?;
            if complete && shared {
                readable_by_all(&dir).map_err(|e| Error::io(&dir, e))?;
            }
            Ok(complete)
        })
        .await
    }

    /// `criu restore` of a whole image of the tenant of `slot`, by the spare CRIU when one is
    /// ready. Not for a tenant in a user namespace: the spare joins the tenant's network
    /// namespace from the restored user namespace, which may not (it owns nothing there), so a
    /// CRIU started inside the network namespace restores it.
    async fn restore_whole(&self, images: &Path, work: &Path, slot: &TenantSlot) -> Result<u32> {
        let (netns, view) = (slot.netns.as_deref(), slot.view.as_ref());
        self.ready_for_a_cgroup_move();
        if let (Some(spares), None) = (&self.criu_spares, slot.user_namespace) {
            if let Some(pid) = spares.restore(images, work, netns, view).await? {
                return Ok(pid);
            }
        }
        self.criu.restore(images, work, false, netns, view).await
    }
}

/// Makes every file in `dir` readable by everyone.
fn readable_by_all(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let mode = std::fs::metadata(&path)?.permissions().mode();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode | 0o444))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_working_set_covering_enough_of_an_image_under_the_cap_is_dense() {
        let mib = (1 << 20) / PAGE_SIZE;
        // A quarter of 100 MiB, under a 512 MiB cap.
        assert!(dense_enough(Some(25 * mib), 100 * mib, 0.25, 512));
        assert!(!dense_enough(Some(25 * mib - 1), 100 * mib, 0.25, 512));
        // Unknown, switched off, or over the cap.
        assert!(!dense_enough(None, 100 * mib, 0.25, 512));
        assert!(!dense_enough(Some(100 * mib), 100 * mib, 0.0, 512));
        assert!(!dense_enough(Some(100 * mib), 100 * mib, 0.25, 100));
        assert!(!dense_enough(Some(0), 0, 0.25, 512));
    }

    #[test]
    fn small_images_and_dense_tenants_are_restored_whole_unless_switched_off() {
        let mib = (1 << 20) / PAGE_SIZE;
        let mut config = crate::config::WorkerConfig::embedded(Path::new("/nonexistent"));
        config.whole_restore_below_mib = 32;
        config.whole_restore_dense_share = 0.25;
        let whole = |set, pages| restored_whole(&config, set, pages);
        assert_eq!(whole(None, 31 * mib), Some(Fetch::Nothing));
        assert_eq!(whole(Some(25 * mib), 100 * mib), Some(Fetch::Few));
        assert_eq!(whole(Some(mib), 100 * mib), None, "sparse: lazy");
        assert_eq!(whole(None, 100 * mib), None, "nothing known: lazy");
        config.whole_restore_below_mib = 0;
        let whole = |set, pages| restored_whole(&config, set, pages);
        assert_eq!(whole(Some(25 * mib), 100 * mib), None, "switched off");
        assert_eq!(whole(None, mib), None);
    }
    use pagestore::PageId;
    use testkit::manifest::{file, of_files};

    #[test]
    fn a_dump_is_small_enough_by_its_page_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("core-1.img"), vec![1u8; 2 << 20]).unwrap();
        std::fs::write(dir.path().join("pages-1.img"), vec![1u8; 1 << 20]).unwrap();
        assert!(dump_small_enough(dir.path(), 2), "only page files count");
        assert!(!dump_small_enough(dir.path(), 1));
        assert!(!dump_small_enough(dir.path(), 0));
        assert!(!dump_small_enough(&dir.path().join("gone"), 32));
    }

    #[test]
    fn the_image_has_room_for_its_small_files_and_its_page_files_in_huge_pages() {
        let (a, b) = (PageId([1; 32]), PageId([2; 32]));
        let m = of_files(vec![
            file("pagemap-1.img", 3, FileContent::Inline(vec![1, 2, 3])),
            file(
                "pages-1.img",
                4 * PAGE_SIZE as u64,
                FileContent::Paged(vec![a, PageId::ZERO, b, a]),
            ),
        ]);
        // Written out, a small file takes a page, a page file whole huge pages (a zero page is a
        // hole, which a huge page backs all the same).
        assert_eq!(image_bytes(&m), PAGE_SIZE as u64 + (2 << 20));
        let small_enough = |m: &Manifest, mib| pages_under_mib(m.non_zero_pages().count(), mib);
        assert!(small_enough(&m, 1));
        let mut big = m.clone();
        big.files[1].content = FileContent::Paged(vec![a; 256]);
        assert!(
            !small_enough(&big, 1),
            "256 pages of 4 KiB are 1 MiB, not under it"
        );
        assert!(!small_enough(&m, 0), "0 turns whole restores off");
    }
}
