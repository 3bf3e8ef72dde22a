//! The restore stage of a lazy swap-in: CRIU's lazy-pages daemon and the fill start, the lazy
//! gate relays the tenant's userfaultfds, and `criu restore --lazy-pages` brings the tree back
//! from the mounted checkpoint. It ends when the tenant runs, the daemon serves its faults and
//! the restore set's prefetch is done; or, on failure, with nothing left behind: no tenant, no
//! daemon, no mount.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pager::reads::RestorePhase;
use pager::ImageMount;
use pagestore::prefetch::PrefetchReport;
use tokio::process::Child;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::error::Result;
use crate::host::{TenantSlot, Worker};
use crate::lazy_gate::LazyGate;
use crate::process::kill_tree;
use crate::swap_in::fill::{self, Fill};
use crate::tenant::fresh_dir;

/// How long the restore waits for the lazy-pages daemon to take the tenant's userfaultfds.
const DAEMON_CONNECT_LIMIT: Duration = Duration::from_secs(10);

/// A tenant restored lazily, and what keeps serving it.
pub(super) struct LazyRestore {
    /// The root of its restored tree.
    pub pid: u32,
    /// CRIU's lazy-pages daemon, copying in the pages not yet installed.
    pub daemon: Child,
    /// CRIU's work directory of the daemon (its log).
    pub daemon_work: PathBuf,
    /// Holds the daemon's background copy until released (see `lazy_gate`).
    pub gate: LazyGate,
    /// What the restore set's prefetch read (empty if it failed).
    pub prefetch: PrefetchReport,
    /// Lets the fill go on when the learning window closes (sent or dropped).
    pub window_closed: oneshot::Sender<()>,
    /// The fill of the rest of the image.
    pub fill: JoinHandle<pagestore::Result<PrefetchReport>>,
    /// Sent when the fill has the whole image in memory.
    pub filled: oneshot::Receiver<()>,
    /// The checkpoint's mount the daemon reads from.
    pub mount: ImageMount,
}

impl Worker {
    /// Restores the tenant from `mount` (at `mountpoint`, its pagemaps as planned) while `fill`
    /// fetches the restore set and then the rest of the image. The gate holds CRIU's background
    /// copy back until the tenant's first moments are over (see `background`).
    pub(super) async fn restore_lazily(
        &self,
        slot: &TenantSlot,
        mount: ImageMount,
        mountpoint: &Path,
        fill: Fill,
    ) -> Result<LazyRestore> {
        let Fill {
            prefetched,
            window_closed,
            faults,
            task: fill,
            filled,
        } = fill;
        let work = slot.dirs.criu_work("restore");
        let daemon_work = slot.dirs.criu_work("lazy-pages");
        let (mut daemon, gate) = match self.start_lazy_pages(mountpoint, &work, &daemon_work) {
            Ok(started) => started,
            Err(e) => {
                fill.abort();
                return Err(e);
            }
        };
        self.ready_for_a_cgroup_move();
        let cgroups = self.cgroup_roots(&slot.name);
        let restored = match self
            .criu
            .restore(mountpoint, &work, true, slot.placement(&cgroups), false)
            .await
        {
            Ok(pid) => wait_for_daemon(&gate, &mut daemon, &daemon_work)
                .await
                .map(|()| pid)
                .map_err(|status| {
                    (
                        Some(pid),
                        self.criu.lazy_pages_failure(&daemon_work, status),
                    )
                }),
            Err(e) => Err((None, e)),
        };
        match restored {
            Ok(pid) => {
                // The daemon serves faults only until the first moments are over.
                mount.reads().set_phase(RestorePhase::Faults);
                let _ = faults.send(mount.reads().clone());
                let prefetch = fill::restore_set_fetched(prefetched).await;
                Ok(LazyRestore {
                    pid,
                    daemon,
                    daemon_work,
                    gate,
                    prefetch,
                    window_closed,
                    fill,
                    filled,
                    mount,
                })
            }
            Err((pid, e)) => {
                // A tenant whose lazy memory nobody serves would hang at its first fault:
                // it goes, and the checkpoint it came from stays its newest.
                if let Some(pid) = pid {
                    kill_tree(pid).await;
                }
                drop(gate);
                fill.abort();
                let _ = daemon.kill().await;
                let _ = tokio::task::spawn_blocking(move || mount.unmount()).await;
                Err(e)
            }
        }
    }
}

impl Worker {
    /// CRIU's lazy-pages daemon on `mountpoint` and the gate between it and the restore, in
    /// fresh work directories. The daemon starts alongside the restore set's prefetch and the
    /// restore itself (each CRIU run spends tens of ms probing the kernel first); the gate hands
    /// it the tenant's userfaultfds once it listens.
    fn start_lazy_pages(
        &self,
        mountpoint: &Path,
        work: &Path,
        daemon_work: &Path,
    ) -> Result<(Child, LazyGate)> {
        fresh_dir(work)?;
        fresh_dir(daemon_work)?;
        let daemon = self.criu.spawn_lazy_pages(mountpoint, daemon_work)?;
        let gate = LazyGate::open(work, daemon_work)?;
        Ok((daemon, gate))
    }
}

/// Waits until the lazy-pages daemon holds the restored tenant's userfaultfds; the daemon's exit
/// status (or a timeout) otherwise.
async fn wait_for_daemon(
    gate: &LazyGate,
    daemon: &mut Child,
    daemon_work: &Path,
) -> std::result::Result<(), String> {
    let started = Instant::now();
    while !gate.daemon_connected() {
        if let Ok(Some(status)) = daemon.try_wait() {
            return Err(status.to_string());
        }
        if started.elapsed() > DAEMON_CONNECT_LIMIT {
            return Err(format!("no socket in {} after 10 s", daemon_work.display()));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(())
}
