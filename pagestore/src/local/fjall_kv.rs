//! The local tier's maps in fjall 3 (an LSM tree; one keyspace per map).
//!
//! Pages are stored with key-value separation: the values (encoded pages, already lz4) go to blob
//! files uncompressed, so compaction moves only keys, and since the cache evicts in the order it
//! wrote, whole blob files go stale together and are dropped without rewriting.

use std::path::{Path, PathBuf};
use std::sync::RwLock;

use fjall::config::CompressionPolicy;
use fjall::{CompressionType, Database, Keyspace, KeyspaceCreateOptions, KvSeparationOptions};

use super::kv::{dir_bytes, local_error, KvStore, Map, Write};
use crate::error::{Error, Result};

const ENGINE: &str = "fjall";
const JOURNAL_BYTES: u64 = 64 << 20;
/// Memtables are flushed at this size (default 64 MiB), so that less is replayed at open.
const MEMTABLE_BYTES: u64 = 16 << 20;

pub(crate) struct FjallKv {
    path: PathBuf,
    /// Closed and opened afresh by [`KvStore::clear`] (see there); `None` only if that reopen
    /// failed. Every operation holds the read guard for its whole length.
    open: RwLock<Option<OpenDb>>,
}

struct OpenDb {
    db: Database,
    pages: Keyspace,
    order: Keyspace,
}

impl OpenDb {
    fn get(&self, map: Map) -> &Keyspace {
        match map {
            Map::Pages => &self.pages,
            Map::Order => &self.order,
        }
    }
}

/// Whether `dir` holds a fjall database.
pub(crate) fn is_fjall_dir(dir: &Path) -> bool {
    dir.join("version").is_file() && dir.join("keyspaces").is_dir()
}

/// Opens (or creates) the database at `path`; `Ok(None)` when another process holds it.
fn open_db(path: &Path) -> Result<Option<OpenDb>> {
    let db = match Database::builder(path)
        .journal_compression(CompressionType::None)
        // The least fjall allows (default 512 MiB): the journal is replayed at every open and
        // counts on disk against a cache bounded in bytes.
        .max_journaling_size(JOURNAL_BYTES)
        .open()
    {
        Ok(db) => db,
        Err(fjall::Error::Locked) => return Ok(None),
        Err(e) => return Err(local_error(ENGINE, path, e)),
    };
    let err = |e| local_error(ENGINE, path, e);
    let pages = db
        .keyspace("pages", || {
            KeyspaceCreateOptions::default()
                .max_memtable_size(MEMTABLE_BYTES)
                .data_block_compression_policy(CompressionPolicy::disabled())
                .with_kv_separation(Some(
                    KvSeparationOptions::default().compression(CompressionType::None),
                ))
        })
        .map_err(err)?;
    let order = db
        .keyspace("order", || {
            KeyspaceCreateOptions::default().max_memtable_size(MEMTABLE_BYTES)
        })
        .map_err(err)?;
    Ok(Some(OpenDb { db, pages, order }))
}

impl FjallKv {
    /// Opens (or creates) the store; `Ok(None)` when another process holds it.
    pub(crate) fn open(path: &Path) -> Result<Option<FjallKv>> {
        Ok(open_db(path)?.map(|db| FjallKv {
            path: path.to_path_buf(),
            open: RwLock::new(Some(db)),
        }))
    }

    /// Runs `f` on the open database, holding it open for the length of the call.
    fn with_db<T>(&self, f: impl FnOnce(&OpenDb) -> Result<T>) -> Result<T> {
        let open = self.open.read().unwrap_or_else(|p| p.into_inner());
        match open.as_ref() {
            Some(db) => f(db),
            None => Err(Error::LocalNotReopened {
                path: self.path.clone(),
            }),
        }
    }

    fn err(&self, e: fjall::Error) -> Error {
        local_error(ENGINE, &self.path, e)
    }
}

impl KvStore for FjallKv {
    fn get(&self, map: Map, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.with_db(|db| {
            let v = db.get(map).get(key).map_err(|e| self.err(e))?;
            Ok(v.map(|v| v.to_vec()))
        })
    }

    fn remove(&self, map: Map, key: &[u8]) -> Result<()> {
        self.with_db(|db| db.get(map).remove(key).map_err(|e| self.err(e)))
    }

    fn write_batch(&self, writes: &[Write<'_>]) -> Result<()> {
        self.with_db(|open| {
            let mut batch = open.db.batch();
            for w in writes {
                match *w {
                    Write::Insert(map, k, v) => batch.insert(open.get(map), k, v),
                    Write::Remove(map, k) => batch.remove(open.get(map), k),
                }
            }
            batch.commit().map_err(|e| self.err(e))
        })
    }

    fn first_from(&self, map: Map, from: &[u8]) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        self.with_db(|db| match db.get(map).range(from..).next() {
            None => Ok(None),
            Some(g) => {
                let (k, v) = g.into_inner().map_err(|e| self.err(e))?;
                Ok(Some((k.to_vec(), v.to_vec())))
            }
        })
    }

    fn last_key(&self, map: Map) -> Result<Option<Vec<u8>>> {
        self.with_db(|db| match db.get(map).last_key_value() {
            None => Ok(None),
            Some(g) => Ok(Some(g.key().map_err(|e| self.err(e))?.to_vec())),
        })
    }

    fn for_each(&self, map: Map, f: &mut dyn FnMut(&[u8], &[u8])) -> Result<()> {
        self.with_db(|db| {
            for g in db.get(map).iter() {
                let (k, v) = g.into_inner().map_err(|e| self.err(e))?;
                f(&k, &v);
            }
            Ok(())
        })
    }

    fn count_values(&self, map: Map) -> Result<(u64, u64)> {
        // Sizes come from the keys' blob pointers: no value is read.
        self.with_db(|db| {
            let (mut n, mut bytes) = (0, 0);
            for g in db.get(map).iter() {
                bytes += u64::from(g.size().map_err(|e| self.err(e))?);
                n += 1;
            }
            Ok((n, bytes))
        })
    }

    /// Closes the database, deletes its directory and opens a fresh one. Neither of fjall's own
    /// ways gives the disk back while the database is open: `Keyspace::clear` drops the tables
    /// from the current version without deleting their files, and a deleted keyspace's files
    /// stay open in the database's descriptor cache (and a journal no flush rotates keeps
    /// growing). A worker evicting its local tier before every cold run (`bench restore`) held
    /// gigabytes that way and filled the disk. Closing waits for fjall's background threads; the
    /// lock on the directory is let go for as long as it takes to delete and recreate it.
    fn clear(&self) -> Result<()> {
        let mut open = self.open.write().unwrap_or_else(|p| p.into_inner());
        drop(open.take());
        std::fs::remove_dir_all(&self.path).map_err(|e| Error::io(&self.path, e))?;
        match open_db(&self.path)? {
            Some(db) => {
                *open = Some(db);
                Ok(())
            }
            None => Err(Error::LocalTakenWhileEmptied {
                path: self.path.clone(),
            }),
        }
    }

    fn flush(&self) -> Result<()> {
        self.with_db(|open| {
            open.db
                .persist(fjall::PersistMode::SyncAll)
                .map_err(|e| self.err(e))
        })
    }

    fn disk_bytes(&self) -> Result<u64> {
        dir_bytes(&self.path)
    }
}
