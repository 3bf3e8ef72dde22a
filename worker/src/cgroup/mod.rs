//! A cgroup of its own for every tenant: its memory limit and CPU weight are set there, and its
//! memory use (`rss_bytes`) is read from there.
//!
//! It exists because a tenant's processes are otherwise in the worker's cgroups: nothing bounds
//! one tenant's memory or CPU against its neighbours, and its memory could only be summed from
//! `/proc` per process (`VmRSS`, which counts shared file pages once per process and misses
//! nothing a CRIU restore leaves behind).
//!
//! **Hierarchies.** cgroup v2 (one unified hierarchy, what a systemd host gives) when its root
//! offers the `memory` and `cpu` controllers; otherwise cgroup v1 with the `memory` and `cpu`
//! controllers each mounted (this machine: its v2 hierarchy has only `hugetlb`). Both found in
//! `/proc/self/mountinfo`, wherever they are mounted; without either the worker runs its tenants
//! without limits, summing `/proc` for their memory, and says so once.
//!
//! **Names.** `picocenter/<worker>/<tenant>` at the root of each hierarchy used, where
//! `<worker>` is the first 12 hex digits of the BLAKE3 hash of the worker's tenants directory:
//! two workers with different homes on one machine never share a cgroup, and a worker restarted
//! on the same home finds its tenants' cgroups again (the name depends on nothing else).
//!
//! **Files.** v2: `memory.max` (and `memory.swap.max` = 0), `cpu.weight`; v1:
//! `memory.limit_in_bytes` (and `memory.memsw.limit_in_bytes` = the same, where the kernel
//! accounts swap), `cpu.shares` = weight × 1024 / 100 (so the default weight 100 is v1's 1024).
//! A memory limit bounds the tenant's RAM and it gets no swap: at its limit the kernel reclaims
//! its page cache, then the OOM killer kills within the tenant, never a neighbour.
//!
//! **Memory used** ([`TenantCgroup::memory_bytes`]): anonymous memory plus shared memory
//! (`anon` + `shmem` of v2's `memory.stat`, `total_rss` + `total_shmem` of v1's). That is what a
//! swap-out frees: the page cache of files the tenant read stays with the files.
//!
//! **Lifetime.** A tenant joins its cgroup before it executes its command (writing `0` to the
//! cgroup's `cgroup.procs`, opened by the worker beforehand, in the child between fork and exec).
//! The cgroup is removed when the tenant's tree is gone (swap-out, removal): a sleeping tenant
//! costs no cgroup; a killed worker's, left holding no process, go at its next start (or with
//! its home: [`remove_leftover_cgroups`]). Before a restore it is made again with the tenant's
//! limits, and CRIU (its default `--manage-cgroups=soft`) puts the restored tree into it (named
//! by the restore, `TenantCgroup::restore_roots`, whichever worker dumped the tenant), which
//! already exists, so CRIU leaves its settings alone.
//!
//! **Modules.** `groups`: the worker's group; `tenant_group`: one tenant's cgroup;
//! `own_group`: the cgroup the worker itself runs in; `files`: writing cgroup files.
//!
//! **Restores.** CRIU finds the hierarchies in a yard of links the worker makes at start
//! ([`yard`]) instead of mounting them for each restore, and its move of the restored tree
//! waits for no RCU grace period once `favordynmods` is on ([`fast_moves`]).

mod fast_moves;
mod files;
mod groups;
mod hierarchy;
mod limits;
mod own_group;
mod standalone;
mod tenant_group;
mod yard;

pub use groups::remove_leftover_cgroups;
pub(crate) use groups::Cgroups;
pub(crate) use hierarchy::Hierarchy;
pub(crate) use limits::shares_of_weight;
pub use limits::{
    parse_memory_size, Limits, CPU_WEIGHT_DEFAULT, CPU_WEIGHT_MAX, CPU_WEIGHT_MIN, MEMORY_LIMIT_MIN,
};
pub(crate) use own_group::ready_for_a_move;
pub use standalone::StandaloneCgroup;
pub(crate) use tenant_group::{join_before_exec, TenantCgroup};

impl Cgroups {
    /// Readies the machine for this worker's restores, once at its start (`None` without a
    /// hierarchy): the yard `dir` of links to the cgroup hierarchies that CRIU is given (its
    /// path; `None` if it cannot be made, and CRIU then mounts the hierarchies itself), and with
    /// `favor_moves`, moves without a wait (`favordynmods`, mounting cgroup2 on `scratch` for a
    /// moment), after which no restore needs [`ready_for_a_move`]'s head start. Both logged.
    pub(crate) fn prepare_restores(
        &mut self,
        dir: &std::path::Path,
        scratch: &std::path::Path,
        favor_moves: bool,
    ) -> Option<std::path::PathBuf> {
        use fast_moves::FastMoves;
        use tracing::{info, warn};
        if self.unavailable().is_some() {
            return None;
        }
        if favor_moves {
            match fast_moves::favor_dynamic_moves(scratch) {
                FastMoves::AlreadyOn => {
                    info!("cgroup moves wait for nothing (favordynmods)");
                    self.moves_never_wait();
                }
                FastMoves::TurnedOn => {
                    info!(
                        "cgroup moves wait for nothing: favordynmods turned on for the machine \
                         ([worker] favor_cgroup_moves)"
                    );
                    self.moves_never_wait();
                }
                FastMoves::Unavailable(why) => warn!(
                    why,
                    "each cgroup move after a quiet spell waits ~10 ms (an RCU grace period)"
                ),
            }
        }
        let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
        let links = yard::links(&read("/proc/self/cgroup"), &read("/proc/self/mountinfo"));
        match yard::make(dir, &links) {
            Ok(()) => {
                info!(yard = %dir.display(), hierarchies = links.len(), "CRIU's cgroup yard made");
                Some(dir.to_path_buf())
            }
            Err(e) => {
                warn!(yard = %dir.display(), error = %e, "no cgroup yard: CRIU mounts the hierarchies for each restore");
                None
            }
        }
    }
}
