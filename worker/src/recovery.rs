//! What a worker does at start with what its predecessor left half done (it may have been
//! killed at any point): every tenant ends either running and adopted, or swapped out and
//! restorable, and none comes back with state older than its last complete dump.
//!
//! - `swapping-out`: the dump may be complete (CRIU finishes it even when the worker dies, and
//!   the tenant is then gone): it is the only copy of the tenant's newest state, so it is
//!   ingested and committed now. An incomplete dump leaves the tenant running (CRIU resumes it):
//!   adopted.
//! - `swapping-in`, or `running` with pages still to copy (`pages_pending`): the restore needed
//!   this worker's pager, which is gone, so the tenant's memory may be incomplete. Its processes
//!   are killed and it is swapped out again on the checkpoint it came from (nothing newer exists:
//!   it has not been dumped since).
//! - `running` whose processes are gone: `exited`.
//!
//! A tenant left running keeps its cgroup (`cgroup`); the cgroup of any other is removed.
//!
//! Mounts the predecessor left under the worker's home are detached first; what it staged and
//! no tenant names is deleted last.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::error::Result;
use crate::host::{TenantSlot, Worker};
use crate::process::process_alive;
use crate::tenant::{TenantDirs, TenantState};

/// Marks the tenant's lazy restore complete (every page copied in).
pub(crate) fn mark_restore_complete(dirs: &TenantDirs) -> std::io::Result<()> {
    let path = dirs.root.join("restore-complete");
    let file = std::fs::File::create(&path)?;
    file.sync_all()
}

/// Clears the mark before a new lazy restore.
pub(crate) fn clear_restore_complete(dirs: &TenantDirs) {
    let _ = std::fs::remove_file(dirs.root.join("restore-complete"));
}

/// Whether the last lazy restore copied every page in (marked by its background copy).
pub(crate) fn restore_complete(dirs: &TenantDirs) -> bool {
    dirs.root.join("restore-complete").exists()
}

/// How long recovery waits for a CRIU the predecessor started to finish.
const STRAY_CRIU_LIMIT: Duration = Duration::from_secs(60);

impl Worker {
    /// Settles every tenant (see the module doc).
    pub(crate) async fn recover(self: &Arc<Self>) -> Result<()> {
        crate::mounts::detach_below(&self.config.mounts_dir);
        for slot in self.tenants.all() {
            self.remount_disk(&slot).await;
            if let Err(e) = self.recover_tenant(&slot).await {
                warn!(tenant = %slot.name, error = %e, "could not settle the tenant");
            }
            self.settle_cgroup(&slot).await;
        }
        self.sweep_staging().await;
        Ok(())
    }

    /// Deletes what the predecessor left in the staging directory that no tenant names: the dump
    /// of a dense tenant's committed checkpoint, kept until its whole image was written behind
    /// the swap-out (`swap_out`), or a CPU record.
    async fn sweep_staging(&self) {
        let mut named = std::collections::HashSet::new();
        for slot in self.tenants.all() {
            if let Some(staging) = slot.runtime.lock().await.info.staging.clone() {
                named.insert(staging);
            }
        }
        let dir = &self.config.staging_dir;
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if named.contains(&path) {
                continue;
            }
            let removed = match entry.file_type().is_ok_and(|t| t.is_dir()) {
                true => std::fs::remove_dir_all(&path),
                false => std::fs::remove_file(&path),
            };
            match removed {
                Ok(()) => info!(path = %path.display(), "deleted what a stopped worker staged"),
                Err(e) => warn!(path = %path.display(), error = %e, "could not delete it"),
            }
        }
    }

    /// Mounts a tenant's filesystem again (a disk quota's) if it is not: after a reboot, or a
    /// worker stopped with `umount`s done by hand. A failure is logged; its swap-in tries again.
    async fn remount_disk(&self, slot: &TenantSlot) {
        let quota = slot.runtime.lock().await.info.disk_quota;
        if let Some(bytes) = quota {
            let cwd = slot.dirs.cwd();
            if let Err(e) =
                crate::disk_quota::ensure_mounted(&slot.name, &slot.dirs, &cwd, bytes).await
            {
                warn!(tenant = %slot.name, error = %e, "its working directory is not mounted");
            }
        }
    }

    async fn recover_tenant(self: &Arc<Self>, slot: &Arc<TenantSlot>) -> Result<()> {
        let (state, pid, pending, staging) = {
            let rt = slot.runtime.lock().await;
            (
                rt.info.state,
                rt.info.pid,
                rt.info.pages_pending,
                rt.info.staging.clone(),
            )
        };
        let alive = pid.is_some_and(process_alive);
        match state {
            TenantState::SwappingOut => {
                wait_for_stray_criu(slot).await;
                let complete = staging.as_deref().is_some_and(|s| dump_complete(slot, s));
                let alive = pid.is_some_and(process_alive);
                if complete && !alive {
                    info!(tenant = %slot.name, "committing the complete dump a stopped worker left");
                    self.commit_left_dump(slot).await?;
                } else if alive {
                    info!(tenant = %slot.name, "its dump was not complete: still running, adopted");
                    self.set_state(slot, TenantState::Running).await?;
                } else {
                    self.fall_back(slot).await?;
                }
                if let Some(staging) = staging {
                    let _ = std::fs::remove_dir_all(staging);
                }
            }
            TenantState::SwappingIn => {
                self.kill_half_restored(slot).await;
                self.set_state(slot, TenantState::SwappedOut).await?;
                info!(tenant = %slot.name, "its restore was cut short: swapped out again");
            }
            TenantState::Running if pending && !restore_complete(&slot.dirs) => {
                self.kill_half_restored(slot).await;
                self.set_state(slot, TenantState::SwappedOut).await?;
                info!(tenant = %slot.name, "its pages were still being copied in: swapped out again");
            }
            TenantState::Running if !alive => {
                warn!(tenant = %slot.name, "tenant was running but its process is gone");
                self.set_state(slot, TenantState::Exited).await?;
            }
            TenantState::Running => info!(tenant = %slot.name, pid, "adopted a running tenant"),
            _ => {}
        }
        Ok(())
    }

    /// A running tenant stays in its cgroup (its processes outlived the worker there; one started
    /// by a worker without cgroups is moved in); any other has none left.
    async fn settle_cgroup(&self, slot: &TenantSlot) {
        let (state, pid, limits) = {
            let rt = slot.runtime.lock().await;
            (rt.info.state, rt.info.pid, rt.info.limits)
        };
        match (state, pid) {
            (TenantState::Running, Some(pid)) if process_alive(pid) => {
                self.keep_in_cgroup(&slot.name, pid, &limits);
            }
            _ => self.drop_cgroup(&slot.name).await,
        }
    }

    /// Ingests and commits the complete dump in the tenant's staging directory.
    async fn commit_left_dump(&self, slot: &Arc<TenantSlot>) -> Result<()> {
        let mut rt = slot.runtime.lock().await;
        let Some(staging) = rt.info.staging.clone() else {
            return Ok(());
        };
        crate::tenant_files::stage_beside(&rt.info, &slot.dirs, &staging).await;
        let report = self
            .ingest_with_locality(slot, &slot.name, &staging, rt.last_manifest())
            .await?;
        rt.manifest = report
            .manifest
            .clone()
            .map(|m| (report.checkpoint.id.clone(), m));
        rt.info.state = TenantState::SwappedOut;
        rt.info.checkpoint = Some(report.checkpoint.id.to_string());
        rt.info.generation = Some(report.checkpoint.generation);
        rt.info.staging = None;
        rt.info.pages_pending = false;
        rt.info.save(&slot.dirs)
    }

    /// A tenant whose processes are gone and whose dump did not complete: its newest complete
    /// dump is its committed checkpoint, if it has one.
    async fn fall_back(&self, slot: &Arc<TenantSlot>) -> Result<()> {
        let has_checkpoint = slot.runtime.lock().await.info.checkpoint.is_some();
        let state = if has_checkpoint {
            TenantState::SwappedOut
        } else {
            TenantState::Exited
        };
        warn!(tenant = %slot.name, %state, "its process is gone and its dump incomplete");
        self.set_state(slot, state).await
    }

    async fn set_state(&self, slot: &TenantSlot, state: TenantState) -> Result<()> {
        let mut rt = slot.runtime.lock().await;
        rt.info.state = state;
        rt.info.staging = None;
        rt.info.pages_pending = false;
        rt.info.save(&slot.dirs)
    }

    /// Kills every process in the tenant's network namespace (a restore's tree, or the CRIU
    /// that was making it), until none is left.
    async fn kill_half_restored(&self, slot: &TenantSlot) {
        let Some(pin) = &slot.netns else {
            if let Some(pid) = slot.runtime.lock().await.info.pid {
                crate::process::kill_tree(pid).await;
            }
            return;
        };
        let mut quiet = 0;
        let started = Instant::now();
        while quiet < 3 && started.elapsed() < STRAY_CRIU_LIMIT {
            let pids = processes_in_netns(pin);
            if pids.is_empty() {
                quiet += 1;
            } else {
                quiet = 0;
                for pid in pids {
                    crate::process::kill_tree(pid).await;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Waits for a CRIU run inside the tenant's namespace (a dump) to end.
async fn wait_for_stray_criu(slot: &TenantSlot) {
    let Some(pin) = &slot.netns else {
        return;
    };
    let started = Instant::now();
    while started.elapsed() < STRAY_CRIU_LIMIT {
        let criu = processes_in_netns(pin)
            .into_iter()
            .any(|pid| comm(pid).is_some_and(|c| c == "criu"));
        if !criu {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether CRIU finished the dump in `staging`: it writes `stats-dump` into its work directory
/// (emptied before each dump) only after a dump succeeded and the tree was killed
/// (`cr_dump_finish`); its log line saying so is there only from `-v3` on.
fn dump_complete(slot: &TenantSlot, staging: &Path) -> bool {
    staging.is_dir() && slot.dirs.criu_work("dump").join("stats-dump").is_file()
}

fn comm(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|c| c.trim().to_string())
}

/// Every process whose network namespace is the one pinned at `pin`.
pub(crate) fn processes_in_netns(pin: &Path) -> Vec<u32> {
    use std::os::unix::fs::MetadataExt;
    let Ok(target) = std::fs::metadata(pin).map(|m| m.ino()) else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::metadata(format!("/proc/{pid}/ns/net")).is_ok_and(|m| m.ino() == target)
        })
        .collect()
}
