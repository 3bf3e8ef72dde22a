//! The local tier: encoded pages cached on the worker's own disk, in an embedded KV store.
//!
//! It is a cache, never the only copy: a page that fails its hash here is dropped and read again
//! from the cold tier. Behind a trait so that embedded stores can be compared (sled is the
//! specified one; see docs/ARCHITECTURE.md).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::codec::Codec;
use crate::error::{Error, Result};
use crate::page::PageId;

/// What the store needs of a local page cache.
pub trait LocalTier: Send + Sync {
    fn get(&self, id: &PageId) -> Result<Option<(Codec, Vec<u8>)>>;
    /// Caches a page, evicting others when the tier is over its bound.
    fn put(&self, id: &PageId, codec: Codec, encoded: &[u8]) -> Result<()>;
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
}

/// The local tier in sled.
///
/// Tree `pages`: page id → codec u8 | seq u64 | encoded page. Tree `order`: seq (big-endian) → page
/// id, so the oldest cached page is the first key. Eviction is FIFO by caching order: when the
/// tier holds more than its bound, the oldest pages go until it is back under 90% of it. Why FIFO
/// and not LRU: a hit here would otherwise cost a sled write (sled already writes ~2.45x what it
/// stores), and recency is already caught in memory by the hot tier (CLOCK) in front of this one;
/// what stays here is what was fetched most recently, i.e. the tenants restored most recently.
pub struct SledTier {
    path: PathBuf,
    db: sled::Db,
    pages: sled::Tree,
    order: sled::Tree,
    max_bytes: u64,
    bytes: AtomicU64,
    evictions: AtomicU64,
    evicting: Mutex<()>,
}

/// Value layout: codec (1) + seq (8) + encoded page.
const VALUE_HEADER: usize = 9;

impl SledTier {
    /// Opens (or creates) the tier. Returns `Ok(None)` when another process holds it (sled takes an
    /// exclusive lock): the caller then runs without a local tier.
    pub fn open(path: &Path, max_bytes: u64) -> Result<Option<SledTier>> {
        let db = match sled::Config::new().path(path).open() {
            Ok(db) => db,
            Err(sled::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {
                return Ok(None)
            }
            Err(e) if e.to_string().contains("lock") => return Ok(None),
            Err(source) => {
                return Err(Error::Local {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        let err = |source| Error::Local {
            path: path.to_path_buf(),
            source,
        };
        // Pages cached by earlier builds (default tree, without seq) are dropped: it is a cache.
        db.clear().map_err(err)?;
        let pages = db.open_tree("pages").map_err(err)?;
        let order = db.open_tree("order").map_err(err)?;
        let mut bytes = 0;
        for kv in pages.iter() {
            let (_, v) = kv.map_err(err)?;
            bytes += v.len() as u64;
        }
        let tier = SledTier {
            path: path.to_path_buf(),
            db,
            pages,
            order,
            max_bytes,
            bytes: AtomicU64::new(bytes),
            evictions: AtomicU64::new(0),
            evicting: Mutex::new(()),
        };
        tier.evict_if_over()?;
        Ok(Some(tier))
    }

    fn err(&self, source: sled::Error) -> Error {
        Error::Local {
            path: self.path.clone(),
            source,
        }
    }

    /// Drops the oldest pages until the tier is under 90% of its bound (one evictor at a time).
    fn evict_if_over(&self) -> Result<()> {
        if self.bytes.load(Ordering::Relaxed) <= self.max_bytes {
            return Ok(());
        }
        let Ok(_one) = self.evicting.try_lock() else {
            return Ok(());
        };
        let low = self.max_bytes / 10 * 9;
        while self.bytes.load(Ordering::Relaxed) > low {
            let Some((seq, id)) = self.order.pop_min().map_err(|e| self.err(e))? else {
                break;
            };
            let Some(v) = self.pages.get(&id).map_err(|e| self.err(e))? else {
                continue;
            };
            // Only if the page was not cached again (under a newer seq) meanwhile.
            if v.get(1..VALUE_HEADER) == Some(&seq[..]) {
                let len = v.len() as u64;
                let swapped = self
                    .pages
                    .compare_and_swap(&id, Some(v), None as Option<&[u8]>)
                    .map_err(|e| self.err(e))?;
                if swapped.is_ok() {
                    self.sub_bytes(len);
                    self.evictions.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        Ok(())
    }

    fn sub_bytes(&self, n: u64) {
        let _ = self
            .bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                Some(b.saturating_sub(n))
            });
    }
}

fn decode_value(v: &[u8]) -> Option<(Codec, &[u8])> {
    if v.len() < VALUE_HEADER {
        return None;
    }
    Some((Codec::from_u8(v[0])?, &v[VALUE_HEADER..]))
}

impl LocalTier for SledTier {
    fn get(&self, id: &PageId) -> Result<Option<(Codec, Vec<u8>)>> {
        let v = self.pages.get(id.0).map_err(|e| self.err(e))?;
        Ok(v.and_then(|v| decode_value(&v).map(|(c, d)| (c, d.to_vec()))))
    }

    fn put(&self, id: &PageId, codec: Codec, encoded: &[u8]) -> Result<()> {
        if self.max_bytes == 0 {
            return Ok(());
        }
        let seq = self
            .db
            .generate_id()
            .map_err(|e| self.err(e))?
            .to_be_bytes();
        let mut v = Vec::with_capacity(encoded.len() + VALUE_HEADER);
        v.push(codec as u8);
        v.extend_from_slice(&seq);
        v.extend_from_slice(encoded);
        let len = v.len() as u64;
        self.order.insert(seq, &id.0).map_err(|e| self.err(e))?;
        let old = self.pages.insert(id.0, v).map_err(|e| self.err(e))?;
        self.bytes.fetch_add(len, Ordering::Relaxed);
        if let Some(old) = old {
            self.sub_bytes(old.len() as u64);
            if let Some(old_seq) = old.get(1..VALUE_HEADER) {
                self.order.remove(old_seq).map_err(|e| self.err(e))?;
            }
        }
        self.evict_if_over()
    }

    fn remove(&self, id: &PageId) -> Result<()> {
        if let Some(old) = self.pages.remove(id.0).map_err(|e| self.err(e))? {
            self.sub_bytes(old.len() as u64);
            if let Some(seq) = old.get(1..VALUE_HEADER) {
                self.order.remove(seq).map_err(|e| self.err(e))?;
            }
        }
        Ok(())
    }

    fn usage(&self) -> Result<(u64, u64)> {
        Ok((self.pages.len() as u64, self.bytes.load(Ordering::Relaxed)))
    }

    fn for_each(&self, f: &mut dyn FnMut(PageId, Codec, &[u8])) -> Result<()> {
        for kv in self.pages.iter() {
            let (k, v) = kv.map_err(|e| self.err(e))?;
            let Ok(key) = <[u8; 32]>::try_from(&k[..]) else {
                continue;
            };
            // An undecodable value is handed on as raw bytes so that verify reports it.
            match decode_value(&v) {
                Some((c, d)) => f(PageId(key), c, d),
                None => f(PageId(key), Codec::Raw, &v),
            }
        }
        Ok(())
    }

    fn clear(&self) -> Result<()> {
        self.pages.clear().map_err(|e| self.err(e))?;
        self.order.clear().map_err(|e| self.err(e))?;
        self.bytes.store(0, Ordering::Relaxed);
        self.flush()
    }

    fn flush(&self) -> Result<()> {
        self.db.flush().map_err(|e| self.err(e))?;
        Ok(())
    }

    fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sled_tier_round_trip_and_lock() {
        let dir = tempfile::tempdir().unwrap();
        let t = SledTier::open(&dir.path().join("local"), 1 << 20)
            .unwrap()
            .unwrap();
        let id = PageId([3; 32]);
        t.put(&id, Codec::Lz4, b"abc").unwrap();
        assert_eq!(t.get(&id).unwrap(), Some((Codec::Lz4, b"abc".to_vec())));
        assert_eq!(t.usage().unwrap(), (1, 12));
        t.put(&id, Codec::Lz4, b"abcd").unwrap();
        assert_eq!(t.usage().unwrap(), (1, 13));
        t.remove(&id).unwrap();
        assert_eq!(t.get(&id).unwrap(), None);
        assert_eq!(t.usage().unwrap(), (0, 0));
    }

    #[test]
    fn bounded_by_bytes_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let page = vec![1u8; 1000];
        // Room for 10 values of 1009 bytes.
        let t = SledTier::open(&dir.path().join("local"), 10_100)
            .unwrap()
            .unwrap();
        for i in 0..30u8 {
            t.put(&PageId([i; 32]), Codec::Raw, &page).unwrap();
            assert!(t.usage().unwrap().1 <= 10_100);
        }
        assert!(t.evictions() >= 20);
        assert!(t.get(&PageId([0; 32])).unwrap().is_none());
        assert!(t.get(&PageId([29; 32])).unwrap().is_some());
        let (pages, bytes) = t.usage().unwrap();
        assert_eq!(bytes, pages * 1009);
        drop(t);
        // The byte count survives a reopen, and a smaller bound evicts at once.
        let t = SledTier::open(&dir.path().join("local"), 3_000)
            .unwrap()
            .unwrap();
        assert!(t.usage().unwrap().1 <= 3_000);
        assert!(t.get(&PageId([29; 32])).unwrap().is_some());
    }
}
