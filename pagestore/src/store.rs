//! The page store: opens the tiers and wires them into one [`ReadPath`], finds checkpoints, and
//! hands reads to the read path.
//!
//! Operations that add to what a store does (ingest, gc, verify, stats, derive, locality packs,
//! prefetch, file reads, ...) are `impl PageStore` blocks in modules of their own, above this
//! one: nothing here depends on them.

use std::sync::Arc;

use bytes::Bytes;
use tracing::{info, warn};

use crate::catalog::Catalog;
use crate::cold::ColdTier;
use crate::config::StoreConfig;
use crate::error::{Error, Result};
use crate::hot::HotTier;
use crate::index_cache::IndexCache;
use crate::kept_manifests::KeptManifests;
use crate::local::{self, LocalTier};
use crate::manifest::{CheckpointId, CheckpointRef, Manifest};
use crate::manifest_cache::{ManifestCache, ManifestInfo};
use crate::pack::{PackEntry, PackId};
use crate::page::PageId;
use crate::read::{PackCatalog, ReadPath, TierCounters};
use crate::tally::TierTally;

pub struct PageStore {
    /// The tiers and the walk through them.
    pub(crate) read_path: ReadPath,
    /// Manifests decoded lately: bases of deltas, and what retention asks.
    pub(crate) manifests: ManifestCache,
    /// Manifests this process committed, on the local disk ([`crate::kept_manifests`]): only
    /// while it holds the local tier.
    pub(crate) kept_manifests: Option<KeptManifests>,
    /// The background recompression's state ([`crate::recompress`]).
    pub(crate) background_recompress: crate::rerun::Rerun,
    /// Packs a recompression found dense, or wrote: a pack is named by its bytes, so it stays
    /// dense, and the next pass need not read its index again.
    pub(crate) known_dense_packs: std::sync::Mutex<std::collections::HashSet<crate::pack::PackId>>,
    /// Running gcs' doomed sets this process read, by key ([`crate::lock`]).
    pub(crate) doomed_sets:
        std::sync::Mutex<std::collections::HashMap<String, Arc<crate::page::PageSet>>>,
    pub(crate) config: StoreConfig,
    /// Kept whole images being written behind swap-outs ([`crate::whole_image`]).
    pub(crate) whole_images_writing: Arc<crate::whole_image::Writing>,
}

impl PageStore {
    /// Opens the store described by `config` and loads the catalog from the cold tier.
    pub async fn open(config: &StoreConfig) -> Result<PageStore> {
        let cold = ColdTier::open(&config.cold)?;
        let local: Option<Arc<dyn LocalTier>> = if config.local.enabled {
            match local::open(&config.local)? {
                Some(t) => Some(Arc::from(t)),
                None => {
                    info!(
                        path = %config.local.path.display(),
                        "local tier is held by another process (a running worker); reading without it"
                    );
                    None
                }
            }
        } else {
            None
        };
        let kept_manifests = local
            .as_ref()
            .and_then(|_| KeptManifests::dir_beside(&config.local.path))
            .and_then(|dir| KeptManifests::open(&dir));
        let index_cache = config.local.index_cache.as_deref().and_then(|dir| {
            IndexCache::open(dir)
                .inspect_err(|e| warn!(error = %e, "no pack index cache"))
                .ok()
        });
        let read_path = ReadPath::new(
            HotTier::new(config.hot.max_bytes),
            local,
            cold,
            PackCatalog::new(index_cache),
        );
        let store = PageStore {
            read_path,
            manifests: ManifestCache::default(),
            kept_manifests,
            background_recompress: Default::default(),
            known_dense_packs: Default::default(),
            doomed_sets: Default::default(),
            whole_images_writing: Default::default(),
            config: config.clone(),
        };
        store.refresh_catalog().await?;
        store.drop_unfinished_whole_images();
        info!(cold = %store.cold().describe(), pages = store.catalog().len(), "page store open");
        Ok(store)
    }

    /// What it was opened with.
    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    pub fn cold(&self) -> &ColdTier {
        self.read_path.cold()
    }

    pub fn local(&self) -> Option<&dyn LocalTier> {
        self.read_path.local()
    }

    pub fn hot(&self) -> &HotTier {
        self.read_path.hot()
    }

    pub fn catalog(&self) -> &Catalog {
        self.read_path.catalog()
    }

    /// Whether a cold read in progress (a ranged GET, or a locality pack's) brings page `id`.
    pub fn arriving(&self, id: &PageId) -> bool {
        self.read_path.arriving(id)
    }

    /// Hits and misses of the tiers above cold, and pages read from cold.
    /// The peers reads ask before the cold tier ([`crate::peer`]).
    pub fn peers(&self) -> &crate::peer::Peers {
        self.read_path.peers()
    }

    pub fn counters(&self) -> &TierCounters {
        self.read_path.counters()
    }

    /// Reads the index of every pack not yet in the catalog, and forgets packs that are gone (a gc
    /// elsewhere deleted them). Returns how many packs were added.
    pub async fn refresh_catalog(&self) -> Result<usize> {
        self.read_path.refresh_catalog().await
    }

    /// Forgets a pack this process deleted.
    pub(crate) fn forget_pack(&self, pack: &PackId) {
        self.read_path.packs().forget(pack);
    }

    /// A new pack's name and bytes, salted ([`crate::pack::renamed`]) while its name is that of a
    /// pack this process knows to exist: never uploaded over a pack a gc may be deleting.
    pub(crate) fn unused_name(&self, pack: PackId, data: Vec<u8>) -> (PackId, Vec<u8>) {
        let (mut pack, mut data) = (pack, data);
        let mut salt = 0u32;
        while self.read_path.packs().is_known(&pack) {
            salt += 1;
            (pack, data) = crate::pack::renamed(data, salt);
        }
        (pack, data)
    }

    /// Uploads a pack and, once it is durable, makes its pages known there (the new copy wins:
    /// a page stored again because a gc deletes its old copy must be found here) and the pack
    /// known. Its length.
    pub(crate) async fn put_pack(
        &self,
        pack: PackId,
        data: impl Into<bytes::Bytes>,
        entries: &[PackEntry],
    ) -> Result<u64> {
        let data = data.into();
        let len = data.len() as u64;
        self.cold().put(&pack.object_key(), data).await?;
        self.catalog().move_to_pack(pack, entries);
        self.pack_written(pack, len, entries);
        tracing::debug!(%pack, pages = entries.len(), bytes = len, "pack committed");
        Ok(len)
    }

    /// Marks a pack this process just uploaded (`len` bytes; its pages already in the catalog)
    /// known, and caches its index.
    pub(crate) fn pack_written(&self, pack: PackId, len: u64, entries: &[PackEntry]) {
        self.read_path.packs().written(pack, len, entries);
    }

    /// The index of the pack at `key` (`size` bytes): from the index cache, else from the pack's
    /// tail in the cold tier (then cached).
    pub(crate) async fn read_pack_index(&self, key: &str, size: u64) -> Result<Vec<PackEntry>> {
        self.read_path
            .packs()
            .read_index(self.cold(), key, size)
            .await
    }

    /// Reads one page through the tiers, checking it against its id.
    pub async fn read_page(&self, id: &PageId) -> Result<Bytes> {
        let mut pages = self.read_pages(std::slice::from_ref(id)).await?;
        pages.pop().ok_or(Error::PageMissing(*id))
    }

    /// Reads pages through the tiers, in the order asked. Pages missing from the memory and local
    /// tiers are fetched from the cold tier with as few ranged GETs as
    /// [`crate::read::plan_ranges`] allows, shared with concurrent readers of the same bytes.
    pub fn read_pages<'a>(
        &'a self,
        ids: &'a [PageId],
    ) -> impl std::future::Future<Output = Result<Vec<Bytes>>> + Send + 'a {
        self.read_path.read_pages(ids, None)
    }

    /// [`Self::read_pages`], counting in `tally` which tier served each page.
    pub fn read_pages_tallied<'a>(
        &'a self,
        ids: &'a [PageId],
        tally: &'a TierTally,
    ) -> impl std::future::Future<Output = Result<Vec<Bytes>>> + Send + 'a {
        self.read_path.read_pages(ids, Some(tally))
    }

    /// Every checkpoint in the store, by tenant then generation.
    pub async fn checkpoints(&self) -> Result<Vec<CheckpointRef>> {
        let mut out: Vec<CheckpointRef> = self
            .cold()
            .list("manifests/")
            .await?
            .iter()
            .filter_map(|o| CheckpointRef::from_object_key(&o.key))
            .collect();
        out.sort_by(|a, b| (&a.tenant, a.generation).cmp(&(&b.tenant, b.generation)));
        Ok(out)
    }

    /// The newest checkpoint of `tenant`, if it has one.
    pub async fn latest(&self, tenant: &str) -> Result<Option<CheckpointRef>> {
        Ok(self
            .checkpoints()
            .await?
            .into_iter()
            .filter(|c| c.tenant == tenant)
            .max_by_key(|c| c.generation))
    }

    /// Finds a checkpoint by its id or a unique prefix of it (at least 6 hex digits).
    pub async fn resolve(&self, id: &str) -> Result<CheckpointRef> {
        if id.len() < 6 {
            return Err(Error::CheckpointNotFound(id.to_string()));
        }
        let mut matches = self
            .checkpoints()
            .await?
            .into_iter()
            .filter(|c| c.id.as_str().starts_with(id));
        match (matches.next(), matches.next()) {
            (Some(c), None) => Ok(c),
            (None, _) => Err(Error::CheckpointNotFound(id.to_string())),
            (Some(_), Some(_)) => Err(Error::AmbiguousCheckpoint(id.to_string())),
        }
    }

    /// Reads and checks a manifest: its bytes must hash to its id. A delta is decoded against its
    /// base (one more read, unless this process has it already): at most two reads, from the
    /// local disk for a checkpoint this machine committed ([`crate::kept_manifests`]).
    pub async fn manifest(&self, checkpoint: &CheckpointRef) -> Result<Manifest> {
        self.manifest_from(checkpoint, ManifestSource::Kept).await
    }

    /// [`Self::manifest`], the checkpoint's own bytes read from the cold tier whatever this
    /// machine keeps (what `verify` checks).
    pub(crate) async fn manifest_in_cold(&self, checkpoint: &CheckpointRef) -> Result<Manifest> {
        self.manifest_from(checkpoint, ManifestSource::Cold).await
    }

    async fn manifest_from(
        &self,
        checkpoint: &CheckpointRef,
        source: ManifestSource,
    ) -> Result<Manifest> {
        let bytes = self.manifest_bytes(checkpoint, source).await?;
        let base_ref = Manifest::base_of(&bytes)?;
        let base = match &base_ref {
            None => None,
            Some(b) => Some(self.base_manifest(checkpoint, b).await?),
        };
        let manifest = Manifest::decode_with_base(&bytes, base.as_deref())?;
        if base_ref.is_none() {
            // A full manifest: the base of the tenant's next deltas, likely.
            self.manifests
                .put_full(checkpoint.id.clone(), Arc::new(manifest.clone()));
        }
        self.manifests.put_info(
            checkpoint.id.clone(),
            ManifestInfo {
                created_ms: manifest.created_ms,
                base: base_ref,
            },
        );
        Ok(manifest)
    }

    /// When a checkpoint was made and the base it is written against: from memory when this
    /// process has read or written it, else read.
    pub async fn manifest_info(&self, checkpoint: &CheckpointRef) -> Result<ManifestInfo> {
        if let Some(info) = self.manifests.info(&checkpoint.id) {
            return Ok(info);
        }
        self.manifest(checkpoint).await?;
        self.manifests
            .info(&checkpoint.id)
            .ok_or_else(|| Error::CheckpointNotFound(checkpoint.id.to_string()))
    }

    /// The full manifest `base`, which `of` is written against (a full manifest itself: reads
    /// stay bounded).
    pub(crate) async fn base_manifest(
        &self,
        of: &CheckpointRef,
        base: &CheckpointRef,
    ) -> Result<Arc<Manifest>> {
        if let Some(m) = self.manifests.full(&base.id) {
            return Ok(m);
        }
        let bytes = self
            .manifest_bytes(base, ManifestSource::Kept)
            .await
            .map_err(|e| match e {
                Error::ObjectNotFound(_) => Error::BadManifest(format!(
                    "checkpoint {} is written against generation {} ({}), which is gone",
                    of.id, base.generation, base.id
                )),
                e => e,
            })?;
        if Manifest::base_of(&bytes)?.is_some() {
            return Err(Error::BadManifest(format!(
                "the base {} of checkpoint {} is itself a delta",
                base.id, of.id
            )));
        }
        let manifest = Arc::new(Manifest::decode(&bytes)?);
        self.manifests
            .put_full(base.id.clone(), Arc::clone(&manifest));
        Ok(manifest)
    }

    /// A manifest's bytes, checked against its id.
    async fn manifest_bytes(
        &self,
        checkpoint: &CheckpointRef,
        source: ManifestSource,
    ) -> Result<Vec<u8>> {
        let key = checkpoint.object_key();
        let kept = match (source, &self.kept_manifests) {
            (ManifestSource::Kept, Some(kept)) => kept.load(&checkpoint.id),
            _ => None,
        };
        if let Some(bytes) = kept {
            crate::manifest::version_in(&key, &bytes)?;
            return Ok(bytes);
        }
        let bytes = self.cold().get(&key).await?;
        // A newer version first: refused as such, by name, whatever else is wrong with it.
        crate::manifest::version_in(&key, &bytes)?;
        if CheckpointId::of_manifest_bytes(&bytes) != checkpoint.id {
            return Err(Error::CorruptObject {
                what: "manifest",
                object: key,
                reason: "its bytes do not hash to its id".into(),
            });
        }
        Ok(bytes)
    }

    /// Keeps on the local disk the manifest of a checkpoint this process just committed.
    pub(crate) fn keep_manifest(&self, id: &CheckpointId, bytes: &[u8]) {
        if let Some(kept) = &self.kept_manifests {
            kept.keep(id, bytes);
        }
    }

    /// Deletes the kept manifest of a checkpoint this process dropped.
    pub(crate) fn forget_kept_manifest(&self, id: &CheckpointId) {
        if let Some(kept) = &self.kept_manifests {
            kept.forget(id);
        }
    }

    /// Empties the memory tier and forgets the bytes of ended GETs (for cold-start
    /// measurements), after any caching in the local
    /// tier still under way: emptied before, the pages still queued for it would be on this
    /// machine in neither tier, and the next read of them would go to the cold tier.
    pub fn evict_hot(&self) {
        if let Some(f) = self.read_path.filler() {
            f.wait_idle();
        }
        self.hot().clear();
        self.read_path.forget_ended_flights();
    }

    /// Drops the memory tier's pages nobody read for `[hot] ttl_ms` (nothing when that is 0);
    /// how many went. Blocking: one pass over the tier under its lock, every few seconds. Also
    /// drops the bytes of ended GETs kept past their time (otherwise dropped only at the next
    /// cold read: on a host whose tenants all sleep, up to 64 MiB held for nobody).
    pub fn drop_unread_hot(&self) -> usize {
        self.read_path.forget_expired_flights();
        match self.config.hot.ttl_ms {
            0 => 0,
            ms => self.hot().drop_unread(std::time::Duration::from_millis(ms)),
        }
    }

    /// Whether pages this process ingested or fetched are still queued for the local tier (until
    /// they are cached, a read of one that the memory tier no longer holds goes to the cold tier).
    pub fn caching_locally(&self) -> bool {
        self.read_path.filler().is_some_and(|f| f.filling())
    }

    /// Waits until the local tier holds every page of every pack this process ingested and
    /// every page it fetched: an ingest returns at its commit, a read once its pages are in
    /// memory, and both cache their new pages in the local tier behind them.
    pub async fn local_settled(&self) -> Result<()> {
        self.wait_for_filler(local::Filler::wait_idle).await
    }

    /// Waits until the local tier holds every page of every pack this process ingested (not
    /// necessarily the pages its reads fetched, which are in memory): what a swap-in right
    /// behind a swap-out would otherwise read from the cold tier.
    pub async fn ingests_cached(&self) -> Result<()> {
        self.wait_for_filler(local::Filler::wait_packs).await
    }

    async fn wait_for_filler(&self, wait: fn(&local::Filler)) -> Result<()> {
        match self.read_path.filler().cloned() {
            Some(filler) => {
                crate::blocking::blocking(move || {
                    wait(&filler);
                    Ok(())
                })
                .await
            }
            None => Ok(()),
        }
    }

    /// Empties the local tier (for cold-start measurements), after any caching still under way.
    /// The kept manifests stay, as a worker's memory of its tenants' manifests does: they are
    /// what a host keeps of its own checkpoints, not pages.
    pub fn evict_local(&self) -> Result<()> {
        if let Some(f) = self.read_path.filler() {
            f.wait_idle();
        }
        self.drop_whole_images();
        match self.local() {
            Some(l) => l.clear(),
            None => Ok(()),
        }
    }
}

/// Where a manifest's own bytes are read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ManifestSource {
    /// The copy kept on the local disk when there is a sound one, else the cold tier.
    Kept,
    /// The cold tier, whatever this machine keeps.
    Cold,
}
