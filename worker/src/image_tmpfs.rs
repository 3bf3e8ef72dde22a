//! A tmpfs bounded to an image's size, with huge pages, for the image files of whole restores:
//! the worker's staging tmpfs (`whole_staging.rs`, kept mounted), or one mounted for a single
//! restore that finds the staging tmpfs busy and unmounted right after it.
//!
//! **Why not the pager's FUSE mount.** `criu restore` from the FUSE view of a checkpoint pays a
//! round trip through the worker for every read: nginx's worker process compares its ~240
//! copy-on-write pages with its parent's in one 4 KiB `pread` each, ~40 µs apiece through FUSE
//! against ~4 µs from tmpfs (~9 ms of its restore), the Python counter's 11 MiB took ~3 ms more
//! than from tmpfs, and the mount itself ~1 ms. Writing the image out of the memory tier takes
//! ~1 ms for those 11 MiB, and `criu restore` then reads at tmpfs speed.
//!
//! **Why not `/dev/shm`.** On an ordinary tmpfs the same 11 MiB took ~4 ms to write and 1.3 ms
//! to delete, a page allocated and freed at a time; with huge pages (`huge=within_size`) 0.8 ms
//! and 0.03 ms (measured here, kernel 6.18). A mount of our own can ask for them, is bounded to
//! the image's size, and its unmount frees everything at once, whatever a failed restore left.

use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};
use tracing::{debug, warn};

use crate::error::{Error, Result};

/// Room beyond the image's own bytes (each small file takes a whole 4 KiB page).
const SLACK: u64 = 1 << 20;

/// Makes `path` an empty directory with nothing mounted on it: a mount left there by a crashed
/// worker would hide the new one.
pub(crate) fn fresh_mountpoint(path: &Path) -> Result<()> {
    let _ = nix::mount::umount2(path, MntFlags::MNT_DETACH);
    std::fs::create_dir_all(path).map_err(|e| Error::io(path, e))
}

/// A mounted tmpfs holding one image. Dropping it unmounts it (detached: a reader still inside
/// keeps it until it leaves).
pub(crate) struct ImageTmpfs {
    mountpoint: PathBuf,
    mounted: bool,
}

impl ImageTmpfs {
    /// Mounts a private tmpfs of `bytes` (plus a little room) at `mountpoint`, an existing empty
    /// directory; huge pages where the kernel has them.
    pub fn mount(mountpoint: &Path, bytes: u64) -> Result<ImageTmpfs> {
        let size = (bytes + SLACK).div_ceil(4096) * 4096;
        let mount = |huge: bool| {
            let huge = if huge { "huge=within_size," } else { "" };
            nix::mount::mount(
                Some("tmpfs"),
                mountpoint,
                Some("tmpfs"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                Some(format!("{huge}size={size},mode=0755").as_str()),
            )
        };
        // A kernel without transparent huge pages refuses the option: a plain tmpfs then.
        mount(true)
            .or_else(|e| {
                debug!(error = %e, "tmpfs without huge pages");
                mount(false)
            })
            .map_err(|e| Error::io(mountpoint, e.into()))?;
        Ok(ImageTmpfs {
            mountpoint: mountpoint.to_path_buf(),
            mounted: true,
        })
    }

    pub fn path(&self) -> &Path {
        &self.mountpoint
    }

    /// Unmounts it, freeing the image.
    pub fn unmount(mut self) -> Result<()> {
        self.mounted = false;
        nix::mount::umount2(&self.mountpoint, MntFlags::MNT_DETACH)
            .map_err(|e| Error::io(&self.mountpoint, e.into()))
    }
}

impl Drop for ImageTmpfs {
    fn drop(&mut self) {
        if self.mounted {
            if let Err(e) = nix::mount::umount2(&self.mountpoint, MntFlags::MNT_DETACH) {
                warn!(mountpoint = %self.mountpoint.display(), error = %e, "could not unmount");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mounted(path: &Path) -> bool {
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
        let path = path.to_string_lossy();
        mounts
            .lines()
            .any(|l| l.split(' ').nth(1) == Some(path.as_ref()))
    }

    #[test]
    fn bounded_to_the_image_and_gone_once_unmounted() {
        testkit::require_root();
        let dir = tempfile::tempdir().unwrap();
        let tmpfs = ImageTmpfs::mount(dir.path(), 4 << 20).unwrap();
        assert!(mounted(dir.path()));
        std::fs::write(tmpfs.path().join("pages-1.img"), vec![7u8; 4 << 20]).unwrap();
        // The bound holds: the image fits, twice the image does not.
        let too_much = std::fs::write(tmpfs.path().join("more.img"), vec![7u8; 4 << 20]);
        assert!(too_much.is_err(), "tmpfs not bounded");
        tmpfs.unmount().unwrap();
        assert!(!mounted(dir.path()));
        assert!(!dir.path().join("pages-1.img").exists());

        // Dropped without unmount (a failed restore): unmounted too.
        drop(ImageTmpfs::mount(dir.path(), 1 << 20).unwrap());
        assert!(!mounted(dir.path()));
    }
}
