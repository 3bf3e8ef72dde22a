//! CRIU's kernel-probe cache (`/run/criu.kdat`), made once per boot where CRIU will not make it.
//!
//! Every CRIU run first probes the kernel (userfaultfd, pagemap, vdso, netns, and an `iptables`
//! exec, among others): ~30-45 ms of each `criu restore` here, on a swap-in's critical path. CRIU
//! keeps the result in `/run/criu.kdat` and loads it on later runs, but it writes the file only
//! when `/run` is a tmpfs (so that the cache dies with the boot, criu/kerndat.c
//! `kerndat_save_cache`). Where `/run` is a disk (this sandbox), the worker makes the cache
//! itself: `criu check` in a private mount namespace with a tmpfs on `/run`, and the file it
//! writes there copied out. A tag next to it names the boot and the CRIU version it was made
//! for, so a reboot (maybe into another kernel) or a new CRIU makes it again.

use std::path::Path;

use tokio::process::Command;
use tracing::{debug, info};

const KDAT: &str = "/run/criu.kdat";
const TAG: &str = "/run/criu.kdat.pico-tag";

/// Makes sure CRIU finds its kernel-probe cache. Errors are reasons for a slower restore, never
/// for refusing to run, so they come back as text for a warning.
pub async fn ensure(criu: &Path, criu_version: &str) -> Result<(), String> {
    if run_is_tmpfs() {
        debug!("/run is a tmpfs: CRIU keeps its own kernel-probe cache");
        return Ok(());
    }
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map_err(|e| format!("boot id: {e}"))?;
    let tag = format!("boot {}\ncriu {criu_version}\n", boot_id.trim());
    if Path::new(KDAT).exists() && std::fs::read_to_string(TAG).ok().as_deref() == Some(&tag) {
        return Ok(());
    }
    let script = format!(
        "mount -t tmpfs tmpfs /run && {} check >/dev/null 2>&1; cat {KDAT}",
        criu.display()
    );
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .output()
        .await
        .map_err(|e| format!("unshare: {e}"))?;
    if !out.status.success() || out.stdout.is_empty() {
        return Err(format!(
            "criu check wrote no cache ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let tmp = format!("{KDAT}.pico-tmp-{}", std::process::id());
    std::fs::write(&tmp, &out.stdout).map_err(|e| format!("{tmp}: {e}"))?;
    std::fs::rename(&tmp, KDAT).map_err(|e| format!("{KDAT}: {e}"))?;
    std::fs::write(TAG, tag).map_err(|e| format!("{TAG}: {e}"))?;
    info!(
        bytes = out.stdout.len(),
        "made CRIU's kernel-probe cache ({KDAT}; /run is not a tmpfs)"
    );
    Ok(())
}

fn run_is_tmpfs() -> bool {
    nix::sys::statfs::statfs("/run")
        .map(|s| s.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC)
        .unwrap_or(false)
}
