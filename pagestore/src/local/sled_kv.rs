//! The local tier's maps in sled 0.34 (a B-tree over a log; one tree per map).

use std::path::{Path, PathBuf};

use super::kv::{dir_bytes, local_error, KvStore, Map, Write};
use crate::error::{Error, Result};

const ENGINE: &str = "sled";

pub(crate) struct SledKv {
    path: PathBuf,
    db: sled::Db,
    pages: sled::Tree,
    order: sled::Tree,
}

/// Whether `dir` holds a sled database.
pub(crate) fn is_sled_dir(dir: &Path) -> bool {
    dir.join("conf").is_file() && dir.join("db").is_file()
}

impl SledKv {
    /// Opens (or creates) the store; `Ok(None)` when another process holds it.
    pub(crate) fn open(path: &Path) -> Result<Option<SledKv>> {
        let db = match sled::Config::new().path(path).open() {
            Ok(db) => db,
            Err(sled::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {
                return Ok(None)
            }
            Err(e) if e.to_string().contains("lock") => return Ok(None),
            Err(e) => return Err(local_error(ENGINE, path, e)),
        };
        let err = |e| local_error(ENGINE, path, e);
        // Pages cached by earlier builds (default tree, without seq) are dropped: it is a cache.
        db.clear().map_err(err)?;
        let pages = db.open_tree("pages").map_err(err)?;
        let order = db.open_tree("order").map_err(err)?;
        Ok(Some(SledKv {
            path: path.to_path_buf(),
            db,
            pages,
            order,
        }))
    }

    fn tree(&self, map: Map) -> &sled::Tree {
        match map {
            Map::Pages => &self.pages,
            Map::Order => &self.order,
        }
    }

    fn err(&self, e: sled::Error) -> Error {
        local_error(ENGINE, &self.path, e)
    }
}

impl KvStore for SledKv {
    fn get(&self, map: Map, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let v = self.tree(map).get(key).map_err(|e| self.err(e))?;
        Ok(v.map(|v| v.to_vec()))
    }

    fn remove(&self, map: Map, key: &[u8]) -> Result<()> {
        self.tree(map).remove(key).map_err(|e| self.err(e))?;
        Ok(())
    }

    fn write_batch(&self, writes: &[Write<'_>]) -> Result<()> {
        // sled batches one tree at a time: order inserts, then pages, then order removals.
        // A batch costs sled far more than a single write (it stops the tree's other writers),
        // so a stage of one write is applied alone and an empty one not at all.
        let mut stages: [Vec<Write<'_>>; 3] = Default::default();
        for w in writes {
            let stage = match w {
                Write::Insert(Map::Order, ..) => 0,
                Write::Insert(Map::Pages, ..) | Write::Remove(Map::Pages, _) => 1,
                Write::Remove(Map::Order, _) => 2,
            };
            stages[stage].push(*w);
        }
        for (tree, stage) in [&self.order, &self.pages, &self.order]
            .into_iter()
            .zip(stages)
        {
            match stage[..] {
                [] => {}
                [Write::Insert(_, k, v)] => {
                    tree.insert(k, v).map_err(|e| self.err(e))?;
                }
                [Write::Remove(_, k)] => {
                    tree.remove(k).map_err(|e| self.err(e))?;
                }
                _ => {
                    let mut batch = sled::Batch::default();
                    for w in stage {
                        match w {
                            Write::Insert(_, k, v) => batch.insert(k, v),
                            Write::Remove(_, k) => batch.remove(k),
                        }
                    }
                    tree.apply_batch(batch).map_err(|e| self.err(e))?;
                }
            }
        }
        Ok(())
    }

    fn first_from(&self, map: Map, from: &[u8]) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        let kv = self.tree(map).range(from..).next();
        let kv = kv.transpose().map_err(|e| self.err(e))?;
        Ok(kv.map(|(k, v)| (k.to_vec(), v.to_vec())))
    }

    fn last_key(&self, map: Map) -> Result<Option<Vec<u8>>> {
        let kv = self.tree(map).last().map_err(|e| self.err(e))?;
        Ok(kv.map(|(k, _)| k.to_vec()))
    }

    fn for_each(&self, map: Map, f: &mut dyn FnMut(&[u8], &[u8])) -> Result<()> {
        for kv in self.tree(map).iter() {
            let (k, v) = kv.map_err(|e| self.err(e))?;
            f(&k, &v);
        }
        Ok(())
    }

    fn count_values(&self, map: Map) -> Result<(u64, u64)> {
        let (mut n, mut bytes) = (0, 0);
        self.for_each(map, &mut |_, v| {
            n += 1;
            bytes += v.len() as u64;
        })?;
        Ok((n, bytes))
    }

    /// sled reuses the freed space for later writes (a file that stays at its high-water mark).
    fn clear(&self) -> Result<()> {
        for map in [Map::Pages, Map::Order] {
            self.tree(map).clear().map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        self.db.flush().map_err(|e| self.err(e))?;
        Ok(())
    }

    fn disk_bytes(&self) -> Result<u64> {
        dir_bytes(&self.path)
    }
}
