//! The worker's side of its tenants' cgroups (see `cgroup`): made with a tenant's limits before it
//! starts or is restored, dropped once its tree is gone, read for the memory it uses.

use std::path::Path;

use tracing::warn;

use crate::cgroup::{Limits, TenantCgroup};
use crate::criu::CgroupRoot;
use crate::host::Worker;

impl Worker {
    /// Starts readying the kernel, on a thread of its own, for the move of a restored tree into
    /// its cgroup that CRIU is about to make (see [`crate::cgroup::ready_for_a_move`]).
    pub(crate) fn ready_for_a_cgroup_move(&self) {
        if let Some(procs) = self.cgroups.own_procs().map(Path::to_path_buf) {
            drop(tokio::task::spawn_blocking(move || {
                crate::cgroup::ready_for_a_move(&procs)
            }));
        }
    }

    /// Makes tenant `name`'s cgroup with `limits` (before it starts or is restored); `None`
    /// without cgroups.
    pub(crate) fn prepare_cgroup(
        &self,
        name: &str,
        limits: &Limits,
    ) -> crate::error::Result<Option<TenantCgroup>> {
        let Some(cgroup) = self.cgroups.tenant(name) else {
            return Ok(None);
        };
        cgroup
            .create(limits)
            .map_err(|source| crate::error::Error::Cgroup {
                tenant: name.to_string(),
                source,
            })?;
        Ok(Some(cgroup))
    }

    /// Where a restore puts tenant `name`'s tree in each hierarchy of its cgroup here, whatever
    /// worker dumped it (none without cgroups).
    pub(crate) fn cgroup_roots(&self, name: &str) -> Vec<CgroupRoot> {
        self.cgroups
            .tenant(name)
            .map(|c| c.restore_roots())
            .unwrap_or_default()
    }

    /// Removes tenant `name`'s cgroup once its processes are gone (a failure is logged: an
    /// empty cgroup left behind costs little and is made again at the next restore).
    pub(crate) async fn drop_cgroup(&self, name: &str) {
        if let Some(cgroup) = self.cgroups.tenant(name) {
            if let Err(e) = cgroup.remove().await {
                warn!(tenant = name, error = %e, "could not remove the tenant's cgroup");
            }
        }
    }

    /// Tenant `name`'s memory in use, its tree rooted at `pid`: from its cgroup, or the sum of
    /// its processes' `VmRSS` without one.
    pub(crate) fn memory_in_use(&self, name: &str, pid: u32) -> u64 {
        if let Some(bytes) = self.cgroups.tenant(name).and_then(|c| c.memory_bytes()) {
            return bytes;
        }
        crate::process::process_tree(pid)
            .iter()
            .filter_map(|&p| crate::host_memory::rss(p))
            .sum()
    }

    /// The hierarchies of tenant `name`'s cgroup that its tree (rooted at `pid`) is in: what its
    /// dump records (see [`crate::criu::Criu::dump_cgroups`]). Its cgroups in the other
    /// hierarchies are the worker's own, where a restore leaves it anyway; each one recorded
    /// costs every restore a mount (7 ms for this machine's v2 hierarchy, measured) and a move.
    pub(crate) fn cgroup_hierarchies_of(&self, name: &str, pid: u32) -> Vec<String> {
        self.cgroups
            .tenant(name)
            .map(|c| c.hierarchies_holding(pid))
            .unwrap_or_default()
    }

    /// Tenant `name`'s memory in use from its cgroup, if it has one.
    pub(crate) fn cgroup_memory(&self, name: &str) -> Option<u64> {
        self.cgroups.tenant(name)?.memory_bytes()
    }

    /// Makes sure the tree rooted at `pid` is in tenant `name`'s cgroup (made with `limits` if
    /// missing): a restore from a checkpoint taken before the tenant had one, or a tenant adopted
    /// from a worker without cgroups, is moved in (its memory charged elsewhere so far stays
    /// there on v1).
    pub(crate) fn keep_in_cgroup(&self, name: &str, pid: u32, limits: &Limits) {
        let Some(cgroup) = self.cgroups.tenant(name) else {
            return;
        };
        if cgroup.holds(pid) {
            return;
        }
        warn!(
            tenant = name,
            pid, "the tenant is not in its cgroup: moved in"
        );
        let moved = cgroup.create(limits).and_then(|()| {
            crate::process::process_tree(pid)
                .into_iter()
                .try_for_each(|p| cgroup.add(p))
        });
        if let Err(e) = moved {
            warn!(tenant = name, error = %e, "could not move the tenant into its cgroup");
        }
    }
}
