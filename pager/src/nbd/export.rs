//! Exports: one block device per paged file of a stored checkpoint, and the table that names them.
//!
//! An export is a view of one file's page list. Reads resolve each page to "zero" (never stored,
//! sent as a hole) or a stored page, read through the store's tiers: the pages of one request
//! that are not all in memory go to the store in one call, so its cold-read planner sees them
//! together (a cold read of N neighbouring pages is one ranged GET, not N). Decoded pages are
//! kept in one place, the store's memory tier, shared by every export and connection and by
//! anything else reading the same store; it hands out shared buffers that are sent to sockets
//! without copying.
//!
//! A writable export adds a copy-on-write overlay: written pages live in memory until FLUSH, which
//! commits them as a derived checkpoint (the next generation of the tenant) and makes that the
//! export's new base. Export names (`ID/FILE`) are keys of a table, never paths.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use pagestore::page::ZERO_PAGE;
use pagestore::{CheckpointRef, FileContent, PageId, PageSpan, PageStore, PAGE_SIZE};
use tracing::info;

use crate::error::{Error, Result};

/// Pages one warm-up read asks of the store at a time.
const WARM_BATCH: usize = 1024;

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

/// How a page of an export resolves before any read of the store.
enum Source {
    Zero,
    /// Written since the last flush.
    Written(Bytes),
    /// Stored under this id.
    Stored(PageId),
}

/// The committed state of an export: the checkpoint it shows and the file's page list there.
struct Base {
    checkpoint: CheckpointRef,
    pages: Arc<Vec<PageId>>,
}

/// Pages written since the last flush, by page index (`None` = written as zeros).
type Dirty = BTreeMap<u64, Option<Bytes>>;

pub struct Export {
    name: String,
    file: String,
    size: u64,
    store: Arc<PageStore>,
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

    /// What each page of `span` resolves to.
    fn sources(&self, span: PageSpan) -> Vec<Source> {
        let base = self.base.read().unwrap_or_else(|p| p.into_inner());
        let stored = |i: u64| match base.pages.get(i as usize) {
            Some(id) if !id.is_zero() => Source::Stored(*id),
            _ => Source::Zero,
        };
        let indexes = span.first_page()..=span.last_page();
        if self.overlay.is_none() {
            indexes.map(stored).collect()
        } else {
            let dirty = self.dirty.read().unwrap_or_else(|p| p.into_inner());
            indexes
                .map(|i| match dirty.get(&i) {
                    Some(Some(b)) => Source::Written(b.clone()),
                    Some(None) => Source::Zero,
                    None => stored(i),
                })
                .collect()
        }
    }

    /// The pages of `sources` given the stored ones in order (`stored`).
    fn assemble(sources: Vec<Source>, stored: Vec<Bytes>) -> Vec<Page> {
        let mut stored = stored.into_iter();
        sources
            .into_iter()
            .map(|s| match s {
                Source::Zero => Page::Zero,
                Source::Written(b) => Page::Data(b),
                Source::Stored(_) => stored.next().map_or(Page::Zero, Page::Data),
            })
            .collect()
    }

    fn stored_ids(sources: &[Source]) -> Vec<PageId> {
        sources
            .iter()
            .filter_map(|s| match s {
                Source::Stored(id) => Some(*id),
                _ => None,
            })
            .collect()
    }

    /// The pages of `sources` without waiting: when every stored one is in the memory tier.
    fn now(&self, sources: Vec<Source>) -> std::result::Result<Vec<Page>, Vec<Source>> {
        let ids = Self::stored_ids(&sources);
        if ids.is_empty() {
            return Ok(Self::assemble(sources, Vec::new()));
        }
        match self.store.hot().get_all(&ids) {
            Some(held) => Ok(Self::assemble(sources, held)),
            None => Err(sources),
        }
    }

    /// The pages of `sources`: the stored ones not all in memory are read in one call to the
    /// store, which plans their cold reads together.
    async fn resolve(&self, sources: Vec<Source>) -> Result<Vec<Page>> {
        let sources = match self.now(sources) {
            Ok(pages) => return Ok(pages),
            Err(sources) => sources,
        };
        let stored = self.store.read_pages(&Self::stored_ids(&sources)).await?;
        Ok(Self::assemble(sources, stored))
    }

    /// The pages under `[offset, offset + len)`, clipped to each page; the caller has checked the
    /// range lies within the export and `len > 0`.
    pub async fn read(&self, offset: u64, len: u64) -> Result<Vec<Piece>> {
        let Some(span) = PageSpan::new(offset, len) else {
            return Ok(Vec::new());
        };
        let pages = self.resolve(self.sources(span)).await?;
        Ok(clip(span, pages))
    }

    /// Like [`Export::read`], but only when every page is at hand (a hole, written, or in the
    /// memory tier): the common case, answered without leaving the connection's reader task.
    pub fn read_now(&self, offset: u64, len: u64) -> Option<Vec<Piece>> {
        let span = PageSpan::new(offset, len)?;
        let pages = self.now(self.sources(span)).ok()?;
        Some(clip(span, pages))
    }

    /// Allocation extents of `[offset, offset + len)` as `(length, is_zero)`, merging runs; the
    /// caller has checked the range. Stops early after the first extent when `one` is set.
    pub fn extents(&self, offset: u64, len: u64, one: bool) -> Vec<(u64, bool)> {
        let Some(span) = PageSpan::new(offset, len) else {
            return Vec::new();
        };
        let mut out: Vec<(u64, bool)> = Vec::new();
        for (slice, s) in span.slices().zip(self.sources(span)) {
            let n = slice.bytes.len() as u64;
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
        let Some(span) = PageSpan::new(offset, len) else {
            return Ok(());
        };
        let mut updates: Vec<(u64, Option<Bytes>)> = Vec::with_capacity(span.pages().len());
        for slice in span.slices() {
            let chunk = data.map(|d| &d[slice.at..slice.at + slice.bytes.len()]);
            let mut page = if slice.is_whole() {
                vec![0u8; PAGE_SIZE]
            } else {
                // Read-modify-write of a partly written page.
                let one = PageSpan::new(slice.page * PAGE_SIZE as u64, PAGE_SIZE as u64)
                    .map(|s| self.sources(s))
                    .unwrap_or_default();
                let mut pages = self.resolve(one).await?;
                pages.pop().unwrap_or(Page::Zero).bytes().to_vec()
            };
            match chunk {
                Some(c) => page[slice.bytes.clone()].copy_from_slice(c),
                None => page[slice.bytes.clone()].fill(0),
            }
            let update = if pagestore::page::is_zero(&page) {
                None
            } else {
                Some(Bytes::from(page))
            };
            updates.push((slice.page, update));
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
        // The written pages are named by `derive` from these very bytes: checked by construction.
        for (i, p) in &changes {
            if let (Some(b), Some(id)) = (p, derived.pages.get(*i as usize)) {
                self.store.hot().insert_shared(*id, b.clone());
            }
        }
        {
            let mut b = self.base.write().unwrap_or_else(|p| p.into_inner());
            let mut dirty = self.dirty.write().unwrap_or_else(|p| p.into_inner());
            *b = Base {
                checkpoint: derived.checkpoint.clone(),
                pages: Arc::new(derived.pages),
            };
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

/// Cuts whole pages (those `span` touches, in order) down to the span.
fn clip(span: PageSpan, pages: Vec<Page>) -> Vec<Piece> {
    span.slices()
        .zip(pages)
        .map(|(slice, page)| Piece {
            page,
            from: slice.bytes.start,
            len: slice.bytes.len(),
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

/// Options that apply to every export of a server. Decoded pages are kept in the store's memory
/// tier (`[hot] max_bytes`), shared by all exports.
#[derive(Clone, Debug, Default)]
pub struct ExportOptions {
    pub writable: bool,
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
                    base: RwLock::new(Base {
                        checkpoint: checkpoint.clone(),
                        pages: Arc::new(pages.clone()),
                    }),
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
            let ids: Vec<PageId> = {
                let base = e.base.read().unwrap_or_else(|p| p.into_inner());
                base.pages
                    .iter()
                    .filter(|id| !id.is_zero())
                    .copied()
                    .collect()
            };
            n += ids.len();
            for batch in ids.chunks(WARM_BATCH) {
                e.store.read_pages(batch).await?;
            }
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
