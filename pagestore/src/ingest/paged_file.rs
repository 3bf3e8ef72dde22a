//! A page file's ingest, a chunk at a time: its pages read and named on all cores, zero and
//! known ones dropped, the new ones encoded on all cores and packed.

use std::path::PathBuf;

use tracing::debug;

use super::input::{changed_size, InputFile};
use super::packing::Packing;
use super::{IngestOptions, IngestReport};
use crate::blocking::blocking;
use crate::codec::{self, Codec};
use crate::error::{Error, Result};
use crate::page::{self, PageId, PAGE_SIZE};
use crate::store::PageStore;

/// Pages of a page file read, named and encoded at a time (8 MiB): enough to keep every core
/// busy, and an ingest holds a few chunks rather than whole page files.
const CHUNK_PAGES: usize = 2048;

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
    /// Splits one page file into pages, a chunk at a time: names the pages of a chunk on all
    /// cores, drops zero and known ones, encodes the new ones on all cores and packs them. Full
    /// packs are uploaded while the next chunks are processed. Returns the file's page ids.
    pub(super) async fn ingest_paged_file<'a>(
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
