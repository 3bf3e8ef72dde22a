//! The cgroups themselves: the worker's group, each tenant's cgroup (made with its limits,
//! joined before exec, read for memory, removed), in whichever hierarchy is used.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::{shares_of_weight, Hierarchy, Limits, CPU_WEIGHT_DEFAULT};
use crate::criu::CgroupRoot;

/// Under the root of each hierarchy: every worker's cgroups.
const TOP: &str = "picocenter";

/// The file in a worker's tenants directory naming its group (`picocenter/<id>`): the group is
/// named after a key (`WorkerConfig::cgroup_key`) that whoever cleans up after a killed worker may
/// not know (a worker in a mount namespace of its own sees its tenants directory at another path).
pub const GROUP_FILE: &str = ".cgroup-group";

/// How long the removal of a cgroup waits for its last processes to be gone from it.
const REMOVE_WITHIN: Duration = Duration::from_secs(2);

/// The worker's cgroups: the hierarchy found at start and its own group in it.
#[derive(Clone, Debug)]
pub(crate) struct Cgroups {
    /// `None`: no usable hierarchy (tenants run without limits).
    hierarchy: Option<Hierarchy>,
    /// Why there is none.
    unavailable: Option<String>,
    /// `picocenter/<worker>`.
    group: PathBuf,
    /// The `cgroup.procs` of the cgroup the worker itself is in, read once at start (see
    /// [`ready_for_a_move`]).
    own_procs: Option<PathBuf>,
}

impl Cgroups {
    /// Finds the hierarchy (logging once why there is none) and names the worker's group after
    /// `tenants_dir` (or another key: `WorkerConfig::cgroup_key`).
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
        let own_procs = found.as_ref().ok().and_then(own_cgroup_procs);
        let cgroups = Cgroups {
            own_procs,
            ..Cgroups::new(found, tenants_dir)
        };
        let (swept, _) = cgroups.remove_empty_tenant_groups();
        if swept > 0 {
            info!(
                swept,
                "removed tenants' cgroups a previous run left holding no process"
            );
        }
        cgroups
    }

    /// Writes the worker's group into `tenants_dir` ([`GROUP_FILE`]); a failure is logged
    /// (only a cleanup after a killed worker reads it).
    pub(crate) fn record_group(&self, tenants_dir: &Path) {
        if self.hierarchy.is_none() {
            return;
        }
        let path = tenants_dir.join(GROUP_FILE);
        let text = format!("{}\n", self.group.display());
        if let Err(e) = std::fs::write(&path, text) {
            warn!(path = %path.display(), error = %e, "could not record the worker's cgroup");
        }
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
            own_procs: None,
        }
    }

    /// Why tenants run without cgroups, if they do.
    pub(crate) fn unavailable(&self) -> Option<&str> {
        self.unavailable.as_deref()
    }

    /// The `cgroup.procs` of the cgroup the worker is in, for [`ready_for_a_move`]; `None`
    /// without a hierarchy, or once moves never wait.
    pub(crate) fn own_procs(&self) -> Option<&Path> {
        self.own_procs.as_deref()
    }

    /// Moves into a cgroup wait for nothing (`favordynmods` is on): no restore needs
    /// [`ready_for_a_move`]'s head start.
    pub(super) fn moves_never_wait(&mut self) {
        self.own_procs = None;
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
        for root in self.roots() {
            // Fails (and stays) while a tenant's cgroup is in it.
            let _ = std::fs::remove_dir(root.join(&self.group));
        }
    }

    /// Removes the tenants' cgroups in the worker's group that hold no process: a killed
    /// worker's (its tenants killed since, or gone), which no one else removes; at its start,
    /// before any restore of its own makes one. A cgroup that holds a process (a tenant left
    /// running, to be adopted) cannot be removed, and stays. Returns how many went and how many
    /// stayed.
    fn remove_empty_tenant_groups(&self) -> (usize, usize) {
        let (mut removed, mut left) = (0, 0);
        for root in self.roots() {
            for entry in std::fs::read_dir(root.join(&self.group))
                .into_iter()
                .flatten()
                .flatten()
            {
                if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                    continue;
                }
                match std::fs::remove_dir(entry.path()) {
                    Ok(()) => removed += 1,
                    Err(_) => left += 1,
                }
            }
        }
        (removed, left)
    }

    /// The root of each hierarchy the worker's groups are in (none without one).
    fn roots(&self) -> Vec<&PathBuf> {
        match &self.hierarchy {
            Some(Hierarchy::V2 { root }) => vec![root],
            Some(Hierarchy::V1 { memory, cpu }) if memory == cpu => vec![memory],
            Some(Hierarchy::V1 { memory, cpu }) => vec![memory, cpu],
            None => Vec::new(),
        }
    }
}

/// Removes the cgroups a killed worker of `tenants_dir` left: its tenants' cgroups once they
/// hold no process (waiting up to 2 s for processes just killed to leave them), then its group
/// (the one its [`GROUP_FILE`] names, else the one named after `tenants_dir`). For whoever
/// removes a killed worker's home (tests); a worker started again on the home does it for
/// itself.
pub fn remove_leftover_cgroups(tenants_dir: &Path) {
    let Ok(hierarchy) = Hierarchy::detect() else {
        return;
    };
    let mut cgroups = Cgroups::new(Ok(hierarchy), tenants_dir);
    let recorded = std::fs::read_to_string(tenants_dir.join(GROUP_FILE));
    if let Some(group) = recorded.ok().and_then(|text| recorded_group(&text)) {
        cgroups.group = group;
    }
    let started = Instant::now();
    while cgroups.remove_empty_tenant_groups().1 > 0 && started.elapsed() < REMOVE_WITHIN {
        std::thread::sleep(Duration::from_millis(10));
    }
    cgroups.remove_worker_group();
}

/// The group a [`GROUP_FILE`]'s `text` names, if it is one of `picocenter`'s (never a path
/// that leads elsewhere).
fn recorded_group(text: &str) -> Option<PathBuf> {
    let group = Path::new(text.trim());
    let mut parts = group.components();
    let top = parts.next()? == std::path::Component::Normal(TOP.as_ref());
    let id = matches!(parts.next()?, std::path::Component::Normal(_));
    (top && id && parts.next().is_none()).then(|| group.to_path_buf())
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

    /// This cgroup as a restore's cgroup roots: the dumped tree's top cgroup, in the memory and
    /// cpu hierarchies (v1) or in v2's, renamed to this one. Other hierarchies a dump may have
    /// recorded keep their paths.
    pub(crate) fn restore_roots(&self) -> Vec<CgroupRoot> {
        let path = Path::new("/")
            .join(&self.relative)
            .to_string_lossy()
            .into_owned();
        let controllers: &[&str] = if self.v2() { &[""] } else { &["memory", "cpu"] };
        controllers
            .iter()
            .map(|controller| CgroupRoot {
                controller: controller.to_string(),
                path: path.clone(),
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
fn memory_of_stat(stat: &str, v2: bool) -> Option<u64> {
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

/// Readies the kernel for a move of processes into a cgroup that is about to happen (a
/// restore's: CRIU moves the restored tree into the tenant's cgroup), by moving the worker into
/// the cgroup it is in (`own_procs`, [`Cgroups::own_procs`]). Every move takes a lock whose first
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
fn own_cgroup_procs(hierarchy: &Hierarchy) -> Option<PathBuf> {
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

    #[test]
    fn a_recorded_group_is_taken_only_when_it_is_one_of_picocenter_s() {
        assert_eq!(
            recorded_group("picocenter/0123456789ab\n"),
            Some(PathBuf::from("picocenter/0123456789ab"))
        );
        for bad in [
            "",
            "picocenter",
            "picocenter/a/b",
            "/picocenter/a",
            "picocenter/..",
            "../picocenter/a",
            "system.slice/a",
        ] {
            assert_eq!(recorded_group(bad), None, "{bad:?}");
        }
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
