//! Whole restore: a small checkpoint whose pages are all on this worker is restored by a plain
//! `criu restore` from its kept dump, or from a tmpfs it is written into out of the memory and
//! local tiers, without the lazy-pages daemon, userfaultfd, or the pager's FUSE mount.
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
//! their memory ([`choice::dense_enough`]: their working set, as an ActiveSet saw it, is a large share of
//! the image), and so does any checkpoint with pages in the cold tier, which the lazy path
//! fetches in bulk ahead of the restore and behind it.
//!
//! **Where from**: the tenant's kept dump (`pagestore::whole_image`: the checkpoint's dump,
//! moved beside the local tier behind its swap-out), restored where it lies, no image written;
//! else (or for a tenant in a user namespace, which gets a copy of the dump) the image is written
//! into the tmpfs out of the memory tier when it holds it whole, else the memory and local tiers
//! page by page.
//!
//! **Integrity**: a kept dump's files CRIU interprets are checked against the manifest before
//! CRIU starts, its page files beside the restore, the tenant restored stopped and continued
//! only once every page matched its id ([`Worker::restore_checking`]; a dump that fails is
//! deleted, the tenant killed before it ran, and the image written out of the tiers). Pages
//! written into the tmpfs are those of the memory tier (checked against their ids when they
//! entered it) and of the local tier (checked as they are read; a corrupt local page is a miss,
//! and the checkpoint then goes the lazy way, where the cold tier serves it or the restore fails
//! naming the page).
//!
//! **The ActiveSet** learns nothing from a whole restore (no page faults reach the pager) and
//! is left as it is: it is what the next lazy restore, from the cold tier, will use, and the
//! tenant's first lazy restore learns it. So a dense tenant, once found dense, is restored whole
//! from the local tier until a lazy restore (from the cold tier) learns a smaller set.

mod choice;

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use pagestore::Manifest;

use choice::image_bytes;
pub(crate) use choice::{covers, dump_small_enough, restored_whole, Fetch};
use tracing::{info, warn};

use crate::error::{Error, Result};
use crate::host::{TenantRuntime, TenantSlot, Worker};
use crate::image_tmpfs::ImageTmpfs;
use crate::tenant::{elapsed_ms, fresh_dir, SwapInReport, TenantState};
use crate::whole_staging::ImageDir;

/// The most of a dense image's non-zero pages a whole restore fetches from the cold tier
/// (`Fetch::Few`): more, and the lazy restore, which fetches its working set first, is left to
/// bring them.
const FEW_MISSING: f64 = 0.25;

impl Worker {
    /// Restores the tenant whole from `manifest` (see the module doc): from its kept dump where
    /// it lies, if it has one of this checkpoint (and no user namespace); else if every page of
    /// it is in the memory or local tier, or once the others are fetched into them: all of them
    /// with [`Fetch::All`], a few with [`Fetch::Few`]; `None` if a page is not (nothing
    /// restored: the caller restores it lazily). `rt` is its locked runtime, `started` when the
    /// swap-in began.
    pub(super) async fn swap_in_whole(
        &self,
        slot: &Arc<TenantSlot>,
        rt: &mut TenantRuntime,
        checkpoint: &pagestore::CheckpointRef,
        manifest: &Manifest,
        fetch: Fetch,
        started: Instant,
    ) -> Result<Option<SwapInReport>> {
        if self.config.keep_whole_images && slot.user_namespace.is_none() {
            let kept = self
                .swap_in_from_kept_dump(slot, rt, checkpoint, manifest, started)
                .await?;
            if kept.is_some() {
                return Ok(kept);
            }
        }
        self.swap_in_through_tmpfs(slot, rt, checkpoint, manifest, fetch, started)
            .await
    }

    /// The tenant restored from its kept dump of `manifest`'s checkpoint where it lies; `None`
    /// when it has none, or when the dump failed its check (deleted then: the image is written
    /// out of the tiers instead).
    async fn swap_in_from_kept_dump(
        &self,
        slot: &Arc<TenantSlot>,
        rt: &mut TenantRuntime,
        checkpoint: &pagestore::CheckpointRef,
        manifest: &Manifest,
        started: Instant,
    ) -> Result<Option<SwapInReport>> {
        let Some(kept) = self.kept_dump(manifest).await else {
            return Ok(None);
        };
        let found_ms = elapsed_ms(started);
        let work = slot.dirs.criu_work("restore");
        let images = kept.path().to_path_buf();
        fresh_dir(&work)?;
        let (checked, waited_ms) = self
            .restore_checking(&images, &images, &work, slot, manifest, kept)
            .await;
        let Some(pid) = checked? else {
            return Ok(None);
        };
        let how = Restored {
            from: "kept dump",
            started,
            image_ms: found_ms,
            check_wait_ms: Some(waited_ms),
            prefetch: Default::default(),
        };
        Ok(Some(
            self.restored_whole(slot, rt, checkpoint, pid, how, None),
        ))
    }

    /// The tenant restored from its image written into a tmpfs (the kept one, or one of its
    /// own) out of the memory and local tiers, the pages this worker lacks fetched first as
    /// `fetch` allows; a tenant in a user namespace gets a copy of its kept dump there instead
    /// ([`Self::write_image`]). `None` if a page is not on this worker.
    async fn swap_in_through_tmpfs(
        &self,
        slot: &Arc<TenantSlot>,
        rt: &mut TenantRuntime,
        checkpoint: &pagestore::CheckpointRef,
        manifest: &Manifest,
        fetch: Fetch,
        started: Instant,
    ) -> Result<Option<SwapInReport>> {
        let work = slot.dirs.criu_work("restore");
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
        let mut written = self.write_image(manifest, image.path(), slot, true).await;
        let missing = match (fetch, matches!(written, Ok(Ok(Written::Incomplete)))) {
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
            prefetch = self.fetch_missing(checkpoint, &pages).await?;
            written = self.write_image(manifest, image.path(), slot, true).await;
        }
        let Some(written) = complete(written) else {
            image.release()?;
            return Ok(None);
        };
        let image_ms = elapsed_ms(started);
        fresh_dir(&work)?;
        let mut check_wait_ms = None;
        let restored = match written {
            Written::Unchecked(kept) => {
                let (checked, waited_ms) = self
                    .restore_checking(image.path(), image.path(), &work, slot, manifest, kept)
                    .await;
                check_wait_ms = Some(waited_ms);
                match checked {
                    Ok(Some(pid)) => Ok(pid),
                    Err(e) => Err(e),
                    // A page of the kept dump failed (deleted now): out of the tiers instead.
                    Ok(None) => {
                        let written = self.write_image(manifest, image.path(), slot, false).await;
                        if complete(written).is_none() {
                            image.release()?;
                            return Ok(None);
                        }
                        fresh_dir(&work)?;
                        self.restore_whole(image.path(), &work, slot, false).await
                    }
                }
            }
            Written::Checked | Written::Incomplete => {
                self.restore_whole(image.path(), &work, slot, false).await
            }
        };
        let from = match image {
            ImageDir::Staged { .. } => "kept tmpfs",
            ImageDir::Own(_) => "tmpfs of its own",
        };
        // CRIU has read everything it needs: the tenant holds nothing of the image. The kept
        // tmpfs is free for the next restore at once; a tmpfs of its own unmounts behind.
        let released = match image {
            ImageDir::Staged { .. } => None,
            own => Some(tokio::task::spawn_blocking(move || own.release())),
        };
        let how = Restored {
            from,
            started,
            image_ms,
            check_wait_ms,
            prefetch,
        };
        Ok(Some(self.restored_whole(
            slot, rt, checkpoint, restored?, how, released,
        )))
    }

    /// Records the tenant of `slot` running as `pid`, restored whole as `how` says, its state
    /// written behind (after `released`, a tmpfs being unmounted); the swap-in's report.
    fn restored_whole(
        &self,
        slot: &TenantSlot,
        rt: &mut TenantRuntime,
        checkpoint: &pagestore::CheckpointRef,
        pid: u32,
        how: Restored,
        released: Option<tokio::task::JoinHandle<Result<()>>>,
    ) -> SwapInReport {
        let total_ms = elapsed_ms(how.started);
        let report = SwapInReport {
            checkpoint: checkpoint.id.to_string(),
            pid,
            eager_pages: 0,
            prefetched_pages: 0,
            whole: true,
            prefetch: how.prefetch,
            mount_ms: how.image_ms,
            restore_ms: total_ms - how.image_ms,
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
            from = how.from,
            image_ms = how.image_ms,
            restore_ms = total_ms - how.image_ms,
            total_ms,
            check_wait_ms = how.check_wait_ms,
            "swapped in whole"
        );
        report
    }

    /// Fetches `pages` (those of a whole restore's image this worker lacks) from the cold tier
    /// into the memory tier, billed to the tenant like a lazy restore's fill.
    async fn fetch_missing(
        &self,
        checkpoint: &pagestore::CheckpointRef,
        pages: &[pagestore::PageId],
    ) -> Result<pagestore::prefetch::PrefetchReport> {
        let fetched = self.store.prefetch(pages).await?;
        info!(
            cold_pages = fetched.cold_pages,
            cold_bytes = fetched.cold_bytes,
            ms = fetched.ms,
            "pages fetched for a whole restore"
        );
        super::fill::record_cold_reads(
            &self.config.usage_log,
            &checkpoint.tenant,
            fetched.cold_gets,
            fetched.cold_bytes,
        );
        Ok(fetched)
    }

    /// The tenant's kept dump of `manifest`'s checkpoint (`pagestore::whole_image`), if it has
    /// one; held against deletion until dropped.
    async fn kept_dump(&self, manifest: &Manifest) -> Option<pagestore::whole_image::KeptDump> {
        let (store, image) = (self.store.clone(), manifest.clone());
        match tokio::task::spawn_blocking(move || store.kept_dump(&image)).await {
            Ok(Ok(kept)) => kept,
            Ok(Err(e)) => {
                warn!(error = %e, "the kept dump cannot be read: restoring from the tiers");
                None
            }
            Err(e) => {
                warn!(error = %e, "kept dump lookup failed");
                None
            }
        }
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

    /// Writes the image of `manifest` into `dir` from the memory tier, else (with
    /// `from_kept`, for a tenant in a user namespace, which cannot be restored from its kept
    /// dump where it lies) a copy of its kept dump, its pages then still to be checked, else the
    /// local tier (see `PageStore::materialize_resident`, `pagestore::whole_image`); readable by
    /// everyone when the tenant has a user namespace: CRIU's restored tasks open some images
    /// themselves, some before their ids are mapped (the mounts directory is root's alone).
    async fn write_image(
        &self,
        manifest: &Manifest,
        dir: &Path,
        slot: &TenantSlot,
        from_kept: bool,
    ) -> std::result::Result<Result<Written>, tokio::task::JoinError> {
        let store = self.store.clone();
        let (manifest, dir) = (manifest.clone(), dir.to_path_buf());
        let shared = slot.user_namespace.is_some();
        let kept = from_kept && shared && self.config.keep_whole_images;
        tokio::task::spawn_blocking(move || {
            let kept = match kept && !store.in_memory(&manifest) {
                true => store.kept_dump(&manifest)?,
                false => None,
            };
            let written = match kept {
                Some(kept) => {
                    kept.copy_into(&manifest, &dir)?;
                    Written::Unchecked(kept)
                }
                None if store.materialize_resident(&manifest, &dir)? => Written::Checked,
                None => Written::Incomplete,
            };
            if shared && !matches!(written, Written::Incomplete) {
                readable_by_all(&dir).map_err(|e| Error::io(&dir, e))?;
            }
            Ok(written)
        })
        .await
    }

    /// Restores the image in `images` (the tenant's kept dump, or a copy of it in `checked`),
    /// checked against the checkpoint in `checked`: the files CRIU interprets first
    /// (`KeptDump::check_files`: ~100 KiB), the others ([`not_interpreted`]: the page files)
    /// beside the restore, its tasks left
    /// stopped meanwhile (`KeptDump::check_pages`: read back on the cores CRIU leaves, ~2 µs a
    /// page with BLAKE3, 35-60 ms of CPU for a dense tenant's 18-30k pages, off the wake-up's
    /// path), continued once all match, killed before running an instruction of their own when
    /// one does not. `Ok(None)` when a file failed (the dump is deleted: the caller writes the
    /// image out of the tiers). Also how long the check of the pages went on after the restore
    /// had finished, in ms.
    async fn restore_checking(
        &self,
        images: &Path,
        checked: &Path,
        work: &Path,
        slot: &TenantSlot,
        manifest: &Manifest,
        kept: pagestore::whole_image::KeptDump,
    ) -> (Result<Option<u32>>, u64) {
        let (manifest, dir) = (manifest.clone(), checked.to_path_buf());
        // The dump comes back with the outcome: held (against deletion) until CRIU is done too.
        let files = tokio::task::spawn_blocking(move || {
            let ok = kept.check_files(&manifest, &dir, not_interpreted);
            (kept, manifest, dir, ok)
        })
        .await;
        let (kept, manifest, dir) = match files {
            Ok((kept, manifest, dir, Ok(true))) => (kept, manifest, dir),
            Ok((_, _, _, ok)) => {
                let why = ok.map_or_else(|e| e.to_string(), |_| "a file differs".into());
                warn!(
                    why,
                    "the kept dump is not the checkpoint's: restoring from the tiers"
                );
                return (Ok(None), 0);
            }
            Err(e) => {
                return (
                    Err(Error::TaskFailed {
                        task: "kept dump check",
                        source: e,
                    }),
                    0,
                )
            }
        };
        let pages = tokio::task::spawn_blocking(move || {
            let ok = kept.check_pages(&manifest, &dir, not_interpreted);
            (kept, ok)
        });
        let restored = self.restore_whole(images, work, slot, true).await;
        let restored_at = Instant::now();
        let pages = pages.await;
        let waited_ms = restored_at.elapsed().as_millis() as u64;
        let why = match pages {
            Ok((_, Ok(true))) => match restored {
                Ok(pid) => {
                    crate::process::continue_tree(pid);
                    return (Ok(Some(pid)), waited_ms);
                }
                Err(e) => return (Err(e), waited_ms),
            },
            Ok((_, Ok(false))) => "a page of the kept dump does not match its id".to_string(),
            Ok((_, Err(e))) => e.to_string(),
            Err(e) => e.to_string(),
        };
        match restored {
            Ok(pid) => {
                warn!(pid, why, "restored from a kept dump that failed its check: killed, restoring from the tiers");
                crate::process::kill_tree(pid).await;
            }
            Err(e) => {
                warn!(why, error = %e, "a kept dump that failed its check did not restore: restoring from the tiers")
            }
        }
        (Ok(None), waited_ms)
    }

    /// `criu restore` of a whole image of the tenant of `slot`, by the spare CRIU when one is
    /// ready. Not for a tenant in a user namespace: the spare joins the tenant's network
    /// namespace from the restored user namespace, which may not (it owns nothing there), so a
    /// CRIU started inside the network namespace restores it.
    /// With `stopped`, its tasks are left stopped (`Criu::restore`).
    async fn restore_whole(
        &self,
        images: &Path,
        work: &Path,
        slot: &TenantSlot,
        stopped: bool,
    ) -> Result<u32> {
        let cgroups = self.cgroup_roots(&slot.name);
        let placement = slot.placement(&cgroups);
        self.ready_for_a_cgroup_move();
        if let (Some(spares), None) = (&self.criu_spares, slot.user_namespace) {
            if let Some(pid) = spares.restore(images, work, placement, stopped).await? {
                return Ok(pid);
            }
        }
        self.criu
            .restore(images, work, false, placement, stopped)
            .await
    }
}

/// How a whole restore went, for its report and log line.
struct Restored {
    /// Where CRIU read the image: the kept dump, or a tmpfs it was written into.
    from: &'static str,
    /// When the swap-in began.
    started: Instant,
    /// From then until the image was ready for CRIU, in ms.
    image_ms: u64,
    /// How long the check of pages read out of the kept dump went on after CRIU had finished.
    check_wait_ms: Option<u64>,
    /// The cold reads of the pages this worker lacked.
    prefetch: pagestore::prefetch::PrefetchReport,
}

/// What writing an image out gave.
enum Written {
    /// Not every page is on this worker.
    Incomplete,
    /// Every page, each checked against its id.
    Checked,
    /// Every page, copied out of the tenant's kept dump, to be checked beside the restore.
    Unchecked(pagestore::whole_image::KeptDump),
}

/// The image written, if every page was; otherwise why not, logged (the restore goes lazy).
fn complete(
    written: std::result::Result<Result<Written>, tokio::task::JoinError>,
) -> Option<Written> {
    match written {
        Ok(Ok(Written::Incomplete)) => info!("not every page is on this worker: restoring lazily"),
        Ok(Ok(written)) => return Some(written),
        Ok(Err(e)) => warn!(error = %e, "could not write the image out: restoring lazily"),
        Err(e) => warn!(error = %e, "image writer failed: restoring lazily"),
    }
    None
}

/// Whether CRIU's restore leaves the file `name` of an image uninterpreted: its page files, whose
/// bytes it copies into the restored memory, and the tenant's own files carried beside its
/// images ([`crate::tenant_files`]: its record and the archive of its working directory, read
/// only by a worker adopting it), which it does not read at all. These are checked beside the
/// restore, the others before it (the archive may be as large as the tenant's working directory).
fn not_interpreted(name: &str) -> bool {
    criu_image::names::is_pages_file(name)
        || name == crate::tenant_files::FILES_ARCHIVE
        || name == crate::tenant_files::RECORD_FILE
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
    fn the_page_files_and_the_tenants_own_files_are_checked_beside_the_restore() {
        assert!(not_interpreted("pages-1.img"));
        assert!(not_interpreted(crate::tenant_files::FILES_ARCHIVE));
        assert!(not_interpreted(crate::tenant_files::RECORD_FILE));
        for interpreted in ["core-1.img", "pagemap-1.img", "inventory.img", "mm-1.img"] {
            assert!(!not_interpreted(interpreted), "{interpreted}");
        }
    }
}
