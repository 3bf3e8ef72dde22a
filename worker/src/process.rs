//! Processes as the worker sees them in `/proc`: whether one lives, the tree below it, killing
//! and reaping a tree, and becoming the reaper of restored tenants.
//!
//! It exists because a restored tenant is nobody's child: `criu restore -d` leaves its tree
//! orphaned, so the worker (and the benchmarks, which drive CRIU directly) adopt such trees as a
//! child subreaper and must reap them, or a zombie keeps a pid taken. Everything here is plain
//! system calls; errors are `std::io::Error` for the caller to name in its own error type.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, killpg, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::Pid;

/// How long [`kill_tree`] waits for each process of a killed tree to be gone.
pub const KILLED_GONE_WITHIN: Duration = Duration::from_secs(10);

/// How often [`wait_gone`] looks again (async: the worker's tasks).
const ASYNC_POLL: Duration = Duration::from_millis(5);

/// How often [`wait_gone_blocking`] looks again (a thread of its own: the benchmarks).
const BLOCKING_POLL: Duration = Duration::from_millis(2);

/// Makes the calling process the parent of orphans below it (`PR_SET_CHILD_SUBREAPER`).
/// `criu restore -d` leaves the restored tree orphaned; without a subreaper it goes to pid 1,
/// which (in a container) may never reap it, and a zombie keeps its pid taken, so the next
/// restore of that tree fails with "File exists".
pub fn become_subreaper() -> std::io::Result<()> {
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes an integer and touches no memory.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// A pidfd of process `pid`: it names that process, never another that reuses its number.
pub fn pidfd_open(pid: u32) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: pidfd_open takes numbers and returns a new descriptor (owned below) or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a descriptor just opened, owned by nothing else.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) })
}

/// A copy of descriptor `fd` of the process behind `pidfd` (`pidfd_getfd`, as root may take of
/// any process).
pub(crate) fn pidfd_getfd(
    pidfd: &std::os::fd::OwnedFd,
    fd: std::os::fd::RawFd,
) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::{AsRawFd, FromRawFd};
    // SAFETY: pidfd_getfd takes numbers and returns a new descriptor (owned below) or -1.
    let copy = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
    if copy < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a descriptor just made, owned by nothing else.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(copy as std::os::fd::RawFd) })
}

/// Waits until child `pid` ends and reaps it, returning its wait status (`None`: reaped by
/// someone else meanwhile, as [`kill_tree`] may). Holds no thread: it waits on a pidfd.
pub async fn reap_when_gone(pid: u32) -> std::io::Result<Option<i32>> {
    let pidfd = pidfd_open(pid)?;
    // SAFETY: an OwnedFd stays open and the same descriptor for as long as the AsyncFd owns it.
    let ready =
        unsafe { tokio::io::unix::AsyncFd::register(pidfd) }.map_err(|e| e.into_parts().1)?;
    // Readable once the process has ended.
    let _guard = ready.readable().await?;
    let mut status = 0;
    // SAFETY: waitpid writes the status it is given.
    match unsafe { libc::waitpid(pid as i32, &mut status, libc::WNOHANG) } {
        r if r == pid as i32 => Ok(Some(status)),
        _ => Ok(None),
    }
}

/// True when `pid` is a live (not zombie) process.
pub fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state is the first field after the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// `pid` and all its descendants, found through the `PPid` of every process in /proc.
pub fn process_tree(pid: u32) -> Vec<u32> {
    let mut parent_of = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let ppid = std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| {
                    s.rsplit_once(')')
                        .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok())
                });
            if let Some(ppid) = ppid {
                parent_of.push((p, ppid));
            }
        }
    }
    let mut tree = vec![pid];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        tree.extend(
            parent_of
                .iter()
                .filter(|(_, pp)| *pp == parent)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    tree
}

/// Continues every process of the tree rooted at `pid` (`SIGCONT`): a tree restored stopped
/// (`Criu::restore`'s `stopped`), on a wake-up's path. A stopped process continues whatever its
/// signal handlers, the init of a PID namespace included.
pub fn continue_tree(pid: u32) {
    for p in descendants(pid) {
        let _ = kill(Pid::from_raw(p as i32), Signal::SIGCONT);
    }
}

/// `pid` and all its descendants, through the `children` of each of their threads: a read per
/// thread of the tree, where [`process_tree`] reads every process of the host (~1000 during a
/// burst of wake-ups on a dense host, a few ms on each). Of a tree that does not fork meanwhile
/// (a stopped one), the same.
pub(crate) fn descendants(pid: u32) -> Vec<u32> {
    let mut tree = vec![pid];
    let mut i = 0;
    while i < tree.len() {
        let tasks = format!("/proc/{}/task", tree[i]);
        for task in std::fs::read_dir(&tasks).into_iter().flatten().flatten() {
            let children = std::fs::read_to_string(task.path().join("children"));
            tree.extend(
                children
                    .iter()
                    .flat_map(|c| c.split_whitespace())
                    .filter_map(|c| c.parse::<u32>().ok()),
            );
        }
        i += 1;
    }
    tree
}

/// Kills the process tree rooted at `pid` and reaps it: waits until each of its processes is
/// gone, at most [`KILLED_GONE_WITHIN`] each.
pub async fn kill_tree(pid: u32) {
    for p in signal_tree(pid) {
        wait_gone(p, KILLED_GONE_WITHIN).await;
    }
}

/// [`kill_tree`] for a caller without an async runtime: blocks the calling thread.
pub fn kill_tree_blocking(pid: u32) {
    for p in signal_tree(pid) {
        wait_gone_blocking(p, KILLED_GONE_WITHIN);
    }
}

/// Sends `SIGKILL` to the tree rooted at `pid`: its process group (a tenant leads a session of
/// its own), the root, and every descendant found before the kill (a tenant is the init of its
/// own PID namespace, which ignores signals it has no handler for, so only `SIGKILL` stops it).
/// Returns the tree, root first.
fn signal_tree(pid: u32) -> Vec<u32> {
    let tree = process_tree(pid);
    let root = Pid::from_raw(pid as i32);
    let _ = killpg(root, Signal::SIGKILL);
    let _ = kill(root, Signal::SIGKILL);
    for &p in &tree {
        let _ = kill(Pid::from_raw(p as i32), Signal::SIGKILL);
    }
    tree
}

/// Waits until `pid` is gone, reaping it if it is our (adopted) child, or until `limit` passes;
/// whether it is gone.
pub async fn wait_gone(pid: u32, limit: Duration) -> bool {
    let started = Instant::now();
    let proc_dir = proc_dir(pid);
    loop {
        if reaped_or_gone(pid, &proc_dir) {
            return true;
        }
        if started.elapsed() > limit {
            return false;
        }
        tokio::time::sleep(ASYNC_POLL).await;
    }
}

/// [`wait_gone`] for a caller without an async runtime: blocks the calling thread.
pub fn wait_gone_blocking(pid: u32, limit: Duration) -> bool {
    let started = Instant::now();
    let proc_dir = proc_dir(pid);
    loop {
        if reaped_or_gone(pid, &proc_dir) {
            return true;
        }
        if started.elapsed() > limit {
            return false;
        }
        std::thread::sleep(BLOCKING_POLL);
    }
}

fn proc_dir(pid: u32) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}"))
}

/// Reaps `pid` if it is our exited child, then whether it is gone from /proc.
fn reaped_or_gone(pid: u32, proc_dir: &std::path::Path) -> bool {
    // Only this pid is waited for: other children (CRIU runs) belong to tokio's reaper.
    let _ = waitpid(Pid::from_raw(pid as i32), Some(WaitPidFlag::WNOHANG));
    !proc_dir.exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stopped_tree_is_continued_whole() {
        let mut child = std::process::Command::new("sh")
            .args(["-c", "sleep 5 & wait"])
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(200));
        let tree = descendants(child.id());
        assert_eq!(tree, process_tree(child.id()));
        assert!(tree.len() >= 2, "{tree:?}");
        let state = |pid: u32| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
            let (_, rest) = stat.rsplit_once(')').unwrap();
            rest.split_whitespace().next().unwrap().to_string()
        };
        for &pid in &tree {
            // SAFETY: kill(2) on pids of the tree this test started.
            unsafe { libc::kill(pid as i32, libc::SIGSTOP) };
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert!(tree.iter().all(|&p| state(p) == "T"), "stopped");
        continue_tree(child.id());
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert!(tree.iter().all(|&p| state(p) == "S"), "continued");
        for pid in tree.iter().rev() {
            // SAFETY: as above.
            unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
        }
        let _ = child.wait();
    }

    #[test]
    fn the_tree_of_a_shell_holds_its_child() {
        let mut child = std::process::Command::new("sh")
            .args(["-c", "sleep 5 & wait"])
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(200));
        let tree = process_tree(child.id());
        assert_eq!(tree[0], child.id());
        assert!(tree.len() >= 2, "{tree:?}");
        for pid in tree.iter().rev() {
            // SAFETY: kill(2) on pids of the tree this test started.
            unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
        }
        let _ = child.wait();
        assert!(process_alive(std::process::id()));
    }

    #[test]
    fn a_killed_tree_is_gone_and_reaped() {
        // Its orphans come to this test's process, which must reap them, as the worker does.
        become_subreaper().unwrap();
        let mut child = std::process::Command::new("sh")
            .args(["-c", "sleep 30 & sleep 30 & wait"])
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(200));
        let tree = process_tree(child.id());
        assert!(tree.len() >= 3, "{tree:?}");
        kill_tree_blocking(child.id());
        // Already reaped by kill_tree_blocking: this wait finds no child.
        let _ = child.wait();
        for p in tree {
            assert!(!proc_dir(p).exists(), "{p} is still in /proc");
        }
    }
}
