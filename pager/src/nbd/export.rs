//! Exports: one block device per paged file of a stored checkpoint, and the table that names them.
//!
//! An export is a view of one file's page list. Reads resolve each page to "zero" (never stored,
//! sent as a hole) or a stored page (from the shared [`PageCache`], else the store's tiers).
//! A writable export adds a copy-on-write overlay: written pages live in memory until FLUSH, which
//! commits them as a derived checkpoint (the next generation of the tenant) and makes that the
//! export's new base. Export names (`ID/FILE`) are keys of a table, never paths.
//!
//! Hot pages are found without hashing or locking: each export keeps one slot per page index,
//! filled on first read (within a page budget shared by all exports), in front of the shared
//! [`PageCache`] keyed by page id. Profiling nbdcopy showed the hash lookups (cache misses over a
//! large map) costing a quarter of the server's CPU; an array indexed by position does not.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

use bytes::Bytes;
use futures::stream::{self, StreamExt, TryStreamExt};
use pagestore::{CheckpointRef, FileContent, PageId, PageStore, PAGE_SIZE};
use tracing::info;

use super::cache::PageCache;
use crate::error::{Error, Result};

const PAGE: u64 = PAGE_SIZE as u64;
/// How many store reads one request keeps in flight.
const FETCH_CONCURRENCY: usize = 32;

static ZERO_PAGE: [u8; PAGE_SIZE] = [0; PAGE_SIZE];

/// One page of an export as the transmission phase sees it.
#[derive(Clone, Debug)]
pub enum Page {
    Zero,
    Data(Bytes),
}

impl Page {
    /// The page's bytes (zero pages come from a shared static page, without allocating).
    pub fn bytes(&self) -> Bytes {
        match self {
            Page::Zero => Bytes::from_static(&ZERO_PAGE),
            Page::Data(b) => b.clone(),
        }
    }
}

/// A piece of a read: `len` bytes of `page` starting at byte `from` of it.
#[derive(Clone, Debug)]
pub struct Piece {
    pub page: Page,
    pub from: usize,
    pub len: usize,
}

/// How a page of an export resolves before any fetch.
enum Source {
    Zero,
    /// Written (dirty) or already in this export's slot.
    Ready(Bytes),
    /// Stored: page `index` of the file has id `id`.
    Stored {
        index: u64,
        id: PageId,
    },
}

/// The committed state of an export: the checkpoint it shows, the file's page list there, and
/// the pages read so far, by index.
struct Base {
    checkpoint: CheckpointRef,
    pages: Arc<Vec<PageId>>,
    slots: Arc<Vec<OnceLock<Bytes>>>,
}

impl Base {
    fn new(checkpoint: CheckpointRef, pages: Vec<PageId>) -> Base {
        let slots = (0..pages.len()).map(|_| OnceLock::new()).collect();
        Base {
            checkpoint,
            pages: Arc::new(pages),
            slots: Arc::new(slots),
        }
    }
}

/// Pages written since the last flush, by page index (`None` = written as zeros).
type Dirty = BTreeMap<u64, Option<Bytes>>;

pub struct Export {
    name: String,
    file: String,
    size: u64,
    store: Arc<PageStore>,
    cache: Arc<PageCache>,
    /// Pages all exports' slots may still take.
    slot_budget: Arc<AtomicUsize>,
    base: RwLock<Base>,
    /// Present on writable exports. The async mutex serialises read-modify-write and flush; the
    /// map itself sits behind a short synchronous lock so reads never wait for a flush's upload.
    overlay: Option<tokio::sync::Mutex<()>>,
    dirty: RwLock<Dirty>,
}

impl Export {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn writable(&self) -> bool {
        self.overlay.is_some()
    }

    /// The checkpoint the export currently shows (changes on each flush of a writable export).
    pub fn checkpoint(&self) -> CheckpointRef {
        self.base
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .checkpoint
            .clone()
    }

    fn sources(&self, first: u64, last: u64) -> (Vec<Source>, Arc<Vec<OnceLock<Bytes>>>) {
        let base = self.base.read().unwrap_or_else(|p| p.into_inner());
        let stored = |i: u64| match base.pages.get(i as usize) {
            Some(id) if !id.is_zero() => match base.slots.get(i as usize).and_then(OnceLock::get) {
                Some(b) => Source::Ready(b.clone()),
                None => Source::Stored { index: i, id: *id },
            },
            _ => Source::Zero,
        };
        let sources = if self.overlay.is_none() {
            (first..=last).map(stored).collect()
        } else {
            let dirty = self.dirty.read().unwrap_or_else(|p| p.into_inner());
            (first..=last)
                .map(|i| match dirty.get(&i) {
                    Some(Some(b)) => Source::Ready(b.clone()),
                    Some(None) => Source::Zero,
                    None => stored(i),
                })
                .collect()
        };
        (sources, base.slots.clone())
    }

    /// Keeps `page` in slot `index`, if the budget allows.
    fn fill(&self, slots: &[OnceLock<Bytes>], index: u64, page: &Bytes) {
        let Some(slot) = slots.get(index as usize) else {
            return;
        };
        if slot.get().is_some() {
            return;
        }
        let took = self
            .slot_budget
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| b.checked_sub(1))
            .is_ok();
        if took && slot.set(page.clone()).is_err() {
            self.slot_budget.fetch_add(1, Ordering::Relaxed);
        }
    }

    async fn fetch(&self, id: PageId) -> Result<Bytes> {
        if let Some(b) = self.cache.get(&id) {
            return Ok(b);
        }
        let page = self.store.read_page(&id).await?;
        self.cache.insert(id, page.clone());
        Ok(page)
    }

    /// A page without waiting (a hole, written, in its slot or in the shared cache), or `None`.
    fn now(&self, source: &Source, slots: &[OnceLock<Bytes>]) -> Option<Page> {
        match source {
            Source::Zero => Some(Page::Zero),
            Source::Ready(b) => Some(Page::Data(b.clone())),
            Source::Stored { index, id } => {
                let b = self.cache.get(id)?;
                self.fill(slots, *index, &b);
                Some(Page::Data(b))
            }
        }
    }

    async fn resolve(&self, source: Source, slots: &[OnceLock<Bytes>]) -> Result<Page> {
        if let Some(p) = self.now(&source, slots) {
            return Ok(p);
        }
        let Source::Stored { index, id } = source else {
            return Ok(Page::Zero);
        };
        let b = self.fetch(id).await?;
        self.fill(slots, index, &b);
        Ok(Page::Data(b))
    }

    /// The pages under `[offset, offset + len)`, clipped to each page; the caller has checked the
    /// range lies within the export and `len > 0`.
    pub async fn read(&self, offset: u64, len: u64) -> Result<Vec<Piece>> {
        let first = offset / PAGE;
        let (sources, slots) = self.sources(first, (offset + len - 1) / PAGE);
        let mut pages = Vec::with_capacity(sources.len());
        let mut missing = Vec::new();
        for (i, s) in sources.into_iter().enumerate() {
            match self.now(&s, &slots) {
                Some(p) => pages.push(p),
                None => {
                    pages.push(Page::Zero);
                    missing.push((i, s));
                }
            }
        }
        if !missing.is_empty() {
            let slots = &slots;
            let fetched: Vec<(usize, Page)> = stream::iter(missing)
                .map(|(i, s)| async move { Ok::<_, Error>((i, self.resolve(s, slots).await?)) })
                .buffer_unordered(FETCH_CONCURRENCY)
                .try_collect()
                .await?;
            for (i, p) in fetched {
                pages[i] = p;
            }
        }
        Ok(clip(first, offset, len, pages))
    }

    /// Like [`Export::read`], but only when every page is at hand (a hole, written, or cached):
    /// the common case, answered without leaving the connection's reader task.
    pub fn read_now(&self, offset: u64, len: u64) -> Option<Vec<Piece>> {
        let first = offset / PAGE;
        let (sources, slots) = self.sources(first, (offset + len - 1) / PAGE);
        let pages = sources
            .iter()
            .map(|s| self.now(s, &slots))
            .collect::<Option<Vec<Page>>>()?;
        Some(clip(first, offset, len, pages))
    }

    /// Allocation extents of `[offset, offset + len)` as `(length, is_zero)`, merging runs; the
    /// caller has checked the range. Stops early after the first extent when `one` is set.
    pub fn extents(&self, offset: u64, len: u64, one: bool) -> Vec<(u64, bool)> {
        let end = offset + len;
        let first = offset / PAGE;
        let last = (end - 1) / PAGE;
        let mut out: Vec<(u64, bool)> = Vec::new();
        for (k, s) in self.sources(first, last).0.into_iter().enumerate() {
            let page_start = (first + k as u64) * PAGE;
            let n = end.min(page_start + PAGE) - offset.max(page_start);
            let zero = matches!(s, Source::Zero);
            match out.last_mut() {
                Some((l, z)) if *z == zero => *l += n,
                _ => {
                    if one && !out.is_empty() {
                        break;
                    }
                    out.push((n, zero));
                }
            }
        }
        out
    }

    /// Writes `data` at `offset` (`None`: that many zero bytes) into the overlay; the caller has
    /// checked the range.
    pub async fn write(&self, offset: u64, data: Option<&[u8]>, len: u64) -> Result<()> {
        let lock = self.overlay.as_ref().ok_or(Error::ExportReadOnly)?;
        let _guard = lock.lock().await;
        if len == 0 {
            return Ok(());
        }
        let end = offset + len;
        let first = offset / PAGE;
        let last = (end - 1) / PAGE;
        let mut updates: Vec<(u64, Option<Bytes>)> =
            Vec::with_capacity((last - first + 1) as usize);
        for i in first..=last {
            let page_start = i * PAGE;
            let from = offset.max(page_start);
            let to = end.min(page_start + PAGE);
            let chunk = data.map(|d| &d[(from - offset) as usize..(to - offset) as usize]);
            let whole = from == page_start && to == page_start + PAGE;
            let mut page = if whole {
                vec![0u8; PAGE_SIZE]
            } else {
                // Read-modify-write of a partly written page.
                let (mut sources, slots) = self.sources(i, i);
                let source = sources.pop().unwrap_or(Source::Zero);
                self.resolve(source, &slots).await?.bytes().to_vec()
            };
            let at = (from - page_start) as usize;
            match chunk {
                Some(c) => page[at..at + c.len()].copy_from_slice(c),
                None => page[at..(to - page_start) as usize].fill(0),
            }
            let update = if pagestore::page::is_zero(&page) {
                None
            } else {
                Some(Bytes::from(page))
            };
            updates.push((i, update));
        }
        let mut dirty = self.dirty.write().unwrap_or_else(|p| p.into_inner());
        dirty.extend(updates);
        Ok(())
    }

    /// Commits the overlay as the next generation of the tenant; returns it, or `None` when
    /// nothing was written since the last flush (or the export is read-only).
    pub async fn flush(&self) -> Result<Option<CheckpointRef>> {
        let Some(lock) = self.overlay.as_ref() else {
            return Ok(None);
        };
        let _guard = lock.lock().await;
        let changes: Vec<(u64, Option<Bytes>)> = {
            let dirty = self.dirty.read().unwrap_or_else(|p| p.into_inner());
            dirty.iter().map(|(k, v)| (*k, v.clone())).collect()
        };
        if changes.is_empty() {
            return Ok(None);
        }
        let base = self.checkpoint();
        let replacements: Vec<(u64, &[u8])> = changes
            .iter()
            .map(|(i, p)| (*i, p.as_deref().unwrap_or(&ZERO_PAGE[..])))
            .collect();
        let derived = self.store.derive(&base, &self.file, &replacements).await?;
        for (i, p) in &changes {
            if let (Some(b), Some(id)) = (p, derived.pages.get(*i as usize)) {
                self.cache.insert(*id, b.clone());
            }
        }
        {
            let mut b = self.base.write().unwrap_or_else(|p| p.into_inner());
            let mut dirty = self.dirty.write().unwrap_or_else(|p| p.into_inner());
            let filled = b.slots.iter().filter(|s| s.get().is_some()).count();
            self.slot_budget.fetch_add(filled, Ordering::Relaxed);
            *b = Base::new(derived.checkpoint.clone(), derived.pages);
            dirty.clear();
        }
        info!(
            export = %self.name,
            checkpoint = %derived.checkpoint.id,
            generation = derived.checkpoint.generation,
            pages = derived.pages_changed,
            "flush committed a new generation"
        );
        Ok(Some(derived.checkpoint))
    }
}

/// Cuts whole pages (the first being page `first`) down to `[offset, offset + len)`.
fn clip(first: u64, offset: u64, len: u64, pages: Vec<Page>) -> Vec<Piece> {
    let end = offset + len;
    pages
        .into_iter()
        .enumerate()
        .map(|(k, page)| {
            let page_start = (first + k as u64) * PAGE;
            let from = offset.max(page_start) - page_start;
            let to = end.min(page_start + PAGE) - page_start;
            Piece {
                page,
                from: from as usize,
                len: (to - from) as usize,
            }
        })
        .collect()
}

/// Which checkpoint files to export: `ID` (every paged file) or `ID:FILE`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportSpec {
    pub checkpoint: String,
    pub file: Option<String>,
}

impl std::str::FromStr for ExportSpec {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let (checkpoint, file) = match s.split_once(':') {
            Some((c, f)) if !f.is_empty() => (c, Some(f.to_string())),
            Some(_) => return Err(format!("{s:?}: empty file name after ':'")),
            None => (s, None),
        };
        if checkpoint.is_empty() {
            return Err(format!("{s:?}: no checkpoint id"));
        }
        Ok(ExportSpec {
            checkpoint: checkpoint.to_string(),
            file,
        })
    }
}

/// Options that apply to every export of a server.
#[derive(Clone, Debug)]
pub struct ExportOptions {
    pub writable: bool,
    /// Pages kept decoded in memory, shared by all exports.
    pub cache_pages: usize,
}

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions {
            writable: false,
            cache_pages: 128 * 1024, // 512 MiB
        }
    }
}

/// The exports of one server, by name.
pub struct ExportTable {
    exports: BTreeMap<String, Arc<Export>>,
}

impl ExportTable {
    /// Resolves each spec against the store and builds its exports.
    pub async fn open(
        store: Arc<PageStore>,
        specs: &[ExportSpec],
        options: &ExportOptions,
    ) -> Result<ExportTable> {
        let cache = Arc::new(PageCache::new(options.cache_pages));
        let slot_budget = Arc::new(AtomicUsize::new(options.cache_pages));
        let mut exports = BTreeMap::new();
        for spec in specs {
            let checkpoint = store.resolve(&spec.checkpoint).await?;
            let manifest = store.manifest(&checkpoint).await?;
            let mut found = 0;
            for file in &manifest.files {
                let FileContent::Paged(pages) = &file.content else {
                    continue;
                };
                if spec.file.as_ref().is_some_and(|f| *f != file.name) {
                    continue;
                }
                found += 1;
                let name = format!("{}/{}", checkpoint.id, file.name);
                let export = Export {
                    name: name.clone(),
                    file: file.name.clone(),
                    size: file.size,
                    store: store.clone(),
                    cache: cache.clone(),
                    slot_budget: slot_budget.clone(),
                    base: RwLock::new(Base::new(checkpoint.clone(), pages.clone())),
                    overlay: options.writable.then(|| tokio::sync::Mutex::new(())),
                    dirty: RwLock::new(BTreeMap::new()),
                };
                exports.insert(name, Arc::new(export));
            }
            if found == 0 {
                return Err(Error::NothingToExport {
                    checkpoint: checkpoint.id.to_string(),
                    file: spec.file.clone(),
                });
            }
        }
        Ok(ExportTable { exports })
    }

    /// The export called `name`; the empty name means the only export, if there is just one.
    pub fn get(&self, name: &str) -> Option<&Arc<Export>> {
        if name.is_empty() && self.exports.len() == 1 {
            return self.exports.values().next();
        }
        self.exports.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.exports.keys().map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.exports.len()
    }

    pub fn is_empty(&self) -> bool {
        self.exports.is_empty()
    }

    /// Reads every stored page of every export into memory (for warm benchmarks); returns how
    /// many pages were read.
    pub async fn warm(&self) -> Result<usize> {
        let mut n = 0;
        for e in self.exports.values() {
            let (sources, slots) = e.sources(0, (e.size.div_ceil(PAGE)).max(1) - 1);
            let slots = &slots;
            n += sources
                .iter()
                .filter(|s| matches!(s, Source::Stored { .. }))
                .count();
            stream::iter(sources)
                .map(|s| e.resolve(s, slots))
                .buffer_unordered(FETCH_CONCURRENCY)
                .try_collect::<Vec<_>>()
                .await?;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_specs_parse() {
        assert_eq!(
            "abcdef".parse(),
            Ok(ExportSpec {
                checkpoint: "abcdef".into(),
                file: None
            })
        );
        assert_eq!(
            "abcdef:pages-1.img".parse(),
            Ok(ExportSpec {
                checkpoint: "abcdef".into(),
                file: Some("pages-1.img".into())
            })
        );
        assert!("abcdef:".parse::<ExportSpec>().is_err());
        assert!(":x".parse::<ExportSpec>().is_err());
    }
}
