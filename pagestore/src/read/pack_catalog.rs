//! The catalog kept in step with the cold tier: which packs it was built from, their indexes
//! (cached on local disk), and the refresh that reads the indexes of packs it does not know yet.
//!
//! A reader refreshes it when a page is not found (another process may have ingested since) or a
//! pack is gone (a gc elsewhere repacked it); ingest, gc and stats refresh it before they start.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use futures::stream::{self, StreamExt};

use crate::catalog::Catalog;
use crate::cold::{ColdTier, ObjectMeta};
use crate::error::{Error, Result};
use crate::index_cache::IndexCache;
use crate::pack::{self, PackEntry, PackId, FOOTER_LEN};

/// Pack indexes read at once while the catalog is refreshed (two small GETs each).
const INDEX_READS_IN_FLIGHT: usize = 32;

/// The catalog and the packs whose indexes are in it.
pub(crate) struct PackCatalog {
    catalog: Catalog,
    /// Packs whose index is in the catalog, each with the listing epoch in which it became
    /// known.
    known: Mutex<HashMap<PackId, u64>>,
    /// Counts the listings begun: a pack this process wrote after a listing began is not in
    /// that listing, and is not gone.
    epoch: AtomicU64,
    /// Pack indexes kept on local disk, so that an open reads only those of new packs.
    index_cache: Option<IndexCache>,
}

/// Listings a catalog refresh makes before a pack that keeps vanishing is an error.
const REFRESH_ATTEMPTS: u32 = 6;

/// The pause before the second listing; it doubles for each one after (10 + 20 + ... + 160 ms in
/// all): a recompression deletes the packs it replaced one after another, and listing again at
/// once lands in the middle of that.
const FIRST_RELISTING_PAUSE: Duration = Duration::from_millis(10);

/// What one listing added to the catalog.
#[derive(Default)]
struct ListingRead {
    added: usize,
    /// Packs listed whose index was gone when it was read.
    vanished: Vec<PackId>,
}

impl PackCatalog {
    pub(crate) fn new(index_cache: Option<IndexCache>) -> PackCatalog {
        PackCatalog {
            catalog: Catalog::default(),
            known: Mutex::new(HashMap::new()),
            epoch: AtomicU64::new(0),
            index_cache,
        }
    }

    pub(crate) fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    fn known(&self) -> std::sync::MutexGuard<'_, HashMap<PackId, u64>> {
        self.known.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads the index of every pack not yet in the catalog, and forgets packs that are gone (a gc
    /// elsewhere deleted them). Returns how many packs were added.
    ///
    /// A pack listed but gone before its index is read (recompression or a gc replaced it
    /// meanwhile, beside this open, ingest or read) is skipped, and the packs are listed again
    /// after a pause: whatever replaced it was written before it went, so a later listing has it.
    /// Only packs that keep vanishing through every listing make the refresh fail.
    pub(crate) async fn refresh(&self, cold: &ColdTier) -> Result<usize> {
        Ok(self.refresh_listed(cold).await?.0)
    }

    /// [`Self::refresh`], also returning the listing of the packs the catalog now matches.
    pub(crate) async fn refresh_listed(&self, cold: &ColdTier) -> Result<(usize, Vec<ObjectMeta>)> {
        let mut added = 0;
        let mut pause = FIRST_RELISTING_PAUSE;
        let mut attempt = 1;
        loop {
            // Boxed: the refresh is awaited deep inside every read's future, and its own future
            // nested there too made the NBD server's future type too deep to lay out.
            let epoch = self.begin_listing();
            let listing = Box::pin(cold.list("packs/")).await?;
            let pass = Box::pin(self.read_listing(cold, listing.clone(), epoch)).await?;
            added += pass.added;
            let Some(vanished) = pass.vanished.first() else {
                return Ok((added, listing));
            };
            if attempt == REFRESH_ATTEMPTS {
                return Err(Error::ObjectNotFound(vanished.object_key()));
            }
            tracing::debug!(
                vanished = pass.vanished.len(),
                attempt,
                "packs went while the catalog was refreshed; listing again"
            );
            tokio::time::sleep(pause).await;
            pause *= 2;
            attempt += 1;
        }
    }

    /// Marks the start of a listing; returns its epoch.
    fn begin_listing(&self) -> u64 {
        self.epoch.fetch_add(1, Ordering::SeqCst)
    }

    /// Brings the catalog in step with one listing of the packs, begun at `epoch`: forgets the
    /// packs it no longer holds and reads the indexes of those it does not know yet. A pack this
    /// process wrote since the listing began (an ingest or a recompression beside this refresh)
    /// is not in it and is kept: forgetting it took its pages out of the catalog, and the commit
    /// of the ingest that wrote it then failed ("page ... is referenced but not present in any
    /// tier", 20 swap-outs of the 1000-tenant density bench).
    async fn read_listing(
        &self,
        cold: &ColdTier,
        listing: Vec<ObjectMeta>,
        epoch: u64,
    ) -> Result<ListingRead> {
        let listed: HashSet<PackId> = listing
            .iter()
            .filter_map(|o| PackId::from_object_key(&o.key))
            .collect();
        if let Some(cache) = &self.index_cache {
            cache.retain(&listed);
        }
        let gone: HashSet<PackId> = {
            let mut known = self.known();
            let gone: HashSet<PackId> = known
                .iter()
                .filter(|(p, &since)| since <= epoch && !listed.contains(*p))
                .map(|(p, _)| *p)
                .collect();
            known.retain(|p, _| !gone.contains(p));
            gone
        };
        if !gone.is_empty() {
            self.catalog.remove_packs(&gone);
            // Pages that had a second copy in a surviving pack get it back below (those of
            // packs written since the listing began were not removed).
            self.known().retain(|_, &mut since| since > epoch);
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
                let entries = self.read_index(cold, &obj.key, obj.size).await;
                (pack, entries)
            })
            .buffer_unordered(INDEX_READS_IN_FLIGHT);
        let mut read = ListingRead::default();
        while let Some((pack, entries)) = indexes.next().await {
            match entries {
                Ok(entries) => {
                    self.catalog.add_pack(pack, &entries);
                    self.mark_known(pack);
                    read.added += 1;
                }
                Err(e) if e.is_not_found() => read.vanished.push(pack),
                Err(e) => return Err(e),
            }
        }
        Ok(read)
    }

    pub(crate) fn is_known(&self, pack: &PackId) -> bool {
        self.known().contains_key(pack)
    }

    pub(crate) fn mark_known(&self, pack: PackId) {
        let now = self.epoch.load(Ordering::SeqCst);
        self.known().insert(pack, now);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec;
    use crate::config::ColdConfig;
    use crate::page::{PageId, PAGE_SIZE};

    /// A pack of one page of `byte`s, stored in `cold`; returns its listing entry.
    async fn stored_pack(cold: &ColdTier, byte: u8) -> ObjectMeta {
        let page = vec![byte; PAGE_SIZE];
        let mut b = pack::PackBuilder::new();
        let (c, enc) = codec::encode(&page);
        b.push(PageId::of(&page), c, &enc);
        let (id, data, _) = b.finish();
        let meta = ObjectMeta {
            key: id.object_key(),
            size: data.len() as u64,
        };
        cold.put(&meta.key, data).await.unwrap();
        meta
    }

    #[tokio::test]
    async fn a_pack_gone_between_listing_and_index_read_is_skipped_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let cold = ColdTier::open(&ColdConfig::Dir {
            path: dir.path().to_path_buf(),
        })
        .unwrap();
        let kept = stored_pack(&cold, 1).await;
        let replaced = stored_pack(&cold, 2).await;
        let listing = vec![kept.clone(), replaced.clone()];
        cold.delete(&replaced.key).await.unwrap();

        let packs = PackCatalog::new(None);
        let epoch = packs.begin_listing();
        let read = packs.read_listing(&cold, listing, epoch).await.unwrap();
        assert_eq!(read.added, 1);
        let gone = PackId::from_object_key(&replaced.key).unwrap();
        assert_eq!(read.vanished, vec![gone]);
        assert!(packs.is_known(&PackId::from_object_key(&kept.key).unwrap()));
        assert!(!packs.is_known(&gone));
        // A refresh lists again and finds the store settled.
        assert_eq!(packs.refresh(&cold).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn a_pack_written_while_a_listing_was_taken_is_not_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let cold = ColdTier::open(&ColdConfig::Dir {
            path: dir.path().to_path_buf(),
        })
        .unwrap();
        let old = stored_pack(&cold, 1).await;
        let packs = PackCatalog::new(None);
        packs.refresh(&cold).await.unwrap();
        // The old pack goes (a recompression elsewhere), so the refresh forgets something; it
        // lists the packs, and meanwhile this process uploads a new one (an ingest).
        cold.delete(&old.key).await.unwrap();
        let epoch = packs.begin_listing();
        let listing = cold.list("packs/").await.unwrap();
        let new = stored_pack(&cold, 2).await;
        let new_id = PackId::from_object_key(&new.key).unwrap();
        let page = vec![2u8; PAGE_SIZE];
        let entries =
            pack::parse_pack(&new.key, &std::fs::read(dir.path().join(&new.key)).unwrap()).unwrap();
        packs.catalog().add_pack(new_id, &entries);
        packs.written(new_id, new.size, &entries);
        packs.read_listing(&cold, listing, epoch).await.unwrap();
        assert!(
            packs.is_known(&new_id),
            "written after the listing began: kept"
        );
        assert!(
            packs.catalog().contains(&PageId::of(&page)),
            "its pages are still located"
        );
        let old_id = PackId::from_object_key(&old.key).unwrap();
        assert!(!packs.is_known(&old_id));
    }
}
