//! Lifetime of stored data: retention (keep the last few checkpoints of a tenant and one a day
//! for a week, and the base of each kept delta manifest), forgetting a tenant, and garbage
//! collection of the pages no retained checkpoint references.
//!
//! GC marks every page of every manifest, then sweeps packs: a pack with no live page is deleted;
//! a pack still in ingest's fast encoding has its live pages rewritten dense
//! ([`crate::recompress`]);
//! a pack whose live bytes fall under `[gc] repack_below` of its page bytes has its live pages
//! copied into new packs, which are uploaded *before* the old pack is deleted, so a crash at any
//! moment leaves at worst duplicate or unreferenced packs, never a missing page. GC holds the
//! exclusive store lock ([`crate::lock`]), so no ingest can dedup against a pack it is deleting.

use std::collections::HashSet;
use std::time::Instant;

use serde::Serialize;
use tracing::{info, info_span, Instrument};

use crate::blocking::blocking;
use crate::config::RetentionConfig;
use crate::error::Result;
use crate::locality::LocalitySource;
use crate::lock::LockKind;
use crate::manifest::{CheckpointId, CheckpointRef};
use crate::pack::{self, PackBuilder, PackId};
use crate::page::PageId;
use crate::recompress::{rewrite_pages, DenseWriter};
use crate::store::PageStore;

const DAY_MS: u64 = 24 * 3600 * 1000;

/// What one gc did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct GcReport {
    pub manifests: u64,
    pub live_pages: u64,
    pub packs_before: u64,
    pub packs_deleted: u64,
    pub packs_repacked: u64,
    /// Packs of ingest's fast encoding rewritten dense ([`crate::recompress`]).
    pub packs_recompressed: u64,
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
    /// Deletes the checkpoints of `tenant` beyond the newest `keep` (0 keeps all), except the
    /// bases of those kept. Returns the checkpoints deleted. Their pages go at the next gc.
    pub async fn apply_retention(&self, tenant: &str, keep: u64) -> Result<Vec<CheckpointRef>> {
        let policy = RetentionConfig {
            keep_last: keep,
            keep_daily: 0,
        };
        self.apply_retention_policy(tenant, &policy).await
    }

    /// Keeps the newest `keep_last` checkpoints of `tenant` (0 keeps all), the newest of each of
    /// the last `keep_daily` days (UTC), and the full manifest each kept delta is written
    /// against; deletes the rest. Returns the checkpoints deleted. Their pages go at the next gc.
    pub async fn apply_retention_policy(
        &self,
        tenant: &str,
        policy: &RetentionConfig,
    ) -> Result<Vec<CheckpointRef>> {
        if policy.keep_last == 0 {
            return Ok(Vec::new());
        }
        let mut mine: Vec<CheckpointRef> = self
            .checkpoints()
            .await?
            .into_iter()
            .filter(|c| c.tenant == tenant)
            .collect();
        mine.sort_by_key(|c| std::cmp::Reverse(c.generation));
        let mut keep: HashSet<CheckpointId> = mine
            .iter()
            .take(policy.keep_last as usize)
            .map(|c| c.id.clone())
            .collect();
        if policy.keep_daily > 0 {
            let today = crate::clock::now_ms() / DAY_MS;
            let mut days = HashSet::new();
            for c in &mine {
                let day = self.manifest_info(c).await?.created_ms / DAY_MS;
                if today.saturating_sub(day) >= policy.keep_daily {
                    break; // newest first: every later one is older still
                }
                if days.insert(day) {
                    keep.insert(c.id.clone());
                }
            }
        }
        // A kept delta needs its base to be read.
        for c in &mine {
            if keep.contains(&c.id) {
                if let Some(base) = self.manifest_info(c).await?.base {
                    keep.insert(base.id);
                }
            }
        }
        let old: Vec<CheckpointRef> = mine.into_iter().filter(|c| !keep.contains(&c.id)).collect();
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

        // Sweep. A pack still in ingest's fast encoding is rewritten dense whatever it holds
        // (the recompression that `pico store gc` finishes); a dense pack only when little of
        // it is live.
        let threshold = self.config.gc.repack_below;
        let mut doomed: Vec<(PackId, String)> = Vec::new();
        let mut written: HashSet<PackId> = HashSet::new();
        let mut writer = DenseWriter::new()?;
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
            let total: u64 = entries.iter().map(|e| e.stored_bytes()).sum();
            let kept: u64 = keep.iter().map(|e| e.stored_bytes()).sum();
            let fast = pack::is_fast(&entries);
            if !fast
                && (keep.len() == entries.len()
                    || (total > 0 && kept as f64 >= threshold * total as f64))
            {
                r.pack_bytes_after += obj.size;
                continue;
            }
            r.pages_dropped += (entries.len() - keep.len()) as u64;
            if !keep.is_empty() {
                if fast {
                    r.packs_recompressed += 1;
                } else {
                    r.packs_repacked += 1;
                }
                let data = self.cold().get(&obj.key).await?;
                let key = obj.key.clone();
                writer = blocking(move || {
                    rewrite_pages(&mut writer, &key, &data, &keep)?;
                    Ok(writer)
                })
                .await?;
                for full in writer.take_full() {
                    let (id, len) = self.write_repacked(full).await?;
                    written.insert(id);
                    r.pack_bytes_after += len;
                    r.packs_written += 1;
                }
            }
            doomed.push((pack, obj.key));
        }
        for last in blocking(move || writer.finish()).await? {
            let (id, len) = self.write_repacked(last).await?;
            written.insert(id);
            r.pack_bytes_after += len;
            r.packs_written += 1;
        }
        // Only now that every live page has a durable new home are old packs deleted.
        r.packs_deleted = self.delete_replaced(&doomed, &written).await? as u64;
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

    /// Uploads a pack of pages that live elsewhere too, and points the catalog at it.
    pub(crate) async fn write_repacked(&self, builder: PackBuilder) -> Result<(PackId, u64)> {
        let (pack, data, entries) = builder.finish();
        let len = data.len() as u64;
        self.cold().put(&pack.object_key(), data).await?;
        self.catalog().move_to_pack(pack, &entries);
        self.pack_written(pack, len, &entries);
        Ok((pack, len))
    }
}
