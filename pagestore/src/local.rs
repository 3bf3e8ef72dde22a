//! The local tier: encoded pages cached on the worker's own disk, in an embedded KV store.
//!
//! It is a cache, never the only copy: a page that fails its hash here is dropped and read again
//! from the cold tier (a miss, not an error). The cache logic ([`FifoTier`]) is written once over a
//! small KV interface ([`kv::KvStore`]) with one implementation per engine, sled and fjall, chosen
//! by `[local] engine` (the comparison is in docs/ARCHITECTURE.md).

mod filler;
mod fjall_kv;
mod kv;
pub(crate) use filler::cache_fetched;
pub use filler::{FetchedPage, Filler, IngestGuard};
pub use kv::dir_bytes;
mod sled_kv;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use tracing::warn;

use crate::codec::Codec;
use crate::config::{LocalConfig, LocalEngine};
use crate::error::{Error, Result};
use crate::page::PageId;
use fjall_kv::{is_fjall_dir, FjallKv};
use kv::{KvStore, Map, Write};
use sled_kv::{is_sled_dir, SledKv};

/// What the store needs of a local page cache.
pub trait LocalTier: Send + Sync {
    fn get(&self, id: &PageId) -> Result<Option<(Codec, Vec<u8>)>>;
    /// Caches a page, evicting others when the tier is over its bound.
    fn put(&self, id: &PageId, codec: Codec, encoded: &[u8]) -> Result<()> {
        self.put_many(&[(*id, codec, encoded)])
    }
    /// Caches many pages (an ingested pack's) in one engine write, then evicts as [`Self::put`].
    fn put_many(&self, pages: &[(PageId, Codec, &[u8])]) -> Result<()>;
    fn remove(&self, id: &PageId) -> Result<()>;
    /// Number of pages and bytes held.
    fn usage(&self) -> Result<(u64, u64)>;
    /// Every page held, for `verify`.
    fn for_each(&self, f: &mut dyn FnMut(PageId, Codec, &[u8])) -> Result<()>;
    fn clear(&self) -> Result<()>;
    fn flush(&self) -> Result<()>;
    /// The configured bound in bytes.
    fn max_bytes(&self) -> u64;
    /// Pages evicted to stay under the bound since open.
    fn evictions(&self) -> u64;
    /// Bytes the engine occupies on disk.
    fn disk_bytes(&self) -> Result<u64>;
    /// `sled` or `fjall`.
    fn engine(&self) -> LocalEngine;
}

/// Opens the local tier `config` describes. `Ok(None)` when another process (a running worker)
/// holds it: the caller then runs without one.
///
/// A directory left by the other engine is a cache of no use to this one: it is emptied first.
pub fn open(config: &LocalConfig) -> Result<Option<Box<dyn LocalTier>>> {
    let path = &config.path;
    let foreign = match config.engine {
        LocalEngine::Sled => is_fjall_dir(path),
        LocalEngine::Fjall => is_sled_dir(path),
    };
    if foreign {
        warn!(
            path = %path.display(),
            engine = %config.engine,
            "the local tier directory holds the other engine's cache; emptying it"
        );
        std::fs::remove_dir_all(path).map_err(|e| Error::io(path, e))?;
    }
    match open_engine(config) {
        Err(e) if path.exists() => {
            // A cache: every page in it is in the cold tier too. One the engine cannot open
            // (damaged by a crash, a full disk, a bug) is started afresh, not a reason to stop.
            warn!(
                path = %path.display(),
                engine = %config.engine,
                error = %e,
                "the local tier cannot be opened; emptying it and starting afresh"
            );
            std::fs::remove_dir_all(path).map_err(|e| Error::io(path, e))?;
            open_engine(config)
        }
        opened => opened,
    }
}

fn open_engine(config: &LocalConfig) -> Result<Option<Box<dyn LocalTier>>> {
    let path = &config.path;
    Ok(match config.engine {
        LocalEngine::Sled => SledKv::open(path)?
            .map(|kv| FifoTier::open(kv, LocalEngine::Sled, config.max_bytes))
            .transpose()?
            .map(|t| Box::new(t) as Box<dyn LocalTier>),
        LocalEngine::Fjall => FjallKv::open(path)?
            .map(|kv| FifoTier::open(kv, LocalEngine::Fjall, config.max_bytes))
            .transpose()?
            .map(|t| Box::new(t) as Box<dyn LocalTier>),
    })
}

/// A page cache bounded in bytes with FIFO eviction, over any [`KvStore`].
///
/// Map `Pages`: page id → codec u8 | seq u64 | encoded page. Map `Order`: seq (big-endian) → page
/// id, so the oldest cached page is the first key. When the tier holds more than its bound, the
/// oldest pages go until it is back under 90% of it. Why FIFO and not LRU: a hit here would
/// otherwise cost a write, and recency is already caught in memory by the hot tier (CLOCK) in
/// front of this one; what stays here is what was fetched most recently, i.e. the tenants restored
/// most recently.
///
/// Writes (put, remove, eviction) are serialized by one lock, so the two maps never disagree
/// within a process; reads take no lock. Across a crash the order is written before the page and
/// removed after it, so the worst left behind is an order entry without its page (skipped).
pub(crate) struct FifoTier<K> {
    kv: K,
    engine: LocalEngine,
    max_bytes: u64,
    pages: AtomicU64,
    bytes: AtomicU64,
    next_seq: AtomicU64,
    /// No cached page is older than this seq (everything before it was evicted in this process).
    oldest_seq: AtomicU64,
    evictions: AtomicU64,
    writing: Mutex<()>,
}

/// Value layout: codec (1) + seq (8) + encoded page.
const VALUE_HEADER: usize = 9;

fn decode_value(v: &[u8]) -> Option<(Codec, &[u8])> {
    if v.len() < VALUE_HEADER {
        return None;
    }
    Some((Codec::from_u8(v[0])?, &v[VALUE_HEADER..]))
}

impl<K: KvStore> FifoTier<K> {
    fn open(kv: K, engine: LocalEngine, max_bytes: u64) -> Result<Self> {
        let (pages, bytes) = kv.count_values(Map::Pages)?;
        let next_seq = match kv.last_key(Map::Order)? {
            Some(k) => <[u8; 8]>::try_from(&k[..]).map_or(0, u64::from_be_bytes) + 1,
            None => 0,
        };
        let tier = FifoTier {
            kv,
            engine,
            max_bytes,
            pages: AtomicU64::new(pages),
            bytes: AtomicU64::new(bytes),
            next_seq: AtomicU64::new(next_seq),
            oldest_seq: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
            writing: Mutex::new(()),
        };
        {
            let _w = tier.write_lock();
            tier.evict_if_over()?;
        }
        Ok(tier)
    }

    fn write_lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.writing.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Drops the oldest pages until the tier is under 90% of its bound, in one engine write.
    /// Under the write lock.
    fn evict_if_over(&self) -> Result<()> {
        if self.bytes.load(Ordering::Relaxed) <= self.max_bytes {
            return Ok(());
        }
        let low = self.max_bytes / 10 * 9;
        let mut left = self.bytes.load(Ordering::Relaxed);
        // (order key, page id, bytes freed if the page goes with it)
        let mut doomed: Vec<(Vec<u8>, Vec<u8>, Option<u64>)> = Vec::new();
        while left > low {
            let from = self.oldest_seq.load(Ordering::Relaxed).to_be_bytes();
            let Some((seq, id)) = self.kv.first_from(Map::Order, &from)? else {
                break;
            };
            if let Ok(n) = <[u8; 8]>::try_from(&seq[..]) {
                self.oldest_seq
                    .store(u64::from_be_bytes(n) + 1, Ordering::Relaxed);
            }
            // Only if the page was not cached again (under a newer seq) since.
            let freed = match self.kv.get(Map::Pages, &id)? {
                Some(v) if v.get(1..VALUE_HEADER) == Some(&seq[..]) => Some(v.len() as u64),
                _ => None,
            };
            left = left.saturating_sub(freed.unwrap_or(0));
            doomed.push((seq, id, freed));
        }
        let mut writes = Vec::with_capacity(doomed.len() * 2);
        for (_, id, freed) in &doomed {
            if freed.is_some() {
                writes.push(Write::Remove(Map::Pages, id));
            }
        }
        for (seq, _, _) in &doomed {
            writes.push(Write::Remove(Map::Order, seq));
        }
        self.kv.write_batch(&writes)?;
        for (_, _, freed) in doomed {
            if let Some(bytes) = freed {
                self.forget(bytes);
                self.evictions.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    fn forget(&self, bytes: u64) {
        let sub = |n: u64| move |b: u64| Some(b.saturating_sub(n));
        let _ = self
            .bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, sub(bytes));
        let _ = self
            .pages
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, sub(1));
    }
}

impl<K: KvStore> LocalTier for FifoTier<K> {
    fn get(&self, id: &PageId) -> Result<Option<(Codec, Vec<u8>)>> {
        let v = self.kv.get(Map::Pages, &id.0)?;
        Ok(v.and_then(|v| decode_value(&v).map(|(c, d)| (c, d.to_vec()))))
    }

    fn put_many(&self, pages: &[(PageId, Codec, &[u8])]) -> Result<()> {
        if self.max_bytes == 0 || pages.is_empty() {
            return Ok(());
        }
        let _w = self.write_lock();
        let mut seen = std::collections::HashSet::with_capacity(pages.len());
        // (page id, order key, value, the value it replaces)
        let mut rows = Vec::with_capacity(pages.len());
        for (id, codec, encoded) in pages {
            if !seen.insert(*id) {
                continue;
            }
            let seq = self.next_seq.fetch_add(1, Ordering::Relaxed).to_be_bytes();
            let mut v = Vec::with_capacity(encoded.len() + VALUE_HEADER);
            v.push(*codec as u8);
            v.extend_from_slice(&seq);
            v.extend_from_slice(encoded);
            let old = self.kv.get(Map::Pages, &id.0)?;
            rows.push((id, seq, v, old));
        }
        let mut writes = Vec::with_capacity(rows.len() * 3);
        for (id, seq, v, _) in &rows {
            writes.push(Write::Insert(Map::Order, seq, &id.0));
            writes.push(Write::Insert(Map::Pages, &id.0, v));
        }
        for (_, _, _, old) in &rows {
            if let Some(old_seq) = old.as_ref().and_then(|o| o.get(1..VALUE_HEADER)) {
                writes.push(Write::Remove(Map::Order, old_seq));
            }
        }
        self.kv.write_batch(&writes)?;
        for (_, _, v, old) in &rows {
            self.bytes.fetch_add(v.len() as u64, Ordering::Relaxed);
            self.pages.fetch_add(1, Ordering::Relaxed);
            if let Some(old) = old {
                self.forget(old.len() as u64);
            }
        }
        self.evict_if_over()
    }

    fn remove(&self, id: &PageId) -> Result<()> {
        let _w = self.write_lock();
        if let Some(old) = self.kv.get(Map::Pages, &id.0)? {
            self.kv.remove(Map::Pages, &id.0)?;
            self.forget(old.len() as u64);
            if let Some(seq) = old.get(1..VALUE_HEADER) {
                self.kv.remove(Map::Order, seq)?;
            }
        }
        Ok(())
    }

    fn usage(&self) -> Result<(u64, u64)> {
        Ok((
            self.pages.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
        ))
    }

    fn for_each(&self, f: &mut dyn FnMut(PageId, Codec, &[u8])) -> Result<()> {
        self.kv.for_each(Map::Pages, &mut |k, v| {
            let Ok(key) = <[u8; 32]>::try_from(k) else {
                return;
            };
            // An undecodable value is handed on as raw bytes so that verify reports it.
            match decode_value(v) {
                Some((c, d)) => f(PageId(key), c, d),
                None => f(PageId(key), Codec::Raw, v),
            }
        })
    }

    fn clear(&self) -> Result<()> {
        let _w = self.write_lock();
        self.kv.clear()?;
        self.oldest_seq
            .store(self.next_seq.load(Ordering::Relaxed), Ordering::Relaxed);
        self.bytes.store(0, Ordering::Relaxed);
        self.pages.store(0, Ordering::Relaxed);
        self.kv.flush()
    }

    fn flush(&self) -> Result<()> {
        self.kv.flush()
    }

    fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }

    fn disk_bytes(&self) -> Result<u64> {
        self.kv.disk_bytes()
    }

    fn engine(&self) -> LocalEngine {
        self.engine
    }
}

/// The configuration of a local tier at `path` (tests and benchmarks).
pub fn config_at(path: impl Into<PathBuf>, engine: LocalEngine, max_bytes: u64) -> LocalConfig {
    LocalConfig {
        path: path.into(),
        enabled: true,
        max_bytes,
        engine,
        index_cache: None,
        whole_images_max_bytes: 1 << 30,
    }
}

/// Opens a tier that must be free (tests and benchmarks). Both engines let go of their lock from
/// a background thread a moment after the last handle is dropped, so a reopen in the same process
/// waits for that (up to 5 s).
pub fn open_owned(path: &Path, engine: LocalEngine, max_bytes: u64) -> Result<Box<dyn LocalTier>> {
    let config = config_at(path, engine, max_bytes);
    let started = std::time::Instant::now();
    loop {
        if let Some(tier) = open(&config)? {
            return Ok(tier);
        }
        if started.elapsed() > std::time::Duration::from_secs(5) {
            return Err(Error::LocalHeld {
                path: path.to_path_buf(),
            });
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs one test body against every engine.
    fn each_engine(body: impl Fn(LocalEngine, &Path)) {
        for engine in [LocalEngine::Sled, LocalEngine::Fjall] {
            let dir = tempfile::tempdir().unwrap();
            body(engine, &dir.path().join("local"));
        }
    }

    #[test]
    fn round_trip_replace_remove() {
        each_engine(|engine, path| {
            let t = open_owned(path, engine, 1 << 20).unwrap();
            assert_eq!(t.engine(), engine);
            let id = PageId([3; 32]);
            t.put(&id, Codec::Lz4, b"abc").unwrap();
            assert_eq!(t.get(&id).unwrap(), Some((Codec::Lz4, b"abc".to_vec())));
            assert_eq!(t.usage().unwrap(), (1, 12));
            t.put(&id, Codec::Lz4, b"abcd").unwrap();
            assert_eq!(t.usage().unwrap(), (1, 13));
            t.remove(&id).unwrap();
            assert_eq!(t.get(&id).unwrap(), None);
            assert_eq!(t.usage().unwrap(), (0, 0));
        });
    }

    #[test]
    fn a_second_opener_is_refused() {
        each_engine(|engine, path| {
            let _held = open_owned(path, engine, 1 << 20).unwrap();
            assert!(open(&config_at(path, engine, 1 << 20)).unwrap().is_none());
        });
    }

    #[test]
    fn bounded_by_bytes_oldest_first() {
        each_engine(|engine, path| {
            let page = vec![1u8; 1000];
            // Room for 10 values of 1009 bytes.
            let t = open_owned(path, engine, 10_100).unwrap();
            for i in 0..30u8 {
                t.put(&PageId([i; 32]), Codec::Raw, &page).unwrap();
                assert!(t.usage().unwrap().1 <= 10_100);
            }
            assert!(t.evictions() >= 20);
            assert!(t.get(&PageId([0; 32])).unwrap().is_none());
            assert!(t.get(&PageId([29; 32])).unwrap().is_some());
            let (pages, bytes) = t.usage().unwrap();
            assert_eq!(bytes, pages * 1009);
            t.flush().unwrap();
            drop(t);
            // The byte count survives a reopen, and a smaller bound evicts at once.
            let t = open_owned(path, engine, 3_000).unwrap();
            assert!(t.usage().unwrap().1 <= 3_000);
            assert!(t.get(&PageId([29; 32])).unwrap().is_some());
            // Caching order survives too: new pages go after the old ones.
            t.put(&PageId([30; 32]), Codec::Raw, &page).unwrap();
            t.put(&PageId([31; 32]), Codec::Raw, &page).unwrap();
            assert!(t.get(&PageId([29; 32])).unwrap().is_none());
            assert!(t.get(&PageId([31; 32])).unwrap().is_some());
        });
    }

    #[test]
    fn a_cache_the_engine_cannot_open_is_started_afresh() {
        each_engine(|engine, path| {
            let t = open_owned(path, engine, 1 << 20).unwrap();
            t.put(&PageId([1; 32]), Codec::Raw, b"page").unwrap();
            t.flush().unwrap();
            drop(t);
            damage_every_file(path);
            let t = open_owned(path, engine, 1 << 20).unwrap();
            assert_eq!(t.usage().unwrap(), (0, 0), "{engine}");
            t.put(&PageId([2; 32]), Codec::Raw, b"again").unwrap();
            assert_eq!(
                t.get(&PageId([2; 32])).unwrap(),
                Some((Codec::Raw, b"again".to_vec()))
            );
        });
    }

    fn damage_every_file(dir: &Path) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                damage_every_file(&path);
            } else {
                let len = std::fs::metadata(&path).unwrap().len().max(64);
                std::fs::write(&path, vec![0xa5; len as usize]).unwrap();
            }
        }
    }

    #[test]
    fn filling_and_clearing_again_and_again_does_not_grow_the_disk() {
        // What `bench restore` does to a worker's local tier before every cold run. sled stays
        // at 1.4-2.1x the first fill; fjall, started afresh at each clear, at about one fill. Before, fjall's `Keyspace::clear` never deleted the cleared
        // tables' files (4.4x after four 32 MiB fills, and growing), and deleting keyspaces
        // instead left their files deleted but still open.
        each_engine(|engine, path| {
            let t = open_owned(path, engine, 1 << 30).unwrap();
            let fill = |round: u32| {
                // 8 MiB of distinct pages: less than a memtable, as a cold run caches.
                for i in 0..2048u32 {
                    let mut page = vec![round as u8; 4096];
                    page[..4].copy_from_slice(&i.to_le_bytes());
                    let mut id = [round as u8; 32];
                    id[..4].copy_from_slice(&i.to_le_bytes());
                    t.put(&PageId(id), Codec::Raw, &page).unwrap();
                }
                t.flush().unwrap();
                t.disk_bytes().unwrap()
            };
            let first = fill(0);
            assert!(first > 4 << 20, "{engine}: {first} bytes on disk");
            let mut last = first;
            for round in 1..12 {
                t.clear().unwrap();
                assert_eq!(t.usage().unwrap(), (0, 0));
                let held = deleted_but_open(path);
                assert!(
                    held.is_empty(),
                    "{engine}: deleted files held open: {held:?}"
                );
                last = fill(round);
            }
            // Twelve fills kept would be 12x; sled's file keeps some slack (up to ~2x here).
            assert!(
                last < first * 3,
                "{engine}: {last} bytes on disk after twelve fills of {first}"
            );
            assert_eq!(t.usage().unwrap().0, 2048);
        });
    }

    /// Files under `dir` this process holds open although they were deleted (the disk they
    /// take is not given back, and `du` does not see it).
    fn deleted_but_open(dir: &Path) -> Vec<String> {
        let dir = dir.to_string_lossy().to_string();
        std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .flatten()
            .filter_map(|fd| std::fs::read_link(fd.path()).ok())
            .map(|target| target.to_string_lossy().to_string())
            .filter(|target| target.starts_with(&dir) && target.ends_with(" (deleted)"))
            .collect()
    }

    #[test]
    fn for_each_clear_and_engine_switch() {
        each_engine(|engine, path| {
            let t = open_owned(path, engine, 1 << 20).unwrap();
            for i in 1..=5u8 {
                t.put(&PageId([i; 32]), Codec::Raw, &[i; 10]).unwrap();
            }
            let mut seen = Vec::new();
            t.for_each(&mut |id, codec, data| seen.push((id.0[0], codec, data.to_vec())))
                .unwrap();
            assert_eq!(seen.len(), 5);
            assert!(seen
                .iter()
                .all(|(i, c, d)| *c == Codec::Raw && d == &[*i; 10]));
            assert!(t.disk_bytes().unwrap() > 0);
            t.clear().unwrap();
            assert_eq!(t.usage().unwrap(), (0, 0));
            assert_eq!(t.get(&PageId([1; 32])).unwrap(), None);
            t.put(&PageId([9; 32]), Codec::Raw, b"x").unwrap();
            t.flush().unwrap();
            drop(t);
            // The other engine finds this one's directory, empties it and starts afresh.
            let other = match engine {
                LocalEngine::Sled => LocalEngine::Fjall,
                LocalEngine::Fjall => LocalEngine::Sled,
            };
            let t = open_owned(path, other, 1 << 20).unwrap();
            assert_eq!(t.usage().unwrap(), (0, 0));
            t.put(&PageId([9; 32]), Codec::Raw, b"y").unwrap();
            assert_eq!(
                t.get(&PageId([9; 32])).unwrap(),
                Some((Codec::Raw, b"y".to_vec()))
            );
        });
    }
}
