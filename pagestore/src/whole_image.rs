//! The pages of a checkpoint restored whole (a small one, or a dense tenant's) kept whole on the
//! local disk: one file per tenant holding its newest checkpoint's non-zero pages, encoded, in
//! the order of its files, so that its next whole restore reads them in one go, in parts on
//! several threads.
//!
//! **Why.** A whole restore writes the image out of the memory tier or, once that tier has
//! dropped the pages (unread for `[hot] ttl_ms`: any tenant asleep longer than that), out of the
//! local tier, one lookup per page: ~4 µs in fjall at 460k pages, ~7 µs a page with its lz4,
//! BLAKE3 and the memory tier's insert, so ~18 ms of CPU for the Python counter's 2600 pages,
//! which a burst of wake-ups pays beside the CRIU restores on the same cores
//! (bench/results/density/burst-41d32d8). From one file, a page costs its lz4 and BLAKE3. A
//! dense tenant's 18k pages (node walking a Map) took 84-107 ms out of the local tier on two
//! threads, 24-25 ms out of its kept image (`pico bench restore --apps node-map --modes
//! lazy-local-first`).
//!
//! **A copy, never a dependency.** The file is written after its checkpoint is committed, at the
//! lowest CPU priority, from the memory tier (where ingest keeps a small checkpoint), the
//! checkpoint's dump (a dense tenant's, whose pages reach the local tier only behind the
//! swap-out; each checked against its id) or the local tier; every page is
//! checked against its id as it is read back; a file that names another checkpoint, is damaged
//! or is missing is not used (a damaged one is deleted) and the caller reads the tiers as
//! before. Nothing syncs it to disk: a torn file fails its checks. `forget` deletes it with
//! its tenant. Its disk use is one image per tenant restored whole (compressed; the tenant's newest
//! checkpoint only), in a directory beside the local tier's, bounded by `[local]
//! whole_images_max_bytes` (the least recently written deleted first).
//!
//! Layout: `PCWHOLE2`, the checkpoint's generation and creation time (u64 LE each), the number
//! of pages (u32 LE), then for each non-zero page of its paged files, in file and page order
//! (repeats included): its codec (u8), its length (u32 LE) and its encoded bytes; last, the
//! footer: where each part of [`PART`] pages starts (u64 LE each), so that a restore decodes
//! the parts on several threads. (A `PCWHOLE1` file, without footer, is not a kept image: it is
//! deleted and the tiers read.)

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use tracing::{debug, info, warn};

use crate::codec::{self, Codec};
use crate::error::{Error, Result};
use crate::manifest::{FileContent, Manifest};
use crate::page::PAGE_SIZE;
use crate::resident::{open_image_file, punch_zero_pages};
use crate::store::PageStore;

const MAGIC: &[u8; 8] = b"PCWHOLE2";
const HEADER: usize = MAGIC.len() + 8 + 8 + 4;
/// Codec byte and length before each page.
const PAGE_HEADER: usize = 1 + 4;
/// The kept file is written through a buffer of 64 KiB: buffers of a whole image (3.4 MiB for
/// the counter) were allocated afresh by each restore, in memory this VM's hypervisor may have
/// taken back (~17-20 µs a page to touch again; bench/results/density/burst-41d32d8).
const CHUNK: usize = 16;
/// Pages of a part: the footer says where each part starts, so that a restore decodes parts on
/// several threads at once, each through buffers of a part (256 KiB decoded).
const PART: usize = 64;
/// What a kept image leaves free on its disk: it is a copy, and the local tier and the swap-outs'
/// dumps need the disk more (a full one stops swap-outs from committing).
const KEEP_FREE_BYTES: u64 = 1 << 30;
/// The most an encoded page takes (lz4's bound for 4 KiB).
const MAX_ENCODED: usize = PAGE_SIZE + PAGE_SIZE / 255 + 16;

/// Kept images being written behind swap-outs: what is deleted (a tenant forgotten, the local
/// tier emptied for a cold start) waits for them, so that none comes back after.
#[derive(Default)]
pub(crate) struct Writing {
    count: Mutex<usize>,
    idle: Condvar,
}

impl Writing {
    fn start(self: &Arc<Self>) -> WritingOne {
        *self.count.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        WritingOne(Arc::clone(self))
    }

    fn wait_idle(&self) {
        let mut count = self.count.lock().unwrap_or_else(|p| p.into_inner());
        while *count > 0 {
            count = self.idle.wait(count).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// One kept image being written; done when dropped.
struct WritingOne(Arc<Writing>);

impl Drop for WritingOne {
    fn drop(&mut self) {
        let mut count = self.0.count.lock().unwrap_or_else(|p| p.into_inner());
        *count -= 1;
        if *count == 0 {
            self.0.idle.notify_all();
        }
    }
}

impl PageStore {
    /// The directory of kept images: beside the local tier's, when this process holds one.
    fn whole_images_dir(&self) -> Option<PathBuf> {
        self.local()?;
        let local = &self.config().local.path;
        let name = local.file_name()?.to_string_lossy().into_owned();
        Some(local.with_file_name(format!("{name}-whole")))
    }

    fn whole_image_path(&self, tenant: &str) -> Option<PathBuf> {
        Some(self.whole_images_dir()?.join(format!("{tenant}.img")))
    }

    /// [`Self::keep_whole_image`] on a thread of its own at the lowest CPU priority, behind the
    /// caller (a swap-out just committed); logged. `dump`: the checkpoint's dump, still on disk,
    /// where its pages are read when the memory tier lacks them (a dense tenant's, which ingest
    /// does not keep in memory and the local tier gets only behind it); the caller may delete it
    /// once the task returned.
    pub fn keep_whole_image_behind(
        self: &Arc<Self>,
        manifest: Arc<Manifest>,
        dump: Option<PathBuf>,
    ) -> tokio::task::JoinHandle<()> {
        let (store, writing) = (Arc::clone(self), self.whole_images_writing.start());
        tokio::spawn(async move {
            let _writing = writing;
            let started = Instant::now();
            let tenant = manifest.tenant.clone();
            let kept = crate::blocking::idle_priority(move || {
                store.keep_whole_image(&manifest, dump.as_deref())
            })
            .await;
            match kept {
                Ok(kept) => debug!(
                    tenant,
                    kept,
                    ms = started.elapsed().as_millis() as u64,
                    "whole image kept"
                ),
                Err(e) => warn!(tenant, error = %e, "whole image not kept"),
            }
        })
    }

    /// Keeps the pages of `manifest` (its tenant's newest checkpoint) in one file of the tenant,
    /// replacing the one it had (see the module doc), each page from the memory tier, else from
    /// `dump` (the checkpoint's dump: checked against its id as read), else from the local tier;
    /// `Ok(false)` with no local tier or when a page is on none of them (nothing is written
    /// then). Blocking.
    pub fn keep_whole_image(&self, manifest: &Manifest, dump: Option<&Path>) -> Result<bool> {
        self.keep_whole_image_leaving(manifest, dump, KEEP_FREE_BYTES)
    }

    /// [`Self::keep_whole_image`], written only if its disk keeps `keep_free` bytes free after
    /// it (its size counted at the most, every page raw): `Ok(false)` otherwise.
    fn keep_whole_image_leaving(
        &self,
        manifest: &Manifest,
        dump: Option<&Path>,
        keep_free: u64,
    ) -> Result<bool> {
        let Some(path) = self.whole_image_path(&manifest.tenant) else {
            return Ok(false);
        };
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let at_most = (manifest.non_zero_pages().count() * (PAGE_HEADER + PAGE_SIZE)) as u64;
        match free_bytes(dir) {
            Ok(free) if free >= at_most.saturating_add(keep_free) => {}
            Ok(free) => {
                info!(
                    tenant = %manifest.tenant,
                    free_bytes = free,
                    image_bytes = at_most,
                    "no room on the local disk to keep a whole image"
                );
                return Ok(false);
            }
            Err(e) => return Err(Error::io(dir, e)),
        }
        // A name of this generation's own: two swap-outs of one tenant never write one file.
        let tmp = path.with_extension(format!("img.{}.tmp", manifest.generation));
        let written = self
            .write_whole_image(manifest, dump, &tmp)
            .map_err(|e| Error::io(&tmp, e));
        if !matches!(written, Ok(true)) {
            let _ = std::fs::remove_file(&tmp);
            return written;
        }
        std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
        self.bound_whole_images(dir, &path);
        Ok(true)
    }

    /// Deletes the least recently written kept images in `dir` while they hold more than
    /// `[local] whole_images_max_bytes` (never `just_kept`): their tenants, asleep the longest,
    /// are the least likely to wake next, and wake from the local tier without one.
    fn bound_whole_images(&self, dir: &Path, just_kept: &Path) {
        let max = self.config().local.whole_images_max_bytes;
        let mut kept: Vec<(std::time::SystemTime, u64, PathBuf)> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".img"))
            .filter_map(|e| {
                let meta = e.metadata().ok()?;
                Some((meta.modified().ok()?, meta.len(), e.path()))
            })
            .collect();
        let mut total: u64 = kept.iter().map(|(_, len, _)| len).sum();
        if total <= max {
            return;
        }
        kept.sort();
        for (_, len, path) in kept {
            if total <= max {
                break;
            }
            if path != just_kept && std::fs::remove_file(&path).is_ok() {
                total -= len;
            }
        }
    }

    /// Writes the kept image of `manifest` at `path` (see [`Self::keep_whole_image`]); `false` at
    /// the first page on none of the sources.
    fn write_whole_image(
        &self,
        manifest: &Manifest,
        dump: Option<&Path>,
        path: &Path,
    ) -> std::io::Result<bool> {
        let mut out =
            std::io::BufWriter::with_capacity(CHUNK * PAGE_SIZE, std::fs::File::create(path)?);
        out.write_all(MAGIC)?;
        out.write_all(&manifest.generation.to_le_bytes())?;
        out.write_all(&manifest.created_ms.to_le_bytes())?;
        out.write_all(&(manifest.non_zero_pages().count() as u32).to_le_bytes())?;
        let mut encoded = Vec::with_capacity(MAX_ENCODED);
        let mut dumped = vec![0u8; PAGE_SIZE];
        // Where each part starts, for the footer.
        let (mut at, mut kept, mut footer) = (HEADER as u64, 0usize, Vec::new());
        for file in &manifest.files {
            let FileContent::Paged(pages) = &file.content else {
                continue;
            };
            // A file the dump lacks (or no dump) leaves the tiers.
            let dump_file = dump.and_then(|d| std::fs::File::open(d.join(&file.name)).ok());
            for (index, id) in pages.iter().enumerate().filter(|(_, id)| !id.is_zero()) {
                encoded.clear();
                let codec = if let Some(page) = self.hot().peek(id) {
                    codec::encode_into(&page, &mut encoded)
                } else if dump_file.as_ref().is_some_and(|f| {
                    read_dumped_page(f, index, &mut dumped).is_ok() && id.matches(&dumped)
                }) {
                    codec::encode_into(&dumped, &mut encoded)
                } else {
                    // Encoded as the local tier holds it: checked when read back.
                    match self.local().map(|l| l.get(id)) {
                        Some(Ok(Some((codec @ (Codec::Raw | Codec::Lz4), data)))) => {
                            encoded.extend_from_slice(&data);
                            codec
                        }
                        _ => return Ok(false),
                    }
                };
                if kept % PART == 0 {
                    footer.extend_from_slice(&at.to_le_bytes());
                }
                out.write_all(&[codec as u8])?;
                out.write_all(&(encoded.len() as u32).to_le_bytes())?;
                out.write_all(&encoded)?;
                at += (PAGE_HEADER + encoded.len()) as u64;
                kept += 1;
            }
        }
        out.write_all(&footer)?;
        out.flush()?;
        Ok(true)
    }

    /// Writes the files of `manifest` into `dir` as [`PageStore::materialize_resident`] does,
    /// from the tenant's kept image (see the module doc), every page checked against its id, its
    /// parts decoded on as many threads as the machine has cores (at most 4); `Ok(false)` when
    /// it has none for this checkpoint or the one it has fails a check (it is deleted then), with
    /// part of the image written. Blocking.
    pub fn materialize_whole_image(&self, manifest: &Manifest, dir: &Path) -> Result<bool> {
        let Some(path) = self.whole_image_path(&manifest.tenant) else {
            return Ok(false);
        };
        let kept = match std::fs::File::open(&path) {
            Ok(kept) => kept,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(Error::io(&path, e)),
        };
        let image = match KeptImage::open(kept, manifest) {
            Ok(Some(image)) => image,
            // Another checkpoint's (an older one, while the newest is being kept).
            Ok(None) => return Ok(false),
            Err(why) => return Ok(discard(&path, why)),
        };
        let mut outputs = Vec::with_capacity(manifest.files.len());
        for file in &manifest.files {
            let out_path = dir.join(&file.name);
            let io = |e| Error::io(&out_path, e);
            let (out, reused) = open_image_file(&out_path, file).map_err(io)?;
            if let (true, FileContent::Paged(pages)) = (reused, &file.content) {
                punch_zero_pages(&out, file.size, 0, pages).map_err(io)?;
            }
            outputs.push((out, out_path));
        }
        match image.write_into(manifest, &outputs) {
            Ok(()) => Ok(true),
            Err(PartFailed::Bad(why)) => Ok(discard(&path, why)),
            Err(PartFailed::Io(at, e)) => Err(Error::io(&at, e)),
        }
    }

    /// Deletes tenant `tenant`'s kept image, if it has one (its tenant forgotten, or gone to
    /// another worker), once the images being written are (on a blocking thread).
    pub async fn drop_whole_image(&self, tenant: &str) {
        let Some(path) = self.whole_image_path(tenant) else {
            return;
        };
        let writing = Arc::clone(&self.whole_images_writing);
        let dropped = tokio::task::spawn_blocking(move || {
            writing.wait_idle();
            std::fs::remove_file(&path)
        })
        .await;
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {}
            Ok(Err(e)) => warn!(tenant, error = %e, "could not delete the kept image"),
            Err(e) => warn!(tenant, error = %e, "kept image deletion failed"),
        }
    }
}

impl PageStore {
    /// Deletes the kept images a killed process left half written (at open: nothing is being
    /// written yet).
    pub(crate) fn drop_unfinished_whole_images(&self) {
        let Some(dir) = self.whole_images_dir() else {
            return;
        };
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if entry.file_name().to_string_lossy().ends_with(".tmp") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }

    /// Deletes every kept image, once those being written are (the local tier emptied: a cold
    /// start reads nothing this worker kept). Blocking.
    pub(crate) fn drop_whole_images(&self) {
        self.whole_images_writing.wait_idle();
        if let Some(dir) = self.whole_images_dir() {
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    warn!(dir = %dir.display(), error = %e, "could not delete the kept images")
                }
            }
        }
    }
}

/// The bytes free to an unprivileged writer on the filesystem of `dir`.
fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: statvfs fills the struct it is given, from a path that outlives the call.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(st.f_bavail as u64 * st.f_frsize as u64)
}

/// Deletes a kept image that failed a check; `false`, for the caller to return.
fn discard(path: &Path, why: String) -> bool {
    warn!(path = %path.display(), why, "kept image not used: deleted");
    let _ = std::fs::remove_file(path);
    false
}

/// Reads page `index` of a dumped page file into `page` (4 KiB; a short last page ends in
/// zeros, as ingest names it).
fn read_dumped_page(file: &std::fs::File, index: usize, page: &mut [u8]) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let offset = (index * PAGE_SIZE) as u64;
    let mut filled = 0;
    while filled < page.len() {
        match file.read_at(&mut page[filled..], offset + filled as u64)? {
            0 => break,
            n => filled += n,
        }
    }
    if filled == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    page[filled..].fill(0);
    Ok(())
}

/// Why a part of a kept image was not written out: the image is not what it says (deleted
/// then), or an output file could not be written.
enum PartFailed {
    Bad(String),
    Io(PathBuf, std::io::Error),
}

/// A kept image of a checkpoint, open to be read part by part.
struct KeptImage {
    file: std::fs::File,
    /// Where each part's first page starts, then where the last part ends (the footer).
    bounds: Vec<u64>,
    count: usize,
}

impl KeptImage {
    /// The kept image `kept` if it is the image of `manifest`, its footer read and checked;
    /// `Ok(None)` if it is another checkpoint's, `Err` if it is not a kept image at all.
    fn open(kept: std::fs::File, manifest: &Manifest) -> std::result::Result<Option<Self>, String> {
        use std::os::unix::fs::FileExt;
        let mut header = [0u8; HEADER];
        if kept.read_exact_at(&mut header, 0).is_err() || &header[..MAGIC.len()] != MAGIC {
            return Err("not a kept image".into());
        }
        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&header[at..at + 8]);
            u64::from_le_bytes(b)
        };
        if (u64_at(8), u64_at(16)) != (manifest.generation, manifest.created_ms) {
            return Ok(None);
        }
        let count = u32::from_le_bytes([header[24], header[25], header[26], header[27]]) as usize;
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
    fn write_into(
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
            let ok = match codec {
                c if c == Codec::Raw as u8 && len == PAGE_SIZE => {
                    page.copy_from_slice(data);
                    true
                }
                c if c == Codec::Lz4 as u8 => {
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

#[cfg(test)]
mod tests {
    use crate::config::StoreConfig;
    use crate::manifest::testing::{file, of_files, paged_bytes};
    use crate::manifest::{FileContent, Manifest};
    use crate::page::{PageId, PAGE_SIZE};
    use crate::store::PageStore;
    use std::path::Path;

    fn page(byte: u8) -> Vec<u8> {
        let mut p = vec![byte; PAGE_SIZE];
        p[0] = byte.wrapping_add(1);
        p
    }

    async fn open(dir: &Path) -> PageStore {
        PageStore::open(&StoreConfig::embedded(dir)).await.unwrap()
    }

    /// An inline file and a page file of several write chunks: `a` in memory, `b` on the
    /// local disk only, a zero page, and a last page cut short by the file size. Its bytes.
    fn image(store: &PageStore) -> (Manifest, Vec<u8>) {
        let (a, b) = (page(1), page(2));
        let (ida, idb) = (PageId::of(&a), PageId::of(&b));
        store.hot().insert(ida, &a);
        let (codec, encoded) = crate::codec::encode(&b);
        store.local().unwrap().put(&idb, codec, &encoded).unwrap();
        // Parts enough for several threads, the last one short.
        let mut ids = vec![ida; 3 * super::PART];
        ids.extend([PageId::ZERO, idb, ida]);
        let size = (ids.len() * PAGE_SIZE - 100) as u64;
        let want = paged_bytes(&ids, &[(ida, &a), (idb, &b)], size);
        let mut manifest = of_files(vec![
            file("inventory.img", 3, FileContent::Inline(vec![7, 8, 9])),
            file("pages-1.img", size, FileContent::Paged(ids)),
        ]);
        manifest.created_ms = 42;
        (manifest, want)
    }

    #[tokio::test]
    async fn a_kept_image_is_written_back_whole_without_the_tiers() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path()).await;
        let (manifest, want) = image(&store);
        assert!(store.keep_whole_image(&manifest, None).unwrap());
        // The tiers forget the pages: the kept image alone writes them out.
        store.local().unwrap().clear().unwrap();
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        std::fs::write(out.join("pages-1.img"), vec![9u8; 3 * PAGE_SIZE]).unwrap();
        assert!(store.materialize_whole_image(&manifest, &out).unwrap());
        assert_eq!(std::fs::read(out.join("inventory.img")).unwrap(), [7, 8, 9]);
        assert!(
            std::fs::read(out.join("pages-1.img")).unwrap() == want,
            "written over an earlier file: its zero page reads as zeros"
        );

        // Another checkpoint of the tenant is not this image: not used, kept.
        let mut newer = manifest.clone();
        newer.generation += 1;
        assert!(!store.materialize_whole_image(&newer, &out).unwrap());
        assert!(store.materialize_whole_image(&manifest, &out).unwrap());

        // Forgotten with its tenant.
        store.drop_whole_image("t").await;
        assert!(!store.materialize_whole_image(&manifest, &out).unwrap());
    }

    /// A dense tenant's pages are in neither tier behind its swap-out: they are read from its
    /// dump, each checked; a dump page that does not match is looked for in the tiers.
    #[tokio::test]
    async fn a_kept_image_is_written_from_the_dump_when_the_tiers_lack_its_pages() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path()).await;
        let (manifest, want) = image(&store);
        // CRIU's page files hold whole pages (the image's last one is cut short by its size).
        let (a, b) = (page(1), page(2));
        let ids = manifest.files[1].pages();
        let dumped = paged_bytes(
            ids,
            &[(PageId::of(&a), &a), (PageId::of(&b), &b)],
            (ids.len() * PAGE_SIZE) as u64,
        );
        let dump = dir.path().join("dump");
        std::fs::create_dir(&dump).unwrap();
        std::fs::write(dump.join("pages-1.img"), &dumped).unwrap();
        store.hot().clear();
        store.local().unwrap().clear().unwrap();
        assert!(store.keep_whole_image(&manifest, Some(&dump)).unwrap());
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        assert!(store.materialize_whole_image(&manifest, &out).unwrap());
        assert!(std::fs::read(out.join("pages-1.img")).unwrap() == want);

        // A dump whose bytes are not the checkpoint's, and pages on no tier: nothing kept.
        store.drop_whole_image("t").await;
        let mut changed = dumped.clone();
        changed[5 * PAGE_SIZE] ^= 1;
        std::fs::write(dump.join("pages-1.img"), &changed).unwrap();
        assert!(!store.keep_whole_image(&manifest, Some(&dump)).unwrap());
        assert!(!store.whole_image_path("t").unwrap().exists());
    }

    /// Beyond `[local] whole_images_max_bytes`, the least recently written images go, never the
    /// one just kept.
    #[tokio::test]
    async fn kept_images_are_bounded_the_oldest_deleted_first() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = StoreConfig::embedded(dir.path());
        let store = PageStore::open(&config).await.unwrap();
        let (manifest, _) = image(&store);
        let one = |tenant: &str| Manifest {
            tenant: tenant.into(),
            ..manifest.clone()
        };
        assert!(store.keep_whole_image(&one("a"), None).unwrap());
        let size = std::fs::metadata(store.whole_image_path("a").unwrap())
            .unwrap()
            .len();
        drop(store);
        config.local.whole_images_max_bytes = 2 * size;
        let store = PageStore::open(&config).await.unwrap();
        image(&store);
        for tenant in ["b", "c"] {
            std::thread::sleep(std::time::Duration::from_millis(20));
            assert!(store.keep_whole_image(&one(tenant), None).unwrap());
        }
        let held = |t: &str| store.whole_image_path(t).unwrap().exists();
        assert!(!held("a") && held("b") && held("c"), "the oldest went");
        // Even over the bound alone, the one just kept stays.
        drop(store);
        config.local.whole_images_max_bytes = 1;
        let store = PageStore::open(&config).await.unwrap();
        image(&store);
        assert!(store.keep_whole_image(&one("d"), None).unwrap());
        let held = |t: &str| store.whole_image_path(t).unwrap().exists();
        assert!(held("d") && !held("b") && !held("c"));
    }

    #[tokio::test]
    async fn a_damaged_kept_image_is_not_used_and_is_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path()).await;
        let (manifest, _) = image(&store);
        assert!(store.keep_whole_image(&manifest, None).unwrap());
        let path = store.whole_image_path("t").unwrap();
        let kept = std::fs::read(&path).unwrap();
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        // A page's bytes (in the second part), then the footer.
        for at in [
            super::HEADER + 70 * (super::PAGE_HEADER + 40),
            kept.len() - 1,
        ] {
            let mut damaged = kept.clone();
            damaged[at] ^= 0xff;
            std::fs::write(&path, &damaged).unwrap();
            assert!(!store.materialize_whole_image(&manifest, &out).unwrap());
            assert!(!path.exists(), "a damaged image is deleted");
        }
        // Cut short, the same.
        std::fs::write(&path, &kept).unwrap();
        assert!(store.materialize_whole_image(&manifest, &out).unwrap());
        std::fs::write(&path, &kept[..kept.len() / 2]).unwrap();
        assert!(!store.materialize_whole_image(&manifest, &out).unwrap());
        assert!(!path.exists());
    }

    /// A kept image is a copy: it never takes the disk's last free bytes.
    #[tokio::test]
    async fn no_image_is_kept_without_room_on_the_disk() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path()).await;
        let (manifest, _) = image(&store);
        let free = super::free_bytes(dir.path()).unwrap();
        assert!(!store
            .keep_whole_image_leaving(&manifest, None, free)
            .unwrap());
        assert!(!store.whole_image_path("t").unwrap().exists());
        assert!(store.keep_whole_image_leaving(&manifest, None, 0).unwrap());
    }

    #[tokio::test]
    async fn no_image_is_kept_when_a_page_is_on_neither_tier_nor_left_half_written() {
        let tmp = tempfile::tempdir().unwrap();
        let store = open(tmp.path()).await;
        let (mut manifest, _) = image(&store);
        let elsewhere = PageId::of(&page(5));
        manifest.files[1].content = FileContent::Paged(vec![elsewhere]);
        assert!(!store.keep_whole_image(&manifest, None).unwrap());
        let dir = store.whole_images_dir().unwrap();
        let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert!(left.is_empty(), "nothing left behind: {left:?}");
        // And one a killed worker left half written goes at the next open.
        std::fs::write(dir.join("t.img.7.tmp"), b"PCWHOLE1").unwrap();
        drop(store);
        let store = open(tmp.path()).await;
        assert_eq!(store.whole_images_dir().unwrap(), dir);
        let left: Vec<_> = std::fs::read_dir(dir).unwrap().collect();
        assert!(left.is_empty(), "{left:?}");
    }
}
