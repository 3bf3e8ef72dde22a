//! The local tier: encoded pages cached on the worker's own disk, in an embedded KV store.
//!
//! It is a cache, never the only copy: a page that fails its hash here is dropped and read again
//! from the cold tier. Behind a trait so that embedded stores can be compared (sled is the
//! specified one; see docs/ARCHITECTURE.md).

use std::path::{Path, PathBuf};

use crate::codec::Codec;
use crate::error::{Error, Result};
use crate::page::PageId;

/// What the store needs of a local page cache.
pub trait LocalTier: Send + Sync {
    fn get(&self, id: &PageId) -> Result<Option<(Codec, Vec<u8>)>>;
    fn put(&self, id: &PageId, codec: Codec, encoded: &[u8]) -> Result<()>;
    fn remove(&self, id: &PageId) -> Result<()>;
    /// Number of pages and bytes held.
    fn usage(&self) -> Result<(u64, u64)>;
    /// Every page held, for `verify`.
    fn for_each(&self, f: &mut dyn FnMut(PageId, Codec, &[u8])) -> Result<()>;
    fn clear(&self) -> Result<()>;
    fn flush(&self) -> Result<()>;
}

/// The local tier in sled: key = page id, value = codec byte + encoded page.
pub struct SledTier {
    path: PathBuf,
    db: sled::Db,
}

impl SledTier {
    /// Opens (or creates) the tier. Returns `Ok(None)` when another process holds it (sled takes an
    /// exclusive lock): the caller then runs without a local tier.
    pub fn open(path: &Path) -> Result<Option<SledTier>> {
        match sled::Config::new().path(path).open() {
            Ok(db) => Ok(Some(SledTier {
                path: path.to_path_buf(),
                db,
            })),
            Err(sled::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(None),
            Err(e) if e.to_string().contains("lock") => Ok(None),
            Err(source) => Err(Error::Local {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    fn err(&self, source: sled::Error) -> Error {
        Error::Local {
            path: self.path.clone(),
            source,
        }
    }
}

fn decode_value(v: &[u8]) -> Option<(Codec, &[u8])> {
    let (&c, rest) = v.split_first()?;
    Some((Codec::from_u8(c)?, rest))
}

impl LocalTier for SledTier {
    fn get(&self, id: &PageId) -> Result<Option<(Codec, Vec<u8>)>> {
        let v = self.db.get(id.0).map_err(|e| self.err(e))?;
        Ok(v.and_then(|v| decode_value(&v).map(|(c, d)| (c, d.to_vec()))))
    }

    fn put(&self, id: &PageId, codec: Codec, encoded: &[u8]) -> Result<()> {
        let mut v = Vec::with_capacity(encoded.len() + 1);
        v.push(codec as u8);
        v.extend_from_slice(encoded);
        self.db.insert(id.0, v).map_err(|e| self.err(e))?;
        Ok(())
    }

    fn remove(&self, id: &PageId) -> Result<()> {
        self.db.remove(id.0).map_err(|e| self.err(e))?;
        Ok(())
    }

    fn usage(&self) -> Result<(u64, u64)> {
        let mut pages = 0;
        let mut bytes = 0;
        for kv in self.db.iter() {
            let (_, v) = kv.map_err(|e| self.err(e))?;
            pages += 1;
            bytes += v.len() as u64;
        }
        Ok((pages, bytes))
    }

    fn for_each(&self, f: &mut dyn FnMut(PageId, Codec, &[u8])) -> Result<()> {
        for kv in self.db.iter() {
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
        self.db.clear().map_err(|e| self.err(e))?;
        self.flush()
    }

    fn flush(&self) -> Result<()> {
        self.db.flush().map_err(|e| self.err(e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sled_tier_round_trip_and_lock() {
        let dir = tempfile::tempdir().unwrap();
        let t = SledTier::open(&dir.path().join("local")).unwrap().unwrap();
        let id = PageId([3; 32]);
        t.put(&id, Codec::Lz4, b"abc").unwrap();
        assert_eq!(t.get(&id).unwrap(), Some((Codec::Lz4, b"abc".to_vec())));
        assert_eq!(t.usage().unwrap(), (1, 4));
        t.remove(&id).unwrap();
        assert_eq!(t.get(&id).unwrap(), None);
    }
}
