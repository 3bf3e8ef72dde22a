//! Recompression: ingest's packs, whose pages are lz4-encoded one by one (fast to write: swap-out
//! speed rules there), rewritten as dense packs of zstd frames ([`crate::frame`]), the encoding
//! the cold tier keeps at rest.
//!
//! Two ways in. [`PageStore::recompress`] runs beside ingests (it holds the recompress lock, which
//! ingests share and a gc does not) and so keeps *every* page of a pack it rewrites: an ingest in flight may
//! be deduplicating against any of them. A worker runs it in the background after each swap-out
//! ([`PageStore::recompress_behind`]). gc, which holds the exclusive lock, recompresses as it
//! sweeps and keeps only live pages ([`crate::gc`]); so `pico store gc` leaves nothing pending.
//! Either way the dense pack is uploaded before the pack it replaces is deleted, as in gc's
//! repacking, so a crash leaves at worst two copies of some pages (the next gc keeps one).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use tracing::{info, info_span, warn, Instrument};

use crate::blocking::{self, blocking};
use crate::codec::PageDecoder;
use crate::error::{Error, Result};
use crate::frame::{FrameEncoder, FRAME_LEVEL, FRAME_PAGES};
use crate::lock::LockKind;
use crate::pack::{self, PackBuilder, PackEntry, PackId};
use crate::page::{PageId, PAGE_SIZE};
use crate::store::PageStore;
use crate::tier::Tier;

/// What one recompression did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RecompressReport {
    /// Packs of ingest's fast encoding rewritten (and deleted).
    pub packs_recompressed: u64,
    /// Dense packs written.
    pub packs_written: u64,
    pub pages: u64,
    pub bytes_before: u64,
    pub bytes_after: u64,
    pub elapsed_ms: u64,
}

/// Packs pages into dense packs: frames of [`FRAME_PAGES`] pages in the order given (neighbours
/// in an image resemble each other), packs closed at [`crate::pack::TARGET_PACK_BYTES`]. The
/// pages of each source pack start a frame of their own ([`rewrite_pages`]).
pub(crate) struct DenseWriter {
    encoder: FrameEncoder,
    /// Whether packs are closed at the target size (false: one pack, for a locality pack).
    split: bool,
    builder: PackBuilder,
    frame_ids: Vec<PageId>,
    frame_pages: Vec<u8>,
    full: Vec<PackBuilder>,
}

impl DenseWriter {
    pub(crate) fn new() -> Result<DenseWriter> {
        DenseWriter::with(FRAME_LEVEL, true)
    }

    /// Frames at zstd `level`; `split` false keeps every page in one pack.
    pub(crate) fn with(level: i32, split: bool) -> Result<DenseWriter> {
        Ok(DenseWriter {
            encoder: FrameEncoder::new(level).map_err(zstd_error)?,
            split,
            builder: PackBuilder::new(),
            frame_ids: Vec::with_capacity(FRAME_PAGES),
            frame_pages: Vec::with_capacity(FRAME_PAGES * PAGE_SIZE),
            full: Vec::new(),
        })
    }

    /// Adds one decoded (and verified) page.
    pub(crate) fn push(&mut self, id: PageId, page: &[u8]) -> Result<()> {
        self.frame_ids.push(id);
        self.frame_pages.extend_from_slice(page);
        if self.frame_ids.len() == FRAME_PAGES {
            self.close_frame()?;
        }
        Ok(())
    }

    /// Ends the frame being filled, so that the next page starts one.
    pub(crate) fn close_frame(&mut self) -> Result<()> {
        if self.frame_ids.is_empty() {
            return Ok(());
        }
        let frame = self.encoder.encode(&self.frame_pages).map_err(zstd_error)?;
        self.builder.push_frame(&self.frame_ids, &frame);
        self.frame_ids.clear();
        self.frame_pages.clear();
        if self.split && self.builder.is_full() {
            self.full.push(std::mem::take(&mut self.builder));
        }
        Ok(())
    }

    /// Packs filled since the last call, ready to upload.
    pub(crate) fn take_full(&mut self) -> Vec<PackBuilder> {
        std::mem::take(&mut self.full)
    }

    /// Closes the last frame and pack; returns the packs still to upload.
    pub(crate) fn finish(mut self) -> Result<Vec<PackBuilder>> {
        self.close_frame()?;
        let last = std::mem::take(&mut self.builder);
        if !last.is_empty() {
            self.full.push(last);
        }
        Ok(self.full)
    }
}

fn zstd_error(e: std::io::Error) -> Error {
    Error::io("<zstd>", e)
}

/// Decodes the pages `keep` of the pack `key` held in `data`, each checked against its id (a
/// corrupt page is never copied into a new pack), and adds them to `writer`. CPU-bound: run it
/// with [`blocking()`].
///
/// They start a frame of their own: a reader of one zstd frame reads all of it, and the pages
/// of one source pack (one ingest's new pages: one checkpoint's) are read together, apart from
/// another pack's. A frame spanning two packs made the first swap-in of a tenant whose new pages
/// it held read up to two frames of another tenant's pages along with its own (~10% of the
/// ~110 new pages of `shared_pages_are_fetched_once_across_tenants`'s counters).
pub(crate) fn rewrite_pages(
    writer: &mut DenseWriter,
    key: &str,
    data: &[u8],
    keep: &[PackEntry],
) -> Result<()> {
    writer.close_frame()?;
    let mut decoder = PageDecoder::default();
    for e in keep {
        let raw = data
            .get(e.offset as usize..(e.offset + u64::from(e.len)) as usize)
            .ok_or_else(|| Error::CorruptObject {
                what: "pack",
                object: key.to_string(),
                reason: "shorter than its index".into(),
            })?;
        let page = decoder.decode(&e.id, e.codec, e.slot, e.offset, raw, Tier::Cold, key)?;
        writer.push(e.id, &page)?;
    }
    Ok(())
}

impl PageStore {
    /// Rewrites every pack still in ingest's fast encoding as dense packs, keeping all its pages,
    /// under the recompress lock (ingests go on; a gc fails as busy, and this waits for a gc).
    pub async fn recompress(&self) -> Result<RecompressReport> {
        self.recompress_with(false).await
    }

    /// [`Self::recompress`]; `background` runs the encoding at the lowest CPU priority.
    async fn recompress_with(&self, background: bool) -> Result<RecompressReport> {
        let lock = self.lock(LockKind::Recompress).await?;
        let result = self
            .recompress_locked(background)
            .instrument(info_span!("recompress", background))
            .await;
        self.unlock(lock).await?;
        result
    }

    async fn recompress_locked(&self, background: bool) -> Result<RecompressReport> {
        let started = Instant::now();
        let mut r = RecompressReport::default();
        self.refresh_catalog().await?;
        let mut writer = DenseWriter::new()?;
        let mut seen: HashSet<PageId> = HashSet::new();
        let mut done: Vec<(PackId, String)> = Vec::new();
        let mut written: HashSet<PackId> = HashSet::new();
        let mut listed: HashSet<PackId> = HashSet::new();
        for obj in self.cold().list("packs/").await? {
            let Some(pack) = PackId::from_object_key(&obj.key) else {
                continue;
            };
            listed.insert(pack);
            // Every pass after a swap-out once read every pack's index: the store's whole
            // page list, parsed again per swap-out.
            if self.known_dense(&pack) {
                continue;
            }
            let entries = self.read_pack_index(&obj.key, obj.size).await?;
            if !pack::is_fast(&entries) {
                self.remember_dense([pack]);
                continue;
            }
            let data = self.cold().get(&obj.key).await?;
            // Every page, live or not (see the module's doc), each once.
            let keep: Vec<PackEntry> = entries.into_iter().filter(|e| seen.insert(e.id)).collect();
            r.pages += keep.len() as u64;
            let key = obj.key.clone();
            let rewrite = move || {
                rewrite_pages(&mut writer, &key, &data, &keep)?;
                Ok(writer)
            };
            writer = match background {
                true => blocking::background(rewrite).await?,
                false => blocking(rewrite).await?,
            };
            for full in writer.take_full() {
                let (id, len) = self.write_repacked(full).await?;
                written.insert(id);
                r.bytes_after += len;
                r.packs_written += 1;
            }
            r.bytes_before += obj.size;
            done.push((pack, obj.key));
        }
        for last in blocking(move || writer.finish()).await? {
            let (id, len) = self.write_repacked(last).await?;
            written.insert(id);
            r.bytes_after += len;
            r.packs_written += 1;
        }
        self.remember_dense(written.iter().copied());
        // Packs gone (gc's) are forgotten.
        self.dense_packs()
            .retain(|p| listed.contains(p) || written.contains(p));
        // Only now that every page has a durable new home are the old packs deleted.
        let gone = self.delete_replaced(&done, &written).await?;
        r.packs_recompressed = gone as u64;
        r.elapsed_ms = started.elapsed().as_millis() as u64;
        info!(
            packs = r.packs_recompressed,
            pages = r.pages,
            before = r.bytes_before,
            after = r.bytes_after,
            ms = r.elapsed_ms,
            "recompressed"
        );
        Ok(r)
    }

    /// The packs known dense (`PageStore::known_dense_packs`); a panic elsewhere leaves the set
    /// usable.
    fn dense_packs(&self) -> std::sync::MutexGuard<'_, HashSet<PackId>> {
        self.known_dense_packs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn known_dense(&self, pack: &PackId) -> bool {
        self.dense_packs().contains(pack)
    }

    fn remember_dense(&self, packs: impl IntoIterator<Item = PackId>) {
        self.dense_packs().extend(packs);
    }

    /// Deletes packs whose pages now live in new packs (never one just written: a pack is named
    /// by its bytes); returns how many.
    pub(crate) async fn delete_replaced(
        &self,
        replaced: &[(PackId, String)],
        written: &HashSet<PackId>,
    ) -> Result<usize> {
        let mut gone = HashSet::new();
        for (pack, key) in replaced {
            if written.contains(pack) {
                continue;
            }
            self.cold().delete(key).await?;
            self.forget_pack(pack);
            gone.insert(*pack);
        }
        self.catalog().remove_packs(&gone);
        Ok(gone.len())
    }

    /// Starts [`Self::recompress`] in the background unless one is running (then that one runs
    /// once more when it ends): what a worker calls after each swap-out. Failures are logged;
    /// the packs stay readable as they are and the next run or gc takes them.
    pub fn recompress_behind(self: &Arc<Self>) {
        if !self.background_recompress.ask() {
            return;
        }
        let store = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                store.background_recompress.starting();
                if let Err(e) = store.recompress_with(true).await {
                    warn!(error = %e, "background recompression failed; gc will finish it");
                }
                if !store.background_recompress.ended() {
                    break;
                }
            }
        });
    }

    /// Whether the background recompression runs now: its cold reads and CPU compete with
    /// whatever else the worker does meanwhile (a benchmark timing a swap-in notes it).
    pub fn recompressing(&self) -> bool {
        self.background_recompress.running()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{self, Codec};

    /// An ingest-style pack of `pages` (lz4 or raw, one page each): its bytes and index.
    fn fast_pack(pages: &[Vec<u8>]) -> (Vec<u8>, Vec<PackEntry>) {
        let mut b = PackBuilder::new();
        for p in pages {
            let (c, encoded) = codec::encode(p);
            b.push(PageId::of(p), c, &encoded);
        }
        let (_, data, entries) = b.finish();
        (data, entries)
    }

    fn page(seed: u8) -> Vec<u8> {
        (0..PAGE_SIZE).map(|i| seed ^ (i % 251) as u8).collect()
    }

    #[test]
    fn each_source_pack_starts_a_frame_of_its_own() {
        let a: Vec<_> = (1..=3).map(page).collect();
        let b: Vec<_> = (11..=13).map(page).collect();
        let mut writer = DenseWriter::new().unwrap();
        for (i, pages) in [&a, &b].into_iter().enumerate() {
            let (data, entries) = fast_pack(pages);
            rewrite_pages(&mut writer, &format!("packs/{i}"), &data, &entries).unwrap();
        }
        let packs = writer.finish().unwrap();
        assert_eq!(packs.len(), 1);
        let (_, _, entries) = packs.into_iter().next().unwrap().finish();
        assert_eq!(entries.len(), 6);
        assert!(entries.iter().all(|e| e.codec == Codec::Zstd));
        // Two frames of three pages, not one of four and one of two.
        let slots: Vec<_> = entries.iter().map(|e| (e.slot.index, e.slot.of)).collect();
        assert_eq!(slots, [(0, 3), (1, 3), (2, 3), (0, 3), (1, 3), (2, 3)]);
        assert_ne!(entries[2].offset, entries[3].offset);
    }
}
