//! The catalog kept in step with the cold tier: which packs it was built from, their indexes
//! (cached on local disk), and the refresh that reads the indexes of packs it does not know yet.
//!
//! A reader refreshes it when a page is not found (another process may have ingested since) or a
//! pack is gone (a gc elsewhere repacked it); ingest, gc and stats refresh it before they start.

use std::collections::HashSet;
use std::sync::Mutex;

use futures::stream::{self, StreamExt};

use crate::catalog::Catalog;
use crate::cold::ColdTier;
use crate::error::{Error, Result};
use crate::index_cache::IndexCache;
use crate::pack::{self, PackEntry, PackId, FOOTER_LEN};

/// Pack indexes read at once while the catalog is refreshed (two small GETs each).
const INDEX_READS_IN_FLIGHT: usize = 32;

/// The catalog and the packs whose indexes are in it.
pub(crate) struct PackCatalog {
    catalog: Catalog,
    /// Packs whose index is in the catalog.
    known: Mutex<HashSet<PackId>>,
    /// Pack indexes kept on local disk, so that an open reads only those of new packs.
    index_cache: Option<IndexCache>,
}

/// Listings a catalog refresh makes before a pack that keeps vanishing is an error.
const REFRESH_ATTEMPTS: u32 = 4;

impl PackCatalog {
    pub(crate) fn new(index_cache: Option<IndexCache>) -> PackCatalog {
        PackCatalog {
            catalog: Catalog::default(),
            known: Mutex::new(HashSet::new()),
            index_cache,
        }
    }

    pub(crate) fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    fn known(&self) -> std::sync::MutexGuard<'_, HashSet<PackId>> {
        self.known.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads the index of every pack not yet in the catalog, and forgets packs that are gone (a gc
    /// elsewhere deleted them). Returns how many packs were added. A pack listed but gone before
    /// its index is read (recompression replaced it meanwhile, beside this ingest or read) means
    /// a new listing: the pack replacing it was written before it went.
    pub(crate) async fn refresh(&self, cold: &ColdTier) -> Result<usize> {
        let mut attempt = 1;
        loop {
            // Boxed: the refresh is awaited deep inside every read's future, and its own future
            // nested there too made the NBD server's future type too deep to lay out.
            match Box::pin(self.refresh_once(cold)).await {
                Err(e) if e.is_not_found() && attempt < REFRESH_ATTEMPTS => {
                    attempt += 1;
                    tracing::debug!(error = %e, "a pack went while the catalog was refreshed; listing again");
                }
                other => return other,
            }
        }
    }

    async fn refresh_once(&self, cold: &ColdTier) -> Result<usize> {
        let listing = cold.list("packs/").await?;
        let listed: HashSet<PackId> = listing
            .iter()
            .filter_map(|o| PackId::from_object_key(&o.key))
            .collect();
        if let Some(cache) = &self.index_cache {
            cache.retain(&listed);
        }
        let gone: HashSet<PackId> = {
            let mut known = self.known();
            let gone = known.difference(&listed).copied().collect();
            known.retain(|p| listed.contains(p));
            gone
        };
        if !gone.is_empty() {
            self.catalog.remove_packs(&gone);
            // Pages that had a second copy in a surviving pack get it back below.
            self.known().clear();
        }
        // Each unknown pack costs two small GETs (footer, index): read many at once, or a
        // worker's first open of a store of a few hundred packs behind a 20 ms link takes
        // tens of seconds (the bench's fourth app did, and its worker "did not start").
        let unknown: Vec<(PackId, _)> = listing
            .into_iter()
            .filter_map(|obj| PackId::from_object_key(&obj.key).map(|p| (p, obj)))
            .filter(|(pack, _)| !self.is_known(pack))
            .collect();
        let mut indexes = stream::iter(unknown)
            .map(|(pack, obj)| async move {
                let entries = self.read_index(cold, &obj.key, obj.size).await?;
                Ok::<_, Error>((pack, entries))
            })
            .buffer_unordered(INDEX_READS_IN_FLIGHT);
        let mut added = 0;
        while let Some(read) = indexes.next().await {
            let (pack, entries) = read?;
            self.catalog.add_pack(pack, &entries);
            self.mark_known(pack);
            added += 1;
        }
        Ok(added)
    }

    pub(crate) fn is_known(&self, pack: &PackId) -> bool {
        self.known().contains(pack)
    }

    pub(crate) fn mark_known(&self, pack: PackId) {
        self.known().insert(pack);
    }

    /// Forgets a pack this process deleted.
    pub(crate) fn forget(&self, pack: &PackId) {
        self.known().remove(pack);
        if let Some(cache) = &self.index_cache {
            cache.remove(pack);
        }
    }

    /// Marks a pack this process just uploaded (`len` bytes; its pages already in the catalog)
    /// known, and caches its index.
    pub(crate) fn written(&self, pack: PackId, len: u64, entries: &[PackEntry]) {
        self.mark_known(pack);
        if let Some(cache) = &self.index_cache {
            cache.store_entries(&pack, len, entries);
        }
    }

    /// The index of the pack at `key` (`size` bytes): from the index cache, else from the pack's
    /// tail in the cold tier (then cached).
    pub(crate) async fn read_index(
        &self,
        cold: &ColdTier,
        key: &str,
        size: u64,
    ) -> Result<Vec<PackEntry>> {
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
        let tail = cold
            .get_range(key, size - FOOTER_LEN as u64, FOOTER_LEN as u64)
            .await?;
        let footer = pack::parse_footer(key, &tail, size)?;
        let index = cold
            .get_range(key, footer.index_offset, footer.index_len() as u64)
            .await?;
        let entries = pack::parse_index(key, &footer, &index)?;
        if let (Some(cache), Some(pack)) = (&self.index_cache, &pack) {
            cache.store(pack, size, &tail, &index);
        }
        Ok(entries)
    }
}
