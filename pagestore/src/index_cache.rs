//! The pack index cache: the tail index of every pack this machine has read, kept on local disk,
//! so that opening the store costs one LIST of `packs/` instead of two ranged GETs per pack.
//!
//! Packs are named by the hash of their bytes and never change, so a cached index for a pack id
//! never goes stale; it only becomes useless when the pack is deleted, and entries of packs that
//! are no longer listed are dropped at each catalog refresh (and when this process's gc deletes
//! a pack). Nothing here is trusted blindly: each entry is one file `<pack id>.idx` checksummed
//! together with the pack id it claims to describe, and the index inside is checked against the
//! pack's own footer (as for a fresh read); an entry that fails either check, or whose pack size
//! differs from the listing, is deleted and the index read again from the cold tier. Writes go
//! to a temporary file renamed into place, so concurrent processes (a worker and the CLI) can
//! share the directory. It is a cache: any failure to write it is logged and ignored.
//!
//! File layout (version 2, what this build writes): `"PICOPIDV"` | version u32 | pack size u64 |
//! pack footer (56) | pack index | blake3(pack id | all the bytes before) (32). Version 1, written
//! before entries carried a version, is the same without the version: `"PICOPIDX"` | pack size
//! u64 | ...; it is still read. An entry of a newer version (a newer picocenter sharing the
//! directory) is not used, and the index is read from the cold tier ([`crate::format`]).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use tracing::{debug, warn};

use crate::error::{Error, Result};
use crate::pack::{self, PackEntry, PackId, FOOTER_LEN};

/// The magic of a versioned entry, followed by its version.
const MAGIC: &[u8; 8] = b"PICOPIDV";
/// The version this build writes, and the newest it reads.
const VERSION: u32 = 2;
const HEADER_LEN: usize = 20;
/// The magic of a version-1 entry (no version field; its header is 16 bytes).
const MAGIC_V1: &[u8; 8] = b"PICOPIDX";
const HEADER_LEN_V1: usize = 16;
const CHECKSUM_LEN: usize = 32;
const SUFFIX: &str = ".idx";

static TMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// Why a cached entry is not used.
enum Unusable {
    /// Damaged, or not this pack's: deleted.
    Damaged(String),
    /// Of a newer version than this build reads (its error names entry and versions): kept.
    Newer(Error),
}

pub struct IndexCache {
    dir: PathBuf,
    /// Entries found damaged and dropped since open.
    pub corrupt: AtomicU64,
}

fn checksum(pack: &PackId, body: &[u8]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(&pack.0);
    h.update(body);
    *h.finalize().as_bytes()
}

impl IndexCache {
    /// Opens (creating) the cache directory.
    pub fn open(dir: &Path) -> Result<IndexCache> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        Ok(IndexCache {
            dir: dir.to_path_buf(),
            corrupt: AtomicU64::new(0),
        })
    }

    fn path_of(&self, pack: &PackId) -> PathBuf {
        self.dir.join(format!("{}{SUFFIX}", pack.to_hex()))
    }

    /// The cached index of `pack` (whose object is `pack_len` bytes), if one is cached and sound.
    pub fn load(&self, pack: &PackId, pack_len: u64) -> Option<Vec<PackEntry>> {
        let path = self.path_of(pack);
        let data = match std::fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                warn!(path = %path.display(), error = %e, "cannot read a cached pack index");
                return None;
            }
        };
        match Self::decode(pack, pack_len, &data) {
            Ok(entries) => Some(entries),
            Err(Unusable::Newer(e)) => {
                // Kept for the newer picocenter that wrote it; this one reads the pack's tail.
                warn!(%pack, error = %e, "not using a cached pack index; reading it again");
                None
            }
            Err(Unusable::Damaged(reason)) => {
                warn!(%pack, reason, "dropping a damaged cached pack index; reading it again");
                self.corrupt.fetch_add(1, Ordering::Relaxed);
                self.remove(pack);
                None
            }
        }
    }

    fn decode(pack: &PackId, pack_len: u64, data: &[u8]) -> Result<Vec<PackEntry>, Unusable> {
        let damaged = |reason: &str| Unusable::Damaged(reason.to_string());
        let header_len = match data.get(..8) {
            Some(m) if m == MAGIC => HEADER_LEN,
            Some(m) if m == MAGIC_V1 => HEADER_LEN_V1,
            _ => return Err(damaged("bad header")),
        };
        if data.len() < header_len + FOOTER_LEN + CHECKSUM_LEN {
            return Err(damaged("truncated"));
        }
        let (body, sum) = data.split_at(data.len() - CHECKSUM_LEN);
        // The checksum first: it covers the version, so a damaged version is damage.
        if checksum(pack, body) != sum {
            return Err(damaged("checksum mismatch"));
        }
        let u64_at = |at: usize| body[at..at + 8].try_into().map(u64::from_le_bytes);
        let cached_len = if header_len == HEADER_LEN {
            let version =
                u32::from_le_bytes(body[8..12].try_into().map_err(|_| damaged("header"))?);
            let path = format!("{}{SUFFIX}", pack.to_hex());
            crate::format::check("pack index cache entry", &path, version, VERSION)
                .map_err(Unusable::Newer)?;
            u64_at(12)
        } else {
            u64_at(8)
        }
        .map_err(|_| damaged("header"))?;
        if cached_len != pack_len {
            return Err(Unusable::Damaged(format!(
                "cached for a pack of {cached_len} bytes, listed as {pack_len}"
            )));
        }
        let footer = &body[header_len..header_len + FOOTER_LEN];
        let index = &body[header_len + FOOTER_LEN..];
        let key = pack.object_key();
        let footer = pack::parse_footer(&key, footer, pack_len)
            .map_err(|e| Unusable::Damaged(e.to_string()))?;
        pack::parse_index(&key, &footer, index).map_err(|e| Unusable::Damaged(e.to_string()))
    }

    /// Caches the tail of a pack as read from the cold tier (footer and index bytes).
    pub fn store(&self, pack: &PackId, pack_len: u64, footer: &[u8], index: &[u8]) {
        let mut data = Vec::with_capacity(HEADER_LEN + footer.len() + index.len() + CHECKSUM_LEN);
        data.extend_from_slice(MAGIC);
        data.extend_from_slice(&VERSION.to_le_bytes());
        data.extend_from_slice(&pack_len.to_le_bytes());
        data.extend_from_slice(footer);
        data.extend_from_slice(index);
        let sum = checksum(pack, &data);
        data.extend_from_slice(&sum);
        let path = self.path_of(pack);
        let tmp = self.dir.join(format!(
            ".tmp.{}.{}",
            std::process::id(),
            TMP_SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let written = std::fs::write(&tmp, &data).and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            warn!(path = %path.display(), error = %e, "cannot cache a pack index");
        }
    }

    /// Caches the index of a pack this process just wrote (`pack_len` bytes, `entries`).
    pub fn store_entries(&self, pack: &PackId, pack_len: u64, entries: &[PackEntry]) {
        let index_len = (entries.len() * pack::INDEX_ENTRY_LEN) as u64;
        let index_offset = pack_len.saturating_sub(index_len + FOOTER_LEN as u64);
        let (index, footer) = pack::encode_tail(entries, index_offset);
        self.store(pack, pack_len, &footer, &index);
    }

    /// Drops the entry of a deleted pack.
    pub fn remove(&self, pack: &PackId) {
        match std::fs::remove_file(self.path_of(pack)) {
            Ok(()) => debug!(%pack, "cached pack index dropped"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => warn!(%pack, error = %e, "cannot drop a cached pack index"),
        }
    }

    /// The packs with a cached index.
    pub fn packs(&self) -> Vec<PackId> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        entries
            .filter_map(|e| {
                let name = e.ok()?.file_name();
                PackId::from_hex(name.to_str()?.strip_suffix(SUFFIX)?)
            })
            .collect()
    }

    /// Drops the entries of every pack not in `listed` (deleted by a gc, here or elsewhere), and
    /// temporary files of writers that died before renaming them.
    pub fn retain(&self, listed: &HashSet<PackId>) {
        for pack in self.packs() {
            if !listed.contains(&pack) {
                self.remove(&pack);
            }
        }
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(pid) = name
                .to_str()
                .and_then(|n| n.strip_prefix(".tmp."))
                .and_then(|n| n.split('.').next())
            else {
                continue;
            };
            if !Path::new("/proc").join(pid).exists() {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Codec;
    use crate::pack::PackBuilder;
    use crate::page::PageId;

    fn a_pack() -> (PackId, Vec<u8>, Vec<PackEntry>) {
        let mut b = PackBuilder::new();
        for i in 1..=3u8 {
            b.push(PageId([i; 32]), Codec::Raw, &[i; 100]);
        }
        b.finish()
    }

    #[test]
    fn entries_round_trip_and_match_the_packs_own_tail() {
        let dir = tempfile::tempdir().unwrap();
        let cache = IndexCache::open(dir.path()).unwrap();
        let (id, data, entries) = a_pack();
        let len = data.len() as u64;
        assert_eq!(cache.load(&id, len), None);
        cache.store_entries(&id, len, &entries);
        assert_eq!(cache.load(&id, len), Some(entries.clone()));
        // What store_entries wrote is what a read of the pack's tail gives.
        let tail_start = data.len() - FOOTER_LEN - entries.len() * pack::INDEX_ENTRY_LEN;
        let (index, footer) = data[tail_start..].split_at(entries.len() * pack::INDEX_ENTRY_LEN);
        let other = tempfile::tempdir().unwrap();
        let from_tail = IndexCache::open(other.path()).unwrap();
        from_tail.store(&id, len, footer, index);
        assert_eq!(
            std::fs::read(cache.path_of(&id)).unwrap(),
            std::fs::read(from_tail.path_of(&id)).unwrap()
        );
        assert_eq!(cache.packs(), vec![id]);
        // A writer killed between write and rename left its temporary file.
        let orphan = dir.path().join(".tmp.999999999.1");
        let live = dir.path().join(format!(".tmp.{}.1", std::process::id()));
        std::fs::write(&orphan, b"x").unwrap();
        std::fs::write(&live, b"x").unwrap();
        cache.retain(&HashSet::new());
        assert!(cache.packs().is_empty());
        assert!(!orphan.exists() && live.exists());
    }

    #[test]
    fn a_damaged_or_misplaced_entry_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let cache = IndexCache::open(dir.path()).unwrap();
        let (id, data, entries) = a_pack();
        let len = data.len() as u64;
        cache.store_entries(&id, len, &entries);
        let path = cache.path_of(&id);
        let good = std::fs::read(&path).unwrap();
        for at in [0, 9, HEADER_LEN + 3, good.len() / 2, good.len() - 1] {
            let mut bad = good.clone();
            bad[at] ^= 1;
            std::fs::write(&path, &bad).unwrap();
            assert_eq!(cache.load(&id, len), None, "flip at {at}");
            assert!(!path.exists(), "a damaged entry is deleted");
        }
        std::fs::write(&path, &good[..good.len() - 5]).unwrap();
        assert_eq!(cache.load(&id, len), None);
        // Another pack's entry under this pack's name fails the keyed checksum.
        let other = PackId([7; 32]);
        std::fs::write(cache.path_of(&other), &good).unwrap();
        assert_eq!(cache.load(&other, len), None);
        // A listing of another size is not this pack.
        cache.store_entries(&id, len, &entries);
        assert_eq!(cache.load(&id, len + 1), None);
        assert_eq!(cache.corrupt.load(Ordering::Relaxed), 8);
    }

    /// An entry as this cache wrote it before entries carried a version (version 1).
    fn version_1_entry(
        pack: &PackId,
        pack_len: u64,
        data: &[u8],
        entries: &[PackEntry],
    ) -> Vec<u8> {
        let tail_start = data.len() - FOOTER_LEN - entries.len() * pack::INDEX_ENTRY_LEN;
        let mut old = MAGIC_V1.to_vec();
        old.extend_from_slice(&pack_len.to_le_bytes());
        let (index, footer) = data[tail_start..].split_at(entries.len() * pack::INDEX_ENTRY_LEN);
        old.extend_from_slice(footer);
        old.extend_from_slice(index);
        let sum = checksum(pack, &old);
        old.extend_from_slice(&sum);
        old
    }

    #[test]
    fn a_version_1_entry_is_read_and_a_newer_one_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let cache = IndexCache::open(dir.path()).unwrap();
        let (id, data, entries) = a_pack();
        let len = data.len() as u64;
        let path = cache.path_of(&id);
        std::fs::write(&path, version_1_entry(&id, len, &data, &entries)).unwrap();
        assert_eq!(cache.load(&id, len), Some(entries.clone()));
        // A newer version (its checksum sound): not used, not deleted, not counted as damage.
        cache.store_entries(&id, len, &entries);
        let mut newer = std::fs::read(&path).unwrap();
        newer[8..12].copy_from_slice(&(VERSION + 1).to_le_bytes());
        let n = newer.len();
        let sum = checksum(&id, &newer[..n - CHECKSUM_LEN]);
        newer[n - CHECKSUM_LEN..].copy_from_slice(&sum);
        std::fs::write(&path, &newer).unwrap();
        assert_eq!(cache.load(&id, len), None);
        assert!(path.exists());
        assert_eq!(cache.corrupt.load(Ordering::Relaxed), 0);
    }
}
