//! A warm CRIU for whole restores: a `criu swrk` process (CRIU's service worker, the one libcriu
//! starts) launched ahead of the restore that will use it, idle on its end of a socket pair until
//! the restore request arrives ([`crate::criu_rpc`]). It restores the tree, answers with the
//! root's pid and exits; a new spare is launched behind it for the next restore.
//!
//! **Why.** Starting CRIU costs ~2.2 ms here before it does any work: `criu --version` takes
//! 2.8 ms against 0.6 ms for `true` (23 shared libraries are linked at exec). For a small
//! tenant restored whole in ~15-20 ms that is a tenth of the swap-in, paid on the critical path
//! by `criu restore` from the command line; a spare pays it while the worker is idle. What the
//! restore itself does is unchanged: `swrk` runs the same `cr_restore_tasks` as
//! `criu restore -d --tcp-established`, and the restored tree is re-parented to the worker (a
//! child subreaper) when the spare exits, as it is after `criu restore -d`.
//!
//! A spare that has died, or cannot be started, costs nothing but the fallback: the restore is
//! then run as `criu restore` ([`crate::criu::Criu::restore`]).

use crate::sandbox::View;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use nix::sys::socket::{socketpair, AddressFamily, MsgFlags, SockFlag, SockType};
use tokio::process::{Child, Command};
use tracing::{debug, warn};

use crate::criu::{CgroupRoot, Criu, Placement};
use crate::criu_rpc::{RestoreRequest, RestoreResponse};
use crate::error::{Error, Result};

/// The restore's log in its work directory, as `criu restore` names it.
const LOG_FILE: &str = "restore.log";

/// CRIU's RPC messages are small; a response never comes near this.
const MAX_MESSAGE: usize = 64 << 10;

/// One idle `criu swrk` and the worker's end of its socket.
struct Spare {
    child: Child,
    socket: OwnedFd,
}

/// The worker's spare CRIUs: as many idle as restores may run at once, so that wake-ups
/// side by side each find one (with one, the second of two concurrent restores started CRIU
/// itself).
pub(crate) struct CriuSpares {
    criu: Criu,
    /// How many are kept idle.
    keep: usize,
    idle: Arc<Mutex<Vec<Spare>>>,
}

/// Starts a spare: `criu swrk 0`, its end of the socket pair as its standard input.
///
/// **Why stdin, not a descriptor of its own** (libcriu passes one, with its close-on-exec flag
/// cleared between fork and exec): a command with a `pre_exec` hook is started by `fork`, which
/// copies the worker's page tables (hundreds of MiB mapped: its memory tier, the store's
/// caches) and makes every page it writes next fault once; in a burst of wake-ups that cost
/// more CPU than CRIU's restores (`copy_page_range` alone 11% of the host's samples at 20
/// wake-ups/s). Without a hook the standard library starts it with `posix_spawn` (a vfork that
/// shares the worker's memory until the exec), and a standard stream needs no hook: it is
/// `dup2`ed into place without close-on-exec. CRIU reads its requests from the descriptor
/// number it is given and never its stdin otherwise; its messages to stdout stay off the
/// socket.
fn launch(criu: &Criu) -> Result<Spare> {
    let bin = criu.bin();
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| Error::io(bin, e.into()))?;
    let mut cmd = Command::new(bin);
    cmd.arg("swrk")
        .arg("0")
        .stdin(Stdio::from(theirs))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    criu.set_env(&mut cmd);
    let child = cmd.spawn().map_err(|e| Error::io(bin, e))?;
    Ok(Spare {
        child,
        socket: ours,
    })
}

impl CriuSpares {
    /// Launches `keep` spares of `criu` (a failure is logged: restores then start CRIU
    /// themselves).
    pub fn start(criu: &Criu, keep: usize) -> CriuSpares {
        let spares = CriuSpares {
            criu: criu.clone(),
            keep,
            idle: Arc::new(Mutex::new(Vec::new())),
        };
        for _ in 0..keep {
            spares.replenish();
        }
        spares
    }

    /// Launches a spare in the background if fewer than `keep` are idle.
    fn replenish(&self) {
        let (criu, idle, keep) = (self.criu.clone(), self.idle.clone(), self.keep);
        tokio::task::spawn_blocking(move || {
            if idle.lock().unwrap_or_else(|p| p.into_inner()).len() >= keep {
                return;
            }
            match launch(&criu) {
                Ok(spare) => {
                    let mut idle = idle.lock().unwrap_or_else(|p| p.into_inner());
                    // Others launched meanwhile: this one is dropped (and killed).
                    if idle.len() < keep {
                        idle.push(spare);
                    }
                }
                Err(e) => warn!(error = %e, "no spare CRIU: restores start their own"),
            }
        });
    }

    /// The spare idle longest, if it is still alive (and a new one on its way). The oldest, not
    /// the newest: the one a previous take sent for may join the queue between two takes.
    fn take(&self) -> Option<Spare> {
        let spare = {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            (!idle.is_empty()).then(|| idle.remove(0))
        };
        self.replenish();
        let mut spare = spare?;
        match spare.child.try_wait() {
            Ok(None) => Some(spare),
            Ok(Some(status)) => {
                warn!(%status, "the spare CRIU had exited");
                None
            }
            Err(e) => {
                warn!(error = %e, "the spare CRIU cannot be checked");
                None
            }
        }
    }

    /// Restores the tree from `images` with a spare, as [`Criu::restore`] would (`-d
    /// --tcp-established`, its log level, `restore.log` in `work`); returns the root pid.
    /// `Ok(None)` when no spare is ready (start CRIU instead). A restore CRIU reports failed is
    /// an error naming its log.
    /// The tree is put as `placement` says; with `stopped`, its tasks are left stopped (see
    /// [`Criu::restore`]).
    pub async fn restore(
        &self,
        images: &Path,
        work: &Path,
        placement: Placement<'_>,
        stopped: bool,
    ) -> Result<Option<u32>> {
        let Placement {
            netns,
            view,
            cgroups,
        } = placement;
        if let Some(view) = view {
            crate::criu::prepare_root(view)?;
        }
        let Some(spare) = self.take() else {
            return Ok(None);
        };
        let asked = Asked {
            images: images.to_path_buf(),
            work: work.to_path_buf(),
            netns: netns.map(Path::to_path_buf),
            view: view.cloned(),
            log_level: self.criu.log_level(),
            cgroup_yard: self.criu.cgroup_yard().map(Path::to_path_buf),
            cgroup_roots: cgroups.to_vec(),
            leave_stopped: stopped,
        };
        let Spare { mut child, socket } = spare;
        let answered = tokio::task::spawn_blocking(move || ask_to_restore(&socket, &asked))
            .await
            .map_err(|source| Error::TaskFailed {
                task: "CRIU restore request",
                source,
            })?;
        // It exits once it has answered; reaped behind the reply.
        tokio::spawn(async move {
            if let Err(e) = child.wait().await {
                debug!(error = %e, "spare CRIU not reaped");
            }
        });
        match answered.map_err(|e| Error::io(self.criu.bin(), e))? {
            RestoreResponse {
                success: true,
                pid: Some(pid),
                ..
            } if pid > 0 => Ok(Some(pid as u32)),
            r => {
                let status = format!(
                    "errno {}: {}",
                    r.errno.unwrap_or(0),
                    r.errmsg.as_deref().unwrap_or("failed")
                );
                Err(self
                    .criu
                    .failure("restore (swrk)", status, work, LOG_FILE, b""))
            }
        }
    }
}

/// What a restore asks a spare for.
struct Asked {
    images: PathBuf,
    work: PathBuf,
    netns: Option<PathBuf>,
    view: Option<View>,
    log_level: u8,
    cgroup_yard: Option<PathBuf>,
    cgroup_roots: Vec<CgroupRoot>,
    leave_stopped: bool,
}

/// Sends the restore request and waits for CRIU's answer (blocking).
fn ask_to_restore(socket: &OwnedFd, asked: &Asked) -> std::io::Result<RestoreResponse> {
    let Asked {
        images,
        work,
        netns,
        view,
        log_level,
        cgroup_yard,
        cgroup_roots,
        leave_stopped,
    } = asked;
    let (netns, view, cgroup_yard) = (netns.as_deref(), view.as_ref(), cgroup_yard.as_deref());
    let bad = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
    let images = images
        .to_str()
        .ok_or_else(|| bad(format!("image path {images:?} is not UTF-8")))?;
    // CRIU opens the work directory through /proc/<this pid>/fd/<n>: kept open until it answers.
    let work_dir = std::fs::File::open(work)?;
    let root = view
        .map(|v| {
            v.root()
                .to_str()
                .ok_or_else(|| bad(format!("view root {:?} is not UTF-8", v.root())))
        })
        .transpose()?;
    let external = view.map(View::restore_externals).unwrap_or_default();
    let request = RestoreRequest {
        images_dir: images,
        work_dir_fd: work_dir.as_raw_fd(),
        log_file: LOG_FILE,
        log_level: *log_level,
        tcp_established: true,
        join_netns: netns
            .map(|p| {
                p.to_str()
                    .ok_or_else(|| bad(format!("namespace path {p:?} is not UTF-8")))
            })
            .transpose()?,
        root,
        external: &external,
        cgroup_yard: cgroup_yard
            .map(|p| {
                p.to_str()
                    .ok_or_else(|| bad(format!("cgroup yard {p:?} is not UTF-8")))
            })
            .transpose()?,
        cgroup_roots,
        leave_stopped: *leave_stopped,
    }
    .encode();
    nix::sys::socket::send(socket.as_raw_fd(), &request, MsgFlags::empty())?;
    let mut buf = vec![0u8; MAX_MESSAGE];
    let n = nix::sys::socket::recv(socket.as_raw_fd(), &mut buf, MsgFlags::empty())?;
    if n == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "CRIU closed its socket without answering",
        ));
    }
    RestoreResponse::decode(&buf[..n]).map_err(bad)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::time::{Duration, Instant};

    async fn criu() -> Criu {
        let bin = ["/usr/local/sbin/criu", "/usr/sbin/criu"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .expect("CRIU is installed by deploy/setup.sh");
        Criu::detect(&bin, 2).await.unwrap()
    }

    /// The pids of the idle spares, once there are `n`.
    async fn idle_spare_pids(spares: &CriuSpares, n: usize) -> Vec<u32> {
        let started = Instant::now();
        loop {
            let pids: Vec<u32> = spares
                .idle
                .lock()
                .unwrap()
                .iter()
                .filter_map(|s| s.child.id())
                .collect();
            if pids.len() >= n {
                return pids;
            }
            assert!(started.elapsed() < Duration::from_secs(10), "{pids:?}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn idle_spare_pid(spares: &CriuSpares) -> u32 {
        idle_spare_pids(spares, 1).await[0]
    }

    #[tokio::test]
    async fn as_many_spares_wait_as_restores_may_run_at_once_and_each_is_used_once() {
        let spares = CriuSpares::start(&criu().await, 2);
        let idle = idle_spare_pids(&spares, 2).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(spares.idle.lock().unwrap().len(), 2, "no more than kept");
        let (a, b) = (spares.take().unwrap(), spares.take().unwrap());
        let taken: Vec<u32> = [&a, &b].iter().filter_map(|s| s.child.id()).collect();
        assert_eq!(taken.len(), 2);
        assert_ne!(taken[0], taken[1]);
        assert!(
            taken.iter().all(|p| idle.contains(p)),
            "{taken:?} of {idle:?}"
        );
        let next = idle_spare_pids(&spares, 2).await;
        assert!(next.iter().all(|p| !taken.contains(p)), "new ones behind");
    }

    #[tokio::test]
    async fn a_dead_spare_is_not_used_and_another_takes_its_place() {
        let spares = CriuSpares::start(&criu().await, 1);
        let first = idle_spare_pid(&spares).await;
        // SAFETY: kill(2) of the spare this test started.
        unsafe { libc::kill(first as i32, libc::SIGKILL) };
        tokio::time::sleep(Duration::from_millis(50)).await;
        let dir = tempfile::tempdir().unwrap();
        let restored = spares
            .restore(dir.path(), dir.path(), Placement::default(), false)
            .await
            .unwrap();
        assert_eq!(restored, None, "a dead spare is passed over");
        let second = idle_spare_pid(&spares).await;
        assert_ne!(first, second);
    }

    #[tokio::test]
    async fn a_restore_criu_refuses_names_its_log() {
        let spares = CriuSpares::start(&criu().await, 1);
        idle_spare_pid(&spares).await;
        let dir = tempfile::tempdir().unwrap();
        // An empty image directory: CRIU finds no inventory.
        let err = spares
            .restore(dir.path(), dir.path(), Placement::default(), false)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("restore.log"), "{err}");
    }
}
