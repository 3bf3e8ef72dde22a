//! Ingest: turns a directory (usually a CRIU image dir) into a committed checkpoint.
//!
//! Paged files (the caller's rule, [`PagedFiles`]: by default every file over [`INLINE_MAX`]) are
//! split into pages and named in parallel; zero pages and pages the store already has cost no
//! compression and no upload; new pages are lz4-encoded in parallel and packed. Packs
//! are uploaded first, then the manifest: its upload is the commit point, so until it is durable
//! the tenant's previous checkpoint is its newest one, and a crash leaves at worst unreferenced
//! packs behind. The new pages are cached in the local tier behind the commit, one engine write
//! per pack ([`crate::local::Filler`]; [`PageStore::local_settled`] waits for it).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use futures::stream::{FuturesUnordered, StreamExt};
use serde::Serialize;
use tracing::{debug, info, info_span, warn, Instrument};

use crate::blocking::blocking;
use crate::codec::{self, Codec};
use crate::error::{Error, Result};
use crate::lock::LockKind;
use crate::manifest::{
    valid_tenant_name, CheckpointId, CheckpointRef, FileContent, FileEntry, Manifest, FULL_EVERY,
};
use crate::manifest_cache::ManifestInfo;
use crate::pack::PackBuilder;
use crate::page::{self, PageId, PAGE_SIZE};
use crate::store::PageStore;

/// Files larger than this are split into pages whatever the [`PagedFiles`] rule says.
pub const INLINE_MAX: u64 = 1 << 20;

/// Pages of a page file read, named and encoded at a time (8 MiB): enough to keep every core
/// busy, and an ingest holds a few chunks rather than whole page files.
const CHUNK_PAGES: usize = 2048;

/// Full packs uploading (and being cached locally) while the next ones are built.
const PACKS_IN_FLIGHT: usize = 2;

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
    /// Bytes handed to the compressor: new pages only (zero and known pages cost none).
    pub bytes_compressed: u64,
    pub packs_written: usize,
    /// Bytes uploaded to the cold tier: packs plus the manifest.
    pub bytes_uploaded: u64,
    /// Pages also written to the checkpoint's locality pack ([`IngestOptions::locality`]), and
    /// its bytes: copies of pages stored elsewhere too (included in `bytes_uploaded`).
    pub locality_pages: u64,
    pub locality_bytes: u64,
    pub elapsed_ms: u64,
    /// The committed manifest, for callers that use it next (a worker restoring the tenant
    /// later need not read back what it just wrote).
    #[serde(skip)]
    pub manifest: Option<std::sync::Arc<Manifest>>,
}

/// Choices of one ingest beyond its input.
#[derive(Clone, Debug, Default)]
pub struct IngestOptions {
    /// Pages to *also* store together, in this order, in one locality pack named by the
    /// manifest (see [`crate::locality`]); empty: none. The caller bounds its length.
    pub locality: Vec<crate::locality::PagePos>,
    /// Also put every non-zero page of the checkpoint into the memory tier (named from the very
    /// bytes it holds, so checked by construction), for a checkpoint expected to be read back
    /// whole soon: a small tenant's, which its next swap-in writes out of memory. Done inline,
    /// so for small checkpoints only.
    pub keep_in_memory: bool,
    /// Which files are split into pages; by default those larger than [`INLINE_MAX`].
    pub paged: PagedFiles,
    /// Told of the pages of the paged files as they are processed (stage `ingest`: their
    /// pages and bytes).
    pub progress: crate::progress::Reporter,
}

/// Which files of a checkpoint are split into pages; the others are kept whole (inline) in the
/// manifest. Every file larger than [`INLINE_MAX`] is paged; the caller, who knows the format of
/// the directory, may name more (an image format's page files, however small), since the store
/// does not know formats. The default pages by size alone.
#[derive(Clone, Copy, Debug, Default)]
pub struct PagedFiles {
    /// Files paged whatever their size.
    named: Option<fn(&str) -> bool>,
}

impl PagedFiles {
    /// Files `named` accepts, and every file larger than [`INLINE_MAX`].
    pub const fn named(named: fn(&str) -> bool) -> PagedFiles {
        PagedFiles { named: Some(named) }
    }

    /// Whether a file of `size` bytes called `name` is split into pages.
    pub fn is_paged(&self, name: &str, size: u64) -> bool {
        self.named.is_some_and(|named| named(name)) || size > INLINE_MAX
    }
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

/// New pages of a chunk, encoded on one core: their bytes back to back, and per page its id,
/// codec and encoded length, in order.
#[derive(Default)]
struct Encoded {
    bytes: Vec<u8>,
    pages: Vec<(PageId, Codec, u32)>,
}

impl Encoded {
    /// Its pages in order: id, codec and encoded bytes.
    fn pages(&self) -> impl Iterator<Item = (PageId, Codec, &[u8])> {
        let mut at = 0usize;
        self.pages.iter().map(move |&(id, codec, len)| {
            let bytes = &self.bytes[at..at + len as usize];
            at += len as usize;
            (id, codec, bytes)
        })
    }
}

/// How many of `n` pages each core takes when they are spread over the cores, each core taking
/// at least `min_per_core` (a thread costs more than a few pages' work).
fn per_core(n: usize, min_per_core: usize) -> usize {
    let cores = std::thread::available_parallelism()
        .map(|c| c.get())
        .unwrap_or(1)
        .min(n.div_ceil(min_per_core).max(1));
    n.div_ceil(cores).max(1)
}

/// Encodes the pages of `data` at `indices` on all cores, each core into one of `out` (cleared
/// first; kept from chunk to chunk, so their memory is already mapped).
fn encode_pages(data: &[u8], ids: &[PageId], indices: &[usize], out: &mut Vec<Encoded>) {
    let runs = indices.chunks(per_core(indices.len(), 128));
    out.resize_with(runs.len(), Encoded::default);
    std::thread::scope(|s| {
        for (run, encoded) in runs.zip(out.iter_mut()) {
            s.spawn(move || {
                encoded.bytes.clear();
                encoded.pages.clear();
                for &i in run {
                    let before = encoded.bytes.len();
                    let codec = codec::encode_into(&page::page_at(data, i), &mut encoded.bytes);
                    encoded
                        .pages
                        .push((ids[i], codec, (encoded.bytes.len() - before) as u32));
                }
            });
        }
    });
}

impl PageStore {
    /// Ingests every file of `dir` as the next checkpoint of `tenant`.
    pub async fn ingest(&self, tenant: &str, dir: &Path) -> Result<IngestReport> {
        self.ingest_with(tenant, dir, &IngestOptions::default())
            .await
    }

    /// [`Self::ingest`] with options.
    pub async fn ingest_with(
        &self,
        tenant: &str,
        dir: &Path,
        options: &IngestOptions,
    ) -> Result<IngestReport> {
        if !valid_tenant_name(tenant) {
            return Err(Error::BadInput {
                path: dir.to_path_buf(),
                reason: format!(
                    "tenant name {tenant:?} must be 1-63 letters, digits, '.', '_' or '-', \
                     starting with a letter or digit"
                ),
            });
        }
        // A gc beside it deletes no page it dedups against: either it announced those pages
        // (`doomed`: stored again here) or it waits for this commit ([`crate::lock`]).
        let lock = self.lock(LockKind::Ingest).await?;
        let doomed = lock.doomed();
        // Caching new pages locally waits for the commit (unless its queue fills).
        let filling = self.filler.as_ref().map(|f| f.ingest_started());
        let result = self.ingest_locked(tenant, dir, options, doomed).await;
        drop(filling);
        let unlocked = self.unlock(lock).await;
        let report = result?;
        unlocked?;
        Ok(report)
    }

    async fn ingest_locked(
        &self,
        tenant: &str,
        dir: &Path,
        options: &IngestOptions,
        doomed: Option<Arc<page::PageSet>>,
    ) -> Result<IngestReport> {
        // Forget packs a gc deleted since the catalog was loaded.
        self.refresh_catalog().await?;
        let parent = self.latest(tenant).await?;
        let generation = parent.as_ref().map_or(1, |p| p.generation + 1);
        let span = info_span!("ingest", tenant, generation);
        let report = self
            .ingest_generation(tenant, generation, parent.as_ref(), dir, options, doomed)
            .instrument(span)
            .await?;
        // The newest checkpoint's locality pack is the one the next restore reads (a first
        // checkpoint has no older ones to drop).
        if generation > 1 {
            self.drop_locality(tenant, |g| g < generation).await;
        }
        if self.config.retention.keep_last > 0 {
            // The new checkpoint is committed; a failure here only delays the cleanup.
            let policy = &self.config.retention;
            if let Err(e) = self.apply_retention_policy(tenant, policy).await {
                tracing::warn!(tenant, error = %e, "retention failed; older checkpoints kept");
            }
        }
        Ok(report)
    }

    async fn ingest_generation(
        &self,
        tenant: &str,
        generation: u64,
        parent: Option<&CheckpointRef>,
        dir: &Path,
        options: &IngestOptions,
        doomed: Option<Arc<page::PageSet>>,
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
            bytes_compressed: 0,
            packs_written: 0,
            bytes_uploaded: 0,
            locality_pages: 0,
            locality_bytes: 0,
            elapsed_ms: 0,
            manifest: None,
        };
        let paged: Vec<u64> = inputs
            .iter()
            .filter(|i| options.paged.is_paged(&i.name, i.size))
            .map(|i| i.size)
            .collect();
        options.progress.get().stage(
            "ingest",
            paged.iter().map(|s| page::page_count(*s)).sum(),
            paged.iter().sum(),
        );
        let mut files = Vec::with_capacity(inputs.len());
        let mut packing = Packing {
            keep_in_memory: options.keep_in_memory,
            builder: PackBuilder::new(),
            seen: page::PageSet::default(),
            doomed,
            uploads: FuturesUnordered::new(),
        };
        for input in inputs {
            let content = if options.paged.is_paged(&input.name, input.size) {
                let ids = self
                    .ingest_paged_file(&input, &mut packing, &mut report, options)
                    .await?;
                report.logical_bytes += input.size;
                FileContent::Paged(ids)
            } else {
                let path = input.path.clone();
                let data =
                    blocking(move || std::fs::read(&path).map_err(|e| Error::io(&path, e))).await?;
                if data.len() as u64 != input.size {
                    return Err(changed_size(&input.path));
                }
                FileContent::Inline(data)
            };
            files.push(FileEntry {
                name: input.name,
                mode: input.mode,
                size: input.size,
                content,
            });
        }
        let last = std::mem::take(&mut packing.builder);
        if !last.is_empty() {
            packing.uploads.push(Box::pin(self.commit_pack(last)));
        }
        // Every pack durable (and known to the catalog) before the manifest names them.
        while let Some(done) = packing.uploads.next().await {
            done?.add_to(&mut report);
        }

        let packs = self.packs_holding(&files)?;
        // Durable before the manifest that names it, like every pack.
        let locality = self
            .write_locality(tenant, generation, dir, &files, &options.locality)
            .await?;
        if let Some(l) = &locality {
            report.locality_pages = u64::from(l.pages);
            report.locality_bytes = l.bytes;
            report.bytes_uploaded += l.bytes;
        }
        let manifest = Manifest {
            tenant: tenant.to_string(),
            generation,
            created_ms: crate::clock::now_ms(),
            parent: parent.map(|p| p.id.clone()),
            packs,
            files,
            locality,
        };
        let base = self.delta_base(parent, generation).await;
        let bytes = manifest.encode_dense(base.as_ref().map(|(r, m)| (r, m.as_ref())))?;
        report.checkpoint.id = CheckpointId::of_manifest_bytes(&bytes);
        report.bytes_uploaded += bytes.len() as u64;
        // The commit point.
        self.cold()
            .put(&report.checkpoint.object_key(), bytes)
            .await?;
        report.elapsed_ms = started.elapsed().as_millis() as u64;
        let manifest = std::sync::Arc::new(manifest);
        let id = report.checkpoint.id.clone();
        if base.is_none() {
            self.manifests.put_full(id.clone(), manifest.clone());
        }
        self.manifests.put_info(
            id,
            ManifestInfo {
                created_ms: manifest.created_ms,
                base: base.map(|(r, _)| r),
            },
        );
        report.manifest = Some(manifest);
        info!(
            checkpoint = %report.checkpoint.id,
            pages = report.pages_total,
            zero = report.pages_zero,
            new = report.pages_new,
            uploaded = report.bytes_uploaded,
            locality_pages = report.locality_pages,
            locality_bytes = report.locality_bytes,
            ms = report.elapsed_ms,
            "checkpoint committed"
        );
        Ok(report)
    }

    /// The full manifest the next generation's manifest is written against: the parent if it is
    /// full, else the parent's base, unless that is [`FULL_EVERY`] generations back (then a full
    /// manifest is written). Any failure to read one means a full manifest, which is always valid.
    async fn delta_base(
        &self,
        parent: Option<&CheckpointRef>,
        generation: u64,
    ) -> Option<(CheckpointRef, std::sync::Arc<Manifest>)> {
        let parent = parent?;
        let info = self
            .manifest_info(parent)
            .await
            .inspect_err(|e| warn!(error = %e, "parent manifest unreadable; writing a full one"))
            .ok()?;
        let base = info.base.unwrap_or_else(|| parent.clone());
        if generation.saturating_sub(base.generation) >= FULL_EVERY {
            return None;
        }
        let manifest = self
            .base_manifest(parent, &base)
            .await
            .inspect_err(|e| warn!(error = %e, "base manifest unreadable; writing a full one"))
            .ok()?;
        Some((base, manifest))
    }

    /// Splits one page file into pages, a chunk at a time: names the pages of a chunk on all
    /// cores, drops zero and known ones, encodes the new ones on all cores and packs them. Full
    /// packs are uploaded while the next chunks are processed. Returns the file's page ids.
    async fn ingest_paged_file<'a>(
        &'a self,
        input: &InputFile,
        packing: &mut Packing<'a>,
        report: &mut IngestReport,
        options: &IngestOptions,
    ) -> Result<Vec<PageId>> {
        let path = input.path.clone();
        let file =
            blocking(move || std::fs::File::open(&path).map_err(|e| Error::io(&path, e))).await?;
        let mut ids = Vec::with_capacity(page::page_count(input.size) as usize);
        let mut chunk = Chunk {
            file,
            path: input.path.clone(),
            offset: 0,
            data: Vec::with_capacity(CHUNK_PAGES * PAGE_SIZE),
            ids: Vec::new(),
            encoded: Vec::new(),
        };
        let mut left = input.size;
        while left > 0 {
            let len = left.min((CHUNK_PAGES * PAGE_SIZE) as u64) as usize;
            left -= len as u64;
            let last = left == 0;
            chunk = packing
                .uploading(report, blocking(move || chunk.read_and_name(len, last)))
                .await??;
            let mut new = Vec::new();
            for (i, id) in chunk.ids.iter().enumerate() {
                if id.is_zero() {
                    report.pages_zero += 1;
                } else if (self.catalog().contains(id) && !packing.is_doomed(id))
                    || !packing.seen.insert(*id)
                {
                    report.pages_known += 1;
                } else {
                    new.push(i);
                }
            }
            if packing.keep_in_memory {
                for (i, id) in chunk.ids.iter().enumerate() {
                    // A last page cut short by the end of the file is left out.
                    match chunk.data.get(i * PAGE_SIZE..(i + 1) * PAGE_SIZE) {
                        Some(page) if !id.is_zero() => self.hot().insert(*id, page),
                        _ => {}
                    }
                }
            }
            report.pages_total += chunk.ids.len() as u64;
            options
                .progress
                .get()
                .advance(chunk.ids.len() as u64, len as u64);
            report.pages_new += new.len() as u64;
            report.bytes_compressed += (new.len() * PAGE_SIZE) as u64;
            chunk = packing
                .uploading(
                    report,
                    blocking(move || {
                        encode_pages(&chunk.data, &chunk.ids, &new, &mut chunk.encoded);
                        Ok(chunk)
                    }),
                )
                .await??;
            ids.extend_from_slice(&chunk.ids);
            for (id, c, enc) in chunk.encoded.iter().flat_map(Encoded::pages) {
                packing.builder.push(id, c, enc);
                if packing.builder.is_full() {
                    let full = std::mem::take(&mut packing.builder);
                    packing.start_upload(report, self.commit_pack(full)).await?;
                }
            }
        }
        if page::page_count(input.size) as usize != ids.len() {
            return Err(changed_size(&input.path));
        }
        debug!(file = %input.name, pages = ids.len(), "split");
        Ok(ids)
    }

    /// The packs that hold every stored page of `files`, sorted: what a manifest lists so that
    /// any machine can resolve it from the cold tier alone.
    pub(crate) fn packs_holding(&self, files: &[FileEntry]) -> Result<Vec<crate::pack::PackId>> {
        let mut packs: Vec<_> = files
            .iter()
            .flat_map(|f| f.pages())
            .filter(|id| !id.is_zero())
            .map(|id| {
                self.catalog()
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

    /// Uploads a pack and, once it is durable, makes its pages known and queues them for the
    /// local tier (cached behind the commit: [`crate::local::Filler`]).
    async fn commit_pack(&self, builder: PackBuilder) -> Result<PackCommitted> {
        // Sealing hashes the whole pack: off the thread that builds the next one.
        let (pack, data, entries) = blocking(move || Ok(builder.finish())).await?;
        let (pack, data) = self.unused_name(pack, data);
        let data = bytes::Bytes::from(data);
        let len = data.len() as u64;
        // Keep the encoded pages (shared, not copied) to warm the local tier once the pack is
        // durable.
        let local_copy = self.filler.is_some().then(|| data.clone());
        self.cold().put(&pack.object_key(), data).await?;
        // The new copy wins: a page stored again because a gc deletes its old copy
        // must be found here, and every other page of it is new.
        self.catalog().move_to_pack(pack, &entries);
        self.pack_written(pack, len, &entries);
        debug!(%pack, pages = entries.len(), bytes = len, "pack committed");
        if let (Some(filler), Some(data)) = (self.filler.clone(), local_copy) {
            // Waits only while the fill queue is full.
            blocking(move || {
                filler.submit(data, entries);
                Ok(())
            })
            .await?;
        }
        Ok(PackCommitted { bytes: len })
    }
}

/// A pack that is durable in the cold tier.
struct PackCommitted {
    bytes: u64,
}

impl PackCommitted {
    fn add_to(&self, report: &mut IngestReport) {
        report.packs_written += 1;
        report.bytes_uploaded += self.bytes;
    }
}

type Upload<'a> = futures::future::BoxFuture<'a, Result<PackCommitted>>;

/// The packing state of one ingest: the pack being filled, the pages this ingest already
/// packed, and the full packs still uploading.
struct Packing<'a> {
    /// [`IngestOptions::keep_in_memory`].
    keep_in_memory: bool,
    builder: PackBuilder,
    seen: page::PageSet,
    /// Pages a running gc deletes: stored again, never referenced ([`crate::lock`]).
    doomed: Option<Arc<page::PageSet>>,
    uploads: FuturesUnordered<Upload<'a>>,
}

impl<'a> Packing<'a> {
    fn is_doomed(&self, id: &PageId) -> bool {
        self.doomed.as_ref().is_some_and(|d| d.contains(id))
    }

    /// Runs `work` while the uploads in flight make progress.
    async fn uploading<T>(
        &mut self,
        report: &mut IngestReport,
        work: impl std::future::Future<Output = T>,
    ) -> Result<T> {
        tokio::pin!(work);
        loop {
            tokio::select! {
                out = &mut work => return Ok(out),
                Some(done) = self.uploads.next(), if !self.uploads.is_empty() => {
                    done?.add_to(report);
                }
            }
        }
    }

    /// Queues an upload, first waiting for one to finish if [`PACKS_IN_FLIGHT`] are under way.
    async fn start_upload(
        &mut self,
        report: &mut IngestReport,
        upload: impl std::future::Future<Output = Result<PackCommitted>> + Send + 'a,
    ) -> Result<()> {
        while self.uploads.len() >= PACKS_IN_FLIGHT {
            if let Some(done) = self.uploads.next().await {
                done?.add_to(report);
            }
        }
        self.uploads.push(Box::pin(upload));
        Ok(())
    }
}

/// One chunk of a page file: its bytes and their page ids, with the open file it came from
/// (moved to a blocking thread and back, so the buffer is reused chunk after chunk).
struct Chunk {
    file: std::fs::File,
    path: PathBuf,
    /// Where in the file the next chunk starts.
    offset: u64,
    data: Vec<u8>,
    ids: Vec<PageId>,
    /// The chunk's new pages, encoded (one buffer per core).
    encoded: Vec<Encoded>,
}

impl Chunk {
    /// Reads the next `len` bytes of the file (the file must end there when `last`) and names
    /// their pages, on all cores: each core reads its own run of pages with positional reads
    /// and hashes them while they are in its cache.
    fn read_and_name(mut self, len: usize, last: bool) -> Result<Chunk> {
        use std::os::unix::fs::FileExt;
        self.data.resize(len, 0);
        let pages = len.div_ceil(PAGE_SIZE);
        self.ids.clear();
        self.ids.resize(pages, PageId::ZERO);
        let per = per_core(pages, 256);
        let (file, path, offset) = (&self.file, &self.path, self.offset);
        std::thread::scope(|s| {
            let runs: Vec<_> = self
                .data
                .chunks_mut(per * PAGE_SIZE)
                .zip(self.ids.chunks_mut(per))
                .enumerate()
                .map(|(t, (bytes, ids))| {
                    s.spawn(move || -> Result<()> {
                        let at = offset + (t * per * PAGE_SIZE) as u64;
                        file.read_exact_at(bytes, at).map_err(|e| match e.kind() {
                            std::io::ErrorKind::UnexpectedEof => changed_size(path),
                            _ => Error::io(path, e),
                        })?;
                        page::name_into(bytes, ids);
                        Ok(())
                    })
                })
                .collect();
            runs.into_iter().try_for_each(|run| {
                run.join().unwrap_or_else(|_| {
                    Err(Error::io(
                        path,
                        std::io::Error::other("page naming thread panicked"),
                    ))
                })
            })
        })?;
        self.offset += len as u64;
        if last {
            let mut more = [0u8; 1];
            if self
                .file
                .read_at(&mut more, self.offset)
                .map_err(|e| Error::io(&self.path, e))?
                > 0
            {
                return Err(changed_size(&self.path));
            }
        }
        Ok(self)
    }
}

fn changed_size(path: &Path) -> Error {
    Error::BadInput {
        path: path.to_path_buf(),
        reason: "file changed size while being ingested".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn by_default_only_large_files_are_paged_and_a_rule_adds_named_ones() {
        let by_size = PagedFiles::default();
        assert!(!by_size.is_paged("pages-1.img", PAGE_SIZE as u64));
        assert!(!by_size.is_paged("big", INLINE_MAX));
        assert!(by_size.is_paged("big", INLINE_MAX + 1));
        let named = PagedFiles::named(|name| name.ends_with(".pages"));
        assert!(named.is_paged("a.pages", 0));
        assert!(!named.is_paged("a.txt", PAGE_SIZE as u64));
        assert!(named.is_paged("a.txt", INLINE_MAX + 1));
    }
}
