//! The tmpfs whole restores write their images into: mounted at the first whole restore and kept
//! while the worker runs, its files overwritten in place by the next image.
//!
//! **Why kept.** With a tmpfs mounted for each restore and unmounted after it, about one restore
//! in eight spent 10-35 ms instead of ~2.3 ms writing the Python counter's 11 MiB (5 of 42 in one
//! run here). `perf` put that time in the kernel, copying into and zeroing the freshly allocated
//! huge pages, with the thread on the CPU throughout: memory touched for the first time since
//! the hypervisor took it back (this VM reports free memory to its host in 2 MiB blocks, the very
//! size a huge page is allocated in). Memory that is never freed is never given back: an image
//! written over the previous one reuses its pages, and skips zeroing them as well.
//!
//! **Cost.** The pages of the last image written stay held while the worker runs: at most
//! `whole_restore_below_mib` MiB plus [`crate::image_tmpfs`]'s slack, once per worker (not per
//! tenant). The tmpfs is private to the worker (mode 0700, root only) and holds nothing the
//! memory tier did not hold already.
//!
//! **One restore at a time** uses it; a second, concurrent one mounts a tmpfs of its own for its
//! image ([`ImageDir::Own`]), as every restore did before.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use pagestore::{FileContent, Manifest};
use tokio::sync::{Mutex, OwnedMutexGuard};
use tracing::{info, warn};

use crate::error::{Error, Result};
use crate::image_tmpfs::{fresh_mountpoint, ImageTmpfs};

/// The kept tmpfs, mounted on first use.
pub(crate) struct WholeStaging {
    mountpoint: PathBuf,
    bytes: u64,
    mount: Arc<Mutex<Option<ImageTmpfs>>>,
}

/// Where one whole restore writes its image.
pub(crate) enum ImageDir {
    /// The kept tmpfs, held until this is dropped.
    Staged {
        _held: OwnedMutexGuard<Option<ImageTmpfs>>,
        dir: PathBuf,
    },
    /// A tmpfs of this restore's own, unmounted by [`ImageDir::release`].
    Own(ImageTmpfs),
}

impl WholeStaging {
    /// A staging tmpfs of `bytes` (plus slack) at `mountpoint`, not mounted yet.
    pub fn new(mountpoint: PathBuf, bytes: u64) -> WholeStaging {
        WholeStaging {
            mountpoint,
            bytes,
            mount: Arc::new(Mutex::new(None)),
        }
    }

    /// The kept tmpfs, emptied of every file `manifest` does not overwrite; `None` when another
    /// restore holds it, or when it cannot be mounted or emptied (logged).
    pub fn take(&self, manifest: &Manifest) -> Option<ImageDir> {
        let mut held = self.mount.clone().try_lock_owned().ok()?;
        if held.is_none() {
            match self.mount_fresh() {
                Ok(tmpfs) => *held = Some(tmpfs),
                Err(e) => {
                    warn!(error = %e, "no staging tmpfs for whole restores");
                    return None;
                }
            }
        }
        let dir = self.mountpoint.clone();
        if let Err(e) = keep_only_paged_files(&dir, manifest) {
            warn!(error = %e, "could not empty the staging tmpfs; unmounting it");
            *held = None;
            return None;
        }
        Some(ImageDir::Staged { _held: held, dir })
    }

    /// Unmounts it (the worker is stopping), once no restore holds it.
    pub async fn unmount(&self) {
        if let Some(tmpfs) = self.mount.lock().await.take() {
            if let Err(e) = tmpfs.unmount() {
                warn!(error = %e, "could not unmount the staging tmpfs");
            }
        }
    }

    fn mount_fresh(&self) -> Result<ImageTmpfs> {
        fresh_mountpoint(&self.mountpoint)?;
        let tmpfs = ImageTmpfs::mount(&self.mountpoint, self.bytes)?;
        info!(mountpoint = %self.mountpoint.display(), bytes = self.bytes, "staging tmpfs for whole restores mounted");
        Ok(tmpfs)
    }
}

/// Removes from `dir` every entry but the page files `manifest` is about to overwrite (an earlier
/// image's small files and other page files, and whatever `criu restore` left), and cuts those
/// kept down to their new size, so that writing the image never needs more room than it takes.
fn keep_only_paged_files(dir: &Path, manifest: &Manifest) -> Result<()> {
    let reused = |name: &str| {
        manifest
            .files
            .iter()
            .find(|f| f.name == name && matches!(f.content, FileContent::Paged(_)))
            .map(|f| f.size)
    };
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let path = entry.path();
        if let Some(size) = reused(&entry.file_name().to_string_lossy()) {
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|e| Error::io(&path, e))?;
            let len = file.metadata().map_err(|e| Error::io(&path, e))?.len();
            if len > size {
                file.set_len(size).map_err(|e| Error::io(&path, e))?;
            }
            continue;
        }
        let removed = if entry.file_type().map_err(|e| Error::io(&path, e))?.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        removed.map_err(|e| Error::io(&path, e))?;
    }
    Ok(())
}

impl ImageDir {
    pub fn path(&self) -> &Path {
        match self {
            ImageDir::Staged { dir, .. } => dir,
            ImageDir::Own(tmpfs) => tmpfs.path(),
        }
    }

    /// Done with the image: the kept tmpfs goes back for the next restore (its files stay), a
    /// tmpfs of its own is unmounted.
    pub fn release(self) -> Result<()> {
        match self {
            ImageDir::Staged { .. } => Ok(()),
            ImageDir::Own(tmpfs) => tmpfs.unmount(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pagestore::{PageId, PAGE_SIZE};
    use testkit::manifest::{file, of_files};

    fn manifest(files: &[(&str, bool)]) -> Manifest {
        of_files(
            files
                .iter()
                .map(|&(name, paged)| {
                    let content = if paged {
                        FileContent::Paged(vec![PageId([1; 32])])
                    } else {
                        FileContent::Inline(vec![1])
                    };
                    file(name, PAGE_SIZE as u64, content)
                })
                .collect(),
        )
    }

    #[test]
    fn one_restore_at_a_time_and_only_the_next_images_page_files_are_kept() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "mounting a tmpfs needs root: run the tests as root"
        );
        let dir = tempfile::tempdir().unwrap();
        let staging = WholeStaging::new(dir.path().join(".whole"), 1 << 20);
        let first = manifest(&[("inventory.img", false), ("pages-1.img", true)]);
        let taken = staging.take(&first).unwrap();
        let path = taken.path().to_path_buf();
        for name in ["inventory.img", "pages-1.img", "stats-restore"] {
            std::fs::write(path.join(name), b"old").unwrap();
        }
        std::fs::write(path.join("pages-2.img"), vec![1; 2 * PAGE_SIZE]).unwrap();
        assert!(
            staging.take(&first).is_none(),
            "a second restore gets a tmpfs of its own"
        );
        taken.release().unwrap();

        let next = manifest(&[("core-7.img", false), ("pages-2.img", true)]);
        let taken = staging.take(&next).unwrap();
        assert_eq!(taken.path(), path, "the same tmpfs, still mounted");
        let mut left: Vec<String> = std::fs::read_dir(&path)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["pages-2.img"]);
        let kept = std::fs::metadata(path.join("pages-2.img")).unwrap().len();
        assert_eq!(
            kept, PAGE_SIZE as u64,
            "cut to its new size before it is written"
        );
        drop(taken);
        drop(staging);
    }
}
