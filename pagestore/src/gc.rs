//! Lifetime of stored data: retention (keep the last K checkpoints of a tenant), forgetting a
//! tenant, and garbage collection of the pages no retained checkpoint references.
//!
//! GC marks every page of every manifest, then sweeps packs: a pack with no live page is deleted;
//! a pack whose live bytes fall under `[gc] repack_below` of its page bytes has its live pages
//! copied into new packs, which are uploaded *before* the old pack is deleted, so a crash at any
//! moment leaves at worst duplicate or unreferenced packs, never a missing page. GC holds the
//! exclusive store lock ([`crate::lock`]), so no ingest can dedup against a pack it is deleting.

use std::collections::HashSet;
use std::time::Instant;

use serde::Serialize;
use tracing::{info, info_span, Instrument};

use crate::codec::decode_verified;
use crate::error::{Error, Result};
use crate::locality::LocalitySource;
use crate::lock::LockKind;
use crate::manifest::CheckpointRef;
use crate::pack::{PackBuilder, PackId};
use crate::page::PageId;
use crate::store::PageStore;
use crate::tier::Tier;

/// What one gc did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct GcReport {
    pub manifests: u64,
    pub live_pages: u64,
    pub packs_before: u64,
    pub packs_deleted: u64,
    pub packs_repacked: u64,
    pub packs_written: u64,
    /// Page copies dropped (unreferenced, or a second copy of a page).
    pub pages_dropped: u64,
    pub pack_bytes_before: u64,
    pub pack_bytes_after: u64,
    /// Locality packs deleted because no manifest names them.
    pub locality_deleted: u64,
    pub elapsed_ms: u64,
}

impl PageStore {
    /// Deletes the checkpoints of `tenant` beyond the newest `keep` (0 keeps all). Returns the
    /// checkpoints deleted. Their pages go at the next gc.
    pub async fn apply_retention(&self, tenant: &str, keep: u64) -> Result<Vec<CheckpointRef>> {
        if keep == 0 {
            return Ok(Vec::new());
        }
        let mut mine: Vec<CheckpointRef> = self
            .checkpoints()
            .await?
            .into_iter()
            .filter(|c| c.tenant == tenant)
            .collect();
        mine.sort_by_key(|c| std::cmp::Reverse(c.generation));
        let old: Vec<CheckpointRef> = mine.into_iter().skip(keep as usize).collect();
        for c in &old {
            self.cold().delete(&c.object_key()).await?;
            info!(tenant, generation = c.generation, checkpoint = %c.id, "retention: checkpoint dropped");
        }
        // Their locality packs are gone already: each commit drops all but the newest
        // checkpoint's (`crate::locality`), and gc sweeps any no manifest names.
        Ok(old)
    }

    /// Deletes every checkpoint of `tenant`. Returns them. Their pages go at the next gc.
    pub async fn forget(&self, tenant: &str) -> Result<Vec<CheckpointRef>> {
        let mine: Vec<CheckpointRef> = self
            .checkpoints()
            .await?
            .into_iter()
            .filter(|c| c.tenant == tenant)
            .collect();
        for c in &mine {
            self.cold().delete(&c.object_key()).await?;
        }
        self.drop_locality(tenant, |_| true).await;
        info!(tenant, checkpoints = mine.len(), "tenant forgotten");
        Ok(mine)
    }

    /// Mark and sweep, under the exclusive store lock.
    pub async fn gc(&self) -> Result<GcReport> {
        let lock = self.lock(LockKind::Gc).await?;
        let result = self.gc_locked().instrument(info_span!("gc")).await;
        self.unlock(lock).await?;
        result
    }

    async fn gc_locked(&self) -> Result<GcReport> {
        let started = Instant::now();
        let mut r = GcReport::default();
        self.refresh_catalog().await?;

        // Mark. Any manifest that cannot be read stops the gc: sweeping on a partial mark would
        // delete pages that checkpoint needs.
        let mut live: HashSet<PageId> = HashSet::new();
        let mut live_locality: HashSet<String> = HashSet::new();
        for c in self.checkpoints().await? {
            let m = self.manifest(&c).await?;
            r.manifests += 1;
            live_locality.extend(LocalitySource::of(&m).map(|l| l.key));
            for f in &m.files {
                live.extend(f.pages().iter().filter(|p| !p.is_zero()));
            }
        }
        r.live_pages = live.len() as u64;

        // Sweep.
        let threshold = self.config.gc.repack_below;
        let mut doomed: Vec<(PackId, String)> = Vec::new();
        let mut builder = PackBuilder::new();
        for obj in self.cold().list("packs/").await? {
            let Some(pack) = PackId::from_object_key(&obj.key) else {
                continue;
            };
            r.packs_before += 1;
            r.pack_bytes_before += obj.size;
            let entries = self.read_pack_index(&obj.key, obj.size).await?;
            // A page is live here if it is referenced and this is the copy the catalog reads.
            let keep: Vec<_> = entries
                .iter()
                .filter(|e| {
                    live.contains(&e.id)
                        && self.catalog().locate(&e.id).map(|l| l.pack) == Some(pack)
                })
                .copied()
                .collect();
            let total: u64 = entries.iter().map(|e| u64::from(e.len)).sum();
            let kept: u64 = keep.iter().map(|e| u64::from(e.len)).sum();
            r.pages_dropped += (entries.len() - keep.len()) as u64;
            if keep.len() == entries.len() || (total > 0 && kept as f64 >= threshold * total as f64)
            {
                r.pages_dropped -= (entries.len() - keep.len()) as u64;
                r.pack_bytes_after += obj.size;
                continue;
            }
            if !keep.is_empty() {
                r.packs_repacked += 1;
                let data = self.cold().get(&obj.key).await?;
                for e in &keep {
                    let raw = data
                        .get(e.offset as usize..(e.offset + u64::from(e.len)) as usize)
                        .ok_or_else(|| Error::CorruptObject {
                            what: "pack",
                            object: obj.key.clone(),
                            reason: "shorter than its index".into(),
                        })?;
                    // Never copy a corrupt page into a new pack.
                    decode_verified(&e.id, e.codec, raw, Tier::Cold, &obj.key)?;
                    builder.push(e.id, e.codec, raw);
                    if builder.is_full() {
                        let full = std::mem::take(&mut builder);
                        r.pack_bytes_after += self.write_repacked(full).await?;
                        r.packs_written += 1;
                        builder = PackBuilder::new();
                    }
                }
            }
            doomed.push((pack, obj.key));
        }
        if !builder.is_empty() {
            r.pack_bytes_after += self.write_repacked(builder).await?;
            r.packs_written += 1;
        }
        // Only now that every live page has a durable new home are old packs deleted.
        let gone: HashSet<PackId> = doomed.iter().map(|(p, _)| *p).collect();
        for (pack, key) in &doomed {
            self.cold().delete(key).await?;
            self.forget_pack(pack);
            r.packs_deleted += 1;
        }
        self.catalog().remove_packs(&gone);
        // Locality packs no manifest names: a killed ingest's, or one whose manifest went.
        for obj in self.cold().list("locality/").await? {
            if !live_locality.contains(&obj.key) {
                self.cold().delete(&obj.key).await?;
                r.locality_deleted += 1;
            }
        }
        r.elapsed_ms = started.elapsed().as_millis() as u64;
        info!(
            manifests = r.manifests,
            live = r.live_pages,
            deleted = r.packs_deleted,
            repacked = r.packs_repacked,
            dropped = r.pages_dropped,
            "gc done"
        );
        Ok(r)
    }

    async fn write_repacked(&self, builder: PackBuilder) -> Result<u64> {
        let (pack, data, entries) = builder.finish();
        let len = data.len() as u64;
        self.cold().put(&pack.object_key(), data).await?;
        self.catalog().move_to_pack(pack, &entries);
        self.pack_written(pack, len, &entries);
        Ok(len)
    }
}
