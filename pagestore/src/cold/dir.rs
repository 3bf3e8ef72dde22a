//! A cold tier in a local directory: the embedded default, and the twin of S3 in tests.
//!
//! Writes go to a temporary file that is fsynced and renamed into place (then the directory is
//! fsynced), so an object is either absent or whole, even across a crash. Their bulk bypasses
//! the page cache ([`super::direct_write`]).

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::{ColdStorage, ObjectMeta};
use crate::blocking::blocking;
use crate::error::{Error, Result};

pub struct DirStorage {
    root: PathBuf,
}

static TMP_SEQ: AtomicU64 = AtomicU64::new(0);

impl DirStorage {
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        std::fs::create_dir_all(root.join(".tmp")).map_err(|e| Error::io(&root, e))?;
        Ok(DirStorage { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path_of(&self, key: &str) -> Result<PathBuf> {
        let ok = !key.is_empty()
            && key
                .split('/')
                .all(|c| !c.is_empty() && c != "." && c != ".." && !c.starts_with(".tmp"));
        if !ok {
            return Err(Error::InvalidObjectKey {
                key: key.to_string(),
            });
        }
        Ok(self.root.join(key))
    }
}

fn not_found_or_io(key: &str, path: &Path, e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::NotFound {
        Error::ObjectNotFound(key.to_string())
    } else {
        Error::io(path, e)
    }
}

impl ColdStorage for DirStorage {
    async fn put(&self, key: &str, data: bytes::Bytes) -> Result<()> {
        let path = self.path_of(key)?;
        let tmp = self.root.join(".tmp").join(format!(
            "{}.{}.{}",
            std::process::id(),
            TMP_SEQ.fetch_add(1, Ordering::Relaxed),
            key.replace('/', "_")
        ));
        blocking(move || {
            let parent = path.parent().unwrap_or(Path::new("/")).to_path_buf();
            std::fs::create_dir_all(&parent).map_err(|e| Error::io(&parent, e))?;
            let f = super::direct_write::write_new(&tmp, &data).map_err(|e| Error::io(&tmp, e))?;
            f.sync_all().map_err(|e| Error::io(&tmp, e))?;
            drop(f);
            std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
            std::fs::File::open(&parent)
                .and_then(|d| d.sync_all())
                .map_err(|e| Error::io(&parent, e))
        })
        .await
    }

    async fn get(&self, key: &str) -> Result<Vec<u8>> {
        let path = self.path_of(key)?;
        let key = key.to_string();
        blocking(move || std::fs::read(&path).map_err(|e| not_found_or_io(&key, &path, e))).await
    }

    async fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        let path = self.path_of(key)?;
        let key = key.to_string();
        blocking(move || {
            let mut f = std::fs::File::open(&path).map_err(|e| not_found_or_io(&key, &path, e))?;
            f.seek(SeekFrom::Start(offset))
                .map_err(|e| Error::io(&path, e))?;
            let mut buf = Vec::with_capacity(len as usize);
            f.take(len)
                .read_to_end(&mut buf)
                .map_err(|e| Error::io(&path, e))?;
            Ok(buf)
        })
        .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let root = self.root.clone();
        let prefix = prefix.to_string();
        blocking(move || {
            let mut out = Vec::new();
            walk(&root, &root, &prefix, &mut out)?;
            out.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(out)
        })
        .await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let path = self.path_of(key)?;
        blocking(move || match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(&path, e)),
        })
        .await
    }
}

fn walk(root: &Path, dir: &Path, prefix: &str, out: &mut Vec<ObjectMeta>) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let path = entry.path();
        let rel = path
            .strip_prefix(root)
            .map_err(|e| Error::io(&path, std::io::Error::other(e)))?
            .to_string_lossy()
            .to_string();
        if rel.starts_with(".tmp") {
            continue;
        }
        let Some(meta) = listed_meta(&entry)? else {
            continue;
        };
        if meta.is_dir() {
            // Only descend where keys under this directory can match the prefix.
            let as_prefix = format!("{rel}/");
            if as_prefix.starts_with(prefix) || prefix.starts_with(&as_prefix) {
                walk(root, &path, prefix, out)?;
            }
        } else if rel.starts_with(prefix) {
            out.push(ObjectMeta {
                key: rel,
                size: meta.len(),
            });
        }
    }
    Ok(())
}

/// The metadata of a listed entry; `None` when it was deleted since the directory was read (a
/// background recompression deletes the packs it replaced): a listing, like S3's, may leave out
/// an object deleted while it runs, but it must not fail.
fn listed_meta(entry: &std::fs::DirEntry) -> Result<Option<std::fs::Metadata>> {
    match entry.metadata() {
        Ok(meta) => Ok(Some(meta)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(entry.path(), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_object_deleted_while_listing_is_left_out_not_an_error() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["a.pack", "b.pack"] {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        // Read before either is deleted, as a listing's directory read is.
        let entries: Vec<std::fs::DirEntry> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap())
            .collect();
        std::fs::remove_file(dir.path().join("b.pack")).unwrap();
        let kept: Vec<String> = entries
            .iter()
            .filter(|e| listed_meta(e).unwrap().is_some())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(kept, ["a.pack"]);
    }

    #[tokio::test]
    async fn put_get_range_list_delete() {
        let dir = tempfile::tempdir().unwrap();
        let s = DirStorage::open(dir.path()).unwrap();
        s.put("packs/a.pack", b"hello world".to_vec().into())
            .await
            .unwrap();
        s.put("manifests/t/1.manifest", b"m".to_vec().into())
            .await
            .unwrap();
        assert_eq!(s.get("packs/a.pack").await.unwrap(), b"hello world");
        assert_eq!(s.get_range("packs/a.pack", 6, 100).await.unwrap(), b"world");
        let l = s.list("packs/").await.unwrap();
        assert_eq!(
            l,
            vec![ObjectMeta {
                key: "packs/a.pack".into(),
                size: 11
            }]
        );
        assert_eq!(s.list("").await.unwrap().len(), 2);
        s.delete("packs/a.pack").await.unwrap();
        assert!(matches!(
            s.get("packs/a.pack").await,
            Err(Error::ObjectNotFound(_))
        ));
        assert!(s.put("../escape", bytes::Bytes::new()).await.is_err());
    }
}
