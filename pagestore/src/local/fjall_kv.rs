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
    db: Database,
    /// Replaced, not emptied, by [`KvStore::clear`]: see there.
    maps: RwLock<Maps>,
}

struct Maps {
    pages: Keyspace,
    order: Keyspace,
}

impl Maps {
    fn get(&self, map: Map) -> &Keyspace {
        match map {
            Map::Pages => &self.pages,
            Map::Order => &self.order,
        }
    }

    fn get_mut(&mut self, map: Map) -> &mut Keyspace {
        match map {
            Map::Pages => &mut self.pages,
            Map::Order => &mut self.order,
        }
    }
}

fn keyspace_name(map: Map) -> &'static str {
    match map {
        Map::Pages => "pages",
        Map::Order => "order",
    }
}

/// Opens (or creates) the keyspace that holds `map`.
fn open_keyspace(db: &Database, map: Map) -> fjall::Result<Keyspace> {
    match map {
        Map::Pages => db.keyspace(keyspace_name(map), || {
            KeyspaceCreateOptions::default()
                .max_memtable_size(MEMTABLE_BYTES)
                .data_block_compression_policy(CompressionPolicy::disabled())
                .with_kv_separation(Some(
                    KvSeparationOptions::default().compression(CompressionType::None),
                ))
        }),
        Map::Order => db.keyspace(keyspace_name(map), || {
            KeyspaceCreateOptions::default().max_memtable_size(MEMTABLE_BYTES)
        }),
    }
}

/// Whether `dir` holds a fjall database.
pub(crate) fn is_fjall_dir(dir: &Path) -> bool {
    dir.join("version").is_file() && dir.join("keyspaces").is_dir()
}

impl FjallKv {
    /// Opens (or creates) the store; `Ok(None)` when another process holds it.
    pub(crate) fn open(path: &Path) -> Result<Option<FjallKv>> {
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
        let pages = open_keyspace(&db, Map::Pages).map_err(err)?;
        let order = open_keyspace(&db, Map::Order).map_err(err)?;
        Ok(Some(FjallKv {
            path: path.to_path_buf(),
            db,
            maps: RwLock::new(Maps { pages, order }),
        }))
    }

    /// A handle on the keyspace that holds `map` now (cheap: a reference count).
    fn keyspace(&self, map: Map) -> Keyspace {
        self.maps
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(map)
            .clone()
    }

    fn err(&self, e: fjall::Error) -> Error {
        local_error(ENGINE, &self.path, e)
    }
}

impl KvStore for FjallKv {
    fn get(&self, map: Map, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let v = self.keyspace(map).get(key).map_err(|e| self.err(e))?;
        Ok(v.map(|v| v.to_vec()))
    }

    fn remove(&self, map: Map, key: &[u8]) -> Result<()> {
        self.keyspace(map).remove(key).map_err(|e| self.err(e))
    }

    fn write_batch(&self, writes: &[Write<'_>]) -> Result<()> {
        let maps = self.maps.read().unwrap_or_else(|p| p.into_inner());
        let mut batch = self.db.batch();
        for w in writes {
            match *w {
                Write::Insert(map, k, v) => batch.insert(maps.get(map), k, v),
                Write::Remove(map, k) => batch.remove(maps.get(map), k),
            }
        }
        batch.commit().map_err(|e| self.err(e))
    }

    fn first_from(&self, map: Map, from: &[u8]) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        match self.keyspace(map).range(from..).next() {
            None => Ok(None),
            Some(g) => {
                let (k, v) = g.into_inner().map_err(|e| self.err(e))?;
                Ok(Some((k.to_vec(), v.to_vec())))
            }
        }
    }

    fn last_key(&self, map: Map) -> Result<Option<Vec<u8>>> {
        match self.keyspace(map).last_key_value() {
            None => Ok(None),
            Some(g) => Ok(Some(g.key().map_err(|e| self.err(e))?.to_vec())),
        }
    }

    fn for_each(&self, map: Map, f: &mut dyn FnMut(&[u8], &[u8])) -> Result<()> {
        for g in self.keyspace(map).iter() {
            let (k, v) = g.into_inner().map_err(|e| self.err(e))?;
            f(&k, &v);
        }
        Ok(())
    }

    fn count_values(&self, map: Map) -> Result<(u64, u64)> {
        // Sizes come from the keys' blob pointers: no value is read.
        let (mut n, mut bytes) = (0, 0);
        for g in self.keyspace(map).iter() {
            bytes += u64::from(g.size().map_err(|e| self.err(e))?);
            n += 1;
        }
        Ok((n, bytes))
    }

    /// Deletes the keyspace and opens a fresh one under the same name. fjall's own
    /// `Keyspace::clear` drops the tables from the current version without marking their files
    /// deleted, so the disk is only given back when the database is next opened: a worker
    /// evicting its local tier again and again (as `bench restore` does before each cold run)
    /// filled the disk. A deleted keyspace's directory goes when its last handle does.
    fn clear(&self, map: Map) -> Result<()> {
        let mut maps = self.maps.write().unwrap_or_else(|p| p.into_inner());
        let old = maps.get(map).clone();
        self.db.delete_keyspace(old).map_err(|e| self.err(e))?;
        *maps.get_mut(map) = open_keyspace(&self.db, map).map_err(|e| self.err(e))?;
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        self.db
            .persist(fjall::PersistMode::SyncAll)
            .map_err(|e| self.err(e))
    }

    fn disk_bytes(&self) -> Result<u64> {
        dir_bytes(&self.path)
    }
}
