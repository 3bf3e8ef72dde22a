//! The worker's group of cgroups (`picocenter/<worker>`, one per tenants directory): found and made
//! at start, where each tenant's cgroup (`tenant_group`) is named, and removed at a clean stop or
//! after a killed worker.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::files::{at, write_file};
use super::own_group::own_cgroup_procs;
use super::{Hierarchy, TenantCgroup};

/// Under the root of each hierarchy: every worker's cgroups.
const TOP: &str = "picocenter";

/// The file in a worker's tenants directory naming its group (`picocenter/<id>`): the group is
/// named after a key (`WorkerConfig::cgroup_key`) that whoever cleans up after a killed worker may
/// not know (a worker in a mount namespace of its own sees its tenants directory at another path).
const GROUP_FILE: &str = ".cgroup-group";

/// How long the removal of a cgroup waits for its last processes to be gone from it.
pub(super) const REMOVE_WITHIN: Duration = Duration::from_secs(2);

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
    /// [`ready_for_a_move`](super::own_group::ready_for_a_move)).
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

    /// The `cgroup.procs` of the cgroup the worker is in, for [`ready_for_a_move`](super::own_group::ready_for_a_move); `None`
    /// without a hierarchy, or once moves never wait.
    pub(crate) fn own_procs(&self) -> Option<&Path> {
        self.own_procs.as_deref()
    }

    /// Moves into a cgroup wait for nothing (`favordynmods` is on): no restore needs
    /// [`ready_for_a_move`](super::own_group::ready_for_a_move)'s head start.
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
/// (the one its `GROUP_FILE` names, else the one named after `tenants_dir`). For whoever
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

/// On v2, controllers reach a cgroup only if each ancestor enables them for its children:
/// `+memory +cpu` written into `cgroup.subtree_control` of the hierarchy's `root` and of each
/// group from there down to `parent` (relative to `root`, included), made if missing. `picocenter` and the
/// worker's group hold no process, as v2 requires of a group that hands controllers down.
pub(super) fn enable_controllers_down_to(root: &Path, parent: &Path) -> std::io::Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
