//! The page store: opens the tiers, reads pages through them, and serves whole checkpoints.

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use futures::stream::{self, StreamExt};
use tracing::{debug, info, warn};

use crate::catalog::Catalog;
use crate::codec::decode_verified;
use crate::cold::ColdTier;
use crate::config::StoreConfig;
use crate::error::{Error, Result};
use crate::hot::HotTier;
use crate::index_cache::IndexCache;
use crate::local::{self, LocalTier};
use crate::manifest::{CheckpointId, CheckpointRef, FileContent, FileEntry, Manifest};
use crate::pack::{self, PackId, FOOTER_LEN};
use crate::page::{PageId, PageSpan, PAGE_SIZE};
use crate::read::Flights;
use crate::tier::Tier;

/// Hits and misses of the tiers above cold, and pages read from cold.
#[derive(Debug, Default)]
pub struct TierCounters {
    pub local_hits: AtomicU64,
    pub local_misses: AtomicU64,
    pub local_corrupt: AtomicU64,
    /// Pages decoded from cold-tier reads.
    pub cold_pages: AtomicU64,
    /// Ranged GETs sent for page reads (after coalescing and single flight).
    pub cold_requests: AtomicU64,
    /// Reads that joined a cold GET already in flight instead of sending their own.
    pub flight_joins: AtomicU64,
}

/// Pages one materialize asks of [`PageStore::read_pages`] at a time (4 MiB, so that a batch of
/// neighbouring pages becomes one ranged GET of up to [`crate::read::MAX_RANGE`]).
const MATERIALIZE_BATCH: usize = 1024;
/// Pack indexes read at once while the catalog is refreshed (two small GETs each).
const INDEX_READS_IN_FLIGHT: usize = 32;
/// Batches one materialize keeps in flight (16 MiB of pages in memory at most).
const MATERIALIZE_CONCURRENCY: usize = 4;

pub struct PageStore {
    pub(crate) cold: ColdTier,
    pub(crate) local: Option<std::sync::Arc<dyn LocalTier>>,
    /// Caches ingested packs in the local tier behind the commit (write-behind).
    pub(crate) filler: Option<std::sync::Arc<local::Filler>>,
    pub(crate) hot: HotTier,
    pub(crate) flights: Flights,
    pub(crate) locality_flights: crate::locality::LocalityFlights,
    pub(crate) catalog: Catalog,
    /// Pack indexes kept on local disk, so that an open reads only those of new packs.
    index_cache: Option<IndexCache>,
    pub(crate) config: StoreConfig,
    /// Packs whose index is in the catalog.
    known_packs: Mutex<HashSet<PackId>>,
    pub counters: TierCounters,
}

impl PageStore {
    /// Opens the store described by `config` and loads the catalog from the cold tier.
    pub async fn open(config: &StoreConfig) -> Result<PageStore> {
        let cold = ColdTier::open(&config.cold)?;
        let local: Option<std::sync::Arc<dyn LocalTier>> = if config.local.enabled {
            match local::open(&config.local)? {
                Some(t) => Some(std::sync::Arc::from(t)),
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
        let index_cache = config.local.index_cache.as_deref().and_then(|dir| {
            IndexCache::open(dir)
                .inspect_err(|e| warn!(error = %e, "no pack index cache"))
                .ok()
        });
        let filler = local
            .clone()
            .map(|l| std::sync::Arc::new(local::Filler::start(l)));
        let store = PageStore {
            cold,
            local,
            filler,
            hot: HotTier::new(config.hot.max_bytes),
            flights: Flights::default(),
            locality_flights: Default::default(),
            catalog: Catalog::default(),
            index_cache,
            config: config.clone(),
            known_packs: Mutex::new(HashSet::new()),
            counters: TierCounters::default(),
        };
        store.refresh_catalog().await?;
        info!(cold = %store.cold.describe(), pages = store.catalog.len(), "page store open");
        Ok(store)
    }

    pub fn cold(&self) -> &ColdTier {
        &self.cold
    }

    pub fn local(&self) -> Option<&dyn LocalTier> {
        self.local.as_deref()
    }

    pub fn hot(&self) -> &HotTier {
        &self.hot
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// Reads the index of every pack not yet in the catalog, and forgets packs that are gone (a gc
    /// elsewhere deleted them). Returns how many packs were added.
    pub async fn refresh_catalog(&self) -> Result<usize> {
        let listing = self.cold.list("packs/").await?;
        let listed: HashSet<PackId> = listing
            .iter()
            .filter_map(|o| PackId::from_object_key(&o.key))
            .collect();
        if let Some(cache) = &self.index_cache {
            cache.retain(&listed);
        }
        let gone: HashSet<PackId> = {
            let mut known = self.known_packs.lock().unwrap_or_else(|p| p.into_inner());
            let gone = known.difference(&listed).copied().collect();
            known.retain(|p| listed.contains(p));
            gone
        };
        if !gone.is_empty() {
            self.catalog.remove_packs(&gone);
            // Pages that had a second copy in a surviving pack get it back below.
            self.known_packs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clear();
        }
        // Each unknown pack costs two small GETs (footer, index): read many at once, or a
        // worker's first open of a store of a few hundred packs behind a 20 ms link takes
        // tens of seconds (the bench's fourth app did, and its worker "did not start").
        let unknown: Vec<(PackId, _)> = listing
            .into_iter()
            .filter_map(|obj| PackId::from_object_key(&obj.key).map(|p| (p, obj)))
            .filter(|(pack, _)| !self.pack_known(pack))
            .collect();
        let mut indexes = stream::iter(unknown)
            .map(|(pack, obj)| async move {
                let entries = self.read_pack_index(&obj.key, obj.size).await?;
                Ok::<_, Error>((pack, entries))
            })
            .buffer_unordered(INDEX_READS_IN_FLIGHT);
        let mut added = 0;
        while let Some(read) = indexes.next().await {
            let (pack, entries) = read?;
            self.catalog.add_pack(pack, &entries);
            self.mark_pack_known(pack);
            added += 1;
        }
        Ok(added)
    }

    pub(crate) fn pack_known(&self, pack: &PackId) -> bool {
        self.known_packs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(pack)
    }

    /// Forgets a pack this process deleted.
    pub(crate) fn forget_pack(&self, pack: &PackId) {
        self.known_packs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(pack);
        if let Some(cache) = &self.index_cache {
            cache.remove(pack);
        }
    }

    /// Marks a pack this process just uploaded (`len` bytes; its pages already in the catalog)
    /// known, and caches its index.
    pub(crate) fn pack_written(&self, pack: PackId, len: u64, entries: &[pack::PackEntry]) {
        self.mark_pack_known(pack);
        if let Some(cache) = &self.index_cache {
            cache.store_entries(&pack, len, entries);
        }
    }

    pub(crate) fn mark_pack_known(&self, pack: PackId) {
        self.known_packs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(pack);
    }

    /// The index of the pack at `key` (`size` bytes): from the index cache, else from the pack's
    /// tail in the cold tier (then cached).
    pub(crate) async fn read_pack_index(
        &self,
        key: &str,
        size: u64,
    ) -> Result<Vec<pack::PackEntry>> {
        let pack = PackId::from_object_key(key);
        if let (Some(cache), Some(pack)) = (&self.index_cache, &pack) {
            if let Some(entries) = cache.load(pack, size) {
                return Ok(entries);
            }
        }
        if size < (pack::HEADER_LEN + FOOTER_LEN) as u64 {
            return Err(Error::CorruptObject {
                what: "pack",
                object: key.to_string(),
                reason: format!("only {size} bytes"),
            });
        }
        let tail = self
            .cold
            .get_range(key, size - FOOTER_LEN as u64, FOOTER_LEN as u64)
            .await?;
        let footer = pack::parse_footer(key, &tail, size)?;
        let index = self
            .cold
            .get_range(key, footer.index_offset, footer.index_len() as u64)
            .await?;
        let entries = pack::parse_index(key, &footer, &index)?;
        if let (Some(cache), Some(pack)) = (&self.index_cache, &pack) {
            cache.store(pack, size, &tail, &index);
        }
        Ok(entries)
    }

    /// Every checkpoint in the store, by tenant then generation.
    pub async fn checkpoints(&self) -> Result<Vec<CheckpointRef>> {
        let mut out: Vec<CheckpointRef> = self
            .cold
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

    /// Reads and checks a manifest: its bytes must hash to its id.
    pub async fn manifest(&self, checkpoint: &CheckpointRef) -> Result<Manifest> {
        let key = checkpoint.object_key();
        let bytes = self.cold.get(&key).await?;
        if CheckpointId::of_manifest_bytes(&bytes) != checkpoint.id {
            return Err(Error::CorruptObject {
                what: "manifest",
                object: key,
                reason: "its bytes do not hash to its id".into(),
            });
        }
        Manifest::decode(&bytes)
    }

    pub(crate) fn read_local(&self, id: &PageId) -> Option<Vec<u8>> {
        let local = self.local.as_ref()?;
        match local.get(id) {
            Ok(Some((codec, data))) => {
                match decode_verified(id, codec, &data, Tier::Local, "local") {
                    Ok(page) => {
                        self.counters.local_hits.fetch_add(1, Ordering::Relaxed);
                        return Some(page);
                    }
                    Err(e) => {
                        // A cached page that fails its hash is a miss: drop it, read it from cold.
                        warn!(error = %e, "dropping corrupt page from the local tier");
                        self.counters.local_corrupt.fetch_add(1, Ordering::Relaxed);
                        let _ = local.remove(id);
                    }
                }
            }
            Ok(None) => {}
            Err(e) => warn!(page = %id, error = %e, "local tier read failed"),
        }
        self.counters.local_misses.fetch_add(1, Ordering::Relaxed);
        None
    }

    /// Reads `len` bytes at `offset` of one file of a checkpoint (short at the end of the file).
    pub fn read_file_at<'a>(
        &'a self,
        file: &'a FileEntry,
        offset: u64,
        len: usize,
    ) -> impl std::future::Future<Output = Result<Vec<u8>>> + Send + 'a {
        self.read_file_at_counted(file, offset, len, None)
    }

    /// [`Self::read_file_at`], counting in `tally` which tier served each page.
    pub fn read_file_at_tallied<'a>(
        &'a self,
        file: &'a FileEntry,
        offset: u64,
        len: usize,
        tally: &'a crate::tally::TierTally,
    ) -> impl std::future::Future<Output = Result<Vec<u8>>> + Send + 'a {
        self.read_file_at_counted(file, offset, len, Some(tally))
    }

    async fn read_file_at_counted(
        &self,
        file: &FileEntry,
        offset: u64,
        len: usize,
        tally: Option<&crate::tally::TierTally>,
    ) -> Result<Vec<u8>> {
        let Some(span) = PageSpan::within(offset, len as u64, file.size) else {
            return Ok(Vec::new());
        };
        match &file.content {
            FileContent::Inline(data) => {
                Ok(data[span.start() as usize..span.end() as usize].to_vec())
            }
            FileContent::Paged(pages) => {
                let ids = pages.get(span.pages()).ok_or_else(|| {
                    Error::BadManifest(format!(
                        "file {} is {} bytes but lists {} pages",
                        file.name,
                        file.size,
                        pages.len()
                    ))
                })?;
                let loaded = self.read_pages_counted(ids, tally).await?;
                let mut out = Vec::with_capacity(span.size() as usize);
                for (slice, page) in span.slices().zip(&loaded) {
                    out.extend_from_slice(&page[slice.bytes]);
                }
                Ok(out)
            }
        }
    }

    /// Writes the checkpoint's files into `dir` (created if missing), byte-identical to what was
    /// ingested.
    pub async fn materialize(&self, checkpoint: &CheckpointRef, dir: &Path) -> Result<Manifest> {
        use std::io::Write;
        use std::os::unix::fs::PermissionsExt;

        let manifest = self.manifest(checkpoint).await?;
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        for file in &manifest.files {
            let path = dir.join(&file.name);
            let mut out = std::fs::File::create(&path).map_err(|e| Error::io(&path, e))?;
            match &file.content {
                FileContent::Inline(data) => {
                    out.write_all(data).map_err(|e| Error::io(&path, e))?
                }
                FileContent::Paged(pages) => {
                    let batches: Vec<_> = pages
                        .chunks(MATERIALIZE_BATCH)
                        .map(|ids| self.read_pages(ids))
                        .collect();
                    let mut batches = stream::iter(batches).buffered(MATERIALIZE_CONCURRENCY);
                    let mut left = file.size;
                    while let Some(batch) = batches.next().await {
                        for page in batch? {
                            let n = left.min(PAGE_SIZE as u64) as usize;
                            out.write_all(&page[..n]).map_err(|e| Error::io(&path, e))?;
                            left -= n as u64;
                        }
                    }
                }
            }
            out.set_permissions(std::fs::Permissions::from_mode(file.mode & 0o7777))
                .map_err(|e| Error::io(&path, e))?;
            debug!(file = %file.name, bytes = file.size, "materialized");
        }
        Ok(manifest)
    }

    /// Empties the memory tier (for cold-start measurements), after any caching in the local
    /// tier still under way: emptied before, the pages still queued for it would be on this
    /// machine in neither tier, and the next read of them would go to the cold tier.
    pub fn evict_hot(&self) {
        if let Some(f) = &self.filler {
            f.wait_idle();
        }
        self.hot.clear();
    }

    /// Waits until the local tier holds every page of every pack this process ingested: an
    /// ingest returns at its commit, and caches its new pages in the local tier behind it.
    pub async fn local_settled(&self) -> Result<()> {
        match self.filler.clone() {
            Some(f) => {
                crate::blocking::blocking(move || {
                    f.wait_idle();
                    Ok(())
                })
                .await
            }
            None => Ok(()),
        }
    }

    /// Empties the local tier (for cold-start measurements), after any caching still under way.
    pub fn evict_local(&self) -> Result<()> {
        if let Some(f) = &self.filler {
            f.wait_idle();
        }
        match &self.local {
            Some(l) => l.clear(),
            None => Ok(()),
        }
    }
}
