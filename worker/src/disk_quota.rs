//! A tenant's disk quota: its working directory as a filesystem of its own, of the quota's size,
//! so that its writes past it fail with `ENOSPC` for it alone.
//!
//! Why a filesystem image and not the host's quotas: ext4 and xfs project quotas need the
//! filesystem mounted with `prjquota` (and ext4 made with the `project` feature), which an
//! operator's root filesystem rarely is, and changing it needs a remount; a size-limited tmpfs
//! would cost the quota in RAM. An image is a sparse file (`tenants/NAME/disk.img`, blocks
//! allocated only as the tenant writes), formatted ext4 (`mkfs.ext4`, no reserved blocks) and
//! loop-mounted (`nosuid,nodev`) on `tenants/NAME/cwd` when the tenant is added, adopted or the
//! worker starts, and unmounted when it is removed. It stays mounted while the tenant sleeps:
//! the swap-in finds its files where they were. Its sandbox binds that directory in like any
//! working directory, and CRIU sees it as the same external bind mount (`sandbox::view`), so a
//! dump and a restore of a tenant with a quota are those of any other. A move carries the quota
//! in the tenant's record and its files in the checkpoint (`tenant_files`): the destination
//! makes an image of the same size and unpacks them into it.
//!
//! The cost: a loop device per tenant with a quota, and ext4's own metadata and journal (about
//! 5% of a 100 MiB image) out of the quota.

use std::path::{Path, PathBuf};

use tracing::info;

use crate::error::{Error, Result};
use crate::tenant::TenantDirs;

/// The smallest quota: ext4 needs room for its metadata and journal.
pub const MIN_QUOTA: u64 = 8 << 20;

/// The image file of a tenant's working directory.
pub(crate) fn image(dirs: &TenantDirs) -> PathBuf {
    dirs.root.join("disk.img")
}

/// Makes sure `cwd` is the tenant's own filesystem of `bytes`: made (sparse, ext4) if there is no
/// image yet, mounted if it is not. Idempotent; whatever `cwd` held before the first mount is
/// hidden under it, so call it before anything writes there.
pub(crate) async fn ensure_mounted(
    tenant: &str,
    dirs: &TenantDirs,
    cwd: &Path,
    bytes: u64,
) -> Result<()> {
    std::fs::create_dir_all(cwd).map_err(|e| Error::io(cwd, e))?;
    if is_mount_point(cwd)? {
        return Ok(());
    }
    let image = image(dirs);
    if !image.exists() {
        make_image(tenant, &image, bytes).await?;
    }
    run(
        tenant,
        "mount",
        tokio::process::Command::new("mount")
            .args(["-t", "ext4", "-o", "loop,nosuid,nodev"])
            .arg(&image)
            .arg(cwd),
    )
    .await?;
    info!(tenant, bytes, image = %image.display(), "working directory mounted with its disk quota");
    Ok(())
}

/// Unmounts a tenant's filesystem from `cwd` if it is mounted there (its loop device goes with
/// it); the image stays until the tenant's directory is removed.
pub(crate) async fn unmount(tenant: &str, cwd: &Path) -> Result<()> {
    if !cwd.exists() || !is_mount_point(cwd)? {
        return Ok(());
    }
    run(
        tenant,
        "umount",
        tokio::process::Command::new("umount").arg(cwd),
    )
    .await
}

async fn make_image(tenant: &str, image: &Path, bytes: u64) -> Result<()> {
    let partial = image.with_extension("img.partial");
    let file = std::fs::File::create(&partial).map_err(|e| Error::io(&partial, e))?;
    file.set_len(bytes).map_err(|e| Error::io(&partial, e))?;
    drop(file);
    // No blocks reserved for root (the tenant is root inside), its root directory root's.
    run(
        tenant,
        "mkfs.ext4",
        tokio::process::Command::new("mkfs.ext4")
            .args(["-q", "-F", "-m", "0", "-E", "root_owner=0:0"])
            .arg(&partial),
    )
    .await?;
    std::fs::rename(&partial, image).map_err(|e| Error::io(image, e))
}

async fn run(tenant: &str, what: &str, cmd: &mut tokio::process::Command) -> Result<()> {
    let fail = |reason: String| Error::DiskQuota {
        tenant: tenant.to_string(),
        what: what.to_string(),
        reason,
    };
    let out = cmd
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| fail(e.to_string()))?;
    if !out.status.success() {
        return Err(fail(format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// Whether a filesystem is mounted on `dir` (its device differs from its parent's).
fn is_mount_point(dir: &Path) -> Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let here = std::fs::metadata(dir).map_err(|e| Error::io(dir, e))?;
    let parent = dir.join("..");
    let up = std::fs::metadata(&parent).map_err(|e| Error::io(&parent, e))?;
    Ok(here.dev() != up.dev() || here.ino() == up.ino())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_directory_is_no_mount_point_and_the_root_is() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(!is_mount_point(tmp.path()).unwrap());
        assert!(is_mount_point(Path::new("/")).unwrap());
        assert!(is_mount_point(Path::new("/proc")).unwrap());
    }
}
