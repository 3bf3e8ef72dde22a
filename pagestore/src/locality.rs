//! Locality packs: an extra copy of the pages a checkpoint's next reader wants first, in one
//! object, so that a cold start fetches them with one or a few large GETs.
//!
//! Why: pages are stored once (4 KiB dedup), so the pages one restore reads first end up
//! scattered over many packs written at different times, and fetching them costs one ranged GET
//! per scattered run (~18 for a small Python tenant, ~100 ms through a 20 ms-latency link). An
//! ingest may be asked to *also* write chosen pages (by file and page index, in the order given)
//! into one pack of their own. The store does not know why they were chosen.
//!
//! The copy is an extra, never a dependency: the catalog does not list it (it lives under
//! `locality/`, not `packs/`), every page stays findable in its ordinary pack, and a reader that
//! cannot use the copy falls back to the ordinary path. The manifest names it
//! ([`LocalityPack`]), so it is committed with the manifest, deleted by forget with it, and
//! swept by gc when no manifest names it (the leftover of a killed ingest).
//!
//! Only a tenant's newest checkpoint keeps its copy: the next restore reads that one, and a
//! copy per retained checkpoint multiplied the duplication by the retention count. Once a new
//! checkpoint is committed, the older ones' copies are deleted; their manifests still name them,
//! so verify accepts a missing copy of an older checkpoint, and a restore of one (a rollback)
//! reads its pages the ordinary way.
//!
//! While the copy is being fetched, readers of pages it is expected to hold wait for them instead
//! of sending their own GETs (the read path's locality flights), as they would for an ordinary
//! flight; its pages reach the memory tier part by part as they are decoded and checked, in the
//! order a restore reads them, and each reader goes on once its own are there. A copy of which
//! half the pages are coming already, in another tenant's copy being fetched, is not fetched
//! (tenants of one program share most of their restore sets: ten woken at once fetch one copy,
//! not ten).
//!
//! The copy is stored like the cold tier's packs, in zstd frames ([`crate::frame`]), since it is
//! at rest there as long as its checkpoint is the newest.
//!
//! After the chosen pages, an ingest may also put in the pages whose content an earlier
//! checkpoint of the caller's choosing did not hold ([`ChangedSince`]): for a tenant's previous
//! checkpoint, the pages it wrote while last awake, which its next reader is likely to touch
//! again however its chosen pages were guessed.

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::Bytes;
use futures::stream::{self, StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

use crate::codec::PageDecoder;
use crate::error::{Error, Result};
use crate::local::FetchedPage;
use crate::manifest::{FileEntry, LocalityPack, Manifest};
use crate::pack::{self, PackId};
use crate::page::{PageId, PAGE_SIZE};
use crate::read::FlightEnd;
use crate::recompress::DenseWriter;
use crate::store::PageStore;
use crate::tier::Tier;

/// A locality pack up to this size is fetched with one GET.
pub const ONE_GET_MAX: u64 = 512 << 10;
/// A larger one is fetched in ranges of this size (at multiples of it), all in flight at once:
/// an object store serves ~100 MB/s per connection and scales with connections. Not smaller:
/// Garage stores objects in blocks of 1 MiB and reads and checks a whole block for any range of
/// it, so ranges of 256 KiB made it read each block four times (10 MB in 40 ranges 71-82 ms
/// from Garage on loopback, in 10 ranges 28-33 ms; through the bench's 20 ms link 120-133
/// against 83-87 ms); against S3's 100 MB/s per connection a range of 1 MiB costs ~8 ms more
/// than one of 256 KiB after its round trip.
pub const RANGE_BYTES: u64 = 1 << 20;
/// Pages of the wanted set sampled in the local tier before deciding to fetch the copy.
const LOCAL_SAMPLE: usize = 32;
/// zstd level of locality packs' frames: written on the swap-out's path (~5 ms a MiB here),
/// where gc's level would cost several times that.
const LOCALITY_LEVEL: i32 = 3;

/// One page position of a checkpoint: a paged file and a page index in it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PagePos {
    pub file: String,
    pub page: u64,
}

/// Which pages an ingest adds to its locality pack after the chosen ones: those whose content
/// `earlier` does not hold, at most `max_pages`, in the order of the files and their pages.
#[derive(Clone, Debug)]
pub struct ChangedSince {
    pub earlier: std::sync::Arc<Manifest>,
    pub max_pages: usize,
}

/// The positions of the pages of `files` that [`ChangedSince`] adds after `chosen`: non-zero,
/// held by no page of `earlier` nor at any of `chosen`, each content once.
pub(crate) fn changed_positions(
    files: &[FileEntry],
    chosen: &[PagePos],
    changed: &ChangedSince,
) -> Vec<PagePos> {
    let earlier: HashSet<&PageId> = changed.earlier.non_zero_pages().collect();
    let at = |pos: &PagePos| {
        let file = files.iter().find(|f| f.name == pos.file)?;
        file.pages().get(pos.page as usize).copied()
    };
    let mut seen: HashSet<PageId> = chosen.iter().filter_map(at).collect();
    let mut positions = Vec::new();
    for file in files {
        for (page, id) in file.pages().iter().enumerate() {
            if positions.len() >= changed.max_pages {
                return positions;
            }
            if id.is_zero() || earlier.contains(id) || !seen.insert(*id) {
                continue;
            }
            positions.push(PagePos {
                file: file.name.clone(),
                page: page as u64,
            });
        }
    }
    positions
}

/// The locality pack of one checkpoint, as a reader needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalitySource {
    pub key: String,
    pub pack: LocalityPack,
}

impl LocalitySource {
    pub fn of(manifest: &Manifest) -> Option<LocalitySource> {
        let pack = manifest.locality?;
        Some(LocalitySource {
            key: pack.object_key(&manifest.tenant, manifest.generation),
            pack,
        })
    }
}

/// What one fetch of a locality pack did.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct LocalityReport {
    /// Whether the copy was fetched (and its pages put in the memory tier).
    pub used: bool,
    /// Why not, when it was not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    /// Pages of the copy put in the memory tier.
    pub pages: u64,
    pub gets: u64,
    pub bytes: u64,
    pub ms: u64,
    /// Of `ms`, until its bytes had arrived (the rest: decoding and checking its pages).
    #[serde(default)]
    pub get_ms: u64,
}

/// Builds the locality pack of the pages at `positions` of `files` (read again from `dir`, the
/// ingested directory, and checked against the ids the manifest gives them), in the order given,
/// each page once, zero pages left out. Positions of no paged file are skipped. Blocking.
pub(crate) fn build(
    dir: &Path,
    files: &[FileEntry],
    positions: &[PagePos],
) -> Result<Option<(PackId, Vec<u8>, u32)>> {
    use std::os::unix::fs::FileExt;
    let mut open: std::collections::HashMap<&str, std::fs::File> = Default::default();
    let mut seen = HashSet::new();
    // Dense like the cold tier's packs (it is at rest there too), at a level quick enough for
    // the swap-out's path.
    let mut writer = DenseWriter::with(LOCALITY_LEVEL, false)?;
    let mut pages = 0u32;
    let mut buf = vec![0u8; PAGE_SIZE];
    for pos in positions {
        let Some(entry) = files.iter().find(|f| f.name == pos.file) else {
            continue;
        };
        let Some(id) = entry.pages().get(pos.page as usize).copied() else {
            continue;
        };
        if id.is_zero() || !seen.insert(id) {
            continue;
        }
        let path = dir.join(&entry.name);
        let file = match open.entry(entry.name.as_str()) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(std::fs::File::open(&path).map_err(|e| Error::io(&path, e))?)
            }
        };
        // The last page of a file may be short: the rest reads as zeros, as ingest named it.
        buf.fill(0);
        let offset = pos.page * PAGE_SIZE as u64;
        let want = (entry.size - offset).min(PAGE_SIZE as u64) as usize;
        file.read_exact_at(&mut buf[..want], offset)
            .map_err(|e| Error::io(&path, e))?;
        if PageId::of(&buf) != id {
            return Err(Error::BadInput {
                path,
                reason: format!("page {} changed while being ingested", pos.page),
            });
        }
        writer.push(id, &buf)?;
        pages += 1;
    }
    if pages == 0 {
        return Ok(None);
    }
    let Some(builder) = writer.finish()?.pop() else {
        return Ok(None);
    };
    let (id, data, _) = builder.finish();
    Ok(Some((id, data, pages)))
}

impl PageStore {
    /// Fetches a checkpoint's locality pack into the memory tier when it is worth it: when
    /// enough of `wanted` (the pages it was written for) is in neither the memory nor the local
    /// tier. Every page is checked against its id; a damaged or missing copy is an error, and
    /// the caller reads the pages the ordinary way.
    pub async fn fetch_locality(
        &self,
        source: &LocalitySource,
        wanted: &[PageId],
    ) -> Result<LocalityReport> {
        let started = Instant::now();
        let mut seen = HashSet::new();
        let missing: Vec<PageId> = wanted
            .iter()
            .filter(|id| !id.is_zero() && seen.insert(**id) && !self.hot().contains(id))
            .copied()
            .collect();
        let skip = |why: &str| LocalityReport {
            skipped: Some(why.to_string()),
            ms: started.elapsed().as_millis() as u64,
            ..LocalityReport::default()
        };
        // The pages it was written for: it may also hold others after them (the pages next to
        // a tenant's working set), which are no reason to fetch it.
        let written_for = (seen.len() as u64).min(u64::from(source.pack.pages));
        if (missing.len() as u64) * 4 < written_for {
            return Ok(skip("most of its pages are in memory"));
        }
        if !self.read_path.peers().live().is_empty() {
            // A move's source holds them, a LAN round trip away.
            return Ok(skip("a peer worker holds its pages"));
        }
        if let Some(local) = self.local() {
            let step = missing.len().div_ceil(LOCAL_SAMPLE).max(1);
            let sample: Vec<_> = missing.iter().step_by(step).collect();
            let held = sample
                .iter()
                .filter(|id| matches!(local.get(id), Ok(Some(_))))
                .count();
            if held * 2 >= sample.len() {
                return Ok(skip("its pages are in the local tier"));
            }
        }
        // Atomically with the decision, so that of tenants woken together one fetches its copy
        // and the others wait for it.
        let missing_pages = missing.len();
        let Some(flight) = self.read_path.locality_flights().start_unless_coming(
            missing.into_iter().collect(),
            |id| !self.hot().contains(id),
            |not_coming| {
                // Worth it when most of the pages it was written for come with nothing else: else
                // its copies of pages in flight elsewhere are bytes fetched twice.
                (not_coming as u64) * 2 >= written_for && not_coming > 0
            },
        ) else {
            return Ok(skip(&format!(
                "most of its {missing_pages} missing pages are coming in another locality pack, \
                 or came"
            )));
        };
        let (data, gets) = self.get_locality(source).await?;
        let get_ms = started.elapsed().as_millis() as u64;
        let bytes = data.len() as u64;
        let installed = self.install_locality(source, data, &flight).await?;
        let pages = installed.len();
        // Readers still waiting (for pages the copy did not hold) look elsewhere now.
        drop(flight);
        // Each encoded on its own (the local tier never holds zstd frames), behind the restore.
        self.read_path.cache_behind(
            installed
                .into_iter()
                .map(|(id, page)| FetchedPage::Decoded(id, page))
                .collect(),
        );
        let report = LocalityReport {
            used: true,
            skipped: None,
            pages: pages as u64,
            gets,
            bytes,
            ms: started.elapsed().as_millis() as u64,
            get_ms,
        };
        debug!(key = %source.key, pages, gets, bytes, ms = report.ms, get_ms, "locality pack fetched");
        Ok(report)
    }

    /// The whole object: one GET, or ranged GETs all in flight for a large one.
    async fn get_locality(&self, source: &LocalitySource) -> Result<(Vec<u8>, u64)> {
        let len = source.pack.bytes;
        if len <= ONE_GET_MAX {
            self.counters()
                .cold_requests
                .fetch_add(1, Ordering::Relaxed);
            return Ok((self.cold().get(&source.key).await?, 1));
        }
        let ranges: Vec<(u64, u64)> = (0..len.div_ceil(RANGE_BYTES))
            .map(|i| (i * RANGE_BYTES, RANGE_BYTES.min(len - i * RANGE_BYTES)))
            .collect();
        let n = ranges.len();
        self.counters()
            .cold_requests
            .fetch_add(n as u64, Ordering::Relaxed);
        let parts: Vec<Vec<u8>> = stream::iter(ranges)
            .map(|(from, len)| self.cold().get_range(&source.key, from, len))
            .buffered(n)
            .try_collect()
            .await?;
        Ok((parts.concat(), n as u64))
    }

    /// Checks the object against its name and each page against its id, and puts the pages in
    /// the memory tier part by part, in the pack's order (the order `criu restore` reads them),
    /// each part as soon as it is decoded and checked, telling `flight`'s waiters: the restore
    /// copies the first pages while later ones are being decoded. Returns them all.
    async fn install_locality(
        &self,
        source: &LocalitySource,
        data: Vec<u8>,
        flight: &FlightEnd<'_>,
    ) -> Result<Vec<(PageId, Bytes)>> {
        let (parts_tx, mut parts) = tokio::sync::mpsc::unbounded_channel::<Part>();
        let decoding = decode_locality(source, data, move |part| {
            let _ = parts_tx.send(part.to_vec());
        });
        let installing = async {
            // Only checked pages reach the tier; a damaged page further on fails the fetch
            // but leaves the parts before it (each page is still its id's content).
            while let Some(part) = parts.recv().await {
                for (id, page) in &part {
                    if !self.hot().contains(id) {
                        self.hot().insert_shared(*id, page.clone());
                    }
                }
                self.counters()
                    .cold_pages
                    .fetch_add(part.len() as u64, Ordering::Relaxed);
                flight.progressed();
            }
        };
        let (pages, ()) = tokio::join!(decoding, installing);
        pages
    }

    /// Reads a locality pack and checks it and every page in it (`pico store verify`).
    pub(crate) async fn verify_locality(&self, source: &LocalitySource) -> Result<usize> {
        let data = self.cold().get(&source.key).await?;
        Ok(decode_locality(source, data, |_| {}).await?.len())
    }

    /// Builds and uploads the locality pack of an ingest: the pages at `chosen`, then those
    /// `changed` adds (nothing when they name no stored page). Not in the catalog: its pages are
    /// found in their ordinary packs. Returns it and how many of its pages `changed` added.
    pub(crate) async fn write_locality(
        &self,
        tenant: &str,
        generation: u64,
        dir: &Path,
        files: &[FileEntry],
        chosen: &[PagePos],
        changed: Option<&ChangedSince>,
    ) -> Result<Option<(LocalityPack, u64)>> {
        if chosen.is_empty() && changed.is_none() {
            return Ok(None);
        }
        let built = {
            let (dir, files) = (dir.to_path_buf(), files.to_vec());
            let (mut positions, changed) = (chosen.to_vec(), changed.cloned());
            crate::blocking::blocking(move || {
                let added =
                    changed.map_or_else(Vec::new, |c| changed_positions(&files, &positions, &c));
                let added_count = added.len() as u64;
                positions.extend(added);
                Ok(build(&dir, &files, &positions)?.map(|b| (b, added_count)))
            })
            .await?
        };
        let Some(((pack, data, pages), changed_pages)) = built else {
            return Ok(None);
        };
        let locality = LocalityPack {
            pack,
            bytes: data.len() as u64,
            pages,
        };
        let key = locality.object_key(tenant, generation);
        self.cold().put(&key, data).await?;
        info!(
            key,
            pages,
            changed_pages,
            bytes = locality.bytes,
            "locality pack written"
        );
        Ok(Some((locality, changed_pages)))
    }

    /// Deletes the locality packs of `tenant` whose generation `doomed` accepts (retention and
    /// forget: their manifests are gone). A failure only leaves them to the next gc.
    pub(crate) async fn drop_locality(&self, tenant: &str, doomed: impl Fn(u64) -> bool) {
        let listed = match self.cold().list(&format!("locality/{tenant}/")).await {
            Ok(l) => l,
            Err(e) => {
                warn!(tenant, error = %e, "could not list locality packs; gc will sweep them");
                return;
            }
        };
        for obj in listed {
            let Some((owner, generation)) = LocalityPack::owner_of_key(&obj.key) else {
                continue;
            };
            if owner == tenant && doomed(generation) {
                match self.cold().delete(&obj.key).await {
                    Ok(()) => info!(tenant, generation, "locality pack dropped"),
                    Err(e) => warn!(key = %obj.key, error = %e, "could not delete locality pack"),
                }
            }
        }
    }
}

/// Pages decoded, checked and handed on together: a part of the pack (2 MiB decoded) that a
/// restore reading the pack's pages in order can copy while the next parts are decoded.
const PART_PAGES: usize = 512;

/// Checked pages of a locality pack, with their ids, in the pack's order.
type Part = Vec<(PageId, Bytes)>;

/// [`decode_checked`] on blocking threads, up to four (decoding and checking is what a cold
/// restore waits for once the bytes are in), each part handed to `deliver` once checked.
async fn decode_locality(
    source: &LocalitySource,
    data: Vec<u8>,
    deliver: impl Fn(&Part) + Send + Sync + 'static,
) -> Result<Part> {
    let source = source.clone();
    crate::blocking::blocking(move || {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
        decode_checked(&source, &data, threads, &deliver)
    })
    .await
}

/// Checks a locality pack against its name and size, and each page against its id, in parts of
/// [`PART_PAGES`] pages dealt in turn to up to `threads` threads (so that parts come out
/// roughly in the pack's order); each checked part is handed to `deliver` at once. Returns
/// every page in the pack's order. A page that fails its check fails the pack; parts handed
/// on before stay good (every page in them was checked). Blocking: decoding and checking is
/// what a cold restore waits for once the bytes are in (a node tenant's 7k pages 35-48 ms on
/// one thread, a Python one's 20k 140-150 ms).
fn decode_checked(
    source: &LocalitySource,
    data: &[u8],
    threads: usize,
    deliver: &(dyn Fn(&Part) + Sync),
) -> Result<Part> {
    let corrupt = |reason: String| Error::CorruptObject {
        what: "locality pack",
        object: source.key.clone(),
        reason,
    };
    if data.len() as u64 != source.pack.bytes {
        return Err(corrupt(format!(
            "{} bytes, its manifest says {}",
            data.len(),
            source.pack.bytes
        )));
    }
    if blake3::hash(data).as_bytes() != &source.pack.pack.0 {
        return Err(corrupt("its bytes do not hash to its name".into()));
    }
    let entries = pack::parse_pack(&source.key, data)?;
    let decode = |part: &[pack::PackEntry]| -> Result<Part> {
        // A frame split between two parts is decoded by both.
        let mut decoder = PageDecoder::default();
        let pages = part
            .iter()
            .map(|e| {
                let raw = data
                    .get(e.offset as usize..(e.offset + u64::from(e.len)) as usize)
                    .ok_or_else(|| corrupt(format!("page {} lies outside it", e.id)))?;
                let page = decoder.decode(
                    &e.id,
                    e.codec,
                    e.slot,
                    e.offset,
                    raw,
                    Tier::Cold,
                    &source.key,
                )?;
                Ok((e.id, Bytes::from(page)))
            })
            .collect::<Result<Vec<_>>>()?;
        deliver(&pages);
        Ok(pages)
    };
    let parts: Vec<&[pack::PackEntry]> = entries.chunks(PART_PAGES).collect();
    let threads = threads.clamp(1, parts.len().max(1));
    // Thread t decodes parts t, t + threads, ...: each thread's parts, in its order.
    let decode = &decode;
    let parts = &parts;
    let per_thread: Vec<Result<Vec<Part>>> = if threads == 1 {
        vec![parts.iter().map(|p| decode(p)).collect()]
    } else {
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    scope.spawn(move || {
                        parts
                            .iter()
                            .skip(t)
                            .step_by(threads)
                            .map(|p| decode(p))
                            .collect()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(corrupt("its decoding thread panicked".into())))
                })
                .collect()
        })
    };
    let mut decoded: Vec<std::vec::IntoIter<Part>> = per_thread
        .into_iter()
        .map(|r| r.map(Vec::into_iter))
        .collect::<Result<_>>()?;
    let mut pages = Vec::with_capacity(entries.len());
    for i in 0..parts.len() {
        pages.extend(decoded[i % threads].next().unwrap_or_default());
    }
    Ok(pages)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pages by id, in the order they were pushed.
    type Pushed = Vec<(PageId, Vec<u8>)>;

    /// A locality pack of `n` distinct pages as an ingest writes it, the page at `wrong` (if
    /// any) under another page's id.
    fn pack_of(n: u32, wrong: Option<u32>) -> (LocalitySource, Vec<u8>, Pushed) {
        let mut writer = DenseWriter::with(LOCALITY_LEVEL, false).unwrap();
        let mut pages = Vec::new();
        for i in 0..n {
            let mut page = vec![(i % 7) as u8; PAGE_SIZE];
            page[..4].copy_from_slice(&i.to_le_bytes());
            let id = match wrong == Some(i) {
                true => PageId::of(&[0xee; PAGE_SIZE]),
                false => PageId::of(&page),
            };
            writer.push(id, &page).unwrap();
            pages.push((id, page));
        }
        let (pack, data, _) = writer.finish().unwrap().pop().unwrap().finish();
        let source = LocalitySource {
            key: "locality/t/0000000001-test.pack".into(),
            pack: LocalityPack {
                pack,
                bytes: data.len() as u64,
                pages: n,
            },
        };
        (source, data, pages)
    }

    /// The pages a checkpoint holds and the earlier one did not are added in file order, each
    /// content once, zero pages and the chosen pages' contents left out, up to the bound.
    #[test]
    fn changed_pages_are_those_the_earlier_checkpoint_lacks() {
        use crate::manifest::testing::{file, of_files};
        use crate::manifest::FileContent::Paged;
        let id = |n: u8| PageId::of(&[n; PAGE_SIZE]);
        let earlier = of_files(vec![file(
            "pages-1.img",
            3 * 4096,
            Paged(vec![id(1), id(2), id(3)]),
        )]);
        let files = vec![
            file("core.img", 10, crate::FileContent::Inline(vec![0; 10])),
            file(
                "pages-1.img",
                6 * 4096,
                Paged(vec![id(1), id(4), PageId::ZERO, id(5), id(4), id(6)]),
            ),
            file("pages-2.img", 2 * 4096, Paged(vec![id(2), id(7)])),
        ];
        let pos = |file: &str, page| PagePos {
            file: file.into(),
            page,
        };
        let chosen = [pos("pages-1.img", 3)];
        let changed = |max_pages| ChangedSince {
            earlier: std::sync::Arc::new(earlier.clone()),
            max_pages,
        };
        assert_eq!(
            changed_positions(&files, &chosen, &changed(100)),
            [
                pos("pages-1.img", 1),
                pos("pages-1.img", 5),
                pos("pages-2.img", 1)
            ]
        );
        assert_eq!(
            changed_positions(&files, &chosen, &changed(2)),
            [pos("pages-1.img", 1), pos("pages-1.img", 5)]
        );
        assert!(changed_positions(&files, &chosen, &changed(0)).is_empty());
    }

    #[test]
    fn a_large_locality_pack_decodes_on_several_threads_to_its_pages_in_order() {
        let (source, data, pages) = pack_of(2001, None);
        let one = decode_checked(&source, &data, 1, &|_| {}).unwrap();
        let three = decode_checked(&source, &data, 3, &|_| {}).unwrap();
        assert_eq!(one, three);
        assert_eq!(three.len(), pages.len());
        for ((id, page), (want_id, want)) in three.iter().zip(&pages) {
            assert_eq!(id, want_id);
            assert_eq!(page.as_ref(), want.as_slice());
        }
    }

    /// Parts are handed on as they are checked, each once, in the pack's order per thread; a
    /// damaged page stops its thread's parts at its own, and the pages handed on before it are
    /// the pack's own.
    #[test]
    fn checked_parts_are_handed_on_before_the_pack_is_done() {
        let (source, data, pages) = pack_of(2001, None);
        let delivered = std::sync::Mutex::new(Vec::new());
        let all = decode_checked(&source, &data, 2, &|part| {
            delivered.lock().unwrap().push(part.to_vec());
        })
        .unwrap();
        let mut parts = delivered.into_inner().unwrap();
        assert_eq!(parts.len(), 2001usize.div_ceil(PART_PAGES));
        parts.sort_by_key(|p| pages.iter().position(|(id, _)| *id == p[0].0));
        assert_eq!(parts.concat(), all);

        let wrong = 3 * PART_PAGES as u32 + 7;
        let (source, data, pages) = pack_of(2001, Some(wrong));
        let delivered = std::sync::Mutex::new(Vec::new());
        decode_checked(&source, &data, 1, &|part| {
            delivered.lock().unwrap().extend(part.to_vec());
        })
        .expect_err("a wrong page passed");
        let delivered = delivered.into_inner().unwrap();
        assert_eq!(
            delivered.len(),
            3 * PART_PAGES,
            "the parts before the damaged one"
        );
        for ((id, page), (want_id, want)) in delivered.iter().zip(&pages) {
            assert_eq!(id, want_id);
            assert_eq!(page.as_ref(), want.as_slice());
        }
    }

    #[test]
    fn a_page_that_fails_its_id_fails_the_pack_whichever_thread_decodes_it() {
        for wrong in [0, 1000, 2000] {
            let (source, data, _) = pack_of(2001, Some(wrong));
            for threads in [1, 3] {
                let e = decode_checked(&source, &data, threads, &|_| {})
                    .expect_err("a wrong page passed");
                assert!(
                    e.to_string().contains("does not match its id"),
                    "{threads} threads, page {wrong}: {e}"
                );
            }
        }
    }
}
