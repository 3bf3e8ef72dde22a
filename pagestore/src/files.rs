//! A checkpoint's files read through the tiers: a byte range of one file (the pager's reads of
//! pages not all in memory), or every file written out to a directory (`pico store
//! materialize`, and checks that a checkpoint reads back byte-identical).

use std::path::Path;

use bytes::Bytes;
use futures::stream::{self, StreamExt};
use tracing::debug;

use crate::error::{Error, Result};
use crate::manifest::{CheckpointRef, FileContent, FileEntry, Manifest};
use crate::page::{PageSpan, PAGE_SIZE};
use crate::store::PageStore;
use crate::tally::TierTally;

/// Pages one materialize asks of [`PageStore::read_pages`] at a time (4 MiB, so that a batch of
/// neighbouring pages becomes one ranged GET of up to [`crate::read::MAX_RANGE`]).
const MATERIALIZE_BATCH: usize = 1024;
/// Batches one materialize keeps in flight (16 MiB of pages in memory at most).
const MATERIALIZE_CONCURRENCY: usize = 4;

impl PageStore {
    /// Reads `len` bytes at `offset` of one file of a checkpoint (short at the end of the file).
    pub fn read_file_at<'a>(
        &'a self,
        file: &'a FileEntry,
        offset: u64,
        len: usize,
    ) -> impl std::future::Future<Output = Result<Bytes>> + Send + 'a {
        self.read_file_at_counted(file, offset, len, None)
    }

    /// [`Self::read_file_at`], counting in `tally` which tier served each page.
    pub fn read_file_at_tallied<'a>(
        &'a self,
        file: &'a FileEntry,
        offset: u64,
        len: usize,
        tally: &'a TierTally,
    ) -> impl std::future::Future<Output = Result<Bytes>> + Send + 'a {
        self.read_file_at_counted(file, offset, len, Some(tally))
    }

    async fn read_file_at_counted(
        &self,
        file: &FileEntry,
        offset: u64,
        len: usize,
        tally: Option<&TierTally>,
    ) -> Result<Bytes> {
        let Some(span) = PageSpan::within(offset, len as u64, file.size) else {
            return Ok(Bytes::new());
        };
        match &file.content {
            FileContent::Inline(data) => Ok(Bytes::copy_from_slice(
                &data[span.start() as usize..span.end() as usize],
            )),
            FileContent::Paged(pages) => {
                let ids = pages.get(span.pages()).ok_or_else(|| {
                    Error::BadManifest(format!(
                        "file {} is {} bytes but lists {} pages",
                        file.name,
                        file.size,
                        pages.len()
                    ))
                })?;
                let loaded = self.read_path.read_pages(ids, tally).await?;
                Ok(span.gather(&loaded))
            }
        }
    }

    /// Writes the checkpoint's files into `dir` (created if missing), byte-identical to what was
    /// ingested.
    pub async fn materialize(&self, checkpoint: &CheckpointRef, dir: &Path) -> Result<Manifest> {
        use std::io::Write;
        use std::os::unix::fs::PermissionsExt;

        let manifest = self.manifest(checkpoint).await?;
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        for file in &manifest.files {
            let path = dir.join(&file.name);
            let mut out = std::fs::File::create(&path).map_err(|e| Error::io(&path, e))?;
            match &file.content {
                FileContent::Inline(data) => {
                    out.write_all(data).map_err(|e| Error::io(&path, e))?
                }
                FileContent::Paged(pages) => {
                    let batches: Vec<_> = pages
                        .chunks(MATERIALIZE_BATCH)
                        .map(|ids| self.read_pages(ids))
                        .collect();
                    let mut batches = stream::iter(batches).buffered(MATERIALIZE_CONCURRENCY);
                    let mut left = file.size;
                    while let Some(batch) = batches.next().await {
                        for page in batch? {
                            let n = left.min(PAGE_SIZE as u64) as usize;
                            out.write_all(&page[..n]).map_err(|e| Error::io(&path, e))?;
                            left -= n as u64;
                        }
                    }
                }
            }
            out.set_permissions(std::fs::Permissions::from_mode(file.mode & 0o7777))
                .map_err(|e| Error::io(&path, e))?;
            debug!(file = %file.name, bytes = file.size, "materialized");
        }
        Ok(manifest)
    }
}
