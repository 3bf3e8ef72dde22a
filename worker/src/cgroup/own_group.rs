//! The cgroup the worker itself runs in: found at start, and written to just before a restore to
//! take the kernel's grace period for cgroup moves out of CRIU's way (kernels without
//! `favordynmods`).

use std::path::{Path, PathBuf};

use super::Hierarchy;

/// Readies the kernel for a move of processes into a cgroup that is about to happen (a
/// restore's: CRIU moves the restored tree into the tenant's cgroup), by moving the worker into
/// the cgroup it is in (`own_procs`, [`Cgroups::own_procs`](super::groups::Cgroups::own_procs)). Every move takes a lock whose first
/// taker after ~30 ms without one waits for an RCU grace period (`cgroup_threadgroup_rwsem`):
/// measured here, 8 ms for a write to `cgroup.procs` after a pause, 0.1 ms within 20 ms of
/// another; CRIU's move, 8 ms of the counter's 22-27 ms restore. Started just before the
/// restore, this waits out that grace period beside CRIU's start instead of inside it. Blocking
/// (the wait); a failure only loses the head start. Not used once the worker has turned
/// `favordynmods` on (`fast_moves`), when moves never wait: this is for kernels without it.
pub(crate) fn ready_for_a_move(own_procs: &Path) {
    if let Err(e) = std::fs::write(own_procs, std::process::id().to_string()) {
        tracing::debug!(file = %own_procs.display(), error = %e, "no head start for the next cgroup move");
    }
}

/// The `cgroup.procs` of the cgroup this process is in, in `hierarchy` (v1: the memory
/// controller's), from `/proc/self/cgroup`.
pub(super) fn own_cgroup_procs(hierarchy: &Hierarchy) -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    own_cgroup_dir(hierarchy, &text).map(|dir| dir.join("cgroup.procs"))
}

/// The directory of this process's cgroup in `hierarchy`, as `proc_self_cgroup` (the text of
/// `/proc/self/cgroup`) names it.
fn own_cgroup_dir(hierarchy: &Hierarchy, proc_self_cgroup: &str) -> Option<PathBuf> {
    let (root, wanted) = match hierarchy {
        Hierarchy::V2 { root } => (root, None),
        Hierarchy::V1 { memory, .. } => (memory, Some("memory")),
    };
    let relative = proc_self_cgroup.lines().find_map(|line| {
        let mut fields = line.splitn(3, ':');
        let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
        let ours = match wanted {
            None => controllers.is_empty(),
            Some(c) => controllers.split(',').any(|x| x == c),
        };
        ours.then_some(path)
    })?;
    Some(root.join(relative.trim_start_matches('/')))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worker_s_own_cgroup_is_found_in_either_hierarchy() {
        let v1 = Hierarchy::V1 {
            memory: "/cg/memory".into(),
            cpu: "/cg/cpu,cpuacct".into(),
        };
        let text = "12:cpu,cpuacct:/\n4:memory:/process_api/52ef\n0::/\n";
        assert_eq!(
            own_cgroup_dir(&v1, text),
            Some(PathBuf::from("/cg/memory/process_api/52ef"))
        );
        let v2 = Hierarchy::V2 {
            root: "/sys/fs/cgroup".into(),
        };
        assert_eq!(
            own_cgroup_dir(&v2, "0::/system.slice/pico-worker.service\n"),
            Some(PathBuf::from(
                "/sys/fs/cgroup/system.slice/pico-worker.service"
            ))
        );
        assert_eq!(own_cgroup_dir(&v2, "4:memory:/x\n"), None, "no v2 line");
    }
}
