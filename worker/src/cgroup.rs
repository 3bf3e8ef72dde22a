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
//! costs no cgroup. Before a restore it is made again with the tenant's limits, and CRIU (its
//! default `--manage-cgroups=soft`) puts the restored tree back into the cgroup it was dumped
//! from, which already exists, so CRIU leaves its settings alone.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

/// Under the root of each hierarchy: every worker's cgroups.
const TOP: &str = "picocenter";

/// cgroup v2's range of `cpu.weight`, and its default.
pub const CPU_WEIGHT_MIN: u32 = 1;
pub const CPU_WEIGHT_MAX: u32 = 10_000;
pub const CPU_WEIGHT_DEFAULT: u32 = 100;

/// The smallest memory limit a tenant may have: below it nothing starts, and a limit of "256"
/// (bytes) was most likely meant as "256M".
pub const MEMORY_LIMIT_MIN: u64 = 1 << 20;

/// How long the removal of a cgroup waits for its last processes to be gone from it.
const REMOVE_WITHIN: Duration = Duration::from_secs(2);

/// A tenant's limits, as its spec gives them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Its memory (RAM) limit in bytes; none: unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_limit: Option<u64>,
    /// Its CPU weight, 1..=10000 (cgroup v2's `cpu.weight`); none: 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_weight: Option<u32>,
}

impl Limits {
    /// Why these limits cannot be set, if they cannot.
    pub fn check(&self) -> Result<(), String> {
        if let Some(limit) = self.memory_limit {
            if limit < MEMORY_LIMIT_MIN {
                return Err(format!(
                    "memory_limit {limit} bytes is under the least of 1 MiB (write 256M for 256 MiB)"
                ));
            }
        }
        if let Some(weight) = self.cpu_weight {
            if !(CPU_WEIGHT_MIN..=CPU_WEIGHT_MAX).contains(&weight) {
                return Err(format!(
                    "cpu_weight {weight} is not in {CPU_WEIGHT_MIN}..={CPU_WEIGHT_MAX} (default {CPU_WEIGHT_DEFAULT})"
                ));
            }
        }
        Ok(())
    }
}

/// Parses a memory size: a number of bytes, or a whole number with a binary suffix `K`, `M`,
/// `G` or `T` (1024-based; `Ki`, `KiB`, `KB`... and lower case read the same): "268435456",
/// "256M", "256MiB", "1G".
pub fn parse_memory_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let bad = || format!("{text:?} is not a memory size like 256M, 1G or a number of bytes");
    let n: u64 = number.parse().map_err(|_| bad())?;
    let unit = unit.trim().to_ascii_lowercase();
    let unit = unit.trim_end_matches('b').trim_end_matches('i');
    let shift = match unit {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        _ => return Err(bad()),
    };
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// v1's `cpu.shares` for a v2 `cpu.weight` (100 ↔ 1024).
pub(crate) fn shares_of_weight(weight: u32) -> u64 {
    u64::from(weight) * 1024 / 100
}

/// Where the memory and cpu controllers are mounted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Hierarchy {
    /// One unified hierarchy with both controllers.
    V2 { root: PathBuf },
    /// One hierarchy per controller (possibly the same mount, `cpu,cpuacct` and the like).
    V1 { memory: PathBuf, cpu: PathBuf },
}

impl Hierarchy {
    /// The hierarchy of this machine (see the module doc); `Err` says why there is none.
    pub(crate) fn detect() -> Result<Hierarchy, String> {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| format!("/proc/self/mountinfo cannot be read: {e}"))?;
        let v2_controllers = |root: &Path| {
            std::fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default()
        };
        from_mountinfo(&mountinfo, v2_controllers)
    }
}

/// The hierarchy that `mountinfo` (the text of `/proc/self/mountinfo`) shows, v2 first;
/// `v2_controllers` reads a cgroup2 mount's `cgroup.controllers`.
pub(crate) fn from_mountinfo(
    mountinfo: &str,
    v2_controllers: impl Fn(&Path) -> String,
) -> Result<Hierarchy, String> {
    let mut v1_memory = None;
    let mut v1_cpu = None;
    let mut v2_without = Vec::new();
    for mount in mountinfo.lines().filter_map(CgroupMount::parse) {
        match mount {
            CgroupMount::V2(root) => {
                let controllers = v2_controllers(&root);
                let has = |c: &str| controllers.split_whitespace().any(|x| x == c);
                if has("memory") && has("cpu") {
                    return Ok(Hierarchy::V2 { root });
                }
                v2_without.push(format!("{} ({})", root.display(), controllers.trim()));
            }
            CgroupMount::V1 { at, controllers } => {
                if controllers.iter().any(|c| c == "memory") {
                    v1_memory.get_or_insert(at.clone());
                }
                if controllers.iter().any(|c| c == "cpu") {
                    v1_cpu.get_or_insert(at);
                }
            }
        }
    }
    match (v1_memory, v1_cpu) {
        (Some(memory), Some(cpu)) => Ok(Hierarchy::V1 { memory, cpu }),
        (memory, cpu) => Err(format!(
            "no cgroup v2 hierarchy with the memory and cpu controllers{} and no cgroup v1 \
             hierarchies of both (memory: {}, cpu: {})",
            if v2_without.is_empty() {
                String::new()
            } else {
                format!(" (cgroup2 at {})", v2_without.join(", "))
            },
            memory.map_or("not mounted".into(), |p| p.display().to_string()),
            cpu.map_or("not mounted".into(), |p| p.display().to_string()),
        )),
    }
}

/// A cgroup mount of mountinfo.
enum CgroupMount {
    V2(PathBuf),
    V1 {
        at: PathBuf,
        controllers: Vec<String>,
    },
}

impl CgroupMount {
    /// One line of mountinfo: `ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [TAGS...] - FSTYPE SOURCE
    /// SUPEROPTS`; `None` unless it mounts a cgroup hierarchy.
    fn parse(line: &str) -> Option<CgroupMount> {
        let (before, after) = line.split_once(" - ")?;
        let at = PathBuf::from(unescape(before.split_whitespace().nth(4)?));
        let mut after = after.split_whitespace();
        let fstype = after.next()?;
        let superopts = after.nth(1).unwrap_or("");
        match fstype {
            "cgroup2" => Some(CgroupMount::V2(at)),
            "cgroup" => Some(CgroupMount::V1 {
                at,
                controllers: superopts.split(',').map(str::to_string).collect(),
            }),
            _ => None,
        }
    }
}

/// Mountinfo's octal escapes (`\040` for a space) undone.
fn unescape(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut rest = field;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let code = rest.get(i + 1..i + 4);
        match code.and_then(|c| u8::from_str_radix(c, 8).ok()) {
            Some(byte) => {
                out.push(char::from(byte));
                rest = &rest[i + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The worker's cgroups: the hierarchy found at start and its own group in it.
#[derive(Clone, Debug)]
pub(crate) struct Cgroups {
    /// `None`: no usable hierarchy (tenants run without limits).
    hierarchy: Option<Hierarchy>,
    /// Why there is none.
    unavailable: Option<String>,
    /// `picocenter/<worker>`.
    group: PathBuf,
}

impl Cgroups {
    /// Finds the hierarchy (logging once why there is none) and names the worker's group after
    /// `tenants_dir`.
    /// The worker's group is made at once (on v2 with the controllers enabled for its
    /// children), so that a hierarchy the worker may not write to is found out here.
    pub(crate) fn detect(tenants_dir: &Path) -> Cgroups {
        let group = worker_group(tenants_dir);
        let found = Hierarchy::detect().and_then(|h| {
            make_worker_group(&h, &group)
                .map_err(|e| format!("the worker's cgroup cannot be made: {e}"))?;
            Ok(h)
        });
        match &found {
            Ok(h) => {
                info!(hierarchy = ?h, group = %group.display(), "tenants get cgroups of their own");
            }
            Err(why) => warn!(
                why,
                "tenants run without cgroups: no memory limit or CPU weight can be applied, \
                 and their memory is summed from /proc"
            ),
        }
        Cgroups::new(found, tenants_dir)
    }

    /// The cgroups of the worker on `tenants_dir` in `hierarchy` (or without one, and why).
    pub(crate) fn new(hierarchy: Result<Hierarchy, String>, tenants_dir: &Path) -> Cgroups {
        let (hierarchy, unavailable) = match hierarchy {
            Ok(h) => (Some(h), None),
            Err(why) => (None, Some(why)),
        };
        Cgroups {
            hierarchy,
            unavailable,
            group: worker_group(tenants_dir),
        }
    }

    /// Why tenants run without cgroups, if they do.
    pub(crate) fn unavailable(&self) -> Option<&str> {
        self.unavailable.as_deref()
    }

    /// Tenant `name`'s cgroup; `None` without a hierarchy.
    pub(crate) fn tenant(&self, name: &str) -> Option<TenantCgroup> {
        let relative = self.group.join(name);
        let dirs = match self.hierarchy.as_ref()? {
            Hierarchy::V2 { root } => vec![root.join(&relative)],
            Hierarchy::V1 { memory, cpu } if memory == cpu => vec![memory.join(&relative)],
            Hierarchy::V1 { memory, cpu } => vec![memory.join(&relative), cpu.join(&relative)],
        };
        Some(TenantCgroup {
            v2_root: match &self.hierarchy {
                Some(Hierarchy::V2 { root }) => Some(root.clone()),
                _ => None,
            },
            relative,
            dirs,
        })
    }

    /// Removes the worker's own group if no tenant's cgroup is left in it (at a clean stop).
    pub(crate) fn remove_worker_group(&self) {
        let roots = match &self.hierarchy {
            Some(Hierarchy::V2 { root }) => vec![root],
            Some(Hierarchy::V1 { memory, cpu }) => vec![memory, cpu],
            None => return,
        };
        for root in roots {
            // Fails (and stays) while a tenant's cgroup is in it.
            let _ = std::fs::remove_dir(root.join(&self.group));
        }
    }
}

/// Makes the worker's group `group` (relative to each root of `hierarchy`).
fn make_worker_group(hierarchy: &Hierarchy, group: &Path) -> std::io::Result<()> {
    match hierarchy {
        Hierarchy::V2 { root } => enable_controllers_down_to(root, group),
        Hierarchy::V1 { memory, cpu } => [memory, cpu].iter().try_for_each(|root| {
            let dir = root.join(group);
            std::fs::create_dir_all(&dir).map_err(|e| at(&dir, e))
        }),
    }
}

/// `picocenter/<worker>`: the group of the worker on `tenants_dir`.
fn worker_group(tenants_dir: &Path) -> PathBuf {
    Path::new(TOP).join(worker_id(tenants_dir))
}

/// The first 12 hex digits of the BLAKE3 hash of `tenants_dir` (canonical when it exists).
fn worker_id(tenants_dir: &Path) -> String {
    let path = std::fs::canonicalize(tenants_dir).unwrap_or_else(|_| tenants_dir.to_path_buf());
    let hash = blake3::hash(path.as_os_str().as_encoded_bytes());
    hash.to_hex()[..12].to_string()
}

/// One tenant's cgroup: one directory on v2, one per controller on v1.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TenantCgroup {
    /// The root of the v2 hierarchy; `None` on v1.
    v2_root: Option<PathBuf>,
    /// `picocenter/<worker>/<tenant>`, as `/proc/PID/cgroup` shows it (from the root).
    relative: PathBuf,
    /// v2: the one directory; v1: memory's, then cpu's (one when both are mounted together).
    dirs: Vec<PathBuf>,
}

impl TenantCgroup {
    fn v2(&self) -> bool {
        self.v2_root.is_some()
    }

    /// The directory holding the memory controller's files.
    fn memory_dir(&self) -> &Path {
        &self.dirs[0]
    }

    /// The directory holding the cpu controller's files.
    fn cpu_dir(&self) -> &Path {
        self.dirs.last().unwrap_or(&self.dirs[0])
    }

    /// Makes the cgroup (and its parents) if it is missing, and sets `limits` in it.
    pub(crate) fn create(&self, limits: &Limits) -> std::io::Result<()> {
        if let (Some(root), Some(parent)) = (&self.v2_root, self.relative.parent()) {
            enable_controllers_down_to(root, parent)?;
        }
        for dir in &self.dirs {
            std::fs::create_dir_all(dir).map_err(|e| at(dir, e))?;
        }
        self.set(limits)
    }

    /// Writes `limits` (an absent one as the kernel's default) into the cgroup.
    pub(crate) fn set(&self, limits: &Limits) -> std::io::Result<()> {
        for (file, value) in self.settings(limits) {
            let path = match file {
                f if f.starts_with("cpu.") => self.cpu_dir().join(f),
                f => self.memory_dir().join(f),
            };
            // The swap files exist only where the kernel accounts swap.
            if file.contains("swap") && !path.exists() {
                continue;
            }
            write_file(&path, &value)?;
        }
        Ok(())
    }

    /// The files written for `limits`, in order, with their values.
    fn settings(&self, limits: &Limits) -> Vec<(&'static str, String)> {
        let weight = limits.cpu_weight.unwrap_or(CPU_WEIGHT_DEFAULT);
        if self.v2() {
            let memory = limits
                .memory_limit
                .map_or("max".to_string(), |b| b.to_string());
            let swap = if limits.memory_limit.is_some() {
                "0"
            } else {
                "max"
            };
            vec![
                ("memory.max", memory),
                ("memory.swap.max", swap.to_string()),
                ("cpu.weight", weight.to_string()),
            ]
        } else {
            let memory = limits
                .memory_limit
                .map_or("-1".to_string(), |b| b.to_string());
            // memsw may never be below the limit: lifted first, set after.
            vec![
                ("memory.memsw.limit_in_bytes", "-1".to_string()),
                ("memory.limit_in_bytes", memory.clone()),
                ("memory.memsw.limit_in_bytes", memory),
                ("cpu.shares", shares_of_weight(weight).to_string()),
            ]
        }
    }

    /// Opens the cgroup's `cgroup.procs` files for writing, for [`join_before_exec`].
    pub(crate) fn open_procs(&self) -> std::io::Result<Vec<File>> {
        self.dirs
            .iter()
            .map(|dir| {
                let path = dir.join("cgroup.procs");
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(|e| at(&path, e))
            })
            .collect()
    }

    /// Moves process `pid` (all its threads) into the cgroup.
    pub(crate) fn add(&self, pid: u32) -> std::io::Result<()> {
        for dir in &self.dirs {
            write_file(&dir.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    /// The hierarchies in which process `pid` is in this cgroup, as `/proc/PID/cgroup` names
    /// them ("memory", "cpu,cpuacct"; "" for v2).
    pub(crate) fn hierarchies_holding(&self, pid: u32) -> Vec<String> {
        std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .map(|text| self.hierarchies_in(&text))
            .unwrap_or_default()
    }

    /// [`TenantCgroup::hierarchies_holding`] of `/proc/PID/cgroup` text.
    fn hierarchies_in(&self, proc_cgroup: &str) -> Vec<String> {
        let want = Path::new("/").join(&self.relative);
        proc_cgroup
            .lines()
            .filter_map(|line| {
                let mut fields = line.splitn(3, ':');
                let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
                (Path::new(path) == want).then(|| controllers.to_string())
            })
            .collect()
    }

    /// Whether process `pid` is in this cgroup (in every controller of it).
    pub(crate) fn holds(&self, pid: u32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .is_ok_and(|text| self.holds_in(&text))
    }

    /// Whether `/proc/PID/cgroup` text puts the process in this cgroup.
    fn holds_in(&self, proc_cgroup: &str) -> bool {
        let want = Path::new("/").join(&self.relative);
        let mut wanted: Vec<&str> = if self.v2() {
            vec![""]
        } else {
            vec!["memory", "cpu"]
        };
        for line in proc_cgroup.lines() {
            let mut fields = line.splitn(3, ':');
            let (_, controllers, path) = (fields.next(), fields.next(), fields.next());
            let (Some(controllers), Some(path)) = (controllers, path) else {
                continue;
            };
            if Path::new(path) != want {
                continue;
            }
            wanted.retain(|w| {
                if w.is_empty() {
                    !controllers.is_empty()
                } else {
                    !controllers.split(',').any(|c| c == *w)
                }
            });
        }
        wanted.is_empty()
    }

    /// The tenant's memory in use: anonymous plus shared memory (see the module doc), bytes.
    pub(crate) fn memory_bytes(&self) -> Option<u64> {
        let stat = std::fs::read_to_string(self.memory_dir().join("memory.stat")).ok()?;
        memory_of_stat(&stat, self.v2())
    }

    /// Removes the cgroup, waiting a little for the processes of a tree just killed or dumped
    /// to leave it; a cgroup that does not exist is no error.
    pub(crate) async fn remove(&self) -> std::io::Result<()> {
        let started = Instant::now();
        for dir in &self.dirs {
            loop {
                match std::fs::remove_dir(dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                    Err(_) if started.elapsed() < REMOVE_WITHIN => {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    Err(e) => return Err(at(dir, e)),
                }
            }
        }
        Ok(())
    }
}

/// Anonymous plus shared memory of `memory.stat` text (v2's names, or v1's hierarchical ones).
pub(crate) fn memory_of_stat(stat: &str, v2: bool) -> Option<u64> {
    let (anon, shmem) = if v2 {
        ("anon", "shmem")
    } else {
        ("total_rss", "total_shmem")
    };
    let field = |name: &str| {
        stat.lines().find_map(|l| {
            let (key, value) = l.split_once(' ')?;
            (key == name).then(|| value.trim().parse::<u64>().ok())?
        })
    };
    Some(field(anon)? + field(shmem).unwrap_or(0))
}

/// On v2, controllers reach a cgroup only if each ancestor enables them for its children:
/// `+memory +cpu` written into `cgroup.subtree_control` of the hierarchy's `root` and of each
/// group from there down to `parent` (relative to `root`, included), made if missing. `picocenter` and the
/// worker's group hold no process, as v2 requires of a group that hands controllers down.
fn enable_controllers_down_to(root: &Path, parent: &Path) -> std::io::Result<()> {
    let mut dir = root.to_path_buf();
    let mut chain = vec![dir.clone()];
    for part in parent.components() {
        dir.push(part);
        chain.push(dir.clone());
    }
    for dir in chain {
        std::fs::create_dir_all(&dir).map_err(|e| at(&dir, e))?;
        let control = dir.join("cgroup.subtree_control");
        let enabled = std::fs::read_to_string(&control).map_err(|e| at(&control, e))?;
        let on = |c: &str| enabled.split_whitespace().any(|x| x == c);
        if !(on("memory") && on("cpu")) {
            write_file(&control, "+memory +cpu")?;
        }
    }
    Ok(())
}

/// Makes `cmd`'s process join the cgroups whose `cgroup.procs` are `procs` between its fork and
/// its exec, so that all it allocates is charged there from its first page (a pid written from
/// the parent after the spawn would race with the child's first allocations).
pub(crate) fn join_before_exec(cmd: &mut std::process::Command, procs: Vec<File>) {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    // SAFETY: write(2) is async-signal-safe; the descriptors live as long as the command.
    unsafe {
        cmd.pre_exec(move || {
            for file in &procs {
                // "0": the writing process itself (both v1 and v2).
                if libc::write(file.as_raw_fd(), b"0".as_ptr().cast(), 1) != 1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

fn write_file(path: &Path, value: &str) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| at(path, e))?;
    file.write_all(value.as_bytes()).map_err(|e| at(path, e))
}

/// `e` with the path it happened on, for the caller's error.
fn at(path: &Path, e: std::io::Error) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// The flows' uses of a tenant's cgroup.
#[cfg(test)]
mod tests {
    use super::*;

    /// This machine's: cgroup v1 memory and cpu, and a v2 hierarchy with hugetlb only.
    const V1_MOUNTINFO: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    /// A systemd host's: one unified hierarchy.
    const V2_MOUNTINFO: &str = "\
25 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
30 24 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate
";

    #[test]
    fn v1_is_found_where_v2_lacks_the_controllers() {
        let h = from_mountinfo(V1_MOUNTINFO, |_| "hugetlb\n".into()).unwrap();
        assert_eq!(
            h,
            Hierarchy::V1 {
                memory: "/sys/fs/cgroup/memory".into(),
                cpu: "/sys/fs/cgroup/cpu".into()
            }
        );
    }

    #[test]
    fn v2_is_preferred_when_it_has_memory_and_cpu() {
        let h = from_mountinfo(V2_MOUNTINFO, |_| "cpuset cpu io memory pids\n".into()).unwrap();
        assert_eq!(
            h,
            Hierarchy::V2 {
                root: "/sys/fs/cgroup".into()
            }
        );
        let why = from_mountinfo(V2_MOUNTINFO, |_| "pids\n".into()).unwrap_err();
        assert!(why.contains("/sys/fs/cgroup (pids)"), "{why}");
    }

    #[test]
    fn v1_controllers_mounted_together_and_paths_with_spaces() {
        let text = "40 31 0:36 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n\
                    41 31 0:37 / /mnt/my\\040memory rw - cgroup cgroup rw,memory\n";
        let h = from_mountinfo(text, |_| String::new()).unwrap();
        assert_eq!(
            h,
            Hierarchy::V1 {
                memory: "/mnt/my memory".into(),
                cpu: "/sys/fs/cgroup/cpu,cpuacct".into()
            }
        );
        let why =
            from_mountinfo("1 0 0:1 / / rw - ext4 /dev/sda rw\n", |_| String::new()).unwrap_err();
        assert!(why.contains("memory: not mounted"), "{why}");
    }

    #[test]
    fn a_tenant_s_cgroup_is_named_after_the_worker_s_home_and_the_tenant() {
        let v1 = Hierarchy::V1 {
            memory: "/cg/memory".into(),
            cpu: "/cg/cpu".into(),
        };
        let a = Cgroups::new(Ok(v1.clone()), Path::new("/homes/a/tenants"));
        let b = Cgroups::new(Ok(v1), Path::new("/homes/b/tenants"));
        let (ta, tb) = (a.tenant("web").unwrap(), b.tenant("web").unwrap());
        let id = worker_id(Path::new("/homes/a/tenants"));
        assert_eq!(id.len(), 12);
        assert_eq!(
            ta.dirs,
            vec![
                PathBuf::from(format!("/cg/memory/picocenter/{id}/web")),
                PathBuf::from(format!("/cg/cpu/picocenter/{id}/web")),
            ]
        );
        assert_ne!(ta.dirs, tb.dirs, "two homes never share a cgroup");
        let v2 = Cgroups::new(
            Ok(Hierarchy::V2 { root: "/cg".into() }),
            Path::new("/homes/a/tenants"),
        );
        let t = v2.tenant("web").unwrap();
        assert_eq!(
            t.dirs,
            vec![PathBuf::from(format!("/cg/picocenter/{id}/web"))]
        );
        let none = Cgroups::new(Err("why".into()), Path::new("/x"));
        assert!(none.tenant("web").is_none());
        assert_eq!(none.unavailable(), Some("why"));
        assert_eq!(a.unavailable(), None);
    }

    #[test]
    fn limits_in_v1_and_v2_files() {
        let limits = Limits {
            memory_limit: Some(256 << 20),
            cpu_weight: Some(50),
        };
        let v1 = TenantCgroup {
            v2_root: None,
            relative: "picocenter/x/t".into(),
            dirs: vec!["/m".into(), "/c".into()],
        };
        let bytes = (256u64 << 20).to_string();
        assert_eq!(
            v1.settings(&limits),
            vec![
                ("memory.memsw.limit_in_bytes", "-1".to_string()),
                ("memory.limit_in_bytes", bytes.clone()),
                ("memory.memsw.limit_in_bytes", bytes.clone()),
                ("cpu.shares", "512".to_string()),
            ]
        );
        let v2 = TenantCgroup {
            v2_root: Some("/".into()),
            relative: "picocenter/x/t".into(),
            dirs: vec!["/t".into()],
        };
        assert_eq!(
            v2.settings(&Limits::default()),
            vec![
                ("memory.max", "max".to_string()),
                ("memory.swap.max", "max".to_string()),
                ("cpu.weight", "100".to_string()),
            ]
        );
        assert_eq!(v2.settings(&limits)[0], ("memory.max", bytes));
        assert_eq!(
            v2.settings(&limits)[1],
            ("memory.swap.max", "0".to_string())
        );
        assert_eq!(shares_of_weight(100), 1024);
        assert_eq!(shares_of_weight(1), 10);
        assert_eq!(shares_of_weight(10_000), 102_400);
    }

    #[test]
    fn membership_is_read_from_proc_pid_cgroup() {
        let v1 = TenantCgroup {
            v2_root: None,
            relative: "picocenter/x/t".into(),
            dirs: vec!["/m".into(), "/c".into()],
        };
        let inside = "4:memory:/picocenter/x/t\n2:cpuacct:/\n1:cpu:/picocenter/x/t\n0::/\n";
        assert!(v1.holds_in(inside));
        assert!(!v1.holds_in("4:memory:/picocenter/x/t\n1:cpu:/\n0::/\n"));
        let together = "1:cpu,cpuacct:/picocenter/x/t\n4:memory:/picocenter/x/t\n";
        assert!(v1.holds_in(together));
        let v2 = TenantCgroup {
            v2_root: Some("/".into()),
            relative: "picocenter/x/t".into(),
            dirs: vec!["/t".into()],
        };
        assert!(v2.holds_in("0::/picocenter/x/t\n"));
        assert_eq!(v1.hierarchies_in(together), vec!["cpu,cpuacct", "memory"]);
        assert_eq!(v1.hierarchies_in(inside), vec!["memory", "cpu"]);
        assert_eq!(v2.hierarchies_in("0::/picocenter/x/t\n"), vec![""]);
        assert!(v2.hierarchies_in("0::/\n").is_empty());
        assert!(!v2.holds_in("0::/picocenter/x/other\n"));
    }

    #[test]
    fn memory_in_use_is_anonymous_plus_shared() {
        let v1 = "cache 4096\nrss 100\nshmem 7\ntotal_cache 8192\ntotal_rss 1000\ntotal_shmem 24\n";
        assert_eq!(memory_of_stat(v1, false), Some(1024));
        let v2 = "anon 2000\nfile 5000\nkernel 30\nshmem 48\nfile_mapped 10\n";
        assert_eq!(memory_of_stat(v2, true), Some(2048));
        assert_eq!(memory_of_stat("file 1\n", true), None);
    }

    #[test]
    fn memory_sizes_and_limits() {
        assert_eq!(parse_memory_size("268435456"), Ok(256 << 20));
        assert_eq!(parse_memory_size("256M"), Ok(256 << 20));
        assert_eq!(parse_memory_size("256MiB"), Ok(256 << 20));
        assert_eq!(parse_memory_size("256mb"), Ok(256 << 20));
        assert_eq!(parse_memory_size("1G"), Ok(1 << 30));
        assert_eq!(parse_memory_size("512k"), Ok(512 << 10));
        assert_eq!(parse_memory_size("2T"), Ok(2 << 40));
        for bad in ["", "M", "1.5G", "-1", "12Q", "1 G B"] {
            assert!(parse_memory_size(bad).is_err(), "{bad:?}");
        }
        assert!(parse_memory_size("99999999999T").is_err());
        let ok = Limits {
            memory_limit: Some(1 << 20),
            cpu_weight: Some(10_000),
        };
        assert_eq!(ok.check(), Ok(()));
        let tiny = Limits {
            memory_limit: Some(256),
            ..Limits::default()
        };
        assert!(tiny.check().unwrap_err().contains("256M"));
        for weight in [0, 10_001] {
            let bad = Limits {
                cpu_weight: Some(weight),
                ..Limits::default()
            };
            assert!(bad.check().unwrap_err().contains("1..=10000"));
        }
    }

    /// On this machine's own hierarchy (the tests run as root): a child joins the cgroup before
    /// its command runs, the limits are in the controllers' files, its memory is counted there,
    /// and the cgroup goes once the child has.
    #[tokio::test]
    async fn a_process_joins_its_cgroup_before_exec_with_its_limits() {
        let home = tempfile::tempdir().unwrap();
        let hierarchy = Hierarchy::detect().expect("this machine has cgroups");
        let cgroups = Cgroups::new(Ok(hierarchy), home.path());
        let cgroup = cgroups.tenant("t").unwrap();
        let limits = Limits {
            memory_limit: Some(64 << 20),
            cpu_weight: Some(200),
        };
        cgroup.create(&limits).unwrap();
        let read = |file: &str| {
            let dir = if file.starts_with("cpu.") {
                cgroup.cpu_dir()
            } else {
                cgroup.memory_dir()
            };
            std::fs::read_to_string(dir.join(file))
                .unwrap()
                .trim()
                .to_string()
        };
        if cgroup.v2() {
            assert_eq!(read("memory.max"), (64u64 << 20).to_string());
            assert_eq!(read("cpu.weight"), "200");
        } else {
            assert_eq!(read("memory.limit_in_bytes"), (64u64 << 20).to_string());
            assert_eq!(read("cpu.shares"), "2048");
        }
        let mut cmd = std::process::Command::new("sh");
        cmd.args([
            "-c",
            "cat /proc/self/cgroup; head -c 8000000 /dev/zero | tail -c 1 >/dev/null; sleep 5",
        ])
        .stdout(std::process::Stdio::piped());
        join_before_exec(&mut cmd, cgroup.open_procs().unwrap());
        let mut child = cmd.spawn().unwrap();
        let mut first = String::new();
        let stdout = child.stdout.take().unwrap();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut first).unwrap();
        assert!(cgroup.holds(child.id()), "the shell is in its cgroup");
        assert!(cgroup.memory_bytes().is_some_and(|b| b > 0));
        let _ = child.kill();
        let _ = child.wait();
        // What sh's children (cat, head, tail) left is gone with them.
        cgroup.remove().await.unwrap();
        assert!(cgroup.dirs.iter().all(|d| !d.exists()));
        cgroups.remove_worker_group();
    }
}
