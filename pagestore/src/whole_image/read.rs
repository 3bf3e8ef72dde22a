//! Reading a kept image back (see the module doc of [`super`]): its header and footer checked
//! at open, then its parts decoded on several threads, each page checked against its id, and
//! written into the image's files.

use std::path::PathBuf;
use std::sync::Mutex;

use super::{HEADER, MAGIC, PAGE_HEADER, PART};
use crate::codec::Codec;
use crate::manifest::Manifest;
use crate::page::PAGE_SIZE;

/// Why a part of a kept image was not written out: the image is not what it says (deleted
/// then), or an output file could not be written.
pub(super) enum PartFailed {
    Bad(String),
    Io(PathBuf, std::io::Error),
}

/// What a kept image's header says: its checkpoint (generation, creation time) and how many
/// pages it holds.
struct Header {
    generation: u64,
    created_ms: u64,
    count: usize,
}

impl Header {
    /// The header of `file`; `None` if it is not a kept image.
    fn read(file: &std::fs::File) -> Option<Header> {
        use std::os::unix::fs::FileExt;
        let mut header = [0u8; HEADER];
        file.read_exact_at(&mut header, 0).ok()?;
        if &header[..MAGIC.len()] != MAGIC {
            return None;
        }
        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&header[at..at + 8]);
            u64::from_le_bytes(b)
        };
        Some(Header {
            generation: u64_at(8),
            created_ms: u64_at(16),
            count: u32::from_le_bytes([header[24], header[25], header[26], header[27]]) as usize,
        })
    }
}

/// The generation of the checkpoint whose kept image is at `path`; `None` when there is none or
/// it is not a kept image.
pub(super) fn kept_generation(path: &std::path::Path) -> Option<u64> {
    Header::read(&std::fs::File::open(path).ok()?).map(|h| h.generation)
}

/// A kept image of a checkpoint, open to be read part by part.
pub(super) struct KeptImage {
    file: std::fs::File,
    /// Where each part's first page starts, then where the last part ends (the footer).
    bounds: Vec<u64>,
    count: usize,
}

impl KeptImage {
    /// The kept image `kept` if it is the image of `manifest`, its footer read and checked;
    /// `Ok(None)` if it is another checkpoint's, `Err` if it is not a kept image at all.
    pub(super) fn open(
        kept: std::fs::File,
        manifest: &Manifest,
    ) -> std::result::Result<Option<Self>, String> {
        use std::os::unix::fs::FileExt;
        let header = Header::read(&kept).ok_or("not a kept image")?;
        if (header.generation, header.created_ms) != (manifest.generation, manifest.created_ms) {
            return Ok(None);
        }
        let count = header.count;
        if count != manifest.non_zero_pages().count() {
            return Err(format!("{count} pages, not the checkpoint's"));
        }
        let len = kept.metadata().map_err(|e| e.to_string())?.len();
        let parts = count.div_ceil(PART);
        let footer_at = len
            .checked_sub(8 * parts as u64)
            .filter(|&at| at >= HEADER as u64)
            .ok_or("cut short")?;
        let mut footer = vec![0u8; 8 * parts];
        kept.read_exact_at(&mut footer, footer_at)
            .map_err(|_| "cut short")?;
        let mut bounds: Vec<u64> = footer
            .chunks_exact(8)
            .map(|b| u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
            .collect();
        bounds.push(footer_at);
        let in_order = bounds.first().is_none_or(|&f| f == HEADER as u64)
            && bounds.windows(2).all(|w| w[0] < w[1]);
        if !in_order {
            return Err("a damaged footer".into());
        }
        Ok(Some(KeptImage {
            file: kept,
            bounds,
            count,
        }))
    }

    /// Decodes every part, each page checked against its id, and writes the pages into
    /// `outputs` (the files of `manifest`, opened), on as many threads as the machine has cores
    /// (at most 4), each taking the next part.
    pub(super) fn write_into(
        &self,
        manifest: &Manifest,
        outputs: &[(std::fs::File, PathBuf)],
    ) -> std::result::Result<(), PartFailed> {
        // Where each non-zero page goes: its file's index and page index, in kept order.
        let places: Vec<(usize, usize)> = manifest
            .files
            .iter()
            .enumerate()
            .flat_map(|(f, file)| {
                file.pages()
                    .iter()
                    .enumerate()
                    .filter(|(_, id)| !id.is_zero())
                    .map(move |(i, _)| (f, i))
            })
            .collect();
        debug_assert_eq!(places.len(), self.count);
        let parts = self.bounds.len() - 1;
        let next = std::sync::atomic::AtomicUsize::new(0);
        let failed: Mutex<Option<PartFailed>> = Mutex::new(None);
        let work = || {
            let mut encoded = Vec::new();
            let mut decoded = vec![0u8; PART * PAGE_SIZE];
            loop {
                let part = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if part >= parts || failed.lock().unwrap_or_else(|p| p.into_inner()).is_some() {
                    return;
                }
                let places = &places[part * PART..((part + 1) * PART).min(places.len())];
                let written = self
                    .decode_part(part, manifest, places, &mut encoded, &mut decoded)
                    .and_then(|()| write_part(manifest, outputs, places, &decoded));
                if let Err(e) = written {
                    failed
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get_or_insert(e);
                    return;
                }
            }
        };
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get().clamp(1, 4));
        match threads.min(parts) {
            0 | 1 => work(),
            n => std::thread::scope(|scope| {
                for _ in 0..n {
                    scope.spawn(work);
                }
            }),
        }
        match failed.into_inner().unwrap_or_else(|p| p.into_inner()) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Reads part `part` (the pages of `places`) into `encoded` and decodes it into `decoded`,
    /// page after page, each checked against its id.
    fn decode_part(
        &self,
        part: usize,
        manifest: &Manifest,
        places: &[(usize, usize)],
        encoded: &mut Vec<u8>,
        decoded: &mut [u8],
    ) -> std::result::Result<(), PartFailed> {
        use std::os::unix::fs::FileExt;
        let bad = |why: &str| PartFailed::Bad(format!("part {part}: {why}"));
        let (start, end) = (self.bounds[part], self.bounds[part + 1]);
        encoded.resize((end - start) as usize, 0);
        self.file
            .read_exact_at(encoded, start)
            .map_err(|_| bad("cut short"))?;
        let mut at = 0;
        for (n, &(f, i)) in places.iter().enumerate() {
            let id = &manifest.files[f].pages()[i];
            let head = encoded
                .get(at..at + PAGE_HEADER)
                .ok_or_else(|| bad("cut short"))?;
            let (codec, len) = (
                head[0],
                u32::from_le_bytes([head[1], head[2], head[3], head[4]]) as usize,
            );
            at += PAGE_HEADER;
            let data = encoded.get(at..at + len).ok_or_else(|| bad("cut short"))?;
            at += len;
            let page = &mut decoded[n * PAGE_SIZE..(n + 1) * PAGE_SIZE];
            let ok = match Codec::from_u8(codec) {
                Some(Codec::Raw) if len == PAGE_SIZE => {
                    page.copy_from_slice(data);
                    true
                }
                Some(Codec::Lz4) => {
                    lz4_flex::block::decompress_into(data, page).is_ok_and(|n| n == PAGE_SIZE)
                }
                _ => false,
            };
            if !ok || !id.matches(page) {
                return Err(PartFailed::Bad(format!("page {id} does not match its id")));
            }
        }
        match at == encoded.len() {
            true => Ok(()),
            false => Err(bad("longer than its pages")),
        }
    }
}

/// Writes the decoded pages of one part (`decoded`, in the order of `places`) into their files,
/// one positional write per run of neighbouring pages, the last page of a file cut to its size.
fn write_part(
    manifest: &Manifest,
    outputs: &[(std::fs::File, PathBuf)],
    places: &[(usize, usize)],
    decoded: &[u8],
) -> std::result::Result<(), PartFailed> {
    use std::os::unix::fs::FileExt;
    let mut n = 0;
    while n < places.len() {
        let (f, first) = places[n];
        let mut end = n + 1;
        while end < places.len() && places[end] == (f, first + (end - n)) {
            end += 1;
        }
        let offset = (first * PAGE_SIZE) as u64;
        let size = manifest.files[f].size;
        let len = (((end - n) * PAGE_SIZE) as u64).min(size.saturating_sub(offset)) as usize;
        let (out, path) = &outputs[f];
        out.write_all_at(&decoded[n * PAGE_SIZE..n * PAGE_SIZE + len], offset)
            .map_err(|e| PartFailed::Io(path.clone(), e))?;
        n = end;
    }
    Ok(())
}
