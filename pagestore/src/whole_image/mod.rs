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
//! before; one finished after a newer checkpoint's (two swap-outs keeping theirs at once) is
//! dropped, not put in its place. Nothing syncs it to disk: a torn file fails its checks. `forget` deletes it with
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
//!
//! Here: where kept images live, when one is kept, bounded and deleted, and the restore's entry
//! point; [`keep`] writes one, [`read`] opens one, checks it and writes its pages out.

mod keep;
mod read;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use tracing::{debug, info, warn};

use crate::error::{Error, Result};
use crate::manifest::{FileContent, Manifest};
use crate::page::PAGE_SIZE;
use crate::resident::{open_image_file, punch_zero_pages};
use crate::store::PageStore;
use read::{KeptImage, PartFailed};

const MAGIC: &[u8; 8] = b"PCWHOLE2";
const HEADER: usize = MAGIC.len() + 8 + 8 + 4;
/// Codec byte and length before each page.
const PAGE_HEADER: usize = 1 + 4;
/// Pages of a part: the footer says where each part starts, so that a restore decodes parts on
/// several threads at once, each through buffers of a part (256 KiB decoded).
const PART: usize = 64;
/// What a kept image leaves free on its disk: it is a copy, and the local tier and the swap-outs'
/// dumps need the disk more (a full one stops swap-outs from committing).
const KEEP_FREE_BYTES: u64 = 1 << 30;

/// Kept images being written behind swap-outs: what is deleted (a tenant forgotten, the local
/// tier emptied for a cold start) waits for them, so that none comes back after; and one
/// finished replaces its tenant's only if that is not a newer checkpoint's.
#[derive(Default)]
pub(crate) struct Writing {
    count: Mutex<usize>,
    idle: Condvar,
    /// Held while a written image takes its tenant's name (after a look at the generation of
    /// the one there).
    installing: Mutex<()>,
}

impl Writing {
    /// Puts the image written at `tmp` (of checkpoint `generation`) in its tenant's place
    /// `path`, unless the image there is a newer checkpoint's: two swap-outs of one tenant may
    /// keep their images at once (each behind its own, at the lowest priority), and the older
    /// one, finished last, must not replace the one the next restore needs. Whether it did.
    fn install(&self, tmp: &Path, path: &Path, generation: u64) -> Result<bool> {
        let _installing = self.installing.lock().unwrap_or_else(|p| p.into_inner());
        if read::kept_generation(path).is_some_and(|kept| kept > generation) {
            return Ok(false);
        }
        std::fs::rename(tmp, path).map_err(|e| Error::io(path, e))?;
        Ok(true)
    }

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
        if !self
            .whole_images_writing
            .install(&tmp, &path, manifest.generation)?
        {
            let _ = std::fs::remove_file(&tmp);
            info!(
                tenant = %manifest.tenant,
                generation = manifest.generation,
                "a newer checkpoint's image is kept already"
            );
            return Ok(false);
        }
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
