//! Ingest: turns a directory (usually a CRIU image dir) into a committed checkpoint.
//!
//! Paged files are split into pages and named in parallel; zero pages and pages the store already
//! has cost no compression and no upload; new pages are lz4-encoded in parallel and packed. Packs
//! are uploaded first, then the manifest: its upload is the commit point, so until it is durable
//! the tenant's previous checkpoint is its newest one, and a crash leaves at worst unreferenced
//! packs behind.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;
use tracing::{debug, info, info_span, Instrument};

use crate::codec::{self, Codec};
use crate::error::{Error, Result};
use crate::lock::LockKind;
use crate::manifest::{
    valid_tenant_name, CheckpointId, CheckpointRef, FileContent, FileEntry, Manifest,
};
use crate::pack::PackBuilder;
use crate::page::{self, PageId};
use crate::store::PageStore;

/// Files larger than this are split into pages even when not named `pages-*.img`.
pub const INLINE_MAX: u64 = 1 << 20;

/// What one ingest did.
#[derive(Clone, Debug, Serialize)]
pub struct IngestReport {
    pub checkpoint: CheckpointRef,
    pub files: usize,
    /// Bytes of the paged files.
    pub logical_bytes: u64,
    pub pages_total: u64,
    pub pages_zero: u64,
    /// Non-zero pages the store already had (or that repeat within this checkpoint).
    pub pages_known: u64,
    /// Pages stored by this ingest.
    pub pages_new: u64,
    pub packs_written: usize,
    /// Bytes uploaded to the cold tier: packs plus the manifest.
    pub bytes_uploaded: u64,
    pub elapsed_ms: u64,
    /// The committed manifest, for callers that use it next (a worker restoring the tenant
    /// later need not read back what it just wrote).
    #[serde(skip)]
    pub manifest: Option<std::sync::Arc<Manifest>>,
}

/// Whether a file of a checkpoint is split into pages (true for CRIU's page files).
pub fn is_page_file(name: &str, size: u64) -> bool {
    (name.starts_with("pages-") && name.ends_with(".img")) || size > INLINE_MAX
}

struct InputFile {
    name: String,
    path: PathBuf,
    mode: u32,
    size: u64,
}

fn list_input(dir: &Path) -> Result<Vec<InputFile>> {
    use std::os::unix::fs::PermissionsExt;
    let bad = |reason: String| Error::BadInput {
        path: dir.to_path_buf(),
        reason,
    };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let path = entry.path();
        let meta = std::fs::symlink_metadata(&path).map_err(|e| Error::io(&path, e))?;
        let name = entry
            .file_name()
            .into_string()
            .map_err(|n| bad(format!("file name {n:?} is not UTF-8")))?;
        if !meta.is_file() {
            return Err(bad(format!(
                "{name} is not a regular file; only flat directories of files (like a CRIU image \
                 directory) can be ingested"
            )));
        }
        out.push(InputFile {
            name,
            path,
            mode: meta.permissions().mode(),
            size: meta.len(),
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(Error::io("<blocking task>", std::io::Error::other(e))))
}

/// Encodes the pages of `data` at `indices` on all cores.
fn encode_pages(data: &[u8], ids: &[PageId], indices: &[usize]) -> Vec<(PageId, Codec, Vec<u8>)> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(indices.len().div_ceil(128).max(1));
    let per = indices.len().div_ceil(threads).max(1);
    let mut out: Vec<Vec<(PageId, Codec, Vec<u8>)>> = Vec::new();
    std::thread::scope(|s| {
        let handles: Vec<_> = indices
            .chunks(per)
            .map(|chunk| {
                s.spawn(move || {
                    chunk
                        .iter()
                        .map(|&i| {
                            let (c, enc) = codec::encode(&page::page_at(data, i));
                            (ids[i], c, enc)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for h in handles {
            out.push(h.join().unwrap_or_default());
        }
    });
    out.into_iter().flatten().collect()
}

impl PageStore {
    /// Ingests every file of `dir` as the next checkpoint of `tenant`.
    pub async fn ingest(&self, tenant: &str, dir: &Path) -> Result<IngestReport> {
        if !valid_tenant_name(tenant) {
            return Err(Error::BadInput {
                path: dir.to_path_buf(),
                reason: format!(
                    "tenant name {tenant:?} must be 1-63 letters, digits, '.', '_' or '-', \
                     starting with a letter or digit"
                ),
            });
        }
        // No gc may delete a pack this ingest dedups against until its manifest is committed.
        let lock = self.lock(LockKind::Ingest).await?;
        let result = self.ingest_locked(tenant, dir).await;
        let unlocked = self.unlock(lock).await;
        let report = result?;
        unlocked?;
        Ok(report)
    }

    async fn ingest_locked(&self, tenant: &str, dir: &Path) -> Result<IngestReport> {
        // Forget packs a gc deleted since the catalog was loaded.
        self.refresh_catalog().await?;
        let parent = self.latest(tenant).await?;
        let generation = parent.as_ref().map_or(1, |p| p.generation + 1);
        let span = info_span!("ingest", tenant, generation);
        let report = self
            .ingest_generation(tenant, generation, parent.map(|p| p.id), dir)
            .instrument(span)
            .await?;
        let keep = self.config.retention.keep_last;
        if keep > 0 {
            // The new checkpoint is committed; a failure here only delays the cleanup.
            if let Err(e) = self.apply_retention(tenant, keep).await {
                tracing::warn!(tenant, error = %e, "retention failed; older checkpoints kept");
            }
        }
        Ok(report)
    }

    async fn ingest_generation(
        &self,
        tenant: &str,
        generation: u64,
        parent: Option<CheckpointId>,
        dir: &Path,
    ) -> Result<IngestReport> {
        let started = Instant::now();
        let inputs = {
            let dir = dir.to_path_buf();
            blocking(move || list_input(&dir)).await?
        };
        let mut report = IngestReport {
            checkpoint: CheckpointRef {
                tenant: tenant.to_string(),
                generation,
                id: CheckpointId::of_manifest_bytes(b""),
            },
            files: inputs.len(),
            logical_bytes: 0,
            pages_total: 0,
            pages_zero: 0,
            pages_known: 0,
            pages_new: 0,
            packs_written: 0,
            bytes_uploaded: 0,
            elapsed_ms: 0,
            manifest: None,
        };
        let mut files = Vec::with_capacity(inputs.len());
        let mut builder = PackBuilder::new();
        let mut seen: HashSet<PageId> = HashSet::new();

        for input in inputs {
            let path = input.path.clone();
            let data =
                blocking(move || std::fs::read(&path).map_err(|e| Error::io(&path, e))).await?;
            if data.len() as u64 != input.size {
                return Err(Error::BadInput {
                    path: input.path,
                    reason: "file changed size while being ingested".into(),
                });
            }
            if !is_page_file(&input.name, input.size) {
                files.push(FileEntry {
                    name: input.name,
                    mode: input.mode,
                    size: input.size,
                    content: FileContent::Inline(data),
                });
                continue;
            }
            let (data, ids) = blocking(move || {
                let ids = page::name_pages(&data);
                Ok((data, ids))
            })
            .await?;
            let mut new_indices = Vec::new();
            for (i, id) in ids.iter().enumerate() {
                if id.is_zero() {
                    report.pages_zero += 1;
                } else if self.catalog.contains(id) || !seen.insert(*id) {
                    report.pages_known += 1;
                } else {
                    new_indices.push(i);
                }
            }
            report.pages_total += ids.len() as u64;
            report.pages_new += new_indices.len() as u64;
            report.logical_bytes += input.size;
            debug!(file = %input.name, pages = ids.len(), new = new_indices.len(), "split");

            let (ids, encoded) = blocking(move || {
                let encoded = encode_pages(&data, &ids, &new_indices);
                Ok((ids, encoded))
            })
            .await?;
            for (id, c, enc) in encoded {
                builder.push(id, c, &enc);
                if builder.is_full() {
                    let full = std::mem::take(&mut builder);
                    self.commit_pack(full, &mut report).await?;
                    builder = PackBuilder::new();
                }
            }
            files.push(FileEntry {
                name: input.name,
                mode: input.mode,
                size: input.size,
                content: FileContent::Paged(ids),
            });
        }
        if !builder.is_empty() {
            self.commit_pack(builder, &mut report).await?;
        }

        let packs = self.packs_holding(&files)?;
        let manifest = Manifest {
            tenant: tenant.to_string(),
            generation,
            created_ms: crate::clock::now_ms(),
            parent,
            packs,
            files,
        };
        let bytes = manifest.encode();
        report.checkpoint.id = CheckpointId::of_manifest_bytes(&bytes);
        report.bytes_uploaded += bytes.len() as u64;
        // The commit point.
        self.cold
            .put(&report.checkpoint.object_key(), bytes)
            .await?;
        report.elapsed_ms = started.elapsed().as_millis() as u64;
        report.manifest = Some(std::sync::Arc::new(manifest));
        info!(
            checkpoint = %report.checkpoint.id,
            pages = report.pages_total,
            zero = report.pages_zero,
            new = report.pages_new,
            uploaded = report.bytes_uploaded,
            ms = report.elapsed_ms,
            "checkpoint committed"
        );
        Ok(report)
    }

    /// The packs that hold every stored page of `files`, sorted: what a manifest lists so that
    /// any machine can resolve it from the cold tier alone.
    pub(crate) fn packs_holding(&self, files: &[FileEntry]) -> Result<Vec<crate::pack::PackId>> {
        let mut packs: Vec<_> = files
            .iter()
            .flat_map(|f| f.pages())
            .filter(|id| !id.is_zero())
            .map(|id| {
                self.catalog
                    .locate(id)
                    .map(|l| l.pack)
                    .ok_or(Error::PageMissing(*id))
            })
            .collect::<Result<HashSet<_>>>()?
            .into_iter()
            .collect();
        packs.sort();
        Ok(packs)
    }

    /// Uploads a pack and, once it is durable, makes its pages known (and caches them locally).
    async fn commit_pack(&self, builder: PackBuilder, report: &mut IngestReport) -> Result<()> {
        let (pack, data, entries) = builder.finish();
        let len = data.len() as u64;
        // Keep the encoded pages to warm the local tier once the pack is durable.
        let cached: Vec<(usize, usize)> = entries
            .iter()
            .map(|e| (e.offset as usize, e.offset as usize + e.len as usize))
            .collect();
        let local_copy = self.local.is_some().then(|| data.clone());
        self.cold.put(&pack.object_key(), data).await?;
        self.catalog.add_pack(pack, &entries);
        self.pack_written(pack, len, &entries);
        if let (Some(local), Some(data)) = (&self.local, local_copy) {
            for (e, (from, to)) in entries.iter().zip(cached) {
                if let Err(err) = local.put(&e.id, e.codec, &data[from..to]) {
                    tracing::warn!(error = %err, "could not cache an ingested page locally");
                    break;
                }
            }
        }
        report.packs_written += 1;
        report.bytes_uploaded += len;
        debug!(%pack, pages = entries.len(), bytes = len, "pack committed");
        Ok(())
    }
}
