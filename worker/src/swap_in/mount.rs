//! The mount stage of a swap-in: the checkpoint's image directory at `mnt/NAME`, served from the
//! store through the pager's FUSE file system.

use std::path::PathBuf;

use crate::error::Result;
use crate::host::Worker;

impl Worker {
    /// The directory a swap-in of tenant `name` mounts its image at, `mnt/NAME`, with nothing
    /// mounted on it.
    pub(super) fn fresh_mountpoint(&self, name: &str) -> Result<PathBuf> {
        let mountpoint = self.config.mounts_dir.join(name);
        crate::image_tmpfs::fresh_mountpoint(&mountpoint)?;
        Ok(mountpoint)
    }

    /// Mounts a checkpoint's image directory (FUSE, served from the store) at `mnt/NAME`.
    pub(super) fn mount_checkpoint(
        &self,
        name: &str,
        manifest: pagestore::Manifest,
    ) -> Result<(pager::ImageMount, PathBuf)> {
        let mountpoint = self.fresh_mountpoint(name)?;
        let options = pager::MountOptions {
            fault_readahead_bytes: self.config.fault_readahead_kib << 10,
        };
        let mount = pager::ImageMount::mount_with(
            self.store.clone(),
            manifest,
            &mountpoint,
            tokio::runtime::Handle::current(),
            options,
        )?;
        Ok((mount, mountpoint))
    }
}
