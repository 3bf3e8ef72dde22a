//! A tenant's cgroup for a process tree that no worker runs: the restore benchmark's plain-CRIU
//! baseline (`criu-eager`) runs its app as the worker runs a tenant, in a cgroup of its own with
//! the same limits, dumped by CRIU with the same hierarchies recorded and restored into it the
//! same way (the yard of links, moves that wait for nothing), so that the comparison with the
//! worker's restores holds (issue #17: the baseline runs the tenant "with the same namespaces
//! and limits as the worker does").

use std::path::{Path, PathBuf};

use super::{Cgroups, Limits, TenantCgroup};

/// The cgroup of one tree outside a worker, and what its restores need.
pub struct StandaloneCgroup {
    cgroups: Cgroups,
    cgroup: TenantCgroup,
    limits: Limits,
    yard: Option<PathBuf>,
}

impl StandaloneCgroup {
    /// The cgroup `name` with `limits`, in a group named after `key` as a worker names its own
    /// after its tenants directory, made now; the machine readied for restores into it as a
    /// worker readies it at start (a yard of links under `scratch`, `favordynmods`). `None`
    /// without a usable hierarchy (the reason is logged), as a worker's tenants then run
    /// without one.
    pub fn make(
        key: &Path,
        name: &str,
        limits: Limits,
        scratch: &Path,
    ) -> std::io::Result<Option<StandaloneCgroup>> {
        let mut cgroups = Cgroups::detect(key);
        let yard = cgroups.prepare_restores(&scratch.join("yard"), &scratch.join("cgroup2"), true);
        let Some(cgroup) = cgroups.tenant(name) else {
            return Ok(None);
        };
        cgroup.create(&limits)?;
        Ok(Some(StandaloneCgroup {
            cgroups,
            cgroup,
            limits,
            yard,
        }))
    }

    /// Has `cmd`'s process join the cgroup before it executes, as a tenant's first process does.
    pub fn join_before_exec(&self, cmd: &mut std::process::Command) -> std::io::Result<()> {
        super::join_before_exec(cmd, self.cgroup.open_procs()?);
        Ok(())
    }

    /// The hierarchies of the cgroup the tree rooted at `pid` is in: what its dump records
    /// ([`crate::criu::Criu::dump_cgroups`]), as the worker's dumps do.
    pub fn hierarchies_holding(&self, pid: u32) -> Vec<String> {
        self.cgroup.hierarchies_holding(pid)
    }

    /// Whether process `pid` is in the cgroup (in every hierarchy of it).
    pub fn holds(&self, pid: u32) -> bool {
        self.cgroup.holds(pid)
    }

    /// `criu` with the yard of links its restores find the hierarchies in, if there is one.
    pub fn criu(&self, criu: crate::criu::Criu) -> crate::criu::Criu {
        match &self.yard {
            Some(yard) => criu.with_cgroup_yard(yard.clone()),
            None => criu,
        }
    }

    /// Removes the cgroup once the tree is gone (after its dump), as a worker drops a sleeping
    /// tenant's.
    pub async fn remove(&self) -> std::io::Result<()> {
        self.cgroup.remove().await
    }

    /// Makes the cgroup again with its limits, before a restore, as a worker does.
    pub fn recreate(&self) -> std::io::Result<()> {
        self.cgroup.create(&self.limits)
    }

    /// Removes the cgroup and its group (at the end; the tree must be gone).
    pub async fn close(self) -> std::io::Result<()> {
        self.cgroup.remove().await?;
        self.cgroups.remove_worker_group();
        Ok(())
    }
}
