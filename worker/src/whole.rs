//! Whole restore: a small checkpoint whose pages are all on this worker is restored by a plain
//! `criu restore` from the pager's mount, without the lazy-pages daemon and userfaultfd.
//!
//! **Why.** A lazy restore costs a fixed ~25 ms over plain CRIU: a second CRIU process (the
//! lazy-pages daemon), the relay, and `criu restore` reading the pages it installs through FUSE
//! in hundreds of small requests (the ActiveSet splits the pagemaps into scattered runs). For a
//! tenant of a few MiB held in memory or on the local disk, reading every page is cheaper than
//! all of that: the Python counter (11 MiB) and nginx (2 MiB) answered 2.5-3x slower than
//! plain CRIU from tmpfs when restored lazily from the local tier. Large tenants stay lazy
//! (redis with ~100 MB and a 256 MiB heap answer faster lazily than plain CRIU restores them),
//! and so does any checkpoint with pages in the cold tier, which the lazy path fetches in bulk
//! ahead of the restore and behind it.
//!
//! **The ActiveSet** learns nothing from a whole restore (no page faults reach the pager) and
//! is left as it is: it is what the next lazy restore, from the cold tier, will use, and the
//! tenant's first lazy restore learns it.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use pagestore::{Manifest, PageId, PageStore, PAGE_SIZE};
use tracing::{info, warn};

use crate::daemon::{TenantRuntime, TenantSlot, Worker};
use crate::error::Result;
use crate::tenant::{SwapInReport, TenantState};

/// The distinct non-zero pages of a checkpoint's paged files.
fn page_ids(manifest: &Manifest) -> Vec<PageId> {
    let mut seen = HashSet::new();
    manifest
        .files
        .iter()
        .flat_map(|f| f.pages())
        .filter(|id| !id.is_zero() && seen.insert(**id))
        .copied()
        .collect()
}

/// Whether `manifest` is restored whole: fewer than `below_mib` MiB of non-zero pages, every one
/// of them in the memory or local tier. The check brings the local ones into memory, where the
/// restore's reads then find them; it never reads the cold tier.
pub(crate) async fn eligible(store: &Arc<PageStore>, manifest: &Manifest, below_mib: u64) -> bool {
    let ids = page_ids(manifest);
    if below_mib == 0 || (ids.len() * PAGE_SIZE) as u64 >= below_mib << 20 {
        return false;
    }
    let store = store.clone();
    match tokio::task::spawn_blocking(move || store.promote_resident(&ids)).await {
        Ok(held) => held,
        Err(e) => {
            warn!(error = %e, "residency check failed");
            false
        }
    }
}

impl Worker {
    /// Restores the tenant whole from `manifest` (see the module doc); `rt` is its locked
    /// runtime, `started` when the swap-in began.
    pub(crate) async fn swap_in_whole(
        &self,
        slot: &Arc<TenantSlot>,
        rt: &mut TenantRuntime,
        checkpoint: &pagestore::CheckpointRef,
        manifest: Manifest,
        started: Instant,
    ) -> Result<SwapInReport> {
        let (mount, mountpoint) = self.mount_checkpoint(&checkpoint.tenant, manifest)?;
        let mount_ms = started.elapsed().as_millis() as u64;
        let work = slot.dirs.criu_work("restore");
        crate::swap::fresh_dir(&work)?;
        let restored = self.criu.restore(&mountpoint, &work, false).await;
        // CRIU has read everything it needs: the tenant holds nothing of the mount.
        let accesses = mount.access_log().clone();
        let unmounted = tokio::task::spawn_blocking(move || mount.unmount());
        let pid = restored?;
        let total_ms = started.elapsed().as_millis() as u64;
        let report = SwapInReport {
            checkpoint: checkpoint.id.to_string(),
            pid,
            eager_pages: 0,
            prefetched_pages: 0,
            whole: true,
            prefetch: Default::default(),
            mount_ms,
            restore_ms: total_ms - mount_ms,
            total_ms,
        };
        *slot.last_fill.lock().unwrap_or_else(|p| p.into_inner()) = None;
        *slot.last_reads.lock().unwrap_or_else(|p| p.into_inner()) = None;
        let tenant = checkpoint.tenant.clone();
        let access_file = slot
            .dirs
            .root
            .join(format!("access-{}.jsonl", checkpoint.generation));
        rt.restoring = Some(tokio::spawn(async move {
            match unmounted.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => warn!(tenant, error = %e, "unmount failed"),
                Err(e) => warn!(tenant, error = %e, "unmount task failed"),
            }
            if let Err(e) = crate::swap::write_access_log(&access_file, &accesses.snapshot()) {
                warn!(tenant, error = %e, "could not save the access log");
            }
        }));
        rt.info.state = TenantState::Running;
        rt.info.pid = Some(pid);
        rt.info.last_swap_in = Some(report.clone());
        rt.info.save(&slot.dirs)?;
        info!(pid, total_ms, "swapped in whole");
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pagestore::{FileContent, FileEntry};

    #[test]
    fn page_ids_skip_zero_pages_repeats_and_inline_files() {
        let (a, b) = (PageId([1; 32]), PageId([2; 32]));
        let m = Manifest {
            tenant: "t".into(),
            generation: 1,
            created_ms: 0,
            parent: None,
            packs: vec![],
            locality: None,
            files: vec![
                FileEntry {
                    name: "pagemap-1.img".into(),
                    mode: 0o600,
                    size: 3,
                    content: FileContent::Inline(vec![1, 2, 3]),
                },
                FileEntry {
                    name: "pages-1.img".into(),
                    mode: 0o600,
                    size: 4 * PAGE_SIZE as u64,
                    content: FileContent::Paged(vec![a, PageId::ZERO, b, a]),
                },
            ],
        };
        assert_eq!(page_ids(&m), vec![a, b]);
    }
}
