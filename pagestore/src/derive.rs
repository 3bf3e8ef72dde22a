//! Derived checkpoints: a new generation made from an existing one by replacing pages of one file.
//!
//! Writers that change a stored image in place (the NBD front end's copy-on-write overlay) must
//! not rewrite the checkpoint they started from: manifests are immutable. Instead they commit a
//! *derived* checkpoint: the base manifest with some pages of one paged file replaced, as the next
//! generation of the same tenant, whose parent is the base. New pages are packed and uploaded
//! first; the manifest upload is the commit point, exactly as in an ingest.

use std::collections::HashSet;

use tracing::info;

use crate::codec;
use crate::error::{Error, Result};
use crate::lock::LockKind;
use crate::manifest::{CheckpointId, CheckpointRef, FileContent, Manifest};
use crate::pack::PackBuilder;
use crate::page::{PageId, PAGE_SIZE};
use crate::store::PageStore;

/// What committing a derived checkpoint did.
#[derive(Clone, Debug)]
pub struct Derived {
    pub checkpoint: CheckpointRef,
    /// The page list of the changed file in the new checkpoint.
    pub pages: Vec<PageId>,
    /// Pages replaced.
    pub pages_changed: u64,
    /// Pages the store did not have before.
    pub pages_new: u64,
}

impl PageStore {
    /// Commits the next generation of `base`'s tenant: `base` with the pages at the given indices
    /// of paged file `file` replaced. Each replacement is exactly [`PAGE_SIZE`] bytes; all-zero
    /// pages become [`PageId::ZERO`]. The file keeps its size: indices must lie within it.
    pub async fn derive(
        &self,
        base: &CheckpointRef,
        file: &str,
        replacements: &[(u64, &[u8])],
    ) -> Result<Derived> {
        // As an ingest: a gc beside it deletes no page this checkpoint references.
        let lock = self.lock(LockKind::Ingest).await?;
        let result = self
            .derive_locked(base, file, replacements, lock.doomed())
            .await;
        let unlocked = self.unlock(lock).await;
        let derived = result?;
        unlocked?;
        Ok(derived)
    }

    async fn derive_locked(
        &self,
        base: &CheckpointRef,
        file: &str,
        replacements: &[(u64, &[u8])],
        doomed: Option<std::sync::Arc<crate::page::PageSet>>,
    ) -> Result<Derived> {
        self.refresh_catalog().await?;
        let manifest = self.manifest(base).await?;
        let bad = |reason: String| {
            Error::BadManifest(format!("cannot derive from {}: {reason}", base.id))
        };
        let index = manifest
            .files
            .iter()
            .position(|f| f.name == file)
            .ok_or_else(|| bad(format!("it has no file {file:?}")))?;
        let FileContent::Paged(old_pages) = &manifest.files[index].content else {
            return Err(bad(format!("{file} is not a paged file")));
        };
        let mut pages = old_pages.clone();
        let mut builder = PackBuilder::new();
        let mut queued: HashSet<PageId> = HashSet::new();
        let mut pages_new = 0;
        for (at, data) in replacements {
            if data.len() != PAGE_SIZE {
                return Err(bad(format!(
                    "replacement page {at} is {} bytes",
                    data.len()
                )));
            }
            let slot = pages
                .get_mut(*at as usize)
                .ok_or_else(|| bad(format!("page {at} is beyond the end of {file}")))?;
            let id = PageId::of(data);
            *slot = id;
            let doomed = doomed.as_ref().is_some_and(|d| d.contains(&id));
            if id.is_zero() || (self.catalog().contains(&id) && !doomed) || !queued.insert(id) {
                continue;
            }
            let (c, enc) = codec::encode(data);
            builder.push(id, c, &enc);
            pages_new += 1;
            if builder.is_full() {
                self.upload_pack(std::mem::take(&mut builder)).await?;
            }
        }
        if !builder.is_empty() {
            self.upload_pack(builder).await?;
        }

        let mut files = manifest.files.clone();
        files[index].content = FileContent::Paged(pages.clone());
        // The base's own pages, doomed only when a gc found no manifest naming them (a base
        // deleted meanwhile): this process has no bytes to store them again.
        if let Some(doomed) = &doomed {
            let gone = files
                .iter()
                .flat_map(|f| f.pages())
                .find(|id| doomed.contains(id) && !queued.contains(id));
            if gone.is_some() {
                return Err(Error::Busy {
                    what: "derive (a gc deletes pages of its base)",
                    holder: base.id.to_string(),
                });
            }
        }
        let packs = self.packs_holding(&files)?;
        let generation = self
            .latest(&base.tenant)
            .await?
            .map_or(base.generation, |c| c.generation.max(base.generation))
            + 1;
        let derived = Manifest {
            tenant: base.tenant.clone(),
            generation,
            created_ms: crate::clock::now_ms(),
            parent: Some(base.id.clone()),
            packs,
            files,
            // Its key names the base's generation, and the overlay's pages differ anyway.
            locality: None,
        };
        let bytes = bytes::Bytes::from(derived.encode());
        let checkpoint = CheckpointRef {
            tenant: base.tenant.clone(),
            generation,
            id: CheckpointId::of_manifest_bytes(&bytes),
        };
        // The commit point.
        self.cold()
            .put(&checkpoint.object_key(), bytes.clone())
            .await?;
        self.keep_manifest(&checkpoint.id, &bytes);
        info!(
            checkpoint = %checkpoint.id,
            parent = %base.id,
            tenant = %checkpoint.tenant,
            generation,
            file,
            changed = replacements.len(),
            new = pages_new,
            "derived checkpoint committed"
        );
        Ok(Derived {
            checkpoint,
            pages,
            pages_changed: replacements.len() as u64,
            pages_new,
        })
    }

    /// Uploads a pack and, once it is durable, makes its pages known.
    async fn upload_pack(&self, builder: PackBuilder) -> Result<()> {
        let (pack, data, entries) = builder.finish();
        let (pack, data) = self.unused_name(pack, data);
        self.put_pack(pack, data, &entries).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StoreConfig;

    #[tokio::test]
    async fn derived_generation_replaces_pages_and_keeps_the_base() {
        let home = tempfile::tempdir().unwrap();
        let src = home.path().join("img");
        std::fs::create_dir_all(&src).unwrap();
        let mut data = vec![0u8; 4 * PAGE_SIZE];
        data[PAGE_SIZE..2 * PAGE_SIZE].fill(7);
        std::fs::write(src.join("pages-1.img"), &data).unwrap();
        std::fs::write(src.join("core-1.img"), b"core").unwrap();
        let store = PageStore::open(&StoreConfig::embedded(home.path()))
            .await
            .unwrap();
        // The file derived from is paged although small: this test's rule names it.
        let options = crate::ingest::IngestOptions {
            paged: crate::ingest::PagedFiles::named(|name| name == "pages-1.img"),
            ..Default::default()
        };
        let base = store
            .ingest_with("t", &src, &options)
            .await
            .unwrap()
            .checkpoint;

        let new_page = vec![0xabu8; PAGE_SIZE];
        let zero = vec![0u8; PAGE_SIZE];
        let d = store
            .derive(&base, "pages-1.img", &[(0, &new_page), (1, &zero)])
            .await
            .unwrap();
        assert_eq!(d.checkpoint.generation, 2);
        assert_eq!(d.pages_new, 1);
        assert_eq!(store.latest("t").await.unwrap(), Some(d.checkpoint.clone()));
        let m = store.manifest(&d.checkpoint).await.unwrap();
        assert_eq!(m.parent.as_ref(), Some(&base.id));
        let f = m.file("pages-1.img").unwrap();
        let read = store.read_file_at(f, 0, 4 * PAGE_SIZE).await.unwrap();
        assert_eq!(&read[..PAGE_SIZE], &new_page[..]);
        assert!(read[PAGE_SIZE..].iter().all(|&b| b == 0));
        // The base is unchanged.
        let old = store.manifest(&base).await.unwrap();
        let read = store
            .read_file_at(old.file("pages-1.img").unwrap(), 0, 4 * PAGE_SIZE)
            .await
            .unwrap();
        assert_eq!(read, data);

        assert!(store
            .derive(&base, "pages-1.img", &[(4, &zero)])
            .await
            .is_err());
        assert!(store
            .derive(&base, "core-1.img", &[(0, &zero)])
            .await
            .is_err());
        assert!(store.derive(&base, "nope", &[]).await.is_err());
    }
}
