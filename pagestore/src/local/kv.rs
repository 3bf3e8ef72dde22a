//! The little a FIFO page cache needs of an embedded KV store: two ordered maps, point reads and
//! writes, the first entry, the last key, a scan, and a flush.
//!
//! It exists so that the cache logic ([`super::FifoTier`]) is written once and the engines (sled,
//! fjall) can be compared under exactly the same semantics.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::error::{Error, Result};

/// The two maps of the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Map {
    /// page id → codec | seq | encoded page.
    Pages,
    /// seq (big-endian) → page id: the caching order, oldest first.
    Order,
}

/// One change in a [`KvStore::write_batch`].
#[derive(Clone, Copy, Debug)]
pub(crate) enum Write<'a> {
    Insert(Map, &'a [u8], &'a [u8]),
    Remove(Map, &'a [u8]),
}

/// One embedded KV engine holding the two [`Map`]s.
pub(crate) trait KvStore: Send + Sync + 'static {
    fn get(&self, map: Map, key: &[u8]) -> Result<Option<Vec<u8>>>;
    fn remove(&self, map: Map, key: &[u8]) -> Result<()>;
    /// Applies `writes` as one engine write (a pack's pages cost one journal write, not two
    /// per page). Across a crash, the inserts into [`Map::Order`] land no later than those into
    /// [`Map::Pages`], and the removals from [`Map::Order`] no earlier (fjall applies the batch
    /// atomically; sled in that order).
    fn write_batch(&self, writes: &[Write<'_>]) -> Result<()>;
    /// The entry with the smallest key at or after `from`. (Starting past the keys known to be
    /// deleted matters in an LSM tree, where a scan from the start would step over every
    /// tombstone not yet compacted away.)
    fn first_from(&self, map: Map, from: &[u8]) -> Result<Option<(Vec<u8>, Vec<u8>)>>;
    /// The largest key.
    fn last_key(&self, map: Map) -> Result<Option<Vec<u8>>>;
    /// Every entry, in key order.
    fn for_each(&self, map: Map, f: &mut dyn FnMut(&[u8], &[u8])) -> Result<()>;
    /// Number of entries and bytes of their values.
    fn count_values(&self, map: Map) -> Result<(u64, u64)>;
    /// Empties every map and gives their disk back.
    fn clear(&self) -> Result<()>;
    /// Makes what was written durable.
    fn flush(&self) -> Result<()>;
    /// Bytes the engine occupies on disk (for the benchmark).
    fn disk_bytes(&self) -> Result<u64>;
}

/// Wraps an engine error with the engine and the path.
pub(crate) fn local_error(
    engine: &'static str,
    path: &Path,
    source: impl std::error::Error + Send + Sync + 'static,
) -> Error {
    Error::Local {
        engine,
        path: path.to_path_buf(),
        source: Box::new(source),
    }
}

/// Bytes of disk the files under `dir` occupy.
pub fn dir_bytes(dir: &Path) -> Result<u64> {
    let mut total = 0;
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let meta = entry.metadata().map_err(|e| Error::io(entry.path(), e))?;
        total += if meta.is_dir() {
            dir_bytes(&entry.path())?
        } else {
            // Allocated, not apparent, size: engines free space by punching holes.
            meta.blocks() * 512
        };
    }
    Ok(total)
}
