//! Ingest: turns a directory (usually a CRIU image dir) into a committed checkpoint.
//!
//! Paged files (the caller's rule, [`PagedFiles`]: by default every file over [`INLINE_MAX`]) are
//! split into pages and named in parallel; zero pages and pages the store already has cost no
//! compression and no upload; new pages are lz4-encoded in parallel and packed. Packs
//! are uploaded first, then the manifest: its upload is the commit point, so until it is durable
//! the tenant's previous checkpoint is its newest one, and a crash leaves at worst unreferenced
//! packs behind. The new pages are cached in the local tier behind the commit, one engine write
//! per pack ([`crate::local::Filler`]; [`PageStore::local_settled`] waits for it).

mod input;
mod packing;
mod paged_file;

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use tracing::{info, info_span, warn, Instrument};

use crate::blocking::blocking;
use crate::error::{Error, Result};
use crate::lock::LockKind;
use crate::manifest::{
    valid_tenant_name, CheckpointId, CheckpointRef, FileContent, FileEntry, Manifest, FULL_EVERY,
};
use crate::manifest_cache::ManifestInfo;
use crate::page;
use crate::store::PageStore;

use input::{changed_size, list_input};
use packing::Packing;

/// Files larger than this are split into pages whatever the [`PagedFiles`] rule says.
pub const INLINE_MAX: u64 = 1 << 20;

/// What one ingest did.
#[derive(Clone, Debug, Serialize)]
pub struct IngestReport {
    pub checkpoint: CheckpointRef,
    pub files: usize,
    /// Bytes of the paged files.
    pub logical_bytes: u64,
    pub pages_total: u64,
    pub pages_zero: u64,
    /// Non-zero pages the store already had (or that repeat within this checkpoint).
    pub pages_known: u64,
    /// Pages stored by this ingest.
    pub pages_new: u64,
    /// Bytes handed to the compressor: new pages only (zero and known pages cost none).
    pub bytes_compressed: u64,
    pub packs_written: usize,
    /// Bytes uploaded to the cold tier: packs plus the manifest.
    pub bytes_uploaded: u64,
    /// Pages also written to the checkpoint's locality pack ([`IngestOptions::locality`]), and
    /// its bytes: copies of pages stored elsewhere too (included in `bytes_uploaded`).
    pub locality_pages: u64,
    pub locality_bytes: u64,
    /// Of `locality_pages`, those [`IngestOptions::locality_changed`] added.
    pub locality_changed_pages: u64,
    pub elapsed_ms: u64,
    /// The committed manifest, for callers that use it next (a worker restoring the tenant
    /// later need not read back what it just wrote).
    #[serde(skip)]
    pub manifest: Option<std::sync::Arc<Manifest>>,
}

/// Choices of one ingest beyond its input.
#[derive(Clone, Debug, Default)]
pub struct IngestOptions {
    /// Pages to *also* store together, in this order, in one locality pack named by the
    /// manifest (see [`crate::locality`]); empty: none. The caller bounds its length.
    pub locality: Vec<crate::locality::PagePos>,
    /// After those, the pages whose content an earlier checkpoint lacks (see
    /// [`crate::locality::ChangedSince`]); none: no such pages.
    pub locality_changed: Option<crate::locality::ChangedSince>,
    /// Also put every non-zero page of the checkpoint into the memory tier (named from the very
    /// bytes it holds, so checked by construction), for a checkpoint expected to be read back
    /// whole soon: a small tenant's, which its next swap-in writes out of memory. Done inline,
    /// so for small checkpoints only.
    pub keep_in_memory: bool,
    /// Which files are split into pages; by default those larger than [`INLINE_MAX`].
    pub paged: PagedFiles,
    /// Told of the pages of the paged files as they are processed (stage `ingest`: their
    /// pages and bytes).
    pub progress: crate::progress::Reporter,
}

/// Which files of a checkpoint are split into pages; the others are kept whole (inline) in the
/// manifest. Every file larger than [`INLINE_MAX`] is paged; the caller, who knows the format of
/// the directory, may name more (an image format's page files, however small), since the store
/// does not know formats. The default pages by size alone.
#[derive(Clone, Copy, Debug, Default)]
pub struct PagedFiles {
    /// Files paged whatever their size.
    named: Option<fn(&str) -> bool>,
}

impl PagedFiles {
    /// Files `named` accepts, and every file larger than [`INLINE_MAX`].
    pub const fn named(named: fn(&str) -> bool) -> PagedFiles {
        PagedFiles { named: Some(named) }
    }

    /// Whether a file of `size` bytes called `name` is split into pages.
    pub fn is_paged(&self, name: &str, size: u64) -> bool {
        self.named.is_some_and(|named| named(name)) || size > INLINE_MAX
    }
}

impl PageStore {
    /// Ingests every file of `dir` as the next checkpoint of `tenant`.
    pub async fn ingest(&self, tenant: &str, dir: &Path) -> Result<IngestReport> {
        self.ingest_with(tenant, dir, &IngestOptions::default())
            .await
    }

    /// [`Self::ingest`] with options.
    pub async fn ingest_with(
        &self,
        tenant: &str,
        dir: &Path,
        options: &IngestOptions,
    ) -> Result<IngestReport> {
        if !valid_tenant_name(tenant) {
            return Err(Error::BadInput {
                path: dir.to_path_buf(),
                reason: format!(
                    "tenant name {tenant:?} must be 1-63 letters, digits, '.', '_' or '-', \
                     starting with a letter or digit"
                ),
            });
        }
        // A gc beside it deletes no page it dedups against: either it announced those pages
        // (`doomed`: stored again here) or it waits for this commit ([`crate::lock`]).
        let lock = self.lock(LockKind::Ingest).await?;
        let doomed = lock.doomed();
        // Caching new pages locally waits for the commit (unless its queue fills).
        let filling = self.read_path.filler().map(|f| f.ingest_started());
        let result = self.ingest_locked(tenant, dir, options, doomed).await;
        drop(filling);
        let unlocked = self.unlock(lock).await;
        let report = result?;
        unlocked?;
        Ok(report)
    }

    async fn ingest_locked(
        &self,
        tenant: &str,
        dir: &Path,
        options: &IngestOptions,
        doomed: Option<Arc<page::PageSet>>,
    ) -> Result<IngestReport> {
        // Forget packs a gc deleted since the catalog was loaded.
        self.refresh_catalog().await?;
        let parent = self.latest(tenant).await?;
        let generation = parent.as_ref().map_or(1, |p| p.generation + 1);
        let span = info_span!("ingest", tenant, generation);
        let report = self
            .ingest_generation(tenant, generation, parent.as_ref(), dir, options, doomed)
            .instrument(span)
            .await?;
        // The newest checkpoint's locality pack is the one the next restore reads (a first
        // checkpoint has no older ones to drop).
        if generation > 1 {
            self.drop_locality(tenant, |g| g < generation).await;
        }
        if self.config.retention.keep_last > 0 {
            // The new checkpoint is committed; a failure here only delays the cleanup.
            let policy = &self.config.retention;
            if let Err(e) = self.apply_retention_policy(tenant, policy).await {
                tracing::warn!(tenant, error = %e, "retention failed; older checkpoints kept");
            }
        }
        Ok(report)
    }

    async fn ingest_generation(
        &self,
        tenant: &str,
        generation: u64,
        parent: Option<&CheckpointRef>,
        dir: &Path,
        options: &IngestOptions,
        doomed: Option<Arc<page::PageSet>>,
    ) -> Result<IngestReport> {
        let started = Instant::now();
        let inputs = {
            let dir = dir.to_path_buf();
            blocking(move || list_input(&dir)).await?
        };
        let mut report = IngestReport {
            checkpoint: CheckpointRef {
                tenant: tenant.to_string(),
                generation,
                id: CheckpointId::of_manifest_bytes(b""),
            },
            files: inputs.len(),
            logical_bytes: 0,
            pages_total: 0,
            pages_zero: 0,
            pages_known: 0,
            pages_new: 0,
            bytes_compressed: 0,
            packs_written: 0,
            bytes_uploaded: 0,
            locality_pages: 0,
            locality_bytes: 0,
            locality_changed_pages: 0,
            elapsed_ms: 0,
            manifest: None,
        };
        let paged: Vec<u64> = inputs
            .iter()
            .filter(|i| options.paged.is_paged(&i.name, i.size))
            .map(|i| i.size)
            .collect();
        options.progress.get().stage(
            "ingest",
            paged.iter().map(|s| page::page_count(*s)).sum(),
            paged.iter().sum(),
        );
        let mut files = Vec::with_capacity(inputs.len());
        let mut packing = Packing::new(options.keep_in_memory, doomed);
        for input in inputs {
            let content = if options.paged.is_paged(&input.name, input.size) {
                let ids = self
                    .ingest_paged_file(&input, &mut packing, &mut report, options)
                    .await?;
                report.logical_bytes += input.size;
                FileContent::Paged(ids)
            } else {
                let path = input.path.clone();
                let data =
                    blocking(move || std::fs::read(&path).map_err(|e| Error::io(&path, e))).await?;
                if data.len() as u64 != input.size {
                    return Err(changed_size(&input.path));
                }
                FileContent::Inline(data)
            };
            files.push(FileEntry {
                name: input.name,
                mode: input.mode,
                size: input.size,
                content,
            });
        }
        // Every pack durable (and known to the catalog) before the manifest names them.
        packing.finish(self, &mut report).await?;

        let packs = self.packs_holding(&files)?;
        // Durable before the manifest that names it, like every pack.
        let locality = self
            .write_locality(
                tenant,
                generation,
                dir,
                &files,
                &options.locality,
                options.locality_changed.as_ref(),
            )
            .await?
            .map(|(l, changed)| {
                report.locality_pages = u64::from(l.pages);
                report.locality_bytes = l.bytes;
                report.locality_changed_pages = changed;
                report.bytes_uploaded += l.bytes;
                l
            });
        let manifest = Manifest {
            tenant: tenant.to_string(),
            generation,
            created_ms: crate::clock::now_ms(),
            parent: parent.map(|p| p.id.clone()),
            packs,
            files,
            locality,
        };
        let base = self.delta_base(parent, generation).await;
        let bytes =
            bytes::Bytes::from(manifest.encode_dense(base.as_ref().map(|(r, m)| (r, m.as_ref())))?);
        report.checkpoint.id = CheckpointId::of_manifest_bytes(&bytes);
        report.bytes_uploaded += bytes.len() as u64;
        // The commit point.
        self.cold()
            .put(&report.checkpoint.object_key(), bytes.clone())
            .await?;
        self.keep_manifest(&report.checkpoint.id, &bytes);
        report.elapsed_ms = started.elapsed().as_millis() as u64;
        let manifest = std::sync::Arc::new(manifest);
        let id = report.checkpoint.id.clone();
        if base.is_none() {
            self.manifests.put_full(id.clone(), manifest.clone());
        }
        self.manifests.put_info(
            id,
            ManifestInfo {
                created_ms: manifest.created_ms,
                base: base.map(|(r, _)| r),
            },
        );
        report.manifest = Some(manifest);
        info!(
            checkpoint = %report.checkpoint.id,
            pages = report.pages_total,
            zero = report.pages_zero,
            new = report.pages_new,
            uploaded = report.bytes_uploaded,
            locality_pages = report.locality_pages,
            locality_bytes = report.locality_bytes,
            locality_changed = report.locality_changed_pages,
            ms = report.elapsed_ms,
            "checkpoint committed"
        );
        Ok(report)
    }

    /// The full manifest the next generation's manifest is written against: the parent if it is
    /// full, else the parent's base, unless that is [`FULL_EVERY`] generations back (then a full
    /// manifest is written). Any failure to read one means a full manifest, which is always valid.
    async fn delta_base(
        &self,
        parent: Option<&CheckpointRef>,
        generation: u64,
    ) -> Option<(CheckpointRef, std::sync::Arc<Manifest>)> {
        let parent = parent?;
        let info = self
            .manifest_info(parent)
            .await
            .inspect_err(|e| warn!(error = %e, "parent manifest unreadable; writing a full one"))
            .ok()?;
        let base = info.base.unwrap_or_else(|| parent.clone());
        if generation.saturating_sub(base.generation) >= FULL_EVERY {
            return None;
        }
        let manifest = self
            .base_manifest(parent, &base)
            .await
            .inspect_err(|e| warn!(error = %e, "base manifest unreadable; writing a full one"))
            .ok()?;
        Some((base, manifest))
    }

    /// The packs that hold every stored page of `files`, sorted: what a manifest lists so that
    /// any machine can resolve it from the cold tier alone.
    pub(crate) fn packs_holding(&self, files: &[FileEntry]) -> Result<Vec<crate::pack::PackId>> {
        let mut packs: Vec<_> = files
            .iter()
            .flat_map(|f| f.pages())
            .filter(|id| !id.is_zero())
            .map(|id| {
                self.catalog()
                    .locate(id)
                    .map(|l| l.pack)
                    .ok_or(Error::PageMissing(*id))
            })
            .collect::<Result<HashSet<_>>>()?
            .into_iter()
            .collect();
        packs.sort();
        Ok(packs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::page::PAGE_SIZE;

    #[test]
    fn by_default_only_large_files_are_paged_and_a_rule_adds_named_ones() {
        let by_size = PagedFiles::default();
        assert!(!by_size.is_paged("pages-1.img", PAGE_SIZE as u64));
        assert!(!by_size.is_paged("big", INLINE_MAX));
        assert!(by_size.is_paged("big", INLINE_MAX + 1));
        let named = PagedFiles::named(|name| name.ends_with(".pages"));
        assert!(named.is_paged("a.pages", 0));
        assert!(!named.is_paged("a.txt", PAGE_SIZE as u64));
        assert!(named.is_paged("a.txt", INLINE_MAX + 1));
    }
}
