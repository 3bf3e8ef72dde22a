//! The image of a checkpoint restored whole (a small one, or a dense tenant's) kept on the local
//! disk: its dump, as CRIU wrote it, moved beside the local tier once its checkpoint is
//! committed, so that its tenant's next whole restore reads it where it lies, its pages checked
//! beside the restore.
//!
//! **Why.** A whole restore writes the image into a tmpfs and CRIU restores from there. Out of
//! the local tier that costs a lookup per page (~7 µs a page with its lz4, BLAKE3 and the memory
//! tier's insert: ~18 ms of CPU for the Python counter's 2600 pages, paid beside the CRIU
//! restores of a burst, bench/results/density/burst-41d32d8); out of a file of lz4-encoded pages
//! (the kept image before this one) lz4 and BLAKE3 per page, before CRIU could start: node
//! walking a Map (18k pages) wrote its image in 20-37 ms, and woke in 1.3x the time plain CRIU
//! restores it. The dump needs neither: CRIU restores from it as from the tmpfs (its page cache,
//! or the disk). The files CRIU interprets (all but the page files, by the caller's rule:
//! ~100 KiB) are checked first ([`KeptDump::check_files`]); the page files, whose bytes CRIU
//! only copies into the tenant's memory, beside the restore, on the cores CRIU leaves, the
//! tenant left stopped until all match ([`KeptDump::check_pages`]). Keeping it costs no CPU at all: the dump is
//! renamed instead of deleted.
//!
//! **A copy, never a dependency.** A dump is kept only after its checkpoint is committed; a
//! kept dump of another checkpoint (its marker, [`MARKER`], names the checkpoint), one holding a
//! file the checkpoint does not, or one whose check fails is not used (a failed one is
//! deleted) and the caller reads the tiers as before. One kept after a newer checkpoint's (two
//! swap-outs keeping theirs at once) is dropped, never put in its place. Nothing syncs it to
//! disk: a torn file fails its check. `forget` deletes it with its tenant. Its disk use is one
//! dump per tenant restored whole (its zero pages punched out; the tenant's newest checkpoint
//! only), in a directory beside the local tier's, bounded by `[local] whole_images_max_bytes`
//! (the least recently kept deleted first, never one a restore is reading), and none is kept
//! that would leave the disk with less than [`KEEP_FREE_BYTES`] free.
//!
//! Here: where kept dumps live, when one is kept, bounded and deleted, and the restore's entry
//! point; [`keep`] moves a dump into place, [`check`] checks an image against its checkpoint.

mod check;
mod keep;
#[cfg(test)]
mod tests;

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use tracing::{debug, warn};

use crate::error::{Error, Result};
use crate::manifest::Manifest;

/// The file in a kept dump that names its checkpoint: `<generation> <created_ms>`, written
/// before the dump takes its tenant's name. A restore holds a shared lock on it while it reads
/// the dump; the bound deletes none it cannot lock alone.
const MARKER: &str = ".checkpoint";
/// What a kept dump's name ends with: `<tenant>.dump`.
const KEPT: &str = ".dump";
/// What a kept dump leaves free on its disk: it is a copy, and the local tier and the swap-outs'
/// dumps need the disk more (a full one stops swap-outs from committing).
const KEEP_FREE_BYTES: u64 = 1 << 30;

/// Dumps being kept behind swap-outs: what is deleted (a tenant forgotten, the local tier
/// emptied for a cold start) waits for them, so that none comes back after; and one kept
/// replaces its tenant's only if that is not a newer checkpoint's.
#[derive(Default)]
pub(crate) struct Writing {
    count: Mutex<usize>,
    idle: Condvar,
    /// Held while a dump takes its tenant's name (after a look at the checkpoint of the one
    /// there).
    installing: Mutex<()>,
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

/// One dump being kept; done when dropped.
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

/// A checkpoint's kept dump, open for a restore: deleted by no one else while this is held.
pub struct KeptDump {
    dir: PathBuf,
    /// The marker, locked shared.
    _lock: std::fs::File,
}

impl KeptDump {
    /// The image directory, which CRIU restores from as it is.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Checks the files a restore interprets of the image of `manifest` in `dir` (this dump,
    /// or a copy of it the caller wrote: [`Self::copy_into`]) against the checkpoint, before the
    /// restore reads them: every file but the page files (`is_pages`: CRIU's `pages-N.img`),
    /// each small file's bytes, each page of a larger one against its id. Whether all match;
    /// when one does not, the dump is deleted (the caller writes the image out of the tiers
    /// instead). An error: a file of the image could not be read. Blocking.
    pub fn check_files(
        &self,
        manifest: &Manifest,
        dir: &Path,
        is_pages: fn(&str) -> bool,
    ) -> Result<bool> {
        self.check(manifest, dir, check::Files::AllBut(is_pages))
    }

    /// Checks the page files (`is_pages`) of the image of `manifest` in `dir` (as
    /// [`Self::check_files`]): every page against its id (a zero page reads as zeros), on a
    /// thread less than the machine has cores (at least one, at most 3). A restore only copies
    /// their bytes into the restored memory, so this may run beside one that leaves its tasks
    /// stopped until it has passed. Blocking.
    pub fn check_pages(
        &self,
        manifest: &Manifest,
        dir: &Path,
        is_pages: fn(&str) -> bool,
    ) -> Result<bool> {
        self.check(manifest, dir, check::Files::Only(is_pages))
    }

    fn check(&self, manifest: &Manifest, dir: &Path, which: check::Files) -> Result<bool> {
        match check::image(manifest, dir, which) {
            Ok(()) => Ok(true),
            Err(check::Failed::Bad(why)) => Ok(discard(&self.dir, why)),
            Err(check::Failed::Io(at, e)) => Err(Error::io(&at, e)),
        }
    }

    /// Copies the files of `manifest` from the dump into `dir` (a restore that cannot read
    /// the dump where it lies: a tenant in a user namespace opens some images itself), unchecked:
    /// [`Self::check_files`] and [`Self::check_pages`] `dir` before anything runs on it.
    /// Blocking.
    pub fn copy_into(&self, manifest: &Manifest, dir: &Path) -> Result<()> {
        for file in &manifest.files {
            let (from, to) = (self.dir.join(&file.name), dir.join(&file.name));
            std::fs::copy(&from, &to).map_err(|e| Error::io(&to, e))?;
        }
        Ok(())
    }
}

impl PageStore {
    /// The directory of kept dumps: beside the local tier's, when this process holds one.
    fn whole_images_dir(&self) -> Option<PathBuf> {
        self.local()?;
        let local = &self.config().local.path;
        let name = local.file_name()?.to_string_lossy().into_owned();
        Some(local.with_file_name(format!("{name}-whole")))
    }

    fn kept_dump_path(&self, tenant: &str) -> Option<PathBuf> {
        Some(self.whole_images_dir()?.join(format!("{tenant}{KEPT}")))
    }

    /// [`Self::keep_dump`] on a blocking thread, behind the caller (a swap-out just committed);
    /// logged. The dump is the store's from here: kept, or deleted.
    pub fn keep_dump_behind(
        self: &Arc<Self>,
        manifest: Arc<Manifest>,
        dump: PathBuf,
    ) -> tokio::task::JoinHandle<()> {
        let (store, writing) = (Arc::clone(self), self.whole_images_writing.start());
        tokio::spawn(async move {
            let _writing = writing;
            let started = Instant::now();
            let tenant = manifest.tenant.clone();
            let kept = tokio::task::spawn_blocking(move || {
                let kept = store.keep_dump(&manifest, &dump);
                if !matches!(kept, Ok(true)) {
                    if let Err(e) = std::fs::remove_dir_all(&dump) {
                        warn!(dump = %dump.display(), error = %e, "could not delete the dump");
                    }
                }
                kept
            })
            .await;
            match kept {
                Ok(Ok(kept)) => debug!(
                    tenant,
                    kept,
                    ms = started.elapsed().as_millis() as u64,
                    "dump kept"
                ),
                Ok(Err(e)) => warn!(tenant, error = %e, "dump not kept"),
                Err(e) => warn!(tenant, error = %e, "dump keeper failed"),
            }
        })
    }

    /// Keeps `dump`, the dump `manifest` (its tenant's newest checkpoint) was ingested from, as
    /// its tenant's kept dump (see the module doc), moved, not copied; `Ok(false)` when it is
    /// not (no local tier, another file system, no room, or a newer checkpoint's is kept
    /// already): the dump is then where it was. Blocking.
    pub fn keep_dump(&self, manifest: &Manifest, dump: &Path) -> Result<bool> {
        self.keep_dump_leaving(manifest, dump, KEEP_FREE_BYTES)
    }

    /// [`Self::keep_dump`], kept only if its disk has `keep_free` bytes free.
    fn keep_dump_leaving(&self, manifest: &Manifest, dump: &Path, keep_free: u64) -> Result<bool> {
        let Some(path) = self.kept_dump_path(&manifest.tenant) else {
            return Ok(false);
        };
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        match free_bytes(dir) {
            Ok(free) if free >= keep_free => {}
            Ok(free) => {
                debug!(
                    tenant = %manifest.tenant,
                    free_bytes = free,
                    "no room on the local disk to keep a dump"
                );
                return Ok(false);
            }
            Err(e) => return Err(Error::io(dir, e)),
        }
        if !keep::prepare(manifest, dump)? {
            return Ok(false);
        }
        if !keep::install(&self.whole_images_writing, manifest, dump, &path)? {
            return Ok(false);
        }
        self.bound_kept_dumps(dir, &path);
        Ok(true)
    }

    /// Deletes the least recently kept dumps in `dir` while they take more than `[local]
    /// whole_images_max_bytes` (never `just_kept`, nor one a restore is reading): their
    /// tenants, asleep the longest, are the least likely to wake next, and wake from the local
    /// tier without one.
    fn bound_kept_dumps(&self, dir: &Path, just_kept: &Path) {
        let max = self.config().local.whole_images_max_bytes;
        let mut kept: Vec<(std::time::SystemTime, u64, PathBuf)> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(KEPT))
            .filter_map(|e| {
                let path = e.path();
                let marker = std::fs::metadata(path.join(MARKER)).ok()?;
                Some((marker.modified().ok()?, disk_bytes(&path), path))
            })
            .collect();
        let mut total: u64 = kept.iter().map(|(_, bytes, _)| bytes).sum();
        if total <= max {
            return;
        }
        kept.sort();
        for (_, bytes, path) in kept {
            if total <= max {
                break;
            }
            if path != just_kept && keep::delete_unless_read(&path) {
                total -= bytes;
            }
        }
    }

    /// The kept dump of `manifest`'s checkpoint, locked against deletion while held; `None`
    /// when its tenant has none, or one of another checkpoint, or one holding a file the
    /// checkpoint does not (deleted then). Blocking.
    pub fn kept_dump(&self, manifest: &Manifest) -> Result<Option<KeptDump>> {
        let Some(dir) = self.kept_dump_path(&manifest.tenant) else {
            return Ok(None);
        };
        let marker = dir.join(MARKER);
        let lock = match std::fs::File::open(&marker) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(&marker, e)),
        };
        // SAFETY: flock(2) on a descriptor this function owns.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_SH) } != 0 {
            return Err(Error::io(&marker, std::io::Error::last_os_error()));
        }
        // Read under the lock: a newer checkpoint's dump may have taken the name meanwhile.
        match keep::marked(&dir) {
            Some(marked) if marked == (manifest.generation, manifest.created_ms) => {}
            _ => return Ok(None),
        }
        if let Some(extra) = keep::file_not_in(manifest, &dir) {
            drop(lock);
            discard(&dir, format!("{extra} is not a file of the checkpoint"));
            return Ok(None);
        }
        Ok(Some(KeptDump { dir, _lock: lock }))
    }

    /// Deletes tenant `tenant`'s kept dump, if it has one (its tenant forgotten, or gone to
    /// another worker), once the dumps being kept are (on a blocking thread).
    pub async fn drop_whole_image(&self, tenant: &str) {
        let Some(path) = self.kept_dump_path(tenant) else {
            return;
        };
        let writing = Arc::clone(&self.whole_images_writing);
        let dropped = tokio::task::spawn_blocking(move || {
            writing.wait_idle();
            std::fs::remove_dir_all(&path)
        })
        .await;
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {}
            Ok(Err(e)) => warn!(tenant, error = %e, "could not delete the kept dump"),
            Err(e) => warn!(tenant, error = %e, "kept dump deletion failed"),
        }
    }

    /// Deletes what a killed process left in the directory of kept dumps: a dump it was
    /// replacing, and any kept image of the format before (at open: nothing is being kept yet).
    pub(crate) fn drop_unfinished_whole_images(&self) {
        let Some(dir) = self.whole_images_dir() else {
            return;
        };
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(KEPT) {
                continue;
            }
            let path = entry.path();
            let _ = match entry.file_type() {
                Ok(t) if t.is_dir() => std::fs::remove_dir_all(&path),
                _ => std::fs::remove_file(&path),
            };
        }
    }

    /// Deletes every kept dump, once those being kept are (the local tier emptied: a cold start
    /// reads nothing this worker kept). Blocking.
    pub(crate) fn drop_whole_images(&self) {
        self.whole_images_writing.wait_idle();
        if let Some(dir) = self.whole_images_dir() {
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    warn!(dir = %dir.display(), error = %e, "could not delete the kept dumps")
                }
            }
        }
    }
}

use crate::store::PageStore;

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

/// The bytes the files directly in `dir` take on disk (holes not counted).
fn disk_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.blocks() * 512)
        .sum()
}

/// Deletes a kept dump that failed a check; `false`, for the caller to return.
fn discard(dir: &Path, why: String) -> bool {
    warn!(dump = %dir.display(), why, "kept dump not used: deleted");
    let _ = std::fs::remove_dir_all(dir);
    false
}
